import Broker
import Foundation
import Testing

/// The `[policy]` section: files resolved against the configuration, and a broker that refuses to
/// start on an invalid policy file, naming file, line and field.
@Suite struct BrokerPolicyTests {
    func configuration(policy: String, in directory: URL) throws -> BrokerConfiguration {
        let toml = """
            [broker]
            cloud = "cloud1"
            regions = ["eu-west"]
            database = "broker.sqlite"
            [xmpp]
            jid = "broker@cloud1.test"
            password = "p"
            tls = "disabled-for-testing"
            host = "127.0.0.1"
            [policy]
            files = ["policies/peers.toml"]
            """
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("policies"), withIntermediateDirectories: true)
        try policy.write(to: directory.appendingPathComponent("policies/peers.toml"), atomically: true, encoding: .utf8)
        let path = directory.appendingPathComponent("cloud1.toml").path
        try toml.write(toFile: path, atomically: true, encoding: .utf8)
        return try BrokerConfiguration.load(path: path)
    }

    @Test func validPolicyIsLoadedAtStart() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("policy-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: directory) }
        let configuration = try configuration(policy: """
            version = 1
            [[peer]]
            name = "cloud2"
            match = "*@cloud2.test"
            entitlements = ["query"]
            """, in: directory)
        #expect(configuration.policyFiles == [directory.appendingPathComponent("policies/peers.toml").standardizedFileURL.path])
        _ = try BrokerNode(configuration: configuration)
    }

    @Test func invalidPolicyStopsTheBrokerWithFileLineAndField() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("policy-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: directory) }
        let configuration = try configuration(policy: """
            version = 1
            [[peer]]
            name = "cloud2"
            match = "*@cloud2.test"
            entitlements = ["query", "teleport"]
            """, in: directory)
        do {
            _ = try BrokerNode(configuration: configuration)
            Issue.record("a broker must not start with an invalid policy file")
        } catch {
            let message = "\(error)"
            #expect(message.contains("peers.toml:5"), "\(message)")
            #expect(message.contains("entitlements"), "\(message)")
        }
    }
}
