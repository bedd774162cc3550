import Foundation
import Providers

/// One run of a backup policy as a value type with no IO and no clock: every input is a
/// `mutating func` taking `now` and returning the one `Action` the caller performs, then reports
/// back through the matching event.
///
/// Instances are backed up one at a time, in the policy's order. Per instance (a **unit**):
///
/// ```
/// snapshot:         snapshotting → exporting → uploading → publishing → cleaning → done
/// stop-and-export:  checking → stopping → snapshotting → starting → exporting → ...
///                   (an instance found stopped is not stopped or started)
/// any failure:      [starting, if we stopped it] → cleaning → failed
/// ```
///
/// - **snapshotting** captures the disk as an image named after the backup (`name`), so a
///   restart finds it; **exporting** writes that image to a local file in the policy's format;
///   **uploading** stores it as `<policy>/<backupID>/disk.<format>`; **publishing** writes the
///   manifest beside it (the backup exists from then on); **cleaning** deletes the image and the
///   file (and, for a failed unit, what an upload left).
/// - A failure of one unit does not stop the others: the run ends **partial** (some backups
///   made) or **failed** (none). An instance this run stopped is always started again first.
/// - After the units, **pruning** lists the store and deletes what the retention rules say
///   (`BackupRetention`), manifest first so a half-deleted backup reads as unfinished.
///
/// **Persistence.** The caller stores `snapshot` before performing any action other than `.none`.
///
/// **Resume rule** (`init(resuming:)` then `resume(now:)`): the step in flight is done again,
/// except a snapshot, which is looked up by its name first (adopted if it exists, taken again if
/// not), and a stop or start, which checks the instance's state first. Uploads and manifests are
/// idempotent (a key is overwritten whole), deletions too.
public struct BackupRun: Sendable {
    public enum Phase: String, Codable, Sendable, Hashable, CaseIterable {
        case running, pruning, completed, partial, failed

        public var isFinal: Bool { self == .completed || self == .partial || self == .failed }
    }

    public struct Unit: Codable, Sendable, Hashable {
        public enum State: String, Codable, Sendable, Hashable {
            case pending, checking, stopping, snapshotting, starting, exporting, uploading, publishing, cleaning, done, failed
        }

        /// What the policy named (an instance name or id).
        public var instance: String
        /// Resolved when the run was planned; nil when no instance matched (the unit fails).
        public var instanceID: String?
        public var instanceName: String?
        public var sizeID: String?
        public var imageID: String?
        public var backupID: String
        public var state: State
        /// The image the snapshot made (deleted when the unit is cleaned).
        public var snapshotImageID: String?
        /// Whether this run stopped the instance (so it must start it again).
        public var stoppedByRun: Bool
        public var file: ImageFile?
        public var storedBytes: Int64?
        public var storedSHA256: String?
        public var error: String?
        /// A problem that did not cost the backup (the clean-up after publishing failed: the
        /// backup is complete, something was left behind).
        public var warning: String?
        public var startedAt: Date?
        public var finishedAt: Date?

        public init(
            instance: String, instanceID: String? = nil, instanceName: String? = nil, sizeID: String? = nil, imageID: String? = nil,
            backupID: String, state: State = .pending, stoppedByRun: Bool = false, error: String? = nil
        ) {
            self.instance = instance
            self.instanceID = instanceID
            self.instanceName = instanceName
            self.sizeID = sizeID
            self.imageID = imageID
            self.backupID = backupID
            self.state = state
            self.stoppedByRun = stoppedByRun
            self.error = error
        }

        /// The name of the snapshot image: the backup id, unique and found again after a restart.
        public var snapshotName: String { "backup-\(backupID)" }
    }

    public enum Action: Sendable, Hashable {
        case none
        /// Read the instance's state (stop-and-export decides whether to stop it).
        case describe(instanceID: String)
        /// Shut the instance down and wait until it is stopped (at most `timeout`).
        case stop(instanceID: String, timeout: TimeInterval)
        /// Look for an image named `name` (after a restart during a snapshot).
        case locateImage(name: String)
        case snapshot(instanceID: String, name: String)
        /// Start the instance if it is not running and wait until it runs.
        case start(instanceID: String, timeout: TimeInterval)
        case export(imageID: String, backupID: String, format: ImageFormat)
        /// Remove what an interrupted upload to `key` left, then store `file` there.
        case upload(file: URL, key: String)
        case publish(BackupManifest, key: String)
        /// Delete the snapshot image and the local file; for a failed unit also `discardKeys`.
        case clean(imageID: String?, file: URL?, discardKeys: [String])
        /// List the policy's backups in the store (for retention).
        case listBackups
        case delete(backupID: String)
    }

    public struct Snapshot: Codable, Sendable, Hashable {
        public var runID: String
        public var policy: BackupPolicy
        /// The driver kind the instances run on (written into manifests).
        public var driver: String
        public var phase: Phase
        public var units: [Unit]
        /// Index of the unit under way.
        public var current: Int
        /// Backup ids retention chose, and how many of them are deleted.
        public var deletions: [String]
        public var deleted: Int
        public var pruneError: String?
        public var startedAt: Date
        public var finishedAt: Date?
        public var reason: String?
    }

    public private(set) var snapshot: Snapshot

    public var phase: Phase { snapshot.phase }

    public init(runID: String, policy: BackupPolicy, driver: String, units: [Unit], now: Date) {
        snapshot = Snapshot(
            runID: runID, policy: policy, driver: driver, phase: .running, units: units, current: 0, deletions: [], deleted: 0,
            startedAt: now)
    }

    public init(resuming snapshot: Snapshot) {
        self.snapshot = snapshot
    }

    /// The key of a backup's object: `<policy>/<backupID>/<name>`.
    public static func key(policy: String, backupID: String, _ name: String) -> String { "\(policy)/\(backupID)/\(name)" }

    func key(_ unit: Unit, _ name: String) -> String { Self.key(policy: snapshot.policy.name, backupID: unit.backupID, name) }

    // MARK: inputs

    public mutating func start(now: Date) -> Action { nextUnit(now: now) }

    /// The action that finishes the step the snapshot says was under way.
    public mutating func resume(now: Date) -> Action {
        switch snapshot.phase {
        case .running:
            guard snapshot.current < snapshot.units.count else { return beginPruning(now: now) }
            let unit = snapshot.units[snapshot.current]
            guard let id = unit.instanceID else { return nextUnit(now: now) }
            switch unit.state {
            case .pending: return nextUnit(now: now)
            case .checking: return .describe(instanceID: id)
            case .stopping: return .stop(instanceID: id, timeout: snapshot.policy.powerTimeout)
            case .snapshotting: return unit.snapshotImageID == nil ? .locateImage(name: unit.snapshotName) : afterSnapshot(now: now)
            case .starting: return .start(instanceID: id, timeout: snapshot.policy.powerTimeout)
            case .exporting:
                guard let image = unit.snapshotImageID else { return fail("no snapshot image recorded", now: now) }
                return .export(imageID: image, backupID: unit.backupID, format: snapshot.policy.format)
            case .uploading:
                guard let file = unit.file else { return fail("no exported file recorded", now: now) }
                return .upload(file: file.url, key: key(unit, BackupManifest.diskName(snapshot.policy.format)))
            case .publishing: return publish(now: now)
            case .cleaning: return cleanAction(unit)
            case .done, .failed: return nextUnit(now: now)
            }
        case .pruning:
            return snapshot.deletions.isEmpty || snapshot.deleted >= snapshot.deletions.count
                ? (snapshot.deletions.isEmpty ? .listBackups : finish(now: now))
                : .delete(backupID: snapshot.deletions[snapshot.deleted])
        case .completed, .partial, .failed:
            return .none
        }
    }

    public mutating func described(_ instance: Instance, now: Date) -> Action {
        guard var unit = currentUnit(in: .checking) else { return .none }
        switch instance.state {
        case .running:
            unit.state = .stopping
            unit.stoppedByRun = true
            put(unit)
            return .stop(instanceID: instance.id, timeout: snapshot.policy.powerTimeout)
        case .stopped:
            return beginSnapshot(now: now)
        default:
            return fail("instance is \(instance.state.rawValue) (\(instance.rawState)); stop-and-export needs it running or stopped", now: now)
        }
    }

    public mutating func stopped(now: Date) -> Action {
        guard currentUnit(in: .stopping) != nil else { return .none }
        return beginSnapshot(now: now)
    }

    public mutating func snapshotTaken(_ image: Image, now: Date) -> Action {
        guard var unit = currentUnit(in: .snapshotting) else { return .none }
        unit.snapshotImageID = image.id
        put(unit)
        return afterSnapshot(now: now)
    }

    /// The answer to `.locateImage`: the image a snapshot in flight made, or nil.
    public mutating func imageLocated(_ image: Image?, now: Date) -> Action {
        guard let unit = currentUnit(in: .snapshotting), let id = unit.instanceID else { return .none }
        guard let image else { return .snapshot(instanceID: id, name: unit.snapshotName) }
        return snapshotTaken(image, now: now)
    }

    public mutating func started(now: Date) -> Action {
        guard var unit = currentUnit(in: .starting) else { return .none }
        unit.stoppedByRun = false
        if unit.error != nil {
            // Started again after a failure: now clean up.
            unit.state = .cleaning
            put(unit)
            return cleanAction(unit)
        }
        put(unit)
        return beginExport(now: now)
    }

    public mutating func exported(_ file: ImageFile, now: Date) -> Action {
        guard var unit = currentUnit(in: .exporting) else { return .none }
        unit.file = file
        unit.state = .uploading
        put(unit)
        return .upload(file: file.url, key: key(unit, BackupManifest.diskName(snapshot.policy.format)))
    }

    public mutating func uploaded(bytes: Int64, sha256: String, now: Date) -> Action {
        guard var unit = currentUnit(in: .uploading) else { return .none }
        guard let file = unit.file, bytes == file.fileBytes, sha256 == file.fileSHA256 else {
            return fail("the store holds \(bytes) bytes with SHA-256 \(sha256.prefix(12))…, not the exported file", now: now)
        }
        unit.storedBytes = bytes
        unit.storedSHA256 = sha256
        unit.state = .publishing
        put(unit)
        return publish(now: now)
    }

    public mutating func published(now: Date) -> Action {
        guard var unit = currentUnit(in: .publishing) else { return .none }
        unit.state = .cleaning
        put(unit)
        return cleanAction(unit)
    }

    public mutating func cleaned(now: Date) -> Action {
        guard var unit = currentUnit(in: .cleaning) else { return .none }
        unit.state = unit.error == nil ? .done : .failed
        unit.finishedAt = now
        put(unit)
        snapshot.current += 1
        return nextUnit(now: now)
    }

    /// The step under way failed. A failed clean is recorded and the unit ends anyway (what is
    /// left is named in its error); a failed start after a failure likewise.
    public mutating func stepFailed(_ reason: String, now: Date) -> Action {
        switch snapshot.phase {
        case .running:
            guard snapshot.current < snapshot.units.count else { return .none }
            var unit = snapshot.units[snapshot.current]
            switch unit.state {
            case .cleaning where unit.error == nil:
                // Published: the backup exists and is whole; only the clean-up is left undone.
                unit.warning = "clean-up failed, left behind: \(reason)"
                unit.state = .done
                unit.finishedAt = now
                put(unit)
                snapshot.current += 1
                return nextUnit(now: now)
            case .cleaning:
                unit.error! += "; clean-up failed: \(reason)"
                unit.state = .failed
                unit.finishedAt = now
                put(unit)
                snapshot.current += 1
                return nextUnit(now: now)
            case .starting where unit.error != nil:
                unit.error! += "; the instance could not be started again: \(reason)"
                unit.state = .cleaning
                put(unit)
                return cleanAction(unit)
            default:
                return fail(reason, now: now)
            }
        case .pruning:
            snapshot.pruneError = reason
            return finish(now: now)
        default:
            return .none
        }
    }

    /// The policy's backups in the store, for retention.
    public mutating func listed(_ entries: [BackupRetention.Entry], now: Date) -> Action {
        guard snapshot.phase == .pruning else { return .none }
        snapshot.deletions = BackupRetention.deletions(
            entries, keepLast: snapshot.policy.keepLast, keepDays: snapshot.policy.keepDays, now: now,
            protected: Set(snapshot.units.map(\.backupID)))
        snapshot.deleted = 0
        return snapshot.deletions.isEmpty ? finish(now: now) : .delete(backupID: snapshot.deletions[0])
    }

    public mutating func deleted(now: Date) -> Action {
        guard snapshot.phase == .pruning, snapshot.deleted < snapshot.deletions.count else { return .none }
        snapshot.deleted += 1
        return snapshot.deleted < snapshot.deletions.count ? .delete(backupID: snapshot.deletions[snapshot.deleted]) : finish(now: now)
    }

    // MARK: helpers

    private func currentUnit(in state: Unit.State) -> Unit? {
        guard snapshot.phase == .running, snapshot.current < snapshot.units.count else { return nil }
        let unit = snapshot.units[snapshot.current]
        return unit.state == state ? unit : nil
    }

    private mutating func put(_ unit: Unit) { snapshot.units[snapshot.current] = unit }

    private mutating func nextUnit(now: Date) -> Action {
        while snapshot.current < snapshot.units.count {
            var unit = snapshot.units[snapshot.current]
            guard unit.state == .pending else {
                if unit.state == .done || unit.state == .failed {
                    snapshot.current += 1
                    continue
                }
                return resume(now: now)
            }
            unit.startedAt = now
            guard let id = unit.instanceID else {
                unit.state = .failed
                unit.error = unit.error ?? "no instance named \(unit.instance)"
                unit.finishedAt = now
                put(unit)
                snapshot.current += 1
                continue
            }
            switch snapshot.policy.method {
            case .snapshot:
                put(unit)
                return beginSnapshot(now: now)
            case .stopAndExport:
                unit.state = .checking
                put(unit)
                return .describe(instanceID: id)
            }
        }
        return beginPruning(now: now)
    }

    private mutating func beginSnapshot(now: Date) -> Action {
        var unit = snapshot.units[snapshot.current]
        unit.state = .snapshotting
        put(unit)
        return .snapshot(instanceID: unit.instanceID!, name: unit.snapshotName)
    }

    private mutating func afterSnapshot(now: Date) -> Action {
        var unit = snapshot.units[snapshot.current]
        if unit.stoppedByRun {
            unit.state = .starting
            put(unit)
            return .start(instanceID: unit.instanceID!, timeout: snapshot.policy.powerTimeout)
        }
        return beginExport(now: now)
    }

    private mutating func beginExport(now: Date) -> Action {
        var unit = snapshot.units[snapshot.current]
        guard let image = unit.snapshotImageID else { return fail("no snapshot image recorded", now: now) }
        unit.state = .exporting
        put(unit)
        return .export(imageID: image, backupID: unit.backupID, format: snapshot.policy.format)
    }

    private mutating func publish(now: Date) -> Action {
        let unit = snapshot.units[snapshot.current]
        guard let file = unit.file, let bytes = unit.storedBytes, let sha = unit.storedSHA256, let id = unit.instanceID else {
            return fail("nothing uploaded to publish", now: now)
        }
        let manifest = BackupManifest(
            backupID: unit.backupID, policy: snapshot.policy.name, runID: snapshot.runID, method: snapshot.policy.method,
            createdAt: unit.startedAt ?? now,
            source: .init(
                driver: snapshot.driver, instanceID: id, instanceName: unit.instanceName ?? unit.instance, sizeID: unit.sizeID,
                imageID: unit.imageID),
            disk: .init(
                name: BackupManifest.diskName(snapshot.policy.format), format: snapshot.policy.format, bytes: bytes, sha256: sha,
                contentSHA256: file.contentSHA256))
        return .publish(manifest, key: key(unit, BackupManifest.fileName))
    }

    private func cleanAction(_ unit: Unit) -> Action {
        // A failed unit may have left a disk (or a manifest, if publishing failed after the write):
        // it is not a backup, so both go.
        let discard = unit.error == nil ? [] : [key(unit, BackupManifest.fileName), key(unit, BackupManifest.diskName(snapshot.policy.format))]
        return .clean(imageID: unit.snapshotImageID, file: unit.file?.url, discardKeys: discard)
    }

    private mutating func fail(_ reason: String, now: Date) -> Action {
        guard snapshot.current < snapshot.units.count else { return .none }
        var unit = snapshot.units[snapshot.current]
        unit.error = reason
        if unit.stoppedByRun, let id = unit.instanceID {
            // Never leave an instance down because its backup failed.
            unit.state = .starting
            put(unit)
            return .start(instanceID: id, timeout: snapshot.policy.powerTimeout)
        }
        unit.state = .cleaning
        put(unit)
        return cleanAction(unit)
    }

    private mutating func beginPruning(now: Date) -> Action {
        guard snapshot.units.contains(where: { $0.state == .done }) else {
            // Nothing new was stored: keep every old backup rather than prune toward none.
            return finish(now: now)
        }
        snapshot.phase = .pruning
        snapshot.deletions = []
        snapshot.deleted = 0
        return .listBackups
    }

    private mutating func finish(now: Date) -> Action {
        let done = snapshot.units.filter { $0.state == .done }.count
        snapshot.phase = done == snapshot.units.count ? .completed : done == 0 ? .failed : .partial
        let failures = snapshot.units.filter { $0.state == .failed }
        if !failures.isEmpty {
            snapshot.reason = failures.map { "\($0.instance): \($0.error ?? "failed")" }.joined(separator: "; ")
        }
        snapshot.finishedAt = now
        return .none
    }
}
