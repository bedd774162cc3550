import Broker
import Discovery
import Foundation
import TestSupport
import Testing
import Trust
import XMPP
import XMLModel

/// Brokers against a real Prosody (two virtual hosts), over verified TLS.
@Suite(.timeLimit(.minutes(3))) struct BrokerDiscoveryIntegrationTests {
    let server: TestProsody

    init() throws { server = try TestProsody.shared() }

    func uniqueRoom() -> String { "exchange-\(UUID().uuidString.prefix(8).lowercased())@conference.cloud1.test" }

    @Test func brokersFindEachOtherInAnExchangeRoomAndSeeOfflineAndReturn() async throws {
        let fixture = BrokerFixture(server: server)
        let room = uniqueRoom()
        let (config1, jid1) = try fixture.configuration(cloud: "cloud1", host: "cloud1.test", rooms: [room])
        let (config2, jid2) = try fixture.configuration(cloud: "cloud2", host: "cloud2.test", rooms: [room])
        let broker1 = try RunningBroker(configuration: config1)
        var broker2 = try RunningBroker(configuration: config2)

        #expect(await eventually { broker1.sees(jid2) && broker2.sees(jid1) })
        let seen = try #require(broker1.peer(jid2))
        #expect(seen.cloud == "cloud2")
        #expect(seen.regionList == ["cloud2-a"])
        #expect(seen.via == "room:\(room)")
        #expect(await eventually { broker1.peer(jid2)?.featureList.contains(Announcement.namespace) == true })

        await broker2.stop()
        #expect(await eventually { broker1.sees(jid2, online: false) })

        broker2 = try RunningBroker(configuration: config2)
        #expect(await eventually { broker1.sees(jid2) })
        await broker1.stop()
        await broker2.stop()
    }

    @Test func directPeeringWithAutomaticApproval() async throws {
        let fixture = BrokerFixture(server: server)
        let account2 = try server.freshAccount(prefix: "broker-cloud2", host: "cloud2.test")
        let (config1, jid1) = try fixture.configuration(cloud: "cloud1", host: "cloud1.test", peers: [account2.jid])
        let (config2, _) = try fixture.configuration(cloud: "cloud2", host: "cloud2.test", approve: ["*@cloud1.test"], account: account2)
        let broker2 = try RunningBroker(configuration: config2)
        let broker1 = try RunningBroker(configuration: config1)
        #expect(await eventually { broker1.sees(account2.jid) && broker2.sees(jid1) })
        #expect(broker1.peer(account2.jid)?.via == "direct")
        #expect(broker2.peer(jid1)?.subscription == "approved")
        await broker1.stop()
        #expect(await eventually { broker2.sees(jid1, online: false) })
        await broker2.stop()
    }

    @Test func unapprovedPeeringWaitsForTheOperator() async throws {
        let fixture = BrokerFixture(server: server)
        let account2 = try server.freshAccount(prefix: "broker-cloud2", host: "cloud2.test")
        let (config1, jid1) = try fixture.configuration(cloud: "cloud1", host: "cloud1.test", peers: [account2.jid])
        let (config2, _) = try fixture.configuration(cloud: "cloud2", host: "cloud2.test", account: account2)
        let broker2 = try RunningBroker(configuration: config2)
        let broker1 = try RunningBroker(configuration: config1)
        #expect(await eventually { broker2.peer(jid1)?.subscription == "pending-approval" })
        // No presence may flow before approval. Shown without waiting: broker2 has performed
        // everything it decided so far; a ping it sends after that reaches broker1 behind any
        // presence it sent; broker1 has then handled everything that arrived before the ping.
        await broker2.node.discoveryCaughtUp()
        _ = try await broker2.node.client.ping(try RunningBroker.full(jid1))
        await broker1.node.discoveryCaughtUp()
        #expect(!broker1.sees(account2.jid), "no presence may flow before approval")

        // What `intercloud peers approve` does: record the decision in the broker's database.
        try broker2.node.registry.approve(try JID(jid1), now: Date())
        #expect(await eventually { broker1.sees(account2.jid) && broker2.sees(jid1) })
        await broker1.stop()
        await broker2.stop()
    }

    /// `intercloud peers reject` declines a waiting request; a request nobody decides on is
    /// declined after `[discovery] approval_wait_hours`. Either way the row goes and the audit says why.
    @Test func theOperatorRejectsAPeeringRequestAndUndecidedOnesExpire() async throws {
        let fixture = BrokerFixture(server: server)
        let account2 = try server.freshAccount(prefix: "broker-cloud2", host: "cloud2.test")
        let (config1, jid1) = try fixture.configuration(cloud: "cloud1", host: "cloud1.test", peers: [account2.jid])
        let (config3, jid3) = try fixture.configuration(cloud: "cloud3", host: "cloud1.test", peers: [account2.jid])
        var (config2, _) = try fixture.configuration(cloud: "cloud2", host: "cloud2.test", account: account2)
        config2.approvalWait = .seconds(3)
        let broker2 = try RunningBroker(configuration: config2)
        let broker1 = try RunningBroker(configuration: config1)
        #expect(await eventually { broker2.peer(jid1)?.subscription == "pending-approval" })
        // What `intercloud peers reject` does: record the decision in the broker's database.
        try broker2.node.registry.reject(try JID(jid1), now: Date())
        #expect(await eventually { broker2.peer(jid1) == nil })
        let rejected = broker2.auditEvents(peer: jid1, kind: "peering.request")
        #expect(rejected.map(\.reason) == ["declined"] && rejected.first?.detail == "rejected by the operator", "\(rejected)")

        let broker3 = try RunningBroker(configuration: config3)
        #expect(await eventually { broker2.peer(jid3)?.subscription == "pending-approval" })
        #expect(await eventually(timeout: .seconds(15)) { broker2.peer(jid3) == nil })
        let expired = broker2.auditEvents(peer: jid3, kind: "peering.request")
        #expect(expired.first?.detail == "no operator decision within the approval wait", "\(expired)")
        #expect(!broker1.sees(account2.jid) && !broker3.sees(account2.jid))
        #expect(!broker2.sees(jid1) && !broker2.sees(jid3))
        await broker3.stop()
        await broker1.stop()
        await broker2.stop()
    }

    @Test func statusQueryAnswersPeersAndRefusesStrangersAndMalformedRequests() async throws {
        let fixture = BrokerFixture(server: server)
        let room = uniqueRoom()
        let (config1, jid1) = try fixture.configuration(cloud: "cloud1", host: "cloud1.test", rooms: [room])
        let (config2, jid2) = try fixture.configuration(cloud: "cloud2", host: "cloud2.test", rooms: [room])
        let broker1 = try RunningBroker(configuration: config1)
        let broker2 = try RunningBroker(configuration: config2)
        #expect(await eventually { broker1.sees(jid2) && broker2.sees(jid1) })

        let target = try JID(jid1 + "/broker")
        let status = XMLElement("status", namespace: Announcement.namespace)
        let answer = try await broker2.node.client.iq(.get, to: target, payload: status)
        let announcement = try Announcement(parsing: try #require(answer.payload))
        #expect(announcement.cloud == "cloud1")

        let strangerAccount = try server.freshAccount(prefix: "stranger", host: "cloud2.test")
        let stranger = XMPPClient(configuration: .init(
            jid: try JID(strangerAccount.jid + "/s"), password: strangerAccount.password, host: "127.0.0.1",
            port: server.port, tls: .required(caFile: server.caFile)))
        stranger.start()
        try await stranger.waitUntilOnline()
        await #expect(throws: XMPPError.stanza(.forbidden("\(strangerAccount.jid) is not a known peer broker"))) {
            try await stranger.iq(.get, to: target, payload: status)
        }
        var malformed = status
        malformed.append(XMLElement("garbage", text: "<&>"))
        await #expect(throws: XMPPError.stanza(.badRequest("expected an empty <status xmlns='\(Announcement.namespace)'/>"))) {
            try await stranger.iq(.get, to: target, payload: malformed)
        }
        await #expect(throws: XMPPError.stanza(.badRequest("status is an IQ get"))) {
            try await broker2.node.client.iq(.set, to: target, payload: status)
        }
        // Refusals change no state: the stranger never becomes a peer.
        #expect(broker1.peer(strangerAccount.jid) == nil)
        await stranger.stop()
        await broker1.stop()
        await broker2.stop()
    }
}

/// Prosody is killed (SIGKILL) and restarted mid-run: brokers reconnect with backoff, announce
/// again, and their peer tables recover. Uses its own server so other tests are not disturbed.
@Suite(.timeLimit(.minutes(3))) struct BrokerServerRestartTests {
    @Test func brokersRecoverAfterTheServerIsKilledAndRestarted() async throws {
        let server = try TestProsody.start()
        defer { server.stop() }
        let fixture = BrokerFixture(server: server)
        let room = "exchange@conference.cloud1.test"
        let account2 = try server.freshAccount(prefix: "broker-cloud2", host: "cloud2.test")
        let (config1, jid1) = try fixture.configuration(cloud: "cloud1", host: "cloud1.test", rooms: [room], peers: [account2.jid])
        let (config2, jid2) = try fixture.configuration(cloud: "cloud2", host: "cloud2.test", rooms: [room], approve: ["*@cloud1.test"], account: account2)
        let broker1 = try RunningBroker(configuration: config1)
        let broker2 = try RunningBroker(configuration: config2)
        #expect(await eventually { broker1.sees(jid2) && broker2.sees(jid1) })

        server.kill()
        #expect(await eventually { !broker1.sees(jid2) && !broker2.sees(jid1) }, "losing the server marks peers offline")

        try server.restart()
        #expect(await eventually(timeout: .seconds(20)) { broker1.sees(jid2) && broker2.sees(jid1) }, "peer tables recover")
        await broker1.stop()
        await broker2.stop()
    }
}
