import Catalog
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif

/// Expected results of a W3C test, read from .srx, .srj, .tsv, .csv or an RDF graph file.
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
            return .graph(try RDFLoader.parse(data, format: format, baseIRI: url.absoluteString, limits: .init()))
        default:
            throw ResultFileError(description: "unknown result format \(url.lastPathComponent)")
        }
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
