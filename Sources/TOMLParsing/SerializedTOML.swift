import Foundation
@_exported import TOMLKit

/// Every TOMLKit (toml++) parse in the process goes through one lock.
///
/// A heap corruption (`malloc_consolidate(): unaligned fastbin chunk detected`) was seen once while
/// the test suite parsed invalid TOML documents on several threads at once, and TOMLKit's error path
/// is known to be fragile (its issue #30: SIGABRT on some invalid table headers). Whether toml++'s
/// exception path is safe to run concurrently is not established, and serializing costs nothing for
/// configuration and policy files that are read once.
///
/// Text is checked before toml++ sees it (`TOMLText.check`): toml++ aborts the process on some
/// invalid documents (an assertion in `parse_key` on a control character in a table header, found by
/// scripts/fuzz.sh), and a broker must refuse a bad file, not die of it.
public enum SerializedTOML {
    private static let lock = NSLock()

    public static func decode<T: Decodable>(_ type: T.Type, from text: String) throws -> T {
        try TOMLText.check(text)
        lock.lock()
        defer { lock.unlock() }
        return try TOMLDecoder().decode(type, from: text)
    }

    public static func table(from text: String) throws -> TOMLTable {
        try TOMLText.check(text)
        lock.lock()
        defer { lock.unlock() }
        return try TOMLTable(string: text)
    }
}

/// What TOML text must be before a parser sees it: two rules of TOML 1.0 that are exact to check
/// without parsing, and that keep toml++ off the inputs that abort it (found by scripts/fuzz.sh):
/// - no control character but tab, line feed and carriage return anywhere, not even in comments
///   (others are written as escapes inside strings);
/// - nothing but ASCII outside strings and comments: bare keys, numbers, booleans and dates are
///   ASCII (toml++ asserted in `parse_key` on a table header such as `[é]`).
public enum TOMLText {
    /// Longest document accepted (policy, template and configuration files are a few KiB).
    public static let maximumBytes = 1 << 20

    public struct Invalid: Error, Sendable, Hashable, CustomStringConvertible {
        public var line: Int
        public var column: Int
        public var message: String
        public var description: String { "\(line):\(column): \(message)" }
    }

    /// Where the scanner is: outside strings and comments, or inside one of them.
    enum Context: Equatable {
        case outside, comment, basic, literal, multilineBasic, multilineLiteral
    }

    public static func check(_ text: String) throws(Invalid) {
        guard text.utf8.count <= maximumBytes else {
            throw Invalid(line: 1, column: 1, message: "the document is larger than \(maximumBytes) bytes")
        }
        // A byte order mark at the start is not content (toml++ skips it too).
        let scalars = Array(text.unicodeScalars.drop { $0 == "\u{FEFF}" }.prefix(Int.max))
        var context = Context.outside
        var line = 1
        var column = 1
        var index = 0
        // Arrays and inline tables open outside strings: a `[` at a line's start is a table header
        // only outside them.
        var depth = 0
        var lineHasContent = false
        func at(_ offset: Int) -> UInt32? { index + offset < scalars.count ? scalars[index + offset].value : nil }
        while index < scalars.count {
            let value = scalars[index].value
            if value == 0x0A {
                line += 1
                column = 1
                index += 1
                lineHasContent = false
                // A comment ends at the line's end; so does a one-line string (unterminated: the
                // parser reports it, the scanner just starts afresh).
                if context == .comment || context == .basic || context == .literal { context = .outside }
                continue
            }
            if (value < 0x20 && value != 0x09 && value != 0x0D) || value == 0x7F {
                throw Invalid(line: line, column: column, message: String(format: "control character U+%04X is not allowed in TOML", value))
            }
            var step = 1
            switch context {
            case .outside:
                if value > 0x7F {
                    throw Invalid(
                        line: line, column: column,
                        message: "a non-ASCII character outside a string or comment (bare keys are ASCII; quote the key)")
                }
                if value == 0x5B, depth == 0, !lineHasContent {
                    // A table header: its first key must start like a key (toml++ asserted on
                    // `[@]`, `[.a]`, `[=]`).
                    var next = index + 1
                    if next < scalars.count, scalars[next].value == 0x5B { next += 1 }
                    while next < scalars.count, scalars[next].value == 0x20 || scalars[next].value == 0x09 { next += 1 }
                    let first = next < scalars.count ? scalars[next].value : 0
                    let startsKey = (0x30...0x39).contains(first) || (0x41...0x5A).contains(first) || (0x61...0x7A).contains(first)
                        || first == 0x5F || first == 0x2D || first == 0x22 || first == 0x27
                    // Control characters and non-ASCII are reported as such when the scan reaches them.
                    if !startsKey, (0x20..<0x7F).contains(first) {
                        throw Invalid(line: line, column: column + next - index, message: "a table header must start with a key")
                    }
                }
                if value != 0x20 && value != 0x09 && value != 0x0D { lineHasContent = true }
                switch value {
                case 0x5B, 0x7B: depth += 1  // [ {
                case 0x5D, 0x7D: depth = max(0, depth - 1)  // ] }
                case 0x23: context = .comment  // #
                case 0x22:  // "
                    if at(1) == 0x22, at(2) == 0x22 { context = .multilineBasic; step = 3 } else { context = .basic }
                case 0x27:  // '
                    if at(1) == 0x27, at(2) == 0x27 { context = .multilineLiteral; step = 3 } else { context = .literal }
                default: break
                }
            case .comment: break
            case .basic:
                if value == 0x5C { step = 2 } else if value == 0x22 { context = .outside }  // a backslash escapes what follows
            case .literal:
                if value == 0x27 { context = .outside }
            case .multilineBasic:
                if value == 0x5C { step = 2 } else if value == 0x22, at(1) == 0x22, at(2) == 0x22 { context = .outside; step = 3 }
            case .multilineLiteral:
                if value == 0x27, at(1) == 0x27, at(2) == 0x27 { context = .outside; step = 3 }
            }
            // A line-ending backslash still ends a line.
            if step == 2, at(1) == 0x0A { line += 1; column = 0 }
            index += step
            column += step
        }
        // Then the whole grammar: toml++ only ever sees syntactically valid TOML.
        do { try TOMLGrammar.recognize(text) } catch {
            let prefix = Array(text.utf8.prefix(error.offset))
            let lineNumber = prefix.filter { $0 == 0x0A }.count + 1
            let lineStart = prefix.lastIndex(of: 0x0A).map { $0 + 1 } ?? 0
            let columnNumber = String(decoding: prefix[lineStart...], as: UTF8.self).count + 1
            throw Invalid(line: lineNumber, column: columnNumber, message: error.message)
        }
    }
}
