import Testing
@testable import XMPP
import XMLModel

/// The bytes `ConnectionCore.send` hands to `xmpp_send_raw`: the same text as `serialized()`, and
/// read by libstrophe's own parser as exactly the element that was serialized, as libstrophe's
/// own rendering of the same tree is.
@Suite struct WireSerializationTests {
    static let samples: [XMLElement] = {
        var nested = XMLElement("query", namespace: "urn:a", attributes: [("node", "n#1")])
        var item = XMLElement("item", namespace: "urn:a", attributes: [("name", "x"), ("jid", "p@c/r")])
        item.append(XMLElement("deep", namespace: "urn:b", attributes: [("k", "v")], text: "leaf"))
        nested.append(item)
        nested.append(XMLElement("other", namespace: "urn:b", text: "t"))
        nested.children.append(.text("tail & more"))
        return [
            XMLElement("status", namespace: "urn:intercloud:presence:0"),
            XMLElement("a", namespace: "urn:t", attributes: [("v", "'<&>\"")], text: "<script>&'\"</script>"),
            XMLElement("a", namespace: "urn:t", attributes: [("v", "plain")], text: "]]> and &amp; already"),
            XMLElement(
                "announce", namespace: "urn:intercloud:presence:0",
                attributes: [("cloud", "Wolke-Ä"), ("regions", "eu-west,日本"), ("load", "0.25")],
                text: "naïve café 🚀 Ωμέγα"),
            XMLElement("e", namespace: "urn:t", attributes: [("x", "")]),
            nested,
            // Escaping works on bytes: a markup character that starts a grapheme cluster (here
            // '&' and '<' followed by a combining mark) is escaped all the same.
            XMLElement("g", namespace: "urn:t", attributes: [("v", "&\u{301}<\u{301}")], text: "&\u{301}<\u{308}x"),
        ]
    }()

    /// Runs `body` on the XMPP loop thread, the only thread that may call libstrophe.
    func onLoop<T: Sendable>(_ body: @escaping @Sendable (OpaquePointer) -> T) async -> T {
        await withCheckedContinuation { continuation in
            XMPPRuntime.shared.submit { continuation.resume(returning: body(XMPPRuntime.shared.context)) }
        }
    }

    /// libstrophe keeps attributes in a hash table, so what it parses comes back in hash order.
    func attributesSorted(_ element: XMLElement) -> XMLElement {
        var element = element
        element.attributes.sort { $0.name < $1.name }
        element.children = element.children.map { child in
            if case .element(let inner) = child { .element(attributesSorted(inner)) } else { child }
        }
        return element
    }

    func wireText(_ element: XMLElement, parentNamespace: String? = nil) -> String {
        var buffer: [UInt8] = []
        element.appendWireBytes(to: &buffer, parentNamespace: parentNamespace)
        return String(decoding: buffer, as: UTF8.self)
    }

    @Test(arguments: WireSerializationTests.samples.indices)
    func matchesSerialized(_ index: Int) {
        let element = Self.samples[index]
        #expect(wireText(element) == element.serialized())
        #expect(wireText(element, parentNamespace: element.namespace) == element.serialized(parentNamespace: element.namespace))
    }

    @Test func escapesMarkupFollowedByCombiningMarks() {
        let element = Self.samples[Self.samples.count - 1]
        #expect(wireText(element) == "<g xmlns='urn:t' v='&amp;\u{301}&lt;\u{301}'>&amp;\u{301}&lt;\u{308}x</g>")
        #expect(element.serialized() == wireText(element))
    }

    @Test(arguments: WireSerializationTests.samples.indices)
    func libstropheParsesItBackExactly(_ index: Int) async {
        let element = Self.samples[index]
        let ours = wireText(element)
        let (fromOurs, fromTheirs, theirText) = await onLoop { context in
            let theirText = StropheBridge.libstropheText(of: element, context: context)
            return (
                StropheBridge.parsed(ours, context: context),
                theirText.flatMap { StropheBridge.parsed($0, context: context) },
                theirText)
        }
        #expect(theirText != nil)
        #expect(fromOurs.map(attributesSorted) == attributesSorted(element), "ours: \(ours)")
        #expect(fromOurs.map(attributesSorted) == fromTheirs.map(attributesSorted), "ours: \(ours), libstrophe's: \(theirText ?? "-")")
    }

    /// Stanzas go out under the stream's `jabber:client`: neither the stanza nor a child in the
    /// same namespace repeats it, a payload in its own namespace declares it.
    @Test func stanzaUnderTheStreamNamespace() {
        let request = Stanza.iq(.get, id: "k-1", to: try? JID("b@cloud2.test/bench"), payload: XMLElement("status", namespace: "urn:intercloud:presence:0"))
        #expect(wireText(request.element, parentNamespace: "jabber:client")
            == "<iq type='get' id='k-1' to='b@cloud2.test/bench'><status xmlns='urn:intercloud:presence:0'/></iq>")
        let reply = Stanza(XMLElement("iq", namespace: "jabber:client", attributes: [("type", "result")], children: [
            .element(XMLElement("error", namespace: "jabber:client")),
        ]))
        #expect(wireText(reply.element, parentNamespace: "jabber:client") == "<iq type='result'><error/></iq>")
    }
}
