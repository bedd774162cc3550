import Foundation
import TOMLKit

/// Typed field readers for a parser that reports each problem at the field's own line: one wrong
/// type or unknown key is one error naming the field, never a crash or a silent default. Server
/// templates and cluster files read their fields through these, so both word their errors alike.
public protocol TOMLFieldReader {
    /// Records `message` against `field` (a dotted path such as `member[1].after`).
    mutating func error(_ field: String, _ message: String)
}

extension TOMLFieldReader {
    public mutating func checkKeys(_ t: TOMLTable, path: String, allowed: Set<String>) {
        for key in t.keys.sorted() where !allowed.contains(key) {
            error(TOMLSourceLocator.append(path, key), "unknown field (allowed: \(allowed.sorted().joined(separator: ", ")))")
        }
    }

    public mutating func requiredString(_ t: TOMLTable, _ key: String, _ path: String) -> String? {
        guard t[key] != nil else {
            error(TOMLSourceLocator.append(path, key), "missing")
            return nil
        }
        guard let s = string(t, key, path) else { return nil }
        guard !s.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            error(TOMLSourceLocator.append(path, key), "must not be empty")
            return nil
        }
        return s
    }

    public mutating func string(_ t: TOMLTable, _ key: String, _ path: String) -> String? {
        guard let v = t[key] else { return nil }
        guard let s = v.string else { return wrongType(path, key, "a string", v) }
        return s
    }

    public mutating func bool(_ t: TOMLTable, _ key: String, _ path: String) -> Bool? {
        guard let v = t[key] else { return nil }
        guard let b = v.bool else { return wrongType(path, key, "true or false", v) }
        return b
    }

    public mutating func table(_ t: TOMLTable, _ key: String, _ path: String) -> TOMLTable? {
        guard let v = t[key] else { return nil }
        guard let table = v.table else { return wrongType(path, key, "a table", v) }
        return table
    }

    public mutating func strings(_ t: TOMLTable, _ key: String, _ path: String) -> [String]? {
        guard let v = t[key] else { return nil }
        guard let array = v.array else { return wrongType(path, key, "an array of strings", v) }
        var result: [String] = []
        for i in 0..<array.count {
            guard let s = array[i].string else { return wrongType(path, key, "an array of strings", v) }
            result.append(s)
        }
        return result
    }

    public mutating func wrongType<T>(_ path: String, _ key: String, _ expected: String, _ v: any TOMLValueConvertible) -> T? {
        error(TOMLSourceLocator.append(path, key), "expected \(expected), found \(v.type)")
        return nil
    }
}
