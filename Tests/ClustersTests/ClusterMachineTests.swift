import Clusters
import Foundation
import Providers
import Testing

/// The machine alone: no driver, no journal, no clock but the `now` passed in.
@Suite("Cluster machine")
struct ClusterMachineTests {
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    func machine(peerWeb: Bool = false, configuration: Cluster.Configuration = .init(retryInterval: 10, maxRemoveAttempts: 2)) -> Cluster {
        let request = CreateInstanceRequest(name: "", sizeID: "sim.small", imageID: "img")
        let db = Cluster.unit(clusterID: "cl-1", clusterName: "shop", member: "db", index: 1, template: "postgres-db", placement: .local(request), bootTimeout: 60)
        let web = Cluster.unit(
            clusterID: "cl-1", clusterName: "shop", member: "web", index: 1, template: "web-server",
            placement: peerWeb ? .peer(.init(peer: "broker@cloud2.test", template: "web-server", parameters: [:], agreementID: nil)) : .local(request),
            bootTimeout: 30)
        return Cluster(clusterID: "cl-1", name: "shop", source: "shop.toml", units: [db, web], configuration: configuration, now: t0)
    }

    func instance(_ id: String, _ name: String, _ state: InstanceState = .running) -> Instance {
        Instance(id: id, name: name, state: state, rawState: state.rawValue, addresses: ["10.0.0.1"])
    }

    @Test("one server at a time in launch order; each boot deadline counts from its own first create")
    func launchSequence() {
        var m = machine()
        let db = m.snapshot.units[0], web = m.snapshot.units[1]
        #expect(db.name.hasPrefix("cl-shop-db-1-"))
        guard case .create(let unit, let request) = m.launch(now: t0) else { Issue.record("no create"); return }
        #expect(unit == "db-1")
        #expect(request.name == db.name)
        #expect(request.extra["clientToken"] == "\(db.name)-1")
        let t1 = t0.addingTimeInterval(5)
        #expect(m.created(unit: "db-1", instance("i-1", db.name, .pending), now: t1) == .awaitRunning(unit: "db-1", instanceID: "i-1", deadline: t0.addingTimeInterval(60)))
        guard case .create("web-1", _) = m.running(unit: "db-1", instance("i-1", db.name), now: t1) else { Issue.record("web-1 not created"); return }
        let t2 = t0.addingTimeInterval(20)
        #expect(m.created(unit: "web-1", instance("i-2", web.name, .pending), now: t2) == .awaitRunning(unit: "web-1", instanceID: "i-2", deadline: t1.addingTimeInterval(30)))
        #expect(m.running(unit: "web-1", instance("i-2", web.name), now: t2) == Cluster.Action.none)
        #expect(m.phase == .running)
        // Results that do not fit the state change nothing.
        #expect(m.created(unit: "web-1", instance("i-3", web.name), now: t2) == Cluster.Action.none)
        #expect(m.snapshot.units.map(\.instanceID) == ["i-1", "i-2"])
    }

    @Test("teardown while web-1's create was in flight: web-1 is looked up by name first, then db-1 terminated; a stuck terminate stalls")
    func teardownOrderAndStall() {
        var m = machine()
        _ = m.launch(now: t0)
        _ = m.created(unit: "db-1", instance("i-1", "db"), now: t0)
        _ = m.running(unit: "db-1", instance("i-1", "db"), now: t0)  // → create web-1 (in flight)
        let webName = m.snapshot.units[1].name
        #expect(m.teardown(now: t0) == .locate(unit: "web-1", name: webName))
        #expect(m.phase == .tearingDown)
        #expect(m.located(unit: "web-1", [instance("i-2", webName)], now: t0) == .terminate(unit: "web-1", instanceID: "i-2"))
        #expect(m.terminated(unit: "web-1", now: t0) == .locate(unit: "web-1", name: webName))
        #expect(m.located(unit: "web-1", [instance("i-2", webName, .terminated)], now: t0) == .terminate(unit: "db-1", instanceID: "i-1"))

        #expect(m.terminateFailed(unit: "db-1", reason: "busy", now: t0) == Cluster.Action.none)
        #expect(m.snapshot.nextAttemptAt == t0.addingTimeInterval(10))
        #expect(m.tick(now: t0.addingTimeInterval(9)) == Cluster.Action.none)
        #expect(m.tick(now: t0.addingTimeInterval(10)) == .terminate(unit: "db-1", instanceID: "i-1"))
        #expect(m.terminateFailed(unit: "db-1", reason: "busy", now: t0.addingTimeInterval(10)) == Cluster.Action.none)
        #expect(m.snapshot.stalled == "db-1: terminate failed: busy (2 attempts)")
        #expect(m.snapshot.nextAttemptAt == nil)
        #expect(m.phase == .tearingDown)

        #expect(m.teardown(now: t0.addingTimeInterval(60)) == .terminate(unit: "db-1", instanceID: "i-1"))
        #expect(m.snapshot.stalled == nil)
        #expect(m.terminated(unit: "db-1", now: t0.addingTimeInterval(61)) == .locate(unit: "db-1", name: m.snapshot.units[0].name))
        #expect(m.located(unit: "db-1", [], now: t0.addingTimeInterval(61)) == Cluster.Action.none)
        #expect(m.phase == .tornDown)
    }

    @Test("resume in creating: found by name → adopted; not found → created again, and failed (rolled back) after the last attempt")
    func resumeCreating() {
        var m = machine(configuration: .init(maxCreateAttempts: 2))
        _ = m.launch(now: t0)  // create db-1, attempt 1
        var resumed = Cluster(resuming: m.snapshot)
        let dbName = m.snapshot.units[0].name
        #expect(resumed.resume(now: t0) == .locate(unit: "db-1", name: dbName))
        #expect(resumed.located(unit: "db-1", [instance("i-1", dbName, .pending)], now: t0)
            == .awaitRunning(unit: "db-1", instanceID: "i-1", deadline: t0.addingTimeInterval(60)))

        var again = Cluster(resuming: m.snapshot)
        _ = again.resume(now: t0)
        guard case .create("db-1", let request) = again.located(unit: "db-1", [], now: t0) else { Issue.record("no second create"); return }
        #expect(request.extra["clientToken"] == "\(dbName)-2")
        var third = Cluster(resuming: again.snapshot)
        _ = third.resume(now: t0)
        // Rolled back: db-1 is looked up once more (nothing), and the cluster fails.
        #expect(third.located(unit: "db-1", [], now: t0) == .locate(unit: "db-1", name: dbName))
        #expect(third.phase == .rollingBack)
        #expect(third.located(unit: "db-1", [], now: t0) == Cluster.Action.none)
        #expect(third.phase == .failed)
        #expect(third.snapshot.failureReason == "db-1: no instance after 2 create attempts")
    }

    @Test("peer units: placed with the unit's service id, skipped by stop and start, released by teardown")
    func peerUnits() throws {
        var m = machine(peerWeb: true)
        _ = m.launch(now: t0)
        _ = m.created(unit: "db-1", instance("i-1", "db"), now: t0)
        let web = m.snapshot.units[1]
        guard case .place("web-1", let serviceID, let selection, let deadline) = m.running(unit: "db-1", instance("i-1", "db"), now: t0) else {
            Issue.record("web-1 not placed"); return
        }
        #expect(serviceID == web.name)
        #expect(selection.peer == "broker@cloud2.test")
        #expect(deadline == t0.addingTimeInterval(30))
        #expect(m.placed(unit: "web-1", endpoint: "http://10.1.0.5:8080/", now: t0) == Cluster.Action.none)
        #expect(m.phase == .running)
        guard case .stop("db-1", "i-1", _) = try m.stop(now: t0) else { Issue.record("db-1 not stopped"); return }
        #expect(m.stopped(unit: "db-1", now: t0) == Cluster.Action.none)
        #expect(m.phase == .stopped)
        #expect(m.snapshot.units[1].state == .running)
        #expect(m.teardown(now: t0) == .release(unit: "web-1", serviceID: web.name, peer: "broker@cloud2.test"))
    }

    @Test("requests that do not fit the phase are refused, idempotent ones change nothing")
    func phaseChecks() throws {
        var m = machine()
        #expect(throws: ClusterError.self) { try m.stop(now: t0) }
        #expect(throws: ClusterError.self) { try m.start(now: t0) }
        _ = m.launch(now: t0)
        _ = m.createFailed(unit: "db-1", reason: "quota", now: t0)
        _ = m.located(unit: "db-1", [], now: t0)
        #expect(m.phase == .failed)
        #expect(m.teardown(now: t0) == Cluster.Action.none)
        #expect(m.phase == .failed)
    }
}
