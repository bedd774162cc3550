import Foundation
import Providers
import Testing

@testable import Federation

/// The state machine alone: no driver, no database, time passed in.
@Suite("FederatedService state machine")
struct FederatedServiceTests {
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)
    let size = InstanceSize(id: "sim.small", vCPU: 1, memoryMiB: 2048, diskGiB: 20)
    let configuration = FederatedService.Configuration(credentialTTL: 600, bootTimeout: 30, teardownRetryInterval: 10, maxCreateAttempts: 2)

    func machine(endsIn seconds: TimeInterval = 3600) -> FederatedService {
        FederatedService(
            serviceID: "svc:1@x", agreementID: "agr", consumer: "c@x.test", templateName: "web", imageID: "img", size: size,
            userData: "echo hi", interface: ServiceInterface(protocolName: "https", port: 443, path: "/api"),
            agreementEndsAt: t0.addingTimeInterval(seconds), configuration: configuration, now: t0)
    }

    func instance(_ id: String = "i-1", name: String, addresses: [String] = ["10.0.0.5"], state: InstanceState = .running) -> Instance {
        Instance(id: id, name: name, sizeID: "sim.small", state: state, rawState: state.rawValue, addresses: addresses)
    }

    /// Drives a fresh machine to active.
    func active() -> FederatedService {
        var m = machine()
        _ = m.start(now: t0)
        _ = m.created(instance(name: m.instanceName, state: .pending), now: t0)
        _ = m.running(instance(name: m.instanceName), now: t0.addingTimeInterval(2))
        return m
    }

    @Test("the happy path's actions, the endpoint and the credentials")
    func happyPath() throws {
        var m = machine()
        #expect(m.instanceName.hasPrefix("fed-svc-1-x-"))
        #expect(m.instanceName.count == "fed-svc-1-x-".count + 8)
        guard case .create(let request) = m.start(now: t0) else { Issue.record("no create"); return }
        #expect(request.name == m.instanceName)
        #expect(request.extra["userData"] == "echo hi")
        #expect(request.extra["clientToken"] == m.instanceName + "-1")
        #expect(m.phase == .provisioning)
        #expect(m.created(instance(name: m.instanceName, state: .pending), now: t0) == .awaitRunning(instanceID: "i-1", deadline: t0.addingTimeInterval(30)))
        let now = t0.addingTimeInterval(2)
        guard case .activate(let endpoint, let credentials, let placement) = m.running(instance(name: m.instanceName), now: now) else {
            Issue.record("not activated")
            return
        }
        #expect(endpoint == ServiceEndpoint(host: "10.0.0.5", port: 443, protocolName: "https", path: "/api"))
        #expect(credentials.expiresAt == now.addingTimeInterval(600))
        #expect(credentials.generation == 1)
        #expect(placement.instanceType == "sim.small")
        #expect(placement.placedAt == now)
        #expect(m.status.phase == .active)
        #expect(m.status.credentialsExpireAt == credentials.expiresAt)
    }

    @Test("the snapshot survives encoding unchanged")
    func codable() throws {
        let m = active()
        let data = try JSONEncoder().encode(m.snapshot)
        #expect(try JSONDecoder().decode(FederatedService.Snapshot.self, from: data) == m.snapshot)
    }

    @Test("resume rule: the action for each stored phase")
    func resumeRule() {
        // requested → create
        var requested = FederatedService(resuming: machine().snapshot)
        if case .create = requested.resume(now: t0) {} else { Issue.record("requested did not create") }
        // provisioning → look the instance up by name
        var provisioning = machine()
        _ = provisioning.start(now: t0)
        var resumed = FederatedService(resuming: provisioning.snapshot)
        #expect(resumed.resume(now: t0) == .locate(instanceName: provisioning.instanceName))
        // starting → wait again, until the original deadline
        var starting = machine()
        _ = starting.start(now: t0)
        _ = starting.created(instance(name: starting.instanceName, state: .pending), now: t0)
        resumed = FederatedService(resuming: starting.snapshot)
        #expect(resumed.resume(now: t0.addingTimeInterval(5)) == .awaitRunning(instanceID: "i-1", deadline: t0.addingTimeInterval(30)))
        // active → confirm the placement
        let active = active()
        resumed = FederatedService(resuming: active.snapshot)
        if case .confirmPlacement(let placement) = resumed.resume(now: t0.addingTimeInterval(9)) {
            #expect(placement == active.snapshot.placement)
        } else { Issue.record("active did not confirm") }
        // tearingDown → terminate the known instance
        var tearing = self.active()
        _ = tearing.requestTeardown(reason: "r", now: t0)
        resumed = FederatedService(resuming: tearing.snapshot)
        #expect(resumed.resume(now: t0) == .terminate(instanceID: "i-1"))
        // ended → report the removal again, at the time it ended
        var ended = tearing
        _ = ended.terminated(now: t0.addingTimeInterval(1))
        _ = ended.located([], now: t0.addingTimeInterval(2))
        #expect(ended.phase == .ended)
        resumed = FederatedService(resuming: ended.snapshot)
        guard case .finished(let removal) = resumed.resume(now: t0.addingTimeInterval(50)) else { Issue.record("no finish"); return }
        #expect(removal?.removedAt == t0.addingTimeInterval(2))
    }

    @Test("provisioning after a restart: an instance found is adopted; none found is created again, within the attempts")
    func provisioningResume() {
        var m = machine()
        _ = m.start(now: t0)
        var adopted = FederatedService(resuming: m.snapshot)
        _ = adopted.resume(now: t0)
        #expect(adopted.located([instance("i-9", name: m.instanceName, state: .pending), instance("x", name: "other")], now: t0)
            == .awaitRunning(instanceID: "i-9", deadline: t0.addingTimeInterval(30)))
        var recreated = FederatedService(resuming: m.snapshot)
        _ = recreated.resume(now: t0)
        if case .create = recreated.located([instance("t", name: m.instanceName, state: .terminating)], now: t0) {} else {
            Issue.record("a terminating instance was adopted")
        }
        #expect(recreated.snapshot.createAttempts == 2)
        // A second restart with still nothing: attempts are used up.
        var exhausted = FederatedService(resuming: recreated.snapshot)
        _ = exhausted.resume(now: t0)
        guard case .finished(nil) = exhausted.located([], now: t0) else { Issue.record("not finished"); return }
        #expect(exhausted.phase == .failed)
        #expect(exhausted.status.reason == "no instance after 2 create attempts")
    }

    @Test("a teardown asked for while a step is in flight applies when the step completes")
    func teardownDuringProvisioning() {
        var m = machine()
        _ = m.start(now: t0)
        #expect(m.requestTeardown(reason: "changed my mind", now: t0) == .none)
        #expect(m.phase == .provisioning)
        #expect(m.created(instance(name: m.instanceName, state: .pending), now: t0) == .terminate(instanceID: "i-1"))
        #expect(m.phase == .tearingDown)
        #expect(m.terminated(now: t0) == .locate(instanceName: m.instanceName))
        #expect(m.located([], now: t0) == .finished(removal: nil))
        #expect(m.phase == .ended)
        #expect(m.status.reason == "changed my mind")
    }

    @Test("tick: nothing before the agreement's end, teardown at it; credentials never outlive the agreement")
    func agreementEnd() throws {
        var m = active()
        #expect(m.nextDeadline == t0.addingTimeInterval(3600))
        #expect(m.tick(now: t0.addingTimeInterval(3599)) == .none)
        let renewed = try m.renew(now: t0.addingTimeInterval(3500))
        #expect(renewed == .issueCredentials(.init(
            username: m.snapshot.credentials!.username, generation: 2, issuedAt: t0.addingTimeInterval(3500),
            expiresAt: t0.addingTimeInterval(3600))))
        #expect(m.tick(now: t0.addingTimeInterval(3600)) == .terminate(instanceID: "i-1"))
        #expect(m.status.reason == "the agreement ended")
        #expect(throws: FederationError.self) { try m.renew(now: t0.addingTimeInterval(3600)) }
    }

    @Test("failures undo: a start that fails terminates the instance and ends failed; a create that fails looks for leftovers")
    func failures() {
        var m = machine()
        _ = m.start(now: t0)
        _ = m.created(instance(name: m.instanceName, state: .pending), now: t0)
        #expect(m.startFailed(reason: "boom", now: t0) == .terminate(instanceID: "i-1"))
        _ = m.terminated(now: t0)
        #expect(m.located([], now: t0) == .finished(removal: nil))
        #expect(m.phase == .failed)
        #expect(m.status.reason == "start failed: boom")

        var c = machine()
        _ = c.start(now: t0)
        #expect(c.createFailed(reason: "quota", now: t0) == .locate(instanceName: c.instanceName))
        #expect(c.located([instance("left", name: c.instanceName)], now: t0) == .terminate(instanceID: "left"))

        var noAddress = machine()
        _ = noAddress.start(now: t0)
        _ = noAddress.created(instance(name: noAddress.instanceName, state: .pending), now: t0)
        #expect(noAddress.running(instance(name: noAddress.instanceName, addresses: []), now: t0) == .terminate(instanceID: "i-1"))
        #expect(noAddress.status.reason?.contains("has no address") == true)
    }

    @Test("a failed terminate is retried at tick after the retry interval")
    func terminateRetry() {
        var m = active()
        _ = m.requestTeardown(reason: "r", now: t0)
        #expect(m.terminateFailed(reason: "down", now: t0) == .none)
        #expect(m.nextDeadline == t0.addingTimeInterval(10))
        #expect(m.tick(now: t0.addingTimeInterval(9)) == .none)
        #expect(m.tick(now: t0.addingTimeInterval(10)) == .terminate(instanceID: "i-1"))
    }
}
