import Foundation

/// A moto server (EC2, S3, IAM) on loopback, started by the test process itself through
/// `scripts/moto.sh` once per process and stopped when the process exits. `session()` resets it
/// and creates a fresh IAM user, after which moto checks every request's SigV4 signature; tests
/// that use it must therefore not run at the same time (one serialized suite).
public final class TestMoto: Sendable {
    public struct Session: Sendable {
        public var endpoint: URL
        public var accessKeyID: String
        public var secretAccessKey: String

        /// The environment a child process (awscli, `intercloud`) needs to sign as this user.
        public var environment: [String: String] {
            var environment = ProcessInfo.processInfo.environment
            environment["AWS_ACCESS_KEY_ID"] = accessKeyID
            environment["AWS_SECRET_ACCESS_KEY"] = secretAccessKey
            environment["AWS_DEFAULT_REGION"] = "us-east-1"
            environment["AWS_SESSION_TOKEN"] = nil
            return environment
        }
    }

    public static let shared = TestMoto()

    private static let started: Result<Int, any Error> = {
        do {
            let root = try TestProsody.repositoryRoot()
            let server = try RequiredProgram.path("moto_server", package: "moto[server] from PyPI")
            let port = try freeLoopbackPort()
            // `run PORT PID`: moto stops when this test process exits.
            try runShell(
                "MOTO_SERVER=\(shellQuoted(server)) setsid bash \(shellQuoted(root.path))/scripts/moto.sh run \(port) \(getpid()) >/dev/null 2>&1 &")
            for _ in 0..<300 {
                if answersOK("http://127.0.0.1:\(port)/moto-api/") { return .success(port) }
                Thread.sleep(forTimeInterval: 0.1)
            }
            throw TestServiceError(message: "moto did not answer on port \(port) within 30 s")
        } catch {
            return .failure(error)
        }
    }()

    private init() {}

    /// Resets moto and returns a new signing identity.
    public func session() throws -> Session {
        let port = try Self.started.get()
        let root = try TestProsody.repositoryRoot()
        let output = try runProgram("/bin/bash", [root.appendingPathComponent("scripts/moto.sh").path, "user", String(port)])
        let parts = output.split(whereSeparator: \.isWhitespace).map(String.init)
        guard parts.count == 2 else { throw TestServiceError(message: "moto.sh user printed \(output)") }
        return Session(endpoint: URL(string: "http://127.0.0.1:\(port)")!, accessKeyID: parts[0], secretAccessKey: parts[1])
    }
}

/// A free loopback TCP port (bind to port 0 and read what the kernel chose).
public func freeLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
            bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
        }
    }
    guard bound else { throw TestServiceError(message: "bind: \(String(cString: strerror(errno)))") }
    return Int(UInt16(bigEndian: address.sin_port))
}
