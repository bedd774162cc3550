import Foundation
import GRDB
import Logging
import Peering
import Synchronization
import Trust
import XMLModel
import XMPP

/// The trust part of a broker (issue 3, DESIGN.md "Trust"): carries `TrustService` handshakes over
/// XMPP IQs, decides when to handshake with a peer whose presence was seen, and answers inbound
/// handshakes. Exists only when the configuration has a `[trust]` section.
///
/// When to handshake: a peer that announces a certificate fingerprint and for which
/// `TrustService.needsHandshake` holds (never pinned, pin expired, or the announced fingerprint
/// differs from the pin). The broker with the smaller bare JID starts at once; the other waits
/// `initiatorGrace` and starts only if it still needs to, so the usual first contact costs one
/// handshake, while a broker whose own view is stale (it lost its pins, or the peer's key changed
/// and the peer is the larger JID) still heals without the peer's help. When both start anyway,
/// the library runs the two handshakes independently and both succeed.
public final class BrokerTrust: Sendable {
    public let service: TrustService
    public let settings: BrokerConfiguration.TrustSettings
    let client: XMPPClient
    let logger: Logger
    let ownBareJID: String
    /// Time a handshake IQ may take before the handshake ends as `timeout`.
    public static let iqTimeout: Duration = .seconds(10)
    /// How long the broker with the larger JID lets the other start the first handshake.
    public static let initiatorGrace: Duration = .seconds(2)
    /// Inbound handshakes being verified at once; more are answered `resource-constraint`, so
    /// a flood of hellos cannot queue unbounded chain verifications.
    static let maxConcurrentResponses = 16
    static let maxHandshakePayloadBytes = 64 * 1024
    /// Handshakes this broker starts at once (a room full of new peers queues behind them).
    public static let maxConcurrentInitiations = 8
    /// Coming back online shortens a refused peer's wait, but never below this since its last
    /// attempt: a peer flapping its presence gets at most one handshake per interval.
    public static let comebackRetryFloor: Duration = .seconds(30)

    private let schedule: Mutex<HandshakeSchedule>
    private let responses = Mutex(0)
    private let tasks: TaskBag

    init(
        settings: BrokerConfiguration.TrustSettings, ownJID: JID, database: DatabasePool, audit: AuditLog, client: XMPPClient,
        logger: Logger, tasks: TaskBag
    ) throws {
        do { try SecretFile.checkPrivate(settings.keyPath, setting: "trust.key") } catch {
            throw BrokerTrustSetupError(error.description)
        }
        let identity: BrokerIdentity
        do { identity = try BrokerIdentity.load(keyPath: settings.keyPath, chainPath: settings.chainPath) } catch {
            throw BrokerTrustSetupError("cannot load trust.key \(settings.keyPath) / trust.chain \(settings.chainPath): \(error)")
        }
        let bare = ownJID.bare.description
        // A leaf for another JID would be refused by every peer (xmppAddrMismatch): fail at start.
        guard identity.jids.contains(where: { $0.lowercased() == bare.lowercased() }) else {
            throw BrokerTrustSetupError(
                "trust.chain \(settings.chainPath) is for \(identity.jids.joined(separator: ", ")), not for \(bare); issue one with `intercloud certs issue --jid \(bare)`")
        }
        let anchors: TrustAnchors
        do { anchors = try settings.loadAnchors() } catch {
            throw BrokerTrustSetupError("cannot load trust.anchors / trust.crls: \(error)")
        }
        guard !anchors.anchors.isEmpty else {
            throw BrokerTrustSetupError("trust.anchors \(settings.anchorPaths.joined(separator: ", ")) hold no certificate")
        }
        self.settings = settings
        self.schedule = Mutex(HandshakeSchedule(
            maxConcurrent: Self.maxConcurrentInitiations, retryAfterRefusal: settings.retryAfterRefusal,
            retryAfterTimeout: Self.retryAfterTimeout, comebackFloor: Self.comebackRetryFloor))
        self.client = client
        self.logger = logger
        self.ownBareJID = bare
        self.tasks = tasks
        self.service = TrustService(
            myJID: bare, identity: identity, anchors: anchors, database: database, audit: audit, logger: logger)
        logger.info("trust: announcing fingerprint \(identity.fingerprint); \(anchors.anchors.count) anchor(s), \(anchors.crls.count) CRL(s)")
    }

    public var fingerprint: String { service.identity.fingerprint }

    /// Reads the anchor and CRL files again and re-verifies every pin against them (pins that no
    /// longer validate, e.g. newly revoked by a CRL, are removed and audited). Runs every
    /// `revalidationInterval`; a file that cannot be read keeps the anchors in use.
    @discardableResult
    public func reloadAnchors() async -> [TrustRefusal] {
        do {
            let anchors = try settings.loadAnchors()
            return await service.reloadAnchors(anchors)
        } catch {
            logger.error("cannot reload trust.anchors / trust.crls, keeping the loaded ones: \(error)")
            return await service.revalidatePins()
        }
    }

    // MARK: Responder

    func installHandler() {
        client.setIQHandler(namespace: TrustNamespace.handshake, maxPayloadBytes: Self.maxHandshakePayloadBytes, .deferred { [weak self] request, responder in
            guard let self else { return responder.fail(.serviceUnavailable()) }
            guard request.type == "set" else { return responder.fail(.badRequest("trust messages are IQ set")) }
            guard let from = request.fromString, let payload = request.payload else {
                return responder.fail(.badRequest("trust message without sender or payload"))
            }
            let admitted = self.responses.withLock { count in
                guard count < Self.maxConcurrentResponses else { return false }
                count += 1
                return true
            }
            guard admitted else { return responder.fail(.resourceConstraint("too many handshakes in progress")) }
            self.tasks.spawn { [service = self.service] in
                defer { self.responses.withLock { $0 -= 1 } }
                switch await service.handleRequest(from: from, payload: Self.payloadForm(payload)) {
                case .result(let answer):
                    responder.respond(answer)
                case .error(let condition, let answer):
                    responder.fail(StanzaError(condition: condition, type: .auth, applicationCondition: answer))
                }
            }
        })
    }

    // MARK: Initiator

    /// Called for every presence of a peer broker: starts a handshake if one is needed and none
    /// is running (`HandshakeSchedule`: a refused peer waits, a new fingerprint is tried at once,
    /// coming back online shortens the wait to at most `comebackRetryFloor` after the last attempt,
    /// at most `maxConcurrentInitiations` run at once).
    func peerSeen(_ jid: JID, fullJID: JID, fingerprint announced: String, cameOnline: Bool) {
        let peer = jid.bare.description
        let fingerprint = announced.lowercased()
        schedule.withLock { $0.seen(peer, target: fullJID, fingerprint: fingerprint, cameOnline: cameOnline, now: .now) }
        consider(peer)
    }

    /// Unanswered handshakes (peer busy, restarting, or not running trust) are retried sooner
    /// than refused ones.
    public static let retryAfterTimeout: Duration = .seconds(15)

    /// What was decided at `peer`'s latest presence (nil: none seen, or not looked at yet).
    public func lastHandshakeDecision(for peer: String) -> HandshakeDecision? {
        schedule.withLock { $0.peers[XmppAddr.bare(peer)]?.decision }
    }

    private func consider(_ peer: String) {
        guard let state = schedule.withLock({ $0.peers[peer] }) else { return }
        guard !state.announced.isEmpty else {
            // No fingerprint: the peer runs without [trust]; there is nothing to verify.
            return schedule.withLock { $0.decided(peer, .noFingerprint) }
        }
        guard service.needsHandshake(with: peer, announcedFingerprint: state.announced) else {
            return schedule.withLock { $0.decided(peer, .notNeeded) }
        }
        if let refusal = try? service.store.operatorRefusal(for: peer) {
            // The operator's decision stands; handshaking would only audit the same refusal again.
            logger.debug("not handshaking with \(peer): \(refusal)")
            return schedule.withLock { $0.decided(peer, .operatorRefused) }
        }
        let start = schedule.withLock { schedule in
            let start = schedule.start(peer, now: .now)
            schedule.decided(peer, start ? .started : .waiting)
            return start
        }
        guard start else { return }
        let delay = ownBareJID < peer ? Duration.zero : Self.initiatorGrace
        tasks.spawn { [self] in
            if delay > .zero {
                try? await Task.sleep(for: delay)
                if Task.isCancelled || !service.needsHandshake(with: peer, announcedFingerprint: state.announced) {
                    finished(peer, fingerprint: state.announced, refusal: nil)
                    return
                }
            }
            let target = schedule.withLock { $0.peers[peer]?.target } ?? state.target
            switch await handshake(with: target) {
            case .failure(let refusal):
                finished(peer, fingerprint: state.announced, refusal: refusal)
            case .success(let pin) where pin.fingerprint != state.announced:
                // Trusted, but with another key than the one it announces: without this pause
                // every presence carrying the stale or bogus fingerprint would start a handshake.
                logger.warning("peer \(peer) announces fingerprint \(state.announced) but presented \(pin.fingerprint ?? "")")
                finished(peer, fingerprint: state.announced, refusal: TrustRefusal(.unexpectedMessage, "announced fingerprint differs"))
            case .success:
                finished(peer, fingerprint: state.announced, refusal: nil)
            }
        }
    }

    private func finished(_ peer: String, fingerprint: String, refusal: TrustRefusal?) {
        let (changed, next) = schedule.withLock {
            $0.finished(peer, fingerprint: fingerprint, failed: refusal != nil, timedOut: refusal?.reason == .timeout, now: .now)
        }
        // The peer announced another key while we were busy: look again with the new one.
        if changed { consider(peer) }
        // A slot is free: the next peer waiting for one.
        if let next { consider(next) }
    }

    /// Runs one handshake as initiator with the broker at `target` (a full JID: IQs to a bare JID
    /// are answered by the peer's server, not by the broker). Refusals are audited by the service.
    @discardableResult
    public func handshake(with target: JID) async -> Result<PeerPin, TrustRefusal> {
        let started = ContinuousClock.now
        let result = await service.handshake(with: target.bare.description, exchange: exchange(with: target))
        switch result {
        case .success(let pin):
            logger.info("trusted peer \(pin.jid) (\(pin.fingerprint ?? "")) in \(ContinuousClock.now - started)")
        case .failure(let refusal):
            logger.notice("trust handshake with \(target.bare) refused: \(refusal.reason.rawValue): \(refusal.detail)")
        }
        return result
    }
}

extension BrokerTrust {
    /// One handshake round trip: the payload in an IQ set to `target`, the answer's payload back
    /// (a refusal travels as the application condition of a `not-authorized` error). `package`:
    /// the trust benchmark counts a handshake's round trips through it.
    package func exchange(with target: JID) -> @Sendable (XMLElement) async throws -> XMLElement? {
        { [client] payload in
            do {
                let answer = try await client.iq(.set, to: target, payload: payload, timeout: Self.iqTimeout)
                return answer.payload.map(Self.payloadForm)
            } catch XMPPError.stanza(let error) {
                if let refused = error.applicationCondition, refused.namespace == TrustNamespace.handshake {
                    return Self.payloadForm(refused)
                }
                throw XMPPError.stanza(error)
            }
        }
    }

    /// A trust payload from the XMPP layer in the form the payload parser gives (text trimmed,
    /// namespaces in effect), or, where that form could differ from parsing its text, parsed
    /// from the text (an element that does not parse stays as it came, and decoding refuses it).
    static func payloadForm(_ element: XMLElement) -> XMLElement {
        element.payloadForm ?? (try? XMLElement.parse(element.serialized())) ?? element
    }
}

/// Background tasks a broker starts while running (handshakes, inbound requests), cancelled and
/// awaited at shutdown before the database closes, so none writes to a closed database.
///
/// Every inbound federation request is one of these tasks, so `spawn` is on the request path: the
/// task is created outside the lock (creating one enqueues it and may wake a thread, and doing that
/// under the lock made the XMPP loop and finishing tasks spin on it), and ids are a counter, not
/// random UUIDs (one `getrandom` each).
final class TaskBag: Sendable {
    private struct State {
        var tasks: [UInt64: Task<Void, Never>] = [:]
        /// Tasks that finished before `spawn` registered them.
        var finishedEarly: Set<UInt64> = []
        var next: UInt64 = 0
        /// Spawned and not finished, registered or not: what `close` waits for.
        var running = 0
        var closed = false
        var drained: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())

    func spawn(_ body: @escaping @Sendable () async -> Void) {
        let id = state.withLock { state -> UInt64? in
            guard !state.closed else { return nil }
            state.next += 1
            state.running += 1
            return state.next
        }
        guard let id else { return }
        let task = Task { [weak self] in
            await body()
            self?.finish(id)
        }
        let closing = state.withLock { state -> Bool in
            if state.finishedEarly.remove(id) != nil { return false }
            state.tasks[id] = task
            return state.closed
        }
        // `close` ran in between: it waits for this task (it is counted) but could not cancel it.
        if closing { task.cancel() }
    }

    private func finish(_ id: UInt64) {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            if state.tasks.removeValue(forKey: id) == nil { state.finishedEarly.insert(id) }
            state.running -= 1
            guard state.running == 0 else { return [] }
            defer { state.drained = [] }
            return state.drained
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Tasks spawned and not yet finished.
    var running: Int { state.withLock { $0.running } }

    /// Cancels every task, waits for them, and refuses new ones.
    func close() async {
        let tasks = state.withLock { state in
            state.closed = true
            return Array(state.tasks.values)
        }
        for task in tasks { task.cancel() }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state -> Bool in
                guard state.running > 0 else { return true }
                state.drained.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }
}
