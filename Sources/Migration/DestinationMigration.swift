import Foundation
import Policy
import Providers

/// Where the destination side of a migration stands, as stored and as told to the source.
public enum DestinationPhase: String, Codable, Sendable, Hashable, CaseIterable {
    /// Only in answers: the destination has no record of the migration (so nothing is reserved).
    case unknown
    case authorizing, inspecting, offering
    /// Live: preparing the disk and paths for the guest.
    case preparing
    /// Capacity reserved and a transfer offer made; waiting for `transferred`.
    case reserved
    case receiving, importing, creating, starting
    /// Live: the source says the guest left it; checking that it runs here.
    case arriving
    /// The copy runs; waiting for `cutover` (or `abort`).
    case started
    case completing, completed, rollingBack, rolledBack

    public var isFinal: Bool { self == .completed || self == .rolledBack }
}

/// Work to undo if the migration fails, recorded when the step that needs it is issued.
public enum DestinationUndo: Codable, Sendable, Hashable {
    case terminateInstances(fromImagesNamed: String)
    case deregisterImages(named: String)
    case removeFiles([String])
    /// Withdraws the transfer offer, which releases the reservation.
    case withdrawOffer
    /// Live: removes the disk and console log prepared for the guest, unless the guest is here.
    case discardLiveTarget

    var order: Int {
        switch self {
        case .discardLiveTarget: 0
        case .terminateInstances: 0
        case .deregisterImages: 1
        case .removeFiles: 2
        case .withdrawOffer: 3
        }
    }

    /// The copy must be gone before the destination may say it rolled back.
    var mustSucceed: Bool {
        switch self {
        // A guest that arrived must not lose its disk; one that did not must not leave files behind
        // that a later retry could not find.
        case .terminateInstances, .discardLiveTarget: true
        default: false
        }
    }
}

/// The destination side of a cold migration, in the style of `NegotiationStateMachine` and
/// `SourceMigration`: no IO, no clock, one action at a time, state changed only by results.
///
/// The destination is driven by the source's requests (`received(_:now:)`); handling a request is a
/// chain of actions that ends with `.reply`, the answer to send.
///
/// | request       | steps (undo recorded)                                                              |
/// |---------------|------------------------------------------------------------------------------------|
/// | `propose`     | policy `migrateIn` → inventory: size mapping, capacity minus other reservations,   |
/// |               | region, formats → transfer offer (withdraw) → RESERVED, reply `reserved`           |
/// | `transferred` | take the received file, compare size and SHA-256 (remove) → import                 |
/// |               | (deregister) → create with mapped network (terminate) → start and wait running   |
/// |               | → STARTED, reply `started`                                                         |
/// | `cutover`     | (only from STARTED) hand over metering, withdraw the offer → COMPLETED,            |
/// |               | reply `state completed`                                                            |
/// | `abort`       | undo everything → ROLLED BACK, reply `state rolledBack`; COMPLETED stays           |
///
/// It never starts a copy before `transferred`, which the source sends only once its own copy is
/// stopped, and once COMPLETED it never rolls back.
///
/// **Live** (`proposal.live`): `propose` → policy `migrateIn` and `migrate-live` → inventory (the
/// driver must be libvirt) → prepare an empty disk of the guest's size (discard) → RESERVED, reply
/// `reserved` with the hypervisor URI and paths. The source's hypervisor then moves the guest here
/// by itself. `liveMigrated` → wait for the guest to run → STARTED, reply `started`; `status` →
/// reply what the hypervisor shows (`guest`). The discard refuses while the guest is here, so an
/// arrived guest never loses its disk; and a live RESERVED is kept across a restart (the source's
/// hypervisor may be moving the guest in without this process), so only the source's `abort` or the
/// reservation timeout removes the prepared files.
///
/// **Resume rule** (`init(resuming:)` then `resume(now:)`):
/// 1. COMPLETED, ROLLED BACK and STARTED stay (STARTED waits for the source's `cutover` or `abort`,
///    asking the source now and then, see `sourceAnswered`; it must not roll back on its own: the
///    source may have terminated its copy already). A live
///    RESERVED or ARRIVING stays RESERVED: the source decides from what both hypervisors show.
/// 2. COMPLETING and ROLLING BACK issue their in-flight action again and go on.
/// 3. Any other phase rolls back: the request being handled died with the process, so the source
///    saw it fail and is rolling back too; its `abort` (or repeated request) then finds ROLLED BACK.
public struct DestinationMigration: Sendable {
    /// How the finished rollback answers: to a failed request with `abort`, to an `abort` with `state`.
    public enum RollbackAnswer: String, Codable, Sendable, Hashable {
        case abort, state, none
    }

    public struct Snapshot: Codable, Sendable, Hashable {
        public var migrationID: String
        /// The source broker (bare JID).
        public var peer: String
        public var proposal: MigrationProposal
        public var configuration: MigrationConfiguration
        public var phase: DestinationPhase
        public var phaseEnteredAt: Date
        public var inFlight: MigrationAction?
        public var attempts: Int
        public var reservation: MigrationReservation?
        /// The disk of the reserved size, in GiB: the largest virtual disk an image from the source may
        /// describe. Nil in journals written before it was kept (the announced disk is used then).
        public var reservedDiskGiB: Int?
        /// The destination network the source's network maps to.
        public var network: String?
        public var transferred: TransferredImage?
        public var received: StagedFile?
        public var imageID: String?
        public var createdInstanceID: String?
        public var instance: StartedInstance?
        public var undo: [DestinationUndo]
        public var currentUndo: DestinationUndo?
        public var rollbackReason: String?
        public var rollbackAnswer: RollbackAnswer?
        public var notes: [String]

        public var isLive: Bool { proposal.live != nil }
    }

    public private(set) var snapshot: Snapshot

    public var phase: DestinationPhase { snapshot.phase }
    public var migrationID: String { snapshot.migrationID }
    public var isFinished: Bool { snapshot.phase.isFinal }

    /// What the source is told about this migration.
    public var peerState: MigrationPeerState {
        MigrationPeerState(
            phase: snapshot.phase, instance: snapshot.phase == .started || snapshot.phase.isFinal ? snapshot.instance : nil,
            reason: snapshot.phase == .rolledBack ? snapshot.rollbackReason.map(MigrationMessage.reasonText) : nil)
    }

    var imageName: String { migrationImageName(snapshot.migrationID) }

    /// The largest disk file accepted: the announced disk size plus room for a format's metadata.
    var maximumImageBytes: Int64 { (Int64(max(snapshot.proposal.instance.diskGiB, 1)) << 30) + (64 << 20) }

    /// The largest virtual disk the received image may describe: the reserved size's disk.
    var maximumVirtualDiskBytes: Int64 {
        Int64(max(snapshot.reservedDiskGiB ?? snapshot.proposal.instance.diskGiB, 1)) << 30
    }

    /// A machine for a proposal just received; call `begin(now:)`.
    public init(migrationID: String, peer: String, proposal: MigrationProposal, configuration: MigrationConfiguration = .init(), now: Date) {
        snapshot = Snapshot(
            migrationID: migrationID, peer: peer, proposal: proposal, configuration: configuration, phase: .authorizing,
            phaseEnteredAt: now, inFlight: nil, attempts: 0, reservation: nil, network: nil, transferred: nil, received: nil,
            imageID: nil, createdInstanceID: nil, instance: nil, undo: [], currentUndo: nil, rollbackReason: nil,
            rollbackAnswer: nil, notes: [])
    }

    public init(resuming stored: Snapshot) {
        snapshot = stored
    }

    /// Handles the proposal the machine was created for.
    public mutating func begin(now: Date) -> MigrationAction {
        let spec = snapshot.proposal.instance
        let request = PolicyRequest.migrateIn(MigrationSpec(spec, region: spec.region))
        let mode: MigrationMode? = snapshot.isLive ? .live : nil
        return issue(.authorize(request, agreementID: snapshot.proposal.agreementID, mode: mode), phase: .authorizing, now: now)
    }

    /// Applies the resume rule (see the type's documentation).
    public mutating func resume(now: Date) -> MigrationAction {
        switch snapshot.phase {
        case .completed: return .completed
        case .rolledBack: return .rolledBack(reason: snapshot.rollbackReason ?? "rolled back")
        case .started: return .wait
        case .reserved where snapshot.isLive, .arriving where snapshot.isLive:
            snapshot.phase = .reserved
            snapshot.inFlight = nil
            return .wait
        case .completing, .rollingBack:
            guard let action = snapshot.inFlight else { return snapshot.phase == .rollingBack ? nextUndo(now: now) : .wait }
            snapshot.attempts += 1
            if snapshot.phase == .rollingBack, snapshot.attempts > snapshot.configuration.maxAttempts,
               !(snapshot.currentUndo?.mustSucceed ?? false) {
                return handle(.failed("gave up after \(snapshot.attempts - 1) attempts"), now: now)
            }
            return action
        default:
            return rollback("destination restarted while \(snapshot.phase.rawValue)", answer: snapshot.rollbackAnswer ?? .none, now: now)
        }
    }

    /// Issues the in-flight action again after a `.retry`.
    public mutating func retry(now: Date) -> MigrationAction {
        guard let action = snapshot.inFlight else { return .wait }
        snapshot.attempts += 1
        return action
    }

    /// Releases a reservation the source has left unused for `reservationTimeout` (it gave up, or is
    /// gone for good), so that capacity does not leak. Only RESERVED expires: no copy exists yet, and
    /// a source that comes back later gets `abort` for `transferred` and restarts its own copy.
    /// Returns nil when there is nothing to expire.
    ///
    /// `transferFailure`: the transport's word that the image announced for this reservation will
    /// never arrive (it did not connect within the transfer's deadline, or broke off for good).
    /// A source that announced a transfer and never sends `transferred` would otherwise hold the
    /// reservation, and the quota and capacity behind it, for the whole `reservationTimeout`.
    public mutating func expire(now: Date, transferFailure: String? = nil) -> MigrationAction? {
        guard snapshot.phase == .reserved else { return nil }
        if let transferFailure {
            return rollback("the image transfer ended before the image arrived: \(transferFailure)", answer: .none, now: now)
        }
        guard now >= snapshot.phaseEnteredAt.addingTimeInterval(snapshot.configuration.reservationTimeout) else { return nil }
        return rollback("reservation unused for \(Int(snapshot.configuration.reservationTimeout)) s", answer: .none, now: now)
    }

    /// The source's answer to this destination's `status` (see `MigrationRunner.checkWaitsOnSource`),
    /// for the two phases in which the destination waits on the source:
    ///
    /// - RESERVED: a source that rolled back (its `abort` never arrived) releases the reservation
    ///   now instead of at `reservationTimeout`: no copy exists yet.
    /// - STARTED (the copy runs, `cutover` or `abort` never arrived): the destination follows the
    ///   source's decision, never its own. A source that decided to cut over (`cuttingOver`, or
    ///   past the commit) completes it here: every later step of the source takes `completed` as
    ///   the commit, whether it asks `cutover` again or, having given up, `abort`. A source that
    ///   rolled back runs its copy again, so this one is terminated. Anything else (the source
    ///   still announcing or rolling back, or knowing nothing of the migration) keeps it waiting:
    ///   rolling back alone could leave no running copy, going forward alone two.
    ///
    /// Returns nil when the answer changes nothing.
    public mutating func sourceAnswered(_ state: MigrationPeerState, now: Date) -> MigrationAction? {
        guard let source = state.sourcePhase else { return nil }
        switch snapshot.phase {
        case .reserved where source == .rolledBack:
            return rollback("the source rolled back; its abort did not arrive", answer: .none, now: now)
        case .started where source == .cuttingOver || source.isCommitted:
            guard let action = cutOver(now: now) else { return nil }
            snapshot.notes.append("completed on the source's status (\(source.rawValue)): its cutover did not arrive")
            return action
        case .started where source == .rolledBack:
            return rollback("the source rolled back (its copy runs again); its abort did not arrive", answer: .none, now: now)
        default:
            return nil
        }
    }

    /// Whether this phase waits on the source and is worth asking it about (`sourceAnswered`).
    public var waitsOnSource: Bool { snapshot.phase == .reserved || snapshot.phase == .started }

    /// A request from the source for this migration.
    public mutating func received(_ message: MigrationMessage, now: Date) -> MigrationAction {
        let state = snapshot.phase
        switch message.body {
        case .propose(let proposal):
            if state == .reserved, proposal == snapshot.proposal, let reservation = snapshot.reservation {
                return .reply(reply(.reserved(reservation)))  // a repetition: its answer was lost
            }
            if state == .rolledBack { return .reply(reply(.abort(reason: MigrationMessage.reasonText(snapshot.rollbackReason ?? "rolled back")))) }
            return .reply(reply(.abort(reason: "migration \(snapshot.migrationID) is already \(state.rawValue)")))

        case .transferred(let image):
            if snapshot.isLive { return .reply(reply(.abort(reason: "transferred is unexpected in a live migration"))) }
            if state == .started, image == snapshot.transferred, let instance = snapshot.instance {
                return .reply(reply(.started(instance)))
            }
            if state == .rolledBack { return .reply(reply(.abort(reason: MigrationMessage.reasonText(snapshot.rollbackReason ?? "rolled back")))) }
            guard state == .reserved, let reservation = snapshot.reservation else {
                return .reply(reply(.abort(reason: "transferred is unexpected while \(state.rawValue)")))
            }
            snapshot.transferred = image
            guard image.bytes <= maximumImageBytes else {
                return rollback("image of \(image.bytes) bytes exceeds the \(maximumImageBytes) reserved", answer: .abort, now: now)
            }
            guard reservation.acceptedFormats.contains(image.format) else {
                return rollback("image format \(image.format) was not accepted", answer: .abort, now: now)
            }
            return issue(.transport(.receive(reservation.offer, format: image.format)), phase: .receiving, now: now)

        case .liveMigrated:
            guard snapshot.isLive else { return .reply(reply(.abort(reason: "liveMigrated is unexpected in a cold migration"))) }
            if state == .started, let instance = snapshot.instance { return .reply(reply(.started(instance))) }
            if state == .rolledBack { return .reply(reply(.abort(reason: MigrationMessage.reasonText(snapshot.rollbackReason ?? "rolled back")))) }
            guard state == .reserved, let live = snapshot.proposal.live else { return .reply(reply(.state(peerState))) }
            return issue(.driver(.confirmLive(instanceID: live.instanceID)), phase: .arriving, now: now)

        case .status where snapshot.isLive && state == .reserved:
            // Looked up now: the source's hypervisor may be moving the guest in this very moment.
            snapshot.inFlight = .driver(.probeGuest(instanceID: snapshot.proposal.live?.instanceID ?? ""))
            return snapshot.inFlight!

        case .cutover:
            return cutOver(now: now) ?? .reply(reply(.state(peerState)))

        case .abort(let reason):
            if state.isFinal || state == .completing || state == .rollingBack { return .reply(reply(.state(peerState))) }
            return rollback("source aborted: \(reason)", answer: .state, now: now)

        case .status, .reserved, .started, .state:
            return .reply(reply(.state(peerState)))
        }
    }

    /// The result of the in-flight action.
    public mutating func handle(_ result: StepResult, now: Date) -> MigrationAction {
        guard snapshot.inFlight != nil, !snapshot.phase.isFinal else { return .wait }
        if snapshot.phase == .rollingBack { return continueRollback(after: result, now: now) }
        if snapshot.phase == .reserved, case .driver(.probeGuest) = snapshot.inFlight {
            // The answer to `status`: the state, with what the hypervisor shows.
            snapshot.inFlight = nil
            var state = peerState
            switch result {
            case .presence(let presence): state.guest = presence
            case .failed(let reason): state.reason = MigrationMessage.reasonText("cannot look at the guest: \(reason)")
            default: break
            }
            return .reply(reply(.state(state)))
        }
        if snapshot.phase == .arriving {
            // Not a reason to roll back: the source's hypervisor moved the guest, or is moving it.
            if case .instance(let instance) = result, instance.state == .running {
                let started = StartedInstance(instanceID: instance.id, addresses: instance.addresses)
                snapshot.instance = started
                snapshot.createdInstanceID = instance.id
                snapshot.phase = .started
                snapshot.phaseEnteredAt = now
                snapshot.inFlight = nil
                return .reply(reply(.started(started)))
            }
            let why: String =
                switch result {
                case .failed(let reason): reason
                case .instance(let instance): "it is \(instance.state)"
                default: "unexpected result"
                }
            snapshot.phase = .reserved
            snapshot.inFlight = nil
            var state = peerState
            state.reason = MigrationMessage.reasonText("the guest does not run here: \(why)")
            return .reply(reply(.state(state)))
        }
        if snapshot.phase == .completing {
            // Metering and the offer are bookkeeping: a failure is noted, the migration is complete regardless.
            if case .failed(let reason) = result { snapshot.notes.append("after cut-over: \(reason)") }
            if case .metering = snapshot.inFlight, !snapshot.isLive {
                return issue(.transport(.withdraw(migrationID: snapshot.migrationID)), phase: .completing, now: now)
            }
            snapshot.phase = .completed
            snapshot.phaseEnteredAt = now
            snapshot.inFlight = nil
            return .reply(reply(.state(peerState)))
        }
        if case .failed(let reason) = result {
            return rollback("\(snapshot.phase.rawValue) failed: \(reason)", answer: .abort, now: now)
        }
        let spec = snapshot.proposal.instance
        switch (snapshot.phase, result) {
        case (.authorizing, .authorized(let decision)):
            guard decision.isAllowed else {
                return rollback("policy refused: \(decision.reasons.map(\.description).joined(separator: "; "))", answer: .abort, now: now)
            }
            return issue(.driver(.inspect), phase: .inspecting, now: now)

        case (.inspecting, .inventory(let inventory)):
            if let region = spec.region, region != inventory.region {
                return rollback("region \(region) is not offered here (\(inventory.region))", answer: .abort, now: now)
            }
            let fitting = inventory.sizes
                .filter { $0.vCPU >= spec.vCPU && $0.memoryMiB >= spec.memoryMiB && $0.diskGiB >= spec.diskGiB }
                .sorted { ($0.vCPU, $0.memoryMiB, $0.diskGiB, $0.id) < ($1.vCPU, $1.memoryMiB, $1.diskGiB, $1.id) }
            guard let size = fitting.first else {
                return rollback("no size fits \(spec.vCPU) vCPU, \(spec.memoryMiB) MiB, \(spec.diskGiB) GiB", answer: .abort, now: now)
            }
            guard inventory.capacity.admits(size) else {
                return rollback("no capacity for \(size.id)", answer: .abort, now: now)
            }
            if let live = snapshot.proposal.live {
                guard inventory.acceptsLiveMigration else {
                    return rollback(
                        "live migration needs libvirt on both sides; this cloud's driver is \(inventory.driverName.isEmpty ? "another" : inventory.driverName)",
                        answer: .abort, now: now)
                }
                // The prepared disk gets the size the source announces: no larger than the size it reserves.
                guard live.diskBytes <= Int64(max(size.diskGiB, 1)) << 30 else {
                    return rollback("a live disk of \(live.diskBytes) bytes exceeds the \(size.diskGiB) GiB of \(size.id)", answer: .abort, now: now)
                }
                snapshot.reservation = MigrationReservation(
                    sizeID: size.id, acceptedFormats: [], region: inventory.region, offer: TransferOffer(host: "", port: "", token: ""))
                snapshot.undo.append(.discardLiveTarget)
                return issue(.driver(.prepareLive(name: spec.name, instanceID: live.instanceID, diskBytes: live.diskBytes)), phase: .preparing, now: now)
            }
            let accepted = inventory.importFormats.filter { spec.canConvert || spec.imageFormats.contains($0) }
            guard !accepted.isEmpty else {
                return rollback("no common image format (we import \(inventory.importFormats.map(\.rawValue)))", answer: .abort, now: now)
            }
            snapshot.reservation = MigrationReservation(
                sizeID: size.id, acceptedFormats: accepted, region: inventory.region, offer: TransferOffer(host: "", port: "", token: ""))
            snapshot.reservedDiskGiB = size.diskGiB
            snapshot.network = spec.networkName.flatMap { inventory.networkMap[$0] } ?? inventory.defaultNetwork
            snapshot.undo.append(.withdrawOffer)
            return issue(.transport(.prepareOffer(migrationID: snapshot.migrationID, maximumBytes: maximumImageBytes)), phase: .offering, now: now)

        case (.preparing, .liveTarget(let target)):
            snapshot.reservation?.live = target
            return replyReserved(now: now)

        case (.offering, .offer(let offer)):
            snapshot.reservation?.offer = offer
            return replyReserved(now: now)

        case (.receiving, .file(let file)):
            snapshot.undo.append(.removeFiles([file.name]))
            guard let expected = snapshot.transferred, file.sha256 == expected.sha256, file.bytes == expected.bytes else {
                let expected = snapshot.transferred
                return rollback(
                    "received file does not match: \(file.bytes) bytes sha256 \(file.sha256), announced \(expected?.bytes ?? 0) bytes sha256 \(expected?.sha256 ?? "-")",
                    answer: .abort, now: now)
            }
            snapshot.received = file
            snapshot.undo.append(.deregisterImages(named: imageName))
            return issue(
                .driver(.importImage(file: file, imageName: imageName, maxVirtualSizeBytes: maximumVirtualDiskBytes)),
                phase: .importing, now: now)

        case (.importing, .image(let image)):
            guard let reservation = snapshot.reservation else { return rollback("no reservation", answer: .abort, now: now) }
            snapshot.imageID = image.id
            snapshot.undo.append(.terminateInstances(fromImagesNamed: imageName))
            var extra = ["migration": snapshot.migrationID]
            if let network = snapshot.network { extra["network"] = network }
            if !spec.addresses.isEmpty { extra["requestedAddresses"] = spec.addresses.joined(separator: ",") }
            return issue(
                .driver(.create(name: spec.name, sizeID: reservation.sizeID, imageID: image.id, extra: extra)),
                phase: .creating, now: now)

        case (.creating, .instance(let instance)):
            snapshot.createdInstanceID = instance.id
            return issue(.driver(.start(instanceID: instance.id)), phase: .starting, now: now)

        case (.starting, .instance(let instance)):
            guard instance.state == .running else {
                return rollback("instance \(instance.id) is \(instance.state), not running", answer: .abort, now: now)
            }
            let started = StartedInstance(instanceID: instance.id, addresses: instance.addresses)
            snapshot.instance = started
            snapshot.phase = .started
            snapshot.phaseEnteredAt = now
            snapshot.inFlight = nil
            return .reply(reply(.started(started)))

        default:
            return rollback("unexpected result \(result) while \(snapshot.phase.rawValue)", answer: .abort, now: now)
        }
    }

    // MARK: helpers

    /// Commits from STARTED: nothing is undone any more; metering moves here. Nil in any other phase.
    private mutating func cutOver(now: Date) -> MigrationAction? {
        guard snapshot.phase == .started, let instance = snapshot.instance, let reservation = snapshot.reservation else { return nil }
        snapshot.undo = []
        let change = MeteringChange.start(
            migrationID: snapshot.migrationID, instanceID: instance.instanceID, sizeID: reservation.sizeID,
            agreementID: snapshot.proposal.agreementID, movedFrom: snapshot.peer, since: snapshot.phaseEnteredAt)
        return issue(.metering(change), phase: .completing, now: now)
    }

    private func reply(_ body: MigrationMessage.Body) -> MigrationMessage {
        MigrationMessage(migrationID: snapshot.migrationID, body: body)
    }

    /// The reservation is complete (transfer offer or live target made): RESERVED, and the source is told.
    private mutating func replyReserved(now: Date) -> MigrationAction {
        guard let reservation = snapshot.reservation else { return rollback("no reservation", answer: .abort, now: now) }
        snapshot.phase = .reserved
        snapshot.phaseEnteredAt = now
        snapshot.inFlight = nil
        return .reply(reply(.reserved(reservation)))
    }

    private mutating func issue(_ action: MigrationAction, phase: DestinationPhase, now: Date) -> MigrationAction {
        if phase != snapshot.phase { snapshot.phaseEnteredAt = now }
        snapshot.phase = phase
        snapshot.inFlight = action
        snapshot.attempts = 1
        return action
    }

    private mutating func rollback(_ reason: String, answer: RollbackAnswer, now: Date) -> MigrationAction {
        snapshot.rollbackReason = reason
        snapshot.rollbackAnswer = answer
        snapshot.phase = .rollingBack
        snapshot.phaseEnteredAt = now
        snapshot.currentUndo = nil
        return nextUndo(now: now)
    }

    private mutating func nextUndo(now: Date) -> MigrationAction {
        guard let next = snapshot.undo.enumerated().min(by: { ($0.element.order, $0.offset) < ($1.element.order, $1.offset) }) else {
            let reason = snapshot.rollbackReason ?? "rolled back"
            snapshot.phase = .rolledBack
            snapshot.phaseEnteredAt = now
            snapshot.inFlight = nil
            snapshot.currentUndo = nil
            switch snapshot.rollbackAnswer ?? .none {
            case .abort: return .reply(reply(.abort(reason: MigrationMessage.reasonText(reason))))
            case .state: return .reply(reply(.state(peerState)))
            case .none: return .rolledBack(reason: reason)
            }
        }
        snapshot.undo.remove(at: next.offset)
        snapshot.currentUndo = next.element
        let action: MigrationAction =
            switch next.element {
            case .terminateInstances(let name): .driver(.terminateInstances(fromImagesNamed: name))
            case .deregisterImages(let name): .driver(.deregisterImages(named: name))
            case .removeFiles(let names): .driver(.removeFiles(names))
            case .withdrawOffer: .transport(.withdraw(migrationID: snapshot.migrationID))
            case .discardLiveTarget:
                .driver(.discardLiveTarget(
                    instanceID: snapshot.proposal.live?.instanceID ?? "", diskPath: snapshot.reservation?.live?.diskPath,
                    consoleLogPath: snapshot.reservation?.live?.consoleLogPath))
            }
        snapshot.inFlight = action
        snapshot.attempts = 1
        return action
    }

    private mutating func continueRollback(after result: StepResult, now: Date) -> MigrationAction {
        if case .failed(let reason) = result {
            if snapshot.currentUndo?.mustSucceed ?? false {
                return .retry(after: snapshot.configuration.retryDelay, reason: "undo failed: \(reason)")
            }
            snapshot.notes.append("undo failed: \(reason)")
        }
        return nextUndo(now: now)
    }
}
