import Foundation

/// A multiset of solutions stored flat: row `i` occupies `data[i*width ..< (i+1)*width]`, one id per
/// variable slot, 0 meaning unbound. Flat storage avoids one allocation per row.
struct Solutions {
    let width: Int
    var data: [Int] = []

    init(width: Int) { self.width = width }

    static func unit(width: Int) -> Solutions {
        var solutions = Solutions(width: width)
        solutions.data = Array(repeating: 0, count: width)
        return solutions
    }

    var count: Int { data.count / width }
    var isEmpty: Bool { data.isEmpty }

    @inline(__always) func value(_ row: Int, _ slot: Int) -> Int { data[row * width + slot] }

    func row(_ index: Int) -> [Int] { Array(data[(index * width)..<((index + 1) * width)]) }

    mutating func append(row: [Int]) { data.append(contentsOf: row) }

    mutating func append(from other: Solutions, row: Int) {
        data.append(contentsOf: other.data[(row * other.width)..<((row + 1) * other.width)])
    }

    /// Slots bound in at least one row / in every row.
    func boundSlots() -> (any: [Bool], all: [Bool]) {
        var any = Array(repeating: false, count: width)
        var all = Array(repeating: !isEmpty, count: width)
        var base = 0
        while base < data.count {
            for slot in 0..<width {
                if data[base + slot] != 0 { any[slot] = true } else { all[slot] = false }
            }
            base += width
        }
        return (any, all)
    }
}

/// A view of one row inside flat solution data.
struct RowRef {
    let data: [Int]
    let base: Int
    @inline(__always) subscript(slot: Int) -> Int { data[base + slot] }
}

/// Evaluates one parsed query against a snapshot. Single-threaded and short-lived: one per query.
final class Evaluator {
    let snapshot: StoreSnapshot
    let dictionary: TermDictionary
    let variableNames: [String]
    let width: Int
    let limits: QueryLimits
    let deadline: ContinuousClock.Instant
    /// Base IRI of the query, for IRI() on relative strings.
    var baseIRI: String?
    private var ticks = 0

    /// Terms created during evaluation (BIND, aggregates...) that the store does not know.
    private var localTerms: [Term] = []
    private var localIDs: [Term: Int] = [:]
    let localBase: Int

    var activeGraph: IndexedGraph
    var defaultGraph: IndexedGraph
    var namedGraphs: [Int: IndexedGraph]
    var blankNodeCounter = 0
    var regexCache: [String: NSRegularExpression?] = [:]
    /// Set when a regular expression match was stopped at the deadline or on cancellation: the
    /// next limit check throws it at once instead of after the next 1024 rows.
    var interruptedMatch: QueryError?
    lazy var now: Term = .typed(ISO8601DateFormatter().string(from: Date()), Vocabulary.xsdDateTime)

    init(snapshot: StoreSnapshot, variableNames: [String], limits: QueryLimits, deadline: ContinuousClock.Instant) {
        self.snapshot = snapshot
        self.dictionary = snapshot.dictionary
        self.variableNames = variableNames
        self.width = max(1, variableNames.count)
        self.limits = limits
        self.deadline = deadline
        self.localBase = snapshot.dictionary.count + 1
        self.defaultGraph = snapshot.defaultGraph
        self.activeGraph = snapshot.defaultGraph
        var named = snapshot.graphs
        named[0] = nil
        self.namedGraphs = named
    }

    // MARK: Terms

    @inline(__always) func term(_ id: Int) -> Term {
        id < localBase ? dictionary.term(id) : localTerms[id - localBase]
    }

    func id(_ term: Term) -> Int {
        if let id = dictionary.id(of: term) { return id }
        if let id = localIDs[term] { return id }
        let id = localBase + localTerms.count
        localTerms.append(term)
        localIDs[term] = id
        return id
    }

    /// Parsed numeric values of store terms, by id, filled on first use: filters and ORDER BY
    /// over numbers would otherwise re-parse the same lexical forms for every row.
    private enum CachedNumeric { case unknown, notNumeric, value(Numeric) }
    // Plain stored arrays, allocated on first use: a `lazy var` would copy the array on every write.
    private var numericCache: [CachedNumeric] = []

    func numeric(id: Int) -> Numeric? {
        if id >= localBase { return term(id).literal.flatMap(Numeric.init) }
        if numericCache.isEmpty { numericCache = Array(repeating: .unknown, count: localBase) }
        switch numericCache[id] {
        case .value(let value): return value
        case .notNumeric: return nil
        case .unknown:
            let value = dictionary.term(id).literal.flatMap(Numeric.init)
            numericCache[id] = value.map(CachedNumeric.value) ?? .notNumeric
            return value
        }
    }

    /// Sort keys by id, for ORDER BY / MIN / MAX over store terms.
    private var sortKeyCache: [SortKey?] = []

    func sortKey(id: Int) -> SortKey {
        if id == 0 { return .unbound }
        if id >= localBase { return SortKey(term(id)) }
        if sortKeyCache.isEmpty { sortKeyCache = Array(repeating: nil, count: localBase) }
        if let cached = sortKeyCache[id] { return cached }
        let key = SortKey(dictionary.term(id))
        sortKeyCache[id] = key
        return key
    }

    // MARK: Limits

    @inline(__always) func tick() throws(QueryError) {
        ticks &+= 1
        if ticks & 0x3FF == 0 || interruptedMatch != nil { try checkLimits() }
    }

    /// For loops inside non-throwing index callbacks: the error to stop with, checked every 4096 calls.
    @inline(__always) func pendingStop() -> QueryError? {
        ticks &+= 1
        guard ticks & 0xFFF == 0 else { return nil }
        do { try checkLimits() } catch { return error }
        return nil
    }

    func checkLimits() throws(QueryError) {
        if let interruptedMatch { throw interruptedMatch }
        if Task.isCancelled { throw .cancelled }
        if ContinuousClock.now > deadline { throw .limitExceeded("query ran longer than \(limits.timeout)") }
    }

    func checkSize(_ solutions: Solutions) throws(QueryError) {
        if solutions.count > limits.maxIntermediateRows {
            throw .limitExceeded("more than \(limits.maxIntermediateRows) intermediate solutions")
        }
        try checkLimits()
    }

    // MARK: Query

    func run(_ query: Query) throws(QueryError) -> QueryResult {
        try setUpDataset(query)
        switch query.form {
        case .select:
            let (solutions, slots) = try evaluateQuery(query)
            if solutions.count > limits.maxResults { throw .limitExceeded("more than \(limits.maxResults) results") }
            var rows: [[Term?]] = []
            rows.reserveCapacity(solutions.count)
            for index in 0..<solutions.count {
                rows.append(slots.map { slot in
                    let value = solutions.value(index, slot)
                    return value == 0 ? nil : term(value)
                })
            }
            return .solutions(SolutionTable(variables: slots.map { variableNames[$0] }, rows: rows))
        case .ask:
            var limited = query
            limited.limit = 1
            return .boolean(try evaluateQuery(limited).0.count > 0)
        case .construct(let template):
            let (solutions, _) = try evaluateQuery(query)
            return .graph(try construct(template, solutions))
        case .describe(let targets):
            let (solutions, _) = try evaluateQuery(query)
            return .graph(try describe(targets, solutions, all: query.selectAll))
        }
    }

    private func setUpDataset(_ query: Query) throws(QueryError) {
        guard !query.from.isEmpty || !query.fromNamed.isEmpty else { return }
        if !query.from.isEmpty {
            var merged = Set<IndexKey>()
            for graph in query.from {
                if let id = dictionary.id(of: graph), let index = snapshot.graphs[id] { merged.formUnion(index.spo) }
            }
            defaultGraph = IndexedGraph(triples: merged)
        } else {
            defaultGraph = .empty
        }
        activeGraph = defaultGraph
        var named: [Int: IndexedGraph] = [:]
        for graph in query.fromNamed {
            if let id = dictionary.id(of: graph) { named[id] = snapshot.graphs[id] ?? .empty }
        }
        namedGraphs = named
    }

    /// Evaluates a SELECT-shaped query: pattern, grouping, HAVING, VALUES, select expressions,
    /// ORDER BY, projection, DISTINCT/REDUCED, OFFSET/LIMIT. Returns rows and the projected slots.
    func evaluateQuery(_ query: Query) throws(QueryError) -> (Solutions, [Int]) {
        var solutions = try evaluate(Planner.optimize(query.pattern))
        if query.isGrouped { solutions = try group(solutions, query) }
        if !query.having.isEmpty { solutions = try filter(solutions, query.having) }
        if let values = query.trailingValues { solutions = try join(solutions, try evaluate(values)) }
        for (slot, expression) in query.projection {
            guard let expression else { continue }
            solutions = try extend(solutions, slot, expression)
        }
        if !query.orderBy.isEmpty { solutions = try order(solutions, query.orderBy, limit: query.distinct ? nil : query.limit.map { $0 + query.offset }) }
        var slots: [Int]
        if query.selectAll {
            var pattern = query.pattern
            if let values = query.trailingValues { pattern = .join(pattern, values) }
            slots = pattern.inScopeVariables.filter { !VariableTable.isHidden(variableNames[$0]) }
        } else {
            slots = query.projectedVariables
        }
        if case .select = query.form { solutions = project(solutions, slots) }
        if case .describe = query.form, query.selectAll { slots = query.pattern.inScopeVariables }
        if query.distinct || query.reduced { solutions = distinct(solutions) }
        if query.offset > 0 || query.limit != nil {
            let start = min(query.offset, solutions.count)
            let end = query.limit.map { min(solutions.count, start + $0) } ?? solutions.count
            var sliced = Solutions(width: width)
            sliced.data = Array(solutions.data[(start * width)..<(end * width)])
            solutions = sliced
        }
        return (solutions, slots)
    }

    private func project(_ solutions: Solutions, _ slots: [Int]) -> Solutions {
        var keep = Array(repeating: false, count: width)
        for slot in slots { keep[slot] = true }
        if keep.allSatisfy({ $0 }) { return solutions }
        var result = solutions
        result.data.withUnsafeMutableBufferPointer { buffer in
            var base = 0
            while base < buffer.count {
                for slot in 0..<width where !keep[slot] { buffer[base + slot] = 0 }
                base += width
            }
        }
        return result
    }

    private func distinct(_ solutions: Solutions) -> Solutions {
        var seen = Set<ArraySlice<Int>>()
        var result = Solutions(width: width)
        for index in 0..<solutions.count {
            let row = solutions.data[(index * width)..<((index + 1) * width)]
            if seen.insert(row).inserted { result.data.append(contentsOf: row) }
        }
        return result
    }

    // MARK: Graph patterns

    func evaluate(_ pattern: GraphPattern) throws(QueryError) -> Solutions {
        try checkLimits()
        switch pattern {
        case .empty:
            return .unit(width: width)
        case .bgp(let patterns):
            return try evaluateBGP(patterns, input: .unit(width: width), filters: [])
        case .path(let subject, let path, let object):
            return try evaluatePath(subject, path, object)
        case .join(let left, .bgp(let patterns)):
            return try evaluateBGP(patterns, input: try evaluate(left), filters: [])
        case .join(let left, .filter(let conditions, .bgp(let patterns)))
            where !conditions.contains(where: \.containsExists) && conditions.allSatisfy({ $0.variables.isSubset(of: Set(patterns.flatMap(\.variables))) }):
            // The filter only sees the BGP's own variables (all bound by it), so feeding the
            // left rows into the BGP cannot change its outcome.
            return try evaluateBGP(patterns, input: try evaluate(left), filters: conditions)
        case .join(let left, .path(let subject, let path, let object)):
            return try joinPath(try evaluate(left), subject, path, object)
        case .join(let left, let right):
            return try join(try evaluate(left), try evaluate(right))
        case .leftJoin(let left, let right, let condition):
            return try leftJoin(try evaluate(left), try evaluate(right), condition)
        case .filter(let conditions, .bgp(let patterns)) where !conditions.contains(where: \.containsExists):
            return try evaluateBGP(patterns, input: .unit(width: width), filters: conditions)
        case .filter(let conditions, .join(let left, .bgp(let patterns))) where !conditions.contains(where: \.containsExists):
            return try evaluateBGP(patterns, input: try evaluate(left), filters: conditions)
        case .filter(let conditions, let inner):
            return try filter(try evaluate(inner), conditions)
        case .union(let left, let right):
            var result = try evaluate(left)
            result.data.append(contentsOf: try evaluate(right).data)
            try checkSize(result)
            return result
        case .minus(let left, let right):
            return try minus(try evaluate(left), try evaluate(right))
        case .graph(let name, let inner):
            return try evaluateGraph(name, inner)
        case .extend(let inner, let slot, let expression):
            return try extend(try evaluate(inner), slot, expression)
        case .values(let slots, let rows):
            var result = Solutions(width: width)
            for row in rows {
                var values = Array(repeating: 0, count: width)
                for (slot, value) in zip(slots, row) { values[slot] = value.map(id) ?? 0 }
                result.append(row: values)
            }
            return result
        case .subquery(let query):
            let saved = (activeGraph, defaultGraph)
            defer { (activeGraph, defaultGraph) = saved }
            defaultGraph = activeGraph
            return try evaluateQuery(query).0
        case .service(_, _, let silent):
            if silent { return .unit(width: width) }
            throw .unsupported("SERVICE (federated queries go through the broker)")
        }
    }

    private func evaluateGraph(_ name: PatternNode, _ inner: GraphPattern) throws(QueryError) -> Solutions {
        let saved = activeGraph
        defer { activeGraph = saved }
        switch name {
        case .term(let term):
            guard let graphID = dictionary.id(of: term), let graph = namedGraphs[graphID] else { return Solutions(width: width) }
            activeGraph = graph
            return try evaluate(inner)
        case .variable(let slot):
            var result = Solutions(width: width)
            for graphID in namedGraphs.keys.sorted() {
                activeGraph = namedGraphs[graphID]!
                let solutions = try evaluate(inner)
                for index in 0..<solutions.count {
                    let existing = solutions.value(index, slot)
                    if existing != 0 && existing != graphID { continue }
                    var row = solutions.row(index)
                    row[slot] = graphID
                    result.append(row: row)
                }
            }
            return result
        }
    }

    /// Basic graph pattern evaluation by index nested loops from `input` rows. Patterns are
    /// ordered greedily by estimated cardinality (exact index counts for constants, discounted
    /// for positions bound by earlier patterns); each filter runs as soon as its variables are bound.
    func evaluateBGP(_ patterns: [TriplePattern], input: Solutions, filters: [Expression], stopAtFirst: Bool = false) throws(QueryError) -> Solutions {
        struct Encoded { var ids: [Int]; var slots: [Int] }  // per position: constant id or -1; slot or -1
        var encoded: [Encoded] = []
        for pattern in patterns {
            var ids: [Int] = []
            var slots: [Int] = []
            for node in [pattern.subject, pattern.predicate, pattern.object] {
                switch node {
                case .variable(let slot): ids.append(-1); slots.append(slot)
                case .term(let term):
                    guard let id = dictionary.id(of: term) else { return Solutions(width: width) }
                    ids.append(id); slots.append(-1)
                }
            }
            encoded.append(Encoded(ids: ids, slots: slots))
        }
        // Order the patterns.
        let (_, inputBound) = input.boundSlots()
        var bound = Set((0..<width).filter { inputBound[$0] })
        var remaining = Array(encoded.indices)
        var ordered: [Encoded] = []
        while !remaining.isEmpty {
            var best = 0
            var bestScore = Double.infinity
            for (position, index) in remaining.enumerated() {
                let score = patternScore(ids: encoded[index].ids, slots: encoded[index].slots, bound: bound)
                if score < bestScore { bestScore = score; best = position }
            }
            let chosen = encoded[remaining.remove(at: best)]
            ordered.append(chosen)
            for slot in chosen.slots where slot >= 0 { bound.insert(slot) }
        }
        // Assign filters to the first step after which all their variables are bound.
        var filtersAtStep = Array(repeating: [Expression](), count: ordered.count + 1)
        var boundAfter = Set((0..<width).filter { inputBound[$0] })
        var pending = filters
        for (step, pattern) in ordered.enumerated() {
            for slot in pattern.slots where slot >= 0 { boundAfter.insert(slot) }
            pending.removeAll { expression in
                if expression.variables.isSubset(of: boundAfter) { filtersAtStep[step].append(expression); return true }
                return false
            }
        }
        filtersAtStep[ordered.count] = pending
        if ordered.isEmpty { return try filter(input, pending) }

        var current = input
        for (step, pattern) in ordered.enumerated() {
            var output = Solutions(width: width)
            let stepFilters = filtersAtStep[step]
            let last = step == ordered.count - 1
            let (s0, p0, o0) = (pattern.ids[0], pattern.ids[1], pattern.ids[2])
            let (ss, ps, os) = (pattern.slots[0], pattern.slots[1], pattern.slots[2])
            for row in 0..<current.count {
                try tick()
                let base = row * width
                let s = s0 >= 0 ? s0 : current.data[base + ss]
                let p = p0 >= 0 ? p0 : current.data[base + ps]
                let o = o0 >= 0 ? o0 : current.data[base + os]
                // An id created during evaluation is in no index: nothing matches it.
                if s >= localBase || p >= localBase || o >= localBase { continue }
                var failure: QueryError?
                activeGraph.match(s, p, o) { ts, tp, to in
                    if let stop = self.pendingStop() { failure = stop; return false }
                    // Repeated variables within the pattern must bind the same term.
                    if s == 0 && p == 0 && ss == ps && ts != tp { return true }
                    if s == 0 && o == 0 && ss == os && ts != to { return true }
                    if p == 0 && o == 0 && ps == os && tp != to { return true }
                    let start = output.data.count
                    output.data.append(contentsOf: current.data[base..<(base + width)])
                    if s == 0 { output.data[start + ss] = ts }
                    if p == 0 { output.data[start + ps] = tp }
                    if o == 0 { output.data[start + os] = to }
                    if !stepFilters.isEmpty && !self.passes(stepFilters, output.data, start) {
                        output.data.removeLast(self.width)
                        return true
                    }
                    if output.count > self.limits.maxIntermediateRows {
                        failure = .limitExceeded("more than \(self.limits.maxIntermediateRows) intermediate solutions")
                        return false
                    }
                    return !(stopAtFirst && last && filtersAtStep[ordered.count].isEmpty)
                }
                if let failure { throw failure }
                if stopAtFirst && last && !output.isEmpty && filtersAtStep[ordered.count].isEmpty { return output }
            }
            current = output
            if current.isEmpty { return current }
        }
        return try filter(current, filtersAtStep[ordered.count])
    }

    /// Whether the row at `base` satisfies every condition. Takes the array as an argument so no
    /// reference outlives the call (a lingering one would force a copy on the next append).
    @inline(never) func passes(_ conditions: [Expression], _ data: [Int], _ base: Int) -> Bool {
        let view = RowRef(data: data, base: base)
        for condition in conditions where !effectiveBooleanValue(condition, view) { return false }
        return true
    }

    /// Planner estimate for one triple pattern given the variables already bound: the exact index
    /// count for its constants, divided by 50 per position bound by earlier patterns (a bound
    /// subject or object is very selective), and heavily penalised when it shares no variable
    /// with what is bound (a cross product).
    func patternScore(ids: [Int], slots: [Int], bound: Set<Int>) -> Double {
        let count = Double(activeGraph.count(max(0, ids[0]), max(0, ids[1]), max(0, ids[2])))
        var boundPositions = 0
        var freeSlots = 0
        for slot in slots where slot >= 0 {
            if bound.contains(slot) { boundPositions += 1 } else { freeSlots += 1 }
        }
        var score = count
        if boundPositions > 0 { score = count / pow(50, Double(boundPositions)) }
        if boundPositions == 0 && !bound.isEmpty && freeSlots > 0 { score *= 1000 }
        return score
    }

    func filter(_ solutions: Solutions, _ conditions: [Expression]) throws(QueryError) -> Solutions {
        if conditions.isEmpty { return solutions }
        var result = Solutions(width: width)
        for index in 0..<solutions.count {
            try tick()
            let view = RowRef(data: solutions.data, base: index * width)
            var keep = true
            for condition in conditions where !effectiveBooleanValue(condition, view) { keep = false; break }
            if keep { result.append(from: solutions, row: index) }
        }
        return result
    }

    func extend(_ solutions: Solutions, _ slot: Int, _ expression: Expression) throws(QueryError) -> Solutions {
        var result = solutions
        for index in 0..<solutions.count {
            try tick()
            let view = RowRef(data: solutions.data, base: index * width)
            if let value = evaluate(expression, view) { result.data[index * width + slot] = id(value) }
        }
        return result
    }

    // MARK: Joins

    private struct JoinPlan {
        var keySlots: [Int]
        var checkSlots: [Int]
    }

    private func joinPlan(_ left: Solutions, _ right: Solutions) -> JoinPlan {
        let l = left.boundSlots(), r = right.boundSlots()
        var keys: [Int] = []
        var checks: [Int] = []
        for slot in 0..<width where l.any[slot] && r.any[slot] {
            checks.append(slot)
            if l.all[slot] && r.all[slot] { keys.append(slot) }
        }
        return JoinPlan(keySlots: keys, checkSlots: checks)
    }

    @inline(__always) private func hashKey(_ data: [Int], _ base: Int, _ slots: [Int]) -> Int {
        if slots.count == 1 { return data[base + slots[0]] }
        var hasher = Hasher()
        for slot in slots { hasher.combine(data[base + slot]) }
        return hasher.finalize()
    }

    @inline(__always) private func compatible(_ a: [Int], _ aBase: Int, _ b: [Int], _ bBase: Int, _ slots: [Int]) -> Bool {
        for slot in slots {
            let x = a[aBase + slot], y = b[bBase + slot]
            if x != 0 && y != 0 && x != y { return false }
        }
        return true
    }

    private func buildTable(_ solutions: Solutions, _ keys: [Int]) -> [Int: [Int]] {
        var table: [Int: [Int]] = [:]
        table.reserveCapacity(solutions.count)
        for index in 0..<solutions.count {
            table[hashKey(solutions.data, index * width, keys), default: []].append(index)
        }
        return table
    }

    @inline(__always) private func appendMerged(_ output: inout Solutions, _ left: Solutions, _ l: Int, _ right: Solutions, _ r: Int) {
        let start = output.data.count
        output.data.append(contentsOf: left.data[(l * width)..<((l + 1) * width)])
        let rightBase = r * width
        for slot in 0..<width {
            let value = right.data[rightBase + slot]
            if value != 0 { output.data[start + slot] = value }
        }
    }

    func join(_ left: Solutions, _ right: Solutions) throws(QueryError) -> Solutions {
        if left.isEmpty || right.isEmpty { return Solutions(width: width) }
        let plan = joinPlan(left, right)
        var output = Solutions(width: width)
        if plan.keySlots.isEmpty {
            for l in 0..<left.count {
                for r in 0..<right.count {
                    try tick()
                    if compatible(left.data, l * width, right.data, r * width, plan.checkSlots) {
                        appendMerged(&output, left, l, right, r)
                    }
                }
                if output.count > limits.maxIntermediateRows { try checkSize(output) }
            }
            return output
        }
        let table = buildTable(right, plan.keySlots)
        for l in 0..<left.count {
            try tick()
            guard let matches = table[hashKey(left.data, l * width, plan.keySlots)] else { continue }
            for r in matches where compatible(left.data, l * width, right.data, r * width, plan.checkSlots) {
                try tick()
                appendMerged(&output, left, l, right, r)
            }
            if output.count > limits.maxIntermediateRows { try checkSize(output) }
        }
        return output
    }

    func leftJoin(_ left: Solutions, _ right: Solutions, _ condition: Expression?) throws(QueryError) -> Solutions {
        if left.isEmpty { return left }
        let plan = joinPlan(left, right)
        let table = plan.keySlots.isEmpty ? nil : buildTable(right, plan.keySlots)
        let allRight = Array(0..<right.count)
        var output = Solutions(width: width)
        for l in 0..<left.count {
            try tick()
            let candidates = table.map { $0[hashKey(left.data, l * width, plan.keySlots)] ?? [] } ?? allRight
            var matched = false
            for r in candidates where compatible(left.data, l * width, right.data, r * width, plan.checkSlots) {
                try tick()
                appendMerged(&output, left, l, right, r)
                if let condition, !passes([condition], output.data, output.data.count - width) {
                    output.data.removeLast(width)
                    continue
                }
                matched = true
            }
            if !matched { output.append(from: left, row: l) }
            if output.count > limits.maxIntermediateRows { try checkSize(output) }
        }
        return output
    }

    func minus(_ left: Solutions, _ right: Solutions) throws(QueryError) -> Solutions {
        if left.isEmpty || right.isEmpty { return left }
        let plan = joinPlan(left, right)
        if plan.checkSlots.isEmpty { return left }  // disjoint domains: nothing is removed
        let table = plan.keySlots.isEmpty ? nil : buildTable(right, plan.keySlots)
        let allRight = Array(0..<right.count)
        var output = Solutions(width: width)
        for l in 0..<left.count {
            try tick()
            let candidates = table.map { $0[hashKey(left.data, l * width, plan.keySlots)] ?? [] } ?? allRight
            var removed = false
            for r in candidates where compatible(left.data, l * width, right.data, r * width, plan.checkSlots) {
                // Removed only if the two solutions share at least one bound variable.
                if plan.checkSlots.contains(where: { left.data[l * width + $0] != 0 && right.data[r * width + $0] != 0 }) {
                    removed = true
                    break
                }
            }
            if !removed { output.append(from: left, row: l) }
        }
        return output
    }

    /// Join with a property path, starting the path from the values the left side already binds
    /// (one evaluation per distinct start node) instead of from every node of the graph.
    private func joinPath(_ left: Solutions, _ subject: PatternNode, _ path: PropertyPath, _ object: PatternNode) throws(QueryError) -> Solutions {
        let (_, all) = left.boundSlots()
        let forward: Bool
        if let slot = subject.variable, all[slot] { forward = true } else if let slot = object.variable, all[slot] { forward = false } else {
            return try join(left, try evaluatePath(subject, path, object))
        }
        let startSlot = forward ? subject.variable! : object.variable!
        let otherNode = forward ? object : subject
        let otherConstant: Int? = { if case .term(let t) = otherNode { return id(t) } else { return nil } }()
        var cache: [Int: [Int]] = [:]
        var output = Solutions(width: width)
        for index in 0..<left.count {
            try tick()
            let start = left.value(index, startSlot)
            let ends: [Int]
            if let cached = cache[start] { ends = cached } else {
                ends = try (forward ? pathPairs(path, from: start, to: otherConstant).map(\.1)
                                    : pathPairs(path, from: otherConstant, to: start).map(\.0))
                cache[start] = ends
            }
            for end in ends {
                if let slot = otherNode.variable {
                    let existing = left.value(index, slot)
                    if existing != 0 && existing != end { continue }
                    output.append(from: left, row: index)
                    output.data[output.data.count - width + slot] = end
                } else {
                    output.append(from: left, row: index)
                }
            }
            if output.count > limits.maxIntermediateRows { try checkSize(output) }
        }
        return output
    }

    // MARK: EXISTS

    func exists(_ pattern: GraphPattern, _ row: RowRef) -> Bool {
        var seed = Solutions(width: width)
        seed.data.append(contentsOf: row.data[row.base..<(row.base + width)])
        do {
            if case .bgp(let patterns) = pattern {
                return !(try evaluateBGP(patterns, input: seed, filters: [], stopAtFirst: true)).isEmpty
            }
            let rowValues = seed.row(0)
            return !(try evaluate(substitute(pattern, rowValues))).isEmpty
        } catch {
            return false
        }
    }

    /// The pattern with the row's bound variables replaced by their values (EXISTS semantics).
    private func substitute(_ pattern: GraphPattern, _ row: [Int]) -> GraphPattern {
        func node(_ n: PatternNode) -> PatternNode {
            if case .variable(let slot) = n, row[slot] != 0 { return .term(term(row[slot])) }
            return n
        }
        func expr(_ e: Expression) -> Expression { substitute(e, row) }
        switch pattern {
        case .empty, .subquery, .service: return pattern
        case .bgp(let patterns):
            return .bgp(patterns.map { TriplePattern(subject: node($0.subject), predicate: node($0.predicate), object: node($0.object)) })
        case .path(let s, let p, let o): return .path(node(s), p, node(o))
        case .join(let a, let b): return .join(substitute(a, row), substitute(b, row))
        case .leftJoin(let a, let b, let c): return .leftJoin(substitute(a, row), substitute(b, row), c.map(expr))
        case .filter(let conditions, let inner): return .filter(conditions.map(expr), substitute(inner, row))
        case .union(let a, let b): return .union(substitute(a, row), substitute(b, row))
        case .minus(let a, let b): return .minus(substitute(a, row), substitute(b, row))
        case .graph(let g, let inner): return .graph(node(g), substitute(inner, row))
        case .extend(let inner, let slot, let e): return .extend(substitute(inner, row), slot, expr(e))
        case .values(let slots, let rows):
            // Keep only the data rows compatible with the current solution.
            let kept = rows.filter { values in
                zip(slots, values).allSatisfy { slot, value in
                    guard let value, row[slot] != 0 else { return true }
                    return id(value) == row[slot]
                }
            }
            return .values(variables: slots, rows: kept)
        }
    }

    private func substitute(_ expression: Expression, _ row: [Int]) -> Expression {
        func sub(_ e: Expression) -> Expression { substitute(e, row) }
        switch expression {
        case .variable(let slot): return row[slot] != 0 ? .constant(term(row[slot])) : expression
        case .bound(let slot): return row[slot] != 0 ? .constant(.boolean(true)) : expression
        case .constant: return expression
        case .or(let a, let b): return .or(sub(a), sub(b))
        case .and(let a, let b): return .and(sub(a), sub(b))
        case .not(let a): return .not(sub(a))
        case .compare(let op, let a, let b): return .compare(op, sub(a), sub(b))
        case .arithmetic(let op, let a, let b): return .arithmetic(op, sub(a), sub(b))
        case .negate(let a): return .negate(sub(a))
        case .unaryPlus(let a): return .unaryPlus(sub(a))
        case .inList(let a, let list, let negated): return .inList(sub(a), list.map(sub), negated: negated)
        case .call(let name, let args): return .call(name, args.map(sub))
        case .exists(let pattern, let negated): return .exists(substitute(pattern, row), negated: negated)
        }
    }

    // MARK: Grouping and aggregates

    func group(_ input: Solutions, _ query: Query) throws(QueryError) -> Solutions {
        var groupOrder: [[Int]] = []
        var members: [[Int]: [Int]] = [:]
        if query.groupBy.isEmpty || input.isEmpty {
            // No GROUP BY: one group, even when empty. With GROUP BY over no solutions the W3C
            // suite (agg-empty-group) also expects one solution, with the keys unbound.
            groupOrder = [query.groupBy.isEmpty ? [] : Array(repeating: 0, count: query.groupBy.count)]
            members[groupOrder[0]] = Array(0..<input.count)
            members[[]] = Array(0..<input.count)
        } else {
            for index in 0..<input.count {
                try tick()
                let view = RowRef(data: input.data, base: index * width)
                let key = query.groupBy.map { expression, _ in evaluate(expression, view).map(id) ?? 0 }
                if members[key] == nil { groupOrder.append(key) }
                members[key, default: []].append(index)
            }
        }
        var output = Solutions(width: width)
        for key in groupOrder {
            try tick()
            var row = Array(repeating: 0, count: width)
            for (position, (expression, slot)) in query.groupBy.enumerated() {
                if let slot { row[slot] = key[position] } else if case .variable(let v) = expression { row[v] = key[position] }
            }
            let rows = members[key] ?? []
            for aggregate in query.aggregates {
                if let value = try computeAggregate(aggregate, input, rows) { row[aggregate.slot] = id(value) }
            }
            output.append(row: row)
        }
        return output
    }

    private func computeAggregate(_ aggregate: AggregateSpec, _ input: Solutions, _ rows: [Int]) throws(QueryError) -> Term? {
        guard let argument = aggregate.argument else {
            // COUNT(*)
            if aggregate.distinct {
                var seen = Set<ArraySlice<Int>>()
                for index in rows { seen.insert(input.data[(index * width)..<((index + 1) * width)]) }
                return .integer(seen.count)
            }
            return .integer(rows.count)
        }
        var values: [Term] = []
        var hadError = false
        var seen = Set<Term>()
        for index in rows {
            try tick()
            guard let value = evaluate(argument, RowRef(data: input.data, base: index * width)) else { hadError = true; continue }
            if aggregate.distinct && !seen.insert(value).inserted { continue }
            values.append(value)
        }
        switch aggregate.function {
        case .count:
            return .integer(values.count)
        case .sum, .avg:
            if hadError && aggregate.function != .count { return nil }
            var total = Numeric.integer(0)
            for value in values {
                guard let literal = value.literal, let number = Numeric(literal), let sum = Numeric.arithmetic(.add, total, number) else { return nil }
                total = sum
            }
            if aggregate.function == .sum { return total.term }
            if values.isEmpty { return .integer(0) }
            return Numeric.arithmetic(.divide, total, .integer(values.count))?.term
        case .min, .max:
            if hadError { return nil }
            guard var best = values.first else { return nil }
            var bestKey = SortKey(best)
            for value in values.dropFirst() {
                let key = SortKey(value)
                if aggregate.function == .min ? key < bestKey : bestKey < key { best = value; bestKey = key }
            }
            return best
        case .sample:
            return values.first
        case .groupConcat:
            if hadError { return nil }
            var parts: [String] = []
            var language: String?? = .none
            for value in values {
                guard let literal = value.literal, literal.datatype == Vocabulary.xsdString || literal.language != nil else { return nil }
                parts.append(literal.lexical)
                switch language {
                case .none: language = .some(literal.language)
                case .some(let existing) where existing != literal.language: language = .some(nil)
                default: break
                }
            }
            let text = parts.joined(separator: aggregate.separator)
            guard text.utf8.count <= Evaluator.maxStringBytes else { return nil }
            if case .some(.some(let tag)) = language { return .literal(Literal(text, language: tag)) }
            return .string(text)
        }
    }

    // MARK: ORDER BY

    func order(_ solutions: Solutions, _ conditions: [OrderCondition], limit: Int?) throws(QueryError) -> Solutions {
        // Keys are computed once per row, stored condition-major (keys[c * n + row]).
        let n = solutions.count
        var keys: [SortKey] = []
        keys.reserveCapacity(n * conditions.count)
        for condition in conditions {
            for index in 0..<n {
                try tick()
                if case .variable(let slot) = condition.expression {
                    keys.append(sortKey(id: solutions.value(index, slot)))
                } else {
                    keys.append(SortKey(evaluate(condition.expression, RowRef(data: solutions.data, base: index * width))))
                }
            }
        }
        func less(_ a: Int, _ b: Int) -> Bool {
            for (position, condition) in conditions.enumerated() {
                let x = keys[position * n + a], y = keys[position * n + b]
                if x == y { continue }
                return condition.ascending ? x < y : y < x
            }
            return a < b  // stable
        }
        var indices = Array(0..<solutions.count)
        if let limit, limit < indices.count / 4 {
            // Top-k: keep the best `limit` rows seen so far, sorted; cheaper than a full sort.
            var best: [Int] = []
            for index in indices {
                if best.count == limit, let last = best.last, !less(index, last) { continue }
                var low = 0, high = best.count
                while low < high { let mid = (low + high) / 2; if less(best[mid], index) { low = mid + 1 } else { high = mid } }
                best.insert(index, at: low)
                if best.count > limit { best.removeLast() }
            }
            indices = best
        } else {
            indices.sort(by: less)
        }
        var result = Solutions(width: width)
        result.data.reserveCapacity(indices.count * width)
        for index in indices { result.append(from: solutions, row: index) }
        return result
    }

    // MARK: CONSTRUCT and DESCRIBE

    private func construct(_ template: [TriplePattern], _ solutions: Solutions) throws(QueryError) -> [Triple] {
        var seen = Set<Triple>()
        var triples: [Triple] = []
        for index in 0..<solutions.count {
            try tick()
            func resolve(_ node: PatternNode) -> Term? {
                switch node {
                case .variable(let slot):
                    let value = solutions.value(index, slot)
                    return value == 0 ? nil : term(value)
                case .term(.blank(let node)): return .blank("c\(index)_\(node.label)")
                case .term(let term): return term
                }
            }
            for pattern in template {
                guard let s = resolve(pattern.subject), let p = resolve(pattern.predicate), let o = resolve(pattern.object),
                      !s.isLiteral, p.isIRI else { continue }
                let triple = Triple(s, p, o)
                if seen.insert(triple).inserted {
                    triples.append(triple)
                    if triples.count > limits.maxResults { throw .limitExceeded("more than \(limits.maxResults) triples") }
                }
            }
        }
        return triples
    }

    private func describe(_ targets: [PatternNode], _ solutions: Solutions, all: Bool) throws(QueryError) -> [Triple] {
        var resources: [Int] = []
        var seenResources = Set<Int>()
        func add(_ id: Int) { if id != 0 && seenResources.insert(id).inserted { resources.append(id) } }
        for target in targets {
            switch target {
            case .term(let term): if let id = dictionary.id(of: term) { add(id) }
            case .variable(let slot): for index in 0..<solutions.count { add(solutions.value(index, slot)) }
            }
        }
        if all {
            for index in 0..<solutions.count { for slot in 0..<width { add(solutions.value(index, slot)) } }
        }
        // Concise bounded description: outgoing triples, following blank-node objects.
        var triples: [Triple] = []
        var queue = resources.filter { $0 < localBase }
        var visited = Set(queue)
        while let subject = queue.popLast() {
            try tick()
            defaultGraph.match(subject, 0, 0) { s, p, o in
                triples.append(Triple(term(s), term(p), term(o)))
                if term(o).isBlank && visited.insert(o).inserted { queue.append(o) }
                return true
            }
            if triples.count > limits.maxResults { throw .limitExceeded("more than \(limits.maxResults) triples") }
        }
        return triples
    }
}
