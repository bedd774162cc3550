import Foundation
import GRDB

/// Persists a `TripleStore` in SQLite through GRDB, so a broker restarts with its catalog.
///
/// Terms are stored in N-Triples syntax, one row per triple, and re-read through the N-Triples
/// parser; the schema is created by the migration `catalog.v1`:
///
/// ```swift
/// var migrator = DatabaseMigrator()
/// CatalogStore.registerMigrations(in: &migrator)
/// try migrator.migrate(pool)
/// let persistence = CatalogStore(pool)
/// try persistence.save(store)          // replaces what was saved before
/// try persistence.restore(into: store) // after a restart
/// ```
public struct CatalogStore: Sendable {
    public static let tableName = "catalog_triple"
    private let writer: any DatabaseWriter

    public init(_ writer: any DatabaseWriter) { self.writer = writer }

    /// Adds the catalog's migrations (`catalog.v1`) to the broker's migrator. Frozen: later schema
    /// changes get new identifiers.
    public static func registerMigrations(in migrator: inout DatabaseMigrator) {
        migrator.registerMigration("catalog.v1") { db in
            try db.create(table: tableName) { table in
                table.column("graph", .text).notNull().defaults(to: "")
                table.column("subject", .text).notNull()
                table.column("predicate", .text).notNull()
                table.column("object", .text).notNull()
                table.primaryKey(["graph", "subject", "predicate", "object"])
            }
        }
    }

    /// Replaces the saved catalog with the store's current content, in one transaction.
    public func save(_ store: TripleStore) throws {
        let snapshot = store.snapshot()
        try writer.write { db in
            try db.execute(sql: "DELETE FROM \(Self.tableName)")
            let statement = try db.makeStatement(
                sql: "INSERT OR IGNORE INTO \(Self.tableName) (graph, subject, predicate, object) VALUES (?, ?, ?, ?)")
            for (graphID, graph) in snapshot.graphs {
                let graphName = graphID == 0 ? "" : snapshot.dictionary.term(graphID).nTriples
                var encoded: [Int: String] = [:]
                func text(_ id: Int32) -> String {
                    if let cached = encoded[Int(id)] { return cached }
                    let value = snapshot.dictionary.term(Int(id)).nTriples
                    encoded[Int(id)] = value
                    return value
                }
                for key in graph.spo {
                    try statement.execute(arguments: [graphName, text(key.first), text(key.second), text(key.third)])
                }
            }
        }
    }

    /// Adds every saved triple to `store` (normally an empty one, at start-up).
    /// - Returns: the number of triples read.
    @discardableResult
    public func restore(into store: TripleStore) throws -> Int {
        let rows = try writer.read { db in
            try Row.fetchAll(db, sql: "SELECT graph, subject, predicate, object FROM \(Self.tableName) ORDER BY graph")
        }
        var byGraph: [String: [Triple]] = [:]
        var decoded: [String: Term] = [:]
        for row in rows {
            let graph: String = row[0]
            var terms: [Term] = []
            for column in 1...3 {
                let text: String = row[column]
                if let term = decoded[text] {
                    terms.append(term)
                } else {
                    let term = try NTriplesTermParser.parse(text)
                    decoded[text] = term
                    terms.append(term)
                }
            }
            byGraph[graph, default: []].append(Triple(terms[0], terms[1], terms[2]))
        }
        for (graph, triples) in byGraph {
            var graphIRI: IRI? = nil
            if !graph.isEmpty, case .iri(let iri) = try NTriplesTermParser.parse(graph) { graphIRI = iri }
            store.insert(triples, graph: graphIRI)
        }
        return rows.count
    }
}

/// Reads one term written by `Term.nTriples` (our own output, so a small exact parser suffices).
enum NTriplesTermParser {
    struct Malformed: Error, CustomStringConvertible {
        let text: String
        var description: String { "malformed stored term: \(text)" }
    }

    static func parse(_ text: String) throws -> Term {
        if text.hasPrefix("<"), text.hasSuffix(">") {
            return .iri(unescape(String(text.dropFirst().dropLast())))
        }
        if text.hasPrefix("_:") { return .blank(String(text.dropFirst(2))) }
        guard text.hasPrefix("\"") else { throw Malformed(text: text) }
        // Find the closing quote: the last unescaped quote.
        let scalars = Array(text.unicodeScalars)
        var index = 1
        while index < scalars.count {
            if scalars[index] == "\\" { index += 2; continue }
            if scalars[index] == "\"" { break }
            index += 1
        }
        guard index < scalars.count else { throw Malformed(text: text) }
        var lexicalView = String.UnicodeScalarView()
        lexicalView.append(contentsOf: scalars[1..<index])
        let lexical = unescape(String(lexicalView))
        var restView = String.UnicodeScalarView()
        restView.append(contentsOf: scalars[(index + 1)...])
        let rest = String(restView)
        if rest.isEmpty { return .string(lexical) }
        if rest.hasPrefix("@") { return .literal(Literal(lexical, language: String(rest.dropFirst()))) }
        if rest.hasPrefix("^^<"), rest.hasSuffix(">") {
            return .typed(lexical, unescape(String(rest.dropFirst(3).dropLast())))
        }
        throw Malformed(text: text)
    }

    static func unescape(_ text: String) -> String {
        guard text.contains("\\") else { return text }
        var out = String.UnicodeScalarView()
        var iterator = Array(text.unicodeScalars).makeIterator()
        while let scalar = iterator.next() {
            guard scalar == "\\", let next = iterator.next() else { out.append(scalar); continue }
            switch next {
            case "n": out.append("\n")
            case "r": out.append("\r")
            case "t": out.append("\t")
            case "b": out.append("\u{08}")
            case "f": out.append("\u{0C}")
            case "u", "U":
                var hex = ""
                for _ in 0..<(next == "u" ? 4 : 8) { if let digit = iterator.next() { hex.unicodeScalars.append(digit) } }
                if let value = UInt32(hex, radix: 16), let decoded = Unicode.Scalar(value) { out.append(decoded) }
            default: out.append(next)
            }
        }
        return String(out)
    }
}
