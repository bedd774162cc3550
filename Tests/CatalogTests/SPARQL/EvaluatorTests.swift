@testable import Catalog
import Testing

@Suite struct EvaluatorTests {
    let ex = "https://catalog.example.org/"

    @Test func basicGraphPatternJoinsOnSharedVariables() throws {
        let names = try Fixtures.column("name", "SELECT ?o ?name WHERE { ?o a ic:Offering ; ic:region ?r . ?r ic:name ?name ; ic:country \"DE\" }")
        #expect(names == ["\"Frankfurt\"", "\"Frankfurt\""])
    }

    @Test func filterWithNumericComparisonsAndFunctions() throws {
        let offerings = try Fixtures.column("o", "SELECT ?o WHERE { ?o ic:vcpu ?v ; ic:pricePerHour ?p FILTER(?v >= 4 && ?p < 1.0) }")
        #expect(offerings == ["<\(ex)large>", "<\(ex)medium>"])
        let regex = try Fixtures.column("r", "SELECT ?r WHERE { ?r ic:name ?n FILTER(REGEX(?n, \"^fr\", \"i\") && STRLEN(?n) = 9 && LANG(?n) = \"\") }")
        #expect(regex == ["<\(ex)fra>"])
        let inList = try Fixtures.column("o", "SELECT ?o WHERE { ?o ic:vcpu ?v FILTER(?v IN (2, 16)) }")
        #expect(inList == ["<\(ex)large>", "<\(ex)small>"])
    }

    @Test func optionalKeepsUnmatchedSolutions() throws {
        let rows = try Fixtures.select("SELECT ?o ?a WHERE { ?o a ic:Offering OPTIONAL { ?o ic:sla ?s . ?s ic:availability ?a } }")
        #expect(rows.count == 4)
        #expect(rows.filter { $0["a"] != nil }.count == 2)
    }

    @Test func unionMinusAndExists() throws {
        let union = try Fixtures.column("x", "SELECT ?x WHERE { { ?x a ic:Region } UNION { ?x a ic:SLA } }")
        #expect(union.count == 3)
        let minus = try Fixtures.column("o", "SELECT ?o WHERE { ?o a ic:Offering MINUS { ?o ic:sla ?s } }")
        #expect(minus == ["<\(ex)gpu>", "<\(ex)small>"])
        let notExists = try Fixtures.column("o", "SELECT ?o WHERE { ?o a ic:Offering FILTER NOT EXISTS { ?o ic:sla ?s } }")
        #expect(notExists == minus)
        let exists = try Fixtures.column("o", "SELECT ?o WHERE { ?o a ic:Offering ; ic:vcpu ?v FILTER EXISTS { ?o ic:sla ?s FILTER(?v > 8) } }")
        #expect(exists == ["<\(ex)large>"])
    }

    @Test func bindValuesAndSubqueries() throws {
        let bound = try Fixtures.select("SELECT ?o ?monthly WHERE { ?o ic:pricePerHour ?p BIND(?p * 720 AS ?monthly) FILTER(?o = ex:small) }")
        #expect(bound.first?["monthly"] == "\"36.0\"^^<http://www.w3.org/2001/XMLSchema#decimal>")
        let values = try Fixtures.column("o", "SELECT ?o WHERE { VALUES ?v { 2 8 } ?o ic:vcpu ?v }")
        #expect(values == ["<\(ex)gpu>", "<\(ex)small>"])
        let cheapest = try Fixtures.column("o", "SELECT ?o WHERE { { SELECT (MIN(?p) AS ?min) WHERE { ?x ic:pricePerHour ?p } } ?o ic:pricePerHour ?min }")
        #expect(cheapest == ["<\(ex)small>"])
    }

    @Test func propertyPaths() throws {
        let countries = try Fixtures.column("c", "SELECT DISTINCT ?c WHERE { ?o ic:region/ic:country ?c }")
        #expect(countries == ["\"DE\"", "\"FR\""])
        let inverse = try Fixtures.column("o", "SELECT ?o WHERE { ex:par ^ic:region ?o }")
        #expect(inverse == ["<\(ex)gpu>", "<\(ex)large>"])
        let store = TripleStore()
        try store.load(turtle: "@prefix : <http://ex/> . :a :next :b . :b :next :c . :c :next :a . :d :other :a .")
        #expect(try Fixtures.column("x", "SELECT ?x WHERE { <http://ex/a> <http://ex/next>+ ?x }", store: store) == ["<http://ex/a>", "<http://ex/b>", "<http://ex/c>"])
        #expect(try Fixtures.column("x", "SELECT ?x WHERE { <http://ex/d> <http://ex/next>* ?x }", store: store) == ["<http://ex/d>"])
        #expect(try Fixtures.column("x", "SELECT ?x WHERE { <http://ex/a> <http://ex/next>? ?x }", store: store) == ["<http://ex/a>", "<http://ex/b>"])
        #expect(try Fixtures.column("x", "SELECT ?x WHERE { ?x !<http://ex/next> <http://ex/a> }", store: store) == ["<http://ex/d>"])
        #expect(try Fixtures.column("x", "SELECT ?x WHERE { <http://ex/a> (<http://ex/next>|<http://ex/other>)/<http://ex/next> ?x }", store: store) == ["<http://ex/c>"])
    }

    @Test func groupingAggregatesAndHaving() throws {
        let rows = try Fixtures.select("""
            SELECT ?r (COUNT(?o) AS ?n) (SUM(?v) AS ?cpus) (AVG(?p) AS ?avg) (MIN(?p) AS ?min) (MAX(?v) AS ?max)
                   (GROUP_CONCAT(STR(?v); SEPARATOR="|") AS ?all) (SAMPLE(?c) AS ?currency)
            WHERE { ?o ic:region ?r ; ic:vcpu ?v ; ic:pricePerHour ?p ; ic:currency ?c }
            GROUP BY ?r HAVING (COUNT(?o) >= 2) ORDER BY ?r
            """)
        #expect(rows.count == 2)
        let fra = try #require(rows.first)
        #expect(fra["n"] == "\"2\"^^<http://www.w3.org/2001/XMLSchema#integer>")
        #expect(fra["cpus"] == "\"6\"^^<http://www.w3.org/2001/XMLSchema#integer>")
        #expect(fra["min"] == "\"0.05\"^^<http://www.w3.org/2001/XMLSchema#decimal>")
        #expect(fra["max"] == "\"4\"^^<http://www.w3.org/2001/XMLSchema#integer>")
        #expect(fra["currency"] == "\"EUR\"")
        #expect(fra["all"]?.contains("|") == true)
        let empty = try Fixtures.select("SELECT (COUNT(*) AS ?n) WHERE { ?x ic:nothing ?y }")
        #expect(empty.first?["n"] == "\"0\"^^<http://www.w3.org/2001/XMLSchema#integer>")
    }

    @Test func orderDistinctLimitOffset() throws {
        let ordered = try Fixtures.select("SELECT ?o WHERE { ?o ic:pricePerHour ?p } ORDER BY DESC(?p) LIMIT 2 OFFSET 1").map { $0["o"]! }
        #expect(ordered == ["<\(ex)large>", "<\(ex)medium>"])
        let distinct = try Fixtures.select("SELECT DISTINCT ?c WHERE { ?o ic:currency ?c }")
        #expect(distinct.count == 1)
    }

    @Test func askConstructDescribe() throws {
        let engine = SPARQLEngine(try Fixtures.store())
        #expect(try engine.execute(query: Fixtures.prefixes + "ASK { ?o ic:vcpu 16 }") == .boolean(true))
        #expect(try engine.execute(query: Fixtures.prefixes + "ASK { ?o ic:vcpu 17 }") == .boolean(false))
        guard case .graph(let constructed) = try engine.execute(query: Fixtures.prefixes + "CONSTRUCT { ?o ic:cheap true } WHERE { ?o ic:pricePerHour ?p FILTER(?p < 0.2) }") else {
            Issue.record("not a graph"); return
        }
        #expect(constructed.count == 2)
        guard case .graph(let described) = try engine.execute(query: Fixtures.prefixes + "DESCRIBE ex:gold") else { Issue.record("not a graph"); return }
        #expect(described.count == 3)
    }

    @Test func namedGraphs() throws {
        let store = TripleStore()
        try store.load(nTriples: "<http://s> <http://p> \"one\" .\n", graph: IRI("http://g1"))
        try store.load(nTriples: "<http://s> <http://p> \"two\" .\n", graph: IRI("http://g2"))
        let rows = try Fixtures.select("SELECT ?g ?o WHERE { GRAPH ?g { <http://s> <http://p> ?o } }", store: store)
        #expect(rows.count == 2)
        #expect(try Fixtures.column("o", "SELECT ?o WHERE { GRAPH <http://g2> { ?s ?p ?o } }", store: store) == ["\"two\""])
        #expect(try Fixtures.select("SELECT ?o WHERE { ?s ?p ?o }", store: store).isEmpty)
    }

    @Test func expressionErrorsLeaveVariablesUnbound() throws {
        let rows = try Fixtures.select("SELECT ?o ?bad WHERE { ?o ic:currency ?c BIND(?c + 1 AS ?bad) } LIMIT 1")
        #expect(rows.first?["bad"] == nil)
        #expect(rows.first?["o"] != nil)
    }
}
