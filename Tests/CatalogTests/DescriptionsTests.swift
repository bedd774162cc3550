@testable import Catalog
import Foundation
import Testing

@Suite struct DescriptionsTests {
    @Test func liveInventoryGraphIsReplacedAtomicallyAndQueryable() throws {
        let store = try Fixtures.store()
        let live = IRI("urn:intercloud:live-inventory")
        let base = "https://cloud1.example/"
        let first = CatalogDescription.region(IRI(base + "region/lyon"), name: "Lyon", country: "FR")
            + CatalogDescription.instanceOffering(IRI(base + "offering/m1"), cloud: IRI(base), region: IRI(base + "region/lyon"),
                                                  name: "m1.small", vcpu: 2, memoryMiB: 2048, diskGiB: 20,
                                                  pricePerHour: Decimal(string: "0.02")!, currency: "EUR")
            + CatalogDescription.capacity(IRI(base + "capacity/lyon"), region: IRI(base + "region/lyon"), freeInstances: 7,
                                          vcpu: 56, memoryMiB: 131072, observedAt: Date(timeIntervalSince1970: 0))
        store.replaceGraph(live, with: first)
        let query = "SELECT ?o ?p WHERE { GRAPH <urn:intercloud:live-inventory> { ?o a ic:Offering ; ic:pricePerHour ?p } }"
        #expect(try Fixtures.select(query, store: store).first?["p"] == "\"0.02\"^^<http://www.w3.org/2001/XMLSchema#decimal>")
        store.replaceGraph(live, with: CatalogDescription.image(IRI(base + "image/debian"), name: "debian-12", format: "qcow2"))
        #expect(try Fixtures.select(query, store: store).isEmpty)
        #expect(store.triples(graph: live).count == 3)
        // Static descriptions in the default graph are untouched.
        #expect(try Fixtures.select("SELECT ?o WHERE { ?o a ic:Offering }", store: store).count == 4)
    }

    @Test func describedTermsUseTheOntology() throws {
        let ontology = TripleStore()
        try ontology.load(file: Fixtures.projectRoot.appendingPathComponent("ontology/intercloud.ttl"))
        let declared = Set(ontology.triples().map(\.subject))
        let described = CatalogDescription.cloud(IRI("http://c"), name: "c", xmppAddress: "broker@c", regions: [IRI("http://r")])
            + CatalogDescription.sla(IRI("http://s"), availability: Decimal(string: "0.999")!, supportLevel: "24x7")
            + CatalogDescription.service(IRI("http://svc"), name: "s3", endpoint: "https://s3.example", protocolName: "s3",
                                         interfaceDescription: IRI("http://doc"))
            + CatalogDescription.instanceOffering(IRI("http://o"), cloud: IRI("http://c"), region: IRI("http://r"), name: "x",
                                                  vcpu: 1, memoryMiB: 1, diskGiB: 1, pricePerHour: 1, currency: "EUR", sla: IRI("http://s"))
        for triple in described {
            if case .iri(let predicate) = triple.predicate, predicate.value.hasPrefix(IntercloudOntology.namespace) {
                #expect(declared.contains(triple.predicate), "\(predicate) is not declared in the ontology")
            }
            if triple.predicate == .iri(Vocabulary.rdfType) { #expect(declared.contains(triple.object)) }
        }
    }
}
