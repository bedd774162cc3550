import Discovery
import Foundation
import Logging
import Peering
import Synchronization
import Trust
import XMPP
import XMLModel

/// Federation namespaces that require signed envelopes (DESIGN.md: "every message after step 2
/// is signed by the sender's broker key").
///
/// On the wire a signed request is an IQ whose child is
/// `<signed xmlns='urn:intercloud:envelope:0' ns='urn:intercloud:<part>:0' …>`: XMPP routes IQs by
/// the child's namespace, so one handler on the envelope namespace opens every envelope and
/// dispatches on the signed `ns`. Each federation namespace also gets a handler of its own, which
/// only ever sees unsigned payloads and refuses them. Every refusal is `not-authorized` and is in
/// the audit log before the error is sent. Answers are sealed too, and `request` opens them, so
/// both directions are authenticated.
///
/// Without trust configured (`trust == nil`) every request in these namespaces is refused the same
/// way (audited with reason `trustNotConfigured`).
///
/// Sessions (docs/protocol/session.md): the first request to a peer also starts a session
/// exchange in the background; once it completes, requests to that peer and their answers are
/// authenticated by HMAC under the session's key instead of two signatures. A request the peer
/// refuses `unknownSession` (it restarted, or forgot the session) was refused before any handler
/// ran, so it is sealed again with a signature and sent once more.
public final class SignedRequests: SignedTransport {
    struct Route: Sendable {
        var maxPayloadBytes: Int
        var handler: SignedRequestHandler
    }

    let trust: TrustService?
    let audit: AuditLog
    let client: XMPPClient
    let registry: PeerRegistry
    let logger: Logger
    private let tasks: TaskBag
    private let routes = Mutex<[String: Route]>([:])
    private let installed = Mutex(false)
    /// Upper bound on one envelope IQ child; routes bound their decoded payloads more tightly.
    static let maxEnvelopeBytes = 1 << 20
    /// Requests being checked or handled at once, in all and per sender (`RequestSlots`); more are
    /// answered `resource-constraint`, so a flood cannot queue unbounded signature checks and
    /// database writes, and one sender cannot take the slots every other peer needs.
    public static let maxConcurrentRequests = 64
    public static let maxConcurrentRequestsPerPeer = 16
    private let slots = Mutex(RequestSlots(global: maxConcurrentRequests, perPeer: maxConcurrentRequestsPerPeer))
    /// Refusals are logged once per sender and audit window; the audit counts every one.
    private let refusalLog: RefusalLogGate
    /// Whether requests make and use sessions (`[trust] sessions`); the benchmark turns it off to
    /// measure signatures alone.
    private let sessionsEnabled: Mutex<Bool>
    /// Peers with a session exchange in flight, or whose last one failed: when the next may start.
    /// Bounded (peers come from our own routing table, but the bound holds anyway).
    private let sessionAttempts = Mutex<[String: ContinuousClock.Instant]>([:])
    static let maxSessionAttempts = 4096
    /// After a failed exchange (e.g. a peer without sessions answers `service-unavailable`),
    /// requests to that peer stay signed this long before the next attempt.
    static let sessionRetryDelay: Duration = .seconds(600)

    /// Runs `work` in a task if a slot is free for the request's sender, else refuses.
    private func admit(_ request: Stanza, _ responder: IQResponder, _ work: @escaping @Sendable () async -> Void) {
        let sender = request.from?.bare.description ?? request.fromString ?? ""
        if let refusal = slots.withLock({ $0.acquire(sender) }) {
            if refusal == .peer {
                // Audited (aggregated per sender and window) off the XMPP loop thread, which must not
                // wait for a durable write; a global refusal is load, not blame.
                let namespace = request.payload?.namespace ?? ""
                tasks.spawn { [audit] in
                    _ = try? await audit.offPool.refused(
                        module: "broker", kind: "broker.request", peer: sender, action: namespace,
                        reason: "tooManyInProgress", detail: "\(Self.maxConcurrentRequestsPerPeer) requests from this sender in progress",
                        at: Date())
                }
            }
            return responder.fail(.resourceConstraint(
                refusal == .peer ? "too many of your federation requests in progress" : "too many federation requests in progress"))
        }
        tasks.spawn { [self] in
            await work()
            slots.withLock { $0.release(sender) }
        }
    }

    init(
        trust: TrustService?, audit: AuditLog, client: XMPPClient, registry: PeerRegistry, logger: Logger, tasks: TaskBag,
        sessions: Bool = true
    ) {
        self.trust = trust
        self.sessionsEnabled = Mutex(sessions)
        self.registry = registry
        self.audit = audit
        self.refusalLog = RefusalLogGate(window: .seconds(audit.aggregator?.settings.window ?? 60))
        self.client = client
        self.logger = logger
        self.tasks = tasks
    }

    /// The namespaces served, for disco#info.
    public var namespaces: [String] { routes.withLock { $0.keys.sorted() } }

    /// Serves `namespace`: only envelopes signed by a trusted peer reach `handler`.
    public func serve(namespace: String, maxPayloadBytes: Int = 64 * 1024, _ handler: @escaping SignedRequestHandler) {
        routes.withLock { $0[namespace] = Route(maxPayloadBytes: maxPayloadBytes, handler: handler) }
        let first = installed.withLock { installed in
            defer { installed = true }
            return !installed
        }
        if first {
            client.setIQHandler(namespace: TrustNamespace.envelope, maxPayloadBytes: Self.maxEnvelopeBytes, .deferred { [weak self] request, responder in
                guard let self else { return responder.fail(.serviceUnavailable()) }
                self.admit(request, responder) { await self.handleSigned(request, responder) }
            })
        }
        // Unsigned payloads in the namespace itself: refused, and audited off the loop thread.
        client.setIQHandler(namespace: namespace, maxPayloadBytes: maxPayloadBytes, .deferred { [weak self] request, responder in
            guard let self else { return responder.fail(.serviceUnavailable()) }
            self.admit(request, responder) { await self.refuseUnsigned(request, namespace: namespace, responder) }
        })
    }

    private func refuseUnsigned(_ request: Stanza, namespace: String, _ responder: IQResponder) async {
        let sender = request.fromString ?? ""
        let xml = request.payload.map { $0.serialized() } ?? ""
        guard let trust else { return await refuseWithoutTrust(sender: sender, namespace: namespace, responder) }
        do {
            // Not an envelope, so this throws `unsigned` and writes the audit record.
            _ = try await trust.open(xml: xml, from: sender, namespace: namespace)
            responder.fail(.notAuthorized("requests in \(namespace) must be signed"))
        } catch {
            if refusalLog.shouldLog(sender) {
                logger.notice("refused unsigned \(namespace) request from \(sender): \(error) (more from this sender are counted in the audit, not logged, for a while)")
            }
            responder.fail(.notAuthorized(error.description))
        }
    }

    private func refuseWithoutTrust(sender: String, namespace: String, _ responder: IQResponder) async {
        if refusalLog.shouldLog(sender) {
            logger.notice("refused \(namespace) request from \(sender): trust is not configured on this broker")
        }
        _ = try? await audit.offPool.refused(
            module: "broker", kind: "trust.envelope", peer: sender, action: namespace, reason: "trustNotConfigured",
            detail: "this broker has no [trust] section", at: Date())
        responder.fail(.notAuthorized("this broker has no trust configuration and accepts no federation requests"))
    }

    private func handleSigned(_ request: Stanza, _ responder: IQResponder) async {
        let sender = request.fromString ?? ""
        guard let payload = request.payload, let from = request.from else {
            return responder.fail(.badRequest("signed request without sender or payload"))
        }
        guard let trust else {
            return await refuseWithoutTrust(sender: sender, namespace: payload[attribute: "ns"] ?? TrustNamespace.envelope, responder)
        }
        guard let type = request.type.flatMap(Stanza.IQType.init(rawValue:)), type == .get || type == .set else {
            return responder.fail(.badRequest("expected an IQ get or set"))
        }
        // The route is looked up before the envelope is checked, so an envelope for a namespace
        // we do not serve does not use up its nonce; it is refused like any unknown feature.
        // An envelope without `ns` goes on to `open`, which refuses (and audits) it as malformed.
        let namespace = payload[attribute: "ns"]
        let route = namespace.flatMap { namespace in routes.withLock { $0[namespace] } }
        if let namespace, route == nil {
            return responder.fail(.serviceUnavailable("no signed service in \(namespace)"))
        }
        let envelope: SignedEnvelope
        do {
            envelope = try await Self.open(payload, with: trust, from: sender, namespace: namespace)
        } catch {
            if refusalLog.shouldLog(sender) {
                logger.notice("refused signed \(namespace ?? "?") request from \(sender): \(error)")
            }
            return responder.fail(.notAuthorized(error.description))
        }
        guard let route else { return responder.fail(.notAuthorized("envelope without namespace")) }
        guard envelope.payload.count <= route.maxPayloadBytes else {
            _ = try? await audit.offPool.refused(
                module: "broker", kind: "broker.request", peer: sender, action: envelope.namespace, reason: "tooLarge",
                detail: "\(envelope.payload.count) bytes > \(route.maxPayloadBytes)", at: Date())
            return responder.fail(.policyViolation("payload larger than \(route.maxPayloadBytes) bytes"))
        }
        let signed = SignedRequest(
            from: from, peer: from.bare.description, namespace: envelope.namespace, type: type, payload: envelope.payload)
        do {
            let answer = try await route.handler(signed)
            // An answer goes under the session its request came under, else it is signed.
            let sealed = try trust.answerSession(for: envelope, from: signed.peer).map {
                trust.sealEnvelope(answer, namespace: envelope.namespace, session: $0, inReplyTo: envelope.nonce)
            } ?? trust.sealEnvelope(answer, namespace: envelope.namespace, to: signed.peer, inReplyTo: envelope.nonce)
            responder.respond(sealed.element)
        } catch let error as StanzaError {
            responder.fail(error)
        } catch {
            logger.error("cannot sign the \(envelope.namespace) answer to \(sender): \(error)")
            responder.fail(.internalServerError("cannot sign the answer"))
        }
    }

    /// Sends a signed request to `peer` (a full JID) and returns the verified payload of its signed
    /// answer. Throws `XMPPError` (including the peer's `not-authorized`), or `EnvelopeError` if
    /// the answer is not properly signed by the pinned peer (audited).
    public func request(
        _ type: Stanza.IQType, to peer: JID, namespace: String, payload: [UInt8], timeout: Duration
    ) async throws -> [UInt8] {
        guard let trust else { throw BrokerTrustSetupError("this broker has no [trust] section: it cannot sign requests") }
        let peer = try route(to: peer)
        let bare = peer.bare.description
        if usesSessions {
            if trust.wantsSession(with: bare) { startSession(with: peer, trust: trust) }
            if let session = trust.requestSession(for: bare) {
                let sealed = trust.sealEnvelope(payload, namespace: namespace, session: session)
                do {
                    return try await exchange(type, sealed, to: peer, namespace: namespace, timeout: timeout, trust: trust)
                } catch XMPPError.stanza(let error) where Self.isUnknownSession(error) {
                    // Refused before any handler ran: nothing happened at the peer, so sending it
                    // again, signed, is safe.
                    trust.sessions.forget(peer: bare, id: session.id)
                    logger.info("\(bare) no longer holds our session (\(error.text ?? "")); sending the \(namespace) request signed")
                    startSession(with: peer, trust: trust)
                }
            }
        }
        let sealed = try trust.sealEnvelope(payload, namespace: namespace, to: bare)
        return try await exchange(type, sealed, to: peer, namespace: namespace, timeout: timeout, trust: trust)
    }

    /// Sends a sealed request and opens its answer.
    private func exchange(
        _ type: Stanza.IQType, _ sealed: SignedEnvelope, to peer: JID, namespace: String, timeout: Duration, trust: TrustService
    ) async throws -> [UInt8] {
        let answer = try await client.iq(type, to: peer, payload: sealed.element, timeout: timeout)
        // The XMPP client only accepts answers from the JID the request went to.
        let sender = answer.fromString ?? peer.description
        guard let element = answer.payload else {
            return try await trust.open(xml: "", from: sender, namespace: namespace, answering: sealed.nonce).payload  // refused and audited
        }
        return try await Self.open(element, with: trust, from: sender, namespace: namespace, answering: sealed.nonce).payload
    }

    static func isUnknownSession(_ error: StanzaError) -> Bool {
        error.condition == "not-authorized" && (error.text ?? "").hasPrefix(EnvelopeError.Code.unknownSession.rawValue)
    }

    // MARK: Sessions

    package var usesSessions: Bool {
        get { sessionsEnabled.withLock { $0 } }
        set { sessionsEnabled.withLock { $0 = newValue } }
    }

    /// Answers peers' session offers (`urn:intercloud:session:0`), if sessions are on.
    func serveSessions() {
        guard let trust, usesSessions else { return }
        serve(namespace: TrustNamespace.session, maxPayloadBytes: SessionExchange.maxPayloadBytes) { [audit, logger, refusalLog] request throws(StanzaError) in
            guard request.type == .set else { throw .badRequest("a session offer is an IQ set") }
            do {
                return try trust.acceptSession(offer: request.payload, from: request.peer)
            } catch {
                // A peer sending bad offers in a loop is counted in the audit, not logged each time.
                if refusalLog.shouldLog(request.peer) {
                    logger.notice("refused a session offer from \(request.peer): \(error) (more from this peer are counted in the audit, not logged, for a while)")
                }
                _ = try? await audit.offPool.refused(
                    module: "trust", kind: "trust.session", peer: request.peer, action: TrustNamespace.session,
                    reason: "badOffer", detail: "\(error)", at: Date())
                throw .badRequest("\(error)")
            }
        }
    }

    /// Starts a session exchange with `peer` in the background, unless one is in flight or the
    /// last one failed recently. Requests meanwhile go signed.
    private func startSession(with peer: JID, trust: TrustService) {
        let bare = peer.bare.description
        let now = ContinuousClock.now
        let start = sessionAttempts.withLock { attempts -> Bool in
            if let notBefore = attempts[bare], notBefore > now { return false }
            if attempts.count >= Self.maxSessionAttempts {
                attempts = attempts.filter { $0.value > now }
                guard attempts.count < Self.maxSessionAttempts else { return false }
            }
            // In flight: no second exchange until this one ends (or a minute passes).
            attempts[bare] = now + .seconds(60)
            return true
        }
        guard start else { return }
        tasks.spawn { [self] in
            let offer = trust.makeSessionOffer()
            do {
                let sealed = try trust.sealEnvelope(offer.payload, namespace: TrustNamespace.session, to: bare)
                let answer = try await exchange(.set, sealed, to: peer, namespace: TrustNamespace.session, timeout: .seconds(10), trust: trust)
                let session = try trust.completeSession(offer, accept: answer, with: bare)
                sessionAttempts.withLock { _ = $0.removeValue(forKey: bare) }
                logger.debug("session with \(bare) made, until \(session.expires)")
            } catch {
                sessionAttempts.withLock { $0[bare] = ContinuousClock.now + Self.sessionRetryDelay }
                logger.info("no session with \(bare) (\(error)); requests to it stay signed, next attempt in \(Self.sessionRetryDelay)")
            }
        }
    }

    /// Opens an inbound envelope element: in the form parsing its text would give (always so for
    /// envelopes), else through the text, so the payload parser decides what it would refuse.
    private static func open(
        _ element: XMLElement, with trust: TrustService, from sender: String, namespace: String?, answering: [UInt8]? = nil
    ) async throws(EnvelopeError) -> SignedEnvelope {
        if let converted = element.payloadForm {
            return try await trust.open(element: converted, from: sender, namespace: namespace, answering: answering)
        }
        return try await trust.open(xml: element.serialized(), from: sender, namespace: namespace, answering: answering)
    }

    public func waitUntilOnline(timeout: Duration) async throws {
        try await client.waitUntilOnline(timeout: timeout)
    }

    public func route(to peer: JID) throws -> JID {
        if !peer.isBare { return peer }
        guard let record = try registry.peer(peer), let full = record.fullJID.flatMap({ try? JID($0) }) else {
            throw PeerUnknown(peer.description)
        }
        return full
    }
}
