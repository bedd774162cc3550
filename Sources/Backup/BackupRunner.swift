import Foundation
import Logging
import Providers
import Storage
import Trust

/// The thin IO layer of backups: performs the actions of `BackupRun` and `BackupRestore` with the
/// cloud driver and a `BackupStore`.
///
/// Before every action the machine's snapshot and the step are written to the journal (SQLite,
/// `synchronous = FULL`) in one transaction, so nothing is performed that a restart would not
/// know about; `resume` finishes what a killed process left. Runs and restores are audited
/// (module `backup`) when they end, and every deletion by retention is too.
public actor BackupRunner {
    /// Journal writes wait for their fsync on the storage thread, not on a cooperative one.
    public nonisolated var unownedExecutor: UnownedSerialExecutor { StorageExecutor.shared.asUnownedSerialExecutor() }

    public struct Configuration: Sendable {
        /// Where exported disks and downloaded backups are written before upload or import.
        public var staging: URL
        /// How often the driver is asked whether an instance reached the state waited for.
        public var pollInterval: Duration
        /// The largest backup a restore downloads (and the largest virtual disk it imports).
        public var maxRestoreBytes: Int64

        public init(staging: URL, pollInterval: Duration = .milliseconds(500), maxRestoreBytes: Int64 = 1 << 40) {
            self.staging = staging
            self.pollInterval = pollInterval
            self.maxRestoreBytes = maxRestoreBytes
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

        public var jobID: String
        public var phase: String
        /// The action (`snapshot`, `upload`, `download`, ...).
        public var step: String
        public var stage: Stage
    }

    /// Called at each `JournalEvent`. If it throws, the runner stops on the spot and refuses all
    /// further work, exactly as if the process died there (what the crash tests use).
    public typealias JournalObserver = @Sendable (JournalEvent) async throws -> Void

    /// One line of progress for the operator.
    public struct Progress: Sendable, Hashable, CustomStringConvertible {
        public var job: String
        public var unit: String?
        public var message: String
        public var description: String { "\(job)\(unit.map { " \($0)" } ?? ""): \(message)" }
    }

    public typealias ProgressHandler = @Sendable (Progress) -> Void

    private let driver: any CloudDriver
    public nonisolated let journal: BackupJournal
    private let configuration: Configuration
    private let audit: AuditLog?
    private let logger: Logger
    private let progress: ProgressHandler?
    private let observer: JournalObserver?
    private let stores: @Sendable (BackupTarget) throws -> any BackupStore
    /// Jobs a request is acting on; a second request on one of them is refused.
    private var busy: Set<String> = []
    private var halted = false

    public init(
        driver: any CloudDriver, journal: BackupJournal, configuration: Configuration, audit: AuditLog? = nil,
        logger: Logger = Logger(label: "intercloud.backup"), progress: ProgressHandler? = nil, observer: JournalObserver? = nil,
        stores: @escaping @Sendable (BackupTarget) throws -> any BackupStore = { try $0.store() }
    ) {
        self.driver = driver
        self.journal = journal
        self.configuration = configuration
        self.audit = audit
        self.logger = logger
        self.progress = progress
        self.observer = observer
        self.stores = stores
    }

    // MARK: requests

    /// Runs `policy` now: every instance it names, one after the other, then retention. Returns
    /// the run as it ended (`completed`, `partial` or `failed`, with the reasons). Refused, with
    /// nothing done, when the driver cannot snapshot and export, the store cannot be reached, or
    /// the policy has a run under way.
    public func run(_ policy: BackupPolicy) async throws(BackupError) -> BackupRun.Snapshot {
        try checkRunning()
        try checkCapabilities(for: policy)
        let store = try store(policy.target)
        do { try await store.prepare() } catch { throw .refused("the backup store \(store.location) cannot be used: \(Self.describe(error))") }
        let instances: [Instance]
        do { instances = try await driver.listInstances() } catch {
            throw .refused("the cloud could not be asked for its instances: \(Self.describe(error))")
        }
        let now = Date()
        let runID = "br-" + RandomIdentifier.hex(bytes: 6)
        let units = policy.instances.map { wanted in Self.unit(for: wanted, among: instances, now: now) }
        var machine = BackupRun(runID: runID, policy: policy, driver: driver.driverName, units: units, now: now)
        let action = machine.start(now: now)
        busy.insert(runID)
        defer { busy.remove(runID) }
        try await save(machine, action, detail: "run \(policy.name): \(units.count) instance(s) to \(store.location)", insert: true)
        report(runID, nil, "backing up \(units.map(\.instance).joined(separator: ", ")) to \(store.location)")
        try await drive(&machine, from: action, store: store)
        return machine.snapshot
    }

    /// Restores backup `backupID` of `policy` from `target` into this runner's driver as a new
    /// instance named `instanceName`, of `sizeID` (default: the size the backup's instance had,
    /// if this driver offers it). Returns the restore as it ended (`restored` or `failed`).
    public func restore(
        backupID: String, policy: String, target: BackupTarget, instanceName: String, sizeID: String?, bootTimeout: TimeInterval = 300
    ) async throws(BackupError) -> BackupRestore.Snapshot {
        try checkRunning()
        let missing = [Verb.importImage, .create].filter { !driver.capabilities.verbs.contains($0) }
        guard missing.isEmpty else {
            throw .refused("the \(driver.driverName) driver cannot \(missing.map(\.rawValue).joined(separator: " or ")), which a restore needs")
        }
        guard BackupManifest.isBackupID(backupID) else { throw .refused("'\(backupID.prefix(60))' is not a backup id (bk-...)") }
        let store = try store(target)
        let manifest = try await inventory.manifest(policy: policy, backupID: backupID, store: store)
        let sizes: [InstanceSize]
        let instances: [Instance]
        do {
            sizes = try await driver.listSizes()
            instances = try await driver.listInstances()
        } catch { throw .refused("the cloud could not be asked for sizes and instances: \(Self.describe(error))") }
        guard let size = sizeID ?? manifest.source.sizeID.flatMap({ id in sizes.contains { $0.id == id } ? id : nil }) else {
            throw .refused(
                "the backup's size \(manifest.source.sizeID ?? "(unknown)") is not offered here; pick one with --size (\(sizes.map(\.id).joined(separator: ", ")))")
        }
        guard sizes.contains(where: { $0.id == size }) else {
            throw .refused("no size \(size) here (sizes: \(sizes.map(\.id).joined(separator: ", ")))")
        }
        if instances.contains(where: { $0.name == instanceName && $0.state != .terminated }) {
            throw .refused("an instance named \(instanceName) exists; pick another --name")
        }
        do { try FileManager.default.createDirectory(at: configuration.staging, withIntermediateDirectories: true) } catch {
            throw .refused("cannot create the staging directory \(configuration.staging.path): \(error.localizedDescription)")
        }
        let now = Date()
        let restoreID = "rs-" + RandomIdentifier.hex(bytes: 6)
        var machine = BackupRestore(
            restoreID: restoreID, manifest: manifest, target: target, driver: driver.driverName, instanceName: instanceName, sizeID: size,
            file: configuration.staging.appendingPathComponent("\(restoreID).\(manifest.disk.format.rawValue)"),
            maxBytes: configuration.maxRestoreBytes, bootTimeout: bootTimeout, now: now)
        let action = machine.start(now: now)
        busy.insert(restoreID)
        defer { busy.remove(restoreID) }
        try await save(machine, action, detail: "restore \(backupID) (\(manifest.source.instanceName) from \(manifest.source.driver)) as \(instanceName)", insert: true)
        report(restoreID, nil, "restoring \(backupID) from \(store.location) as \(instanceName) (\(size))")
        try await drive(&machine, from: action, store: store)
        return machine.snapshot
    }

    /// Finishes every run and restore a killed process left under way.
    @discardableResult
    public func resume() async throws(BackupError) -> (runs: [BackupRun.Snapshot], restores: [BackupRestore.Snapshot]) {
        try checkRunning()
        let jobs: [(id: String, kind: BackupJournal.Kind)]
        do { jobs = try journal.unsettled() } catch { throw .journal("\(error)") }
        var runs: [BackupRun.Snapshot] = []
        var restores: [BackupRestore.Snapshot] = []
        var failures: [String] = []
        for job in jobs where !busy.contains(job.id) {
            busy.insert(job.id)
            defer { busy.remove(job.id) }
            // One job that cannot go on (its store unreachable from here) does not hold up the others.
            do throws(BackupError) {
                switch job.kind {
                case .run:
                    guard let stored = try journalRead({ try journal.run(job.id) }) else { continue }
                    var machine = BackupRun(resuming: stored)
                    let store = try store(stored.policy.target)
                    let action = machine.resume(now: Date())
                    try await save(machine, action, detail: "resumed after a restart")
                    report(job.id, nil, "resuming (\(stored.phase.rawValue))")
                    try await drive(&machine, from: action, store: store)
                    runs.append(machine.snapshot)
                case .restore:
                    guard let stored = try journalRead({ try journal.restore(job.id) }) else { continue }
                    var machine = BackupRestore(resuming: stored)
                    let store = try store(stored.target)
                    let action = machine.resume(now: Date())
                    try await save(machine, action, detail: "resumed after a restart")
                    report(job.id, nil, "resuming (\(stored.phase.rawValue))")
                    try await drive(&machine, from: action, store: store)
                    restores.append(machine.snapshot)
                }
            } catch .halted {
                throw .halted
            } catch .interrupted(let id) {
                throw .interrupted(id)
            } catch {
                logger.error("\(job.id) could not be resumed: \(error); it stays under way")
                failures.append("\(job.id): \(error)")
            }
        }
        if runs.isEmpty, restores.isEmpty, !failures.isEmpty { throw .refused(failures.joined(separator: "; ")) }
        return (runs, restores)
    }

    private var inventory: BackupInventory { BackupInventory(audit: audit) }

    // MARK: the run loop

    private func drive(_ machine: inout BackupRun, from first: BackupRun.Action, store: any BackupStore) async throws(BackupError) {
        var action = first
        let id = machine.snapshot.runID
        while action != .none {
            try await observe(id, machine.phase.rawValue, action, .journaled)
            try checkNotCancelled(id)
            let event = await perform(action, run: machine.snapshot, store: store)
            try await observe(id, machine.phase.rawValue, action, .performed)
            // A step cut short by a shutdown did not fail: nothing is recorded, and the next
            // start resumes the job at that step (an instance this run stopped is started then).
            try checkNotCancelled(id)
            let now = Date()
            action = event.apply(&machine, now)
            try await save(machine, action, detail: event.detail)
        }
        let snapshot = machine.snapshot
        let made = snapshot.units.filter { $0.state == .done }.map(\.backupID)
        report(id, nil, "\(snapshot.phase.rawValue): \(made.count)/\(snapshot.units.count) backed up" + (snapshot.reason.map { "; \($0)" } ?? ""))
        auditRecord(
            kind: "backup.run", action: snapshot.policy.name, outcome: snapshot.phase == .failed ? .refused : .accepted,
            reason: snapshot.phase.rawValue,
            detail: "run \(id): \(made.joined(separator: ", "))" + (snapshot.reason.map { "; \($0)" } ?? "")
                + (snapshot.deleted > 0 ? "; retention deleted \(snapshot.deletions.prefix(snapshot.deleted).joined(separator: ", "))" : "")
                + (snapshot.pruneError.map { "; retention failed: \($0)" } ?? ""))
        if snapshot.phase == .failed { logger.warning("backup run \(id) of \(snapshot.policy.name) failed: \(snapshot.reason ?? "")") }
    }

    private func drive(_ machine: inout BackupRestore, from first: BackupRestore.Action, store: any BackupStore) async throws(BackupError) {
        var action = first
        let id = machine.snapshot.restoreID
        while action != .none {
            try await observe(id, machine.phase.rawValue, action, .journaled)
            try checkNotCancelled(id)
            let event = await perform(action, restore: machine.snapshot, store: store)
            try await observe(id, machine.phase.rawValue, action, .performed)
            try checkNotCancelled(id)
            action = event.apply(&machine, Date())
            try await save(machine, action, detail: event.detail)
        }
        let snapshot = machine.snapshot
        report(id, nil, snapshot.phase == .restored
            ? "restored as \(snapshot.instanceName) (\(snapshot.instanceID ?? "?"))"
            : "failed: \(snapshot.reason ?? "")")
        auditRecord(
            kind: "backup.restore", action: snapshot.manifest.backupID, outcome: snapshot.phase == .restored ? .accepted : .refused,
            reason: snapshot.phase.rawValue,
            detail: "restore \(id) into \(snapshot.driver) as \(snapshot.instanceName) (\(snapshot.instanceID ?? "no instance"))"
                + (snapshot.reason.map { ": \($0)" } ?? ""))
    }

    /// An action's outcome: a line for the step log and the event to give the machine.
    struct Event<Machine, Action> {
        var detail: String
        var apply: (inout Machine, Date) -> Action
    }

    typealias RunEvent = Event<BackupRun, BackupRun.Action>
    typealias RestoreEvent = Event<BackupRestore, BackupRestore.Action>

    private func perform(_ action: BackupRun.Action, run: BackupRun.Snapshot, store: any BackupStore) async -> RunEvent {
        let unit = run.current < run.units.count ? run.units[run.current] : nil
        let name = unit?.instance
        func failed(_ what: String, _ error: any Error) -> RunEvent {
            let reason = "\(what): \(Self.describe(error))"
            return Event(detail: reason) { $0.stepFailed(reason, now: $1) }
        }
        switch action {
        case .none:
            return Event(detail: "") { _, _ in .none }
        case .describe(let id):
            do {
                let instance = try await driver.describe(instance: id)
                return Event(detail: "\(id) is \(instance.state.rawValue)") { $0.described(instance, now: $1) }
            } catch { return failed("describe", error) }
        case .stop(let id, let timeout):
            report(run.runID, name, "stopping \(id)")
            do {
                let instance = try await driver.describe(instance: id)
                if instance.state != .stopped {
                    if instance.state != .stopping { _ = try await driver.shutdown(id) }
                    _ = try await driver.waitFor(instance: id, state: .stopped, timeout: Self.duration(timeout), pollInterval: configuration.pollInterval)
                }
                return Event(detail: "stopped \(id)") { $0.stopped(now: $1) }
            } catch { return failed("stop", error) }
        case .locateImage(let imageName):
            do {
                let image = try await driver.listImages().first { $0.name == imageName }
                return Event(detail: image.map { "found \($0.id) from before the restart" } ?? "no image \(imageName): snapshot again") {
                    $0.imageLocated(image, now: $1)
                }
            } catch { return failed("list images", error) }
        case .snapshot(let id, let imageName):
            report(run.runID, name, "snapshot of \(id)")
            do {
                let image = try await driver.snapshot(instance: id, name: imageName, progress: nil)
                return Event(detail: "snapshot \(image.id)") { $0.snapshotTaken(image, now: $1) }
            } catch { return failed("snapshot", error) }
        case .start(let id, let timeout):
            report(run.runID, name, "starting \(id) again")
            do {
                if try await driver.describe(instance: id).state != .running {
                    _ = try await driver.start(id)
                    _ = try await driver.waitFor(instance: id, state: .running, timeout: Self.duration(timeout), pollInterval: configuration.pollInterval)
                }
                return Event(detail: "\(id) running") { $0.started(now: $1) }
            } catch { return failed("start", error) }
        case .export(let imageID, let backupID, let format):
            let file = configuration.staging.appendingPathComponent("\(backupID).\(format.rawValue)")
            report(run.runID, name, "exporting \(imageID) as \(format)")
            do {
                try FileManager.default.createDirectory(at: configuration.staging, withIntermediateDirectories: true)
                removeStagingLeftovers(of: backupID)
                let exported = try await driver.exportImage(id: imageID, to: file, format: format, progress: byteProgress(run.runID, name, "exported"))
                return Event(detail: "exported \(exported.fileBytes) bytes") { $0.exported(exported, now: $1) }
            } catch { return failed("export", error) }
        case .upload(let file, let key):
            report(run.runID, name, "uploading to \(store.location)\(key)")
            do {
                try await store.discardPartial(key: key)
                let stored = try await store.upload(file: file, key: key, progress: byteProgress(run.runID, name, "uploaded"))
                return Event(detail: "stored \(stored.bytes) bytes, SHA-256 \(stored.sha256)") {
                    $0.uploaded(bytes: stored.bytes, sha256: stored.sha256, now: $1)
                }
            } catch { return failed("upload", error) }
        case .publish(let manifest, let key):
            do {
                try await store.put(try manifest.encoded(), key: key)
                return Event(detail: "backup \(manifest.backupID) published") { $0.published(now: $1) }
            } catch { return failed("write the manifest", error) }
        case .clean(let imageID, let file, let keys):
            do {
                // No id journaled (killed between asking for the snapshot and its answer, or a
                // snapshot that failed after the cloud made it): look for it by its name.
                var leftover = imageID
                if leftover == nil, let unit, unit.state == .cleaning {
                    leftover = try await driver.listImages().first { $0.name == unit.snapshotName }?.id
                }
                if let leftover {
                    do { try await driver.deregisterImage(id: leftover) } catch let error as ProviderError where error.code == .notFound {}
                }
                if let file { try? FileManager.default.removeItem(at: file) }
                for key in keys {
                    try await store.discardPartial(key: key)
                    try await store.delete(key: key)
                }
                return Event(detail: "cleaned up") { $0.cleaned(now: $1) }
            } catch { return failed("clean up", error) }
        case .listBackups:
            do {
                let entries = try await inventory.listing(policy: run.policy.name, store: store).compactMap { listing -> BackupRetention.Entry? in
                    // A refused manifest is no backup of ours: retention leaves it alone (it is audited when listed).
                    guard listing.refusal == nil else { return nil }
                    // Per instance of a cloud: two brokers sharing a store may both have a `web-1`.
                    let instance = listing.manifest.map { "\($0.source.driver)/\($0.source.instanceID)" }
                    return BackupRetention.Entry(backupID: listing.backupID, instance: instance, createdAt: listing.createdAt)
                }
                return Event(detail: "\(entries.count) backups in the store") { $0.listed(entries, now: $1) }
            } catch { return failed("list the store", error) }
        case .delete(let backupID):
            do {
                let keys = try await store.list(prefix: "\(run.policy.name)/\(backupID)/")
                // The manifest first: a backup half deleted then reads as unfinished, never as whole.
                let ordered = keys.sorted { ($0.hasSuffix("/" + BackupManifest.fileName) ? 0 : 1) < ($1.hasSuffix("/" + BackupManifest.fileName) ? 0 : 1) }
                for key in ordered { try await store.delete(key: key) }
                auditRecord(kind: "backup.retention", action: run.policy.name, outcome: .accepted, reason: "deleted", detail: "run \(run.runID) deleted \(backupID)")
                report(run.runID, nil, "retention deleted \(backupID)")
                return Event(detail: "deleted \(backupID)") { $0.deleted(now: $1) }
            } catch { return failed("delete \(backupID)", error) }
        }
    }

    private func perform(_ action: BackupRestore.Action, restore: BackupRestore.Snapshot, store: any BackupStore) async -> RestoreEvent {
        let id = restore.restoreID
        func failed(_ what: String, _ error: any Error) -> RestoreEvent {
            let reason = "\(what): \(Self.describe(error))"
            return Event(detail: reason) { $0.stepFailed(reason, now: $1) }
        }
        switch action {
        case .none:
            return Event(detail: "") { _, _ in .none }
        case .download(let key, let file, let maxBytes):
            report(id, nil, "downloading \(store.location)\(key)")
            do {
                try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
                removeStagingLeftovers(of: id)
                let got = try await store.download(key: key, to: file, maxBytes: maxBytes, progress: byteProgress(id, nil, "downloaded"))
                return Event(detail: "downloaded \(got.bytes) bytes, SHA-256 \(got.sha256)") { $0.downloaded(bytes: got.bytes, sha256: got.sha256, now: $1) }
            } catch { return failed("download", error) }
        case .locateImage(let name):
            do {
                let image = try await driver.listImages().first { $0.name == name }
                return Event(detail: image.map { "found image \($0.id)" } ?? "no image \(name): import again") { $0.imageLocated(image, now: $1) }
            } catch { return failed("list images", error) }
        case .importImage(let file, let name, let format, let fileSHA256, let contentSHA256):
            report(id, nil, "importing into \(driver.driverName)")
            do {
                let image = try await driver.importImage(
                    from: file, name: name, format: format, expectedSHA256: fileSHA256,
                    admission: ImageAdmission(maxVirtualSizeBytes: configuration.maxRestoreBytes), progress: nil)
                if let contentSHA256, let actual = image.sha256, actual != contentSHA256 {
                    let reason = "the imported disk's content has SHA-256 \(actual.prefix(12))…; the manifest says \(contentSHA256.prefix(12))…"
                    return Event(detail: reason) { $0.importRefused(image, reason: reason, now: $1) }
                }
                return Event(detail: "image \(image.id), content SHA-256 \(image.sha256 ?? "unknown")") { $0.imported(image, now: $1) }
            } catch { return failed("import", error) }
        case .locateInstance(let name):
            do {
                let instance = try await driver.listInstances().first { $0.name == name && $0.state != .terminated }
                return Event(detail: instance.map { "found instance \($0.id)" } ?? "no instance \(name): create again") {
                    $0.instanceLocated(instance, now: $1)
                }
            } catch { return failed("list instances", error) }
        case .create(let request):
            report(id, nil, "creating \(request.name) (\(request.sizeID))")
            do {
                let instance = try await driver.create(request, progress: nil)
                return Event(detail: "instance \(instance.id)") { $0.created(instance, now: $1) }
            } catch { return failed("create", error) }
        case .awaitRunning(let instanceID, let timeout):
            do {
                let instance = try await driver.waitFor(
                    instance: instanceID, state: .running, timeout: Self.duration(timeout), pollInterval: configuration.pollInterval)
                return Event(detail: "\(instanceID) running") { $0.running(instance, now: $1) }
            } catch { return failed("boot", error) }
        case .clean(let instanceID, let imageID, let file):
            do {
                if let instanceID {
                    do { try await driver.terminate(instance: instanceID) } catch let error as ProviderError where error.code == .notFound {}
                }
                if let imageID {
                    do { try await driver.deregisterImage(id: imageID) } catch let error as ProviderError where error.code == .notFound {}
                }
                if let file { try? FileManager.default.removeItem(at: file) }
                return Event(detail: "removed what the restore made") { $0.cleaned(now: $1) }
            } catch { return failed("clean up", error) }
        case .removeFile(let file):
            try? FileManager.default.removeItem(at: file)
            return Event(detail: "removed the downloaded file") { $0.fileRemoved(now: $1) }
        }
    }

    /// Removes what a killed attempt left in the staging folder for `id` (a backup or restore
    /// id names all its files there, temporary ones included).
    private func removeStagingLeftovers(of id: String) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: configuration.staging.path)) ?? []
        for name in names where name.contains(id) {
            try? FileManager.default.removeItem(at: configuration.staging.appendingPathComponent(name))
        }
    }

    // MARK: the store

    private func store(_ target: BackupTarget) throws(BackupError) -> any BackupStore {
        do { return try stores(target) } catch let error as BackupError { throw error } catch { throw .refused("\(target): \(error)") }
    }

    // MARK: helpers

    private func checkNotCancelled(_ id: String) throws(BackupError) {
        if Task.isCancelled {
            logger.notice("\(id): interrupted; left under way for the next resume")
            throw .interrupted(id)
        }
    }

    private func checkRunning() throws(BackupError) {
        if halted { throw .halted }
    }

    private func checkCapabilities(for policy: BackupPolicy) throws(BackupError) {
        var needed: [Verb] = [.listInstances, .snapshot, .exportImage, .deregisterImage]
        if policy.method == .stopAndExport { needed += [.describe, .shutdown, .start] }
        let missing = needed.filter { !driver.capabilities.verbs.contains($0) }
        guard missing.isEmpty else {
            throw .refused("the \(driver.driverName) driver cannot \(missing.map(\.rawValue).joined(separator: ", ")), which policy \(policy.name) needs")
        }
        guard driver.capabilities.exportFormats.contains(policy.format) else {
            throw .refused("the \(driver.driverName) driver exports \(driver.capabilities.exportFormats.map(\.rawValue).sorted().joined(separator: ", ")), not \(policy.format)")
        }
    }

    /// The unit for one instance the policy names: by id, else by name (refused if two share it).
    static func unit(for wanted: String, among instances: [Instance], now: Date) -> BackupRun.Unit {
        let live = instances.filter { $0.state != .terminated }
        let byID = live.first { $0.id == wanted }
        let byName = live.filter { $0.name == wanted }
        let backupID = BackupListing.newBackupID(now: now)
        var unit = BackupRun.Unit(instance: wanted, backupID: backupID, state: .pending, stoppedByRun: false)
        if let instance = byID ?? (byName.count == 1 ? byName[0] : nil) {
            unit.instanceID = instance.id
            unit.instanceName = instance.name
            unit.sizeID = instance.sizeID
            unit.imageID = instance.imageID
        } else if byName.count > 1 {
            unit.error = "\(byName.count) instances are named \(wanted) (\(byName.map(\.id).joined(separator: ", "))); name one by id"
        }
        return unit
    }

    private func save(_ machine: BackupRun, _ action: BackupRun.Action, detail: String, insert: Bool = false) async throws(BackupError) {
        let snapshot = machine.snapshot
        try await journaled {
            try await journal.save(
                snapshot, id: snapshot.runID, kind: .run, policy: snapshot.policy.name, phase: snapshot.phase.rawValue,
                settled: snapshot.phase.isFinal, step: Self.step(action), detail: detail, insert: insert, now: Date())
        }
    }

    private func save(_ machine: BackupRestore, _ action: BackupRestore.Action, detail: String, insert: Bool = false) async throws(BackupError) {
        let snapshot = machine.snapshot
        try await journaled {
            try await journal.save(
                snapshot, id: snapshot.restoreID, kind: .restore, policy: snapshot.manifest.policy, phase: snapshot.phase.rawValue,
                settled: snapshot.phase.isFinal, step: Self.step(action), detail: detail, insert: insert, now: Date())
        }
    }

    private func journaled(_ body: () async throws -> Void) async throws(BackupError) {
        do { try await body() } catch let error as BackupError { throw error } catch { throw .journal("\(error)") }
    }

    private func journalRead<T>(_ body: () throws -> T) throws(BackupError) -> T {
        do { return try body() } catch { throw .journal("\(error)") }
    }

    private func observe<A>(_ id: String, _ phase: String, _ action: A, _ stage: JournalEvent.Stage) async throws(BackupError) {
        guard let observer else { return }
        do {
            try await observer(JournalEvent(jobID: id, phase: phase, step: Self.step(action), stage: stage))
        } catch {
            halted = true
            throw .halted
        }
    }

    private func report(_ job: String, _ unit: String?, _ message: String) {
        logger.info("\(job)\(unit.map { " \($0)" } ?? ""): \(message)")
        progress?(Progress(job: job, unit: unit, message: message))
    }

    /// Byte progress of a long copy, at most one line per 10 % (and the last).
    private nonisolated func byteProgress(_ job: String, _ unit: String?, _ verb: String) -> Providers.ProgressHandler? {
        guard let progress else { return nil }
        let lastDecile = LastDecile()
        return { event in
            guard let total = event.total, total > 0 else { return }
            let decile = Int(event.completed * 10 / total)
            guard lastDecile.advance(to: decile) else { return }
            // Byte counts for copies; some exports report percent steps instead (total 100).
            let amount = total >= 1 << 20 ? "\(event.completed >> 20)/\(total >> 20) MiB " : ""
            progress(Progress(job: job, unit: unit, message: "\(verb) \(amount)(\(decile * 10) %)"))
        }
    }

    private func auditRecord(kind: String, action: String, outcome: AuditEvent.Outcome, reason: String, detail: String) {
        guard let audit else { return }
        do {
            try audit.record(AuditEvent(at: Date(), module: "backup", kind: kind, peer: "", action: action, outcome: outcome, reason: reason, detail: detail))
        } catch { logger.error("audit write failed for \(kind) \(action): \(error)") }
    }

    static func step<A>(_ action: A) -> String {
        let text = String(describing: action)
        return String(text.prefix { $0 != "(" })
    }

    static func duration(_ seconds: TimeInterval) -> Duration { .milliseconds(Int64(max(0.001, seconds) * 1000)) }

    static func describe(_ error: any Error) -> String {
        if let error = error as? ProviderError { return error.description }
        if let error = error as? BackupError { return error.description }
        return String(describing: error)
    }
}

/// The last decile a progress callback reported (callbacks come from the copying thread).
private final class LastDecile: @unchecked Sendable {
    // @unchecked: the one mutable field is only touched under `lock`.
    private let lock = NSLock()
    private var value = -1

    func advance(to decile: Int) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard decile > value else { return false }
        value = decile
        return true
    }
}

/// One backup of a policy as the store shows it.
public struct BackupListing: Sendable, Hashable, Codable {
    public var backupID: String
    public var createdAt: Date
    /// nil for an unfinished backup (no manifest yet, or a run killed mid-upload) or a refused one.
    public var manifest: BackupManifest?
    /// Why the manifest was refused, if it was.
    public var refusal: String?

    public var status: String { manifest != nil ? "complete" : refusal != nil ? "refused" : "unfinished" }

    static let idFormat: DateFormatter = {
        let format = DateFormatter()
        format.locale = Locale(identifier: "en_US_POSIX")
        format.timeZone = TimeZone(identifier: "UTC")
        format.dateFormat = "yyyyMMdd'-'HHmmss"
        return format
    }()

    /// `bk-YYYYMMDD-HHMMSS-<hex>`: sorts by creation, and an unfinished backup's age is known.
    static func newBackupID(now: Date) -> String { "bk-\(idFormat.string(from: now))-\(RandomIdentifier.hex(bytes: 3))" }

    static func creationTime(of backupID: String) -> Date? {
        let parts = backupID.split(separator: "-")
        guard parts.count == 4 else { return nil }
        return idFormat.date(from: "\(parts[1])-\(parts[2])")
    }
}
