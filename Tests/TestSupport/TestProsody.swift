import Foundation

/// A real Prosody server on loopback, started by the test process itself through
/// `scripts/prosody.sh` (so a test that needs XMPP never depends on something started by hand).
public final class TestProsody: Sendable {
    public let directory: URL
    public let port: UInt16
    /// The loopback address c2s listens on.
    public let address: String
    public var caFile: String { directory.appendingPathComponent("certs/ca.crt").path }

    /// The outcome of starting the shared server, computed once per process.
    private static let sharedStart: Result<TestProsody, any Error> = {
        do {
            let server = try TestProsody.start()
            atexit { try? TestProsody.sharedStart.get().stop() }
            return .success(server)
        } catch {
            return .failure(error)
        }
    }()

    /// One server shared by every test in the process; stopped when the process exits. A server
    /// that cannot start fails each test that needs it, with the script's output.
    public static func shared() throws -> TestProsody { try sharedStart.get() }

    public static func repositoryRoot() throws -> URL {
        var url = URL(fileURLWithPath: #filePath)
        while url.path != "/" {
            url.deleteLastPathComponent()
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url }
        }
        throw TestServiceError(message: "repository root not found above \(#filePath)")
    }

    private init(directory: URL, port: UInt16, address: String = "127.0.0.1") {
        self.directory = directory
        self.port = port
        self.address = address
    }

    /// Starts a fresh server in a new temporary directory on free loopback ports.
    public static func start() throws -> TestProsody {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("intercloud-prosody-\(UUID().uuidString.prefix(8))")
        let port = try freePortTriple()
        let server = TestProsody(directory: directory, port: port)
        try server.script("start", directory.path, String(port))
        return server
    }

    /// One cloud's own server: only `host` (and `conference.host`), on loopback address `address`,
    /// s2s on port 5269 of that address, other domains resolved through `hostsFile`. Two of these
    /// federate over server-to-server links as two clouds' servers do.
    public static func startDomain(host: String, address: String, hostsFile: String) throws -> TestProsody {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("intercloud-prosody-\(host)-\(UUID().uuidString.prefix(8))")
        var port: UInt16 = 0
        for _ in 0..<200 {
            let candidate = UInt16.random(in: 30000...45000)
            if isFree(candidate, address: address) { port = candidate; break }
        }
        guard port != 0 else { throw TestServiceError(message: "no free port on \(address)") }
        let server = TestProsody(directory: directory, port: port, address: address)
        try server.script("start-domain", directory.path, String(port), host, address, hostsFile)
        return server
    }

    /// Creates an account; returns the bare JID string.
    @discardableResult
    public func register(_ user: String, host: String, password: String) throws -> String {
        try script("register", directory.path, user, host, password)
        return "\(user)@\(host)"
    }

    /// A new account with a unique name, so parallel tests never share one.
    public func freshAccount(prefix: String, host: String, password: String = "pw-\(UUID().uuidString.prefix(6))") throws -> (jid: String, password: String) {
        let user = "\(prefix)-\(UUID().uuidString.prefix(8).lowercased())"
        return (try register(user, host: host, password: password), password)
    }

    public func stop() { try? script("stop", directory.path) }
    public func kill() { try? script("kill", directory.path) }
    /// Starts the server again on the same ports with the same data (accounts survive).
    public func restart() throws { try script("start", directory.path, String(port)) }

    private func script(_ arguments: String...) throws {
        let script = try TestProsody.repositoryRoot().appendingPathComponent("scripts/prosody.sh").path
        // The server dies with this test process even if it crashes or is killed.
        try runShell("PROSODY_WATCH_PID=\(getpid()) " + ([script] + arguments).map(shellQuoted).joined(separator: " "))
    }

    /// Three consecutive free TCP ports on loopback (c2s, s2s, proxy65).
    static func freePortTriple() throws -> UInt16 {
        for _ in 0..<200 {
            let base = UInt16.random(in: 30000...45000)
            if (0..<3).allSatisfy({ isFree(base + $0) }) { return base }
        }
        throw TestServiceError(message: "no free loopback ports")
    }

    static func isFree(_ port: UInt16, address: String = "127.0.0.1") -> Bool {
        let host = address
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr(host)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}

public struct TestServiceError: Error, CustomStringConvertible {
    public let message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
public func eventually(timeout: Duration = .seconds(10), _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(50))
    }
    return try await condition()
}

public func shellQuoted(_ argument: String) -> String {
    "'" + argument.replacingOccurrences(of: "'", with: "'\\''") + "'"
}

/// Runs a shell command to completion and throws with its output when it fails.
///
/// Uses posix_spawn and waitpid directly: Foundation's `Process.waitUntilExit` was seen to hang
/// here when the command leaves a background daemon behind (Prosody).
public func runShell(_ command: String) throws {
    _ = try runShellCapturing(command)
}

/// Runs `executable` with `arguments` (no shell parsing) and returns its standard output; a failure
/// throws with its standard error too (warnings there never mix into output a test parses).
@discardableResult
public func runProgram(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) throws -> String {
    let errors = FileManager.default.temporaryDirectory.appendingPathComponent("intercloud-stderr-\(UUID().uuidString).log")
    defer { try? FileManager.default.removeItem(at: errors) }
    do {
        return try runShellCapturing(
            ([executable] + arguments).map(shellQuoted).joined(separator: " ") + " 2>" + shellQuoted(errors.path),
            environment: environment)
    } catch let error as TestServiceError {
        let text = (try? String(contentsOf: errors, encoding: .utf8)) ?? ""
        throw TestServiceError(message: error.message + text)
    }
}

/// `runShell` returning the command's output; `environment` replaces this process's if given.
@discardableResult
public func runShellCapturing(_ command: String, environment: [String: String]? = nil) throws -> String {
    let log = FileManager.default.temporaryDirectory.appendingPathComponent("intercloud-shell-\(UUID().uuidString).log")
    defer { try? FileManager.default.removeItem(at: log) }
    let full = "exec > \(shellQuoted(log.path)) 2>&1 < /dev/null; \(command)"
    var pid: pid_t = 0
    // The test process runs with most signals blocked on its threads (and SIGPIPE ignored); a child
    // would inherit that, and a Prosody with SIGTERM blocked can be neither stopped nor reached by
    // its watchdog. Spawn with an empty mask and default dispositions.
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var emptyMask = sigset_t()
    sigemptyset(&emptyMask)
    posix_spawnattr_setsigmask(&attributes, &emptyMask)
    var defaults = sigset_t()
    sigemptyset(&defaults)
    for signal in [SIGPIPE, SIGTERM, SIGINT, SIGHUP] { sigaddset(&defaults, signal) }
    posix_spawnattr_setsigdefault(&attributes, &defaults)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    let arguments: [String] = ["/bin/bash", "-c", full]
    let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
    defer { for pointer in argv { free(pointer) } }
    let environmentStrings: [UnsafeMutablePointer<CChar>?]? = environment.map { $0.map { strdup("\($0.key)=\($0.value)") } + [nil] }
    defer { for pointer in environmentStrings ?? [] { free(pointer) } }
    let spawned = environmentStrings.map { strings in
        strings.withUnsafeBufferPointer { posix_spawn(&pid, "/bin/bash", nil, &attributes, argv, UnsafeMutablePointer(mutating: $0.baseAddress)) }
    } ?? posix_spawn(&pid, "/bin/bash", nil, &attributes, argv, environ)
    guard spawned == 0 else { throw TestServiceError(message: "cannot run \(command): error \(spawned)") }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
    let exitCode = (status >> 8) & 0xFF
    let output = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
    guard status & 0x7F == 0, exitCode == 0 else {
        throw TestServiceError(message: "`\(command)` failed (status \(status)): \(output)")
    }
    return output
}
