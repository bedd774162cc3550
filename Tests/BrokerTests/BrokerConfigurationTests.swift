import Discovery
import Foundation
import Broker
import Migration
import Testing
import Trust
import XMPP
import XMLModel

@Suite struct BrokerConfigurationTests {
    let valid = """
        [broker]
        cloud = "cloud1"
        regions = ["eu-west"]
        database = "state/broker.sqlite"

        [xmpp]
        jid = "broker@cloud1.test"
        password = "secret"
        ca_file = "ca.pem"

        [discovery]
        rooms = ["exchange@conference.cloud1.test"]
        approve = ["*@cloud2.test"]
        """

    @Test func parsesAndResolvesPathsAgainstTheFile() throws {
        let configuration = try BrokerConfiguration.parse(valid, path: "/etc/intercloud/cloud1.toml")
        #expect(configuration.databasePath == "/etc/intercloud/state/broker.sqlite")
        #expect(configuration.xmpp.tls == .required(caFile: "/etc/intercloud/ca.pem"))
        #expect(configuration.xmpp.jid.description == "broker@cloud1.test/broker")
        #expect(configuration.rooms == [try JID("exchange@conference.cloud1.test")])
        #expect(configuration.nickname == "cloud1")
    }

    @Test(arguments: [
        ("[broker]\ncloud = \"c\"\nregions = []\ndatabase = \"d\"\n", "missing xmpp"),
        ("[broker]\ncloud = \"c\"\nregions = []\ndatabase = \"d\"\n[xmpp]\njid = \"broker@c\"\npassword = \"p\"\n", "ca_file is required"),
        ("[broker]\ncloud = \"c\"\nregions = []\ndatabase = \"d\"\n[xmpp]\njid = \"bad jid@@\"\npassword = \"p\"\ntls = \"disabled-for-testing\"\n", "xmpp.jid"),
        ("[broker]\ncloud = \"c\"\nregions = []\ndatabase = \"d\"\n[xmpp]\njid = \"b@c\"\ntls = \"disabled-for-testing\"\n", "password"),
        ("[broker]\ncloud = \"no spaces\"\nregions = []\ndatabase = \"d\"\n[xmpp]\njid = \"b@c\"\npassword = \"p\"\ntls = \"disabled-for-testing\"\nhost = \"127.0.0.1\"\n", "broker.cloud"),
        // Plaintext only towards this machine: the password would cross the network in clear.
        ("[broker]\ncloud = \"c\"\nregions = []\ndatabase = \"d\"\n[xmpp]\njid = \"b@c\"\npassword = \"p\"\ntls = \"disabled-for-testing\"\n", "needs xmpp.host set to a loopback address"),
        ("[broker]\ncloud = \"c\"\nregions = []\ndatabase = \"d\"\n[xmpp]\njid = \"b@c\"\npassword = \"p\"\ntls = \"disabled-for-testing\"\nhost = \"192.0.2.7\"\n", "not \"192.0.2.7\""),
        ("[broker]\ncloud = \"c\"\nregions = []\ndatabase = \"d\"\n[xmpp]\njid = \"b@c\"\npassword = \"p\"\ntls = \"disabled-for-testing\"\nhost = \"127.0.0.1\"\n[audit]\naggregate_seconds = 0\n", "audit.aggregate_seconds"),
        ("[broker]\ncloud = \"c\"\nregions = []\ndatabase = \"d\"\n[xmpp]\njid = \"b@c\"\npassword = \"p\"\ntls = \"maybe\"\n", "xmpp.tls"),
        ("[broker\ncloud = ", "invalid TOML"),
    ])
    func reportsEachErrorClearly(_ text: String, _ expected: String) {
        do {
            _ = try BrokerConfiguration.parse(text, path: "/x/c.toml")
            Issue.record("expected an error mentioning \(expected)")
        } catch {
            #expect("\(error)".contains(expected), "\(error)")
        }
    }

    @Test("a password file or key readable by others refuses to start, with the chmod that fixes it")
    func secretFilesMustBePrivate() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("secret-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let passwordFile = directory.appendingPathComponent("password")
        try "s3cret".write(to: passwordFile, atomically: true, encoding: .utf8)
        let text = """
            [broker]
            cloud = "c"
            regions = []
            database = "d"
            [xmpp]
            jid = "b@c"
            password_file = "password"
            tls = "disabled-for-testing"
            host = "localhost"
            """
        let path = directory.appendingPathComponent("c.toml").path
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: passwordFile.path)
        do {
            _ = try BrokerConfiguration.parse(text, path: path)
            Issue.record("a world-readable password file was accepted")
        } catch {
            #expect("\(error)".contains("chmod 600 \(passwordFile.path)"), "\(error)")
        }
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: passwordFile.path)
        #expect(try BrokerConfiguration.parse(text, path: path).audit.aggregation.window == 60)
    }

    @Test func liveMigrationURIIsCheckedLikeAPeersOffer() throws {
        let configuration = try BrokerConfiguration.parse(
            valid + "\n[migration]\nlive_uri = \"qemu+tls://hv1.cloud2.example/system\"\n", path: "/x/c.toml")
        #expect(configuration.migration.liveURI == "qemu+tls://hv1.cloud2.example/system")
        #expect(try BrokerConfiguration.parse(valid, path: "/x/c.toml").migration.liveURI == nil)
        for bad in ["http://hv1/system", "qemu+tls://hv1/system'><x", ""] {
            #expect(throws: BrokerConfiguration.Error.self) {
                _ = try BrokerConfiguration.parse(valid + "\n[migration]\nlive_uri = \"\(bad)\"\n", path: "/x/c.toml")
            }
        }
    }

    @Test func approvalPatterns() throws {
        #expect(ApprovalRule.matches(try JID("broker@cloud2.test/x"), patterns: ["*@cloud2.test"]))
        #expect(!ApprovalRule.matches(try JID("broker@cloud3.test"), patterns: ["*@cloud2.test"]))
        #expect(ApprovalRule.matches(try JID("broker@cloud3.test"), patterns: ["BROKER@cloud3.test"]))
        #expect(ApprovalRule.matches(try JID("x@y"), patterns: ["*"]))
        #expect(!ApprovalRule.matches(try JID("x@y"), patterns: []))
    }
}

@Suite struct AnnouncementTests {
    @Test func roundTrips() throws {
        let announcement = Announcement(cloud: "cloud1", regions: ["a", "b"], load: 0.25, fingerprint: "sha256:ab12")
        #expect(try Announcement(parsing: announcement.element) == announcement)
    }

    @Test(arguments: [
        XMLElement("announce", namespace: Announcement.namespace, attributes: [("cloud", "")]),
        XMLElement("announce", namespace: Announcement.namespace, attributes: [("cloud", "c"), ("load", "NaN")]),
        XMLElement("announce", namespace: Announcement.namespace, attributes: [("cloud", "c"), ("load", "-1")]),
        XMLElement("announce", namespace: Announcement.namespace, attributes: [("cloud", "c"), ("fingerprint", "<x>")]),
        XMLElement("announce", namespace: Announcement.namespace, attributes: [("cloud", "c")], children: [.element(XMLElement("evil"))]),
        XMLElement("announce", namespace: Announcement.namespace, attributes: [("cloud", "c")],
                   children: Array(repeating: .element(XMLElement("region", text: "r")), count: 65)),
    ])
    func refusesHostileAnnouncements(_ element: XMLElement) {
        #expect(throws: Announcement.ParseError.self) { try Announcement(parsing: element) }
    }
}
