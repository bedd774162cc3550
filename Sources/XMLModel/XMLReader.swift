/// The one XML parser: XML 1.0 with namespaces, as protocol payloads and provider responses
/// (EC2, S3, libvirt) use it, with nothing a hostile document could use to make it do more work
/// than its length.
///
/// Accepted: an XML declaration at the start, elements with prefixed or unprefixed names and the
/// namespaces in effect resolved, attributes in single or double quotes (values normalised as
/// XML 1.0 §3.3.3 says), text with line ends normalised, the five predefined entities, character
/// references, CDATA sections (as text) and comments (dropped). Refused: document type
/// declarations (so no entity a document defines, no expansion to play with), processing
/// instructions, undeclared prefixes, repeated attributes, characters XML does not allow,
/// content after the root element, nesting deeper than the caller's bound.
///
/// It is ours, and not Foundation's `XMLParser`, because that one links libxml2 and through it
/// the system ICU into every broker (~1.5 MiB resident at idle), costs ~50 µs of setup per call
/// (an envelope is parsed for every federation request), hands attributes over without their
/// order, and dereferences NULL on a processing instruction without data.
struct XMLReader {
    /// What the tree keeps of an element's text.
    enum Shape {
        /// A protocol payload: the element's text (all of it, CDATA included) trimmed of XML
        /// whitespace as one text node before its child elements.
        case payload
        /// A document: text nodes where they are, between and around child elements.
        case document
    }

    private let bytes: [UInt8]
    private let shape: Shape
    private let maxDepth: Int
    private var index = 0
    private var depth = 0
    /// Prefix declarations in effect, innermost last.
    private var prefixes: [(prefix: String, uri: String)] = []
    /// Reused for every text run.
    private var textBuffer: [UInt8] = []

    private static let xmlNamespace = "http://www.w3.org/XML/1998/namespace"
    /// Prefixes are looked up by scanning the declarations in scope: bounded, so a document
    /// declaring thousands cannot make every name cost thousands of comparisons. No protocol
    /// payload declares any; provider documents (libvirt's metadata) a few.
    static let maxPrefixesInScope = 64

    private init(_ bytes: [UInt8], shape: Shape, maxDepth: Int) {
        self.bytes = bytes
        self.shape = shape
        self.maxDepth = maxDepth
    }

    /// The document's root element.
    static func parse(_ bytes: [UInt8], shape: Shape, maxDepth: Int) throws(XMLElement.ParseError) -> XMLElement {
        var reader = XMLReader(bytes, shape: shape, maxDepth: maxDepth)
        return try reader.document()
    }

    private mutating func document() throws(XMLElement.ParseError) -> XMLElement {
        if starts(with: "\u{FEFF}") { index += 3 }
        skipWhitespace()
        if starts(with: "<?xml"), let after = peek(at: 5), isWhitespace(after) || after == UInt8(ascii: "?") {
            guard let end = find("?>") else { throw failure("unterminated XML declaration") }
            index = end + 2
        }
        try miscellany()
        guard peek() == UInt8(ascii: "<") else { throw failure(index == bytes.count ? "no root element" : "text outside the root element") }
        let root = try element(defaultNamespace: nil)
        try miscellany()
        guard index == bytes.count else { throw failure("content after the root element") }
        return root
    }

    /// Whitespace and comments around the root element.
    private mutating func miscellany() throws(XMLElement.ParseError) {
        while true {
            skipWhitespace()
            if starts(with: "<!--") { try comment() } else if starts(with: "<?") {
                throw failure("processing instructions are not allowed")
            } else if starts(with: "<!") {
                throw failure("document type declarations are not allowed")
            } else { return }
        }
    }

    private mutating func element(defaultNamespace inherited: String?) throws(XMLElement.ParseError) -> XMLElement {
        depth += 1
        defer { depth -= 1 }
        guard depth <= maxDepth else { throw failure("elements nested deeper than \(maxDepth) levels") }
        let tagStart = index
        index += 1  // '<'
        let tag = try qualifiedName()
        let declarationsBefore = prefixes.count
        defer { prefixes.removeLast(prefixes.count - declarationsBefore) }
        var defaultNamespace = inherited
        var attributes: [(name: String, value: String)] = []
        var attributeNames: Set<String>?
        var prefixedAttributes = false
        var declaredDefault = false
        var selfClosing = false
        while true {
            let spaced = skipWhitespace()
            guard let byte = peek() else { throw failure("unclosed start tag", at: tagStart) }
            if byte == UInt8(ascii: "/") {
                index += 1
                guard next() == UInt8(ascii: ">") else { throw failure("expected '>' after '/'") }
                selfClosing = true
                break
            }
            if byte == UInt8(ascii: ">") {
                index += 1
                break
            }
            guard spaced else { throw failure("expected whitespace before an attribute") }
            let name = try qualifiedName()
            skipWhitespace()
            guard next() == UInt8(ascii: "=") else { throw failure("expected '=' after attribute \(string(name.whole))") }
            skipWhitespace()
            guard let quote = next(), quote == UInt8(ascii: "'") || quote == UInt8(ascii: "\"") else {
                throw failure("attribute value not quoted")
            }
            let value = try attributeValue(quote: quote)
            if name.prefix == nil, equals(name.local, "xmlns") {
                guard !declaredDefault else { throw failure("repeated attribute xmlns") }
                declaredDefault = true
                defaultNamespace = value.isEmpty ? nil : value
            } else if let prefix = name.prefix, equals(prefix, "xmlns") {
                let declared = string(name.local)
                guard !value.isEmpty else { throw failure("namespace prefix \(declared) declared empty") }
                guard declared != "xmlns", (declared == "xml") == (value == Self.xmlNamespace) else {
                    throw failure("namespace prefix \(declared) may not be bound to \(value)")
                }
                guard !prefixes[declarationsBefore...].contains(where: { $0.prefix == declared }) else {
                    throw failure("repeated attribute xmlns:\(declared)")
                }
                guard prefixes.count < Self.maxPrefixesInScope else {
                    throw failure("more than \(Self.maxPrefixesInScope) namespace prefixes declared in scope")
                }
                prefixes.append((declared, value))
            } else {
                let qualified = string(name.whole)
                prefixedAttributes = prefixedAttributes || name.prefix != nil
                try insert((qualified, value), into: &attributes, names: &attributeNames)
            }
        }
        let namespace: String?
        if let prefix = tag.prefix { namespace = try resolve(prefix) } else { namespace = defaultNamespace }
        if prefixedAttributes { try checkExpandedNamesDistinct(attributes) }
        var result = XMLElement(string(tag.local), namespace: namespace, attributes: [], children: [])
        result.attributes = attributes
        if selfClosing { return result }

        // Content. The element's text is the buffer from here on: a child's text goes after it
        // and is cut off again when the child ends.
        let textStart = textBuffer.count
        defer { textBuffer.removeLast(textBuffer.count - textStart) }
        var children: [XMLNode] = []
        while true {
            guard let byte = peek() else { throw failure("element <\(string(tag.whole))> is not closed", at: tagStart) }
            switch byte {
            case UInt8(ascii: "<"):
                switch peek(at: 1) {
                case UInt8(ascii: "/"):
                    index += 2
                    let closing = try qualifiedName()
                    guard bytes[closing.whole].elementsEqual(bytes[tag.whole]) else {
                        throw failure("</\(string(closing.whole))> closes <\(string(tag.whole))>")
                    }
                    skipWhitespace()
                    guard next() == UInt8(ascii: ">") else { throw failure("expected '>' in an end tag") }
                    switch shape {
                    case .payload:
                        let text = trimmedText(from: textStart)
                        result.children = text.isEmpty ? children : [.text(text)] + children
                    case .document:
                        flushText(from: textStart, into: &children)
                        result.children = children
                    }
                    return result
                case UInt8(ascii: "!"):
                    if starts(with: "<!--") { try comment() } else if starts(with: "<![CDATA[") {
                        try cdata()
                    } else { throw failure("document type declarations are not allowed") }
                case UInt8(ascii: "?"):
                    throw failure("processing instructions are not allowed")
                default:
                    if shape == .document { flushText(from: textStart, into: &children) }
                    children.append(.element(try element(defaultNamespace: defaultNamespace)))
                }
            case UInt8(ascii: "&"):
                let scalar = try reference()
                UTF8.encode(scalar) { textBuffer.append($0) }
            case 0x0D:
                // CR LF and a lone CR both read as LF (XML 1.0 §2.11).
                index += 1
                if peek() == 0x0A { index += 1 }
                textBuffer.append(0x0A)
            case UInt8(ascii: "]") where starts(with: "]]>"):
                throw failure("']]>' in text")
            default:
                try checkCharacter(byte)
                textBuffer.append(byte)
                index += 1
            }
        }
    }

    private mutating func flushText(from start: Int, into nodes: inout [XMLNode]) {
        guard textBuffer.count > start else { return }
        nodes.append(.text(String(decoding: textBuffer[start...], as: UTF8.self)))
        textBuffer.removeLast(textBuffer.count - start)
    }

    private func trimmedText(from start: Int) -> String {
        let text = textBuffer[start...]
        guard let first = text.firstIndex(where: { !isWhitespace($0) }), let last = text.lastIndex(where: { !isWhitespace($0) })
        else { return "" }
        return String(decoding: textBuffer[first...last], as: UTF8.self)
    }

    private func resolve(_ prefix: Range<Int>) throws(XMLElement.ParseError) -> String {
        let name = string(prefix)
        if let declared = prefixes.last(where: { $0.prefix == name }) { return declared.uri }
        if name == "xml" { return Self.xmlNamespace }
        throw failure("namespace prefix \(name) is not declared")
    }

    /// Two prefixed attributes may not name the same namespace and local name (Namespaces in XML §6.3).
    private func checkExpandedNamesDistinct(_ attributes: [(name: String, value: String)]) throws(XMLElement.ParseError) {
        var seen = Set<String>()
        for attribute in attributes {
            var expanded = attribute.name
            if let colon = attribute.name.firstIndex(of: ":") {
                let prefix = String(attribute.name[..<colon])
                let declared = prefixes.last(where: { $0.prefix == prefix })?.uri ?? (prefix == "xml" ? Self.xmlNamespace : nil)
                guard let declared else { throw failure("namespace prefix \(prefix) is not declared") }
                expanded = "{\(declared)}" + attribute.name[attribute.name.index(after: colon)...]
            }
            guard seen.insert(expanded).inserted else { throw failure("repeated attribute \(attribute.name)") }
        }
    }

    /// Appends an attribute, refusing a repeated name: by scanning while there are few (every
    /// payload), through a set from the 16th on (a hostile element with thousands stays linear).
    private func insert(
        _ attribute: (name: String, value: String), into attributes: inout [(name: String, value: String)], names: inout Set<String>?
    ) throws(XMLElement.ParseError) {
        let repeated: Bool
        if var known = names {
            names = nil  // unique while inserting, so the set is not copied
            repeated = !known.insert(attribute.name).inserted
            names = known
        } else {
            repeated = attributes.contains { $0.name == attribute.name }
            if attributes.count == 15 { names = Set(attributes.map(\.name) + [attribute.name]) }
        }
        guard !repeated else { throw failure("repeated attribute \(attribute.name)") }
        attributes.append(attribute)
    }

    private mutating func attributeValue(quote: UInt8) throws(XMLElement.ParseError) -> String {
        var value: [UInt8] = []
        while let byte = peek() {
            switch byte {
            case quote:
                index += 1
                return String(decoding: value, as: UTF8.self)
            case UInt8(ascii: "<"):
                throw failure("'<' in an attribute value")
            case UInt8(ascii: "&"):
                UTF8.encode(try reference()) { value.append($0) }
            case 0x0D:
                index += 1
                if peek() == 0x0A { index += 1 }
                value.append(0x20)
            case 0x09, 0x0A:
                index += 1
                value.append(0x20)
            default:
                try checkCharacter(byte)
                value.append(byte)
                index += 1
            }
        }
        throw failure("unterminated attribute value")
    }

    /// `&name;` or a character reference, decoded.
    private mutating func reference() throws(XMLElement.ParseError) -> Unicode.Scalar {
        let start = index
        guard let end = bytes[index..<min(bytes.count, index + 12)].firstIndex(of: UInt8(ascii: ";")) else {
            throw failure("'&' not followed by a reference")
        }
        let body = bytes[(index + 1)..<end]
        index = end + 1
        if body.elementsEqual("amp".utf8) { return "&" }
        if body.elementsEqual("lt".utf8) { return "<" }
        if body.elementsEqual("gt".utf8) { return ">" }
        if body.elementsEqual("apos".utf8) { return "'" }
        if body.elementsEqual("quot".utf8) { return "\"" }
        var value: UInt32?
        if body.starts(with: "#x".utf8), body.count > 2 {
            value = UInt32(String(decoding: body.dropFirst(2), as: UTF8.self), radix: 16)
        } else if body.first == UInt8(ascii: "#"), body.count > 1, body.dropFirst().allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) {
            value = UInt32(String(decoding: body.dropFirst(), as: UTF8.self), radix: 10)
        } else {
            throw failure("undefined entity &\(String(decoding: body, as: UTF8.self));", at: start)
        }
        guard let value, Self.isXMLCharacter(value), let scalar = Unicode.Scalar(value) else {
            throw failure("character reference &\(String(decoding: body, as: UTF8.self)); is not an XML character", at: start)
        }
        return scalar
    }

    private mutating func comment() throws(XMLElement.ParseError) {
        let start = index
        index += 4
        guard let end = find("--") else { throw failure("unterminated comment", at: start) }
        guard peek(at: end - index + 2) == UInt8(ascii: ">") else { throw failure("'--' inside a comment") }
        while index < end {
            try checkCharacter(bytes[index])
            index += 1
        }
        index = end + 3
    }

    private mutating func cdata() throws(XMLElement.ParseError) {
        let start = index
        index += 9
        guard let end = find("]]>") else { throw failure("unterminated CDATA section", at: start) }
        while index < end {
            let byte = bytes[index]
            if byte == 0x0D {
                textBuffer.append(0x0A)
                index += 1
                if index < end, bytes[index] == 0x0A { index += 1 }
                continue
            }
            try checkCharacter(byte)
            textBuffer.append(byte)
            index += 1
        }
        index = end + 3
    }

    /// A name, split at its one colon: both parts must be names without one (Namespaces in XML §3).
    private mutating func qualifiedName() throws(XMLElement.ParseError) -> (prefix: Range<Int>?, local: Range<Int>, whole: Range<Int>) {
        let start = index
        let first = try ncName()
        guard peek() == UInt8(ascii: ":") else { return (nil, first, start..<index) }
        index += 1
        let local = try ncName()
        if peek() == UInt8(ascii: ":") { throw failure("more than one ':' in a name") }
        return (first, local, start..<index)
    }

    private mutating func ncName() throws(XMLElement.ParseError) -> Range<Int> {
        let start = index
        guard let first = peek(), isNameStart(first) else { throw failure("expected a name") }
        index += 1
        while let byte = peek(), isNameStart(byte) || (byte >= 0x30 && byte <= 0x39) || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ".") {
            index += 1
        }
        return start..<index
    }

    /// ASCII letters and '_', and any non-ASCII byte: the input is valid UTF-8 (it comes from a
    /// String or was validated), and XML's non-ASCII name ranges are not worth their table here.
    private func isNameStart(_ byte: UInt8) -> Bool {
        (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x41 && byte <= 0x5A) || byte == 0x5F || byte >= 0x80
    }

    /// Characters XML 1.0 §2.2 allows, checked by UTF-8 byte: controls other than tab, LF and CR
    /// are refused, and so are U+FFFE and U+FFFF (EF BF BE, EF BF BF; valid UTF-8 has no
    /// surrogates).
    private func checkCharacter(_ byte: UInt8) throws(XMLElement.ParseError) {
        if byte < 0x20, byte != 0x09, byte != 0x0A, byte != 0x0D {
            throw failure("control character U+\(String(byte, radix: 16, uppercase: true)) is not allowed in XML")
        }
        if byte == 0xEF, peek(at: 1) == 0xBF, let third = peek(at: 2), third == 0xBE || third == 0xBF {
            throw failure("U+FFFE and U+FFFF are not allowed in XML")
        }
    }

    private static func isXMLCharacter(_ value: UInt32) -> Bool {
        value == 0x9 || value == 0xA || value == 0xD || (0x20...0xD7FF).contains(value) || (0xE000...0xFFFD).contains(value)
            || (0x10000...0x10FFFF).contains(value)
    }

    private func isWhitespace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D }

    @discardableResult
    private mutating func skipWhitespace() -> Bool {
        let start = index
        while let byte = peek(), isWhitespace(byte) { index += 1 }
        return index > start
    }

    private func peek(at offset: Int = 0) -> UInt8? {
        index + offset < bytes.count ? bytes[index + offset] : nil
    }

    private mutating func next() -> UInt8? {
        defer { index += 1 }
        return peek()
    }

    private func string(_ range: Range<Int>) -> String { String(decoding: bytes[range], as: UTF8.self) }

    private func equals(_ range: Range<Int>, _ literal: StaticString) -> Bool {
        literal.withUTF8Buffer { bytes[range].elementsEqual($0) }
    }

    private func starts(with prefix: StaticString) -> Bool {
        let count = prefix.utf8CodeUnitCount
        guard index + count <= bytes.count else { return false }
        return prefix.withUTF8Buffer { bytes[index..<(index + count)].elementsEqual($0) }
    }

    /// Where `needle` next starts, from the current position.
    private func find(_ needle: StaticString) -> Int? {
        needle.withUTF8Buffer { needle in
            guard let first = needle.first else { return nil }
            var position = index
            while position + needle.count <= bytes.count {
                guard let candidate = bytes[position...(bytes.count - needle.count)].firstIndex(of: first) else { return nil }
                if bytes[candidate..<(candidate + needle.count)].elementsEqual(needle) { return candidate }
                position = candidate + 1
            }
            return nil
        }
    }

    private func failure(_ message: String, at position: Int? = nil) -> XMLElement.ParseError {
        XMLElement.ParseError(description: "\(message) (byte \(position ?? index))")
    }
}
