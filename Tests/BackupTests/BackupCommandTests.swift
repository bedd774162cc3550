import Backup
import Foundation
import TestSupport
import Testing

/// `intercloud backup` and `intercloud serve` as operators run them: the built executable, a
/// broker configuration with a SimCloud `[provider]`, `--output json` parsed back.
@Suite("intercloud backup", .serialized)
struct BackupCommandTests {
    static func binary() throws -> String { try IntercloudExecutable.path() }
    static func intercloud(_ arguments: [String]) throws -> IntercloudExecutable.Run { try IntercloudExecutable.run(arguments) }

    static func decode<T: Decodable>(_ type: T.Type, _ text: String) throws -> T {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(type, from: Data(text.utf8))
    }

    /// A broker configuration and a policy backing up `web-1` every 60 s into a directory.
    func setUp(_ directory: TemporaryDirectory) throws -> (config: String, policy: String, store: URL) {
        let store = directory.url.appendingPathComponent("store")
        let policy = try directory.file("nightly.toml", """
            version = 1
            name = "nightly"
            instances = ["web-1"]
            every = "60s"
            keep_last = 2
            [target]
            kind = "directory"
            path = "\(store.path)"
            """)
        let config = try directory.file("cloud1.toml", """
            [broker]
            cloud = "cloud1"
            regions = []
            database = "state/broker.sqlite"

            [xmpp]
            jid = "broker@cloud1.test"
            password = "unused"
            tls = "disabled-for-testing"
            host = "127.0.0.1"
            port = 1

            [provider]
            driver = "simcloud"
            options = { data-dir = "sim", boot-delay-ms = "0", shutdown-delay-ms = "0", terminate-delay-ms = "0" }

            [backup]
            policies = ["nightly.toml"]
            check_seconds = 1
            """)
        return (config, policy, store)
    }

    func createInstance(_ config: String, image: String = "seed-linux") throws {
        struct Image: Decodable { var id: String; var name: String }
        let images = try Self.decode([Image].self, try Self.intercloud(["provider", "images", "--config", config, "--output", "json"]).stdout)
        let id = try #require(images.first { $0.name == image }?.id)
        let created = try Self.intercloud(["provider", "create", "web-1", "--size", "sim.small", "--image", id, "--config", config])
        #expect(created.status == 0, "\(created.stderr)")
    }

    @Test("check, run, list, restore, runs and show with --output json; progress on stderr")
    func lifecycleAsJSON() throws {
        let directory = try TemporaryDirectory()
        let (config, policy, _) = try setUp(directory)
        try createInstance(config)

        let check = try Self.intercloud(["backup", "check", policy, "--config", config, "--output", "json"])
        #expect(check.status == 0, "\(check.stderr)")
        #expect(check.stdout.contains("\"found\""))

        let run = try Self.intercloud(["backup", "run", "nightly", "--config", config, "--output", "json"])
        #expect(run.status == 0, "\(run.stderr)")
        let snapshot = try Self.decode(BackupRun.Snapshot.self, run.stdout)
        #expect(snapshot.phase == .completed)
        #expect(run.stderr.contains("web-1: uploading to"))

        let list = try Self.intercloud(["backup", "list", policy, "--config", config, "--output", "json"])
        let backups = try Self.decode([BackupListing].self, list.stdout)
        #expect(backups.map(\.backupID) == [snapshot.units[0].backupID])

        let restore = try Self.intercloud([
            "backup", "restore", policy, backups[0].backupID, "--name", "web-1-restored", "--config", config, "--output", "json", "-q",
        ])
        #expect(restore.status == 0, "\(restore.stderr)")
        #expect(try Self.decode(BackupRestore.Snapshot.self, restore.stdout).phase == .restored)
        #expect(restore.stderr.isEmpty, "--quiet: \(restore.stderr)")

        let runs = try Self.decode([BackupRun.Snapshot].self, try Self.intercloud(["backup", "runs", "--config", config, "--output", "json"]).stdout)
        #expect(runs.map(\.runID) == [snapshot.runID])
        let show = try Self.intercloud(["backup", "show", snapshot.runID, "--config", config])
        #expect(show.status == 0 && show.stdout.contains("publish"), "\(show.stdout)")

        let unknown = try Self.intercloud(["backup", "run", "weekly", "--config", config])
        #expect(unknown.status != 0 && unknown.stderr.contains("no policy of that name"))
    }

    @Test("kill -9 of `intercloud backup run` during the export; `intercloud backup resume` finishes it and leaves no partial file")
    func killedRunIsResumed() throws {
        let directory = try TemporaryDirectory()
        let (config, policy, store) = try setUp(directory)
        // A disk big enough that its export is under way when the kill arrives.
        let disk = directory.url.appendingPathComponent("big.raw")
        try runShell("head -c \(384 << 20) /dev/urandom > \(shellQuoted(disk.path))")
        let imported = try Self.intercloud(["provider", "import", disk.path, "--name", "big", "--format", "raw", "--config", config])
        #expect(imported.status == 0, "\(imported.stderr)")
        try createInstance(config, image: "big")

        let process = Process()
        process.executableURL = URL(fileURLWithPath: try Self.binary())
        process.arguments = ["backup", "run", policy, "--config", config]
        let err = Pipe()
        process.standardError = err
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        var progress = ""
        while !progress.contains("exported") {
            let data = err.fileHandleForReading.availableData
            if data.isEmpty { break }
            progress += String(decoding: data, as: UTF8.self)
        }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        #expect(process.terminationReason == .uncaughtSignal, "\(progress)")
        let killed = try Self.decode([BackupRun.Snapshot].self, try Self.intercloud(["backup", "runs", "--config", config, "--output", "json"]).stdout)
        #expect(killed.map(\.phase) == [.running], "\(progress)")

        let resume = try Self.intercloud(["backup", "resume", "--config", config, "--output", "json", "-q"])
        #expect(resume.status == 0, "\(resume.stderr)")
        struct Resumed: Decodable { var runs: [BackupRun.Snapshot] }
        let run = try #require(try Self.decode(Resumed.self, resume.stdout).runs.first)
        #expect(run.phase == .completed, "\(run.reason ?? "")")
        let files = try FileManager.default.subpathsOfDirectory(atPath: store.path).filter { !$0.hasSuffix(run.units[0].backupID) && $0 != "nightly" }
        #expect(files.sorted() == ["nightly/\(run.units[0].backupID)/disk.qcow2", "nightly/\(run.units[0].backupID)/manifest.json"])
        let staging = directory.url.appendingPathComponent("state/broker.sqlite.backups")
        #expect((try? FileManager.default.contentsOfDirectory(atPath: staging.path))?.isEmpty ?? true)
    }

    @Test("`intercloud serve` runs a due policy on its own, and only once within its interval")
    func scheduledInServe() async throws {
        let directory = try TemporaryDirectory()
        let (config, _, _) = try setUp(directory)
        try createInstance(config)
        func runs() throws -> [BackupRun.Snapshot] {
            try Self.decode([BackupRun.Snapshot].self, try Self.intercloud(["backup", "runs", "--config", config, "--output", "json"]).stdout)
        }
        // Creates the broker database first, so the two processes never both create its tables.
        #expect(try runs().isEmpty)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try Self.binary())
        process.arguments = ["serve", "--config", config]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer {
            process.terminate()
            process.waitUntilExit()
        }
        let ran = try await eventually(timeout: .seconds(30)) { try runs().first?.phase == .completed }
        #expect(ran)
        // Three more looks at the schedule (check_seconds = 1): the policy is not due again for a minute.
        try await Task.sleep(for: .seconds(3))
        #expect(try runs().count == 1)
    }
}
