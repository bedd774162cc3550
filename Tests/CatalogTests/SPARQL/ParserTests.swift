@testable import Catalog
import Testing

@Suite struct ParserTests {
    private func syntaxError(_ query: String) -> (String, Int, Int)? {
        do {
            try SPARQLEngine.validate(query: query)
            return nil
        } catch {
            if case .syntax(let message, let line, let column) = error { return (message, line, column) }
            return nil
        }
    }

    @Test func reportsLineAndColumnOfTheOffendingToken() throws {
        let error = try #require(syntaxError("SELECT ?x\nWHERE {\n  ?x ?p ?o .\n  FILTER(?o > )\n}"))
        #expect(error.1 == 4)
        #expect(error.2 == 15)  // the ")" where an operand was expected
    }

    @Test func reportsUndefinedPrefixes() throws {
        let error = try #require(syntaxError("SELECT * WHERE { ?s ex:p ?o }"))
        #expect(error.0.contains("ex:"))
        #expect(error.1 == 1 && error.2 == 21)
    }

    @Test func reportsLexicalErrors() throws {
        let unterminated = try #require(syntaxError("SELECT * WHERE {\n ?s ?p \"abc }"))
        #expect(unterminated.1 == 2 && unterminated.2 == 8)
        #expect(syntaxError("SELECT * WHERE { ?s ?p ?o } LIMIT x") != nil)
        #expect(syntaxError("SELECT * WHERE { ?s ?p ?o ") != nil)
    }

    @Test func scopeErrorsPointAtTheSelectItem() throws {
        let error = try #require(syntaxError("SELECT ?s\n       ?o (COUNT(*) AS ?n)\nWHERE { ?s ?p ?o } GROUP BY ?s"))
        #expect(error.0.contains("?o"))
        #expect(error.1 == 2 && error.2 == 8)
    }

    @Test func rejectsScopeViolations() {
        // Projection of an ungrouped variable.
        #expect(syntaxError("SELECT ?o (COUNT(*) AS ?n) WHERE { ?s ?p ?o } GROUP BY ?s") != nil)
        // BIND to a variable already in scope.
        #expect(syntaxError("SELECT * WHERE { ?s ?p ?o BIND(1 AS ?o) }") != nil)
        // AS reuses a pattern variable.
        #expect(syntaxError("SELECT (1 AS ?o) WHERE { ?s ?p ?o }") != nil)
        // Aggregate in WHERE.
        #expect(syntaxError("SELECT * WHERE { ?s ?p ?o FILTER(COUNT(?o) > 1) }") != nil)
        // VALUES row of the wrong width.
        #expect(syntaxError("SELECT * WHERE { VALUES (?a ?b) { (1) } }") != nil)
    }

    @Test func refusesUpdates() {
        #expect(syntaxError("INSERT DATA { <http://a> <http://b> <http://c> }")?.0.contains("Update") == true)
    }

    @Test func acceptsTheWholeQueryGrammar() {
        let queries = [
            "PREFIX : <http://ex/> SELECT DISTINCT ?s (COUNT(DISTINCT ?o) AS ?n) WHERE { ?s :p/:q* ?o ; ^:r ?x . OPTIONAL { ?s :t ?t FILTER(?t > 1) } MINUS { ?s :u ?u } } GROUP BY ?s HAVING (COUNT(?o) > 1) ORDER BY DESC(?n) LIMIT 5 OFFSET 1",
            "BASE <http://ex/> ASK { <a> !(<b>|^<c>) ?o FILTER NOT EXISTS { ?o <d> [] } }",
            "CONSTRUCT { ?s <http://p> _:b . _:b <http://q> ?o } WHERE { GRAPH ?g { ?s ?p ?o } VALUES ?o { 1 2.5 \"x\"@en UNDEF } }",
            "CONSTRUCT WHERE { ?s ?p ?o }",
            "DESCRIBE <http://ex/a> ?x WHERE { ?x ?p ?o }",
            "SELECT * WHERE { { SELECT ?s WHERE { ?s ?p ?o } LIMIT 1 } UNION { ?s ?p (1 2 [ <http://p> ?z ]) } }",
            "SELECT (GROUP_CONCAT(?o ; SEPARATOR=\", \") AS ?all) (IF(BOUND(?o), STRLEN(STR(?o)), -1) AS ?len) WHERE { ?s ?p ?o } GROUP BY ?o",
            "SELECT * WHERE { ?s ?p ?o } VALUES (?s ?o) { (<http://a> 1) (UNDEF 2) }",
        ]
        for query in queries { #expect(syntaxError(query) == nil, "\(query)") }
    }
}
