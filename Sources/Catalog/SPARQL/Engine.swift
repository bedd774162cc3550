import Foundation

/// Why a query was not answered.
public enum QueryError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The query is not valid SPARQL 1.1; `line` and `column` (1-based) point at the offending token.
    case syntax(message: String, line: Int, column: Int)
    /// The query went over one of its `QueryLimits` (time, result size, intermediate rows, length).
    case limitExceeded(String)
    /// The surrounding task was cancelled while the query ran.
    case cancelled
    /// Valid SPARQL that this engine does not evaluate (SERVICE, SPARQL Update).
    case unsupported(String)

    public var description: String {
        switch self {
        case .syntax(let message, let line, let column): return "syntax error at line \(line), column \(column): \(message)"
        case .limitExceeded(let what): return "query limit exceeded: \(what)"
        case .cancelled: return "query cancelled"
        case .unsupported(let what): return "unsupported: \(what)"
        }
    }
}

/// Bounds on one query's work; peers' queries always run with limits.
public struct QueryLimits: Sendable, Equatable {
    /// Wall-clock budget for parsing and evaluation.
    public var timeout: Duration
    /// Maximum number of solutions (or triples, for CONSTRUCT/DESCRIBE) in the answer.
    public var maxResults: Int
    /// Maximum number of rows any intermediate step may produce (guards against cartesian blow-ups).
    public var maxIntermediateRows: Int
    /// Maximum query text length in bytes.
    public var maxQueryBytes: Int

    public init(timeout: Duration = .seconds(10), maxResults: Int = 100_000,
                maxIntermediateRows: Int = 2_000_000, maxQueryBytes: Int = 256 * 1024) {
        self.timeout = timeout
        self.maxResults = maxResults
        self.maxIntermediateRows = maxIntermediateRows
        self.maxQueryBytes = maxQueryBytes
    }

    /// No practical limits; for trusted local use and the conformance suite.
    public static let unlimited = QueryLimits(timeout: .seconds(86_400), maxResults: .max, maxIntermediateRows: .max, maxQueryBytes: .max)
}

/// A table of solutions: variable names (without '?') and one row per solution, nil = unbound.
public struct SolutionTable: Sendable, Equatable {
    public var variables: [String]
    public var rows: [[Term?]]

    public init(variables: [String], rows: [[Term?]]) {
        self.variables = variables
        self.rows = rows
    }
}

/// The answer to a query: solutions (SELECT), a boolean (ASK) or triples (CONSTRUCT, DESCRIBE).
public enum QueryResult: Sendable, Equatable {
    case solutions(SolutionTable)
    case boolean(Bool)
    case graph([Triple])
}

/// Runs SPARQL 1.1 queries against a `TripleStore`.
///
/// Public API (stable, used by the broker):
/// ```swift
/// let store = TripleStore()
/// try store.load(turtle: catalogText, baseIRI: "https://cloud1.example/")
/// let engine = SPARQLEngine(store)
/// let result = try engine.execute(query: "SELECT ?o WHERE { ?o a ic:Offering }", limits: QueryLimits())
/// let xml = result.serializedXML()    // SPARQL Query Results XML (RDF/XML for graphs)
/// let json = result.serializedJSON()  // SPARQL Query Results JSON
/// ```
/// Errors are `QueryError`: `.syntax(message:line:column:)`, `.limitExceeded(_)`, `.cancelled`,
/// `.unsupported(_)`. Evaluation checks the deadline and `Task.isCancelled` in its loops, so a
/// query running inside a cancelled task stops promptly.
public struct SPARQLEngine: Sendable {
    private let snapshot: StoreSnapshot
    private let baseIRI: String?

    /// An engine over the store's current content (later loads are not seen by this engine).
    public init(_ store: TripleStore, baseIRI: String? = nil) {
        self.snapshot = store.snapshot()
        self.baseIRI = baseIRI
    }

    public init(snapshot: StoreSnapshot, baseIRI: String? = nil) {
        self.snapshot = snapshot
        self.baseIRI = baseIRI
    }

    /// Checks a query's syntax without running it.
    public static func validate(query: String) throws(QueryError) {
        _ = try SPARQLParser.parse(query)
    }

    /// The plan for `query`: the algebra after filter push-down, with each basic graph pattern's
    /// triples in the order the planner runs them and their estimated cardinalities.
    public func explain(query: String) throws(QueryError) -> String {
        let parsed = try SPARQLParser.parse(query, baseIRI: baseIRI)
        let evaluator = Evaluator(snapshot: snapshot, variableNames: parsed.variableNames, limits: .unlimited,
                                  deadline: ContinuousClock.now.advanced(by: .seconds(60)))
        return evaluator.explain(parsed.query)
    }

    /// Parses and evaluates `query` within `limits`.
    public func execute(query: String, limits: QueryLimits = QueryLimits()) throws(QueryError) -> QueryResult {
        guard query.utf8.count <= limits.maxQueryBytes else {
            throw .limitExceeded("query of \(query.utf8.count) bytes is over the \(limits.maxQueryBytes)-byte limit")
        }
        let deadline = ContinuousClock.now.advanced(by: limits.timeout)
        let parsed = try SPARQLParser.parse(query, baseIRI: baseIRI)
        let evaluator = Evaluator(snapshot: snapshot, variableNames: parsed.variableNames, limits: limits, deadline: deadline)
        evaluator.baseIRI = parsed.baseIRI ?? baseIRI
        let result = try evaluator.run(parsed.query)
        // A regular expression stopped at the deadline leaves an expression error behind, not an
        // answer: the query fails with the limit it hit, however few rows followed.
        if let interrupted = evaluator.interruptedMatch { throw interrupted }
        return result
    }
}
