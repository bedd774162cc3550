import Foundation
import Policy
import Providers
import Testing
@testable import Migration

/// The machines alone, fed results by hand: the order of steps, undo and resume rules.
@Suite("Migration state machines")
struct MigrationMachineTests {
    let now = Date(timeIntervalSince1970: 1_800_000_000)
    let offer = TransferOffer(host: "h", port: "1", token: "t")
    let sha = String(repeating: "0", count: 64)

    func source() -> SourceMigration {
        SourceMigration(
            migrationID: "m1", agreementID: "agr-1", peer: "cloud2.test", instanceID: "i-1",
            spec: MigrationMessageTests.spec, configuration: .init(gracefulShutdownTimeout: 1, maxAttempts: 2, retryDelay: 0), now: now)
    }

    func answer(_ body: MigrationMessage.Body) -> StepResult { .answer(MigrationMessage(migrationID: "m1", body: body)) }

    /// Drives a source to `announcing` (transferred sent).
    func sourceAtAnnouncing() -> SourceMigration {
        var machine = source()
        _ = machine.begin(now: now)
        _ = machine.handle(.authorized(.allowed), now: now)
        _ = machine.handle(answer(.reserved(MigrationReservation(sizeID: "s", acceptedFormats: [.raw], region: "r", offer: offer))), now: now)
        _ = machine.handle(.stopped(gracefully: true), now: now)
        _ = machine.handle(.image(Image(id: "img-1", name: "migration-m1")), now: now)
        _ = machine.handle(.file(StagedFile(name: "m1.export.raw", format: .raw, bytes: 10, sha256: sha)), now: now)
        _ = machine.handle(.done, now: now)
        return machine
    }

    @Test("the source stops before exporting and sends transferred only after the transfer")
    func sourceOrder() {
        var machine = source()
        #expect({ if case .authorize(.migrateOut, "agr-1", nil) = machine.begin(now: now) { true } else { false } }())
        guard case .send(let propose) = machine.handle(.authorized(.allowed), now: now), case .propose = propose.body else {
            Issue.record("no propose"); return
        }
        // vmdk is preferred but would need a conversion; raw is exported directly.
        let reserved = MigrationReservation(sizeID: "s", acceptedFormats: [.vmdk, .raw], region: "r", offer: offer)
        #expect(machine.handle(answer(.reserved(reserved)), now: now) == .driver(.shutdown(instanceID: "i-1", gracePeriod: 1)))
        #expect(machine.snapshot.exportFormat == .raw && machine.snapshot.transferFormat == .raw)
        #expect(machine.handle(.stopped(gracefully: false), now: now) == .driver(.destroy(instanceID: "i-1")))
        #expect(machine.handle(.stopped(gracefully: false), now: now) == .driver(.snapshot(instanceID: "i-1", imageName: "migration-m1")))
        #expect(machine.handle(.image(Image(id: "img-1", name: "migration-m1")), now: now)
            == .driver(.export(imageID: "img-1", format: .raw, fileName: "m1.export.raw")))
        let file = StagedFile(name: "m1.export.raw", format: .raw, bytes: 10, sha256: sha)
        #expect(machine.handle(.file(file), now: now) == .transport(.send(file, offer)))
        guard case .send(let transferred) = machine.handle(.done, now: now), case .transferred = transferred.body else {
            Issue.record("no transferred"); return
        }
        #expect(machine.snapshot.undo.contains(.abortDestination(mustConfirm: true)))
    }

    @Test("the source converts when the destination accepts only formats it cannot export")
    func sourceConverts() {
        var machine = source()
        machine = SourceMigration(resuming: { var s = machine.snapshot; s.spec.imageFormats = [.raw]; return s }())
        _ = machine.begin(now: now)
        _ = machine.handle(.authorized(.allowed), now: now)
        _ = machine.handle(answer(.reserved(MigrationReservation(sizeID: "s", acceptedFormats: [.vmdk], region: "r", offer: offer))), now: now)
        _ = machine.handle(.stopped(gracefully: true), now: now)
        _ = machine.handle(.image(Image(id: "img-1", name: "migration-m1")), now: now)
        let file = StagedFile(name: "m1.export.raw", format: .raw, bytes: 10, sha256: sha)
        #expect(machine.handle(.file(file), now: now) == .driver(.convert(source: file, format: .vmdk, fileName: "m1.transfer.vmdk")))
    }

    @Test("rollback after transferred: local cleanup, then a confirmed abort, then the source restarts")
    func sourceRollbackOrder() {
        var machine = sourceAtAnnouncing()
        #expect(machine.handle(.failed("link down"), now: now) == .driver(.removeFiles(["m1.export.raw"])))
        #expect(machine.handle(.done, now: now) == .driver(.deregisterImages(named: "migration-m1")))
        guard case .send(let abort) = machine.handle(.done, now: now), case .abort = abort.body else { Issue.record("no abort"); return }
        // Unconfirmed: the destination might be running a copy, so the source may not start.
        guard case .retry = machine.handle(.failed("unreachable"), now: now) else { Issue.record("did not wait for confirmation"); return }
        guard case .send = machine.retry(now: now) else { Issue.record("abort not sent again"); return }
        #expect(machine.handle(answer(.state(MigrationPeerState(phase: .rolledBack))), now: now) == .driver(.start(instanceID: "i-1")))
        guard case .rolledBack = machine.handle(.instance(Instance(id: "i-1", name: "w", state: .running, rawState: "running")), now: now) else {
            Issue.record("not rolled back"); return
        }
        #expect(machine.phase == .rolledBack)
    }

    @Test("an abort answered with completed turns the rollback into a cut-over")
    func abortTooLate() {
        var machine = sourceAtAnnouncing()
        _ = machine.handle(answer(.started(StartedInstance(instanceID: "d-1", addresses: []))), now: now)
        #expect(machine.phase == .cuttingOver)
        _ = machine.handle(.failed("answer lost"), now: now)  // → rollback: remove files
        _ = machine.handle(.done, now: now)  // deregister
        _ = machine.handle(.done, now: now)  // abort sent
        let committed = answer(.state(MigrationPeerState(phase: .completed, instance: StartedInstance(instanceID: "d-1", addresses: []))))
        #expect(machine.handle(committed, now: now) == .driver(.terminate(instanceID: "i-1")))
        #expect(machine.snapshot.undo.isEmpty)
    }

    @Test("resume issues the in-flight step again, and gives up on a forward step after maxAttempts")
    func sourceResume() throws {
        var machine = source()
        _ = machine.begin(now: now)
        let propose = machine.handle(.authorized(.allowed), now: now)
        let stored = try JSONDecoder().decode(SourceMigration.Snapshot.self, from: try JSONEncoder().encode(machine.snapshot))
        var resumed = SourceMigration(resuming: stored)
        #expect(resumed.resume(now: now) == propose)  // attempt 2 of 2
        // A third issue is over the limit: the step fails and the (unconfirmed) abort is sent.
        guard case .send(let abort) = resumed.resume(now: now), case .abort = abort.body else { Issue.record("no rollback"); return }
        #expect(resumed.phase == .rollingBack)
    }

    func destination() -> DestinationMigration {
        DestinationMigration(
            migrationID: "m1", peer: "cloud1.test", proposal: MigrationProposal(agreementID: "agr-1", instance: MigrationMessageTests.spec),
            configuration: .init(maxAttempts: 2, retryDelay: 0), now: now)
    }

    func inventory(maxInstances: Int? = nil) -> DestinationInventory {
        DestinationInventory(
            sizes: [InstanceSize(id: "big", vCPU: 4, memoryMiB: 8192, diskGiB: 80), InstanceSize(id: "small", vCPU: 1, memoryMiB: 1024, diskGiB: 10),
                    InstanceSize(id: "tiny", vCPU: 1, memoryMiB: 256, diskGiB: 1)],
            capacity: Capacity(maxInstances: maxInstances), importFormats: [.qcow2, .raw], region: "eu-1",
            networkMap: ["lan": "dst-lan"])
    }

    @Test("the destination maps the size, reserves, and creates nothing before transferred")
    func destinationReserves() {
        var machine = destination()
        _ = machine.begin(now: now)
        #expect(machine.handle(.authorized(.allowed), now: now) == .driver(.inspect))
        #expect(machine.handle(.inventory(inventory()), now: now) == .transport(.prepareOffer(migrationID: "m1", maximumBytes: (1 << 30) + (64 << 20))))
        guard case .reply(let reply) = machine.handle(.offer(offer), now: now), case .reserved(let reservation) = reply.body else {
            Issue.record("no reservation"); return
        }
        #expect(reservation.sizeID == "small" && reservation.acceptedFormats == [.qcow2, .raw] && reservation.offer == offer)
        #expect(machine.snapshot.network == "dst-lan")
        // A repeated propose gets the same answer; a cutover before started does nothing.
        #expect(machine.received(MigrationMessage(migrationID: "m1", body: .propose(machine.snapshot.proposal)), now: now) == .reply(reply))
        #expect(machine.received(MigrationMessage(migrationID: "m1", body: .cutover), now: now)
            == .reply(MigrationMessage(migrationID: "m1", body: .state(MigrationPeerState(phase: .reserved)))))
        #expect(machine.phase == .reserved)
    }

    @Test("the destination refuses what it cannot host")
    func destinationRefuses() {
        var full = destination()
        _ = full.begin(now: now)
        _ = full.handle(.authorized(.allowed), now: now)
        guard case .reply(let reply) = full.handle(.inventory(inventory(maxInstances: 0)), now: now), case .abort(let reason) = reply.body else {
            Issue.record("capacity not checked"); return
        }
        #expect(reason.contains("capacity") && full.phase == .rolledBack)
    }

    @Test("a checksum mismatch rolls back and answers abort")
    func destinationChecksum() {
        var machine = destination()
        _ = machine.begin(now: now)
        _ = machine.handle(.authorized(.allowed), now: now)
        _ = machine.handle(.inventory(inventory()), now: now)
        _ = machine.handle(.offer(offer), now: now)
        _ = machine.received(MigrationMessage(migrationID: "m1", body: .transferred(TransferredImage(format: .raw, bytes: 10, sha256: sha))), now: now)
        let wrong = StagedFile(name: "m1.received.raw", format: .raw, bytes: 10, sha256: String(repeating: "1", count: 64))
        #expect(machine.handle(.file(wrong), now: now) == .driver(.removeFiles(["m1.received.raw"])))
        #expect(machine.handle(.done, now: now) == .transport(.withdraw(migrationID: "m1")))
        guard case .reply(let reply) = machine.handle(.done, now: now), case .abort(let reason) = reply.body else { Issue.record("no abort"); return }
        #expect(reason.contains("does not match"))
    }

    @Test("an announced image larger than the reserved disk is refused before anything is received")
    func destinationBoundsImageSize() {
        var machine = destination()
        _ = machine.begin(now: now)
        _ = machine.handle(.authorized(.allowed), now: now)
        _ = machine.handle(.inventory(inventory()), now: now)
        _ = machine.handle(.offer(offer), now: now)
        let huge = TransferredImage(format: .raw, bytes: 2 << 30, sha256: sha)  // the proposal said 1 GiB
        #expect(machine.received(MigrationMessage(migrationID: "m1", body: .transferred(huge)), now: now) == .transport(.withdraw(migrationID: "m1")))
        guard case .reply(let reply) = machine.handle(.done, now: now), case .abort(let reason) = reply.body else { Issue.record("accepted"); return }
        #expect(reason.contains("exceeds"))
    }

    @Test("destination resume: mid-import rolls back; started waits; completed stays")
    func destinationResume() {
        var machine = destination()
        _ = machine.begin(now: now)
        _ = machine.handle(.authorized(.allowed), now: now)
        _ = machine.handle(.inventory(inventory()), now: now)
        _ = machine.handle(.offer(offer), now: now)
        _ = machine.received(MigrationMessage(migrationID: "m1", body: .transferred(TransferredImage(format: .raw, bytes: 10, sha256: sha))), now: now)
        _ = machine.handle(.file(StagedFile(name: "m1.received.raw", format: .raw, bytes: 10, sha256: sha)), now: now)
        #expect(machine.phase == .importing)
        var crashed = DestinationMigration(resuming: machine.snapshot)
        #expect(crashed.resume(now: now) == .driver(.deregisterImages(named: "migration-m1")))
        #expect(crashed.phase == .rollingBack)

        _ = machine.handle(.image(Image(id: "img-9", name: "migration-m1")), now: now)
        _ = machine.handle(.instance(Instance(id: "d-1", name: "web-1", state: .pending, rawState: "booting")), now: now)
        _ = machine.handle(.instance(Instance(id: "d-1", name: "web-1", state: .running, rawState: "running")), now: now)
        #expect(machine.phase == .started)
        var waiting = DestinationMigration(resuming: machine.snapshot)
        #expect(waiting.resume(now: now) == .wait)
        guard case .metering = machine.received(MigrationMessage(migrationID: "m1", body: .cutover), now: now) else { Issue.record("no metering"); return }
        _ = machine.handle(.done, now: now)
        _ = machine.handle(.done, now: now)
        #expect(machine.phase == .completed)
        // After the commit an abort changes nothing.
        #expect(machine.received(MigrationMessage(migrationID: "m1", body: .abort(reason: "late")), now: now)
            == .reply(MigrationMessage(migrationID: "m1", body: .state(machine.peerState))))
        #expect(machine.phase == .completed)
    }
}
