@testable import Catalog
import Foundation
import Testing

@Suite struct LimitsTests {
    /// A chain big enough that a cross product takes a long time.
    private func bigStore() -> TripleStore {
        let store = TripleStore()
        store.insert((0..<3000).map { Triple(.iri("http://ex/s\($0)"), .iri("http://ex/p"), .integer($0)) })
        return store
    }

    @Test func resultSizeLimit() throws {
        #expect(throws: QueryError.limitExceeded("more than 10 results")) {
            try SPARQLEngine(bigStore()).execute(query: "SELECT * WHERE { ?s ?p ?o }", limits: QueryLimits(maxResults: 10))
        }
    }

    @Test func intermediateRowLimitStopsCrossProducts() throws {
        #expect {
            try SPARQLEngine(bigStore()).execute(query: "SELECT * WHERE { ?a ?p ?b . ?c ?q ?d }", limits: QueryLimits(maxIntermediateRows: 100_000))
        } throws: { error in
            if case .limitExceeded = error as? QueryError { return true }
            return false
        }
    }

    @Test func timeLimit() throws {
        let start = ContinuousClock.now
        #expect {
            try SPARQLEngine(bigStore()).execute(query: "SELECT (COUNT(*) AS ?n) WHERE { ?a ?p ?b . ?c ?q ?d . FILTER(?b != ?d) }",
                                                 limits: QueryLimits(timeout: .milliseconds(200)))
        } throws: { error in
            if case .limitExceeded(let what) = error as? QueryError { return what.contains("longer") }
            return false
        }
        #expect(ContinuousClock.now - start < .seconds(5))
    }

    @Test func queryLengthLimit() {
        #expect(throws: QueryError.self) {
            try SPARQLEngine(TripleStore()).execute(query: "ASK {}" + String(repeating: " ", count: 100), limits: QueryLimits(maxQueryBytes: 50))
        }
    }

    @Test func cancellationStopsEvaluation() async throws {
        let store = bigStore()
        let task = Task {
            try SPARQLEngine(store).execute(query: "SELECT (COUNT(*) AS ?n) WHERE { ?a ?p ?b . ?c ?q ?d . FILTER(?b != ?d) }",
                                            limits: QueryLimits(timeout: .seconds(60)))
        }
        try await Task.sleep(for: .milliseconds(100))
        task.cancel()
        let start = ContinuousClock.now
        let result = await task.result
        #expect(ContinuousClock.now - start < .seconds(5))
        #expect(throws: QueryError.cancelled) { try result.get() }
    }

    @Test func deeplyNestedQueriesAreRefusedNotCrashing() {
        let nested = "SELECT * WHERE " + String(repeating: "{ ", count: 5000) + String(repeating: "} ", count: 5000)
        #expect(throws: QueryError.self) { try SPARQLEngine.validate(query: nested) }
        let expression = "SELECT * WHERE { FILTER(" + String(repeating: "(", count: 5000) + "1" + String(repeating: ")", count: 5000) + ") }"
        #expect(throws: QueryError.self) { try SPARQLEngine.validate(query: expression) }
    }

    @Test func catastrophicRegexPatternsAreRefused() throws {
        let start = ContinuousClock.now
        let rows = try Fixtures.select("SELECT (REGEX(\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!\", \"(a+)+b\") AS ?m) WHERE {}")
        #expect(rows.first?["m"] == nil)  // an expression error, not a hang
        #expect(ContinuousClock.now - start < .seconds(2))
        #expect(Evaluator.isSafeRegex("^eu-(west|central)-[0-9]+$"))
        #expect(Evaluator.isSafeRegex("gpu|tpu"))
        #expect(!Evaluator.isSafeRegex("(a|aa)*c"))
        #expect(!Evaluator.isSafeRegex("(x+x+)+y"))
        #expect(!Evaluator.isSafeRegex("(a)\\1"))
    }

    @Test func stringsBuiltByQueriesAreBounded() throws {
        var query = "SELECT (STRLEN(?s20) AS ?n) WHERE { BIND(\"0123456789abcdef\" AS ?s0)"
        for i in 1...20 { query += " BIND(CONCAT(?s\(i - 1), ?s\(i - 1)) AS ?s\(i))" }
        query += " }"
        let rows = try Fixtures.select(query)
        #expect(rows.first?["n"] == nil)  // 16 MiB would be over the 1 MiB bound
    }
}
