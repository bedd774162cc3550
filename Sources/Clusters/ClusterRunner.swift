import Federation
import Foundation
import Logging
import Providers
import Storage
import Trust

/// The thin IO layer of clusters: plans a definition against the driver and the templates, and
/// performs the actions of `Cluster` with the cloud driver and, for peer members, a
/// `ClusterPeerPlacement`.
///
/// Before every action the machine's snapshot and the step are written to the journal (SQLite,
/// `synchronous = FULL`) in one transaction, so nothing is performed that a restart would not
/// know about; `resume` finishes what a killed process left (a launch, a rollback, a teardown).
/// Each request runs to the end before it returns: a failed remove step is retried after
/// `retryInterval` until it succeeds or the cluster is left stalled.
public actor ClusterRunner {
    /// Journal writes wait for their fsync on the storage thread, not on a cooperative one.
    public nonisolated var unownedExecutor: UnownedSerialExecutor { StorageExecutor.shared.asUnownedSerialExecutor() }

    public struct Configuration: Sendable {
        public var cluster: Cluster.Configuration
        /// How often the driver is asked whether an instance reached the state waited for.
        public var pollInterval: Duration

        public init(cluster: Cluster.Configuration = .init(), pollInterval: Duration = .milliseconds(500)) {
            self.cluster = cluster
            self.pollInterval = pollInterval
        }
    }

    /// A journal write or a finished step, reported to the observer.
    public struct JournalEvent: Sendable, Hashable {
        public enum Stage: String, Sendable, Hashable {
            /// The snapshot was committed; the action is about to be performed.
            case journaled
            /// The action was performed; its result is not yet journaled.
            case performed
        }

        public var clusterID: String
        public var unit: String?
        public var phase: Cluster.Phase
        /// The action (`create`, `await-running`, `terminate`, ...).
        public var step: String
        public var stage: Stage
    }

    /// Called at each `JournalEvent`. If it throws, the runner stops on the spot and refuses all
    /// further work, exactly as if the process died there (what the crash tests use).
    public typealias JournalObserver = @Sendable (JournalEvent) async throws -> Void

    /// One line of progress for the operator: a step about to be performed, or a step's result.
    public struct Progress: Sendable, Hashable, CustomStringConvertible {
        public var cluster: String
        public var unit: String?
        public var phase: Cluster.Phase
        public var message: String
        public var description: String { "\(cluster)\(unit.map { " \($0)" } ?? ""): \(message)" }
    }

    public typealias ProgressHandler = @Sendable (Progress) -> Void

    private let driver: (any CloudDriver)?
    private let peers: (any ClusterPeerPlacement)?
    public nonisolated let journal: ClusterJournal
    private let configuration: Configuration
    private let audit: AuditLog?
    private let logger: Logger
    private let progress: ProgressHandler?
    private let observer: JournalObserver?
    private var machines: [String: Cluster] = [:]
    /// Clusters a request is acting on; a second request on one of them is refused.
    private var busy: Set<String> = []
    private var halted = false

    /// `driver` is nil when this broker drives no cloud (peer members only); `peers` is nil when
    /// peer members cannot be placed (the definition is then refused if it has any).
    public init(
        driver: (any CloudDriver)?, peers: (any ClusterPeerPlacement)? = nil, journal: ClusterJournal, configuration: Configuration = .init(),
        audit: AuditLog? = nil, logger: Logger = Logger(label: "intercloud.clusters"), progress: ProgressHandler? = nil,
        observer: JournalObserver? = nil
    ) {
        self.driver = driver
        self.peers = peers
        self.journal = journal
        self.configuration = configuration
        self.audit = audit
        self.logger = logger
        self.progress = progress
        self.observer = observer
    }

    // MARK: requests

    /// Checks `definition` against the templates and the driver, then launches it: units in
    /// launch order, each running before the next is created; a failure rolls back what was
    /// created. Returns the final status (`running`, or `failed` with the reason). Refused, with
    /// nothing created, when a template, size or image is missing, parameters are invalid, a peer
    /// member cannot be placed, or a cluster of that name exists.
    public func launch(_ definition: ClusterDefinition, templates: [ServerTemplate]) async throws(ClusterError) -> ClusterStatus {
        try checkRunning()
        let clusterID = "cl-" + RandomIdentifier.hex(bytes: 6)
        let units = try await plan(definition, templates: templates, clusterID: clusterID)
        let now = Date()
        var machine = Cluster(
            clusterID: clusterID, name: definition.name, source: definition.source, units: units, configuration: configuration.cluster, now: now)
        let action = machine.launch(now: now)
        busy.insert(clusterID)
        defer { busy.remove(clusterID) }
        do {
            try journal.save(
                machine.snapshot, step: Self.journalStep(action, machine.phase), detail: "launch \(definition.name) (\(units.count) servers)",
                insert: true, now: now)
        } catch let error as ClusterError { throw error } catch { throw .journal("\(error)") }
        machines[clusterID] = machine
        report(machine, unit: nil, "launching \(units.count) server(s): \(units.map(\.key).joined(separator: ", "))")
        report(machine, unit: Self.unit(of: action), Self.describe(action))
        try await observe(clusterID, action, machine.phase, .journaled)
        try await run(clusterID, from: action, request: "launch", phaseBefore: nil)
        return try status(clusterID: clusterID)
    }

    /// Stops every local server, last launched first.
    public func stop(name: String) async throws(ClusterError) -> ClusterStatus {
        try await request(name, "stop") { machine, now throws(ClusterError) in try machine.stop(now: now) }
    }

    /// Starts every stopped local server, first launched first.
    public func start(name: String) async throws(ClusterError) -> ClusterStatus {
        try await request(name, "start") { machine, now throws(ClusterError) in try machine.start(now: now) }
    }

    /// Removes every server, last launched first (idempotent).
    public func teardown(name: String) async throws(ClusterError) -> ClusterStatus {
        try await request(name, "teardown") { machine, now in machine.teardown(now: now) }
    }

    /// Finishes the step under way of every cluster that has one (after a restart).
    @discardableResult
    public func resume() async throws(ClusterError) -> [ClusterStatus] {
        try checkRunning()
        let ids: [String]
        do { ids = try journal.unsettled() } catch { throw .journal("\(error)") }
        var result: [ClusterStatus] = []
        for id in ids where !busy.contains(id) {
            guard let name = try load(id)?.name else { continue }
            result.append(try await resume(name: name))
        }
        return result
    }

    /// Finishes the step under way of cluster `name`, if it has one.
    public func resume(name: String) async throws(ClusterError) -> ClusterStatus {
        try await request(name, "resume", fresh: true) { machine, now in machine.resume(now: now) }
    }

    public func status(name: String) throws(ClusterError) -> ClusterStatus {
        try status(clusterID: try clusterID(name))
    }

    /// Every cluster, newest first.
    public func list() throws(ClusterError) -> [ClusterStatus] {
        do {
            return try journal.snapshots().map { try status(of: $0) }
        } catch let error as ClusterError { throw error } catch { throw .journal("\(error)") }
    }

    // MARK: planning

    /// The units of `definition` in launch order, with every local member's template rendered and
    /// its size and image resolved in the driver (as a federation provider does).
    func plan(_ definition: ClusterDefinition, templates: [ServerTemplate], clusterID: String) async throws(ClusterError) -> [Cluster.Unit] {
        let locals = definition.members.filter { $0.peer == nil }
        var sizes: [InstanceSize] = []
        var images: [Image] = []
        if !locals.isEmpty {
            guard let driver else {
                throw .refused("member \(locals[0].name) runs here, but this broker has no [provider]; give it a peer or configure a provider")
            }
            do {
                sizes = try await driver.listSizes()
                images = try await driver.listImages()
            } catch { throw .refused("the cloud could not be asked for sizes and images: \(Self.describe(error))") }
        }
        var units: [Cluster.Unit] = []
        for member in definition.launchOrder {
            let placement: Cluster.Placement
            if let peer = member.peer {
                guard peers != nil else {
                    throw .refused("member \(member.name) runs at \(peer): peer members need the broker's federation service")
                }
                placement = .peer(.init(peer: peer, template: member.template, parameters: member.parameters, agreementID: member.agreement))
            } else {
                guard let template = templates.first(where: { $0.name == member.template }) else {
                    throw .refused("member \(member.name): no template named \(member.template)")
                }
                let rendered: RenderedTemplate
                do { rendered = try template.render(parameters: member.parameters) } catch {
                    throw .refused("member \(member.name): invalid parameters: \(error.description)")
                }
                guard let size = sizes.first(where: { $0.id == template.size }) else {
                    throw .refused("member \(member.name): size \(template.size) of template \(template.name) is not available")
                }
                let imageID: String
                if images.contains(where: { $0.id == template.image }) {
                    imageID = template.image
                } else {
                    let named = images.filter { $0.name == template.image }
                    guard named.count == 1 else {
                        throw .refused(
                            named.isEmpty ? "member \(member.name): image \(template.image) of template \(template.name) is not available"
                                : "member \(member.name): image name \(template.image) is ambiguous (\(named.count) images)")
                    }
                    imageID = named[0].id
                }
                var extra: [String: String] = [:]
                if let userData = rendered.userData { extra["userData"] = userData }
                placement = .local(CreateInstanceRequest(name: "", sizeID: size.id, imageID: imageID, extra: extra))
            }
            for index in 1...member.count {
                units.append(Cluster.unit(
                    clusterID: clusterID, clusterName: definition.name, member: member.name, index: index, template: member.template, placement: placement,
                    bootTimeout: member.bootTimeout))
            }
        }
        return units
    }

    // MARK: the action loop

    private func request(
        _ name: String, _ request: String, fresh: Bool = false, _ event: (inout Cluster, Date) throws(ClusterError) -> Cluster.Action
    ) async throws(ClusterError) -> ClusterStatus {
        try checkRunning()
        let id = try clusterID(name)
        guard !busy.contains(id) else { throw .busy(name) }
        busy.insert(id)
        defer { busy.remove(id) }
        // A resume starts from what the journal says, not from what this process last knew.
        if fresh { machines[id] = nil }
        guard var machine = try load(id) else { throw .unknownCluster(name) }
        if request != "resume" && request != "teardown" && !machine.phase.isSettled {
            throw .invalidState("cluster \(name) is \(machine.phase.rawValue): resume it first (intercloud cluster resume \(name))")
        }
        let before = machine.phase
        let now = Date()
        let action = try event(&machine, now)
        if action != .none || machine.snapshot != machines[id]?.snapshot {
            try await commit(id, machine, action, detail: request, request: request, phaseBefore: before)
        }
        try await run(id, from: action, request: request, phaseBefore: before)
        return try status(clusterID: id)
    }

    /// Performs `action` and every action that follows from it, waiting out retries, until the
    /// machine has nothing left to do.
    private func run(_ id: String, from action: Cluster.Action, request: String, phaseBefore: Cluster.Phase?) async throws(ClusterError) {
        var action = action
        while true {
            guard let machine = machines[id] else { throw .unknownCluster(id) }
            if action == .none {
                guard let at = machine.snapshot.nextAttemptAt else { return }
                let wait = at.timeIntervalSinceNow
                if wait > 0 {
                    do { try await Task.sleep(for: .milliseconds(Int64(wait * 1000))) } catch { return }
                }
                var next = machine
                action = next.tick(now: Date())
                try await commit(id, next, action, detail: "retry", request: request, phaseBefore: machine.phase)
                continue
            }
            let event = await perform(action, cluster: machine.name)
            try await observe(id, action, machine.phase, .performed)
            var next = machine
            let nextAction = event.apply(&next, Date())
            report(next, unit: Self.unit(of: action), event.detail)
            // The line that journals the next step also says how the last one ended.
            let result = Self.unit(of: action).map { "\($0): \(event.detail)" } ?? event.detail
            try await commit(id, next, nextAction, detail: result, request: request, phaseBefore: machine.phase)
            action = nextAction
        }
    }

    /// Journals the machine with the step it is about to perform, then reports to the observer,
    /// the operator, and (when the cluster settles in a new phase) the audit log.
    private func commit(
        _ id: String, _ machine: Cluster, _ action: Cluster.Action, detail: String, request: String, phaseBefore: Cluster.Phase?
    ) async throws(ClusterError) {
        let now = Date()
        do { try journal.save(machine.snapshot, step: Self.journalStep(action, machine.phase), detail: detail, now: now) } catch {
            throw .journal("\(error)")
        }
        machines[id] = machine
        if action != .none { report(machine, unit: Self.unit(of: action), Self.describe(action)) }
        if machine.phase != phaseBefore, machine.phase.isSettled || machine.phase == .rollingBack {
            settled(machine, request: request, at: now)
        }
        if let stalled = machine.snapshot.stalled, action == .none {
            report(machine, unit: nil, "stalled: \(stalled); run teardown (or resume) again")
        }
        try await observe(id, action, machine.phase, .journaled)
    }

    private func settled(_ machine: Cluster, request: String, at now: Date) {
        let snapshot = machine.snapshot
        let reason = snapshot.failureReason.map { ": \($0)" } ?? ""
        report(machine, unit: nil, "\(snapshot.phase.rawValue)\(reason)")
        if snapshot.phase == .failed || snapshot.phase == .degraded || snapshot.phase == .rollingBack {
            logger.warning("cluster \(snapshot.name) is \(snapshot.phase.rawValue)\(reason)")
        } else {
            logger.info("cluster \(snapshot.name) is \(snapshot.phase.rawValue)")
        }
        guard let audit else { return }
        do {
            try audit.record(AuditEvent(
                at: now, module: "clusters", kind: "cluster.\(snapshot.phase.rawValue)", peer: "", action: request, outcome: .operator,
                reason: snapshot.phase.rawValue,
                detail: "\(snapshot.name) (\(snapshot.clusterID), \(snapshot.units.count) servers)\(reason)"))
        } catch {
            logger.error("clusters: cannot write the audit log: \(error)")
        }
    }

    /// A result, to be applied to the machine.
    private struct Event {
        var detail: String
        var apply: (inout Cluster, Date) -> Cluster.Action
    }

    /// Performs one action and returns the event it produced. Never throws: a failure is an event.
    private func perform(_ action: Cluster.Action, cluster: String) async -> Event {
        switch action {
        case .none:
            return Event(detail: "") { _, _ in .none }
        case .create(let unit, let request):
            guard let driver else { return noDriver(unit) { $0.createFailed(unit: unit, reason: $1, now: $2) } }
            do {
                let instance = try await driver.create(request, progress: nil)
                return Event(detail: "created \(instance.id)") { $0.created(unit: unit, instance, now: $1) }
            } catch {
                let reason = Self.describe(error)
                return Event(detail: "create failed: \(reason)") { $0.createFailed(unit: unit, reason: reason, now: $1) }
            }
        case .locate(let unit, let name):
            guard let driver else { return noDriver(unit) { $0.locateFailed(unit: unit, reason: $1, now: $2) } }
            do {
                let found = try await driver.listInstances().filter { $0.name == name }
                return Event(detail: "found \(found.map { "\($0.id) (\($0.state.rawValue))" })") { $0.located(unit: unit, found, now: $1) }
            } catch {
                let reason = Self.describe(error)
                return Event(detail: "listing failed: \(reason)") { $0.locateFailed(unit: unit, reason: reason, now: $1) }
            }
        case .awaitRunning(let unit, let instanceID, let deadline):
            guard let driver else { return noDriver(unit) { $0.bootFailed(unit: unit, reason: $1, now: $2) } }
            let remaining = deadline.timeIntervalSinceNow
            guard remaining > 0 else {
                return Event(detail: "boot deadline passed") { $0.bootFailed(unit: unit, reason: "not running by \(deadline)", now: $1) }
            }
            do {
                let instance = try await driver.waitFor(
                    instance: instanceID, state: .running, timeout: .milliseconds(Int64(remaining * 1000)), pollInterval: configuration.pollInterval)
                return Event(detail: "running at \(instance.addresses.joined(separator: ", "))") { $0.running(unit: unit, instance, now: $1) }
            } catch {
                let reason = Self.describe(error)
                return Event(detail: "did not run: \(reason)") { $0.bootFailed(unit: unit, reason: reason, now: $1) }
            }
        case .place(let unit, let serviceID, let selection, let deadline):
            guard let peers else {
                return Event(detail: "no peer placement") { $0.placeFailed(unit: unit, reason: "peer members need the broker's federation service", now: $1) }
            }
            let remaining = max(1, deadline.timeIntervalSinceNow)
            do {
                let outcome = try await peers.place(serviceID: serviceID, selection: selection, timeout: .milliseconds(Int64(remaining * 1000)))
                if let token = outcome.token {
                    // Stored nowhere: this is the only time the operator sees it.
                    progress?(Progress(
                        cluster: cluster, unit: unit, phase: .launching, message: "service \(serviceID) token \(token) (shown once; renew with intercloud services renew \(serviceID))"))
                }
                return Event(detail: "active at \(outcome.endpoint ?? "?")") { $0.placed(unit: unit, endpoint: outcome.endpoint, now: $1) }
            } catch {
                let reason = Self.describe(error)
                return Event(detail: "selection failed: \(reason)") { $0.placeFailed(unit: unit, reason: reason, now: $1) }
            }
        case .release(let unit, let serviceID, let peer):
            guard let peers else {
                return Event(detail: "no peer placement") { $0.releaseFailed(unit: unit, reason: "peer members need the broker's federation service", now: $1) }
            }
            do {
                try await peers.release(serviceID: serviceID, peer: peer)
                return Event(detail: "ended \(serviceID) at \(peer)") { $0.released(unit: unit, now: $1) }
            } catch {
                let reason = Self.describe(error)
                return Event(detail: "ending failed: \(reason)") { $0.releaseFailed(unit: unit, reason: reason, now: $1) }
            }
        case .stop(let unit, let instanceID, let deadline):
            guard let driver else { return noDriver(unit) { $0.stopFailed(unit: unit, reason: $1, now: $2) } }
            do {
                // Looked at first: after a restart the shutdown may already be done.
                if try await driver.describe(instance: instanceID).state != .stopped {
                    _ = try await driver.perform(.shutdown, instance: instanceID)
                    try await driver.waitFor(
                        instance: instanceID, state: .stopped, timeout: .milliseconds(Int64(max(0.001, deadline.timeIntervalSinceNow) * 1000)),
                        pollInterval: configuration.pollInterval)
                }
                return Event(detail: "stopped \(instanceID)") { $0.stopped(unit: unit, now: $1) }
            } catch {
                let reason = Self.describe(error)
                return Event(detail: "stop failed: \(reason)") { $0.stopFailed(unit: unit, reason: reason, now: $1) }
            }
        case .start(let unit, let instanceID, let deadline):
            guard let driver else { return noDriver(unit) { $0.startFailed(unit: unit, reason: $1, now: $2) } }
            do {
                var instance = try await driver.describe(instance: instanceID)
                if instance.state != .running {
                    _ = try await driver.start(instanceID)
                    instance = try await driver.waitFor(
                        instance: instanceID, state: .running, timeout: .milliseconds(Int64(max(0.001, deadline.timeIntervalSinceNow) * 1000)),
                        pollInterval: configuration.pollInterval)
                }
                let running = instance
                return Event(detail: "running at \(running.addresses.joined(separator: ", "))") { $0.started(unit: unit, running, now: $1) }
            } catch {
                let reason = Self.describe(error)
                return Event(detail: "start failed: \(reason)") { $0.startFailed(unit: unit, reason: reason, now: $1) }
            }
        case .terminate(let unit, let instanceID):
            guard let driver else { return noDriver(unit) { $0.terminateFailed(unit: unit, reason: $1, now: $2) } }
            do {
                try await driver.terminate(instance: instanceID)
                return Event(detail: "terminated \(instanceID)") { $0.terminated(unit: unit, now: $1) }
            } catch let error as ProviderError where error.code == .notFound {
                return Event(detail: "\(instanceID) already gone") { $0.terminated(unit: unit, now: $1) }
            } catch {
                let reason = Self.describe(error)
                return Event(detail: "terminate failed: \(reason)") { $0.terminateFailed(unit: unit, reason: reason, now: $1) }
            }
        }
    }

    private func noDriver(_ unit: String, _ fail: @escaping (inout Cluster, String, Date) -> Cluster.Action) -> Event {
        let reason = "this broker has no [provider] to drive"
        return Event(detail: reason) { fail(&$0, reason, $1) }
    }

    // MARK: helpers

    private func clusterID(_ name: String) throws(ClusterError) -> String {
        let id: String?
        do { id = try journal.clusterID(named: name) } catch { throw .journal("\(error)") }
        guard let id else { throw .unknownCluster(name) }
        return id
    }

    private func load(_ id: String) throws(ClusterError) -> Cluster? {
        if let machine = machines[id] { return machine }
        let stored: Cluster.Snapshot?
        do { stored = try journal.snapshot(id) } catch { throw .journal("\(error)") }
        guard let stored else { return nil }
        let machine = Cluster(resuming: stored)
        machines[id] = machine
        return machine
    }

    private func status(clusterID id: String) throws(ClusterError) -> ClusterStatus {
        guard let machine = try load(id) else { throw .unknownCluster(id) }
        return try status(of: machine.snapshot)
    }

    private func status(of snapshot: Cluster.Snapshot) throws(ClusterError) -> ClusterStatus {
        let times: (createdAt: Date, updatedAt: Date)?
        do { times = try journal.times(snapshot.clusterID) } catch { throw .journal("\(error)") }
        return ClusterStatus(snapshot, createdAt: times?.createdAt, updatedAt: times?.updatedAt)
    }

    private func report(_ machine: Cluster, unit: String?, _ message: String) {
        guard let progress, !message.isEmpty else { return }
        progress(Progress(cluster: machine.name, unit: unit, phase: machine.phase, message: message))
    }

    private func checkRunning() throws(ClusterError) {
        if halted { throw .halted }
    }

    private func observe(_ id: String, _ action: Cluster.Action, _ phase: Cluster.Phase, _ stage: JournalEvent.Stage) async throws(ClusterError) {
        guard let observer else { return }
        do {
            try await observer(JournalEvent(clusterID: id, unit: Self.unit(of: action), phase: phase, step: Self.stepName(action, phase), stage: stage))
        } catch {
            halted = true
            throw .halted
        }
        if halted { throw .halted }
    }

    static func describe(_ error: any Error) -> String {
        (error as? ProviderError)?.description ?? String(describing: error)
    }

    static func unit(of action: Cluster.Action) -> String? {
        switch action {
        case .none: nil
        case .create(let unit, _), .locate(let unit, _), .awaitRunning(let unit, _, _), .place(let unit, _, _, _), .release(let unit, _, _),
            .stop(let unit, _, _), .start(let unit, _, _), .terminate(let unit, _):
            unit
        }
    }

    /// A journal line's step: the action and its unit (`create web-1`), or the phase.
    static func journalStep(_ action: Cluster.Action, _ phase: Cluster.Phase) -> String {
        stepName(action, phase) + (unit(of: action).map { " \($0)" } ?? "")
    }

    /// The action's name; with nothing to perform, the phase the cluster rests in.
    static func stepName(_ action: Cluster.Action, _ phase: Cluster.Phase) -> String {
        switch action {
        case .none: phase.rawValue
        case .create: "create"
        case .locate: "locate"
        case .awaitRunning: "await-running"
        case .place: "place"
        case .release: "release"
        case .stop: "stop"
        case .start: "start"
        case .terminate: "terminate"
        }
    }

    static func describe(_ action: Cluster.Action) -> String {
        switch action {
        case .none: ""
        case .create(_, let request): "create \(request.name) (\(request.sizeID), \(request.imageID))"
        case .locate(_, let name): "look up \(name)"
        case .awaitRunning(_, let id, _): "wait until \(id) runs"
        case .place(_, let serviceID, let selection, _): "select \(selection.template) at \(selection.peer) as \(serviceID)"
        case .release(_, let serviceID, let peer): "end \(serviceID) at \(peer)"
        case .stop(_, let id, _): "stop \(id)"
        case .start(_, let id, _): "start \(id)"
        case .terminate(_, let id): "terminate \(id)"
        }
    }
}

/// A cluster as operators see it (`intercloud cluster list|show`, `--output json`).
public struct ClusterStatus: Codable, Sendable, Hashable {
    public struct Server: Codable, Sendable, Hashable {
        /// `member-index`.
        public var unit: String
        public var member: String
        public var template: String
        /// The peer broker's JID, or nil for a server of this cloud.
        public var peer: String?
        public var state: Cluster.Unit.State
        /// Instance name (here) or service id (at the peer).
        public var name: String
        public var instanceID: String?
        public var addresses: [String]
        public var endpoint: String?
        public var error: String?
    }

    public var id: String
    public var name: String
    public var source: String
    public var phase: Cluster.Phase
    public var reason: String?
    public var stalled: String?
    public var createdAt: Date?
    public var updatedAt: Date?
    public var servers: [Server]

    public init(_ snapshot: Cluster.Snapshot, createdAt: Date? = nil, updatedAt: Date? = nil) {
        id = snapshot.clusterID
        name = snapshot.name
        source = snapshot.source
        phase = snapshot.phase
        reason = snapshot.failureReason
        stalled = snapshot.stalled
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        servers = snapshot.units.map { unit in
            Server(
                unit: unit.key, member: unit.member, template: unit.template, peer: unit.peer, state: unit.state, name: unit.name,
                instanceID: unit.instanceID, addresses: unit.addresses, endpoint: unit.endpoint, error: unit.lastError)
        }
    }
}
