import Crypto
import Foundation
import Storage
import Testing

@testable import Trust
import XMLModel

/// Session keys (docs/protocol/session.md): made in a signed exchange, then authenticating
/// envelopes by HMAC with every check a signature gets (pin, window, nonce, exchange binding).
@Suite struct EnvelopeSessionTests {
    let cloud1: TestPKI.Cloud
    let cloud2: TestPKI.Cloud
    static let catalog = "urn:intercloud:catalog:0"
    let payload = Array("<query xmlns='urn:intercloud:catalog:0'>SELECT * WHERE { ?s ?p ?o }</query>".utf8)

    init() throws {
        cloud1 = try TestPKI.cloud("cloud1")
        cloud2 = try TestPKI.cloud("cloud2")
    }

    /// Two trusted brokers; `a` made a session with `b` through the exchange's payloads.
    func pairWithSession() async throws -> (TestBroker, TestBroker, EnvelopeSession) {
        let a = try TestBroker(jid: cloud1.jid, identity: cloud1.identity, anchors: [cloud2.root.certificate])
        let b = try TestBroker(jid: cloud2.jid, identity: cloud2.identity, anchors: [cloud1.root.certificate])
        _ = try await runHandshake(a, b).get()
        let offer = a.service.makeSessionOffer()
        let accept = try b.service.acceptSession(offer: offer.payload, from: a.jid + "/broker")
        let session = try a.service.completeSession(offer, accept: accept, with: b.jid)
        return (a, b, session)
    }

    @Test func bothSidesHoldTheSameSession() async throws {
        let (a, b, session) = try await pairWithSession()
        defer { a.remove(); b.remove() }
        let held = try #require(b.service.sessions.session(peer: a.jid, id: session.id, now: TestPKI.now))
        #expect(held.key == session.key && held.peer == a.jid && session.peer == b.jid)
        #expect(held.fingerprint == a.service.identity.fingerprint && session.fingerprint == b.service.identity.fingerprint)
        #expect(session.expires == TestPKI.now.addingTimeInterval(EnvelopeSessions.maxLifetime))
        #expect(a.service.requestSession(for: b.jid)?.id == session.id)
        #expect(!a.service.wantsSession(with: b.jid))
        #expect(b.service.wantsSession(with: a.jid + "/broker") == false)
    }

    @Test func aRequestAndItsAnswerUnderTheSession() async throws {
        let (a, b, session) = try await pairWithSession()
        defer { a.remove(); b.remove() }
        let request = a.service.sealEnvelope(payload, namespace: Self.catalog, session: session)
        let xml = request.xml
        #expect(xml.contains(" session='") && xml.contains(" mac='") && !xml.contains(" sig='"))
        let opened = try await b.service.open(xml: xml, from: a.jid + "/broker", namespace: Self.catalog)
        #expect(opened.payload == payload && opened.session == session.id)
        // The answer goes under the same session, bound to the request.
        let answerSession = try #require(b.service.answerSession(for: opened, from: a.jid))
        let answer = b.service.sealEnvelope(Array("ok".utf8), namespace: Self.catalog, session: answerSession, inReplyTo: opened.nonce)
        let back = try await a.service.open(xml: answer.xml, from: b.jid + "/broker", namespace: Self.catalog, answering: request.nonce)
        #expect(back.payload == Array("ok".utf8))
        // A signed request is answered with a signature.
        let signed = try SignedEnvelope.decode(xml: try a.service.seal(payload, namespace: Self.catalog, to: b.jid))
        #expect(b.service.answerSession(for: signed, from: a.jid) == nil)
        #expect(try b.auditEvents(AuditQuery(kind: "trust.envelope")).isEmpty)
    }

    @Test func aTamperedOrRedirectedMacIsRefused() async throws {
        let (a, b, session) = try await pairWithSession()
        defer { a.remove(); b.remove() }
        var envelope = a.service.sealEnvelope(payload, namespace: Self.catalog, session: session)
        envelope.payload[3] ^= 0x01
        try await expectEnvelopeRefused(.badSignature, at: b) { _ = try await b.service.open(xml: envelope.xml, from: a.jid) }
        // Sealed for another recipient: the routed JIDs are in the MAC'd bytes as in a signature's.
        let elsewhere = SignedEnvelope.seal(payload, namespace: Self.catalog, from: a.jid, to: "broker@cloud3.test", session: session, now: TestPKI.now)
        try await expectEnvelopeRefused(.badSignature, at: b) { _ = try await b.service.open(xml: elsewhere.xml, from: a.jid) }
    }

    @Test func aSessionTheReceiverDoesNotHoldIsUnknown() async throws {
        let (a, b, session) = try await pairWithSession()
        defer { a.remove(); b.remove() }
        b.service.sessions.forget(peer: a.jid)
        let envelope = a.service.sealEnvelope(payload, namespace: Self.catalog, session: session)
        try await expectEnvelopeRefused(.unknownSession, at: b) { _ = try await b.service.open(xml: envelope.xml, from: a.jid) }
        // The same key under a made-up id is unknown too: ids are not guessable handles.
        var other = session
        other.id = Array(repeating: 7, count: 16)
        let forged = a.service.sealEnvelope(payload, namespace: Self.catalog, session: other)
        try await expectEnvelopeRefused(.unknownSession, at: b) { _ = try await b.service.open(xml: forged.xml, from: a.jid) }
    }

    @Test func anotherPeerCannotUseTheSession() async throws {
        let (a, b, session) = try await pairWithSession()
        defer { a.remove(); b.remove() }
        // Presented as from a third broker B trusts nothing about: sessions are held per peer.
        let envelope = SignedEnvelope.seal(payload, namespace: Self.catalog, from: "mallory@cloud1.test", to: b.jid, session: session, now: TestPKI.now)
        try await expectEnvelopeRefused(.unknownSession, at: b) { _ = try await b.service.open(xml: envelope.xml, from: "mallory@cloud1.test") }
    }

    @Test func theReplayWindowAndTheClockApplyUnderASession() async throws {
        let (a, b, session) = try await pairWithSession()
        defer { a.remove(); b.remove() }
        let envelope = a.service.sealEnvelope(payload, namespace: Self.catalog, session: session)
        _ = try await b.service.open(xml: envelope.xml, from: a.jid)
        try await expectEnvelopeRefused(.replayed, at: b) { _ = try await b.service.open(xml: envelope.xml, from: a.jid) }
        let old = SignedEnvelope.seal(payload, namespace: Self.catalog, from: a.jid, to: b.jid, session: session, now: TestPKI.now - 600)
        try await expectEnvelopeRefused(.stale, at: b) { _ = try await b.service.open(xml: old.xml, from: a.jid) }
    }

    @Test func aRevokedPinEndsTheSession() async throws {
        let (a, b, session) = try await pairWithSession()
        defer { a.remove(); b.remove() }
        #expect(try b.service.revoke(a.jid, note: "key leaked"))
        let envelope = a.service.sealEnvelope(payload, namespace: Self.catalog, session: session)
        try await expectEnvelopeRefused(.pinRevoked, at: b) { _ = try await b.service.open(xml: envelope.xml, from: a.jid) }
        // And no new session is made with a peer that is not trusted.
        #expect(throws: EnvelopeError.self) { try b.service.acceptSession(offer: SessionExchange.Offer().payload, from: a.jid) }
    }

    @Test func anEnvelopeNeedsExactlyOneProof() throws {
        let base = "<signed xmlns='urn:intercloud:envelope:0' ns='urn:x:0' ts='1' nonce='AAAAAAAAAAAAAAAAAAAAAA=='"
        let sig = " sig='AQ=='", session = " session='\(TrustWire.b64(Array(repeating: 1, count: 16)))'"
        let mac = " mac='\(TrustWire.b64(Array(repeating: 2, count: 32)))'"
        for attributes in ["", sig + session + mac, sig + mac, session, mac, " session='AQ==' mac='\(TrustWire.b64(Array(repeating: 2, count: 32)))'",
            session + " mac='AQ=='"] {
            #expect(throws: EnvelopeError.self, "\(attributes)") { try SignedEnvelope.decode(xml: base + attributes + "></signed>") }
        }
        #expect(try SignedEnvelope.decode(xml: base + session + mac + "></signed>").session == Array(repeating: 1, count: 16))
        #expect(try SignedEnvelope.decode(xml: base + sig + "></signed>").session == nil)
    }

    @Test func malformedExchangeMessagesAreRefused() throws {
        let key = TrustWire.b64(Array(SessionExchange.Offer().publicKey))
        let id = TrustWire.b64(Array(repeating: 1, count: 16))
        let offers = [
            "<offer xmlns='urn:intercloud:session:0'/>",
            "<offer xmlns='urn:intercloud:session:0' key='AQ=='/>",
            "<offer xmlns='urn:intercloud:other:0' key='\(key)'/>",
            "<accept xmlns='urn:intercloud:session:0' key='\(key)'/>",
            "<offer xmlns='urn:intercloud:session:0' key='\(key)'>text</offer>",
            "<offer xmlns='urn:intercloud:session:0' key='\(key)'><x/></offer>",
            "<offer xmlns='urn:intercloud:session:0' key='\(key)' pad='\(String(repeating: "p", count: 600))'/>",
            "not xml",
        ]
        for offer in offers {
            #expect(throws: SessionExchangeError.self, "\(offer)") {
                try SessionExchange.accept(offer: Array(offer.utf8), requester: "a@x", responder: "b@y", fingerprint: "f", now: TestPKI.now)
            }
        }
        // A low-order public key gives an all-zero secret: refused.
        let zero = TrustWire.b64(Array(repeating: 0, count: 32))
        #expect(throws: SessionExchangeError.self) {
            try SessionExchange.accept(offer: Array("<offer xmlns='urn:intercloud:session:0' key='\(zero)'/>".utf8),
                requester: "a@x", responder: "b@y", fingerprint: "f", now: TestPKI.now)
        }
        for seconds in ["0", "3601", "-1", "1e3", "", "99999999999"] {
            let accept = "<accept xmlns='urn:intercloud:session:0' key='\(key)' id='\(id)' seconds='\(seconds)'/>"
            #expect(throws: SessionExchangeError.self, "\(seconds)") { try SessionExchange.Accept.decode(Array(accept.utf8)) }
        }
    }

    @Test func bothSidesDeriveTheSameKeyAndAWrongIdIsRefused() throws {
        let offer = SessionExchange.Offer(madeAt: TestPKI.now)
        let (answer, responder) = try SessionExchange.accept(
            offer: offer.payload, requester: "a@x/r", responder: "b@y", fingerprint: "fa", now: TestPKI.now, lifetime: 600)
        let requester = try offer.complete(accept: answer, requester: "a@x", responder: "b@y/r", fingerprint: "fb", now: TestPKI.now)
        #expect(requester.key == responder.key && requester.id == responder.id)
        #expect(requester.expires == TestPKI.now + 600 && responder.expires == TestPKI.now + 600)
        // The JIDs are bound: a requester that believes it talks to someone else derives another key.
        #expect(throws: SessionExchangeError.self) {
            try offer.complete(accept: answer, requester: "a@x", responder: "c@y", fingerprint: "fb", now: TestPKI.now)
        }
        var accept = try SessionExchange.Accept.decode(answer)
        accept.id[0] ^= 1
        #expect(throws: SessionExchangeError.self) {
            try offer.complete(accept: Array(accept.element.serialized().utf8), requester: "a@x", responder: "b@y", fingerprint: "fb", now: TestPKI.now)
        }
    }

    @Test func sessionsAreBoundedPerPeerAndInAll() {
        let sessions = EnvelopeSessions(perPeer: 2, total: 5)
        func make(_ peer: String, _ byte: UInt8, at offset: TimeInterval) -> EnvelopeSession {
            EnvelopeSession(
                peer: peer, id: [byte], key: SymmetricKey(size: .bits256), fingerprint: "f", established: TestPKI.now + offset,
                expires: TestPKI.now + offset + 3600)
        }
        for byte: UInt8 in 1...3 { sessions.install(make("a", byte, at: Double(byte)), now: TestPKI.now) }
        #expect(sessions.count == 2)
        #expect(sessions.current(for: "a", now: TestPKI.now)?.id == [3])
        #expect(sessions.session(peer: "a", id: [1], now: TestPKI.now) == nil)
        for (index, peer) in ["b", "c", "d", "e"].enumerated() { sessions.install(make(peer, 9, at: 10 + Double(index)), now: TestPKI.now) }
        #expect(sessions.count == 5)
        // The oldest goes first: a's session 2.
        #expect(sessions.session(peer: "a", id: [2], now: TestPKI.now) == nil)
        #expect(sessions.session(peer: "a", id: [3], now: TestPKI.now) != nil)
        // Expired sessions are not used.
        #expect(sessions.current(for: "e", now: TestPKI.now + 7200) == nil)
        sessions.forget(peer: "e")
        #expect(sessions.count == 4)
    }
}
