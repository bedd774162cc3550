import Broker
import Discovery
import Foundation
import Logging
import ServiceLifecycle
import TestSupport
import XMPP

/// Runs a real `BrokerNode` (as `intercloud serve` does) against a test Prosody.
final class RunningBroker: Sendable {
    let node: BrokerNode
    let group: ServiceGroup
    let task: Task<Void, any Error>

    init(
        configuration: BrokerConfiguration, clock: any Clock<Duration> = ContinuousClock(),
        wallClock: @escaping @Sendable () -> Date = { Date() }
    ) throws {
        node = try BrokerNode(configuration: configuration, clock: clock, wallClock: wallClock)
        group = ServiceGroup(configuration: .init(services: [.init(service: node)], logger: Logger(label: "test")))
        let group = self.group
        task = Task { try await group.run() }
    }

    /// Graceful stop, as on SIGTERM.
    func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await task.value
    }

    func peer(_ jid: String) -> PeerRecord? {
        (try? node.registry.peer(try JID(jid))) ?? nil
    }

    func sees(_ jid: String, online: Bool = true) -> Bool {
        peer(jid)?.online == online
    }
}

/// Accounts and configuration files for brokers in a temporary directory.
struct BrokerFixture {
    let server: TestProsody
    let directory: URL

    init(server: TestProsody) {
        self.server = server
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("intercloud-broker-\(UUID().uuidString.prefix(8))")
        try? FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    /// A broker account on `host` plus a configuration for it. `room` is a unique exchange room
    /// name so tests running in parallel do not see each other's brokers.
    func configuration(
        cloud: String, host: String, rooms: [String] = [], peers: [String] = [], approve: [String] = [],
        account: (jid: String, password: String)? = nil, extraTOML: String = ""
    ) throws -> (BrokerConfiguration, jid: String) {
        let account = try account ?? server.freshAccount(prefix: "broker-\(cloud)", host: host)
        let list = { (values: [String]) in values.map { "\"\($0)\"" }.joined(separator: ", ") }
        let toml = """
            [broker]
            cloud = "\(cloud)"
            regions = ["\(cloud)-a"]
            database = "\(cloud)-\(account.jid).sqlite"

            [xmpp]
            jid = "\(account.jid)/broker"
            password = "\(account.password)"
            host = "\(server.address)"
            port = \(server.port)
            ca_file = "\(server.caFile)"

            [discovery]
            rooms = [\(list(rooms))]
            peers = [\(list(peers))]
            approve = [\(list(approve))]

            \(extraTOML)
            """
        let path = directory.appendingPathComponent("\(cloud)-\(UUID().uuidString.prefix(6)).toml").path
        try toml.write(toFile: path, atomically: true, encoding: .utf8)
        return (try BrokerConfiguration.load(path: path), account.jid)
    }
}
