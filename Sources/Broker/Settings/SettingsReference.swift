import Foundation
import TOMLParsing

extension BrokerSettings {
    /// How `intercloud config reference` prints the declarations.
    public enum ReferenceFormat: String, CaseIterable, Sendable {
        /// A table per section: README's "Configuration reference" is this text.
        case markdown
        /// Every key commented out at its default: a starting point for a configuration file.
        case toml
        case json
    }

    /// The configuration reference, generated from the declarations.
    public static func reference(_ format: ReferenceFormat) -> String {
        switch format {
        case .markdown: markdownReference()
        case .toml: tomlReference()
        case .json: jsonReference()
        }
    }

    private static func markdownReference() -> String {
        func cell(_ text: String) -> String { text.replacingOccurrences(of: "|", with: "\\|") }
        func code(_ text: String) -> String { text.contains("`") ? "`` \(text) ``" : "`\(text)`" }
        var lines: [String] = []
        for section in sections {
            if !lines.isEmpty { lines.append("") }
            lines.append("#### `[\(section.name)]`")
            lines.append("")
            let entries = section.keyedBy.map { " One entry per \($0): `\"<\($0)>\" = { ... }`." } ?? ""
            lines.append(section.summary + entries)
            lines.append("")
            lines.append("| key | type | default | accepted | what it does |")
            lines.append("|---|---|---|---|---|")
            for setting in section.settings.map(\.declaration) {
                let defaultText = setting.required ? "required" : setting.defaultValue.map(code) ?? setting.defaultNote.map(cell) ?? "none"
                lines.append("| `\(setting.key)` | \(setting.type) | \(cell(defaultText)) | \(cell(setting.allowed ?? "")) | \(cell(setting.summary)) |")
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    private static func tomlReference() -> String {
        var lines = [
            "# Broker configuration: every key at its default, commented out (`intercloud config reference --output toml`).",
            "# Relative paths are resolved against this file's directory.",
        ]
        for section in sections {
            lines.append("")
            lines.append("# " + section.summary)
            if let keyedBy = section.keyedBy {
                lines.append("# [\(section.name)]")
                let example = section.settings.map(\.declaration).map { "\($0.key) = \($0.defaultValue ?? "<\($0.type)>")" }
                lines.append("# \"<\(keyedBy)>\" = { \(example.joined(separator: ", ")) }")
                for setting in section.settings.map(\.declaration) { lines.append("#   \(setting.key): \(describe(setting))") }
                continue
            }
            lines.append("[\(section.name)]")
            for setting in section.settings.map(\.declaration) {
                let value = setting.defaultValue ?? "<\(setting.type)>"
                let prefix = "# "
                lines.append("# \(describe(setting))")
                lines.append("\(prefix)\(setting.key) = \(value)")
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    private static func describe(_ setting: SettingDeclaration) -> String {
        var facts = [setting.required ? "required" : nil, setting.defaultValue == nil ? setting.defaultNote.map { "default: \($0)" } : nil,
                     setting.allowed].compactMap { $0 }
        facts.insert(setting.type, at: 0)
        return "\(setting.summary) (\(facts.joined(separator: "; ")))"
    }

    /// Sections with their settings, for tools.
    private static func jsonReference() -> String {
        struct Section: Encodable {
            var name: String
            var keyedBy: String?
            var summary: String
            var settings: [SettingDeclaration]
        }
        let document = sections.map {
            Section(name: $0.name, keyedBy: $0.keyedBy, summary: $0.summary, settings: $0.settings.map(\.declaration))
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? encoder.encode(["sections": document])) ?? Data(), as: UTF8.self) + "\n"
    }
}

extension BrokerSettings {
    /// The problems of a configuration example as documentation shows it (a README block): every
    /// key must be declared, of its type and accepted, and a commented-out `# key = value` line —
    /// the way an example shows a default — must show the declared default. Problems are named
    /// `file:line`. Used by the tests that keep README from contradicting the declarations.
    static func problems(inExample text: String, file: String) -> [String] {
        var lines = text.components(separatedBy: "\n")
        var commented: [(line: Int, section: String, key: String)] = []
        var section = ""
        for (index, line) in lines.enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("["), let end = trimmed.firstIndex(of: "]") {
                section = String(trimmed[trimmed.index(after: trimmed.startIndex)..<end])
            }
            guard trimmed.hasPrefix("#") else { continue }
            let body = trimmed.dropFirst().drop { $0 == " " }
            guard let equals = body.firstIndex(of: "="), let first = body.first, first.isLetter else { continue }
            let key = body[..<equals].trimmingCharacters(in: .whitespaces)
            guard key.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else { continue }
            lines[index] = String(body)
            commented.append((index + 1, section, key))
        }
        let uncommented = lines.joined(separator: "\n")
        let root: TOMLTable
        do { root = try SerializedTOML.table(from: uncommented) } catch {
            return ["not valid TOML once `# key = value` lines are uncommented: \(error)"]
        }
        let reader = SettingsReader(file: file, text: uncommented, root: root, sections: sections)
        var problems: [String] = []
        do { try reader.checkDocument(requiredSections: []) } catch { problems.append(error.description) }
        for (line, section, key) in commented {
            guard let setting = sections.first(where: { $0.name == section })?.settings.first(where: { $0.declaration.key == key }),
                  let value = reader.table(section)?[key] else { continue }
            let shown = setting.render(value) ?? "?"
            if let expected = setting.declaration.defaultValue, shown != expected {
                problems.append("\(file):\(line): # \(section).\(key) = \(shown) is shown as the default, but the default is \(expected)")
            }
        }
        return problems
    }
}
