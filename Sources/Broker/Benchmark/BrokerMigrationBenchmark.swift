import Foundation
import Logging
import Migration
import Negotiation
import Peering
import Policy
import Providers
import ServiceLifecycle
import XMPP

/// A SimCloud cold migration end to end between two real brokers through one XMPP server (issue 7,
/// bench/): a running instance with an N-byte disk moves from broker 1's SimCloud to broker 2's
/// (authorize, reserve, stop, snapshot, export with SHA-256, mutual-TLS transfer with chunk and
/// end-to-end hashes, import with verification, start, cut over, clean up), against the baseline
/// of `cp` of the same disk file plus `sha256sum` of the copy, in the same run. Peak RSS of the
/// process holding both brokers is reported (VmHWM). SimCloud's simulated boot, shutdown and
/// terminate delays are set to zero: they stand for a real cloud's waits, not work of ours.
public enum BrokerMigrationBenchmark {
    public typealias Server = BrokerTrustBenchmark.Server
    public typealias Account = BrokerTrustBenchmark.Account

    public static func run(server: Server, account1: Account, account2: Account, bytes: Int64, runs: Int = 3) async throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("intercloud-migration-bench-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let consumerJID = account1.jid.split(separator: "/").first.map(String.init) ?? account1.jid
        let providerJID = account2.jid.split(separator: "/").first.map(String.init) ?? account2.jid
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
            """.write(to: directory.appendingPathComponent("provider-policy.toml"), atomically: true, encoding: .utf8)
        try """
            version = 1
            [[peer]]
            name = "bench-provider"
            match = ["\(providerJID)"]
            entitlements = ["migrate-out"]
            """.write(to: directory.appendingPathComponent("consumer-policy.toml"), atomically: true, encoding: .utf8)
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
        let configs = try BrokerTrustBenchmark.writeBrokers(
            [account1, account2], server: server, directory: directory, streamManagement: false,
            extraTOML: [section("sim1", policy: "consumer-policy.toml"), section("sim2", policy: "provider-policy.toml")])
        var quiet = Logger(label: "intercloud.bench")
        quiet.logLevel = .warning
        let source = try BrokerNode(configuration: configs[0], logger: quiet)
        let destination = try BrokerNode(configuration: configs[1], logger: quiet)
        let groups = [source, destination].map { node in ServiceGroup(configuration: .init(services: [.init(service: node)], logger: quiet)) }
        let running = groups.map { group in Task { try await group.run() } }
        func stop() async {
            for group in groups { await group.triggerGracefulShutdown() }
            for run in running { _ = try? await run.value }
        }
        do {
            let started = ContinuousClock.now
            while !(BrokerTrustBenchmark.isTrusted(source, providerJID) && BrokerTrustBenchmark.isTrusted(destination, consumerJID)
                && source.migration?.isReady == true && destination.migration?.isReady == true)
            {
                if ContinuousClock.now - started > .seconds(30) { throw BrokerTrustBenchmark.Failure(description: "brokers not ready within 30 s") }
                try await Task.sleep(for: .milliseconds(20))
            }
            let start = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down))
            let terms = Terms(
                resources: ResourceAmount(instances: 100, vcpu: 100, memoryGiB: 1000, storageGiB: 100_000, transferGB: 100_000),
                period: ValidityPeriod(from: start, until: start.addingTimeInterval(86_400)),
                rates: RateCard(currency: "EUR", instanceHour: ["sim.small": Decimal(string: "0.0230")!]),
                sla: ServiceLevel(availabilityPercent: 0, maxMigrationDowntimeSeconds: 86_400, support: ""), entitlements: [.migrateIn])
            let outcome = try await source.negotiation.negotiate(with: configs[1].xmpp.jid, terms: terms)
            guard outcome.state == .finalized else { throw BrokerTrustBenchmark.Failure(description: "negotiation: \(outcome.reason ?? "")") }
            while await destination.negotiation.state(of: outcome.negotiationID) != .finalized { try await Task.sleep(for: .milliseconds(5)) }

            // The disk: N random bytes, imported as an image.
            let disk = directory.appendingPathComponent("disk.raw")
            try writeRandomFile(disk, bytes: bytes)
            let driver = try await source.provider!.driver()
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
                let copy = directory.appendingPathComponent("copy.raw")
                let baselineStart = ContinuousClock.now
                try shell("cp '\(diskPath.path)' '\(copy.path)' && sha256sum '\(copy.path)' > /dev/null")
                baselines.append(ContinuousClock.now - baselineStart)
                try? FileManager.default.removeItem(at: copy)

                let migrationStart = ContinuousClock.now
                let result = try await source.migration!.migrate(instanceID: instance.id, to: providerJID)
                migrations.append(ContinuousClock.now - migrationStart)
                guard result.outcome == .completed else { throw BrokerTrustBenchmark.Failure(description: "migration \(result.outcome)") }
                // Per-phase durations from the journal: time from a phase's first step to the next phase's.
                for (node, role, prefix) in [(source, MigrationRole.source, ""), (destination, .destination, "destination ")] {
                    let steps = try node.migration!.journal.steps(result.migrationID, role: role)
                    var firstAt: [(String, Date)] = []
                    for step in steps where firstAt.last?.0 != step.phase { firstAt.append((step.phase, step.at)) }
                    for (index, entry) in firstAt.enumerated() where index + 1 < firstAt.count {
                        let seconds = firstAt[index + 1].1.timeIntervalSince(entry.1)
                        phases[prefix + entry.0, default: []].append(.milliseconds(Int64(seconds * 1000)))
                    }
                }
            }
            let peak = peakRSSKiB()
            await stop()
            let m = BrokerTrustBenchmark.median(migrations)
            let b = BrokerTrustBenchmark.median(baselines)
            func s(_ d: Duration) -> String { String(format: "%.3f", BrokerTrustBenchmark.milliseconds(d) / 1000) }
            let mib = Double(bytes) / Double(1 << 20)
            var text = """
                SimCloud → SimCloud cold migration of a \(String(format: "%.0f", mib)) MiB disk between two brokers through \
                \(server.host):\(server.port) (both brokers in this process), \(runs) runs, medians.

                | operation | median s | MiB/s | × baseline |
                |---|---:|---:|---:|
                | baseline: `cp` disk + `sha256sum` copy | \(s(b)) | \(String(format: "%.0f", mib / (BrokerTrustBenchmark.milliseconds(b) / 1000))) | 1.00 |
                | migration end to end (authorize → cut over → cleanup) | \(s(m)) | \(String(format: "%.0f", mib / (BrokerTrustBenchmark.milliseconds(m) / 1000))) | \(String(format: "%.2f", BrokerTrustBenchmark.milliseconds(m) / BrokerTrustBenchmark.milliseconds(b))) |

                Source phases (median s): 
                """
            let order = ["authorizing", "proposing", "stopping", "snapshotting", "exporting", "converting", "transferring", "announcing", "cuttingOver", "terminating", "cleaningUp", "handingOverMetering"]
            text += order.compactMap { phase in phases[phase].map { "\(phase) \(s(BrokerTrustBenchmark.median($0)))" } }.joined(separator: ", ")
            text += "\n\nDestination phases (median s): "
            text += phases.keys.filter { $0.hasPrefix("destination ") }
                .sorted { BrokerTrustBenchmark.median(phases[$0]!) > BrokerTrustBenchmark.median(phases[$1]!) }
                .map { "\($0.dropFirst("destination ".count)) \(s(BrokerTrustBenchmark.median(phases[$0]!)))" }.joined(separator: ", ")
            text += "\n\nPeak RSS of the process (both brokers): \(peak / 1024) MiB.\n"
            return text
        } catch {
            await stop()
            throw error
        }
    }

    static func writeRandomFile(_ url: URL, bytes: Int64) throws {
        FileManager.default.createFile(atPath: url.path, contents: nil)
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

    static func shell(_ command: String) throws {
        var pid: pid_t = 0
        let arguments = ["/bin/sh", "-c", command]
        let argv = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        guard posix_spawn(&pid, "/bin/sh", nil, nil, argv, environ) == 0 else { throw BrokerTrustBenchmark.Failure(description: "cannot run \(command)") }
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        guard status == 0 else { throw BrokerTrustBenchmark.Failure(description: "\(command) failed (\(status))") }
    }

    static func peakRSSKiB() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") })
        else { return 0 }
        return Int(line.split(separator: " ").dropFirst().first.map(String.init) ?? "") ?? 0
    }
}
