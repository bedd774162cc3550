// The SPARQL algebra the parser produces and the evaluator runs. Variables are slots (indexes into
// a solution row) assigned by the parser; hidden variables (blank nodes in patterns, aggregates,
// path intermediates) get names starting with "." so they never reach results.

/// A position in a triple pattern: a variable slot or a constant term.
enum PatternNode: Hashable, Sendable {
    case variable(Int)
    case term(Term)

    var variable: Int? { if case .variable(let slot) = self { return slot } else { return nil } }
}

struct TriplePattern: Hashable, Sendable {
    var subject: PatternNode
    var predicate: PatternNode
    var object: PatternNode

    var variables: [Int] { [subject.variable, predicate.variable, object.variable].compactMap { $0 } }
}

indirect enum PropertyPath: Hashable, Sendable {
    case link(Term)
    case inverse(PropertyPath)
    case sequence(PropertyPath, PropertyPath)
    case alternative(PropertyPath, PropertyPath)
    case zeroOrMore(PropertyPath)
    case oneOrMore(PropertyPath)
    case zeroOrOne(PropertyPath)
    /// `!(a|^b)`: any predicate not in `forward` (forward triples) or not in `inverse` (reverse).
    case negated(forward: [Term], inverse: [Term])
}

enum ComparisonOperator: String, Sendable { case equal = "=", notEqual = "!=", less = "<", greater = ">", lessOrEqual = "<=", greaterOrEqual = ">=" }
enum ArithmeticOperator: String, Sendable { case add = "+", subtract = "-", multiply = "*", divide = "/" }

indirect enum Expression: Sendable {
    case variable(Int)
    case constant(Term)
    case or(Expression, Expression)
    case and(Expression, Expression)
    case not(Expression)
    case compare(ComparisonOperator, Expression, Expression)
    case arithmetic(ArithmeticOperator, Expression, Expression)
    case negate(Expression)
    case unaryPlus(Expression)
    case inList(Expression, [Expression], negated: Bool)
    /// A built-in (upper-cased name, e.g. "STRLEN") or an extension function (its IRI).
    case call(String, [Expression])
    case exists(GraphPattern, negated: Bool)
    case bound(Int)

    /// A variable or a constant: evaluating it twice costs nothing.
    var isLeaf: Bool {
        switch self {
        case .variable, .constant: return true
        default: return false
        }
    }

    /// Variables the expression reads (not those inside EXISTS patterns).
    var variables: Set<Int> {
        switch self {
        case .variable(let slot), .bound(let slot): return [slot]
        case .constant: return []
        case .or(let a, let b), .and(let a, let b), .compare(_, let a, let b), .arithmetic(_, let a, let b):
            return a.variables.union(b.variables)
        case .not(let a), .negate(let a), .unaryPlus(let a): return a.variables
        case .inList(let a, let list, _): return list.reduce(a.variables) { $0.union($1.variables) }
        case .call(_, let args): return args.reduce(into: Set<Int>()) { $0.formUnion($1.variables) }
        case .exists: return []
        }
    }

    var containsExists: Bool {
        switch self {
        case .exists: return true
        case .variable, .constant, .bound: return false
        case .or(let a, let b), .and(let a, let b), .compare(_, let a, let b), .arithmetic(_, let a, let b):
            return a.containsExists || b.containsExists
        case .not(let a), .negate(let a), .unaryPlus(let a): return a.containsExists
        case .inList(let a, let list, _): return a.containsExists || list.contains { $0.containsExists }
        case .call(let name, let args): return name == "BNODE" || name == "RAND" || args.contains { $0.containsExists }
        }
    }
}

struct AggregateSpec: Sendable {
    enum Function: String, Sendable { case count = "COUNT", sum = "SUM", min = "MIN", max = "MAX", avg = "AVG", sample = "SAMPLE", groupConcat = "GROUP_CONCAT" }
    var function: Function
    var distinct: Bool
    /// nil for COUNT(*).
    var argument: Expression?
    var separator: String = " "
    /// The hidden variable slot receiving the aggregate's value.
    var slot: Int
}

indirect enum GraphPattern: Sendable {
    /// The unit pattern: one empty solution.
    case empty
    case bgp([TriplePattern])
    case path(PatternNode, PropertyPath, PatternNode)
    case join(GraphPattern, GraphPattern)
    case leftJoin(GraphPattern, GraphPattern, Expression?)
    case filter([Expression], GraphPattern)
    case union(GraphPattern, GraphPattern)
    case minus(GraphPattern, GraphPattern)
    case graph(PatternNode, GraphPattern)
    case extend(GraphPattern, Int, Expression)
    case values(variables: [Int], rows: [[Term?]])
    case subquery(Query)
    case service(PatternNode, GraphPattern, silent: Bool)

    /// Variables that may be bound by solutions of this pattern, in order of first appearance.
    func inScopeVariables(into list: inout [Int], seen: inout Set<Int>) {
        func add(_ slot: Int) { if seen.insert(slot).inserted { list.append(slot) } }
        switch self {
        case .empty: break
        case .bgp(let patterns): for pattern in patterns { pattern.variables.forEach(add) }
        case .path(let s, _, let o): s.variable.map(add); o.variable.map(add)
        case .join(let a, let b), .union(let a, let b), .leftJoin(let a, let b, _):
            a.inScopeVariables(into: &list, seen: &seen); b.inScopeVariables(into: &list, seen: &seen)
        case .minus(let a, _), .filter(_, let a): a.inScopeVariables(into: &list, seen: &seen)
        case .graph(let g, let p): g.variable.map(add); p.inScopeVariables(into: &list, seen: &seen)
        case .extend(let p, let slot, _): p.inScopeVariables(into: &list, seen: &seen); add(slot)
        case .values(let variables, _): variables.forEach(add)
        case .subquery(let query): query.projectedVariables.forEach(add)
        case .service(_, let p, _): p.inScopeVariables(into: &list, seen: &seen)
        }
    }

    var inScopeVariables: [Int] {
        var list: [Int] = []
        var seen = Set<Int>()
        inScopeVariables(into: &list, seen: &seen)
        return list
    }
}

struct OrderCondition: Sendable {
    var expression: Expression
    var ascending: Bool
}

struct Query: Sendable {
    enum Form: Sendable {
        case select
        case ask
        case construct([TriplePattern])
        case describe([PatternNode])
    }

    var form: Form = .select
    var pattern: GraphPattern = .empty
    var from: [Term] = []
    var fromNamed: [Term] = []
    /// GROUP BY keys; a key with a slot is `(expr AS ?v)` or a plain variable.
    var groupBy: [(Expression, Int?)] = []
    var isGrouped: Bool = false
    var aggregates: [AggregateSpec] = []
    var having: [Expression] = []
    /// SELECT list: each projected slot with its expression when it is `(expr AS ?v)`.
    var projection: [(slot: Int, expression: Expression?)] = []
    var selectAll: Bool = false
    var orderBy: [OrderCondition] = []
    var distinct = false
    var reduced = false
    var limit: Int?
    var offset: Int = 0
    /// A trailing VALUES clause, joined with the query's result.
    var trailingValues: GraphPattern?

    var projectedVariables: [Int] { projection.map(\.slot) }
}
