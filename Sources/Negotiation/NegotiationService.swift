import Foundation
import GRDB
import Logging
import Peering
import Policy
import Storage
import Trust
import XMPP

/// How a negotiation ended.
public struct NegotiationOutcome: Sendable, Hashable {
    public var negotiationID: String
    /// FINALIZED or TERMINATED.
    public var state: NegotiationState
    public var reason: String?
    public var agreement: Agreement?
}

/// Runs contract negotiations (`urn:intercloud:negotiation:0`) with trusted peers: one
/// `NegotiationStateMachine` per negotiation, driven by signed IQs, decided by this broker's
/// policy files, journaled in SQLite (`NegotiationStore`) before any message or IQ result leaves.
///
/// Decisions are `NegotiationMove.decide` (Policy, beside the machine): this actor performs them.
/// Agreements are signed by the provider (over `Agreement.canonicalBytes()`), checked and
/// countersigned by the consumer (`verify`), whose signature the provider checks before
/// finalizing. Both signatures and both certificate chains are stored with the agreement.
///
/// Timers: a loop calls `tick` when a machine's deadline passes (retries, step and decision
/// timeouts). At start every unfinished negotiation is resumed by the machine's resume rule.
public actor NegotiationService {
    /// Journal writes wait for their fsync on the storage thread, not on a cooperative one.
    ///
    /// Why a serial executor and not GRDB's async writes: every handler changes a machine in
    /// `active`, journals it, then answers, with no suspension point in between. An awaited write
    /// would be one: another message for the same negotiation could run against the changed but
    /// unjournaled machine, and a crash could then lose a state a peer was already told about.
    /// On this executor the writes stay synchronous (nothing interleaves) and only the waiting
    /// moves off the pool. For the same reason this actor writes its audit records with the
    /// audit log's synchronous methods, not `audit.offPool`.
    public nonisolated var unownedExecutor: UnownedSerialExecutor { StorageExecutor.shared.asUnownedSerialExecutor() }

    struct Active {
        var machine: NegotiationStateMachine
        /// Where messages for this negotiation go: the peer's full JID as last seen.
        var peerJID: JID
    }

    public nonisolated let store: NegotiationStore
    nonisolated let local: String
    let identity: BrokerIdentity?
    let trustStore: TrustStore?
    let transport: any SignedTransport
    let audit: AuditLog
    let logger: Logger
    let policies: PolicySet
    let configuration: NegotiationStateMachine.Configuration
    let admission: NegotiationAdmission
    private var active: [String: Active] = [:]
    private var waiters: [String: [CheckedContinuation<NegotiationOutcome, Never>]] = [:]
    /// Test and operator hook: in these states this broker makes no decisions (messages are still
    /// received and acknowledged), so a negotiation can be held there.
    private var heldStates: Set<NegotiationState> = []
    /// The wall clock (`BrokerContext.now`).
    nonisolated let now: @Sendable () -> Date

    public init(
        context: BrokerContext, configuration: NegotiationStateMachine.Configuration, admission: NegotiationAdmission = NegotiationAdmission()
    ) {
        self.local = context.local
        self.identity = context.identity
        self.trustStore = context.trustStore
        self.store = NegotiationStore(database: context.database)
        self.transport = context.transport
        self.audit = context.audit
        self.policies = context.policies
        self.configuration = configuration
        self.admission = admission
        self.logger = context.logger
        self.now = context.now
    }

    public nonisolated func install() {
        transport.serve(namespace: NegotiationWire.namespace, maxPayloadBytes: NegotiationWire.maxMessageBytes * 2) {
            [self] request throws(StanzaError) in
            try await self.handle(request)
        }
    }

    // MARK: starting and waiting

    /// Starts a negotiation as consumer with `peer` (a bare JID resolves to the full JID the
    /// registry last saw) and returns its ID at once; `outcome(of:)` waits for the end.
    public func start(with peer: JID, terms: Terms, negotiationID: String? = nil) throws -> String {
        guard identity != nil else { throw BrokerTrustSetupError("this broker has no [trust] section: it cannot sign agreements") }
        let target = try transport.route(to: peer)
        let id = negotiationID ?? "neg-\(RandomIdentifier.hex(bytes: 8))"
        guard active[id] == nil, try store.negotiation(id) == nil else { throw NegotiationError("negotiation \(id) already exists") }
        guard NegotiationWire.problem(in: NegotiationMessage(negotiationID: id, messageID: "\(id)/check", body: .request(terms))) == nil else {
            throw NegotiationError(NegotiationWire.problem(in: NegotiationMessage(negotiationID: id, messageID: "\(id)/check", body: .request(terms)))!)
        }
        let now = self.now()
        var machine = NegotiationStateMachine(
            negotiationID: id, role: .consumer, local: local, peer: target.bare.description, configuration: configuration, now: now)
        let action = try machine.request(terms, now: now)
        active[id] = Active(machine: machine, peerJID: target)
        try persist(id)
        logger.info("negotiation \(id) with \(target): requesting \(Self.summary(terms))")
        perform(action, id)
        return id
    }

    /// Waits until the negotiation is FINALIZED or TERMINATED.
    public func outcome(of id: String) async -> NegotiationOutcome {
        if let done = finishedOutcome(id) { return done }
        return await withCheckedContinuation { continuation in
            if let done = finishedOutcome(id) { return continuation.resume(returning: done) }
            waiters[id, default: []].append(continuation)
        }
    }

    /// Negotiates to the end: `start` then `outcome`.
    public func negotiate(with peer: JID, terms: Terms) async throws -> NegotiationOutcome {
        let id = try start(with: peer, terms: terms)
        return await outcome(of: id)
    }

    /// Holds decisions in `states` (none: release); released negotiations are decided at once.
    public func holdDecisions(in states: Set<NegotiationState>) {
        heldStates = states
        for id in active.keys { decideLater(id) }
    }

    /// The state this broker stored for `id` (nil if unknown).
    public func state(of id: String) -> NegotiationState? {
        active[id]?.machine.state ?? (try? store.negotiation(id)).flatMap { $0.flatMap { NegotiationState(rawValue: $0.state) } }
    }

    private func finishedOutcome(_ id: String) -> NegotiationOutcome? {
        guard active[id] == nil, let stored = try? store.snapshot(id), stored.snapshot.state.isFinal else { return nil }
        return NegotiationOutcome(
            negotiationID: id, state: stored.snapshot.state, reason: stored.snapshot.terminationReason, agreement: stored.snapshot.agreement)
    }

    // MARK: the loop: resume, timers, operator requests

    /// Resumes unfinished negotiations, then ticks machines and takes operator requests until cancelled.
    public func run(interval: Duration = .milliseconds(100)) async {
        resumeAll()
        while !Task.isCancelled {
            tickAll(now: self.now())
            takeOperatorRequests()
            try? await Task.sleep(for: interval)
        }
    }

    func resumeAll() {
        let stored: [(snapshot: NegotiationStateMachine.Snapshot, peerFullJID: String)]
        do { stored = try store.unfinished() } catch {
            logger.error("cannot read the negotiation journal: \(error)")
            return
        }
        let now = self.now()
        for (snapshot, full) in stored where active[snapshot.negotiationID] == nil {
            guard let jid = try? JID(full) else { continue }
            var machine = NegotiationStateMachine(resuming: snapshot)
            let action = machine.resume(now: now)
            active[snapshot.negotiationID] = Active(machine: machine, peerJID: jid)
            logger.info("resuming negotiation \(snapshot.negotiationID) with \(jid) in \(snapshot.state.rawValue)")
            commit(snapshot.negotiationID, action)
            decideLater(snapshot.negotiationID)
        }
    }

    private func tickAll(now: Date) {
        for (id, entry) in active {
            guard let deadline = entry.machine.nextDeadline, now >= deadline else { continue }
            var machine = entry.machine
            let action = machine.tick(now: now)
            active[id]?.machine = machine
            commit(id, action)
        }
    }

    private func takeOperatorRequests() {
        guard let requests = try? store.takeRequests(), !requests.isEmpty else { return }
        for request in requests {
            do {
                _ = try start(with: try JID(request.peer), terms: request.terms, negotiationID: request.id)
            } catch {
                logger.error("operator negotiation \(request.id) with \(request.peer) not started: \(error)")
                // Recorded as terminated so the waiting CLI learns why.
                var machine = NegotiationStateMachine(
                    negotiationID: request.id, role: .consumer, local: local, peer: request.peer, configuration: configuration, now: self.now())
                _ = machine.terminate(reason: "not started: \(error)", now: self.now())
                try? store.save(machine.snapshot, peerFullJID: request.peer, now: self.now())
            }
        }
    }

    // MARK: inbound messages

    func handle(_ request: SignedRequest) async throws(StanzaError) -> [UInt8] {
        let decoded: NegotiationWire.Decoded
        do { decoded = try NegotiationWire.decode(request.payload) } catch {
            throw refuse(request.peer, "malformed", error.text ?? error.condition, error)
        }
        guard request.type == .set else { throw refuse(request.peer, "malformed", "IQ get", .badRequest("negotiation messages are IQ sets")) }
        let message = decoded.message
        let id = message.negotiationID
        let now = self.now()
        if active[id] == nil {
            let stored: (snapshot: NegotiationStateMachine.Snapshot, peerFullJID: String)?
            do { stored = try store.snapshot(id) } catch { throw .internalServerError("negotiation journal unreadable") }
            if let stored {
                // Finished (or not yet resumed): answer from the stored machine, e.g. a duplicate.
                active[id] = Active(machine: NegotiationStateMachine(resuming: stored.snapshot), peerJID: request.from)
            } else if case .request = message.body {
                guard identity != nil else { throw .serviceUnavailable("this broker cannot sign agreements") }
                if let refusal = admissionRefusal(for: request.peer) {
                    throw refuse(request.peer, "tooManyOpen", "\(id): \(refusal)",
                                 .resourceConstraint("\(refusal); finish or let one end before requesting another"))
                }
                let machine = NegotiationStateMachine(
                    negotiationID: id, role: .provider, local: local, peer: request.peer, configuration: configuration, now: now)
                active[id] = Active(machine: machine, peerJID: request.from)
                logger.info("negotiation \(id) requested by \(request.from)")
            } else {
                throw refuse(request.peer, "unknownNegotiation", id, .itemNotFound("unknown negotiation \(id)"))
            }
        }
        guard var entry = active[id] else { throw .internalServerError() }
        guard entry.machine.snapshot.peer == request.peer else {
            if entry.machine.state.isFinal { active[id] = nil }
            throw refuse(request.peer, "wrongPeer", id, .forbidden("negotiation \(id) is not with \(request.peer)"))
        }
        entry.peerJID = request.from
        var machine = entry.machine
        let isDuplicate = message.messageID == machine.snapshot.lastReceivedMessageID
        var extra: ((Database) throws -> Void)?
        var action: NegotiationStateMachine.Action
        switch message.body {
        case .agreement(let agreement) where !isDuplicate && machine.role == .consumer:
            // The provider's signature must verify with the certificate we pinned for it.
            switch checkSignature(decoded.signature, over: agreement, by: request.peer) {
            case .failure(let problem):
                action = machine.terminate(reason: "agreement signature: \(problem)", now: now)
                _ = try? audit.refused(
                    module: "broker", kind: "negotiation.agreement", peer: request.peer, action: NegotiationWire.namespace,
                    reason: "badSignature", detail: "\(agreement.id): \(problem)", at: now)
                action = Self.refusing(action, message.messageID)
            case .success(let chainPEM):
                action = machine.received(message, now: now)
                if case .acknowledge = action, machine.state == .agreed {
                    let signature = decoded.signature ?? []
                    extra = { db in
                        try NegotiationStore.insertAgreement(
                            agreement, providerSignature: signature, providerChainPEM: chainPEM, now: now, in: db)
                    }
                }
            }
        case .verify where !isDuplicate && machine.role == .provider:
            // Our agreement message may still await its IQ result (the verify proves it arrived).
            let pendingAgreement = machine.pending.flatMap { pending -> Agreement? in
                if case .agreement(let agreement) = pending.message.body { return agreement }
                return nil
            }
            guard let agreement = machine.agreement ?? pendingAgreement else {
                action = machine.received(message, now: now)
                break
            }
            switch checkSignature(decoded.signature, over: agreement, by: request.peer) {
            case .failure(let problem):
                action = machine.terminate(reason: "countersignature: \(problem)", now: now)
                _ = try? audit.refused(
                    module: "broker", kind: "negotiation.verify", peer: request.peer, action: NegotiationWire.namespace,
                    reason: "badSignature", detail: "\(agreement.id): \(problem)", at: now)
                action = Self.refusing(action, message.messageID)
            case .success(let chainPEM):
                action = machine.received(message, now: now)
                if case .acknowledge = action, machine.state == .verified {
                    let signature = decoded.signature ?? []
                    extra = { db in
                        try NegotiationStore.addCountersignature(agreementID: agreement.id, signature: signature, chainPEM: chainPEM, now: now, in: db)
                    }
                }
            }
        default:
            action = machine.received(message, now: now)
        }
        entry.machine = machine
        active[id] = entry
        do { try persist(id, extra: extra) } catch {
            logger.error("negotiation \(id): cannot store state: \(error)")
            // Nothing may be acknowledged that is not on disk: forget the in-memory change.
            active[id] = nil
            throw .internalServerError("cannot store negotiation state")
        }
        switch action {
        case .acknowledge(let messageID):
            logger.debug("negotiation \(id): received \(message.kind), now \(machine.state.rawValue)")
            finishIfFinal(id)
            decideLater(id)
            return NegotiationWire.ack(messageID)
        case .refuse(_, let reason):
            throw refuse(request.peer, "refused", reason, .notAcceptable(reason))
        case .terminated(let reason, let notify, let refusing):
            if let notify { sendBestEffort(notify, to: entry.peerJID) }
            finishIfFinal(id)
            if refusing != nil { throw refuse(request.peer, "terminated", reason, .notAcceptable(reason)) }
            return NegotiationWire.ack(message.messageID)
        case .none, .persist, .send:
            finishIfFinal(id)
            return NegotiationWire.ack(message.messageID)
        }
    }

    /// Whether `peer` may open one more negotiation with us as provider (`admission`).
    private func admissionRefusal(for peer: String) -> NegotiationAdmission.Refusal? {
        var withPeer = 0
        var inAll = 0
        for entry in active.values where entry.machine.role == .provider && !entry.machine.state.isFinal {
            inAll += 1
            if entry.machine.snapshot.peer == peer { withPeer += 1 }
        }
        return admission.admit(openWithPeer: withPeer, openInAll: inAll)
    }

    /// Turns a termination into one that also refuses the message being handled.
    private static func refusing(_ action: NegotiationStateMachine.Action, _ messageID: String) -> NegotiationStateMachine.Action {
        guard case .terminated(let reason, let notify, _) = action else { return action }
        return .terminated(reason: reason, notify: notify, refusing: messageID)
    }

    /// Checks a detached signature over the agreement with the peer's pinned certificate; returns
    /// the peer's chain as PEM for the agreement record.
    private func checkSignature(_ signature: [UInt8]?, over agreement: Agreement, by peer: String) -> Result<String, AgreementSignatureProblem> {
        guard let signature else { return .failure(.init("missing")) }
        guard let pin = try? trustStore?.pin(for: peer), pin.state == .trusted, let leaf = try? pin.leaf(),
            let chain = try? pin.chain(), let pem = try? PEMFiles.pem(chain.isEmpty ? [leaf] : chain)
        else { return .failure(.init("\(peer) has no trusted certificate pinned")) }
        guard DetachedSignature.isValid(signature, for: agreement.canonicalBytes(), signedBy: leaf) else {
            return .failure(.init("does not verify with \(peer)'s pinned certificate"))
        }
        return .success(pem)
    }

    // MARK: local decisions

    private func decideLater(_ id: String) {
        Task { await self.decide(id) }
    }

    /// Makes this side's next move if it is this side's turn.
    func decide(_ id: String) {
        guard var entry = active[id], entry.machine.pending == nil, !entry.machine.state.isFinal,
            !heldStates.contains(entry.machine.state)
        else { return }
        let now = self.now()
        let peer = entry.machine.snapshot.peer
        var extra: ((Database) throws -> Void)?
        let action: NegotiationStateMachine.Action
        let move = NegotiationMove.decide(
            role: entry.machine.role, state: entry.machine.state, terms: entry.machine.terms, peer: peer,
            rounds: entry.machine.snapshot.rounds, maxRounds: configuration.maxRounds, policies: policies, now: now)
        do {
            switch move {
            case .wait:
                return
            case .agree:
                (action, extra) = try agree(&entry.machine, now: now)
            case .counter(let counter, let reasons):
                logger.info("negotiation \(id): countering (\(NegotiationMove.text(of: reasons)))")
                action = try entry.machine.offer(counter, now: now)
            case .finalize:
                action = try entry.machine.finalize(now: now)
            case .accept:
                action = try entry.machine.accept(now: now)
            case .countersign:
                guard let identity, let agreement = entry.machine.agreement else { return }
                let signature = try identity.sign(agreement.canonicalBytes())
                let pem = try PEMFiles.pem(identity.chain)
                action = try entry.machine.verify(now: now)
                extra = { db in
                    try NegotiationStore.addCountersignature(agreementID: agreement.id, signature: signature, chainPEM: pem, now: now, in: db)
                }
            case .terminate(let reason):
                action = entry.machine.terminate(reason: reason, now: now)
            }
        } catch {
            logger.error("negotiation \(id): cannot decide: \(error)")
            return
        }
        active[id] = entry
        do { try persist(id, extra: extra) } catch {
            logger.error("negotiation \(id): cannot store state, not sending: \(error)")
            active[id] = nil
            return
        }
        perform(action, id)
    }

    /// Provider: concludes and signs the agreement over the terms on the table.
    private func agree(_ machine: inout NegotiationStateMachine, now: Date) throws -> (NegotiationStateMachine.Action, (Database) throws -> Void) {
        guard let identity else { throw BrokerTrustSetupError("no identity to sign with") }
        let action = try machine.agree(agreementID: "agr-\(RandomIdentifier.hex(bytes: 8))", now: now)
        guard let agreement = machine.pending.flatMap({ pending -> Agreement? in
            if case .agreement(let agreement) = pending.message.body { return agreement }
            return nil
        }) else { throw NegotiationError("agree produced no agreement") }
        let signature = try identity.sign(agreement.canonicalBytes())
        let pem = try PEMFiles.pem(identity.chain)
        return (action, { db in try NegotiationStore.insertAgreement(agreement, providerSignature: signature, providerChainPEM: pem, now: now, in: db) })
    }

    // MARK: performing actions

    /// Stores the machine's snapshot then performs `action` (for actions from tick/resume).
    private func commit(_ id: String, _ action: NegotiationStateMachine.Action) {
        if case .none = action { return }
        do { try persist(id) } catch {
            logger.error("negotiation \(id): cannot store state: \(error)")
            return
        }
        perform(action, id)
    }

    private func persist(_ id: String, extra: ((Database) throws -> Void)? = nil) throws {
        guard let entry = active[id] else { return }
        let snapshot = entry.machine.snapshot
        let now = self.now()
        try store.save(snapshot, peerFullJID: entry.peerJID.description, now: now) { db in
            try extra?(db)
            switch snapshot.state {
            case .finalized: try NegotiationStore.setAgreementState(negotiationID: id, .finalized, now: now, in: db)
            case .terminated: try NegotiationStore.setAgreementState(negotiationID: id, .terminated, now: now, in: db)
            default: break
            }
        }
    }

    private func perform(_ action: NegotiationStateMachine.Action, _ id: String) {
        switch action {
        case .send(let message):
            guard let peer = active[id]?.peerJID else { return }
            send(message, to: peer)
        case .terminated(_, let notify, _):
            if let notify, let peer = active[id]?.peerJID { sendBestEffort(notify, to: peer) }
            finishIfFinal(id)
        case .persist:
            finishIfFinal(id)
        case .none, .acknowledge, .refuse:
            break
        }
    }

    /// The signature a message carries: the provider's on `agreement`, the consumer's on `verify`.
    private func signature(for message: NegotiationMessage) -> [UInt8]? {
        switch message.body {
        case .agreement, .verify:
            guard let stored = try? store.agreement(negotiationID: message.negotiationID) else { return nil }
            if case .agreement = message.body { return stored.providerSignature }
            return stored.consumerSignature
        default:
            return nil
        }
    }

    private func send(_ message: NegotiationMessage, to peer: JID) {
        let payload: [UInt8]
        do { payload = try NegotiationWire.encode(message, signature: signature(for: message)) } catch {
            logger.error("negotiation \(message.negotiationID): cannot encode \(message.kind): \(error)")
            return
        }
        let timeout = Duration.milliseconds(Int64(configuration.stepTimeout * 1000))
        logger.debug("negotiation \(message.negotiationID): sending \(message.kind) to \(peer)")
        Task { [transport] in
            do {
                let answer = try await transport.request(.set, to: peer, namespace: NegotiationWire.namespace, payload: payload, timeout: timeout)
                guard let acked = NegotiationWire.parseAck(answer), acked == message.messageID else {
                    await self.refused(message, reason: "answer is not an acknowledgement of \(message.messageID)")
                    return
                }
                await self.acknowledged(message)
            } catch XMPPError.stanza(let error) {
                await self.refused(message, reason: "\(error.condition)\(error.text.map { ": \($0)" } ?? "")")
            } catch {
                // Timeouts and lost sessions: the machine's timer retries or gives up.
                self.logger.notice("negotiation \(message.negotiationID): \(message.kind) to \(peer) not answered: \(error)")
            }
        }
    }

    private func sendBestEffort(_ message: NegotiationMessage, to peer: JID) {
        guard let payload = try? NegotiationWire.encode(message, signature: nil) else { return }
        Task { [transport] in
            _ = try? await transport.request(.set, to: peer, namespace: NegotiationWire.namespace, payload: payload, timeout: .seconds(5))
        }
    }

    private func acknowledged(_ message: NegotiationMessage) {
        let id = message.negotiationID
        guard var entry = active[id] else { return }
        let action = entry.machine.acknowledged(messageID: message.messageID, now: self.now())
        active[id] = entry
        if case .none = action { return }
        logger.debug("negotiation \(id): \(message.kind) acknowledged, now \(entry.machine.state.rawValue)")
        commit(id, action)
        decideLater(id)
    }

    private func refused(_ message: NegotiationMessage, reason: String) {
        let id = message.negotiationID
        guard var entry = active[id] else { return }
        let action = entry.machine.peerRefused(messageID: message.messageID, reason: reason, now: self.now())
        active[id] = entry
        commit(id, action)
    }

    /// For a finished negotiation: audit, wake waiters, drop from memory.
    private func finishIfFinal(_ id: String) {
        guard let entry = active[id], entry.machine.state.isFinal else { return }
        active[id] = nil
        let snapshot = entry.machine.snapshot
        let outcome = NegotiationOutcome(negotiationID: id, state: snapshot.state, reason: snapshot.terminationReason, agreement: snapshot.agreement)
        let now = self.now()
        if snapshot.state == .finalized {
            logger.info("negotiation \(id) with \(snapshot.peer): agreement \(snapshot.agreement?.id ?? "?") FINALIZED")
            _ = try? audit.record(AuditEvent(
                at: now, module: "broker", kind: "negotiation.finalized", peer: snapshot.peer, action: NegotiationWire.namespace,
                outcome: .accepted, reason: snapshot.agreement?.id ?? "", detail: snapshot.agreement.map { Self.summary($0.terms) } ?? ""))
        } else {
            logger.notice("negotiation \(id) with \(snapshot.peer) TERMINATED: \(snapshot.terminationReason ?? "")")
            _ = try? audit.record(AuditEvent(
                at: now, module: "broker", kind: "negotiation.terminated", peer: snapshot.peer, action: NegotiationWire.namespace,
                outcome: .refused, reason: "terminated", detail: String((snapshot.terminationReason ?? "").prefix(500))))
        }
        for waiter in waiters.removeValue(forKey: id) ?? [] { waiter.resume(returning: outcome) }
    }

    private func refuse(_ peer: String, _ reason: String, _ detail: String, _ error: StanzaError) -> StanzaError {
        logger.notice("refused negotiation message from \(peer): \(reason): \(detail)")
        _ = try? audit.refused(
            module: "broker", kind: "negotiation.message", peer: peer, action: NegotiationWire.namespace, reason: reason,
            detail: String(detail.prefix(500)), at: self.now())
        return error
    }

    // MARK: agreements in force

    /// Checks a later request from `peer` (query beyond the default, federation, migration)
    /// against the FINALIZED agreements in which this broker is the provider and `peer` the
    /// consumer: allowed if one of them allows it (`AgreementRule`: period, entitlement, quota
    /// with `usage` already used under it, placement, instance types), else denied with the
    /// reasons of the newest one, or `no-agreement`.
    public nonisolated func check(_ request: PolicyRequest, from peer: String, usage: ResourceAmount = .zero, now: Date? = nil) -> PolicyDecision {
        let now = now ?? self.now()
        let bare = XmppAddr.bare(peer)
        let context = PolicyContext(peer: bare, now: now, usage: usage, policy: nil)
        do {
            // Fast path: agreements in force, newest first, until one allows the request.
            if try store.firstAgreementInForce(consumer: bare, provider: local, at: now, where: {
                AgreementRule(agreement: $0).evaluate(request, context: context) == .allowed
            }) != nil {
                return .allowed
            }
            // Denied: explain with the newest agreement (in force or not).
            let agreements = try store.agreements(peer: bare, state: .finalized)
                .filter { $0.agreement.provider == local && $0.agreement.consumer == bare }
            if let newest = agreements.first {
                return AgreementRule(agreement: newest.agreement).evaluate(request, context: context)
            }
        } catch {
            return .denied([PolicyReason(code: "no-agreement", message: "agreements unreadable: \(error)")])
        }
        return .denied([PolicyReason(code: "no-agreement", message: "no agreement in force with \(bare)")])
    }

    // MARK: helpers

    static func summary(_ terms: Terms) -> String {
        let r = terms.resources
        return "\(terms.entitlements.map(\.rawValue).sorted().joined(separator: ",")) instances=\(r.instances) vcpu=\(r.vcpu) memory=\(r.memoryGiB)GiB storage=\(r.storageGiB)GiB transfer=\(r.transferGB)GB \(terms.rates.currency)"
    }
}

struct AgreementSignatureProblem: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
