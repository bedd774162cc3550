import Foundation
import Policy
import Providers

/// Where the source side of a migration stands.
public enum SourcePhase: String, Codable, Sendable, Hashable, CaseIterable {
    case authorizing, proposing, stopping, poweringOff, snapshotting, exporting, converting, transferring
    /// Live: the hypervisor is moving the running guest to the destination's.
    case migratingLive
    /// Live: the move's outcome is not known (it failed, or the process restarted during it); the
    /// source looks at its hypervisor and asks the destination what theirs shows.
    case verifyingLive
    /// `transferred` sent; waiting for the destination to confirm its copy runs.
    case announcing
    /// `cutover` sent; the destination's answer commits the migration.
    case cuttingOver
    case terminating, cleaningUp, handingOverMetering
    case completed, rollingBack, rolledBack

    public var isFinal: Bool { self == .completed || self == .rolledBack }
    /// After the destination committed: only forward from here, never a rollback.
    public var isCommitted: Bool { [.terminating, .cleaningUp, .handingOverMetering, .completed].contains(self) }
}

/// Work to undo if the migration fails, recorded when the step that needs it is issued (so a crash
/// in the middle of that step is covered too).
public enum SourceUndo: Codable, Sendable, Hashable {
    case removeFiles([String])
    case deregisterImages(named: String)
    /// Tell the destination to release what it holds. `mustConfirm` once `transferred` was sent:
    /// from then on the destination may be running a copy, so the source may start its own again
    /// only after the destination confirms it rolled back.
    case abortDestination(mustConfirm: Bool)
    case restartInstance(String)

    /// Rollback order, whatever the order of recording: local garbage first, then the destination,
    /// and the source instance last, so that two copies never run at once.
    var order: Int {
        switch self {
        case .removeFiles: 0
        case .deregisterImages: 1
        case .abortDestination: 2
        case .restartInstance: 3
        }
    }

    /// Undo steps that must succeed before the rollback may go on.
    var mustSucceed: Bool {
        switch self {
        case .removeFiles, .deregisterImages: false
        case .abortDestination(let mustConfirm): mustConfirm
        case .restartInstance: true
        }
    }
}

/// The source side of a cold migration as a value type with no IO and no clock (the style of
/// `NegotiationStateMachine`): every input takes `now` and returns the one `MigrationAction` the
/// runner performs next; the state changes only on the result of an action or on the peer's answer.
///
/// **Steps and their undo.**
///
/// | phase            | action                                 | undo recorded                    |
/// |------------------|----------------------------------------|----------------------------------|
/// | authorizing      | check agreement + policy (`migrateOut`)| —                                |
/// | proposing        | send `propose`                         | abort at the destination         |
/// | stopping         | graceful shutdown with a timeout       | start the instance again         |
/// | poweringOff      | hard power-off after the timeout       | (same)                           |
/// | snapshotting     | snapshot the disk as `migration-ID`    | deregister that image            |
/// | exporting        | export in the transfer format          | remove the file                  |
/// | converting       | `qemu-img convert` when needed         | remove the file                  |
/// | transferring     | send the file to the destination offer | —                                |
/// | announcing       | send `transferred`                     | abort becomes *must confirm*     |
/// | cuttingOver      | send `cutover`; the answer commits     | all undo dropped                 |
/// | terminating …    | terminate, clean up, hand over metering| none: retried until done         |
///
/// **Invariants.** The source terminates its copy only after the destination answered `cutover`
/// with `completed` (which it does only while its copy runs). The destination starts only on
/// `transferred`, which the source sends only after its instance stopped. Rolling back starts the
/// source instance again only after the destination confirmed it holds nothing, once it might.
///
/// **Persistence.** The runner stores `snapshot` before performing each action; the action being
/// performed is part of it (`inFlight`).
///
/// **Resume rule** (`init(resuming:)` then `resume(now:)`):
/// 1. COMPLETED and ROLLED BACK stay as they are.
/// 2. Otherwise the in-flight action is issued again: every action is idempotent (see
///    `MigrationOperation`), and every request to the destination is answered from its own state
///    (a repeated `propose` gets the same reservation, a repeated `transferred` the same `started`).
/// 3. After `maxAttempts` issues of one forward step, the step counts as failed and the migration
///    rolls back. Undo steps that must succeed, and the steps after the commit, are retried without
///    limit: giving up there would leave zero or two running copies.
/// So both sides end in COMPLETED, or both in ROLLED BACK with the source running: the destination
/// answers an `abort` sent after its commit with `completed`, and the source then finishes forward.
///
/// **Live migration** (`mode` `.live`, libvirt on both sides): the guest never stops.
///
/// | phase          | action                                          | undo recorded            |
/// |----------------|-------------------------------------------------|--------------------------|
/// | authorizing    | `migrateOut`, and the agreement grants live     | —                        |
/// | proposing      | send `propose` with the disk size               | abort at the destination |
/// | migratingLive  | hypervisor moves the guest to the reserved URI  | —                        |
/// | verifyingLive  | (when the move failed or its outcome was lost) look at the guest here, ask the destination (`status`) |
/// | announcing     | send `liveMigrated`, answered `started`         | none: the guest left     |
/// | cuttingOver …  | send `cutover`, then hand over metering         | none                     |
///
/// The source decides from facts, never from what it last tried: the guest running here and not
/// at the destination means the move failed (the hypervisor keeps it running here), so it rolls
/// back (the destination removes what it prepared); the guest gone from here means it moved, so it
/// goes forward and retries until the destination confirms. While the destination still shows the
/// guest arriving (a move the hypervisors are still doing), it waits. After a restart during
/// `migratingLive` the move is not issued again: the source verifies instead.
public struct SourceMigration: Sendable {
    /// Everything the machine knows; storing and restoring it loses nothing.
    public struct Snapshot: Codable, Sendable, Hashable {
        public var migrationID: String
        public var agreementID: String
        /// The destination broker (bare JID).
        public var peer: String
        public var instanceID: String
        public var spec: MigratingInstanceSpec
        public var configuration: MigrationConfiguration
        public var phase: SourcePhase
        public var phaseEnteredAt: Date
        /// The action being performed (stored before it is performed).
        public var inFlight: MigrationAction?
        /// Issues of `inFlight` so far, restarts included.
        public var attempts: Int
        public var reservation: MigrationReservation?
        public var exportFormat: ImageFormat?
        public var transferFormat: ImageFormat?
        public var snapshotImageID: String?
        public var exported: StagedFile?
        public var transferFile: StagedFile?
        public var destinationInstance: StartedInstance?
        /// When the destination said its copy runs (`started`): metering moves from then.
        public var destinationStartedAt: Date?
        /// Undo recorded so far; run in `SourceUndo.order` when rolling back.
        public var undo: [SourceUndo]
        /// The undo step being performed while rolling back.
        public var currentUndo: SourceUndo?
        public var rollbackReason: String?
        /// Problems that did not change the outcome (a leftover file, a failed cleanup).
        public var notes: [String]
        /// nil: cold (snapshots stored before live migration existed are cold).
        public var mode: MigrationMode?
        /// Live: the virtual size of the guest's disk, for the destination to prepare.
        public var liveDiskBytes: Int64?
        /// Live: the guest has left this hypervisor (from here on only forward).
        public var guestLeft: Bool?
        /// Live: why the hypervisor's move failed, while verifying.
        public var liveFailure: String?

        public var isLive: Bool { mode == .live }
    }

    public private(set) var snapshot: Snapshot

    public var phase: SourcePhase { snapshot.phase }
    public var migrationID: String { snapshot.migrationID }
    public var isFinished: Bool { snapshot.phase.isFinal }

    public init(
        migrationID: String, agreementID: String, peer: String, instanceID: String, spec: MigratingInstanceSpec,
        configuration: MigrationConfiguration = .init(), mode: MigrationMode = .cold, liveDiskBytes: Int64? = nil, now: Date
    ) {
        snapshot = Snapshot(
            migrationID: migrationID, agreementID: agreementID, peer: peer, instanceID: instanceID, spec: spec,
            configuration: configuration, phase: .authorizing, phaseEnteredAt: now, inFlight: nil, attempts: 0,
            reservation: nil, exportFormat: nil, transferFormat: nil, snapshotImageID: nil, exported: nil,
            transferFile: nil, destinationInstance: nil, undo: [], currentUndo: nil, rollbackReason: nil, notes: [],
            mode: mode, liveDiskBytes: liveDiskBytes, guestLeft: nil, liveFailure: nil)
    }

    /// Restores a stored machine; call `resume(now:)` next and perform its action.
    public init(resuming stored: Snapshot) {
        snapshot = stored
    }

    var imageName: String { migrationImageName(snapshot.migrationID) }
    var exportFileName: String { "\(snapshot.migrationID).export.\(snapshot.exportFormat?.rawValue ?? "img")" }
    var convertedFileName: String { "\(snapshot.migrationID).transfer.\(snapshot.transferFormat?.rawValue ?? "img")" }

    /// The first action: check the agreement and the policy.
    public mutating func begin(now: Date) -> MigrationAction {
        guard snapshot.inFlight == nil, snapshot.phase == .authorizing else { return snapshot.inFlight ?? .wait }
        let request = PolicyRequest.migrateOut(MigrationSpec(snapshot.spec, region: snapshot.spec.region))
        return issue(.authorize(request, agreementID: snapshot.agreementID, mode: snapshot.isLive ? .live : nil), phase: .authorizing, now: now)
    }

    /// Applies the resume rule (see the type's documentation).
    public mutating func resume(now: Date) -> MigrationAction {
        switch snapshot.phase {
        case .completed: return .completed
        case .rolledBack: return .rolledBack(reason: snapshot.rollbackReason ?? "rolled back")
        default: break
        }
        guard let action = snapshot.inFlight else {
            // Every phase but the first and the final ones has its step in flight; anything else is
            // a damaged snapshot, and undoing is the safe way out of it.
            return snapshot.phase == .authorizing ? begin(now: now) : rollback("no step recorded while \(snapshot.phase.rawValue)", now: now)
        }
        if case .driver(.migrateLive) = action {
            // The hypervisor's move was under way when this process stopped (it went on, or ended,
            // without us): look at where the guest is rather than move it again.
            return verifyLive(now: now)
        }
        snapshot.attempts += 1
        if snapshot.attempts > snapshot.configuration.maxAttempts && !mustSucceed {
            return handle(.failed("gave up after \(snapshot.attempts - 1) attempts"), now: now)
        }
        return action
    }

    /// Issues the in-flight action again after a `.retry`.
    public mutating func retry(now: Date) -> MigrationAction { resume(now: now) }

    /// Whether the in-flight step may not be abandoned.
    private var mustSucceed: Bool {
        if snapshot.phase.isCommitted { return true }
        // Once the hypervisor may have moved the guest, giving up could leave no running copy.
        if snapshot.isLive, [.migratingLive, .verifyingLive, .announcing, .cuttingOver].contains(snapshot.phase) { return true }
        if snapshot.phase == .rollingBack { return snapshot.currentUndo?.mustSucceed ?? false }
        return false
    }

    /// The result of the in-flight action.
    public mutating func handle(_ result: StepResult, now: Date) -> MigrationAction {
        guard let inFlight = snapshot.inFlight, !snapshot.phase.isFinal else { return resume(now: now) }
        if snapshot.phase == .rollingBack { return continueRollback(after: result, now: now) }
        if snapshot.isLive, let next = handleLive(result, inFlight: inFlight, now: now) { return next }
        if case .failed(let reason) = result { return failed(inFlight, reason: reason, now: now) }
        let spec = snapshot.spec
        switch (snapshot.phase, result) {
        case (.authorizing, .authorized(let decision)):
            guard decision.isAllowed else {
                return finishRolledBack("policy refused: \(decision.reasons.map(\.description).joined(separator: "; "))", now: now)
            }
            let live = snapshot.isLive ? LiveMigrationRequest(instanceID: snapshot.instanceID, diskBytes: snapshot.liveDiskBytes ?? 0) : nil
            let proposal = MigrationProposal(agreementID: snapshot.agreementID, instance: spec, live: live)
            snapshot.undo.append(.abortDestination(mustConfirm: false))
            return issue(.send(message(.propose(proposal))), phase: .proposing, now: now)

        case (.proposing, .answer(let answer)):
            switch answer.body {
            case .reserved(let reservation):
                guard let formats = chooseFormats(reservation.acceptedFormats) else {
                    return rollback("no image format both sides support (destination accepts \(reservation.acceptedFormats.map(\.rawValue)))", now: now)
                }
                snapshot.reservation = reservation
                snapshot.exportFormat = formats.export
                snapshot.transferFormat = formats.transfer
                snapshot.undo.append(.restartInstance(snapshot.instanceID))
                return issue(
                    .driver(.shutdown(instanceID: snapshot.instanceID, gracePeriod: snapshot.configuration.gracefulShutdownTimeout)),
                    phase: .stopping, now: now)
            case .abort(let reason):
                // Refused: nothing was reserved, so there is nothing to abort.
                snapshot.undo.removeAll { if case .abortDestination = $0 { true } else { false } }
                return rollback("destination refused: \(reason)", now: now)
            default:
                return rollback("unexpected answer \(answer.kind) to propose", now: now)
            }

        case (.stopping, .stopped(let gracefully)):
            if !gracefully {
                return issue(.driver(.destroy(instanceID: snapshot.instanceID)), phase: .poweringOff, now: now)
            }
            return issueSnapshot(now: now)

        case (.poweringOff, .stopped):
            return issueSnapshot(now: now)

        case (.snapshotting, .image(let image)):
            snapshot.snapshotImageID = image.id
            snapshot.undo.append(.removeFiles([exportFileName]))
            return issue(
                .driver(.export(imageID: image.id, format: snapshot.exportFormat ?? .raw, fileName: exportFileName)),
                phase: .exporting, now: now)

        case (.exporting, .file(let file)):
            snapshot.exported = file
            if let target = snapshot.transferFormat, target != file.format {
                snapshot.undo.append(.removeFiles([convertedFileName]))
                return issue(.driver(.convert(source: file, format: target, fileName: convertedFileName)), phase: .converting, now: now)
            }
            return issueTransfer(file, now: now)

        case (.converting, .file(let file)):
            return issueTransfer(file, now: now)

        case (.transferring, .done):
            guard let file = snapshot.transferFile else { return rollback("no transferred file recorded", now: now) }
            // From now on the destination may start a copy: restarting ours needs its confirmation.
            snapshot.undo = snapshot.undo.map { if case .abortDestination = $0 { .abortDestination(mustConfirm: true) } else { $0 } }
            let announcement = TransferredImage(format: file.format, bytes: file.bytes, sha256: file.sha256)
            return issue(.send(message(.transferred(announcement))), phase: .announcing, now: now)

        case (.announcing, .answer(let answer)):
            switch answer.body {
            case .started(let started):
                snapshot.destinationInstance = started
                snapshot.destinationStartedAt = now
                return issue(.send(message(.cutover)), phase: .cuttingOver, now: now)
            case .abort(let reason): return rollback("destination failed: \(reason)", now: now)
            default: return rollback("unexpected answer \(answer.kind) to transferred", now: now)
            }

        case (.cuttingOver, .answer(let answer)):
            if case .state(let state) = answer.body, state.phase == .completed {
                return commit(destination: state.instance, now: now)
            }
            return rollback("destination did not commit the cut-over (answered \(describe(answer)))", now: now)

        case (.terminating, .done):
            return issue(.driver(.deregisterImages(named: imageName)), phase: .cleaningUp, now: now)

        case (.cleaningUp, .done):
            if case .driver(.deregisterImages) = inFlight {
                return issue(.driver(.removeFiles(stagedFileNames)), phase: .cleaningUp, now: now)
            }
            return issueMeteringHandoff(now: now)

        case (.handingOverMetering, .done):
            snapshot.phase = .completed
            snapshot.phaseEnteredAt = now
            snapshot.inFlight = nil
            return .completed

        default:
            return failed(inFlight, reason: "unexpected result \(result) in phase \(snapshot.phase.rawValue)", now: now)
        }
    }

    // MARK: forward helpers

    private func message(_ body: MigrationMessage.Body) -> MigrationMessage {
        MigrationMessage(migrationID: snapshot.migrationID, body: body)
    }

    private var stagedFileNames: [String] { [exportFileName, convertedFileName] }

    /// The format to export in and the format to send: the destination's most preferred format the
    /// source exports directly; otherwise its most preferred one, converted from what the source exports.
    private func chooseFormats(_ accepted: [ImageFormat]) -> (export: ImageFormat, transfer: ImageFormat)? {
        let exportable = snapshot.spec.imageFormats
        if let direct = accepted.first(where: exportable.contains) { return (direct, direct) }
        guard snapshot.spec.canConvert, let target = accepted.first,
              let from = exportable.contains(.raw) ? .raw : exportable.first
        else { return nil }
        return (from, target)
    }

    private mutating func issueSnapshot(now: Date) -> MigrationAction {
        snapshot.undo.append(.deregisterImages(named: imageName))
        return issue(.driver(.snapshot(instanceID: snapshot.instanceID, imageName: imageName)), phase: .snapshotting, now: now)
    }

    private mutating func issueTransfer(_ file: StagedFile, now: Date) -> MigrationAction {
        guard let reservation = snapshot.reservation else { return rollback("no reservation recorded", now: now) }
        snapshot.transferFile = file
        return issue(.transport(.send(file, reservation.offer)), phase: .transferring, now: now)
    }

    private mutating func issueMeteringHandoff(now: Date) -> MigrationAction {
        let change = MeteringChange.stop(
            migrationID: snapshot.migrationID, instanceID: snapshot.instanceID,
            movedTo: snapshot.destinationInstance.map { "\(snapshot.peer)/\($0.instanceID)" } ?? snapshot.peer,
            since: snapshot.destinationStartedAt)
        return issue(.metering(change), phase: .handingOverMetering, now: now)
    }

    /// The destination committed: nothing is undone any more; the source copy goes.
    private mutating func commit(destination: StartedInstance?, now: Date) -> MigrationAction {
        if let destination { snapshot.destinationInstance = destination }
        snapshot.undo = []
        snapshot.currentUndo = nil
        snapshot.rollbackReason = nil
        // Live: the hypervisor already removed the guest and its disk here; no image, no file.
        if snapshot.isLive { return issueMeteringHandoff(now: now) }
        return issue(.driver(.terminate(instanceID: snapshot.instanceID)), phase: .terminating, now: now)
    }

    private mutating func issue(_ action: MigrationAction, phase: SourcePhase, now: Date) -> MigrationAction {
        if phase != snapshot.phase { snapshot.phaseEnteredAt = now }
        snapshot.phase = phase
        snapshot.inFlight = action
        snapshot.attempts = 1
        return action
    }

    private mutating func failed(_ action: MigrationAction, reason: String, now: Date) -> MigrationAction {
        if snapshot.phase.isCommitted {
            if snapshot.phase == .cleaningUp {
                // Leftovers are garbage, not a broken migration: note them and go on.
                snapshot.notes.append("cleanup failed: \(reason)")
                if case .driver(.deregisterImages) = action {
                    return issue(.driver(.removeFiles(stagedFileNames)), phase: .cleaningUp, now: now)
                }
                return issueMeteringHandoff(now: now)
            }
            return .retry(after: snapshot.configuration.retryDelay, reason: "\(snapshot.phase.rawValue): \(reason)")
        }
        return rollback("\(snapshot.phase.rawValue) failed: \(reason)", now: now)
    }

    // MARK: live migration

    /// The live steps (nil: the step is one cold and live share, handled by `handle`).
    private mutating func handleLive(_ result: StepResult, inFlight: MigrationAction, now: Date) -> MigrationAction? {
        switch (snapshot.phase, result) {
        case (.proposing, .answer(let answer)):
            guard case .reserved(let reservation) = answer.body else { return nil }
            guard let target = reservation.live else { return rollback("the destination offered no live migration target", now: now) }
            snapshot.reservation = reservation
            return issue(.driver(.migrateLive(instanceID: snapshot.instanceID, target: target)), phase: .migratingLive, now: now)

        case (.migratingLive, .done):
            return announceLive(now: now)

        case (.migratingLive, .failed(let reason)):
            snapshot.liveFailure = reason
            return verifyLive(now: now)

        case (.verifyingLive, .presence(let here)):
            switch here {
            case .absent: return announceLive(now: now)
            case .running:
                // Running here: ask what the destination's hypervisor shows before undoing anything.
                snapshot.inFlight = .send(message(.status))
                return snapshot.inFlight!
            case .arriving:
                return waitAndVerify("the guest is here but not running (a move ending?)", now: now)
            }

        case (.verifyingLive, .answer(let answer)):
            guard case .state(let state) = answer.body else { return waitAndVerify("unexpected answer \(answer.kind) to status", now: now) }
            switch state.guest {
            case .arriving?: return waitAndVerify("the destination shows the guest arriving: the hypervisors are still moving it", now: now)
            case .running?: return waitAndVerify("the destination shows the guest running while it runs here too", now: now)
            case .absent? where state.phase == .reserved, nil where state.phase == .rolledBack || state.phase == .unknown:
                // Running here, not there: the move failed and the hypervisor kept the guest here.
                return rollback("live migration failed: \(snapshot.liveFailure ?? "the process stopped during the move")", now: now)
            default:
                // The destination could not look, or says something that does not fit the guest running here.
                return waitAndVerify("the destination answered \(describe(answer)) while the guest runs here", now: now)
            }

        case (.verifyingLive, .failed(let reason)):
            return waitAndVerify(reason, now: now)

        case (.announcing, .answer(let answer)):
            switch answer.body {
            case .started(let started):
                snapshot.destinationInstance = started
                snapshot.destinationStartedAt = now
                return issue(.send(message(.cutover)), phase: .cuttingOver, now: now)
            case .state(let state) where state.phase == .completed:
                return commit(destination: state.instance, now: now)
            default:
                // The guest left here: there is no going back, only asking again.
                return .retry(after: snapshot.configuration.retryDelay, reason: "the destination has not confirmed the guest runs there (answered \(describe(answer)))")
            }

        case (.announcing, .failed(let reason)), (.cuttingOver, .failed(let reason)):
            return .retry(after: snapshot.configuration.retryDelay, reason: "\(snapshot.phase.rawValue): \(reason)")

        case (.cuttingOver, .answer(let answer)):
            if case .state(let state) = answer.body, state.phase == .completed { return commit(destination: state.instance, now: now) }
            return .retry(after: snapshot.configuration.retryDelay, reason: "the destination did not commit the cut-over (answered \(describe(answer)))")

        default:
            return nil
        }
    }

    /// The guest left: tell the destination, which answers once it sees the guest running there.
    private mutating func announceLive(now: Date) -> MigrationAction {
        snapshot.guestLeft = true
        snapshot.undo = []
        return issue(.send(message(.liveMigrated)), phase: .announcing, now: now)
    }

    /// Looks at the guest here first; the destination is asked next when it still runs here.
    private mutating func verifyLive(now: Date) -> MigrationAction {
        issue(.driver(.probeGuest(instanceID: snapshot.instanceID)), phase: .verifyingLive, now: now)
    }

    /// Verifies again after a pause, from the guest here (what was true a moment ago may not be).
    private mutating func waitAndVerify(_ reason: String, now: Date) -> MigrationAction {
        _ = verifyLive(now: now)
        return .retry(after: snapshot.configuration.retryDelay, reason: reason)
    }

    // MARK: rollback

    private mutating func rollback(_ reason: String, now: Date) -> MigrationAction {
        snapshot.rollbackReason = reason
        snapshot.phase = .rollingBack
        snapshot.phaseEnteredAt = now
        snapshot.currentUndo = nil
        return nextUndo(now: now)
    }

    private mutating func nextUndo(now: Date) -> MigrationAction {
        guard let next = snapshot.undo.enumerated().min(by: { ($0.element.order, $0.offset) < ($1.element.order, $1.offset) }) else {
            return finishRolledBack(snapshot.rollbackReason ?? "rolled back", now: now)
        }
        snapshot.undo.remove(at: next.offset)
        snapshot.currentUndo = next.element
        let action: MigrationAction =
            switch next.element {
            case .removeFiles(let names): .driver(.removeFiles(names))
            case .deregisterImages(let name): .driver(.deregisterImages(named: name))
            case .abortDestination: .send(message(.abort(reason: MigrationMessage.reasonText(snapshot.rollbackReason ?? "rolled back"))))
            case .restartInstance(let id): .driver(.start(instanceID: id))
            }
        snapshot.inFlight = action
        snapshot.attempts = 1
        return action
    }

    private mutating func continueRollback(after result: StepResult, now: Date) -> MigrationAction {
        guard let undo = snapshot.currentUndo else { return nextUndo(now: now) }
        if case .abortDestination = undo, case .answer(let answer) = result {
            if case .state(let state) = answer.body {
                if state.phase == .completed {
                    // Too late to abort: the destination committed, so finish forward instead.
                    snapshot.notes.append("rollback (\(snapshot.rollbackReason ?? "")) overtaken: destination had committed")
                    return commit(destination: state.instance, now: now)
                }
                if state.phase == .rolledBack || state.phase == .unknown { return nextUndo(now: now) }
            }
            if !undo.mustSucceed { return nextUndo(now: now) }
            return .retry(after: snapshot.configuration.retryDelay, reason: "destination has not confirmed the abort (answered \(describe(answer)))")
        }
        if case .failed(let reason) = result {
            if undo.mustSucceed {
                return .retry(after: snapshot.configuration.retryDelay, reason: "undo failed: \(reason)")
            }
            snapshot.notes.append("undo failed: \(reason)")
        }
        return nextUndo(now: now)
    }

    private mutating func finishRolledBack(_ reason: String, now: Date) -> MigrationAction {
        snapshot.rollbackReason = reason
        snapshot.phase = .rolledBack
        snapshot.phaseEnteredAt = now
        snapshot.inFlight = nil
        snapshot.currentUndo = nil
        snapshot.undo = []
        return .rolledBack(reason: reason)
    }

    private func describe(_ message: MigrationMessage) -> String {
        switch message.body {
        case .state(let state): "state \(state.phase.rawValue)\(state.reason.map { " (\($0))" } ?? "")"
        case .abort(let reason): "abort (\(reason))"
        default: message.kind
        }
    }
}
