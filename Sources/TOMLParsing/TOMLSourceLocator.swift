import Foundation

/// Finds the line where a key is written in TOML source text. TOMLKit reports positions only for
/// syntax errors, so semantic errors (a negative quota, a bad template parameter) need this to
/// point the operator at a line. It understands what our files use: `[table]`, `[[array]]`,
/// `key = value`, dotted/quoted keys, and multi-line strings (a boot script's lines are skipped, so
/// a script line such as `name = x` is never taken for a key). Keys inside inline tables fall back
/// to the line of the enclosing key. Used by the policy and template loaders.
public struct TOMLSourceLocator: Sendable {
    /// Dotted path with array indices (`peer[1].quota.vcpu`) → 1-based line.
    private var lines: [String: Int] = [:]

    public init(text: String) {
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
                // The parent path resolves to the current elements of enclosing arrays; the last
                // key names the array this header appends to.
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
                let keys = Self.splitKey(String(line[..<eq]))
                var path = prefix
                for key in keys {
                    path = Self.append(path, key)
                    record(path, lineNumber)
                }
                let value = String(line[line.index(after: eq)...]).trimmingCharacters(in: .whitespaces)
                for delimiter in ["\"\"\"", "'''"] where value.hasPrefix(delimiter) {
                    if Self.occurrences(of: delimiter, in: value) % 2 == 1 { openDelimiter = delimiter }
                }
            }
        }
    }

    private mutating func record(_ path: String, _ line: Int) {
        if lines[path] == nil { lines[path] = line }
    }

    /// The line of `path`, or of its nearest recorded ancestor, or 1.
    public func line(of path: String) -> Int {
        var p = path
        while !p.isEmpty {
            if let line = lines[p] { return line }
            if p.hasSuffix("]"), let open = p.lastIndex(of: "[") {
                p = String(p[..<open])
            } else if let dot = Self.lastDot(in: p) {
                p = String(p[..<dot])
            } else {
                break
            }
        }
        return 1
    }

    /// Keys with dots are quoted so paths stay unambiguous; the loader builds paths the same way.
    public static func append(_ path: String, _ key: String) -> String {
        let component = key.contains(".") ? "\"\(key)\"" : key
        return path.isEmpty ? component : "\(path).\(component)"
    }

    /// `[peer.quota]` after the n-th `[[peer]]` refers to `peer[n-1].quota`.
    private static func resolve(_ keys: [String], arrayCounts: [String: Int]) -> String {
        var path = ""
        for key in keys {
            path = Self.append(path, key)
            if let n = arrayCounts[path] { path += "[\(n - 1)]" }
        }
        return path
    }

    /// The `=` of a `key = value` line, skipping `=` inside quoted keys.
    private static func occurrences(of delimiter: String, in line: String) -> Int {
        line.components(separatedBy: delimiter).count - 1
    }

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

    /// Splits `a."b.c".d` into `["a", "b.c", "d"]`.
    public static func splitKey(_ key: String) -> [String] {
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

    /// Paths built by the loader quote keys containing dots (`instance_hour."m1.small"`), so the
    /// last separator is the last dot outside quotes.
    private static func lastDot(in path: String) -> String.Index? {
        var quote = false
        var last: String.Index?
        for i in path.indices {
            if path[i] == "\"" { quote.toggle() } else if path[i] == ".", !quote { last = i }
        }
        return last
    }
}
