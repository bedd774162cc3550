import ArgumentParser
import Broker
import Foundation
import GRDB
import Migration
import Storage
import XMPP

func openMigrationJournal(_ config: String) throws -> (BrokerConfiguration, DatabasePool, MigrationJournal) {
    let configuration = try loadConfiguration(config)
    guard FileManager.default.fileExists(atPath: configuration.databasePath) else {
        throw ValidationError("no database at \(configuration.databasePath): has this broker run yet?")
    }
    let database = try IntercloudDatabase.open(path: configuration.databasePath, schema: BrokerNode.schema)
    return (configuration, database, MigrationJournal(database: database))
}

/// Writes a line to standard output unbuffered, so lines and the in-place progress bar keep
/// their order whether stdout is a terminal or a pipe.
func emit(_ line: String, newline: Bool = true) {
    FileHandle.standardOutput.write(Data((newline ? line + "\n" : line).utf8))
}

/// Follows a migration in the journal, printing steps and a progress bar, until it is finished.
/// Returns the last phase and whether it finished.
func followMigration(
    _ journal: MigrationJournal, id: String, role: MigrationRole?, timeout: TimeInterval, printSteps: Bool, isTerminal: Bool
) async throws -> (phase: String, finished: Bool) {
    var stepSeq: Int64 = 0
    var progressSeq: Int64 = 0
    var lastBar = ""
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        for step in try journal.steps(id, role: role, after: stepSeq) {
            stepSeq = step.seq
            if printSteps {
                if !lastBar.isEmpty { if isTerminal { emit("") }; lastBar = "" }
                emit("  \(step.role.padding(toLength: 11, withPad: " ", startingAt: 0)) \(step.phase.padding(toLength: 14, withPad: " ", startingAt: 0)) \(step.step) \(step.outcome)\(step.detail.isEmpty ? "" : ": \(step.detail)")")
            }
        }
        if let latest = try journal.progress(id, after: progressSeq).last {
            progressSeq = latest.seq
            if printSteps {
                let bar = progressBar(latest)
                if bar != lastBar {
                    // Written unbuffered so the bar moves in place on a terminal.
                    FileHandle.standardOutput.write(Data((isTerminal ? "\r\(bar)" : "\(bar)\n").utf8))
                    lastBar = bar
                }
            }
        }
        if let summary = try journal.migrations().first(where: { $0.migrationID == id && (role == nil || $0.role == role) }), summary.finished {
            if !lastBar.isEmpty, isTerminal { emit("") }
            return (summary.phase, true)
        }
        try await Task.sleep(for: .milliseconds(100))
    }
    if !lastBar.isEmpty, isTerminal { emit("") }
    let phase = try journal.migrations().first { $0.migrationID == id }?.phase ?? "not started"
    return (phase, false)
}

func progressBar(_ progress: MigrationProgressRecord) -> String {
    let width = 30
    let total = progress.totalBytes ?? 0
    let fraction = total > 0 ? min(1, Double(progress.bytes) / Double(total)) : 0
    let filled = Int(fraction * Double(width))
    let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
    func size(_ bytes: Double) -> String {
        bytes >= Double(1 << 30) ? String(format: "%.2f GiB", bytes / Double(1 << 30)) : String(format: "%.1f MiB", bytes / Double(1 << 20))
    }
    let eta = progress.etaSeconds.map { String(format: "ETA %.0f s", $0) } ?? ""
    return "  transfer    [\(bar)] \(String(format: "%3.0f", fraction * 100))% \(size(Double(progress.bytes)))/\(size(Double(total))) \(size(progress.bytesPerSecond))/s \(eta)"
}

struct MigrateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Move a running instance of this cloud to a trusted peer cloud (cold, or live with --live).",
        discussion: """
            Asks the running broker (`intercloud serve --config FILE`) to migrate INSTANCE to
            --to over urn:intercloud:migration:0, under --agreement (default: the newest agreement
            in force in which the peer grants migrate-in; see `intercloud negotiate`), and follows
            it with a progress bar until it completes or rolls back.

            Steps, each journaled in SQLite before it is acknowledged, each with its undo:
            authorize (agreement + policy) → destination reserves capacity and chooses the size,
            region, network and image format → source stops the instance (graceful, then hard) →
            snapshot and export the disk → convert with qemu-img if the destination needs another
            format → transfer over mutual TLS with the brokers' certificates (chunk hashes, end-to-
            end hash, resumable) → destination verifies, imports and starts the instance → it runs
            → source terminates its copy → metering moves to the destination. A failure before the
            destination confirms rolls back to a running source; never two running copies.

              intercloud migrate i-3f2a9c --to broker@cloud2.example --config cloud1.toml

            With --live the instance keeps running while it moves: the hypervisors copy its memory
            and disk (libvirt peer-to-peer migration, virDomainMigrateToURI3). Possible only when
            both clouds' provider driver is libvirt, the agreement grants migrate-live next to
            migrate-in (intercloud negotiate --entitle migrate-in,migrate-live), and both brokers'
            policy entries for each other list migrate-live; otherwise it is refused, audited, and
            nothing changes. The destination's hypervisor must be reachable from the source's at
            the URI the destination broker offers (its migration live URI setting; by default its
            provider `uri`, right when both hypervisors share a host). Steps: authorize → destination prepares an empty disk → source's
            hypervisor moves the guest → destination confirms it runs there → metering moves.
            If the move fails the guest keeps running here and the destination removes what it
            prepared; after a broker restart the source decides from where the guest actually is.

              intercloud migrate 5a0c3d1e-7b2f-4c1d-9e8a-0f1b2c3d4e5f --to broker@cloud2.example --live --config cloud1.toml

            Exit status 0 when completed, 1 when rolled back or not finished in --timeout.
            Follow any migration with `intercloud migrations watch ID`.
            """)

    @Option(name: .shortAndLong, help: "Broker configuration file (TOML).") var config: String
    @Argument(help: "Instance ID in this cloud's provider (see `intercloud provider instances`).") var instance: String
    @Option(help: "Destination broker JID (bare).") var to: String
    @Option(help: "Agreement ID (default: the newest in force granting migrate-in, and migrate-live with --live).") var agreement: String?
    @Flag(help: "Live migration: the instance keeps running (libvirt on both sides, agreement granting migrate-live).") var live = false
    @Option(help: "Seconds to follow the migration.") var timeout: Double = 600
    @Option(help: "Output format: table or json.") var output: OutputFormat = .table

    func run() async throws {
        let (_, database, journal) = try openMigrationJournal(config)
        let peer = try JID(to).bare.description
        let id = "mig-\((0..<8).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined())"
        try MigrationService.request(
            database: database, id: id, instanceID: instance, peer: peer, agreementID: agreement, mode: live ? .live : .cold, now: Date())
        if output == .table { emit("\(live ? "live " : "")migration \(id): \(instance) → \(peer)") }
        // Wait for the broker to take the request (or say why it could not start it).
        let started = Date()
        while try journal.steps(id).isEmpty {
            if let state = try MigrationService.requestError(database: database, id: id), let error = state.error {
                if output == .json {
                    emit(String(decoding: try jsonEncoder().encode(["migration": id, "phase": "not-started", "error": error]), as: UTF8.self))
                } else {
                    emit("not started: \(error)")
                }
                throw ExitCode(1)
            }
            if Date().timeIntervalSince(started) > 15, try MigrationService.requestError(database: database, id: id)?.taken != true {
                throw ValidationError("the broker did not take the request within 15 s: is `intercloud serve --config \(config)` running?")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        let (phase, finished) = try await followMigration(
            journal, id: id, role: .source, timeout: timeout, printSteps: output == .table, isTerminal: isatty(1) == 1)
        if output == .json {
            emit(String(decoding: try jsonEncoder().encode([
                "migration": id, "phase": phase, "finished": finished ? "true" : "false", "mode": live ? "live" : "cold",
            ]), as: UTF8.self))
        } else {
            emit(finished ? "migration \(id): \(phase)" : "migration \(id) still \(phase) after \(Int(timeout)) s; follow it with `intercloud migrations watch \(id)`")
        }
        if !finished || phase != "completed" { throw ExitCode(1) }
    }
}

struct MigrationsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrations",
        abstract: "List migrations to and from this cloud, or follow one.",
        subcommands: [List.self, Watch.self],
        defaultSubcommand: List.self)

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List migrations (newest first) with role, peer and phase.")
        @Option(name: .shortAndLong, help: "Broker configuration file (TOML).") var config: String
        @Option(help: "Output format: table or json.") var output: OutputFormat = .table

        func run() async throws {
            let (_, _, journal) = try openMigrationJournal(config)
            let migrations = try journal.migrations()
            switch output {
            case .json:
                struct Item: Encodable {
                    var id: String, role: String, peer: String, phase: String, finished: Bool, updated: Date
                }
                emit(String(decoding: try jsonEncoder().encode(migrations.map {
                    Item(id: $0.migrationID, role: $0.role.rawValue, peer: $0.peer, phase: $0.phase, finished: $0.finished, updated: $0.updatedAt)
                }), as: UTF8.self))
            case .table:
                let format = ISO8601DateFormatter()
                printTable(
                    headers: ["ID", "ROLE", "PEER", "PHASE", "UPDATED"],
                    rows: migrations.map { [$0.migrationID, $0.role.rawValue, $0.peer, $0.phase, format.string(from: $0.updatedAt)] })
            }
        }
    }

    struct Watch: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a migration's journal and follow it until it is finished.")
        @Option(name: .shortAndLong, help: "Broker configuration file (TOML).") var config: String
        @Argument(help: "Migration ID.") var id: String
        @Option(help: "Seconds to follow.") var timeout: Double = 600

        func run() async throws {
            let (_, _, journal) = try openMigrationJournal(config)
            guard try journal.migrations().contains(where: { $0.migrationID == id }) else { throw ValidationError("no migration \(id)") }
            let (phase, finished) = try await followMigration(journal, id: id, role: nil, timeout: timeout, printSteps: true, isTerminal: isatty(1) == 1)
            emit(finished ? "migration \(id): \(phase)" : "migration \(id): still \(phase)")
        }
    }
}
