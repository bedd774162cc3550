import ArgumentParser
import BenchmarkHarness
import Crypto
import Foundation
import GRDB
import Logging
import Storage
import Trust
import X509

/// CPU cost of trust operations, measured in one process with a baseline of raw P-256
/// sign + verify from the same run, so results are comparable across machines (bench/trust/run.sh).
/// Each figure is the median (and p90) over `iterations` runs after a warm-up; run it from a
/// release build, debug builds are ~10× slower.
struct TrustBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trust", abstract: "Trust: CPU cost in process (default), or over the wire.",
        subcommands: [InProcess.self, Wire.self], defaultSubcommand: InProcess.self)

    struct InProcess: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "in-process", abstract: "Handshake, envelopes and their SQLite writes against raw P-256 sign + verify.")

        @Option(help: "Measured runs per figure.") var iterations = 500
        @OptionGroup var output: ReportOptions

        func run() async throws {
            let figures = try await TrustBenchmark.measureAll(iterations: iterations)
            let baseline = figures.first { $0.name == "raw P-256 sign+verify" }!.samples
            var report = Report(benchmark: "trust in-process")
            report.text("Trust benchmark, \(iterations) iterations per figure, \(ProcessInfo.processInfo.activeProcessorCount) cores")
            report.table(.percentiles(
                figures, columns: ["operation", "median µs", "p90 µs", "× raw sign+verify"], percentiles: [50, 90],
                unit: .microseconds, decimals: 1, baseline: baseline))
            output.print(report)
        }
    }

    static func measureAll(iterations: Int) async throws -> [Figure] {
        var figures: [Figure] = []
        let now = Date()
        let root1 = try CertificateAuthority.makeRoot(commonName: "bench root 1", notBefore: now - 3600)
        let root2 = try CertificateAuthority.makeRoot(commonName: "bench root 2", notBefore: now - 3600)
        let ca1 = try root1.makeIntermediate(commonName: "cloud1 CA", notBefore: now - 3600)
        let ca2 = try root2.makeIntermediate(commonName: "cloud2 CA", notBefore: now - 3600)
        let id1 = try ca1.issueBrokerIdentity(jid: "broker@cloud1.test", notBefore: now - 3600)
        let id2 = try ca2.issueBrokerIdentity(jid: "broker@cloud2.test", notBefore: now - 3600)
        let verifier1 = PeerVerifier(anchors: [root2.certificate])
        let verifier2 = PeerVerifier(anchors: [root1.certificate])

        // Baseline: raw P-256 (swift-crypto) over a 32-byte message.
        let key = P256.Signing.PrivateKey()
        let message = Data((0..<32).map { UInt8($0) })
        figures.append(try measure("raw P-256 sign", iterations) { _ = try key.signature(for: message) })
        let signature = try key.signature(for: message)
        figures.append(measure("raw P-256 verify", iterations) { precondition(key.publicKey.isValidSignature(signature, for: message)) })
        figures.append(try measure("raw P-256 sign+verify", iterations) {
            let signature = try key.signature(for: message)
            precondition(key.publicKey.isValidSignature(signature, for: message))
        })

        figures.append(await measureAsync("chain validation (leaf+intermediate→root, all policies)", iterations) {
            _ = try! await verifier2.verify(chain: id1.chain, peerJID: "broker@cloud1.test", at: now).get()
        })

        // Whole handshake, both machines in memory, no database: 2 chain validations, 2 signatures,
        // 2 signature verifications, wire encode/decode of all four messages.
        figures.append(await measureAsync("handshake, both sides in memory (machines + wire + verify)", iterations) {
            try! await handshakeInMemory(id1, id2, verifier1, verifier2, now: now)
        })

        // Same through TrustService with SQLite (pins and audit written durably, both sides).
        let (pool1, dir1) = try IntercloudDatabase.temporary(schema: [TrustSchema.self, AuditSchema.self])
        let (pool2, dir2) = try IntercloudDatabase.temporary(schema: [TrustSchema.self, AuditSchema.self])
        defer {
            try? FileManager.default.removeItem(at: dir1)
            try? FileManager.default.removeItem(at: dir2)
        }
        let service1 = TrustService(
            myJID: "broker@cloud1.test", identity: id1, anchors: TrustAnchors(anchors: [root2.certificate]), database: pool1,
            logger: .init(label: "bench", factory: { _ in SwiftLogNoOpLogHandler() }))
        let service2 = TrustService(
            myJID: "broker@cloud2.test", identity: id2, anchors: TrustAnchors(anchors: [root1.certificate]), database: pool2,
            logger: .init(label: "bench", factory: { _ in SwiftLogNoOpLogHandler() }))
        figures.append(await measureAsync("handshake via TrustService + SQLite (pin, audit)", max(50, iterations / 5)) {
            _ = try! await service1.handshake(with: "broker@cloud2.test") { payload in
                switch await service2.handleRequest(from: "broker@cloud1.test", payload: payload) {
                case .result(let reply): return reply
                case .error(_, let reply): return reply
                }
            }.get()
        })

        // Envelopes over a 1 KiB payload.
        let payload = [UInt8](repeating: 0x61, count: 1024)
        let namespace = "urn:intercloud:catalog:0"
        figures.append(try measure("envelope seal (sign + XML)", iterations) {
            _ = try service1.seal(payload, namespace: namespace, to: "broker@cloud2.test")
        })
        let sealed = try SignedEnvelope.seal(
            payload, namespace: namespace, from: "broker@cloud1.test", to: "broker@cloud2.test", identity: id1, now: now)
        let xml = sealed.xml
        figures.append(try measure("envelope decode (XML only)", iterations) { _ = try SignedEnvelope.decode(xml: xml) })
        let leaf = id1.leaf
        figures.append(try measure("envelope decode + signature verify (no DB)", iterations) {
            let envelope = try SignedEnvelope.decode(xml: xml)
            precondition(DetachedSignature.isValid(
                envelope.signature, for: envelope.signedBytes(sender: "broker@cloud1.test", recipient: "broker@cloud2.test"), signedBy: leaf))
        })
        figures.append(try measure("envelope seal + decode + verify (no DB)", iterations) {
            let envelope = try SignedEnvelope.decode(xml: try service1.seal(payload, namespace: namespace, to: "broker@cloud2.test"))
            precondition(DetachedSignature.isValid(
                envelope.signature, for: envelope.signedBytes(sender: "broker@cloud1.test", recipient: "broker@cloud2.test"), signedBy: leaf))
        })
        let store = TrustStore(database: pool2)
        figures.append(try measure("pin status read (SQLite, WAL)", iterations) {
            let pin = try store.status(for: "broker@cloud1.test")
            precondition(pin != nil)
        })
        let replay = ReplayGuard(database: pool2)
        figures.append(try measure("nonce admit (in-memory replay window)", iterations) {
            precondition(replay.admit(sender: "broker@cloud1.test", nonce: EnvelopeNonce.make(), sentAt: Date(), now: Date()) == nil)
        })
        figures.append(await measureAsync("envelope seal + open, full (pin check + verify + nonce)", iterations) {
            _ = try! await service2.open(
                xml: try! service1.seal(payload, namespace: namespace, to: "broker@cloud2.test"), from: "broker@cloud1.test")
        })
        // Receiver side alone: envelopes sealed beforehand, each opened once.
        var sealedEnvelopes = try (0..<(iterations + max(10, iterations / 10))).map { _ in
            try service1.seal(payload, namespace: namespace, to: "broker@cloud2.test")
        }
        figures.append(await measureAsync("envelope open only, full (receiver side)", iterations) {
            _ = try! await service2.open(xml: sealedEnvelopes.removeLast(), from: "broker@cloud1.test")
        })
        return figures
    }

    static func handshakeInMemory(
        _ id1: BrokerIdentity, _ id2: BrokerIdentity, _ verifier1: PeerVerifier, _ verifier2: PeerVerifier, now: Date
    ) async throws {
        var a = TrustHandshake(role: .initiator, myJID: "broker@cloud1.test", peerJID: "broker@cloud2.test", identity: id1, now: now)
        var b = TrustHandshake(role: .responder, myJID: "broker@cloud2.test", peerJID: "broker@cloud1.test", identity: id2, now: now)
        // Messages go through the wire format as they would over XMPP.
        func wire(_ message: TrustMessage) throws -> TrustMessage { try TrustWire.decode(xml: TrustWire.encode(message)) }
        guard case .send(let hello) = a.start(now: now),
            case .verifyChain(let chain1, let jid1, _) = b.received(try wire(hello), now: now),
            case .send(let result) = b.chainVerified(await verifier2.verify(chain: chain1, peerJID: jid1, at: now), now: now),
            case .verifyChain(let chain2, let jid2, _) = a.received(try wire(result), now: now),
            case .send(let finish) = a.chainVerified(await verifier1.verify(chain: chain2, peerJID: jid2, at: now), now: now),
            case .trust(_, let ok?) = b.received(try wire(finish), now: now),
            case .trust = a.received(try wire(ok), now: now)
        else { throw TrustRefusal(.unexpectedMessage, "benchmark handshake failed") }
    }

    /// A figure from a synchronous operation, after a tenth as many warm-up runs (at least 10).
    static func measure(_ name: String, _ iterations: Int, _ body: () throws -> Void) rethrows -> Figure {
        Figure(name, try BenchmarkHarness.measure(iterations: iterations, warmup: max(10, iterations / 10), body))
    }

    /// A figure from an asynchronous operation, after a tenth as many warm-up runs (at least 5).
    nonisolated(nonsending) static func measureAsync(
        _ name: String, _ iterations: Int, _ body: nonisolated(nonsending) () async -> Void
    ) async -> Figure {
        Figure(name, await BenchmarkHarness.measure(iterations: iterations, warmup: max(5, iterations / 10), body))
    }
}
