import Foundation
import Policy
import Providers
import Testing
@testable import Migration

/// Live migration with the runners (in-process peer link) and real hypervisors: two private
/// libvirt session daemons with real QEMU guests (`LibvirtSessionPair`), as in
/// `CrossDriverMigrationTests.liveLibvirtToLibvirt`, but driven by both machines and journals.
/// Part of that (serialized) suite: the tests share its daemons and clean them after each test.
extension CrossDriverMigrationTests {
    static let allowLiveMigration: LiveMigrationAuthorizer = { _, _, agreementID, _ in
        agreementID == CrossDriverFixture.agreementID ? .allowed : .denied("not-entitled", "agreement \(agreementID) does not grant migrate-live")
    }

    /// The source's list for one peer: that daemon's URI, in clear (the session daemons have no TLS).
    static func livePeer(_ name: String, _ driver: LibvirtDriver) -> LivePeerPolicy {
        LivePeerPolicy(peers: [name: .init(uris: [driver.configuration.uri], allowsPlaintext: true)])
    }

    @Test("live libvirt → libvirt through both runners: the guest never stops, one running copy at the end, at the destination")
    func liveHappyPath() async throws {
        try await CrossDriverFixture.withLibvirtClouds("lr-a", "lr-b") { fixture, first, second in
            let (guest, image) = try await fixture.runningGuest(on: first, name: "live-r1")
            let source = try await fixture.side(
                "cloud-a.test", driver: first, authorizeLive: Self.allowLiveMigration, livePeers: Self.livePeer("cloud-b.test", second))
            let destination = try await fixture.side("cloud-b.test", driver: second, authorizeLive: Self.allowLiveMigration)
            let events = first.lifecycleEvents()

            let result = try await source.runner.migrate(
                instanceID: guest.id, to: destination.name, agreementID: CrossDriverFixture.agreementID, migrationID: "live-ok", mode: .live)
            let steps = try fixture.issuedSteps(source, "live-ok")
            #expect(result.outcome == .completed, "\(result.outcome) \(steps)")

            // One running copy, at the destination, arrived by migration (not booted again there).
            #expect(try await first.listInstances().isEmpty)
            let arrived = try await second.describe(instance: guest.id)
            #expect(arrived.state == .running && arrived.rawState == "running:migrated", "\(arrived.rawState)")
            #expect(fixture.bootMarkers(arrived) == 0)
            #expect(try await second.listInstances().count == 1)
            // Its disk has the content the guest had: a snapshot there has the image's content.
            let copy = try await second.snapshot(instance: guest.id, name: "arrived", progress: nil)
            #expect(copy.sha256 == image.sha256)
            // The source never saw the guest shut down or crash, only the migration's stop.
            var seen: [String] = []
            for await event in events where event.instanceID == guest.id {
                seen.append(event.event)
                if event.event == "stopped" || event.event == "undefined" { break }
            }
            #expect(seen.contains("stopped") && !seen.contains("crashed") && !seen.contains("shutdown"), "\(seen)")
            // No stop, snapshot, export or transfer: the steps of a live migration only.
            #expect(steps.contains("driver migrate-live") && steps.contains("send liveMigrated"), "\(steps)")
            #expect(!steps.contains { $0.hasPrefix("driver shutdown") || $0.hasPrefix("driver snapshot") || $0.hasPrefix("transport") }, "\(steps)")
            #expect(try fixture.issuedSteps(destination, "live-ok").contains("driver confirm-live"))
            #expect(try destination.journal.migrations().first?.phase == "completed")
        }
    }

    @Test("a destination offering a hypervisor URI not allowed for it: our hypervisor never connects, rolled back, the guest runs on here")
    func liveTargetNotAllowedForThePeer() async throws {
        try await CrossDriverFixture.withLibvirtClouds("lr-h", "lr-i") { fixture, first, second in
            let (guest, _) = try await fixture.runningGuest(on: first, name: "live-r5")
            // The list names another host for this peer: the offered (real, reachable) URI is not on it.
            let elsewhere = LivePeerPolicy(peers: ["cloud-i.test": .init(uris: ["qemu+tls://hv9.cloud-i.example/system"])])
            let source = try await fixture.side("cloud-h.test", driver: first, authorizeLive: Self.allowLiveMigration, livePeers: elsewhere)
            let destination = try await fixture.side("cloud-i.test", driver: second, authorizeLive: Self.allowLiveMigration)
            let result = try await source.runner.migrate(
                instanceID: guest.id, to: destination.name, agreementID: CrossDriverFixture.agreementID, migrationID: "live-nope", mode: .live)
            guard case .rolledBack(let reason) = result.outcome else {
                Issue.record("not rolled back: \(result.outcome)"); return
            }
            #expect(reason.contains("not among the URIs allowed"), "\(reason)")
            #expect(try await first.describe(instance: guest.id).state == .running)
            #expect(try await second.listInstances().isEmpty)
        }
    }

    @Test("refused when the agreement does not grant live: nothing sent, nothing prepared, the guest runs on")
    func refusedWithoutLiveGrant() async throws {
        try await CrossDriverFixture.withLibvirtClouds("lr-c", "lr-d") { fixture, first, second in
            let (guest, _) = try await fixture.runningGuest(on: first, name: "live-r2")
            let refuse: LiveMigrationAuthorizer = { _, _, agreementID, _ in .denied("not-entitled", "agreement \(agreementID) does not grant migrate-live") }
            let source = try await fixture.side("cloud-c.test", driver: first, authorizeLive: refuse)
            let destination = try await fixture.side("cloud-d.test", driver: second, authorizeLive: Self.allowLiveMigration)

            let result = try await source.runner.migrate(
                instanceID: guest.id, to: destination.name, agreementID: CrossDriverFixture.agreementID, migrationID: "live-no", mode: .live)
            guard case .rolledBack(let reason) = result.outcome else { Issue.record("not refused: \(result.outcome)"); return }
            #expect(reason.contains("policy refused") && reason.contains("migrate-live"), "\(reason)")
            #expect(try destination.journal.migrations().isEmpty)
            #expect(try await first.describe(instance: guest.id).state == .running)
            #expect(try await second.listInstances().isEmpty)
            // The refusal is in the journal: the authorization step failed with the reason.
            #expect(try source.journal.steps("live-no").contains { $0.step == "authorize" && $0.outcome == "failed" && $0.detail.contains("migrate-live") })
        }
    }

    @Test("refused by a SimCloud destination: it reserves nothing, the guest runs on at the source")
    func refusedBySimCloudDestination() async throws {
        try await CrossDriverFixture.withLibvirtClouds("lr-e", "lr-e2") { fixture, first, _ in
            let (guest, _) = try await fixture.runningGuest(on: first, name: "live-r3")
            let sim = try fixture.simCloud("sim")
            let source = try await fixture.side("cloud-e.test", driver: first, authorizeLive: Self.allowLiveMigration)
            let destination = try await fixture.side("cloud-sim.test", driver: sim, authorizeLive: Self.allowLiveMigration)

            let result = try await source.runner.migrate(
                instanceID: guest.id, to: destination.name, agreementID: CrossDriverFixture.agreementID, migrationID: "live-sim", mode: .live)
            guard case .rolledBack(let reason) = result.outcome else { Issue.record("not refused: \(result.outcome)"); return }
            #expect(reason.contains("libvirt on both sides") && reason.contains("simcloud"), "\(reason)")
            #expect(try destination.journal.migrations().first?.phase == "rolledBack")
            #expect(try await first.describe(instance: guest.id).state == .running)
            #expect(try await sim.listInstances().isEmpty)
            // A SimCloud source is refused before anything is journaled or sent.
            let simGuest = try await sim.create(CreateInstanceRequest(name: "web-1", sizeID: "sim.nano", imageID: "sim-img-seed"), progress: nil)
            _ = try await sim.waitFor(instance: simGuest.id, state: .running, timeout: .seconds(10))
            await #expect(throws: MigrationRunner.RunnerError.self) {
                _ = try await destination.runner.migrate(
                    instanceID: simGuest.id, to: source.name, agreementID: CrossDriverFixture.agreementID, migrationID: "live-from-sim", mode: .live)
            }
            #expect(try destination.journal.sourceSnapshot("live-from-sim") == nil)
        }
    }

    @Test("the source stops right after journaling the move, before it starts: on restart it finds the guest here and not there, and rolls back")
    func crashBeforeTheMoveRollsBack() async throws {
        try await CrossDriverFixture.withLibvirtClouds("lr-f", "lr-g") { fixture, first, second in
            let (guest, _) = try await fixture.runningGuest(on: first, name: "live-r4")
            let crash: MigrationRunner.JournalObserver = { event in
                if event.role == .source && event.step == "driver migrate-live" { throw SimulatedCrash(role: .source, step: event.step) }
            }
            let source = try await fixture.side(
                "cloud-f.test", driver: first, authorizeLive: Self.allowLiveMigration, livePeers: Self.livePeer("cloud-g.test", second),
                observer: crash)
            let destination = try await fixture.side("cloud-g.test", driver: second, authorizeLive: Self.allowLiveMigration)
            await #expect(throws: SimulatedCrash.self) {
                _ = try await source.runner.migrate(
                    instanceID: guest.id, to: destination.name, agreementID: CrossDriverFixture.agreementID, migrationID: "live-crash", mode: .live)
            }
            // The destination prepared a disk and keeps it (it cannot know the source's hypervisor is not moving the guest in).
            let prepared = try #require(try destination.journal.destinationSnapshot("live-crash")?.reservation?.live)
            #expect(FileManager.default.fileExists(atPath: prepared.diskPath))
            #expect(try await destination.runner.resume().allSatisfy { $0.outcome == .waiting })
            #expect(FileManager.default.fileExists(atPath: prepared.diskPath))

            // The restarted source (a new runner on the same journal) decides from the facts.
            let restarted = MigrationRunner(
                driver: first, journal: source.journal, transport: try LocalFileTransport(inbox: source.root.appendingPathComponent("inbox")),
                link: InProcessPeerLink(local: source.name, network: fixture.network),
                authorize: { _, _, _, _ in .allowed }, authorizeLive: Self.allowLiveMigration,
                configuration: .init(workDirectory: source.root.appendingPathComponent("work"), migration: .init(retryDelay: 0.5), maxRetriesPerRun: 3))
            await fixture.network.connect(source.name, restarted)
            let results = try await restarted.resume()
            guard case .rolledBack(let reason)? = results.first(where: { $0.migrationID == "live-crash" })?.outcome else {
                Issue.record("not rolled back: \(results)"); return
            }
            #expect(reason.contains("live migration failed"), "\(reason)")
            let steps = try fixture.issuedSteps(source, "live-crash")
            #expect(steps.filter { $0 == "driver migrate-live" }.count == 1 && steps.contains("driver probe-guest") && steps.contains("send status"), "\(steps)")
            // Consistent: one running copy, at the source; the destination rolled back and removed its files.
            #expect(try await first.describe(instance: guest.id).state == .running)
            #expect(try await second.listInstances().isEmpty)
            #expect(try destination.journal.migrations().first?.phase == "rolledBack")
            #expect(!FileManager.default.fileExists(atPath: prepared.diskPath))
        }
    }
}
