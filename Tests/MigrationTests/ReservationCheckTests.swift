import Foundation
import Policy
import Providers
import Testing
@testable import Migration

/// A link that loses every `abort` (the destination unreachable just then) and delivers the rest.
struct AbortLosingLink: MigrationPeerLink {
    let inner: InProcessPeerLink

    func send(_ message: MigrationMessage, to peer: String) async throws -> MigrationMessage {
        if case .abort = message.body { throw InProcessPeerLink.Unreachable(peer: peer) }
        return try await inner.send(message, to: peer)
    }
}

/// A source that rolls back before `transferred` while its `abort` cannot reach the destination
/// finishes without it (its instance runs again; the destination holds no copy). The destination
/// then asks the source about the reservation it still holds and releases it, instead of keeping
/// the capacity until `reservationTimeout`.
@Suite("Reservations released when the source's abort was lost")
struct ReservationCheckTests {
    @Test("a reservation whose transfer failed for good is released at once, not at the reservation timeout")
    func failedTransferReleasesTheReservation() async throws {
        let fixture = try MigrationFixture()
        defer { fixture.removeFiles() }
        let instanceID = try await fixture.setUp()
        // The source holds the reservation and never sends its image: its export cannot write.
        let work = fixture.root.appendingPathComponent("source/work")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        try Data("in the way".utf8).write(to: work.appendingPathComponent("mig-held"))
        let sourceRunner = MigrationRunner(
            driver: await fixture.sourceCloud!, journal: await fixture.sourceJournal!, transport: await fixture.sourceTransport!,
            link: AbortLosingLink(inner: InProcessPeerLink(local: MigrationFixture.sourceName, network: fixture.network)),
            authorize: { _, _, _, _ in .allowed },
            configuration: .init(workDirectory: work, migration: .init(retryDelay: 0.01)))
        await fixture.network.connect(MigrationFixture.sourceName, sourceRunner)
        _ = try await sourceRunner.migrate(
            instanceID: instanceID, to: MigrationFixture.destinationName, agreementID: MigrationFixture.agreementID, migrationID: "mig-held")
        let destination = await fixture.destinationRunner!
        let journal = await fixture.destinationJournal!
        #expect(try journal.destinationSnapshot("mig-held")?.phase == .reserved)
        // While the transfer may still come, nothing is released before the reservation timeout.
        #expect(try await destination.expireReservations(now: Date()).isEmpty)
        #expect(try journal.reservedSizeIDs().count == 1)
        // The transport gives up on it: the reservation goes at the next check.
        await fixture.destinationTransport.failTransfer(of: "mig-held", reason: "no connection for 120 s")
        let results = try await destination.expireReservations(now: Date())
        #expect(results.map(\.outcome) == [.rolledBack(reason: "the image transfer ended before the image arrived: no connection for 120 s")])
        #expect(try journal.destinationSnapshot("mig-held")?.phase == .rolledBack)
        #expect(try journal.reservedSizeIDs().isEmpty)
    }

    @Test("the destination asks the source, learns it rolled back, and releases the reservation")
    func lostAbortReleasedByAsking() async throws {
        let fixture = try MigrationFixture()
        defer { fixture.removeFiles() }
        await fixture.configure { fixture in fixture.destinationConfiguration = { configuration in configuration.reservationCheckInterval = 0.5 } }
        let instanceID = try await fixture.setUp()
        // The source's own runner, over the fixture's cloud and journal, with a link that loses aborts.
        let journal = await fixture.sourceJournal!
        let sourceRunner = MigrationRunner(
            driver: await fixture.sourceCloud!, journal: journal, transport: await fixture.sourceTransport!,
            link: AbortLosingLink(inner: InProcessPeerLink(local: MigrationFixture.sourceName, network: fixture.network)),
            authorize: { _, _, _, _ in .allowed },
            configuration: .init(workDirectory: fixture.root.appendingPathComponent("source/work"), migration: .init(retryDelay: 0.01)))
        await fixture.network.connect(MigrationFixture.sourceName, sourceRunner)
        // The export cannot write its file (a plain file stands where the migration's folder goes):
        // the source rolls back after the destination reserved.
        let work = fixture.root.appendingPathComponent("source/work")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        try Data("in the way".utf8).write(to: work.appendingPathComponent("mig-lost"))

        let result = try await sourceRunner.migrate(
            instanceID: instanceID, to: MigrationFixture.destinationName, agreementID: MigrationFixture.agreementID, migrationID: "mig-lost")
        guard case .rolledBack = result.outcome else { Issue.record("expected a rollback, got \(result.outcome)"); return }
        #expect(try await fixture.sourceCloud.describe(instance: instanceID).state == .running)
        #expect(try journal.steps("mig-lost").contains { $0.step == "send abort" && $0.outcome == "failed" })
        let destination = await fixture.destinationRunner!
        let destinationJournal = await fixture.destinationJournal!
        #expect(try destinationJournal.destinationSnapshot("mig-lost")?.phase == .reserved)
        #expect(try destinationJournal.reservedSizeIDs().count == 1)

        // Times from when the reservation was made, not from the wall clock: however long the
        // steps above took on a loaded machine, "too early" stays too early.
        let reservedAt = try #require(try destinationJournal.destinationSnapshot("mig-lost")).phaseEnteredAt
        let questionsBefore = await fixture.network.statusQuestions
        // Too early: the reservation is younger than the interval, the source is not asked.
        #expect(try await destination.checkWaitsOnSource(now: reservedAt.addingTimeInterval(0.25)).isEmpty)
        #expect(await fixture.network.statusQuestions == questionsBefore)
        #expect(try destinationJournal.destinationSnapshot("mig-lost")?.phase == .reserved)
        // Later: asked, the source says it rolled back; the reservation is released and journaled.
        let results = try await destination.checkWaitsOnSource(now: reservedAt.addingTimeInterval(1))
        #expect(await fixture.network.statusQuestions == questionsBefore + 1)
        #expect(results.map(\.outcome) == [.rolledBack(reason: "the source rolled back; its abort did not arrive")])
        #expect(try destinationJournal.destinationSnapshot("mig-lost")?.phase == .rolledBack)
        #expect(try destinationJournal.reservedSizeIDs().isEmpty)
        #expect(try destinationJournal.steps("mig-lost").contains { $0.step == "transport withdraw-offer" })
        #expect(try await fixture.destinationCloud.listInstances().isEmpty)
    }

    @Test("a source still working on the migration keeps the destination's reservation")
    func sourceInProgressKeepsTheReservation() async throws {
        var machine = DestinationMigration(
            migrationID: "m1", peer: "cloud1.test", proposal: MigrationProposal(agreementID: "agr-1", instance: MigrationMessageTests.spec),
            configuration: .init(), now: Date())
        _ = machine.begin(now: Date())
        _ = machine.handle(.authorized(.allowed), now: Date())
        _ = machine.handle(.inventory(DestinationInventory(
            sizes: [InstanceSize(id: "small", vCPU: 1, memoryMiB: 1024, diskGiB: 10)], capacity: Capacity(), importFormats: [.raw], region: "eu-1")), now: Date())
        _ = machine.handle(.offer(TransferOffer(host: "h", port: "1", token: "t")), now: Date())
        #expect(machine.phase == .reserved)
        for phase in SourcePhase.allCases where phase != .rolledBack {
            #expect(machine.sourceAnswered(MigrationPeerState(phase: .unknown, sourcePhase: phase), now: Date()) == nil)
        }
        // An answer without the source's phase (an unknown migration there) releases nothing either.
        #expect(machine.sourceAnswered(MigrationPeerState(phase: .unknown), now: Date()) == nil)
        #expect(machine.phase == .reserved)
    }
}
