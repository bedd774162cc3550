// Property path evaluation (SPARQL 1.1 §9, §18.4): paths are evaluated to (start, end) id pairs.
// Sequences and alternatives keep duplicates; `*`, `+` and `?` have set semantics and are evaluated
// by breadth-first search from whichever end is bound.

extension Evaluator {
    func evaluatePath(_ subject: PatternNode, _ path: PropertyPath, _ object: PatternNode) throws(QueryError) -> Solutions {
        let from: Int? = subject.variable == nil ? { if case .term(let t) = subject { return id(t) } else { return nil } }() : nil
        let to: Int? = object.variable == nil ? { if case .term(let t) = object { return id(t) } else { return nil } }() : nil
        let pairs = try pathPairs(path, from: from, to: to)
        var result = Solutions(width: width)
        for (start, end) in pairs {
            var row = Array(repeating: 0, count: width)
            if let slot = subject.variable { row[slot] = start }
            if let slot = object.variable {
                if row[slot] != 0 && row[slot] != end { continue }
                row[slot] = end
            }
            result.append(row: row)
        }
        try checkSize(result)
        return result
    }

    func pathPairs(_ path: PropertyPath, from: Int?, to: Int?) throws(QueryError) -> [(Int, Int)] {
        try tick()
        switch path {
        case .link(let iri):
            guard let predicate = dictionary.id(of: iri) else { return [] }
            if let from, from >= localBase { return [] }
            if let to, to >= localBase { return [] }
            var pairs: [(Int, Int)] = []
            activeGraph.match(from ?? 0, predicate, to ?? 0) { s, _, o in pairs.append((s, o)); return true }
            return pairs
        case .inverse(let inner):
            return try pathPairs(inner, from: to, to: from).map { ($0.1, $0.0) }
        case .alternative(let a, let b):
            return try pathPairs(a, from: from, to: to) + pathPairs(b, from: from, to: to)
        case .sequence(let a, let b):
            var result: [(Int, Int)] = []
            if from != nil || to == nil {
                var cache: [Int: [(Int, Int)]] = [:]
                for (start, middle) in try pathPairs(a, from: from, to: nil) {
                    let rest: [(Int, Int)]
                    if let cached = cache[middle] { rest = cached } else { rest = try pathPairs(b, from: middle, to: to); cache[middle] = rest }
                    for (_, end) in rest { result.append((start, end)) }
                    if result.count > limits.maxIntermediateRows { throw .limitExceeded("property path too large") }
                }
            } else {
                var cache: [Int: [(Int, Int)]] = [:]
                for (middle, end) in try pathPairs(b, from: nil, to: to) {
                    let first: [(Int, Int)]
                    if let cached = cache[middle] { first = cached } else { first = try pathPairs(a, from: nil, to: middle); cache[middle] = first }
                    for (start, _) in first { result.append((start, end)) }
                }
            }
            return result
        case .zeroOrOne(let inner):
            var seen = Set<Pair>()
            var result: [(Int, Int)] = []
            for pair in try zeroLength(from: from, to: to) + pathPairs(inner, from: from, to: to) where seen.insert(Pair(pair)).inserted {
                result.append(pair)
            }
            return result
        case .zeroOrMore(let inner), .oneOrMore(let inner):
            let includeSelf: Bool = { if case .zeroOrMore = path { return true } else { return false } }()
            if let from {
                return try closure(inner, start: from, includeSelf: includeSelf, forward: true)
                    .filter { to == nil || $0 == to }.map { (from, $0) }
            }
            if let to {
                return try closure(inner, start: to, includeSelf: includeSelf, forward: false).map { ($0, to) }
            }
            var result: [(Int, Int)] = []
            for node in activeGraph.nodes() {
                for end in try closure(inner, start: node, includeSelf: includeSelf, forward: true) { result.append((node, end)) }
                if result.count > limits.maxIntermediateRows { throw .limitExceeded("property path too large") }
            }
            return result
        case .negated(let forward, let inverse):
            let forwardIDs = Set(forward.compactMap { dictionary.id(of: $0) })
            let inverseIDs = Set(inverse.compactMap { dictionary.id(of: $0) })
            var result: [(Int, Int)] = []
            if let from, from >= localBase { return [] }
            if let to, to >= localBase { return [] }
            if !forward.isEmpty || inverse.isEmpty {
                activeGraph.match(from ?? 0, 0, to ?? 0) { s, p, o in
                    if !forwardIDs.contains(p) { result.append((s, o)) }
                    return true
                }
            }
            if !inverse.isEmpty {
                activeGraph.match(to ?? 0, 0, from ?? 0) { s, p, o in
                    if !inverseIDs.contains(p) { result.append((o, s)) }
                    return true
                }
            }
            return result
        }
    }

    private struct Pair: Hashable {
        var a: Int
        var b: Int
        init(_ pair: (Int, Int)) { a = pair.0; b = pair.1 }
    }

    private func zeroLength(from: Int?, to: Int?) throws(QueryError) -> [(Int, Int)] {
        switch (from, to) {
        case (let f?, let t?): return f == t ? [(f, f)] : []
        case (let f?, nil): return [(f, f)]
        case (nil, let t?): return [(t, t)]
        case (nil, nil): return activeGraph.nodes().map { ($0, $0) }
        }
    }

    /// Nodes reachable from `start` by one or more steps of `path` (plus `start` when `includeSelf`).
    private func closure(_ path: PropertyPath, start: Int, includeSelf: Bool, forward: Bool) throws(QueryError) -> [Int] {
        var reached: [Int] = []
        var seen = Set<Int>()
        if includeSelf { seen.insert(start); reached.append(start) }
        var expanded = Set<Int>([start])
        var frontier = [start]
        while let node = frontier.popLast() {
            let steps = forward ? try pathPairs(path, from: node, to: nil).map(\.1) : try pathPairs(path, from: nil, to: node).map(\.0)
            for next in steps {
                if seen.insert(next).inserted { reached.append(next) }
                if expanded.insert(next).inserted { frontier.append(next) }
            }
        }
        return reached
    }
}
