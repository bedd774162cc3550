import Backup
import Foundation
import Providers
import Storage
import TestSupport
import Trust
import Testing

/// Backups of a server of the real OpenStack the tests start (`TestOpenStack`): restored into
/// OpenStack as a new server whose guest boots, and into SimCloud with the same raw content.
@Suite("backup of OpenStack servers", .serialized, .timeLimit(.minutes(10)))
struct BackupOpenStackTests {
    static func driver(_ cloud: TestOpenStack) async throws -> OpenStackDriver {
        let driver = OpenStackDriver(configuration: .init(
            authURL: cloud.authURL, credentials: .applicationCredential(id: cloud.applicationCredentialID, secret: cloud.applicationCredentialSecret),
            region: cloud.region, kernelImage: cloud.kernelImageID, ramdiskImage: cloud.ramdiskImageID, kernelCommandLine: "console=ttyS0"))
        try await driver.connect()
        return driver
    }

    /// Waits until the server's console shows the guest's boot marker.
    static func waitForGuest(_ driver: OpenStackDriver, _ id: String, marker: String) async throws -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: .seconds(180))
        while clock.now < deadline {
            if ((try? await driver.consoleOutput(instance: id)) ?? "").contains(marker) { return true }
            try await Task.sleep(for: .seconds(1))
        }
        return false
    }

    @Test("snapshot of a running server to a directory; restored as a server that boots, and into SimCloud; no snapshot left in Glance")
    func serverRoundTrip() async throws {
        let cloud = try await TestOpenStack.shared()
        let driver = try await Self.driver(cloud)
        let directory = try TemporaryDirectory()
        let database = try IntercloudDatabase.open(
            path: directory.url.appendingPathComponent("broker.sqlite").path, schema: [BackupSchema.self, AuditSchema.self])
        let runner = BackupRunner(
            driver: driver, journal: BackupJournal(database: database),
            configuration: .init(staging: directory.url.appendingPathComponent("staging"), pollInterval: .seconds(1)))
        let name = "bk-os-\(UUID().uuidString.prefix(6).lowercased())"
        let server = try await driver.create(.init(name: name, sizeID: cloud.flavor, imageID: cloud.imageID), progress: nil)
        var made = [server.id]
        defer {
            let ids = made
            Task { for id in ids { try? await driver.terminate(instance: id) } }
        }
        _ = try await driver.waitFor(instance: server.id, state: .running, timeout: .seconds(240), pollInterval: .seconds(1))
        #expect(try await Self.waitForGuest(driver, server.id, marker: cloud.guestMarker))

        let policy = BackupPolicy(name: "openstack", instances: [name], format: .qcow2, target: .directory(path: directory.url.appendingPathComponent("store").path))
        let run = try await runner.run(policy)
        #expect(run.phase == .completed, "\(run.reason ?? "")")
        let snapshotName = run.units[0].snapshotName
        let glance = try cloud.cli(["image", "list", "--name", snapshotName]) as? [[String: Any]] ?? []
        #expect(glance.isEmpty, "the snapshot image is removed from Glance after the upload")
        let manifest = try #require(try await BackupInventory().backups(of: policy).first?.manifest)
        #expect(manifest.source.driver == "openstack" && manifest.source.sizeID == cloud.flavor)

        let restored = try await runner.restore(
            backupID: manifest.backupID, policy: "openstack", target: policy.target, instanceName: name + "-restored", sizeID: nil, bootTimeout: 240)
        #expect(restored.phase == .restored, "\(restored.reason ?? "")")
        if let id = restored.instanceID {
            made.append(id)
            #expect(try await Self.waitForGuest(driver, id, marker: cloud.guestMarker), "the restored disk boots")
        }

        var simConfiguration = SimCloud.Configuration(dataDirectory: directory.url.appendingPathComponent("sim"), delays: .instant)
        simConfiguration.durableWrites = false
        let sim = try SimCloud(configuration: simConfiguration)
        let simRunner = BackupRunner(
            driver: sim, journal: BackupJournal(database: database),
            configuration: .init(staging: directory.url.appendingPathComponent("staging2"), pollInterval: .milliseconds(5)))
        let moved = try await simRunner.restore(
            backupID: manifest.backupID, policy: "openstack", target: policy.target, instanceName: name, sizeID: "sim.small")
        #expect(moved.phase == .restored, "\(moved.reason ?? "")")
        if let content = manifest.disk.contentSHA256 {
            #expect(try await sim.listImages().first { $0.id == moved.imageID }?.sha256 == content)
        }

        for id in made { try await driver.terminate(instance: id) }
        made = []
        if let image = restored.imageID { try await driver.deregisterImage(id: image) }
    }
}
