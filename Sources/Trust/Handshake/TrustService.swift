import Foundation
import GRDB
import Logging
import XMLModel

/// How the responder answers an inbound trust IQ (type `set`, payload in `urn:intercloud:trust:0`).
public enum TrustIQResponse: Sendable, Hashable {
    /// IQ `result`, with this payload as its child (none if nil).
    case result(payload: XMLElement?)
    /// IQ `error` of `type='auth'` with the defined condition (`not-authorized`) and this payload as
    /// the application-specific child (`<refused xmlns='urn:intercloud:trust:0' reason='…'/>`).
    case error(condition: String, payload: XMLElement)
}

/// Runs trust handshakes (`TrustHandshake` machines) over a transport the broker supplies, pins
/// trusted peers, audits every decision, and seals/opens envelopes. This is the object the broker
/// wires to XMPP; it never touches the network itself.
///
/// - Initiator: `handshake(with:exchange:)`, where `exchange` sends one IQ set carrying the payload
///   to the peer and returns the payload of its answer (see the method).
/// - Responder: route every inbound IQ set whose child is in `urn:intercloud:trust:0` to
///   `handleRequest(from:payload:)` and answer as the returned `TrustIQResponse` says.
public actor TrustService {
    public nonisolated let myJID: String
    public nonisolated let identity: BrokerIdentity
    public nonisolated let store: TrustStore
    public nonisolated let audit: AuditLog
    public nonisolated let envelopes: EnvelopeVerifier
    public private(set) var verifier: PeerVerifier
    public let handshakeTimeout: TimeInterval
    private let clock: @Sendable () -> Date
    private let logger: Logger
    /// Responder sessions by peer JID and initiator nonce, kept between the two IQs.
    private var pendingHandshakes: [HandshakeKey: TrustHandshake] = [:]

    struct HandshakeKey: Hashable {
        var peer: String
        var session: [UInt8]
    }

    /// - Parameters:
    ///   - database: the broker database opened with `TrustSchema` and `AuditSchema` among its
    ///     schema contributors.
    ///   - clock: source of time for machines and checks (tests pass a fixed clock).
    ///   - ownsReplayRun: whether this process is the broker that runs the replay window (it
    ///     marks the run started, and ends it with `endRun`). A command that only borrows the
    ///     broker's database for a request or two (`intercloud catalog query`) must leave the
    ///     broker's marker alone: it refuses envelopes signed before it started, and records none.
    public init(
        myJID: String, identity: BrokerIdentity, anchors: TrustAnchors, database: DatabasePool,
        replaySkew: TimeInterval = 120, handshakeTimeout: TimeInterval = 30,
        clock: @escaping @Sendable () -> Date = { Date() },
        audit: AuditLog? = nil,
        ownsReplayRun: Bool = true,
        logger: Logger = Logger(label: "intercloud.trust")
    ) {
        self.myJID = XmppAddr.bare(myJID)
        self.identity = identity
        self.store = TrustStore(database: database)
        // The broker passes its one audit log, whose aggregator bounds refusal floods.
        self.audit = audit ?? AuditLog(database: database)
        self.envelopes = EnvelopeVerifier(
            store: store,
            replay: ownsReplayRun
                ? ReplayGuard.beginRun(database: database, skew: replaySkew, now: clock())
                : ReplayGuard(database: database, skew: replaySkew, notBefore: clock()),
            audit: self.audit)
        self.verifier = PeerVerifier(configuration: anchors)
        self.handshakeTimeout = handshakeTimeout
        self.clock = clock
        self.logger = logger
    }

    /// Ends the replay window's run cleanly (`ReplayGuard.endRun`: its nonces are written): call
    /// it last before the database closes, after the last request was opened, so the next start
    /// need not refuse envelopes signed before it.
    public nonisolated func endRun() throws {
        try envelopes.replay.endRun(now: clock())
    }

    /// Closes what the service opened of its own beside the broker's database (the envelope
    /// verifier's pin-version connection): call it before the database closes.
    public nonisolated func close() {
        envelopes.pins.close()
    }

    /// Request nonces in the replay window (diagnostics, tests).
    public nonisolated var rememberedNonces: Int { envelopes.replay.rememberedCount }

    /// Replaces anchors and CRLs (e.g. after the operator updated `certs/` or a new CRL arrived)
    /// and re-verifies every trusted pin against them (`revalidatePins`).
    @discardableResult
    public func reloadAnchors(_ anchors: TrustAnchors) async -> [TrustRefusal] {
        verifier = PeerVerifier(configuration: anchors)
        return await revalidatePins()
    }

    /// Re-verifies each trusted pin's stored chain with the current anchors, CRLs and clock. A pin
    /// that no longer validates (now revoked by a CRL, expired, anchor removed) becomes `lapsed`
    /// and the lapse is audited, so its envelopes are refused (`untrustedSender`) and only a new,
    /// valid handshake can trust the peer again, with a key the key-change policy takes. Call it periodically (e.g. hourly) and after reloads.
    @discardableResult
    public func revalidatePins() async -> [TrustRefusal] {
        guard let pins = try? store.pins(state: .trusted) else { return [] }
        var removed: [TrustRefusal] = []
        for pin in pins {
            let now = clock()
            let verdict: Result<VerifiedPeer, TrustRefusal>
            do {
                verdict = await verifier.verify(chain: try pin.chain(), peerJID: pin.jid, at: now)
            } catch {
                verdict = .failure(TrustRefusal(.malformed, "stored chain unreadable: \(error)"))
            }
            guard case .failure(let refusal) = verdict else { continue }
            // Only the pin that was checked goes: a concurrent handshake may have replaced it.
            guard let fingerprint = pin.fingerprint,
                  (try? await store.lapse(pin.jid, fingerprint: fingerprint, at: now, note: "lapsed: \(refusal.reason.rawValue)")) == true
            else { continue }
            removed.append(refusal)
            logger.notice("pin no longer valid", metadata: ["peer": "\(pin.jid)", "reason": "\(refusal.reason.rawValue)"])
            _ = try? await audit.offPool.refused(
                module: "trust", kind: "trust.revalidate", peer: pin.jid, action: "revalidate",
                reason: refusal.reason.rawValue, detail: refusal.detail, at: now)
        }
        return removed
    }

    /// Whether a peer needs a (new) handshake: never pinned, not trusted, its pinned leaf expired,
    /// or the fingerprint in its presence announcement differs from the pin.
    public nonisolated func needsHandshake(with peerJID: String, announcedFingerprint: String?) -> Bool {
        guard let pin = try? store.pin(for: peerJID), pin.state == .trusted else { return true }
        if let notAfter = pin.notAfter, clock() > notAfter { return true }
        if let announcedFingerprint, announcedFingerprint.lowercased() != pin.fingerprint { return true }
        return false
    }

    // MARK: Initiator

    /// Runs a complete handshake as initiator.
    ///
    /// `exchange` sends an IQ `set` to `peerJID` with the given payload as its child and returns
    /// the child of the answer, in payload form (`XMLElement.payloadForm`): for `type='result'`
    /// its payload (nil if empty); for
    /// `type='error'` the `<refused xmlns='urn:intercloud:trust:0'/>` child of `<error/>` if there is
    /// one. It throws when there is no usable answer (timeout, error without `<refused/>`,
    /// disconnect); that ends the handshake as `.timeout`.
    ///
    /// Returns the new pin, or the refusal (already audited; nothing pinned).
    public func handshake(
        with peerJID: String, exchange: @Sendable (XMLElement) async throws -> XMLElement?
    ) async -> Result<PeerPin, TrustRefusal> {
        let peer = XmppAddr.bare(peerJID)
        do {
            if let refusal = try store.operatorRefusal(for: peer) {
                await recordRefusal(refusal, peer: peer, action: "initiate")
                return .failure(refusal)
            }
        } catch {
            return .failure(TrustRefusal(.unexpectedMessage, "trust store: \(error)"))
        }
        var machine = TrustHandshake(
            role: .initiator, myJID: myJID, peerJID: peer, identity: identity, now: clock(), timeout: handshakeTimeout)
        var action = machine.start(now: clock())
        while true {
            switch action {
            case .send(let message):
                let answer: XMLElement?
                do {
                    answer = try await exchange(TrustWire.element(message))
                } catch {
                    action = machine.timedOut(now: clock())
                    continue
                }
                do {
                    guard let answer else { throw TrustRefusal(.malformed, "an answer without a payload") }
                    action = machine.received(try TrustWire.decode(answer), now: clock())
                } catch {
                    action = machine.abort(error as? TrustRefusal ?? TrustRefusal(.malformed, "\(error)"))
                }
            case .verifyChain(let chain, let jid, let at):
                let verdict = await verifier.verify(chain: chain, peerJID: jid, at: at)
                action = machine.chainVerified(verdict, now: clock())
            case .trust(let verified, _):
                do {
                    let (pin, replaced) = try await store.recordTrusted(verified, at: clock(), keyChange: verifier.configuration.keyChange)
                    await recordAccepted(pin, replaced: replaced, action: "initiate")
                    return .success(pin)
                } catch {
                    let refusal = error as? TrustRefusal ?? TrustRefusal(.unexpectedMessage, "trust store: \(error)")
                    await recordRefusal(refusal, peer: peer, action: "initiate")
                    return .failure(refusal)
                }
            case .refuse(let refusal, let reply):
                await recordRefusal(refusal, peer: peer, action: "initiate")
                if let reply {
                    // Best effort: lets the responder end its session now instead of at its timeout.
                    _ = try? await exchange(TrustWire.element(reply))
                }
                return .failure(refusal)
            case .none:
                let refusal = TrustRefusal(.unexpectedMessage, "handshake stalled")
                await recordRefusal(refusal, peer: peer, action: "initiate")
                return .failure(refusal)
            }
        }
    }

    // MARK: Responder

    /// Handles one inbound trust IQ set from `peerJID` (the stanza's routed `from`), its payload
    /// in payload form (`XMLElement.payloadForm`).
    public func handleRequest(from peerJID: String, payload: XMLElement) async -> TrustIQResponse {
        let peer = XmppAddr.bare(peerJID)
        let now = clock()
        pendingHandshakes = pendingHandshakes.filter { $0.value.deadline >= now }
        let message: TrustMessage
        do {
            message = try TrustWire.decode(payload)
        } catch {
            let refusal = error as? TrustRefusal ?? TrustRefusal(.malformed, "\(error)")
            await recordRefusal(refusal, peer: peer, action: "respond")
            return Self.errorResponse(.refused(.init(reason: refusal.reason, detail: refusal.detail, session: nil)))
        }

        var machine: TrustHandshake
        if case .hello = message {
            do {
                if let refusal = try store.operatorRefusal(for: peer) {
                    await recordRefusal(refusal, peer: peer, action: "respond")
                    // As for the pinning step below: the wire does not say what the operator decided.
                    return Self.errorResponse(.refused(.init(
                        reason: .distrusted, detail: "not trusted here", session: message.session)))
                }
            } catch {
                return Self.errorResponse(.refused(.init(reason: .unexpectedMessage, detail: "\(error)", session: nil)))
            }
            machine = TrustHandshake(
                role: .responder, myJID: myJID, peerJID: peer, identity: identity, now: now, timeout: handshakeTimeout)
        } else if let session = message.session, let existing = pendingHandshakes.removeValue(forKey: HandshakeKey(peer: peer, session: session)) {
            machine = existing
        } else if case .refused = message {
            return .result(payload: nil)  // a refusal for a session we no longer hold: nothing to end
        } else {
            let refusal = TrustRefusal(.unexpectedMessage, "no handshake in progress with \(peer)")
            await recordRefusal(refusal, peer: peer, action: "respond")
            return Self.errorResponse(.refused(.init(reason: refusal.reason, detail: refusal.detail, session: message.session)))
        }

        var action = machine.received(message, now: now)
        while true {
            switch action {
            case .verifyChain(let chain, let jid, let at):
                let verdict = await verifier.verify(chain: chain, peerJID: jid, at: at)
                action = machine.chainVerified(verdict, now: clock())
            case .send(let reply):
                if let session = machine.sessionID {
                    // Bound what one peer can make us hold: keep its newest few pending handshakes.
                    let pending = pendingHandshakes.filter { $0.key.peer == peer }.sorted { $0.value.deadline < $1.value.deadline }
                    for (key, _) in pending.dropLast(Self.maxPendingPerPeer - 1) { pendingHandshakes[key] = nil }
                    pendingHandshakes[HandshakeKey(peer: peer, session: session)] = machine
                }
                return .result(payload: TrustWire.element(reply))
            case .trust(let verified, let reply):
                do {
                    let (pin, replaced) = try await store.recordTrusted(verified, at: clock(), keyChange: verifier.configuration.keyChange)
                    await recordAccepted(pin, replaced: replaced, action: "respond")
                    return .result(payload: reply.map(TrustWire.element))
                } catch {
                    let refusal = error as? TrustRefusal ?? TrustRefusal(.unexpectedMessage, "trust store: \(error)")
                    await recordRefusal(refusal, peer: peer, action: "respond")
                    // The audit has the reason; the wire says only that we do not trust it, so a
                    // requester learns nothing of our pins or the operator's decisions.
                    let told = Self.pinStateReasons.contains(refusal.reason)
                        ? TrustRefusal(.distrusted, "not trusted here") : refusal
                    return Self.errorResponse(.refused(.init(
                        reason: told.reason, detail: told.detail, session: machine.sessionID)))
                }
            case .refuse(let refusal, let reply):
                await recordRefusal(refusal, peer: peer, action: "respond")
                guard let reply else { return .result(payload: nil) }
                return Self.errorResponse(reply)
            case .none:
                return .result(payload: nil)
            }
        }
    }

    static func errorResponse(_ message: TrustMessage) -> TrustIQResponse {
        .error(condition: "not-authorized", payload: TrustWire.element(message))
    }

    static let maxPendingPerPeer = 4

    /// Number of responder handshakes waiting for their `finish` (diagnostics, tests).
    public var pendingSessions: Int { pendingHandshakes.count }

    // MARK: Envelopes

    /// Signs `payload` for `recipient` (bare JID) and returns the `<signed/>` payload XML.
    public nonisolated func seal(_ payload: [UInt8], namespace: String, to recipient: String, inReplyTo: [UInt8]? = nil) throws -> String {
        try sealEnvelope(payload, namespace: namespace, to: recipient, inReplyTo: inReplyTo).xml
    }

    /// The same as `seal`, as the envelope value (its `element` goes into a stanza without XML text in between).
    public nonisolated func sealEnvelope(
        _ payload: [UInt8], namespace: String, to recipient: String, inReplyTo: [UInt8]? = nil
    ) throws -> SignedEnvelope {
        try SignedEnvelope.seal(
            payload, namespace: namespace, from: myJID, to: recipient, identity: identity, now: clock(), inReplyTo: inReplyTo)
    }

    /// Authenticates `payload` for the session's peer with the session's key (a MAC, no signature).
    public nonisolated func sealEnvelope(
        _ payload: [UInt8], namespace: String, session: EnvelopeSession, inReplyTo: [UInt8]? = nil
    ) -> SignedEnvelope {
        SignedEnvelope.seal(payload, namespace: namespace, from: myJID, to: session.peer, session: session, now: clock(), inReplyTo: inReplyTo)
    }

    // MARK: Sessions (docs/protocol/session.md)

    /// Sessions made with peers, in memory.
    public nonisolated var sessions: EnvelopeSessions { envelopes.sessions }

    /// The session to authenticate a request to `peer` (bare JID) with, if one is held.
    public nonisolated func requestSession(for peer: String) -> EnvelopeSession? {
        sessions.current(for: XmppAddr.bare(peer), now: clock())
    }

    /// Whether a request to `peer` should make a new session first: none is held, or the newest
    /// is old enough to renew (`EnvelopeSessions.renewAfter`) before it expires.
    public nonisolated func wantsSession(with peer: String) -> Bool {
        let now = clock()
        guard let current = sessions.current(for: XmppAddr.bare(peer), now: now) else { return true }
        return now.timeIntervalSince(current.established) >= EnvelopeSessions.renewAfter
    }

    /// The session to answer `request` (opened from `peer`) with: the one it came under, if still
    /// held; nil (a signature) for a signed request.
    public nonisolated func answerSession(for request: SignedEnvelope, from peer: String) -> EnvelopeSession? {
        guard let id = request.session else { return nil }
        return sessions.session(peer: XmppAddr.bare(peer), id: id, now: clock())
    }

    /// Responder: reads a peer's `<offer/>` (the payload of a request opened from `peer`), makes
    /// and keeps the session, and returns the `<accept/>` payload to answer with.
    public nonisolated func acceptSession(offer payload: [UInt8], from peer: String) throws -> [UInt8] {
        let now = clock()
        let bare = XmppAddr.bare(peer)
        let fingerprint = try envelopes.trustedFingerprint(of: bare, now: now)
        let (answer, session) = try SessionExchange.accept(offer: payload, requester: bare, responder: myJID, fingerprint: fingerprint, now: now)
        sessions.install(session, now: now)
        return answer
    }

    /// Requester: a session offer made now (by this service's clock).
    public nonisolated func makeSessionOffer() -> SessionExchange.Offer { SessionExchange.Offer(madeAt: clock()) }

    /// Requester: derives and keeps the session from `peer`'s `<accept/>` (the verified payload of
    /// the answer to `offer`).
    @discardableResult
    public nonisolated func completeSession(_ offer: SessionExchange.Offer, accept payload: [UInt8], with peer: String) throws -> EnvelopeSession {
        let now = clock()
        let bare = XmppAddr.bare(peer)
        let fingerprint = try envelopes.trustedFingerprint(of: bare, now: now)
        let session = try offer.complete(accept: payload, requester: myJID, responder: bare, fingerprint: fingerprint, now: now)
        sessions.install(session, now: now)
        return session
    }

    /// Seals a request and returns its nonce too, to open the answer with (`open(…, answering:)`).
    public nonisolated func sealRequest(_ payload: [UInt8], namespace: String, to recipient: String) throws -> (xml: String, nonce: [UInt8]) {
        let envelope = try SignedEnvelope.seal(payload, namespace: namespace, from: myJID, to: recipient, identity: identity, now: clock())
        return (envelope.xml, envelope.nonce)
    }

    /// Verifies an inbound `<signed/>` payload from `sender` (routed `from`) and returns it; the
    /// payload bytes are `envelope.payload`. Refusals are audited; answer them with
    /// `error.stanzaErrorCondition` (`not-authorized`).
    /// `answering`: the nonce of our request when opening its answer; nil for a request.
    public nonisolated func open(
        xml: String, from sender: String, namespace: String? = nil, answering: [UInt8]? = nil
    ) async throws(EnvelopeError) -> SignedEnvelope {
        try await envelopes.open(xml: xml, from: sender, to: myJID, namespace: namespace, answering: answering, now: clock())
    }

    /// Same as `open(xml:…)` for a payload already parsed into an element.
    public nonisolated func open(
        element: XMLElement, from sender: String, namespace: String? = nil, answering: [UInt8]? = nil
    ) async throws(EnvelopeError) -> SignedEnvelope {
        try await envelopes.open(element: element, from: sender, to: myJID, namespace: namespace, answering: answering, now: clock())
    }

    // MARK: Operator decisions (CLI and admin commands), audited

    @discardableResult
    public nonisolated func revoke(_ jid: String, note: String = "") throws -> Bool {
        try TrustOperator(store: store, audit: audit).revoke(jid, note: note, at: clock())
    }

    /// Refusals that would tell a requester about our pins and the operator's decisions.
    static let pinStateReasons: Set<TrustRefusalReason> = [.pinRevoked, .distrusted, .keyChangeRefused]

    // MARK: Audit

    private func recordAccepted(_ pin: PeerPin, replaced: String?, action: String) async {
        logger.info("trusted peer", metadata: ["peer": "\(pin.jid)", "fingerprint": "\(pin.fingerprint ?? "")"])
        // A changed key is accepted only because the new chain validated; say so in the record.
        let detail = "fingerprint \(pin.fingerprint ?? "")" + (replaced.map { " (key changed, was \($0))" } ?? "")
        do {
            try await audit.offPool.record(AuditEvent(
                at: clock(), module: "trust", kind: "trust.handshake", peer: pin.jid, action: action,
                outcome: .accepted, reason: replaced == nil ? "trusted" : "trustedNewKey", detail: detail))
        } catch {
            logger.error("audit write failed", metadata: ["error": "\(error)"])
        }
    }

    private func recordRefusal(_ refusal: TrustRefusal, peer: String, action: String) async {
        logger.notice("trust refused", metadata: ["peer": "\(peer)", "reason": "\(refusal.reason.rawValue)", "detail": "\(refusal.detail)"])
        do {
            try await audit.offPool.refused(
                module: "trust", kind: "trust.handshake", peer: peer, action: action, reason: refusal.reason.rawValue,
                detail: refusal.detail, at: clock())
        } catch {
            logger.error("audit write failed", metadata: ["error": "\(error)"])
        }
    }
}

extension TrustHandshake {
    /// Ends the handshake because of a problem found outside the machine (an undecodable answer).
    public mutating func abort(_ refusal: TrustRefusal) -> Action {
        let session = sessionID
        state = .refused(refusal)
        return .refuse(refusal, reply: .refused(.init(reason: refusal.reason, detail: refusal.detail, session: session)))
    }
}
