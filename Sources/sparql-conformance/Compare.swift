import Catalog
import Foundation

/// Result comparison as the W3C suites intend: solutions as multisets, blank nodes up to a
/// consistent renaming, graphs up to isomorphism. Numeric literals of the same datatype compare by
/// value (e.g. "2.0"^^xsd:decimal and "2"^^xsd:decimal), as most harnesses do.
enum Compare {
    static func sameTerm(_ a: Term, _ b: Term) -> Bool {
        if a == b { return true }
        guard case .literal(let x) = a, case .literal(let y) = b, x.datatype == y.datatype, x.language == y.language else { return false }
        let numeric: Set<String> = [Vocabulary.xsdInteger, Vocabulary.xsdDecimal, Vocabulary.xsdDouble, Vocabulary.xsdFloat]
        guard numeric.contains(x.datatype) else { return false }
        if x.datatype == Vocabulary.xsdDecimal || x.datatype == Vocabulary.xsdInteger {
            if let p = Decimal(string: x.lexical), let q = Decimal(string: y.lexical) { return p == q }
        }
        if let p = Double(x.lexical), let q = Double(y.lexical) { return p == q || abs(p - q) < 1e-9 * max(abs(p), abs(q)) }
        return false
    }

    /// Matches `a` to `b` under the blank-node mapping, extending it; false when impossible.
    private static func match(_ a: Term?, _ b: Term?, _ mapping: inout [String: String], _ reverse: inout [String: String]) -> Bool {
        switch (a, b) {
        case (nil, nil): return true
        case (.blank(let x)?, .blank(let y)?):
            if let mapped = mapping[x.label] { return mapped == y.label }
            if reverse[y.label] != nil { return false }
            mapping[x.label] = y.label
            reverse[y.label] = x.label
            return true
        case (let x?, let y?):
            if x.isBlank || y.isBlank { return false }
            return sameTerm(x, y)
        default: return false
        }
    }

    static func solutions(_ actual: SolutionTable, _ expected: SolutionTable, ordered: Bool) -> Bool {
        guard actual.rows.count == expected.rows.count, Set(expected.variables).isSubset(of: Set(actual.variables)) else { return false }
        // A column the expected results do not list must be unbound everywhere (agg-empty-group).
        for (index, variable) in actual.variables.enumerated() where !expected.variables.contains(variable) {
            if actual.rows.contains(where: { $0[index] != nil }) { return false }
        }
        let order = expected.variables.map { variable in actual.variables.firstIndex(of: variable)! }
        let actualRows = actual.rows.map { row in order.map { row[$0] } }
        var mapping: [String: String] = [:]
        var reverse: [String: String] = [:]
        if ordered {
            var ok = true
            for (x, y) in zip(actualRows, expected.rows) where ok {
                for (a, b) in zip(x, y) where !match(a, b, &mapping, &reverse) { ok = false; break }
            }
            if ok { return true }
            mapping = [:]; reverse = [:]
        }
        var used = Array(repeating: false, count: actualRows.count)
        return backtrack(expected.rows, 0, actualRows, &used, &mapping, &reverse)
    }

    private static func backtrack(_ expected: [[Term?]], _ index: Int, _ actual: [[Term?]], _ used: inout [Bool],
                                  _ mapping: inout [String: String], _ reverse: inout [String: String]) -> Bool {
        if index == expected.count { return true }
        let wanted = expected[index]
        for candidate in actual.indices where !used[candidate] {
            var m = mapping, r = reverse
            var ok = true
            for (a, b) in zip(actual[candidate], wanted) where !match(a, b, &m, &r) { ok = false; break }
            guard ok else { continue }
            used[candidate] = true
            let hasBlank = wanted.contains { $0?.isBlank ?? false }
            if backtrack(expected, index + 1, actual, &used, &m, &r) {
                mapping = m; reverse = r
                return true
            }
            used[candidate] = false
            if !hasBlank { return false }  // ground rows: any equal candidate is as good as another
        }
        return false
    }

    static func graphs(_ actual: [Triple], _ expected: [Triple]) -> Bool {
        let a = Array(Set(actual)), e = Array(Set(expected))
        guard a.count == e.count else { return false }
        func ground(_ t: Triple) -> Bool { !t.subject.isBlank && !t.object.isBlank }
        let groundA = a.filter(ground), groundE = e.filter(ground)
        guard groundA.count == groundE.count else { return false }
        var remaining = groundA
        for triple in groundE {
            guard let index = remaining.firstIndex(where: { sameTerm($0.subject, triple.subject) && $0.predicate == triple.predicate && sameTerm($0.object, triple.object) }) else { return false }
            remaining.remove(at: index)
        }
        let blankA = a.filter { !ground($0) }.map { [$0.subject, $0.predicate, $0.object] as [Term?] }
        let blankE = e.filter { !ground($0) }.map { [$0.subject, $0.predicate, $0.object] as [Term?] }
        var used = Array(repeating: false, count: blankA.count)
        var mapping: [String: String] = [:], reverse: [String: String] = [:]
        return backtrack(blankE, 0, blankA, &used, &mapping, &reverse)
    }
}
