import Clusters
import Foundation
import Providers
import Storage
import Synchronization
import Testing
import Trust

@Suite("Cluster runner on SimCloud")
struct ClusterRunnerTests {
    /// The journal lines naming an action on a unit (`create db-1`, `terminate web-2`, ...), in order.
    func actions(_ steps: [ClusterStepRecord], _ kind: String) -> [String] {
        steps.map(\.step).filter { $0.hasPrefix(kind + " ") }.map { String($0.dropFirst(kind.count + 1)) }
    }

    @Test("launch: db-1 runs before web-1 and web-2 are created; every server running with its template's size and parameters")
    func launchInOrder() async throws {
        let f = try ClusterFixture()
        let status = try await f.runner.launch(try f.shop(), templates: f.templates)
        #expect(status.phase == .running)
        #expect(status.reason == nil)
        #expect(status.servers.map(\.unit) == ["db-1", "web-1", "web-2"])
        #expect(status.servers.allSatisfy { $0.state == .running && $0.instanceID != nil && !$0.addresses.isEmpty })

        let steps = try await f.steps("shop")
        #expect(actions(steps, "create") == ["db-1", "web-1", "web-2"])
        // Each server runs before the next one is created.
        #expect(steps.map(\.step).filter { $0.hasPrefix("create") || $0.hasPrefix("await-running") } == [
            "create db-1", "await-running db-1", "create web-1", "await-running web-1", "create web-2", "await-running web-2",
        ])
        #expect(steps.last?.step == "running")

        let instances = try await f.liveInstances()
        #expect(instances.count == 3)
        #expect(Set(instances.map(\.name)) == Set(status.servers.map(\.name)))
        #expect(instances.first { $0.id == status.servers[0].instanceID }?.sizeID == "sim.medium")
        #expect(instances.filter { $0.sizeID == "sim.small" }.count == 2)
        #expect(f.progress.all.contains { $0.contains("shop: running") })
    }

    @Test("a failing member rolls back: servers already created are terminated last first, nothing is left, the cluster is failed with the reason")
    func rollbackOnCreateFailure() async throws {
        let cloud = CloudBox()
        let f = try ClusterFixture(observer: { event in
            // web-2's create fails: db-1 and web-1 already run.
            if event.step == "create", event.unit == "web-2", event.stage == .journaled { await cloud.value?.inject(.fail(.create, times: 1)) }
        })
        cloud.value = f.cloud
        let status = try await f.runner.launch(try f.shop(), templates: f.templates)
        #expect(status.phase == .failed)
        #expect(status.reason?.hasPrefix("web-2: create failed:") == true)
        #expect(status.reason?.contains("injected failure") == true)
        #expect(status.servers.allSatisfy { $0.state == .removed })
        #expect(try await f.liveInstances().isEmpty)
        let steps = try await f.steps("shop")
        #expect(actions(steps, "terminate") == ["web-1", "db-1"])
        #expect(steps.last?.step == "failed")
        // The name is free again once the cluster failed (a new runner: this one's observer injects again).
        #expect(try await f.restarted().runner.launch(try f.shop(), templates: f.templates).phase == .running)
    }

    @Test("a create that fails after doing its work: the rollback looks the unit up by its name before going on; nothing is left")
    func rollbackLooksForLeftovers() async throws {
        let cloud = CloudBox()
        let f = try ClusterFixture(observer: { event in
            if event.step == "create", event.unit == "web-1", event.stage == .journaled { await cloud.value?.inject(.failAfterWork(.create, times: 1)) }
        })
        cloud.value = f.cloud
        let status = try await f.runner.launch(try f.shop(), templates: f.templates)
        #expect(status.phase == .failed)
        #expect(status.reason == "web-1: create failed: simcloud: create failed (injected-fault): injected failure after the work was done")
        #expect(try await f.liveInstances().isEmpty)
        let steps = try await f.steps("shop")
        // The failed create may have left an instance nobody was told about: web-1 is looked up by
        // name (SimCloud undid its own work, so nothing is found), then db-1 is terminated.
        #expect(steps.map(\.step).filter { $0.hasPrefix("locate ") || $0.hasPrefix("terminate ") } == [
            "locate web-1", "terminate db-1", "locate db-1",
        ])
    }

    @Test("a member that does not run by its boot deadline fails the launch and is removed with the others")
    func bootDeadline() async throws {
        let f = try ClusterFixture(delays: SimCloud.Delays(boot: .seconds(30), shutdown: .zero, reboot: .zero, save: .zero, terminate: .zero))
        let definition = try f.definition(
            """
            version = 1
            name = "slow"
            [[member]]
            name = "web"
            template = "web-server"
            count = 2
            boot_timeout_seconds = 1
            """)
        let started = ContinuousClock.now
        let status = try await f.runner.launch(definition, templates: f.templates)
        #expect(ContinuousClock.now - started < .seconds(10))
        #expect(status.phase == .failed)
        #expect(status.reason?.hasPrefix("web-1: did not run:") == true)
        #expect(try await f.liveInstances().isEmpty)
        #expect(actions(try await f.steps("slow"), "create") == ["web-1"])
    }

    @Test("stop (last launched first), start (first launched first), teardown: nothing left")
    func stopStartTeardown() async throws {
        let f = try ClusterFixture()
        let launched = try await f.runner.launch(try f.shop(), templates: f.templates)
        #expect(launched.phase == .running)

        let stopped = try await f.runner.stop(name: "shop")
        #expect(stopped.phase == .stopped)
        #expect(stopped.servers.allSatisfy { $0.state == .stopped })
        #expect(try await f.liveInstances().allSatisfy { $0.state == .stopped })
        #expect(try await f.runner.stop(name: "shop").phase == .stopped)  // idempotent

        let started = try await f.runner.start(name: "shop")
        #expect(started.phase == .running)
        #expect(try await f.liveInstances().allSatisfy { $0.state == .running })

        let steps = try await f.steps("shop")
        #expect(actions(steps, "stop") == ["web-2", "web-1", "db-1"])
        #expect(actions(steps, "start") == ["db-1", "web-1", "web-2"])

        await #expect(throws: ClusterError.self) { try await f.runner.start(name: "nothing") }
        let torn = try await f.runner.teardown(name: "shop")
        #expect(torn.phase == .tornDown)
        #expect(torn.servers.allSatisfy { $0.state == .removed })
        #expect(try await f.liveInstances().isEmpty)
        #expect(actions(try await f.steps("shop"), "terminate") == ["web-2", "web-1", "db-1"])
        #expect(try await f.runner.teardown(name: "shop").phase == .tornDown)  // idempotent
        await #expect(throws: ClusterError.self) { try await f.runner.stop(name: "shop") }
    }

    @Test("a start that fails leaves the cluster degraded with the reason; start again brings it back")
    func degradedStart() async throws {
        let f = try ClusterFixture()
        _ = try await f.runner.launch(try f.shop(), templates: f.templates)
        _ = try await f.runner.stop(name: "shop")
        await f.cloud.inject(.fail(.start, times: 1))
        let degraded = try await f.runner.start(name: "shop")
        #expect(degraded.phase == .degraded)
        #expect(degraded.reason?.hasPrefix("db-1: start failed") == true)
        #expect(degraded.servers.map(\.state) == [.stopped, .stopped, .stopped])
        let running = try await f.runner.start(name: "shop")
        #expect(running.phase == .running)
        #expect(running.reason == nil)
    }

    @Test("settled phases are audited (module clusters), in the broker's audit log")
    func audited() async throws {
        let directory = try TemporaryDirectory()
        let database = try IntercloudDatabase.open(
            path: directory.url.appendingPathComponent("broker.sqlite").path, schema: [ClusterSchema.self, AuditSchema.self])
        var cloudConfiguration = SimCloud.Configuration(dataDirectory: directory.url.appendingPathComponent("sim"), delays: .instant)
        cloudConfiguration.durableWrites = false
        let cloud = try SimCloud(configuration: cloudConfiguration)
        let audit = AuditLog(database: database)
        let runner = ClusterRunner(driver: cloud, journal: ClusterJournal(database: database), configuration: ClusterFixture.configuration, audit: audit)
        let f = try ClusterFixture()
        _ = try await runner.launch(try f.shop(), templates: f.templates)
        _ = try await runner.stop(name: "shop")
        _ = try await runner.teardown(name: "shop")
        let events = try audit.events(matching: AuditQuery(module: "clusters")).reversed()
        #expect(events.map(\.kind) == ["cluster.running", "cluster.stopped", "cluster.torn-down"])
        #expect(events.map(\.action) == ["launch", "stop", "teardown"])
        #expect(events.allSatisfy { $0.outcome == .operator && $0.detail.hasPrefix("shop (cl-") })
    }

    @Test("a launch refused before anything is created: a name in use, peer members without a federation service")
    func refusals() async throws {
        let f = try ClusterFixture()
        _ = try await f.runner.launch(try f.shop(), templates: f.templates)
        do {
            _ = try await f.runner.launch(try f.shop(), templates: f.templates)
            Issue.record("a second cluster named shop was launched")
        } catch let error as ClusterError {
            #expect(error.description.hasPrefix("a cluster named shop exists"))
        }
        let peerMember = try f.definition("version = 1\nname = \"p\"\n[[member]]\nname = \"cache\"\ntemplate = \"redis\"\npeer = \"broker@cloud2.test\"\n")
        await #expect(throws: ClusterError.refused("member cache runs at broker@cloud2.test: peer members need the broker's federation service")) {
            _ = try await f.runner.launch(peerMember, templates: f.templates)
        }
        #expect(try await f.liveInstances().count == 3)
        #expect(try await f.runner.list().map(\.name) == ["shop"])
    }
}

/// Lets an observer closure reach the fixture's cloud, which exists only after the fixture does.
final class CloudBox: Sendable {
    private let cloud = Mutex<SimCloud?>(nil)
    var value: SimCloud? {
        get { cloud.withLock { $0 } }
        set { cloud.withLock { $0 = newValue } }
    }
}
