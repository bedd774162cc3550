import Foundation
import Policy
import Providers
import Testing
@testable import Migration

/// The live migration steps of both machines, fed results by hand: the order, the decisions from
/// facts after a failed or interrupted move, and what each side keeps across a restart.
@Suite("Live migration state machines")
struct LiveMigrationMachineTests {
    let now = Date(timeIntervalSince1970: 1_800_000_000)
    let target = LiveMigrationOffer(uri: "qemu+tcp://hv2.cloud2.test/session", diskPath: "/var/lib/ic/web-1-ab12.qcow2", consoleLogPath: "/var/lib/ic/web-1.console.log")
    let guestID = "5a0c3d1e-0000-4000-8000-000000000001"

    func answer(_ body: MigrationMessage.Body) -> StepResult { .answer(MigrationMessage(migrationID: "m1", body: body)) }
    func message(_ body: MigrationMessage.Body) -> MigrationMessage { MigrationMessage(migrationID: "m1", body: body) }

    func source() -> SourceMigration {
        SourceMigration(
            migrationID: "m1", agreementID: "agr-1", peer: "cloud2.test", instanceID: guestID, spec: MigrationMessageTests.spec,
            configuration: .init(gracefulShutdownTimeout: 1, maxAttempts: 2, retryDelay: 0), mode: .live, liveDiskBytes: 1 << 30, now: now)
    }

    var reservation: MigrationReservation {
        MigrationReservation(sizeID: "lv.small", acceptedFormats: [], region: "eu-1", offer: TransferOffer(host: "", port: "", token: ""), live: target)
    }

    /// A source whose hypervisor move is in flight.
    func sourceMigrating() -> SourceMigration {
        var machine = source()
        _ = machine.begin(now: now)
        _ = machine.handle(.authorized(.allowed), now: now)
        _ = machine.handle(answer(.reserved(reservation)), now: now)
        return machine
    }

    @Test("live source: authorize live, propose with the disk size, move, announce, cut over, metering; never stops or terminates")
    func sourceHappyPath() {
        var machine = source()
        #expect(machine.begin(now: now) == .authorize(.migrateOut(MigrationSpec(MigrationMessageTests.spec, region: "eu-1")), agreementID: "agr-1", mode: .live))
        guard case .send(let propose) = machine.handle(.authorized(.allowed), now: now), case .propose(let proposal) = propose.body else {
            Issue.record("no propose"); return
        }
        #expect(proposal.mode == .live && proposal.live == LiveMigrationRequest(instanceID: guestID, diskBytes: 1 << 30))
        #expect(machine.handle(answer(.reserved(reservation)), now: now) == .driver(.migrateLive(instanceID: guestID, target: target)))
        #expect(machine.phase == .migratingLive)
        #expect(machine.handle(.done, now: now) == .send(message(.liveMigrated)))
        #expect(machine.snapshot.undo.isEmpty && machine.snapshot.guestLeft == true)
        let started = StartedInstance(instanceID: guestID, addresses: [])
        #expect(machine.handle(answer(.started(started)), now: now) == .send(message(.cutover)))
        guard case .metering(.stop) = machine.handle(answer(.state(MigrationPeerState(phase: .completed, instance: started))), now: now) else {
            Issue.record("no metering handoff right after the commit"); return
        }
        #expect(machine.handle(.done, now: now) == .completed)
    }

    @Test("a failed move with the guest still running here and absent there rolls back: the destination discards")
    func sourceRollsBackFromFacts() {
        var machine = sourceMigrating()
        #expect(machine.handle(.failed("connection refused"), now: now) == .driver(.probeGuest(instanceID: guestID)))
        #expect(machine.handle(.presence(.running), now: now) == .send(message(.status)))
        guard case .send(let abort) = machine.handle(answer(.state(MigrationPeerState(phase: .reserved, guest: .absent))), now: now),
              case .abort(let reason) = abort.body
        else { Issue.record("no abort to the destination"); return }
        #expect(reason.contains("connection refused"))
        guard case .rolledBack = machine.handle(answer(.state(MigrationPeerState(phase: .rolledBack))), now: now) else {
            Issue.record("not rolled back"); return
        }
    }

    @Test("while the destination shows the guest arriving the source waits and looks again; gone from here means forward")
    func sourceWaitsForAMoveInProgress() {
        var machine = sourceMigrating()
        _ = machine.handle(.failed("interrupted"), now: now)
        _ = machine.handle(.presence(.running), now: now)
        guard case .retry = machine.handle(answer(.state(MigrationPeerState(phase: .reserved, guest: .arriving))), now: now) else {
            Issue.record("did not wait"); return
        }
        #expect(machine.retry(now: now) == .driver(.probeGuest(instanceID: guestID)))
        #expect(machine.handle(.presence(.absent), now: now) == .send(message(.liveMigrated)))
        // The guest left: a destination that does not confirm yet is asked again, never rolled back.
        guard case .retry = machine.handle(answer(.state(MigrationPeerState(phase: .reserved, reason: "not running yet"))), now: now) else {
            Issue.record("did not retry"); return
        }
        #expect(machine.retry(now: now) == .send(message(.liveMigrated)))
        guard case .retry = machine.handle(.failed("unreachable"), now: now) else { Issue.record("rolled back after the guest left"); return }
        #expect(machine.phase == .announcing)
    }

    @Test("after a restart during the move the source does not move again: it looks at the guest")
    func sourceResumeVerifies() throws {
        let machine = sourceMigrating()
        let stored = try JSONDecoder().decode(SourceMigration.Snapshot.self, from: try JSONEncoder().encode(machine.snapshot))
        var resumed = SourceMigration(resuming: stored)
        #expect(resumed.resume(now: now) == .driver(.probeGuest(instanceID: guestID)))
        #expect(resumed.phase == .verifyingLive)
        // Many restarts later it still verifies instead of giving up (giving up could leave no copy).
        for _ in 0..<5 { resumed = SourceMigration(resuming: resumed.snapshot); #expect(resumed.resume(now: now) == .driver(.probeGuest(instanceID: guestID))) }
    }

    @Test("a cold snapshot stored before live migration existed still decodes, as cold")
    func oldSnapshotIsCold() throws {
        var machine = SourceMigration(
            migrationID: "m1", agreementID: "agr-1", peer: "cloud2.test", instanceID: "i-1", spec: MigrationMessageTests.spec, now: now)
        _ = machine.begin(now: now)
        var json = try JSONSerialization.jsonObject(with: try JSONEncoder().encode(machine.snapshot)) as! [String: Any]
        for key in ["mode", "liveDiskBytes", "guestLeft", "liveFailure"] { json.removeValue(forKey: key) }
        let stored = try JSONDecoder().decode(SourceMigration.Snapshot.self, from: try JSONSerialization.data(withJSONObject: json))
        #expect(!stored.isLive && stored.inFlight == .authorize(.migrateOut(MigrationSpec(MigrationMessageTests.spec, region: "eu-1")), agreementID: "agr-1"))
    }

    // MARK: destination

    func destination() -> DestinationMigration {
        DestinationMigration(
            migrationID: "m1", peer: "cloud1.test",
            proposal: MigrationProposal(agreementID: "agr-1", instance: MigrationMessageTests.spec, live: LiveMigrationRequest(instanceID: guestID, diskBytes: 1 << 30)),
            configuration: .init(maxAttempts: 2, retryDelay: 0), now: now)
    }

    func inventory(libvirt: Bool) -> DestinationInventory {
        DestinationInventory(
            sizes: [InstanceSize(id: "lv.small", vCPU: 1, memoryMiB: 1024, diskGiB: 10)], capacity: Capacity(), importFormats: [.qcow2],
            region: "eu-1", driverName: libvirt ? "libvirt" : "simcloud", acceptsLiveMigration: libvirt)
    }

    /// A destination that answered `reserved` with the live target.
    func destinationReserved() -> DestinationMigration {
        var machine = destination()
        _ = machine.begin(now: now)
        _ = machine.handle(.authorized(.allowed), now: now)
        _ = machine.handle(.inventory(inventory(libvirt: true)), now: now)
        _ = machine.handle(.liveTarget(target), now: now)
        return machine
    }

    @Test("live destination: authorize live, prepare the disk, reserve with the target; liveMigrated is confirmed by the hypervisor")
    func destinationHappyPath() {
        var machine = destination()
        guard case .authorize(.migrateIn, "agr-1", .live) = machine.begin(now: now) else { Issue.record("not a live authorization"); return }
        #expect(machine.handle(.authorized(.allowed), now: now) == .driver(.inspect))
        #expect(machine.handle(.inventory(inventory(libvirt: true)), now: now)
            == .driver(.prepareLive(name: "web-1", instanceID: guestID, diskBytes: 1 << 30)))
        guard case .reply(let reply) = machine.handle(.liveTarget(target), now: now), case .reserved(let reserved) = reply.body else {
            Issue.record("no reservation"); return
        }
        #expect(reserved.live == target && reserved.sizeID == "lv.small")
        #expect(machine.received(message(.liveMigrated), now: now) == .driver(.confirmLive(instanceID: guestID)))
        let arrived = Instance(id: guestID, name: "web-1", state: .running, rawState: "running:migrated")
        #expect(machine.handle(.instance(arrived), now: now) == .reply(message(.started(StartedInstance(instanceID: guestID, addresses: [])))))
        guard case .metering(.start) = machine.received(message(.cutover), now: now) else { Issue.record("no metering"); return }
        // No transfer offer to withdraw in a live migration.
        #expect(machine.handle(.done, now: now) == .reply(message(.state(machine.peerState))))
        #expect(machine.phase == .completed)
    }

    @Test("a destination whose driver is not libvirt refuses a live proposal with the reason")
    func destinationRefusesNonLibvirt() {
        var machine = destination()
        _ = machine.begin(now: now)
        _ = machine.handle(.authorized(.allowed), now: now)
        guard case .reply(let reply) = machine.handle(.inventory(inventory(libvirt: false)), now: now), case .abort(let reason) = reply.body else {
            Issue.record("not refused"); return
        }
        #expect(reason.contains("libvirt on both sides") && reason.contains("simcloud") && machine.phase == .rolledBack)
    }

    @Test("a live disk larger than the reserved size is refused before anything is prepared")
    func destinationBoundsTheLiveDisk() {
        var machine = DestinationMigration(
            migrationID: "m1", peer: "cloud1.test",
            proposal: MigrationProposal(agreementID: "agr-1", instance: MigrationMessageTests.spec, live: LiveMigrationRequest(instanceID: guestID, diskBytes: 11 << 30)),
            configuration: .init(), now: now)
        _ = machine.begin(now: now)
        _ = machine.handle(.authorized(.allowed), now: now)
        guard case .reply(let reply) = machine.handle(.inventory(inventory(libvirt: true)), now: now), case .abort(let reason) = reply.body else {
            Issue.record("not refused"); return
        }
        #expect(reason.contains("exceeds the 10 GiB of lv.small") && machine.phase == .rolledBack, "\(reason)")
    }

    @Test("a restarted live destination keeps its reservation; status is answered from the hypervisor; abort discards the prepared files")
    func destinationKeepsAndDiscards() throws {
        let machine = destinationReserved()
        let stored = try JSONDecoder().decode(DestinationMigration.Snapshot.self, from: try JSONEncoder().encode(machine.snapshot))
        var resumed = DestinationMigration(resuming: stored)
        #expect(resumed.resume(now: now) == .wait)
        #expect(resumed.phase == .reserved)
        #expect(resumed.received(message(.status), now: now) == .driver(.probeGuest(instanceID: guestID)))
        guard case .reply(let reply) = resumed.handle(.presence(.arriving), now: now), case .state(let state) = reply.body else {
            Issue.record("no state"); return
        }
        #expect(state.phase == .reserved && state.guest == .arriving)
        #expect(resumed.received(message(.abort(reason: "move failed")), now: now)
            == .driver(.discardLiveTarget(instanceID: guestID, diskPath: target.diskPath, consoleLogPath: target.consoleLogPath)))
        // While the guest is here the discard must not give up.
        guard case .retry = resumed.handle(.failed("guest is here"), now: now) else { Issue.record("gave up the discard"); return }
        guard case .reply(let done) = resumed.handle(.done, now: now), case .state(let final) = done.body else { Issue.record("no answer"); return }
        #expect(final.phase == .rolledBack)
    }

    @Test("a guest that does not run yet is not a rollback: the destination stays reserved and says why")
    func destinationArrivalNotYet() {
        var machine = destinationReserved()
        _ = machine.received(message(.liveMigrated), now: now)
        guard case .reply(let reply) = machine.handle(.failed("timed out waiting for running"), now: now), case .state(let state) = reply.body else {
            Issue.record("no state"); return
        }
        #expect(state.phase == .reserved && (state.reason ?? "").contains("timed out") && machine.phase == .reserved)
    }

    @Test("live offers are validated: a libvirt QEMU URI and plain absolute paths only")
    func liveOfferValidation() throws {
        func reserved(_ live: LiveMigrationOffer) -> MigrationMessage {
            message(.reserved(MigrationReservation(sizeID: "s", acceptedFormats: [], region: "r", offer: TransferOffer(host: "", port: "", token: ""), live: live)))
        }
        try reserved(target).validate()
        let bad = [
            LiveMigrationOffer(uri: "http://evil.test/", diskPath: target.diskPath, consoleLogPath: target.consoleLogPath),
            LiveMigrationOffer(uri: "qemu+ssh://h/system?command=rm -rf", diskPath: target.diskPath, consoleLogPath: target.consoleLogPath),
            LiveMigrationOffer(uri: target.uri, diskPath: "/x/a'/><disk", consoleLogPath: target.consoleLogPath),
            LiveMigrationOffer(uri: target.uri, diskPath: "relative.qcow2", consoleLogPath: target.consoleLogPath),
            LiveMigrationOffer(uri: target.uri, diskPath: target.diskPath, consoleLogPath: "/var/../etc/passwd"),
        ]
        for offer in bad { #expect(throws: MigrationMessageError.self) { try reserved(offer).validate() } }
        // A cold reservation still needs its formats and offer.
        #expect(throws: MigrationMessageError.self) {
            try message(.reserved(MigrationReservation(sizeID: "s", acceptedFormats: [], region: "r", offer: TransferOffer(host: "", port: "", token: "")))).validate()
        }
        var proposal = MigrationProposal(agreementID: "agr-1", instance: MigrationMessageTests.spec, live: LiveMigrationRequest(instanceID: guestID, diskBytes: 0))
        #expect(throws: MigrationMessageError.self) { try message(.propose(proposal)).validate() }
        proposal.live = LiveMigrationRequest(instanceID: "a/b", diskBytes: 1)
        #expect(throws: MigrationMessageError.self) { try message(.propose(proposal)).validate() }
        // Round trip of the new message and fields.
        for body: MigrationMessage.Body in [.liveMigrated, .state(MigrationPeerState(phase: .reserved, guest: .arriving)), .propose(MigrationProposal(agreementID: "agr-1", instance: MigrationMessageTests.spec, live: LiveMigrationRequest(instanceID: guestID, diskBytes: 5)))] {
            #expect(try MigrationMessage.decode(try message(body).encoded()) == message(body))
        }
    }
}
