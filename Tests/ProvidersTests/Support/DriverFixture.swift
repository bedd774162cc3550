import Foundation
import Testing
@testable import Providers

/// A driver connected to a real backend, with an image and size to create instances from.
struct DriverFixture: Sendable {
    var driver: any CloudDriver
    var imageID: String
    var sizeID: String
    /// Generous for QEMU guests booting under TCG; SimCloud and moto settle at once.
    var timeout: Duration = .seconds(30)
    /// The driver options this fixture turned on (`image-dir`, ...): the lifecycle table's
    /// conditional cells are supported exactly when their option is among them.
    var enabledConditions: Set<CapabilityCondition> = []
    /// Names of instances this fixture creates start with it.
    var namePrefix = "conf-"
    /// Format to use for the export/import round trip.
    var exportFormat: ImageFormat = .qcow2
    /// Called after each boot reached `.running` (the QEMU guest must be up before ACPI requests).
    var afterBoot: @Sendable (Instance) async throws -> Void = { _ in }
    /// How many boots the guest has reported so far, and a wait for more than that many: a reboot
    /// keeps the instance `.running` throughout, so only the guest can say it has come back.
    var bootCount: @Sendable (Instance) async -> Int = { _ in 0 }
    var waitForBoots: @Sendable (Instance, Int) async throws -> Void = { _, _ in }
    var teardown: @Sendable () async -> Void = {}
}

/// Backends the conformance suite runs against.
enum Backend: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case simcloud
    case libvirtTest = "libvirt-test"
    case libvirtQemu = "libvirt-qemu-session"
    case ec2Moto = "ec2-moto"
    case openstack

    var testDescription: String { rawValue }

    /// All backends, or those named in `INTERCLOUD_TEST_BACKENDS` (comma-separated) for a quick local run.
    /// CI leaves it unset, so every backend runs.
    static var selected: [Backend] {
        guard let names = ProcessInfo.processInfo.environment["INTERCLOUD_TEST_BACKENDS"], !names.isEmpty else { return allCases }
        return names.split(separator: ",").compactMap { Backend(rawValue: String($0)) }
    }

    static func run(_ fixture: DriverFixture, _ body: (DriverFixture) async throws -> Void) async throws {
        do { try await body(fixture) } catch {
            await fixture.teardown()
            throw error
        }
        await fixture.teardown()
    }

    /// Runs `body` with a fresh fixture, tearing it down afterwards even if `body` throws.
    func withFixture(_ body: (DriverFixture) async throws -> Void) async throws {
        switch self {
        case .simcloud:
            try await Self.run(try SimCloudFixture.make(), body)
        case .libvirtTest:
            try await Self.run(try await LibvirtFixture.testDriver(), body)
        case .libvirtQemu:
            try await QemuSession.shared.withExclusiveAccess { session in
                try await Self.run(try await LibvirtFixture.qemuSession(session), body)
            }
        case .ec2Moto:
            try await MotoServer.shared.withExclusiveAccess { moto in
                let fixture = try await EC2Fixture.make(moto)
                try await body(fixture)
            }
        case .openstack:
            // One cloud for the whole run: its fixtures take turns, as moto's do.
            await OpenStackFixture.access.acquire()
            do {
                try await Self.run(try await OpenStackFixture.make(), body)
            } catch {
                await OpenStackFixture.access.release()
                throw error
            }
            await OpenStackFixture.access.release()
        }
    }
}

enum TemporaryDirectory {
    static func make(_ prefix: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

enum SimCloudFixture {
    static func make(delays: SimCloud.Delays = .instant, limits: SimCloud.Limits = .init()) throws -> DriverFixture {
        let directory = try TemporaryDirectory.make("simcloud")
        let driver = try SimCloud(configuration: .init(dataDirectory: directory, delays: delays, limits: limits))
        return DriverFixture(
            driver: driver, imageID: SimCloud.seedImageID, sizeID: "sim.small", timeout: .seconds(10),
            teardown: { try? FileManager.default.removeItem(at: directory) })
    }
}

/// Serializes tests that share one external backend (moto's global state, one QEMU session daemon),
/// while the rest of the suite runs in parallel.
actor ExclusiveAccess {
    private var busy = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    func acquire() async {
        if !busy {
            busy = true
            return
        }
        await withCheckedContinuation { waiters.append($0) }
    }

    func release() {
        if waiters.isEmpty { busy = false } else { waiters.removeFirst().resume() }
    }
}

/// Runs a command and returns its output, failing with the output on a non-zero exit.
///
/// Uses posix_spawn and waitpid rather than Foundation's `Process`: a command that leaves a daemon
/// behind (the libvirt session script) keeps inherited descriptors open, and `Process` then never
/// reports the command's exit. Output goes to a temporary file for the same reason.
@discardableResult
func runCommand(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) throws -> String {
    let outputPath = FileManager.default.temporaryDirectory.appendingPathComponent("command-\(UUID().uuidString).out").path
    defer { unlink(outputPath) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    let environment = environment ?? ProcessInfo.processInfo.environment
    let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
    let envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer {
        for pointer in argv { free(pointer) }
        for pointer in envp { free(pointer) }
    }
    var attributes = cleanSignalAttributes()
    defer { posix_spawnattr_destroy(&attributes) }
    var pid = pid_t()
    let spawned = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
    guard spawned == 0 else {
        throw CommandError(command: executable, output: String(cString: strerror(spawned)))
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let text = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
    let exited = (status & 0x7f) == 0
    guard exited && (status >> 8) & 0xff == 0 else {
        throw CommandError(command: ([executable] + arguments).joined(separator: " "), output: "status \(status): \(text)")
    }
    return text
}

/// Spawn attributes that give the child an empty signal mask and default dispositions. Threads of
/// this process block signals (Dispatch does), and a child inherits the spawning thread's mask: the
/// daemons our scripts start would otherwise ignore SIGTERM and outlive the test run.
func cleanSignalAttributes() -> posix_spawnattr_t {
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    var empty = sigset_t()
    sigemptyset(&empty)
    posix_spawnattr_setsigmask(&attributes, &empty)
    var all = sigset_t()
    sigfillset(&all)
    sigdelset(&all, SIGKILL)
    sigdelset(&all, SIGSTOP)
    posix_spawnattr_setsigdefault(&attributes, &all)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    return attributes
}

/// Starts a long-running helper without waiting for it (same clean signal state as `runCommand`).
func spawnDetached(_ executable: String, _ arguments: [String], environment: [String: String]) throws {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    var attributes = cleanSignalAttributes()
    defer { posix_spawnattr_destroy(&attributes) }
    let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
    let envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer {
        for pointer in argv { free(pointer) }
        for pointer in envp { free(pointer) }
    }
    var pid = pid_t()
    let spawned = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
    guard spawned == 0 else { throw CommandError(command: executable, output: String(cString: strerror(spawned))) }
}

struct CommandError: Error, CustomStringConvertible {
    var command: String
    var output: String
    var description: String { "\(command) failed: \(output)" }
}

/// Finds an executable on PATH (moto_server and aws live under pyenv shims or /usr/local/bin).
func which(_ name: String) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
    // pip-installed tools may live outside the PATH `swift test` passes on (pyenv shims, ~/.local/bin).
    let home = ProcessInfo.processInfo.environment["HOME"] ?? "/root"
    for directory in path.split(separator: ":").map(String.init) + ["/usr/local/bin", "\(home)/.local/bin", "\(home)/.pyenv/shims"] {
        let candidate = "\(directory)/\(name)"
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return nil
}
