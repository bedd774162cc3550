/// A recognizer for the TOML 1.0 grammar (toml.abnf), run on every document before toml++ parses
/// it: toml++ asserts (aborting the process) on a variety of malformed documents instead of
/// reporting them (`parse_key` on `[@]`, `parse_time` on `2027-01-01T"*"00:00Z`, found by
/// scripts/fuzz.sh), so it only ever sees documents that are syntactically TOML. Semantics
/// (duplicate keys, tables defined twice) are left to toml++, which reports those as errors.
///
/// It works on UTF-8 bytes with an index, no recursion deeper than the document's nesting, which
/// is bounded (`maximumNesting`).
struct TOMLGrammar {
    static let maximumNesting = 64

    struct Failure: Error {
        var offset: Int
        var message: String
    }

    private let bytes: [UInt8]
    private var index = 0

    init(_ text: String) { bytes = Array(text.utf8) }

    /// Throws the first place where the document is not TOML.
    static func recognize(_ text: String) throws(Failure) {
        var grammar = TOMLGrammar(text)
        try grammar.document()
    }

    // MARK: Bytes

    private var current: UInt8? { index < bytes.count ? bytes[index] : nil }
    private func peek(_ offset: Int) -> UInt8? { index + offset < bytes.count ? bytes[index + offset] : nil }
    private func fail(_ message: String) -> Failure { Failure(offset: index, message: message) }

    private mutating func expect(_ byte: UInt8, _ what: String) throws(Failure) {
        guard current == byte else { throw fail("expected \(what)") }
        index += 1
    }

    private mutating func skipSpaces() {
        while let byte = current, byte == 0x20 || byte == 0x09 { index += 1 }
    }

    private mutating func newline() -> Bool {
        if current == 0x0A { index += 1; return true }
        if current == 0x0D, peek(1) == 0x0A { index += 2; return true }
        return false
    }

    private mutating func comment() throws(Failure) {
        guard current == 0x23 else { return }
        while let byte = current, byte != 0x0A, !(byte == 0x0D && peek(1) == 0x0A) {
            if (byte < 0x20 && byte != 0x09) || byte == 0x7F { throw fail("a control character in a comment") }
            index += 1
        }
    }

    /// Spaces, comments and newlines (inside arrays).
    private mutating func skipBlank() throws(Failure) {
        while true {
            skipSpaces()
            try comment()
            if !newline() { return }
        }
    }

    private static func isBareKey(_ byte: UInt8) -> Bool {
        (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) || byte == 0x2D || byte == 0x5F
    }

    private static func isDigit(_ byte: UInt8?) -> Bool { byte.map { (0x30...0x39).contains($0) } ?? false }

    // MARK: Document

    private mutating func document() throws(Failure) {
        // A byte order mark at the start is allowed (and ignored) as toml++ does.
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { index = 3 }
        while index < bytes.count {
            skipSpaces()
            if current == 0x5B {
                try tableHeader()
            } else if let byte = current, byte != 0x23, byte != 0x0A, byte != 0x0D {
                try keyValue(depth: 0)
            }
            skipSpaces()
            try comment()
            guard index == bytes.count || newline() else { throw fail("expected the end of the line") }
        }
    }

    private mutating func tableHeader() throws(Failure) {
        let array = peek(1) == 0x5B
        index += array ? 2 : 1
        skipSpaces()
        try key()
        skipSpaces()
        try expect(0x5D, "]")
        if array { try expect(0x5D, "]]") }
    }

    private mutating func key() throws(Failure) {
        while true {
            try simpleKey()
            skipSpaces()
            guard current == 0x2E else { return }
            index += 1
            skipSpaces()
        }
    }

    private mutating func simpleKey() throws(Failure) {
        switch current {
        case 0x22: try basicString()
        case 0x27: try literalString()
        case let byte? where Self.isBareKey(byte):
            while let byte = current, Self.isBareKey(byte) { index += 1 }
        default: throw fail("expected a key")
        }
    }

    private mutating func keyValue(depth: Int) throws(Failure) {
        try key()
        skipSpaces()
        try expect(0x3D, "=")
        skipSpaces()
        try value(depth: depth)
    }

    // MARK: Values

    private mutating func value(depth: Int) throws(Failure) {
        guard depth < Self.maximumNesting else { throw fail("nested deeper than \(Self.maximumNesting)") }
        switch current {
        case 0x22:
            if peek(1) == 0x22, peek(2) == 0x22 { try multilineString(quote: 0x22) } else { try basicString() }
        case 0x27:
            if peek(1) == 0x27, peek(2) == 0x27 { try multilineString(quote: 0x27) } else { try literalString() }
        case 0x5B: try array(depth: depth)
        case 0x7B: try inlineTable(depth: depth)
        case .some: try scalar()
        case nil: throw fail("expected a value")
        }
    }

    private mutating func array(depth: Int) throws(Failure) {
        index += 1
        try skipBlank()
        while current != 0x5D {
            try value(depth: depth + 1)
            try skipBlank()
            guard current == 0x2C else { break }
            index += 1
            try skipBlank()
        }
        try expect(0x5D, "] or , in an array")
    }

    private mutating func inlineTable(depth: Int) throws(Failure) {
        index += 1
        skipSpaces()
        if current == 0x7D { index += 1; return }
        while true {
            try keyValue(depth: depth + 1)
            skipSpaces()
            guard current == 0x2C else { break }
            index += 1
            skipSpaces()
        }
        try expect(0x7D, "} or , in an inline table")
    }

    private mutating func basicString() throws(Failure) {
        index += 1
        while let byte = current {
            switch byte {
            case 0x22: index += 1; return
            case 0x5C: try escape()
            case 0x0A, 0x0D: throw fail("a one-line string ends at the end of the line")
            default: index += 1
            }
        }
        throw fail("unterminated string")
    }

    private mutating func literalString() throws(Failure) {
        index += 1
        while let byte = current {
            if byte == 0x27 { index += 1; return }
            if byte == 0x0A || byte == 0x0D { throw fail("a one-line string ends at the end of the line") }
            index += 1
        }
        throw fail("unterminated string")
    }

    private mutating func multilineString(quote: UInt8) throws(Failure) {
        index += 3
        while index < bytes.count {
            if current == quote, peek(1) == quote, peek(2) == quote {
                // Up to two more quotes belong to the content.
                index += 3
                if current == quote { index += 1 }
                if current == quote { index += 1 }
                return
            }
            if quote == 0x22, current == 0x5C {
                // A line-ending backslash, or an escape.
                var look = index + 1
                while look < bytes.count, bytes[look] == 0x20 || bytes[look] == 0x09 { look += 1 }
                if look < bytes.count, bytes[look] == 0x0A || (bytes[look] == 0x0D && look + 1 < bytes.count && bytes[look + 1] == 0x0A) {
                    index = look
                    continue
                }
                try escape()
                continue
            }
            index += 1
        }
        throw fail("unterminated multi-line string")
    }

    private mutating func escape() throws(Failure) {
        index += 1
        guard let byte = current else { throw fail("unterminated escape") }
        index += 1
        switch byte {
        case 0x62, 0x74, 0x6E, 0x66, 0x72, 0x22, 0x5C: return  // b t n f r " \
        case 0x75, 0x55:  // u U
            let count = byte == 0x75 ? 4 : 8
            for _ in 0..<count {
                guard let hex = current, Self.isDigit(hex) || (0x41...0x46).contains(hex) || (0x61...0x66).contains(hex) else {
                    throw fail("\\u and \\U take \(count) hexadecimal digits")
                }
                index += 1
            }
        default: throw fail("unknown escape")
        }
    }

    /// Booleans, numbers and dates: a run of bytes up to a delimiter, then its shape.
    private mutating func scalar() throws(Failure) {
        let start = index
        while let byte = current, !(byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D || byte == 0x2C
            || byte == 0x5D || byte == 0x7D || byte == 0x23)
        {
            index += 1
        }
        // A date and a time may be separated by one space.
        if current == 0x20, Self.isFullDate(bytes[start..<index]), Self.isDigit(peek(1)), Self.isDigit(peek(2)), peek(3) == 0x3A {
            index += 1
            while let byte = current, !(byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D || byte == 0x2C
                || byte == 0x5D || byte == 0x7D || byte == 0x23)
            {
                index += 1
            }
        }
        let token = String(decoding: bytes[start..<index], as: UTF8.self)
        guard !token.isEmpty, Self.isBoolean(token) || Self.isNumber(token) || Self.isDateTime(token) else {
            index = start
            throw fail("expected a value (a string, number, boolean, date, array or inline table)")
        }
    }

    static func isBoolean(_ token: String) -> Bool { token == "true" || token == "false" }

    static func isNumber(_ token: String) -> Bool {
        if ["inf", "+inf", "-inf", "nan", "+nan", "-nan"].contains(token) { return true }
        var body = Substring(token)
        for (prefix, digits) in [("0x", "0123456789abcdefABCDEF"), ("0o", "01234567"), ("0b", "01")] where body.hasPrefix(prefix) {
            return digitRun(body.dropFirst(2), allowed: digits)
        }
        if body.hasPrefix("+") || body.hasPrefix("-") { body = body.dropFirst() }
        // Integer part, optional fraction, optional exponent.
        var mantissa = body
        var exponent: Substring?
        if let e = body.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            mantissa = body[..<e]
            var rest = body[body.index(after: e)...]
            if rest.hasPrefix("+") || rest.hasPrefix("-") { rest = rest.dropFirst() }
            exponent = rest
        }
        var integer = mantissa
        var fraction: Substring?
        if let dot = mantissa.firstIndex(of: ".") {
            integer = mantissa[..<dot]
            fraction = mantissa[mantissa.index(after: dot)...]
        }
        guard digitRun(integer, allowed: "0123456789"), !(integer.count > 1 && integer.hasPrefix("0")) else { return false }
        if let fraction, !digitRun(fraction, allowed: "0123456789") { return false }
        if let exponent, !digitRun(exponent, allowed: "0123456789") { return false }
        return true
    }

    /// Digits from `allowed`, with single underscores between digits only.
    static func digitRun(_ text: Substring, allowed: String) -> Bool {
        guard let first = text.first, let last = text.last, first != "_", last != "_" else { return false }
        var previousUnderscore = false
        for character in text {
            if character == "_" {
                if previousUnderscore { return false }
                previousUnderscore = true
            } else {
                guard allowed.contains(character) else { return false }
                previousUnderscore = false
            }
        }
        return true
    }

    static func isFullDate(_ bytes: ArraySlice<UInt8>) -> Bool {
        let text = Array(bytes)
        guard text.count == 10, text[4] == 0x2D, text[7] == 0x2D else { return false }
        return [0, 1, 2, 3, 5, 6, 8, 9].allSatisfy { isDigit(text[$0]) }
    }

    static func isPartialTime(_ text: [UInt8]) -> Bool {
        guard text.count >= 8, text[2] == 0x3A, text[5] == 0x3A, [0, 1, 3, 4, 6, 7].allSatisfy({ isDigit(text[$0]) }) else { return false }
        if text.count == 8 { return true }
        return text[8] == 0x2E && text.count > 9 && text[9...].allSatisfy { isDigit($0) }
    }

    static func isDateTime(_ token: String) -> Bool {
        let text = Array(token.utf8)
        if isFullDate(text[...]) { return true }  // local date
        if isPartialTime(text) { return true }  // local time
        guard text.count > 11, isFullDate(text[0..<10]), [0x54, 0x74, 0x20].contains(text[10]) else { return false }
        var time = Array(text[11...])
        // Offset: Z, or ±HH:MM.
        if let last = time.last, last == 0x5A || last == 0x7A {
            time.removeLast()
        } else if time.count >= 14, [0x2B, 0x2D].contains(time[time.count - 6]) {
            let offset = Array(time[(time.count - 5)...])
            guard offset[2] == 0x3A, [0, 1, 3, 4].allSatisfy({ isDigit(offset[$0]) }) else { return false }
            time.removeLast(6)
        }
        return isPartialTime(time)
    }
}
