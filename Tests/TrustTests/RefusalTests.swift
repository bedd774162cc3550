import Foundation
import Testing
import X509

@testable import Trust
import XMLModel

/// Each refusal: its own test, the right machine-readable reason, an audit record at the side that
/// decided, and no trust state left on either side.
@Suite struct RefusalTests {
    let cloud1: TestPKI.Cloud
    let cloud2: TestPKI.Cloud

    init() throws {
        cloud1 = try TestPKI.cloud("cloud1")
        cloud2 = try TestPKI.cloud("cloud2")
    }

    /// cloud1's broker presents `identity` (routed as `broker@cloud1.test`) to cloud2's broker,
    /// which trusts cloud1's root (and `crls`). The responder must refuse with `reason`.
    func expectResponderRefuses(
        _ identity: BrokerIdentity, reason: TrustRefusalReason, crls: [CertificateRevocationList] = [],
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        let a = try TestBroker(jid: cloud1.jid, identity: identity, anchors: [cloud2.root.certificate])
        let b = try TestBroker(jid: cloud2.jid, identity: cloud2.identity, anchors: [cloud1.root.certificate], crls: crls)
        defer { a.remove(); b.remove() }

        let result = await runHandshake(a, b)
        guard case .failure(let refusal) = result else {
            Issue.record("handshake succeeded", sourceLocation: sourceLocation)
            return
        }
        #expect(refusal.reason == .peerRefused, sourceLocation: sourceLocation)
        #expect(refusal.detail.hasPrefix(reason.rawValue), sourceLocation: sourceLocation)

        let decided = try b.auditEvents(AuditQuery(kind: "trust.handshake", outcome: .refused))
        #expect(decided.map(\.reason) == [reason.rawValue], sourceLocation: sourceLocation)
        #expect(decided.first?.peer == cloud1.jid, sourceLocation: sourceLocation)
        #expect(try a.auditEvents(AuditQuery(outcome: .refused)).map(\.reason) == ["peerRefused"], sourceLocation: sourceLocation)
        try expectNoTrustState(a, b, sourceLocation: sourceLocation)
    }

    func expectNoTrustState(_ brokers: TestBroker..., sourceLocation: SourceLocation = #_sourceLocation) throws {
        for broker in brokers {
            #expect(try broker.store.pins().isEmpty, sourceLocation: sourceLocation)
            #expect(try broker.auditEvents(AuditQuery(outcome: .accepted)).isEmpty, sourceLocation: sourceLocation)
        }
    }

    @Test func unknownCA() async throws {
        let stranger = try TestPKI.cloud("stranger", jid: cloud1.jid)
        try await expectResponderRefuses(stranger.identity, reason: .unknownCA)
    }

    @Test func expiredLeaf() async throws {
        let identity = try cloud1.ca.issueBrokerIdentity(jid: cloud1.jid, notBefore: TestPKI.now - 400 * TestPKI.day, validity: 365 * TestPKI.day)
        try await expectResponderRefuses(identity, reason: .expired)
    }

    @Test func notYetValidLeaf() async throws {
        let identity = try cloud1.ca.issueBrokerIdentity(jid: cloud1.jid, notBefore: TestPKI.now + TestPKI.day)
        try await expectResponderRefuses(identity, reason: .notYetValid)
    }

    @Test func revokedByCRL() async throws {
        let identity = try cloud1.ca.issueBrokerIdentity(jid: cloud1.jid, notBefore: TestPKI.now - TestPKI.day)
        let crl = try CertificateRevocationList.make(
            issuer: cloud1.ca, revoked: [(identity.leaf.serialNumber, TestPKI.now - 3600)],
            thisUpdate: TestPKI.now - 3600, nextUpdate: TestPKI.now + 7 * TestPKI.day)
        try await expectResponderRefuses(identity, reason: .revoked, crls: [crl])
    }

    @Test func crlSignedByAnotherKeyIsIgnored() async throws {
        // Same issuer name, different key: a forged CRL must not revoke anything.
        let identity = try cloud1.ca.issueBrokerIdentity(jid: cloud1.jid, notBefore: TestPKI.now - TestPKI.day)
        let forger = try cloud1.root.makeIntermediate(commonName: "cloud1 CA", organization: "cloud1", notBefore: TestPKI.now - TestPKI.day)
        let forged = try CertificateRevocationList.make(
            issuer: forger, revoked: [(identity.leaf.serialNumber, TestPKI.now)], thisUpdate: TestPKI.now,
            nextUpdate: TestPKI.now + TestPKI.day)
        let a = try TestBroker(jid: cloud1.jid, identity: identity, anchors: [cloud2.root.certificate])
        let b = try TestBroker(jid: cloud2.jid, identity: cloud2.identity, anchors: [cloud1.root.certificate], crls: [forged])
        defer { a.remove(); b.remove() }
        _ = try await runHandshake(a, b).get()
    }

    @Test func xmppAddrOfAnotherJID() async throws {
        let identity = try cloud1.ca.issueBrokerIdentity(jid: "other@cloud1.test", notBefore: TestPKI.now - TestPKI.day)
        try await expectResponderRefuses(identity, reason: .xmppAddrMismatch)
    }

    @Test func noXmppAddr() async throws {
        let identity = try cloud1.ca.issueBrokerIdentity(
            jid: cloud1.jid, notBefore: TestPKI.now - TestPKI.day, options: .init(xmppAddrs: []))
        try await expectResponderRefuses(identity, reason: .missingXmppAddr)
    }

    @Test func wrongKeyUsage() async throws {
        let identity = try cloud1.ca.issueBrokerIdentity(
            jid: cloud1.jid, notBefore: TestPKI.now - TestPKI.day, options: .init(keyUsage: KeyUsage(keyEncipherment: true)))
        try await expectResponderRefuses(identity, reason: .wrongKeyUsage)
    }

    /// The initiator refuses a bad responder chain and tells the responder, which ends its session.
    @Test func initiatorRefusesExpiredResponder() async throws {
        let expired = try cloud2.ca.issueBrokerIdentity(jid: cloud2.jid, notBefore: TestPKI.now - 400 * TestPKI.day, validity: 365 * TestPKI.day)
        let a = try TestBroker(jid: cloud1.jid, identity: cloud1.identity, anchors: [cloud2.root.certificate])
        let b = try TestBroker(jid: cloud2.jid, identity: expired, anchors: [cloud1.root.certificate])
        defer { a.remove(); b.remove() }
        let log = WireLog()
        guard case .failure(let refusal) = await runHandshake(a, b, log: log) else { Issue.record("trusted"); return }
        #expect(refusal.reason == .expired)
        #expect(try a.auditEvents().map(\.reason) == ["expired"])
        #expect(try b.auditEvents().map(\.reason) == ["peerRefused"])
        #expect(log.entries.last?.request.hasPrefix("<refused") == true)
        #expect(await b.service.pendingSessions == 0)
        try expectNoTrustState(a, b)
    }

    /// A recorded `result` from an earlier handshake, replayed to a new hello: its signature covers
    /// the old nonce. As sent, the echo gives it away (`replayedNonce`); with the echo rewritten to
    /// the new nonce the signature no longer verifies (`badSignature`).
    @Test func signatureOverWrongNonceIsRefused() async throws {
        let a = try TestBroker(jid: cloud1.jid, identity: cloud1.identity, anchors: [cloud2.root.certificate])
        let b = try TestBroker(jid: cloud2.jid, identity: cloud2.identity, anchors: [cloud1.root.certificate])
        defer { a.remove(); b.remove() }
        let log = WireLog()
        _ = try await runHandshake(a, b, log: log).get()
        let recorded = log.entries[0].answer

        for rewriteEcho in [false, true] {
            let fresh = try TestBroker(jid: cloud1.jid, identity: cloud1.identity, anchors: [cloud2.root.certificate])
            defer { fresh.remove() }
            let result = await fresh.service.handshake(with: cloud2.jid) { payload in
                guard case .hello(let hello) = try TrustWire.decode(payload) else { return nil }  // ignore the refusal notice
                guard rewriteEcho, case .result(var old) = try TrustWire.decode(xml: recorded) else { return try XMLElement.parse(recorded) }
                old.echo = hello.nonce
                return TrustWire.element(.result(old))
            }
            guard case .failure(let refusal) = result else { Issue.record("replay accepted"); continue }
            let expected: TrustRefusalReason = rewriteEcho ? .badSignature : .replayedNonce
            #expect(refusal.reason == expected)
            #expect(try fresh.auditEvents(AuditQuery(outcome: .refused)).map(\.reason) == [expected.rawValue])
            try expectNoTrustState(fresh)
        }
    }

    /// A finish recorded from an earlier handshake, replayed to the responder in a new session.
    @Test func replayedFinishIsRefusedByResponder() async throws {
        let a = try TestBroker(jid: cloud1.jid, identity: cloud1.identity, anchors: [cloud2.root.certificate])
        let b = try TestBroker(jid: cloud2.jid, identity: cloud2.identity, anchors: [cloud1.root.certificate])
        defer { a.remove(); b.remove() }
        let log = WireLog()
        _ = try await runHandshake(a, b, log: log).get()
        let oldFinish = log.entries[1].request

        let fresh = try TestBroker(jid: cloud2.jid, identity: cloud2.identity, anchors: [cloud1.root.certificate])
        defer { fresh.remove() }
        // Attacker (routed as cloud1's broker, e.g. a compromised server) replays hello then finish.
        guard case .result = await fresh.service.handleRequest(from: cloud1.jid, payload: try XMLElement.parse(log.entries[0].request)) else {
            Issue.record("hello refused"); return
        }
        guard case .error(let condition, let payload) = await fresh.service.handleRequest(from: cloud1.jid, payload: try XMLElement.parse(oldFinish)),
            case .refused(let refused) = try TrustWire.decode(payload)
        else { Issue.record("replayed finish accepted"); return }
        #expect(condition == "not-authorized")
        #expect(refused.reason == .replayedNonce)
        #expect(try fresh.auditEvents(AuditQuery(outcome: .refused)).map(\.reason) == ["replayedNonce"])
        try expectNoTrustState(fresh)
    }

    @Test func relayedHandshakeFailsOnRoutedJIDs() async throws {
        // B's chain is fine, but A dialled "broker@cloud3.test" and the answer comes from cloud2's
        // broker: the XmppAddr does not match the JID A talks to.
        let a = try TestBroker(jid: cloud1.jid, identity: cloud1.identity, anchors: [cloud2.root.certificate])
        let b = try TestBroker(jid: cloud2.jid, identity: cloud2.identity, anchors: [cloud1.root.certificate])
        defer { a.remove(); b.remove() }
        let bService = b.service
        let result = await a.service.handshake(with: "broker@cloud3.test") { payload in
            switch await bService.handleRequest(from: "broker@cloud1.test", payload: payload) {
            case .result(let reply): return reply
            case .error(_, let reply): return reply
            }
        }
        guard case .failure(let refusal) = result else { Issue.record("trusted"); return }
        #expect(refusal.reason == .xmppAddrMismatch)
        #expect(try a.store.pins().isEmpty)
    }

    @Test func operatorDistrustRefusesHandshake() async throws {
        let a = try TestBroker(jid: cloud1.jid, identity: cloud1.identity, anchors: [cloud2.root.certificate])
        let b = try TestBroker(jid: cloud2.jid, identity: cloud2.identity, anchors: [cloud1.root.certificate])
        defer { a.remove(); b.remove() }
        try TrustOperator(store: b.store, audit: b.audit).distrust(cloud1.jid, note: "left the exchange", at: TestPKI.now)
        guard case .failure = await runHandshake(a, b) else { Issue.record("trusted"); return }
        #expect(try b.store.pin(for: cloud1.jid)?.state == .distrusted)
        #expect(try b.auditEvents(AuditQuery(outcome: .refused)).map(\.reason) == ["distrusted"])
        #expect(try a.store.pins().isEmpty)
        // Allow lifts it; the next handshake decides.
        try TrustOperator(store: b.store, audit: b.audit).allow(cloud1.jid, at: TestPKI.now)
        _ = try await runHandshake(a, b).get()
    }

    @Test func unexpectedAndMalformedRequests() async throws {
        let b = try TestBroker(jid: cloud2.jid, identity: cloud2.identity, anchors: [cloud1.root.certificate])
        defer { b.remove() }
        guard case .error(_, let payload) = await b.service.handleRequest(
                from: cloud1.jid, payload: try XMLElement.parse("<hello xmlns='urn:intercloud:trust:0' nonce='!!'/>")),
            case .refused(let refused) = try TrustWire.decode(payload)
        else { Issue.record("accepted"); return }
        #expect(refused.reason == .malformed)
        #expect(try b.auditEvents().map(\.reason) == ["malformed"])
        #expect(try b.store.pins().isEmpty)
    }
}
