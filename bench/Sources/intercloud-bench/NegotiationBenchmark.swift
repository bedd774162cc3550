import ArgumentParser
import BenchmarkHarness
import Broker
import Foundation
import Negotiation
import Policy
import XMPP

/// Negotiation over the wire between two real brokers through one XMPP server (bench/negotiation/run.sh):
/// - a full negotiation, consumer's request to FINALIZED on both sides, every state journaled in
///   SQLite before it is acknowledged, the agreement signed and countersigned: the direct path
///   (request, agreement, verify, finalize: 4 signed IQ round trips) and the counter-offer path
///   (request, offer, accept, agreement, verify, finalize: 6);
/// - in the same run, a signed request round trip (federation-ping) as the baseline: a
///   negotiation costs about its round trips times this;
/// - the policy evaluation a later request pays: the policy file entry (`PolicySet.evaluate`),
///   the agreement check (`NegotiationService.check`, which reads the agreements from SQLite),
///   and terms evaluation as the provider does on a request.
struct NegotiationBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "negotiation", abstract: "Full negotiations and policy evaluation against a signed request round trip.")

    @OptionGroup var wire: WireOptions
    @OptionGroup var output: ReportOptions
    @Option(help: "Measured negotiations of each kind.") var iterations = 100
    @Option(help: "Unmeasured negotiations of each kind first.") var warmup = 10

    func run() async throws {
        let directory = try ScratchDirectory("intercloud-negotiation-bench")
        defer { directory.remove() }
        let consumerJID = wire.accountA.bare
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
        try policy.write(to: directory.url.appendingPathComponent("provider-policy.toml"), atomically: true, encoding: .utf8)
        let configs = try BrokerPair.configurations(
            [wire.accountA, wire.accountB], server: wire.server, directory: directory.url, streamManagement: false,
            extraTOML: ["", "[policy]\nfiles = [\"provider-policy.toml\"]"])
        let brokers = try RunningBrokers(configs)
        let (consumer, provider) = (brokers.nodes[0], brokers.nodes[1])
        let providerJID = configs[1].xmpp.jid.bare.description
        let providerFull = configs[1].xmpp.jid
        let (iterations, warmup, server) = (self.iterations, self.warmup, wire.server)

        func terms(price: String) -> Terms {
            let start = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down))
            return Terms(
                resources: ResourceAmount(instances: 2, vcpu: 4, memoryGiB: 8, storageGiB: 40, transferGB: 10),
                instanceTypes: ["sim.small"], period: ValidityPeriod(from: start, until: start.addingTimeInterval(30 * 86_400)),
                rates: RateCard(
                    currency: "EUR", instanceHour: ["sim.small": Decimal(string: price)!],
                    perGBTransferred: Decimal(string: price == "0" ? "0" : "0.02")!),
                sla: ServiceLevel(availabilityPercent: Decimal(string: "99.9")!, maxMigrationDowntimeSeconds: 300, support: "24x7"),
                entitlements: [.query, .migrateIn])
        }

        let report = try await brokers.whileRunning {
            try await BrokerPair.waitUntil("brokers did not trust each other") {
                BrokerPair.isTrusted(consumer, providerJID) && BrokerPair.isTrusted(provider, consumerJID)
            }
            var direct: [Duration] = [], bothDirect: [Duration] = [], countered: [Duration] = [], pings: [Duration] = []
            for index in 0..<(warmup + iterations) {
                let ping = try await time { _ = try await consumer.federationPing(providerFull, text: "x") }.duration

                let started = ContinuousClock.now
                let id = try await consumer.negotiation.start(with: providerFull, terms: terms(price: "0.0230"))
                let outcome = await consumer.negotiation.outcome(of: id)
                let atConsumer = ContinuousClock.now - started
                while await provider.negotiation.state(of: id) != .finalized {
                    if ContinuousClock.now - started > .seconds(10) { throw BenchmarkFailure("provider did not finalize") }
                    try await Task.sleep(for: .microseconds(200))
                }
                let atBoth = ContinuousClock.now - started
                guard outcome.state == .finalized else {
                    throw BenchmarkFailure("negotiation \(id) ended \(outcome.state.rawValue): \(outcome.reason ?? "")")
                }

                let (counter, counterTime) = try await time {
                    try await consumer.negotiation.negotiate(with: providerFull, terms: terms(price: "0"))
                }
                guard counter.state == .finalized else {
                    throw BenchmarkFailure("counter-offer negotiation ended \(counter.state.rawValue): \(counter.reason ?? "")")
                }
                if index >= warmup {
                    pings.append(ping)
                    direct.append(atConsumer)
                    bothDirect.append(atBoth)
                    countered.append(counterTime)
                }
            }

            // Policy evaluation per later request, in process (the provider's side): each figure is
            // a batch's time divided by its size, five batches.
            let spec = MigrationSpec(instanceType: "sim.small", vcpu: 1, memoryGiB: 2, diskGiB: 20, region: "bench2-a", transferGB: 1)
            let evaluations = 20_000
            guard let entry = provider.policies.policy(for: consumerJID, at: Date()) else { throw BenchmarkFailure("no policy for the consumer") }
            let offered = terms(price: "0.0230")
            let usage = ResourceAmount(instances: 1, vcpu: 1)
            func perRequest(_ count: Int, _ body: () -> Void) -> Samples {
                Samples((0..<5).map { _ in time { for _ in 0..<count { body() } }.duration / count })
            }
            let policyCost = perRequest(evaluations) {
                _ = provider.policies.evaluate(.migrateIn(spec), peer: consumerJID, usage: usage, now: Date())
            }
            let agreementCost = perRequest(evaluations / 20) {
                _ = provider.negotiation.check(.migrateIn(spec), from: consumerJID, usage: usage)
            }
            let termsCost = perRequest(evaluations) { _ = entry.evaluate(terms: offered, as: .provider) }
            let agreementsHeld = (try? provider.negotiation.store.agreements(peer: consumerJID, state: .finalized).count) ?? 0

            let baseline = Samples(pings)
            var report = Report(benchmark: "negotiation")
            report.text("""
                Consumer \(consumerJID), provider \(providerJID) through \(server.host):\(server.port), \(iterations) measured \
                negotiations of each kind after \(warmup) warm-up, stream management off, SQLite synchronous=FULL.
                """)
            report.table(.percentiles(
                [
                    Figure("signed request round trip (federation-ping), baseline", baseline),
                    Figure("negotiation request → FINALIZED at the consumer (4 signed round trips)", Samples(direct)),
                    Figure("negotiation request → FINALIZED at both sides", Samples(bothDirect)),
                    Figure("negotiation with a counter-offer → FINALIZED at the consumer (6 round trips)", Samples(countered)),
                ],
                columns: ["operation", "p50 ms", "p90 ms", "× signed request p50"], percentiles: [50, 90], unit: .milliseconds,
                decimals: 2, baseline: baseline))
            report.text("Policy evaluation per request, in process (median of 5 runs):")
            report.table(Table(
                columns: ["check", "µs per request"],
                rows: [
                    ["policy file entry, `PolicySet.evaluate(.migrateIn)`", .number(policyCost.median.microseconds, decimals: 1)],
                    [
                        "agreement check, `NegotiationService.check(.migrateIn)` (SQLite read of \(agreementsHeld) agreements)",
                        .number(agreementCost.median.microseconds, decimals: 1),
                    ],
                    ["terms evaluation on a request, `PeerPolicy.evaluate(terms:as: .provider)`", .number(termsCost.median.microseconds, decimals: 1)],
                ]))
            return report
        }
        output.print(report)
    }
}
