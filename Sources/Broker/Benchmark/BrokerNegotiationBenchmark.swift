import Foundation
import Logging
import Negotiation
import Peering
import Policy
import ServiceLifecycle
import XMPP

/// Negotiation over the wire between two real brokers through one XMPP server (issue 6, bench/):
/// - a full negotiation, consumer's request to FINALIZED on both sides, every state journaled in
///   SQLite before it is acknowledged, the agreement signed and countersigned: the direct path
///   (request, agreement, verify, finalize: 4 signed IQ round trips) and the counter-offer path
///   (request, offer, accept, agreement, verify, finalize: 6);
/// - in the same run, a signed request round trip (federation-ping) as the baseline: a
///   negotiation costs about its round trips times this;
/// - the policy evaluation a later request pays: the policy file entry (`PolicySet.evaluate`),
///   the agreement check (`NegotiationService.check`, which reads the agreements from SQLite),
///   and terms evaluation as the provider does on a request.
public enum BrokerNegotiationBenchmark {
    public typealias Server = BrokerTrustBenchmark.Server
    public typealias Account = BrokerTrustBenchmark.Account

    public static func run(
        server: Server, account1: Account, account2: Account, iterations: Int = 100, warmup: Int = 10
    ) async throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("intercloud-negotiation-bench-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let consumerJID = account1.jid.split(separator: "/").first.map(String.init) ?? account1.jid
        let policy = """
            version = 1
            [[peer]]
            name = "bench-consumer"
            match = ["\(consumerJID)"]
            entitlements = ["query", "migrate-in"]
            [peer.quota]
            instances = 10
            vcpu = 40
            [peer.rates]
            currency = "EUR"
            per_gb_transferred = "0.02"
            [peer.rates.instance_hour]
            "sim.small" = "0.0230"
            [peer.sla_offered]
            availability_percent = "99.9"
            max_migration_downtime_seconds = 300
            support = "24x7"
            """
        try policy.write(to: directory.appendingPathComponent("provider-policy.toml"), atomically: true, encoding: .utf8)
        let configs = try BrokerTrustBenchmark.writeBrokers(
            [account1, account2], server: server, directory: directory, streamManagement: false,
            extraTOML: ["", "[policy]\nfiles = [\"provider-policy.toml\"]"])
        var quiet = Logger(label: "intercloud.bench")
        quiet.logLevel = .warning
        let consumer = try BrokerNode(configuration: configs[0], logger: quiet)
        let provider = try BrokerNode(configuration: configs[1], logger: quiet)
        let groups = [consumer, provider].map { node in ServiceGroup(configuration: .init(services: [.init(service: node)], logger: quiet)) }
        let runs = groups.map { group in Task { try await group.run() } }
        func stop() async {
            for group in groups { await group.triggerGracefulShutdown() }
            for run in runs { _ = try? await run.value }
        }
        let providerJID = configs[1].xmpp.jid.bare.description
        let providerFull = configs[1].xmpp.jid
        let contact = ContinuousClock.now
        while !(BrokerTrustBenchmark.isTrusted(consumer, providerJID) && BrokerTrustBenchmark.isTrusted(provider, consumerJID)) {
            if ContinuousClock.now - contact > .seconds(30) {
                await stop()
                throw BrokerTrustBenchmark.Failure(description: "brokers did not trust each other within 30 s")
            }
            try await Task.sleep(for: .milliseconds(20))
        }

        func terms(price: String) -> Terms {
            let start = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down))
            return Terms(
                resources: ResourceAmount(instances: 2, vcpu: 4, memoryGiB: 8, storageGiB: 40, transferGB: 10),
                instanceTypes: ["sim.small"], period: ValidityPeriod(from: start, until: start.addingTimeInterval(30 * 86_400)),
                rates: RateCard(currency: "EUR", instanceHour: ["sim.small": Decimal(string: price)!], perGBTransferred: Decimal(string: price == "0" ? "0" : "0.02")!),
                sla: ServiceLevel(availabilityPercent: Decimal(string: "99.9")!, maxMigrationDowntimeSeconds: 300, support: "24x7"),
                entitlements: [.query, .migrateIn])
        }
        var direct: [Duration] = []
        var bothDirect: [Duration] = []
        var countered: [Duration] = []
        var pings: [Duration] = []
        do {
            for index in 0..<(warmup + iterations) {
                var started = ContinuousClock.now
                _ = try await consumer.federationPing(providerFull, text: "x")
                let ping = ContinuousClock.now - started

                started = ContinuousClock.now
                let id = try await consumer.negotiation.start(with: providerFull, terms: terms(price: "0.0230"))
                let outcome = await consumer.negotiation.outcome(of: id)
                let atConsumer = ContinuousClock.now - started
                while await provider.negotiation.state(of: id) != .finalized {
                    if ContinuousClock.now - started > .seconds(10) { throw BrokerTrustBenchmark.Failure(description: "provider did not finalize") }
                    try await Task.sleep(for: .microseconds(200))
                }
                let atBoth = ContinuousClock.now - started
                guard outcome.state == .finalized else {
                    throw BrokerTrustBenchmark.Failure(description: "negotiation \(id) ended \(outcome.state.rawValue): \(outcome.reason ?? "")")
                }

                started = ContinuousClock.now
                let counter = try await consumer.negotiation.negotiate(with: providerFull, terms: terms(price: "0"))
                let counterTime = ContinuousClock.now - started
                guard counter.state == .finalized else {
                    throw BrokerTrustBenchmark.Failure(description: "counter-offer negotiation ended \(counter.state.rawValue): \(counter.reason ?? "")")
                }
                if index >= warmup {
                    pings.append(ping)
                    direct.append(atConsumer)
                    bothDirect.append(atBoth)
                    countered.append(counterTime)
                }
            }
        } catch {
            await stop()
            throw error
        }

        // Policy evaluation per later request, in process (the provider's side).
        let spec = MigrationSpec(instanceType: "sim.small", vcpu: 1, memoryGiB: 2, diskGiB: 20, region: "bench2-a", transferGB: 1)
        let evaluations = 20_000
        let entry = provider.policies.policy(for: consumerJID, at: Date())!
        let offered = terms(price: "0.0230")
        var policyCost: [Duration] = []
        var agreementCost: [Duration] = []
        var termsCost: [Duration] = []
        for _ in 0..<5 {
            var started = ContinuousClock.now
            for _ in 0..<evaluations {
                _ = provider.policies.evaluate(.migrateIn(spec), peer: consumerJID, usage: ResourceAmount(instances: 1, vcpu: 1), now: Date())
            }
            policyCost.append((ContinuousClock.now - started) / evaluations)
            started = ContinuousClock.now
            for _ in 0..<(evaluations / 20) {
                _ = provider.negotiation.check(.migrateIn(spec), from: consumerJID, usage: ResourceAmount(instances: 1, vcpu: 1))
            }
            agreementCost.append((ContinuousClock.now - started) / (evaluations / 20))
            started = ContinuousClock.now
            for _ in 0..<evaluations { _ = entry.evaluate(terms: offered, as: .provider) }
            termsCost.append((ContinuousClock.now - started) / evaluations)
        }
        let agreementsHeld = (try? provider.negotiation.store.agreements(peer: consumerJID, state: .finalized).count) ?? 0
        await stop()

        let pingMedian = BrokerTrustBenchmark.median(pings)
        func ms(_ d: Duration) -> String { String(format: "%.2f", BrokerTrustBenchmark.milliseconds(d)) }
        func us(_ d: Duration) -> String { String(format: "%.1f", BrokerTrustBenchmark.milliseconds(d) * 1000) }
        func row(_ name: String, _ values: [Duration]) -> String {
            let sorted = values.sorted()
            let p90 = sorted[min(sorted.count - 1, Int(Double(sorted.count) * 0.9))]
            let ratio = BrokerTrustBenchmark.milliseconds(BrokerTrustBenchmark.median(sorted)) / BrokerTrustBenchmark.milliseconds(pingMedian)
            return "| \(name) | \(ms(BrokerTrustBenchmark.median(sorted))) | \(ms(p90)) | \(String(format: "%.2f", ratio)) |"
        }
        return """
            Consumer \(consumerJID), provider \(providerJID) through \(server.host):\(server.port), \(iterations) measured \
            negotiations of each kind after \(warmup) warm-up, stream management off, SQLite synchronous=FULL.

            | operation | p50 ms | p90 ms | × signed request p50 |
            |---|---:|---:|---:|
            \(row("signed request round trip (federation-ping), baseline", pings))
            \(row("negotiation request → FINALIZED at the consumer (4 signed round trips)", direct))
            \(row("negotiation request → FINALIZED at both sides", bothDirect))
            \(row("negotiation with a counter-offer → FINALIZED at the consumer (6 round trips)", countered))

            Policy evaluation per request, in process (median of 5 runs):

            | check | µs per request |
            |---|---:|
            | policy file entry, `PolicySet.evaluate(.migrateIn)` | \(us(BrokerTrustBenchmark.median(policyCost))) |
            | agreement check, `NegotiationService.check(.migrateIn)` (SQLite read of \(agreementsHeld) agreements) | \(us(BrokerTrustBenchmark.median(agreementCost))) |
            | terms evaluation on a request, `PeerPolicy.evaluate(terms:as: .provider)` | \(us(BrokerTrustBenchmark.median(termsCost))) |

            """
    }
}
