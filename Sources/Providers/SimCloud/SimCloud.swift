import Foundation
import GRDB
import Storage

/// The embedded default provider: a demo needs nothing installed.
///
/// Instances and images live in SQLite (tables of `SimCloudSchema`) and as real files under the data
/// directory, with real SHA-256 checksums. Transitions take the configured `Delays`: a verb records the
/// target state and when it is due, and any later read settles it, so state survives a restart and
/// nothing runs in the background.
public actor SimCloud: CloudDriver {
    /// Journal writes wait for their fsync on the storage thread, not on a cooperative one.
    public nonisolated var unownedExecutor: UnownedSerialExecutor { StorageExecutor.shared.asUnownedSerialExecutor() }

    public nonisolated let driverName = "simcloud"
    public nonisolated let capabilities: DriverCapabilities
    public let configuration: Configuration
    let database: DatabasePool
    let files: LocalImageFiles
    private var pendingFailures: [Verb: Int] = [:]
    private var pendingLateFailures: [Verb: Int] = [:]
    private var exportCrashAfter: Int64?

    /// The image every SimCloud starts with. `package`: the providers benchmark creates from it.
    package static let seedImageID = "sim-img-seed"

    /// Every verb, every format: SimCloud is the reference the other drivers are compared with.
    public static let declaredCapabilities = CapabilityDeclaration(
        driver: "simcloud",
        unconditional: DriverCapabilities(
            verbs: Set(Verb.allCases), exportFormats: Set(ImageFormat.allCases), importFormats: Set(ImageFormat.allCases)),
        formatsNeedQemuImg: true)

    /// Opens (or creates) `simcloud.sqlite` in the data directory.
    public init(configuration: Configuration) throws {
        let path = configuration.dataDirectory.appendingPathComponent("simcloud.sqlite").path
        let database = try IntercloudDatabase.open(path: path, schema: [SimCloudSchema.self])
        try self.init(configuration: configuration, database: database)
    }

    /// Uses a database the caller opened with `SimCloudSchema` among its contributors (the broker's own).
    public init(configuration: Configuration, database: DatabasePool) throws {
        self.configuration = configuration
        self.database = database
        self.files = LocalImageFiles(driver: "simcloud", durable: configuration.durableWrites, linksImmutableImages: true)
        self.capabilities = Self.declaredCapabilities.capabilities(enabling: [])
        let fileManager = FileManager.default
        for folder in ["images", "disks"] {
            try fileManager.createDirectory(
                at: configuration.dataDirectory.appendingPathComponent(folder), withIntermediateDirectories: true)
        }
        if configuration.seedImage { try Self.createSeedImage(configuration: configuration, database: database) }
    }

    // MARK: Faults

    public func inject(_ fault: Fault) {
        switch fault {
        case .fail(let verb, let times): pendingFailures[verb, default: 0] += times
        case .failAfterWork(let verb, let times): pendingLateFailures[verb, default: 0] += times
        case .crashExport(let bytes): exportCrashAfter = bytes
        }
    }

    public func clearFaults() {
        pendingFailures = [:]
        pendingLateFailures = [:]
        exportCrashAfter = nil
    }

    private func consumeFault(_ verb: Verb, late: Bool = false) throws {
        if late {
            guard let count = pendingLateFailures[verb], count > 0 else { return }
            pendingLateFailures[verb] = count - 1
        } else {
            guard let count = pendingFailures[verb], count > 0 else { return }
            pendingFailures[verb] = count - 1
        }
        throw ProviderError(
            driver: driverName, verb: verb, code: .injectedFault,
            message: late ? "injected failure after the work was done" : "injected failure")
    }

    // MARK: Reads

    public func listSizes() async throws -> [InstanceSize] {
        try consumeFault(.listSizes)
        return configuration.sizes
    }

    public func listInstances() async throws -> [Instance] {
        try consumeFault(.listInstances)
        return try guarded(.listInstances) {
            let records = try database.read { db in try SimInstanceRecord.order(Column("created_at")).fetchAll(db) }
            return try records.compactMap { try settle($0) }.map(instance)
        }
    }

    public func describe(instance id: String) async throws -> Instance {
        try consumeFault(.describe)
        return try guarded(.describe) { instance(try settledRecord(id, verb: .describe)) }
    }

    public func capacity() async throws -> Capacity {
        try consumeFault(.capacity)
        return try guarded(.capacity) { try currentCapacity() }
    }

    private func currentCapacity() throws -> Capacity {
        let records = try database.read { db in try SimInstanceRecord.fetchAll(db) }.compactMap { try settle($0) }
        let sizes = Dictionary(configuration.sizes.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        let live = records.filter { $0.rawState != "terminating" }
        return Capacity(
            maxInstances: configuration.limits.maxInstances, usedInstances: live.count,
            maxVCPU: configuration.limits.maxVCPU, usedVCPU: live.reduce(0) { $0 + (sizes[$1.sizeID]?.vCPU ?? 0) },
            maxMemoryMiB: configuration.limits.maxMemoryMiB,
            usedMemoryMiB: live.reduce(0) { $0 + (sizes[$1.sizeID]?.memoryMiB ?? 0) })
    }

    public func listImages() async throws -> [Image] {
        try consumeFault(.listImages)
        return try guarded(.listImages) {
            try database.read { db in try SimImageRecord.order(Column("created_at")).fetchAll(db) }.map(image)
        }
    }

    // MARK: Lifecycle

    public func create(_ request: CreateInstanceRequest, progress: ProgressHandler?) async throws -> Instance {
        let verb = Verb.create
        try consumeFault(verb)
        guard let size = configuration.sizes.first(where: { $0.id == request.sizeID }) else {
            throw ProviderError(
                driver: driverName, verb: verb, code: .invalidInput,
                message: "unknown size \(request.sizeID); sizes: \(configuration.sizes.map(\.id).joined(separator: ", "))")
        }
        guard !request.name.isEmpty else {
            throw ProviderError(driver: driverName, verb: verb, code: .invalidInput, message: "instance name is empty")
        }
        let imageRecord = try guarded(verb) {
            try database.read { db in try SimImageRecord.fetchOne(db, key: request.imageID) }
        }
        guard var imageRecord else { throw ProviderError.notFound(driver: driverName, verb: verb, "image \(request.imageID)") }
        if let consumer = imageRecord.consumedBy {
            throw ProviderError.invalidState(
                driver: driverName, verb: verb, "image \(imageRecord.id) was consumed by instance \(consumer) and starts no other")
        }
        let consume = request.extra["consumeImage"] == "true"
        let capacity = try guarded(verb) { try currentCapacity() }
        guard capacity.admits(size) else {
            throw ProviderError(
                driver: driverName, verb: verb, code: .capacityExceeded,
                message: "\(size.id) does not fit: \(capacity.usedInstances)/\(capacity.maxInstances.map(String.init) ?? "∞") instances, \(capacity.usedVCPU)/\(capacity.maxVCPU.map(String.init) ?? "∞") vCPU, \(capacity.usedMemoryMiB)/\(capacity.maxMemoryMiB.map(String.init) ?? "∞") MiB in use")
        }
        let id = "sim-i-" + RandomIdentifier.hex(bytes: 6)
        let disk = "disks/\(id).raw"
        let diskURL = configuration.dataDirectory.appendingPathComponent(disk)
        let now = Date()
        let record = SimInstanceRecord(
            id: id, name: request.name, sizeID: size.id, imageID: imageRecord.id, rawState: "booting",
            targetRawState: "running", transitionDue: now.adding(configuration.delays.boot), diskFile: disk,
            address: Self.address(for: id), createdAt: now)
        // Undo everything on any failure, cancellation included: no disk without a row, no row without a disk.
        let imageFile = configuration.dataDirectory.appendingPathComponent(imageRecord.file)
        do {
            let driver = driverName
            // Booting from the image's own file (a volume made from it) needs no copy: the file
            // gets the disk's name too, and the image's name goes once the instance is recorded.
            let linked = try consume && FileCopy.link(from: imageFile, to: diskURL)
            if !linked {
                _ = try FileCopy.copy(
                    from: imageFile, to: diskURL, durable: configuration.durableWrites, hashing: false
                ) { done, total in
                    progress?(ProgressEvent(driver: driver, verb: verb, completed: done, total: total, message: "cloning disk"))
                }
            }
            try write { db in
                try record.insert(db)
                if consume {
                    imageRecord.consumedBy = id
                    try imageRecord.update(db)
                }
            }
            try consumeFault(verb, late: true)
        } catch {
            _ = try? write { db in
                try SimInstanceRecord.deleteOne(db, key: id)
                if consume {
                    imageRecord.consumedBy = nil
                    try imageRecord.update(db)
                }
            }
            try? FileManager.default.removeItem(at: diskURL)
            throw files.mapError(error, verb: verb)
        }
        // Only the disk's name is left, so a later start has nothing to un-share. A crash before
        // this leaves both names: the next start then copies, as for any shared disk.
        if consume { try? FileManager.default.removeItem(at: imageFile) }
        progress?(ProgressEvent(driver: driverName, verb: verb, completed: 1, total: 1, message: "booting"))
        return instance(record)
    }

    public func perform(_ verb: Verb, instance id: String) async throws -> Instance {
        guard instanceActionVerbs.contains(verb) else {
            throw ProviderError(driver: driverName, verb: verb, code: .invalidInput, message: "\(verb) is not an instance action")
        }
        try consumeFault(verb)
        return try guarded(verb) {
            var record = try settledRecord(id, verb: verb)
            let delays = configuration.delays
            let now = Date()
            func transition(_ through: String, _ to: String, _ delay: Duration) {
                record.rawState = through
                record.targetRawState = to
                record.transitionDue = now.adding(delay)
            }
            func set(_ state: String) {
                record.rawState = state
                record.targetRawState = nil
                record.transitionDue = nil
            }
            let state = record.rawState
            if verb == .start || verb == .restore, Self.state(forRaw: state) == .stopped || Self.state(forRaw: state) == .saved {
                try unshareDisk(record)
            }
            switch (verb, state) {
            case (.start, "stopped"), (.start, "stopped:destroyed"): transition("booting", "running", delays.boot)
            case (.start, "saved"), (.restore, "saved"): transition("restoring", "running", delays.save)
            case (.shutdown, "running"): transition("shutting-down", "stopped", delays.shutdown)
            case (.destroy, "running"), (.destroy, "booting"), (.destroy, "rebooting"), (.destroy, "suspended"),
                (.destroy, "shutting-down"), (.destroy, "restoring"), (.destroy, "saving"):
                set("stopped:destroyed")
            case (.reboot, "running"): transition("rebooting", "running", delays.reboot)
            case (.suspend, "running"): set("suspended")
            case (.resume, "suspended"): set("running")
            case (.save, "running"), (.save, "suspended"): transition("saving", "saved", delays.save)
            default:
                throw ProviderError.invalidState(
                    driver: driverName, verb: verb, "instance \(id) is \(state); cannot \(verb) it")
            }
            try database.write { db in try record.update(db) }
            try consumeFault(verb, late: true)
            return instance(record)
        }
    }

    public func terminate(instance id: String) async throws {
        let verb = Verb.terminate
        try consumeFault(verb)
        try guarded(verb) {
            var record = try settledRecord(id, verb: verb)
            guard record.rawState != "terminating" else { return }
            record.rawState = "terminating"
            record.targetRawState = "terminated"
            record.transitionDue = Date().adding(configuration.delays.terminate)
            try database.write { db in try record.update(db) }
            _ = try settle(record)
        }
    }

    public func snapshot(instance id: String, name: String, progress: ProgressHandler?) async throws -> Image {
        let verb = Verb.snapshot
        try consumeFault(verb)
        let record = try guarded(verb) { try settledRecord(id, verb: verb) }
        guard record.rawState != "terminating" else {
            throw ProviderError.invalidState(driver: driverName, verb: verb, "instance \(id) is terminating")
        }
        let disk = configuration.dataDirectory.appendingPathComponent(record.diskFile)
        if Self.state(forRaw: record.rawState) == .stopped {
            return try await linkStoppedDisk(disk, name: name, verb: verb, progress: progress)
        }
        // The instance's own disk: nothing to admit (admission nil).
        return try await addImage(name: name, from: disk, format: .raw, expectedSHA256: nil, admission: nil, verb: verb, progress: progress)
    }

    /// The disk of a stopped instance does not change until the instance starts again, and a start
    /// first gives the instance a private copy of a disk it shares (`unshareDisk`): so the image can
    /// share the disk's file (copy on write) instead of copying it now. One read pass for the digest.
    private func linkStoppedDisk(_ disk: URL, name: String, verb: Verb, progress: ProgressHandler?) async throws -> Image {
        try await storeImage(name: name, verb: verb) { stored in
            let driver = driverName
            let digest = try FileCopy.digest(of: disk) { done, total in
                progress?(ProgressEvent(driver: driver, verb: verb, completed: done, total: total, message: "hashing"))
            }
            if try FileCopy.link(from: disk, to: stored) { return (digest.bytes, digest.sha256) }
            let copy = try FileCopy.copy(from: disk, to: stored, durable: configuration.durableWrites)
            return (copy.bytes, copy.sha256)
        }
    }

    /// Before an instance runs (and so may write its disk), a disk that still shares its file with
    /// an image (a snapshot taken while stopped) becomes a private copy. Crash-safe: the copy is
    /// renamed over the disk's name only when complete; until then the shared file is untouched.
    private func unshareDisk(_ record: SimInstanceRecord) throws {
        let disk = configuration.dataDirectory.appendingPathComponent(record.diskFile)
        var info = stat()
        guard stat(disk.path, &info) == 0, info.st_nlink > 1 else { return }
        _ = try FileCopy.copy(from: disk, to: disk, durable: configuration.durableWrites, hashing: false)
    }

    // MARK: Images

    public func registerImage(name: String, options: [String: String]) async throws -> Image {
        let verb = Verb.registerImage
        try consumeFault(verb)
        guard let path = options["path"] else {
            throw ProviderError(
                driver: driverName, verb: verb, code: .invalidInput,
                message: "options must name the image file as \"path\" (and optionally \"format\", \"sha256\")")
        }
        guard let format = ImageFormat(name: options["format"] ?? "raw") else {
            throw ProviderError(
                driver: driverName, verb: verb, code: .unsupportedFormat, message: "unknown format \(options["format"] ?? "")")
        }
        return try await addImage(
            name: name, from: URL(fileURLWithPath: path), format: format, expectedSHA256: options["sha256"], admission: .strict,
            verb: verb, progress: nil)
    }

    public func deregisterImage(id: String) async throws {
        let verb = Verb.deregisterImage
        try consumeFault(verb)
        try guarded(verb) {
            guard let record = try database.read({ db in try SimImageRecord.fetchOne(db, key: id) }) else {
                throw ProviderError.notFound(driver: driverName, verb: verb, "image \(id)")
            }
            _ = try database.write { db in try SimImageRecord.deleteOne(db, key: id) }
            try? FileManager.default.removeItem(at: configuration.dataDirectory.appendingPathComponent(record.file))
        }
    }

    public func exportImage(
        id: String, to destination: URL, format: ImageFormat, progress: ProgressHandler?
    ) async throws -> ImageFile {
        let verb = Verb.exportImage
        try consumeFault(verb)
        guard let record = try guarded(verb, { try database.read { db in try SimImageRecord.fetchOne(db, key: id) } }) else {
            throw ProviderError.notFound(driver: driverName, verb: verb, "image \(id)")
        }
        if let consumer = record.consumedBy {
            throw ProviderError.invalidState(driver: driverName, verb: verb, "image \(id) was consumed by instance \(consumer)")
        }
        let crashAfter = exportCrashAfter
        exportCrashAfter = nil
        let stored = configuration.dataDirectory.appendingPathComponent(record.file)
        let file = try await files.export(
            stored: stored, storedFormat: ImageFormat(name: record.format) ?? .raw, contentSHA256: record.sha256,
            to: destination, format: format, failAfter: crashAfter, progress: progress)
        do { try consumeFault(verb, late: true) } catch {
            try? FileManager.default.removeItem(at: destination)
            throw error
        }
        return file
    }

    public func importImage(
        from source: URL, name: String, format: ImageFormat, expectedSHA256: String?, admission: ImageAdmission,
        progress: ProgressHandler?
    ) async throws -> Image {
        try consumeFault(.importImage)
        return try await addImage(
            name: name, from: source, format: format, expectedSHA256: expectedSHA256, admission: admission, verb: .importImage,
            progress: progress)
    }

    /// Takes a raw file over by linking it into `images/` after checking its digest (no copy): stored
    /// images are never written, so sharing the inode with the caller's name until it is removed is safe.
    public func adoptImage(
        from source: URL, name: String, format: ImageFormat, expectedSHA256: String?, digestVerified: Bool,
        admission: ImageAdmission, progress: ProgressHandler?
    ) async throws -> Image {
        try consumeFault(.importImage)
        let image = try await addImage(
            name: name, from: source, format: format, expectedSHA256: expectedSHA256, admission: admission, verb: .importImage,
            adopting: true, digestVerified: digestVerified, progress: progress)
        try? FileManager.default.removeItem(at: source)
        return image
    }

    /// Copies or converts a file into `images/` as raw and records it; on failure removes both.
    private func addImage(
        name: String, from source: URL, format: ImageFormat, expectedSHA256: String?, admission: ImageAdmission?, verb: Verb,
        adopting: Bool = false, digestVerified: Bool = false, progress: ProgressHandler?
    ) async throws -> Image {
        try await storeImage(name: name, verb: verb) { stored in
            let result = try await files.importFile(
                from: source, format: format, expectedSHA256: expectedSHA256, into: stored, storedFormat: .raw,
                admission: admission, adopting: adopting, digestVerified: digestVerified, progress: progress)
            return (result.sizeBytes, result.contentSHA256)
        }
    }

    /// Records a new raw image whose file `fill` puts at the path it is given (returning size and
    /// SHA-256); on any failure neither the record nor the file is left.
    private func storeImage(
        name: String, verb: Verb, _ fill: (URL) async throws -> (sizeBytes: Int64, sha256: String)
    ) async throws -> Image {
        let id = "sim-img-" + RandomIdentifier.hex(bytes: 6)
        let file = "images/\(id).raw"
        let stored = configuration.dataDirectory.appendingPathComponent(file)
        do {
            let result = try await fill(stored)
            let record = SimImageRecord(
                id: id, name: name, format: ImageFormat.raw.rawValue, sizeBytes: result.sizeBytes,
                sha256: result.sha256, file: file, createdAt: Date())
            try write { db in try record.insert(db) }
            try consumeFault(verb, late: true)
            return image(record)
        } catch {
            _ = try? write { db in try SimImageRecord.deleteOne(db, key: id) }
            try? FileManager.default.removeItem(at: stored)
            var mapped = files.mapError(error, verb: verb)
            mapped.verb = verb
            throw mapped
        }
    }

    // MARK: Helpers

    /// Synchronous database access: SimCloud's writes are tiny, and staying synchronous inside the actor
    /// keeps each verb atomic with respect to other calls on this driver.
    private func write<T>(_ body: (Database) throws -> T) throws -> T { try database.write(body) }

    /// Runs `body`, turning database and file errors into `ProviderError`s for `verb`.
    private func guarded<T>(_ verb: Verb, _ body: () throws -> T) throws -> T {
        do { return try body() } catch { throw files.mapError(error, verb: verb) }
    }

    private func settledRecord(_ id: String, verb: Verb) throws -> SimInstanceRecord {
        guard let record = try database.read({ db in try SimInstanceRecord.fetchOne(db, key: id) }),
              let settled = try settle(record)
        else { throw ProviderError.notFound(driver: driverName, verb: verb, "instance \(id)") }
        return settled
    }

    /// Applies a transition that has come due. Returns nil when the instance is now gone.
    private func settle(_ record: SimInstanceRecord) throws -> SimInstanceRecord? {
        guard let target = record.targetRawState, let due = record.transitionDue, due <= Date() else { return record }
        if target == "terminated" {
            try database.write { db in _ = try SimInstanceRecord.deleteOne(db, key: record.id) }
            try? FileManager.default.removeItem(at: configuration.dataDirectory.appendingPathComponent(record.diskFile))
            return nil
        }
        var settled = record
        settled.rawState = target
        settled.targetRawState = nil
        settled.transitionDue = nil
        try database.write { db in try settled.update(db) }
        return settled
    }

    static func state(forRaw raw: String) -> InstanceState {
        switch raw {
        case "booting", "restoring": .pending
        case "running": .running
        case "rebooting": .rebooting
        case "shutting-down", "saving": .stopping
        case "stopped", "stopped:destroyed": .stopped
        case "suspended": .paused
        case "saved": .saved
        case "terminating": .terminating
        default: .unknown
        }
    }

    private func instance(_ record: SimInstanceRecord) -> Instance {
        Instance(
            id: record.id, name: record.name, sizeID: record.sizeID, imageID: record.imageID,
            state: Self.state(forRaw: record.rawState), rawState: record.rawState,
            addresses: record.rawState == "running" ? [record.address] : [], createdAt: record.createdAt,
            extra: ["disk": record.diskFile])
    }

    private func image(_ record: SimImageRecord) -> Image {
        Image(
            id: record.id, name: record.name, format: ImageFormat(name: record.format), sizeBytes: record.sizeBytes,
            sha256: record.sha256, rawState: record.consumedBy == nil ? "available" : "consumed",
            extra: record.consumedBy.map { ["file": record.file, "consumedBy": $0] } ?? ["file": record.file])
    }

    /// A stable private address per instance (198.51.100.0/24 is TEST-NET-2: never routable).
    static func address(for id: String) -> String {
        "198.51.100.\(abs(id.hashValue % 250) + 2)"
    }

    /// A deterministic 8 MiB raw disk so its checksum is the same everywhere.
    static func createSeedImage(configuration: Configuration, database: DatabasePool) throws {
        let exists = try database.read { db in try SimImageRecord.fetchCount(db) > 0 }
        guard !exists else { return }
        let file = "images/\(seedImageID).raw"
        let url = configuration.dataDirectory.appendingPathComponent(file)
        var data = Data(count: 8 << 20)
        let banner = Array("INTERCLOUD SIMCLOUD SEED IMAGE v1\n".utf8)
        data.withUnsafeMutableBytes { buffer in
            var state: UInt32 = 0x1234_5678
            for offset in stride(from: 0, to: buffer.count, by: 4096) {
                for (i, byte) in banner.enumerated() { buffer[offset + i] = byte }
                // xorshift32: cheap deterministic filler so the disk is not all zeros.
                for i in stride(from: offset + 64, to: offset + 4096, by: 4) {
                    state ^= state << 13
                    state ^= state >> 17
                    state ^= state << 5
                    buffer.storeBytes(of: state.littleEndian, toByteOffset: i, as: UInt32.self)
                }
            }
        }
        try data.write(to: url, options: .atomic)
        let digest = try FileCopy.digest(of: url)
        let record = SimImageRecord(
            id: seedImageID, name: "seed-linux", format: "raw", sizeBytes: digest.bytes, sha256: digest.sha256,
            file: file, createdAt: Date(timeIntervalSince1970: 0))
        try database.write { db in try record.insert(db) }
    }
}

extension Date {
    func adding(_ duration: Duration) -> Date {
        let (seconds, attoseconds) = duration.components
        return addingTimeInterval(Double(seconds) + Double(attoseconds) / 1e18)
    }
}
