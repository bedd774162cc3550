import Crypto
import Foundation
import Policy
import Providers
import TestSupport
import Testing
@testable import Migration

/// Two private libvirt session daemons (`scripts/libvirt-session.sh`), standing for two clouds'
/// hypervisors: each has its own HOME, XDG_RUNTIME_DIR, socket and `host_uuid` (libvirt refuses a
/// migration between hosts with the same UUID), both run QEMU as uid 65534. Started once per test
/// process and stopped when it exits (the script's watcher).
actor LibvirtSessionPair {
    static let shared = LibvirtSessionPair()
    static let sessionUID: UInt32 = 65534
    static let bootMarker = "INTERCLOUD-GUEST-READY"

    struct Daemon: Sendable {
        var uri: String
        var directory: URL
    }

    struct Sessions: Sendable {
        var first: Daemon
        var second: Daemon
        /// The tiny guest: `vmlinuz`, `initrd.gz` (prints the boot marker), `disk.qcow2`.
        var guest: URL
    }

    private var started: Sessions?

    func sessions() async throws -> Sessions {
        if let started { return started }
        let root = try TestProsody.repositoryRoot()
        let guest = URL(fileURLWithPath: ProcessInfo.processInfo.environment["INTERCLOUD_GUEST_DIR"] ?? "/tmp/intercloud-test-guest")
        var daemons: [Daemon] = []
        for name in ["a", "b"] {
            let directory = URL(fileURLWithPath: "/tmp/intercloud-xdriver-\(getpid())-\(name)")
            let config = directory.appendingPathComponent("home/.config/libvirt")
            try FileManager.default.createDirectory(at: config, withIntermediateDirectories: true)
            try "host_uuid = \"\(UUID().uuidString.lowercased())\"\n"
                .write(to: config.appendingPathComponent("libvirtd.conf"), atomically: true, encoding: .utf8)
            daemons.append(Daemon(
                uri: "qemu+unix:///session?socket=\(directory.path)/run/libvirt/libvirt-sock", directory: directory))
        }
        let pid = getpid()
        let toStart = daemons
        try await FileDigest.onBlockingQueue {
            try runShell("bash \(shellQuoted(root.path))/scripts/guest-build.sh \(shellQuoted(guest.path))")
            for daemon in toStart {
                try runShell("bash \(shellQuoted(root.path))/scripts/libvirt-session.sh start \(shellQuoted(daemon.directory.path)) \(pid)")
            }
        }
        let sessions = Sessions(first: daemons[0], second: daemons[1], guest: guest)
        started = sessions
        return sessions
    }
}

/// One moto server (EC2 + S3 + IAM, `scripts/moto.sh`) for the test process, stopped when it exits.
actor MotoEndpoint {
    static let shared = MotoEndpoint()
    private var port: Int?

    /// Resets moto and returns its endpoint with a fresh IAM user's key (signatures are checked).
    func fresh() async throws -> (endpoint: URL, credentials: SigV4Signer.Credentials) {
        let root = try TestProsody.repositoryRoot()
        let script = shellQuoted(root.appendingPathComponent("scripts/moto.sh").path)
        let port: Int
        if let known = self.port {
            port = known
        } else {
            port = Int.random(in: 41000...48000)
            let motoServer = try RequiredProgram.path("moto_server", package: "PyPI's moto[server]")
            let pid = getpid()
            try await FileDigest.onBlockingQueue {
                try runShell("MOTO_SERVER=\(shellQuoted(motoServer)) setsid bash \(script) run \(port) \(pid) >/dev/null 2>&1 &")
                for _ in 0..<200 where !answersOK("http://127.0.0.1:\(port)/moto-api/") {
                    Thread.sleep(forTimeInterval: 0.1)
                }
            }
            self.port = port
        }
        let keys = FileManager.default.temporaryDirectory.appendingPathComponent("intercloud-moto-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: keys) }
        try await FileDigest.onBlockingQueue { try runShell("bash \(script) user \(port) > \(shellQuoted(keys.path))") }
        let parts = try String(contentsOf: keys, encoding: .utf8).split(whereSeparator: \.isWhitespace).map(String.init)
        try #require(parts.count == 2, "moto.sh user printed \(parts)")
        return (URL(string: "http://127.0.0.1:\(port)")!, .init(accessKeyID: parts[0], secretAccessKey: parts[1]))
    }

    /// The EC2 driver against moto. `imageImportExport` says whether the endpoint is taken to have
    /// ImportImage (AWS has it; moto answers HTTP 500).
    func driver(imageImportExport: Bool) async throws -> EC2Driver {
        let session = try await fresh()
        return EC2Driver(configuration: .init(
            endpoint: session.endpoint, region: "us-east-1", credentials: session.credentials,
            retry: RetryPolicy(maxAttempts: 2, baseDelay: .milliseconds(20)), imageImportExport: imageImportExport,
            partSize: 5 << 20))
    }
}

/// One cloud's side of a migration: its driver, journal (real SQLite), transport inbox and runner.
struct CloudSide {
    let name: String
    let driver: any CloudDriver
    let journal: MigrationJournal
    let runner: MigrationRunner
    let root: URL
}

/// Builds clouds of any driver in one process and connects their runners through `InProcessNetwork`.
struct CrossDriverFixture {
    static let agreementID = "agr-x"
    let root: URL
    let network = InProcessNetwork()

    init() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("intercloud-xdriver-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        // QEMU runs as the session user and must reach the instance folders below.
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: root.path)
    }

    func removeFiles() { try? FileManager.default.removeItem(at: root) }

    /// A libvirt cloud on `daemon`, booting the tiny guest directly and waiting for its boot marker.
    func libvirt(_ name: String, daemon: LibvirtSessionPair.Daemon, guest: URL) async throws -> LibvirtDriver {
        let directory = root.appendingPathComponent(name)
        let images = directory.appendingPathComponent("images")
        let instances = directory.appendingPathComponent("instances")
        let uid = LibvirtSessionPair.sessionUID
        for folder in [directory, images, instances] {
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            try FileManager.default.setAttributes(
                [.posixPermissions: 0o755, .ownerAccountID: NSNumber(value: uid), .groupOwnerAccountID: NSNumber(value: uid)],
                ofItemAtPath: folder.path)
        }
        return try await LibvirtDriver.connect(.init(
            uri: daemon.uri, imageDirectory: images, instanceDirectory: instances, domainType: "qemu",
            directBoot: .init(
                kernel: guest.appendingPathComponent("vmlinuz"), initrd: guest.appendingPathComponent("initrd.gz"),
                commandLine: "console=ttyS0 quiet"),
            fileOwner: .init(uid: uid, gid: uid), bootMarker: LibvirtSessionPair.bootMarker))
    }

    func simCloud(_ name: String) throws -> SimCloud {
        var configuration = SimCloud.Configuration(
            dataDirectory: root.appendingPathComponent(name).appendingPathComponent("sim"), delays: .instant)
        configuration.durableWrites = false
        return try SimCloud(configuration: configuration)
    }

    /// A runner for `driver`, reachable as `name` on the in-process network.
    /// `authorizeLive`: the live migration check (nil: live refused, as by a broker without it);
    /// `observer`: the runner's journal observer (the crash tests stop a runner with it).
    func side(
        _ name: String, driver: any CloudDriver, exportFormats: [ImageFormat]? = nil, importFormats: [ImageFormat]? = nil,
        authorizeLive: LiveMigrationAuthorizer? = nil, livePeers: LivePeerPolicy = .init(),
        observer: MigrationRunner.JournalObserver? = nil
    ) async throws -> CloudSide {
        let directory = root.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let journal = try MigrationJournal.open(path: directory.appendingPathComponent("broker.sqlite").path)
        let transport = try LocalFileTransport(inbox: directory.appendingPathComponent("inbox"))
        let configuration = MigrationRunner.Configuration(
            workDirectory: directory.appendingPathComponent("work"), region: "eu-1",
            migration: MigrationConfiguration(gracefulShutdownTimeout: 30, maxAttempts: 3, retryDelay: 0.5),
            exportFormats: exportFormats, importFormats: importFormats, bootTimeout: .seconds(150), maxRetriesPerRun: 3,
            livePeers: livePeers)
        let runner = MigrationRunner(
            driver: driver, journal: journal, transport: transport, link: InProcessPeerLink(local: name, network: network),
            authorize: { request, _, agreementID, _ in
                guard agreementID == CrossDriverFixture.agreementID else { return .denied("agreement", "no agreement \(agreementID)") }
                switch request {
                case .migrateOut, .migrateIn: return .allowed
                default: return .denied("entitlement", "not a migration")
                }
            },
            authorizeLive: authorizeLive, configuration: configuration, observer: observer)
        await network.connect(name, runner)
        return CloudSide(name: name, driver: driver, journal: journal, runner: runner, root: directory)
    }

    /// A raw disk with a recognisable, non-zero content (so the checksums below mean something).
    func patternDisk(megabytes: Int = 16) throws -> (url: URL, sha256: String) {
        var bytes = [UInt8](repeating: 0, count: megabytes << 20)
        var state: UInt32 = 0x1234_5678
        for index in stride(from: 0, to: bytes.count, by: 512) {
            state = state &* 1_664_525 &+ 1_013_904_223
            withUnsafeBytes(of: state.bigEndian) { for (offset, byte) in $0.enumerated() { bytes[index + offset] = byte } }
        }
        let data = Data(bytes)
        let url = root.appendingPathComponent("pattern.raw")
        try data.write(to: url)
        return (url, SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined())
    }

    /// A guest running on `driver` (boot marker seen) from a fresh image of the pattern disk.
    func runningGuest(on driver: LibvirtDriver, name: String, sizeID: String = "lv.tiny") async throws -> (Instance, Image) {
        let disk = try patternDisk()
        let image = try await driver.importImage(from: disk.url, name: "pattern", format: .raw, expectedSHA256: disk.sha256, progress: nil)
        let created = try await driver.create(CreateInstanceRequest(name: name, sizeID: sizeID, imageID: image.id), progress: nil)
        // QEMU has started, the guest has not printed its marker yet (it takes seconds under TCG).
        #expect(created.state == .pending && created.rawState.hasSuffix("+booting"), "\(created.rawState)")
        let running = try await driver.waitFor(instance: created.id, state: .running, timeout: .seconds(150), pollInterval: .milliseconds(200))
        #expect(bootMarkers(running) == 1)
        return (running, image)
    }

    /// How many boot markers the guest's console log holds.
    func bootMarkers(_ instance: Instance) -> Int {
        guard let log = instance.extra["consoleLog"], let text = try? String(contentsOfFile: log, encoding: .utf8) else { return 0 }
        return text.components(separatedBy: LibvirtSessionPair.bootMarker).count - 1
    }

    /// Removes every instance and image a libvirt side made (the daemons outlive the test).
    func clean(_ driver: LibvirtDriver) async {
        for instance in (try? await driver.listInstances()) ?? [] { try? await driver.terminate(instance: instance.id) }
        for image in (try? await driver.listImages()) ?? [] { try? await driver.deregisterImage(id: image.id) }
    }

    /// The content SHA-256 of the image behind a libvirt or SimCloud instance.
    func imageSHA256(_ driver: any CloudDriver, of instance: Instance) async throws -> String? {
        let imageID = try #require(instance.imageID)
        return try await driver.listImages().first { $0.id == imageID }?.sha256
    }

    func issuedSteps(_ side: CloudSide, _ migrationID: String) throws -> [String] {
        try side.journal.steps(migrationID).filter { $0.outcome == "issued" }.map(\.step)
    }

    /// Two libvirt clouds (`a`, `b`) on the two session daemons; every guest and image they made
    /// is removed afterwards, whether the body passed or not (the daemons outlive the test).
    static func withLibvirtClouds(
        _ a: String, _ b: String, _ body: (CrossDriverFixture, LibvirtDriver, LibvirtDriver) async throws -> Void
    ) async throws {
        let sessions = try await LibvirtSessionPair.shared.sessions()
        let fixture = try CrossDriverFixture()
        defer { fixture.removeFiles() }
        let first = try await fixture.libvirt(a, daemon: sessions.first, guest: sessions.guest)
        let second = try await fixture.libvirt(b, daemon: sessions.second, guest: sessions.guest)
        do { try await body(fixture, first, second) } catch {
            await fixture.clean(first)
            await fixture.clean(second)
            throw error
        }
        await fixture.clean(first)
        await fixture.clean(second)
    }
}

/// Migration across driver types with the runners of `MigrationRunnerTests` (in-process peer link,
/// local file transport), but real clouds: QEMU guests under two libvirt session daemons, SimCloud,
/// and EC2 against moto. QEMU runs under TCG on two cores, so the suite is serialized.
@Suite("Migration across driver types", .serialized, .timeLimit(.minutes(10)))
struct CrossDriverMigrationTests {
    @Test("libvirt → SimCloud → libvirt: qcow2 converted to raw on the way out, the guest boots again at the end from the same content")
    func libvirtToSimCloudAndBack() async throws {
        try await CrossDriverFixture.withLibvirtClouds("lv-a", "lv-b") { fixture, first, second in
            let sim = try fixture.simCloud("sim")
            let clock = ContinuousClock()
            var started = clock.now
            let (guest, image) = try await fixture.runningGuest(on: first, name: "web-1")
            let content = try #require(image.sha256)
            print("libvirt guest booted in \(clock.now - started)")

            // Leg 1: libvirt exports qcow2 only, SimCloud takes raw only: the runner converts.
            let libvirtA = try await fixture.side("cloud-a.test", driver: first, exportFormats: [.qcow2])
            let simSide = try await fixture.side("cloud-sim.test", driver: sim, importFormats: [.raw])
            started = clock.now
            let out = try await libvirtA.runner.migrate(
                instanceID: guest.id, to: simSide.name, agreementID: CrossDriverFixture.agreementID, migrationID: "lv-to-sim")
            print("libvirt → SimCloud took \(clock.now - started)")
            #expect(out.outcome == .completed, "\(out.outcome)")
            let sourceSteps = try fixture.issuedSteps(libvirtA, "lv-to-sim")
            #expect(sourceSteps.contains("driver convert"), "\(sourceSteps)")
            let sourceSnapshot = try #require(try libvirtA.journal.sourceSnapshot("lv-to-sim"))
            #expect(sourceSnapshot.exportFormat == .qcow2 && sourceSnapshot.transferFormat == .raw)
            #expect(sourceSnapshot.exported?.format == .qcow2 && sourceSnapshot.transferFile?.format == .raw)
            // The libvirt domain and its snapshot image are gone; SimCloud runs the one copy, same content.
            #expect(try await first.listInstances().isEmpty)
            #expect(try await first.listImages().map(\.id) == [image.id])
            let onSim = try #require(try await sim.listInstances().first { $0.state == .running })
            #expect(onSim.name == "web-1")
            #expect(try await fixture.imageSHA256(sim, of: onSim) == content)
            let simDisk = await sim.configuration.dataDirectory.appendingPathComponent(try #require(onSim.extra["disk"]))
            #expect(try await FileDigest.sha256(of: simDisk).sha256 == content)

            // Leg 2: back to libvirt, on the other daemon; the destination confirms "running" only
            // once the guest has printed its boot marker.
            let libvirtB = try await fixture.side("cloud-b.test", driver: second)
            started = clock.now
            let back = try await simSide.runner.migrate(
                instanceID: onSim.id, to: libvirtB.name, agreementID: CrossDriverFixture.agreementID, migrationID: "sim-to-lv")
            print("SimCloud → libvirt (boot marker included) took \(clock.now - started)")
            #expect(back.outcome == .completed, "\(back.outcome)")
            #expect(try await sim.listInstances().filter { $0.state != .terminated }.isEmpty)
            let arrived = try #require(try await second.listInstances().first)
            #expect(arrived.name == "web-1" && arrived.state == .running, "\(arrived.rawState)")
            #expect(fixture.bootMarkers(arrived) == 1)
            #expect(arrived.sizeID == "lv.small")  // sim.nano (1 vCPU, 512 MiB, 1 GiB) maps to lv.small
            #expect(try await fixture.imageSHA256(second, of: arrived) == content)
            let destination = try #require(try libvirtB.journal.destinationSnapshot("sim-to-lv"))
            #expect(destination.phase == .completed && destination.instance?.instanceID == arrived.id)
            #expect(try fixture.issuedSteps(libvirtB, "sim-to-lv").contains("driver start"))
        }
    }

    @Test("libvirt → libvirt between two session daemons: qcow2 end to end, the destination guest boots")
    func libvirtToLibvirt() async throws {
        try await CrossDriverFixture.withLibvirtClouds("lv-a", "lv-b") { fixture, first, second in
            let (guest, image) = try await fixture.runningGuest(on: first, name: "db-1")
            let source = try await fixture.side("cloud-a.test", driver: first, exportFormats: [.qcow2])
            let destination = try await fixture.side("cloud-b.test", driver: second, importFormats: [.qcow2, .raw])
            let clock = ContinuousClock()
            let started = clock.now
            let result = try await source.runner.migrate(
                instanceID: guest.id, to: destination.name, agreementID: CrossDriverFixture.agreementID, migrationID: "lv-to-lv")
            print("libvirt → libvirt took \(clock.now - started)")
            #expect(result.outcome == .completed, "\(result.outcome)")
            let snapshot = try #require(try source.journal.sourceSnapshot("lv-to-lv"))
            #expect(snapshot.exportFormat == .qcow2 && snapshot.transferFormat == .qcow2)
            #expect(!(try fixture.issuedSteps(source, "lv-to-lv")).contains("driver convert"))
            #expect(try await first.listInstances().isEmpty)
            let arrived = try #require(try await second.listInstances().first)
            #expect(arrived.name == "db-1" && arrived.state == .running && arrived.sizeID == "lv.tiny", "\(arrived)")
            #expect(fixture.bootMarkers(arrived) == 1)
            #expect(try await fixture.imageSHA256(second, of: arrived) == image.sha256)
            // The destination's own daemon runs it: the source daemon does not know the domain.
            let daemonA = try await LibvirtDriver.connect(.init(uri: try await LibvirtSessionPair.shared.sessions().first.uri))
            #expect(try await daemonA.listInstances().allSatisfy { $0.id != arrived.id })
        }
    }

    @Test("live migration between the two session daemons (virDomainMigrateToURI3, peer to peer, disk copied): the guest never stops")
    func liveLibvirtToLibvirt() async throws {
        try await CrossDriverFixture.withLibvirtClouds("lv-a", "lv-b") { fixture, first, second in
            let (guest, image) = try await fixture.runningGuest(on: first, name: "live-1")
            let events = first.lifecycleEvents()
            let bytes = try await first.liveMigrationDiskBytes(instance: guest.id)
            #expect(bytes == image.sizeBytes)
            let target = try await second.prepareLiveMigration(name: guest.name, virtualSizeBytes: bytes)
            let clock = ContinuousClock()
            let started = clock.now
            try await first.migrateLive(instance: guest.id, to: target)
            print("live libvirt → libvirt took \(clock.now - started)")

            // Gone here, running there under the same UUID, arrived running ("migrated"), not booted again.
            #expect(try await first.listInstances().isEmpty)
            let arrived = try await second.describe(instance: guest.id)
            #expect(arrived.state == .running && arrived.rawState == "running:migrated", "\(arrived.rawState)")
            #expect(arrived.extra["disk"] == target.disk.path)
            #expect(fixture.bootMarkers(arrived) == 0)
            // The disk content came along: a snapshot of the destination's disk has the image's content.
            let copy = try await second.snapshot(instance: guest.id, name: "arrived", progress: nil)
            #expect(copy.sha256 == image.sha256)
            // The source never saw the guest stop or crash: only a migration-flavoured stop.
            var seen: [String] = []
            for await event in events where event.instanceID == guest.id {
                seen.append(event.event)
                if event.event == "stopped" || event.event == "undefined" { break }
            }
            #expect(seen.contains("stopped") && !seen.contains("crashed") && !seen.contains("shutdown"), "\(seen)")
        }
    }

    @Test("EC2 (moto) as a source is refused before anything is journaled, sent or stopped: the driver exports no image")
    func ec2SourceRefusedUpFront() async throws {
        let fixture = try CrossDriverFixture()
        defer { fixture.removeFiles() }
        let ec2 = try await MotoEndpoint.shared.driver(imageImportExport: false)
        let ami = try await ec2.registerImage(name: "web-ami", options: ["description": "web"])
        let created = try await ec2.create(CreateInstanceRequest(name: "web-1", sizeID: "t2.micro", imageID: ami.id), progress: nil)
        _ = try await ec2.waitFor(instance: created.id, state: .running, timeout: .seconds(20))
        let imagesBefore = try await ec2.listImages().map(\.id).sorted()
        let sim = try fixture.simCloud("sim")
        let source = try await fixture.side("cloud-ec2.test", driver: ec2)
        let destination = try await fixture.side("cloud-sim.test", driver: sim)

        let error = await #expect(throws: MigrationRunner.RunnerError.self) {
            _ = try await source.runner.migrate(
                instanceID: created.id, to: destination.name, agreementID: CrossDriverFixture.agreementID, migrationID: "ec2-out")
        }
        let message = error.map { "\($0)" } ?? ""
        #expect(message.contains("the ec2 driver cannot export disk images") && message.contains("export-image"), "\(message)")
        // Nothing happened anywhere: no journal rows, the EC2 instance runs, no image made, nothing at SimCloud.
        #expect(try source.journal.migrations().isEmpty && destination.journal.migrations().isEmpty)
        #expect(try await ec2.describe(instance: created.id).state == .running)
        #expect(try await ec2.listImages().map(\.id).sorted() == imagesBefore)
        #expect(try await sim.listInstances().isEmpty)
        try await ec2.terminate(instance: created.id)
    }

    @Test("EC2 (moto) as a destination: refused at the proposal when ImportImage is off; with it on, moto's missing ImportImage rolls back")
    func ec2DestinationRefused() async throws {
        let fixture = try CrossDriverFixture()
        defer { fixture.removeFiles() }
        let sim = try fixture.simCloud("sim")
        let instance = try await sim.create(CreateInstanceRequest(name: "web-1", sizeID: "sim.nano", imageID: "sim-img-seed"), progress: nil)
        _ = try await sim.waitFor(instance: instance.id, state: .running, timeout: .seconds(10))
        let source = try await fixture.side("cloud-sim.test", driver: sim)

        // As configured for moto (no ImportImage): the destination refuses at the proposal, before
        // the source stops anything.
        let ec2 = try await MotoEndpoint.shared.driver(imageImportExport: false)
        let destination = try await fixture.side("cloud-ec2.test", driver: ec2)
        let refused = try await source.runner.migrate(
            instanceID: instance.id, to: destination.name, agreementID: CrossDriverFixture.agreementID, migrationID: "to-ec2")
        guard case .rolledBack(let reason) = refused.outcome else { Issue.record("expected a rollback, got \(refused.outcome)"); return }
        #expect(reason.contains("destination refused") && reason.contains("the ec2 driver here cannot import disk images"), "\(reason)")
        let steps = try fixture.issuedSteps(source, "to-ec2")
        #expect(!steps.contains("driver shutdown"), "\(steps)")
        #expect(try await sim.describe(instance: instance.id).state == .running)
        #expect(try await ec2.listInstances().isEmpty)
        #expect(try await ec2.listImages().isEmpty)
        #expect(try destination.journal.destinationSnapshot("to-ec2")?.phase == .rolledBack)

        // Told that the endpoint has ImportImage (as AWS does), the disk goes as far as moto: its
        // ImportImage answers HTTP 500, the destination rolls back and the source runs again.
        let claiming = try await MotoEndpoint.shared.driver(imageImportExport: true)
        let trusting = try await fixture.side("cloud-ec2b.test", driver: claiming)
        let failed = try await source.runner.migrate(
            instanceID: instance.id, to: trusting.name, agreementID: CrossDriverFixture.agreementID, migrationID: "to-ec2-import")
        guard case .rolledBack(let importReason) = failed.outcome else { Issue.record("expected a rollback, got \(failed.outcome)"); return }
        #expect(importReason.contains("ImportImage"), "\(importReason)")
        #expect(try fixture.issuedSteps(source, "to-ec2-import").contains("transport send"))
        #expect(try await sim.describe(instance: instance.id).state == .running)
        #expect(try await claiming.listInstances().isEmpty)
        #expect(try await claiming.listImages().isEmpty)
    }
}
