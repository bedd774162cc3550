import ArgumentParser
import BenchmarkHarness
import Broker
import Foundation
import Migration
import Negotiation
import Peering
import Policy
import Providers
import XMPP

/// A SimCloud cold migration end to end between two real brokers through one XMPP server
/// (bench/migration/run.sh): a running instance with an N-byte disk moves from broker 1's SimCloud
/// to broker 2's (authorize, reserve, stop, snapshot, export with SHA-256, mutual-TLS transfer with
/// chunk and end-to-end hashes, import with verification, start, cut over, clean up), against the
/// baseline of `cp` of the same disk file plus `sha256sum` of the copy, in the same run. Peak RSS
/// of the process holding both brokers is reported (VmHWM). SimCloud's simulated boot, shutdown
/// and terminate delays are set to zero: they stand for a real cloud's waits, not work of ours.
struct MigrationBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migration", abstract: "A SimCloud cold migration between two brokers against cp + sha256sum.")

    @OptionGroup var wire: WireOptions
    @OptionGroup var output: ReportOptions
    @Option(help: "Size of the migrated disk, MiB.") var mib = 1024
    @Option(help: "Migrations (and baselines), alternating.") var runs = 3

    func run() async throws {
        let directory = try ScratchDirectory("intercloud-migration-bench")
        defer { directory.remove() }
        let consumerJID = wire.accountA.bare
        let providerJID = wire.accountB.bare
        try """
            version = 1
            [[peer]]
            name = "bench-consumer"
            match = ["\(consumerJID)"]
            entitlements = ["migrate-in"]
            [peer.rates]
            currency = "EUR"
            [peer.rates.instance_hour]
            "sim.small" = "0.0230"
            """.write(to: directory.url.appendingPathComponent("provider-policy.toml"), atomically: true, encoding: .utf8)
        try """
            version = 1
            [[peer]]
            name = "bench-provider"
            match = ["\(providerJID)"]
            entitlements = ["migrate-out"]
            """.write(to: directory.url.appendingPathComponent("consumer-policy.toml"), atomically: true, encoding: .utf8)
        func section(_ name: String, policy: String) -> String {
            """
            [policy]
            files = ["\(policy)"]
            [provider]
            driver = "simcloud"
            options = { data-dir = "\(name)", boot-delay-ms = "0", shutdown-delay-ms = "0", terminate-delay-ms = "0" }
            [migration]
            graceful_shutdown_seconds = 5
            """
        }
        let configs = try BrokerPair.configurations(
            [wire.accountA, wire.accountB], server: wire.server, directory: directory.url, streamManagement: false,
            extraTOML: [section("sim1", policy: "consumer-policy.toml"), section("sim2", policy: "provider-policy.toml")])
        let brokers = try RunningBrokers(configs)
        let (source, destination) = (brokers.nodes[0], brokers.nodes[1])
        let (bytes, runs, server) = (Int64(mib) << 20, self.runs, wire.server)

        let report = try await brokers.whileRunning {
            try await BrokerPair.waitUntil("brokers not ready") {
                BrokerPair.isTrusted(source, providerJID) && BrokerPair.isTrusted(destination, consumerJID)
                    && source.migration?.isReady == true && destination.migration?.isReady == true
            }
            let start = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down))
            let terms = Terms(
                resources: ResourceAmount(instances: 100, vcpu: 100, memoryGiB: 1000, storageGiB: 100_000, transferGB: 100_000),
                period: ValidityPeriod(from: start, until: start.addingTimeInterval(86_400)),
                rates: RateCard(currency: "EUR", instanceHour: ["sim.small": Decimal(string: "0.0230")!]),
                sla: ServiceLevel(availabilityPercent: 0, maxMigrationDowntimeSeconds: 86_400, support: ""), entitlements: [.migrateIn])
            let outcome = try await source.negotiation.negotiate(with: configs[1].xmpp.jid, terms: terms)
            guard outcome.state == .finalized else { throw BenchmarkFailure("negotiation: \(outcome.reason ?? "")") }
            while await destination.negotiation.state(of: outcome.negotiationID) != .finalized { try await Task.sleep(for: .milliseconds(5)) }
            guard let sourceProvider = source.provider, let sourceMigration = source.migration, let destinationMigration = destination.migration
            else { throw BenchmarkFailure("both brokers need [provider] and [migration]") }

            // The disk: N random bytes, imported as an image.
            let disk = directory.url.appendingPathComponent("disk.raw")
            try Self.writeRandomFile(disk, bytes: bytes)
            let driver = try await sourceProvider.driver()
            let image = try await driver.importImage(from: disk, name: "bench-disk", format: .raw, expectedSHA256: nil, progress: nil)

            var migrations: [Duration] = []
            var baselines: [Duration] = []
            var phases: [String: [Duration]] = [:]
            for run in 0..<runs {
                let instance = try await driver.create(CreateInstanceRequest(name: "bench-\(run)", sizeID: "sim.small", imageID: image.id), progress: nil)
                _ = try await driver.waitFor(instance: instance.id, state: .running, timeout: .seconds(30))
                let diskPath = URL(fileURLWithPath: configs[0].sourcePath).deletingLastPathComponent()
                    .appendingPathComponent("sim1").appendingPathComponent(instance.extra["disk"] ?? "")

                // Baseline: cp of the instance's disk, then sha256sum of the copy.
                let copy = directory.url.appendingPathComponent("copy.raw")
                baselines.append(try time { _ = try shell("cp '\(diskPath.path)' '\(copy.path)' && sha256sum '\(copy.path)' > /dev/null") }.duration)
                try? FileManager.default.removeItem(at: copy)

                let (result, elapsed) = try await time { try await sourceMigration.migrate(instanceID: instance.id, to: providerJID) }
                migrations.append(elapsed)
                guard result.outcome == .completed else { throw BenchmarkFailure("migration \(result.outcome)") }
                // Per-phase durations from the journal: time from a phase's first step to the next phase's.
                for (service, role, prefix) in [(sourceMigration, MigrationRole.source, ""), (destinationMigration, .destination, "destination ")] {
                    let steps = try service.journal.steps(result.migrationID, role: role)
                    var firstAt: [(String, Date)] = []
                    for step in steps where firstAt.last?.0 != step.phase { firstAt.append((step.phase, step.at)) }
                    for (index, entry) in firstAt.enumerated() where index + 1 < firstAt.count {
                        let seconds = firstAt[index + 1].1.timeIntervalSince(entry.1)
                        phases[prefix + entry.0, default: []].append(.milliseconds(Int64(seconds * 1000)))
                    }
                }
            }
            let peak = peakResidentKiB() ?? 0
            let migration = Samples(migrations), baseline = Samples(baselines)
            let mebibytes = Double(bytes) / Double(1 << 20)
            func s(_ duration: Duration) -> String { format(duration.seconds, decimals: 3) }
            var report = Report(benchmark: "migration")
            report.text("""
                SimCloud → SimCloud cold migration of a \(format(mebibytes, decimals: 0)) MiB disk between two brokers through \
                \(server.host):\(server.port) (both brokers in this process), \(runs) runs, medians.
                """)
            report.table(Table(
                columns: ["operation", "median s", "MiB/s", "× baseline"],
                rows: [
                    [
                        "baseline: `cp` disk + `sha256sum` copy", .number(baseline.median.seconds, decimals: 3),
                        .number(mebibytes / baseline.median.seconds, decimals: 0), .number(1, decimals: 2),
                    ],
                    [
                        "migration end to end (authorize → cut over → cleanup)", .number(migration.median.seconds, decimals: 3),
                        .number(mebibytes / migration.median.seconds, decimals: 0), .number(migration.ratio(to: baseline), decimals: 2),
                    ],
                ]))
            let order = [
                "authorizing", "proposing", "stopping", "snapshotting", "exporting", "converting", "transferring", "announcing",
                "cuttingOver", "terminating", "cleaningUp", "handingOverMetering",
            ]
            report.text("Source phases (median s): "
                + order.compactMap { phase in phases[phase].map { "\(phase) \(s(Samples($0).median))" } }.joined(separator: ", "))
            let destinationPhases = phases.filter { $0.key.hasPrefix("destination ") }
                .map { (name: String($0.key.dropFirst("destination ".count)), median: Samples($0.value).median) }
                .sorted { $0.median > $1.median }
            report.text("Destination phases (median s): " + destinationPhases.map { "\($0.name) \(s($0.median))" }.joined(separator: ", "))
            report.text("Peak RSS of the process (both brokers): \(peak / 1024) MiB.")
            return report
        }
        output.print(report)
    }

    static func writeRandomFile(_ url: URL, bytes: Int64) throws {
        _ = FileManager.default.createFile(atPath: url.path, contents: nil)
        let handle = try FileHandle(forWritingTo: url)
        defer { try? handle.close() }
        var generator = SystemRandomNumberGenerator()
        var remaining = bytes
        var block = [UInt8](repeating: 0, count: 1 << 20)
        while remaining > 0 {
            for index in stride(from: 0, to: block.count, by: 8) {
                withUnsafeBytes(of: generator.next() as UInt64) { raw in
                    for offset in 0..<8 { block[index + offset] = raw[offset] }
                }
            }
            let count = Int(min(Int64(block.count), remaining))
            handle.write(Data(block[0..<count]))
            remaining -= Int64(count)
        }
    }
}
