import CatalogQueries
import Foundation
import GRDB
import Logging
import Negotiation
import Peering
import ServiceLifecycle
import Synchronization
import Trust
import XMPP

/// What a stranger's flood costs a broker, through one real XMPP server (bench/hostile/run.sh).
///
/// Three processes besides the server, so that CPU and disk writes can be attributed:
/// - the **victim**: a real `intercloud serve` process (broker B, with `[trust]`); its CPU
///   (`/proc/PID/stat` utime + stime) and disk writes (`/proc/PID/io` write_bytes) are read at the
///   edges of each phase;
/// - the **stranger**: an account that is no peer, in a process of its own (this executable in
///   worker mode, `runStranger`), which sends pipelined IQs to the victim's full JID: XEP-0199 pings
///   (answered: the baseline) or unsigned catalog queries (refused `not-authorized`, or
///   `resource-constraint` past the 16 requests per sender in progress; audited, aggregated);
/// - this process: broker A, in process (a `BrokerNode`), trusted by the victim, which sends signed
///   catalog queries to it, idle and during a flood; and the orchestration.
///
/// Ping and hostile batches alternate, so load from elsewhere on the machine hits both alike.
public enum BrokerHostileBenchmark {
    public typealias Server = BrokerTrustBenchmark.Server
    public typealias Account = BrokerTrustBenchmark.Account
    typealias Failure = BrokerTrustBenchmark.Failure
    public static let defaultQuery = "SELECT * WHERE { ?s ?p ?o }"

    public struct Options: Sendable {
        /// Hostile stanzas in all over the CPU rounds (as many pings).
        public var floodStanzas = 20_000
        public var rounds = 5
        /// Signed catalog queries per latency phase (idle before, during the flood, idle after).
        public var samples = 300
        /// IQs in flight from the stranger.
        public var window = 64
        /// The victim's `[audit] aggregate_seconds`.
        public var aggregateSeconds = 60
        /// XEP-0198 on both brokers' streams (the configuration default is on).
        public var streamManagement = true
        /// `intercloud` executable run as the victim.
        public var victimBinary: String
        /// How to start a stranger worker (this executable with its worker arguments).
        public var strangerCommand: [String]
        public var query = BrokerHostileBenchmark.defaultQuery
        /// The victim's `--log-level` (info, as `intercloud serve` runs by default).
        public var victimLogLevel = "info"
        /// Where to write the victim's pid (so a script can stop it if this process dies first).
        public var victimPIDFile: String?
        /// The XMPP server's pid, to report its CPU during the flood (optional).
        public var serverPID: Int32?

        public init(victimBinary: String, strangerCommand: [String]) {
            self.victimBinary = victimBinary
            self.strangerCommand = strangerCommand
        }
    }

    /// Runs every phase and returns the report (a Markdown table and notes).
    public static func run(
        server: Server, trusted: Account, victim: Account, stranger: Account, options: Options
    ) async throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("intercloud-hostile-bench-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let filesystem = Self.filesystemType(directory.path)

        let configs = try BrokerTrustBenchmark.writeBrokers(
            [trusted, victim], server: server, directory: directory, streamManagement: options.streamManagement,
            extraTOML: ["", "[audit]\naggregate_seconds = \(options.aggregateSeconds)\n"])
        let (configA, configB) = (configs[0], configs[1])
        let victimJID = configB.xmpp.jid
        let victimBare = victimJID.bare.description
        let strangerBare = stranger.jid.split(separator: "/").first.map(String.init) ?? stranger.jid
        let databaseB = configB.databasePath

        // The victim: `intercloud serve`, as an operator runs it (log level info, to a pipe we count).
        let victimProcess = try ChildProcess(
            executable: options.victimBinary,
            arguments: ["serve", "--config", directory.appendingPathComponent("bench2.toml").path, "--log-level", options.victimLogLevel])
        if let file = options.victimPIDFile { try "\(victimProcess.pid)\n".write(toFile: file, atomically: true, encoding: .utf8) }
        var quiet = Logger(label: "intercloud.bench")
        quiet.logLevel = .warning
        let nodeA = try BrokerNode(configuration: configA, logger: quiet)
        let group = ServiceGroup(configuration: .init(services: [.init(service: nodeA)], logger: quiet))
        let running = Task { try await group.run() }
        var worker: ChildProcess?
        func stop() async {
            worker?.closeInput()
            victimProcess.terminate()
            await group.triggerGracefulShutdown()
            _ = try? await running.value
            _ = victimProcess.waitForExit(timeout: 15)
            _ = worker?.waitForExit(timeout: 5)
        }
        do {
            let started = ContinuousClock.now
            while !BrokerTrustBenchmark.isTrusted(nodeA, victimBare) {
                if victimProcess.hasExited {
                    throw Failure(description: "the victim exited: \(victimProcess.stderrTail)")
                }
                if ContinuousClock.now - started > .seconds(30) {
                    throw Failure(description: "the brokers did not trust each other within 30 s; victim said: \(victimProcess.stderrTail)")
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

            let strangerWorker = try ChildProcess(executable: options.strangerCommand[0], arguments: Array(options.strangerCommand.dropFirst()))
            worker = strangerWorker
            let ready = try await strangerWorker.nextLine(timeout: 30)
            guard ready == "ready" else { throw Failure(description: "stranger worker: \(ready) \(strangerWorker.stderrTail)") }

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
            guard try await strangerWorker.nextLine(timeout: 10) == "started" else { throw Failure(description: "stranger worker did not start the flood") }
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
            let pingCPU = medianDouble(pingRounds.map(cpuPerStanza))
            let hostileCPU = medianDouble(hostileRounds.map(cpuPerStanza))
            let pingCPUAll = pingUsage.cpuMicroseconds / Double(max(1, pings.total))
            let hostileCPUAll = hostileUsage.cpuMicroseconds / Double(max(1, hostile.total))
            let refused = max(1, hostile.refused)
            let perThousand = { (bytes: Int64) in Double(bytes) * 1000 / Double(refused) }
            let floodBytes = hostileUsage.writeBytes
            let withSummaries = floodBytes + summaries.writeBytes
            let fileGrowth = databaseAfterSummaries - databaseBefore
            let idleP50 = BrokerTrustBenchmark.median(idleLatencies)
            let floodP50 = BrokerTrustBenchmark.median(floodLatencies)
            let afterP50 = BrokerTrustBenchmark.median(idleAfterLatencies)
            let bothIdle = BrokerTrustBenchmark.median(idleLatencies + idleAfterLatencies)
            func ms(_ d: Duration) -> String { String(format: "%.3f", BrokerTrustBenchmark.milliseconds(d)) }
            func p90(_ values: [Duration]) -> Duration {
                let sorted = values.sorted()
                return sorted.isEmpty ? .zero : sorted[min(sorted.count - 1, Int(Double(sorted.count) * 0.9))]
            }
            func rate(_ batches: [Batch]) -> Double {
                medianDouble(batches.map { Double($0.tally.total) / max($0.tally.seconds, 1e-9) })
            }
            let hostileRate = rate(hostileRounds)
            let floodRate = Double(floodTally.total) / max(floodTally.seconds, 1e-9)
            // A flood lasting a whole window at this rate: the same rows (first + summary per key),
            // so the same bytes, over rate × window refusals.
            let windowRefusals = hostileRate * Double(options.aggregateSeconds)
            let projected = Double(withSummaries) * 1000 / max(windowRefusals, Double(refused))
            let floodRatio = BrokerTrustBenchmark.milliseconds(floodP50) / BrokerTrustBenchmark.milliseconds(bothIdle)
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

            return """
                Victim: `intercloud serve` (pid \(pid)) as \(victimJID), log level \(options.victimLogLevel), [audit] \
                aggregate_seconds = \(options.aggregateSeconds), stream management \(options.streamManagement ? "on" : "off"), \
                database on \(filesystem); trusted peer: \(configA.xmpp.jid) in the benchmark process; \
                stranger: \(strangerBare) in a process of its own, \(options.window) IQs in flight, \
                stream management off; all through \(server.host):\(server.port) (STARTTLS). \
                \(options.rounds) rounds of \(perRound) answered pings and \(perRound) hostile queries \
                (unsigned `<query xmlns='\(CatalogProtocol.namespace)'>\(options.query)</query>`), alternating; \
                \(options.samples) signed catalog queries per latency phase (answer \(firstAnswerBytes) bytes).

                | measure (victim process unless said) | median | baseline | ratio | goal |
                |---|---:|---:|---:|---|
                | victim CPU per answered ping (baseline), µs | \(f1(pingCPU)) | – | 1.00 | – |
                | victim CPU per refused hostile query, µs | \(f1(hostileCPU)) | \(f1(pingCPU)) | \(f2(hostileCPU / pingCPU)) | – |
                | victim disk writes per 1000 refused, flood rounds only | \(kib(perThousand(floodBytes))) | – | – | – |
                | victim disk writes per 1000 refused, with the window's summary rows | \(kib(perThousand(withSummaries))) | – | – | ≤ 1 KiB: \(verdict(perThousand(withSummaries) <= 1024)) |
                | same, projected for a flood lasting the whole \(options.aggregateSeconds) s window at this rate | \(kib(projected)) | – | – | ≤ 1 KiB: \(verdict(projected <= 1024)) |
                | victim SQLite file + WAL growth per 1000 refused | \(kib(perThousand(fileGrowth))) | – | – | – |
                | victim stderr log per 1000 refused (not on disk here: a pipe) | \(kib(perThousand(Int64(stderrDuringRounds)))) | – | – | – |
                | trusted peer's signed catalog query p50 idle (before + after), ms | \(ms(bothIdle)) | – | 1.00 | – |
                | same query p50 during the stranger's flood (\(f0(floodRate))/s), ms | \(ms(floodP50)) | \(ms(bothIdle)) | \(f2(floodRatio)) | ≤ 2×: \(verdict(floodRatio <= 2)) |

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
                \(summaries.writeBytes) more while waiting \(f1(BrokerTrustBenchmark.milliseconds(summaryWait) / 1000)) s for the \
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

                """
        } catch {
            await stop()
            throw error
        }
    }

    // MARK: The stranger (worker mode)

    /// The stranger: connects as `stranger` (no peer of anyone) and runs commands read from standard
    /// input, one a line, answering on standard output:
    /// `ping N W` / `flood N W` (N pings / unsigned catalog queries, W in flight) → `result …`;
    /// `flood-until-stop W` → `started`, then on `stop` → `result …`. Ends at end of input.
    public static func runStranger(server: Server, stranger: Account, victim: String, query: String = defaultQuery) async throws {
        var quiet = Logger(label: "intercloud.bench.stranger")
        quiet.logLevel = .error
        var jid = try JID(stranger.jid)
        if jid.isBare { jid = try jid.with(resource: "flood") }
        let client = XMPPClient(
            configuration: .init(
                jid: jid, password: stranger.password, host: server.host, port: UInt16(server.port),
                tls: .required(caFile: server.caFile), streamManagement: false),
            logger: quiet)
        client.start()
        try await client.waitUntilOnline(timeout: .seconds(20))
        let target = try JID(victim)
        let ping = XMLElement("ping", namespace: Ping.namespace)
        let hostile = XMLElement("query", namespace: CatalogProtocol.namespace, text: query)
        let input = LineSource(fileDescriptor: 0)
        emit("ready")
        while let line = await input.next() {
            let words = line.split(separator: " ").map(String.init)
            guard let verb = words.first else { continue }
            let number = { (index: Int) in words.count > index ? Int(words[index]) ?? 0 : 0 }
            switch verb {
            case "ping":
                emit(await burst(client, target, ping, count: number(1), window: number(2), stop: nil).line)
            case "flood":
                emit(await burst(client, target, hostile, count: number(1), window: number(2), stop: nil).line)
            case "flood-until-stop":
                let stop = StopFlag()
                let flood = Task { await burst(client, target, hostile, count: nil, window: number(1), stop: stop) }
                emit("started")
                _ = await input.next()  // "stop", or end of input
                stop.set()
                emit(await flood.value.line)
            default:
                emit("error unknown command \(verb)")
            }
        }
        await client.stop()
    }

    /// Sends `count` IQs (or until `stop`) with `window` in flight; tallies the answers.
    static func burst(_ client: XMPPClient, _ target: JID, _ payload: XMLElement, count: Int?, window: Int, stop: StopFlag?) async -> Tally {
        let remaining = Remaining(count ?? Int.max)
        let started = ContinuousClock.now
        var total = await withTaskGroup(of: Tally.self) { group in
            for _ in 0..<max(1, window) {
                group.addTask {
                    var tally = Tally()
                    while stop?.isSet != true, remaining.take() {
                        do {
                            _ = try await client.iq(.get, to: target, payload: payload, timeout: .seconds(30))
                            tally.ok += 1
                        } catch XMPPError.stanza(let error) {
                            switch error.condition {
                            case "not-authorized": tally.notAuthorized += 1
                            case "resource-constraint": tally.resourceConstraint += 1
                            default:
                                tally.other += 1
                                tally.otherConditions.insert(error.condition)
                            }
                        } catch XMPPError.timeout {
                            tally.timeouts += 1
                        } catch {
                            tally.other += 1
                            tally.otherConditions.insert("\(error)")
                        }
                    }
                    return tally
                }
            }
            var sum = Tally()
            for await tally in group { sum = sum + tally }
            return sum
        }
        total.seconds = (ContinuousClock.now - started) / .seconds(1)
        return total
    }

    static func emit(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }

    // MARK: Measuring

    /// Answers to one batch of stranger IQs.
    struct Tally: Sendable {
        var ok = 0
        var notAuthorized = 0
        var resourceConstraint = 0
        var other = 0
        var timeouts = 0
        var seconds = 0.0
        var otherConditions = Set<String>()

        var total: Int { ok + notAuthorized + resourceConstraint + other + timeouts }
        var refused: Int { notAuthorized + resourceConstraint }

        init() {}

        static func + (a: Tally, b: Tally) -> Tally {
            var sum = a
            sum.ok += b.ok
            sum.notAuthorized += b.notAuthorized
            sum.resourceConstraint += b.resourceConstraint
            sum.other += b.other
            sum.timeouts += b.timeouts
            sum.seconds += b.seconds
            sum.otherConditions.formUnion(b.otherConditions)
            return sum
        }

        var line: String {
            "result ok=\(ok) not-authorized=\(notAuthorized) resource-constraint=\(resourceConstraint) other=\(other) "
                + "timeouts=\(timeouts) seconds=\(seconds) conditions=\(otherConditions.sorted().joined(separator: ",").replacingOccurrences(of: " ", with: "_"))"
        }

        init(line: String) throws {
            guard line.hasPrefix("result ") else { throw Failure(description: "stranger worker said: \(line)") }
            for field in line.split(separator: " ").dropFirst() {
                let parts = field.split(separator: "=", maxSplits: 1).map(String.init)
                guard parts.count == 2 else { continue }
                switch parts[0] {
                case "ok": ok = Int(parts[1]) ?? 0
                case "not-authorized": notAuthorized = Int(parts[1]) ?? 0
                case "resource-constraint": resourceConstraint = Int(parts[1]) ?? 0
                case "other": other = Int(parts[1]) ?? 0
                case "timeouts": timeouts = Int(parts[1]) ?? 0
                case "seconds": seconds = Double(parts[1]) ?? 0
                case "conditions": otherConditions = Set(parts[1].split(separator: ",").map(String.init))
                default: break
                }
            }
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

    /// CPU and bytes sent to storage by a process: clock ticks (user + system, `/proc/PID/stat`,
    /// exited threads included), the sum of its threads' run time in ns (`/proc/PID/task/*/schedstat`,
    /// finer, but a thread that ends takes its time with it) and `/proc/PID/io` write_bytes.
    struct ProcessUsage {
        static let tickMicroseconds = 1e6 / Double(sysconf(Int32(_SC_CLK_TCK)))
        var ticks = 0
        var threadNanoseconds: Int64 = 0
        var threads: Set<String> = []
        /// After `minus`: a thread seen before was gone after (its ns are lost: use ticks).
        var threadEnded = false
        var writeBytes: Int64 = 0
        var cancelledWriteBytes: Int64 = 0

        /// CPU time in µs: the threads' ns sum, unless a thread ended or the sum is more than two
        /// ticks short of the tick count (a thread came and went), then the tick count.
        var cpuMicroseconds: Double {
            fromTicks ? Double(ticks) * Self.tickMicroseconds : Double(threadNanoseconds) / 1000
        }

        var fromTicks: Bool {
            threadEnded || Double(threadNanoseconds) / 1000 < Double(ticks - 2) * Self.tickMicroseconds
        }

        static func read(_ pid: Int32) throws -> ProcessUsage {
            let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
            // Fields after the command name (which may hold spaces), from field 3 (state) on.
            guard let close = stat.lastIndex(of: ")") else { throw Failure(description: "unreadable /proc/\(pid)/stat") }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 12, let utime = Int(fields[11]), let stime = Int(fields[12]) else {
                throw Failure(description: "unreadable /proc/\(pid)/stat")
            }
            var usage = ProcessUsage(ticks: utime + stime)
            for tid in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? [] {
                guard let schedstat = try? String(contentsOfFile: "/proc/\(pid)/task/\(tid)/schedstat", encoding: .utf8),
                    let first = schedstat.split(separator: " ").first, let nanoseconds = Int64(first)
                else { continue }
                usage.threadNanoseconds += nanoseconds
                usage.threads.insert(tid)
            }
            for line in try String(contentsOfFile: "/proc/\(pid)/io", encoding: .utf8).split(separator: "\n") {
                let parts = line.split(separator: ":").map { $0.trimmingCharacters(in: .whitespaces) }
                guard parts.count == 2, let value = Int64(parts[1]) else { continue }
                if parts[0] == "write_bytes" { usage.writeBytes = value }
                if parts[0] == "cancelled_write_bytes" { usage.cancelledWriteBytes = value }
            }
            return usage
        }

        func minus(_ other: ProcessUsage) -> ProcessUsage {
            ProcessUsage(
                ticks: ticks - other.ticks, threadNanoseconds: threadNanoseconds - other.threadNanoseconds, threads: threads,
                threadEnded: !other.threads.isSubset(of: threads), writeBytes: writeBytes - other.writeBytes,
                cancelledWriteBytes: cancelledWriteBytes - other.cancelledWriteBytes)
        }

        static func + (a: ProcessUsage, b: ProcessUsage) -> ProcessUsage {
            ProcessUsage(
                ticks: a.ticks + b.ticks, threadNanoseconds: a.threadNanoseconds + b.threadNanoseconds, threads: a.threads.union(b.threads),
                threadEnded: a.threadEnded || b.threadEnded, writeBytes: a.writeBytes + b.writeBytes,
                cancelledWriteBytes: a.cancelledWriteBytes + b.cancelledWriteBytes)
        }
    }

    /// CPU time of the machine, of some processes and of one process's threads, at one moment (or,
    /// after `minus`, shares of one core over an interval).
    struct CPUSnapshot {
        var at = ContinuousClock.now
        var seconds = 0.0
        var machineBusy = 0.0
        var machineTotal = 0.0
        var machineCores = 0.0
        var processes: [Double] = []
        var threadTicks: [String: (name: String, ticks: Int)] = [:]
        /// After `minus`: threads by share of one core, busiest first.
        var threads: [(name: String, share: Double)] = []

        init(pids: [Int32], threadsOf pid: Int32) {
            // /proc/stat: cpu user nice system idle iowait irq softirq steal …, in ticks.
            if let stat = try? String(contentsOfFile: "/proc/stat", encoding: .utf8) {
                let lines = stat.split(separator: "\n")
                let values = lines.first?.split(separator: " ").dropFirst().compactMap { Double($0) } ?? []
                if values.count >= 5 {
                    machineTotal = values.prefix(8).reduce(0, +)
                    machineBusy = machineTotal - values[3] - values[4]
                }
                machineCores = Double(lines.filter { $0.hasPrefix("cpu") && !$0.hasPrefix("cpu ") }.count)
            }
            processes = pids.map { pid in pid > 0 ? Double((try? ProcessUsage.read(pid).ticks) ?? 0) : 0 }
            for tid in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? [] {
                guard let stat = try? String(contentsOfFile: "/proc/\(pid)/task/\(tid)/stat", encoding: .utf8),
                    let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")")
                else { continue }
                let fields = stat[stat.index(after: close)...].split(separator: " ")
                guard fields.count > 12, let utime = Int(fields[11]), let stime = Int(fields[12]) else { continue }
                threadTicks[tid] = (String(stat[stat.index(after: open)..<close]), utime + stime)
            }
        }

        func minus(_ before: CPUSnapshot) -> CPUSnapshot {
            var delta = self
            delta.seconds = (at - before.at) / .seconds(1)
            let tickSeconds = 1 / Double(sysconf(Int32(_SC_CLK_TCK)))
            let wall = max(delta.seconds, 1e-9)
            let machineTicks = max(machineTotal - before.machineTotal, 1)
            // Machine: busy share of all cores, in cores.
            delta.machineBusy = (machineBusy - before.machineBusy) / machineTicks * machineCores
            delta.processes = zip(processes, before.processes).map { ($0 - $1) * tickSeconds / wall }
            delta.threads = threadTicks.map { tid, now in
                (name: now.name, share: Double(now.ticks - (before.threadTicks[tid]?.ticks ?? 0)) * tickSeconds / wall)
            }.sorted { $0.share > $1.share }
            return delta
        }
    }

    /// Size of the SQLite file and its WAL.
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

    static func medianDouble(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        return sorted.isEmpty ? 0 : sorted[sorted.count / 2]
    }

    static func f0(_ value: Double) -> String { String(format: "%.0f", value) }
    static func f1(_ value: Double) -> String { String(format: "%.1f", value) }
    static func f2(_ value: Double) -> String { String(format: "%.2f", value) }
}

/// Set once to stop a flood.
final class StopFlag: Sendable {
    private let flag = Atomic(false)
    func set() { flag.store(true, ordering: .relaxed) }
    var isSet: Bool { flag.load(ordering: .relaxed) }
}

/// IQs left to send in a batch.
final class Remaining: Sendable {
    private let count: Atomic<Int>
    init(_ count: Int) { self.count = Atomic(count) }
    /// Takes one; false when none is left.
    func take() -> Bool { count.subtract(1, ordering: .relaxed).oldValue > 0 }
}

/// Lines read from a file descriptor on a thread of their own.
final class LineSource: Sendable {
    private let lines: Mutex<(queue: [String], ended: Bool)> = Mutex(([], false))

    init(fileDescriptor: Int32) {
        let thread = Thread { [self] in
            var pending: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = buffer.withUnsafeMutableBytes { read(fileDescriptor, $0.baseAddress, $0.count) }
                if count < 0, errno == EINTR { continue }
                if count <= 0 { break }
                pending.append(contentsOf: buffer[0..<count])
                while let newline = pending.firstIndex(of: 10) {
                    let line = String(decoding: pending[..<newline], as: UTF8.self)
                    pending.removeSubrange(...newline)
                    lines.withLock { $0.queue.append(line) }
                }
            }
            lines.withLock { $0.ended = true }
        }
        thread.start()
    }

    /// The next line, or nil at end of input or at `deadline` (polls every 2 ms).
    func next(before deadline: ContinuousClock.Instant = .now + .seconds(365 * 86_400)) async -> String? {
        while ContinuousClock.now < deadline {
            let (line, ended): (String?, Bool) = lines.withLock { state in
                state.queue.isEmpty ? (nil, state.ended) : (state.queue.removeFirst(), false)
            }
            if let line { return line }
            if ended { return nil }
            try? await Task.sleep(for: .milliseconds(2))
        }
        return nil
    }
}

/// A child process: standard output read as lines, standard error counted (and its tail kept).
final class ChildProcess: @unchecked Sendable {
    // @unchecked: `process` and the pipes are set up in init and only used through thread-safe calls.
    private let process = Process()
    private let input = Pipe()
    private let output: LineSource
    private let errors = Mutex<(bytes: Int, tail: [UInt8])>((0, []))

    init(executable: String, arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let outputPipe = Pipe()
        let errorPipe = Pipe()
        process.standardInput = input
        process.standardOutput = outputPipe
        process.standardError = errorPipe
        try process.run()
        output = LineSource(fileDescriptor: outputPipe.fileHandleForReading.fileDescriptor)
        let errorDescriptor = errorPipe.fileHandleForReading.fileDescriptor
        // Keep the read ends open for the threads (the handles close their descriptors on deinit).
        retained = [outputPipe, errorPipe]
        let thread = Thread { [self] in
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let count = buffer.withUnsafeMutableBytes { read(errorDescriptor, $0.baseAddress, $0.count) }
                if count < 0, errno == EINTR { continue }
                if count <= 0 { break }
                errors.withLock { state in
                    state.bytes += count
                    state.tail.append(contentsOf: buffer[0..<count])
                    if state.tail.count > 8192 { state.tail.removeFirst(state.tail.count - 4096) }
                }
            }
        }
        thread.start()
    }

    private var retained: [Pipe] = []

    var pid: Int32 { process.processIdentifier }
    var hasExited: Bool { !process.isRunning }
    var exitStatus: Int32? { process.isRunning ? nil : process.terminationStatus }
    var stderrBytes: Int { errors.withLock { $0.bytes } }
    var stderrTail: String { String(decoding: errors.withLock { $0.tail }.suffix(2000), as: UTF8.self) }

    func send(_ line: String) {
        try? input.fileHandleForWriting.write(contentsOf: Data((line + "\n").utf8))
    }

    func closeInput() { try? input.fileHandleForWriting.close() }

    func nextLine(timeout: Double) async throws -> String {
        if let line = await output.next(before: .now + .milliseconds(Int64(timeout * 1000))) { return line }
        throw BrokerTrustBenchmark.Failure(
            description: "no answer from \(process.executableURL?.lastPathComponent ?? "child") within \(timeout) s: \(stderrTail)")
    }

    /// Sends a command and returns its answer line.
    func command(_ line: String, timeout: Double = 600) async throws -> String {
        send(line)
        return try await nextLine(timeout: timeout)
    }

    func terminate() { if process.isRunning { process.terminate() } }

    /// Waits for the process to end; false if it is still running after `timeout` seconds (then
    /// it is killed).
    func waitForExit(timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning, Date() < deadline { usleep(20_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            return false
        }
        return true
    }
}
