import Broker
import Foundation
import Migration
import TestSupport
import Testing

/// A destination broker killed (`kill -9`) right after it received the source's `transferred`
/// costs the source seconds, not its request timeout: the source's request fails as soon as the
/// destination's XMPP session ends (its presence goes unavailable, at the latest when the restarted
/// broker's new session replaces the dead one), and the source's rollback waits for the destination
/// to be available again before it sends its `abort`. Two real `intercloud serve` processes over the
/// test Prosody (the `BrokerMigrationCrashTests` harness), with `request_timeout_seconds = 30`.
@Suite(.serialized, .timeLimit(.minutes(10))) struct BrokerMigrationPeerGoneTests {
    let server: TestProsody

    init() throws { server = try TestProsody.shared() }

    static let requestTimeout: TimeInterval = 30

    @Test func aDestinationKilledInsideAHandlerFailsTheSourcesRequestWithinSeconds() async throws {
        let clouds = try CrashTestClouds(server: server, providerSection: { _, data, _ in
            CrashTestClouds.simCloudSection(data).replacingOccurrences(
                of: "request_timeout_seconds = 8", with: "request_timeout_seconds = \(Int(Self.requestTimeout))")
        })
        defer { clouds.killAll() }
        try await clouds.start()
        try await clouds.negotiate()

        let started = Date()
        let run = try await clouds.migrateOnce(killing: (.destination, "destination:receiving:transport receive"))
        let elapsed = Date().timeIntervalSince(started)
        let context = run.diagnostics
        #expect(run.killedBySIGKILL, "\(context)")

        // When the destination died: its last journal write before the kill (the hook fires right after it).
        let destinationSteps = try #require(try clouds.journal(.destination)?.steps(run.migrationID, role: .destination))
        let killedAt = try #require(destinationSteps.first { $0.phase == "receiving" && $0.step == "transport receive" }?.at, "\(context)")
        // When the source's request failed, and when it was sent.
        let sourceSteps = try #require(try clouds.journal(.source)?.steps(run.migrationID, role: .source))
        let sent = try #require(sourceSteps.first { $0.step == "send transferred" && $0.outcome == "issued" }?.at, "\(context)")
        let failed = try #require(sourceSteps.first { $0.step == "send transferred" && $0.outcome == "failed" }, "\(context)")
        let waited = failed.at.timeIntervalSince(killedAt)
        #expect(killedAt >= sent.addingTimeInterval(-1), "\(context)")
        #expect(waited < 10, "the source's request failed \(waited) s after the destination was killed (\(failed.detail)): \(context)")
        #expect(failed.detail.contains("session ended") || failed.detail.contains("unavailable"), "\(failed.detail)")
        // The rollback's abort reached the restarted destination, and both sides agree.
        #expect(sourceSteps.contains { $0.step == "send abort" && $0.outcome == "answered" }, "\(context)")
        #expect(run.sourcePhase == "rolledBack", "\(context)")
        #expect(run.destinationPhase == "rolledBack", "\(context)")
        #expect(run.running.count == 1, "\(context)")
        #expect(run.running.first?.cloud == "cloud1", "\(context)")
        #expect(run.running.first?.diskSHA256 == run.originalDiskSHA256, "\(context)")
        #expect(run.unfinishedMigrations.isEmpty, "\(context)")
        print("destination killed inside a handler: the source's request failed after \(String(format: "%.1f", waited)) s (request timeout \(Int(Self.requestTimeout)) s: \(failed.detail)); whole run \(String(format: "%.0f", elapsed)) s")
    }
}

/// `[migration] peer_check_seconds`: how long a destination waits on its source before asking it.
@Suite struct BrokerMigrationPeerCheckConfigurationTests {
    let valid = """
        [broker]
        cloud = "cloud2"
        regions = ["eu-west"]
        database = "state/broker.sqlite"

        [xmpp]
        jid = "broker@cloud2.test"
        password = "secret"
        ca_file = "ca.pem"
        """

    @Test func peerCheckSecondsIsReadAndBounded() throws {
        #expect(try BrokerConfiguration.parse(valid, path: "/x/c.toml").migration.peerCheckInterval == 60)
        let set = try BrokerConfiguration.parse(valid + "\n[migration]\npeer_check_seconds = 15\n", path: "/x/c.toml")
        #expect(set.migration.peerCheckInterval == 15)
        for bad in ["0", "-3", "0.5"] {
            #expect(throws: BrokerConfiguration.Error.self) {
                _ = try BrokerConfiguration.parse(valid + "\n[migration]\npeer_check_seconds = \(bad)\n", path: "/x/c.toml")
            }
        }
    }
}
