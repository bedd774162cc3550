import Foundation

/// Finds the line where a key is written in a template file, so semantic errors point at a line
/// (TOMLKit reports positions only for syntax errors).
///
/// The same rules as the policy loader's locator (`[table]`, `[[array]]`, `key = value`, dotted and
/// quoted keys), plus one that template files need: the lines of a multi-line string (a boot script)
/// are skipped, so a script line such as `name = x` is never mistaken for a key.
struct TemplateSourceLocator {
    /// Dotted path with array indices (`parameter[1].pattern`) → 1-based line.
    private var lines: [String: Int] = [:]

    init(text: String) {
        var arrayCounts: [String: Int] = [:]
        var prefix = ""
        var openDelimiter: String?
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let lineNumber = index + 1
            let line = raw.trimmingCharacters(in: .whitespaces)
            if let delimiter = openDelimiter {
                if Self.occurrences(of: delimiter, in: line) % 2 == 1 { openDelimiter = nil }
                continue
            }
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("[[") {
                guard let end = line.range(of: "]]") else { continue }
                let keys = Self.splitKey(String(line[line.index(line.startIndex, offsetBy: 2)..<end.lowerBound]))
                let name = Self.append(Self.resolve(Array(keys.dropLast()), arrayCounts: arrayCounts), keys.last ?? "")
                let n = arrayCounts[name, default: 0]
                arrayCounts[name] = n + 1
                prefix = "\(name)[\(n)]"
                record(prefix, lineNumber)
            } else if line.hasPrefix("[") {
                guard let end = line.firstIndex(of: "]") else { continue }
                let keys = Self.splitKey(String(line[line.index(after: line.startIndex)..<end]))
                prefix = Self.resolve(keys, arrayCounts: arrayCounts)
                record(prefix, lineNumber)
            } else if let eq = Self.assignment(in: line) {
                var path = prefix
                for key in Self.splitKey(String(line[..<eq])) {
                    path = Self.append(path, key)
                    record(path, lineNumber)
                }
                let value = String(line[line.index(after: eq)...])
                for delimiter in ["\"\"\"", "'''"] where value.trimmingCharacters(in: .whitespaces).hasPrefix(delimiter) {
                    if Self.occurrences(of: delimiter, in: value) % 2 == 1 { openDelimiter = delimiter }
                }
            }
        }
    }

    private mutating func record(_ path: String, _ line: Int) {
        if lines[path] == nil { lines[path] = line }
    }

    /// The line of `path`, or of its nearest recorded ancestor, or 1.
    func line(of path: String) -> Int {
        var p = path
        while !p.isEmpty {
            if let line = lines[p] { return line }
            if p.hasSuffix("]"), let open = p.lastIndex(of: "[") {
                p = String(p[..<open])
            } else if let dot = p.lastIndex(of: ".") {
                p = String(p[..<dot])
            } else {
                break
            }
        }
        return 1
    }

    static func append(_ path: String, _ key: String) -> String {
        let component = key.contains(".") ? "\"\(key)\"" : key
        return path.isEmpty ? component : "\(path).\(component)"
    }

    private static func resolve(_ keys: [String], arrayCounts: [String: Int]) -> String {
        var path = ""
        for key in keys {
            path = append(path, key)
            if let n = arrayCounts[path] { path += "[\(n - 1)]" }
        }
        return path
    }

    private static func occurrences(of delimiter: String, in line: String) -> Int {
        line.components(separatedBy: delimiter).count - 1
    }

    /// The `=` of a `key = value` line, skipping `=` inside quoted keys.
    private static func assignment(in line: String) -> String.Index? {
        var quote: Character?
        for i in line.indices {
            let c = line[i]
            if let q = quote {
                if c == q { quote = nil }
            } else if c == "\"" || c == "'" {
                quote = c
            } else if c == "=" {
                return i
            }
        }
        return nil
    }

    static func splitKey(_ key: String) -> [String] {
        var parts: [String] = []
        var current = ""
        var quote: Character?
        for c in key {
            if let q = quote {
                if c == q { quote = nil } else { current.append(c) }
            } else if c == "\"" || c == "'" {
                quote = c
            } else if c == "." {
                parts.append(current.trimmingCharacters(in: .whitespaces))
                current = ""
            } else {
                current.append(c)
            }
        }
        parts.append(current.trimmingCharacters(in: .whitespaces))
        return parts
    }
}
