import Broker
import Foundation
import TestSupport
import Testing

/// The benchmark the lead runs from bench/ works end to end (few iterations; numbers not checked).
@Suite(.timeLimit(.minutes(2))) struct BrokerTrustBenchmarkTests {
    @Test func benchmarkRunsBetweenTwoBrokers() async throws {
        let server = try TestProsody.shared()
        let account1 = try server.freshAccount(prefix: "bench1", host: "cloud1.test")
        let account2 = try server.freshAccount(prefix: "bench2", host: "cloud2.test")
        let report = try await BrokerTrustBenchmark.run(
            server: .init(port: Int(server.port), caFile: server.caFile),
            account1: .init(jid: account1.jid, password: account1.password),
            account2: .init(jid: account2.jid, password: account2.password),
            iterations: 10, warmup: 2)
        print(report)
        #expect(report.contains("trust handshake, initiator view (2 IQ round trips)"))
        #expect(report.contains("signed request"))
    }
}
