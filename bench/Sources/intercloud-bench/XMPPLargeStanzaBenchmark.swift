import ArgumentParser
import BenchmarkHarness
import Foundation
import Logging
import XMLModel
import XMPP

/// Large stanzas through a full socket (bench/xmpp/large.sh): client A sends IQs carrying a
/// payload of `--kib` KiB to client B, which answers with the size it received, over verified
/// STARTTLS through a real Prosody. Measured twice in one run, each request's round trip:
/// with the kernel's own send buffer (the baseline: the socket rarely fills on loopback), and
/// with a small fixed send buffer, so that every stanza leaves in many writes cut short by a full
/// socket. The ratio shows what a cut-short write costs the XMPP loop.
struct XMPPLargeStanzaBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "xmpp-large", abstract: "Round trips of large stanzas, with the kernel's send buffer and with a small one.")

    @OptionGroup var wire: WireOptions
    @OptionGroup var report: ReportOptions
    @Option(help: "Payload of each request, in KiB (the broker refuses inbound stanzas over 512 KiB).") var kib = 300
    @Option(help: "Measured requests per buffer setting.") var requests = 20
    @Option(help: "Unmeasured requests first.") var warmup = 3
    @Option(help: "The small send buffer, in bytes (SO_SNDBUF; the kernel doubles it).") var sendBuffer = 4096

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .warning
            return handler
        }
        guard let caFile = wire.caFile else { throw BenchmarkFailure("--ca-file is required (the run is over verified STARTTLS)") }
        let namespace = "urn:intercloud:bench:size:0"
        let responder = XMPPClient(configuration: .init(
            jid: try JID(wire.jidB + "/large"), password: wire.passB, host: wire.host, port: UInt16(wire.port),
            tls: .required(caFile: caFile)))
        responder.setIQHandler(namespace: namespace, .immediate { request in
            XMLElement("size", namespace: namespace, text: String(request.payload?.text.utf8.count ?? 0))
        })
        responder.start()
        try await responder.waitUntilOnline()
        let payload = XMLElement("q", namespace: namespace, text: String(repeating: "x", count: kib * 1024))

        func roundTrips(sendBuffer: Int?) async throws -> Samples {
            let requester = XMPPClient(configuration: .init(
                jid: try JID(wire.jidA + "/large"), password: wire.passA, host: wire.host, port: UInt16(wire.port),
                tls: .required(caFile: caFile), socketSendBufferBytes: sendBuffer))
            requester.start()
            try await requester.waitUntilOnline()
            let samples = try await measure(iterations: requests, warmup: warmup) {
                let answer = try await requester.iq(.set, to: responder.jid, payload: payload, timeout: .seconds(60))
                guard answer.payload?.text == String(kib * 1024) else { throw BenchmarkFailure("the answer's size is wrong") }
            }
            await requester.stop()
            return samples
        }
        let kernel = try await roundTrips(sendBuffer: nil)
        let small = try await roundTrips(sendBuffer: sendBuffer)
        await responder.stop()

        var output = Report(benchmark: "xmpp-large")
        output.text("""
            \(requests) requests of \(kib) KiB each way A → B (a short answer back), after \(warmup) warm-up, over \
            verified STARTTLS through \(wire.host):\(wire.port).
            """)
        output.table(.percentiles(
            [
                Figure("kernel's send buffer", kernel),
                Figure("\(sendBuffer)-byte send buffer (writes cut short)", small),
            ],
            columns: ["send buffer", "p50 ms", "p90 ms", "max ms", "× kernel's p50"], percentiles: [50, 90, 100],
            unit: .milliseconds, decimals: 1, baseline: kernel))
        report.print(output)
    }
}
