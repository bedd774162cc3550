import Crypto
import Foundation
import Testing
import X509

@testable import Trust

@Suite struct PinLifecycleTests {
    let cloud1: TestPKI.Cloud
    let cloud2: TestPKI.Cloud

    init() throws {
        cloud1 = try TestPKI.cloud("cloud1")
        cloud2 = try TestPKI.cloud("cloud2")
    }

    /// A peer that changed its key is re-trusted only through a handshake whose new chain
    /// validates; the audit record says the key changed.
    @Test func changedKeyIsAuditedAndRepinned() async throws {
        let a = try TestBroker(jid: cloud1.jid, identity: cloud1.identity, anchors: [cloud2.root.certificate])
        let b = try TestBroker(jid: cloud2.jid, identity: cloud2.identity, anchors: [cloud1.root.certificate])
        defer { a.remove(); b.remove() }
        _ = try await runHandshake(a, b).get()
        let oldFingerprint = cloud1.identity.fingerprint
        let ns = "urn:intercloud:catalog:0"
        _ = try await b.service.open(xml: try a.service.seal([1], namespace: ns, to: b.jid), from: a.jid)  // caches the old key

        let renewed = try cloud1.ca.issueBrokerIdentity(jid: cloud1.jid, notBefore: TestPKI.now - 60)
        let a2 = try TestBroker(jid: cloud1.jid, identity: renewed, anchors: [cloud2.root.certificate])
        defer { a2.remove() }
        #expect(a2.service.needsHandshake(with: b.jid, announcedFingerprint: cloud2.identity.fingerprint))
        _ = try await runHandshake(a2, b).get()
        let pin = try #require(try b.store.pin(for: cloud1.jid))
        #expect(pin.fingerprint == renewed.fingerprint)
        let latest = try #require(try b.auditEvents(AuditQuery(outcome: .accepted)).first)
        #expect(latest.reason == "trustedNewKey")
        #expect(latest.detail.contains(oldFingerprint))
        // Envelopes follow the new pin at once: new key accepted, old key refused.
        _ = try await b.service.open(xml: try a2.service.seal([2], namespace: ns, to: b.jid), from: a.jid)
        await #expect(throws: EnvelopeError.self) {
            _ = try await b.service.open(xml: try a.service.seal([3], namespace: ns, to: b.jid), from: a.jid)
        }
        #expect(try b.auditEvents(AuditQuery(kind: "trust.envelope")).first?.reason == "badSignature")

        // A changed key whose chain does not validate leaves the old pin untouched.
        let stranger = try TestPKI.cloud("stranger", jid: cloud1.jid)
        let a3 = try TestBroker(jid: cloud1.jid, identity: stranger.identity, anchors: [cloud2.root.certificate])
        defer { a3.remove() }
        guard case .failure = await runHandshake(a3, b) else { Issue.record("unanchored key accepted"); return }
        #expect(try b.store.pin(for: cloud1.jid)?.fingerprint == renewed.fingerprint)
    }

    /// Two anchors trusted for cloud1 (say an old and a new federation root): a key from the other
    /// one does not replace the pin on its own; the operator's consent lets the next handshake do it.
    @Test func aNewKeyFromAnotherAnchorNeedsTheOperator() async throws {
        let other = try TestPKI.cloud("cloud1-other", jid: cloud1.jid)
        let b = try TestBroker(jid: cloud2.jid, identity: cloud2.identity, anchors: [cloud1.root.certificate, other.root.certificate])
        let a = try TestBroker(jid: cloud1.jid, identity: cloud1.identity, anchors: [cloud2.root.certificate])
        let a2 = try TestBroker(jid: cloud1.jid, identity: other.identity, anchors: [cloud2.root.certificate])
        defer { a.remove(); a2.remove(); b.remove() }
        _ = try await runHandshake(a, b).get()
        guard case .failure(let refusal) = await runHandshake(a2, b) else { Issue.record("re-pinned from another anchor"); return }
        // The initiator is told only that it is not trusted: nothing about our pins.
        #expect(refusal.reason == .peerRefused && refusal.detail.contains("distrusted"), "\(refusal)")
        #expect(try b.store.pin(for: cloud1.jid)?.fingerprint == cloud1.identity.fingerprint)
        #expect(try b.auditEvents(AuditQuery(outcome: .refused)).first?.reason == "keyChangeRefused")
        // The operator consents once: the next handshake re-pins, and the consent is used up.
        #expect(try TrustOperator(store: b.store, audit: b.audit).acceptNewKey(cloud1.jid, at: TestPKI.now))
        _ = try await runHandshake(a2, b).get()
        #expect(try b.store.pin(for: cloud1.jid)?.fingerprint == other.identity.fingerprint)
        #expect(try b.store.pin(for: cloud1.jid)?.acceptsNewKey == false)
        guard case .failure = await runHandshake(a, b) else { Issue.record("the consent was used twice"); return }
    }

    /// With key_change = "operator", even a renewal from the same anchor waits for the operator.
    @Test func operatorOnlyPolicyRefusesEveryKeyChange() async throws {
        let b = try TestBroker(jid: cloud2.jid, identity: cloud2.identity, anchors: [cloud1.root.certificate], keyChange: .operatorOnly)
        let a = try TestBroker(jid: cloud1.jid, identity: cloud1.identity, anchors: [cloud2.root.certificate])
        let renewed = try cloud1.ca.issueBrokerIdentity(jid: cloud1.jid, notBefore: TestPKI.now - 60)
        let a2 = try TestBroker(jid: cloud1.jid, identity: renewed, anchors: [cloud2.root.certificate])
        defer { a.remove(); a2.remove(); b.remove() }
        _ = try await runHandshake(a, b).get()
        guard case .failure = await runHandshake(a2, b) else { Issue.record("renewal accepted without the operator"); return }
        #expect(try b.store.pin(for: cloud1.jid)?.fingerprint == cloud1.identity.fingerprint)
    }

    /// An anchor limited to cloud9's domain vouches for no broker of cloud1, however valid its chain.
    @Test func anAnchorLimitedToOtherDomainsVouchesForNoOneElse() async throws {
        let b = try TestBroker(
            jid: cloud2.jid, identity: cloud2.identity, anchors: [cloud1.root.certificate],
            scopes: [cloud1.root.certificate: ["cloud9.test", "*.cloud9.test"]])
        let a = try TestBroker(jid: cloud1.jid, identity: cloud1.identity, anchors: [cloud2.root.certificate])
        defer { a.remove(); b.remove() }
        guard case .failure = await runHandshake(a, b) else { Issue.record("an out-of-scope anchor vouched"); return }
        #expect(try b.store.pin(for: cloud1.jid) == nil)
        #expect(try b.auditEvents(AuditQuery(outcome: .refused)).first?.reason == "anchorOutOfScope")
        let scoped = TrustAnchors(anchors: [cloud1.root.certificate], scopes: [cloud1.root.certificate: ["*.cloud1.test", "cloud1.test"]])
        #expect(scoped.allows(anchor: cloud1.root.certificate, domain: "cloud1.test"))
        #expect(scoped.allows(anchor: cloud1.root.certificate, domain: "eu.cloud1.test"))
        #expect(!scoped.allows(anchor: cloud1.root.certificate, domain: "evilcloud1.test"))
    }

    /// A CRL published after the handshake: reloading anchors re-verifies pins, removes the revoked
    /// one (audited), and its envelopes are refused from then on.
    @Test func newCRLRemovesExistingPin() async throws {
        let a = try TestBroker(jid: cloud1.jid, identity: cloud1.identity, anchors: [cloud2.root.certificate])
        let b = try TestBroker(jid: cloud2.jid, identity: cloud2.identity, anchors: [cloud1.root.certificate])
        defer { a.remove(); b.remove() }
        _ = try await runHandshake(a, b).get()
        #expect(try b.store.pin(for: a.jid)?.chain().count == 2)  // leaf + intermediate stored
        #expect(await b.service.revalidatePins().isEmpty)

        let crl = try CertificateRevocationList.make(
            issuer: cloud1.ca, revoked: [(cloud1.identity.leaf.serialNumber, TestPKI.now)], thisUpdate: TestPKI.now,
            nextUpdate: TestPKI.now + TestPKI.day)
        let removed = await b.service.reloadAnchors(TrustAnchors(anchors: [cloud1.root.certificate], crls: [crl]))
        #expect(removed.map(\.reason) == [.revoked])
        #expect(try b.store.pin(for: a.jid)?.state == .lapsed)
        #expect(try b.auditEvents(AuditQuery(kind: "trust.revalidate")).map(\.reason) == ["revoked"])

        let xml = try a.service.seal(Array("usage".utf8), namespace: "urn:intercloud:metering:0", to: b.jid)
        await #expect(throws: EnvelopeError(.untrustedSender, "the pinned certificate of broker@cloud1.test no longer validates; re-handshake")) {
            _ = try await b.service.open(xml: xml, from: a.jid)
        }
        #expect(b.service.needsHandshake(with: a.jid, announcedFingerprint: cloud1.identity.fingerprint))
    }

    /// A lapsed pin keeps its anchor: the next key must come from the same anchor (or the
    /// operator), so letting a certificate lapse is no way around `key_change`.
    @Test func aLapsedPinStillHoldsTheKeyChangePolicy() async throws {
        let other = try TestPKI.cloud("cloud1-other", jid: cloud1.jid)
        let b = try TestBroker(jid: cloud2.jid, identity: cloud2.identity, anchors: [cloud1.root.certificate, other.root.certificate])
        let a = try TestBroker(jid: cloud1.jid, identity: cloud1.identity, anchors: [cloud2.root.certificate])
        let fromOther = try TestBroker(jid: cloud1.jid, identity: other.identity, anchors: [cloud2.root.certificate])
        defer { a.remove(); fromOther.remove(); b.remove() }
        _ = try await runHandshake(a, b).get()
        let crl = try CertificateRevocationList.make(
            issuer: cloud1.ca, revoked: [(cloud1.identity.leaf.serialNumber, TestPKI.now)], thisUpdate: TestPKI.now,
            nextUpdate: TestPKI.now + TestPKI.day)
        _ = await b.service.reloadAnchors(TrustAnchors(anchors: [cloud1.root.certificate, other.root.certificate], crls: [crl]))
        #expect(try b.store.pin(for: cloud1.jid)?.state == .lapsed)
        // Another anchor's key for the same JID: refused, the lapsed pin stays.
        guard case .failure = await runHandshake(fromOther, b) else { Issue.record("a lapse let another anchor's key in"); return }
        #expect(try b.auditEvents(AuditQuery(outcome: .refused)).first?.reason == "keyChangeRefused")
        #expect(try b.store.pin(for: cloud1.jid)?.state == .lapsed)
        // The operator's allow does not revive the revoked leaf.
        _ = try TrustOperator(store: b.store, audit: b.audit).allow(cloud1.jid, at: TestPKI.now)
        #expect(try b.store.pin(for: cloud1.jid)?.state == .lapsed)
        // A renewed key from the pinned anchor is taken.
        let renewed = try cloud1.ca.issueBrokerIdentity(jid: cloud1.jid, notBefore: TestPKI.now - 60)
        let a2 = try TestBroker(jid: cloud1.jid, identity: renewed, anchors: [cloud2.root.certificate])
        defer { a2.remove() }
        _ = try await runHandshake(a2, b).get()
        #expect(try b.store.pin(for: cloud1.jid)?.state == .trusted)
        #expect(try b.store.pin(for: cloud1.jid)?.fingerprint == renewed.fingerprint)
    }

    @Test func pendingHandshakesPerPeerAreBounded() async throws {
        let b = try TestBroker(jid: cloud2.jid, identity: cloud2.identity, anchors: [cloud1.root.certificate])
        defer { b.remove() }
        for _ in 0..<10 {
            let hello = TrustWire.element(.hello(.init(chain: cloud1.identity.chain, nonce: TrustHandshake.makeNonce())))
            guard case .result = await b.service.handleRequest(from: cloud1.jid, payload: hello) else {
                Issue.record("hello refused"); return
            }
        }
        #expect(await b.service.pendingSessions == TrustService.maxPendingPerPeer)
        #expect(try b.store.pins().isEmpty)
    }
}

@Suite struct KeyTypeTests {
    /// Ed25519 (and P-384) broker keys under a P-256 CA: handshake and envelopes work the same.
    @Test(arguments: ["ed25519", "p384"])
    func otherLeafKeyTypes(_ type: String) async throws {
        let cloud1 = try TestPKI.cloud("cloud1")
        let cloud2 = try TestPKI.cloud("cloud2")
        let key: Certificate.PrivateKey =
            type == "ed25519" ? Certificate.PrivateKey(Curve25519.Signing.PrivateKey()) : Certificate.PrivateKey(P384.Signing.PrivateKey())
        let identity = try cloud1.ca.issueBrokerIdentity(jid: cloud1.jid, notBefore: TestPKI.now - 60, privateKey: key)
        let a = try TestBroker(jid: cloud1.jid, identity: identity, anchors: [cloud2.root.certificate])
        let b = try TestBroker(jid: cloud2.jid, identity: cloud2.identity, anchors: [cloud1.root.certificate])
        defer { a.remove(); b.remove() }
        _ = try await runHandshake(a, b).get()
        let envelope = try await b.service.open(xml: try a.service.seal([42], namespace: "urn:intercloud:metering:0", to: b.jid), from: a.jid)
        #expect(envelope.payload == [42])
    }
}
