import Foundation
import GRDB
import X509
import XMLModel

/// Checks envelopes from peers against their pins: the sender must be pinned and `trusted`, the
/// pinned leaf still valid, the signature must verify with the pinned key over the routed JIDs, and
/// the replay window must admit it. Every refusal is written to the audit log (if given).
///
/// Nothing on the path of an accepted envelope waits for the disk: the pin is read from a cache
/// that SQLite says is current (`PinStatusCache`), and the nonce goes into the in-memory window
/// (`ReplayGuard`). Refusals are audited through the group commit (`AuditLog.offPool`), after which
/// `open` throws.
public struct EnvelopeVerifier: Sendable {
    public var store: TrustStore
    public var replay: ReplayGuard
    public var audit: AuditLog?
    /// Sessions made with peers, whose keys authenticate envelopes by MAC.
    public let sessions: EnvelopeSessions
    let keys = PinnedKeyCache()
    let pins: PinStatusCache

    public init(store: TrustStore, replay: ReplayGuard, audit: AuditLog?, sessions: EnvelopeSessions = EnvelopeSessions()) {
        self.store = store
        self.replay = replay
        self.audit = audit
        self.sessions = sessions
        self.pins = PinStatusCache(path: store.database.path)
    }

    /// The fingerprint `peer` (bare JID) is pinned with, if trusted and unexpired now: what a
    /// session made with it is bound to.
    public func trustedFingerprint(of peer: String, now: Date) throws(EnvelopeError) -> String {
        guard let pin = try currentPin(peer), let fingerprint = pin.fingerprint else {
            throw EnvelopeError(.untrustedSender, "\(peer) is not pinned")
        }
        try Self.checkUsable(state: pin.state, notAfter: pin.notAfter, jid: peer, now: now)
        return fingerprint
    }

    /// Verifies a received envelope and returns its payload bytes.
    /// - Parameters:
    ///   - xml: the IQ/message payload as received.
    ///   - sender / recipient: the stanza's routed `from` and `to` (bare or full JIDs).
    ///   - namespace: if given, the envelope's signed namespace must equal it.
    ///   - answering: nil to open a request (which must not be an answer); the nonce of the request
    ///     we sent to open its answer (which must answer exactly that request).
    public func open(
        xml: String, from sender: String, to recipient: String, namespace: String? = nil, answering: [UInt8]? = nil, now: Date
    ) async throws(EnvelopeError) -> SignedEnvelope {
        try await open(decoding: { () throws(EnvelopeError) in try SignedEnvelope.decode(xml: xml) },
            from: sender, to: recipient, namespace: namespace, answering: answering, now: now)
    }

    /// Same as `open(xml:…)` for a payload already parsed into an element (no XML text in between).
    public func open(
        element: XMLElement, from sender: String, to recipient: String, namespace: String? = nil, answering: [UInt8]? = nil,
        now: Date
    ) async throws(EnvelopeError) -> SignedEnvelope {
        try await open(decoding: { () throws(EnvelopeError) in try SignedEnvelope.decode(element) },
            from: sender, to: recipient, namespace: namespace, answering: answering, now: now)
    }

    private func open(
        decoding decode: () throws(EnvelopeError) -> SignedEnvelope, from sender: String, to recipient: String, namespace: String?,
        answering: [UInt8]?, now: Date
    ) async throws(EnvelopeError) -> SignedEnvelope {
        do {
            let envelope = try decode()
            try Self.checkExchange(envelope, answering: answering)
            // An answer records no nonce: it is bound (signed `re`) to our own request's nonce,
            // which is fresh and whose pending IQ takes one answer, so a replayed answer has
            // nothing to be accepted as. Requests are the ones a replay could repeat.
            try check(envelope, from: sender, to: recipient, namespace: namespace, recordNonce: answering == nil, now: now)
            return envelope
        } catch {
            await record(error, sender: sender, namespace: namespace, now: now)
            throw error
        }
    }

    /// Same as `open(xml:…)` for an already decoded envelope.
    public func open(
        _ envelope: SignedEnvelope, from sender: String, to recipient: String, namespace: String? = nil, now: Date
    ) async throws(EnvelopeError) {
        do {
            try check(envelope, from: sender, to: recipient, namespace: namespace, recordNonce: envelope.inReplyTo == nil, now: now)
        } catch {
            await record(error, sender: sender, namespace: namespace ?? envelope.namespace, now: now)
            throw error
        }
    }

    /// A request must not be an answer; an answer must answer the request we sent. Checked before
    /// the signature, which covers both fields, so neither can be changed on the way.
    static func checkExchange(_ envelope: SignedEnvelope, answering: [UInt8]?) throws(EnvelopeError) {
        switch (answering, envelope.inReplyTo) {
        case (nil, nil): return
        case (nil, .some):
            throw EnvelopeError(.notThisExchange, "an answer presented as a request")
        case (.some, nil):
            throw EnvelopeError(.notThisExchange, "a request where the answer to ours was expected")
        case (.some(let expected), .some(let answered)):
            guard expected == answered else { throw EnvelopeError(.notThisExchange, "the answer to another request") }
        }
    }

    /// Fast path (the usual case): verify with the key of the fingerprint last seen for this
    /// sender, then the pin as it is now (state, fingerprint, expiry) must still be that one, so
    /// decisions made meanwhile (CLI revoke, re-handshake) still apply. Slow path (first envelope,
    /// or the pin changed): read the pin status first, then the same.
    private func check(
        _ envelope: SignedEnvelope, from sender: String, to recipient: String, namespace: String?, recordNonce: Bool, now: Date
    ) throws(EnvelopeError) {
        if let namespace, namespace != envelope.namespace {
            throw EnvelopeError(.wrongNamespace, "envelope for \(envelope.namespace) arrived on \(namespace)")
        }
        let bare = XmppAddr.bare(sender)
        let bytes = envelope.signedBytes(sender: sender, recipient: recipient)
        if let id = envelope.session {
            guard let session = sessions.session(peer: bare, id: id, now: now) else {
                throw EnvelopeError(.unknownSession, "no session \(TrustWire.b64(id)) with \(bare); seal it with a signature")
            }
            guard session.isValid(tag: envelope.signature, for: bytes) else {
                throw EnvelopeError(.badSignature, "mac does not verify with session \(TrustWire.b64(id))")
            }
            guard try admit(envelope, sender: bare, fingerprint: session.fingerprint, recordNonce: recordNonce, now: now) else {
                // The peer re-handshook with another key since: the session is the old key's.
                sessions.forget(peer: bare, id: id)
                throw EnvelopeError(.unknownSession, "session \(TrustWire.b64(id)) was made under \(bare)'s previous pin")
            }
            return
        }
        if let cached = keys.lastKey(for: bare),
            SignatureScheme.isValid(signature: envelope.signature, for: bytes, key: cached.key),
            try admit(envelope, sender: bare, fingerprint: cached.fingerprint, recordNonce: recordNonce, now: now)
        {
            return
        }

        let pin = try currentPin(bare)
        guard let pin, let fingerprint = pin.fingerprint else {
            if pin?.state == .distrusted { throw EnvelopeError(.untrustedSender, "operator distrusts \(bare)") }
            throw EnvelopeError(.untrustedSender, "\(bare) is not pinned")
        }
        try Self.checkUsable(state: pin.state, notAfter: pin.notAfter, jid: bare, now: now)
        guard let key = keys.key(for: pin, store: store) else {
            throw EnvelopeError(.untrustedSender, "pinned certificate of \(pin.jid) is unreadable")
        }
        guard SignatureScheme.isValid(signature: envelope.signature, for: bytes, key: key) else {
            throw EnvelopeError(.badSignature, "signature does not verify with the pinned key \(fingerprint)")
        }
        guard try admit(envelope, sender: bare, fingerprint: fingerprint, recordNonce: recordNonce, now: now) else {
            throw EnvelopeError(.untrustedSender, "pin of \(bare) changed during the check")
        }
    }

    private func currentPin(_ bare: String) throws(EnvelopeError) -> TrustStore.PinStatus? {
        do { return try pins.status(for: bare, store: store) } catch {
            throw EnvelopeError(.untrustedSender, "trust store: \(error)")
        }
    }

    static func checkUsable(state: PinState, notAfter: Date?, jid: String, now: Date) throws(EnvelopeError) {
        switch state {
        case .trusted: break
        case .revoked: throw EnvelopeError(.pinRevoked, "operator revoked the pin of \(jid)")
        case .distrusted: throw EnvelopeError(.untrustedSender, "operator distrusts \(jid)")
        case .lapsed: throw EnvelopeError(.untrustedSender, "the pinned certificate of \(jid) no longer validates; re-handshake")
        }
        if let notAfter, now > notAfter {
            throw EnvelopeError(.untrustedSender, "pinned certificate of \(jid) expired at \(notAfter); re-handshake")
        }
    }

    /// Timestamp window, then: the pin as it is now must still have `fingerprint` (else false,
    /// nothing recorded) and be trusted and unexpired (else the refusal is thrown), and for a
    /// request the nonce must be new (recorded in the window).
    private func admit(
        _ envelope: SignedEnvelope, sender: String, fingerprint: String, recordNonce: Bool, now: Date
    ) throws(EnvelopeError) -> Bool {
        if abs(envelope.timestamp.timeIntervalSince(now)) > replay.skew {
            throw EnvelopeError(.stale, "timestamp \(envelope.timestamp) is more than \(Int(replay.skew)) s from \(now)")
        }
        guard let pin = try currentPin(sender) else { throw EnvelopeError(.untrustedSender, "\(sender) is not pinned") }
        guard pin.fingerprint == fingerprint else { return false }
        try Self.checkUsable(state: pin.state, notAfter: pin.notAfter, jid: sender, now: now)
        if recordNonce, let refusal = replay.admit(sender: sender, nonce: envelope.nonce, sentAt: envelope.timestamp, now: now) {
            throw refusal
        }
        return true
    }

    private func record(_ error: EnvelopeError, sender: String, namespace: String?, now: Date) async {
        // An audit write failure must not turn a refusal into an acceptance; it is dropped here and
        // the refusal still propagates.
        _ = try? await audit?.offPool.refused(
            module: "trust", kind: "trust.envelope", peer: sender, action: namespace ?? "envelope",
            reason: error.code.rawValue, detail: error.detail, at: now)
    }
}

/// Parsed pinned public keys by fingerprint. A fingerprint names one certificate forever, so the
/// cache can never be stale; decisions (revoked, distrusted) are always read from the database.
final class PinnedKeyCache: @unchecked Sendable {
    // @unchecked: all access to `keys` and `lastFingerprint` goes through `lock`.
    private let lock = NSLock()
    private var keys: [String: Certificate.PublicKey] = [:]

    /// JID → fingerprint last used; only a hint (the write transaction re-checks the pin).
    private var lastFingerprint: [String: String] = [:]

    func lastKey(for jid: String) -> (fingerprint: String, key: Certificate.PublicKey)? {
        lock.withLock {
            guard let fingerprint = lastFingerprint[jid], let key = keys[fingerprint] else { return nil }
            return (fingerprint, key)
        }
    }

    func key(for pin: TrustStore.PinStatus, store: TrustStore) -> Certificate.PublicKey? {
        guard let fingerprint = pin.fingerprint else { return nil }
        if let key = lock.withLock({ () -> Certificate.PublicKey? in
            lastFingerprint[pin.jid] = fingerprint
            return keys[fingerprint]
        }) { return key }
        guard let full = try? store.pin(for: pin.jid), let leaf = try? full.leaf(),
            CertificateFingerprint.sha256(leaf) == fingerprint
        else { return nil }
        lock.withLock {
            if keys.count > 4096 { keys.removeAll(); lastFingerprint.removeAll() }
            keys[fingerprint] = leaf.publicKey
            lastFingerprint[pin.jid] = fingerprint
        }
        return leaf.publicKey
    }
}
