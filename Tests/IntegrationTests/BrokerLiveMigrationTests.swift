import Broker
import Crypto
import Foundation
import GRDB
import Metering
import Migration
import Providers
import Storage
import TestSupport
import Testing
import Trust

/// A kill point of the live migration crash test and how the migration must end.
struct LiveKillPoint: Sendable, CustomTestStringConvertible {
    var role: MigrationRole
    var point: String
    var ends: String
    var testDescription: String { "\(point) → \(ends)" }
}

/// Two private libvirt session daemons for this test process (distinct HOME, runtime folder and
/// `host_uuid`, so libvirt sees two hosts), with the tiny guest (`scripts/guest-build.sh`).
actor BrokerLibvirtPair {
    static let shared = BrokerLibvirtPair()
    static let uid: UInt32 = 65534

    struct Daemons: Sendable {
        var source: String
        var destination: String
        var guest: URL
    }

    private var started: Daemons?

    func daemons() async throws -> Daemons {
        if let started { return started }
        let root = try TestProsody.repositoryRoot().path
        let guest = BrokerLibvirtSession.guest
        var uris: [String] = []
        var folders: [String] = []
        for name in ["a", "b"] {
            let directory = "/tmp/intercloud-broker-live-\(getpid())-\(name)"
            let config = URL(fileURLWithPath: directory).appendingPathComponent("home/.config/libvirt")
            try FileManager.default.createDirectory(at: config, withIntermediateDirectories: true)
            try "host_uuid = \"\(UUID().uuidString.lowercased())\"\n"
                .write(to: config.appendingPathComponent("libvirtd.conf"), atomically: true, encoding: .utf8)
            uris.append("qemu+unix:///session?socket=\(directory)/run/libvirt/libvirt-sock")
            folders.append(directory)
        }
        let pid = getpid()
        let toStart = folders
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            DispatchQueue.global().async {
                do {
                    try runShell("bash \(shellQuoted(root))/scripts/guest-build.sh \(shellQuoted(guest.path))")
                    for folder in toStart {
                        try runShell("bash \(shellQuoted(root))/scripts/libvirt-session.sh start \(shellQuoted(folder)) \(pid)")
                    }
                    continuation.resume()
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
        let daemons = Daemons(source: uris[0], destination: uris[1], guest: guest)
        started = daemons
        return daemons
    }
}

/// Live migration between two `intercloud serve` processes over the shared test Prosody, each
/// cloud with its own libvirt session daemon and real QEMU guests (`intercloud migrate --live`).
/// The guest is created and inspected by this test through its own connections to the daemons.
@Suite(.serialized, .timeLimit(.minutes(15))) struct BrokerLiveMigrationTests {
    let server: TestProsody

    init() throws { server = try TestProsody.shared() }

    static let bootMarker = "INTERCLOUD-GUEST-READY"

    static func policy(_ role: MigrationRole, peer: String) -> String {
        switch role {
        case .destination:
            """
            version = 1

            [[peer]]
            name = "cloud1-partner"
            match = ["\(peer)"]
            entitlements = ["query", "migrate-in", "migrate-live"]

            [peer.quota]
            instances = 200
            vcpu = 200
            memory_gib = 1000
            storage_gib = 10000
            transfer_gb = 10000

            [peer.rates]
            currency = "EUR"
            per_gb_transferred = "0.02"
            per_gb_month_stored = "0.04"

            [peer.rates.instance_hour]
            "lv.tiny" = "0.0050"
            "lv.small" = "0.0100"
            "sim.nano" = "0.0050"
            "sim.small" = "0.0230"

            [peer.sla_offered]
            availability_percent = "99.9"
            max_migration_downtime_seconds = 300
            support = "24x7"
            """
        case .source:
            """
            version = 1

            [[peer]]
            name = "cloud2-provider"
            match = ["\(peer)"]
            entitlements = ["query", "migrate-out", "migrate-live"]
            """
        }
    }

    /// libvirt on the role's daemon (or SimCloud for a destination when `simCloudDestination`).
    /// The source lists the destination's daemon as the one live target it accepts from that peer,
    /// in clear: the two session daemons on this machine have no TLS certificates.
    static func provider(
        _ role: MigrationRole, data: URL, daemons: BrokerLibvirtPair.Daemons, simCloudDestination: Bool, peer: String
    ) -> String {
        if role == .destination && simCloudDestination { return CrashTestClouds.simCloudSection(data) }
        let images = data.appendingPathComponent("images"), instances = data.appendingPathComponent("instances")
        for folder in [data, images, instances] {
            try? FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            // QEMU (the session user) writes disks and console logs here.
            try? FileManager.default.setAttributes(
                [.posixPermissions: 0o755, .ownerAccountID: NSNumber(value: BrokerLibvirtPair.uid), .groupOwnerAccountID: NSNumber(value: BrokerLibvirtPair.uid)],
                ofItemAtPath: folder.path)
        }
        let uri = role == .source ? daemons.source : daemons.destination
        return """
            [provider]
            driver = "libvirt"
            options = { uri = "\(uri)", image-dir = "\(images.path)", instance-dir = "\(instances.path)", domain-type = "qemu", kernel = "\(daemons.guest.appendingPathComponent("vmlinuz").path)", initrd = "\(daemons.guest.appendingPathComponent("initrd.gz").path)", cmdline = "console=ttyS0 quiet", file-owner-uid = "\(BrokerLibvirtPair.uid)", boot-marker = "\(bootMarker)" }

            [migration]
            graceful_shutdown_seconds = 5
            boot_timeout_seconds = 120
            request_timeout_seconds = 15

            [migration.live_peers]
            "\(peer)" = { uris = ["\(daemons.destination)"], allow_plaintext = true }
            """
    }

    /// Two brokers (processes) started and peered; the source is libvirt, the destination libvirt
    /// or SimCloud.
    func clouds(simCloudDestination: Bool = false) async throws -> (CrashTestClouds, BrokerLibvirtPair.Daemons) {
        let daemons = try await BrokerLibvirtPair.shared.daemons()
        let clouds = try CrashTestClouds(
            server: server, policy: { role, peer in Self.policy(role, peer: peer) },
            providerSection: { role, data, peer in
                Self.provider(role, data: data, daemons: daemons, simCloudDestination: simCloudDestination, peer: peer)
            })
        try await clouds.start()
        return (clouds, daemons)
    }

    /// This test's own connection to a broker's libvirt daemon, with that broker's folders.
    func driver(_ clouds: CrashTestClouds, _ role: MigrationRole, uri: String, guest: URL) async throws -> LibvirtDriver {
        let data = clouds.brokers[role]!.dataDirectory
        return try await LibvirtDriver.connect(.init(
            uri: uri, imageDirectory: data.appendingPathComponent("images"), instanceDirectory: data.appendingPathComponent("instances"),
            domainType: "qemu",
            directBoot: .init(kernel: guest.appendingPathComponent("vmlinuz"), initrd: guest.appendingPathComponent("initrd.gz"), commandLine: "console=ttyS0 quiet"),
            fileOwner: .init(uid: BrokerLibvirtPair.uid, gid: BrokerLibvirtPair.uid), bootMarker: Self.bootMarker))
    }

    /// A guest booted on `driver` (boot marker seen) from a small disk with recognisable content.
    func runningGuest(on driver: LibvirtDriver, name: String, in folder: URL) async throws -> Instance {
        var bytes = [UInt8](repeating: 0, count: 8 << 20)
        for index in stride(from: 0, to: bytes.count, by: 4096) { bytes[index] = UInt8(truncatingIfNeeded: index >> 12) | 1 }
        let data = Data(bytes)
        let url = folder.appendingPathComponent("\(name).raw")
        try data.write(to: url)
        let sha = SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
        let image = try await driver.importImage(from: url, name: "\(name)-disk", format: .raw, expectedSHA256: sha, progress: nil)
        let created = try await driver.create(CreateInstanceRequest(name: name, sizeID: "lv.tiny", imageID: image.id), progress: nil)
        return try await driver.waitFor(instance: created.id, state: .running, timeout: .seconds(150), pollInterval: .milliseconds(200))
    }

    func bootMarkers(_ instance: Instance) -> Int {
        guard let log = instance.extra["consoleLog"], let text = try? String(contentsOfFile: log, encoding: .utf8) else { return 0 }
        return text.components(separatedBy: Self.bootMarker).count - 1
    }

    /// `intercloud migrate --live` run to its end: the printed JSON object, and the exit status.
    func migrateLive(_ clouds: CrashTestClouds, instance: String, agreement: String? = nil) async throws -> (reply: [String: String], status: Int32?, output: String) {
        clouds.runs += 1
        let log = clouds.directory.appendingPathComponent("migrate-live-\(clouds.runs).log")
        let arguments = [
            clouds.binary, "migrate", instance, "--to", clouds.brokers[.destination]!.jid, "--live", "--config", clouds.brokers[.source]!.config,
            "--timeout", "300", "--output", "json",
        ] + (agreement.map { ["--agreement", $0] } ?? [])
        let pid = try ChildProcess.spawn(
            arguments, environment: ProcessInfo.processInfo.environment, output: log,
            errors: clouds.directory.appendingPathComponent("migrate-live-\(clouds.runs).err"), append: false)
        let status = try await ChildProcess.wait(pid, timeout: .seconds(360))
        if status == nil { kill(pid, SIGKILL); _ = try await ChildProcess.wait(pid, timeout: .seconds(10)) }
        let output = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        let reply = (try? JSONDecoder().decode([String: String].self, from: Data(output.utf8))) ?? [:]
        return (reply, status, output)
    }

    /// Journals and broker logs, for failure messages.
    func diagnostics(_ clouds: CrashTestClouds, _ migrationID: String?) -> String {
        var lines: [String] = []
        for role in [MigrationRole.source, .destination] {
            if let migrationID {
                lines += ((try? clouds.journal(role)?.steps(migrationID)) ?? []).map {
                    "  \(role.rawValue) \($0.phase) \($0.step) \($0.outcome) \($0.detail.prefix(200))"
                }
            }
            lines.append(clouds.tail(clouds.brokers[role]!.log, lines: 25))
        }
        return lines.joined(separator: "\n")
    }

    /// Two brokers on their libvirt clouds with an agreement granting `entitle`, and both drivers;
    /// every guest and image is removed afterwards, whether the body passed or not.
    func withLiveClouds(
        entitle: String, _ body: (CrashTestClouds, LibvirtDriver, LibvirtDriver) async throws -> Void
    ) async throws {
        let (clouds, daemons) = try await clouds()
        defer { clouds.killAll() }
        try await clouds.negotiate(entitle: entitle, types: "")
        let source = try await driver(clouds, .source, uri: daemons.source, guest: daemons.guest)
        let destination = try await driver(clouds, .destination, uri: daemons.destination, guest: daemons.guest)
        do { try await body(clouds, source, destination) } catch {
            await removeAll([source, destination])
            throw error
        }
        await removeAll([source, destination])
    }

    func removeAll(_ drivers: [LibvirtDriver]) async {
        for driver in drivers {
            for instance in (try? await driver.listInstances()) ?? [] { try? await driver.terminate(instance: instance.id) }
            for image in (try? await driver.listImages()) ?? [] { try? await driver.deregisterImage(id: image.id) }
        }
    }

    @Test func liveMigrationMovesARunningGuestBetweenTwoBrokersWithoutStoppingIt() async throws {
        try await withLiveClouds(entitle: "query,migrate-in,migrate-live") { clouds, source, destination in
            let guest = try await runningGuest(on: source, name: "live-b1", in: clouds.directory)
            #expect(bootMarkers(guest) == 1)
            let events = source.lifecycleEvents()

            let run = try await migrateLive(clouds, instance: guest.id)
            let context = "\(run.output)\n\(diagnostics(clouds, run.reply["migration"]))"
            #expect(run.status == 0 && run.reply["phase"] == "completed" && run.reply["mode"] == "live", "\(context)")

            // One running copy, at the destination, arrived by migration: not booted again there.
            #expect(try await source.listInstances().isEmpty, "\(context)")
            let arrived = try await destination.describe(instance: guest.id)
            #expect(arrived.state == .running && arrived.rawState == "running:migrated", "\(arrived.rawState)")
            #expect(bootMarkers(arrived) == 0)
            #expect(try await destination.listInstances().count == 1)
            // The guest never stopped at the source: no shutdown or crash, only the migration's stop.
            var seen: [String] = []
            for await event in events where event.instanceID == guest.id {
                seen.append(event.event)
                if event.event == "stopped" || event.event == "undefined" { break }
            }
            #expect(seen.contains("stopped") && !seen.contains("shutdown") && !seen.contains("crashed"), "\(seen)")
            // Both journals completed; the steps are the live ones; metering moved to the destination.
            let id = try #require(run.reply["migration"])
            let steps = try #require(try clouds.journal(.source)?.steps(id)).map(\.step)
            #expect(steps.contains("driver migrate-live") && !steps.contains { $0.hasPrefix("driver shutdown") || $0.hasPrefix("transport") }, "\(steps)")
            #expect(await eventually(timeout: .seconds(20)) {
                ((try? clouds.journal(.destination)?.migrations()) ?? []).first { $0.migrationID == id }?.phase == "completed"
            })
            let providerDatabase = try #require(clouds.readOnlyDatabase(clouds.brokers[.destination]!))
            #expect(try MeteringStore(database: providerDatabase).placements(agreementID: clouds.agreementID, role: .provider).count == 1)
        }
    }

    @Test func liveMigrationIsRefusedAndAuditedWhenTheAgreementDoesNotGrantIt() async throws {
        // An agreement for cold migration only.
        try await withLiveClouds(entitle: "query,migrate-in") { clouds, source, destination in
            let guest = try await runningGuest(on: source, name: "live-b2", in: clouds.directory)
            let run = try await migrateLive(clouds, instance: guest.id, agreement: clouds.agreementID)
            let id = try #require(run.reply["migration"], "\(run.output)")
            let context = "\(run.output)\n\(diagnostics(clouds, id))"
            #expect(run.status != 0 && run.reply["phase"] == "rolledBack", "\(context)")
            // Nothing changed: the guest runs at the source, nothing at the destination, which never heard of it.
            #expect(try await source.describe(instance: guest.id).state == .running)
            #expect(try await destination.listInstances().isEmpty)
            #expect(((try? clouds.journal(.destination)?.migrations()) ?? []).isEmpty, "\(context)")
            // Journaled and audited with the reason.
            let steps = try #require(try clouds.journal(.source)?.steps(id))
            #expect(steps.contains { $0.step == "authorize" && $0.outcome == "failed" && $0.detail.contains("does not grant migrate-live") }, "\(context)")
            let audit = try AuditLog(database: #require(clouds.readOnlyDatabase(clouds.brokers[.source]!))).events()
            #expect(audit.contains { $0.kind == "migration.live" && $0.outcome == .refused && $0.detail.contains("migrate-live") }, "\(audit)")
            // Without --agreement the CLI finds no agreement granting live: not started, audited.
            let unnamed = try await migrateLive(clouds, instance: guest.id)
            #expect(unnamed.reply["phase"] == "not-started" && (unnamed.reply["error"] ?? "").contains("migrate-live"), "\(unnamed.output)")
            #expect(try await source.describe(instance: guest.id).state == .running)
        }
    }

    @Test func liveMigrationIsRefusedByASimCloudDestination() async throws {
        let (clouds, daemons) = try await clouds(simCloudDestination: true)
        defer { clouds.killAll() }
        try await clouds.negotiate(entitle: "query,migrate-in,migrate-live", types: "")
        let source = try await driver(clouds, .source, uri: daemons.source, guest: daemons.guest)
        do {
            let guest = try await runningGuest(on: source, name: "live-b3", in: clouds.directory)
            let run = try await migrateLive(clouds, instance: guest.id)
            let id = try #require(run.reply["migration"], "\(run.output)")
            let context = "\(run.output)\n\(diagnostics(clouds, id))"
            #expect(run.status != 0 && run.reply["phase"] == "rolledBack", "\(context)")
            let steps = try #require(try clouds.journal(.source)?.steps(id))
            #expect(steps.contains { $0.detail.contains("live migration needs libvirt on both sides") && $0.detail.contains("simcloud") }, "\(context)")
            // The guest runs on at the source; SimCloud created nothing and rolled back.
            #expect(try await source.describe(instance: guest.id).state == .running)
            let output = try await clouds.intercloud(["provider", "instances", "--config", clouds.brokers[.destination]!.config, "--output", "json"])
            #expect(try CrashTestClouds.decoder.decode([Instance].self, from: Data(output.utf8)).isEmpty, "\(output)")
            #expect(await eventually(timeout: .seconds(20)) {
                ((try? clouds.journal(.destination)?.migrations()) ?? []).first { $0.migrationID == id }?.phase == "rolledBack"
            })
        } catch {
            await removeAll([source])
            throw error
        }
        await removeAll([source])
    }

    /// `kill -9` of one broker at a journal write of a live migration, then a restart: the
    /// migration must end the same on both sides, with one running copy where that end says.
    ///
    /// - source, just before the move (journaled, libvirt not asked yet): restarted, it finds the
    ///   guest running here and absent there, rolls back; the destination, which kept its prepared
    ///   disk while it could not know, removes it.
    /// - source, right after the move (the guest left; `liveMigrated` journaled, not sent):
    ///   restarted, it asks again and completes.
    /// - destination, right after preparing (reply journaled, not sent): the source's proposal
    ///   times out and it rolls back; the restarted destination kept the prepared disk until the
    ///   source's abort (or its answer to the destination's `status`) says to remove it.
    @Test(arguments: [
        LiveKillPoint(role: .source, point: "source:migratingLive:driver migrate-live", ends: "rolledBack"),
        LiveKillPoint(role: .source, point: "source:announcing:send liveMigrated", ends: "completed"),
        LiveKillPoint(role: .destination, point: "destination:reserved:reply reserved", ends: "rolledBack"),
    ])
    func killedDuringALiveMigrationAndRestartedEndsConsistently(_ killPoint: LiveKillPoint) async throws {
        try await withLiveClouds(entitle: "query,migrate-in,migrate-live") { clouds, source, destination in
            let instancesAtDestination = clouds.brokers[.destination]!.dataDirectory.appendingPathComponent("instances")
            func preparedDisks() throws -> [String] {
                try FileManager.default.contentsOfDirectory(atPath: instancesAtDestination.path).filter { $0.hasSuffix(".qcow2") }
            }
            let guest = try await runningGuest(on: source, name: "live-k\(clouds.runs)", in: clouds.directory)
            try await clouds.stopBroker(killPoint.role)
            try clouds.spawnBroker(killPoint.role, killAfter: killPoint.point)
            try await clouds.waitUntilPeered()

            async let migration = migrateLive(clouds, instance: guest.id)
            let victim = clouds.brokers[killPoint.role]!.pid
            let status = try await ChildProcess.wait(victim, timeout: .seconds(120))
            #expect(status.flatMap(ChildProcess.signal) == SIGKILL, "\(killPoint.role.rawValue) ended with \(String(describing: status))")
            if status == nil { kill(victim, SIGKILL); _ = try await ChildProcess.wait(victim, timeout: .seconds(10)) }
            clouds.brokers[killPoint.role]!.pid = 0
            // Whatever the kill point, the destination had prepared its disk, and the guest runs on
            // exactly one hypervisor while the broker is down (libvirt does not need it).
            let prepared = try preparedDisks()
            #expect(prepared.count == 1, "\(prepared)")
            let runningNow = try await source.listInstances().count + destination.listInstances().count
            #expect(runningNow == 1, "\(runningNow) copies while \(killPoint.role.rawValue) is down")
            try clouds.spawnBroker(killPoint.role, killAfter: nil)

            let run = try await migration
            let id = try #require(run.reply["migration"], "\(run.output)")
            let context = "kill after \(killPoint.point): \(run.output)\n\(diagnostics(clouds, id))"
            #expect(run.reply["phase"] == killPoint.ends, "\(context)")
            #expect(await eventually(timeout: .seconds(150)) {
                ((try? clouds.journal(.destination)?.migrations()) ?? []).first { $0.migrationID == id }?.phase == killPoint.ends
            }, "\(diagnostics(clouds, id))")
            // Consistent: one running copy, where the outcome says; no prepared disk left unused.
            let there = try await destination.listInstances()
            if killPoint.ends == "completed" {
                #expect(try await source.listInstances().isEmpty, "\(context)")
                #expect(there.count == 1 && there.first?.id == guest.id && there.first?.state == .running, "\(context)")
                #expect(try preparedDisks().count == 1, "the arrived guest's disk")
            } else {
                #expect(try await source.describe(instance: guest.id).state == .running, "\(context)")
                #expect(there.isEmpty, "\(context)")
                #expect(try preparedDisks().isEmpty, "\(context)")
            }
            // The move was issued once, never again after a restart.
            let steps = try #require(try clouds.journal(.source)?.steps(id)).filter { $0.outcome == "issued" }.map(\.step)
            #expect(steps.filter { $0 == "driver migrate-live" }.count <= 1, "\(steps)")
            #expect(((try? clouds.journal(.source)?.unfinished()) ?? []).isEmpty && ((try? clouds.journal(.destination)?.unfinished()) ?? []).isEmpty)
        }
    }

    /// `kill -9` of the source broker while libvirt is moving the guest (the destination daemon
    /// already shows the incoming domain): libvirt goes on, or aborts, without the broker. On
    /// restart the source looks at both hypervisors and, if the move is still going, waits for it;
    /// whichever way libvirt ended, both journals agree and exactly one copy runs, where they say.
    @Test func sourceKilledWhileLibvirtMovesTheGuestEndsConsistently() async throws {
        try await withLiveClouds(entitle: "query,migrate-in,migrate-live") { clouds, source, destination in
            let guest = try await runningGuest(on: source, name: "live-m1", in: clouds.directory)
            async let migration = migrateLive(clouds, instance: guest.id)
            // The incoming domain appears at the destination while the move runs.
            let arriving = await eventually(timeout: .seconds(90)) {
                ((try? await destination.listInstances()) ?? []).contains { $0.id == guest.id }
            }
            #expect(arriving)
            let victim = clouds.brokers[.source]!.pid
            kill(victim, SIGKILL)
            _ = try await ChildProcess.wait(victim, timeout: .seconds(10))
            clouds.brokers[.source]!.pid = 0
            let stateWhenKilled = (try? await destination.describe(instance: guest.id).rawState) ?? "gone"
            try clouds.spawnBroker(.source, killAfter: nil)

            let run = try await migration
            let id = try #require(run.reply["migration"], "\(run.output)")
            let context = "destination was \(stateWhenKilled) at the kill: \(run.output)\n\(diagnostics(clouds, id))"
            let ended = try #require(run.reply["phase"], "\(context)")
            #expect(ended == "completed" || ended == "rolledBack", "\(context)")
            #expect(await eventually(timeout: .seconds(90)) {
                ((try? clouds.journal(.destination)?.migrations()) ?? []).first { $0.migrationID == id }?.phase == ended
            }, "\(context)")
            let here = try await source.listInstances().filter { $0.state == .running }
            let there = try await destination.listInstances().filter { $0.state == .running }
            #expect(here.count + there.count == 1, "\(context)")
            #expect((ended == "completed" ? there : here).first?.id == guest.id, "\(context)")
            #expect(((try? clouds.journal(.source)?.unfinished()) ?? []).isEmpty && ((try? clouds.journal(.destination)?.unfinished()) ?? []).isEmpty)
            // The restarted source did not move the guest again: it looked where the guest was.
            let steps = try #require(try clouds.journal(.source)?.steps(id)).filter { $0.outcome == "issued" }.map(\.step)
            #expect(steps.filter { $0 == "driver migrate-live" }.count == 1 && steps.contains("driver probe-guest"), "\(steps)")
            print("source killed during the move (destination \(stateWhenKilled)): ended \(ended)")
        }
    }
}
