import Foundation
import GRDB
import Logging
import Storage
import TestSupport
import Testing

@testable import Federation

@Suite struct FederationCallGateTests {
    @Test func listensAndRefusesWhatItDoesNotServe() async throws {
        try await withRunningGate { database, port async throws in
            let base = "http://127.0.0.1:\(port)"
            #expect(try curlStatus(base + "/other") == 404)
            #expect(try curlStatus(base + FederationCallGate.path) == 400)
            // An unknown service has no credentials: refused, and nothing is counted for it.
            #expect(try curlStatus(
                base + FederationCallGate.path, headers: ["\(FederationCallGate.serviceHeader): svc-none", "Authorization: Bearer x"]) == 401)
            #expect(try FederationStore.callCount(database: database, serviceID: "svc-none") == .none)
            // Oversized fields are refused unread.
            #expect(try curlStatus(
                base + FederationCallGate.path,
                headers: ["\(FederationCallGate.serviceHeader): \(String(repeating: "s", count: 300))", "Authorization: Bearer x"]) == 400)
        }
    }

    @Test func answersSeveralRequestsOnOneConnectionAndClosesOneThatStaysSilent() async throws {
        try await withRunningGate { _, port async throws in
            // curl reuses a kept-alive connection for the second URL: one connect for two answers.
            let url = "http://127.0.0.1:\(port)/other"
            let answers = try await offPool { try runShellCapturing("curl -s -o /dev/null -o /dev/null -w '%{http_code} %{num_connects}\\n' \(url) \(url)") }
            #expect(answers.split(separator: "\n").map(String.init) == ["404 1", "404 0"], "\(answers)")
            // A client that connects and sends nothing is let go after the idle timeout (5 s), not kept.
            let started = ContinuousClock.now
            _ = try await offPool { try runShellCapturing("timeout 20 bash -c 'exec 3<>/dev/tcp/127.0.0.1/\(port); cat <&3' || true") }
            let waited = ContinuousClock.now - started
            #expect(waited >= .seconds(4) && waited < .seconds(15), "\(waited)")
        }
    }
}

/// A call gate on a free port of 127.0.0.1 over a database of its own, running while `body` runs.
private func withRunningGate(_ body: (DatabasePool, UInt16) async throws -> Void) async throws {
    let (database, directory) = try IntercloudDatabase.temporary(schema: FederationStore.schema)
    defer { try? FileManager.default.removeItem(at: directory) }
    let gate = try FederationCallGate(host: "127.0.0.1", port: 0, database: database, logger: Logger(label: "test"))
    let running = Task { try await gate.run() }
    defer { running.cancel() }
    try await body(database, try await gate.port())
}

/// Runs a blocking command on a dispatch queue: the gate's connections are served on the
/// cooperative pool, which tests running side by side must not fill with waiting threads.
private func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(with: Result { try body() }) }
    }
}
