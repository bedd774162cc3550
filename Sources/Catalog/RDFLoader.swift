import CRaptor
import Foundation

/// The RDF syntaxes the loader reads (all through Raptor 2).
public enum RDFFormat: String, Sendable, CaseIterable {
    case nTriples = "ntriples"
    case turtle = "turtle"
    case rdfXML = "rdfxml"

    /// Guesses the format from a file extension (`.nt`, `.ttl`, `.rdf`/`.owl`/`.xml`).
    public init?(fileExtension: String) {
        switch fileExtension.lowercased() {
        case "nt": self = .nTriples
        case "ttl", "turtle": self = .turtle
        case "rdf", "owl", "xml": self = .rdfXML
        default: return nil
        }
    }
}

/// Bounds applied to every document the loader reads; catalog data may come from untrusted peers.
public struct LoadLimits: Sendable, Equatable {
    public var maxInputBytes: Int
    public var maxTriples: Int
    public var maxLiteralBytes: Int
    /// Maximum nesting of `[` / `(` in Turtle, and of entity declarations in RDF/XML.
    public var maxNestingDepth: Int
    public var maxEntityDeclarations: Int

    public init(maxInputBytes: Int = 256 << 20, maxTriples: Int = 10_000_000, maxLiteralBytes: Int = 1 << 20,
                maxNestingDepth: Int = 256, maxEntityDeclarations: Int = 64) {
        self.maxInputBytes = maxInputBytes
        self.maxTriples = maxTriples
        self.maxLiteralBytes = maxLiteralBytes
        self.maxNestingDepth = maxNestingDepth
        self.maxEntityDeclarations = maxEntityDeclarations
    }

    public static let `default` = LoadLimits()
}

/// Why a document was not loaded.
public enum RDFLoadError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The document is not valid in its syntax; line and column are 1-based when Raptor knows them.
    case syntax(message: String, line: Int?, column: Int?)
    /// The document is over one of the `LoadLimits`, or uses a construct we refuse (entities).
    case refused(String)
    case unreadable(String)

    public var description: String {
        switch self {
        case .syntax(let message, let line, let column):
            if let line { return "syntax error at \(line):\(column ?? 0): \(message)" }
            return "syntax error: \(message)"
        case .refused(let reason): return "refused: \(reason)"
        case .unreadable(let reason): return "unreadable: \(reason)"
        }
    }
}

/// Raptor's functions, resolved from libraptor2.so.0 by the first parse (CRaptor does not link
/// Raptor: a broker that parses no RDF never maps it or its dependencies).
private enum RaptorLibrary {
    /// The outcome of the one load attempt of this process.
    static let functions: Result<intercloud_raptor, RDFLoadError> = {
        var reason: UnsafePointer<CChar>?
        guard let table = intercloud_raptor_load(&reason) else {
            return .failure(.unreadable(reason.map { String(cString: $0) } ?? "Raptor could not be loaded"))
        }
        return .success(table.pointee)
    }()
}

/// Parses RDF documents with Raptor 2 into `Triple`s. Each call builds its own Raptor world, so
/// concurrent calls share no C state.
public enum RDFLoader {
    /// Parses `data` and returns its triples in document order.
    public static func parse(_ data: Data, format: RDFFormat, baseIRI: String? = nil,
                             limits: LoadLimits = .default) throws(RDFLoadError) -> [Triple] {
        var triples: [Triple] = []
        try parse(data, format: format, baseIRI: baseIRI, limits: limits) { triples.append($0) }
        return triples
    }

    public static func parse(_ text: String, format: RDFFormat, baseIRI: String? = nil,
                             limits: LoadLimits = .default) throws(RDFLoadError) -> [Triple] {
        try parse(Data(text.utf8), format: format, baseIRI: baseIRI, limits: limits)
    }

    /// Parses `data`, handing each triple to `sink` as Raptor produces it.
    public static func parse(_ data: Data, format: RDFFormat, baseIRI: String?, limits: LoadLimits,
                             sink: (Triple) -> Void) throws(RDFLoadError) {
        guard data.count <= limits.maxInputBytes else {
            throw .refused("document of \(data.count) bytes is over the \(limits.maxInputBytes)-byte limit")
        }
        switch format {
        case .rdfXML:
            try screenXMLEntities(data, limits: limits)
            try screenXMLNesting(data, limits: limits)
        case .turtle: try screenTurtleNesting(data, limits: limits)
        case .nTriples: break
        }
        try withoutActuallyEscaping(sink) { (escapingSink) throws(RDFLoadError) in
            let context = ParseContext(raptor: try RaptorLibrary.functions.get(), limits: limits, sink: escapingSink)
            try runRaptor(data, format: format, baseIRI: baseIRI ?? "urn:intercloud:document", context: context)
        }
    }

    /// State shared with Raptor's C callbacks through an unmanaged pointer; used by one thread only.
    private final class ParseContext {
        let raptor: intercloud_raptor
        let limits: LoadLimits
        let sink: (Triple) -> Void
        var parser: OpaquePointer?
        var count = 0
        var failure: RDFLoadError?

        init(raptor: intercloud_raptor, limits: LoadLimits, sink: @escaping (Triple) -> Void) {
            self.raptor = raptor
            self.limits = limits
            self.sink = sink
        }

        func fail(_ error: RDFLoadError) {
            if failure == nil { failure = error }
            if let parser { raptor.raptor_parser_parse_abort(parser) }
        }
    }

    private static func runRaptor(_ data: Data, format: RDFFormat, baseIRI: String,
                                  context: ParseContext) throws(RDFLoadError) {
        let raptor = context.raptor
        guard let world = raptor.raptor_new_world_internal(UInt32(RAPTOR_VERSION)) else { throw .unreadable("raptor world") }
        defer { raptor.raptor_free_world(world) }
        guard raptor.raptor_world_open(world) == 0 else { throw .unreadable("raptor world open") }
        let unmanaged = Unmanaged.passUnretained(context).toOpaque()
        _ = raptor.raptor_world_set_log_handler(world, unmanaged) { userData, message in
            guard let userData, let message else { return }
            let context = Unmanaged<ParseContext>.fromOpaque(userData).takeUnretainedValue()
            let level = message.pointee.level
            guard level.rawValue >= RAPTOR_LOG_LEVEL_ERROR.rawValue else { return }
            let text = message.pointee.text.map { String(cString: $0) } ?? "parse error"
            var line: Int?
            var column: Int?
            if let locator = message.pointee.locator {
                if locator.pointee.line > 0 { line = Int(locator.pointee.line) }
                if locator.pointee.column > 0 { column = Int(locator.pointee.column) }
            }
            context.fail(.syntax(message: text, line: line, column: column))
        }
        guard let parser = raptor.raptor_new_parser(world, format.rawValue) else { throw .unreadable("no raptor parser for \(format.rawValue)") }
        defer { raptor.raptor_free_parser(parser) }
        context.parser = parser
        // Untrusted input must not make us fetch URLs, read local files or load external entities.
        _ = raptor.raptor_parser_set_option(parser, RAPTOR_OPTION_NO_NET, nil, 1)
        _ = raptor.raptor_parser_set_option(parser, RAPTOR_OPTION_NO_FILE, nil, 1)
        _ = raptor.raptor_parser_set_option(parser, RAPTOR_OPTION_LOAD_EXTERNAL_ENTITIES, nil, 0)
        raptor.raptor_parser_set_statement_handler(parser, unmanaged) { userData, statement in
            guard let userData, let statement else { return }
            let context = Unmanaged<ParseContext>.fromOpaque(userData).takeUnretainedValue()
            guard context.failure == nil else { return }
            context.count += 1
            if context.count > context.limits.maxTriples {
                context.fail(.refused("more than \(context.limits.maxTriples) triples"))
                return
            }
            do {
                let subject = try RDFLoader.term(statement.pointee.subject, context: context)
                let predicate = try RDFLoader.term(statement.pointee.predicate, context: context)
                let object = try RDFLoader.term(statement.pointee.object, context: context)
                context.sink(Triple(subject, predicate, object))
            } catch let error as RDFLoadError {
                context.fail(error)
            } catch {
                context.fail(.unreadable(String(describing: error)))
            }
        }
        guard let base = raptor.raptor_new_uri(world, baseIRI) else { throw .unreadable("bad base IRI") }
        defer { raptor.raptor_free_uri(base) }
        guard raptor.raptor_parser_parse_start(parser, base) == 0 else {
            throw context.failure ?? .unreadable("raptor could not start parsing")
        }
        let status: Int32 = data.withUnsafeBytes { raw in
            let bytes = raw.bindMemory(to: UInt8.self)
            return raptor.raptor_parser_parse_chunk(parser, bytes.baseAddress, bytes.count, 1)
        }
        if let failure = context.failure { throw failure }
        if status != 0 { throw .syntax(message: "parse failed", line: nil, column: nil) }
    }

    private static func term(_ raw: UnsafeMutablePointer<raptor_term>?, context: ParseContext) throws(RDFLoadError) -> Term {
        guard let raw else { throw .syntax(message: "missing term", line: nil, column: nil) }
        let limits = context.limits
        switch raw.pointee.type {
        case RAPTOR_TERM_TYPE_URI:
            return .iri(try uriText(raw.pointee.value.uri, context: context))
        case RAPTOR_TERM_TYPE_BLANK:
            let blank = raw.pointee.value.blank
            return .blank(string(blank.string, length: Int(blank.string_len)))
        case RAPTOR_TERM_TYPE_LITERAL:
            let literal = raw.pointee.value.literal
            guard Int(literal.string_len) <= limits.maxLiteralBytes else {
                throw .refused("literal of \(literal.string_len) bytes is over the \(limits.maxLiteralBytes)-byte limit")
            }
            let lexical = string(literal.string, length: Int(literal.string_len))
            if literal.language_len > 0, let language = literal.language {
                return .literal(Literal(lexical, language: string(language, length: Int(literal.language_len))))
            }
            if let datatype = literal.datatype {
                return .literal(Literal(lexical, datatype: try uriText(datatype, context: context)))
            }
            return .string(lexical)
        default:
            throw .syntax(message: "unknown term type", line: nil, column: nil)
        }
    }

    private static func uriText(_ uri: OpaquePointer?, context: ParseContext) throws(RDFLoadError) -> String {
        guard let uri, let text = context.raptor.raptor_uri_as_string(uri) else {
            throw .syntax(message: "missing IRI", line: nil, column: nil)
        }
        return String(cString: text)
    }

    private static func string(_ pointer: UnsafeMutablePointer<UInt8>?, length: Int) -> String {
        guard let pointer else { return "" }
        return String(decoding: UnsafeBufferPointer(start: pointer, count: length), as: UTF8.self)
    }

    /// Refuses the XML constructs behind entity-expansion attacks before libxml2 sees them:
    /// external entities, entities whose value refers to other entities (the "billion laughs"
    /// pattern), and documents declaring more entities than the limit. Plain namespace-shortcut
    /// entities such as `<!ENTITY rdf "http://...">` stay allowed.
    static func screenXMLEntities(_ data: Data, limits: LoadLimits) throws(RDFLoadError) {
        let bytes = [UInt8](data)
        // rdf:aboutEach / rdf:aboutEachPrefix were removed from RDF; Raptor still accepts them.
        if let text = String(data: data, encoding: .utf8), text.contains(":aboutEach=") || text.contains(":aboutEachPrefix=") {
            throw .syntax(message: "rdf:aboutEach is not RDF/XML", line: nil, column: nil)
        }
        let marker = Array("<!ENTITY".utf8)
        var declarations = 0
        var index = 0
        while index + marker.count <= bytes.count {
            if bytes[index] == 0x3C, bytes[index + 1] == 0x21, Array(bytes[index..<(index + marker.count)]) == marker {
                declarations += 1
                if declarations > limits.maxEntityDeclarations {
                    throw .refused("more than \(limits.maxEntityDeclarations) XML entity declarations")
                }
                var end = index + marker.count
                var quote: UInt8? = nil
                while end < bytes.count {
                    let byte = bytes[end]
                    if let open = quote {
                        if byte == open { quote = nil } else if byte == 0x26 || byte == 0x25 {
                            throw .refused("XML entity whose value refers to other entities (entity expansion)")
                        }
                    } else if byte == 0x22 || byte == 0x27 {
                        quote = byte
                    } else if byte == 0x3E {
                        break
                    }
                    end += 1
                }
                let declaration = String(decoding: bytes[index..<min(end, bytes.count)], as: UTF8.self)
                let outsideQuotes = declaration.split(separator: "\"").enumerated().filter { $0.offset % 2 == 0 }
                    .map { $0.element }.joined()
                if outsideQuotes.contains("SYSTEM") || outsideQuotes.contains("PUBLIC") || outsideQuotes.contains("%") {
                    throw .refused("external or parameter XML entity")
                }
                index = end
            } else {
                index += 1
            }
        }
    }

    /// Refuses XML nested deeper than the limit: Raptor's RDF/XML parser slows down sharply
    /// with depth (100 000 nested elements take minutes), so depth is checked before parsing.
    static func screenXMLNesting(_ data: Data, limits: LoadLimits) throws(RDFLoadError) {
        let bytes = [UInt8](data)
        var depth = 0
        var index = 0
        let count = bytes.count
        while index < count {
            guard bytes[index] == 0x3C, index + 1 < count else { index += 1; continue }  // '<'
            let next = bytes[index + 1]
            if next == 0x21 || next == 0x3F {  // '<!' comment/CDATA/DOCTYPE, '<?' processing instruction
                let terminator: [UInt8]
                if next == 0x3F { terminator = [0x3F, 0x3E] } else if index + 3 < count, bytes[index + 2] == 0x2D, bytes[index + 3] == 0x2D {
                    terminator = [0x2D, 0x2D, 0x3E]
                } else if index + 8 < count, bytes[index + 2] == 0x5B {
                    terminator = [0x5D, 0x5D, 0x3E]  // CDATA
                } else {
                    terminator = [0x3E]  // DOCTYPE (internal subset declarations end at their own '>')
                }
                var end = index + 2
                while end + terminator.count <= count, !bytes[end..<(end + terminator.count)].elementsEqual(terminator) { end += 1 }
                index = end + terminator.count
                continue
            }
            // A tag: find its end, skipping quoted attribute values.
            var end = index + 1
            var quote: UInt8? = nil
            while end < count {
                let byte = bytes[end]
                if let open = quote { if byte == open { quote = nil } } else if byte == 0x22 || byte == 0x27 { quote = byte } else if byte == 0x3E { break }
                end += 1
            }
            if next == 0x2F {
                depth -= 1
            } else if end > 0, end < count, bytes[end - 1] != 0x2F {
                depth += 1
                if depth > limits.maxNestingDepth { throw .refused("XML nested deeper than \(limits.maxNestingDepth)") }
            }
            index = end + 1
        }
    }

    /// Refuses Turtle whose `[ ]` / `( )` nesting is deeper than the limit: Raptor's parser recurses
    /// on nesting, and a deeply nested document would otherwise exhaust its stack.
    static func screenTurtleNesting(_ data: Data, limits: LoadLimits) throws(RDFLoadError) {
        var depth = 0
        var inIRI = false
        var inComment = false
        var quote: UInt8? = nil
        var escaped = false
        for byte in data {
            if inComment { if byte == 0x0A || byte == 0x0D { inComment = false }; continue }
            if let open = quote {
                if escaped { escaped = false } else if byte == 0x5C { escaped = true } else if byte == open { quote = nil }
                continue
            }
            if inIRI { if byte == 0x3E { inIRI = false }; continue }
            switch byte {
            case 0x23: inComment = true
            case 0x22, 0x27: quote = byte
            case 0x3C: inIRI = true
            case 0x5B, 0x28:
                depth += 1
                if depth > limits.maxNestingDepth { throw .refused("nesting deeper than \(limits.maxNestingDepth)") }
            case 0x5D, 0x29: depth = max(0, depth - 1)
            default: break
            }
        }
    }
}
