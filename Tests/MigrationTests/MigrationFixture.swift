import Foundation
import Policy
import Providers
import Testing
@testable import Migration

/// Thrown by the journal observer to stop a runner right after a journal write, as a process death would.
struct SimulatedCrash: Error, CustomStringConvertible {
    var role: MigrationRole
    var step: String
    var description: String { "simulated crash of the \(role.rawValue) after journaling \(step)" }
}

/// Collects metering changes in order.
actor MeteringRecorder: MeteringHandoff {
    private(set) var changes: [MeteringChange] = []
    func apply(_ change: MeteringChange, at: Date) async throws { changes.append(change) }
}

/// Two brokers in one process: `cloud1.test` (source) and `cloud2.test` (destination), each with its
/// own SimCloud data directory, its own journal on a real SQLite file, its own transport inbox and
/// work directory. Runners and drivers can be dropped and created again over the same files.
actor MigrationFixture {
    static let sourceName = "cloud1.test"
    static let destinationName = "cloud2.test"
    static let agreementID = "agr-1"

    let root: URL
    let network = InProcessNetwork()
    let sourceMetering = MeteringRecorder()
    let destinationMetering = MeteringRecorder()
    private(set) var sourceCloud: SimCloud!
    private(set) var destinationCloud: SimCloud!
    private(set) var sourceRunner: MigrationRunner!
    private(set) var destinationRunner: MigrationRunner!
    private(set) var sourceTransport: LocalFileTransport!
    private(set) var destinationTransport: LocalFileTransport!
    private(set) var sourceJournal: MigrationJournal!
    private(set) var destinationJournal: MigrationJournal!

    /// The instance being migrated.
    private(set) var sourceInstanceID: String?
    /// Journal writes per side so far.
    private(set) var journalWrites: [MigrationRole: Int] = [:]
    private(set) var journaledSteps: [MigrationRole: [String]] = [:]
    /// Crash the given side right after its n-th journal write (1-based).
    var crashPlan: (role: MigrationRole, write: Int)?
    /// Invariant breaches seen at any journal write.
    private(set) var violations: [String] = []
    /// Greatest number of copies seen on at once.
    private(set) var maxRunningCopies = 0

    var sourceDelays: SimCloud.Delays = .instant
    var sourceConfiguration: @Sendable (inout MigrationRunner.Configuration) -> Void = { _ in }
    var destinationConfiguration: @Sendable (inout MigrationRunner.Configuration) -> Void = { _ in }
    var destinationRefuses = false

    init() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("intercloud-migration-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    }

    func configure(_ body: @Sendable (isolated MigrationFixture) -> Void) { body(self) }

    nonisolated func removeFiles() { try? FileManager.default.removeItem(at: root) }

    private func directory(_ name: String) -> URL { root.appendingPathComponent(name, isDirectory: true) }

    private func cloudConfiguration(_ name: String, delays: SimCloud.Delays) -> SimCloud.Configuration {
        var configuration = SimCloud.Configuration(dataDirectory: directory(name).appendingPathComponent("sim"), delays: delays)
        configuration.durableWrites = false
        return configuration
    }

    private func runnerConfiguration(_ name: String) -> MigrationRunner.Configuration {
        MigrationRunner.Configuration(
            workDirectory: directory(name).appendingPathComponent("work"), region: "eu-1",
            migration: MigrationConfiguration(gracefulShutdownTimeout: 5, maxAttempts: 3, retryDelay: 0.01),
            networkMap: ["lan": "cloud2-lan"], defaultNetwork: "cloud2-default", bootTimeout: .seconds(10),
            maxRetriesPerRun: 3)
    }

    private var observer: MigrationRunner.JournalObserver {
        { [self] event in try await self.observe(event) }
    }

    private var authorizer: MigrationAuthorizer {
        let refuses = destinationRefuses
        return { request, _, agreementID, _ in
            guard agreementID == MigrationFixture.agreementID else { return .denied("agreement", "no agreement \(agreementID)") }
            switch request {
            case .migrateOut: return .allowed
            case .migrateIn: return refuses ? .denied("entitlement", "migrate-in not granted") : .allowed
            default: return .denied("entitlement", "not a migration")
            }
        }
    }

    /// (Re)creates the source side over its files, as a restarted process would.
    func startSource() async throws {
        sourceCloud = try SimCloud(configuration: cloudConfiguration("source", delays: sourceDelays))
        sourceJournal = try MigrationJournal.open(path: directory("source").appendingPathComponent("broker.sqlite").path)
        sourceTransport = try LocalFileTransport(inbox: directory("source").appendingPathComponent("inbox"))
        var configuration = runnerConfiguration("source")
        sourceConfiguration(&configuration)
        sourceRunner = MigrationRunner(
            driver: sourceCloud, journal: sourceJournal, transport: sourceTransport,
            link: InProcessPeerLink(local: Self.sourceName, network: network), authorize: authorizer,
            metering: sourceMetering, configuration: configuration, observer: observer)
        await network.connect(Self.sourceName, sourceRunner)
    }

    /// (Re)creates the destination side over its files.
    func startDestination() async throws {
        destinationCloud = try SimCloud(configuration: cloudConfiguration("destination", delays: .instant))
        destinationJournal = try MigrationJournal.open(path: directory("destination").appendingPathComponent("broker.sqlite").path)
        destinationTransport = try LocalFileTransport(inbox: directory("destination").appendingPathComponent("inbox"))
        var configuration = runnerConfiguration("destination")
        destinationConfiguration(&configuration)
        destinationRunner = MigrationRunner(
            driver: destinationCloud, journal: destinationJournal, transport: destinationTransport,
            link: InProcessPeerLink(local: Self.destinationName, network: network), authorize: authorizer,
            metering: destinationMetering, configuration: configuration, observer: observer)
        await network.connect(Self.destinationName, destinationRunner)
    }

    /// Both sides plus a running instance `web-1` at the source; returns its id.
    func setUp() async throws -> String {
        try await startSource()
        try await startDestination()
        let instance = try await sourceCloud.create(
            CreateInstanceRequest(name: "web-1", sizeID: "sim.nano", imageID: "sim-img-seed"), progress: nil)
        _ = try await sourceCloud.waitFor(instance: instance.id, state: .running, timeout: .seconds(10), pollInterval: .milliseconds(20))
        sourceInstanceID = instance.id
        return instance.id
    }

    func migrate(_ instanceID: String, migrationID: String = "mig-1") async throws -> MigrationRunner.Result {
        try await sourceRunner.migrate(
            instanceID: instanceID, to: Self.destinationName, agreementID: Self.agreementID, migrationID: migrationID,
            networkName: "lan")
    }

    private func observe(_ event: MigrationRunner.JournalEvent) async throws {
        journalWrites[event.role, default: 0] += 1
        journaledSteps[event.role, default: []].append("\(event.phase): \(event.step)")
        try await checkRunningCopies(at: "\(event.role.rawValue) \(event.phase): \(event.step)")
        if let plan = crashPlan, plan.role == event.role, journalWrites[event.role] == plan.write {
            crashPlan = nil
            await network.disconnect(event.role == .source ? Self.sourceName : Self.destinationName)
            throw SimulatedCrash(role: event.role, step: "\(event.phase): \(event.step)")
        }
    }

    /// Source phases in which no copy may be on: from the stop until the destination's copy runs
    /// (the cut-over), and while a rollback brings the source back.
    static let stoppedWindow: Set<SourcePhase> = [
        .stopping, .poweringOff, .snapshotting, .exporting, .converting, .transferring, .announcing, .cuttingOver, .rollingBack,
    ]

    /// Never two copies on at once; never none outside the stopped window.
    private func checkRunningCopies(at step: String) async throws {
        let copies = try await runningCopies()
        maxRunningCopies = max(maxRunningCopies, copies.count)
        if copies.count > 1 { violations.append("\(copies.count) copies on at \(step)") }
        // The source copy may go only once the destination has committed (it runs by then).
        if let sourceInstanceID, try await !sourceCloud.listInstances().contains(where: { $0.id == sourceInstanceID }) {
            let destinationPhases = try destinationJournal.migrations().map(\.phase)
            if !destinationPhases.contains(DestinationPhase.completed.rawValue) && !destinationPhases.contains(DestinationPhase.completing.rawValue) {
                violations.append("source copy gone at \(step) while the destination is \(destinationPhases)")
            }
        }
        if copies.isEmpty {
            let phases = try sourceJournal.migrations().filter { $0.role == .source }.compactMap { SourcePhase(rawValue: $0.phase) }
            if !phases.contains(where: Self.stoppedWindow.contains) {
                violations.append("no copy on at \(step), source phases \(phases)")
            }
        }
    }

    /// Instances that are on (running, booting or rebooting) in either cloud.
    func runningCopies() async throws -> [Instance] {
        let on: Set<InstanceState> = [.running, .pending, .rebooting]
        let source = try await sourceCloud.listInstances().filter { on.contains($0.state) }
        let destination = try await destinationCloud.listInstances().filter { on.contains($0.state) }
        return source + destination
    }

    /// SHA-256 of the disk file behind a SimCloud instance.
    func diskSHA256(_ instance: Instance, inSource: Bool) async throws -> String {
        let cloud = inSource ? sourceCloud! : destinationCloud!
        let disk = await cloud.configuration.dataDirectory.appendingPathComponent(try #require(instance.extra["disk"]))
        return try await FileDigest.sha256(of: disk).sha256
    }

    func seedSHA256() async throws -> String {
        try #require(try await sourceCloud.listImages().first { $0.id == "sim-img-seed" }?.sha256)
    }

    /// Files left in a side's work directory for a migration and in its transport inbox.
    func leftoverFiles(inSource: Bool, migrationID: String) -> [String] {
        let side = directory(inSource ? "source" : "destination")
        let work = side.appendingPathComponent("work").appendingPathComponent(migrationID)
        let inbox = side.appendingPathComponent("inbox")
        let names = { (url: URL) in (try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? [] }
        return names(work).map { "work/\($0)" } + names(inbox).map { "inbox/\($0)" }
    }

    /// The end state every migration must reach, whatever happened on the way: exactly one copy
    /// running with the original disk content, both journals finished and agreeing, nothing left over.
    /// Returns whether the migration completed.
    @discardableResult
    func expectSettled(_ migrationID: String, sourceInstanceID: String, context: String) async throws -> Bool {
        let sourceSnapshot = try #require(try sourceJournal.sourceSnapshot(migrationID), "\(context)")
        let destinationSnapshot = try destinationJournal.destinationSnapshot(migrationID)
        #expect(sourceSnapshot.phase.isFinal, "\(context): source is \(sourceSnapshot.phase)")
        #expect(violations.isEmpty, "\(context): \(violations)")
        let copies = try await runningCopies()
        #expect(copies.count == 1, "\(context): \(copies.count) running copies")
        let seed = try await seedSHA256()
        let sourceInstances = try await sourceCloud.listInstances()
        let destinationInstances = try await destinationCloud.listInstances()
        let imageName = migrationImageName(migrationID)
        #expect(try await sourceCloud.listImages().allSatisfy { $0.name != imageName }, "\(context): snapshot image left at the source")
        #expect(leftoverFiles(inSource: true, migrationID: migrationID).isEmpty, "\(context): \(leftoverFiles(inSource: true, migrationID: migrationID))")
        #expect(leftoverFiles(inSource: false, migrationID: migrationID).isEmpty, "\(context): \(leftoverFiles(inSource: false, migrationID: migrationID))")
        if sourceSnapshot.phase == .completed {
            #expect(destinationSnapshot?.phase == .completed, "\(context): destination is \(String(describing: destinationSnapshot?.phase))")
            #expect(!sourceInstances.contains { $0.id == sourceInstanceID }, "\(context): source copy not terminated")
            let running = try #require(destinationInstances.first { $0.state == .running }, "\(context)")
            #expect(running.name == "web-1")
            #expect(destinationSnapshot?.instance?.instanceID == running.id, "\(context)")
            #expect(try await diskSHA256(running, inSource: false) == seed, "\(context): disk content changed")
            return true
        }
        #expect(destinationSnapshot == nil || destinationSnapshot?.phase == .rolledBack,
                "\(context): destination is \(String(describing: destinationSnapshot?.phase))")
        #expect(destinationInstances.isEmpty, "\(context): destination still has \(destinationInstances.map(\.id))")
        #expect(try await destinationCloud.listImages().map(\.id) == ["sim-img-seed"], "\(context): images left at the destination")
        let source = try #require(sourceInstances.first { $0.id == sourceInstanceID }, "\(context): source instance gone")
        #expect(source.state == .running, "\(context): source is \(source.state)")
        #expect(try await diskSHA256(source, inSource: true) == seed, "\(context): disk content changed")
        return false
    }
}
