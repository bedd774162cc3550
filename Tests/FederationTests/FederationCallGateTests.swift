import Foundation
import Logging
import Storage
import TestSupport
import Testing

@testable import Federation

@Suite struct FederationCallGateTests {
    @Test func listensAndRefusesWhatItDoesNotServe() async throws {
        let (database, directory) = try IntercloudDatabase.temporary(schema: FederationStore.schema)
        defer { try? FileManager.default.removeItem(at: directory) }
        let gate = try FederationCallGate(host: "127.0.0.1", port: 0, database: database, logger: Logger(label: "test"))
        let running = Task { try await gate.run() }
        defer { running.cancel() }
        let port = try await gate.port()
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
