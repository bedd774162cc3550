import Foundation

/// The `key=value\n` text encoding shared by the signed documents of the protocol, with the rules
/// of `Agreement.canonicalBytes()`: UTF-8; decimals in plain notation without trailing fractional
/// zeros; dates as integer Unix seconds (fractions dropped); `\`, newline and `=` inside keys and
/// values escaped as `\\`, `\n`, `\=`. Repeated here because Policy keeps its helpers internal.
enum CanonicalText {
    static func encode(_ lines: [(String, String)]) -> [UInt8] {
        var text = ""
        for (key, value) in lines {
            text += escape(key)
            text += "="
            text += escape(value)
            text += "\n"
        }
        return Array(text.utf8)
    }

    /// Splits canonical text back into unescaped `(key, value)` pairs. Refuses anything that is not
    /// valid UTF-8, has no final newline, contains a carriage return or control character, an
    /// unknown escape, or a line without exactly one unescaped `=`.
    static func decode(_ bytes: [UInt8]) throws(UsageRecordError) -> [(String, String)] {
        guard let text = String(validating: bytes, as: UTF8.self) else { throw .malformed("not UTF-8") }
        guard text.hasSuffix("\n") else { throw .malformed("missing final newline") }
        var lines: [(String, String)] = []
        var key: String?
        var current = ""
        var escaping = false
        for scalar in text.unicodeScalars {
            if escaping {
                switch scalar {
                case "\\": current.unicodeScalars.append("\\")
                case "n": current.unicodeScalars.append("\n")
                case "=": current.unicodeScalars.append("=")
                default: throw .malformed("unknown escape \\\(scalar)")
                }
                escaping = false
                continue
            }
            switch scalar {
            case "\\":
                escaping = true
            case "=":
                guard key == nil else { throw .malformed("second unescaped '=' in a line") }
                key = current
                current = ""
            case "\n":
                guard let finishedKey = key else { throw .malformed("line without '='") }
                lines.append((finishedKey, current))
                key = nil
                current = ""
            default:
                // Control characters have no place in a canonical document (newline is escaped).
                if scalar.value < 0x20 || scalar.value == 0x7F { throw .malformed("control character U+\(String(scalar.value, radix: 16))") }
                current.unicodeScalars.append(scalar)
            }
        }
        return lines
    }

    static func seconds(_ date: Date) -> String {
        String(wholeSeconds(date))
    }

    /// Protocol times are whole seconds: fractions are dropped (towards the past).
    static func wholeSeconds(_ date: Date) -> Int64 {
        Int64(date.timeIntervalSince1970.rounded(.down))
    }

    /// Plain notation with no exponent and no trailing fractional zeros.
    static func decimal(_ value: Decimal) -> String {
        var text = NSDecimalNumber(decimal: value).description(withLocale: Locale(identifier: "en_US_POSIX"))
        if text.contains(".") {
            while text.hasSuffix("0") { text.removeLast() }
            if text.hasSuffix(".") { text.removeLast() }
        }
        return text == "-0" ? "0" : text
    }

    static func escape(_ value: String) -> String {
        var out = ""
        for c in value.unicodeScalars {
            switch c {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "=": out += "\\="
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    /// A non-negative integer written with ASCII digits only, no sign, no leading zeros.
    static func parseCount(_ text: String, field: String) throws(UsageRecordError) -> Int64 {
        guard isCanonicalNaturalNumber(text, maximumDigits: 18), let value = Int64(text) else {
            throw .malformed("\(field): not a canonical non-negative integer: \(text.prefix(40))")
        }
        return value
    }

    /// A non-negative integral decimal of up to 38 digits (the precision of `Decimal`).
    static func parseIntegralDecimal(_ text: String, field: String) throws(UsageRecordError) -> Decimal {
        guard isCanonicalNaturalNumber(text, maximumDigits: 38),
              let value = Decimal(string: text, locale: Locale(identifier: "en_US_POSIX"))
        else { throw .malformed("\(field): not a canonical non-negative integer: \(text.prefix(40))") }
        return value
    }

    /// Whole Unix seconds; dates before 1970 are refused (no sign is accepted).
    static func parseDate(_ text: String, field: String) throws(UsageRecordError) -> Date {
        Date(timeIntervalSince1970: TimeInterval(try parseCount(text, field: field)))
    }

    private static func isCanonicalNaturalNumber(_ text: String, maximumDigits: Int) -> Bool {
        let utf8 = text.utf8
        guard !utf8.isEmpty, utf8.count <= maximumDigits, utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return false }
        return utf8.count == 1 || utf8.first != 0x30
    }

    /// Byte order of the UTF-8 encoding: reproducible by any implementation in any language (Swift's
    /// `String <` compares canonically equivalent forms, which others do not).
    static func utf8Precedes(_ a: String, _ b: String) -> Bool {
        a.utf8.lexicographicallyPrecedes(b.utf8)
    }
}
