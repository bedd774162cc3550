import Catalog
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif

/// Expected results of a W3C test, read from .srx, .srj, .tsv, .csv or an RDF file. An RDF file
/// holds either the graph a CONSTRUCT/DESCRIBE must produce or, as in the SPARQL 1.0 (DAWG
/// data-r2) suite, a result set written in the `rs:` vocabulary, decoded by `decodeResultSet`.
enum ExpectedResult {
    case solutions(SolutionTable)
    case boolean(Bool)
    case graph([Triple])
    case csv(String)
}

struct ResultFileError: Error, CustomStringConvertible {
    let description: String
}

enum ResultFiles {
    static func read(_ url: URL) throws -> ExpectedResult {
        let data = try Data(contentsOf: url)
        switch url.pathExtension.lowercased() {
        case "srx": return try parseXML(data)
        case "srj": return try parseJSON(data)
        case "tsv": return .solutions(try parseTSV(String(decoding: data, as: UTF8.self)))
        case "csv": return .csv(String(decoding: data, as: UTF8.self))
        case "ttl", "nt", "rdf":
            let format = RDFFormat(fileExtension: url.pathExtension) ?? .turtle
            let triples = try RDFLoader.parse(data, format: format, baseIRI: url.absoluteString, limits: .init())
            return try decodeResultSet(triples) ?? .graph(triples)
        default:
            throw ResultFileError(description: "unknown result format \(url.lastPathComponent)")
        }
    }

    // MARK: RDF result sets (http://www.w3.org/2001/sw/DataAccess/tests/result-set#)

    static let rs = "http://www.w3.org/2001/sw/DataAccess/tests/result-set#"

    /// Decodes the `rs:ResultSet` node of a graph, or returns nil when the graph has none (it is then
    /// an expected CONSTRUCT result). A result set is either `rs:boolean` (ASK) or
    /// `rs:resultVariable`s with `rs:solution`s, each a set of `rs:binding [rs:variable; rs:value]`
    /// and, for ordered results, an `rs:index` that gives the row its place.
    static func decodeResultSet(_ triples: [Triple]) throws -> ExpectedResult? {
        var bySubject: [Term: [(predicate: Term, object: Term)]] = [:]
        for triple in triples { bySubject[triple.subject, default: []].append((triple.predicate, triple.object)) }
        func objects(_ subject: Term, _ localName: String) -> [Term] {
            (bySubject[subject] ?? []).filter { $0.predicate == .iri(rs + localName) }.map(\.object)
        }
        func text(_ term: Term?) -> String? {
            if case .literal(let literal)? = term { return literal.lexical }
            return nil
        }
        let resultSets = triples.filter {
            $0.predicate == .iri(Vocabulary.rdfType) && $0.object == .iri(rs + "ResultSet")
        }.map(\.subject)
        guard let resultSet = resultSets.first else { return nil }
        guard resultSets.count == 1 else { throw ResultFileError(description: "\(resultSets.count) rs:ResultSet nodes") }
        if let boolean = objects(resultSet, "boolean").first {
            guard let value = text(boolean), value == "true" || value == "false" else {
                throw ResultFileError(description: "rs:boolean is not true or false")
            }
            return .boolean(value == "true")
        }
        // The variables' order is not recorded (RDF has no order of objects); the comparison is by name.
        let variables = objects(resultSet, "resultVariable").compactMap(text).sorted()
        var rows: [(index: Int?, row: [Term?])] = []
        for solution in objects(resultSet, "solution") {
            var row = [Term?](repeating: nil, count: variables.count)
            for binding in objects(solution, "binding") {
                guard let name = text(objects(binding, "variable").first), let value = objects(binding, "value").first else {
                    throw ResultFileError(description: "rs:binding without rs:variable or rs:value")
                }
                guard let column = variables.firstIndex(of: name) else {
                    throw ResultFileError(description: "rs:binding of ?\(name), which is not an rs:resultVariable")
                }
                row[column] = value
            }
            rows.append((text(objects(solution, "index").first).flatMap { Int($0) }, row))
        }
        if rows.contains(where: { $0.index != nil }) {
            rows.sort { ($0.index ?? Int.max) < ($1.index ?? Int.max) }
        }
        return .solutions(SolutionTable(variables: variables, rows: rows.map(\.row)))
    }

    // MARK: SPARQL Query Results XML

    private final class XMLResultsDelegate: NSObject, XMLParserDelegate {
        var variables: [String] = []
        var rows: [[String: Term]] = []
        var boolean: Bool?
        private var currentRow: [String: Term]?
        private var currentBinding: String?
        private var termKind: String?
        private var datatype: String?
        private var language: String?
        private var text = ""

        func parser(_ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?,
                    qualifiedName qName: String?, attributes: [String: String] = [:]) {
            text = ""
            switch elementName {
            case "variable": if let name = attributes["name"] { variables.append(name) }
            case "result": currentRow = [:]
            case "binding": currentBinding = attributes["name"]
            case "uri", "bnode", "literal":
                termKind = elementName
                datatype = attributes["datatype"]
                language = attributes["xml:lang"]
            default: break
            }
        }

        func parser(_ parser: XMLParser, foundCharacters string: String) { text += string }

        func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName qName: String?) {
            switch elementName {
            case "uri", "bnode", "literal":
                let term: Term
                switch elementName {
                case "uri": term = .iri(text)
                case "bnode": term = .blank(text)
                default:
                    if let language { term = .literal(Literal(text, language: language)) } else { term = .typed(text, datatype ?? Vocabulary.xsdString) }
                }
                if let currentBinding { currentRow?[currentBinding] = term }
            case "binding": currentBinding = nil
            case "result": if let currentRow { rows.append(currentRow) }; currentRow = nil
            case "boolean": boolean = text.trimmingCharacters(in: .whitespacesAndNewlines) == "true"
            default: break
            }
        }
    }

    static func parseXML(_ data: Data) throws -> ExpectedResult {
        let parser = XMLParser(data: data)
        let delegate = XMLResultsDelegate()
        parser.delegate = delegate
        parser.shouldProcessNamespaces = false
        guard parser.parse() else { throw ResultFileError(description: "bad SPARQL XML results") }
        if let boolean = delegate.boolean { return .boolean(boolean) }
        let rows = delegate.rows.map { row in delegate.variables.map { row[$0] } }
        return .solutions(SolutionTable(variables: delegate.variables, rows: rows))
    }

    // MARK: SPARQL Query Results JSON

    static func parseJSON(_ data: Data) throws -> ExpectedResult {
        guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ResultFileError(description: "bad SPARQL JSON results")
        }
        if let boolean = object["boolean"] as? Bool { return .boolean(boolean) }
        let head = object["head"] as? [String: Any]
        let variables = head?["vars"] as? [String] ?? []
        let bindings = (object["results"] as? [String: Any])?["bindings"] as? [[String: Any]] ?? []
        let rows: [[Term?]] = bindings.map { binding in
            variables.map { variable in
                guard let term = binding[variable] as? [String: Any], let type = term["type"] as? String,
                      let value = term["value"] as? String else { return nil }
                switch type {
                case "uri": return .iri(value)
                case "bnode": return .blank(value)
                default:
                    if let language = term["xml:lang"] as? String { return .literal(Literal(value, language: language)) }
                    return .typed(value, term["datatype"] as? String ?? Vocabulary.xsdString)
                }
            }
        }
        return .solutions(SolutionTable(variables: variables, rows: rows))
    }

    // MARK: TSV

    static func parseTSV(_ text: String) throws -> SolutionTable {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.hasSuffix("\r") ? String($0.dropLast()) : String($0) }
        while lines.last?.isEmpty == true { lines.removeLast() }
        guard let header = lines.first else { throw ResultFileError(description: "empty TSV") }
        let variables = header.split(separator: "\t").map { $0.hasPrefix("?") ? String($0.dropFirst()) : String($0) }
        let rows = lines.dropFirst().map { line in
            line.split(separator: "\t", omittingEmptySubsequences: false).map { cell -> Term? in
                cell.isEmpty ? nil : parseTermText(String(cell))
            }
        }
        return SolutionTable(variables: variables, rows: rows)
    }

    /// A term written in SPARQL/Turtle syntax, as in TSV results.
    static func parseTermText(_ text: String) -> Term? {
        if text.hasPrefix("<") && text.hasSuffix(">") { return .iri(String(text.dropFirst().dropLast())) }
        if text.hasPrefix("_:") { return .blank(String(text.dropFirst(2))) }
        if text == "true" || text == "false" { return .boolean(text == "true") }
        if text.hasPrefix("\"") {
            guard let close = text.lastIndex(of: "\""), close != text.startIndex else { return nil }
            let lexical = String(text[text.index(after: text.startIndex)..<close])
                .replacingOccurrences(of: "\\\"", with: "\"").replacingOccurrences(of: "\\t", with: "\t")
                .replacingOccurrences(of: "\\n", with: "\n").replacingOccurrences(of: "\\\\", with: "\\")
            let rest = text[text.index(after: close)...]
            if rest.hasPrefix("@") { return .literal(Literal(lexical, language: String(rest.dropFirst()))) }
            if rest.hasPrefix("^^<") { return .typed(lexical, String(rest.dropFirst(3).dropLast())) }
            return .string(lexical)
        }
        if Int(text) != nil { return .typed(text, Vocabulary.xsdInteger) }
        if text.contains("e") || text.contains("E") { return .typed(text, Vocabulary.xsdDouble) }
        if text.contains(".") { return .typed(text, Vocabulary.xsdDecimal) }
        return nil
    }
}
