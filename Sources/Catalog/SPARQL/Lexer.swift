// Tokenizer for SPARQL 1.1. Every token records the line and column (1-based, in Unicode scalars)
// where it starts, so that parse errors can point at the exact place in a peer's query.

struct SourcePosition: Sendable, Equatable {
    var line: Int
    var column: Int
}

enum TokenKind: Equatable, Sendable {
    case iri(String)
    case prefixedName(prefix: String, local: String)
    case blankNode(String)
    case variable(String)
    case string(String)
    case languageTag(String)
    case integer(String)
    case decimal(String)
    case double(String)
    /// A bare word: keyword, function name, `a`, `true`, `false`.
    case word(String)
    case punctuation(String)
    case endOfInput
}

struct Token: Sendable {
    var kind: TokenKind
    var position: SourcePosition

    var describe: String {
        switch kind {
        case .iri(let value): return "<\(value)>"
        case .prefixedName(let prefix, let local): return "\(prefix):\(local)"
        case .blankNode(let label): return "_:\(label)"
        case .variable(let name): return "?\(name)"
        case .string(let value): return "\"\(value)\""
        case .languageTag(let tag): return "@\(tag)"
        case .integer(let text), .decimal(let text), .double(let text): return text
        case .word(let word): return word
        case .punctuation(let text): return "'\(text)'"
        case .endOfInput: return "end of query"
        }
    }
}

struct Lexer {
    private let scalars: [Unicode.Scalar]
    private var index = 0
    private var line = 1
    private var column = 1

    init(_ text: String) { scalars = Array(text.unicodeScalars) }

    static func tokenize(_ text: String) throws(QueryError) -> [Token] {
        var lexer = Lexer(text)
        var tokens: [Token] = []
        while true {
            let token = try lexer.next()
            tokens.append(token)
            if token.kind == .endOfInput { return tokens }
        }
    }

    private func peek(_ offset: Int = 0) -> Unicode.Scalar? {
        let position = index + offset
        return position < scalars.count ? scalars[position] : nil
    }

    private mutating func advance() {
        if scalars[index] == "\n" { line += 1; column = 1 } else { column += 1 }
        index += 1
    }

    private func error(_ message: String, _ position: SourcePosition) -> QueryError {
        .syntax(message: message, line: position.line, column: position.column)
    }

    private mutating func skipWhitespaceAndComments() {
        while let scalar = peek() {
            if scalar == " " || scalar == "\t" || scalar == "\n" || scalar == "\r" {
                advance()
            } else if scalar == "#" {
                while let c = peek(), c != "\n" { advance() }
            } else {
                return
            }
        }
    }

    static func isNameStart(_ c: Unicode.Scalar) -> Bool {
        switch c.value {
        case 0x41...0x5A, 0x61...0x7A, 0xC0...0xD6, 0xD8...0xF6, 0xF8...0x2FF, 0x370...0x37D, 0x37F...0x1FFF,
             0x200C...0x200D, 0x2070...0x218F, 0x2C00...0x2FEF, 0x3001...0xD7FF, 0xF900...0xFDCF, 0xFDF0...0xFFFD,
             0x10000...0xEFFFF:
            return true
        default: return false
        }
    }

    static func isNameChar(_ c: Unicode.Scalar) -> Bool {
        isNameStart(c) || c == "_" || c == "-" || (c.value >= 0x30 && c.value <= 0x39) || c.value == 0xB7
            || (c.value >= 0x300 && c.value <= 0x36F) || (c.value >= 0x203F && c.value <= 0x2040)
    }

    static func isDigit(_ c: Unicode.Scalar?) -> Bool { c.map { $0.value >= 0x30 && $0.value <= 0x39 } ?? false }

    mutating func next() throws(QueryError) -> Token {
        skipWhitespaceAndComments()
        let start = SourcePosition(line: line, column: column)
        guard let c = peek() else { return Token(kind: .endOfInput, position: start) }

        // IRI reference, or else the '<' / '<=' operators.
        if c == "<" {
            var offset = 1
            var ok = false
            while let d = peek(offset) {
                if d == ">" { ok = true; break }
                if d.value <= 0x20 || d == "<" || d == "\"" || d == "{" || d == "}" || d == "|" || d == "^" || d == "`" { break }
                offset += 1
            }
            if ok {
                advance()
                var value = String.UnicodeScalarView()
                while let d = peek(), d != ">" {
                    if d == "\\" {
                        advance()
                        value.append(try unicodeEscape(start))
                        continue
                    }
                    value.append(d)
                    advance()
                }
                advance()
                return Token(kind: .iri(String(value)), position: start)
            }
        }
        if c == "?" || c == "$" {
            if let n = peek(1), Lexer.isNameStart(n) || n == "_" || Lexer.isDigit(n) {
                advance()
                var name = String.UnicodeScalarView()
                while let d = peek(), Lexer.isNameChar(d) { name.append(d); advance() }
                return Token(kind: .variable(String(name)), position: start)
            }
            if c == "$" { throw error("'$' must start a variable name", start) }
        }
        if c == "\"" || c == "'" { return Token(kind: .string(try stringLiteral(quote: c, start: start)), position: start) }
        if c == "@" {
            advance()
            var tag = ""
            while let d = peek(), (d.properties.isASCIIHexDigit || d.properties.isAlphabetic && d.isASCII) || d == "-" || Lexer.isDigit(d) {
                tag.unicodeScalars.append(d)
                advance()
            }
            guard !tag.isEmpty else { throw error("empty language tag", start) }
            return Token(kind: .languageTag(tag), position: start)
        }
        if Lexer.isDigit(c) || (c == "." && Lexer.isDigit(peek(1))) { return number(start) }
        if c == "_" && peek(1) == ":" {
            advance(); advance()
            var label = String.UnicodeScalarView()
            while let d = peek(), Lexer.isNameChar(d) || d == "." {
                if d == ".", !(peek(1).map(Lexer.isNameChar) ?? false) { break }
                label.append(d)
                advance()
            }
            guard !label.isEmpty else { throw error("empty blank node label", start) }
            return Token(kind: .blankNode(String(label)), position: start)
        }
        if Lexer.isNameStart(c) || c == ":" {
            var word = String.UnicodeScalarView()
            if c != ":" {
                while let d = peek(), Lexer.isNameChar(d) || d == "." {
                    if d == ".", !(peek(1).map { Lexer.isNameChar($0) || $0 == "." } ?? false) { break }
                    word.append(d)
                    advance()
                }
                if word.last == "." { throw error("prefix may not end with '.'", start) }
            }
            if peek() == ":" {
                advance()
                let local = try localName(start)
                return Token(kind: .prefixedName(prefix: String(word), local: local), position: start)
            }
            return Token(kind: .word(String(word)), position: start)
        }
        let two = peek(1).map { String(c) + String($0) } ?? ""
        for op in ["^^", "<=", ">=", "!=", "&&", "||"] where two == op {
            advance(); advance()
            return Token(kind: .punctuation(op), position: start)
        }
        if "{}()[].,;*/|^?+-!=<>".unicodeScalars.contains(c) {
            advance()
            return Token(kind: .punctuation(String(c)), position: start)
        }
        throw error("unexpected character '\(c)'", start)
    }

    private mutating func localName(_ start: SourcePosition) throws(QueryError) -> String {
        var local = ""
        var first = true
        while let d = peek() {
            if d == "%" {
                guard let h1 = peek(1), let h2 = peek(2), h1.properties.isASCIIHexDigit, h2.properties.isASCIIHexDigit else {
                    throw error("bad % escape in local name", SourcePosition(line: line, column: column))
                }
                local += "%\(h1)\(h2)"
                advance(); advance(); advance()
            } else if d == "\\" {
                guard let e = peek(1), "_~.-!$&'()*+,;=/?#@%".unicodeScalars.contains(e) else {
                    throw error("bad escape in local name", SourcePosition(line: line, column: column))
                }
                local.unicodeScalars.append(e)
                advance(); advance()
            } else if Lexer.isNameChar(d) || d == ":" || (first && Lexer.isDigit(d)) {
                if first && (d == "-" || d.value == 0xB7) { break }
                local.unicodeScalars.append(d)
                advance()
            } else if d == ".", !first, let n = peek(1), Lexer.isNameChar(n) || n == ":" || n == "%" || n == "\\" || n == "." {
                // A '.' inside a local name, but never as its last character.
                var look = 1
                while peek(look) == "." { look += 1 }
                guard let after = peek(look), Lexer.isNameChar(after) || after == ":" || after == "%" || after == "\\" else { break }
                local.unicodeScalars.append(d)
                advance()
            } else {
                break
            }
            first = false
        }
        return local
    }

    private mutating func number(_ start: SourcePosition) -> Token {
        var text = ""
        while Lexer.isDigit(peek()) { text.unicodeScalars.append(peek()!); advance() }
        var kind = 0  // 0 integer, 1 decimal, 2 double
        if peek() == ".", Lexer.isDigit(peek(1)) || ((peek(1) == "e" || peek(1) == "E") && !text.isEmpty) {
            kind = 1
            text += "."
            advance()
            while Lexer.isDigit(peek()) { text.unicodeScalars.append(peek()!); advance() }
        }
        if let e = peek(), e == "e" || e == "E" {
            var offset = 1
            if peek(1) == "+" || peek(1) == "-" { offset = 2 }
            if Lexer.isDigit(peek(offset)) {
                kind = 2
                for _ in 0..<offset { text.unicodeScalars.append(peek()!); advance() }
                while Lexer.isDigit(peek()) { text.unicodeScalars.append(peek()!); advance() }
            }
        }
        switch kind {
        case 0: return Token(kind: .integer(text), position: start)
        case 1: return Token(kind: .decimal(text), position: start)
        default: return Token(kind: .double(text), position: start)
        }
    }

    private mutating func unicodeEscape(_ start: SourcePosition) throws(QueryError) -> Unicode.Scalar {
        guard let kind = peek(), kind == "u" || kind == "U" else { throw error("bad escape in IRI", start) }
        advance()
        var hex = ""
        for _ in 0..<(kind == "u" ? 4 : 8) {
            guard let h = peek(), h.properties.isASCIIHexDigit else { throw error("bad \\u escape", start) }
            hex.unicodeScalars.append(h)
            advance()
        }
        guard let value = UInt32(hex, radix: 16), let scalar = Unicode.Scalar(value) else { throw error("bad \\u escape", start) }
        return scalar
    }

    private mutating func stringLiteral(quote: Unicode.Scalar, start: SourcePosition) throws(QueryError) -> String {
        let long = peek(1) == quote && peek(2) == quote
        for _ in 0..<(long ? 3 : 1) { advance() }
        var value = String.UnicodeScalarView()
        while true {
            guard let d = peek() else { throw error("unterminated string", start) }
            if d == quote {
                if !long { advance(); break }
                if peek(1) == quote && peek(2) == quote {
                    // A long string may end with up to two more quotes before the closing three.
                    if peek(3) == quote { value.append(d); advance(); continue }
                    advance(); advance(); advance()
                    break
                }
                value.append(d)
                advance()
                continue
            }
            if !long && (d == "\n" || d == "\r") { throw error("line break in a short string", start) }
            if d == "\\" {
                advance()
                guard let e = peek() else { throw error("unterminated string", start) }
                switch e {
                case "t": value.append("\t"); advance()
                case "n": value.append("\n"); advance()
                case "r": value.append("\r"); advance()
                case "b": value.append("\u{08}"); advance()
                case "f": value.append("\u{0C}"); advance()
                case "\"", "'", "\\": value.append(e); advance()
                case "u", "U": value.append(try unicodeEscape(start))
                default: throw error("bad escape '\\\(e)' in string", SourcePosition(line: line, column: column))
                }
                continue
            }
            value.append(d)
            advance()
        }
        return String(value)
    }
}
