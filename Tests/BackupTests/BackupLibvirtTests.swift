import Backup
import Foundation
import Providers
import Storage
import TestSupport
import Trust
import Testing

/// Backups of real QEMU guests under libvirt, restored into libvirt (the guest boots again) and
/// into SimCloud (another driver), with the disk's raw content the same at every end.
@Suite("backup of QEMU guests", .serialized, .timeLimit(.minutes(8)))
struct BackupLibvirtTests {
    static func driver(root: URL) async throws -> LibvirtDriver {
        let uri = try await TestLibvirtSession.uri()
        let images = root.appendingPathComponent("images"), instances = root.appendingPathComponent("instances")
        try TestLibvirtSession.prepareFolders([root, images, instances])
        let guest = TestLibvirtSession.guest
        let uid = UInt32(TestLibvirtSession.uid)
        let driver = try await LibvirtDriver.connect(.init(
            uri: uri, imageDirectory: images, instanceDirectory: instances, domainType: "qemu",
            directBoot: .init(
                kernel: guest.appendingPathComponent("vmlinuz"), initrd: guest.appendingPathComponent("initrd.gz"),
                commandLine: "console=ttyS0 quiet"),
            fileOwner: .init(uid: uid, gid: uid), bootMarker: TestLibvirtSession.bootMarker))
        _ = try await driver.importImage(
            from: guest.appendingPathComponent("disk.qcow2"), name: "guest-disk", format: .qcow2, expectedSHA256: nil, progress: nil)
        return driver
    }

    @Test("stop-and-export of a running guest: stopped for the snapshot, running again after; restored as a new guest that boots, and into SimCloud")
    func guestRoundTrip() async throws {
        let directory = try TemporaryDirectory()
        let driver = try await Self.driver(root: directory.url.appendingPathComponent("libvirt"))
        let database = try IntercloudDatabase.open(
            path: directory.url.appendingPathComponent("broker.sqlite").path, schema: [BackupSchema.self, AuditSchema.self])
        let runner = BackupRunner(
            driver: driver, journal: BackupJournal(database: database),
            configuration: .init(staging: directory.url.appendingPathComponent("staging"), pollInterval: .milliseconds(200)),
            audit: AuditLog(database: database))
        let image = try #require(try await driver.listImages().first { $0.name == "guest-disk" })
        let created = try await driver.create(.init(name: "guest-web", sizeID: "lv.small", imageID: image.id), progress: nil)
        _ = try await driver.waitFor(instance: created.id, state: .running, timeout: .seconds(120), pollInterval: .milliseconds(200))

        let store = directory.url.appendingPathComponent("store")
        let policy = BackupPolicy(
            name: "guests", instances: ["guest-web"], method: .stopAndExport, format: .qcow2, powerTimeout: 120,
            target: .directory(path: store.path))
        let run = try await runner.run(policy)
        #expect(run.phase == .completed, "\(run.reason ?? "")")
        let steps = try runner.journal.steps(run.runID).map(\.step)
        #expect(steps.contains("stop") && steps.contains("start"))
        #expect(try await driver.describe(instance: created.id).state == .running, "the guest runs again after its backup")
        #expect(try await driver.listImages().allSatisfy { !$0.name.hasPrefix("backup-") })
        let manifest = try #require(try await BackupInventory().backups(of: policy).first?.manifest)
        let content = try #require(manifest.disk.contentSHA256, "libvirt reports the raw content's digest")

        // Into libvirt again, as a new guest: it boots (the driver waits for the guest's marker).
        let again = try await runner.restore(
            backupID: manifest.backupID, policy: "guests", target: policy.target, instanceName: "guest-web-restored", sizeID: nil, bootTimeout: 120)
        #expect(again.phase == .restored, "\(again.reason ?? "")")
        if let id = again.instanceID { try? await driver.terminate(instance: id) }
        #expect(try await driver.listImages().first { $0.id == again.imageID }?.sha256 == content)

        // Into another driver: SimCloud, with its own journal.
        var simConfiguration = SimCloud.Configuration(dataDirectory: directory.url.appendingPathComponent("sim"), delays: .instant)
        simConfiguration.durableWrites = false
        let sim = try SimCloud(configuration: simConfiguration)
        let simDatabase = try IntercloudDatabase.open(
            path: directory.url.appendingPathComponent("cloud2.sqlite").path, schema: [BackupSchema.self, AuditSchema.self])
        let simRunner = BackupRunner(
            driver: sim, journal: BackupJournal(database: simDatabase),
            configuration: .init(staging: directory.url.appendingPathComponent("staging2"), pollInterval: .milliseconds(5)))
        let moved = try await simRunner.restore(
            backupID: manifest.backupID, policy: "guests", target: policy.target, instanceName: "guest-web", sizeID: "sim.small")
        #expect(moved.phase == .restored, "\(moved.reason ?? "")")
        #expect(try await sim.listImages().first { $0.id == moved.imageID }?.sha256 == content)
        // (A guest a failed expectation leaves goes with the test process's libvirt daemon.)
        try await driver.terminate(instance: created.id)
    }
}
