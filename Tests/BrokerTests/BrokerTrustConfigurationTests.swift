import Broker
import Foundation
import Logging
import Peering
import Testing
import Trust

@Suite struct BrokerTrustConfigurationTests {
    let base = """
        [broker]
        cloud = "cloud1"
        regions = ["eu-west"]
        database = "state/broker.sqlite"

        [xmpp]
        jid = "broker@cloud1.test"
        password = "secret"
        ca_file = "ca.pem"

        """

    @Test func trustSectionIsOptionalAndItsPathsResolveAgainstTheFile() throws {
        #expect(try BrokerConfiguration.parse(base, path: "/etc/intercloud/cloud1.toml").trust == nil)
        let configuration = try BrokerConfiguration.parse(base + """
            [trust]
            key = "certs/broker.key"
            chain = "/abs/broker-chain.pem"
            anchors = ["certs/anchors/", "partners/cloud2-ca.pem"]
            crls = ["certs/crls/"]
            retry_seconds = 1.5
            """, path: "/etc/intercloud/cloud1.toml")
        let trust = try #require(configuration.trust)
        #expect(trust.keyPath == "/etc/intercloud/certs/broker.key")
        #expect(trust.chainPath == "/abs/broker-chain.pem")
        #expect(trust.anchorPaths == ["/etc/intercloud/certs/anchors", "/etc/intercloud/partners/cloud2-ca.pem"])
        #expect(trust.crlPaths == ["/etc/intercloud/certs/crls"])
        #expect(trust.retryAfterRefusal == .milliseconds(1500))
    }

    @Test(arguments: [
        ("[trust]\nchain = \"c.pem\"\nanchors = [\"a.pem\"]\n", "trust.key"),
        ("[trust]\nkey = \"k\"\nchain = \"c.pem\"\nanchors = []\n", "trust.anchors"),
        ("[trust]\nkey = \"k\"\nchain = \"c.pem\"\nanchors = [\"a\"]\nretry_seconds = -1\n", "retry_seconds"),
        ("[trust]\nkey = \"\"\nchain = \"c.pem\"\nanchors = [\"a\"]\n", "trust.key"),
    ])
    func badTrustSectionsAreReportedClearly(_ section: String, _ expected: String) {
        do {
            _ = try BrokerConfiguration.parse(base + section, path: "/x/c.toml")
            Issue.record("expected an error mentioning \(expected)")
        } catch {
            #expect("\(error)".contains(expected), "\(error)")
        }
    }

    /// A leaf for another JID, or missing files, stop the broker at start with a message that says
    /// what to do, instead of every peer refusing it later.
    @Test func brokerRefusesToStartWithALeafForAnotherJIDOrMissingFiles() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("intercloud-trustcfg-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let root = try CertificateAuthority.makeRoot(commonName: "root", notBefore: Date() - 3600)
        try PEMFiles.writeCertificates([root.certificate], toPath: directory.appendingPathComponent("root.pem").path)
        let other = try root.issueBrokerIdentity(jid: "someone-else@cloud1.test", notBefore: Date() - 3600)
        try other.save(keyPath: directory.appendingPathComponent("b.key").path, chainPath: directory.appendingPathComponent("b.pem").path)
        let path = directory.appendingPathComponent("c.toml").path
        let text = base.replacingOccurrences(of: "ca_file = \"ca.pem\"", with: "tls = \"disabled-for-testing\"\nhost = \"127.0.0.1\"")
            .replacingOccurrences(of: "state/broker.sqlite", with: "broker.sqlite") + """
            [trust]
            key = "b.key"
            chain = "b.pem"
            anchors = ["root.pem"]
            """
        let configuration = try BrokerConfiguration.parse(text, path: path)
        do {
            _ = try BrokerNode(configuration: configuration)
            Issue.record("started with a leaf for another JID")
        } catch {
            #expect("\(error)".contains("someone-else@cloud1.test"), "\(error)")
            #expect("\(error)".contains("certs issue"), "\(error)")
        }
        var missing = configuration
        missing.trust?.keyPath = directory.appendingPathComponent("nope.key").path
        #expect(throws: BrokerTrustSetupError.self) { _ = try BrokerNode(configuration: missing) }
    }
}
