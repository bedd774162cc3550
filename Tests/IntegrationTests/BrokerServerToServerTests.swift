import Broker
import Discovery
import Foundation
import TestSupport
import Testing
import XMPP
import XMLModel

/// Each cloud with its own XMPP server, as in a real deployment: cloud1.test and cloud2.test are
/// separate Prosody instances on their own loopback addresses, federating over s2s (dialback),
/// and each broker is a client of its own cloud's server only.
@Suite(.serialized, .timeLimit(.minutes(2))) struct BrokerServerToServerTests {
    @Test func brokersOnSeparateServersPeerAcrossServerToServerLinks() async throws {
        let hosts = FileManager.default.temporaryDirectory.appendingPathComponent("intercloud-hosts-\(UUID().uuidString.prefix(6))")
        try "127.0.0.5 cloud1.test conference.cloud1.test\n127.0.0.6 cloud2.test conference.cloud2.test\n"
            .write(to: hosts, atomically: true, encoding: .utf8)
        let server1 = try TestProsody.startDomain(host: "cloud1.test", address: "127.0.0.5", hostsFile: hosts.path)
        defer { server1.stop() }
        let server2 = try TestProsody.startDomain(host: "cloud2.test", address: "127.0.0.6", hostsFile: hosts.path)
        defer { server2.stop() }

        let account2 = try server2.freshAccount(prefix: "broker-cloud2", host: "cloud2.test")
        let (config1, jid1) = try BrokerFixture(server: server1).configuration(
            cloud: "cloud1", host: "cloud1.test", peers: [account2.jid])
        let (config2, _) = try BrokerFixture(server: server2).configuration(
            cloud: "cloud2", host: "cloud2.test", approve: ["*@cloud1.test"], account: account2)
        let broker2 = try RunningBroker(configuration: config2)
        let broker1 = try RunningBroker(configuration: config1)

        #expect(await eventually(timeout: .seconds(20)) { broker1.sees(account2.jid) && broker2.sees(jid1) })
        #expect(broker1.peer(account2.jid)?.cloud == "cloud2")
        #expect(await eventually { broker1.peer(account2.jid)?.featureList.contains(Announcement.namespace) == true },
                "disco#info crosses the s2s link")

        // A request/response across both servers: cloud1's broker asks cloud2's for its status.
        let answer = try await broker1.node.client.iq(
            .get, to: try JID(account2.jid + "/broker"), payload: XMLElement("status", namespace: Announcement.namespace))
        #expect(try Announcement(parsing: try #require(answer.payload)).cloud == "cloud2")

        await broker1.stop()
        #expect(await eventually { broker2.sees(jid1, online: false) }, "unavailable presence crosses s2s")
        await broker2.stop()
        try? FileManager.default.removeItem(at: hosts)
    }
}
