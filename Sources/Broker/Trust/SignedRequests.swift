import Discovery
import Foundation
import Logging
import Peering
import Synchronization
import Trust
import XMPP

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

    init(trust: TrustService?, audit: AuditLog, client: XMPPClient, registry: PeerRegistry, logger: Logger, tasks: TaskBag) {
        self.trust = trust
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
        let xml = request.payload.map(PayloadBridge.string) ?? ""
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
            let sealed = try trust.sealEnvelope(answer, namespace: envelope.namespace, to: signed.peer, inReplyTo: envelope.nonce)
            responder.respond(PayloadBridge.element(sealed.element))
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
        let sealed = try trust.sealEnvelope(payload, namespace: namespace, to: peer.bare.description)
        let answer = try await client.iq(type, to: peer, payload: PayloadBridge.element(sealed.element), timeout: timeout)
        // The XMPP client only accepts answers from the JID the request went to.
        let sender = answer.fromString ?? peer.description
        guard let element = answer.payload else {
            return try await trust.open(xml: "", from: sender, namespace: namespace, answering: sealed.nonce).payload  // refused and audited
        }
        return try await Self.open(element, with: trust, from: sender, namespace: namespace, answering: sealed.nonce).payload
    }

    /// Opens an inbound envelope element: converted straight into Trust's element where that is
    /// exactly what parsing its text would give (always, for envelopes), else through the text.
    private static func open(
        _ element: XMLElement, with trust: TrustService, from sender: String, namespace: String?, answering: [UInt8]? = nil
    ) async throws(EnvelopeError) -> SignedEnvelope {
        if let converted = PayloadBridge.payload(element) {
            return try await trust.open(element: converted, from: sender, namespace: namespace, answering: answering)
        }
        return try await trust.open(xml: PayloadBridge.string(element), from: sender, namespace: namespace, answering: answering)
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
