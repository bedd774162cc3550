import Broker
import Catalog
import CatalogQueries
import Foundation
import Providers
import Testing

/// The local cloud's inventory, published in the catalog from a real provider driver.
@Suite struct BrokerInventoryTests {
    let cloud = IRI("urn:intercloud:cloud:cloud1")
    let offeringsQuery = """
        PREFIX ic: <\(IntercloudOntology.namespace)>
        SELECT ?name ?vcpu ?price ?currency WHERE {
          GRAPH <urn:intercloud:graph:inventory> { ?o a ic:Offering ; ic:name ?name ; ic:vcpu ?vcpu ; ic:pricePerHour ?price ; ic:currency ?currency }
        } ORDER BY ?price
        """

    func rows(_ store: TripleStore, _ query: String) throws -> [[String]] {
        guard case .solutions(let table) = try SPARQLEngine(store).execute(query: query, limits: QueryLimits()) else { return [] }
        return table.rows.map { row in row.map { term -> String in
            guard let term else { return "" }
            if case .literal(let literal) = term { return literal.lexical }
            return term.description
        } }
    }

    @Test func sizesWithPricesImagesAndCapacityBecomeQueryableTriples() throws {
        let sizes = [
            InstanceSize(id: "m.large", vCPU: 4, memoryMiB: 8192, diskGiB: 80, pricePerHour: Price(Decimal(string: "0.092")!, "EUR")),
            InstanceSize(id: "m.small", vCPU: 1, memoryMiB: 2048, diskGiB: 20, pricePerHour: Price(Decimal(string: "0.023")!, "EUR")),
            InstanceSize(id: "m.free", vCPU: 1, memoryMiB: 512, diskGiB: 1),
        ]
        let store = TripleStore()
        store.replaceGraph(BrokerInventory.inventoryGraph, with: BrokerInventory.triples(
            sizes: sizes, images: [], capacity: Capacity(maxInstances: 10, usedInstances: 3), cloud: cloud,
            regions: ["eu-west"], observedAt: Date(timeIntervalSince1970: 0)))
        let found = try rows(store, offeringsQuery)
        #expect(found.map { $0[0] } == ["m.small", "m.large"], "a size without a price is not offered with a price")
        #expect(found.first?[2] == "0.023")
        #expect(found.first?[3] == "EUR")
        let free = try rows(store, "PREFIX ic: <\(IntercloudOntology.namespace)> SELECT ?n WHERE { GRAPH ?g { ?c ic:freeInstances ?n } }")
        #expect(free == [["7"]])
    }

    @Test func refreshFromARealSimCloudReplacesTheInventoryGraph() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("inventory-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: directory) }
        let driver = try await DriverRegistry.make(DriverSettings(kind: "simcloud", options: ["data-dir": directory.path]))
        let store = TripleStore()
        store.replaceGraph(BrokerInventory.inventoryGraph, with: [
            Triple(.iri(IRI("urn:stale")), .iri(IRI("urn:p")), .iri(IRI("urn:o"))),
        ])
        let count = try await BrokerInventory.refresh(from: driver, into: store, cloud: cloud, regions: ["eu-west"], now: Date())
        #expect(count > 0)
        let sizes = try await driver.listSizes()
        let found = try rows(store, offeringsQuery)
        #expect(found.count == sizes.filter { $0.pricePerHour != nil }.count)
        #expect(Set(found.map { $0[0] }) == Set(sizes.filter { $0.pricePerHour != nil }.map(\.name)))
        guard case .boolean(let stillThere) = try SPARQLEngine(store).execute(query: "ASK { GRAPH ?g { <urn:stale> ?p ?o } }", limits: QueryLimits()) else {
            Issue.record("expected a boolean")
            return
        }
        #expect(!stillThere, "a refresh replaces the whole inventory graph")
    }

    @Test func providerSectionIsParsedAndValidated() throws {
        let base = """
            [broker]
            cloud = "cloud1"
            regions = ["eu-west"]
            database = "b.sqlite"
            [xmpp]
            jid = "broker@cloud1.test"
            password = "p"
            tls = "disabled-for-testing"
            host = "127.0.0.1"

            """
        let parsed = try BrokerConfiguration.parse(base + "[provider]\ndriver = \"simcloud\"\noptions = { data-dir = \"sim\" }\n", path: "/etc/ic/c.toml")
        #expect(parsed.provider?.driver == "simcloud")
        #expect(parsed.provider?.options["data-dir"] == "/etc/ic/sim")
        #expect(parsed.provider?.refresh == .seconds(30))
        #expect(throws: BrokerConfiguration.Error.self) {
            try BrokerConfiguration.parse(base + "[provider]\ndriver = \"vmware\"\n", path: "/etc/ic/c.toml")
        }
        #expect(throws: BrokerConfiguration.Error.self) {
            try BrokerConfiguration.parse(base + "[provider]\ndriver = \"simcloud\"\nrefresh_seconds = 0\n", path: "/etc/ic/c.toml")
        }
        #expect(try BrokerConfiguration.parse(base, path: "/etc/ic/c.toml").provider == nil)
    }
}
