import Clusters
import Federation
import Foundation
import Providers
import Testing

/// Peer members against the real provider side of service federation (`FederationRunner` on its
/// own SimCloud), called in process instead of over XMPP.
@Suite("Cluster peer members")
struct ClusterPeerTests {
    static let mixed = """
        version = 1
        name = "mixed"
        [[member]]
        name = "db"
        template = "postgres-db"
        peer = "broker@cloud2.test"
        parameters = { database = "shop" }
        [[member]]
        name = "web"
        template = "web-server"
        after = ["db"]
        """

    @Test("a member at a peer is selected there first; teardown ends it at the peer")
    func launchAndTeardown() async throws {
        let peer = try InProcessFederationPeer()
        let f = try ClusterFixture(peer: peer)
        let status = try await f.runner.launch(try f.definition(Self.mixed), templates: f.templates)
        #expect(status.phase == .running)
        let db = try #require(status.servers.first)
        #expect(db.peer == "broker@cloud2.test")
        #expect(db.endpoint?.hasPrefix("postgresql://") == true)
        #expect(try await peer.liveInstances().count == 1)
        #expect(try await f.liveInstances().count == 1)
        #expect(f.progress.all.contains { $0.contains("token") && $0.contains("shown once") })

        // Stop leaves the peer's service running (the federation protocol has no stop).
        #expect(try await f.runner.stop(name: "mixed").phase == .stopped)
        #expect(try await peer.liveInstances().map(\.state) == [.running])

        let torn = try await f.runner.teardown(name: "mixed")
        #expect(torn.phase == .tornDown)
        #expect(try await peer.liveInstances().isEmpty)
        #expect(try await f.liveInstances().isEmpty)
    }

    @Test("a local member failing after the peer member runs: the peer's service is ended by the rollback")
    func rollbackReachesThePeer() async throws {
        let peer = try InProcessFederationPeer()
        let f = try ClusterFixture(peer: peer)
        await f.cloud.inject(.fail(.create, times: 1))
        let status = try await f.runner.launch(try f.definition(Self.mixed), templates: f.templates)
        #expect(status.phase == .failed)
        #expect(status.reason?.hasPrefix("web-1: create failed") == true)
        #expect(try await peer.liveInstances().isEmpty)
        #expect(try await f.liveInstances().isEmpty)
    }

    @Test("killed after the select went out, resumed: the same service is adopted, not selected twice")
    func resumeAfterSelect() async throws {
        let peer = try InProcessFederationPeer()
        let f = try ClusterFixture(peer: peer, observer: { event in
            if event.step == "place", event.unit == "db-1", event.stage == .performed { throw SimulatedCrash() }
        })
        await #expect(throws: ClusterError.halted) { _ = try await f.runner.launch(try f.definition(Self.mixed), templates: f.templates) }
        let g = try f.restarted()
        #expect(try await g.runner.resume().map(\.phase) == [.running])
        #expect(try await peer.liveInstances().count == 1)
        #expect(try await g.liveInstances().count == 1)
    }
}
