// RDF terms as plain value types. Everything above the store speaks `Term`; the store and the
// evaluator speak dense integer ids (see `TermDictionary`) and only decode to `Term` at the edges.

/// Well-known IRIs used throughout the module.
public enum Vocabulary {
    public static let xsd = "http://www.w3.org/2001/XMLSchema#"
    public static let rdf = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
    public static let xsdString = xsd + "string"
    public static let xsdBoolean = xsd + "boolean"
    public static let xsdInteger = xsd + "integer"
    public static let xsdDecimal = xsd + "decimal"
    public static let xsdDouble = xsd + "double"
    public static let xsdFloat = xsd + "float"
    public static let xsdDateTime = xsd + "dateTime"
    public static let rdfLangString = rdf + "langString"
    public static let rdfType = rdf + "type"
    public static let rdfFirst = rdf + "first"
    public static let rdfRest = rdf + "rest"
    public static let rdfNil = rdf + "nil"
}

/// An IRI, kept as its string form (already resolved against any base).
public struct IRI: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var value: String
    public init(_ value: String) { self.value = value }
    public static func < (lhs: IRI, rhs: IRI) -> Bool { lhs.value < rhs.value }
    public var description: String { "<\(value)>" }
}

/// A blank node, identified by a label that is only meaningful within one store or document.
public struct BlankNode: Hashable, Sendable, CustomStringConvertible {
    public var label: String
    public init(_ label: String) { self.label = label }
    public var description: String { "_:\(label)" }
}

/// A literal. Simple literals carry the datatype `xsd:string` (RDF 1.1), language-tagged ones
/// `rdf:langString` with a lower-cased language tag, so that equal terms compare equal.
public struct Literal: Hashable, Sendable, CustomStringConvertible {
    public var lexical: String
    public var datatype: String
    public var language: String?

    public init(_ lexical: String, datatype: String = Vocabulary.xsdString) {
        self.lexical = lexical
        self.datatype = datatype
        self.language = nil
    }

    public init(_ lexical: String, language: String) {
        self.lexical = lexical
        self.datatype = Vocabulary.rdfLangString
        self.language = language.lowercased()
    }

    public var isSimple: Bool { datatype == Vocabulary.xsdString && language == nil }
    public var description: String { Term.literal(self).nTriples }
}

/// One RDF term: an IRI, a blank node or a literal.
public enum Term: Hashable, Sendable, CustomStringConvertible {
    case iri(IRI)
    case blank(BlankNode)
    case literal(Literal)

    public static func iri(_ value: String) -> Term { .iri(IRI(value)) }
    public static func blank(_ label: String) -> Term { .blank(BlankNode(label)) }
    public static func string(_ value: String) -> Term { .literal(Literal(value)) }
    public static func integer(_ value: Int) -> Term { .literal(Literal(String(value), datatype: Vocabulary.xsdInteger)) }
    public static func boolean(_ value: Bool) -> Term { .literal(Literal(value ? "true" : "false", datatype: Vocabulary.xsdBoolean)) }
    public static func typed(_ lexical: String, _ datatype: String) -> Term { .literal(Literal(lexical, datatype: datatype)) }

    public var isIRI: Bool { if case .iri = self { return true } else { return false } }
    public var isBlank: Bool { if case .blank = self { return true } else { return false } }
    public var isLiteral: Bool { if case .literal = self { return true } else { return false } }
    public var literal: Literal? { if case .literal(let l) = self { return l } else { return nil } }

    /// The term in N-Triples syntax (also valid Turtle and SPARQL).
    public var nTriples: String {
        switch self {
        case .iri(let iri): return "<\(escapeIRI(iri.value))>"
        case .blank(let node): return "_:\(node.label)"
        case .literal(let literal):
            let quoted = "\"\(escapeNTriplesString(literal.lexical))\""
            if let language = literal.language { return quoted + "@" + language }
            if literal.datatype == Vocabulary.xsdString { return quoted }
            return quoted + "^^<\(escapeIRI(literal.datatype))>"
        }
    }

    public var description: String { nTriples }
}

/// A triple of terms.
public struct Triple: Hashable, Sendable, CustomStringConvertible {
    public var subject: Term
    public var predicate: Term
    public var object: Term
    public init(_ subject: Term, _ predicate: Term, _ object: Term) {
        self.subject = subject
        self.predicate = predicate
        self.object = object
    }
    /// One N-Triples line, without the newline.
    public var nTriples: String { "\(subject.nTriples) \(predicate.nTriples) \(object.nTriples) ." }
    public var description: String { nTriples }
}

func escapeNTriplesString(_ text: String) -> String {
    // Fast path: most catalog strings need no escaping.
    if !text.utf8.contains(where: { $0 == 0x22 || $0 == 0x5C || $0 < 0x20 }) { return text }
    var out = ""
    out.reserveCapacity(text.utf8.count + 8)
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case "\u{08}": out += "\\b"
        case "\u{0C}": out += "\\f"
        default:
            if scalar.value < 0x20 {
                out += "\\u" + hex4(scalar.value)
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    return out
}

func escapeIRI(_ text: String) -> String {
    if !text.utf8.contains(where: { $0 <= 0x20 || $0 == 0x3C || $0 == 0x3E || $0 == 0x22 || $0 == 0x7B || $0 == 0x7D || $0 == 0x7C || $0 == 0x5E || $0 == 0x60 || $0 == 0x5C }) {
        return text
    }
    var out = ""
    for scalar in text.unicodeScalars {
        if scalar.value <= 0x20 || "<>\"{}|^`\\".unicodeScalars.contains(scalar) {
            out += "\\u" + hex4(scalar.value)
        } else {
            out.unicodeScalars.append(scalar)
        }
    }
    return out
}

func hex4(_ value: UInt32) -> String {
    let hex = String(value, radix: 16, uppercase: true)
    return String(repeating: "0", count: max(0, 4 - hex.count)) + hex
}

/// Serializes triples as N-Triples, one per line.
public func serializeNTriples<S: Sequence>(_ triples: S) -> String where S.Element == Triple {
    var out = ""
    for triple in triples {
        out += triple.nTriples
        out += "\n"
    }
    return out
}
