import Foundation
import TOMLParsing

/// One configuration key as an operator sees it: where it is written, what it takes, what it
/// defaults to. This is the data `intercloud config reference` prints and README's
/// "Configuration reference" is checked against; parsing uses the typed `Setting` it comes from.
public struct SettingDeclaration: Sendable, Hashable, Codable {
    /// The TOML table the key is written in: `migration`, or `migration.live_peers.<bare JID>`
    /// for a table whose keys the operator chooses.
    public var section: String
    public var key: String
    /// `string`, `integer`, `number` (integer or float), `boolean`, `array of strings`, `table`.
    public var type: String
    public var required: Bool
    /// The default as TOML text (`30`, `"127.0.0.1"`, `["capacity", "failure"]`); nil when the
    /// key has no constant default (see `defaultNote`).
    public var defaultValue: String?
    /// What an absent key means when that is not a constant (`the provider's uri`, `none`).
    public var defaultNote: String?
    /// The values accepted, as a phrase that follows "must be": `≥ 1`, `between 0 and 100`,
    /// `one of "off", "propose", "migrate"`; nil: any value of the type.
    public var allowed: String?
    /// One line for the operator.
    public var summary: String

    /// `section.key`, as errors name it.
    public var path: String { "\(section).\(key)" }
}

/// A TOML value a setting can hold.
protocol SettingValue: Sendable, Equatable {
    static var settingType: String { get }
    /// The value, or nil when the TOML value is of another type.
    static func read(_ value: any TOMLValueConvertible) -> Self?
    /// The value written as TOML (for defaults in the reference and in error messages).
    var tomlText: String { get }
}

extension String: SettingValue {
    static var settingType: String { "string" }
    static func read(_ value: any TOMLValueConvertible) -> String? { value.string }
    var tomlText: String {
        var escaped = ""
        for scalar in unicodeScalars {
            switch scalar {
            case "\"": escaped += "\\\""
            case "\\": escaped += "\\\\"
            case "\n": escaped += "\\n"
            case "\t": escaped += "\\t"
            default: escaped.unicodeScalars.append(scalar)
            }
        }
        return "\"\(escaped)\""
    }
}

extension Int: SettingValue {
    static var settingType: String { "integer" }
    static func read(_ value: any TOMLValueConvertible) -> Int? { value.int }
    var tomlText: String { String(self) }
}

/// Seconds, percentages and hours: TOML keeps integers and floats apart, but an operator writing
/// `60` or `0.5` should not have to care, so a number setting takes either.
extension Double: SettingValue {
    static var settingType: String { "number" }
    static func read(_ value: any TOMLValueConvertible) -> Double? { value.double ?? value.int.map(Double.init) }
    var tomlText: String {
        if rounded() == self, abs(self) < 1e15 { return String(Int64(self)) }
        return String(self)
    }
}

extension Bool: SettingValue {
    static var settingType: String { "boolean" }
    static func read(_ value: any TOMLValueConvertible) -> Bool? { value.bool }
    var tomlText: String { self ? "true" : "false" }
}

extension Array: SettingValue where Element == String {
    static var settingType: String { "array of strings" }
    static func read(_ value: any TOMLValueConvertible) -> [String]? {
        guard let array = value.array else { return nil }
        var strings: [String] = []
        for element in array {
            guard let string = element.string else { return nil }
            strings.append(string)
        }
        return strings
    }
    var tomlText: String { "[" + map(\.tomlText).joined(separator: ", ") + "]" }
}

/// A table whose keys the operator chooses (`[provider] options`, `[trust] anchor_domains`):
/// each value a string or an array of strings, as the setting's reader requires.
struct SettingTable: SettingValue {
    enum Entry: Sendable, Equatable {
        case string(String)
        case strings([String])
    }
    var entries: [String: Entry]

    static var settingType: String { "table" }
    static func read(_ value: any TOMLValueConvertible) -> SettingTable? {
        guard let table = value.table else { return nil }
        var entries: [String: Entry] = [:]
        for key in table.keys {
            guard let item = table[key] else { continue }
            if let string = item.string {
                entries[key] = .string(string)
            } else if let strings = [String].read(item) {
                entries[key] = .strings(strings)
            } else {
                return nil
            }
        }
        return SettingTable(entries: entries)
    }
    var tomlText: String {
        "{ " + entries.keys.sorted().map { key in
            switch entries[key]! {
            case .string(let value): "\(key.tomlText) = \(value.tomlText)"
            case .strings(let values): "\(key.tomlText) = \(values.tomlText)"
            }
        }.joined(separator: ", ") + " }"
    }
}

/// What values of a setting are accepted. `text` is shown in the reference and in errors; `check`
/// returns the problem with a value, or nil.
struct SettingRule<Value: SettingValue>: Sendable {
    var text: String?
    var check: @Sendable (Value) -> String?

    static var any: SettingRule { SettingRule(text: nil) { _ in nil } }

    /// A rule whose only check is `accepts`; a refused value gets "must be <text>".
    static func matching(_ text: String, _ accepts: @escaping @Sendable (Value) -> Bool) -> SettingRule {
        SettingRule(text: text) { accepts($0) ? nil : "must be \(text)" }
    }
}

extension SettingRule where Value == Int {
    static func atLeast(_ lower: Int) -> SettingRule { .matching("≥ \(lower)") { $0 >= lower } }
    static func within(_ range: ClosedRange<Int>) -> SettingRule {
        .matching("between \(range.lowerBound) and \(range.upperBound)") { range.contains($0) }
    }
}

extension SettingRule where Value == Double {
    static func atLeast(_ lower: Double) -> SettingRule { .matching("≥ \(lower.tomlText)") { $0.isFinite && $0 >= lower } }
    static func above(_ lower: Double) -> SettingRule { .matching("> \(lower.tomlText)") { $0.isFinite && $0 > lower } }
    /// `lower ≤ value ≤ upper`, or `< upper` when `upperExcluded`.
    static func within(_ lower: Double, _ upper: Double, lowerExcluded: Bool = false, upperExcluded: Bool = false) -> SettingRule {
        let text = "\(lower.tomlText) \(lowerExcluded ? "<" : "≤") value \(upperExcluded ? "<" : "≤") \(upper.tomlText)"
        return .matching(text) { value in
            value.isFinite && (lowerExcluded ? value > lower : value >= lower) && (upperExcluded ? value < upper : value <= upper)
        }
    }
}

extension SettingRule where Value == String {
    static func oneOf(_ values: [String]) -> SettingRule {
        .matching("one of " + values.map(\.tomlText).joined(separator: ", ")) { values.contains($0) }
    }
    static var nonEmpty: SettingRule { .matching("non-empty") { !$0.isEmpty } }
}

extension SettingRule where Value == [String] {
    /// Every element one of `values`.
    static func each(of values: [String]) -> SettingRule {
        let text = "a list of " + values.map(\.tomlText).joined(separator: ", ")
        return SettingRule(text: text) { list in
            list.first { !values.contains($0) }.map { "must be \(text): \($0.tomlText) is none of them" }
        }
    }
    static var nonEmpty: SettingRule { .matching("a non-empty list") { !$0.isEmpty } }
}

/// One configuration key, declared once: where it is written, its type, default, the values
/// accepted and a line for the operator. `BrokerConfiguration.parse` reads every value through its
/// declaration, so the reference and the parser cannot disagree.
struct Setting<Value: SettingValue>: Sendable {
    let declaration: SettingDeclaration
    let defaultValue: Value?
    let rule: SettingRule<Value>

    /// - Parameters:
    ///   - default: the value an absent key has; where a domain module owns the number, pass its
    ///     constant (`MeteringService.Settings().sampleInterval`), not the number again.
    ///   - note: what an absent key means when it is not a constant.
    init(
        _ section: String, _ key: String, default defaultValue: Value? = nil, required: Bool = false, note: String? = nil,
        rule: SettingRule<Value> = .any, _ summary: String
    ) {
        self.defaultValue = defaultValue
        self.rule = rule
        self.declaration = SettingDeclaration(
            section: section, key: key, type: Value.settingType, required: required, defaultValue: defaultValue?.tomlText,
            defaultNote: note, allowed: rule.text, summary: summary)
    }

    /// The declared default, for the settings structs that start from it. Only for settings
    /// declared with one (a programming error otherwise, caught by the first test that runs).
    var `default`: Value {
        guard let defaultValue else { preconditionFailure("\(declaration.path) declares no default") }
        return defaultValue
    }

    /// The type-erased form a section lists, for the unknown-key check and the reference.
    var erased: AnySetting {
        AnySetting(
            declaration: declaration,
            problem: { [rule] value in
                guard let typed = Value.read(value) else { return .wrongType }
                return rule.check(typed).map(AnySetting.Problem.invalid)
            },
            render: { Value.read($0)?.tomlText })
    }
}

/// A setting with its type erased: enough to check any value written for it.
struct AnySetting: Sendable {
    enum Problem: Equatable {
        case wrongType
        case invalid(String)
    }

    let declaration: SettingDeclaration
    let problem: @Sendable (any TOMLValueConvertible) -> Problem?
    /// The value as the reference writes defaults (`60` for `60.0`), or nil if of another type.
    let render: @Sendable (any TOMLValueConvertible) -> String?
}

/// The settings of one TOML table (`[migration]`), or of each entry of a table whose keys the
/// operator chooses (`[migration.live_peers]`, one entry per peer: `keyedBy` names the key).
struct SettingsSection: Sendable {
    /// Dotted table name: `migration`, `migration.live_peers`.
    let name: String
    let keyedBy: String?
    /// A sentence under the section's heading in the reference.
    let summary: String
    let settings: [AnySetting]

    init(_ name: String, keyedBy: String? = nil, _ summary: String, _ settings: [AnySetting]) {
        self.name = name
        self.keyedBy = keyedBy
        self.summary = summary
        self.settings = settings
    }

    /// The table in which each entry's settings are written: `migration.live_peers.<bare JID>`.
    var entrySection: String { keyedBy.map { "\(name).<\($0)>" } ?? name }
}
