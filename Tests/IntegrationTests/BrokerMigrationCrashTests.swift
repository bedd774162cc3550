import Broker
import Crypto
import Discovery
import Foundation
import GRDB
import Migration
import Negotiation
import Providers
import Storage
import TestSupport
import Testing
import Trust

/// `kill -9` of a broker in the middle of a migration (issue 7): two real `intercloud serve`
/// processes (consumer/source cloud1, provider/destination cloud2, each with its own SimCloud)
/// over the shared test Prosody. One broker is started with `INTERCLOUD_FAULT_KILL_AFTER_STEP`, so
/// it SIGKILLs itself right after the named journal write; it is restarted without it, and the
/// migration must end the same way on both sides (completed or rolled back), with exactly one
/// running copy across the two clouds whose disk is the original one, byte for byte.
///
/// The kill points are not listed by hand: an uninterrupted migration runs first and every
/// journal write of the role under test (`role:phase:step`, what the fault hook matches) becomes
/// a kill point, so a step that never happens for a role is never in its list.
///
/// Runtime: every kill point costs a broker restart and a migration, about 3 s either side: a
/// destination that dies inside the handler of a source's request fails that request as soon as
/// its XMPP session ends (`BrokerMigrationPeerGoneTests`), not at the request timeout
/// (`[migration] request_timeout_seconds`, 8 s here, the bound when presence does not tell). Normal
/// runs take a representative subset — the first kill point of each phase of the role, so every
/// phase on both sides is still crossed by a kill (12 source and 11 destination points, under
/// 1.5 minutes in all) — and `INTERCLOUD_CRASH_MATRIX=full` runs every kill point (13 and 12).
@Suite(.serialized, .timeLimit(.minutes(20))) struct BrokerMigrationCrashTests {
    let server: TestProsody

    init() throws { server = try TestProsody.shared() }

    static var fullMatrix: Bool { ProcessInfo.processInfo.environment["INTERCLOUD_CRASH_MATRIX"] == "full" }

    @Test(arguments: [MigrationRole.source, .destination])
    func killedAfterAJournalStepAndRestartedEndsTheSameOnBothSidesWithOneIntactCopy(_ role: MigrationRole) async throws {
        let clouds = try CrashTestClouds(server: server)
        defer { clouds.killAll() }
        try await clouds.start()
        try await clouds.negotiate()

        // An uninterrupted migration: the reference, and where the kill points come from.
        let reference = try await clouds.migrateOnce(killing: nil)
        #expect(reference.sourcePhase == "completed", "\(reference.diagnostics)")
        #expect(reference.destinationPhase == "completed", "\(reference.diagnostics)")
        let all = try clouds.killPoints(of: reference.migrationID, role: role)
        try #require(!all.isEmpty, "no journal writes of the \(role.rawValue) in \(reference.migrationID)")
        let points = Self.fullMatrix ? all : Self.firstOfEachPhase(all)
        #expect(Set(points.map(\.phase)) == Set(all.map(\.phase)))

        for point in points {
            let run = try await clouds.migrateOnce(killing: (role, point.name))
            let context = "kill after \(point.name): \(run.diagnostics)"
            #expect(run.killedBySIGKILL, "\(context)")
            #expect(run.sourcePhase == "completed" || run.sourcePhase == "rolledBack", "\(context)")
            if let destination = run.destinationPhase {
                #expect(destination == run.sourcePhase, "\(context)")
            } else {
                // The destination never heard of it: only a source that gave up before proposing.
                #expect(run.sourcePhase == "rolledBack", "\(context)")
            }
            #expect(run.running.count == 1, "\(context)")
            if let copy = run.running.first {
                #expect(copy.cloud == (run.sourcePhase == "completed" ? "cloud2" : "cloud1"), "\(context)")
                #expect(copy.diskSHA256 == run.originalDiskSHA256, "\(context)")
                if copy.cloud == "cloud1" { #expect(copy.instanceID == run.originalInstanceID, "\(context)") }
            }
            #expect(run.unfinishedMigrations.isEmpty, "\(context)")
        }
    }

    /// The first kill point of each phase, in journal order.
    static func firstOfEachPhase(_ points: [KillPoint]) -> [KillPoint] {
        var seen = Set<String>()
        return points.filter { seen.insert($0.phase).inserted }
    }
}

/// Why the crash harness itself could not go on (as opposed to a failed expectation).
struct CrashTestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// One journal write the fault hook can stop at.
struct KillPoint: Sendable, Hashable {
    var role: MigrationRole
    var phase: String
    var step: String
    var name: String { "\(role.rawValue):\(phase):\(step)" }
}

/// What one migration (possibly interrupted) ended with.
struct CrashRun: Sendable {
    struct Copy: Sendable {
        var cloud: String
        var instanceID: String
        var diskSHA256: String
    }

    var migrationID: String
    var killedBySIGKILL: Bool
    var sourcePhase: String?
    var destinationPhase: String?
    var running: [Copy]
    var originalInstanceID: String
    var originalDiskSHA256: String
    var unfinishedMigrations: [String]
    var diagnostics: String
}

/// Two brokers as child processes with their configuration, trust, policy and SimCloud files in
/// one temporary folder.
final class CrashTestClouds: @unchecked Sendable {
    // @unchecked: used by one test at a time (serialized suite, sequential awaits); the mutable
    // state is the two brokers' process ids, only touched from that test's task.
    struct Broker {
        var cloud: String
        var jid: String
        var config: String
        var database: String
        var dataDirectory: URL
        var log: URL
        var pid: pid_t = 0
        var startedAt = Date.distantPast
    }

    let server: TestProsody
    let directory: URL
    let binary: String
    var brokers: [MigrationRole: Broker] = [:]
    var agreementID = ""
    var runs = 0
    private var readers: [String: DatabasePool] = [:]

    /// `policy(role, peerJID)`: the policy file of that role's broker (default: the SimCloud crash
    /// test's); `providerSection(role, dataDirectory, peerJID)`: its `[provider]` and `[migration]`
    /// sections (default: SimCloud in `dataDirectory`).
    init(
        server: TestProsody, policy: ((MigrationRole, String) -> String)? = nil,
        providerSection: ((MigrationRole, URL, String) -> String)? = nil
    ) throws {
        self.server = server
        binary = try Self.intercloudBinary()
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("intercloud-crash-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)

        let root = try CertificateAuthority.makeRoot(commonName: "crash test root", notBefore: Date() - 86_400)
        let rootPath = directory.appendingPathComponent("root.pem").path
        try PEMFiles.writeCertificates([root.certificate], toPath: rootPath)
        let room = "exchange-\(UUID().uuidString.prefix(8).lowercased())@conference.cloud1.test"
        let consumer = try server.freshAccount(prefix: "crash-cloud1", host: "cloud1.test")
        let provider = try server.freshAccount(prefix: "crash-cloud2", host: "cloud2.test")
        brokers[.source] = try writeBroker(
            cloud: "cloud1", account: consumer, root: root, rootPath: rootPath, room: room,
            policy: policy?(.source, provider.jid) ?? Self.consumerPolicy(provider: provider.jid), providerSection: { data in
                providerSection?(.source, data, provider.jid) ?? Self.simCloudSection(data) })
        brokers[.destination] = try writeBroker(
            cloud: "cloud2", account: provider, root: root, rootPath: rootPath, room: room,
            policy: policy?(.destination, consumer.jid) ?? Self.providerPolicy(consumer: consumer.jid), providerSection: { data in
                providerSection?(.destination, data, consumer.jid) ?? Self.simCloudSection(data) })
    }

    /// The `intercloud` executable built next to this test bundle (same build folder).
    static func intercloudBinary() throws -> String { try IntercloudExecutable.path() }

    static func providerPolicy(consumer: String) -> String {
        """
        version = 1

        [[peer]]
        name = "cloud1-partner"
        match = ["\(consumer)"]
        entitlements = ["query", "migrate-in"]

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
        "sim.small" = "0.0230"

        [peer.sla_offered]
        availability_percent = "99.9"
        max_migration_downtime_seconds = 300
        support = "24x7"
        """
    }

    static func consumerPolicy(provider: String) -> String {
        """
        version = 1

        [[peer]]
        name = "cloud2-provider"
        match = ["\(provider)"]
        entitlements = ["query", "migrate-out"]

        [peer.sla_required]
        availability_percent = "99.5"
        max_migration_downtime_seconds = 600
        support = "24x7"
        """
    }

    static func simCloudSection(_ data: URL) -> String {
        """
        [provider]
        driver = "simcloud"
        options = { data-dir = "\(data.path)", boot-delay-ms = "0", max-instances = "500", max-vcpu = "1000", max-memory-mib = "10000000" }

        [migration]
        graceful_shutdown_seconds = 2
        boot_timeout_seconds = 30
        request_timeout_seconds = 8
        """
    }

    private func writeBroker(
        cloud: String, account: (jid: String, password: String), root: CertificateAuthority, rootPath: String, room: String, policy: String,
        providerSection: (URL) -> String
    ) throws -> Broker {
        let identity = try root.issueBrokerIdentity(jid: account.jid, notBefore: Date() - 86_400)
        try identity.save(
            keyPath: directory.appendingPathComponent("\(cloud).key").path,
            chainPath: directory.appendingPathComponent("\(cloud)-chain.pem").path)
        try policy.write(to: directory.appendingPathComponent("\(cloud)-policy.toml"), atomically: true, encoding: .utf8)
        let database = directory.appendingPathComponent("\(cloud).sqlite").path
        let data = directory.appendingPathComponent("sim-\(cloud)")
        let toml = """
            [broker]
            cloud = "\(cloud)"
            regions = ["\(cloud)-a"]
            database = "\(database)"

            [xmpp]
            jid = "\(account.jid)/broker"
            password = "\(account.password)"
            host = "\(server.address)"
            port = \(server.port)
            ca_file = "\(server.caFile)"

            [discovery]
            rooms = ["\(room)"]

            [trust]
            key = "\(cloud).key"
            chain = "\(cloud)-chain.pem"
            anchors = ["\(rootPath)"]

            [policy]
            files = ["\(cloud)-policy.toml"]

            \(providerSection(data))
            """
        let config = directory.appendingPathComponent("\(cloud).toml").path
        try toml.write(toFile: config, atomically: true, encoding: .utf8)
        return Broker(
            cloud: cloud, jid: account.jid, config: config, database: database, dataDirectory: data,
            log: directory.appendingPathComponent("\(cloud)-serve.log"))
    }

    // MARK: processes

    /// Seeds both SimClouds (so a broker and the CLI never race to create the seed image), starts
    /// both brokers and waits until each sees the other online and trusted.
    func start() async throws {
        for role in [MigrationRole.source, .destination] {
            _ = try await intercloud(["provider", "images", "--config", brokers[role]!.config, "--output", "json"])
        }
        for role in [MigrationRole.destination, .source] { try spawnBroker(role, killAfter: nil) }
        try await waitUntilPeered()
    }

    func killAll() {
        for (_, broker) in brokers where broker.pid > 0 {
            kill(broker.pid, SIGKILL)
            var status: Int32 = 0
            waitpid(broker.pid, &status, 0)
        }
    }

    func spawnBroker(_ role: MigrationRole, killAfter: String?) throws {
        var broker = brokers[role]!
        var environment = ProcessInfo.processInfo.environment
        environment["INTERCLOUD_FAULT_KILL_AFTER_STEP"] = killAfter
        broker.pid = try ChildProcess.spawn(
            [binary, "serve", "--config", broker.config], environment: environment, output: broker.log, append: true)
        broker.startedAt = Date()
        brokers[role] = broker
    }

    /// Stops a broker gracefully (SIGTERM), as an operator would.
    func stopBroker(_ role: MigrationRole) async throws {
        let broker = brokers[role]!
        kill(broker.pid, SIGTERM)
        guard try await ChildProcess.wait(broker.pid, timeout: .seconds(30)) != nil else {
            kill(broker.pid, SIGKILL)
            _ = try await ChildProcess.wait(broker.pid, timeout: .seconds(10))
            throw CrashTestError("\(broker.cloud) did not stop on SIGTERM within 30 s")
        }
        brokers[role]!.pid = 0
    }

    /// Both brokers list each other as online (seen since their last start) and trusted.
    func waitUntilPeered(timeout: Duration = .seconds(60)) async throws {
        let source = brokers[.source]!, destination = brokers[.destination]!
        let peered = try await eventually(timeout: timeout) {
            sees(source, destination.jid) && sees(destination, source.jid)
        }
        guard peered else {
            throw CrashTestError("brokers did not peer within \(timeout):\n\(tail(source.log))\n\(tail(destination.log))")
        }
    }

    private func sees(_ broker: Broker, _ peer: String) -> Bool {
        guard let database = readOnlyDatabase(broker) else { return false }
        let registry = PeerRegistry(database: database)
        guard let record = (try? registry.all())?.first(where: { $0.jid == peer }) else { return false }
        // The stored time has millisecond precision: a second of slack against rounding.
        return record.online && record.lastSeen >= broker.startedAt.addingTimeInterval(-1)
            && (try? registry.trustStatus(of: record)) == .trusted
    }

    /// The broker's database, read-only (the broker owns its schema), once it exists.
    func readOnlyDatabase(_ broker: Broker) -> DatabasePool? {
        if let open = readers[broker.database] { return open }
        guard FileManager.default.fileExists(atPath: broker.database),
            let database = try? IntercloudDatabase.open(path: broker.database, schema: [], readOnly: true)
        else { return nil }
        readers[broker.database] = database
        return database
    }

    func journal(_ role: MigrationRole) -> MigrationJournal? {
        readOnlyDatabase(brokers[role]!).map(MigrationJournal.init(database:))
    }

    /// Runs the CLI to completion; returns its output, or throws with it when it fails.
    @discardableResult
    func intercloud(_ arguments: [String], timeout: Duration = .seconds(120)) async throws -> String {
        let name = "cli-\(UUID().uuidString.prefix(8))"
        let log = directory.appendingPathComponent("\(name).out"), errors = directory.appendingPathComponent("\(name).err")
        defer { for file in [log, errors] { try? FileManager.default.removeItem(at: file) } }
        let pid = try ChildProcess.spawn(
            [binary] + arguments, environment: ProcessInfo.processInfo.environment, output: log, errors: errors, append: false)
        let status = try await ChildProcess.wait(pid, timeout: timeout)
        var output = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        guard let status else {
            kill(pid, SIGKILL)
            _ = try await ChildProcess.wait(pid, timeout: .seconds(10))
            throw CrashTestError("intercloud \(arguments.joined(separator: " ")) did not finish in \(timeout): \(output)")
        }
        guard status == 0 else {
            output += (try? String(contentsOf: errors, encoding: .utf8)) ?? ""
            throw CrashTestError("intercloud \(arguments.joined(separator: " ")) exited with status \(status): \(output)")
        }
        return output
    }

    /// An agreement in which cloud2 grants cloud1 migrate-in, large enough for every run.
    func negotiate(entitle: String = "query,migrate-in", types: String = "sim.small") async throws {
        let output = try await intercloud([
            "negotiate", "--config", brokers[.source]!.config, "--peer", brokers[.destination]!.jid, "--entitle", entitle,
            "--instances", "100", "--vcpu", "100", "--memory-gib", "500", "--storage-gib", "5000", "--transfer-gb", "5000",
            "--types", types, "--output", "json",
        ])
        guard output.contains("FINALIZED") else { throw CrashTestError("negotiation did not finalize: \(output)") }
        agreementID = (try? JSONDecoder().decode([String: String].self, from: Data(output.utf8)))?["agreement"] ?? ""
        // The provider reaches FINALIZED when its finalize message is acknowledged.
        let finalized = try await eventually(timeout: .seconds(20)) {
            guard let database = readOnlyDatabase(brokers[.destination]!) else { return false }
            return ((try? NegotiationStore(database: database).agreements(state: .finalized)) ?? []).isEmpty == false
        }
        guard finalized else { throw CrashTestError("the provider never finalized the agreement") }
    }

    // MARK: one migration

    /// Creates a running instance in cloud1 and migrates it to cloud2; with `killing`, that broker
    /// is first restarted with the fault hook, must die by SIGKILL, and is restarted without it.
    /// Afterwards every running copy is terminated, so runs do not see each other's instances.
    func migrateOnce(killing: (role: MigrationRole, point: String)?) async throws -> CrashRun {
        runs += 1
        let source = brokers[.source]!, destination = brokers[.destination]!
        if let killing {
            try await stopBroker(killing.role)
            try spawnBroker(killing.role, killAfter: killing.point)
            try await waitUntilPeered()
        }
        let created = try await intercloud([
            "provider", "create", "crash-\(runs)", "--size", "sim.small", "--image", "sim-img-seed", "--config", source.config, "--output", "json",
        ])
        let instance = try Self.decoder.decode(Instance.self, from: Data(created.utf8))
        let originalDisk = try Self.diskSHA256(instance, in: source.dataDirectory)

        let migrateLog = directory.appendingPathComponent("migrate-\(runs).log")
        let migrate = try ChildProcess.spawn(
            [binary, "migrate", instance.id, "--to", destination.jid, "--config", source.config, "--timeout", "180", "--output", "json"],
            environment: ProcessInfo.processInfo.environment, output: migrateLog,
            errors: directory.appendingPathComponent("migrate-\(runs).err"), append: false)

        var killed = false
        var notes: [String] = []
        if let killing {
            let victim = brokers[killing.role]!
            if let status = try await ChildProcess.wait(victim.pid, timeout: .seconds(90)) {
                killed = ChildProcess.signal(status) == SIGKILL
                if !killed { notes.append("\(victim.cloud) ended with status \(status), not SIGKILL") }
            } else {
                notes.append("\(victim.cloud) still alive 90 s after the migration was asked for")
                kill(victim.pid, SIGKILL)
                _ = try await ChildProcess.wait(victim.pid, timeout: .seconds(10))
            }
            brokers[killing.role]!.pid = 0
            try spawnBroker(killing.role, killAfter: nil)
        }

        // The CLI follows the source's journal until it is finished (across the source's restart).
        let migrateStatus = try await ChildProcess.wait(migrate, timeout: .seconds(240))
        if migrateStatus == nil { kill(migrate, SIGKILL); _ = try await ChildProcess.wait(migrate, timeout: .seconds(10)) }
        let migrateOutput = (try? String(contentsOf: migrateLog, encoding: .utf8)) ?? ""
        // `--output json` prints one (pretty-printed) object.
        guard let reply = try? JSONDecoder().decode([String: String].self, from: Data(migrateOutput.utf8)), let migrationID = reply["migration"] else {
            throw CrashTestError("intercloud migrate printed no result (\(migrateStatus.map(String.init) ?? "timed out")): \(migrateOutput)\n\(tail(source.log))")
        }

        // The destination finishes on its own (it may be waiting for a retry from the source).
        // (A destination with no record of it never heard of it: nothing to wait for.)
        _ = await eventually(timeout: .seconds(90)) {
            let atDestination = ((try? self.journal(.destination)?.migrations()) ?? []).first { $0.migrationID == migrationID }
            return atDestination?.finished ?? true
        }
        let sourceSummary = try journal(.source)?.migrations().first { $0.migrationID == migrationID }
        let destinationSummary = try journal(.destination)?.migrations().first { $0.migrationID == migrationID }

        var running: [CrashRun.Copy] = []
        for broker in [source, destination] {
            for copy in try await instances(broker) where copy.state == .running {
                running.append(.init(cloud: broker.cloud, instanceID: copy.id, diskSHA256: try Self.diskSHA256(copy, in: broker.dataDirectory)))
            }
        }
        var unfinished: [String] = []
        for role in [MigrationRole.source, .destination] {
            unfinished += ((try? journal(role)?.unfinished()) ?? []).map { "\($0.role.rawValue) \($0.migrationID)" }
        }
        let steps = (try? journal(.source)?.steps(migrationID).map { "  source \($0.phase) \($0.step) \($0.outcome) \($0.detail.prefix(160))" }) ?? []
        let destinationSteps = (try? journal(.destination)?.steps(migrationID).map { "  destination \($0.phase) \($0.step) \($0.outcome) \($0.detail.prefix(160))" }) ?? []
        let diagnostics = ([
            "migration \(migrationID), migrate: \(reply.sorted { $0.key < $1.key })", "source \(sourceSummary.map { "\($0.phase) finished=\($0.finished)" } ?? "-")",
            "destination \(destinationSummary.map { "\($0.phase) finished=\($0.finished)" } ?? "-")",
            "running: \(running.map { "\($0.cloud) \($0.instanceID)" })",
        ] + notes + steps + destinationSteps).joined(separator: "\n")

        // A clean slate for the next run.
        for copy in running {
            let broker = copy.cloud == source.cloud ? source : destination
            try await intercloud(["provider", "terminate", copy.instanceID, "--config", broker.config, "--output", "json"])
        }
        if killing != nil { try await waitUntilPeered() }
        return CrashRun(
            migrationID: migrationID, killedBySIGKILL: killed, sourcePhase: sourceSummary.flatMap { $0.finished ? $0.phase : nil },
            destinationPhase: destinationSummary.map { $0.finished ? $0.phase : "unfinished \($0.phase)" }, running: running,
            originalInstanceID: instance.id, originalDiskSHA256: originalDisk, unfinishedMigrations: unfinished, diagnostics: diagnostics)
    }

    /// Every journal write of `role` in a migration that the fault hook can stop after, in order,
    /// each once (the hook stops at the first write matching it).
    func killPoints(of migrationID: String, role: MigrationRole) throws -> [KillPoint] {
        let hooked: Set<String> = ["issued", "waiting", "completed", "rolled-back"]
        var seen = Set<String>()
        return try (journal(role)?.steps(migrationID, role: role) ?? []).compactMap { step in
            guard hooked.contains(step.outcome) else { return nil }
            let point = KillPoint(role: role, phase: step.phase, step: step.step)
            return seen.insert(point.name).inserted ? point : nil
        }
    }

    private func instances(_ broker: Broker) async throws -> [Instance] {
        let output = try await intercloud(["provider", "instances", "--config", broker.config, "--output", "json"])
        return try Self.decoder.decode([Instance].self, from: Data(output.utf8))
    }

    static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }()

    /// SHA-256 of an instance's disk file in its SimCloud.
    static func diskSHA256(_ instance: Instance, in dataDirectory: URL) throws -> String {
        guard let disk = instance.extra["disk"] else { throw CrashTestError("instance \(instance.id) names no disk") }
        let data = try Data(contentsOf: dataDirectory.appendingPathComponent(disk))
        return SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
    }

    func tail(_ file: URL, lines: Int = 40) -> String {
        let text = (try? String(contentsOf: file, encoding: .utf8)) ?? ""
        return "--- \(file.lastPathComponent)\n" + text.split(separator: "\n").suffix(lines).joined(separator: "\n")
    }
}

/// Child processes by posix_spawn and waitpid (Foundation's `Process` was seen to hang with
/// daemons here), started with an empty signal mask and default dispositions, since the test
/// process blocks most signals on its threads and a child inherits that.
enum ChildProcess {
    /// Standard output goes to `output`, standard error to `errors` (default: the same file).
    static func spawn(_ arguments: [String], environment: [String: String], output: URL, errors: URL? = nil, append: Bool) throws -> pid_t {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        posix_spawnattr_setsigmask(&attributes, &emptyMask)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGPIPE, SIGTERM, SIGINT, SIGHUP] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output.path, O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC), 0o644)
        if let errors {
            posix_spawn_file_actions_addopen(&actions, 2, errors.path, O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC), 0o644)
        } else {
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }

        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for pointer in argv + envp { free(pointer) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, arguments[0], &actions, &attributes, argv, envp)
        guard spawned == 0 else { throw CrashTestError("cannot start \(arguments[0]): error \(spawned)") }
        return pid
    }

    /// The raw wait status once `pid` ended, or nil after `timeout`; polls without blocking a thread.
    static func wait(_ pid: pid_t, timeout: Duration) async throws -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while true {
            var status: Int32 = 0
            let result = waitpid(pid, &status, WNOHANG)
            if result == pid { return status }
            if result == -1, errno != EINTR { throw CrashTestError("waitpid \(pid): errno \(errno)") }
            if ContinuousClock.now >= deadline { return nil }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// The signal that ended the process, or nil if it exited.
    static func signal(_ status: Int32) -> Int32? {
        let signal = status & 0x7F
        return signal != 0 && signal != 0x7F ? signal : nil
    }
}
