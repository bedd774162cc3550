import Foundation
import TOMLParsing

/// Reads a configuration document through the declared settings. `checkDocument` refuses what no
/// declaration accepts — an unknown section or key (an operator's typo must not be silently
/// ignored), a value of the wrong type, a value outside its range — naming the file, the line,
/// the key and what it takes; the typed `value` accessors then apply the declared defaults.
struct SettingsReader {
    typealias Error = BrokerConfiguration.Error

    let file: String
    let root: TOMLTable
    let sections: [SettingsSection]
    private let locator: TOMLSourceLocator

    init(file: String, text: String, root: TOMLTable, sections: [SettingsSection]) {
        self.file = file
        self.root = root
        self.sections = sections
        self.locator = TOMLSourceLocator(text: text)
    }

    func error(_ path: String, _ message: String) -> Error {
        Error(path: "\(file):\(locator.line(of: path))", message: message)
    }

    /// The table of a dotted section name, if written.
    func table(_ name: String) -> TOMLTable? {
        var table: TOMLTable? = root
        for component in name.split(separator: ".") { table = table?[String(component)]?.table }
        return table
    }

    // MARK: - The whole document

    /// Refuses the first problem in file order: unknown sections and keys, wrong types, values a
    /// rule refuses, required keys missing.
    func checkDocument(requiredSections: Set<String>) throws(Error) {
        var problems: [(line: Int, error: Error)] = []
        func report(_ path: String, _ message: String) {
            problems.append((locator.line(of: path), error(path, message)))
        }
        let topLevel = orderedUnique(sections.map { String($0.name.split(separator: ".")[0]) })
        for key in root.keys where !topLevel.contains(key) {
            report(key, "unknown section [\(key)]\(suggestion(for: key, among: topLevel, format: { "[\($0)]" })); sections: "
                + topLevel.map { "[\($0)]" }.joined(separator: ", "))
        }
        for section in sections {
            let children = sections.compactMap { other -> String? in
                guard other.name.hasPrefix(section.name + "."), !other.name.dropFirst(section.name.count + 1).contains(".") else { return nil }
                return String(other.name.dropFirst(section.name.count + 1))
            }
            guard let value = lookup(section.name) else {
                if requiredSections.contains(section.name) {
                    for setting in section.settings where setting.declaration.required {
                        report(section.name, "missing \(setting.declaration.path) (\(setting.declaration.summary))")
                    }
                }
                continue
            }
            guard let table = value.table else {
                report(section.name, "\(section.name) must be a table ([\(section.name)]), not \(describe(value))")
                continue
            }
            if let keyedBy = section.keyedBy {
                for entry in table.keys {
                    let entryPath = TOMLSourceLocator.append(section.name, entry)
                    guard let entryTable = table[entry]?.table else {
                        report(entryPath, "\(entryPath) must be a table: \"\(keyedBy)\" = { ... }")
                        continue
                    }
                    check(entryTable, path: entryPath, section: section, children: [], report: report)
                }
            } else {
                check(table, path: section.name, section: section, children: children, report: report)
            }
        }
        if let first = problems.min(by: { $0.line < $1.line }) { throw first.error }
    }

    private func check(
        _ table: TOMLTable, path: String, section: SettingsSection, children: [String], report: (String, String) -> Void
    ) {
        let declared = section.settings.map(\.declaration.key)
        for key in table.keys {
            let keyPath = TOMLSourceLocator.append(path, key)
            guard let setting = section.settings.first(where: { $0.declaration.key == key }) else {
                if children.contains(key) { continue }
                let heading = section.keyedBy == nil ? "[\(section.name)]" : "each entry of [\(section.name)]"
                report(keyPath, "unknown key \(keyPath)\(suggestion(for: key, among: declared + children, format: { $0 })); "
                    + "\(heading) takes \((declared + children).joined(separator: ", "))")
                continue
            }
            guard let value = table[key] else { continue }
            switch setting.problem(value) {
            case nil: break
            case .wrongType:
                report(keyPath, "\(keyPath) must be \(article(setting.declaration.type)), not \(describe(value))")
            case .invalid(let message):
                report(keyPath, "\(keyPath) \(message), not \(describe(value))")
            }
        }
        for setting in section.settings where setting.declaration.required && table[setting.declaration.key] == nil {
            report(path, "missing \(TOMLSourceLocator.append(path, setting.declaration.key)) (\(setting.declaration.summary))")
        }
    }

    private func lookup(_ name: String) -> (any TOMLValueConvertible)? {
        let components = name.split(separator: ".").map(String.init)
        var table: TOMLTable? = root
        for component in components.dropLast() { table = table?[component]?.table }
        return table?[components.last!]
    }

    // MARK: - Typed values

    /// The value written for `setting` in its section (checked by `checkDocument`), or nil.
    func written<Value>(_ setting: Setting<Value>) throws(Error) -> Value? {
        try written(setting, in: table(setting.declaration.section), path: setting.declaration.section)
    }

    /// The value written for `setting` in `table` (an entry of a keyed section), or nil.
    func written<Value>(_ setting: Setting<Value>, in table: TOMLTable?, path: String) throws(Error) -> Value? {
        let key = setting.declaration.key
        guard let raw = table?[key] else {
            // Callers read an optional section's required keys only when the section is written.
            if setting.declaration.required {
                let keyPath = TOMLSourceLocator.append(path, key)
                throw error(keyPath, "missing \(keyPath) (\(setting.declaration.summary))")
            }
            return nil
        }
        let keyPath = TOMLSourceLocator.append(path, key)
        guard let value = Value.read(raw) else {
            throw error(keyPath, "\(keyPath) must be \(article(setting.declaration.type)), not \(describe(raw))")
        }
        if let problem = setting.rule.check(value) { throw error(keyPath, "\(keyPath) \(problem), not \(describe(raw))") }
        return value
    }

    /// The value written for `setting`, or its declared default.
    func value<Value>(_ setting: Setting<Value>) throws(Error) -> Value {
        if let value = try written(setting) { return value }
        guard let defaultValue = setting.defaultValue else {
            throw error(setting.declaration.section, "missing \(setting.declaration.path) (\(setting.declaration.summary))")
        }
        return defaultValue
    }

    // MARK: - Wording

    private func article(_ type: String) -> String {
        switch type {
        case "integer", "array of strings": "an \(type)"
        case "number": "a number (integer or float)"
        default: "a \(type)"
        }
    }

    private func describe(_ value: any TOMLValueConvertible) -> String {
        if let string = value.string { return "a string (\(string.tomlText))" }
        if let int = value.int { return String(int) }
        if let double = value.double { return double.tomlText }
        if let bool = value.bool { return bool.tomlText }
        switch value.type {
        case .array: return "an array"
        case .table: return "a table"
        default: return "a \(value.type)"
        }
    }

    /// ` (did you mean x?)` when a declared name is a few edits away, or starts with what was written.
    private func suggestion(for key: String, among names: [String], format: (String) -> String) -> String {
        let key = key.lowercased()
        let scored = names.map { (name: $0, distance: key.count >= 4 && $0.hasPrefix(key) ? 0 : editDistance(key, $0)) }
        guard let best = scored.min(by: { $0.distance < $1.distance }), best.distance <= max(2, key.count / 4) else { return "" }
        return " (did you mean \(format(best.name))?)"
    }

    private func orderedUnique(_ names: [String]) -> [String] {
        var seen = Set<String>()
        return names.filter { seen.insert($0).inserted }
    }
}

/// Levenshtein distance, for "did you mean".
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    guard !a.isEmpty else { return b.count }
    guard !b.isEmpty else { return a.count }
    var previous = Array(0...b.count)
    for i in 1...a.count {
        var current = [i] + Array(repeating: 0, count: b.count)
        for j in 1...b.count {
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        previous = current
    }
    return previous[b.count]
}
