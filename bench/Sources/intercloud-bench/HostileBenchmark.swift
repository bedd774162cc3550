import ArgumentParser
import BenchmarkHarness
import CatalogQueries
import Broker
import Foundation
import GRDB
import Peering
import XMPP

/// What a stranger's flood costs a broker, through one real XMPP server (bench/hostile/run.sh).
///
/// Three processes besides the server, so that CPU and disk writes can be attributed:
/// - the **victim**: a real `intercloud serve` process (broker B, with `[trust]`); its CPU
///   (`/proc/PID/stat` utime + stime) and disk writes (`/proc/PID/io` write_bytes) are read at the
///   edges of each phase;
/// - the **stranger**: an account that is no peer, in a process of its own (`intercloud-bench hostile-stranger`,
///   `HostileStranger`), which sends pipelined IQs to the victim's full JID: XEP-0199 pings
///   (answered: the baseline) or unsigned catalog queries (refused `not-authorized`, or
///   `resource-constraint` past the 16 requests per sender in progress; audited, aggregated);
/// - this process: broker A, in process (a `BrokerNode`), trusted by the victim, which sends signed
///   catalog queries to it, idle and during a flood; and the orchestration.
///
/// Ping and hostile batches alternate, so load from elsewhere on the machine hits both alike.
struct HostileBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hostile", abstract: "What a stranger's flood costs a broker: CPU, disk writes, a peer's latency.")
    static let defaultQuery = "SELECT * WHERE { ?s ?p ?o }"

    @OptionGroup var wire: WireOptions
    @OptionGroup var options: HostileOptions
    @OptionGroup var output: ReportOptions

    struct HostileOptions: ParsableArguments {
        @Option(name: .customLong("flood"), help: "Hostile stanzas in all over the CPU rounds (as many pings).")
        var floodStanzas = 20_000
        @Option(help: "Alternating ping/hostile rounds.") var rounds = 5
        @Option(help: "Signed catalog queries per latency phase (idle before, during the flood, idle after).") var samples = 300
        @Option(help: "IQs in flight from the stranger.") var window = 64
        @Option(help: "The victim's [audit] aggregate_seconds.") var aggregateSeconds = 60
        @Flag(help: "XEP-0198 on both brokers' streams.") var streamManagement = false
        @Option(help: "The stranger's account (not a peer).") var jidStranger: String
        @Option var passStranger: String
        @Option(help: "The `intercloud` executable run as the victim (default: next to this one).") var victimBinary: String?
        @Option(help: "The unsigned catalog query the stranger floods with.") var query = HostileBenchmark.defaultQuery
        @Option(help: "The victim's --log-level (info, as `intercloud serve` runs by default).") var victimLogLevel = "info"
        @Option(name: .customLong("victim-pid-file"), help: "Write the victim's pid here (so a script can stop it if this process dies first).")
        var victimPIDFile: String?
        @Option(name: .customLong("server-pid"), help: "The XMPP server's pid (its CPU is reported).") var serverPID: Int32?
    }

    func strangerAccount() throws -> Account { Account(jid: options.jidStranger, password: options.passStranger) }

    /// This executable: the stranger runs as `hostile-stranger` in a process of its own.
    static func thisExecutable() throws -> String {
        try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
    }

    func victimBinary() throws -> String {
        try options.victimBinary ?? URL(fileURLWithPath: Self.thisExecutable()).deletingLastPathComponent().appendingPathComponent("intercloud").path
    }

    func strangerCommand(victim: Account, stranger: Account) throws -> [String] {
        [
            try Self.thisExecutable(), "hostile-stranger", "--host", wire.host, "--port", "\(wire.port)", "--ca-file", wire.caFile ?? "",
            "--jid", stranger.jid, "--password", stranger.password, "--victim", "\(victim.bare)/bench", "--query", options.query,
        ]
    }

    /// Runs every phase and prints the report (a Markdown table and notes).
    func run() async throws {
        let scratch = try ScratchDirectory("intercloud-hostile-bench")
        defer { scratch.remove() }
        let directory = scratch.url
        let filesystem = Self.filesystemType(directory.path)
        let (server, trusted, victim, stranger) = (wire.server, wire.accountA, wire.accountB, try strangerAccount())
        let strangerCommand = try strangerCommand(victim: victim, stranger: stranger)

        let configs = try BrokerPair.configurations(
            [trusted, victim], server: server, directory: directory, streamManagement: options.streamManagement,
            extraTOML: ["", "[audit]\naggregate_seconds = \(options.aggregateSeconds)\n"])
        let (configA, configB) = (configs[0], configs[1])
        let victimJID = configB.xmpp.jid
        let victimBare = victimJID.bare.description
        let strangerBare = stranger.bare
        let databaseB = configB.databasePath

        // The victim: `intercloud serve`, as an operator runs it (log level info, to a pipe we count).
        let victimProcess = try ChildProcess(
            executable: victimBinary(),
            arguments: ["serve", "--config", directory.appendingPathComponent("bench2.toml").path, "--log-level", options.victimLogLevel])
        if let file = options.victimPIDFile { try "\(victimProcess.pid)\n".write(toFile: file, atomically: true, encoding: .utf8) }
        let brokerA = try RunningBrokers([configA])
        let nodeA = brokerA.nodes[0]
        var worker: ChildProcess?
        func stop() async {
            worker?.closeInput()
            victimProcess.terminate()
            await brokerA.stop()
            _ = victimProcess.waitForExit(timeout: 15)
            _ = worker?.waitForExit(timeout: 5)
        }
        do {
            let started = ContinuousClock.now
            while !BrokerPair.isTrusted(nodeA, victimBare) {
                if victimProcess.hasExited {
                    throw BenchmarkFailure("the victim exited: \(victimProcess.stderrTail)")
                }
                if ContinuousClock.now - started > .seconds(30) {
                    throw BenchmarkFailure("the brokers did not trust each other within 30 s; victim said: \(victimProcess.stderrTail)")
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            // The victim pins A at about the same time; retry until its first answer.
            let query = options.query
            var firstAnswerBytes = 0
            let retryUntil = ContinuousClock.now + .seconds(20)
            while true {
                do {
                    firstAnswerBytes = try await nodeA.signed.request(
                        .get, to: victimJID, namespace: CatalogProtocol.namespace, payload: CatalogProtocol.request(query)).count
                    break
                } catch where ContinuousClock.now < retryUntil {
                    try await Task.sleep(for: .milliseconds(100))
                }
            }

            let strangerWorker = try ChildProcess(executable: strangerCommand[0], arguments: Array(strangerCommand.dropFirst()))
            worker = strangerWorker
            let ready = try await strangerWorker.nextLine(timeout: 30)
            guard ready == "ready" else { throw BenchmarkFailure("stranger worker: \(ready) \(strangerWorker.stderrTail)") }

            // Warm-up: signed queries and answered pings (no hostile stanza: the first refusal's
            // audit row belongs to the measurement).
            for _ in 0..<50 { _ = try await nodeA.catalogQueries.query(query, peer: victimJID) }
            _ = try await strangerWorker.command("ping 2000 \(options.window)")

            let pid = victimProcess.pid
            // Idle: what the victim spends and writes doing nothing (2 s).
            let idleBefore = try ProcessUsage.read(pid)
            try await Task.sleep(for: .seconds(2))
            let idle = try ProcessUsage.read(pid).minus(idleBefore)

            func latencies() async throws -> [Duration] {
                var values: [Duration] = []
                values.reserveCapacity(options.samples)
                for _ in 0..<options.samples {
                    let start = ContinuousClock.now
                    _ = try await nodeA.catalogQueries.query(query, peer: victimJID)
                    values.append(ContinuousClock.now - start)
                }
                return values
            }
            let idleLatencies = try await latencies()

            // CPU rounds: pings (answered) and hostile queries (refused), alternating.
            let perRound = max(1, options.floodStanzas / max(1, options.rounds))
            var pingRounds: [Batch] = []
            var hostileRounds: [Batch] = []
            let databaseBefore = Self.databaseBytes(databaseB)
            let stderrBefore = victimProcess.stderrBytes
            var firstHostile: Date?
            for _ in 0..<options.rounds {
                pingRounds.append(try await Batch.measure(pid: pid, worker: strangerWorker, command: "ping \(perRound) \(options.window)"))
                if firstHostile == nil { firstHostile = Date() }
                hostileRounds.append(try await Batch.measure(pid: pid, worker: strangerWorker, command: "flood \(perRound) \(options.window)"))
            }
            let databaseAfterFlood = Self.databaseBytes(databaseB)
            let hostile = hostileRounds.map(\.tally).reduce(Tally(), +)
            let pings = pingRounds.map(\.tally).reduce(Tally(), +)
            let hostileUsage = hostileRounds.map(\.usage).reduce(ProcessUsage(), +)
            let pingUsage = pingRounds.map(\.usage).reduce(ProcessUsage(), +)

            // Aggregated refusals: wait for the window's summary rows (the audit loop writes them a
            // little after the window ends), and count what they cost on disk too.
            let audited = hostile.refused
            let beforeSummaries = try ProcessUsage.read(pid)
            let summaryWaitStart = ContinuousClock.now
            let deadline = (firstHostile ?? Date()).addingTimeInterval(Double(options.aggregateSeconds) + 30)
            var audit = try Self.auditedRows(databaseB, peer: strangerBare)
            while audit.sum < audited, Date() < deadline {
                try await Task.sleep(for: .seconds(1))
                audit = try Self.auditedRows(databaseB, peer: strangerBare)
            }
            let summaryWait = ContinuousClock.now - summaryWaitStart
            let summaries = try ProcessUsage.read(pid).minus(beforeSummaries)
            let databaseAfterSummaries = Self.databaseBytes(databaseB)
            let stderrDuringRounds = victimProcess.stderrBytes - stderrBefore

            // Latency during a flood at the rate the server relays, then idle again.
            let floodBefore = try ProcessUsage.read(pid)
            strangerWorker.send("flood-until-stop \(options.window)")
            guard try await strangerWorker.nextLine(timeout: 10) == "started" else { throw BenchmarkFailure("stranger worker did not start the flood") }
            try await Task.sleep(for: .milliseconds(500))  // the flood ramps up first
            // Who uses the CPU while the trusted peer's queries wait (machine, processes, threads).
            let pids: [(String, Int32)] = [("victim", pid), ("XMPP server", options.serverPID ?? -1),
                                           ("stranger", strangerWorker.pid), ("benchmark (broker A)", getpid())]
            let cpuBefore = CPUSnapshot(pids: pids.map(\.1), threadsOf: pid)
            let floodLatencies = try await latencies()
            let cpuDuring = CPUSnapshot(pids: pids.map(\.1), threadsOf: pid).minus(cpuBefore)
            strangerWorker.send("stop")
            let floodTally = try Tally(line: try await strangerWorker.nextLine(timeout: 60))
            let floodUsage = try ProcessUsage.read(pid).minus(floodBefore)
            let idleAfterLatencies = try await latencies()

            let refusalLogLine = victimProcess.stderrTail.split(separator: "\n").last { $0.contains("refused unsigned") }
                .map { String($0.prefix(400)) } ?? "(none in the tail)"
            await stop()
            let tailAfterStop = victimProcess.stderrTail

            // The report.
            func cpuPerStanza(_ batch: Batch) -> Double { batch.usage.cpuMicroseconds / Double(max(1, batch.tally.total)) }
            /// Per round, `*` when the clock ticks were used (a victim thread ended during the round).
            func eachRound(_ batches: [Batch]) -> String {
                batches.map { f1(cpuPerStanza($0)) + ($0.usage.fromTicks ? "*" : "") }.joined(separator: ", ")
            }
            let pingCPU = median(pingRounds.map(cpuPerStanza))
            let hostileCPU = median(hostileRounds.map(cpuPerStanza))
            let pingCPUAll = pingUsage.cpuMicroseconds / Double(max(1, pings.total))
            let hostileCPUAll = hostileUsage.cpuMicroseconds / Double(max(1, hostile.total))
            let refused = max(1, hostile.refused)
            let perThousand = { (bytes: Int64) in Double(bytes) * 1000 / Double(refused) }
            let floodBytes = hostileUsage.writeBytes
            let withSummaries = floodBytes + summaries.writeBytes
            let fileGrowth = databaseAfterSummaries - databaseBefore
            let idleP50 = Samples(idleLatencies).median
            let floodP50 = Samples(floodLatencies).median
            let afterP50 = Samples(idleAfterLatencies).median
            let bothIdle = Samples(idleLatencies + idleAfterLatencies).median
            func ms(_ d: Duration) -> String { format(d.milliseconds, decimals: 3) }
            func p90(_ values: [Duration]) -> Duration { Samples(values).p90 }
            func rate(_ batches: [Batch]) -> Double {
                median(batches.map { Double($0.tally.total) / max($0.tally.seconds, 1e-9) })
            }
            let hostileRate = rate(hostileRounds)
            let floodRate = Double(floodTally.total) / max(floodTally.seconds, 1e-9)
            // A flood lasting a whole window at this rate: the same rows (first + summary per key),
            // so the same bytes, over rate × window refusals.
            let windowRefusals = hostileRate * Double(options.aggregateSeconds)
            let projected = Double(withSummaries) * 1000 / max(windowRefusals, Double(refused))
            let floodRatio = floodP50.ratio(to: bothIdle)
            let floodCPUShare = floodUsage.cpuMicroseconds / 1e6 / max(floodTally.seconds, 1e-9)
            let idleCPUShare = idle.cpuMicroseconds / 1e6 / 2
            let verdict = { (met: Bool) in met ? "**met**" : "**not met**" }
            let kib = { (bytes: Double) in String(format: "%.2f KiB", bytes / 1024) }
            let unknown = hostile.other + hostile.timeouts + hostile.ok
            var notes: [String] = []
            if filesystem == "tmpfs" { notes.append("WARNING: the temporary directory is on tmpfs: write_bytes does not count its writes.") }
            if unknown > 0 { notes.append("WARNING: \(hostile.ok) hostile queries answered, \(hostile.other) other errors, \(hostile.timeouts) timeouts (\(hostile.otherConditions)).") }
            if pings.refused + pings.other + pings.timeouts > 0 { notes.append("WARNING: \(pings.refused + pings.other + pings.timeouts) pings not answered.") }
            if audit.sum != audited {
                notes.append("audit rows for the stranger count \(audit.sum) refusals, the stranger got \(audited) (after \(ms(summaryWait)) ms of waiting).")
            }
            if floodTally.other + floodTally.timeouts > 0 {
                notes.append("flood phase: \(floodTally.other) other errors, \(floodTally.timeouts) timeouts (\(floodTally.otherConditions)).")
            }
            if victimProcess.exitStatus.map({ $0 != 0 }) ?? true {
                notes.append("victim exit status \(victimProcess.exitStatus.map(String.init) ?? "none"): \(tailAfterStop)")
            }

            var report = Report(benchmark: "hostile")
            report.text("""
                Victim: `intercloud serve` (pid \(pid)) as \(victimJID), log level \(options.victimLogLevel), [audit] \
                aggregate_seconds = \(options.aggregateSeconds), stream management \(options.streamManagement ? "on" : "off"), \
                database on \(filesystem); trusted peer: \(configA.xmpp.jid) in the benchmark process; \
                stranger: \(strangerBare) in a process of its own, \(options.window) IQs in flight, \
                stream management off; all through \(server.host):\(server.port) (STARTTLS). \
                \(options.rounds) rounds of \(perRound) answered pings and \(perRound) hostile queries \
                (unsigned `<query xmlns='\(CatalogProtocol.namespace)'>\(options.query)</query>`), alternating; \
                \(options.samples) signed catalog queries per latency phase (answer \(firstAnswerBytes) bytes).
                """)
            let kibCell = { (bytes: Double) in Cell.text(kib(bytes)) }
            report.table(
                Table(
                    columns: ["measure (victim process unless said)", "median", "baseline", "ratio", "goal"],
                    rows: [
                        ["victim CPU per answered ping (baseline), µs", .number(pingCPU, decimals: 1), .none, .number(1, decimals: 2), .none],
                        [
                            "victim CPU per refused hostile query, µs", .number(hostileCPU, decimals: 1), .number(pingCPU, decimals: 1),
                            .number(hostileCPU / pingCPU, decimals: 2), .none,
                        ],
                        ["victim disk writes per 1000 refused, flood rounds only", kibCell(perThousand(floodBytes)), .none, .none, .none],
                        [
                            "victim disk writes per 1000 refused, with the window's summary rows", kibCell(perThousand(withSummaries)), .none,
                            .none, "≤ 1 KiB: \(verdict(perThousand(withSummaries) <= 1024))",
                        ],
                        [
                            "same, projected for a flood lasting the whole \(options.aggregateSeconds) s window at this rate", kibCell(projected),
                            .none, .none, "≤ 1 KiB: \(verdict(projected <= 1024))",
                        ],
                        ["victim SQLite file + WAL growth per 1000 refused", kibCell(perThousand(fileGrowth)), .none, .none, .none],
                        [
                            "victim stderr log per 1000 refused (not on disk here: a pipe)", kibCell(perThousand(Int64(stderrDuringRounds))),
                            .none, .none, .none,
                        ],
                        [
                            "trusted peer's signed catalog query p50 idle (before + after), ms", .number(bothIdle.milliseconds, decimals: 3),
                            .none, .number(1, decimals: 2), .none,
                        ],
                        [
                            "same query p50 during the stranger's flood (\(f0(floodRate))/s), ms", .number(floodP50.milliseconds, decimals: 3),
                            .number(bothIdle.milliseconds, decimals: 3), .number(floodRatio, decimals: 2), "≤ 2×: \(verdict(floodRatio <= 2))",
                        ],
                    ]),
                alignments: ["---", "---:", "---:", "---:", "---"])
            report.text("""
                Details:
                - CPU over all rounds: \(f1(pingCPUAll)) µs per ping, \(f1(hostileCPUAll)) µs per hostile query \
                (\(f2(hostileCPUAll / pingCPUAll))×); per round, pings \(eachRound(pingRounds)), hostile \(eachRound(hostileRounds)) \
                (sum of the threads' run time; `*`: from clock ticks of \(f1(ProcessUsage.tickMicroseconds / 1000)) ms, a \
                thread ended during the round); victim idle \(f1(idleCPUShare * 100)) % of a core, \
                \(idle.writeBytes) bytes written in 2 s.
                - Rates (median of rounds): pings \(f0(rate(pingRounds)))/s, hostile \(f0(hostileRate))/s; \
                flood during the latency phase \(f0(floodRate))/s (\(floodTally.total) stanzas in \(f2(floodTally.seconds)) s, \
                victim at \(f0(floodCPUShare * 100)) % of a core).
                - Hostile answers (CPU rounds): \(hostile.notAuthorized) not-authorized, \(hostile.resourceConstraint) \
                resource-constraint (over 16 in progress per sender), \(unknown) else; flood phase: \
                \(floodTally.notAuthorized) not-authorized, \(floodTally.resourceConstraint) resource-constraint.
                - Disk: \(floodBytes) bytes written during the flood rounds (\(hostile.refused) refused), \
                \(summaries.writeBytes) more while waiting \(f1(summaryWait.seconds)) s for the \
                summaries; pings wrote \(pingUsage.writeBytes) bytes; SQLite file + WAL \(databaseBefore) → \
                \(databaseAfterFlood) → \(databaseAfterSummaries) bytes. Audit rows for the stranger: \(audit.rows), \
                counting \(audit.sum) refusals.
                - Latency p50 / p90, ms: idle before \(ms(idleP50)) / \(ms(p90(idleLatencies))), during the flood \
                \(ms(floodP50)) / \(ms(p90(floodLatencies))), idle after \(ms(afterP50)) / \(ms(p90(idleAfterLatencies))); \
                the stranger's own round trip during the flood (window / rate, Little's law): \
                \(f1(Double(options.window) / max(floodRate, 1e-9) * 1000)) ms.
                - CPU while the trusted peer's queries ran during the flood (% of one core, \(f2(cpuDuring.seconds)) s): \
                machine \(f0(cpuDuring.machineBusy * 100)) of \(f0(cpuDuring.machineCores * 100)): \
                \(zip(pids, cpuDuring.processes).map { "\($0.0.0) \(f0($0.1 * 100))" }.joined(separator: ", ")), everything else \
                \(f0(max(0, cpuDuring.machineBusy - cpuDuring.processes.reduce(0, +)) * 100)); busiest victim threads: \
                \(cpuDuring.threads.prefix(3).map { "\($0.name) \(f0($0.share * 100))" }.joined(separator: ", ")).
                - Victim stderr during the CPU rounds: \(stderrDuringRounds) bytes; the line per refused query: \
                `\(refusalLogLine)`
                \(notes.map { "- " + $0 }.joined(separator: "\n"))
                """)
            output.print(report)
        } catch {
            await stop()
            throw error
        }
    }

    /// One worker command with the victim's CPU and writes around it.
    struct Batch {
        var tally: Tally
        var usage: ProcessUsage

        static func measure(pid: Int32, worker: ChildProcess, command: String) async throws -> Batch {
            let before = try ProcessUsage.read(pid)
            let tally = try Tally(line: try await worker.command(command))
            return Batch(tally: tally, usage: try ProcessUsage.read(pid).minus(before))
        }
    }

    static func databaseBytes(_ path: String) -> Int64 {
        [path, path + "-wal"].reduce(Int64(0)) { sum, file in
            sum + ((try? FileManager.default.attributesOfItem(atPath: file)[.size] as? NSNumber)?.int64Value ?? 0)
        }
    }

    /// Audit rows about `peer` in the victim's database, and the refusals they count.
    static func auditedRows(_ path: String, peer: String) throws -> (rows: Int, sum: Int) {
        var configuration = Configuration()
        configuration.readonly = true
        let queue = try DatabaseQueue(path: path, configuration: configuration)
        defer { try? queue.close() }
        return try queue.read { db in
            let row = try Row.fetchOne(db, sql: "SELECT COUNT(*) AS n, COALESCE(SUM(count), 0) AS s FROM audit_event WHERE peer = ?", arguments: [peer])
            let rows: Int = row?["n"] ?? 0
            let sum: Int = row?["s"] ?? 0
            return (rows, sum)
        }
    }

    /// The file system type of the mount holding `path`, from /proc/self/mounts (longest prefix).
    static func filesystemType(_ path: String) -> String {
        guard let mounts = try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8) else { return "unknown filesystem" }
        var best: (point: String, type: String) = ("", "unknown filesystem")
        for line in mounts.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count >= 3 else { continue }
            let point = String(fields[1])
            if (path == point || path.hasPrefix(point == "/" ? "/" : point + "/")), point.count > best.point.count {
                best = (point, String(fields[2]))
            }
        }
        return best.type
    }

    func f0(_ value: Double) -> String { format(value, decimals: 0) }
    func f1(_ value: Double) -> String { format(value, decimals: 1) }
    func f2(_ value: Double) -> String { format(value, decimals: 2) }
}
