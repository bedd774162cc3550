import Broker
import CatalogQueries
import Discovery
import Federation
import Foundation
import GRDB
import Metering
import Negotiation
import Storage
import TestSupport
import Testing
import Trust
import X509
import XMPP
import XMLModel

/// Trust between brokers over a real Prosody (issue 3): certificates made in code, written to PEM
/// files, loaded through the [trust] section exactly as `intercloud serve` does.
/// Serialized: each test starts two or three XMPP clients (TLS + SCRAM) against the shared
/// Prosody; run in parallel they overloaded it on a busy 2-core machine and made the discovery
/// tests, which share the server, miss their connect deadlines.
@Suite(.serialized, .timeLimit(.minutes(3))) struct BrokerTrustIntegrationTests {
    let server: TestProsody

    init() throws { server = try TestProsody.shared() }

    func uniqueRoom() -> String { "exchange-\(UUID().uuidString.prefix(8).lowercased())@conference.cloud1.test" }

    /// Two trusted brokers: cloud1's chain is root1 → cloud1 CA → leaf, cloud2's is root2 → leaf;
    /// each lists the other's root as its anchor.
    func trustedPair(room: String) async throws -> (RunningBroker, String, BrokerIdentity, RunningBroker, String, BrokerIdentity, BrokerConfiguration, BrokerConfiguration) {
        let fixture = TrustFixture(brokers: BrokerFixture(server: server))
        let root1 = try fixture.root("root1")
        let root2 = try fixture.root("root2")
        let cloud1CA = try root1.ca.makeIntermediate(commonName: "cloud1 CA", notBefore: Date() - TrustFixture.day)
        let b1 = try fixture.broker(cloud: "cloud1", host: "cloud1.test", rooms: [room], issuer: cloud1CA, anchors: [root2.path])
        let b2 = try fixture.broker(cloud: "cloud2", host: "cloud2.test", rooms: [room], issuer: root2.ca, anchors: [root1.path])
        let broker1 = try RunningBroker(configuration: b1.config)
        let broker2 = try RunningBroker(configuration: b2.config)
        #expect(await eventually(timeout: .seconds(20)) { broker1.isTrusted(b2.jid) && broker2.isTrusted(b1.jid) })
        return (broker1, b1.jid, b1.identity, broker2, b2.jid, b2.identity, b1.config, b2.config)
    }

    @Test func brokersWithChainsFromDifferentCAsTrustEachOtherAndAnnounceTheirFingerprints() async throws {
        let (broker1, jid1, identity1, broker2, jid2, identity2, _, _) = try await trustedPair(room: uniqueRoom())
        // Presence carries the real certificate fingerprint, and it is what got pinned.
        #expect(broker1.node.currentAnnouncement.fingerprint == CertificateFingerprint.sha256(identity1.leaf))
        #expect(await eventually { broker2.peer(jid1)?.fingerprint == CertificateFingerprint.sha256(identity1.leaf) })
        #expect(broker1.peer(jid2)?.fingerprint == CertificateFingerprint.sha256(identity2.leaf))
        #expect(broker1.pin(jid2)?.fingerprint == CertificateFingerprint.sha256(identity2.leaf))
        #expect(broker2.pin(jid1)?.fingerprint == CertificateFingerprint.sha256(identity1.leaf))
        #expect(broker1.trustStatus(jid2) == "trusted")
        #expect(broker2.trustStatus(jid1) == "trusted")
        // Accepted handshakes are audited on both sides (the record follows the pin write).
        #expect(await eventually {
            broker1.auditEvents(peer: jid2, kind: "trust.handshake").contains { $0.outcome == .accepted }
                && broker2.auditEvents(peer: jid1, kind: "trust.handshake").contains { $0.outcome == .accepted }
        })
        #expect(broker1.auditEvents(peer: jid2).allSatisfy { $0.outcome != .refused })
        // The trust features are in disco#info (and so in the caps the peers stored).
        #expect(await eventually { broker1.peer(jid2)?.featureList.contains(TrustNamespace.handshake) == true })
        // What disco#info offers is what broker2 installed: every namespace it serves signed
        // (catalog, negotiation, metering, migration, transfer, federation, ping), no other.
        let served = Set(broker2.node.signed.namespaces)
        #expect(served.isSuperset(of: [CatalogProtocol.namespace, NegotiationWire.namespace, MeteringService.namespace, FederationService.namespace]))
        #expect(Set(try #require(broker1.peer(jid2)).featureList).subtracting(served)
            == [TrustNamespace.handshake, TrustNamespace.envelope, DiscoInfo.infoNamespace, DiscoInfo.itemsNamespace,
                EntityCapabilities.namespace, Ping.namespace, MultiUserChat.namespace, Announcement.namespace])

        // Both start a handshake at the same moment (what happens when both think they must):
        // two independent exchanges over the wire, both succeed, the pins stay as they were.
        async let fromBroker1 = broker1.trust.handshake(with: try RunningBroker.full(jid2))
        async let fromBroker2 = broker2.trust.handshake(with: try RunningBroker.full(jid1))
        let (result1, result2) = await (try fromBroker1, try fromBroker2)
        #expect((try? result1.get())?.fingerprint == CertificateFingerprint.sha256(identity2.leaf))
        #expect((try? result2.get())?.fingerprint == CertificateFingerprint.sha256(identity1.leaf))
        #expect(broker1.trustStatus(jid2) == "trusted" && broker2.trustStatus(jid1) == "trusted")
        #expect(await broker1.trust.service.pendingSessions == 0)
        #expect(await broker2.trust.service.pendingSessions == 0)
        await broker1.stop()
        await broker2.stop()
    }

    @Test func signedFederationPingWorksAndUnsignedReplayedOrStrangerRequestsAreRefused() async throws {
        let (broker1, jid1, _, broker2, jid2, _, _, _) = try await trustedPair(room: uniqueRoom())
        let target = try RunningBroker.full(jid1)

        let pong = try await broker2.node.federationPing(target, text: "hello cloud1")
        #expect(pong == FederationPing.Pong(cloud: "cloud1", load: 0, text: "hello cloud1"))
        let back = try await broker1.node.federationPing(try RunningBroker.full(jid2), text: "and back")
        #expect(back.cloud == "cloud2" && back.text == "and back")

        // Unsigned: the same request without an envelope.
        let unsigned = XMLElement("ping", namespace: FederationPing.namespace, text: "no signature")
        #expect(await stanzaCondition { _ = try await broker2.node.client.iq(.get, to: target, payload: unsigned) } == "not-authorized")
        #expect(await eventually {
            broker1.auditEvents(peer: jid2, kind: "trust.envelope").contains { $0.outcome == .refused && $0.reason == "unsigned" }
        })

        // Replayed: a correctly signed envelope sent twice.
        let request = Array("<ping xmlns='\(FederationPing.namespace)'>once</ping>".utf8)
        let sealed = try XMLElement.parse(
            try broker2.trust.service.seal(request, namespace: FederationPing.namespace, to: jid1))
        _ = try await broker2.node.client.iq(.get, to: target, payload: sealed)
        #expect(await stanzaCondition { _ = try await broker2.node.client.iq(.get, to: target, payload: sealed) } == "not-authorized")
        #expect(broker1.auditEvents(peer: jid2, kind: "trust.envelope").contains { $0.reason == "replayed" })

        // Tampered: a fresh envelope whose payload was changed after signing.
        var tampered = try SignedEnvelope.decode(
            xml: try broker2.trust.service.seal(request, namespace: FederationPing.namespace, to: jid1))
        tampered.payload = Array("<ping xmlns='\(FederationPing.namespace)'>twice</ping>".utf8)
        let tamperedElement = tampered.element
        #expect(await stanzaCondition { _ = try await broker2.node.client.iq(.get, to: target, payload: tamperedElement) } == "not-authorized")
        #expect(broker1.auditEvents(peer: jid2, kind: "trust.envelope").contains { $0.reason == "badSignature" })

        // A stranger with its own (unpinned) certificate signs an envelope: untrusted sender.
        let (stranger, strangerJID) = try await strangerClient(server, host: "cloud2.test")
        let strangerCA = try CertificateAuthority.makeRoot(commonName: "stranger root", notBefore: Date() - 3600)
        let strangerIdentity = try strangerCA.issueBrokerIdentity(jid: strangerJID, notBefore: Date() - 3600)
        let forged = try SignedEnvelope.seal(
            request, namespace: FederationPing.namespace, from: strangerJID, to: jid1, identity: strangerIdentity, now: Date())
        let forgedElement = forged.element
        #expect(await stanzaCondition { _ = try await stranger.iq(.get, to: target, payload: forgedElement) } == "not-authorized")
        #expect(broker1.auditEvents(peer: strangerJID, kind: "trust.envelope").contains { $0.reason == "untrustedSender" })
        #expect(broker1.pin(strangerJID) == nil)
        await stranger.stop()
        await broker1.stop()
        await broker2.stop()
    }

    /// Request nonces live in memory while the broker runs and are written when it stops
    /// cleanly: a request accepted before a clean restart is refused as `replayed` after it (not
    /// `stale`, which is what an unclean stop leads to), and new requests are accepted.
    @Test func aRequestAcceptedBeforeACleanRestartIsAReplayAfterIt() async throws {
        let (broker1, jid1, _, broker2, jid2, _, config1, _) = try await trustedPair(room: uniqueRoom())
        let target = try RunningBroker.full(jid1)
        let request = Array("<ping xmlns='\(FederationPing.namespace)'>once</ping>".utf8)
        let sealed = try XMLElement.parse(
            try broker2.trust.service.seal(request, namespace: FederationPing.namespace, to: jid1))
        _ = try await broker2.node.client.iq(.get, to: target, payload: sealed)
        await broker1.stop()

        let restarted = try RunningBroker(configuration: config1)
        #expect(await eventually(timeout: .seconds(20)) { restarted.sees(jid2) && broker2.sees(jid1) })
        #expect(restarted.trust.service.rememberedNonces == 1)
        #expect(await stanzaCondition { _ = try await broker2.node.client.iq(.get, to: target, payload: sealed) } == "not-authorized")
        #expect(restarted.auditEvents(peer: jid2, kind: "trust.envelope").map(\.reason) == ["replayed"])
        #expect(try await broker2.node.federationPing(target, text: "after the restart").text == "after the restart")
        await restarted.stop()
        await broker2.stop()
    }

    /// Sessions (docs/protocol/session.md) over the real server: the first request to a peer
    /// makes one in the background, later requests go under it (MAC, no signatures), and when the
    /// peer no longer holds it (a restart) the request is refused `unknownSession` before any
    /// handler ran, sent again signed, and answered; then a new session is made.
    @Test func requestsGoUnderASessionAndFallBackToASignatureWhenThePeerForgotIt() async throws {
        let (broker1, jid1, _, broker2, jid2, _, config1, _) = try await trustedPair(room: uniqueRoom())
        let target = try RunningBroker.full(jid1)
        #expect(try await broker2.node.federationPing(target, text: "first").text == "first")
        #expect(await eventually(timeout: .seconds(10)) { broker2.trust.service.requestSession(for: jid1) != nil })
        let session = try #require(broker2.trust.service.requestSession(for: jid1))
        #expect(broker1.trust.service.sessions.session(peer: jid2, id: session.id, now: Date()) != nil)
        #expect(try await broker2.node.federationPing(target, text: "under the session").text == "under the session")
        #expect(broker1.node.discoInfo.features.contains(TrustNamespace.session))
        await broker1.stop()

        let restarted = try RunningBroker(configuration: config1)
        #expect(await eventually(timeout: .seconds(20)) { restarted.sees(jid2) && broker2.sees(jid1) })
        #expect(restarted.trust.service.sessions.count == 0)
        #expect(try await broker2.node.federationPing(target, text: "after the restart").text == "after the restart")
        // The refused first attempt proves the request went under the session; the answer came
        // to the signed second one.
        #expect(restarted.auditEvents(peer: jid2, kind: "trust.envelope").map(\.reason) == ["unknownSession"])
        #expect(await eventually(timeout: .seconds(10)) {
            broker2.trust.service.requestSession(for: jid1).map { $0.id != session.id } ?? false
        })
        let renewed = try #require(broker2.trust.service.requestSession(for: jid1))
        #expect(restarted.trust.service.sessions.session(peer: jid2, id: renewed.id, now: Date()) != nil)
        #expect(try await broker2.node.federationPing(target, text: "new session").text == "new session")
        #expect(restarted.auditEvents(peer: jid2, kind: "trust.envelope").count == 1)
        await restarted.stop()
        await broker2.stop()
    }

    /// `[trust] sessions = false`: the broker neither offers nor accepts sessions, and a peer
    /// that asks for one keeps signing its requests.
    @Test func aBrokerWithoutSessionsIsSentSignedRequests() async throws {
        let room = uniqueRoom()
        let fixture = TrustFixture(brokers: BrokerFixture(server: server))
        let root = try fixture.root("root")
        var b1 = try fixture.broker(cloud: "cloud1", host: "cloud1.test", rooms: [room], issuer: root.ca, anchors: [root.path])
        let b2 = try fixture.broker(cloud: "cloud2", host: "cloud2.test", rooms: [room], issuer: root.ca, anchors: [root.path])
        b1.config.trust?.sessions = false
        let broker1 = try RunningBroker(configuration: b1.config)
        let broker2 = try RunningBroker(configuration: b2.config)
        #expect(await eventually(timeout: .seconds(20)) { broker1.isTrusted(b2.jid) && broker2.isTrusted(b1.jid) })
        let target = try RunningBroker.full(b1.jid)
        for text in ["one", "two", "three"] {
            #expect(try await broker2.node.federationPing(target, text: text).text == text)
        }
        #expect(!broker1.node.discoInfo.features.contains(TrustNamespace.session))
        #expect(broker1.trust.service.sessions.count == 0 && broker2.trust.service.sessions.count == 0)
        // broker2's offer was answered `service-unavailable`: nothing refused, nothing audited.
        #expect(broker1.auditEvents(peer: b2.jid, kind: "trust.envelope").isEmpty)
        // And broker1 itself sends signed requests only.
        #expect(try await broker1.node.federationPing(try RunningBroker.full(b2.jid), text: "back").text == "back")
        #expect(broker2.trust.service.sessions.count == 0)
        await broker1.stop()
        await broker2.stop()
    }

    @Test func chainFromAnUnknownCAIsRefusedWithAuditAndNoPin() async throws {
        let fixture = TrustFixture(brokers: BrokerFixture(server: server))
        let room = uniqueRoom()
        let root1 = try fixture.root("root1")
        let rogue = try fixture.root("rogue")
        let other = try fixture.root("other")
        // broker1 trusts only `other`; broker2's chain comes from `rogue`.
        let b1 = try fixture.broker(cloud: "cloud1", host: "cloud1.test", rooms: [room], issuer: root1.ca, anchors: [other.path])
        let b2 = try fixture.broker(cloud: "cloud2", host: "cloud2.test", rooms: [room], issuer: rogue.ca, anchors: [root1.path])
        let broker1 = try RunningBroker(configuration: b1.config)
        let broker2 = try RunningBroker(configuration: b2.config)
        #expect(await eventually(timeout: .seconds(20)) {
            broker1.auditEvents(peer: b2.jid, kind: "trust.handshake").contains { $0.outcome == .refused && $0.reason == "unknownCA" }
        })
        #expect(await eventually { broker1.trustStatus(b2.jid) == "refused:unknownCA" })
        #expect(await eventually { broker2.trustStatus(b1.jid).hasPrefix("refused:") })
        // Nothing pinned on either side.
        #expect(broker1.pin(b2.jid) == nil)
        #expect(broker2.pin(b1.jid) == nil)
        // And so broker2's signed requests are refused as from an untrusted sender.
        #expect(await stanzaCondition { _ = try await broker2.node.federationPing(try RunningBroker.full(b1.jid)) } == "not-authorized")
        #expect(broker1.auditEvents(peer: b2.jid, kind: "trust.envelope").contains { $0.reason == "untrustedSender" })
        await broker1.stop()
        await broker2.stop()
    }

    @Test func revokedPinIsRefusedUntilAllowedAgain() async throws {
        let (broker1, jid1, _, broker2, jid2, _, config1, _) = try await trustedPair(room: uniqueRoom())
        let target = try RunningBroker.full(jid1)
        _ = try await broker2.node.federationPing(target, text: "before")

        // What `intercloud trust revoke --config cloud1.toml JID` does: its own connection to the
        // running broker's database.
        let cli = try IntercloudDatabase.open(path: config1.databasePath, schema: BrokerNode.schema)
        let operatorTool = TrustOperator(store: TrustStore(database: cli), audit: AuditLog(database: cli))
        #expect(try operatorTool.revoke(jid2, note: "test", at: Date()))

        #expect(await stanzaCondition { _ = try await broker2.node.federationPing(target, text: "after") } == "not-authorized")
        #expect(broker1.auditEvents(peer: jid2, kind: "trust.envelope").contains { $0.reason == "pinRevoked" })
        #expect(broker1.trustStatus(jid2) == "refused:pinRevoked")
        // A new handshake from the revoked peer is refused too, and pins nothing.
        let again = await broker2.trust.handshake(with: target)
        #expect((try? again.get()) == nil)
        #expect(broker1.pin(jid2)?.state == .revoked)
        #expect(broker1.auditEvents(peer: jid2, kind: "trust.handshake").contains { $0.reason == "pinRevoked" })

        _ = try operatorTool.allow(jid2, note: "resolved", at: Date())
        _ = try await broker2.node.federationPing(target, text: "allowed again")
        #expect(broker1.trustStatus(jid2) == "trusted")
        try cli.close()
        await broker1.stop()
        await broker2.stop()
    }

    @Test func newKeyIsTrustedOnlyIfItsChainValidates() async throws {
        let fixture = TrustFixture(brokers: BrokerFixture(server: server))
        let room = uniqueRoom()
        let root1 = try fixture.root("root1")
        let root2 = try fixture.root("root2")
        let rogue = try fixture.root("rogue")
        let account2 = try server.freshAccount(prefix: "broker-cloud2", host: "cloud2.test")
        let b1 = try fixture.broker(cloud: "cloud1", host: "cloud1.test", rooms: [room], issuer: root1.ca, anchors: [root2.path])
        let b2 = try fixture.broker(
            cloud: "cloud2", host: "cloud2.test", rooms: [room], issuer: root2.ca, anchors: [root1.path], account: account2,
            leafFile: "cloud2-key")
        let broker1 = try RunningBroker(configuration: b1.config)
        var broker2 = try RunningBroker(configuration: b2.config)
        #expect(await eventually(timeout: .seconds(20)) { broker1.isTrusted(b2.jid) && broker2.isTrusted(b1.jid) })
        let firstKey = CertificateFingerprint.sha256(b2.identity.leaf)

        // cloud2 rotates its key, with a new leaf from the same CA: re-handshake, new pin.
        await broker2.stop()
        let rotated = try root2.ca.issueBrokerIdentity(jid: account2.jid, notBefore: Date() - 3600)
        try rotated.save(
            keyPath: fixture.directory.appendingPathComponent("cloud2-key.key").path,
            chainPath: fixture.directory.appendingPathComponent("cloud2-key-chain.pem").path)
        broker2 = try RunningBroker(configuration: b2.config)
        let secondKey = CertificateFingerprint.sha256(rotated.leaf)
        #expect(await eventually(timeout: .seconds(20)) { broker1.pin(b2.jid)?.fingerprint == secondKey })
        // The audit record follows the pin write (its own transaction): wait for it too.
        #expect(await eventually { broker1.auditEvents(peer: b2.jid, kind: "trust.handshake").contains { $0.reason == "trustedNewKey" } })
        _ = try await broker2.node.federationPing(try RunningBroker.full(b1.jid))

        // Then a key whose chain does not validate: refused, the old pin stays, its envelopes fail.
        await broker2.stop()
        let silent = try rogue.ca.issueBrokerIdentity(jid: account2.jid, notBefore: Date() - 3600)
        try silent.save(
            keyPath: fixture.directory.appendingPathComponent("cloud2-key.key").path,
            chainPath: fixture.directory.appendingPathComponent("cloud2-key-chain.pem").path)
        broker2 = try RunningBroker(configuration: b2.config)
        #expect(await eventually(timeout: .seconds(20)) { broker1.trustStatus(b2.jid) == "refused:unknownCA" })
        #expect(broker1.pin(b2.jid)?.fingerprint == secondKey)
        #expect(broker1.pin(b2.jid)?.fingerprint != firstKey)
        #expect(await stanzaCondition { _ = try await broker2.node.federationPing(try RunningBroker.full(b1.jid)) } == "not-authorized")
        #expect(broker1.auditEvents(peer: b2.jid, kind: "trust.envelope").contains { $0.reason == "badSignature" })
        await broker1.stop()
        await broker2.stop()
    }

    /// A CRL published after trust was established: the periodic reload (run here at once) removes
    /// the pin, audits why, and the peer's requests and new handshakes are refused.
    @Test func certificateRevokedByANewCRLLosesItsPin() async throws {
        let fixture = TrustFixture(brokers: BrokerFixture(server: server))
        let room = uniqueRoom()
        let root1 = try fixture.root("root1")
        let root2 = try fixture.root("root2")
        let crlDirectory = fixture.directory.appendingPathComponent("crls")
        try FileManager.default.createDirectory(at: crlDirectory, withIntermediateDirectories: true)
        let b1 = try fixture.broker(
            cloud: "cloud1", host: "cloud1.test", rooms: [room], issuer: root1.ca, anchors: [root2.path], crls: ["crls"])
        let b2 = try fixture.broker(cloud: "cloud2", host: "cloud2.test", rooms: [room], issuer: root2.ca, anchors: [root1.path])
        let broker1 = try RunningBroker(configuration: b1.config)
        let broker2 = try RunningBroker(configuration: b2.config)
        #expect(await eventually(timeout: .seconds(20)) { broker1.isTrusted(b2.jid) && broker2.isTrusted(b1.jid) })

        let crl = try CertificateRevocationList.make(
            issuer: root2.ca, revoked: [(b2.identity.leaf.serialNumber, Date() - 60)],
            thisUpdate: Date() - 60, nextUpdate: Date() + TrustFixture.day)
        try Data(crl.pemString.utf8).write(to: crlDirectory.appendingPathComponent("root2.crl"))
        let removed = await broker1.trust.reloadAnchors()
        #expect(removed.map(\.reason) == [.revoked])
        #expect(broker1.pin(b2.jid)?.state == .lapsed)
        #expect(broker1.auditEvents(peer: b2.jid, kind: "trust.revalidate").contains { $0.reason == "revoked" })
        #expect(broker1.trustStatus(b2.jid) == "refused:revoked")

        #expect(await stanzaCondition { _ = try await broker2.node.federationPing(try RunningBroker.full(b1.jid)) } == "not-authorized")
        let again = await broker2.trust.handshake(with: try RunningBroker.full(b1.jid))
        #expect((try? again.get()) == nil)
        #expect(broker1.auditEvents(peer: b2.jid, kind: "trust.handshake").first?.reason == "revoked")
        #expect(broker1.pin(b2.jid)?.state == .lapsed)
        await broker1.stop()
        await broker2.stop()
    }

    enum BadLeaf: String, CaseIterable, Sendable {
        case unknownCA, expired, notYetValid, revoked, xmppAddrMismatch, missingXmppAddr
    }

    /// A client on the server runs the handshake with a defective certificate against a broker
    /// (a broker would refuse to start with most of these, so the client drives `TrustService`
    /// itself): each is refused with its own reason in the broker's audit log, the client learns
    /// only `peerRefused`, and nothing is pinned. `xmppAddrMismatch` is a genuine certificate from
    /// a trusted CA, but for another JID than the one the server routed the stanzas from.
    @Test(arguments: BadLeaf.allCases)
    func defectiveCertificateIsRefusedOverTheWireWithItsReason(_ defect: BadLeaf) async throws {
        let fixture = TrustFixture(brokers: BrokerFixture(server: server))
        let root1 = try fixture.root("root1")
        let root2 = try fixture.root("root2")
        let rogue = try fixture.root("rogue")
        let (stranger, strangerJID) = try await strangerClient(server, host: "cloud2.test")
        let day = TrustFixture.day
        let identity: BrokerIdentity
        switch defect {
        case .unknownCA: identity = try rogue.ca.issueBrokerIdentity(jid: strangerJID, notBefore: Date() - day)
        case .expired: identity = try root2.ca.issueBrokerIdentity(jid: strangerJID, notBefore: Date() - 400 * day, validity: 365 * day)
        case .notYetValid: identity = try root2.ca.issueBrokerIdentity(jid: strangerJID, notBefore: Date() + day)
        case .revoked: identity = try root2.ca.issueBrokerIdentity(jid: strangerJID, notBefore: Date() - day)
        case .xmppAddrMismatch: identity = try root2.ca.issueBrokerIdentity(jid: "broker@cloud2.test", notBefore: Date() - day)
        case .missingXmppAddr:
            identity = try root2.ca.issueBrokerIdentity(jid: strangerJID, notBefore: Date() - day, options: .init(xmppAddrs: []))
        }
        var crls: [String] = []
        if defect == .revoked {
            let crl = try CertificateRevocationList.make(
                issuer: root2.ca, revoked: [(identity.leaf.serialNumber, Date() - 60)], thisUpdate: Date() - 60,
                nextUpdate: Date() + day)
            let path = fixture.directory.appendingPathComponent("root2.crl").path
            try Data(crl.pemString.utf8).write(to: URL(fileURLWithPath: path))
            crls = [path]
        }
        let b1 = try fixture.broker(cloud: "cloud1", host: "cloud1.test", issuer: root1.ca, anchors: [root2.path], crls: crls)
        let broker1 = try RunningBroker(configuration: b1.config)
        try await broker1.node.client.waitUntilOnline()

        let database = try IntercloudDatabase.open(
            path: fixture.directory.appendingPathComponent("stranger.sqlite").path, schema: BrokerNode.schema)
        let service = TrustService(
            myJID: strangerJID, identity: identity, anchors: TrustAnchors(anchors: [root1.ca.certificate]), database: database)
        let target = try RunningBroker.full(b1.jid)
        let result = await service.handshake(with: b1.jid) { payload in
            do {
                let answer = try await stranger.iq(.set, to: target, payload: payload)
                return answer.payload?.payloadForm
            } catch XMPPError.stanza(let error) {
                if let refused = error.applicationCondition { return refused.payloadForm }
                throw XMPPError.stanza(error)
            }
        }
        guard case .failure(let refusal) = result else { Issue.record("\(defect): the client was trusted"); return }
        #expect(refusal.reason == .peerRefused)
        let audited = broker1.auditEvents(peer: strangerJID, kind: "trust.handshake")
        #expect(audited.map(\.reason) == [defect.rawValue])
        #expect(audited.first?.outcome == .refused)
        #expect(try broker1.trust.service.store.pins().isEmpty)
        #expect(await broker1.trust.service.pendingSessions == 0)
        try database.close()
        await stranger.stop()
        await broker1.stop()
    }

    @Test func brokerWithoutTrustAnnouncesNoFingerprintAndRefusesFederationRequests() async throws {
        let fixture = TrustFixture(brokers: BrokerFixture(server: server))
        let room = uniqueRoom()
        let root1 = try fixture.root("root1")
        let b1 = try fixture.broker(cloud: "cloud1", host: "cloud1.test", rooms: [room], issuer: root1.ca, anchors: [root1.path])
        let (plainConfig, plainJID) = try fixture.brokers.configuration(cloud: "cloud2", host: "cloud2.test", rooms: [room])
        let broker1 = try RunningBroker(configuration: b1.config)
        let plain = try RunningBroker(configuration: plainConfig)
        #expect(plain.node.trust == nil)
        #expect(plain.node.currentAnnouncement.fingerprint == "")
        #expect(await eventually { broker1.sees(plainJID) && plain.sees(b1.jid) })
        #expect(broker1.trustStatus(plainJID) == "untrusted")
        // No handshake is attempted with a broker that announces no certificate: broker1 looked
        // at its presence and decided so (no waiting for something not to happen).
        #expect(await eventually { broker1.trust.lastHandshakeDecision(for: plainJID) == .noFingerprint })
        #expect(broker1.auditEvents(peer: plainJID, kind: "trust.handshake").isEmpty)

        let ping = XMLElement("ping", namespace: FederationPing.namespace, text: "hi")
        #expect(await stanzaCondition { _ = try await broker1.node.client.iq(.get, to: try RunningBroker.full(plainJID), payload: ping) } == "not-authorized")
        #expect(await eventually {
            ((try? plain.node.audit.events(matching: AuditQuery(peer: b1.jid))) ?? []).contains { $0.reason == "trustNotConfigured" }
        })
        await broker1.stop()
        await plain.stop()
    }
}
