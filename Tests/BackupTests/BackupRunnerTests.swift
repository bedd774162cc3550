import Backup
import Crypto
import Foundation
import Providers
import Trust
import Testing

/// Runs and restores against a real SimCloud (real files, real qemu-img) and a directory store.
@Suite("backup runner")
struct BackupRunnerTests {
    func sha256(_ url: URL) throws -> String {
        SHA256.hash(data: try Data(contentsOf: url)).map { String(format: "%02x", $0) }.joined()
    }

    @Test("a run stores disk and manifest, leaves no snapshot or staging file, and the backup restores with the same content")
    func runAndRestore() async throws {
        let f = try BackupFixture()
        let web = try await f.instance("web-1")
        let run = try await f.runner.run(f.policy(["web-1"]))
        #expect(run.phase == .completed, "\(run.reason ?? "")")
        let unit = try #require(run.units.first)
        #expect(try f.storeFiles() == ["nightly/\(unit.backupID)/disk.qcow2", "nightly/\(unit.backupID)/manifest.json"])
        // The stored bytes are what the manifest says.
        let disk = f.storeRoot.appendingPathComponent("nightly/\(unit.backupID)/disk.qcow2")
        let listing = try await BackupInventory().backups(of: f.policy(["web-1"]))
        let manifest = try #require(listing.first?.manifest)
        #expect(try sha256(disk) == manifest.disk.sha256)
        #expect(manifest.source.instanceID == web.id && manifest.source.sizeID == "sim.small" && manifest.source.driver == "simcloud")
        #expect(try await f.snapshotImages().isEmpty)
        #expect((try? FileManager.default.contentsOfDirectory(atPath: f.staging.path))?.isEmpty ?? true)
        #expect(try await f.cloud.describe(instance: web.id).state == .running)

        let restored = try await f.runner.restore(
            backupID: unit.backupID, policy: "nightly", target: .directory(path: f.storeRoot.path), instanceName: "web-1-restored", sizeID: nil)
        #expect(restored.phase == .restored, "\(restored.reason ?? "")")
        let instance = try await f.cloud.describe(instance: try #require(restored.instanceID))
        #expect(instance.state == .running && instance.sizeID == "sim.small")
        let image = try await f.cloud.listImages().first { $0.id == restored.imageID }
        let seed = try await f.cloud.listImages().first { $0.name == "seed-linux" }
        #expect(image?.sha256 != nil && image?.sha256 == seed?.sha256, "the restored disk's raw content is the original's")
        // Audited: the run and the restore.
        let events = try f.audit.events(matching: AuditQuery(module: "backup"))
        #expect(Set(events.map(\.kind)) == ["backup.run", "backup.restore"])
    }

    @Test("retention: keep_last 2 over three runs deletes the oldest backup, manifest and disk")
    func retention() async throws {
        let f = try BackupFixture()
        try await f.instance("web-1")
        var ids: [String] = []
        for _ in 0..<3 {
            let run = try await f.runner.run(f.policy(["web-1"], keepLast: 2))
            #expect(run.phase == .completed)
            ids.append(run.units[0].backupID)
            // Backup ids carry seconds: keep runs in different seconds so their order is certain.
            try await Task.sleep(for: .milliseconds(1100))
        }
        let listed = try await BackupInventory().backups(of: f.policy(["web-1"])).map(\.backupID)
        #expect(listed == [ids[2], ids[1]])
        #expect(try f.storeFiles().allSatisfy { !$0.contains(ids[0]) })
        let last = try f.journal.runs(policy: "nightly").first
        #expect(last?.deletions == [ids[0]] && last?.deleted == 1)
    }

    @Test("stop-and-export stops a running instance for the snapshot and starts it again; one left stopped stays stopped")
    func stopAndExport() async throws {
        let f = try BackupFixture()
        let web = try await f.instance("web-1")
        let db = try await f.instance("db-1")
        _ = try await f.cloud.shutdown(db.id)
        _ = try await f.cloud.waitFor(instance: db.id, state: .stopped, timeout: .seconds(5), pollInterval: .milliseconds(5))
        let run = try await f.runner.run(f.policy(["web-1", "db-1"], method: .stopAndExport))
        #expect(run.phase == .completed, "\(run.reason ?? "")")
        let steps = try f.journal.steps(run.runID).map(\.step)
        #expect(steps.filter { $0 == "stop" || $0 == "start" } == ["stop", "start"], "\(steps)")
        #expect(try await f.cloud.describe(instance: web.id).state == .running)
        #expect(try await f.cloud.describe(instance: db.id).state == .stopped)
    }

    @Test("one failing instance does not stop the others: the run is partial, the failed one leaves nothing behind")
    func partial() async throws {
        let f = try BackupFixture()
        try await f.instance("web-1")
        try await f.instance("db-1")
        // The first export (web-1) fails.
        await f.cloud.inject(.fail(.exportImage, times: 1))
        let run = try await f.runner.run(f.policy(["web-1", "db-1", "ghost"]))
        #expect(run.phase == .partial)
        #expect(run.units.map(\.state) == [.failed, .done, .failed])
        #expect(run.units[2].error == "no instance named ghost")
        #expect(run.reason?.contains("web-1: export") == true)
        #expect(try f.storeFiles().count == 2)
        #expect(try await f.snapshotImages().isEmpty)
        let event = try #require(try f.audit.events(matching: AuditQuery(module: "backup", kind: "backup.run")).first)
        #expect(event.reason == "partial" && event.detail.contains("ghost"))
    }

    @Test("refused up front, with nothing done: a second instance of one name, an unreachable store")
    func refusals() async throws {
        let f = try BackupFixture()
        try await f.instance("web-1")
        try await f.instance("web-1")
        let run = try await f.runner.run(f.policy(["web-1"]))
        #expect(run.phase == .failed && run.reason?.contains("2 instances are named web-1") == true)
        let blocked = f.directory.url.appendingPathComponent("file")
        try Data("x".utf8).write(to: blocked)
        let policy = BackupPolicy(name: "p", instances: ["web-1"], target: .directory(path: blocked.appendingPathComponent("sub").path))
        await #expect {
            try await f.runner.run(policy)
        } throws: { error in
            (error as? BackupError)?.description.contains("cannot be used") == true
        }
    }

    @Test("a tampered disk in the store is refused at restore: nothing is imported or created")
    func tamperedDisk() async throws {
        let f = try BackupFixture()
        try await f.instance("web-1")
        let run = try await f.runner.run(f.policy(["web-1"]))
        let id = run.units[0].backupID
        let disk = f.storeRoot.appendingPathComponent("nightly/\(id)/disk.qcow2")
        let handle = try FileHandle(forWritingTo: disk)
        try handle.seek(toOffset: 4096)
        try handle.write(contentsOf: Data("tampered".utf8))
        try handle.close()
        let imagesBefore = try await f.cloud.listImages().count
        let restored = try await f.runner.restore(backupID: id, policy: "nightly", target: .directory(path: f.storeRoot.path), instanceName: "x", sizeID: nil)
        #expect(restored.phase == .failed)
        #expect(restored.reason?.contains("the manifest says") == true)
        #expect(try await f.cloud.listImages().count == imagesBefore)
        #expect(try await f.cloud.listInstances().allSatisfy { $0.name != "x" })
        #expect((try? FileManager.default.contentsOfDirectory(atPath: f.staging.path))?.isEmpty ?? true)
    }

    @Test("a disk that is a symbolic link to a host file is never read; a forged manifest is refused and audited")
    func hostileStore() async throws {
        let f = try BackupFixture()
        try await f.instance("web-1")
        let run = try await f.runner.run(f.policy(["web-1"]))
        let id = run.units[0].backupID
        let folder = f.storeRoot.appendingPathComponent("nightly/\(id)")
        let disk = folder.appendingPathComponent("disk.qcow2")
        try FileManager.default.removeItem(at: disk)
        try FileManager.default.createSymbolicLink(atPath: disk.path, withDestinationPath: "/etc/passwd")
        let viaLink = try await f.runner.restore(backupID: id, policy: "nightly", target: .directory(path: f.storeRoot.path), instanceName: "x", sizeID: nil)
        #expect(viaLink.phase == .failed && viaLink.reason?.contains("not a regular file") == true, "\(viaLink.reason ?? "")")

        try Data(#"{"format":"intercloud-backup/1","backupID":"\#(id)","policy":"nightly"}"#.utf8)
            .write(to: folder.appendingPathComponent("manifest.json"))
        await #expect {
            try await f.runner.restore(backupID: id, policy: "nightly", target: .directory(path: f.storeRoot.path), instanceName: "x", sizeID: nil)
        } throws: { error in
            (error as? BackupError)?.description.contains("manifest refused") == true
        }
        let listing = try await BackupInventory(audit: f.audit).backups(of: f.policy(["web-1"]))
        #expect(listing.first?.status == "refused")
        #expect(try f.audit.events(matching: AuditQuery(module: "backup", kind: "backup.manifest")).first?.outcome == .refused)
    }

    @Test("restore refuses a size this cloud lacks and an instance name in use, before anything is downloaded")
    func restoreRefusals() async throws {
        let f = try BackupFixture()
        try await f.instance("web-1")
        let run = try await f.runner.run(f.policy(["web-1"]))
        let id = run.units[0].backupID
        let target = BackupTarget.directory(path: f.storeRoot.path)
        await #expect(throws: BackupError.self) {
            try await f.runner.restore(backupID: id, policy: "nightly", target: target, instanceName: "y", sizeID: "m5.large")
        }
        await #expect(throws: BackupError.self) {
            try await f.runner.restore(backupID: id, policy: "nightly", target: target, instanceName: "web-1", sizeID: nil)
        }
        await #expect(throws: BackupError.self) {
            try await f.runner.restore(backupID: "../../etc", policy: "nightly", target: target, instanceName: "y", sizeID: nil)
        }
        #expect(try f.journal.restores().isEmpty)
    }
}
