import Foundation
import Logging
import Policy
import Providers

/// The thin IO layer of migrations: performs the actions of `SourceMigration` and
/// `DestinationMigration` with a cloud driver, the journal, the peer link and the image transport.
///
/// One runner per broker plays both roles: `migrate(...)` moves a local instance out,
/// `handle(_:from:)` answers a peer's requests for instances moving in, and `resume()` finishes
/// what a previous process left unfinished. The broker calls `resume()` at start and then now and
/// then (with `expireReservations()`), since a migration that stalled on an unreachable peer goes
/// on only when resumed. Before every action the machine's snapshot and the step
/// are written to the journal (SQLite, `synchronous = FULL`), so nothing is performed, and no answer
/// sent, that a restart would not know about.
public actor MigrationRunner {
    public struct Configuration: Sendable {
        /// Per-migration folders for exported, converted and received disk files.
        public var workDirectory: URL
        /// The region this cloud offers (destination side).
        public var region: String
        public var migration: MigrationConfiguration
        /// Formats to export in, most preferred first; nil: every format the driver exports.
        public var exportFormats: [ImageFormat]?
        /// Formats to accept, most preferred first; nil: every format the driver imports.
        public var importFormats: [ImageFormat]?
        /// Source network name → local network name (destination side).
        public var networkMap: [String: String]
        public var defaultNetwork: String?
        /// How long a destination instance may take to be running.
        public var bootTimeout: Duration
        /// `.retry` actions performed in one run before the run stops as stalled (`resume()` goes on).
        public var maxRetriesPerRun: Int
        /// Live migration (destination side): this hypervisor's URI as the source's hypervisor must
        /// reach it; nil: the URI the driver itself connects with (right when both hypervisors share
        /// a host or the driver's URI is already a network one).
        public var liveURI: String?
        /// Live migration: how long the destination waits for an arrived guest to be running.
        public var liveArrivalTimeout: Duration
        /// Live migration (source side): the hypervisor URIs each peer may offer, and whether the
        /// stream may go unencrypted. No entry for a peer: no live migration to it.
        public var livePeers = LivePeerPolicy()
        /// Destination side: how long a reservation is held before the source is asked about it
        /// (`checkWaitsOnSource`), and how often after that.
        public var reservationCheckInterval: TimeInterval
        /// Destination side: how long a started copy waits for the source's `cutover` or `abort`
        /// before the source is asked where it stands (`checkWaitsOnSource`), and how often after that.
        public var startedCheckInterval: TimeInterval

        public init(
            workDirectory: URL, region: String = "default", migration: MigrationConfiguration = .init(),
            exportFormats: [ImageFormat]? = nil, importFormats: [ImageFormat]? = nil, networkMap: [String: String] = [:],
            defaultNetwork: String? = nil, bootTimeout: Duration = .seconds(120), maxRetriesPerRun: Int = 5,
            liveURI: String? = nil, liveArrivalTimeout: Duration = .seconds(30), reservationCheckInterval: TimeInterval = 60,
            startedCheckInterval: TimeInterval = 60, livePeers: LivePeerPolicy = .init()
        ) {
            self.livePeers = livePeers
            self.reservationCheckInterval = reservationCheckInterval
            self.startedCheckInterval = startedCheckInterval
            self.liveURI = liveURI
            self.liveArrivalTimeout = liveArrivalTimeout
            self.workDirectory = workDirectory
            self.region = region
            self.migration = migration
            self.exportFormats = exportFormats
            self.importFormats = importFormats
            self.networkMap = networkMap
            self.defaultNetwork = defaultNetwork
            self.bootTimeout = bootTimeout
            self.maxRetriesPerRun = maxRetriesPerRun
        }
    }

    /// How a run ended.
    public enum Outcome: Sendable, Hashable {
        case completed
        case rolledBack(reason: String)
        /// A step that must succeed kept failing (peer unreachable, driver down); the journal holds
        /// the state and `resume()` continues from it.
        case stalled(reason: String)
        /// Destination side: waiting for the source (`cutover` or `abort`).
        case waiting
    }

    public struct Result: Sendable, Hashable {
        public var migrationID: String
        public var role: MigrationRole
        public var outcome: Outcome
    }

    /// A journal write, reported to the observer right after it is committed.
    public struct JournalEvent: Sendable, Hashable {
        public var migrationID: String
        public var role: MigrationRole
        public var phase: String
        public var step: String
    }

    /// Called after each journal write, before the action is performed. If it throws, the runner
    /// stops on the spot and refuses all further work, exactly as if the process died there (what
    /// the crash tests use), and the error propagates to the caller.
    public typealias JournalObserver = @Sendable (JournalEvent) async throws -> Void

    public enum RunnerError: Error, Sendable, CustomStringConvertible {
        case halted
        case instance(String)
        case duplicate(String)
        case peer(String)

        public var description: String {
            switch self {
            case .halted: "the migration runner stopped"
            case .instance(let message): message
            case .duplicate(let id): "migration \(id) already exists"
            case .peer(let message): "peer: \(message)"
            }
        }
    }

    let driver: any CloudDriver
    public let journal: MigrationJournal
    let transport: any ImageTransport
    let link: (any MigrationPeerLink)?
    let authorize: MigrationAuthorizer
    let authorizeLive: LiveMigrationAuthorizer?
    let metering: (any MeteringHandoff)?
    let configuration: Configuration
    let observer: JournalObserver?
    let logger = Logger(label: "intercloud.migration")
    private var halted = false
    /// Migrations a task of this runner is working on; a second request for one waits its turn by
    /// being answered with the current state instead of interleaving with the first.
    private var busy: Set<BusyKey> = []
    /// When each held reservation's source was last asked about it (`checkWaitsOnSource`).
    private var sourceChecks: [String: Date] = [:]

    private struct BusyKey: Hashable {
        var id: String
        var role: MigrationRole
    }

    public init(
        driver: any CloudDriver, journal: MigrationJournal, transport: any ImageTransport, link: (any MigrationPeerLink)?,
        authorize: @escaping MigrationAuthorizer, authorizeLive: LiveMigrationAuthorizer? = nil, metering: (any MeteringHandoff)? = nil,
        configuration: Configuration, observer: JournalObserver? = nil
    ) {
        self.authorizeLive = authorizeLive
        self.driver = driver
        self.journal = journal
        self.transport = transport
        self.link = link
        self.authorize = authorize
        self.metering = metering
        self.configuration = configuration
        self.observer = observer
    }

    private func checkAlive() throws {
        if halted { throw RunnerError.halted }
    }

    // MARK: source

    /// Moves the running local instance `instanceID` to `peer` under `agreementID`; `.live` keeps
    /// it running while the hypervisors move it (libvirt on both sides, agreement granting
    /// `migrate-live`).
    public func migrate(
        instanceID: String, to peer: String, agreementID: String, migrationID: String = UUID().uuidString.lowercased(),
        region: String? = nil, networkName: String? = nil, mode: MigrationMode = .cold
    ) async throws -> Result {
        try checkAlive()
        try MigrationMessage.checkIdentifier(migrationID, "migration id")
        try MigrationMessage.checkIdentifier(agreementID, "agreement id")
        // Ids are unique across roles: a migration we receive and one we send never share work
        // files, transfer registrations or image names.
        guard try journal.sourceSnapshot(migrationID) == nil, try journal.destinationSnapshot(migrationID) == nil else {
            throw RunnerError.duplicate(migrationID)
        }
        // A live migration needs libvirt here: refused before anything is journaled or sent.
        let liveDriver = mode == .live ? try libvirt() : nil
        if mode == .live { try MigrationMessage.checkIdentifier(instanceID, "instance id") }
        let instance = try await driver.describe(instance: instanceID)
        guard instance.state == .running else {
            throw RunnerError.instance("instance \(instanceID) is \(instance.state); only a running instance is migrated")
        }
        let sizes = try await driver.listSizes()
        guard let size = sizes.first(where: { $0.id == instance.sizeID }) else {
            throw RunnerError.instance("instance \(instanceID) has no known size (\(instance.sizeID ?? "none"))")
        }
        if let liveDriver {
            let diskBytes = try await liveDriver.liveMigrationDiskBytes(instance: instanceID)
            let spec = MigratingInstanceSpec(
                name: instance.name, instanceType: size.id, vCPU: size.vCPU, memoryMiB: size.memoryMiB, diskGiB: size.diskGiB,
                imageFormats: [], canConvert: true, addresses: Array(instance.addresses.prefix(16)),
                networkName: networkName ?? instance.extra["network"], region: region)
            var machine = SourceMigration(
                migrationID: migrationID, agreementID: agreementID, peer: peer, instanceID: instanceID, spec: spec,
                configuration: configuration.migration, mode: .live, liveDiskBytes: diskBytes, now: Date())
            let first = machine.begin(now: Date())
            return Result(migrationID: migrationID, role: .source, outcome: try await runSource(&machine, first))
        }
        let exportable = Self.preferenceOrder(configuration.exportFormats, available: driver.capabilities.exportFormats)
        // A driver that cannot snapshot and export a disk (EC2 here: ExportImage is not implemented)
        // cannot be a source. Refused before anything is journaled, sent or stopped, rather than
        // after the destination reserved capacity and the proposal failed on formats.
        let verbs = driver.capabilities.verbs
        let missing = [Verb.snapshot, .exportImage].filter { !verbs.contains($0) }.map(\.rawValue)
            + (exportable.isEmpty ? ["an export format"] : [])
        guard missing.isEmpty else {
            throw RunnerError.instance(
                "the \(driver.driverName) driver cannot export disk images (it lacks \(missing.joined(separator: ", "))), "
                    + "so instance \(instanceID) cannot be migrated out")
        }
        let spec = MigratingInstanceSpec(
            name: instance.name, instanceType: size.id, vCPU: size.vCPU, memoryMiB: size.memoryMiB, diskGiB: size.diskGiB,
            imageFormats: exportable, canConvert: ImageConverter.isAvailable, addresses: Array(instance.addresses.prefix(16)),
            networkName: networkName ?? instance.extra["network"], region: region)
        var machine = SourceMigration(
            migrationID: migrationID, agreementID: agreementID, peer: peer, instanceID: instanceID, spec: spec,
            configuration: configuration.migration, now: Date())
        let first = machine.begin(now: Date())
        return Result(migrationID: migrationID, role: .source, outcome: try await runSource(&machine, first))
    }

    private func runSource(_ machine: inout SourceMigration, _ first: MigrationAction) async throws -> Outcome {
        var action = first
        var retries = 0
        let key = BusyKey(id: machine.migrationID, role: .source)
        busy.insert(key)
        defer { busy.remove(key) }
        while true {
            let snapshot = machine.snapshot
            try await journaled(
                snapshot, id: snapshot.migrationID, role: .source, peer: snapshot.peer, phase: snapshot.phase.rawValue,
                finished: snapshot.phase.isFinal, action: action)
            switch action {
            case .completed: return .completed
            case .rolledBack(let reason): return .rolledBack(reason: reason)
            case .wait: return .waiting
            case .retry(let delay, let reason):
                retries += 1
                guard retries <= configuration.maxRetriesPerRun else { return .stalled(reason: reason) }
                try await Task.sleep(for: .seconds(delay))
                action = machine.retry(now: Date())
                continue
            default: break
            }
            let result = await perform(action, migrationID: snapshot.migrationID, role: .source, peer: snapshot.peer)
            try await logResult(result, of: action, id: snapshot.migrationID, role: .source, phase: snapshot.phase.rawValue)
            if case .failed = result {} else { retries = 0 }
            action = machine.handle(result, now: Date())
        }
    }

    // MARK: destination

    /// Answers a request from `peer` (already authenticated by the transport as that bare JID).
    public func handle(_ message: MigrationMessage, from peer: String) async throws -> MigrationMessage {
        try checkAlive()
        try message.validate()
        let id = message.migrationID
        let now = Date()
        let key = BusyKey(id: id, role: .destination)
        var machine: DestinationMigration
        let first: MigrationAction
        if let stored = try journal.destinationSnapshot(id) {
            guard stored.peer == peer else {
                // Not this peer's migration: say nothing about it.
                return MigrationMessage(migrationID: id, body: .state(MigrationPeerState(phase: .unknown)))
            }
            machine = DestinationMigration(resuming: stored)
            if busy.contains(key) { return MigrationMessage(migrationID: id, body: .state(machine.peerState)) }
            first = machine.received(message, now: now)
        } else if busy.contains(key) {
            // A first proposal for this id is being handled and has not been journaled yet.
            return MigrationMessage(migrationID: id, body: .state(MigrationPeerState(phase: .authorizing)))
        } else if case .status = message.body, let source = try journal.sourceSnapshot(id), source.peer == peer {
            // The destination asks about a migration this broker runs as the source.
            return MigrationMessage(migrationID: id, body: .state(MigrationPeerState(phase: .unknown, sourcePhase: source.phase)))
        } else if case .propose = message.body, try journal.sourceSnapshot(id) != nil {
            // A peer proposing the id of one of our own outgoing migrations would share its work
            // folder, transfer registration and image name: refused, whoever the peer is.
            throw MigrationMessageError("migration id \(id) is already in use here; propose another id")
        } else if case .propose(let proposal) = message.body {
            machine = DestinationMigration(
                migrationID: id, peer: peer, proposal: proposal, configuration: configuration.migration, now: now)
            first = machine.begin(now: now)
        } else {
            // An unknown migration has nothing reserved here.
            return MigrationMessage(migrationID: id, body: .state(MigrationPeerState(phase: .unknown)))
        }
        busy.insert(key)
        defer { busy.remove(key) }
        let (reply, _) = try await runDestination(&machine, first)
        return reply ?? MigrationMessage(migrationID: id, body: .state(machine.peerState))
    }

    private func runDestination(_ machine: inout DestinationMigration, _ first: MigrationAction) async throws -> (MigrationMessage?, Outcome) {
        var action = first
        var retries = 0
        while true {
            let snapshot = machine.snapshot
            try await journaled(
                snapshot, id: snapshot.migrationID, role: .destination, peer: snapshot.peer, phase: snapshot.phase.rawValue,
                finished: snapshot.phase.isFinal, action: action)
            switch action {
            case .reply(let message):
                let outcome: Outcome =
                    switch snapshot.phase {
                    case .completed: .completed
                    case .rolledBack: .rolledBack(reason: snapshot.rollbackReason ?? "rolled back")
                    default: .waiting
                    }
                return (message, outcome)
            case .completed: return (nil, .completed)
            case .rolledBack(let reason): return (nil, .rolledBack(reason: reason))
            case .wait: return (nil, .waiting)
            case .retry(let delay, let reason):
                retries += 1
                guard retries <= configuration.maxRetriesPerRun else {
                    throw RunnerError.peer("migration \(snapshot.migrationID) stalled: \(reason)")
                }
                try await Task.sleep(for: .seconds(delay))
                action = machine.retry(now: Date())
                continue
            default: break
            }
            let result = await perform(action, migrationID: snapshot.migrationID, role: .destination, peer: snapshot.peer)
            try await logResult(result, of: action, id: snapshot.migrationID, role: .destination, phase: snapshot.phase.rawValue)
            if case .failed = result {} else { retries = 0 }
            action = machine.handle(result, now: Date())
        }
    }

    // MARK: resume

    /// Applies the resume rule to every unfinished migration in the journal, source and destination.
    /// Destination migrations go first, so that a source resumed in the same process finds its peer
    /// (when both ends are local, as in tests) already settled.
    public func resume() async throws -> [Result] {
        try checkAlive()
        var results: [Result] = []
        let unfinished = try journal.unfinished().sorted { ($0.role == .destination ? 0 : 1) < ($1.role == .destination ? 0 : 1) }
        for (id, role) in unfinished where !busy.contains(BusyKey(id: id, role: role)) {
            switch role {
            case .source:
                guard let stored = try journal.sourceSnapshot(id) else { continue }
                var machine = SourceMigration(resuming: stored)
                let first = machine.resume(now: Date())
                results.append(Result(migrationID: id, role: .source, outcome: try await runSource(&machine, first)))
            case .destination:
                guard let stored = try journal.destinationSnapshot(id) else { continue }
                var machine = DestinationMigration(resuming: stored)
                let first = machine.resume(now: Date())
                busy.insert(BusyKey(id: id, role: .destination))
                defer { busy.remove(BusyKey(id: id, role: .destination)) }
                // A reply produced here has no one waiting for it: the source asks again.
                let (_, outcome) = try await runDestination(&machine, first)
                results.append(Result(migrationID: id, role: .destination, outcome: outcome))
            }
        }
        return results
    }

    /// Releases destination reservations unused for their `reservationTimeout`, or at once when
    /// the transfer announced for them failed for good (`ImageTransport.transferFailure`); the
    /// broker calls it periodically.
    public func expireReservations(now: Date = Date()) async throws -> [Result] {
        try checkAlive()
        var results: [Result] = []
        for (id, role) in try journal.unfinished() where role == .destination {
            // Asked first: the snapshot and `busy` are read after the last suspension point.
            let transferFailure = await transport.transferFailure(migrationID: id)
            guard !busy.contains(BusyKey(id: id, role: role)), let stored = try journal.destinationSnapshot(id) else { continue }
            var machine = DestinationMigration(resuming: stored)
            guard let first = machine.expire(now: now, transferFailure: transferFailure) else { continue }
            busy.insert(BusyKey(id: id, role: .destination))
            defer { busy.remove(BusyKey(id: id, role: .destination)) }
            let (_, outcome) = try await runDestination(&machine, first)
            results.append(Result(migrationID: id, role: .destination, outcome: outcome))
        }
        return results
    }

    /// Destination side: asks the source about every migration that waits on it for too long, and
    /// acts on the answer (`DestinationMigration.sourceAnswered`):
    ///
    /// - a reservation held for `reservationCheckInterval`: released when the source rolled back
    ///   (its `abort` was lost, and waiting for `reservationTimeout` would keep the capacity for nothing);
    /// - a started copy waiting `startedCheckInterval` for `cutover` or `abort`: completed when the
    ///   source cut over, terminated when the source rolled back (its copy runs again).
    ///
    /// A source that does not answer, or is still at work, is asked again an interval later; the
    /// destination never decides alone. The answer and the decision are journaled as a step before
    /// anything is done. The broker calls it periodically.
    public func checkWaitsOnSource(now: Date = Date()) async throws -> [Result] {
        try checkAlive()
        guard let link else { return [] }
        var results: [Result] = []
        for (id, role) in try journal.unfinished() where role == .destination && !busy.contains(BusyKey(id: id, role: role)) {
            guard let stored = try journal.destinationSnapshot(id), DestinationMigration(resuming: stored).waitsOnSource else { continue }
            let interval = stored.phase == .started ? configuration.startedCheckInterval : configuration.reservationCheckInterval
            guard now.timeIntervalSince(stored.phaseEnteredAt) >= interval,
                  now.timeIntervalSince(sourceChecks[id] ?? .distantPast) >= interval
            else { continue }
            sourceChecks[id] = now
            let waiting = stored.phase == .started ? "its copy runs and waits for cutover" : "holding a reservation"
            let answer: MigrationMessage
            do {
                answer = try await link.send(MigrationMessage(migrationID: id, body: .status), to: stored.peer)
                try answer.validate()
            } catch {
                // Unreachable is no reason to act: the source may be restarting, or its link down.
                if stored.phase == .started {
                    logger.warning("migration \(id): \(waiting); the source \(stored.peer) did not answer status (\(error)); asking again later")
                } else {
                    logger.debug("migration \(id): asking the source about the reservation failed: \(error)")
                }
                continue
            }
            // The state may have moved while the question was out (the source's cutover or abort arrived).
            guard answer.migrationID == id, case .state(let state) = answer.body, !busy.contains(BusyKey(id: id, role: .destination)),
                  let current = try journal.destinationSnapshot(id)
            else { continue }
            let sourcePhase = state.sourcePhase?.rawValue ?? "no record"
            var machine = DestinationMigration(resuming: current)
            guard let first = machine.sourceAnswered(state, now: Date()) else {
                if current.phase == .started {
                    logger.info("migration \(id): \(waiting); the source is \(sourcePhase); asking again later")
                }
                continue
            }
            // The decision is on disk before it is acted on (then each step is journaled as usual).
            let decision = machine.phase == .completing ? "completing: the source cut over" : "rolling back: the source rolled back"
            // Taken before the journal write, which suspends: nothing else may run this migration meanwhile.
            busy.insert(BusyKey(id: id, role: .destination))
            defer { busy.remove(BusyKey(id: id, role: .destination)) }
            try await journal.log(
                migrationID: id, role: .destination, phase: current.phase.rawValue, step: "source status", outcome: "answered",
                detail: "source \(sourcePhase) while \(current.phase.rawValue); \(decision)", now: Date())
            logger.notice("migration \(id): the source \(stored.peer) is \(sourcePhase) while \(waiting); \(decision)")
            sourceChecks[id] = nil
            let (_, outcome) = try await runDestination(&machine, first)
            results.append(Result(migrationID: id, role: .destination, outcome: outcome))
        }
        return results
    }

    // MARK: journal

    private func journaled<S: Encodable & Sendable>(
        _ snapshot: S, id: String, role: MigrationRole, peer: String, phase: String, finished: Bool, action: MigrationAction
    ) async throws {
        try checkAlive()
        let (step, outcome) = Self.describe(action)
        try await journal.save(
            snapshot, migrationID: id, role: role, peer: peer, phase: phase, finished: finished, step: step,
            outcome: outcome, detail: Self.detail(of: action), now: Date())
        logger.debug("migration \(id) \(role.rawValue) \(phase): \(step) \(outcome)")
        guard let observer else { return }
        do {
            try await observer(JournalEvent(migrationID: id, role: role, phase: phase, step: step))
        } catch {
            halted = true
            throw error
        }
    }

    private func logResult(_ result: StepResult, of action: MigrationAction, id: String, role: MigrationRole, phase: String) async throws {
        let (step, _) = Self.describe(action)
        let (outcome, detail): (String, String) =
            switch result {
            case .failed(let reason): ("failed", reason)
            case .answer(let message): ("answered", message.kind)
            case .authorized(let decision): (decision.isAllowed ? "succeeded" : "failed", decision.isAllowed ? "allowed" : decision.reasons.map(\.description).joined(separator: "; "))
            case .stopped(let gracefully): ("succeeded", gracefully ? "stopped" : "grace period over")
            case .image(let image): ("succeeded", "image \(image.id)")
            case .file(let file): ("succeeded", "\(file.name) \(file.format) \(file.bytes) bytes sha256 \(file.sha256)")
            case .instance(let instance): ("succeeded", "instance \(instance.id) \(instance.state)")
            case .offer: ("succeeded", "offer prepared")
            case .inventory(let inventory): ("succeeded", "\(inventory.sizes.count) sizes")
            case .liveTarget(let target): ("succeeded", "live target \(target.uri) disk \(target.diskPath)")
            case .presence(let presence): ("succeeded", "guest \(presence.rawValue)")
            case .done: ("succeeded", "")
            }
        try await journal.log(migrationID: id, role: role, phase: phase, step: step, outcome: outcome, detail: detail, now: Date())
    }

    static func describe(_ action: MigrationAction) -> (step: String, outcome: String) {
        switch action {
        case .authorize: ("authorize", "issued")
        case .send(let message): ("send \(message.kind)", "issued")
        case .reply(let message): ("reply \(message.kind)", "issued")
        case .driver(let operation): ("driver \(operationName(operation))", "issued")
        case .transport(let operation): ("transport \(transportName(operation))", "issued")
        case .metering: ("metering handoff", "issued")
        case .retry: ("retry", "waiting")
        case .wait: ("wait for peer", "waiting")
        case .completed: ("finish", "completed")
        case .rolledBack: ("finish", "rolled-back")
        }
    }

    static func detail(of action: MigrationAction) -> String {
        switch action {
        case .retry(_, let reason), .rolledBack(let reason): reason
        case .send(let message), .reply(let message):
            if case .abort(let reason) = message.body { reason } else { "" }
        case .driver(let operation): "\(operation)"
        default: ""
        }
    }

    static func operationName(_ operation: MigrationOperation) -> String {
        switch operation {
        case .shutdown: "shutdown"
        case .destroy: "destroy"
        case .snapshot: "snapshot"
        case .export: "export"
        case .convert: "convert"
        case .start: "start"
        case .terminate: "terminate"
        case .deregisterImages: "deregister-image"
        case .removeFiles: "remove-files"
        case .inspect: "inspect"
        case .importImage: "import"
        case .create: "create"
        case .terminateInstances: "terminate-instances"
        case .prepareLive: "prepare-live"
        case .migrateLive: "migrate-live"
        case .probeGuest: "probe-guest"
        case .confirmLive: "confirm-live"
        case .discardLiveTarget: "discard-live-target"
        }
    }

    static func transportName(_ operation: TransportOperation) -> String {
        switch operation {
        case .prepareOffer: "prepare-offer"
        case .receive: "receive"
        case .withdraw: "withdraw-offer"
        case .send: "send"
        }
    }

    static let formatPreference: [ImageFormat] = [.raw, .qcow2, .vmdk, .vdi, .vhdx, .vpc]

    static func preferenceOrder(_ configured: [ImageFormat]?, available: Set<ImageFormat>) -> [ImageFormat] {
        (configured ?? formatPreference).filter(available.contains)
    }

    // MARK: performing actions

    func workDirectory(_ migrationID: String) throws -> URL {
        let url = configuration.workDirectory.appendingPathComponent(migrationID, isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    private func perform(_ action: MigrationAction, migrationID: String, role: MigrationRole, peer: String) async -> StepResult {
        do {
            switch action {
            case .authorize(let request, let agreementID, let mode):
                let decision = await authorize(request, peer, agreementID, Date())
                guard decision.isAllowed, mode == .live else { return .authorized(decision) }
                guard let authorizeLive else {
                    return .authorized(.denied([PolicyReason(code: "live-not-allowed", message: "this broker does not allow live migration")]))
                }
                return .authorized(await authorizeLive(role, peer, agreementID, Date()))
            case .send(let message):
                guard let link else { throw RunnerError.peer("no peer link configured") }
                let answer = try await link.send(message, to: peer)
                try answer.validate()
                guard answer.migrationID == message.migrationID else {
                    throw RunnerError.peer("answer for migration \(answer.migrationID), asked about \(message.migrationID)")
                }
                return .answer(answer)
            case .driver(let operation):
                return try await perform(operation, migrationID: migrationID)
            case .transport(let operation):
                return try await perform(operation, migrationID: migrationID, role: role)
            case .metering(let change):
                if let metering { try await metering.apply(change, at: Date()) }
                return .done
            case .reply, .retry, .wait, .completed, .rolledBack:
                return .done
            }
        } catch {
            return .failed("\(error)")
        }
    }

    private func perform(_ operation: TransportOperation, migrationID: String, role: MigrationRole) async throws -> StepResult {
        switch operation {
        case .prepareOffer(let id, let maximumBytes):
            return .offer(try await transport.prepareOffer(migrationID: id, maximumBytes: maximumBytes))
        case .receive(let offer, let format):
            let staged = try workDirectory(migrationID).appendingPathComponent("\(migrationID).received.\(format.rawValue)")
            if !FileManager.default.fileExists(atPath: staged.path) {
                let received = try await transport.receivedFile(for: offer)
                try FileManager.default.moveItem(at: received.url, to: staged)
                if received.hashedAsStored {
                    // This broker hashed the bytes as it stored them: reading 1 GiB back is no more evidence.
                    return .file(StagedFile(name: staged.lastPathComponent, format: format, bytes: received.bytes, sha256: received.sha256))
                }
            }
            // Hashed here, by the destination itself: a transport's figure it did not compute is
            // not evidence, nor is a file staged before a restart.
            let digest = try await FileDigest.sha256(of: staged)
            return .file(StagedFile(name: staged.lastPathComponent, format: format, bytes: digest.bytes, sha256: digest.sha256))
        case .withdraw(let id):
            try await transport.withdraw(migrationID: id)
            return .done
        case .send(let file, let offer):
            let url = try workDirectory(migrationID).appendingPathComponent(file.name)
            let journal = self.journal
            let throttle = ProgressThrottle()
            try await transport.send(file: url, to: offer) { progress in
                guard throttle.shouldRecord(progress) else { return }
                try? journal.recordProgress(migrationID: migrationID, role: role, progress: progress, now: Date())
            }
            return .done
        }
    }

    private func perform(_ operation: MigrationOperation, migrationID: String) async throws -> StepResult {
        switch operation {
        case .shutdown(let id, let gracePeriod):
            let instance = try await driver.describe(instance: id)
            if instance.state == .stopped { return .stopped(gracefully: true) }
            if instance.state != .stopping { _ = try await driver.shutdown(id) }
            do {
                try await driver.waitFor(instance: id, state: [.stopped], timeout: .seconds(gracePeriod), pollInterval: .milliseconds(50))
                return .stopped(gracefully: true)
            } catch let error as ProviderError where error.code == .timeout {
                return .stopped(gracefully: false)
            }
        case .destroy(let id):
            let instance = try await driver.describe(instance: id)
            if instance.state != .stopped {
                if driver.capabilities.supports(.destroy) {
                    _ = try await driver.destroy(id)
                } else if instance.state != .stopping {
                    // No forced power-off (OpenStack): the cloud's own stop powers the guest off
                    // after its shutdown timeout, so ask again if it is not stopping and wait.
                    _ = try await driver.shutdown(id)
                }
            }
            try await driver.waitFor(
                instance: id, state: [.stopped], timeout: .seconds(driver.capabilities.supports(.destroy) ? 60 : 300),
                pollInterval: .milliseconds(50))
            return .stopped(gracefully: false)
        case .snapshot(let id, let name):
            if let existing = try await driver.listImages().first(where: { $0.name == name }) { return .image(existing) }
            return .image(try await driver.snapshot(instance: id, name: name, progress: nil))
        case .export(let imageID, let format, let fileName):
            let url = try workDirectory(migrationID).appendingPathComponent(fileName)
            let file = try await driver.exportImage(id: imageID, to: url, format: format, progress: nil)
            return .file(StagedFile(name: fileName, format: file.format, bytes: file.fileBytes, sha256: file.fileSHA256))
        case .convert(let source, let format, let fileName):
            let directory = try workDirectory(migrationID)
            let output = directory.appendingPathComponent(fileName)
            try await ImageConverter.convert(directory.appendingPathComponent(source.name), from: source.format, to: output, format: format)
            let digest = try await FileDigest.sha256(of: output)
            return .file(StagedFile(name: fileName, format: format, bytes: digest.bytes, sha256: digest.sha256))
        case .start(let id):
            var instance = try await driver.describe(instance: id)
            if instance.state == .running { return .instance(instance) }
            if [.stopped, .saved, .paused].contains(instance.state) {
                instance = try await driver.perform(instance.state == .paused ? .resume : .start, instance: id)
            }
            return .instance(try await driver.waitFor(
                instance: id, state: [.running], timeout: configuration.bootTimeout, pollInterval: .milliseconds(50)))
        case .terminate(let id):
            do { try await driver.terminate(instance: id) } catch let error as ProviderError where error.code == .notFound {}
            try await driver.waitFor(instance: id, state: [.terminated], timeout: .seconds(120), pollInterval: .milliseconds(50))
            return .done
        case .deregisterImages(let name):
            for image in try await driver.listImages() where image.name == name {
                do { try await driver.deregisterImage(id: image.id) } catch let error as ProviderError where error.code == .notFound {}
            }
            return .done
        case .removeFiles(let names):
            let directory = try workDirectory(migrationID)
            for name in names {
                let url = directory.appendingPathComponent(name)
                if FileManager.default.fileExists(atPath: url.path) { try FileManager.default.removeItem(at: url) }
            }
            return .done
        case .inspect:
            // A driver that imports no disk image (EC2 against an endpoint without ImportImage) cannot
            // receive one: say so, instead of the vaguer "no common image format" after the inventory.
            guard driver.capabilities.verbs.contains(.importImage), !driver.capabilities.importFormats.isEmpty else {
                throw RunnerError.instance("the \(driver.driverName) driver here cannot import disk images (no importImage)")
            }
            let sizes = try await driver.listSizes()
            var capacity = try await driver.capacity()
            // Capacity promised to other migrations that have not created their instance yet.
            for sizeID in try journal.reservedSizeIDs(excluding: migrationID) {
                guard let size = sizes.first(where: { $0.id == sizeID }) else { continue }
                capacity.usedInstances += 1
                capacity.usedVCPU += size.vCPU
                capacity.usedMemoryMiB += size.memoryMiB
            }
            return .inventory(DestinationInventory(
                sizes: sizes, capacity: capacity,
                importFormats: Self.preferenceOrder(configuration.importFormats, available: driver.capabilities.importFormats),
                region: configuration.region, networkMap: configuration.networkMap, defaultNetwork: configuration.defaultNetwork,
                driverName: driver.driverName, acceptsLiveMigration: driver is any LiveMigrationDriver))
        case .importImage(let file, let name, let maxVirtualSizeBytes):
            let url = try workDirectory(migrationID).appendingPathComponent(file.name)
            let image: Image
            if let existing = try await driver.listImages().first(where: { $0.name == name }) {
                image = existing
            } else {
                // The received file is ours to give: a driver that can take it over saves a copy.
                // `file.sha256` was computed by this broker from the received bytes (above).
                // A peer's file: every check, and no disk larger than the size reserved for it.
                image = try await driver.adoptImage(
                    from: url, name: name, format: file.format, expectedSHA256: file.sha256, digestVerified: true,
                    admission: ImageAdmission(maxVirtualSizeBytes: maxVirtualSizeBytes), progress: nil)
            }
            // The driver holds the image now; the received copy is no longer needed.
            try? FileManager.default.removeItem(at: url)
            return .image(image)
        case .create(let name, let sizeID, let imageID, let extra):
            if let existing = try await driver.listInstances().first(where: {
                $0.imageID == imageID && $0.name == name && $0.state != .terminating && $0.state != .terminated
            }) {
                return .instance(existing)
            }
            // The image was imported for this instance only: a driver that can boot from the
            // image's own file (SimCloud's `consumeImage`) needs no copy; others ignore it.
            var options = extra
            options["consumeImage"] = "true"
            return .instance(try await driver.create(
                CreateInstanceRequest(name: name, sizeID: sizeID, imageID: imageID, extra: options), progress: nil))
        case .terminateInstances(let imageName):
            let imageIDs = Set(try await driver.listImages().filter { $0.name == imageName }.map(\.id))
            for instance in try await driver.listInstances() where instance.imageID.map(imageIDs.contains) ?? false {
                do { try await driver.terminate(instance: instance.id) } catch let error as ProviderError where error.code == .notFound {}
                try await driver.waitFor(instance: instance.id, state: [.terminated], timeout: .seconds(120), pollInterval: .milliseconds(50))
            }
            return .done
        case .prepareLive(let name, _, let diskBytes):
            let target = try await libvirt().prepareLiveMigration(name: name, virtualSizeBytes: diskBytes)
            return .liveTarget(LiveMigrationOffer(
                uri: configuration.liveURI ?? target.uri, diskPath: target.disk.path, consoleLogPath: target.consoleLog.path))
        case .migrateLive(let id, let target):
            // The peer chose the URI: our hypervisor connects only where the operator allows for it.
            let peer = try journal.sourceSnapshot(migrationID)?.peer ?? ""
            let decision: LivePeerPolicy.Decision
            do { decision = try configuration.livePeers.check(uri: target.uri, peer: peer) } catch {
                throw RunnerError.peer("live migration refused: \(error.message)")
            }
            try await libvirt().migrateLive(
                instance: id,
                to: .init(uri: decision.uri, disk: URL(fileURLWithPath: target.diskPath), consoleLog: URL(fileURLWithPath: target.consoleLogPath)),
                tls: decision.tls)
            return .done
        case .probeGuest(let id):
            return .presence(try await guestPresence(id))
        case .confirmLive(let id):
            let arrived = try await driver.waitFor(
                instance: id, state: [.running], timeout: configuration.liveArrivalTimeout, pollInterval: .milliseconds(100))
            // The source's hypervisor wrote the domain that arrived: it must use the files prepared here.
            if let prepared = try journal.destinationSnapshot(migrationID)?.reservation?.live {
                try await libvirt().checkArrival(instance: id, preparedDisk: prepared.diskPath, preparedConsoleLog: prepared.consoleLogPath)
            }
            return .instance(arrived)
        case .discardLiveTarget(let id, let diskPath, let consoleLogPath):
            let presence = try await guestPresence(id)
            guard presence == .absent else {
                throw RunnerError.instance("guest \(id) is here (\(presence.rawValue)): its prepared disk stays")
            }
            let directory = try libvirt().liveTargetDirectory?.standardizedFileURL.path
            for path in [diskPath, consoleLogPath].compactMap({ $0 }) {
                // Only files this driver prepared: inside its instance directory.
                guard let directory, URL(fileURLWithPath: path).standardizedFileURL.path.hasPrefix(directory + "/") else {
                    throw RunnerError.instance("\(path) is not in this hypervisor's instance directory")
                }
                if FileManager.default.fileExists(atPath: path) { try FileManager.default.removeItem(atPath: path) }
            }
            return .done
        }
    }

    private func libvirt() throws -> any LiveMigrationDriver {
        guard let libvirt = driver as? any LiveMigrationDriver else {
            throw RunnerError.instance(
                "live migration needs libvirt on both sides; this cloud's driver is \(driver.driverName): migrate without --live (cold)")
        }
        return libvirt
    }

    /// Whether the guest is on this hypervisor, from the hypervisor itself.
    private func guestPresence(_ id: String) async throws -> GuestPresence {
        do {
            let instance = try await driver.describe(instance: id)
            switch instance.state {
            case .running: return .running
            case .terminated: return .absent
            default: return .arriving
            }
        } catch let error as ProviderError where error.code == .notFound {
            return .absent
        }
    }
}

/// Keeps the journal to a few progress rows per second. `@unchecked Sendable`: the one mutable
/// field is only touched while holding `lock`.
final class ProgressThrottle: @unchecked Sendable {
    private let lock = NSLock()
    private var lastRecorded: Date?

    func shouldRecord(_ progress: TransferProgress) -> Bool {
        lock.withLock {
            let now = Date()
            let final = progress.totalBytes.map { progress.bytes >= $0 } ?? false
            if !final, let lastRecorded, now.timeIntervalSince(lastRecorded) < 0.25 { return false }
            lastRecorded = now
            return true
        }
    }
}
