import Foundation
import Policy
import Providers
import TestSupport
import Testing
@testable import Migration

/// A link that treats the source's `cutover` and `abort` as the test says, and delivers the rest.
struct CutoverLosingLink: MigrationPeerLink {
    enum AbortHandling: Sendable {
        /// Delivered to the destination.
        case deliver
        /// Lost, as `cutover` is.
        case lose
        /// Never delivered, yet confirmed as rolled back: how this test puts the source in ROLLED
        /// BACK (its copy running again) while the destination's copy still runs, the situation a
        /// destination must end safely by itself.
        case confirmWithoutDelivering
    }

    let inner: InProcessPeerLink
    /// How long the lost `cutover` keeps its sender waiting before it fails (a request timeout),
    /// on `clock`: a test clock lets the test decide when that timeout comes.
    var cutoverTimeout: Duration = .zero
    var clock: any Clock<Duration> = ContinuousClock()
    var abort: AbortHandling = .deliver

    func send(_ message: MigrationMessage, to peer: String) async throws -> MigrationMessage {
        switch (message.body, abort) {
        case (.cutover, _):
            try await clock.sleep(for: cutoverTimeout)
            throw InProcessPeerLink.Unreachable(peer: peer)
        case (.abort, .lose):
            throw InProcessPeerLink.Unreachable(peer: peer)
        case (.abort, .confirmWithoutDelivering):
            return MigrationMessage(migrationID: message.migrationID, body: .state(MigrationPeerState(phase: .rolledBack)))
        default:
            return try await inner.send(message, to: peer)
        }
    }
}

/// A destination whose copy runs waits for the source's `cutover` or `abort`. When neither comes,
/// it asks the source (`status`) after `startedCheckInterval` and follows what the source did:
/// completes when it cut over, terminates its copy when the source's runs again, and otherwise
/// keeps waiting. It never decides alone.
@Suite("A started destination asks the source when cutover does not come")
struct CutoverCheckTests {
    /// The fixture's destination, and a source runner over the fixture's cloud and journal whose
    /// link is `link`.
    private func sourceRunner(_ fixture: MigrationFixture, link: CutoverLosingLink) async -> MigrationRunner {
        let runner = MigrationRunner(
            driver: await fixture.sourceCloud!, journal: await fixture.sourceJournal!, transport: await fixture.sourceTransport!,
            link: link, authorize: { _, _, _, _ in .allowed },
            configuration: .init(
                workDirectory: fixture.root.appendingPathComponent("source/work"), migration: .init(retryDelay: 0.01), maxRetriesPerRun: 3))
        await fixture.network.connect(MigrationFixture.sourceName, runner)
        return runner
    }

    private func fixture() async throws -> (MigrationFixture, String) {
        let fixture = try MigrationFixture()
        await fixture.configure { fixture in fixture.destinationConfiguration = { configuration in configuration.startedCheckInterval = 0.5 } }
        return (fixture, try await fixture.setUp())
    }

    /// The task's result, moving `clock` on by `step` whenever something sleeps on it (each lost
    /// `cutover` the source sends times out then).
    private func finishing<T: Sendable>(_ task: Task<T, any Error>, advancing clock: TestClock, by step: Duration) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await task.value }
            group.addTask {
                while !Task.isCancelled {
                    if clock.sleeperCount > 0 { clock.advance(by: step) }
                    try? await Task.sleep(for: .milliseconds(5))
                }
                return nil
            }
            while let next = try await group.next() {
                if let value = next {
                    group.cancelAll()
                    return value
                }
            }
            throw CancellationError()
        }
    }

    private func waitFor(_ what: String, _ condition: () throws -> Bool) async throws {
        let deadline = Date().addingTimeInterval(20)
        while try !condition() {
            guard Date() < deadline else { throw CancellationError() }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    @Test("cutover lost: the destination asks, learns the source cut over, and completes; the source then finishes forward")
    func lostCutoverCompletedByAsking() async throws {
        let (fixture, instanceID) = try await fixture()
        defer { fixture.removeFiles() }
        // The source's cutover request times out on a test clock: it stays outstanding, however
        // slow the machine, until the destination's side below is checked.
        let clock = TestClock()
        let link = CutoverLosingLink(
            inner: InProcessPeerLink(local: MigrationFixture.sourceName, network: fixture.network), cutoverTimeout: .seconds(3), clock: clock)
        let source = await sourceRunner(fixture, link: link)
        let sourceJournal = await fixture.sourceJournal!
        let destination = await fixture.destinationRunner!
        let destinationJournal = await fixture.destinationJournal!

        let migration = Task { try await source.migrate(instanceID: instanceID, to: MigrationFixture.destinationName, agreementID: MigrationFixture.agreementID, migrationID: "mig-cut") }
        // The cutover is out (and lost); the destination's copy runs and waits.
        try await waitFor("the source to send cutover") { try sourceJournal.sourceSnapshot("mig-cut")?.phase == .cuttingOver }
        #expect(try destinationJournal.destinationSnapshot("mig-cut")?.phase == .started)
        // Times from when the copy started, not from the wall clock (see ReservationCheckTests).
        let startedAt = try #require(try destinationJournal.destinationSnapshot("mig-cut")).phaseEnteredAt
        let questionsBefore = await fixture.network.statusQuestions
        // Too early: the copy has not waited the interval; the source is not asked.
        #expect(try await destination.checkWaitsOnSource(now: startedAt.addingTimeInterval(0.25)).isEmpty)
        #expect(await fixture.network.statusQuestions == questionsBefore)
        #expect(try destinationJournal.destinationSnapshot("mig-cut")?.phase == .started)

        let results = try await destination.checkWaitsOnSource(now: startedAt.addingTimeInterval(1))
        #expect(await fixture.network.statusQuestions == questionsBefore + 1)
        #expect(results.map(\.outcome) == [.completed])
        let stored = try #require(try destinationJournal.destinationSnapshot("mig-cut"))
        #expect(stored.phase == .completed)
        #expect(stored.notes.contains { $0.contains("cuttingOver") })
        // The decision was journaled before the metering hand-over it led to.
        let steps = try destinationJournal.steps("mig-cut", role: .destination)
        let decision = try #require(steps.firstIndex { $0.step == "source status" })
        #expect(steps[decision].detail.contains("source cuttingOver while started; completing"))
        #expect(steps[(decision + 1)...].contains { $0.step.hasPrefix("metering") })
        #expect(await fixture.destinationMetering.changes.count == 1)

        // The source's cutover fails at its timeout; its rollback's abort is answered `completed`,
        // so it finishes forward: one running copy, at the destination.
        #expect(try sourceJournal.sourceSnapshot("mig-cut")?.phase == .cuttingOver)
        let result = try await finishing(migration, advancing: clock, by: .seconds(3))
        #expect(result.outcome == .completed)
        #expect(try sourceJournal.sourceSnapshot("mig-cut")?.notes.contains { $0.contains("overtaken") } == true)
        let sourceInstances = try await fixture.sourceCloud.listInstances().filter { $0.id == instanceID && $0.state != .terminated }
        #expect(sourceInstances.isEmpty)
        let destinationInstances = try await fixture.destinationCloud.listInstances()
        #expect(destinationInstances.filter { $0.state == .running }.count == 1)
    }

    @Test("source rolled back (its copy runs again): the destination asks and terminates its copy")
    func sourceRolledBackTerminatesTheCopy() async throws {
        let (fixture, instanceID) = try await fixture()
        defer { fixture.removeFiles() }
        let link = CutoverLosingLink(
            inner: InProcessPeerLink(local: MigrationFixture.sourceName, network: fixture.network), abort: .confirmWithoutDelivering)
        let source = await sourceRunner(fixture, link: link)
        let destination = await fixture.destinationRunner!
        let destinationJournal = await fixture.destinationJournal!

        let result = try await source.migrate(
            instanceID: instanceID, to: MigrationFixture.destinationName, agreementID: MigrationFixture.agreementID, migrationID: "mig-back")
        guard case .rolledBack = result.outcome else { Issue.record("expected a rollback, got \(result.outcome)"); return }
        #expect(try await fixture.sourceCloud.describe(instance: instanceID).state == .running)
        // Two copies run now: the destination never heard of the rollback.
        #expect(try destinationJournal.destinationSnapshot("mig-back")?.phase == .started)
        #expect(try await fixture.destinationCloud.listInstances().filter { $0.state == .running }.count == 1)

        let results = try await destination.checkWaitsOnSource(now: Date().addingTimeInterval(1))
        #expect(results.map(\.outcome) == [.rolledBack(reason: "the source rolled back (its copy runs again); its abort did not arrive")])
        #expect(try destinationJournal.destinationSnapshot("mig-back")?.phase == .rolledBack)
        let steps = try destinationJournal.steps("mig-back", role: .destination)
        let decision = try #require(steps.firstIndex { $0.step == "source status" })
        #expect(steps[decision].detail.contains("source rolledBack while started; rolling back"))
        #expect(steps[(decision + 1)...].contains { $0.step.contains("terminate") })
        #expect(try await fixture.destinationCloud.listInstances().filter { $0.state == .running }.isEmpty)
        #expect(try destinationJournal.reservedSizeIDs().isEmpty)
        #expect(await fixture.destinationMetering.changes.isEmpty)
        #expect(try await fixture.sourceCloud.describe(instance: instanceID).state == .running)
    }

    @Test("source still rolling back (its abort lost too): the destination keeps waiting, then the delivered abort ends it")
    func sourceInProgressKeepsWaiting() async throws {
        let (fixture, instanceID) = try await fixture()
        defer { fixture.removeFiles() }
        let losing = CutoverLosingLink(
            inner: InProcessPeerLink(local: MigrationFixture.sourceName, network: fixture.network), abort: .lose)
        let source = await sourceRunner(fixture, link: losing)
        let destination = await fixture.destinationRunner!
        let destinationJournal = await fixture.destinationJournal!
        let sourceJournal = await fixture.sourceJournal!

        let result = try? await source.migrate(
            instanceID: instanceID, to: MigrationFixture.destinationName, agreementID: MigrationFixture.agreementID, migrationID: "mig-wait")
        if let result { #expect(result.outcome.isStalled) }
        #expect(try sourceJournal.sourceSnapshot("mig-wait")?.phase == .rollingBack)
        // One time base for the checks below, so the gaps between them are what the test says.
        let base = Date()
        let questionsBefore = await fixture.network.statusQuestions
        // Asked, the source says it is rolling back: not a decision to follow yet.
        #expect(try await destination.checkWaitsOnSource(now: base.addingTimeInterval(1)).isEmpty)
        #expect(await fixture.network.statusQuestions == questionsBefore + 1)
        #expect(try destinationJournal.destinationSnapshot("mig-wait")?.phase == .started)
        #expect(try destinationJournal.steps("mig-wait", role: .destination).contains { $0.step == "source status" } == false)
        // Asked only once per interval (0.5 s): 0.2 s later it is not asked again.
        #expect(try await destination.checkWaitsOnSource(now: base.addingTimeInterval(1.2)).isEmpty)
        #expect(await fixture.network.statusQuestions == questionsBefore + 1)
        // Unreachable source: still waiting.
        await fixture.network.disconnect(MigrationFixture.sourceName)
        #expect(try await destination.checkWaitsOnSource(now: base.addingTimeInterval(3)).isEmpty)
        #expect(try destinationJournal.destinationSnapshot("mig-wait")?.phase == .started)

        // The source comes back with a working link: its abort arrives, both end rolled back.
        let restarted = await sourceRunner(fixture, link: CutoverLosingLink(
            inner: InProcessPeerLink(local: MigrationFixture.sourceName, network: fixture.network), abort: .deliver))
        let resumed = try await restarted.resume()
        #expect(resumed.map(\.outcome).contains { if case .rolledBack = $0 { true } else { false } })
        #expect(try destinationJournal.destinationSnapshot("mig-wait")?.phase == .rolledBack)
        #expect(try await fixture.destinationCloud.listInstances().filter { $0.state == .running }.isEmpty)
        #expect(try await fixture.sourceCloud.describe(instance: instanceID).state == .running)
    }

    @Test("the machine follows only a source that cut over or rolled back")
    func machineFollowsOnlyDecidedSources() {
        for phase in SourcePhase.allCases {
            var machine = Self.startedMachine()
            let action = machine.sourceAnswered(MigrationPeerState(phase: .unknown, sourcePhase: phase), now: Date())
            switch phase {
            case .cuttingOver, .terminating, .cleaningUp, .handingOverMetering, .completed:
                guard case .metering(.start)? = action else { Issue.record("\(phase): expected the metering hand-over, got \(String(describing: action))"); continue }
                #expect(machine.phase == .completing)
            case .rolledBack:
                guard case .driver(.terminateInstances)? = action else { Issue.record("\(phase): expected terminate, got \(String(describing: action))"); continue }
                #expect(machine.phase == .rollingBack)
            default:
                #expect(action == nil, "\(phase)")
                #expect(machine.phase == .started)
            }
        }
        var machine = Self.startedMachine()
        #expect(machine.sourceAnswered(MigrationPeerState(phase: .unknown), now: Date()) == nil)
        #expect(machine.phase == .started)
    }

    static func startedMachine() -> DestinationMigration {
        var machine = DestinationMigration(
            migrationID: "m1", peer: "cloud1.test", proposal: MigrationProposal(agreementID: "agr-1", instance: MigrationMessageTests.spec),
            configuration: .init(), now: Date())
        _ = machine.begin(now: Date())
        _ = machine.handle(.authorized(.allowed), now: Date())
        _ = machine.handle(.inventory(DestinationInventory(
            sizes: [InstanceSize(id: "small", vCPU: 1, memoryMiB: 1024, diskGiB: 10)], capacity: Capacity(), importFormats: [.raw], region: "eu-1")), now: Date())
        _ = machine.handle(.offer(TransferOffer(host: "h", port: "1", token: "t")), now: Date())
        _ = machine.received(MigrationMessage(migrationID: "m1", body: .transferred(TransferredImage(format: .raw, bytes: 10, sha256: String(repeating: "a", count: 64)))), now: Date())
        _ = machine.handle(.file(StagedFile(name: "m1.raw", format: .raw, bytes: 10, sha256: String(repeating: "a", count: 64))), now: Date())
        _ = machine.handle(.image(Image(id: "img-1", name: "migration-m1")), now: Date())
        _ = machine.handle(.instance(Instance(id: "i-1", name: "x", state: .pending, rawState: "booting")), now: Date())
        _ = machine.handle(.instance(Instance(id: "i-1", name: "x", state: .running, rawState: "running")), now: Date())
        return machine
    }
}

extension MigrationRunner.Outcome {
    var isStalled: Bool { if case .stalled = self { true } else { false } }
}
