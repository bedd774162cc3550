import Broker
import CatalogQueries
import Testing

@Suite struct BrokerCatalogConfigurationTests {
    let base = """
        [broker]
        cloud = "cloud1"
        regions = ["eu-west"]
        database = "state/broker.sqlite"

        [xmpp]
        jid = "broker@cloud1.test"
        password = "secret"
        tls = "disabled-for-testing"
        host = "127.0.0.1"

        """

    @Test func catalogSectionResolvesFilesAgainstTheConfigurationAndReadsLimits() throws {
        let text = base + """
            [catalog]
            files = ["catalog/offerings.ttl", "/srv/shared/regions.nt"]
            timeout_ms = 250
            max_results = 42
            cloud_iri = "https://cloud1.example/"
            """
        let catalog = try BrokerConfiguration.parse(text, path: "/etc/intercloud/cloud1.toml").catalog
        #expect(catalog.files == ["/etc/intercloud/catalog/offerings.ttl", "/srv/shared/regions.nt"])
        #expect(catalog.timeout == .milliseconds(250))
        #expect(catalog.maxResults == 42)
        #expect(catalog.cloudIRI == "https://cloud1.example/")
    }

    @Test func withoutCatalogSectionTheBrokerStillDescribesItselfWithDefaultLimits() throws {
        let catalog = try BrokerConfiguration.parse(base, path: "/etc/intercloud/cloud1.toml").catalog
        #expect(catalog.files.isEmpty)
        #expect(catalog.timeout == .seconds(5))
        #expect(catalog.maxResults == 10_000)
        #expect(catalog.cloudIRI == "urn:intercloud:cloud:cloud1")
    }

    @Test(arguments: [("timeout_ms = 0", "catalog.timeout_ms"), ("max_results = -1", "catalog.max_results"), ("files = \"one.ttl\"", "catalog")])
    func invalidLimitsAreReported(_ line: String, _ expected: String) {
        do {
            _ = try BrokerConfiguration.parse(base + "[catalog]\n" + line + "\n", path: "/etc/c.toml")
            Issue.record("accepted \(line)")
        } catch {
            #expect("\(error)".contains(expected))
        }
    }

    @Test func missingCatalogFileStopsTheBrokerFromStarting() throws {
        let text = base + "[catalog]\nfiles = [\"does-not-exist.ttl\"]\n"
        let configuration = try BrokerConfiguration.parse(text, path: "/tmp/intercloud-none/c.toml")
        #expect(throws: BrokerCatalog.LoadError.self) { _ = try BrokerCatalog(configuration: configuration) }
    }
}
