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
                                            limits: QueryLimits(timeout: .seconds(60), maxIntermediateRows: 100_000_000))
        }
        // Cancel early and with a high row limit, so that only cancellation can end the query
        // (on a fast machine 2M intermediate rows were reached within 100 ms).
        try await Task.sleep(for: .milliseconds(10))
        task.cancel()
        let start = ContinuousClock.now
        let result = await task.result
        #expect(ContinuousClock.now - start < .seconds(5))
        #expect(throws: QueryError.cancelled) { try result.get() }
    }

    /// Left-deep chains make evaluation recurse once per element: the parser bounds them, and a
    /// query just under the bound still runs on a task's thread without exhausting the stack.
    @Test func longChainsAreBoundedAndTheBoundIsSafe() async throws {
        func optionals(_ count: Int) -> String {
            "SELECT * WHERE { ?s ?p ?o " + (0..<count).map { "OPTIONAL { ?s <http://p\($0)> ?o\($0) }" }.joined(separator: " ") + " }"
        }
        #expect(throws: QueryError.self) { try SPARQLEngine.validate(query: optionals(5000)) }
        #expect(throws: QueryError.self) { try SPARQLEngine.validate(query: "ASK { FILTER(" + String(repeating: "!", count: 50_000) + "true) }") }
        #expect(throws: QueryError.self) {
            try SPARQLEngine.validate(query: "ASK { FILTER(" + Array(repeating: "1", count: 5000).joined(separator: " + ") + " > 0) }")
        }
        #expect(throws: QueryError.self) {
            try SPARQLEngine.validate(query: "SELECT * WHERE { " + (0..<5000).map { "{ ?s <http://p\($0)> ?o }" }.joined(separator: " UNION ") + " }")
        }
        let store = try Fixtures.store()
        let deep = optionals(SPARQLParserLimits.maxComplexity / 2 - 10)  // each OPTIONAL costs 2: itself and its inner triples
        let union = "SELECT * WHERE { " + (0..<(SPARQLParserLimits.maxComplexity / 2 - 10)).map { "{ ?s <http://p\($0)> ?o }" }.joined(separator: " UNION ") + " }"
        let sum = "ASK { FILTER(" + Array(repeating: "1", count: SPARQLParserLimits.maxComplexity - 10).joined(separator: " + ") + " > 0) }"
        let results = try await Task.detached {
            (try SPARQLEngine(store).execute(query: deep), try SPARQLEngine(store).execute(query: union), try SPARQLEngine(store).execute(query: sum))
        }.value
        if case .solutions(let table) = results.0 { #expect(table.rows.count == store.count) } else { Issue.record("not solutions") }
        #expect(results.2 == .boolean(true))
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

    @Test("a polynomially backtracking regex stops at the query's time limit and the query fails with it")
    func regexMatchingEndsAtTheDeadline() throws {
        // No nested quantifier, so the static check lets it through; on 60 KiB it would run for ages.
        let subject = String(repeating: "a", count: 60_000)
        let query = "SELECT ?m WHERE { BIND(REGEX(\"\(subject)\", \".*.*.*.*.*.*x\") AS ?m) }"
        #expect(Evaluator.isSafeRegex(".*.*.*.*.*.*x"))
        let store = TripleStore()
        let start = ContinuousClock.now
        #expect(throws: QueryError.self) {
            _ = try SPARQLEngine(store).execute(query: query, limits: QueryLimits(timeout: .milliseconds(300)))
        }
        #expect(ContinuousClock.now - start < .seconds(2), "took \(ContinuousClock.now - start)")
    }

    @Test("REPLACE stops at the deadline too, even after an early match")
    func replaceEndsAtTheDeadline() throws {
        let subject = "b" + String(repeating: "y", count: 60_000)
        let query = "SELECT ?r WHERE { BIND(REPLACE(\"\(subject)\", \"^b|.*.*.*.*x\", \"\") AS ?r) }"
        let start = ContinuousClock.now
        #expect(throws: QueryError.self) {
            _ = try SPARQLEngine(TripleStore()).execute(query: query, limits: QueryLimits(timeout: .milliseconds(300)))
        }
        #expect(ContinuousClock.now - start < .seconds(2), "took \(ContinuousClock.now - start)")
        // And it still replaces as before.
        let rows = try Fixtures.select("SELECT (REPLACE(\"abcabc\", \"b(c)\", \"[$1]\") AS ?r) WHERE {}")
        #expect(rows.first?["r"] == "\"a[c]a[c]\"")
    }

    @Test func stringsBuiltByQueriesAreBounded() throws {
        var query = "SELECT (STRLEN(?s20) AS ?n) WHERE { BIND(\"0123456789abcdef\" AS ?s0)"
        for i in 1...20 { query += " BIND(CONCAT(?s\(i - 1), ?s\(i - 1)) AS ?s\(i))" }
        query += " }"
        let rows = try Fixtures.select(query)
        #expect(rows.first?["n"] == nil)  // 16 MiB would be over the 1 MiB bound
    }
}
