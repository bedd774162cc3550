import Foundation
import X509

/// Checks envelopes from peers against their pins: the sender must be pinned and `trusted`, the
/// pinned leaf still valid, the signature must verify with the pinned key over the routed JIDs, and
/// the replay window must admit it. Every refusal is written to the audit log (if given).
public struct EnvelopeVerifier: Sendable {
    public var store: TrustStore
    public var replay: ReplayGuard
    public var audit: AuditLog?
    let keys = PinnedKeyCache()

    public init(store: TrustStore, replay: ReplayGuard, audit: AuditLog?) {
        self.store = store
        self.replay = replay
        self.audit = audit
    }

    /// Verifies a received envelope and returns its payload bytes.
    /// - Parameters:
    ///   - xml: the IQ/message payload as received.
    ///   - sender / recipient: the stanza's routed `from` and `to` (bare or full JIDs).
    ///   - namespace: if given, the envelope's signed namespace must equal it.
    public func open(
        xml: String, from sender: String, to recipient: String, namespace: String? = nil, now: Date
    ) throws(EnvelopeError) -> SignedEnvelope {
        do {
            let envelope = try SignedEnvelope.decode(xml: xml)
            try check(envelope, from: sender, to: recipient, namespace: namespace, now: now)
            return envelope
        } catch {
            record(error, sender: sender, namespace: namespace, now: now)
            throw error
        }
    }

    /// Same as `open(xml:…)` for an already decoded envelope.
    public func open(
        _ envelope: SignedEnvelope, from sender: String, to recipient: String, namespace: String? = nil, now: Date
    ) throws(EnvelopeError) {
        do {
            try check(envelope, from: sender, to: recipient, namespace: namespace, now: now)
        } catch {
            record(error, sender: sender, namespace: namespace ?? envelope.namespace, now: now)
            throw error
        }
    }

    private func check(
        _ envelope: SignedEnvelope, from sender: String, to recipient: String, namespace: String?, now: Date
    ) throws(EnvelopeError) {
        if let namespace, namespace != envelope.namespace {
            throw EnvelopeError(.wrongNamespace, "envelope for \(envelope.namespace) arrived on \(namespace)")
        }
        let pin: TrustStore.PinStatus?
        do { pin = try store.status(for: sender) } catch { throw EnvelopeError(.untrustedSender, "trust store: \(error)") }
        guard let pin else { throw EnvelopeError(.untrustedSender, "\(XmppAddr.bare(sender)) is not pinned") }
        switch pin.state {
        case .trusted: break
        case .revoked: throw EnvelopeError(.pinRevoked, "operator revoked the pin of \(pin.jid)")
        case .distrusted: throw EnvelopeError(.untrustedSender, "operator distrusts \(pin.jid)")
        }
        if let notAfter = pin.notAfter, now > notAfter {
            throw EnvelopeError(.untrustedSender, "pinned certificate of \(pin.jid) expired at \(notAfter); re-handshake")
        }
        guard let key = keys.key(for: pin, store: store) else {
            throw EnvelopeError(.untrustedSender, "pinned certificate of \(pin.jid) is unreadable")
        }
        let bytes = envelope.signedBytes(sender: sender, recipient: recipient)
        guard SignatureScheme.isValid(signature: envelope.signature, for: bytes, key: key) else {
            throw EnvelopeError(.badSignature, "signature does not verify with the pinned key \(pin.fingerprint ?? "")")
        }
        let verdict: EnvelopeError?
        do {
            verdict = try replay.admit(sender: sender, nonce: envelope.nonce, sentAt: envelope.timestamp, now: now)
        } catch {
            // Fail closed: without a durable nonce record we cannot exclude a replay.
            throw EnvelopeError(.replayed, "cannot record nonce: \(error)")
        }
        if let verdict { throw verdict }
    }

    private func record(_ error: EnvelopeError, sender: String, namespace: String?, now: Date) {
        // An audit write failure must not turn a refusal into an acceptance; it is dropped here and
        // the refusal still propagates.
        _ = try? audit?.refused(
            module: "trust", kind: "trust.envelope", peer: sender, action: namespace ?? "envelope",
            reason: error.code.rawValue, detail: error.detail, at: now)
    }
}

/// Parsed pinned public keys by fingerprint. A fingerprint names one certificate forever, so the
/// cache can never be stale; decisions (revoked, distrusted) are always read from the database.
final class PinnedKeyCache: @unchecked Sendable {
    // @unchecked: all access to `keys` goes through `lock`.
    private let lock = NSLock()
    private var keys: [String: Certificate.PublicKey] = [:]

    func key(for pin: TrustStore.PinStatus, store: TrustStore) -> Certificate.PublicKey? {
        guard let fingerprint = pin.fingerprint else { return nil }
        if let key = lock.withLock({ keys[fingerprint] }) { return key }
        guard let full = try? store.pin(for: pin.jid), let leaf = try? full.leaf(),
            CertificateFingerprint.sha256(leaf) == fingerprint
        else { return nil }
        lock.withLock {
            if keys.count > 4096 { keys.removeAll() }
            keys[fingerprint] = leaf.publicKey
        }
        return leaf.publicKey
    }
}
