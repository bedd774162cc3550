import ArgumentParser
import BenchmarkHarness
import Broker
import Discovery
import Foundation
import Synchronization
import Trust
import XMPP
import XMLModel

extension TrustBenchmark {
    /// Trust over the wire, between two real brokers through one XMPP server (bench/trust/wire.sh):
    /// - handshake duration as initiator (two IQ round trips; pins and audit written on both sides);
    /// - signed request (federation-ping: seal, IQ, open + nonce at the responder, sealed answer
    ///   opened by the requester), under a session (HMAC both ways) and with signatures only,
    ///   against the same request unsigned, served the same way (a deferred handler answering
    ///   from a task), and against the status query (an immediate handler on the loop thread, the
    ///   cheapest request a broker answers).
    ///
    /// The PKI, configurations and databases are made in a temporary directory and removed
    /// afterwards. Signed and unsigned requests alternate, so load from other processes hits both alike.
    struct Wire: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "wire", abstract: "Handshake and signed vs unsigned requests between two brokers through one XMPP server.")

        static let echoNamespace = "urn:intercloud:bench-echo:0"

        @OptionGroup var wire: WireOptions
        @OptionGroup var output: ReportOptions
        @Option(help: "Measured requests of each kind, and handshakes.") var iterations = 200
        @Option(help: "Unmeasured requests of each kind first.") var warmup = 20
        @Option(help: "Text carried by each request (and echoed back).") var payloadBytes = 256
        @Flag(help: "XEP-0198 on the brokers' streams (it adds an ack per stanza).") var streamManagement = false

        func run() async throws {
            output.print(try await Self.measure(
                server: wire.server, accounts: [wire.accountA, wire.accountB], iterations: iterations, warmup: warmup,
                payloadBytes: payloadBytes, streamManagement: streamManagement))
        }

        static func measure(
            server: Server, accounts: [Account], iterations: Int, warmup: Int, payloadBytes: Int, streamManagement: Bool
        ) async throws -> Report {
            let directory = try ScratchDirectory("intercloud-trust-bench")
            defer { directory.remove() }
            let configs = try BrokerPair.configurations(accounts, server: server, directory: directory.url, streamManagement: streamManagement)
            let brokers = try RunningBrokers(configs)
            let (node1, node2) = (brokers.nodes[0], brokers.nodes[1])
            let jid1 = configs[0].xmpp.jid.bare.description
            let jid2 = configs[1].xmpp.jid.bare.description
            let full2 = configs[1].xmpp.jid
            return try await brokers.whileRunning {
                let contact = ContinuousClock.now
                try await BrokerPair.waitUntil("brokers did not trust each other (see the audit log)") {
                    BrokerPair.isTrusted(node1, jid2) && BrokerPair.isTrusted(node2, jid1)
                }
                let firstContact = ContinuousClock.now - contact

                // The unsigned twin of federation-ping: same size, same deferred path, no envelope.
                node2.client.setIQHandler(namespace: echoNamespace, maxPayloadBytes: 64 * 1024, .deferred { request, responder in
                    Task { responder.respond(request.payload) }
                })
                let text = String(repeating: "x", count: payloadBytes)
                let echo = XMLElement("ping", namespace: echoNamespace, text: text)
                let status = XMLElement("status", namespace: Announcement.namespace)
                guard let trust = node1.trust, let trust2 = node2.trust else { throw BenchmarkFailure("both brokers need [trust]") }

                var roundTrips: [Int] = []
                let handshakes = try await BenchmarkHarness.measure(iterations: iterations, warmup: warmup) {
                    let counter = RoundTripCounter()
                    let exchange = trust.exchange(with: full2)
                    let result = await trust.service.handshake(with: jid2) { payload in
                        counter.increment()
                        return try await exchange(payload)
                    }
                    guard case .success = result else { throw BenchmarkFailure("handshake refused: \(result)") }
                    roundTrips.append(counter.value)
                }
                // The first signed request starts the session exchange; the measured ones under a
                // session run after it completed.
                _ = try await node1.federationPing(full2, text: text)
                try await BrokerPair.waitUntil("no session between the brokers") { trust.service.requestSession(for: jid2) != nil }
                var unsigned: [Duration] = [], signed: [Duration] = [], signaturesOnly: [Duration] = []
                var statusTimes: [Duration] = [], local: [Duration] = [], localSession: [Duration] = []
                for index in 0..<(warmup + iterations) {
                    let u = try await time { _ = try await node1.client.iq(.get, to: full2, payload: echo) }.duration
                    let (pong, s) = try await time { try await node1.federationPing(full2, text: text) }
                    guard pong.text == text else { throw BenchmarkFailure("federation-ping echoed other text") }
                    // The same request with sessions off at the requester: signed both ways.
                    node1.signed.usesSessions = false
                    let (signedPong, g) = try await time { try await node1.federationPing(full2, text: text) }
                    node1.signed.usesSessions = true
                    guard signedPong.text == text else { throw BenchmarkFailure("federation-ping echoed other text") }
                    let q = try await time { _ = try await node1.client.iq(.get, to: full2, payload: status) }.duration
                    // What a signed request adds in CPU and SQLite, without XMPP: one envelope sealed by
                    // node1 and opened by node2 (a signed request does this twice: request and answer).
                    let l = try await time {
                        let sealed = try trust.service.seal(Array(text.utf8), namespace: FederationPing.namespace, to: jid2)
                        _ = try await trust2.service.open(xml: sealed, from: jid1, namespace: FederationPing.namespace)
                    }.duration
                    let m = try await time {
                        guard let session = trust.service.requestSession(for: jid2) else { throw BenchmarkFailure("the session is gone") }
                        let sealed = trust.service.sealEnvelope(Array(text.utf8), namespace: FederationPing.namespace, session: session)
                        _ = try await trust2.service.open(xml: sealed.xml, from: jid1, namespace: FederationPing.namespace)
                    }.duration
                    if index >= warmup {
                        unsigned.append(u)
                        signed.append(s)
                        signaturesOnly.append(g)
                        statusTimes.append(q)
                        local.append(l)
                        localSession.append(m)
                    }
                }

                let baseline = Samples(unsigned)
                var report = Report(benchmark: "trust wire")
                report.text("""
                    Brokers \(jid1) and \(jid2) through \(server.host):\(server.port), \(iterations) measured \
                    iterations after \(warmup) warm-up, \(payloadBytes)-byte payloads, stream management \
                    \(streamManagement ? "on" : "off"). First contact (presence to mutual trust, including \
                    connecting): \(format(firstContact.milliseconds, decimals: 3)) ms.
                    """)
                // Only measured handshakes count: the warm-up's round trips were counted too.
                let measuredRoundTrips = roundTrips.suffix(iterations).max() ?? 0
                report.table(.percentiles(
                    [
                        Figure("trust handshake, initiator view (\(measuredRoundTrips) IQ round trips)", handshakes, comparable: false),
                        Figure("unsigned request (deferred handler, echo)", baseline),
                        Figure("signed request under a session (federation-ping, HMAC both ways)", Samples(signed)),
                        Figure("signed request, signatures only (sessions off at the requester)", Samples(signaturesOnly)),
                        Figure("status query (immediate handler)", Samples(statusTimes)),
                        Figure("one envelope signed + opened in process, no XMPP (a signed request has two)", Samples(local), comparable: false),
                        Figure("one envelope under a session sealed + opened in process, no XMPP", Samples(localSession), comparable: false),
                    ],
                    columns: ["operation", "p50 ms", "p90 ms", "× unsigned p50"], percentiles: [50, 90], unit: .milliseconds,
                    decimals: 3, baseline: baseline))
                return report
            }
        }
    }
}

/// Counts the IQ round trips of one handshake (called from the handshake's exchange closure).
private final class RoundTripCounter: Sendable {
    private let count = Mutex(0)
    func increment() { count.withLock { $0 += 1 } }
    var value: Int { count.withLock { $0 } }
}
