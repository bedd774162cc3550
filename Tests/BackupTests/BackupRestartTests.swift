import Backup
import Foundation
import Providers
import Synchronization
import Testing

/// A process killed at any journal step: the runner stops on the spot when its observer throws
/// (before or after the step's action), and a new runner on the same files resumes.
@Suite("backup restarts", .serialized)
struct BackupRestartTests {
    /// Throws at the `stopAt`-th event; counts them all.
    final class Killer: Sendable {
        let stopAt: Int?
        private let count = Mutex(0)
        init(stopAt: Int?) { self.stopAt = stopAt }
        var seen: Int { count.withLock { $0 } }

        var observer: BackupRunner.JournalObserver {
            { [self] _ in
                let n = count.withLock { value -> Int in
                    value += 1
                    return value
                }
                if let stopAt, n == stopAt { throw CancellationError() }
            }
        }
    }

    struct Killed: Error {}

    @Test("a stop-and-export run of two instances killed at every step ends as one uninterrupted: two backups, instances running, nothing left over")
    func runKilledAnywhere() async throws {
        let counter = Killer(stopAt: nil)
        let reference = try BackupFixture(observer: counter.observer)
        try await reference.instance("web-1")
        try await reference.instance("db-1")
        let complete = try await reference.runner.run(reference.policy(["web-1", "db-1"], method: .stopAndExport))
        #expect(complete.phase == .completed)
        let total = counter.seen
        #expect(total > 20)
        for stopAt in 1...total {
            let killer = Killer(stopAt: stopAt)
            let directory = try TemporaryDirectory()
            let f = try BackupFixture(directory: directory, observer: killer.observer)
            let web = try await f.instance("web-1")
            let db = try await f.instance("db-1")
            await #expect(throws: BackupError.halted) {
                try await f.runner.run(f.policy(["web-1", "db-1"], method: .stopAndExport))
            }
            let after = try f.restarted()
            let resumed = try await after.runner.resume()
            let run = try #require(resumed.runs.first, "step \(stopAt): nothing resumed")
            #expect(run.phase == .completed, "step \(stopAt): \(run.reason ?? "")")
            let listing = try await BackupInventory().backups(of: f.policy([]))
            #expect(listing.map(\.status) == ["complete", "complete"], "step \(stopAt): \(listing.map(\.status))")
            let files = try f.storeFiles()
            #expect(files.count == 4 && files.allSatisfy { !$0.contains(".partial-") }, "step \(stopAt): \(files)")
            #expect(try await after.snapshotImages().isEmpty, "step \(stopAt)")
            #expect(try await after.cloud.describe(instance: web.id).state == .running, "step \(stopAt)")
            #expect(try await after.cloud.describe(instance: db.id).state == .running, "step \(stopAt)")
            #expect(try after.journal.unsettled().isEmpty)
        }
    }

    @Test("a restore killed at every step ends restored, with one instance and one image")
    func restoreKilledAnywhere() async throws {
        let seed = try BackupFixture()
        try await seed.instance("web-1")
        let run = try await seed.runner.run(seed.policy(["web-1"]))
        let id = run.units[0].backupID
        let target = BackupTarget.directory(path: seed.storeRoot.path)
        let counter = Killer(stopAt: nil)
        let reference = try BackupFixture(observer: counter.observer)
        let done = try await reference.runner.restore(backupID: id, policy: "nightly", target: target, instanceName: "restored", sizeID: "sim.nano")
        #expect(done.phase == .restored)
        for stopAt in 1...counter.seen {
            let killer = Killer(stopAt: stopAt)
            let f = try BackupFixture(observer: killer.observer)
            let imagesBefore = try await f.cloud.listImages().count
            await #expect(throws: BackupError.halted) {
                try await f.runner.restore(backupID: id, policy: "nightly", target: target, instanceName: "restored", sizeID: "sim.nano")
            }
            let after = try f.restarted()
            let resumed = try await after.runner.resume()
            let restore = try #require(resumed.restores.first, "step \(stopAt)")
            #expect(restore.phase == .restored, "step \(stopAt): \(restore.reason ?? "")")
            let instances = try await after.cloud.listInstances().filter { $0.name == "restored" && $0.state != .terminated }
            #expect(instances.count == 1 && instances.first?.state == .running, "step \(stopAt)")
            #expect(try await after.cloud.listImages().count == imagesBefore + 1, "step \(stopAt)")
            #expect((try? FileManager.default.contentsOfDirectory(atPath: after.staging.path))?.isEmpty ?? true, "step \(stopAt)")
        }
    }

    @Test("a run cancelled while it waits for an instance to stop (a broker shutting down) stays under way; resume finishes it and the instance runs")
    func cancelledRunResumes() async throws {
        let f = try BackupFixture(delays: SimCloud.Delays(boot: .zero, shutdown: .seconds(2), reboot: .zero, save: .zero, terminate: .zero))
        let web = try await f.instance("web-1")
        let running = Task { try await f.runner.run(f.policy(["web-1"], method: .stopAndExport)) }
        // Until the shutdown is under way.
        var stopping = false
        for _ in 0..<200 where !stopping {
            try await Task.sleep(for: .milliseconds(10))
            stopping = (try? await f.cloud.describe(instance: web.id).state) == .stopping
        }
        #expect(stopping)
        running.cancel()
        await #expect {
            try await running.value
        } throws: { error in
            if case .interrupted = error as? BackupError { return true }
            return false
        }
        #expect(try f.journal.unsettled().count == 1, "nothing was settled by the cancellation")
        let after = try f.restarted()
        let run = try #require(try await after.runner.resume().runs.first)
        #expect(run.phase == .completed, "\(run.reason ?? "")")
        #expect(try await after.cloud.waitFor(instance: web.id, state: .running, timeout: .seconds(10), pollInterval: .milliseconds(10)).state == .running)
    }
}
