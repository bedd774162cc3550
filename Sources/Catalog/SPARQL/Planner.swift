// Algebra rewrites applied before evaluation, and EXPLAIN output.
//
// Filter push-down: a filter moves towards the operand that certainly binds all its variables,
// so that it runs inside a basic graph pattern as soon as those variables are bound (see
// `Evaluator.evaluateBGP`), instead of after a join has built every combination.
//   Filter(c, Join(A, B))       → Join(Filter(c, A), B)      if vars(c) ⊆ certain(A)  (or B)
//   Filter(c, LeftJoin(A, B, e)) → LeftJoin(Filter(c, A), B, e) if vars(c) ⊆ certain(A)
//   Filter(c, Union(A, B))      → Union(Filter(c, A), Filter(c, B))
//   Filter(c1, Filter(c2, A))   → Filter(c1 ∧ c2, A)
//   Filter(a && b, A)           → Filter(a, Filter(b, A)), so each part runs as early as it can
// Filters containing EXISTS stay where they are: EXISTS sees the whole solution.
// Join order inside a BGP is chosen at evaluation time from index counts (`patternScore`).

enum Planner {
    static func optimize(_ pattern: GraphPattern) -> GraphPattern {
        switch pattern {
        case .empty, .bgp, .path, .values, .service, .subquery: return pattern
        case .join(let a, let b): return .join(optimize(a), optimize(b))
        case .leftJoin(let a, let b, let condition): return .leftJoin(optimize(a), optimize(b), condition)
        case .union(let a, let b): return .union(optimize(a), optimize(b))
        case .minus(let a, let b): return .minus(optimize(a), optimize(b))
        case .graph(let name, let inner): return .graph(name, optimize(inner))
        case .extend(let inner, let slot, let expression): return .extend(optimize(inner), slot, expression)
        case .filter(let conditions, let inner): return pushDown(conditions.flatMap(conjuncts), optimize(inner))
        }
    }

    /// FILTER(a && b) keeps exactly the solutions FILTER(a) FILTER(b) keeps (an error in either
    /// removes the solution in both forms), and the parts can run at different steps.
    static func conjuncts(_ expression: Expression) -> [Expression] {
        if case .and(let a, let b) = expression { return conjuncts(a) + conjuncts(b) }
        return [expression]
    }

    private static func filtered(_ conditions: [Expression], _ pattern: GraphPattern) -> GraphPattern {
        conditions.isEmpty ? pattern : pushDown(conditions, pattern)
    }

    private static func pushDown(_ conditions: [Expression], _ inner: GraphPattern) -> GraphPattern {
        switch inner {
        case .filter(let more, let body):
            return pushDown(conditions + more, body)
        case .union(let a, let b):
            return .union(filtered(conditions, a), filtered(conditions, b))
        case .join(let a, let b):
            let certainA = certainVariables(a), certainB = certainVariables(b)
            var toA: [Expression] = [], toB: [Expression] = [], stay: [Expression] = []
            for condition in conditions {
                if condition.containsExists { stay.append(condition) } else if condition.variables.isSubset(of: certainA) { toA.append(condition) } else if condition.variables.isSubset(of: certainB) { toB.append(condition) } else { stay.append(condition) }
            }
            if toA.isEmpty && toB.isEmpty { return .filter(conditions, inner) }
            let joined = GraphPattern.join(filtered(toA, a), filtered(toB, b))
            return stay.isEmpty ? joined : .filter(stay, joined)
        case .leftJoin(let a, let b, let condition):
            let certainA = certainVariables(a)
            let toA = conditions.filter { !$0.containsExists && $0.variables.isSubset(of: certainA) }
            if toA.isEmpty { return .filter(conditions, inner) }
            let stay = conditions.filter { $0.containsExists || !$0.variables.isSubset(of: certainA) }
            let rewritten = GraphPattern.leftJoin(filtered(toA, a), b, condition)
            return stay.isEmpty ? rewritten : .filter(stay, rewritten)
        default:
            return .filter(conditions, inner)
        }
    }

    /// Variables bound in every solution of the pattern.
    static func certainVariables(_ pattern: GraphPattern) -> Set<Int> {
        switch pattern {
        case .empty, .service, .subquery: return []
        case .bgp(let patterns): return Set(patterns.flatMap(\.variables))
        case .path(let s, _, let o): return Set([s.variable, o.variable].compactMap { $0 })
        case .join(let a, let b): return certainVariables(a).union(certainVariables(b))
        case .leftJoin(let a, _, _), .minus(let a, _), .filter(_, let a), .extend(let a, _, _): return certainVariables(a)
        case .union(let a, let b): return certainVariables(a).intersection(certainVariables(b))
        case .graph(let name, let inner): return certainVariables(inner).union([name.variable].compactMap { $0 })
        case .values(let slots, let rows):
            return Set(slots.enumerated().filter { column in rows.allSatisfy { $0[column.offset] != nil } }.map(\.element))
        }
    }
}

extension Evaluator {
    /// The optimized algebra as an indented tree, BGPs listed in the order the planner would run
    /// them with no outer bindings, each with its index-count estimate.
    func explain(_ query: Query) -> String {
        var lines: [String] = []
        func name(_ node: PatternNode) -> String {
            switch node {
            case .variable(let slot): return "?" + variableNames[slot]
            case .term(let term): return term.nTriples
            }
        }
        func walk(_ pattern: GraphPattern, _ depth: Int) {
            let pad = String(repeating: "  ", count: depth)
            switch pattern {
            case .empty: lines.append(pad + "(table unit)")
            case .bgp(let patterns):
                lines.append(pad + "(bgp")
                var bound = Set<Int>()
                var remaining = patterns
                while !remaining.isEmpty {
                    var best = 0
                    var bestScore = Double.infinity
                    for (index, pattern) in remaining.enumerated() {
                        let nodes = [pattern.subject, pattern.predicate, pattern.object]
                        let ids = nodes.map { node -> Int in
                            if case .term(let term) = node { return dictionary.id(of: term) ?? 0 }
                            return -1
                        }
                        let score = patternScore(ids: ids, slots: nodes.map { $0.variable ?? -1 }, bound: bound)
                        if score < bestScore { bestScore = score; best = index }
                    }
                    let chosen = remaining.remove(at: best)
                    bound.formUnion(chosen.variables)
                    lines.append(pad + "  (triple \(name(chosen.subject)) \(name(chosen.predicate)) \(name(chosen.object))) ; estimate \(Int(bestScore.rounded()))")
                }
                lines.append(pad + ")")
            case .path(let s, let path, let o): lines.append(pad + "(path \(name(s)) \(path) \(name(o)))")
            case .join(let a, let b): lines.append(pad + "(join"); walk(a, depth + 1); walk(b, depth + 1); lines.append(pad + ")")
            case .leftJoin(let a, let b, let condition):
                lines.append(pad + "(leftjoin" + (condition == nil ? "" : " with condition")); walk(a, depth + 1); walk(b, depth + 1); lines.append(pad + ")")
            case .filter(let conditions, let inner):
                lines.append(pad + "(filter \(conditions.count) condition(s) on \(conditions.flatMap(\.variables).map { "?" + variableNames[$0] }.sorted().joined(separator: " "))")
                walk(inner, depth + 1); lines.append(pad + ")")
            case .union(let a, let b): lines.append(pad + "(union"); walk(a, depth + 1); walk(b, depth + 1); lines.append(pad + ")")
            case .minus(let a, let b): lines.append(pad + "(minus"); walk(a, depth + 1); walk(b, depth + 1); lines.append(pad + ")")
            case .graph(let g, let inner): lines.append(pad + "(graph \(name(g))"); walk(inner, depth + 1); lines.append(pad + ")")
            case .extend(let inner, let slot, _): lines.append(pad + "(extend ?\(variableNames[slot])"); walk(inner, depth + 1); lines.append(pad + ")")
            case .values(let slots, let rows): lines.append(pad + "(values \(slots.map { "?" + variableNames[$0] }.joined(separator: " ")) ; \(rows.count) rows)")
            case .subquery(let inner): lines.append(pad + "(subquery"); walk(Planner.optimize(inner.pattern), depth + 1); lines.append(pad + ")")
            case .service(let name, _, _): lines.append(pad + "(service \(name))")
            }
        }
        walk(Planner.optimize(query.pattern), 0)
        return lines.joined(separator: "\n")
    }
}
