import Foundation
import Providers
import Testing

@testable import Federation

/// A place where the process "dies": right after the journal write for `step` (before the action)
/// or right after the action (before its result is journaled).
struct CrashPoint: Sendable, CustomTestStringConvertible {
    var step: String
    var stage: FederationRunner.JournalEvent.Stage
    var testDescription: String { "\(step) \(stage.rawValue)" }

    func matches(_ event: FederationRunner.JournalEvent) -> Bool { event.step == step && event.stage == stage }

    /// Throws at this point, once.
    func observer() -> FederationRunner.JournalObserver {
        { event in if matches(event) { throw SimulatedCrash() } }
    }
}

@Suite("Federation restarts")
struct FederationRestartTests {
    static let provisioningCrashes = [
        CrashPoint(step: "create", stage: .journaled), CrashPoint(step: "create", stage: .performed),
        CrashPoint(step: "await-running", stage: .journaled), CrashPoint(step: "await-running", stage: .performed),
        CrashPoint(step: "activate", stage: .journaled), CrashPoint(step: "activate", stage: .performed),
    ]

    @Test("a crash while provisioning resumes to active with exactly one running instance", arguments: provisioningCrashes)
    func provisioning(crash: CrashPoint) async throws {
        let f = try FederationFixture(observer: crash.observer())
        await #expect(throws: FederationError.halted) { _ = try await f.provisionWeb() }
        // A halted runner refuses further work, as a dead process would.
        await #expect(throws: FederationError.halted) { _ = try await f.runner.status(serviceID: "svc-1") }

        let restarted = try f.restarted()
        let later = f.t0.addingTimeInterval(5)
        let resumed = try await restarted.runner.resume(now: later)
        #expect(resumed["svc-1"]?.phase == .active)
        let instances = try await restarted.instances(of: "svc-1")
        #expect(instances.count == 1)
        #expect(instances.first?.state == .running)
        #expect(resumed["svc-1"]?.endpoint?.host == instances.first?.addresses.first)
        // The placement is reported (again, idempotently) for the one instance.
        #expect(Set(await f.metering.placements.map(\.instanceID)) == [instances.first?.id])
        // The token never reached the consumer: it renews and gets working credentials.
        let credentials = try await restarted.runner.renew(serviceID: "svc-1", now: later)
        #expect(try restarted.journal.validate(token: credentials.token, serviceID: "svc-1", now: later).isValid)
        // And the service still ends cleanly.
        #expect(try await restarted.runner.teardown(serviceID: "svc-1", now: later.addingTimeInterval(1)).phase == .ended)
        #expect(try await restarted.cloud.listInstances().isEmpty)
    }

    static let teardownCrashes = [
        CrashPoint(step: "terminate", stage: .journaled), CrashPoint(step: "terminate", stage: .performed),
        CrashPoint(step: "locate", stage: .journaled), CrashPoint(step: "locate", stage: .performed),
        CrashPoint(step: "finished", stage: .journaled),
    ]

    @Test("a crash while tearing down resumes to ended with nothing left and one removal", arguments: teardownCrashes)
    func tearingDown(crash: CrashPoint) async throws {
        let armed = Armed()
        let f = try FederationFixture(observer: { event in
            if await armed.isArmed, crash.matches(event) { throw SimulatedCrash() }
        })
        let provisioned = try await f.provisionWeb()
        await armed.arm()
        await #expect(throws: FederationError.halted) { _ = try await f.runner.teardown(serviceID: "svc-1", now: f.t0.addingTimeInterval(60)) }

        let restarted = try f.restarted()
        let resumed = try await restarted.runner.resume(now: f.t0.addingTimeInterval(61))
        #expect(resumed["svc-1"]?.phase == .ended)
        #expect(try await restarted.cloud.listInstances().isEmpty)
        #expect(try restarted.journal.validate(token: provisioned.credentials.token, serviceID: "svc-1", now: f.t0) == .serviceNotActive)
        let removals = await f.metering.removals
        #expect(removals.map(\.serviceID) == ["svc-1"])
        #expect(try restarted.journal.unfinished().isEmpty)
    }

    @Test("a service resumed after its agreement ended is torn down")
    func resumeAfterAgreementEnd() async throws {
        let f = try FederationFixture(observer: CrashPoint(step: "activate", stage: .journaled).observer())
        await #expect(throws: FederationError.halted) { _ = try await f.provisionWeb() }
        let restarted = try f.restarted()
        let resumed = try await restarted.runner.resume(now: f.agreementEndsAt.addingTimeInterval(1))
        #expect(resumed["svc-1"]?.phase == .ended)
        #expect(resumed["svc-1"]?.reason == "the agreement ended")
        #expect(try await restarted.cloud.listInstances().isEmpty)
    }

    @Test("a resume whose instance lookup fails retries it at tick and then completes")
    func lookupFailsOnResume() async throws {
        let f = try FederationFixture(observer: CrashPoint(step: "create", stage: .journaled).observer())
        await #expect(throws: FederationError.halted) { _ = try await f.provisionWeb() }
        let restarted = try f.restarted()
        await restarted.cloud.inject(.fail(.listInstances))
        #expect(try await restarted.runner.resume(now: f.t0)["svc-1"]?.phase == .provisioning)
        #expect(try await restarted.runner.nextDeadline() == f.t0.addingTimeInterval(10))
        #expect(try await restarted.cloud.listInstances().isEmpty)
        let changed = try await restarted.runner.tick(now: f.t0.addingTimeInterval(10))
        #expect(changed["svc-1"]?.phase == .active)
        #expect(try await restarted.instances(of: "svc-1").count == 1)
    }

    @Test("an instance created twice (crash after create, then a create retried elsewhere) is all removed at teardown")
    func strayInstances() async throws {
        let f = try FederationFixture(observer: CrashPoint(step: "create", stage: .performed).observer())
        await #expect(throws: FederationError.halted) { _ = try await f.provisionWeb() }
        // Another instance with the same name, as a driver that created twice would leave.
        let snapshot = try #require(try f.journal.snapshot("svc-1"))
        _ = try await f.cloud.create(snapshot.request, progress: nil)
        let restarted = try f.restarted()
        #expect(try await restarted.runner.resume(now: f.t0)["svc-1"]?.phase == .active)
        #expect(try await restarted.instances(of: "svc-1").count == 2)
        #expect(try await restarted.runner.teardown(serviceID: "svc-1", now: f.t0.addingTimeInterval(1)).phase == .ended)
        #expect(try await restarted.cloud.listInstances().isEmpty)
    }
}

/// A switch the observer reads, so a crash is injected only in the phase under test.
actor Armed {
    private(set) var isArmed = false
    func arm() { isArmed = true }
}
