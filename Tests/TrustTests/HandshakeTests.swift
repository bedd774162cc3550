import Foundation
import Testing
import X509

@testable import Trust

@Suite struct HandshakeTests {
    @Test func chainsFromDifferentCAsAreTrustedBothWays() async throws {
        let cloud1 = try TestPKI.cloud("cloud1")
        let cloud2 = try TestPKI.cloud("cloud2")
        let a = try TestBroker(jid: cloud1.jid, identity: cloud1.identity, anchors: [cloud2.root.certificate])
        let b = try TestBroker(jid: cloud2.jid, identity: cloud2.identity, anchors: [cloud1.root.certificate])
        defer { a.remove(); b.remove() }

        let log = WireLog()
        let result = await runHandshake(a, b, log: log)
        let pin = try result.get()
        #expect(pin.jid == "broker@cloud2.test")
        #expect(pin.state == .trusted)
        #expect(pin.fingerprint == cloud2.identity.fingerprint)
        #expect(pin.firstTrusted == TestPKI.now)

        let pinAtB = try #require(try b.store.pin(for: a.jid))
        #expect(pinAtB.fingerprint == cloud1.identity.fingerprint)
        #expect(pinAtB.state == .trusted)
        #expect(await b.service.pendingSessions == 0)

        // Two IQ round trips: hello→result, finish→ok.
        #expect(log.entries.count == 2)
        #expect(log.entries[0].request.hasPrefix("<hello xmlns='urn:intercloud:trust:0'"))
        #expect(log.entries[1].answer.hasPrefix("<ok xmlns='urn:intercloud:trust:0'"))

        for broker in [a, b] {
            let events = try broker.auditEvents()
            #expect(events.count == 1)
            #expect(events.first?.kind == "trust.handshake")
            #expect(events.first?.outcome == .accepted)
        }
        #expect(!a.service.needsHandshake(with: b.jid, announcedFingerprint: cloud2.identity.fingerprint))
        #expect(a.service.needsHandshake(with: b.jid, announcedFingerprint: String(repeating: "0", count: 64)))
    }

    @Test func sharedRootWithPerCloudIntermediates() async throws {
        let root = try CertificateAuthority.makeRoot(commonName: "Intercloud Root", notBefore: TestPKI.now - 10 * TestPKI.day)
        let ca1 = try root.makeIntermediate(commonName: "cloud1 CA", notBefore: TestPKI.now - TestPKI.day)
        let ca2 = try root.makeIntermediate(commonName: "cloud2 CA", notBefore: TestPKI.now - TestPKI.day)
        let id1 = try ca1.issueBrokerIdentity(jid: "broker@cloud1.test", notBefore: TestPKI.now - 60)
        let id2 = try ca2.issueBrokerIdentity(jid: "broker@cloud2.test", notBefore: TestPKI.now - 60)
        #expect(id1.chain.count == 2)  // leaf + intermediate, root not sent
        let a = try TestBroker(jid: "broker@cloud1.test/broker", identity: id1, anchors: [root.certificate])
        let b = try TestBroker(jid: "broker@cloud2.test", identity: id2, anchors: [root.certificate])
        defer { a.remove(); b.remove() }
        _ = try await runHandshake(a, b).get()
        #expect(try b.store.pin(for: "broker@cloud1.test")?.state == .trusted)
    }

    @Test func rehandshakeKeepsFirstTrustedForTheSameKey() async throws {
        let cloud1 = try TestPKI.cloud("cloud1")
        let cloud2 = try TestPKI.cloud("cloud2")
        let a = try TestBroker(jid: cloud1.jid, identity: cloud1.identity, anchors: [cloud2.root.certificate])
        let b = try TestBroker(jid: cloud2.jid, identity: cloud2.identity, anchors: [cloud1.root.certificate])
        let later = try TestBroker(
            jid: cloud1.jid, identity: cloud1.identity, anchors: [cloud2.root.certificate], now: TestPKI.now + 3600)
        defer { a.remove(); b.remove(); later.remove() }
        _ = try await runHandshake(a, b).get()
        _ = try await runHandshake(a, b).get()
        #expect(try b.store.pin(for: a.jid)?.firstTrusted == TestPKI.now)
    }

    /// The machines alone: no service, no database, every action checked.
    @Test func machinesBackToBack() async throws {
        let cloud1 = try TestPKI.cloud("cloud1")
        let cloud2 = try TestPKI.cloud("cloud2")
        let now = TestPKI.now
        let nonceA = [UInt8](repeating: 1, count: 32)
        let nonceB = [UInt8](repeating: 2, count: 32)
        var a = TrustHandshake(role: .initiator, myJID: cloud1.jid, peerJID: cloud2.jid, identity: cloud1.identity, now: now, nonce: nonceA)
        var b = TrustHandshake(role: .responder, myJID: cloud2.jid, peerJID: cloud1.jid, identity: cloud2.identity, now: now, nonce: nonceB)
        let verifierAtA = PeerVerifier(anchors: [cloud2.root.certificate])
        let verifierAtB = PeerVerifier(anchors: [cloud1.root.certificate])

        guard case .send(let hello) = a.start(now: now) else { Issue.record("no hello"); return }
        #expect(hello == .hello(.init(chain: cloud1.identity.chain, nonce: nonceA)))
        guard case .verifyChain(let chainA, let jidA, _) = b.received(hello, now: now) else { Issue.record("no verify"); return }
        #expect(jidA == cloud1.jid)
        guard case .send(let result) = b.chainVerified(await verifierAtB.verify(chain: chainA, peerJID: jidA, at: now), now: now),
            case .result(let resultBody) = result
        else { Issue.record("no result"); return }
        #expect(resultBody.echo == nonceA && resultBody.nonce == nonceB)
        guard case .verifyChain(let chainB, let jidB, _) = a.received(result, now: now) else { Issue.record("no verify"); return }
        guard case .send(let finish) = a.chainVerified(await verifierAtA.verify(chain: chainB, peerJID: jidB, at: now), now: now)
        else { Issue.record("no finish"); return }
        // Not trusted yet on either side: only the responder's proof is checked so far.
        guard case .awaitingOk = a.state, case .awaitingFinish = b.state else { Issue.record("early trust"); return }
        guard case .trust(let peerAtB, let ok?) = b.received(finish, now: now) else { Issue.record("no trust at B"); return }
        #expect(peerAtB.jid == cloud1.jid)
        guard case .trust(let peerAtA, nil) = a.received(ok, now: now) else { Issue.record("no trust at A"); return }
        #expect(peerAtA.fingerprint == cloud2.identity.fingerprint)
        #expect(a.isFinished && b.isFinished)
        // Anything after the end is refused without effect.
        #expect(b.received(finish, now: now) == .refuse(TrustRefusal(.unexpectedMessage, "handshake already finished"), reply: nil))
    }

    @Test func lateMessagesTimeOut() throws {
        let cloud1 = try TestPKI.cloud("cloud1")
        var b = TrustHandshake(
            role: .responder, myJID: "broker@cloud2.test", peerJID: cloud1.jid, identity: cloud1.identity,
            now: TestPKI.now, timeout: 10)
        let action = b.received(.hello(.init(chain: cloud1.identity.chain, nonce: Array(repeating: 7, count: 32))), now: TestPKI.now + 11)
        guard case .refuse(let refusal, _) = action else { Issue.record("accepted a late hello"); return }
        #expect(refusal.reason == .timeout)
    }

    @Test func wireRoundTripAndLiteralForm() throws {
        let cloud1 = try TestPKI.cloud("cloud1")
        let messages: [TrustMessage] = [
            .hello(.init(chain: cloud1.identity.chain, nonce: Array(repeating: 1, count: 32))),
            .result(.init(chain: cloud1.identity.chain, nonce: Array(repeating: 2, count: 32), echo: Array(repeating: 1, count: 32), signature: [1, 2, 3])),
            .finish(.init(session: Array(repeating: 1, count: 32), echo: Array(repeating: 2, count: 32), signature: [4, 5])),
            .ok(.init(session: Array(repeating: 1, count: 16))),
            .refused(.init(reason: .xmppAddrMismatch, detail: "leaf is for <x>&'y'", session: nil)),
        ]
        for message in messages {
            #expect(try TrustWire.decode(xml: TrustWire.encode(message)) == message)
        }
        #expect(TrustWire.encode(.ok(.init(session: Array(repeating: 0, count: 16))))
            == "<ok xmlns='urn:intercloud:trust:0' session='AAAAAAAAAAAAAAAAAAAAAA=='/>")
        #expect(throws: TrustRefusal.self) { try TrustWire.decode(xml: "<ok xmlns='urn:other' session='AAAAAAAAAAAAAAAAAAAAAA=='/>") }
        #expect(throws: (any Error).self) { try TrustWire.decode(xml: "<hello xmlns='urn:intercloud:trust:0'") }
    }
}

@Suite struct HandshakeOrchestrationTests {
    /// Both brokers see each other's presence and initiate at the same time: two independent
    /// handshakes, both succeed, one pin per side.
    @Test func simultaneousHandshakesBothSucceed() async throws {
        let cloud1 = try TestPKI.cloud("cloud1")
        let cloud2 = try TestPKI.cloud("cloud2")
        let a = try TestBroker(jid: cloud1.jid, identity: cloud1.identity, anchors: [cloud2.root.certificate])
        let b = try TestBroker(jid: cloud2.jid, identity: cloud2.identity, anchors: [cloud1.root.certificate])
        defer { a.remove(); b.remove() }
        async let fromA = runHandshake(a, b)
        async let fromB = runHandshake(b, a)
        let (resultA, resultB) = await (fromA, fromB)
        _ = try resultA.get()
        _ = try resultB.get()
        #expect(try a.store.pins().map(\.jid) == [cloud2.jid])
        #expect(try b.store.pins().map(\.jid) == [cloud1.jid])
        #expect(await a.service.pendingSessions == 0)
        #expect(await b.service.pendingSessions == 0)
    }

    struct Unreachable: Error {}

    @Test func unreachablePeerTimesOutWithoutState() async throws {
        let cloud1 = try TestPKI.cloud("cloud1")
        let a = try TestBroker(jid: cloud1.jid, identity: cloud1.identity, anchors: [])
        defer { a.remove() }
        let result = await a.service.handshake(with: "broker@cloud2.test") { _ in throw Unreachable() }
        guard case .failure(let refusal) = result else { Issue.record("trusted"); return }
        #expect(refusal.reason == .timeout)
        #expect(try a.store.pins().isEmpty)
        #expect(try a.auditEvents().map(\.reason) == ["timeout"])
    }

    @Test func anchorsLoadFromFilesAndDirectories() throws {
        let cloud1 = try TestPKI.cloud("cloud1")
        let cloud2 = try TestPKI.cloud("cloud2")
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let anchorsDir = directory.appendingPathComponent("anchors")
        try PEMFiles.writeCertificates([cloud1.root.certificate], toPath: anchorsDir.appendingPathComponent("cloud1.pem").path)
        try Data(try cloud2.root.certificate.derBytes()).write(to: anchorsDir.appendingPathComponent("cloud2.der"))
        try Data("not a certificate".utf8).write(to: anchorsDir.appendingPathComponent("notes.txt"))
        let crl = try CertificateRevocationList.make(
            issuer: cloud1.ca, revoked: [], thisUpdate: TestPKI.now, nextUpdate: TestPKI.now + TestPKI.day)
        try Data(crl.derBytes).write(to: directory.appendingPathComponent("cloud1.crl"))
        let loaded = try TrustAnchors.load(
            anchorPaths: [anchorsDir.path], crlPaths: [directory.appendingPathComponent("cloud1.crl").path])
        #expect(Set(loaded.anchors) == [cloud1.root.certificate, cloud2.root.certificate])
        #expect(loaded.crls == [crl])
    }
}
