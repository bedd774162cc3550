import Testing
import XMPP
import XMLModel

@Suite struct EntityCapabilitiesTests {
    /// The simple generation example of XEP-0115 §5.2.
    @Test func matchesTheXEPExample() {
        let info = DiscoInfo(
            identities: [.init(category: "client", type: "pc", name: "Exodus 0.9.1")],
            features: [
                "http://jabber.org/protocol/disco#info", "http://jabber.org/protocol/disco#items",
                "http://jabber.org/protocol/muc", "http://jabber.org/protocol/caps",
            ])
        #expect(EntityCapabilities.verificationString(for: info) == "QgayPKawpkPSDYmwT/WM94uAlu0=")
    }

    @Test func discoInfoRoundTrips() throws {
        let info = DiscoInfo(identities: [.init(category: "automation", type: "intercloud-broker", name: "c1")], features: ["urn:x", "urn:y"])
        #expect(try DiscoInfo(parsing: info.element) == info)
    }

    @Test func mucOccupantPresenceParsesRealJIDAndSelf() throws {
        let presence = Stanza(XMLElement("presence", attributes: [("from", "exchange@conference.cloud1.test/cloud2")], children: [
            .element(XMLElement("x", namespace: MultiUserChat.userNamespace, children: [
                .element(XMLElement("item", attributes: [("jid", "broker@cloud2.test/b"), ("role", "participant")])),
                .element(XMLElement("status", attributes: [("code", "110")])),
            ])),
        ]))
        let occupant = try #require(MultiUserChat.occupantPresence(presence))
        #expect(occupant.nickname == "cloud2")
        #expect(occupant.realJID == (try JID("broker@cloud2.test/b")))
        #expect(occupant.isSelf)
        #expect(occupant.available)
    }
}
