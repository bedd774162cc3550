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

/// What TOML text must be before a parser sees it. TOML 1.0 allows no control character but tab,
/// line feed and carriage return anywhere in a document, not even in comments (others are written
/// as escapes inside strings), so refusing them is exact, and it keeps toml++ off the inputs that
/// abort it.
public enum TOMLText {
    /// Longest document accepted (policy, template and configuration files are a few KiB).
    public static let maximumBytes = 1 << 20

    public struct Invalid: Error, Sendable, Hashable, CustomStringConvertible {
        public var line: Int
        public var column: Int
        public var message: String
        public var description: String { "\(line):\(column): \(message)" }
    }

    public static func check(_ text: String) throws(Invalid) {
        guard text.utf8.count <= maximumBytes else {
            throw Invalid(line: 1, column: 1, message: "the document is larger than \(maximumBytes) bytes")
        }
        var line = 1
        var column = 1
        for scalar in text.unicodeScalars {
            let value = scalar.value
            if value == 0x0A {
                line += 1
                column = 1
                continue
            }
            if (value < 0x20 && value != 0x09 && value != 0x0D) || value == 0x7F {
                throw Invalid(line: line, column: column, message: String(format: "control character U+%04X is not allowed in TOML", value))
            }
            column += 1
        }
    }
}
