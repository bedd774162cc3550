/// A strict, allocation-light parser for the subset of XML our payloads use: elements with
/// unprefixed names, attributes in single or double quotes, a default `xmlns`, text, the five
/// predefined entities and numeric character references.
///
/// It exists for speed (an envelope is parsed for every federation request; Foundation's
/// XMLParser costs ~50 µs per call here, mostly setup). Anything outside the subset — comments,
/// CDATA, processing instructions other than an XML declaration, DOCTYPE, prefixed names, other
/// entities — makes it return nil, and `PayloadElement.parse` falls back to XMLParser, which then
/// either parses the document properly or rejects it. So this parser never has to be complete,
/// only correct for what it accepts.
struct PayloadParser {
    private let bytes: [UInt8]
    private var index = 0
    private var depth = 0

    private init(_ text: String) { bytes = Array(text.utf8) }

    static func parse(_ text: String) -> PayloadElement? {
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

    private mutating func element(inheritedNamespace: String?) -> PayloadElement? {
        depth += 1
        defer { depth -= 1 }
        guard depth <= 16, next() == UInt8(ascii: "<"), let name = self.name() else { return nil }
        var attributes: [String: String] = [:]
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
                guard attributes.updateValue(value, forKey: key) == nil else { return nil }
            }
        }
        var children: [PayloadElement] = []
        var content = ""
        while true {
            guard let chunk = text(until: UInt8(ascii: "<")) else { return nil }
            content += chunk
            if starts(with: "</") {
                index += 2
                guard self.name() == name else { return nil }
                skipWhitespace()
                guard next() == UInt8(ascii: ">") else { return nil }
                let trimmed = content.trimmingWhitespace()
                return finish(name, namespace, inheritedNamespace, attributes, children, trimmed)
            }
            guard peek(at: 1).map(isNameStart) == true, let child = element(inheritedNamespace: namespace) else {
                return nil  // comment, CDATA, PI, or malformed: let XMLParser decide
            }
            children.append(child)
        }
    }

    private func finish(
        _ name: String, _ namespace: String?, _ inherited: String?, _ attributes: [String: String],
        _ children: [PayloadElement], _ text: String
    ) -> PayloadElement {
        // Same convention as the XMLParser path: the namespace is recorded where it changes.
        let recorded = namespace == inherited && inherited != nil ? nil : namespace.flatMap { $0.isEmpty ? nil : $0 }
        return PayloadElement(name: name, namespace: recorded, attributes: attributes, children: children, text: text)
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
    func trimmingWhitespace() -> String {
        func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D }
        guard let first = utf8.firstIndex(where: { !isSpace($0) }), let last = utf8.lastIndex(where: { !isSpace($0) }) else {
            return ""
        }
        return String(self[first...last])
    }
}
