import Backup
import Foundation
import Providers
import Storage
import Synchronization
import Trust
import Testing

/// The repository root (scripts, the guest, the binary's build folder).
let repositoryRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// A scratch directory removed when the test ends.
final class TemporaryDirectory: Sendable {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("backup-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: url) }

    func file(_ name: String, _ contents: String) throws -> String {
        let path = url.appendingPathComponent(name).path
        try contents.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }
}

/// Collects the runner's progress lines.
final class ProgressLog: Sendable {
    private let lines = Mutex<[String]>([])
    func append(_ line: String) { lines.withLock { $0.append(line) } }
    var all: [String] { lines.withLock { $0 } }
}

/// One broker's backups: a real SimCloud, a real SQLite journal and audit log, a directory store,
/// all in a temporary directory; `restarted()` opens new objects on the same files, as a new
/// process would after kill -9.
struct BackupFixture {
    let directory: TemporaryDirectory
    let cloud: SimCloud
    let journal: BackupJournal
    let audit: AuditLog
    let runner: BackupRunner
    let progress: ProgressLog

    var storeRoot: URL { directory.url.appendingPathComponent("store") }
    var staging: URL { directory.url.appendingPathComponent("staging") }

    /// `environment`: where the stores read S3 keys from (this process's by default).
    init(
        directory: TemporaryDirectory? = nil, observer: BackupRunner.JournalObserver? = nil,
        environment: [String: String] = ProcessInfo.processInfo.environment, delays: SimCloud.Delays = .instant
    ) throws {
        let directory = try directory ?? TemporaryDirectory()
        self.directory = directory
        var cloudConfiguration = SimCloud.Configuration(dataDirectory: directory.url.appendingPathComponent("sim"), delays: delays)
        cloudConfiguration.durableWrites = false
        cloud = try SimCloud(configuration: cloudConfiguration)
        let database = try IntercloudDatabase.open(
            path: directory.url.appendingPathComponent("broker.sqlite").path, schema: [BackupSchema.self, AuditSchema.self])
        journal = BackupJournal(database: database)
        audit = AuditLog(database: database)
        let progress = ProgressLog()
        self.progress = progress
        runner = BackupRunner(
            driver: cloud, journal: journal,
            configuration: .init(staging: directory.url.appendingPathComponent("staging"), pollInterval: .milliseconds(5)),
            audit: audit, progress: { progress.append($0.description) }, observer: observer,
            stores: { try $0.store(environment: environment) })
    }

    func restarted() throws -> BackupFixture { try BackupFixture(directory: directory) }

    /// A policy backing up `instances` to this fixture's directory store.
    func policy(_ instances: [String], method: BackupPolicy.Method = .snapshot, keepLast: Int = 7, name: String = "nightly") -> BackupPolicy {
        BackupPolicy(name: name, instances: instances, method: method, keepLast: keepLast, powerTimeout: 10, target: .directory(path: storeRoot.path))
    }

    /// Creates a running instance from the seed image.
    @discardableResult
    func instance(_ name: String) async throws -> Instance {
        let image = try await cloud.listImages().first { $0.name == "seed-linux" }!
        let created = try await cloud.create(.init(name: name, sizeID: "sim.small", imageID: image.id), progress: nil)
        return try await cloud.waitFor(instance: created.id, state: .running, timeout: .seconds(5), pollInterval: .milliseconds(5))
    }

    /// Every file under the store, relative, sorted (temporary files included: none may be left).
    func storeFiles() throws -> [String] {
        guard let enumerator = FileManager.default.enumerator(atPath: storeRoot.path) else { return [] }
        return enumerator.compactMap { $0 as? String }.filter { path in
            var isDirectory: ObjCBool = false
            FileManager.default.fileExists(atPath: storeRoot.appendingPathComponent(path).path, isDirectory: &isDirectory)
            return !isDirectory.boolValue
        }.sorted()
    }

    /// Images whose name marks them as a backup's snapshot: a finished run leaves none.
    func snapshotImages() async throws -> [Image] {
        try await cloud.listImages().filter { $0.name.hasPrefix("backup-") }
    }
}
