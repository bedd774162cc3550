import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif

/// Parsing protocol payloads (a handshake message, an envelope, a payload inside one) from text.
///
/// The element a payload parses to: namespaces as in effect (children carry their parent's),
/// attributes in document order (a repeated name is refused), the element's text with XML
/// whitespace trimmed off both ends as one text node before the child elements (no protocol
/// payload mixes the two), at most 16 levels.
extension XMLElement {
    public struct ParseError: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    /// Parses one element (the payload's root). Inputs above `maxBytes` are refused before
    /// parsing. DTDs, entities other than XML's own and processing instructions are refused, so a
    /// peer has no entity expansion to play with.
    public static func parse(_ xml: String, maxBytes: Int = 1 << 20) throws -> XMLElement {
        guard xml.utf8.count <= maxBytes else { throw ParseError(description: "payload larger than \(maxBytes) bytes") }
        if let element = PayloadParser.parse(xml) { return element }
        return try parseWithXMLParser(xml)
    }

    /// An element received some other way (from the XMPP layer) in the form `parse` gives for
    /// its serialized text, without writing and reading the text; nil where `parse` could
    /// decline it (prefixed or repeated attribute names, more than 16 levels): then parse
    /// `serialized()` and let the parser decide.
    public var payloadForm: XMLElement? { payloadForm(inherited: nil, depth: 1) }

    private func payloadForm(inherited: String?, depth: Int) -> XMLElement? {
        guard depth <= 16, !name.contains(":") else { return nil }
        var seen = Set<String>()
        var kept: [(String, String)] = []
        kept.reserveCapacity(attributes.count)
        for attribute in attributes where attribute.name != "xmlns" {
            guard !attribute.name.contains(":"), seen.insert(attribute.name).inserted else { return nil }
            kept.append((attribute.name, attribute.value))
        }
        // An empty declaration undeclares: as the parser records it, no namespace.
        let effective = namespace.map { $0.isEmpty ? nil : $0 } ?? inherited
        var elements: [XMLNode] = []
        var text = ""
        for node in children {
            switch node {
            case .text(let chunk): text += chunk
            case .element(let child):
                guard let converted = child.payloadForm(inherited: effective, depth: depth + 1) else { return nil }
                elements.append(.element(converted))
            }
        }
        let trimmed = text.trimmingXMLWhitespace()
        return XMLElement(name, namespace: effective, attributes: kept, children: (trimmed.isEmpty ? [] : [.text(trimmed)]) + elements)
    }

    /// Foundation's parser: the reference for everything `PayloadParser` declines.
    static func parseWithXMLParser(_ xml: String) throws -> XMLElement {
        // libxml2 stops quietly after the first root element, so trailing content would pass
        // unnoticed. Wrapping the document in an element of our own makes everything inside count:
        // exactly one child element and no text are then required. A leading XML declaration has
        // to go first (it is only legal at the very start).
        var body = Substring(xml).drop(while: { $0.isWhitespace })
        if body.hasPrefix("<?xml") {
            guard let end = body.range(of: "?>") else { throw ParseError(description: "unterminated XML declaration") }
            body = body[end.upperBound...]
        }
        // No protocol payload has a processing instruction or a DTD, and Foundation's parser
        // crashes on some (a processing instruction without data dereferences NULL in its
        // callback: found by the fuzzer). They are refused before the parser sees them.
        if body.contains("<?") || body.contains("<!DOCTYPE") || body.contains("<!ENTITY") {
            throw ParseError(description: "processing instructions and document type declarations are not allowed in a payload")
        }
        let builder = Builder()
        let parser = XMLParser(data: Data(("<payload-wrapper>" + body + "</payload-wrapper>").utf8))
        parser.shouldProcessNamespaces = true
        parser.shouldResolveExternalEntities = false
        parser.delegate = builder
        guard parser.parse(), builder.error == nil, let wrapper = builder.root else {
            throw ParseError(description: parser.parserError.map { "\($0)" } ?? builder.error ?? "no element")
        }
        guard wrapper.elements.count == 1, wrapper.text.isEmpty else {
            throw ParseError(description: "expected exactly one root element")
        }
        return wrapper.elements[0]
    }

    /// XMLParser delegate building the tree; lives only for one `parse` call on one thread.
    private final class Builder: NSObject, XMLParserDelegate {
        struct Open {
            var element: XMLElement
            var text = ""
            var elements: [XMLNode] = []
        }
        var stack: [Open] = []
        var root: XMLElement?
        var error: String?

        func parser(
            _ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?,
            qualifiedName: String?, attributes: [String: String] = [:]
        ) {
            guard stack.count < 17 else { error = "nesting too deep"; parser.abortParsing(); return }
            let namespace = namespaceURI.flatMap { $0.isEmpty ? nil : $0 }
            // Foundation hands attributes over as a dictionary: their document order is lost here.
            stack.append(Open(element: XMLElement(elementName, namespace: namespace, attributes: attributes.keys.sorted().map { ($0, attributes[$0]!) })))
        }

        func parser(_ parser: XMLParser, foundCharacters string: String) {
            guard !stack.isEmpty else { return }
            stack[stack.count - 1].text += string
        }

        func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName: String?) {
            guard let open = stack.popLast() else { return }
            var element = open.element
            let text = open.text.trimmingXMLWhitespace()
            element.children = (text.isEmpty ? [] : [.text(text)]) + open.elements
            if stack.isEmpty { root = element } else { stack[stack.count - 1].elements.append(.element(element)) }
        }
    }
}

/// A strict, allocation-light parser for the subset of XML our payloads use: elements with
/// unprefixed names, attributes in single or double quotes, a default `xmlns`, text, the five
/// predefined entities and numeric character references.
///
/// It exists for speed (an envelope is parsed for every federation request; Foundation's
/// XMLParser costs ~50 µs per call here, mostly setup). Anything outside the subset — comments,
/// CDATA, processing instructions other than an XML declaration, DOCTYPE, prefixed names, other
/// entities — makes it return nil, and `XMLElement.parse` falls back to XMLParser, which then
/// either parses the document properly or rejects it. So this parser never has to be complete,
/// only correct for what it accepts.
struct PayloadParser {
    private let bytes: [UInt8]
    private var index = 0
    private var depth = 0

    private init(_ text: String) { bytes = Array(text.utf8) }

    static func parse(_ text: String) -> XMLElement? {
        var parser = PayloadParser(text)
        parser.skipWhitespace()
        if parser.starts(with: "<?xml") {
            guard let end = parser.find("?>") else { return nil }
            parser.index = end + 2
            parser.skipWhitespace()
        }
        guard let root = parser.element(inheritedNamespace: nil) else { return nil }
        parser.skipWhitespace()
        return parser.index == parser.bytes.count ? root : nil
    }

    private mutating func element(inheritedNamespace: String?) -> XMLElement? {
        depth += 1
        defer { depth -= 1 }
        guard depth <= 16, next() == UInt8(ascii: "<"), let name = self.name() else { return nil }
        var attributes: [(String, String)] = []
        var namespace = inheritedNamespace
        while true {
            let hadSpace = skipWhitespace()
            guard let byte = peek() else { return nil }
            if byte == UInt8(ascii: "/") {
                index += 1
                guard next() == UInt8(ascii: ">") else { return nil }
                return finish(name, namespace, inheritedNamespace, attributes, [], "")
            }
            if byte == UInt8(ascii: ">") {
                index += 1
                break
            }
            guard hadSpace, let key = self.name(), next() == UInt8(ascii: "=") else { return nil }
            guard let quote = next(), quote == UInt8(ascii: "'") || quote == UInt8(ascii: "\""),
                let value = text(until: quote)
            else { return nil }
            index += 1  // closing quote
            if key == "xmlns" { namespace = value } else {
                guard !attributes.contains(where: { $0.0 == key }) else { return nil }
                attributes.append((key, value))
            }
        }
        var children: [XMLNode] = []
        var content = ""
        while true {
            guard let chunk = text(until: UInt8(ascii: "<")) else { return nil }
            content += chunk
            if starts(with: "</") {
                index += 2
                guard self.name() == name else { return nil }
                skipWhitespace()
                guard next() == UInt8(ascii: ">") else { return nil }
                let trimmed = content.trimmingXMLWhitespace()
                return finish(name, namespace, inheritedNamespace, attributes, children, trimmed)
            }
            guard peek(at: 1).map(isNameStart) == true, let child = element(inheritedNamespace: namespace) else {
                return nil  // comment, CDATA, PI, or malformed: let XMLParser decide
            }
            children.append(.element(child))
        }
    }

    private func finish(
        _ name: String, _ namespace: String?, _ inherited: String?, _ attributes: [(String, String)],
        _ children: [XMLNode], _ text: String
    ) -> XMLElement {
        // Same convention as the XMLParser path: the namespace in effect (an empty declaration
        // undeclares).
        let effective = namespace.flatMap { $0.isEmpty ? nil : $0 }
        return XMLElement(name, namespace: effective, attributes: attributes, children: (text.isEmpty ? [] : [.text(text)]) + children)
    }

    /// Text up to (not including) `terminator`, with entities decoded; nil on `<` inside an
    /// attribute value, an unsupported entity, or end of input.
    private mutating func text(until terminator: UInt8) -> String? {
        var out: [UInt8] = []
        while let byte = peek() {
            if byte == terminator { return String(decoding: out, as: UTF8.self) }
            if byte == UInt8(ascii: "<") { return nil }
            if byte == UInt8(ascii: "&") {
                guard let decoded = entity() else { return nil }
                out += decoded
                continue
            }
            out.append(byte)
            index += 1
        }
        return nil
    }

    private mutating func entity() -> [UInt8]? {
        guard let end = bytes[index...].prefix(12).firstIndex(of: UInt8(ascii: ";")) else { return nil }
        let body = String(decoding: bytes[(index + 1)..<end], as: UTF8.self)
        index = end + 1
        switch body {
        case "amp": return [UInt8(ascii: "&")]
        case "lt": return [UInt8(ascii: "<")]
        case "gt": return [UInt8(ascii: ">")]
        case "apos": return [UInt8(ascii: "'")]
        case "quot": return [UInt8(ascii: "\"")]
        default:
            let scalarValue: UInt32?
            if body.hasPrefix("#x") { scalarValue = UInt32(body.dropFirst(2), radix: 16) }
            else if body.hasPrefix("#") { scalarValue = UInt32(body.dropFirst(), radix: 10) }
            else { scalarValue = nil }
            guard let scalarValue, let scalar = Unicode.Scalar(scalarValue) else { return nil }
            return Array(String(Character(scalar)).utf8)
        }
    }

    private mutating func name() -> String? {
        let start = index
        guard let first = peek(), isNameStart(first) else { return nil }
        index += 1
        while let byte = peek(), isNameStart(byte) || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
            || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ".")
        {
            index += 1
        }
        // A ':' here means a prefixed name: outside our subset.
        if peek() == UInt8(ascii: ":") { return nil }
        return String(decoding: bytes[start..<index], as: UTF8.self)
    }

    private func isNameStart(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
            || byte == UInt8(ascii: "_")
    }

    @discardableResult
    private mutating func skipWhitespace() -> Bool {
        let start = index
        while let byte = peek(), byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D { index += 1 }
        return index > start
    }

    private func peek(at offset: Int = 0) -> UInt8? {
        index + offset < bytes.count ? bytes[index + offset] : nil
    }

    private mutating func next() -> UInt8? {
        defer { index += 1 }
        return peek()
    }

    private func starts(with prefix: StaticString) -> Bool {
        let count = prefix.utf8CodeUnitCount
        guard index + count <= bytes.count else { return false }
        return prefix.withUTF8Buffer { buffer in (0..<count).allSatisfy { bytes[index + $0] == buffer[$0] } }
    }

    private func find(_ needle: StaticString) -> Int? {
        let count = needle.utf8CodeUnitCount
        return needle.withUTF8Buffer { buffer in
            var position = index
            while position + count <= bytes.count {
                if (0..<count).allSatisfy({ bytes[position + $0] == buffer[$0] }) { return position }
                position += 1
            }
            return nil
        }
    }
}

extension String {
    /// XML whitespace (space, tab, LF, CR) off both ends. By byte, not by Character: "\r\n" is one
    /// Character, equal to neither "\r" nor "\n".
    public func trimmingXMLWhitespace() -> String {
        func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D }
        guard let first = utf8.firstIndex(where: { !isSpace($0) }), let last = utf8.lastIndex(where: { !isSpace($0) }) else {
            return ""
        }
        return String(self[first...last])
    }
}
