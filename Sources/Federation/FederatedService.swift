import Crypto
import Foundation
import Providers

/// The provider side of one federated service, as a value type with no IO and no clock: every
/// input is a `mutating func` taking `now` and returning the one `Action` the caller performs, then
/// reports back through the matching event (`created`, `running`, `terminated`, ...).
///
/// ```
/// requested → provisioning → starting → active → tearingDown → ended
///                  │             │                   ↑
///                  └─────────────┴──── failure ──────┘ (undo) → failed
/// ```
///
/// - **provisioning**: the driver is asked to create the instance (named `instanceName`, derived
///   from the service id, so a restart can find an instance whose creation it never heard back from).
/// - **starting**: waiting until the instance runs, at most `bootTimeout`.
/// - **active**: endpoint = the instance's first address + the template's port; credentials expire
///   after `credentialTTL` (never after the agreement ends) and `renew` issues new ones.
/// - **tearingDown**: on request, when the agreement ends (`tick` decides), or to undo a failure:
///   terminate the instance, then list instances by name until none is left (anything a failed
///   `create` may have left behind is found that way too). A failed terminate is retried every
///   `teardownRetryInterval`, at `tick`.
/// - **ended** / **failed**: nothing runs any more; failed says why.
///
/// **Persistence.** The caller stores `snapshot` before performing any action other than `.none`.
///
/// **Resume rule** (`init(resuming:)` then `resume(now:)`):
/// 1. ended and failed stay as they are; their last action (`finished`: metering removal,
///    credentials revoked) is performed again, since a crash may have come before it.
/// 2. requested: start provisioning (nothing was done yet).
/// 3. provisioning: the create may or may not have happened, so look the instance up by name:
///    found → adopt it and wait for it (starting); not found → create it (again, within
///    `maxCreateAttempts`, else failed).
/// 4. starting: wait for the instance again, until the boot deadline counted from when starting began.
/// 5. active: report the placement again (the hook is idempotent) and stay active; credentials
///    issued before the restart stay valid until they expire.
/// 6. tearingDown: terminate the known instance, or look it up by name, and go on as before.
/// In every case a service whose agreement has ended is torn down instead. So a restart in any
/// state ends in the same state an uninterrupted run would reach, with at most one instance.
public struct FederatedService: Sendable {
    public enum Phase: String, Codable, Sendable, Hashable, CaseIterable {
        case requested
        case provisioning
        case starting
        case active
        case tearingDown = "tearing-down"
        case ended
        case failed

        public var isFinal: Bool { self == .ended || self == .failed }
    }

    public struct Configuration: Codable, Sendable, Hashable {
        /// How long issued credentials stay valid.
        public var credentialTTL: TimeInterval
        /// How long an instance may take to be running.
        public var bootTimeout: TimeInterval
        /// Wait between attempts to terminate (or list) after a driver failure.
        public var teardownRetryInterval: TimeInterval
        /// Creates attempted in total, including after restarts that found nothing.
        public var maxCreateAttempts: Int

        public init(credentialTTL: TimeInterval = 900, bootTimeout: TimeInterval = 300, teardownRetryInterval: TimeInterval = 30, maxCreateAttempts: Int = 2) {
            self.credentialTTL = credentialTTL
            self.bootTimeout = bootTimeout
            self.teardownRetryInterval = teardownRetryInterval
            self.maxCreateAttempts = maxCreateAttempts
        }
    }

    /// The credentials currently issued (the token itself is not kept anywhere).
    public struct Credentials: Codable, Sendable, Hashable {
        public var username: String
        /// 1 for the first credentials, +1 per renewal.
        public var generation: Int
        public var issuedAt: Date
        public var expiresAt: Date
    }

    /// Everything the machine knows; storing and restoring it loses nothing.
    public struct Snapshot: Codable, Sendable, Hashable {
        public var serviceID: String
        public var agreementID: String
        public var consumer: String
        public var templateName: String
        /// What the driver is asked to create (name, size, resolved image id, `userData`).
        public var request: CreateInstanceRequest
        public var size: InstanceSize
        public var interface: ServiceInterface
        public var configuration: Configuration
        public var agreementEndsAt: Date
        public var phase: Phase
        public var phaseEnteredAt: Date
        public var instanceID: String?
        public var endpoint: ServiceEndpoint?
        public var credentials: Credentials?
        /// Set once the service is active; reported to metering, removed at the end.
        public var placement: FederationPlacement?
        public var createAttempts: Int
        /// A teardown asked for while a driver step was in flight; applied when it completes.
        public var teardownRequested: String?
        public var teardownReason: String?
        public var failureReason: String?
        /// When a failed driver step is tried again (at `tick`).
        public var nextAttemptAt: Date?
        public var failedAttempts: Int
    }

    /// The one side effect the caller performs (after storing `snapshot`).
    public enum Action: Sendable, Hashable {
        case none
        /// Create the instance; report `created` or `createFailed`.
        case create(CreateInstanceRequest)
        /// List the instances named `instanceName` (not terminating); report `located` or `locateFailed`.
        case locate(instanceName: String)
        /// Wait until the instance runs, no later than `deadline`; report `running` or `startFailed`.
        case awaitRunning(instanceID: String, deadline: Date)
        /// The service is active: store the credentials (a fresh token, hashed), report the
        /// placement to metering, and hand endpoint + token to the consumer.
        case activate(endpoint: ServiceEndpoint, credentials: Credentials, placement: FederationPlacement)
        /// Replace the stored credentials with fresh ones (renewal).
        case issueCredentials(Credentials)
        /// Report the placement to metering again (after a restart; idempotent).
        case confirmPlacement(FederationPlacement)
        /// Terminate the instance; report `terminated` (also when it is already gone) or `terminateFailed`.
        case terminate(instanceID: String)
        /// The service is over (ended or failed); report the removal to metering if there is one
        /// and revoke the credentials.
        case finished(removal: FederationRemoval?)
    }

    public private(set) var snapshot: Snapshot

    public var phase: Phase { snapshot.phase }
    public var serviceID: String { snapshot.serviceID }

    /// When the caller must call `tick` next (the agreement's end, or a retry), nil when over.
    public var nextDeadline: Date? {
        if snapshot.phase.isFinal { return nil }
        if let retry = snapshot.nextAttemptAt { return min(retry, snapshot.agreementEndsAt) }
        return snapshot.agreementEndsAt
    }

    /// The name the instance is created under: derived from the service id only.
    public var instanceName: String { snapshot.request.name }

    /// A new service in `requested`; call `start(now:)` next.
    public init(
        serviceID: String, agreementID: String, consumer: String, templateName: String, imageID: String, size: InstanceSize,
        userData: String?, interface: ServiceInterface, agreementEndsAt: Date, configuration: Configuration = .init(), now: Date
    ) {
        var extra: [String: String] = [:]
        if let userData { extra["userData"] = userData }
        let request = CreateInstanceRequest(name: Self.instanceName(for: serviceID), sizeID: size.id, imageID: imageID, extra: extra)
        snapshot = Snapshot(
            serviceID: serviceID, agreementID: agreementID, consumer: consumer, templateName: templateName, request: request,
            size: size, interface: interface, configuration: configuration, agreementEndsAt: agreementEndsAt,
            phase: .requested, phaseEnteredAt: now, instanceID: nil, endpoint: nil, credentials: nil, placement: nil,
            createAttempts: 0, teardownRequested: nil, teardownReason: nil, failureReason: nil, nextAttemptAt: nil,
            failedAttempts: 0)
    }

    /// Restores a stored machine; call `resume(now:)` next and perform its action.
    public init(resuming stored: Snapshot) {
        snapshot = stored
    }

    /// `fed-` + the service id reduced to letters, digits and `-` + 8 hex digits of its SHA-256, so
    /// two ids that reduce alike still get distinct names and every driver accepts the name.
    public static func instanceName(for serviceID: String) -> String {
        let readable = String(serviceID.unicodeScalars.map { scalar -> Character in
            scalar.isASCII && CharacterSet.alphanumerics.contains(scalar) ? Character(scalar) : "-"
        }.prefix(40))
        let digest = SHA256.hash(data: Data(serviceID.utf8)).prefix(4).map { String(format: "%02x", $0) }.joined()
        return "fed-\(readable)-\(digest)"
    }

    /// What the consumer may know about the service.
    public var status: ServiceStatus {
        ServiceStatus(
            phase: snapshot.phase, endpoint: snapshot.phase == .active ? snapshot.endpoint : nil,
            credentialsExpireAt: snapshot.phase == .active ? snapshot.credentials?.expiresAt : nil,
            reason: snapshot.failureReason ?? snapshot.teardownReason)
    }

    // MARK: local decisions

    /// Begins provisioning.
    public mutating func start(now: Date) -> Action {
        guard snapshot.phase == .requested else { return .none }
        if now >= snapshot.agreementEndsAt { return finish(reason: "the agreement ended before the service started", now: now) }
        return create(now: now)
    }

    /// New credentials for an active service; the previous ones stop working.
    public mutating func renew(now: Date) throws(FederationError) -> Action {
        guard snapshot.phase == .active, let current = snapshot.credentials else {
            throw .invalidState("service \(snapshot.serviceID) is \(snapshot.phase.rawValue); only an active service has credentials")
        }
        guard now < snapshot.agreementEndsAt else { throw .invalidState("the agreement of service \(snapshot.serviceID) has ended") }
        let credentials = Credentials(
            username: current.username, generation: current.generation + 1, issuedAt: now, expiresAt: expiry(now: now))
        snapshot.credentials = credentials
        return .issueCredentials(credentials)
    }

    /// Ends the service on request (or at the agreement's end). Idempotent.
    public mutating func requestTeardown(reason: String, now: Date) -> Action {
        switch snapshot.phase {
        case .ended, .failed, .tearingDown:
            return .none
        case .requested:
            snapshot.teardownReason = reason
            return finish(reason: nil, now: now)
        case .provisioning, .starting:
            // A driver step is in flight unless one failed and waits for its retry: then nothing
            // will complete it, so tear down now.
            if snapshot.nextAttemptAt == nil {
                snapshot.teardownRequested = reason
                return .none
            }
            snapshot.teardownReason = reason
            return beginTeardown(now: now)
        case .active:
            snapshot.teardownReason = reason
            return beginTeardown(now: now)
        }
    }

    /// The clock: tears the service down once the agreement has ended, and retries failed steps.
    public mutating func tick(now: Date) -> Action {
        if snapshot.phase.isFinal { return .none }
        if now >= snapshot.agreementEndsAt, snapshot.phase != .tearingDown {
            return requestTeardown(reason: "the agreement ended", now: now)
        }
        guard let retry = snapshot.nextAttemptAt, now >= retry else { return .none }
        snapshot.nextAttemptAt = nil
        switch snapshot.phase {
        case .provisioning, .starting: return .locate(instanceName: instanceName)
        case .tearingDown: return teardownStep()
        default: return .none
        }
    }

    /// Applies the resume rule (see the type's documentation) after `init(resuming:)`.
    public mutating func resume(now: Date) -> Action {
        snapshot.nextAttemptAt = nil
        switch snapshot.phase {
        case .ended, .failed:
            return .finished(removal: removal)
        case .requested:
            return start(now: now)
        case .provisioning:
            if now >= snapshot.agreementEndsAt { snapshot.teardownRequested = "the agreement ended" }
            return .locate(instanceName: instanceName)
        case .starting:
            guard let id = snapshot.instanceID else { return .locate(instanceName: instanceName) }
            if now >= snapshot.agreementEndsAt { return requestTeardownNow(reason: "the agreement ended", now: now) }
            return .awaitRunning(instanceID: id, deadline: snapshot.phaseEnteredAt.addingTimeInterval(snapshot.configuration.bootTimeout))
        case .active:
            if now >= snapshot.agreementEndsAt { return requestTeardown(reason: "the agreement ended", now: now) }
            return snapshot.placement.map(Action.confirmPlacement) ?? .none
        case .tearingDown:
            return teardownStep()
        }
    }

    // MARK: results of the actions

    public mutating func created(_ instance: Instance, now: Date) -> Action {
        guard snapshot.phase == .provisioning else { return .none }
        snapshot.instanceID = instance.id
        return afterCreate(instanceID: instance.id, now: now)
    }

    public mutating func createFailed(reason: String, now: Date) -> Action {
        guard snapshot.phase == .provisioning else { return .none }
        snapshot.failureReason = "create failed: \(reason)"
        // The driver may have created something before failing: look for it and remove it.
        return beginTeardown(now: now)
    }

    /// The instances found under `instanceName` (any not terminating or terminated count).
    public mutating func located(_ instances: [Instance], now: Date) -> Action {
        let live = instances.filter { $0.name == instanceName && $0.state != .terminated && $0.state != .terminating }
        switch snapshot.phase {
        case .provisioning, .starting:
            if let found = live.first {
                snapshot.instanceID = found.id
                return afterCreate(instanceID: found.id, now: now)
            }
            if let reason = snapshot.teardownRequested {
                snapshot.teardownReason = reason
                return finish(reason: nil, now: now)
            }
            guard snapshot.createAttempts < snapshot.configuration.maxCreateAttempts else {
                snapshot.failureReason = "no instance after \(snapshot.createAttempts) create attempts"
                return finish(reason: nil, now: now)
            }
            setPhase(.provisioning, now: now)
            return create(now: now)
        case .tearingDown:
            if let found = live.first {
                snapshot.instanceID = found.id
                return .terminate(instanceID: found.id)
            }
            return finish(reason: nil, now: now)
        default:
            return .none
        }
    }

    public mutating func locateFailed(reason: String, now: Date) -> Action {
        guard [.provisioning, .starting, .tearingDown].contains(snapshot.phase) else { return .none }
        return retryLater(reason: "listing instances failed: \(reason)", now: now)
    }

    public mutating func running(_ instance: Instance, now: Date) -> Action {
        guard snapshot.phase == .starting, instance.id == snapshot.instanceID else { return .none }
        if let reason = snapshot.teardownRequested {
            snapshot.teardownReason = reason
            return beginTeardown(now: now)
        }
        if now >= snapshot.agreementEndsAt {
            snapshot.teardownReason = "the agreement ended"
            return beginTeardown(now: now)
        }
        guard let host = instance.addresses.first else {
            snapshot.failureReason = "instance \(instance.id) runs but has no address"
            return beginTeardown(now: now)
        }
        let interface = snapshot.interface
        let endpoint = ServiceEndpoint(host: host, port: interface.port, protocolName: interface.protocolName, path: interface.path)
        let credentials = Credentials(
            username: "svc-" + instanceName.dropFirst(4), generation: 1, issuedAt: now, expiresAt: expiry(now: now))
        let placement = FederationPlacement(
            serviceID: snapshot.serviceID, agreementID: snapshot.agreementID, consumer: snapshot.consumer,
            instanceID: instance.id, instanceType: snapshot.size.id, vCPU: snapshot.size.vCPU,
            memoryMiB: snapshot.size.memoryMiB, diskGiB: snapshot.size.diskGiB, placedAt: now)
        snapshot.endpoint = endpoint
        snapshot.credentials = credentials
        snapshot.placement = placement
        setPhase(.active, now: now)
        return .activate(endpoint: endpoint, credentials: credentials, placement: placement)
    }

    public mutating func startFailed(reason: String, now: Date) -> Action {
        guard snapshot.phase == .starting else { return .none }
        snapshot.failureReason = "start failed: \(reason)"
        return beginTeardown(now: now)
    }

    public mutating func terminated(now: Date) -> Action {
        guard snapshot.phase == .tearingDown else { return .none }
        snapshot.instanceID = nil
        snapshot.failedAttempts = 0
        // Check by name that nothing is left (a second instance from a create retried after a
        // restart would be found here too).
        return .locate(instanceName: instanceName)
    }

    public mutating func terminateFailed(reason: String, now: Date) -> Action {
        guard snapshot.phase == .tearingDown else { return .none }
        return retryLater(reason: "terminate failed: \(reason)", now: now)
    }

    // MARK: helpers

    private mutating func create(now: Date) -> Action {
        snapshot.createAttempts += 1
        setPhase(.provisioning, now: now)
        var request = snapshot.request
        // Drivers with idempotent creates (EC2's ClientToken) launch at most one instance per
        // attempt even if the same create is sent twice.
        request.extra["clientToken"] = "\(instanceName)-\(snapshot.createAttempts)"
        return .create(request)
    }

    private mutating func afterCreate(instanceID: String, now: Date) -> Action {
        if let reason = snapshot.teardownRequested {
            snapshot.teardownReason = reason
            return beginTeardown(now: now)
        }
        if snapshot.phase != .starting { setPhase(.starting, now: now) }
        return .awaitRunning(instanceID: instanceID, deadline: snapshot.phaseEnteredAt.addingTimeInterval(snapshot.configuration.bootTimeout))
    }

    private mutating func requestTeardownNow(reason: String, now: Date) -> Action {
        snapshot.teardownReason = reason
        return beginTeardown(now: now)
    }

    private mutating func beginTeardown(now: Date) -> Action {
        snapshot.teardownRequested = nil
        snapshot.nextAttemptAt = nil
        snapshot.failedAttempts = 0
        setPhase(.tearingDown, now: now)
        return teardownStep()
    }

    private func teardownStep() -> Action {
        if let id = snapshot.instanceID { return .terminate(instanceID: id) }
        return .locate(instanceName: instanceName)
    }

    private mutating func retryLater(reason: String, now: Date) -> Action {
        snapshot.failedAttempts += 1
        snapshot.nextAttemptAt = now.addingTimeInterval(snapshot.configuration.teardownRetryInterval)
        if snapshot.phase == .tearingDown, snapshot.failureReason == nil, snapshot.teardownReason == nil {
            snapshot.teardownReason = reason
        }
        return .none
    }

    /// Ends in `failed` when a failure reason is set (nothing is left running either way).
    private mutating func finish(reason: String?, now: Date) -> Action {
        if let reason { snapshot.failureReason = reason }
        snapshot.teardownRequested = nil
        snapshot.nextAttemptAt = nil
        snapshot.instanceID = nil
        setPhase(snapshot.failureReason == nil ? .ended : .failed, now: now)
        return .finished(removal: removal)
    }

    /// The end of the placement (when the service reached its final phase), if it had one.
    private var removal: FederationRemoval? {
        guard snapshot.phase.isFinal, let placement = snapshot.placement else { return nil }
        return FederationRemoval(
            serviceID: placement.serviceID, agreementID: placement.agreementID, consumer: placement.consumer,
            instanceID: placement.instanceID, removedAt: snapshot.phaseEnteredAt)
    }

    private mutating func setPhase(_ phase: Phase, now: Date) {
        snapshot.phase = phase
        snapshot.phaseEnteredAt = now
    }

    private func expiry(now: Date) -> Date {
        min(now.addingTimeInterval(snapshot.configuration.credentialTTL), snapshot.agreementEndsAt)
    }
}

/// Why a federation request could not be carried out.
public enum FederationError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The request is refused (unknown template, invalid parameters, duplicate service id...);
    /// the reason can be sent to the peer as it is.
    case refused(String)
    case unknownService(String)
    /// The service is not in a state that allows the request.
    case invalidState(String)
    /// The runner stopped after a journal observer failure (tests simulate crashes this way).
    case halted
    /// The journal could not be read or written.
    case journal(String)

    public var description: String {
        switch self {
        case .refused(let reason): reason
        case .unknownService(let id): "unknown service \(id)"
        case .invalidState(let message): message
        case .halted: "the federation runner stopped"
        case .journal(let message): "journal: \(message)"
        }
    }
}
