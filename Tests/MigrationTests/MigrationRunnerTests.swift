import Foundation
import Providers
import Testing
@testable import Migration

@Suite("Migration runner: SimCloud to SimCloud")
struct MigrationRunnerTests {
    @Test("happy path: the instance runs at the destination, the source copy is gone, the disk is identical")
    func happyPath() async throws {
        let fixture = try MigrationFixture()
        defer { fixture.removeFiles() }
        let instanceID = try await fixture.setUp()
        let result = try await fixture.migrate(instanceID)
        #expect(result.outcome == .completed)
        #expect(try await fixture.expectSettled("mig-1", sourceInstanceID: instanceID, context: "happy path"))
        #expect(await fixture.maxRunningCopies == 1)

        // Both journals tell the same story, in order.
        let sourceSteps = try await fixture.sourceJournal.steps("mig-1").filter { $0.outcome == "issued" }.map(\.step)
        #expect(sourceSteps == [
            "authorize", "send propose", "driver shutdown", "driver snapshot", "driver export", "transport send",
            "send transferred", "send cutover", "driver terminate", "driver deregister-image", "driver remove-files",
            "metering handoff",
        ])
        let destinationSteps = try await fixture.destinationJournal.steps("mig-1").filter { $0.outcome == "issued" }.map(\.step)
        #expect(destinationSteps == [
            "authorize", "driver inspect", "transport prepare-offer", "reply reserved", "transport receive", "driver import",
            "driver create", "driver start", "reply started", "metering handoff", "transport withdraw-offer", "reply state",
        ])
        let summaries = try await fixture.sourceJournal.migrations()
        #expect(summaries.map(\.phase) == ["completed"] && summaries.allSatisfy(\.finished))
        let progress = try await fixture.sourceJournal.progress("mig-1")
        #expect(progress.last?.bytes == 8 << 20 && progress.last?.totalBytes == 8 << 20)

        // Placement: size mapping, region, network mapping.
        let destination = try #require(try await fixture.destinationJournal.destinationSnapshot("mig-1"))
        #expect(destination.reservation?.sizeID == "sim.nano")
        #expect(destination.reservation?.region == "eu-1")
        #expect(destination.network == "cloud2-lan")

        // Metering moved: the source stopped charging, the destination started, both from the
        // moment the destination's copy ran (not from the cut-over after it).
        let source = try #require(try await fixture.sourceJournal.sourceSnapshot("mig-1"))
        let startedAt = try #require(source.destinationStartedAt)
        let stops = await fixture.sourceMetering.changes
        let starts = await fixture.destinationMetering.changes
        #expect(stops == [.stop(migrationID: "mig-1", instanceID: instanceID, movedTo: "cloud2.test/\(destination.instance?.instanceID ?? "")", since: startedAt)])
        guard case .start(let id, let copy, let size, let agreement, let from, let since)? = starts.first, starts.count == 1 else {
            Issue.record("expected one start, got \(starts)"); return
        }
        #expect([id, copy, size, agreement, from] == ["mig-1", destination.instance?.instanceID ?? "", "sim.nano", "agr-1", "cloud1.test"])
        // The destination entered STARTED before the source heard of it, and before the cut-over.
        let startedHere = try #require(since)
        #expect(startedHere <= startedAt && destination.phaseEnteredAt >= startedHere)
    }

    @Test("a peer proposing the id of one of our own outgoing migrations is refused; ids are unique across roles")
    func migrationIDsAreUniqueAcrossRoles() async throws {
        let fixture = try MigrationFixture()
        defer { fixture.removeFiles() }
        let instanceID = try await fixture.setUp()
        #expect(try await fixture.migrate(instanceID).outcome == .completed)
        let proposal = try #require(try await fixture.destinationJournal.destinationSnapshot("mig-1")).proposal
        // cloud2 turns around and proposes "mig-1" to cloud1, where it names cloud1's own source migration.
        await #expect(throws: MigrationMessageError.self) {
            _ = try await fixture.sourceRunner.handle(
                MigrationMessage(migrationID: "mig-1", body: .propose(proposal)), from: MigrationFixture.destinationName)
        }
        #expect(try await fixture.sourceJournal.destinationSnapshot("mig-1") == nil)
        // And cloud2 cannot start an outgoing migration under an id it already received.
        do {
            _ = try await fixture.destinationRunner.migrate(
                instanceID: "any", to: MigrationFixture.sourceName, agreementID: MigrationFixture.agreementID, migrationID: "mig-1")
            Issue.record("a second migration under id mig-1 started")
        } catch {
            #expect("\(error)".contains("mig-1 already exists"), "\(error)")
        }
    }

    /// A fault at one step, and where it is injected.
    enum InjectedFault: String, CaseIterable, CustomTestStringConvertible {
        case sourceShutdown, sourceSnapshot, sourceSnapshotAfterWork, sourceExport, sourceExportCrash, sourceExportAfterWork
        case transferLost, transferCorrupted
        case destinationInspect, destinationImport, destinationImportAfterWork, destinationCreate, destinationCreateAfterWork
        case destinationStart, destinationRefuses

        var testDescription: String { rawValue }

        func inject(into fixture: MigrationFixture) async {
            let source = await fixture.sourceCloud!
            let destination = await fixture.destinationCloud!
            switch self {
            case .sourceShutdown: await source.inject(.fail(.shutdown))
            case .sourceSnapshot: await source.inject(.fail(.snapshot))
            case .sourceSnapshotAfterWork: await source.inject(.failAfterWork(.snapshot))
            case .sourceExport: await source.inject(.fail(.exportImage))
            case .sourceExportCrash: await source.inject(.crashExport(afterBytes: 3 << 20))
            case .sourceExportAfterWork: await source.inject(.failAfterWork(.exportImage))
            case .transferLost: await fixture.sourceTransport.failNextSend(afterBytes: 2 << 20)
            case .transferCorrupted: await fixture.sourceTransport.corruptNextSendOnce()
            case .destinationInspect: await destination.inject(.fail(.listSizes))
            case .destinationImport: await destination.inject(.fail(.importImage))
            case .destinationImportAfterWork: await destination.inject(.failAfterWork(.importImage))
            case .destinationCreate: await destination.inject(.fail(.create))
            case .destinationCreateAfterWork: await destination.inject(.failAfterWork(.create))
            // The start step first looks at the instance: a failing describe fails it.
            case .destinationStart: await destination.inject(.fail(.describe))
            case .destinationRefuses: break
            }
        }
    }

    @Test("a failure at any step rolls back to a running source and leaves nothing at the destination", arguments: InjectedFault.allCases)
    func failureRollsBack(_ fault: InjectedFault) async throws {
        let fixture = try MigrationFixture()
        defer { fixture.removeFiles() }
        if fault == .destinationRefuses { await fixture.configure { $0.destinationRefuses = true } }
        let instanceID = try await fixture.setUp()
        await fault.inject(into: fixture)
        let result = try await fixture.migrate(instanceID)
        guard case .rolledBack(let reason) = result.outcome else {
            Issue.record("expected a rollback, got \(result.outcome)")
            return
        }
        #expect(!reason.isEmpty)
        let completed = try await fixture.expectSettled("mig-1", sourceInstanceID: instanceID, context: fault.rawValue)
        #expect(!completed)
        let steps = try await fixture.sourceJournal.steps("mig-1")
        #expect(steps.last?.outcome == "rolled-back")
    }

    @Test("a failing terminate after the cut-over is retried, not rolled back")
    func terminateRetriedAfterCutover() async throws {
        let fixture = try MigrationFixture()
        defer { fixture.removeFiles() }
        let instanceID = try await fixture.setUp()
        await fixture.sourceCloud.inject(.fail(.terminate, times: 2))
        let result = try await fixture.migrate(instanceID)
        #expect(result.outcome == .completed)
        try await fixture.expectSettled("mig-1", sourceInstanceID: instanceID, context: "terminate retried")
        let retries = try await fixture.sourceJournal.steps("mig-1").filter { $0.step == "retry" }
        #expect(retries.count == 2)
    }

    @Test("a shutdown that outlasts the grace period ends in a hard power-off")
    func gracePeriodThenPowerOff() async throws {
        let fixture = try MigrationFixture()
        defer { fixture.removeFiles() }
        await fixture.configure {
            $0.sourceDelays = SimCloud.Delays(boot: .zero, shutdown: .seconds(60), reboot: .zero, save: .zero, terminate: .zero)
            $0.sourceConfiguration = { $0.migration.gracefulShutdownTimeout = 0.3 }
        }
        let instanceID = try await fixture.setUp()
        let result = try await fixture.migrate(instanceID)
        #expect(result.outcome == .completed)
        try await fixture.expectSettled("mig-1", sourceInstanceID: instanceID, context: "power-off")
        let steps = try await fixture.sourceJournal.steps("mig-1").filter { $0.outcome == "issued" }.map(\.step)
        #expect(steps.contains("driver destroy"))
    }

    @Test("raw to qcow2 with qemu-img when the destination accepts only qcow2")
    func conversion() async throws {
        #expect(ImageConverter.isAvailable, "qemu-img (qemu-utils) must be installed")
        let fixture = try MigrationFixture()
        defer { fixture.removeFiles() }
        await fixture.configure {
            $0.sourceConfiguration = { $0.exportFormats = [.raw] }
            $0.destinationConfiguration = { $0.importFormats = [.qcow2] }
        }
        let instanceID = try await fixture.setUp()
        let result = try await fixture.migrate(instanceID)
        #expect(result.outcome == .completed)
        try await fixture.expectSettled("mig-1", sourceInstanceID: instanceID, context: "conversion")
        let steps = try await fixture.sourceJournal.steps("mig-1")
        #expect(steps.contains { $0.step == "driver convert" && $0.outcome == "issued" })
        let converted = try #require(steps.first { $0.step == "driver convert" && $0.outcome == "succeeded" })
        #expect(converted.detail.contains("qcow2"))
        let destination = try #require(try await fixture.destinationJournal.destinationSnapshot("mig-1"))
        #expect(destination.transferred?.format == .qcow2)
        #expect(destination.transferred.map { $0.bytes != 8 << 20 } == true, "a qcow2 file is not the raw size")
    }

    @Test("an unknown agreement stops the migration before anything happens")
    func unknownAgreement() async throws {
        let fixture = try MigrationFixture()
        defer { fixture.removeFiles() }
        let instanceID = try await fixture.setUp()
        let result = try await fixture.sourceRunner.migrate(
            instanceID: instanceID, to: MigrationFixture.destinationName, agreementID: "agr-unknown", migrationID: "mig-1")
        guard case .rolledBack(let reason) = result.outcome else { Issue.record("\(result.outcome)"); return }
        #expect(reason.contains("no agreement"))
        #expect(try await fixture.destinationJournal.destinationSnapshot("mig-1") == nil)
        try await fixture.expectSettled("mig-1", sourceInstanceID: instanceID, context: "unknown agreement")
    }

    @Test("the destination answers requests for a migration it does not know with state unknown")
    func unknownMigration() async throws {
        let fixture = try MigrationFixture()
        defer { fixture.removeFiles() }
        _ = try await fixture.setUp()
        let answer = try await fixture.destinationRunner.handle(
            MigrationMessage(migrationID: "mig-x", body: .abort(reason: "test")), from: MigrationFixture.sourceName)
        #expect(answer.body == .state(MigrationPeerState(phase: .unknown)))
        #expect(try await fixture.destinationJournal.migrations().isEmpty)

        // Another peer learns nothing about (and cannot touch) a migration that is not its own.
        let spec = MigratingInstanceSpec(name: "w", instanceType: "sim.nano", vCPU: 1, memoryMiB: 512, diskGiB: 1, imageFormats: [.raw], canConvert: false)
        let reserved = try await fixture.destinationRunner.handle(
            MigrationMessage(migrationID: "mig-y", body: .propose(MigrationProposal(agreementID: "agr-1", instance: spec))),
            from: MigrationFixture.sourceName)
        guard case .reserved = reserved.body else { Issue.record("\(reserved)"); return }
        let intruder = try await fixture.destinationRunner.handle(
            MigrationMessage(migrationID: "mig-y", body: .abort(reason: "mine now")), from: "intruder.test")
        #expect(intruder.body == .state(MigrationPeerState(phase: .unknown)))
        #expect(try await fixture.destinationJournal.destinationSnapshot("mig-y")?.phase == .reserved)
    }

    @Test("an unused reservation expires: offer withdrawn, a late transferred is refused")
    func reservationExpires() async throws {
        let fixture = try MigrationFixture()
        defer { fixture.removeFiles() }
        await fixture.configure { $0.destinationConfiguration = { $0.migration.reservationTimeout = 60 } }
        _ = try await fixture.setUp()
        let spec = MigratingInstanceSpec(name: "w", instanceType: "sim.nano", vCPU: 1, memoryMiB: 512, diskGiB: 1, imageFormats: [.raw], canConvert: false)
        let answer = try await fixture.destinationRunner.handle(
            MigrationMessage(migrationID: "mig-1", body: .propose(MigrationProposal(agreementID: "agr-1", instance: spec))),
            from: MigrationFixture.sourceName)
        guard case .reserved = answer.body else { Issue.record("\(answer)"); return }
        #expect(try await fixture.destinationRunner.expireReservations(now: Date().addingTimeInterval(30)).isEmpty)
        let expired = try await fixture.destinationRunner.expireReservations(now: Date().addingTimeInterval(61))
        #expect(expired.map(\.outcome) == [.rolledBack(reason: "reservation unused for 60 s")])
        #expect(await fixture.leftoverFiles(inSource: false, migrationID: "mig-1").isEmpty)
        let late = try await fixture.destinationRunner.handle(
            MigrationMessage(migrationID: "mig-1", body: .transferred(TransferredImage(format: .raw, bytes: 1, sha256: String(repeating: "a", count: 64)))),
            from: MigrationFixture.sourceName)
        guard case .abort = late.body else { Issue.record("\(late)"); return }
    }

    @Test("two migrations at once between the same brokers both complete")
    func concurrentMigrations() async throws {
        let fixture = try MigrationFixture()
        defer { fixture.removeFiles() }
        let first = try await fixture.setUp()
        let second = try await fixture.sourceCloud.create(
            CreateInstanceRequest(name: "web-2", sizeID: "sim.small", imageID: "sim-img-seed"), progress: nil).id
        _ = try await fixture.sourceCloud.waitFor(instance: second, state: .running, timeout: .seconds(10))
        let runner = await fixture.sourceRunner!
        async let one = runner.migrate(instanceID: first, to: MigrationFixture.destinationName, agreementID: "agr-1", migrationID: "mig-a")
        async let two = runner.migrate(instanceID: second, to: MigrationFixture.destinationName, agreementID: "agr-1", migrationID: "mig-b")
        let outcomes = try await [one.outcome, two.outcome]
        #expect(outcomes == [.completed, .completed])
        #expect(try await fixture.sourceCloud.listInstances().isEmpty)
        let moved = try await fixture.destinationCloud.listInstances()
        #expect(Set(moved.map(\.name)) == ["web-1", "web-2"] && moved.allSatisfy { $0.state == .running })
        #expect(Set(moved.compactMap(\.sizeID)) == ["sim.nano", "sim.small"])
    }

    @Test("only a running instance is migrated, and a migration id is used once")
    func preconditions() async throws {
        let fixture = try MigrationFixture()
        defer { fixture.removeFiles() }
        let instanceID = try await fixture.setUp()
        _ = try await fixture.sourceCloud.shutdown(instanceID)
        _ = try await fixture.sourceCloud.waitFor(instance: instanceID, state: .stopped, timeout: .seconds(10))
        await #expect(throws: MigrationRunner.RunnerError.self) { try await fixture.migrate(instanceID) }
        _ = try await fixture.sourceCloud.start(instanceID)
        _ = try await fixture.sourceCloud.waitFor(instance: instanceID, state: .running, timeout: .seconds(10))
        #expect(try await fixture.migrate(instanceID).outcome == .completed)
        await #expect(throws: MigrationRunner.RunnerError.self) { try await fixture.migrate(instanceID) }
        await #expect(throws: MigrationMessageError.self) { try await fixture.migrate(instanceID, migrationID: "../x") }
    }

    @Test("capacity promised to a reservation is not promised twice")
    func reservationsCountAgainstCapacity() async throws {
        let fixture = try MigrationFixture()
        defer { fixture.removeFiles() }
        _ = try await fixture.setUp()
        let spec = MigratingInstanceSpec(
            name: "big", instanceType: "sim.xlarge", vCPU: 8, memoryMiB: 16384, diskGiB: 160, imageFormats: [.raw], canConvert: false)
        func propose(_ id: String) async throws -> MigrationMessage {
            try await fixture.destinationRunner.handle(
                MigrationMessage(migrationID: id, body: .propose(MigrationProposal(agreementID: "agr-1", instance: spec))),
                from: MigrationFixture.sourceName)
        }
        // SimCloud's default limit is 131072 MiB: eight xlarge reservations fit, the ninth does not.
        for index in 1...8 {
            guard case .reserved = try await propose("mig-\(index)").body else { Issue.record("reservation \(index) refused"); return }
        }
        guard case .abort(let reason) = try await propose("mig-9").body else { Issue.record("ninth reservation accepted"); return }
        #expect(reason.contains("capacity"))
        // Aborting one releases its share.
        _ = try await fixture.destinationRunner.handle(
            MigrationMessage(migrationID: "mig-1", body: .abort(reason: "changed my mind")), from: MigrationFixture.sourceName)
        guard case .reserved = try await propose("mig-10").body else { Issue.record("released capacity not reusable"); return }
    }
}
