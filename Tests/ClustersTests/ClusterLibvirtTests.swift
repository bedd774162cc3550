import Clusters
import Federation
import Foundation
import Providers
import TestSupport
import Testing

/// A driver on the shared test libvirt daemon (`TestLibvirtSession`): the driver waits for the
/// guest's ready marker, so `running` means the guest booted (and answers ACPI shutdown).
enum ClusterLibvirtSession {
    /// A driver with the guest's disk imported as image `guest-disk`, its folders under `root`.
    static func driver(root: URL) async throws -> LibvirtDriver {
        let uri = try await TestLibvirtSession.uri()
        let images = root.appendingPathComponent("images")
        let instances = root.appendingPathComponent("instances")
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
}

/// Clusters of real QEMU guests.
@Suite(.serialized, .timeLimit(.minutes(8)))
struct ClusterLibvirtTests {
    static func template(_ name: String) -> String {
        """
        version = 1
        name = "\(name)"
        description = "The tiny test guest."
        image = "guest-disk"
        size = "lv.small"

        [interface]
        protocol = "tcp"
        port = 7
        """
    }

    func fixture() async throws -> (runner: ClusterRunner, driver: LibvirtDriver, templates: [ServerTemplate], directory: TemporaryDirectory) {
        let directory = try TemporaryDirectory()
        let driver = try await ClusterLibvirtSession.driver(root: directory.url.appendingPathComponent("libvirt"))
        let templates = try TemplateLoader.load(paths: [
            try directory.file("guest-db.toml", Self.template("guest-db")), try directory.file("guest-web.toml", Self.template("guest-web")),
        ])
        let journal = try ClusterJournal.open(path: directory.url.appendingPathComponent("broker.sqlite").path)
        let runner = ClusterRunner(
            driver: driver, journal: journal,
            configuration: .init(cluster: .init(retryInterval: 1, maxRemoveAttempts: 5, maxCreateAttempts: 2, powerTimeout: 90), pollInterval: .milliseconds(200)))
        return (runner, driver, templates, directory)
    }

    func live(_ driver: LibvirtDriver, _ status: ClusterStatus) async throws -> [Instance] {
        let names = Set(status.servers.map(\.name))
        return try await driver.listInstances().filter { names.contains($0.name) && $0.state != .terminated }
    }

    @Test("launch (db guest booted before the web guest is created), stop, start, teardown")
    func lifecycle() async throws {
        let f = try await fixture()
        let definition = try ClusterLoader.parse(
            """
            version = 1
            name = "guests"
            [[member]]
            name = "db"
            template = "guest-db"
            boot_timeout_seconds = 120
            [[member]]
            name = "web"
            template = "guest-web"
            after = ["db"]
            boot_timeout_seconds = 120
            """, file: "guests.toml", templates: f.templates)
        let launched = try await f.runner.launch(definition, templates: f.templates)
        #expect(launched.phase == .running, "\(launched.reason ?? "")")
        let steps = try f.runner.journal.steps(launched.id).map(\.step)
        #expect(steps.filter { $0.hasPrefix("create") || $0.hasPrefix("await-running") } == [
            "create db-1", "await-running db-1", "create web-1", "await-running web-1",
        ])
        #expect(try await live(f.driver, launched).map(\.state) == [.running, .running])

        let stopped = try await f.runner.stop(name: "guests")
        #expect(stopped.phase == .stopped, "\(stopped.reason ?? "")")
        #expect(try await live(f.driver, launched).allSatisfy { $0.state == .stopped })

        let started = try await f.runner.start(name: "guests")
        #expect(started.phase == .running, "\(started.reason ?? "")")
        #expect(try await live(f.driver, launched).allSatisfy { $0.state == .running })

        let torn = try await f.runner.teardown(name: "guests")
        #expect(torn.phase == .tornDown)
        #expect(try await live(f.driver, launched).isEmpty)
    }

    @Test("a guest that cannot boot within its deadline: the running db guest is rolled back too, nothing is left")
    func rollback() async throws {
        let f = try await fixture()
        let definition = try ClusterLoader.parse(
            """
            version = 1
            name = "hasty"
            [[member]]
            name = "db"
            template = "guest-db"
            boot_timeout_seconds = 120
            [[member]]
            name = "web"
            template = "guest-web"
            after = ["db"]
            boot_timeout_seconds = 1
            """, file: "hasty.toml", templates: f.templates)
        let status = try await f.runner.launch(definition, templates: f.templates)
        #expect(status.phase == .failed)
        #expect(status.reason?.hasPrefix("web-1: did not run:") == true)
        #expect(try await live(f.driver, status).isEmpty)
        let terminated = try f.runner.journal.steps(status.id).map(\.step).filter { $0.hasPrefix("terminate ") }
        #expect(terminated == ["terminate web-1", "terminate db-1"])
    }
}
