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
    /// Format to use for the export/import round trip.
    var exportFormat: ImageFormat = .qcow2
    /// Called after each boot reached `.running` (the QEMU guest must be up before ACPI requests).
    var afterBoot: @Sendable (Instance) async throws -> Void = { _ in }
    var teardown: @Sendable () async -> Void = {}
}

/// Backends the conformance suite runs against.
enum Backend: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case simcloud
    case libvirtTest = "libvirt-test"
    case libvirtQemu = "libvirt-qemu-session"
    case ec2Moto = "ec2-moto"

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
@discardableResult
func runCommand(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let environment { process.environment = environment }
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let output = String(decoding: data, as: UTF8.self)
    guard process.terminationStatus == 0 else {
        throw CommandError(command: ([executable] + arguments).joined(separator: " "), output: output)
    }
    return output
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
