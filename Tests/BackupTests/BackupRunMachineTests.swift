import Backup
import Foundation
import Providers
import Testing

/// The run and restore machines alone: events in, actions out, no IO.
@Suite("backup machines")
struct BackupRunMachineTests {
    let now = Date(timeIntervalSince1970: 1_800_000_000)
    let digest = String(repeating: "cd", count: 32)

    func run(_ method: BackupPolicy.Method, instances: [String] = ["web-1"]) -> BackupRun {
        let policy = BackupPolicy(name: "p", instances: instances, method: method, keepLast: 2, powerTimeout: 30, target: .directory(path: "/b"))
        let units = instances.enumerated().map { index, name in
            BackupRun.Unit(instance: name, instanceID: "i-\(index)", instanceName: name, backupID: "bk-20261207-000000-00000\(index)", state: .pending, stoppedByRun: false)
        }
        return BackupRun(runID: "br-1", policy: policy, driver: "simcloud", units: units, now: now)
    }

    func file(_ id: String) -> ImageFile {
        ImageFile(url: URL(fileURLWithPath: "/staging/\(id).qcow2"), format: .qcow2, fileBytes: 100, fileSHA256: digest, contentSHA256: nil)
    }

    @Test("snapshot method: snapshot, export, upload, publish, clean, then retention")
    func snapshotFlow() {
        var machine = run(.snapshot)
        #expect(machine.start(now: now) == .snapshot(instanceID: "i-0", name: "backup-bk-20261207-000000-000000"))
        #expect(machine.snapshotTaken(Image(id: "img-1", name: "backup-x"), now: now) == .export(imageID: "img-1", backupID: "bk-20261207-000000-000000", format: .qcow2))
        #expect(machine.exported(file("a"), now: now) == .upload(file: file("a").url, key: "p/bk-20261207-000000-000000/disk.qcow2"))
        guard case .publish(let manifest, let key) = machine.uploaded(bytes: 100, sha256: digest, now: now) else {
            Issue.record("expected publish")
            return
        }
        #expect(key == "p/bk-20261207-000000-000000/manifest.json")
        #expect(manifest.disk.sha256 == digest && manifest.source.instanceID == "i-0")
        #expect(machine.published(now: now) == .clean(imageID: "img-1", file: file("a").url, discardKeys: []))
        #expect(machine.cleaned(now: now) == .listBackups)
        #expect(machine.listed([], now: now) == .none)
        #expect(machine.phase == .completed)
    }

    @Test("stop-and-export: a running instance is stopped, snapshotted, started again before the export")
    func stopAndExport() {
        var machine = run(.stopAndExport)
        #expect(machine.start(now: now) == .describe(instanceID: "i-0"))
        #expect(machine.described(Instance(id: "i-0", name: "web-1", state: .running, rawState: "running"), now: now) == .stop(instanceID: "i-0", timeout: 30))
        #expect(machine.stopped(now: now) == .snapshot(instanceID: "i-0", name: "backup-bk-20261207-000000-000000"))
        #expect(machine.snapshotTaken(Image(id: "img-1", name: "x"), now: now) == .start(instanceID: "i-0", timeout: 30))
        #expect(machine.started(now: now) == .export(imageID: "img-1", backupID: "bk-20261207-000000-000000", format: .qcow2))
    }

    @Test("stop-and-export of a stopped instance leaves it stopped")
    func alreadyStopped() {
        var machine = run(.stopAndExport)
        _ = machine.start(now: now)
        #expect(machine.described(Instance(id: "i-0", name: "web-1", state: .stopped, rawState: "shutoff"), now: now) == .snapshot(instanceID: "i-0", name: "backup-bk-20261207-000000-000000"))
        #expect(machine.snapshotTaken(Image(id: "img-1", name: "x"), now: now) == .export(imageID: "img-1", backupID: "bk-20261207-000000-000000", format: .qcow2))
    }

    @Test("a failed snapshot of a stopped-by-us instance starts it again, cleans up, and the next instance goes on")
    func failureRestarts() {
        var machine = run(.stopAndExport, instances: ["web-1", "db-1"])
        _ = machine.start(now: now)
        _ = machine.described(Instance(id: "i-0", name: "web-1", state: .running, rawState: "running"), now: now)
        _ = machine.stopped(now: now)
        #expect(machine.stepFailed("disk busy", now: now) == .start(instanceID: "i-0", timeout: 30))
        #expect(machine.started(now: now) == .clean(
            imageID: nil, file: nil, discardKeys: ["p/bk-20261207-000000-000000/manifest.json", "p/bk-20261207-000000-000000/disk.qcow2"]))
        #expect(machine.cleaned(now: now) == .describe(instanceID: "i-1"))
        #expect(machine.snapshot.units[0].state == .failed)
        #expect(machine.snapshot.units[0].error == "disk busy")
    }

    @Test("a clean-up that fails after the manifest was written leaves a complete backup with a warning")
    func cleanUpFailureAfterPublishing() {
        var machine = run(.snapshot, instances: ["web-1", "web-2"])
        _ = machine.start(now: now)
        _ = machine.snapshotTaken(Image(id: "img-1", name: "x"), now: now)
        _ = machine.exported(file("a"), now: now)
        _ = machine.uploaded(bytes: 100, sha256: digest, now: now)
        #expect(machine.published(now: now) == .clean(imageID: "img-1", file: file("a").url, discardKeys: []))
        // The next instance goes on.
        #expect(machine.stepFailed("image img-1 is busy", now: now) == .snapshot(instanceID: "i-1", name: "backup-bk-20261207-000000-000001"))
        let unit = machine.snapshot.units[0]
        #expect(unit.state == .done && unit.error == nil)
        #expect(unit.warning == "clean-up failed, left behind: image img-1 is busy")
    }

    @Test("an upload whose stored digest differs fails the unit; a run with no backup prunes nothing and fails")
    func digestMismatch() {
        var machine = run(.snapshot)
        _ = machine.start(now: now)
        _ = machine.snapshotTaken(Image(id: "img-1", name: "x"), now: now)
        _ = machine.exported(file("a"), now: now)
        guard case .clean = machine.uploaded(bytes: 100, sha256: String(repeating: "00", count: 32), now: now) else {
            Issue.record("expected clean")
            return
        }
        #expect(machine.cleaned(now: now) == .none)
        #expect(machine.phase == .failed)
        #expect(machine.snapshot.reason?.contains("not the exported file") == true)
    }

    @Test("resume: a snapshot in flight is looked up by name first; an upload is redone")
    func resume() {
        var machine = run(.snapshot)
        _ = machine.start(now: now)
        var resumed = BackupRun(resuming: machine.snapshot)
        #expect(resumed.resume(now: now) == .locateImage(name: "backup-bk-20261207-000000-000000"))
        #expect(resumed.imageLocated(nil, now: now) == .snapshot(instanceID: "i-0", name: "backup-bk-20261207-000000-000000"))
        _ = machine.snapshotTaken(Image(id: "img-1", name: "x"), now: now)
        _ = machine.exported(file("a"), now: now)
        var again = BackupRun(resuming: machine.snapshot)
        #expect(again.resume(now: now) == .upload(file: file("a").url, key: "p/bk-20261207-000000-000000/disk.qcow2"))
    }

    @Test("restore: a disk that differs from its manifest is never imported")
    func restoreMismatch() {
        let manifest = BackupManifest(
            backupID: "bk-20261207-000000-000000", policy: "p", runID: "br-1", method: .snapshot, createdAt: now,
            source: .init(driver: "simcloud", instanceID: "i-0", instanceName: "web-1", sizeID: "sim.small", imageID: nil),
            disk: .init(name: "disk.qcow2", format: .qcow2, bytes: 100, sha256: digest, contentSHA256: nil))
        var machine = BackupRestore(
            restoreID: "rs-1", manifest: manifest, target: .directory(path: "/b"), driver: "libvirt", instanceName: "web-2", sizeID: "lv.small",
            file: URL(fileURLWithPath: "/staging/rs-1.qcow2"), maxBytes: 1 << 30, bootTimeout: 60, now: now)
        #expect(machine.start(now: now) == .download(key: "p/bk-20261207-000000-000000/disk.qcow2", to: URL(fileURLWithPath: "/staging/rs-1.qcow2"), maxBytes: 1 << 30))
        #expect(machine.downloaded(bytes: 100, sha256: String(repeating: "ee", count: 32), now: now)
            == .clean(instanceID: nil, imageID: nil, file: URL(fileURLWithPath: "/staging/rs-1.qcow2")))
        #expect(machine.cleaned(now: now) == .none)
        #expect(machine.phase == .failed)
    }
}
