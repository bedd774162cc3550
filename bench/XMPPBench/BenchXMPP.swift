// bench-xmpp: broker-to-broker request/response through a real Prosody.
//
// Two full BrokerNode instances (as `intercloud serve` runs them) peer directly; broker A sends
// `<status xmlns='urn:intercloud:presence:0'/>` IQs to broker B, which answers on its hot path
// (sender check against the peer set, announcement built, reply sent from the loop thread).
// Prints the same lines as the raw libstrophe and slixmpp pairs (see bench/xmpp/run.sh):
//   seq_us <latency per sequential request, µs> ...
//   pipelined_rps <requests per second with WINDOW in flight>
// and, with --connect-samples N, `connect_ms ...` for XMPP connect + SASL SCRAM + bind.
// With --hostile-flood N: what a stranger's flood costs a broker (bench/hostile/run.sh,
// BrokerHostileBenchmark): broker B runs as its own `intercloud serve` process.
import ArgumentParser
import Broker
import Foundation
import ServiceLifecycle
import Logging
import XMPP

@main
struct BenchXMPP: AsyncParsableCommand {
    @Option var host = "127.0.0.1"
    @Option var port: Int
    @Option var jidA: String
    @Option var passA: String
    @Option var jidB: String
    @Option var passB: String
    @Option var sequential = 2000
    @Option var pipelined = 20000
    @Option var window = 64
    @Option(help: "plaintext or tls (STARTTLS verified against --ca-file)") var transport = "plaintext"
    @Option var caFile: String?
    @Flag var streamManagement = false
    @Option var connectSamples = 0
    @Option(help: "Instead: the trust benchmark over the wire (handshake, signed vs unsigned requests) with this many iterations.")
    var trustIterations = 0
    @Option(help: "Instead: the negotiation benchmark (full negotiations, policy evaluation cost) with this many iterations.")
    var negotiationIterations = 0
    @Option(help: "Instead: a SimCloud cold migration of a disk of this many MiB between two brokers, against cp + sha256sum.")
    var migrationMib = 0
    @Flag(help: "Run the requesting task on the XMPP loop's task executor (no thread hops).") var loopExecutor = false
    @Option(help: "Instead: the hostile-flood benchmark with this many refused stanzas in all (and as many pings); broker B (--jid-b) runs as an `intercloud serve` process, the stranger (--jid-stranger) floods it.")
    var hostileFlood = 0
    @Option(help: "Hostile flood: alternating ping/hostile rounds.") var hostileRounds = 5
    @Option(help: "Hostile flood: signed catalog queries per latency phase.") var hostileSamples = 300
    @Option(help: "Hostile flood: the victim's [audit] aggregate_seconds.") var aggregateSeconds = 60
    @Option(help: "Hostile flood: the stranger's account (not a peer).") var jidStranger: String?
    @Option var passStranger: String?
    @Option(help: "Hostile flood: the `intercloud` executable (default: next to this one).") var victimBinary: String?
    @Option(help: "Hostile flood: the XMPP server's pid (its CPU is reported).") var serverPid: Int32?
    @Option(help: "Hostile flood: the victim's --log-level.") var victimLogLevel = "info"
    @Option(help: "Hostile flood: write the victim's pid to this file.") var victimPidFile: String?
    @Option(help: .hidden) var strangerWorker: String?

    func configuration(_ jid: String, _ password: String, cloud: String, peer: String, directory: URL) throws -> BrokerConfiguration {
        let tls = transport == "tls" ? "tls = \"required\"\nca_file = \"\(caFile ?? "")\"" : "tls = \"disabled-for-testing\""
        let toml = """
            [broker]
            cloud = "\(cloud)"
            regions = ["bench"]
            database = "\(cloud).sqlite"
            [xmpp]
            jid = "\(jid)/bench"
            password = "\(password)"
            host = "\(host)"
            port = \(port)
            \(tls)
            stream_management = \(streamManagement)
            [discovery]
            peers = ["\(peer)"]
            approve = ["\(peer)"]
            """
        let path = directory.appendingPathComponent("\(cloud).toml").path
        try toml.write(toFile: path, atomically: true, encoding: .utf8)
        return try BrokerConfiguration.load(path: path)
    }

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .warning
            return handler
        }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("bench-xmpp-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }

        if let victim = strangerWorker {
            try await BrokerHostileBenchmark.runStranger(
                server: .init(host: host, port: port, caFile: caFile ?? ""),
                stranger: .init(jid: jidStranger ?? "", password: passStranger ?? ""), victim: victim)
            return
        }

        if hostileFlood > 0 {
            guard let jidStranger, let passStranger else { throw ValidationError("--hostile-flood needs --jid-stranger and --pass-stranger") }
            let executable = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
            var options = BrokerHostileBenchmark.Options(
                victimBinary: victimBinary ?? URL(fileURLWithPath: executable).deletingLastPathComponent().appendingPathComponent("intercloud").path,
                strangerCommand: [
                    executable, "--host", host, "--port", "\(port)", "--jid-a", jidA, "--pass-a", passA, "--jid-b", jidB,
                    "--pass-b", passB, "--ca-file", caFile ?? "", "--jid-stranger", jidStranger, "--pass-stranger", passStranger,
                    "--stranger-worker", "\(jidB)/bench",
                ])
            options.floodStanzas = hostileFlood
            options.rounds = hostileRounds
            options.samples = hostileSamples
            options.window = window
            options.aggregateSeconds = aggregateSeconds
            options.streamManagement = streamManagement
            options.serverPID = serverPid
            options.victimLogLevel = victimLogLevel
            options.victimPIDFile = victimPidFile
            let report = try await BrokerHostileBenchmark.run(
                server: .init(host: host, port: port, caFile: caFile ?? ""),
                trusted: .init(jid: jidA, password: passA), victim: .init(jid: jidB, password: passB),
                stranger: .init(jid: jidStranger, password: passStranger), options: options)
            print(report)
            return
        }

        if trustIterations > 0 {
            let report = try await BrokerTrustBenchmark.run(
                server: .init(host: host, port: port, caFile: caFile ?? ""),
                account1: .init(jid: jidA, password: passA), account2: .init(jid: jidB, password: passB),
                iterations: trustIterations, streamManagement: streamManagement)
            print(report)
            return
        }

        if negotiationIterations > 0 {
            let report = try await BrokerNegotiationBenchmark.run(
                server: .init(host: host, port: port, caFile: caFile ?? ""),
                account1: .init(jid: jidA, password: passA), account2: .init(jid: jidB, password: passB),
                iterations: negotiationIterations)
            print(report)
            return
        }

        if migrationMib > 0 {
            let report = try await BrokerMigrationBenchmark.run(
                server: .init(host: host, port: port, caFile: caFile ?? ""),
                account1: .init(jid: jidA, password: passA), account2: .init(jid: jidB, password: passB),
                bytes: Int64(migrationMib) << 20)
            print(report)
            return
        }

        if connectSamples > 0 {
            var samples: [Double] = []
            let config = try configuration(jidA, passA, cloud: "connect", peer: jidB, directory: directory)
            for _ in 0..<connectSamples {
                let client = XMPPClient(configuration: config.xmpp)
                let start = ContinuousClock.now
                client.start()
                try await client.waitUntilOnline()
                samples.append((ContinuousClock.now - start) / .microseconds(1) / 1000)
                await client.stop()
            }
            print("connect_ms " + samples.map { String(format: "%.2f", $0) }.joined(separator: " "))
            return
        }

        let a = try BrokerNode(configuration: try configuration(jidA, passA, cloud: "bench-a", peer: jidB, directory: directory))
        let b = try BrokerNode(configuration: try configuration(jidB, passB, cloud: "bench-b", peer: jidA, directory: directory))
        let group = ServiceGroup(configuration: .init(services: [.init(service: a), .init(service: b)], logger: Logger(label: "bench")))
        let running = Task { try await group.run() }
        let peerA = try JID(jidA), peerB = try JID(jidB)
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            if (try? a.registry.peer(peerB))??.online == true, (try? b.registry.peer(peerA))??.online == true { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        let target = try JID(jidB + "/bench")
        let status = XMLElement("status", namespace: Announcement.namespace)
        for _ in 0..<200 { _ = try await a.client.iq(.get, to: target, payload: status) }  // warm-up

        let measure: @Sendable () async throws -> ([Double], Double) = { [sequential, pipelined, window] in
            var latencies: [Double] = []
            latencies.reserveCapacity(sequential)
            for _ in 0..<sequential {
                let start = ContinuousClock.now
                _ = try await a.client.iq(.get, to: target, payload: status)
                latencies.append((ContinuousClock.now - start) / .nanoseconds(1) / 1000)
            }
            let perWorker = pipelined / window
            let start = ContinuousClock.now
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                for _ in 0..<window {
                    tasks.addTask {
                        for _ in 0..<perWorker { _ = try await a.client.iq(.get, to: target, payload: status) }
                    }
                }
                try await tasks.waitForAll()
            }
            let elapsed = (ContinuousClock.now - start) / .seconds(1)
            return (latencies, Double(perWorker * window) / elapsed)
        }
        let (latencies, throughput) = loopExecutor
            ? try await withTaskExecutorPreference(XMPPRuntime.shared) { try await measure() }
            : try await measure()
        print("seq_us " + latencies.map { String(format: "%.1f", $0) }.joined(separator: " "))
        print(String(format: "pipelined_rps %.1f", throughput))
        await group.triggerGracefulShutdown()
        _ = try? await running.value
    }
}
