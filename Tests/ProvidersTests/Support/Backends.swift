import Foundation
import TestSupport
@testable import Providers

/// The repository root, to find `scripts/`.
let repositoryRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

func script(_ name: String) -> String { repositoryRoot.appendingPathComponent("scripts/\(name)").path }

/// A free loopback TCP port.
func freePort() throws -> Int { try freeLoopbackPort() }

/// One moto server for the whole test run, started by the tests themselves (scripts/moto.sh), with a
/// reset and a fresh IAM user before every test so signatures are checked from the first EC2 call.
actor MotoServer {
    static let shared = MotoServer()
    private let access = ExclusiveAccess()
    private var port: Int?

    struct Session: Sendable {
        var endpoint: URL
        var credentials: SigV4Signer.Credentials
    }

    private func started() throws -> Int {
        if let port { return port }
        guard let motoServer = which("moto_server") else {
            throw CommandError(command: "moto_server", output: "not installed: pip install \"moto[server]\"")
        }
        let port = try freePort()
        // `run PORT PID`: the script stops moto when this test process exits.
        var environment = ProcessInfo.processInfo.environment
        environment["MOTO_SERVER"] = motoServer
        try spawnDetached("/bin/bash", [script("moto.sh"), "run", String(port), String(getpid())], environment: environment)
        for _ in 0..<200 {
            if answersOK("http://127.0.0.1:\(port)/moto-api/") {
                self.port = port
                return port
            }
            Thread.sleep(forTimeInterval: 0.1)
        }
        throw CommandError(command: "moto.sh run \(port)", output: "moto did not answer within 20 s")
    }

    /// Resets moto, creates an IAM user with a key, and runs `body` with exclusive use of the server.
    nonisolated func withExclusiveAccess<T: Sendable>(_ body: (Session) async throws -> T) async throws -> T {
        await access.acquire()
        do {
            let port = try await started()
            let output = try runCommand("/bin/bash", [script("moto.sh"), "user", String(port)])
            let parts = output.split(whereSeparator: \.isWhitespace).map(String.init)
            guard parts.count == 2 else { throw CommandError(command: "moto.sh user", output: output) }
            let session = Session(
                endpoint: URL(string: "http://127.0.0.1:\(port)")!,
                credentials: .init(accessKeyID: parts[0], secretAccessKey: parts[1]))
            let result = try await body(session)
            await access.release()
            return result
        } catch {
            await access.release()
            throw error
        }
    }
}

enum EC2Fixture {
    static func configuration(_ session: MotoServer.Session) -> EC2Driver.Configuration {
        EC2Driver.Configuration(
            endpoint: session.endpoint, region: "us-east-1", credentials: session.credentials,
            retry: RetryPolicy(maxAttempts: 3, baseDelay: .milliseconds(20)), pageSize: 5, imageImportExport: false,
            partSize: 5 << 20)
    }

    static func make(_ session: MotoServer.Session) async throws -> DriverFixture {
        let driver = EC2Driver(configuration: configuration(session))
        let image = try await driver.registerImage(name: "conformance-ami", options: ["description": "test image"])
        return DriverFixture(driver: driver, imageID: image.id, sizeID: "t2.micro", timeout: .seconds(10))
    }
}

/// The tiny guest (kernel + busybox initramfs + disk), built once per machine by scripts/guest-build.sh.
enum TestGuest {
    static let directory = URL(fileURLWithPath: ProcessInfo.processInfo.environment["INTERCLOUD_GUEST_DIR"] ?? "/tmp/intercloud-test-guest")

    static func build() throws -> URL {
        try runCommand("/bin/bash", [script("guest-build.sh"), directory.path])
        return directory
    }
}

enum LibvirtFixture {
    /// libvirt's in-process test driver, with an image directory holding one small raw image.
    static func testDriver() async throws -> DriverFixture {
        let root = try TemporaryDirectory.make("libvirt-test")
        let images = root.appendingPathComponent("images")
        let driver = try await LibvirtDriver.connect(.init(uri: "test:///default", imageDirectory: images))
        let seed = root.appendingPathComponent("seed.raw")
        try Data((0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }).write(to: seed)
        let image = try await driver.importImage(from: seed, name: "seed", format: .raw, expectedSHA256: nil, progress: nil)
        return DriverFixture(
            driver: driver, imageID: image.id, sizeID: "lv.small", timeout: .seconds(10),
            enabledConditions: [LibvirtDriver.imageDirectoryCondition],
            teardown: {
                // test:///default is shared by the whole process: only remove this fixture's instances.
                for instance in (try? await driver.listInstances()) ?? [] where instance.imageID == image.id {
                    try? await driver.terminate(instance: instance.id)
                }
                try? FileManager.default.removeItem(at: root)
            })
    }

    /// libvirt's test driver with no image directory: instances have no disk (image `none`), and
    /// the image operations are off.
    static func testDriverWithoutImageDirectory() async throws -> DriverFixture {
        let driver = try await LibvirtDriver.connect(.init(uri: "test:///default"))
        let prefix = "no-images-"
        return DriverFixture(
            driver: driver, imageID: "none", sizeID: "lv.small", timeout: .seconds(10), namePrefix: prefix,
            teardown: {
                // test:///default is shared by the whole process: only remove this fixture's instances.
                for instance in (try? await driver.listInstances()) ?? [] where instance.name.hasPrefix(prefix) {
                    try? await driver.terminate(instance: instance.id)
                }
            })
    }

    /// A real QEMU guest under the private session daemon.
    static func qemuSession(_ session: QemuSession.Session) async throws -> DriverFixture {
        let root = try TemporaryDirectory.make("libvirt-qemu")
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: root.path)
        let images = root.appendingPathComponent("images")
        let instances = root.appendingPathComponent("instances")
        for directory in [images, instances] {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            // QEMU runs as the session user and writes overlays and console logs here.
            try runCommand("/bin/chown", ["\(session.uid):\(session.uid)", directory.path])
        }
        let driver = try await LibvirtDriver.connect(.init(
            uri: session.uri, imageDirectory: images, instanceDirectory: instances, domainType: "qemu",
            directBoot: .init(
                kernel: session.guest.appendingPathComponent("vmlinuz"), initrd: session.guest.appendingPathComponent("initrd.gz"),
                commandLine: "console=ttyS0 quiet"),
            fileOwner: .init(uid: session.uid, gid: session.uid)))
        let image = try await driver.importImage(
            from: session.guest.appendingPathComponent("disk.qcow2"), name: "guest-disk", format: .qcow2, expectedSHA256: nil,
            progress: nil)
        return DriverFixture(
            driver: driver, imageID: image.id, sizeID: "lv.small", timeout: .seconds(90),
            enabledConditions: [LibvirtDriver.imageDirectoryCondition], exportFormat: .vmdk,
            afterBoot: { instance in try await QemuSession.waitForGuest(instance, timeout: .seconds(90)) },
            bootCount: { instance in QemuSession.readyCount(instance) },
            waitForBoots: { instance, count in
                let clock = ContinuousClock()
                let deadline = clock.now.advanced(by: .seconds(90))
                while QemuSession.readyCount(instance) <= count {
                    guard clock.now < deadline else {
                        throw CommandError(command: "wait for reboot of \(instance.name)", output: "no new ready marker after 90 s")
                    }
                    try await Task.sleep(for: .milliseconds(100))
                }
            },
            teardown: {
                for instance in (try? await driver.listInstances()) ?? [] {
                    try? await driver.terminate(instance: instance.id)
                }
                try? FileManager.default.removeItem(at: root)
            })
    }
}

/// The private `qemu:///session` daemon (scripts/libvirt-session.sh), started once per test run.
actor QemuSession {
    static let shared = QemuSession()
    private let access = ExclusiveAccess()
    private var current: Session?

    struct Session: Sendable {
        var uri: String
        var guest: URL
        var uid: UInt32
    }

    private func started() throws -> Session {
        if let current { return current }
        let guest = try TestGuest.build()
        let directory = URL(fileURLWithPath: "/tmp/intercloud-libvirt-session-\(getpid())")
        let socket = try runCommand("/bin/bash", [script("libvirt-session.sh"), "start", directory.path, String(getpid())])
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let session = Session(uri: "qemu+unix:///session?socket=\(socket)", guest: guest, uid: 65534)
        current = session
        return session
    }

    nonisolated func withExclusiveAccess<T: Sendable>(_ body: (Session) async throws -> T) async throws -> T {
        await access.acquire()
        do {
            let result = try await body(try await started())
            await access.release()
            return result
        } catch {
            await access.release()
            throw error
        }
    }

    /// How many times the guest's init has printed its ready marker into the console log.
    static func readyCount(_ instance: Instance) -> Int {
        guard let log = instance.extra["consoleLog"],
              let text = try? String(contentsOfFile: log, encoding: .utf8) else { return 0 }
        return text.components(separatedBy: "INTERCLOUD-GUEST-READY").count - 1
    }

    /// Waits until the guest's init has printed its ready marker since its last power-off, so ACPI
    /// requests (shutdown, reboot) reach a running acpid.
    static func waitForGuest(_ instance: Instance, timeout: Duration) async throws {
        guard let log = instance.extra["consoleLog"] else { return }
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        while clock.now < deadline {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            if let ready = text.range(of: "INTERCLOUD-GUEST-READY", options: .backwards) {
                let off = text.range(of: "INTERCLOUD-GUEST-POWEROFF", options: .backwards)
                if off == nil || off!.lowerBound < ready.lowerBound { return }
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw CommandError(command: "wait for guest \(instance.name)", output: "no ready marker in \(log) after \(timeout)")
    }
}
