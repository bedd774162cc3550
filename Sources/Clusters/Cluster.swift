import Crypto
import Foundation
import Providers

/// One cluster's life as a value type with no IO and no clock: every input is a `mutating func`
/// taking `now` and returning the one `Action` the caller performs, then reports back through the
/// matching event (`created`, `running`, `terminated`, ...).
///
/// A cluster is a list of **units** in launch order (a member with `count = 2` is two units,
/// `web-1` and `web-2`), each a local server (created through the driver) or a service selected
/// at a peer (through service federation).
///
/// ```
/// launching ──→ running ⇄ stopping → stopped ⇄ starting → running
///     │            │  any stop/start failure → degraded (stop, start, teardown allowed)
///     │ a unit fails
///     ↓
/// rolling-back → failed              any phase → tearing-down → torn-down
/// ```
///
/// - **launching**: one unit at a time, in launch order: create it (or select it at its peer) and
///   wait until it runs, at most the member's boot timeout from its create.
/// - **rolling-back**: a unit failed while launching: every unit already created (the failed one
///   included: a failed create may have left an instance) is removed in reverse order, then the
///   cluster is **failed** with the first failure as its reason.
/// - **stopping** / **starting**: local units in reverse / launch order. A peer's service has no
///   stop or start in the federation protocol, so peer units keep running.
/// - **tearing-down**: every unit removed in reverse order, then **torn-down**.
///
/// Removing a local unit terminates its instance and then lists instances by the unit's name until
/// none is left, so an instance from a create whose answer was lost is found too. A failed remove
/// step is retried every `retryInterval` (the caller calls `tick` at `nextAttemptAt`); after
/// `maxRemoveAttempts` the cluster is left **stalled** in its phase with the reason, and the next
/// `teardown` or `resume` tries again.
///
/// **Persistence.** The caller stores `snapshot` before performing any action other than `.none`.
///
/// **Resume rule** (`init(resuming:)` then `resume(now:)`): what the units' states say is done is
/// done; a unit whose step was in flight is looked at again: creating → look the instance up by
/// name (adopt it, or create again within `maxCreateAttempts`) or select at the peer again with the
/// same service id (the peer side answers with the existing service); booting → wait again until
/// its deadline; stopping / starting → stop / start again (a server already there is left as is);
/// removing → terminate or look up again. So a restart at any point ends where an uninterrupted run
/// would, with at most one server per unit.
public struct Cluster: Sendable {
    public enum Phase: String, Codable, Sendable, Hashable, CaseIterable {
        case launching
        case running
        case stopping
        case stopped
        case starting
        /// A stop or start failed for some unit; the units show what runs.
        case degraded
        case rollingBack = "rolling-back"
        case tearingDown = "tearing-down"
        case tornDown = "torn-down"
        case failed

        /// Nothing of the cluster remains (failed clusters were rolled back).
        public var isFinal: Bool { self == .tornDown || self == .failed }
        /// No step is under way: nothing to resume.
        public var isSettled: Bool { [.running, .stopped, .degraded, .tornDown, .failed].contains(self) }
    }

    public struct Configuration: Codable, Sendable, Hashable {
        /// Wait between attempts of a failed remove step (terminate, list, release at a peer).
        public var retryInterval: TimeInterval
        /// Attempts of one unit's remove step before the cluster is left stalled.
        public var maxRemoveAttempts: Int
        /// Creates attempted per unit, including after restarts that found nothing.
        public var maxCreateAttempts: Int
        /// How long a stop or start may take per unit.
        public var powerTimeout: TimeInterval

        public init(retryInterval: TimeInterval = 10, maxRemoveAttempts: Int = 5, maxCreateAttempts: Int = 2, powerTimeout: TimeInterval = 300) {
            self.retryInterval = retryInterval
            self.maxRemoveAttempts = maxRemoveAttempts
            self.maxCreateAttempts = maxCreateAttempts
            self.powerTimeout = powerTimeout
        }
    }

    /// What a peer unit asks its peer for.
    public struct PeerSelection: Codable, Sendable, Hashable {
        public var peer: String
        public var template: String
        public var parameters: [String: String]
        public var agreementID: String?

        public init(peer: String, template: String, parameters: [String: String], agreementID: String?) {
            self.peer = peer
            self.template = template
            self.parameters = parameters
            self.agreementID = agreementID
        }
    }

    public enum Placement: Codable, Sendable, Hashable {
        /// Created through this broker's driver with this request (its name is the unit's name).
        case local(CreateInstanceRequest)
        /// Selected at a peer; the unit's name is the service id.
        case peer(PeerSelection)
    }

    public struct Unit: Codable, Sendable, Hashable {
        public enum State: String, Codable, Sendable, Hashable {
            case pending, creating, booting, running, stopping, stopped, starting, removing, removed
        }

        /// `member-index`, e.g. `web-2`.
        public var key: String
        public var member: String
        public var template: String
        public var placement: Placement
        /// The instance name (local) or the service id (peer): derived from the cluster id and the
        /// key only, so a restart finds what a create it never heard back from made.
        public var name: String
        public var bootTimeout: TimeInterval
        public var state: State
        public var instanceID: String?
        public var addresses: [String]
        /// A peer service's endpoint URL.
        public var endpoint: String?
        /// When its first create (or select) was sent: the boot deadline counts from there.
        public var launchStartedAt: Date?
        public var createAttempts: Int
        /// Failed attempts of the current remove step.
        public var failedAttempts: Int
        public var lastError: String?

        public var peer: String? {
            if case .peer(let selection) = placement { selection.peer } else { nil }
        }
        public var isLocal: Bool { peer == nil }
    }

    /// Everything the machine knows; storing and restoring it loses nothing.
    public struct Snapshot: Codable, Sendable, Hashable {
        public var clusterID: String
        public var name: String
        /// The cluster file it was launched from.
        public var source: String
        public var configuration: Configuration
        public var phase: Phase
        public var phaseEnteredAt: Date
        /// In launch order.
        public var units: [Unit]
        /// Why the cluster failed (the first unit failure), or why a stop/start degraded it.
        public var failureReason: String?
        /// Why a remove step gave up for now; the cluster stays in its phase until retried.
        public var stalled: String?
        /// When `tick` retries a failed remove step.
        public var nextAttemptAt: Date?
    }

    /// The one side effect the caller performs (after storing `snapshot`).
    public enum Action: Sendable, Hashable {
        case none
        /// Create the instance; report `created` or `createFailed`.
        case create(unit: String, request: CreateInstanceRequest)
        /// List instances named `name` (not terminating); report `located` or `locateFailed`.
        case locate(unit: String, name: String)
        /// Wait until the instance runs, no later than `deadline`; report `running` or `bootFailed`.
        case awaitRunning(unit: String, instanceID: String, deadline: Date)
        /// Select at the peer as service `serviceID` and wait until it is active; report `placed` or `placeFailed`.
        case place(unit: String, serviceID: String, selection: PeerSelection, deadline: Date)
        /// End service `serviceID` at `peer` (one it does not know counts as ended); report `released` or `releaseFailed`.
        case release(unit: String, serviceID: String, peer: String)
        /// Shut the instance down and wait until it is stopped; report `stopped` or `stopFailed`.
        case stop(unit: String, instanceID: String, deadline: Date)
        /// Start the instance and wait until it runs; report `started` or `startFailed`.
        case start(unit: String, instanceID: String, deadline: Date)
        /// Terminate the instance (already gone counts); report `terminated` or `terminateFailed`.
        case terminate(unit: String, instanceID: String)
    }

    public private(set) var snapshot: Snapshot

    public var phase: Phase { snapshot.phase }
    public var clusterID: String { snapshot.clusterID }
    public var name: String { snapshot.name }

    /// A new cluster in `launching` with nothing done yet; call `launch(now:)` next.
    public init(clusterID: String, name: String, source: String, units: [Unit], configuration: Configuration = .init(), now: Date) {
        snapshot = Snapshot(
            clusterID: clusterID, name: name, source: source, configuration: configuration, phase: .launching, phaseEnteredAt: now,
            units: units, failureReason: nil, stalled: nil, nextAttemptAt: nil)
    }

    /// Restores a stored machine; call `resume(now:)` next and perform its action.
    public init(resuming stored: Snapshot) {
        snapshot = stored
    }

    /// A unit as planned: `pending`, nothing done.
    public static func unit(
        clusterID: String, clusterName: String, member: String, index: Int, template: String, placement: Placement, bootTimeout: TimeInterval
    ) -> Unit {
        let key = "\(member)-\(index)"
        let name = unitName(clusterID: clusterID, clusterName: clusterName, key: key)
        var placement = placement
        if case .local(var request) = placement {
            request.name = name
            placement = .local(request)
        }
        return Unit(
            key: key, member: member, template: template, placement: placement, name: name, bootTimeout: bootTimeout, state: .pending,
            instanceID: nil, addresses: [], endpoint: nil, launchStartedAt: nil, createAttempts: 0, failedAttempts: 0, lastError: nil)
    }

    /// `cl-` + the cluster's name + the unit key + 8 hex digits of the SHA-256 of the cluster id
    /// and the key (`cl-shop-web-2-1a2b3c4d`): readable in the cloud's own listings, at most 63
    /// characters (a host name) of letters, digits and `-` that every driver accepts, and distinct
    /// for two clusters of the same name (their ids differ).
    public static func unitName(clusterID: String, clusterName: String, key: String) -> String {
        func readable(_ text: String, _ length: Int) -> String {
            String(text.unicodeScalars.map { $0.isASCII && CharacterSet.alphanumerics.contains($0) ? Character($0) : "-" }.prefix(length))
        }
        let digest = SHA256.hash(data: Data("\(clusterID)\u{0}\(key)".utf8)).prefix(4).map { String(format: "%02x", $0) }.joined()
        return "cl-\(readable(clusterName, 24))-\(readable(key, 26))-\(digest)"
    }

    // MARK: requests

    /// Begins the launch.
    public mutating func launch(now: Date) -> Action {
        guard snapshot.phase == .launching else { return .none }
        return advance(now: now)
    }

    /// Stops every local unit, in reverse launch order. Idempotent when stopped.
    public mutating func stop(now: Date) throws(ClusterError) -> Action {
        switch snapshot.phase {
        case .stopped: return .none
        case .running, .degraded:
            snapshot.failureReason = nil
            setPhase(.stopping, now: now)
            return advance(now: now)
        default: throw .invalidState("cluster \(snapshot.name) is \(snapshot.phase.rawValue); only a running or degraded cluster can be stopped")
        }
    }

    /// Starts every stopped local unit, in launch order. Idempotent when running.
    public mutating func start(now: Date) throws(ClusterError) -> Action {
        switch snapshot.phase {
        case .running: return .none
        case .stopped, .degraded:
            snapshot.failureReason = nil
            setPhase(.starting, now: now)
            return advance(now: now)
        default: throw .invalidState("cluster \(snapshot.name) is \(snapshot.phase.rawValue); only a stopped or degraded cluster can be started")
        }
    }

    /// Removes every unit, in reverse launch order. Idempotent; a rollback under way goes on (and
    /// ends failed); a stalled removal is tried again.
    public mutating func teardown(now: Date) -> Action {
        guard !snapshot.phase.isFinal else { return .none }
        if snapshot.phase != .rollingBack && snapshot.phase != .tearingDown { setPhase(.tearingDown, now: now) }
        retryAfresh()
        return advance(now: now)
    }

    /// Applies the resume rule (see the type's documentation) after `init(resuming:)`.
    public mutating func resume(now: Date) -> Action {
        retryAfresh()
        return advance(now: now)
    }

    /// Retries a failed remove step once `nextAttemptAt` has come.
    public mutating func tick(now: Date) -> Action {
        guard let at = snapshot.nextAttemptAt, now >= at else { return .none }
        snapshot.nextAttemptAt = nil
        return advance(now: now)
    }

    // MARK: results of the actions

    public mutating func created(unit key: String, _ instance: Instance, now: Date) -> Action {
        guard snapshot.phase == .launching, let i = index(key), snapshot.units[i].state == .creating else { return .none }
        snapshot.units[i].instanceID = instance.id
        snapshot.units[i].state = .booting
        return advance(now: now)
    }

    public mutating func createFailed(unit key: String, reason: String, now: Date) -> Action {
        guard snapshot.phase == .launching, let i = index(key) else { return .none }
        // The unit stays `creating`: the rollback looks for anything the failed create left.
        return fail(i, "create failed: \(reason)", now: now)
    }

    public mutating func located(unit key: String, _ instances: [Instance], now: Date) -> Action {
        guard let i = index(key) else { return .none }
        let unit = snapshot.units[i]
        let live = instances.filter { $0.name == unit.name && $0.state != .terminated && $0.state != .terminating }
        switch (snapshot.phase, unit.state) {
        case (.launching, .creating):
            if let found = live.first {
                snapshot.units[i].instanceID = found.id
                snapshot.units[i].state = .booting
                return advance(now: now)
            }
            guard unit.createAttempts < snapshot.configuration.maxCreateAttempts else {
                return fail(i, "no instance after \(unit.createAttempts) create attempts", now: now)
            }
            snapshot.units[i].state = .pending
            return advance(now: now)
        case (_, .removing):
            snapshot.units[i].failedAttempts = 0
            if let found = live.first {
                snapshot.units[i].instanceID = found.id
                return .terminate(unit: key, instanceID: found.id)
            }
            snapshot.units[i].state = .removed
            snapshot.units[i].instanceID = nil
            snapshot.units[i].addresses = []
            return advance(now: now)
        default:
            return .none
        }
    }

    public mutating func locateFailed(unit key: String, reason: String, now: Date) -> Action {
        guard let i = index(key) else { return .none }
        if snapshot.phase == .launching { return fail(i, "listing instances failed: \(reason)", now: now) }
        return retryLater(i, "listing instances failed: \(reason)", now: now)
    }

    public mutating func running(unit key: String, _ instance: Instance, now: Date) -> Action {
        guard snapshot.phase == .launching, let i = index(key), snapshot.units[i].state == .booting,
              snapshot.units[i].instanceID == instance.id else { return .none }
        snapshot.units[i].state = .running
        snapshot.units[i].addresses = instance.addresses
        return advance(now: now)
    }

    public mutating func bootFailed(unit key: String, reason: String, now: Date) -> Action {
        guard snapshot.phase == .launching, let i = index(key) else { return .none }
        return fail(i, "did not run: \(reason)", now: now)
    }

    public mutating func placed(unit key: String, endpoint: String?, now: Date) -> Action {
        guard snapshot.phase == .launching, let i = index(key), snapshot.units[i].state == .creating else { return .none }
        snapshot.units[i].state = .running
        snapshot.units[i].endpoint = endpoint
        return advance(now: now)
    }

    public mutating func placeFailed(unit key: String, reason: String, now: Date) -> Action {
        guard snapshot.phase == .launching, let i = index(key) else { return .none }
        return fail(i, "selection at \(snapshot.units[i].peer ?? "the peer") failed: \(reason)", now: now)
    }

    public mutating func released(unit key: String, now: Date) -> Action {
        guard let i = index(key), snapshot.units[i].state == .removing else { return .none }
        snapshot.units[i].state = .removed
        snapshot.units[i].failedAttempts = 0
        snapshot.units[i].endpoint = nil
        return advance(now: now)
    }

    public mutating func releaseFailed(unit key: String, reason: String, now: Date) -> Action {
        guard let i = index(key), snapshot.units[i].state == .removing else { return .none }
        return retryLater(i, "ending the service at \(snapshot.units[i].peer ?? "the peer") failed: \(reason)", now: now)
    }

    public mutating func stopped(unit key: String, now: Date) -> Action {
        guard snapshot.phase == .stopping, let i = index(key), snapshot.units[i].state == .stopping else { return .none }
        snapshot.units[i].state = .stopped
        snapshot.units[i].lastError = nil
        return advance(now: now)
    }

    public mutating func stopFailed(unit key: String, reason: String, now: Date) -> Action {
        guard snapshot.phase == .stopping, let i = index(key) else { return .none }
        // What we know best: it was running and did not stop (the next stop looks first).
        snapshot.units[i].state = .running
        return degrade(i, "stop failed: \(reason)", now: now)
    }

    public mutating func started(unit key: String, _ instance: Instance, now: Date) -> Action {
        guard snapshot.phase == .starting, let i = index(key), snapshot.units[i].state == .starting else { return .none }
        snapshot.units[i].state = .running
        snapshot.units[i].addresses = instance.addresses
        snapshot.units[i].lastError = nil
        return advance(now: now)
    }

    public mutating func startFailed(unit key: String, reason: String, now: Date) -> Action {
        guard snapshot.phase == .starting, let i = index(key) else { return .none }
        snapshot.units[i].state = .stopped
        return degrade(i, "start failed: \(reason)", now: now)
    }

    public mutating func terminated(unit key: String, now: Date) -> Action {
        guard let i = index(key), snapshot.units[i].state == .removing else { return .none }
        snapshot.units[i].instanceID = nil
        snapshot.units[i].failedAttempts = 0
        // Then look by name until nothing is left.
        return advance(now: now)
    }

    public mutating func terminateFailed(unit key: String, reason: String, now: Date) -> Action {
        guard let i = index(key), snapshot.units[i].state == .removing else { return .none }
        return retryLater(i, "terminate failed: \(reason)", now: now)
    }

    // MARK: the next step

    /// The next action the phase calls for, from the units' states alone (what resume relies on).
    private mutating func advance(now: Date) -> Action {
        guard snapshot.nextAttemptAt == nil, snapshot.stalled == nil else { return .none }
        switch snapshot.phase {
        case .launching:
            guard let i = snapshot.units.firstIndex(where: { $0.state != .running }) else {
                setPhase(.running, now: now)
                return .none
            }
            return launchStep(i, now: now)
        case .stopping:
            guard let i = snapshot.units.lastIndex(where: { $0.isLocal && ($0.state == .running || $0.state == .stopping) }) else {
                setPhase(.stopped, now: now)
                return .none
            }
            let deadline = now.addingTimeInterval(snapshot.configuration.powerTimeout)
            snapshot.units[i].state = .stopping
            guard let id = snapshot.units[i].instanceID else { return fail(i, "no instance id", now: now) }
            return .stop(unit: snapshot.units[i].key, instanceID: id, deadline: deadline)
        case .starting:
            guard let i = snapshot.units.firstIndex(where: { $0.isLocal && ($0.state == .stopped || $0.state == .starting) }) else {
                setPhase(.running, now: now)
                return .none
            }
            let deadline = now.addingTimeInterval(snapshot.configuration.powerTimeout)
            snapshot.units[i].state = .starting
            guard let id = snapshot.units[i].instanceID else { return fail(i, "no instance id", now: now) }
            return .start(unit: snapshot.units[i].key, instanceID: id, deadline: deadline)
        case .rollingBack, .tearingDown:
            guard let i = snapshot.units.lastIndex(where: { $0.state != .pending && $0.state != .removed }) else {
                setPhase(snapshot.phase == .rollingBack ? .failed : .tornDown, now: now)
                return .none
            }
            return removeStep(i)
        case .running, .stopped, .degraded, .tornDown, .failed:
            return .none
        }
    }

    private mutating func launchStep(_ i: Int, now: Date) -> Action {
        let unit = snapshot.units[i]
        switch unit.state {
        case .pending:
            snapshot.units[i].createAttempts += 1
            snapshot.units[i].state = .creating
            if unit.launchStartedAt == nil { snapshot.units[i].launchStartedAt = now }
            return createStep(i, now: now)
        case .creating:
            // After a restart: the create may or may not have happened.
            if unit.isLocal { return .locate(unit: unit.key, name: unit.name) }
            return createStep(i, now: now)
        case .booting:
            guard let id = unit.instanceID else { return .locate(unit: unit.key, name: unit.name) }
            return .awaitRunning(unit: unit.key, instanceID: id, deadline: deadline(of: unit, now: now))
        case .running, .stopping, .stopped, .starting, .removing, .removed:
            return fail(i, "is \(unit.state.rawValue) while the cluster launches", now: now)
        }
    }

    private func createStep(_ i: Int, now: Date) -> Action {
        let unit = snapshot.units[i]
        switch unit.placement {
        case .local(var request):
            // Drivers with idempotent creates (EC2's ClientToken) launch at most one instance per
            // attempt even if the same create is sent twice.
            request.extra["clientToken"] = "\(unit.name)-\(unit.createAttempts)"
            return .create(unit: unit.key, request: request)
        case .peer(let selection):
            return .place(unit: unit.key, serviceID: unit.name, selection: selection, deadline: deadline(of: unit, now: now))
        }
    }

    private mutating func removeStep(_ i: Int) -> Action {
        snapshot.units[i].state = .removing
        let unit = snapshot.units[i]
        if let peer = unit.peer { return .release(unit: unit.key, serviceID: unit.name, peer: peer) }
        if let id = unit.instanceID { return .terminate(unit: unit.key, instanceID: id) }
        return .locate(unit: unit.key, name: unit.name)
    }

    private func deadline(of unit: Unit, now: Date) -> Date {
        (unit.launchStartedAt ?? now).addingTimeInterval(unit.bootTimeout)
    }

    /// A unit failed while launching: roll back.
    private mutating func fail(_ i: Int, _ reason: String, now: Date) -> Action {
        let text = "\(snapshot.units[i].key): \(reason)"
        snapshot.units[i].lastError = reason
        if snapshot.failureReason == nil { snapshot.failureReason = text }
        guard snapshot.phase == .launching else { return degrade(i, reason, now: now) }
        setPhase(.rollingBack, now: now)
        return advance(now: now)
    }

    private mutating func degrade(_ i: Int, _ reason: String, now: Date) -> Action {
        snapshot.units[i].lastError = reason
        snapshot.failureReason = "\(snapshot.units[i].key): \(reason)"
        setPhase(.degraded, now: now)
        return .none
    }

    private mutating func retryLater(_ i: Int, _ reason: String, now: Date) -> Action {
        snapshot.units[i].failedAttempts += 1
        snapshot.units[i].lastError = reason
        if snapshot.units[i].failedAttempts >= snapshot.configuration.maxRemoveAttempts {
            snapshot.stalled = "\(snapshot.units[i].key): \(reason) (\(snapshot.units[i].failedAttempts) attempts)"
            snapshot.nextAttemptAt = nil
        } else {
            snapshot.nextAttemptAt = now.addingTimeInterval(snapshot.configuration.retryInterval)
        }
        return .none
    }

    private mutating func retryAfresh() {
        snapshot.stalled = nil
        snapshot.nextAttemptAt = nil
        for i in snapshot.units.indices { snapshot.units[i].failedAttempts = 0 }
    }

    private func index(_ key: String) -> Int? { snapshot.units.firstIndex { $0.key == key } }

    private mutating func setPhase(_ phase: Phase, now: Date) {
        snapshot.phase = phase
        snapshot.phaseEnteredAt = now
    }
}

/// Why a cluster request could not be carried out.
public enum ClusterError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The definition cannot be launched here (unknown template, size or image, a name in use...).
    case refused(String)
    case unknownCluster(String)
    /// The cluster is not in a phase that allows the request.
    case invalidState(String)
    /// Another request is acting on the cluster.
    case busy(String)
    /// The runner stopped after a journal observer failure (tests simulate crashes this way).
    case halted
    /// The journal could not be read or written.
    case journal(String)

    public var description: String {
        switch self {
        case .refused(let reason): reason
        case .unknownCluster(let name): "no cluster \(name)"
        case .invalidState(let message): message
        case .busy(let name): "cluster \(name) has a request under way"
        case .halted: "the cluster runner stopped"
        case .journal(let message): "journal: \(message)"
        }
    }
}
