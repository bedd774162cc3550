import Foundation

// Typed views of literal terms used by expressions: numerics with XSD promotion, booleans,
// dateTimes, and the total order used by ORDER BY.

enum Numeric {
    case integer(Int)
    case decimal(Decimal)
    case float(Double)
    case double(Double)

    var rank: Int {
        switch self {
        case .integer: return 0
        case .decimal: return 1
        case .float: return 2
        case .double: return 3
        }
    }

    var asDouble: Double {
        switch self {
        case .integer(let v): return Double(v)
        case .decimal(let v): return NSDecimalNumber(decimal: v).doubleValue
        case .float(let v), .double(let v): return v
        }
    }

    var asDecimal: Decimal {
        switch self {
        case .integer(let v): return Decimal(v)
        case .decimal(let v): return v
        case .float(let v), .double(let v): return Decimal(v)
        }
    }

    static let integerTypes: Set<String> = Set([
        "integer", "int", "long", "short", "byte", "nonNegativeInteger", "positiveInteger", "nonPositiveInteger",
        "negativeInteger", "unsignedInt", "unsignedLong", "unsignedShort", "unsignedByte",
    ].map { Vocabulary.xsd + $0 })

    init?(_ literal: Literal) {
        let datatype = literal.datatype
        guard datatype.hasPrefix(Vocabulary.xsd) else { return nil }
        let text = literal.lexical.utf8.contains(0x20) ? literal.lexical.trimmingCharacters(in: .whitespaces) : literal.lexical
        if datatype == Vocabulary.xsdInteger || Numeric.integerTypes.contains(datatype) {
            guard Numeric.isIntegerLexical(text), let value = Int(text.hasPrefix("+") ? String(text.dropFirst()) : text) else { return nil }
            self = .integer(value)
        } else if datatype == Vocabulary.xsdDecimal {
            guard let value = Numeric.parseDecimal(text) else { return nil }
            self = .decimal(value)
        } else if datatype == Vocabulary.xsdDouble || datatype == Vocabulary.xsdFloat {
            let value: Double
            switch text {
            case "INF", "+INF": value = .infinity
            case "-INF": value = -.infinity
            case "NaN": value = .nan
            default:
                guard Numeric.isDoubleLexical(text), let parsed = Double(text) else { return nil }
                value = parsed
            }
            self = datatype == Vocabulary.xsdDouble ? .double(value) : .float(value)
        } else {
            return nil
        }
    }

    /// xsd:decimal lexical form to Decimal. Builds the value from an integer mantissa and a scale,
    /// which is far cheaper than Foundation's locale-aware string parsing (this runs per row).
    static func parseDecimal(_ text: String) -> Decimal? {
        var mantissa: UInt64 = 0
        var scale: Int16 = 0
        var digits = 0
        var negative = false
        var seenDot = false
        var index = 0
        for byte in text.utf8 {
            defer { index += 1 }
            switch byte {
            case 0x2B where index == 0: continue
            case 0x2D where index == 0: negative = true
            case 0x2E where !seenDot: seenDot = true
            case 0x30...0x39:
                if digits >= 18 {
                    guard isDecimalLexical(text) else { return nil }
                    return Decimal(string: text, locale: Locale(identifier: "en_US_POSIX"))
                }
                mantissa = mantissa * 10 + UInt64(byte - 0x30)
                if mantissa != 0 || seenDot { digits += mantissa == 0 ? 0 : 1 }
                if seenDot { scale += 1 }
            default: return nil
            }
        }
        guard index > (negative || text.hasPrefix("+") ? 1 : 0), text != "." , text != "-.", text != "+." else { return nil }
        return Decimal(sign: negative ? .minus : .plus, exponent: -Int(scale), significand: Decimal(mantissa))
    }

    static func isIntegerLexical(_ text: String) -> Bool {
        var scalars = Substring(text)
        if scalars.first == "+" || scalars.first == "-" { scalars = scalars.dropFirst() }
        return !scalars.isEmpty && scalars.allSatisfy { $0.isASCII && $0.isNumber }
    }

    static func isDecimalLexical(_ text: String) -> Bool {
        var scalars = Substring(text)
        if scalars.first == "+" || scalars.first == "-" { scalars = scalars.dropFirst() }
        let parts = scalars.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count <= 2, parts.contains(where: { !$0.isEmpty }) else { return false }
        return parts.allSatisfy { $0.allSatisfy { $0.isASCII && $0.isNumber } }
    }

    static func isDoubleLexical(_ text: String) -> Bool {
        let parts = text.split(whereSeparator: { $0 == "e" || $0 == "E" })
        if parts.count == 2 { return isDecimalLexical(String(parts[0])) && isIntegerLexical(String(parts[1])) }
        return parts.count == 1 && isDecimalLexical(text) && !text.hasSuffix("e") && !text.hasSuffix("E")
    }

    var term: Term {
        switch self {
        case .integer(let v): return .typed(String(v), Vocabulary.xsdInteger)
        case .decimal(let v): return .typed(Numeric.decimalLexical(v), Vocabulary.xsdDecimal)
        case .float(let v): return .typed(Numeric.doubleLexical(v), Vocabulary.xsdFloat)
        case .double(let v): return .typed(Numeric.doubleLexical(v), Vocabulary.xsdDouble)
        }
    }

    static func decimalLexical(_ value: Decimal) -> String {
        var text = NSDecimalNumber(decimal: value).stringValue
        if !text.contains(".") { text += ".0" }
        return text
    }

    static func doubleLexical(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value < 0 ? "-INF" : "INF" }
        return String(value).uppercased().replacingOccurrences(of: "E+", with: "E")
    }

    /// Applies `op` with XSD numeric type promotion; nil on error (division by zero for integers/decimals).
    static func arithmetic(_ op: ArithmeticOperator, _ a: Numeric, _ b: Numeric) -> Numeric? {
        let rank = max(a.rank, b.rank)
        switch rank {
        case 0:
            guard case .integer(let x) = a, case .integer(let y) = b else { return nil }
            switch op {
            case .add: let (r, o) = x.addingReportingOverflow(y); return o ? .decimal(Decimal(x) + Decimal(y)) : .integer(r)
            case .subtract: let (r, o) = x.subtractingReportingOverflow(y); return o ? .decimal(Decimal(x) - Decimal(y)) : .integer(r)
            case .multiply: let (r, o) = x.multipliedReportingOverflow(by: y); return o ? .decimal(Decimal(x) * Decimal(y)) : .integer(r)
            case .divide:
                guard y != 0 else { return nil }
                return .decimal(Decimal(x) / Decimal(y))
            }
        case 1:
            let x = a.asDecimal, y = b.asDecimal
            switch op {
            case .add: return .decimal(x + y)
            case .subtract: return .decimal(x - y)
            case .multiply: return .decimal(x * y)
            case .divide: guard !y.isZero else { return nil }; return .decimal(x / y)
            }
        default:
            let x = a.asDouble, y = b.asDouble
            let r: Double
            switch op {
            case .add: r = x + y
            case .subtract: r = x - y
            case .multiply: r = x * y
            case .divide: r = x / y
            }
            return rank == 2 ? .float(Double(Float(r))) : .double(r)
        }
    }

    static func compare(_ a: Numeric, _ b: Numeric) -> Int? {
        if case .integer(let x) = a, case .integer(let y) = b { return x < y ? -1 : (x > y ? 1 : 0) }
        if max(a.rank, b.rank) == 1 {
            let x = a.asDecimal, y = b.asDecimal
            return x < y ? -1 : (x > y ? 1 : 0)
        }
        let x = a.asDouble, y = b.asDouble
        if x.isNaN || y.isNaN { return nil }
        return x < y ? -1 : (x > y ? 1 : 0)
    }
}

/// A dateTime reduced to an instant (seconds) plus whether it had a timezone.
struct DateTimeValue {
    var seconds: Double
    var hasTimezone: Bool
    var year: Int, month: Int, day: Int, hour: Int, minute: Int
    var second: Decimal
    var timezone: String?

    init?(_ text: String) {
        // yyyy-mm-ddThh:mm:ss(.s+)?(Z|(+|-)hh:mm)?
        let scalars = Array(text.utf8)
        guard scalars.count >= 19, scalars[4] == 0x2D, scalars[7] == 0x2D, scalars[10] == 0x54, scalars[13] == 0x3A, scalars[16] == 0x3A else { return nil }
        func number(_ range: Range<Int>) -> Int? { Int(String(decoding: scalars[range], as: UTF8.self)) }
        guard let year = number(0..<4), let month = number(5..<7), let day = number(8..<10), let hour = number(11..<13),
              let minute = number(14..<16) else { return nil }
        var end = 19
        while end < scalars.count, scalars[end] == 0x2E || (scalars[end] >= 0x30 && scalars[end] <= 0x39) { end += 1 }
        guard let second = Decimal(string: String(decoding: scalars[17..<end], as: UTF8.self)) else { return nil }
        let zone = String(decoding: scalars[end...], as: UTF8.self)
        var offsetSeconds = 0
        if zone.isEmpty {
            timezone = nil
        } else if zone == "Z" {
            timezone = "Z"
        } else {
            let sign = zone.first == "-" ? -1 : 1
            let parts = zone.dropFirst().split(separator: ":")
            guard parts.count == 2, let h = Int(parts[0]), let m = Int(parts[1]) else { return nil }
            offsetSeconds = sign * (h * 3600 + m * 60)
            timezone = zone
        }
        self.year = year; self.month = month; self.day = day; self.hour = hour; self.minute = minute; self.second = second
        hasTimezone = timezone != nil
        var components = DateComponents()
        components.year = year; components.month = month; components.day = day
        components.hour = hour; components.minute = minute
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        guard let date = calendar.date(from: components) else { return nil }
        seconds = date.timeIntervalSince1970 + NSDecimalNumber(decimal: second).doubleValue - Double(offsetSeconds)
    }
}

/// Key used to order terms (ORDER BY, MIN, MAX): unbound < blank nodes < IRIs < literals; literals
/// by value when comparable, otherwise by lexical form.
enum SortKey: Comparable {
    case unbound
    case blank(String)
    case iri(String)
    case numeric(Double, String)
    case boolean(Bool)
    case dateTime(Double, String)
    case string(String, String)
    case other(String, String)

    init(_ term: Term?) {
        guard let term else { self = .unbound; return }
        switch term {
        case .blank(let node): self = .blank(node.label)
        case .iri(let iri): self = .iri(iri.value)
        case .literal(let literal):
            if let numeric = Numeric(literal) {
                self = .numeric(numeric.asDouble, literal.lexical)
            } else if literal.datatype == Vocabulary.xsdBoolean {
                self = .boolean(literal.lexical == "true" || literal.lexical == "1")
            } else if literal.datatype == Vocabulary.xsdDateTime, let value = DateTimeValue(literal.lexical) {
                self = .dateTime(value.seconds, literal.lexical)
            } else if literal.datatype == Vocabulary.xsdString || literal.language != nil {
                self = .string(literal.lexical, literal.language ?? "")
            } else {
                self = .other(literal.datatype, literal.lexical)
            }
        }
    }

    private var rank: Int {
        switch self {
        case .unbound: return 0
        case .blank: return 1
        case .iri: return 2
        case .numeric: return 3
        case .boolean: return 4
        case .dateTime: return 5
        case .string: return 6
        case .other: return 7
        }
    }

    static func < (lhs: SortKey, rhs: SortKey) -> Bool {
        switch (lhs, rhs) {
        case (.blank(let a), .blank(let b)), (.iri(let a), .iri(let b)): return a < b
        case (.numeric(let a, let x), .numeric(let b, let y)): return a != b ? a < b : x < y
        case (.boolean(let a), .boolean(let b)): return !a && b
        case (.dateTime(let a, let x), .dateTime(let b, let y)): return a != b ? a < b : x < y
        case (.string(let a, let x), .string(let b, let y)): return a != b ? a < b : x < y
        case (.other(let a, let x), .other(let b, let y)): return a != b ? a < b : x < y
        default: return lhs.rank < rhs.rank
        }
    }
}
