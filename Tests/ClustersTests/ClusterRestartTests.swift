import Clusters
import Foundation
import Providers
import Testing

/// kill -9 simulated: the observer throws at a journal event, the runner stops on the spot (as a
/// dead process would), and a new runner with a new driver object opens the same files.
@Suite("Cluster runner restarts")
struct ClusterRestartTests {
    static func crash(at step: String, _ unit: String, _ stage: ClusterRunner.JournalEvent.Stage) -> ClusterRunner.JournalObserver {
        { event in
            if event.step == step, event.unit == unit, event.stage == stage { throw SimulatedCrash() }
        }
    }

    @Test(
        "killed during launch, resumed: running, one instance per server (none created twice, none lost)",
        arguments: [
            ("create", "db-1", ClusterRunner.JournalEvent.Stage.journaled),
            ("create", "web-1", .performed),
            ("await-running", "web-2", .journaled),
            ("await-running", "db-1", .performed),
        ])
    func resumeLaunch(step: String, unit: String, stage: ClusterRunner.JournalEvent.Stage) async throws {
        let f = try ClusterFixture(observer: Self.crash(at: step, unit, stage))
        await #expect(throws: ClusterError.halted) { _ = try await f.runner.launch(try f.shop(), templates: f.templates) }
        // The dead runner refuses everything, as a dead process would.
        await #expect(throws: ClusterError.halted) { _ = try await f.runner.teardown(name: "shop") }

        let g = try f.restarted()
        let resumed = try await g.runner.resume()
        #expect(resumed.map(\.phase) == [.running])
        let status = try await g.runner.status(name: "shop")
        #expect(status.servers.allSatisfy { $0.state == .running })
        let instances = try await g.liveInstances()
        #expect(instances.count == 3)
        #expect(Set(instances.map(\.name)) == Set(status.servers.map(\.name)))
        #expect(Set(instances.map(\.id)) == Set(status.servers.compactMap(\.instanceID)))
        // Nothing left to resume.
        #expect(try await g.runner.resume().isEmpty)
    }

    @Test("killed during a rollback, resumed: the rollback finishes, the cluster is failed, nothing is left")
    func resumeRollback() async throws {
        let cloud = CloudBox()
        let f = try ClusterFixture(observer: { event in
            if event.step == "create", event.unit == "web-2", event.stage == .journaled { await cloud.value?.inject(.fail(.create, times: 1)) }
            if event.step == "terminate", event.unit == "web-1", event.stage == .performed { throw SimulatedCrash() }
        })
        cloud.value = f.cloud
        await #expect(throws: ClusterError.halted) { _ = try await f.runner.launch(try f.shop(), templates: f.templates) }
        let g = try f.restarted()
        #expect(try await g.runner.status(name: "shop").phase == .rollingBack)
        let status = try await g.runner.resume(name: "shop")
        #expect(status.phase == .failed)
        #expect(status.reason?.hasPrefix("web-2: create failed") == true)
        #expect(try await g.liveInstances().isEmpty)
    }

    @Test("killed during launch, then torn down without resuming: every server created so far is removed")
    func teardownAfterKill() async throws {
        let f = try ClusterFixture(observer: Self.crash(at: "create", "web-2", .performed))
        await #expect(throws: ClusterError.halted) { _ = try await f.runner.launch(try f.shop(), templates: f.templates) }
        #expect(try await f.liveInstances().count == 3)
        let g = try f.restarted()
        // Stop needs a settled cluster: the operator is told to resume first.
        await #expect(throws: ClusterError.self) { _ = try await g.runner.stop(name: "shop") }
        let status = try await g.runner.teardown(name: "shop")
        #expect(status.phase == .tornDown)
        #expect(try await g.liveInstances().isEmpty)
    }

    @Test("killed during a stop, resumed: the stop finishes from the server it reached")
    func resumeStop() async throws {
        let f = try ClusterFixture(observer: Self.crash(at: "stop", "web-1", .performed))
        _ = try await f.runner.launch(try f.shop(), templates: f.templates)
        await #expect(throws: ClusterError.halted) { _ = try await f.runner.stop(name: "shop") }
        let g = try f.restarted()
        let status = try await g.runner.resume(name: "shop")
        #expect(status.phase == .stopped)
        #expect(try await g.liveInstances().allSatisfy { $0.state == .stopped })
        let stops = try await g.steps("shop").map(\.step).filter { $0.hasPrefix("stop ") }
        // web-1 is stopped again after the restart (its shutdown was done; the runner looks first).
        #expect(stops == ["stop web-2", "stop web-1", "stop web-1", "stop db-1"])
    }
}
