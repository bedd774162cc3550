import Catalog
import Foundation
import Trust
import XMLModel

/// `urn:intercloud:catalog:0` (DESIGN.md "Query"): a trusted peer sends
/// `<query xmlns='urn:intercloud:catalog:0'>SPARQL text</query>` inside a signed envelope; the signed
/// answer's payload is the SPARQL Query Results XML document itself (RDF/XML for CONSTRUCT and
/// DESCRIBE), exactly as `QueryResult.serializedXML()` writes it. Refusals are stanza errors:
/// `bad-request` (malformed request or SPARQL, with `line L, column C` in the text), `not-acceptable`
/// (over the limits: narrow the query), `resource-constraint` (too many queries running: retry),
/// `forbidden` (no query entitlement), `feature-not-implemented` (valid SPARQL we do not evaluate).
public enum CatalogProtocol {
    public static let namespace = "urn:intercloud:catalog:0"
    static let resultsNamespace = "http://www.w3.org/2005/sparql-results#"
    /// Largest query text accepted (the engine's own `maxQueryBytes` default is larger; a peer query
    /// travels in one stanza, so it is bounded here first).
    public static let maxQueryBytes = 32 * 1024
    /// Largest answer payload. Base64 in the envelope grows it by a third, and Prosody's default
    /// `c2s_stanza_size_limit` is 256 KiB: above that the server closes the answering broker's
    /// stream. 160 KiB leaves room for the envelope; a bigger answer is refused as over the limits.
    public static let maxAnswerBytes = 160 * 1024

    public static func request(_ sparql: String) -> [UInt8] {
        Array(XMLElement("query", namespace: namespace, text: sparql).serialized().utf8)
    }

    /// The SPARQL text of a request, or nil if the payload is not a `<query/>` of our namespace.
    public static func parseRequest(_ bytes: [UInt8]) -> String? {
        guard let element = try? XMLElement.parse(String(decoding: bytes, as: UTF8.self), maxBytes: maxQueryBytes * 6 + 256),
            element.name == "query", element.namespace == namespace, element.elements.isEmpty,
            element.text.utf8.count <= maxQueryBytes
        else { return nil }
        return element.text
    }

    public struct ProtocolError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Reads an answer: SPARQL Query Results XML (solutions or boolean) or, for graph queries,
    /// RDF/XML (parsed with the catalog's RDF loader).
    public static func parseAnswer(_ bytes: [UInt8]) throws -> QueryResult {
        let text = String(decoding: bytes, as: UTF8.self)
        if !text.contains("<sparql") {
            do {
                return .graph(try RDFLoader.parse(Data(bytes), format: .rdfXML, baseIRI: nil, limits: LoadLimits(maxInputBytes: maxAnswerBytes * 2)))
            } catch { throw ProtocolError(description: "answer is neither SPARQL results nor RDF/XML: \(error)") }
        }
        let root: XMLElement
        do { root = try XMLElement.parse(text, maxBytes: maxAnswerBytes * 2) } catch {
            throw ProtocolError(description: "unreadable SPARQL results: \(error)")
        }
        guard root.name == "sparql", root.namespace == resultsNamespace else {
            throw ProtocolError(description: "answer root is <\(root.name)>, not SPARQL results")
        }
        if let boolean = root.child(named: "boolean") {
            switch boolean.text.trimmingCharacters(in: .whitespacesAndNewlines) {
            case "true": return .boolean(true)
            case "false": return .boolean(false)
            case let other: throw ProtocolError(description: "boolean result \(other)")
            }
        }
        let variables = (root.child(named: "head")?.children(named: "variable") ?? []).compactMap { $0[attribute: "name"] }
        var rows: [[Term?]] = []
        for result in root.child(named: "results")?.children(named: "result") ?? [] {
            var row = [Term?](repeating: nil, count: variables.count)
            for binding in result.children(named: "binding") {
                guard let name = binding[attribute: "name"], let index = variables.firstIndex(of: name),
                    let value = binding.elements.first
                else { throw ProtocolError(description: "binding without name or value") }
                row[index] = try term(value)
            }
            rows.append(row)
        }
        return .solutions(SolutionTable(variables: variables, rows: rows))
    }

    private static func term(_ element: XMLElement) throws -> Term {
        switch element.name {
        case "uri": return .iri(element.text)
        case "bnode": return .blank(element.text)
        case "literal":
            if let language = element[attribute: "xml:lang"] ?? element[attribute: "lang"] {
                return .literal(Literal(element.text, language: language))
            }
            return .literal(Literal(element.text, datatype: element[attribute: "datatype"] ?? Vocabulary.xsdString))
        default: throw ProtocolError(description: "unknown term <\(element.name)>")
        }
    }

    /// A term as one table cell: IRIs and literals bare, blank nodes `_:x`, language tags
    /// `"text"@en`; typed literals show their lexical form (the numbers people query for).
    public static func cell(_ term: Term?) -> String {
        switch term {
        case nil: return ""
        case .iri(let iri)?: return iri.value
        case .blank(let node)?: return "_:\(node.label)"
        case .literal(let literal)?:
            if let language = literal.language { return "\"\(literal.lexical)\"@\(language)" }
            return literal.lexical
        }
    }
}
