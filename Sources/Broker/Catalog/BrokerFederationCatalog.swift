import Catalog
import CatalogQueries
import Federation
import XMPP

/// Service federation's view of the catalog: templates go into this broker's catalog store, and a
/// peer's catalog is asked through the signed catalog queries.
struct BrokerFederationCatalog: FederationCatalog {
    let catalog: BrokerCatalog
    let queries: CatalogQuerier

    var cloudIRI: IRI { catalog.cloudIRI }

    func replaceGraph(_ graph: IRI, with triples: [Triple]) {
        catalog.store.replaceGraph(graph, with: triples)
    }

    func query(_ sparql: String, peer: JID) async throws -> QueryResult {
        try await queries.query(sparql, peer: peer)
    }
}
