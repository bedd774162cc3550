import Foundation
import XMLModel

// Serialization of query results: SPARQL 1.1 Query Results XML and JSON formats for solutions and
// booleans; for graphs (CONSTRUCT/DESCRIBE), RDF/XML, N-Triples, or a JSON list of triples.

extension QueryResult {
    /// SPARQL Query Results XML (`application/sparql-results+xml`); RDF/XML for graph results.
    public func serializedXML() -> String {
        switch self {
        case .solutions(let table):
            var out = "<?xml version=\"1.0\"?>\n<sparql xmlns=\"http://www.w3.org/2005/sparql-results#\">\n  <head>\n"
            for variable in table.variables { out += "    <variable name=\"\(xmlEscape(variable))\"/>\n" }
            out += "  </head>\n  <results>\n"
            for row in table.rows {
                out += "    <result>\n"
                for (variable, value) in zip(table.variables, row) {
                    guard let value else { continue }
                    out += "      <binding name=\"\(xmlEscape(variable))\">\(xmlTerm(value))</binding>\n"
                }
                out += "    </result>\n"
            }
            out += "  </results>\n</sparql>\n"
            return out
        case .boolean(let value):
            return "<?xml version=\"1.0\"?>\n<sparql xmlns=\"http://www.w3.org/2005/sparql-results#\">\n  <head/>\n  <boolean>\(value)</boolean>\n</sparql>\n"
        case .graph(let triples):
            return serializeRDFXML(triples)
        }
    }

    /// SPARQL Query Results JSON (`application/sparql-results+json`); for graph results, an object
    /// `{"triples": [{"subject": term, "predicate": term, "object": term}, ...]}` with terms encoded
    /// as in the results format.
    public func serializedJSON() -> String {
        switch self {
        case .solutions(let table):
            var out = "{\"head\":{\"vars\":["
            out += table.variables.map { jsonString($0) }.joined(separator: ",")
            out += "]},\"results\":{\"bindings\":["
            var firstRow = true
            for row in table.rows {
                if !firstRow { out += "," }
                firstRow = false
                out += "{"
                var firstBinding = true
                for (variable, value) in zip(table.variables, row) {
                    guard let value else { continue }
                    if !firstBinding { out += "," }
                    firstBinding = false
                    out += jsonString(variable) + ":" + jsonTerm(value)
                }
                out += "}"
            }
            out += "]}}"
            return out
        case .boolean(let value):
            return "{\"head\":{},\"boolean\":\(value)}"
        case .graph(let triples):
            let items = triples.map { "{\"subject\":\(jsonTerm($0.subject)),\"predicate\":\(jsonTerm($0.predicate)),\"object\":\(jsonTerm($0.object))}" }
            return "{\"triples\":[" + items.joined(separator: ",") + "]}"
        }
    }

    /// N-Triples for graph results; for other results, their JSON.
    public func serializedNTriples() -> String {
        if case .graph(let triples) = self { return serializeNTriples(triples) }
        return serializedJSON()
    }
}

/// XML's five markup characters escaped, by XMLModel's one rule (by Unicode scalar: "&" followed
/// by a combining mark is one Character, and a Character-wise escape wrote it unescaped).
func xmlEscape(_ text: String) -> String { XMLEscaping.escape(text) }

private func xmlTerm(_ term: Term) -> String {
    switch term {
    case .iri(let iri): return "<uri>\(xmlEscape(iri.value))</uri>"
    case .blank(let node): return "<bnode>\(xmlEscape(node.label))</bnode>"
    case .literal(let literal):
        if let language = literal.language { return "<literal xml:lang=\"\(xmlEscape(language))\">\(xmlEscape(literal.lexical))</literal>" }
        if literal.datatype == Vocabulary.xsdString { return "<literal>\(xmlEscape(literal.lexical))</literal>" }
        return "<literal datatype=\"\(xmlEscape(literal.datatype))\">\(xmlEscape(literal.lexical))</literal>"
    }
}

func jsonString(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if scalar.value < 0x20 { out += "\\u" + hex4(scalar.value) } else { out.unicodeScalars.append(scalar) }
        }
    }
    return out + "\""
}

private func jsonTerm(_ term: Term) -> String {
    switch term {
    case .iri(let iri): return "{\"type\":\"uri\",\"value\":\(jsonString(iri.value))}"
    case .blank(let node): return "{\"type\":\"bnode\",\"value\":\(jsonString(node.label))}"
    case .literal(let literal):
        if let language = literal.language { return "{\"type\":\"literal\",\"value\":\(jsonString(literal.lexical)),\"xml:lang\":\(jsonString(language))}" }
        if literal.datatype == Vocabulary.xsdString { return "{\"type\":\"literal\",\"value\":\(jsonString(literal.lexical))}" }
        return "{\"type\":\"literal\",\"value\":\(jsonString(literal.lexical)),\"datatype\":\(jsonString(literal.datatype))}"
    }
}

/// Minimal RDF/XML writer: one rdf:Description per triple; predicates are split into namespace and
/// local name at the last '#' or '/'.
func serializeRDFXML(_ triples: [Triple]) -> String {
    var namespaces: [String: String] = [Vocabulary.rdf: "rdf"]
    var body = ""
    for triple in triples {
        guard case .iri(let predicate) = triple.predicate else { continue }
        let value = predicate.value
        guard let split = value.lastIndex(where: { $0 == "#" || $0 == "/" || $0 == ":" }) else { continue }
        var namespace = String(value[...split])
        var local = String(value[value.index(after: split)...])
        if local.isEmpty || !(local.first!.isLetter || local.first == "_") || local.contains(where: { !($0.isLetter || $0.isNumber || "_-.".contains($0)) }) {
            // Not expressible as an XML name: fall back to a namespace holding the whole IRI minus one char.
            namespace = String(value.dropLast())
            local = String(value.last!)
            if !(local.first!.isLetter) { continue }
        }
        let prefix = namespaces[namespace] ?? {
            let p = "ns\(namespaces.count)"
            namespaces[namespace] = p
            return p
        }()
        body += "  <rdf:Description "
        switch triple.subject {
        case .iri(let iri): body += "rdf:about=\"\(xmlEscape(iri.value))\">"
        case .blank(let node): body += "rdf:nodeID=\"\(xmlEscape(node.label))\">"
        case .literal: continue
        }
        body += "<\(prefix):\(local)"
        switch triple.object {
        case .iri(let iri): body += " rdf:resource=\"\(xmlEscape(iri.value))\"/>"
        case .blank(let node): body += " rdf:nodeID=\"\(xmlEscape(node.label))\"/>"
        case .literal(let literal):
            if let language = literal.language { body += " xml:lang=\"\(xmlEscape(language))\"" } else if literal.datatype != Vocabulary.xsdString {
                body += " rdf:datatype=\"\(xmlEscape(literal.datatype))\""
            }
            body += ">\(xmlEscape(literal.lexical))</\(prefix):\(local)>"
        }
        body += "</rdf:Description>\n"
    }
    var out = "<?xml version=\"1.0\"?>\n<rdf:RDF"
    for (namespace, prefix) in namespaces.sorted(by: { $0.value < $1.value }) { out += " xmlns:\(prefix)=\"\(xmlEscape(namespace))\"" }
    out += ">\n" + body + "</rdf:RDF>\n"
    return out
}

extension QueryResult {
    /// SPARQL 1.1 Query Results CSV (values only, no types); booleans as `true`/`false`.
    public func serializedCSV() -> String {
        guard case .solutions(let table) = self else {
            if case .boolean(let value) = self { return "\(value)\r\n" }
            return serializedNTriples()
        }
        func field(_ text: String) -> String {
            if text.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) {
                return "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
            }
            return text
        }
        var out = table.variables.map(field).joined(separator: ",") + "\r\n"
        for row in table.rows {
            out += row.map { term -> String in
                switch term {
                case nil: return ""
                case .iri(let iri)?: return field(iri.value)
                case .blank(let node)?: return "_:" + node.label
                case .literal(let literal)?: return field(literal.lexical)
                }
            }.joined(separator: ",") + "\r\n"
        }
        return out
    }

    /// SPARQL 1.1 Query Results TSV: terms in N-Triples syntax.
    public func serializedTSV() -> String {
        guard case .solutions(let table) = self else {
            if case .boolean(let value) = self { return "\(value)\n" }
            return serializedNTriples()
        }
        var out = table.variables.map { "?" + $0 }.joined(separator: "\t") + "\n"
        for row in table.rows {
            out += row.map { $0?.nTriples.replacingOccurrences(of: "\t", with: "\\t") ?? "" }.joined(separator: "\t") + "\n"
        }
        return out
    }
}
