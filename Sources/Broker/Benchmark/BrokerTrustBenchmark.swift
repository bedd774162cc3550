import Foundation
import Logging
import Negotiation
import Peering
import ServiceLifecycle
import Synchronization
import Trust
import XMPP

/// Trust over the wire, between two real brokers through one XMPP server (issue 3, bench/):
/// - handshake duration as initiator (two IQ round trips; pins and audit written on both sides);
/// - signed request (federation-ping: seal, IQ, open + durable nonce at the responder, signed answer
///   opened by the requester) against the same request unsigned, served the same way (a deferred
///   handler answering from a task), and against the status query (an immediate handler on the
///   loop thread, the cheapest request a broker answers).
///
/// The caller provides a running server and two registered accounts (e.g. `scripts/prosody.sh
/// start DIR PORT` and `scripts/prosody.sh register DIR USER HOST PASSWORD` twice); the PKI,
/// configurations and databases are made in a temporary directory and removed afterwards.
/// Signed and unsigned requests alternate, so load from other processes hits both alike.
public enum BrokerTrustBenchmark {
    public struct Server: Sendable {
        public var host: String
        public var port: Int
        /// CA of the server's TLS certificate (`DIR/certs/ca.crt` for scripts/prosody.sh).
        public var caFile: String
        public init(host: String = "127.0.0.1", port: Int, caFile: String) {
            self.host = host
            self.port = port
            self.caFile = caFile
        }
    }

    public struct Account: Sendable {
        public var jid: String
        public var password: String
        public init(jid: String, password: String) {
            self.jid = jid
            self.password = password
        }
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    static let echoNamespace = "urn:intercloud:bench-echo:0"

    /// Runs the measurements and returns a Markdown table (medians and p90 in ms).
    /// - Parameters:
    ///   - iterations: measured requests of each kind, and handshakes (after `warmup` of each).
    ///   - payloadBytes: text carried by each request (and echoed back).
    ///   - streamManagement: XEP-0198 on the brokers' streams (it adds an ack per stanza).
    public static func run(
        server: Server, account1: Account, account2: Account, iterations: Int = 200, warmup: Int = 20,
        payloadBytes: Int = 256, streamManagement: Bool = false
    ) async throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("intercloud-trust-bench-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }

        let configs = try writeBrokers([account1, account2], server: server, directory: directory, streamManagement: streamManagement)
        let (config1, config2) = (configs[0], configs[1])
        var quiet = Logger(label: "intercloud.bench")
        quiet.logLevel = .warning
        let node1 = try BrokerNode(configuration: config1, logger: quiet)
        let node2 = try BrokerNode(configuration: config2, logger: quiet)
        let groups = [node1, node2].map { node in
            ServiceGroup(configuration: .init(services: [.init(service: node)], logger: quiet))
        }
        let runs = groups.map { group in Task { try await group.run() } }
        func stop() async {
            for group in groups { await group.triggerGracefulShutdown() }
            for run in runs { _ = try? await run.value }
        }

        let jid1 = config1.xmpp.jid.bare.description
        let jid2 = config2.xmpp.jid.bare.description
        let full2 = config2.xmpp.jid
        let contact = ContinuousClock.now
        while !(isTrusted(node1, jid2) && isTrusted(node2, jid1)) {
            if ContinuousClock.now - contact > .seconds(30) {
                await stop()
                throw Failure(description: "brokers did not trust each other within 30 s (see the audit log)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        let firstContact = ContinuousClock.now - contact

        // The unsigned twin of federation-ping: same size, same deferred path, no envelope.
        node2.client.setIQHandler(namespace: echoNamespace, maxPayloadBytes: 64 * 1024, .deferred { request, responder in
            Task { responder.respond(request.payload) }
        })
        let text = String(repeating: "x", count: payloadBytes)
        let echo = XMLElement("ping", namespace: echoNamespace, text: text)
        let status = XMLElement("status", namespace: Announcement.namespace)

        var handshakes: [Duration] = []
        var roundTrips: [Int] = []
        var signed: [Duration] = []
        var unsigned: [Duration] = []
        var statusTimes: [Duration] = []
        var local: [Duration] = []
        do {
            let trust = node1.trust!
            for index in 0..<(warmup + iterations) {
                let counter = RoundTripCounter()
                let exchange = trust.exchange(with: full2)
                let started = ContinuousClock.now
                let result = await trust.service.handshake(with: jid2) { payload in
                    counter.increment()
                    return try await exchange(payload)
                }
                let elapsed = ContinuousClock.now - started
                guard case .success = result else { throw Failure(description: "handshake refused: \(result)") }
                if index >= warmup {
                    handshakes.append(elapsed)
                    roundTrips.append(counter.value)
                }
            }
            for index in 0..<(warmup + iterations) {
                var started = ContinuousClock.now
                _ = try await node1.client.iq(.get, to: full2, payload: echo)
                let u = ContinuousClock.now - started
                started = ContinuousClock.now
                let pong = try await node1.federationPing(full2, text: text)
                let s = ContinuousClock.now - started
                guard pong.text == text else { throw Failure(description: "federation-ping echoed other text") }
                started = ContinuousClock.now
                _ = try await node1.client.iq(.get, to: full2, payload: status)
                let q = ContinuousClock.now - started
                // What a signed request adds in CPU and SQLite, without XMPP: one envelope sealed by
                // node1 and opened by node2 (a signed request does this twice: request and answer).
                started = ContinuousClock.now
                let sealed = try trust.service.seal(Array(text.utf8), namespace: FederationPing.namespace, to: jid2)
                _ = try node2.trust!.service.open(xml: sealed, from: jid1, namespace: FederationPing.namespace)
                let l = ContinuousClock.now - started
                if index >= warmup {
                    unsigned.append(u)
                    signed.append(s)
                    statusTimes.append(q)
                    local.append(l)
                }
            }
        } catch {
            await stop()
            throw error
        }
        await stop()

        let unsignedMedian = median(unsigned)
        func ms(_ duration: Duration) -> String { String(format: "%.3f", milliseconds(duration)) }
        func row(_ name: String, _ values: [Duration], ratio: Bool = true) -> String {
            let times = values.sorted()
            let p50 = median(times)
            let p90 = times[min(times.count - 1, Int(Double(times.count) * 0.9))]
            let factor = ratio ? String(format: "%.2f", milliseconds(p50) / milliseconds(unsignedMedian)) : "–"
            return "| \(name) | \(ms(p50)) | \(ms(p90)) | \(factor) |"
        }
        return """
            Brokers \(jid1) and \(jid2) through \(server.host):\(server.port), \(iterations) measured \
            iterations after \(warmup) warm-up, \(payloadBytes)-byte payloads, stream management \
            \(streamManagement ? "on" : "off"). First contact (presence to mutual trust, including \
            connecting): \(ms(firstContact)) ms.

            | operation | p50 ms | p90 ms | × unsigned p50 |
            |---|---:|---:|---:|
            \(row("trust handshake, initiator view (\(roundTrips.max() ?? 0) IQ round trips)", handshakes, ratio: false))
            \(row("unsigned request (deferred handler, echo)", unsigned))
            \(row("signed request (federation-ping, signed answer)", signed))
            \(row("status query (immediate handler)", statusTimes))
            \(row("one envelope sealed + opened in process, no XMPP (a signed request has two)", local, ratio: false))

            """
    }

    static func isTrusted(_ node: BrokerNode, _ jid: String) -> Bool {
        ((try? node.trust?.service.store.pin(for: jid)) ?? nil)?.state == .trusted
    }

    static func milliseconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
    }

    static func median(_ values: [Duration]) -> Duration {
        let sorted = values.sorted()
        return sorted.isEmpty ? .zero : sorted[sorted.count / 2]
    }

    /// A PKI of its own per broker (root → leaf), each trusting the other's root, as two clouds
    /// with pairwise anchors would; the brokers peer directly (roster subscription, approved
    /// because each lists the other in discovery.peers).
    static func writeBrokers(
        _ accounts: [Account], server: Server, directory: URL, streamManagement: Bool, extraTOML: [String] = ["", ""]
    ) throws -> [BrokerConfiguration] {
        let bares = accounts.map { $0.jid.split(separator: "/").first.map(String.init) ?? $0.jid }
        var paths: [String] = []
        for (index, account) in accounts.enumerated() {
            let root = try CertificateAuthority.makeRoot(commonName: "bench root \(index + 1)", notBefore: Date() - 3600)
            let identity = try root.issueBrokerIdentity(jid: bares[index], notBefore: Date() - 3600)
            try identity.save(
                keyPath: directory.appendingPathComponent("broker\(index + 1).key").path,
                chainPath: directory.appendingPathComponent("broker\(index + 1)-chain.pem").path)
            try PEMFiles.writeCertificates([root.certificate], toPath: directory.appendingPathComponent("root\(index + 1).pem").path)
            let other = 1 - index
            let cloud = "bench\(index + 1)"
            let toml = """
                [broker]
                cloud = "\(cloud)"
                regions = ["\(cloud)-a"]
                database = "\(cloud).sqlite"

                [xmpp]
                jid = "\(bares[index])/bench"
                password = "\(account.password)"
                host = "\(server.host)"
                port = \(server.port)
                ca_file = "\(server.caFile)"
                stream_management = \(streamManagement)

                [discovery]
                peers = ["\(bares[other])"]

                [trust]
                key = "broker\(index + 1).key"
                chain = "broker\(index + 1)-chain.pem"
                anchors = ["root\(other + 1).pem"]

                \(extraTOML[index])
                """
            let path = directory.appendingPathComponent("\(cloud).toml").path
            try toml.write(toFile: path, atomically: true, encoding: .utf8)
            paths.append(path)
        }
        return try paths.map { try BrokerConfiguration.load(path: $0) }
    }
}

/// Counts the IQ round trips of one handshake (called from the handshake's exchange closure).
private final class RoundTripCounter: Sendable {
    private let count = Mutex(0)
    func increment() { count.withLock { $0 += 1 } }
    var value: Int { count.withLock { $0 } }
}
