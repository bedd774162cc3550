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
    /// peer has no entity expansion to play with (`XMLReader` says what is accepted).
    public static func parse(_ xml: String, maxBytes: Int = 1 << 20) throws -> XMLElement {
        guard xml.utf8.count <= maxBytes else { throw ParseError(description: "payload larger than \(maxBytes) bytes") }
        return try XMLReader.parse(Array(xml.utf8), shape: .payload, maxDepth: 16)
    }

    /// Parses a whole document (a provider's response, a libvirt domain) keeping its text where it
    /// is: text nodes between child elements, line ends normalised, CDATA as text, comments left
    /// out. Names are local names with their namespace resolved. Bytes that are not UTF-8 are
    /// refused, and so is anything above `maxBytes` or nested deeper than `maxDepth`.
    public static func parseDocument(_ bytes: some Collection<UInt8>, maxBytes: Int = 64 << 20, maxDepth: Int = 256) throws -> XMLElement {
        guard bytes.count <= maxBytes else { throw ParseError(description: "document larger than \(maxBytes) bytes") }
        guard let text = String(validating: bytes, as: UTF8.self) else { throw ParseError(description: "document is not UTF-8") }
        return try XMLReader.parse(Array(text.utf8), shape: .document, maxDepth: maxDepth)
    }

    /// An element received some other way (from the XMPP layer) in the form `parse` gives for
    /// its serialized text, without writing and reading the text; nil where `parse` could
    /// decline it or name it differently (prefixed or repeated attribute names, more than 16
    /// levels): then parse `serialized()` and let the parser decide.
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
