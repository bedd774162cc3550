@testable import Catalog
import Testing

@Suite struct PlannerTests {
    @Test func filtersMoveToTheOperandThatBindsTheirVariables() throws {
        let plan = try SPARQLEngine(try Fixtures.store()).explain(query: Fixtures.prefixes + """
            SELECT * WHERE { ?o ic:vcpu ?v OPTIONAL { ?o ic:sla ?s } FILTER(?v > 4) }
            """)
        // The filter on ?v now sits under the left side of the OPTIONAL, next to the BGP.
        let lines = plan.split(separator: "\n").map(String.init)
        let leftJoin = try #require(lines.firstIndex { $0.contains("(leftjoin") })
        let filter = try #require(lines.firstIndex { $0.contains("(filter") })
        #expect(filter > leftJoin)
    }

    @Test func filtersWithExistsStayPut() throws {
        let plan = try SPARQLEngine(try Fixtures.store()).explain(query: Fixtures.prefixes + """
            SELECT * WHERE { ?o ic:vcpu ?v OPTIONAL { ?o ic:sla ?s } FILTER EXISTS { ?o ic:region ?r } }
            """)
        #expect(plan.hasPrefix("(filter"))
    }

    @Test func mostSelectivePatternRunsFirst() throws {
        let plan = try SPARQLEngine(try Fixtures.store()).explain(query: Fixtures.prefixes + """
            SELECT * WHERE { ?o a ic:Offering . ?o ic:region ?r . ?r ic:country "FR" }
            """)
        let triples = plan.split(separator: "\n").filter { $0.contains("(triple") }
        #expect(triples.count == 3)
        #expect(triples.first?.contains("\"FR\"") == true)
    }

    @Test func pushDownKeepsResults() throws {
        let query = "SELECT ?o WHERE { { ?o ic:vcpu ?v } UNION { ?o ic:memoryMiB ?v } FILTER(?v > 8) }"
        // vCPU > 8: large; memory > 8 (MiB): all four.
        #expect(try Fixtures.column("o", query) == ["<https://catalog.example.org/gpu>", "<https://catalog.example.org/large>",
                                                     "<https://catalog.example.org/large>", "<https://catalog.example.org/medium>",
                                                     "<https://catalog.example.org/small>"])
        // BIND scoping: the inner filter must not see ?z bound outside its group.
        let scoped = try Fixtures.select("SELECT * WHERE { BIND(4 AS ?z) { ?o ic:vcpu ?v FILTER(?v = ?z) } }")
        #expect(scoped.isEmpty)
    }
}
