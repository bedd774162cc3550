import Discovery
import Testing
import XMPP
import XMLModel

@Suite struct PeerDiscoveryTests {
    let own = try! JID("broker@cloud1.test/broker")
    let room = try! JID("exchange@conference.cloud1.test")

    func machine(peers: [String] = [], approve: [String] = []) -> PeerDiscovery {
        PeerDiscovery(settings: .init(ownJID: own, rooms: [room], directPeers: peers.map { try! JID($0) }, approvalPatterns: approve))
    }

    func announce(_ cloud: String = "cloud2") -> XMLElement {
        Announcement(cloud: cloud, regions: ["r1"], load: 0.5, fingerprint: "").element
    }

    func roomPresence(nick: String, real: String?, type: String? = nil, status: String? = nil, announcement: XMLElement? = nil) -> Stanza {
        var x = XMLElement("x", namespace: MultiUserChat.userNamespace)
        var item = XMLElement("item", attributes: [("role", "participant")])
        if let real { item[attribute: "jid"] = real }
        x.append(item)
        if let status { x.append(XMLElement("status", attributes: [("code", status)])) }
        var attributes = [("from", "\(room)/\(nick)")]
        if let type { attributes.append(("type", type)) }
        var children: [XMLNode] = [.element(x)]
        if let announcement { children.append(.element(announcement)) }
        return Stanza(XMLElement("presence", attributes: attributes, children: children))
    }

    @Test func freshSessionAnnouncesJoinsRoomsAndSubscribes() {
        var discovery = machine(peers: ["broker@cloud2.test"])
        let actions = discovery.handle(.sessionStarted)
        #expect(actions == [.allPeersOffline, .announce, .joinRoom(room), .subscribe(try! JID("broker@cloud2.test"))])
    }

    @Test func roomOccupantWithAnnouncementBecomesPeer() throws {
        var discovery = machine()
        let actions = discovery.handle(.presence(roomPresence(nick: "cloud2", real: "broker@cloud2.test/b", announcement: announce())))
        guard case .peerSeen(let observation) = actions.first else {
            Issue.record("expected peerSeen, got \(actions)")
            return
        }
        #expect(observation.jid == (try JID("broker@cloud2.test")))
        #expect(observation.via == "room:\(room)")
        #expect(actions.contains(.queryFeatures(try JID("broker@cloud2.test/b"))))
        #expect(discovery.onlinePeers() == [try JID("broker@cloud2.test")])
    }

    @Test func ourOwnRoomPresenceAndNonBrokersAreIgnored() {
        var discovery = machine()
        #expect(discovery.handle(.presence(roomPresence(nick: "cloud1", real: "broker@cloud1.test/broker", status: "110", announcement: announce("cloud1")))) == [])
        #expect(discovery.handle(.presence(roomPresence(nick: "human", real: "alice@cloud1.test/x"))) == [])
    }

    @Test func anonymousOccupantIsRefused() {
        var discovery = machine()
        let actions = discovery.handle(.presence(roomPresence(nick: "ghost", real: nil, announcement: announce())))
        guard case .refused = actions.first else {
            Issue.record("expected refusal, got \(actions)")
            return
        }
    }

    @Test func malformedAnnouncementIsRefusedAndChangesNothing() {
        var discovery = machine()
        let bad = XMLElement("announce", namespace: Announcement.namespace, attributes: [("cloud", "<script>")])
        let actions = discovery.handle(.presence(roomPresence(nick: "x", real: "broker@cloud2.test/b", announcement: bad)))
        guard case .refused = actions.first else {
            Issue.record("expected refusal, got \(actions)")
            return
        }
        #expect(discovery.onlinePeers().isEmpty)
    }

    @Test func peerGoesOfflineOnlyWhenEverySourceIsGone() throws {
        var discovery = machine(peers: ["broker@cloud2.test"])
        _ = discovery.handle(.presence(roomPresence(nick: "cloud2", real: "broker@cloud2.test/b", announcement: announce())))
        let direct = Stanza(XMLElement("presence", attributes: [("from", "broker@cloud2.test/b")], children: [.element(announce())]))
        _ = discovery.handle(.presence(direct))
        #expect(discovery.handle(.presence(roomPresence(nick: "cloud2", real: "broker@cloud2.test/b", type: "unavailable"))) == [])
        let gone = Stanza(XMLElement("presence", attributes: [("from", "broker@cloud2.test/b"), ("type", "unavailable")]))
        #expect(discovery.handle(.presence(gone)) == [.peerOffline(try JID("broker@cloud2.test"))])
    }

    @Test func subscriptionRequestsFollowApprovalRules() throws {
        var discovery = machine(approve: ["*@cloud2.test"])
        let fromCloud2 = Stanza(XMLElement("presence", attributes: [("from", "broker@cloud2.test"), ("type", "subscribe")]))
        #expect(discovery.handle(.presence(fromCloud2)) == [.approveSubscription(try JID("broker@cloud2.test")), .subscribe(try JID("broker@cloud2.test"))])
        let fromStranger = Stanza(XMLElement("presence", attributes: [("from", "broker@evil.test"), ("type", "subscribe")]))
        #expect(discovery.handle(.presence(fromStranger)) == [.recordPendingApproval(try JID("broker@evil.test"))])
        #expect(discovery.handle(.operatorApproved(try JID("broker@evil.test"))) == [
            .approveSubscription(try JID("broker@evil.test")), .subscribe(try JID("broker@evil.test")),
        ])
    }

    @Test func knownCapsAreNotQueriedTwice() throws {
        var discovery = machine()
        var presence = roomPresence(nick: "cloud2", real: "broker@cloud2.test/b", announcement: announce())
        presence.element.append(XMLElement("c", namespace: EntityCapabilities.namespace, attributes: [("hash", "sha-1"), ("node", "n"), ("ver", "V1")]))
        _ = discovery.handle(.presence(presence))
        _ = discovery.handle(.featuresDiscovered(capsVer: "V1", peer: try JID("broker@cloud2.test/b"), features: ["f"]))
        let again = discovery.handle(.presence(presence))
        #expect(again.contains(.storeFeatures(try JID("broker@cloud2.test"), ["f"])))
        #expect(!again.contains { if case .queryFeatures = $0 { true } else { false } })
    }

    @Test func sessionLossMarksEveryoneOffline() {
        var discovery = machine()
        _ = discovery.handle(.presence(roomPresence(nick: "cloud2", real: "broker@cloud2.test/b", announcement: announce())))
        #expect(discovery.handle(.sessionLost) == [.allPeersOffline])
        #expect(discovery.onlinePeers().isEmpty)
    }

    @Test("a stranger's presence with a valid announcement creates nothing: no peer, no disco query, no handshake")
    func strangerPresenceCreatesNothing() throws {
        var discovery = machine(approve: ["*@cloud2.test"])
        let stranger = Stanza(XMLElement("presence", attributes: [("from", "broker@evil.test/x")], children: [.element(announce("evil"))]))
        let actions = discovery.handle(.presence(stranger))
        #expect(actions == [.refused(from: "broker@evil.test/x", reason: "presence from a stranger", stranger: true)])
        #expect(discovery.onlinePeers().isEmpty)
        // A pattern match alone is not an approval: until it subscribes, cloud2's presence is a stranger's too.
        let unsubscribed = Stanza(XMLElement("presence", attributes: [("from", "broker@cloud2.test/b")], children: [.element(announce())]))
        #expect(discovery.handle(.presence(unsubscribed)).allSatisfy { if case .refused = $0 { true } else { false } })
        _ = discovery.handle(.presence(Stanza(XMLElement("presence", attributes: [("from", "broker@cloud2.test"), ("type", "subscribe")]))))
        #expect(discovery.handle(.presence(unsubscribed)).contains { if case .peerSeen = $0 { true } else { false } })
        // Approved in an earlier run (the registry's approved rows) counts as approved.
        var restarted = PeerDiscovery(settings: .init(
            ownJID: own, rooms: [], directPeers: [], approvalPatterns: [], approvedPeers: [try JID("broker@cloud3.test")]))
        let fromCloud3 = Stanza(XMLElement("presence", attributes: [("from", "broker@cloud3.test/b")], children: [.element(announce("cloud3"))]))
        #expect(restarted.handle(.presence(fromCloud3)).contains { if case .peerSeen = $0 { true } else { false } })
    }

    @Test("peering requests waiting for the operator are bounded; asking again adds nothing")
    func pendingApprovalsAreBounded() throws {
        var discovery = PeerDiscovery(settings: .init(ownJID: own, rooms: [], directPeers: [], approvalPatterns: [], maxPendingApprovals: 3))
        var recorded = 0
        var refused = 0
        for index in 0..<10 {
            for _ in 0..<2 {
                let request = Stanza(XMLElement("presence", attributes: [("from", "b\(index)@evil.test"), ("type", "subscribe")]))
                for action in discovery.handle(.presence(request)) {
                    if case .recordPendingApproval = action { recorded += 1 }
                    if case .refused(_, _, let stranger) = action, stranger { refused += 1 }
                }
            }
        }
        #expect(recorded == 3)
        #expect(refused == 14)  // 7 senders, twice each
        // The operator approving one frees a place.
        _ = discovery.handle(.operatorApproved(try JID("b0@evil.test")))
        #expect(discovery.handle(.presence(Stanza(XMLElement("presence", attributes: [("from", "b9@evil.test"), ("type", "subscribe")])))) == [
            .recordPendingApproval(try JID("b9@evil.test")),
        ])
    }

    @Test("a rejected or expired peering request is declined and frees its place")
    func rejectedAndExpiredRequestsAreDeclined() throws {
        var discovery = PeerDiscovery(settings: .init(ownJID: own, rooms: [], directPeers: [], approvalPatterns: [], maxPendingApprovals: 2))
        func ask(_ from: String) -> [PeerDiscovery.Action] {
            discovery.handle(.presence(Stanza(XMLElement("presence", attributes: [("from", from), ("type", "subscribe")]))))
        }
        let a = try JID("a@evil.test"), b = try JID("b@evil.test"), c = try JID("c@evil.test")
        #expect(ask("a@evil.test") == [.recordPendingApproval(a)])
        #expect(ask("b@evil.test") == [.recordPendingApproval(b)])
        guard case .refused = ask("c@evil.test").first else { Issue.record("a third request fits"); return }
        #expect(discovery.handle(.operatorRejected(a)) == [.declineSubscription(a, reason: "rejected by the operator")])
        #expect(ask("c@evil.test") == [.recordPendingApproval(c)])
        // Only requests still waiting expire (b and c), each once.
        #expect(discovery.handle(.pendingApprovalsExpired([a, b, c])) == [
            .declineSubscription(b, reason: "no operator decision within the approval wait"),
            .declineSubscription(c, reason: "no operator decision within the approval wait"),
        ])
        #expect(discovery.handle(.pendingApprovalsExpired([b])) == [])
        // A declined peer may ask again; an approved one is never declined.
        #expect(ask("a@evil.test") == [.recordPendingApproval(a)])
        _ = discovery.handle(.operatorApproved(a))
        #expect(discovery.handle(.operatorRejected(a)) == [])
    }

    @Test("the caps caches keyed by peers' input stay bounded")
    func capsCachesAreBounded() throws {
        var discovery = PeerDiscovery(settings: .init(ownJID: own, rooms: [room], directPeers: [], approvalPatterns: [], maxCapsEntries: 8))
        var queries = 0
        for index in 0..<100 {
            var presence = roomPresence(nick: "n\(index)", real: "broker@cloud2.test/r\(index)", announcement: announce())
            presence.element.append(XMLElement(
                "c", namespace: EntityCapabilities.namespace, attributes: [("hash", "sha-1"), ("node", "n"), ("ver", "V\(index)")]))
            queries += discovery.handle(.presence(presence)).filter { if case .queryFeatures = $0 { true } else { false } }.count
            _ = discovery.handle(.featuresDiscovered(capsVer: "V\(index)", peer: try JID("broker@cloud2.test/r\(index)"), features: ["f"]))
        }
        #expect(queries == 100)
        #expect(discovery.cachedCapsEntries <= 16)
    }

    @Test func presenceFromInvalidJIDIsRefused() {
        var discovery = machine()
        let stanza = Stanza(XMLElement("presence", attributes: [("from", "bad jid@@x")], children: [.element(announce())]))
        guard case .refused = discovery.handle(.presence(stanza)).first else {
            Issue.record("expected refusal")
            return
        }
    }
}

@Suite struct ExchangeRoomCreationTests {
    @Test func creatingARoomConfiguresIt() throws {
        let room = try JID("exchange@conference.cloud1.test")
        var discovery = PeerDiscovery(settings: .init(ownJID: try JID("broker@cloud1.test/b"), rooms: [room], directPeers: [], approvalPatterns: []))
        var x = XMLElement("x", namespace: MultiUserChat.userNamespace)
        x.append(XMLElement("item", attributes: [("jid", "broker@cloud1.test/b"), ("role", "moderator")]))
        x.append(XMLElement("status", attributes: [("code", "110")]))
        x.append(XMLElement("status", attributes: [("code", "201")]))
        let presence = Stanza(XMLElement("presence", attributes: [("from", "\(room)/cloud1")], children: [.element(x)]))
        #expect(discovery.handle(.presence(presence)) == [.configureRoom(room)])
    }
}

@Suite struct ExchangeRoomJoinRetryTests {
    @Test func refusedJoinIsRetriedWithGrowingPauseThenAbandoned() throws {
        let room = try JID("exchange@conference.cloud1.test")
        var discovery = PeerDiscovery(settings: .init(ownJID: try JID("broker@cloud1.test/b"), rooms: [room], directPeers: [], approvalPatterns: []))
        let refusal = Stanza(XMLElement("presence", attributes: [("from", "\(room)/cloud1"), ("type", "error")], children: [
            .element(StanzaError.itemNotFound().element),
        ]))
        var pauses: [Duration] = []
        for _ in 0..<PeerDiscovery.maxJoinAttempts {
            for action in discovery.handle(.presence(refusal)) {
                if case .rejoinRoom(_, let after, _) = action { pauses.append(after) }
            }
        }
        #expect(pauses.count == PeerDiscovery.maxJoinAttempts)
        #expect(pauses.first == .milliseconds(100))
        #expect(pauses.last == .seconds(1))
        let final = discovery.handle(.presence(refusal))
        #expect(!final.contains { if case .rejoinRoom = $0 { true } else { false } })
    }
}

@Suite struct DirectPresencePerResourceTests {
    @Test func anotherResourceLeavingDoesNotTakeThePeerOffline() throws {
        var discovery = PeerDiscovery(settings: .init(ownJID: try JID("broker@cloud1.test/b"), rooms: [], directPeers: [try JID("broker@cloud2.test")], approvalPatterns: []))
        let announce = Announcement(cloud: "cloud2", regions: [], load: 0, fingerprint: "").element
        _ = discovery.handle(.presence(Stanza(XMLElement("presence", attributes: [("from", "broker@cloud2.test/broker")], children: [.element(announce)]))))
        let cliGone = Stanza(XMLElement("presence", attributes: [("from", "broker@cloud2.test/cli-42"), ("type", "unavailable")]))
        #expect(discovery.handle(.presence(cliGone)) == [])
        #expect(discovery.onlinePeers() == [try JID("broker@cloud2.test")])
        let brokerGone = Stanza(XMLElement("presence", attributes: [("from", "broker@cloud2.test/broker"), ("type", "unavailable")]))
        #expect(discovery.handle(.presence(brokerGone)) == [.peerOffline(try JID("broker@cloud2.test"))])
    }
}
