import ArgumentParser
import BenchmarkHarness
import Broker
import Discovery
import Foundation
import Logging
import ServiceLifecycle
import XMPP
import XMLModel

/// Broker-to-broker request/response through a real XMPP server (bench/xmpp/run.sh).
///
/// Two full BrokerNode instances (as `intercloud serve` runs them) peer directly; broker A sends
/// `<status xmlns='urn:intercloud:presence:0'/>` IQs to broker B, which answers on its hot path
/// (sender check against the peer set, announcement built, reply sent from the loop thread).
/// Prints the same lines as the raw libstrophe and slixmpp pairs, which run.sh merges:
///   seq_us <latency per sequential request, µs> ...
///   pipelined_rps <requests per second with WINDOW in flight>
/// and, with --connect-samples N, `connect_ms ...` for XMPP connect + SASL SCRAM + bind.
struct XMPPBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "xmpp", abstract: "Request/response latency and throughput between two brokers, or connect time.")

    @OptionGroup var wire: WireOptions
    @Option(help: "Sequential requests (latency).") var sequential = 2000
    @Option(help: "Pipelined requests (throughput).") var pipelined = 20000
    @Option(help: "Requests in flight while pipelining.") var window = 64
    @Option(help: "plaintext or tls (STARTTLS verified against --ca-file)") var transport = "plaintext"
    @Flag(help: "XEP-0198 on both streams.") var streamManagement = false
    @Option(help: "Instead: this many connects (connect + SASL SCRAM + bind) of broker A's account.") var connectSamples = 0
    @Flag(help: "Run the requesting task on the XMPP loop's task executor (no thread hops).") var loopExecutor = false

    func configuration(_ account: Account, cloud: String, peer: String, directory: URL) throws -> BrokerConfiguration {
        let tls = transport == "tls" ? "tls = \"required\"\nca_file = \"\(wire.caFile ?? "")\"" : "tls = \"disabled-for-testing\""
        let toml = """
            [broker]
            cloud = "\(cloud)"
            regions = ["bench"]
            database = "\(cloud).sqlite"
            [xmpp]
            jid = "\(account.jid)/bench"
            password = "\(account.password)"
            host = "\(wire.host)"
            port = \(wire.port)
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
        let directory = try ScratchDirectory("bench-xmpp")
        defer { directory.remove() }
        let (accountA, accountB) = (wire.accountA, wire.accountB)

        if connectSamples > 0 {
            let config = try configuration(accountA, cloud: "connect", peer: accountB.jid, directory: directory.url)
            var samples: [Duration] = []
            for _ in 0..<connectSamples {
                let client = XMPPClient(configuration: config.xmpp)
                samples.append(try await time {
                    client.start()
                    try await client.waitUntilOnline()
                }.duration)
                await client.stop()
            }
            print(Samples(samples).line("connect_ms", unit: .milliseconds, decimals: 2))
            return
        }

        let brokers = try RunningBrokers([
            try configuration(accountA, cloud: "bench-a", peer: accountB.jid, directory: directory.url),
            try configuration(accountB, cloud: "bench-b", peer: accountA.jid, directory: directory.url),
        ])
        let (a, b) = (brokers.nodes[0], brokers.nodes[1])
        let peerA = try JID(accountA.jid), peerB = try JID(accountB.jid)
        let (latencies, throughput) = try await brokers.whileRunning {
            let deadline = ContinuousClock.now + .seconds(20)
            while ContinuousClock.now < deadline {
                if (try? a.registry.peer(peerB))??.online == true, (try? b.registry.peer(peerA))??.online == true { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            let target = try JID(accountB.jid + "/bench")
            let status = XMLElement("status", namespace: Announcement.namespace)
            for _ in 0..<200 { _ = try await a.client.iq(.get, to: target, payload: status) }  // warm-up

            let measure: @Sendable () async throws -> (Samples, Double) = { [sequential, pipelined, window] in
                let latencies = try await BenchmarkHarness.measure(iterations: sequential, warmup: 0) {
                    _ = try await a.client.iq(.get, to: target, payload: status)
                }
                let perWorker = pipelined / window
                let elapsed = try await time {
                    try await withThrowingTaskGroup(of: Void.self) { tasks in
                        for _ in 0..<window {
                            tasks.addTask {
                                for _ in 0..<perWorker { _ = try await a.client.iq(.get, to: target, payload: status) }
                            }
                        }
                        try await tasks.waitForAll()
                    }
                }.duration
                return (latencies, Double(perWorker * window) / elapsed.seconds)
            }
            return loopExecutor
                ? try await withTaskExecutorPreference(XMPPRuntime.shared) { try await measure() }
                : try await measure()
        }
        print(latencies.line("seq_us", unit: .microseconds, decimals: 1))
        print("pipelined_rps " + format(throughput, decimals: 1))
    }
}
