@testable import Catalog
import Foundation

/// A small catalog used across the tests.
enum Fixtures {
    static let prefixes = """
    PREFIX ic: <https://intercloud.example.org/ontology#>
    PREFIX ex: <https://catalog.example.org/>
    PREFIX xsd: <http://www.w3.org/2001/XMLSchema#>

    """

    static let catalogTurtle = """
    @prefix ic: <https://intercloud.example.org/ontology#> .
    @prefix ex: <https://catalog.example.org/> .
    @prefix xsd: <http://www.w3.org/2001/XMLSchema#> .

    ex:fra a ic:Region ; ic:name "Frankfurt" ; ic:country "DE" .
    ex:par a ic:Region ; ic:name "Paris" ; ic:country "FR" .
    ex:gold a ic:SLA ; ic:availability 0.999 ; ic:supportLevel "24x7" .

    ex:small a ic:Offering ; ic:vcpu 2 ; ic:memoryMiB 4096 ; ic:pricePerHour 0.05 ; ic:currency "EUR" ; ic:region ex:fra .
    ex:medium a ic:Offering ; ic:vcpu 4 ; ic:memoryMiB 8192 ; ic:pricePerHour 0.10 ; ic:currency "EUR" ; ic:region ex:fra ; ic:sla ex:gold .
    ex:large a ic:Offering ; ic:vcpu 16 ; ic:memoryMiB 65536 ; ic:pricePerHour 0.80 ; ic:currency "EUR" ; ic:region ex:par ; ic:sla ex:gold .
    ex:gpu a ic:Offering ; ic:vcpu 8 ; ic:memoryMiB 32768 ; ic:pricePerHour 1.20 ; ic:currency "EUR" ; ic:region ex:par ;
        ic:name "GPU box"@en .
    """

    static func store() throws -> TripleStore {
        let store = TripleStore()
        try store.load(turtle: catalogTurtle, baseIRI: "https://catalog.example.org/")
        return store
    }

    /// Runs a SELECT and returns rows as dictionaries of N-Triples strings (unbound omitted).
    static func select(_ query: String, store: TripleStore? = nil, limits: QueryLimits = QueryLimits()) throws -> [[String: String]] {
        let result = try SPARQLEngine(store ?? Self.store()).execute(query: prefixes + query, limits: limits)
        guard case .solutions(let table) = result else { return [] }
        return table.rows.map { row in
            var out: [String: String] = [:]
            for (name, value) in zip(table.variables, row) { if let value { out[name] = value.nTriples } }
            return out
        }
    }

    /// Values of one variable, sorted, as N-Triples strings.
    static func column(_ variable: String, _ query: String, store: TripleStore? = nil) throws -> [String] {
        try select(query, store: store).compactMap { $0[variable] }.sorted()
    }

    static let projectRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
}
