import ArgumentParser
import BenchmarkHarness
import Foundation
import GRDB
import Storage
import Synchronization
import Trust

/// What a synchronous journal write costs everything else: `writers` journaling actors each commit
/// `writes` rows with `synchronous = FULL` (an fsync each), as negotiation and metering do, while a
/// probe on the cooperative pool asks every millisecond to be woken and records how late it runs.
/// Baseline: the actors on the default executor (the pool), as before `StorageExecutor`; then the
/// same actors on the storage thread. Same run, alternating rounds.
///
/// `--workload audit`: `writers` tasks on the pool (request handlers refusing at once) each write
/// `writes` audit records, one synchronous durable commit each as before (baseline,
/// `AuditLog.record`), then through the audit log's group commit (`AuditLog.offPool.record`).
struct StorageBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "storage", abstract: "Journal writes on the cooperative pool vs on the storage thread: what other tasks wait.")

    enum Workload: String, ExpressibleByArgument, CaseIterable {
        case journals, audit
    }

    @Option(help: "journals: journaling actors on the pool vs the storage thread; audit: audit records written synchronously on the pool vs through the group commit.")
    var workload = Workload.journals
    @Option(help: "Journaling actors (or audit writers) writing at once.") var writers = 4
    @Option(help: "Rows each actor commits per round.") var writes = 100
    @Option(help: "Alternating rounds of both variants.") var rounds = 3
    @OptionGroup var output: ReportOptions

    func run() async throws {
        if workload == .audit { return try await runAudit() }
        var probes: [String: [Duration]] = [:]
        var rates: [String: [Double]] = [:]
        for _ in 0..<rounds {
            for variant in Variant.allCases {
                let (late, rate) = try await Self.round(variant, writers: writers, writes: writes)
                probes[variant.rawValue, default: []] += late
                rates[variant.rawValue, default: []].append(rate)
            }
        }
        let figures = Variant.allCases.map { Figure("pool task lateness, journals \($0.rawValue)", Samples(probes[$0.rawValue] ?? [])) }
        var report = Report(benchmark: "storage")
        report.text(
            "\(writers) journaling actors × \(writes) durable commits, \(rounds) alternating rounds, "
                + "\(ProcessInfo.processInfo.activeProcessorCount) cores; probe: a 1 ms sleep on the pool, how late it wakes")
        report.table(.percentiles(
            figures, columns: ["variant", "p50 µs", "p90 µs", "p99 µs", "× on the pool"], percentiles: [50, 90, 99],
            unit: .microseconds, decimals: 0, baseline: figures[0].samples))
        var throughput = Table(columns: ["variant", "commits/s (median of rounds)"])
        for variant in Variant.allCases {
            throughput.append([.text("journals \(variant.rawValue)"), .number(median(rates[variant.rawValue] ?? []), decimals: 0)])
        }
        report.table(throughput)
        output.print(report)
    }

    enum Variant: String, CaseIterable {
        case onThePool = "on the pool"
        case onTheStorageThread = "on the storage thread"
    }

    struct Schema: SchemaContributor {
        static func registerMigrations(in migrator: inout DatabaseMigrator) {
            migrator.registerMigration("bench.v1") { db in
                try db.create(table: "journal") { t in
                    t.autoIncrementedPrimaryKey("id")
                    t.column("writer", .integer).notNull()
                    t.column("payload", .text).notNull()
                }
            }
        }
    }

    /// Journals the way the services do: one durable commit per step, synchronously, inside the actor.
    actor PoolJournal {
        let database: DatabasePool
        init(_ database: DatabasePool) { self.database = database }
        func write(_ writer: Int, _ count: Int) throws { try StorageBenchmark.commit(database, writer, count) }
    }

    actor StorageJournal {
        nonisolated var unownedExecutor: UnownedSerialExecutor { StorageExecutor.shared.asUnownedSerialExecutor() }
        let database: DatabasePool
        init(_ database: DatabasePool) { self.database = database }
        func write(_ writer: Int, _ count: Int) throws { try StorageBenchmark.commit(database, writer, count) }
    }

    static func commit(_ database: DatabasePool, _ writer: Int, _ count: Int) throws {
        for step in 0..<count {
            try database.write { db in
                try db.execute(sql: "INSERT INTO journal (writer, payload) VALUES (?, ?)", arguments: [writer, "step \(step) of a negotiation"])
            }
        }
    }

    /// One round: the writers' commits with the probe running beside them; how late each probe
    /// woke, and the commits per second.
    static func round(_ variant: Variant, writers: Int, writes: Int) async throws -> (late: [Duration], rate: Double) {
        let (database, directory) = try IntercloudDatabase.temporary(schema: [Schema.self])
        defer {
            try? database.close()
            try? FileManager.default.removeItem(at: directory)
        }
        let done = Flag()
        let probe = Task.detached {
            var late: [Duration] = []
            while !done.isSet {
                let asked = ContinuousClock.now
                try? await Task.sleep(for: .milliseconds(1), tolerance: .zero)
                late.append(ContinuousClock.now - asked - .milliseconds(1))
            }
            return late
        }
        let started = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<writers {
                switch variant {
                case .onThePool:
                    let journal = PoolJournal(database)
                    group.addTask { try await journal.write(writer, writes) }
                case .onTheStorageThread:
                    let journal = StorageJournal(database)
                    group.addTask { try await journal.write(writer, writes) }
                }
            }
            try await group.waitForAll()
        }
        let elapsed = ContinuousClock.now - started
        done.set()
        return (await probe.value, Double(writers * writes) / elapsed.seconds)
    }
}

extension StorageBenchmark {
    enum AuditVariant: String, CaseIterable {
        case blockingOnThePool = "one commit each, on the pool"
        case groupCommit = "group commit, off the pool"
    }

    func runAudit() async throws {
        var probes: [String: [Duration]] = [:]
        var rates: [String: [Double]] = [:]
        var commits: [String: [Double]] = [:]
        for _ in 0..<rounds {
            for variant in AuditVariant.allCases {
                let (late, rate, transactions) = try await Self.auditRound(variant, writers: writers, writes: writes)
                probes[variant.rawValue, default: []] += late
                rates[variant.rawValue, default: []].append(rate)
                commits[variant.rawValue, default: []].append(Double(transactions))
            }
        }
        let figures = AuditVariant.allCases.map { Figure("pool task lateness, audit \($0.rawValue)", Samples(probes[$0.rawValue] ?? [])) }
        var report = Report(benchmark: "storage audit")
        report.text(
            "\(writers) tasks on the pool × \(writes) audit records, \(rounds) alternating rounds, "
                + "\(ProcessInfo.processInfo.activeProcessorCount) cores; probe: a 1 ms sleep on the pool, how late it wakes")
        report.table(.percentiles(
            figures, columns: ["variant", "p50 µs", "p90 µs", "p99 µs", "× one commit each"], percentiles: [50, 90, 99],
            unit: .microseconds, decimals: 0, baseline: figures[0].samples))
        var throughput = Table(columns: ["variant", "records/s (median of rounds)", "transactions per round (median)"])
        for variant in AuditVariant.allCases {
            throughput.append([
                .text("audit \(variant.rawValue)"), .number(median(rates[variant.rawValue] ?? []), decimals: 0),
                .number(median(commits[variant.rawValue] ?? []), decimals: 0),
            ])
        }
        report.table(throughput)
        output.print(report)
    }

    /// One round of audit writes with the probe beside them: how late each probe woke, records
    /// per second, and how many transactions (fsyncs) they took.
    static func auditRound(_ variant: AuditVariant, writers: Int, writes: Int) async throws -> (late: [Duration], rate: Double, transactions: Int) {
        let (database, directory) = try IntercloudDatabase.temporary(schema: [AuditSchema.self])
        defer {
            try? database.close()
            try? FileManager.default.removeItem(at: directory)
        }
        let audit = AuditLog(database: database)
        let done = Flag()
        let probe = Task.detached {
            var late: [Duration] = []
            while !done.isSet {
                let asked = ContinuousClock.now
                try? await Task.sleep(for: .milliseconds(1), tolerance: .zero)
                late.append(ContinuousClock.now - asked - .milliseconds(1))
            }
            return late
        }
        let started = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<writers {
                group.addTask {
                    for step in 0..<writes {
                        let event = AuditEvent(
                            at: Date(), module: "broker", kind: "broker.request", peer: "peer\(writer)@cloud.test",
                            action: "urn:intercloud:catalog:0", outcome: .refused, reason: "bench", detail: "refusal \(step)")
                        switch variant {
                        case .blockingOnThePool: try audit.record(event)
                        case .groupCommit: try await audit.offPool.record(event)
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        let elapsed = ContinuousClock.now - started
        done.set()
        let transactions = variant == .groupCommit ? audit.groupTransactions : writers * writes
        return (await probe.value, Double(writers * writes) / elapsed.seconds, transactions)
    }
}

/// A flag one task sets and another polls.
private final class Flag: Sendable {
    private let value = Mutex(false)
    var isSet: Bool { value.withLock { $0 } }
    func set() { value.withLock { $0 = true } }
}
