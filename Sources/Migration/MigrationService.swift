import Foundation
import GRDB
import Logging
import Negotiation
import Peering
import Synchronization
import Metering
import Policy
import Providers
import Storage
import Transfer
import Trust
import XMPP
import XMLModel

/// Migration between brokers (`urn:intercloud:migration:0`, in signed envelopes), cold, or live
/// between two libvirt clouds when the agreement grants `migrate-live`: wires the
/// Migration module's runner to this broker's driver, journal (the broker database), peers (signed
/// IQs), image channel (`BrokerImageTransport`), agreements and policy (authorization) and
/// metering (placements move with the instance).
///
/// Operators ask from the CLI (`intercloud migrate`): the request is queued in the database and
/// the running broker takes it, like peering approvals; progress and steps are in the journal.
public final class MigrationService: Sendable {
    public struct Settings: Sendable, Hashable {
        /// Address the TLS transfer server listens on, and the one offered to peers.
        public var transferHost: String = "127.0.0.1"
        public var advertisedHost: String?
        /// 0: an ephemeral port (offered to each peer in its reservation).
        public var transferPort: UInt16 = 0
        /// Exported, converted and received disk files, one folder per migration.
        public var workDirectory: String
        public var bootTimeout: Duration = .seconds(120)
        public var gracefulShutdownSeconds: TimeInterval = MigrationConfiguration.defaultGracefulShutdownTimeout
        /// How long the source waits for the destination's answer to one message. It must cover
        /// the destination's slowest step inside a handler (import, create and start of the
        /// instance before it answers `transferred`). A destination whose XMPP session ends
        /// mid-handler fails the request at once (`PeerSessionWatch`), not after this long.
        public var requestTimeout: Duration = .seconds(60)
        /// Destination side: how long a migration may wait on its source (a reservation held, or a
        /// started copy waiting for `cutover` or `abort`) before the source is asked where it
        /// stands, and how often after that. The answer releases the reservation, completes or
        /// rolls back the copy as the source did; an unreachable source is asked again.
        public var peerCheckInterval: TimeInterval = 60
        /// Destination side: how long an announced image transfer may wait for its connection
        /// (or a broken one for its resumption) before it fails and its reservation is released.
        public var transferWait: TimeInterval = TransferServer.Options().waitTimeout
        /// Migrations into this cloud under one agreement at once (reserved to cut over); more are
        /// refused (`too-many-migrations`).
        public var maxConcurrentPerAgreement = 4
        /// Live migration into this cloud: the libvirt URI of this cloud's hypervisor as the source
        /// cloud's hypervisor must reach it (e.g. `qemu+tls://hv1.cloud2.example/system`); nil: the
        /// provider's own `uri`, which is right only when both hypervisors share a host.
        public var liveURI: String?
        /// Live migration out of this cloud: the hypervisor URIs each peer may offer
        /// (`[migration.live_peers]`); no entry, no live migration to that peer.
        public var livePeers = LivePeerPolicy()

        public init(workDirectory: String) { self.workDirectory = workDirectory }
    }

    /// The namespace images are announced in before they travel the transfer channel.
    public static let transferNamespace = BrokerImageTransport.namespace

    public let journal: MigrationJournal
    let local: String
    let settings: Settings
    let provider: ProviderHandle
    let signed: any SignedTransport
    let sessions: PeerSessionWatch
    let negotiation: NegotiationService
    let metering: MeteringService
    let policies: PolicySet
    let trustStore: TrustStore
    /// The broker's one audit log (with its refusal aggregator).
    let audit: AuditLog
    let identity: TransferIdentity
    let region: String
    let logger: Logger
    private let state = Mutex<(runner: MigrationRunner?, transport: BrokerImageTransport?)>((nil, nil))

    /// Builds the service from the broker's context; `sessions` is the presence the broker's
    /// XMPP client sees (requests race the peer's session), `identity` the transfer channel's.
    public init(
        context: BrokerContext, settings: Settings, provider: ProviderHandle, sessions: PeerSessionWatch, negotiation: NegotiationService,
        metering: MeteringService, trustStore: TrustStore, identity: TransferIdentity, region: String
    ) {
        self.local = context.local
        self.settings = settings
        self.provider = provider
        self.journal = MigrationJournal(database: context.database)
        self.signed = context.transport
        self.sessions = sessions
        self.negotiation = negotiation
        self.metering = metering
        self.policies = context.policies
        self.audit = context.audit
        self.trustStore = trustStore
        self.identity = identity
        self.region = region
        self.logger = context.logger
    }

    public enum Schema: SchemaContributor {
        public static func registerMigrations(in migrator: inout DatabaseMigrator) {
            migrator.registerMigration("broker-migration.v1") { db in
                try db.create(table: "migration_request") { t in
                    t.primaryKey("id", .text)
                    t.column("instance_id", .text).notNull()
                    t.column("peer", .text).notNull()
                    t.column("agreement_id", .text)
                    t.column("requested_at", .datetime).notNull()
                    t.column("taken", .boolean).notNull().defaults(to: false)
                    t.column("error", .text)
                }
            }
            migrator.registerMigration("broker-migration.v2-mode") { db in
                // `cold` or `live` (`intercloud migrate --live`).
                try db.alter(table: "migration_request") { t in
                    t.add(column: "mode", .text).notNull().defaults(to: MigrationMode.cold.rawValue)
                }
            }
        }
    }

    /// Whether the runner is up (driver reachable, transfer server listening).
    public var isReady: Bool { state.withLock { $0.runner != nil } }

    // MARK: lifecycle

    /// Starts the transfer server and the runner, installs the handlers, resumes unfinished
    /// migrations, then takes operator requests until cancelled.
    public func run() async {
        let runner: MigrationRunner
        do { runner = try await makeRunner() } catch {
            logger.error("migration disabled: \(error)")
            return
        }
        // Resume only once the XMPP session is up: the broker starts connecting at the same time,
        // and a migration resumed before it fails its next message with "not connected", which
        // rolls it back needlessly, and its abort to the peer fails the same way, so the peer kept
        // its reservation (unfinished) while this side said rolled back. Past the wait, resume
        // anyway: the steps fail and retry or roll back as with any unreachable peer.
        do { try await signed.waitUntilOnline(timeout: .seconds(30)) } catch {
            logger.warning("resuming migrations while not connected to the XMPP server: \(error)")
        }
        do {
            let results = try await runner.resume()
            for result in results { logger.info("migration \(result.migrationID) (\(result.role)) resumed: \(result.outcome)") }
        } catch {
            logger.error("cannot resume migrations: \(error)")
        }
        while !Task.isCancelled {
            await takeRequests(runner)
            _ = try? await runner.expireReservations()
            if let results = try? await runner.checkWaitsOnSource() { for result in results { await audit(peerCheck: result) } }
            try? await Task.sleep(for: .milliseconds(200))
        }
        state.withLock { $0.transport }?.shutdown()
    }

    private func makeRunner() async throws -> MigrationRunner {
        let driver = try await provider.driver()
        let work = URL(fileURLWithPath: settings.workDirectory, isDirectory: true)
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        let journal = self.journal
        let metering = self.metering
        let transport = try BrokerImageTransport(
            identity: identity, host: settings.transferHost, port: settings.transferPort, waitTimeout: settings.transferWait,
            advertisedHost: settings.advertisedHost ?? settings.transferHost, workDirectory: work.appendingPathComponent("incoming"),
            signed: signed, trustStore: trustStore, logger: logger,
            lookupOffer: { offer in
                let unfinished = (try? journal.unfinished()) ?? []
                for (id, role) in unfinished where role == .source {
                    guard let source = try? journal.sourceSnapshot(id), source.reservation?.offer == offer else { continue }
                    return (id, source.peer, source.transferFile?.sha256)
                }
                return nil
            }
        ) { migrationID, bytes in
            Task {
                if let source = try? journal.sourceSnapshot(migrationID) {
                    try? await metering.store.addTransfer(agreementID: source.agreementID, role: .consumer, bytes: bytes, at: Date())
                } else if let destination = try? journal.destinationSnapshot(migrationID) {
                    try? await metering.store.addTransfer(agreementID: destination.proposal.agreementID, role: .provider, bytes: bytes, at: Date())
                }
            }
        }
        let runner = MigrationRunner(
            driver: driver, journal: journal, transport: transport, link: BrokerMigrationLink(signed: signed, timeout: settings.requestTimeout, sessions: sessions),
            authorize: { [weak self] request, peer, agreementID, now in
                guard let self else { return .denied([PolicyReason(code: "stopping", message: "broker stopping")]) }
                return await self.authorize(request, peer: peer, agreementID: agreementID, now: now)
            },
            authorizeLive: { [weak self] role, peer, agreementID, now in
                guard let self else { return .denied([PolicyReason(code: "stopping", message: "broker stopping")]) }
                return await self.authorizeLive(role: role, peer: peer, agreementID: agreementID, now: now)
            },
            metering: BrokerMeteringHandoff(journal: journal, metering: metering, provider: provider),
            configuration: .init(
                workDirectory: work.appendingPathComponent("work"), region: region,
                migration: .init(gracefulShutdownTimeout: settings.gracefulShutdownSeconds), bootTimeout: settings.bootTimeout,
                liveURI: settings.liveURI, reservationCheckInterval: settings.peerCheckInterval,
                startedCheckInterval: settings.peerCheckInterval, livePeers: settings.livePeers),
            observer: Self.observers(
                Self.rollbackAudit(journal: journal, audit: audit),
                Self.crashInjection(ProcessInfo.processInfo.environment["INTERCLOUD_FAULT_KILL_AFTER_STEP"], logger: logger)))
        state.withLock { $0 = (runner, transport) }
        return runner
    }

    /// Every migration that ends rolled back is audited (`migration.rollback`, with the role and
    /// the machine's reason): most rollbacks are the answer to a peer's input this broker refused
    /// (an image that names another file, a live target outside `[migration.live_peers]`, a
    /// transfer that never connected), and the operator must see them where the other refusals
    /// are. Through the aggregator, so a peer forcing rollbacks in a loop costs one row per window.
    static func rollbackAudit(journal: MigrationJournal, audit: AuditLog) -> MigrationRunner.JournalObserver {
        { event in
            guard event.phase == "rolledBack" else { return }
            let (peer, reason): (String?, String?) =
                switch event.role {
                case .source: ((try? journal.sourceSnapshot(event.migrationID)) ?? nil).map { ($0.peer, $0.rollbackReason) } ?? (nil, nil)
                case .destination: ((try? journal.destinationSnapshot(event.migrationID)) ?? nil).map { ($0.peer, $0.rollbackReason) } ?? (nil, nil)
                }
            _ = try? await audit.offPool.refused(
                module: "migration", kind: "migration.rollback", peer: peer ?? "", action: event.migrationID, reason: event.role.rawValue,
                detail: reason ?? "rolled back", at: Date())
        }
    }

    /// Runs each observer in turn (a throwing one stops the runner, as alone).
    static func observers(_ observers: MigrationRunner.JournalObserver?...) -> MigrationRunner.JournalObserver? {
        let present = observers.compactMap { $0 }
        guard !present.isEmpty else { return nil }
        return { event in for observer in present { try await observer(event) } }
    }

    /// Fault injection for the crash tests, never set in production: with
    /// `INTERCLOUD_FAULT_KILL_AFTER_STEP=ROLE:PHASE:STEP` (any prefix of it, e.g. `source:stopping`),
    /// the process sends itself SIGKILL right after the first journal write matching it, exactly
    /// as `kill -9` at that point would, so restarts can be tested at every step.
    static func crashInjection(_ spec: String?, logger: Logger) -> MigrationRunner.JournalObserver? {
        guard let spec, !spec.isEmpty else { return nil }
        logger.warning("fault injection: this process will kill itself after the journal step matching '\(spec)'")
        return { event in
            let name = "\(event.role.rawValue):\(event.phase):\(event.step)"
            if name.hasPrefix(spec) {
                FileHandle.standardError.write(Data("fault injection: SIGKILL after \(name) of \(event.migrationID)\n".utf8))
                kill(getpid(), SIGKILL)
            }
        }
    }

    /// Serves inbound migration messages (destination side).
    public func install() {
        // Images are announced before they travel; until the transfer server listens, an
        // announcement is refused like any migration message before the runner is up.
        signed.serve(namespace: BrokerImageTransport.namespace, maxPayloadBytes: BrokerImageTransport.maxAnnouncementBytes) {
            [self] request throws(StanzaError) in
            guard let transport = state.withLock({ $0.transport }) else { throw .serviceUnavailable("this broker's provider is not ready for migrations") }
            return try transport.announced(request)
        }
        signed.serve(namespace: MigrationMessage.namespace, maxPayloadBytes: MigrationMessage.maximumEncodedBytes + 1024) {
            [self] request throws(StanzaError) in
            guard let runner = state.withLock({ $0.runner }) else { throw .serviceUnavailable("this broker's provider is not ready for migrations") }
            let message: MigrationMessage
            do { message = try MigrationWire.decode(request.payload) } catch {
                throw .badRequest("\(error)")
            }
            do {
                let answer = try await runner.handle(message, from: request.peer)
                return try MigrationWire.encode(answer)
            } catch let error as MigrationMessageError {
                _ = try? await audit.offPool.refused(
                    module: "migration", kind: "migration.request", peer: request.peer, action: message.migrationID,
                    reason: "invalidRequest", detail: error.description, at: Date())
                throw .badRequest(error.description)
            } catch {
                logger.error("migration \(message.migrationID) from \(request.peer): \(error)")
                throw .internalServerError("\(error)")
            }
        }
    }

    // MARK: operator requests

    /// Queues a migration for the running broker (from the CLI).
    public static func request(
        database: DatabasePool, id: String, instanceID: String, peer: String, agreementID: String?, mode: MigrationMode = .cold, now: Date
    ) throws {
        try database.write { db in
            try db.execute(
                sql: "INSERT INTO migration_request(id, instance_id, peer, agreement_id, requested_at, mode) VALUES (?, ?, ?, ?, ?, ?)",
                arguments: [id, instanceID, peer, agreementID, now, mode.rawValue])
        }
    }

    /// Why a queued request was not started (nil while waiting or once started).
    public static func requestError(database: DatabasePool, id: String) throws -> (taken: Bool, error: String?)? {
        try database.read { db in
            try Row.fetchOne(db, sql: "SELECT taken, error FROM migration_request WHERE id = ?", arguments: [id]).map { ($0["taken"], $0["error"]) }
        }
    }

    private func takeRequests(_ runner: MigrationRunner) async {
        let requests: [(id: String, instance: String, peer: String, agreement: String?, mode: String)]
        do {
            requests = try await journal.database.durableWrite { db in
                let rows = try Row.fetchAll(
                    db, sql: "SELECT id, instance_id, peer, agreement_id, mode FROM migration_request WHERE taken = 0 ORDER BY requested_at")
                try db.execute(sql: "UPDATE migration_request SET taken = 1 WHERE taken = 0")
                return rows.map { (id: $0["id"], instance: $0["instance_id"], peer: $0["peer"], agreement: $0["agreement_id"], mode: $0["mode"]) }
            }
        } catch { return }
        for request in requests {
            Task {
                do {
                    guard let mode = MigrationMode(rawValue: request.mode) else { throw MigrationTransportError("unknown migration mode \(request.mode)") }
                    let result = try await self.migrate(
                        instanceID: request.instance, to: request.peer, agreementID: request.agreement, migrationID: request.id, mode: mode)
                    self.logger.info("migration \(request.id) of \(request.instance) to \(request.peer): \(result.outcome)")
                } catch {
                    self.logger.error("migration \(request.id) of \(request.instance) to \(request.peer) not started: \(error)")
                    await self.recordRequestError(request.id, "\(error)")
                }
            }
        }
    }

    private func recordRequestError(_ id: String, _ error: String) async {
        try? await journal.database.durableWrite { db in
            try db.execute(sql: "UPDATE migration_request SET error = ? WHERE id = ?", arguments: [error, id])
        }
    }

    // MARK: source

    /// Moves a local running instance to `peer` under `agreementID` (default: the newest agreement
    /// in force in which the peer is the provider and grants migrate-in, and migrate-live for `.live`).
    /// A live migration that this broker's driver cannot do is refused (and audited) before anything
    /// is journaled or sent.
    public func migrate(
        instanceID: String, to peer: String, agreementID: String? = nil, migrationID: String? = nil, mode: MigrationMode = .cold
    ) async throws -> MigrationRunner.Result {
        guard let runner = state.withLock({ $0.runner }) else { throw MigrationTransportError("migration is not ready: the provider driver is not reachable yet") }
        let bare = XmppAddr.bare(peer)
        let agreement: String
        if let agreementID {
            agreement = agreementID
        } else {
            let now = Date()
            guard let found = try negotiation.store.agreements(peer: bare, state: .finalized).map(\.agreement).first(where: {
                $0.provider == bare && $0.consumer == local && $0.isValid(at: now) && $0.terms.entitlements.contains(.migrateIn)
                    && (mode == .cold || $0.terms.entitlements.contains(.migrateLive))
            }) else {
                let needed = mode == .live ? "migrate-in,migrate-live" : "migrate-in"
                if mode == .live { await audit(refusedLive: bare, action: instanceID, reason: "no-agreement", detail: "no agreement in force granting \(needed)") }
                throw MigrationTransportError("no agreement in force with \(bare) granting \(needed): negotiate one first (intercloud negotiate --peer \(bare) --entitle \(needed))")
            }
            agreement = found.id
        }
        do {
            return try await runner.migrate(
                instanceID: instanceID, to: bare, agreementID: agreement, migrationID: migrationID ?? "mig-\(RandomIdentifier.hex(bytes: 8))", mode: mode)
        } catch let error as MigrationRunner.RunnerError where mode == .live {
            await audit(refusedLive: bare, action: instanceID, reason: "not-possible", detail: "\(error)")
            throw error
        }
    }

    // MARK: authorization

    /// Live migration, on top of `authorize` (which checked `migrate-in`/`migrate-out`): the
    /// agreement must grant `migrate-live`, and this broker's policy entry for the peer (when policy
    /// files are loaded) must list `migrate-live`, whichever side this broker plays. A refusal is
    /// audited (`migration.live`).
    func authorizeLive(role: MigrationRole, peer: String, agreementID: String, now: Date) async -> PolicyDecision {
        let bare = XmppAddr.bare(peer)
        var reasons: [PolicyReason] = []
        if let stored = try? negotiation.store.agreement(agreementID), stored.state == .finalized {
            if !stored.agreement.terms.entitlements.contains(.migrateLive) {
                reasons.append(PolicyReason(code: "not-entitled", message: "agreement \(agreementID) does not grant migrate-live"))
            }
        } else {
            reasons.append(PolicyReason(code: "no-agreement", message: "no finalized agreement \(agreementID)"))
        }
        if !policies.peers.isEmpty {
            if let entry = policies.policy(for: bare, at: now) {
                if !entry.entitlements.contains(.migrateLive) {
                    reasons.append(PolicyReason(code: "not-entitled", message: "policy '\(entry.name)' does not grant migrate-live"))
                }
            } else {
                reasons.append(PolicyReason(code: "no-policy", message: "no policy entry for \(bare)"))
            }
        }
        guard reasons.isEmpty else {
            await audit(
                refusedLive: bare, action: agreementID, reason: reasons[0].code,
                detail: "\(role.rawValue): " + reasons.map(\.message).joined(separator: "; "))
            return .denied(reasons)
        }
        return .allowed
    }

    /// A destination that acted on its source's answer to `status` (`checkWaitsOnSource`): what it
    /// decided without the source's own request is audited (`migration.peer-check`).
    private func audit(peerCheck result: MigrationRunner.Result) async {
        let peer = (try? journal.destinationSnapshot(result.migrationID))?.peer ?? ""
        let (reason, detail): (String, String) =
            switch result.outcome {
            case .completed: ("source-cut-over", "completed: the source cut over; its cutover did not arrive")
            case .rolledBack(let why): ("source-rolled-back", "rolled back: \(why)")
            case .stalled(let why): ("stalled", why)
            case .waiting: ("waiting", "")
            }
        logger.notice("migration \(result.migrationID) from \(peer): \(detail)")
        _ = try? await audit.offPool.record(AuditEvent(
            at: Date(), module: "migration", kind: "migration.peer-check", peer: XmppAddr.bare(peer), action: result.migrationID,
            outcome: .accepted, reason: reason, detail: detail))
    }

    private func audit(refusedLive peer: String, action: String, reason: String, detail: String) async {
        _ = try? await audit.offPool.refused(
            module: "migration", kind: "migration.live", peer: peer, action: action, reason: reason, detail: detail, at: Date())
    }

    /// Migrations into this cloud under `agreementID` that are not finished and not yet placed in
    /// metering (whose instance metering does not count yet), and what they hold. Those still being
    /// authorized count too (proposals arriving together must not all pass on the same usage),
    /// except one like `authorizing`: the proposal being decided, journaled as `authorizing` itself.
    public func inFlightMigrations(agreementID: String, authorizing: MigrationSpec? = nil) -> (count: Int, held: ResourceAmount) {
        let placed = Set(((try? metering.store.placements(agreementID: agreementID, role: .provider)) ?? [])
            .filter { $0.removedAt == nil }.map(\.instanceID))
        var count = 0
        var held = ResourceAmount()
        var selfSkipped = authorizing == nil
        for (id, role) in (try? journal.unfinished()) ?? [] where role == .destination {
            guard let snapshot = try? journal.destinationSnapshot(id), snapshot.proposal.agreementID == agreementID,
                  !snapshot.phase.isFinal
            else { continue }
            if let instance = snapshot.instance, placed.contains(instance.instanceID) { continue }
            let spec = snapshot.proposal.instance
            if !selfSkipped, snapshot.phase == .authorizing, let asked = authorizing, asked.vcpu == spec.vCPU,
               asked.memoryGiB * 1024 == Decimal(spec.memoryMiB), asked.diskGiB == Decimal(spec.diskGiB) {
                selfSkipped = true
                continue
            }
            count += 1
            held.instances += 1
            held.vcpu += spec.vCPU
            held.memoryGiB += Decimal(spec.memoryMiB) / 1024
            held.storageGiB += Decimal(spec.diskGiB)
        }
        return (count, held)
    }

    /// The size of this cloud an instance of `spec` maps to: the same ID if this cloud has it,
    /// else the smallest size with at least its vCPUs, memory and disk (as the destination's
    /// reservation chooses).
    func destinationSize(for spec: MigrationSpec) async -> String? {
        guard let sizes = try? await provider.driver().listSizes() else { return nil }
        if sizes.contains(where: { $0.id == spec.instanceType }) { return spec.instanceType }
        let memoryMiB = NSDecimalNumber(decimal: spec.memoryGiB * 1024).intValue
        let diskGiB = NSDecimalNumber(decimal: spec.diskGiB).intValue
        return sizes.filter { $0.vCPU >= spec.vcpu && $0.memoryMiB >= memoryMiB && $0.diskGiB >= diskGiB }
            .min { ($0.vCPU, $0.memoryMiB, $0.diskGiB, $0.id) < ($1.vCPU, $1.memoryMiB, $1.diskGiB, $1.id) }?.id
    }

    /// Destination (`migrate-in`): the agreement must be one this broker provides to the peer, in
    /// force, granting the request within its quota (current placements count as usage), and
    /// the policy file must not refuse it. Source (`migrate-out`): the agreement must be one the
    /// peer provides to us, in force, granting migrate-in there, and our policy must allow moving
    /// the instance out to that peer.
    func authorize(_ request: PolicyRequest, peer: String, agreementID: String, now: Date) async -> PolicyDecision {
        let bare = XmppAddr.bare(peer)
        guard let stored = try? negotiation.store.agreement(agreementID), stored.state == .finalized else {
            return .denied([PolicyReason(code: "no-agreement", message: "no finalized agreement \(agreementID)")])
        }
        let agreement = stored.agreement
        switch request {
        case .migrateIn(var spec):
            guard agreement.provider == local, agreement.consumer == bare else {
                return .denied([PolicyReason(code: "wrong-agreement", message: "agreement \(agreementID) is not provided by \(local) to \(bare)")])
            }
            // The agreement and the rate card name this cloud's sizes; the source names its own
            // (`lv.tiny` from libvirt, `t3.micro` from EC2). Check the size this cloud will run.
            if let size = await destinationSize(for: spec) { spec.instanceType = size }
            let request = PolicyRequest.migrateIn(spec)
            // What runs under the agreement, plus what migrations into this cloud already hold
            // (reserved, receiving, importing, started but not yet cut over): quota is spent from
            // the first reserved byte, not from the cut-over.
            var usage = await metering.usage(agreementID: agreementID, role: .provider, at: now)
            let inFlight = inFlightMigrations(agreementID: agreementID, authorizing: spec)
            guard inFlight.count < settings.maxConcurrentPerAgreement else {
                return .denied([PolicyReason(
                    code: "too-many-migrations",
                    message: "\(inFlight.count) migrations under \(agreementID) are already in progress (at most \(settings.maxConcurrentPerAgreement))")])
            }
            usage.instances += inFlight.held.instances
            usage.vcpu += inFlight.held.vcpu
            usage.memoryGiB += inFlight.held.memoryGiB
            usage.storageGiB += inFlight.held.storageGiB
            let context = PolicyContext(peer: bare, now: now, usage: usage, policy: nil)
            let decision = AgreementRule(agreement: agreement).evaluate(request, context: context)
            guard decision == .allowed else { return decision }
            if !policies.peers.isEmpty, case .denied(let reasons) = policies.evaluate(request, peer: bare, usage: usage, now: now) {
                return .denied(reasons)
            }
            return .allowed
        case .migrateOut(let spec):
            guard agreement.provider == bare, agreement.consumer == local else {
                return .denied([PolicyReason(code: "wrong-agreement", message: "agreement \(agreementID) is not provided by \(bare) to \(local)")])
            }
            let context = PolicyContext(peer: bare, now: now, usage: .zero, policy: nil)
            // Instance types in the agreement are the peer's sizes, which the peer maps ours to
            // and checks itself; here only the grant, period, quota and placement are checked.
            var untyped = agreement
            untyped.terms.instanceTypes = []
            let granted = AgreementRule(agreement: untyped).evaluate(.migrateIn(spec), context: context)
            guard granted == .allowed else { return granted }
            if !policies.peers.isEmpty, case .denied(let reasons) = policies.evaluate(request, peer: bare, now: now) {
                return .denied(reasons)
            }
            return .allowed
        default:
            return .denied([PolicyReason(code: "unexpected", message: "not a migration request")])
        }
    }
}

/// Migration messages over signed IQs: `<migration xmlns='urn:intercloud:migration:0'>JSON</migration>`.
enum MigrationWire {
    static func encode(_ message: MigrationMessage) throws -> [UInt8] {
        let json = String(decoding: try message.encoded(), as: UTF8.self)
        return Array(XMLElement("migration", namespace: MigrationMessage.namespace, text: json).serialized().utf8)
    }

    static func decode(_ bytes: [UInt8]) throws -> MigrationMessage {
        guard let element = try? XMLElement.parse(String(decoding: bytes, as: UTF8.self), maxBytes: MigrationMessage.maximumEncodedBytes * 2),
            element.name == "migration", element.namespace == MigrationMessage.namespace, element.elements.isEmpty
        else { throw MigrationMessageError("expected <migration xmlns='\(MigrationMessage.namespace)'>JSON</migration>") }
        return try MigrationMessage.decode(Data(element.text.utf8))
    }
}

/// Migration messages to a peer broker, each a signed IQ awaited for `timeout`. With `sessions`, a
/// request races the peer's presence: the peer's session ending (it was killed or lost its
/// connection) fails the request at once, so the migration's retry or rollback starts in seconds
/// rather than at the timeout; and a request to a peer whose session is known to have ended waits
/// (up to `timeout`) for it to be available again, so that retries land once it is back.
struct BrokerMigrationLink: MigrationPeerLink {
    let signed: any SignedTransport
    let timeout: Duration
    var sessions: PeerSessionWatch?

    func send(_ message: MigrationMessage, to peer: String) async throws -> MigrationMessage {
        let target = try signed.route(to: try JID(peer))
        let payload = try MigrationWire.encode(message)
        let (signed, timeout) = (self.signed, self.timeout)
        guard let sessions else {
            return try MigrationWire.decode(
                try await signed.request(.set, to: target, namespace: MigrationMessage.namespace, payload: payload, timeout: timeout))
        }
        let key = target.description
        if sessions.isGone(key) {
            // A `status` question is asked again later by whoever asks it (the periodic check runs
            // in the service's loop, which must not stall on one peer): no waiting for it.
            if case .status = message.body { throw PeerSessionEnded(peer: key, waited: .zero) }
            let back = await Self.first(
                { await sessions.wait(for: key, available: true); return true },
                or: { try? await Task.sleep(for: timeout); return false })
            guard back else { throw PeerSessionEnded(peer: key, waited: timeout) }
        }
        let answer = try await withThrowingTaskGroup(of: [UInt8]?.self) { group in
            group.addTask {
                try await signed.request(.set, to: target, namespace: MigrationMessage.namespace, payload: payload, timeout: timeout)
            }
            group.addTask {
                await sessions.wait(for: key, available: false)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let bytes = first else { throw PeerSessionEnded(peer: key, waited: nil) }
            return bytes
        }
        return try MigrationWire.decode(answer)
    }

    /// The result of whichever of two cancellable operations finishes first; the other is cancelled.
    private static func first(
        _ one: @escaping @Sendable () async -> Bool, or other: @escaping @Sendable () async -> Bool
    ) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask(operation: one)
            group.addTask(operation: other)
            defer { group.cancelAll() }
            return await group.next() ?? false
        }
    }
}

/// Metering follows the instance: the destination starts metering it as the provider under the
/// agreement; the source (the consumer) records the placement at the peer as its own view.
struct BrokerMeteringHandoff: MeteringHandoff {
    let journal: MigrationJournal
    let metering: MeteringService
    let provider: ProviderHandle

    func apply(_ change: MeteringChange, at now: Date) async throws {
        switch change {
        case .start(let migrationID, let instanceID, let sizeID, let agreementID, let movedFrom, let since):
            let size = try await provider.driver().listSizes().first { $0.id == sizeID }
            let spec = try journal.destinationSnapshot(migrationID)?.proposal.instance
            try await metering.store.offPool.place(MeteringStore.Placement(
                agreementID: agreementID, instanceID: instanceID, role: .provider, peer: movedFrom, instanceType: sizeID,
                vcpu: size?.vCPU ?? spec?.vCPU ?? 1, memoryGiB: Decimal(size?.memoryMiB ?? spec?.memoryMiB ?? 0) / 1024,
                diskBytes: Int64(size?.diskGiB ?? spec?.diskGiB ?? 0) << 30, placedAt: min(since ?? now, now)))
        case .stop(let migrationID, _, let movedTo, let since):
            guard let source = try journal.sourceSnapshot(migrationID) else { return }
            let destinationInstance = source.destinationInstance?.instanceID ?? migrationID
            let sizeID = source.reservation?.sizeID ?? source.spec.instanceType
            try await metering.store.offPool.place(MeteringStore.Placement(
                agreementID: source.agreementID, instanceID: destinationInstance, role: .consumer, peer: movedTo, instanceType: sizeID,
                vcpu: source.spec.vCPU, memoryGiB: Decimal(source.spec.memoryMiB) / 1024, diskBytes: Int64(source.spec.diskGiB) << 30,
                placedAt: min(since ?? now, now)))
        }
    }
}
