import ArgumentParser
import Backup
import Broker
import Foundation
import GRDB
import Logging
import Providers
import Storage
import TOMLParsing
import Trust

/// `intercloud backup ...`: back up instances by policy, list what a store holds, restore.
///
/// Like `intercloud cluster`, the command is its own runner: the `[provider]` of `--config` is
/// driven directly and the journal is the broker's database, so `intercloud serve` need not run.
/// A running broker runs the `[backup] policies` that have `every` on their own.
struct BackupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Back up instances to a directory or an S3-compatible store, keep N, restore into any driver.",
        discussion: """
            A policy file names the instances, how their disks are captured, where backups go, \
            how often and how many are kept:

              version = 1
              name = "nightly"
              instances = ["web-1", "db-1"]  # names or ids of [provider]
              method = "snapshot"       # or "stop-and-export"
              format = "qcow2"          # or "raw"
              every = "24h"             # by `intercloud serve`; omit: on demand
              keep_last = 7             # per instance
              keep_days = 30            # optional: none older (but the newest)

              [target]
              kind = "s3"               # or "directory", with path = "/srv/bk"
              endpoint = "https://s3.example.net"
              region = "us-east-1"
              bucket = "cloud1-backups"
              prefix = "intercloud/"

            S3 keys come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY only. \
            stop-and-export stops a running instance while its snapshot is taken and \
            starts it again before the upload.

            Each instance's disk is snapshotted, exported in `format`, stored as \
            <prefix><policy>/<backup-id>/disk.<format> and described by a manifest.json written \
            last (size, SHA-256, the instance it came from). Then retention deletes old backups. \
            Every step is journaled before it is performed: `resume` finishes a run or restore a \
            killed command left, taking up where it stopped.

              intercloud backup check nightly.toml -c cloud1.toml
              intercloud backup run nightly.toml -c cloud1.toml    # now
              intercloud backup list nightly.toml -c cloud1.toml   # the store
              intercloud backup restore nightly.toml BACKUP-ID \\
                  --name web-1-copy -c cloud2.toml                 # elsewhere
              intercloud backup runs -c cloud1.toml --output json
              intercloud backup show RUN-ID -c cloud1.toml         # each step
              intercloud backup resume -c cloud1.toml              # after kill

            POLICY is a policy file, or the name of one among the broker's [backup] policies. \
            A restore checks the downloaded disk against its manifest and admits it like any \
            image from elsewhere; it can go into another cloud: give that broker's --config.
            """,
        subcommands: [Check.self, Run.self, List.self, Restore.self, Runs.self, Show.self, Resume.self])

    struct Options: ParsableArguments {
        @Option(name: .shortAndLong, help: "Broker configuration file (TOML): its [provider], [backup] and database.")
        var config: String
        @Option(help: "Output format: table or json.")
        var output: OutputFormat = .table
        @Flag(name: .shortAndLong, help: "No progress lines on stderr.")
        var quiet = false
    }

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a policy: the file, the instances it names, the driver's verbs and the store; changes nothing.")
        @OptionGroup var options: Options
        @Argument(help: "Policy file or name.") var policy: String

        func run() async throws {
            let context = try BackupContext(options)
            let policy = try context.policy(self.policy)
            let driver = try await context.driver()
            let instances = try await driver.listInstances()
            struct Planned: Encodable { var instance: String; var found: String; var ok: Bool }
            let planned = policy.instances.map { wanted in
                let live = instances.filter { $0.state != .terminated }
                // As a run resolves it: an id first, else a name held by exactly one instance.
                let matches = live.filter { $0.id == wanted }.isEmpty ? live.filter { $0.name == wanted } : live.filter { $0.id == wanted }
                return Planned(
                    instance: wanted,
                    found: matches.count == 1 ? "\(matches[0].id) (\(matches[0].state.rawValue))" : matches.isEmpty ? "not found" : "ambiguous: \(matches.count) instances",
                    ok: matches.count == 1)
            }
            // Reached read-only: a listing proves the address and the keys; a bucket that does not
            // exist yet is fine (the first run creates it).
            let store: String
            do {
                let backups = try await BackupInventory().backups(of: policy)
                store = "reachable, \(backups.filter { $0.manifest != nil }.count) backups of \(policy.name)"
            } catch let error as BackupError where error.description.contains("not-found") || error.description.contains("NoSuchBucket") {
                store = "reachable; the bucket is created at the first run"
            } catch {
                throw BackupCommandError(description: "the store \(policy.target) cannot be used: \(error)")
            }
            switch options.output {
            case .json:
                struct Plan: Encodable {
                    var policy: String; var source: String; var target: String; var store: String; var method: String; var every: Double?
                    var instances: [Planned]
                }
                emit(String(decoding: try jsonEncoder().encode(Plan(
                    policy: policy.name, source: policy.source, target: policy.target.description, store: store, method: policy.method.rawValue,
                    every: policy.every, instances: planned)), as: UTF8.self))
            case .table:
                print("\(policy.name): \(policy.source) is valid")
                print("target:   \(policy.target): \(store)")
                print("method:   \(policy.method.rawValue), \(policy.format.rawValue); keep \(policy.keepLast)\(policy.keepDays.map { ", at most \($0) days" } ?? "")")
                print("schedule: \(policy.every.map { "every \(Int($0)) s (when `intercloud serve` runs it)" } ?? "on demand only")")
                printTable(headers: ["INSTANCE", "FOUND"], rows: planned.map { [$0.instance, $0.found] })
            }
            if planned.contains(where: { !$0.ok }) { throw ExitCode(1) }
        }
    }

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run a policy now: back up each instance, then apply retention.",
            discussion: "Exits 1 when any instance was not backed up (the run ends partial or failed; the reasons are printed).")
        @OptionGroup var options: Options
        @Argument(help: "Policy file or name.") var policy: String

        func run() async throws {
            let context = try BackupContext(options)
            let policy = try context.policy(self.policy)
            let runner = try await context.runner()
            let run = try await context.perform { try await runner.run(policy) }
            try printRun(run, options: options)
            if run.phase != .completed { throw ExitCode(1) }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the backups of a policy in its store, newest first (complete, unfinished, refused).")
        @OptionGroup var options: Options
        @Argument(help: "Policy file or name.") var policy: String

        func run() async throws {
            let context = try BackupContext(options)
            let policy = try context.policy(self.policy)
            let backups = try await context.perform(locked: false) {
                try await BackupInventory(audit: AuditLog(database: try context.database())).backups(of: policy)
            }
            switch options.output {
            case .json:
                emit(String(decoding: try jsonEncoder().encode(backups), as: UTF8.self))
            case .table:
                let format = ISO8601DateFormatter()
                printTable(
                    headers: ["BACKUP", "CREATED", "STATUS", "INSTANCE", "DRIVER", "DISK", "SHA-256"],
                    rows: backups.map { listing in
                        [listing.backupID, format.string(from: listing.createdAt), listing.status,
                         listing.manifest.map { "\($0.source.instanceName) (\($0.source.instanceID))" } ?? "-",
                         listing.manifest?.source.driver ?? "-",
                         listing.manifest.map { "\($0.disk.format.rawValue) \($0.disk.bytes >> 20) MiB" } ?? "-",
                         listing.manifest.map { String($0.disk.sha256.prefix(16)) } ?? (listing.refusal ?? "-")]
                    })
            }
        }
    }

    struct Restore: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Restore a backup as a new instance of this broker's [provider] (any driver).",
            discussion: """
                Downloads the disk to the staging folder, checks its size and SHA-256 against the \
                manifest, imports it (admitted like any image from elsewhere), creates the instance \
                and waits until it runs. A failure removes what the restore made. Exits 1 on failure.
                """)
        @OptionGroup var options: Options
        @Argument(help: "Policy file or name (its [target] is read from).") var policy: String
        @Argument(help: "Backup id (see `intercloud backup list`).") var backupID: String
        @Option(help: "Name of the new instance.") var name: String
        @Option(help: "Size of the new instance (default: the backed-up instance's, if this driver offers it).") var size: String?
        @Option(help: "Seconds the new instance may take to run.") var bootTimeout: Double = 300

        func run() async throws {
            let context = try BackupContext(options)
            let policy = try context.policy(self.policy)
            let runner = try await context.runner()
            let restore = try await context.perform {
                try await runner.restore(
                    backupID: backupID, policy: policy.name, target: policy.target, instanceName: name, sizeID: size, bootTimeout: bootTimeout)
            }
            switch options.output {
            case .json:
                emit(String(decoding: try jsonEncoder().encode(restore), as: UTF8.self))
            case .table:
                print("restore:  \(restore.restoreID)")
                print("backup:   \(restore.manifest.backupID) (\(restore.manifest.source.instanceName) on \(restore.manifest.source.driver))")
                print("phase:    \(restore.phase.rawValue)")
                if let reason = restore.reason { print("reason:   \(reason)") }
                print("instance: \(restore.instanceName) \(restore.instanceID ?? "-") \(restore.addresses.joined(separator: ","))")
                print("image:    \(restore.imageID ?? "-")")
            }
            if restore.phase != .restored { throw ExitCode(1) }
        }
    }

    struct Runs: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List backup runs (newest first) from the journal.")
        @OptionGroup var options: Options
        @Option(help: "Only this policy's runs.") var policy: String?

        func run() async throws {
            let journal = BackupJournal(database: try BackupContext(options).database())
            let runs = try journal.runs(policy: policy)
            switch options.output {
            case .json:
                emit(String(decoding: try jsonEncoder().encode(runs), as: UTF8.self))
            case .table:
                let format = ISO8601DateFormatter()
                printTable(
                    headers: ["RUN", "POLICY", "STARTED", "PHASE", "BACKED UP", "REASON"],
                    rows: runs.map { run in
                        [run.runID, run.policy.name, format.string(from: run.startedAt), run.phase.rawValue,
                         "\(run.units.filter { $0.state == .done }.count)/\(run.units.count)", run.reason ?? "-"]
                    })
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one run or restore: its instances and every journaled step.")
        @OptionGroup var options: Options
        @Argument(help: "Run id (br-...) or restore id (rs-...).") var id: String

        func run() async throws {
            let journal = BackupJournal(database: try BackupContext(options).database())
            let steps = try journal.steps(id)
            if let run = try journal.run(id) {
                switch options.output {
                case .json:
                    struct Detail: Encodable { var run: BackupRun.Snapshot; var steps: [BackupStepRecord] }
                    emit(String(decoding: try jsonEncoder().encode(Detail(run: run, steps: steps)), as: UTF8.self))
                    return
                case .table: try printRun(run, options: options)
                }
            } else if let restore = try journal.restore(id) {
                switch options.output {
                case .json:
                    struct Detail: Encodable { var restore: BackupRestore.Snapshot; var steps: [BackupStepRecord] }
                    emit(String(decoding: try jsonEncoder().encode(Detail(restore: restore, steps: steps)), as: UTF8.self))
                    return
                case .table:
                    print("restore:  \(restore.restoreID) of \(restore.manifest.backupID) as \(restore.instanceName): \(restore.phase.rawValue)")
                    if let reason = restore.reason { print("reason:   \(reason)") }
                }
            } else {
                throw ValidationError("no backup run or restore \(id)")
            }
            print("steps:")
            let format = ISO8601DateFormatter()
            printTable(headers: ["  AT", "PHASE", "NEXT STEP", "AFTER"], rows: steps.map { ["  " + format.string(from: $0.at), $0.phase, $0.step, $0.detail] })
        }
    }

    struct Resume: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Finish every backup run and restore a killed command or broker left under way.",
            discussion: """
                From the journal: a snapshot in flight is looked up by name and adopted (or taken \
                again), an instance the run stopped is started again, an export, upload or \
                download is done again (an unfinished upload is discarded first).
                """)
        @OptionGroup var options: Options

        func run() async throws {
            let context = try BackupContext(options)
            let runner = try await context.runner()
            let resumed = try await context.perform { try await runner.resume() }
            switch options.output {
            case .json:
                struct Resumed: Encodable { var runs: [BackupRun.Snapshot]; var restores: [BackupRestore.Snapshot] }
                emit(String(decoding: try jsonEncoder().encode(Resumed(runs: resumed.runs, restores: resumed.restores)), as: UTF8.self))
            case .table:
                if resumed.runs.isEmpty && resumed.restores.isEmpty { print("nothing was under way") }
                for run in resumed.runs { try printRun(run, options: options) }
                for restore in resumed.restores { print("restore \(restore.restoreID): \(restore.phase.rawValue)\(restore.reason.map { " (\($0))" } ?? "")") }
            }
        }
    }
}

/// What every backup subcommand opens: the configuration, the broker's database, the driver.
struct BackupContext {
    let options: BackupCommand.Options
    let configuration: BrokerConfiguration

    init(_ options: BackupCommand.Options) throws {
        self.options = options
        self.configuration = try loadConfiguration(options.config)
    }

    /// A policy file, or the policy of that name among `[backup] policies`.
    func policy(_ argument: String) throws -> BackupPolicy {
        do {
            if argument.hasSuffix(".toml") || FileManager.default.fileExists(atPath: argument) {
                return try BackupPolicyLoader.load(path: argument)
            }
            let policies = try BackupPolicyLoader.load(paths: configuration.backup.policyPaths)
            guard let policy = policies.first(where: { $0.name == argument }) else {
                throw ValidationError(
                    "no policy file \(argument), and no policy of that name in [backup] policies (\(policies.map(\.name).joined(separator: ", ").nonEmptyOr("none")))")
            }
            return policy
        } catch let error as TOMLLoadError { throw ValidationError(error.description) }
    }

    func database() throws -> DatabasePool {
        try IntercloudDatabase.open(path: configuration.databasePath, schema: BrokerNode.schema)
    }

    func driver() async throws -> any CloudDriver {
        guard let provider = configuration.provider else {
            throw ValidationError("\(options.config) has no [provider]: backups capture and restore that cloud's instances")
        }
        return try await DriverRegistry.make(DriverSettings(kind: provider.driver, options: provider.options))
    }

    func runner() async throws -> BackupRunner {
        let database = try database()
        let quiet = options.quiet
        var logger = Logger(label: "intercloud.backup")
        // Progress lines already say what the log's info lines would; warnings stay.
        logger.logLevel = .warning
        return BackupRunner(
            driver: try await driver(), journal: BackupJournal(database: database),
            configuration: .init(staging: URL(fileURLWithPath: configuration.backup.staging)), audit: AuditLog(database: database),
            logger: logger,
            progress: { event in
                guard !quiet else { return }
                FileHandle.standardError.write(Data("\(event)\n".utf8))
            })
    }

    /// Runs `body` holding this broker's backup lock, so two commands never act on one journal
    /// at once (a running broker's scheduler takes no lock: it runs different policies' runs,
    /// and a second run of one policy is refused by the journal).
    func perform<T>(locked: Bool = true, _ body: () async throws -> T) async throws -> T {
        guard locked else {
            do { return try await body() } catch let error as BackupError { throw BackupCommandError(description: error.description) }
        }
        let busy = "another `intercloud backup` command is acting on this broker's backups; wait for it"
        return try await withCommandLock(configuration.databasePath + ".backups.lock", busy: busy) {
            do { return try await body() } catch let error as BackupError { throw BackupCommandError(description: error.description) }
        }
    }
}

/// A request the backup runner refused or could not finish: printed as `Error: ...`, exit 1.
struct BackupCommandError: Error, CustomStringConvertible {
    var description: String
}

/// A run as a block of lines and a table of instances, or as JSON.
func printRun(_ run: BackupRun.Snapshot, options: BackupCommand.Options) throws {
    switch options.output {
    case .json:
        emit(String(decoding: try jsonEncoder().encode(run), as: UTF8.self))
    case .table:
        print("run:      \(run.runID) of \(run.policy.name)")
        print("phase:    \(run.phase.rawValue)")
        if let reason = run.reason { print("reason:   \(reason)") }
        print("target:   \(run.policy.target)")
        if run.deleted > 0 { print("deleted:  \(run.deletions.prefix(run.deleted).joined(separator: ", ")) (retention)") }
        if let error = run.pruneError { print("retention failed: \(error)") }
        printTable(
            headers: ["INSTANCE", "BACKUP", "STATE", "BYTES", "SHA-256", "ERROR"],
            rows: run.units.map { unit in
                [unit.instance, unit.backupID, unit.state.rawValue, unit.storedBytes.map(String.init) ?? "-",
                 unit.storedSHA256.map { String($0.prefix(16)) } ?? "-", unit.error ?? unit.warning.map { "warning: \($0)" } ?? "-"]
            })
    }
}

extension String {
    fileprivate func nonEmptyOr(_ fallback: String) -> String { isEmpty ? fallback : self }
}
