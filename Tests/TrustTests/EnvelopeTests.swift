import Foundation
import GRDB
import Storage
import Testing

@testable import Trust
import XMLModel

@Suite struct EnvelopeTests {
    let cloud1: TestPKI.Cloud
    let cloud2: TestPKI.Cloud
    static let catalog = "urn:intercloud:catalog:0"
    let payload = Array("<query xmlns='urn:intercloud:catalog:0'>SELECT * WHERE { ?s ?p ?o }</query>".utf8)

    init() throws {
        cloud1 = try TestPKI.cloud("cloud1")
        cloud2 = try TestPKI.cloud("cloud2")
    }

    /// Two brokers that completed the handshake.
    func trustedPair() async throws -> (TestBroker, TestBroker) {
        let a = try TestBroker(jid: cloud1.jid, identity: cloud1.identity, anchors: [cloud2.root.certificate])
        let b = try TestBroker(jid: cloud2.jid, identity: cloud2.identity, anchors: [cloud1.root.certificate])
        _ = try await runHandshake(a, b).get()
        return (a, b)
    }

    @Test func signedEnvelopeIsAccepted() async throws {
        let (a, b) = try await trustedPair()
        defer { a.remove(); b.remove() }
        let xml = try a.service.seal(payload, namespace: Self.catalog, to: b.jid)
        #expect(xml.hasPrefix("<signed xmlns='urn:intercloud:envelope:0'"))
        let envelope = try await b.service.open(xml: xml, from: a.jid + "/broker", namespace: Self.catalog)
        #expect(envelope.payload == payload)
        #expect(envelope.namespace == Self.catalog)
        #expect(try b.auditEvents(AuditQuery(kind: "trust.envelope")).isEmpty)
    }

    /// An envelope as the XMPP layer hands it over (an element) decodes to the envelope sealed,
    /// in payload form and through its text alike.
    @Test func aSealedEnvelopeDecodesTheSameFromItsElementAndItsText() throws {
        let sealed = try SignedEnvelope.seal(payload, namespace: Self.catalog, from: cloud1.jid, to: cloud2.jid, identity: cloud1.identity, now: TestPKI.now)
        #expect(try SignedEnvelope.decode(#require(sealed.element.payloadForm)) == sealed)
        #expect(try SignedEnvelope.decode(xml: sealed.element.serialized()) == sealed)
    }

    @Test func tamperedEnvelope() async throws {
        let (a, b) = try await trustedPair()
        defer { a.remove(); b.remove() }
        var envelope = try SignedEnvelope.decode(xml: try a.service.seal(payload, namespace: Self.catalog, to: b.jid))
        envelope.payload[envelope.payload.count - 10] ^= 0x01
        try await expectEnvelopeRefused(.badSignature, at: b) { _ = try await b.service.open(xml: envelope.xml, from: a.jid) }
    }

    @Test func envelopeForAnotherRecipientOrNamespace() async throws {
        let (a, b) = try await trustedPair()
        defer { a.remove(); b.remove() }
        // Signed for broker@cloud3.test, delivered to B: the routed recipient is part of what is signed.
        let xml = try a.service.seal(payload, namespace: Self.catalog, to: "broker@cloud3.test")
        try await expectEnvelopeRefused(.badSignature, at: b) { _ = try await b.service.open(xml: xml, from: a.jid) }
        let other = try a.service.seal(payload, namespace: Self.catalog, to: b.jid)
        try await expectEnvelopeRefused(.wrongNamespace, at: b) { _ = try await b.service.open(xml: other, from: a.jid, namespace: "urn:intercloud:migration:0") }
    }

    @Test func replayedEnvelope() async throws {
        let (a, b) = try await trustedPair()
        defer { a.remove(); b.remove() }
        let xml = try a.service.seal(payload, namespace: Self.catalog, to: b.jid)
        _ = try await b.service.open(xml: xml, from: a.jid)
        try await expectEnvelopeRefused(.replayed, at: b) { _ = try await b.service.open(xml: xml, from: a.jid) }
    }

    /// Nonces are committed without their own fsync; the run marker keeps the guarantee. After an
    /// unclean stop (no `endRun`), an envelope signed before the restart is refused (its nonce may
    /// be the one a power loss took) and one signed after it is accepted; after a clean stop the
    /// earlier envelope is accepted as usual.
    @Test(arguments: [false, true])
    func envelopesSignedBeforeARestartAfterAnUncleanStopAreRefused(_ clean: Bool) async throws {
        let (a, b) = try await trustedPair()
        defer { a.remove(); b.remove() }
        let early = try a.service.seal(payload, namespace: Self.catalog, to: b.jid)
        if clean { try b.service.endRun() }
        let path = b.database.path
        try b.database.close()
        let reopened = try IntercloudDatabase.open(path: path, schema: [TrustSchema.self, AuditSchema.self])
        let restarted = TrustService(
            myJID: b.jid, identity: cloud2.identity, anchors: TrustAnchors(anchors: [cloud1.root.certificate]),
            database: reopened, clock: { TestPKI.now + 5 })
        if clean {
            _ = try await restarted.open(xml: early, from: a.jid)
        } else {
            do {
                _ = try await restarted.open(xml: early, from: a.jid)
                Issue.record("an envelope signed before an unclean restart was accepted")
            } catch {
                #expect(error.code == .stale, "\(error)")
            }
            #expect(restarted.rememberedNonces == 0)  // the refusal recorded no nonce
            // Sealed after the restart: accepted.
            let later = TrustService(
                myJID: a.jid, identity: cloud1.identity, anchors: TrustAnchors(anchors: [cloud2.root.certificate]),
                database: a.database, clock: { TestPKI.now + 6 })
            _ = try await restarted.open(xml: try later.seal(payload, namespace: Self.catalog, to: b.jid), from: a.jid)
        }
    }

    /// A command borrowing the broker's database (`intercloud catalog query`) leaves the run
    /// marker alone: after the broker stopped cleanly and such a command ran and exited, the broker
    /// starts clean and accepts an envelope signed before it, as after any clean stop.
    @Test func aBorrowingCommandLeavesTheBrokersRunMarkerAlone() async throws {
        let (a, b) = try await trustedPair()
        defer { a.remove(); b.remove() }
        let early = try a.service.seal(payload, namespace: Self.catalog, to: b.jid)
        try b.service.endRun()
        let path = b.database.path
        try b.database.close()
        let reopened = try IntercloudDatabase.open(path: path, schema: [TrustSchema.self, AuditSchema.self])
        let anchors = TrustAnchors(anchors: [cloud1.root.certificate])
        let command = TrustService(
            myJID: b.jid, identity: cloud2.identity, anchors: anchors, database: reopened, clock: { TestPKI.now + 5 }, ownsReplayRun: false)
        // The command itself refuses what was signed before it started.
        do {
            _ = try await command.open(xml: early, from: a.jid)
            Issue.record("a borrowing command accepted an envelope signed before it started")
        } catch {
            #expect(error.code == .stale, "\(error)")
        }
        let broker = TrustService(myJID: b.jid, identity: cloud2.identity, anchors: anchors, database: reopened, clock: { TestPKI.now + 6 })
        _ = try await broker.open(xml: early, from: a.jid)
    }

    /// An answer is bound to our request's fresh nonce, so it needs no nonce record of its own: the
    /// requester writes nothing, and the answer still cannot be used for another request.
    @Test func answersRecordNoNonce() async throws {
        let (a, b) = try await trustedPair()
        defer { a.remove(); b.remove() }
        let request = try a.service.sealRequest(payload, namespace: Self.catalog, to: b.jid)
        let opened = try await b.service.open(xml: request.xml, from: a.jid, namespace: Self.catalog)
        let answer = try b.service.seal(payload, namespace: Self.catalog, to: a.jid, inReplyTo: opened.nonce)
        _ = try await a.service.open(xml: answer, from: b.jid, namespace: Self.catalog, answering: request.nonce)
        #expect(a.service.rememberedNonces == 0)
        #expect(b.service.rememberedNonces == 1)
        let other = try a.service.sealRequest(payload, namespace: Self.catalog, to: b.jid)
        try await expectEnvelopeRefused(.notThisExchange, at: a) {
            _ = try await a.service.open(xml: answer, from: b.jid, namespace: Self.catalog, answering: other.nonce)
        }
    }

    /// Nonces live in memory and are written when the run ends cleanly: after a clean restart
    /// the window holds them again and a replay is `replayed`.
    @Test func replayedEnvelopeAfterACleanRestart() async throws {
        let (a, b) = try await trustedPair()
        defer { a.remove(); b.remove() }
        let xml = try a.service.seal(payload, namespace: Self.catalog, to: b.jid)
        _ = try await b.service.open(xml: xml, from: a.jid)
        #expect(try ReplayGuard.persistedCount(b.database) == 0)  // nothing written while the run goes on
        try b.service.endRun()
        #expect(try ReplayGuard.persistedCount(b.database) == 1)
        let path = b.database.path
        try b.database.close()

        // "Restart": a new database pool and a new service over the same file.
        let reopened = try IntercloudDatabase.open(path: path, schema: [TrustSchema.self, AuditSchema.self])
        let restarted = TrustService(
            myJID: b.jid, identity: cloud2.identity, anchors: TrustAnchors(anchors: [cloud1.root.certificate]),
            database: reopened, clock: { TestPKI.now + 5 })
        #expect(restarted.rememberedNonces == 1)
        do {
            _ = try await restarted.open(xml: xml, from: a.jid)
            Issue.record("replay accepted after restart")
        } catch {
            #expect(error.code == .replayed)
        }
        #expect(try AuditLog(database: reopened).events(matching: AuditQuery(kind: "trust.envelope")).first?.reason == "replayed")
    }

    /// A sender at its bound of nonces in the window is refused (`tooManyRequests`) while other
    /// senders are not, and is admitted again once its oldest nonces left the window.
    @Test func theReplayWindowIsBoundedPerSender() {
        var window = NonceWindowState(skew: 120, maxPerSender: 3, maxTotal: 5)
        func entry(_ sender: String, _ byte: UInt8, at time: Double) -> NonceWindowState.Entry {
            .init(sender: sender, nonce: [UInt8](repeating: byte, count: 16), sentAt: time, arrivedAt: time)
        }
        for byte in UInt8(1)...3 { #expect(window.admit(entry("a", byte, at: 1000 + Double(byte))) == .admitted) }
        #expect(window.admit(entry("a", 4, at: 1010)) == .full(perSender: true))
        #expect(window.admit(entry("a", 1, at: 1010)) == .replayed)
        #expect(window.admit(entry("b", 1, at: 1010)) == .admitted)
        #expect(window.admit(entry("c", 1, at: 1010)) == .admitted)
        #expect(window.admit(entry("d", 1, at: 1010)) == .full(perSender: false))
        // 240 s after the first arrivals they are stale whatever they say: forgotten.
        #expect(window.admit(entry("a", 4, at: 1001 + 240.5)) == .admitted)
        #expect(window.count(from: "a") == 3)
        #expect(!window.contains([UInt8](repeating: 1, count: 16), from: "a"))
    }

    @Test func staleEnvelope() async throws {
        let (a, b) = try await trustedPair()
        defer { a.remove(); b.remove() }
        let old = try SignedEnvelope.seal(
            payload, namespace: Self.catalog, from: a.jid, to: b.jid, identity: cloud1.identity, now: TestPKI.now - 600)
        try await expectEnvelopeRefused(.stale, at: b) { _ = try await b.service.open(xml: old.xml, from: a.jid) }
    }

    @Test func envelopeFromUntrustedJID() async throws {
        let (a, b) = try await trustedPair()
        defer { a.remove(); b.remove() }
        // A broker B never handshook with, even with a certificate from a CA B trusts.
        let mallory = try cloud1.ca.issueBrokerIdentity(jid: "mallory@cloud1.test", notBefore: TestPKI.now - 60)
        let fromMallory = try SignedEnvelope.seal(
            payload, namespace: Self.catalog, from: "mallory@cloud1.test", to: b.jid, identity: mallory, now: TestPKI.now)
        try await expectEnvelopeRefused(.untrustedSender, at: b) { _ = try await b.service.open(xml: fromMallory.xml, from: "mallory@cloud1.test") }
        #expect(try b.auditEvents(AuditQuery(peer: "mallory@cloud1.test")).count == 1)
    }

    @Test func envelopeAfterOperatorRevokedThePin() async throws {
        let (a, b) = try await trustedPair()
        defer { a.remove(); b.remove() }
        let first = try a.service.seal(payload, namespace: Self.catalog, to: b.jid)
        _ = try await b.service.open(xml: first, from: a.jid)
        // The CLI revokes through its own connection to the same database file.
        let cli = try IntercloudDatabase.open(path: b.database.path, schema: [TrustSchema.self, AuditSchema.self])
        #expect(try TrustOperator(store: TrustStore(database: cli), audit: AuditLog(database: cli)).revoke(a.jid, note: "key leaked", at: TestPKI.now))
        let second = try a.service.seal(payload, namespace: Self.catalog, to: b.jid)
        try await expectEnvelopeRefused(.pinRevoked, at: b) { _ = try await b.service.open(xml: second, from: a.jid) }
        #expect(try b.auditEvents(AuditQuery(kind: "trust.operator")).map(\.action) == ["revoke"])
        // New handshakes are refused too until the operator allows the peer again.
        guard case .failure = await runHandshake(a, b) else { Issue.record("re-trusted a revoked pin"); return }
        #expect(try b.store.pin(for: a.jid)?.state == .revoked)
    }

    @Test("an answer is bound to its request: not a request, not another request's answer, and its binding cannot be stripped")
    func answersAreBoundToTheirRequest() async throws {
        let (a, b) = try await trustedPair()
        defer { a.remove(); b.remove() }
        // a asks b; b answers that request.
        let request = try a.service.sealRequest(payload, namespace: Self.catalog, to: b.jid)
        let opened = try await b.service.open(xml: request.xml, from: a.jid, namespace: Self.catalog)
        let answer = try b.service.seal(Array("answer".utf8), namespace: Self.catalog, to: a.jid, inReplyTo: opened.nonce)
        #expect(try await a.service.open(xml: answer, from: b.jid, namespace: Self.catalog, answering: request.nonce).payload == Array("answer".utf8))

        // The same answer presented to a as a request from b (a compromised server replaying it).
        let again = try b.service.seal(Array("answer".utf8), namespace: Self.catalog, to: a.jid, inReplyTo: opened.nonce)
        try await expectEnvelopeRefused(.notThisExchange, at: a) { _ = try await a.service.open(xml: again, from: b.jid, namespace: Self.catalog) }
        // As the answer to another request of a's.
        let other = try a.service.sealRequest(payload, namespace: Self.catalog, to: b.jid)
        let third = try b.service.seal(Array("answer".utf8), namespace: Self.catalog, to: a.jid, inReplyTo: opened.nonce)
        try await expectEnvelopeRefused(.notThisExchange, at: a) {
            _ = try await a.service.open(xml: third, from: b.jid, namespace: Self.catalog, answering: other.nonce)
        }
        // With its `re` stripped it reads as a request, but the signature covered "answer" and the nonce.
        var stripped = try SignedEnvelope.decode(xml: try b.service.seal(
            Array("answer".utf8), namespace: Self.catalog, to: a.jid, inReplyTo: opened.nonce))
        stripped.inReplyTo = nil
        try await expectEnvelopeRefused(.badSignature, at: a) { _ = try await a.service.open(xml: stripped.xml, from: b.jid, namespace: Self.catalog) }
        // A request where an answer was expected.
        let plainRequest = try b.service.seal(payload, namespace: Self.catalog, to: a.jid)
        try await expectEnvelopeRefused(.notThisExchange, at: a) {
            _ = try await a.service.open(xml: plainRequest, from: b.jid, namespace: Self.catalog, answering: request.nonce)
        }
    }

    @Test func unsignedRequest() async throws {
        let (a, b) = try await trustedPair()
        defer { a.remove(); b.remove() }
        try await expectEnvelopeRefused(.unsigned, at: b) {
            _ = try await b.service.open(xml: String(decoding: payload, as: UTF8.self), from: a.jid)
        }
    }
}
