import Foundation

/// Variable names ↔ row slots for one query (subqueries share the table: a subquery's
/// non-projected variables are cleared by its projection, so sharing slots is safe).
final class VariableTable {
    private(set) var names: [String] = []
    private var slots: [String: Int] = [:]
    private var hiddenCounter = 0

    func slot(_ name: String) -> Int {
        if let slot = slots[name] { return slot }
        let slot = names.count
        names.append(name)
        slots[name] = slot
        return slot
    }

    func existingSlot(_ name: String) -> Int? { slots[name] }

    /// A fresh variable that can never be named in a query.
    func hidden(_ purpose: String) -> Int {
        hiddenCounter += 1
        return slot(".\(purpose)\(hiddenCounter)")
    }

    static func isHidden(_ name: String) -> Bool { name.hasPrefix(".") }
}

/// A parsed query, ready to evaluate.
struct ParsedQuery: Sendable {
    var query: Query
    var variableNames: [String]
    var baseIRI: String?
}

enum SPARQLParserLimits {
    static var maxComplexity: Int { SPARQLParser.maxComplexity }
}

/// Recursive-descent parser for SPARQL 1.1 Query, producing the algebra directly
/// (translation as in SPARQL 1.1 §18.2).
struct SPARQLParser {
    private var tokens: [Token]
    private var position = 0
    private var prefixes: [String: String] = [:]
    private var baseIRI: String?
    private let variables = VariableTable()
    /// Aggregates of the (sub)query being parsed; nil where aggregates are not allowed.
    private var aggregates: [AggregateSpec]? = nil
    private var inTemplate = false
    private var blankNodeVariables: [String: Int] = [:]
    private var depth = 0
    private static let maxDepth = 200
    /// Operators and group elements parsed so far. Evaluation recurses once per operator along
    /// left-deep chains (`A OPTIONAL B OPTIONAL C ...`, `a || b || c ...`), so their number bounds
    /// the stack depth a query can make the engine use.
    private var complexity = 0
    static let maxComplexity = 1000
    /// Where each SELECT item was written, for scope errors found after the WHERE clause.
    private var projectionTokens: [Int: Token] = [:]

    static func parse(_ text: String, baseIRI: String? = nil) throws(QueryError) -> ParsedQuery {
        var parser = SPARQLParser(tokens: try Lexer.tokenize(text), baseIRI: baseIRI)
        let query = try parser.parseQueryUnit()
        return ParsedQuery(query: query, variableNames: parser.variables.names, baseIRI: parser.baseIRI)
    }

    private init(tokens: [Token], baseIRI: String?) {
        self.tokens = tokens
        self.baseIRI = baseIRI
    }

    // MARK: Token helpers

    private var current: Token { tokens[position] }

    private func error(_ message: String, at token: Token? = nil) -> QueryError {
        let token = token ?? current
        return .syntax(message: message, line: token.position.line, column: token.position.column)
    }

    private func isWord(_ word: String, offset: Int = 0) -> Bool {
        guard position + offset < tokens.count, case .word(let w) = tokens[position + offset].kind else { return false }
        return w.caseInsensitiveCompare(word) == .orderedSame
    }

    private func isPunct(_ p: String, offset: Int = 0) -> Bool {
        guard position + offset < tokens.count else { return false }
        return tokens[position + offset].kind == .punctuation(p)
    }

    private mutating func spend(_ token: Token? = nil) throws(QueryError) {
        complexity += 1
        if complexity > Self.maxComplexity {
            let at = token ?? current
            throw .limitExceeded("query too complex: more than \(Self.maxComplexity) operators and pattern elements (at line \(at.position.line), column \(at.position.column))")
        }
    }

    private mutating func acceptWord(_ word: String) -> Bool {
        if isWord(word) { position += 1; return true }
        return false
    }

    private mutating func acceptPunct(_ p: String) -> Bool {
        if isPunct(p) { position += 1; return true }
        return false
    }

    private mutating func expectWord(_ word: String) throws(QueryError) {
        guard acceptWord(word) else { throw error("expected \(word) but found \(current.describe)") }
    }

    private mutating func expectPunct(_ p: String) throws(QueryError) {
        guard acceptPunct(p) else { throw error("expected '\(p)' but found \(current.describe)") }
    }

    // MARK: IRIs

    private func resolve(_ iri: String) -> String {
        guard let baseIRI else { return iri }
        if let colon = iri.firstIndex(of: ":"), !iri[..<colon].contains(where: { "/?#".contains($0) }) { return iri }
        return resolveIRI(iri, against: baseIRI)
    }

    private mutating func parseIRI() throws(QueryError) -> String {
        let token = current
        switch token.kind {
        case .iri(let value):
            position += 1
            return resolve(value)
        case .prefixedName(let prefix, let local):
            position += 1
            guard let namespace = prefixes[prefix] else { throw error("undefined prefix '\(prefix):'", at: token) }
            return namespace + unescapePercentFree(local)
        default:
            throw error("expected an IRI but found \(token.describe)")
        }
    }

    private func unescapePercentFree(_ local: String) -> String { local }

    private var atIRI: Bool {
        switch current.kind {
        case .iri, .prefixedName: return true
        default: return false
        }
    }

    // MARK: Query structure

    private mutating func parseQueryUnit() throws(QueryError) -> Query {
        try parsePrologue()
        var query: Query
        if isWord("SELECT") {
            query = try parseSelectQuery()
        } else if isWord("CONSTRUCT") {
            query = try parseConstructQuery()
        } else if isWord("ASK") {
            query = try parseAskQuery()
        } else if isWord("DESCRIBE") {
            query = try parseDescribeQuery()
        } else if isWord("INSERT") || isWord("DELETE") || isWord("LOAD") || isWord("CLEAR") || isWord("DROP") || isWord("CREATE") || isWord("WITH") {
            throw error("SPARQL Update is not accepted here (read-only catalog)")
        } else {
            throw error("expected SELECT, CONSTRUCT, ASK or DESCRIBE but found \(current.describe)")
        }
        if isWord("VALUES") {
            position += 1
            query.trailingValues = try parseDataBlock()
        }
        guard current.kind == .endOfInput else { throw error("unexpected \(current.describe) after the end of the query") }
        return query
    }

    private mutating func parsePrologue() throws(QueryError) {
        while true {
            if acceptWord("BASE") {
                guard case .iri(let value) = current.kind else { throw error("BASE needs an IRI") }
                position += 1
                baseIRI = resolve(value)
            } else if acceptWord("PREFIX") {
                guard case .prefixedName(let prefix, let local) = current.kind, local.isEmpty else {
                    throw error("PREFIX needs a name ending in ':'")
                }
                position += 1
                guard case .iri(let value) = current.kind else { throw error("PREFIX needs an IRI") }
                position += 1
                prefixes[prefix] = resolve(value)
            } else {
                return
            }
        }
    }

    private mutating func parseDatasetClauses(into query: inout Query) throws(QueryError) {
        while acceptWord("FROM") {
            if acceptWord("NAMED") {
                query.fromNamed.append(.iri(try parseIRI()))
            } else {
                query.from.append(.iri(try parseIRI()))
            }
        }
    }

    private mutating func parseSelectQuery() throws(QueryError) -> Query {
        var query = try parseSelectClause()
        try parseDatasetClauses(into: &query)
        _ = acceptWord("WHERE")
        query.pattern = try parseGroupGraphPattern()
        try parseSolutionModifiers(into: &query)
        try validateSelect(query)
        return query
    }

    /// SELECT clause; leaves `aggregates` collecting for the rest of this (sub)query.
    private mutating func parseSelectClause() throws(QueryError) -> Query {
        try expectWord("SELECT")
        var query = Query()
        if acceptWord("DISTINCT") { query.distinct = true } else if acceptWord("REDUCED") { query.reduced = true }
        aggregates = []
        if acceptPunct("*") {
            query.selectAll = true
        } else {
            var projected = Set<Int>()
            while true {
                let token = current
                if case .variable(let name) = token.kind {
                    position += 1
                    let slot = variables.slot(name)
                    guard projected.insert(slot).inserted else { throw error("?\(name) is projected twice", at: token) }
                    projectionTokens[slot] = token
                    query.projection.append((slot, nil))
                } else if acceptPunct("(") {
                    let expression = try parseExpression()
                    try expectWord("AS")
                    let varToken = current
                    guard case .variable(let name) = varToken.kind else { throw error("expected a variable after AS") }
                    position += 1
                    try expectPunct(")")
                    let slot = variables.slot(name)
                    guard projected.insert(slot).inserted else { throw error("?\(name) is projected twice", at: varToken) }
                    projectionTokens[slot] = varToken
                    query.projection.append((slot, expression))
                } else {
                    break
                }
            }
            if query.projection.isEmpty { throw error("expected variables or '*' after SELECT") }
        }
        return query
    }

    private mutating func parseSolutionModifiers(into query: inout Query) throws(QueryError) {
        if acceptWord("GROUP") {
            try expectWord("BY")
            let saved = aggregates
            aggregates = nil
            var any = false
            while true {
                if case .variable(let name) = current.kind {
                    position += 1
                    let slot = variables.slot(name)
                    query.groupBy.append((.variable(slot), slot))
                } else if acceptPunct("(") {
                    let expression = try parseExpression()
                    var slot: Int? = nil
                    if acceptWord("AS") {
                        guard case .variable(let name) = current.kind else { throw error("expected a variable after AS") }
                        position += 1
                        slot = variables.slot(name)
                    }
                    try expectPunct(")")
                    query.groupBy.append((expression, slot))
                } else if let call = try parseBuiltInOrFunctionIfPresent() {
                    query.groupBy.append((call, nil))
                } else {
                    break
                }
                any = true
            }
            if !any { throw error("expected a group condition after GROUP BY") }
            aggregates = saved
        }
        if acceptWord("HAVING") {
            var any = false
            while let constraint = try parseConstraintIfPresent() {
                query.having.append(constraint)
                any = true
            }
            if !any { throw error("expected a constraint after HAVING") }
        }
        if acceptWord("ORDER") {
            try expectWord("BY")
            var any = false
            while true {
                if acceptWord("ASC") {
                    try expectPunct("(")
                    let e = try parseExpression()
                    try expectPunct(")")
                    query.orderBy.append(OrderCondition(expression: e, ascending: true))
                } else if acceptWord("DESC") {
                    try expectPunct("(")
                    let e = try parseExpression()
                    try expectPunct(")")
                    query.orderBy.append(OrderCondition(expression: e, ascending: false))
                } else if case .variable(let name) = current.kind {
                    position += 1
                    query.orderBy.append(OrderCondition(expression: .variable(variables.slot(name)), ascending: true))
                } else if let constraint = try parseConstraintIfPresent() {
                    query.orderBy.append(OrderCondition(expression: constraint, ascending: true))
                } else {
                    break
                }
                any = true
            }
            if !any { throw error("expected an order condition after ORDER BY") }
        }
        for _ in 0..<2 {
            if acceptWord("LIMIT") {
                guard case .integer(let text) = current.kind, let value = Int(text) else { throw error("LIMIT needs an integer") }
                position += 1
                query.limit = value
            } else if acceptWord("OFFSET") {
                guard case .integer(let text) = current.kind, let value = Int(text) else { throw error("OFFSET needs an integer") }
                position += 1
                query.offset = value
            }
        }
        query.aggregates = aggregates ?? []
        aggregates = nil
        query.isGrouped = !query.groupBy.isEmpty || !query.aggregates.isEmpty
    }

    /// Scope rules that make a SELECT invalid (SPARQL 1.1 §18.2.1 and §11.4).
    private func validateSelect(_ query: Query) throws(QueryError) {
        let inScope = Set(query.pattern.inScopeVariables)
        var defined = inScope
        for (slot, expression) in query.projection where expression != nil {
            if defined.contains(slot) {
                throw error("?\(variables.names[slot]) is already bound and cannot be assigned with AS", at: projectionTokens[slot] ?? tokens[0])
            }
            defined.insert(slot)
        }
        if query.selectAll && query.isGrouped {
            throw error("SELECT * is not allowed with GROUP BY or aggregates", at: tokens[0])
        }
        if query.isGrouped {
            var groupVariables = Set<Int>()
            for (expression, slot) in query.groupBy {
                if let slot { groupVariables.insert(slot) } else if case .variable(let v) = expression { groupVariables.insert(v) }
            }
            let aggregateSlots = Set(query.aggregates.map(\.slot))
            var allowed = groupVariables.union(aggregateSlots)
            for (slot, expression) in query.projection {
                if let expression {
                    let free = expression.variables.subtracting(allowed)
                    if let bad = free.first {
                        throw error("?\(variables.names[bad]) is neither grouped nor aggregated", at: projectionTokens[slot] ?? tokens[0])
                    }
                    allowed.insert(slot)
                } else if !allowed.contains(slot) {
                    throw error("?\(variables.names[slot]) is neither grouped nor aggregated", at: projectionTokens[slot] ?? tokens[0])
                }
            }
        }
    }

    private mutating func parseConstructQuery() throws(QueryError) -> Query {
        try expectWord("CONSTRUCT")
        var query = Query()
        aggregates = nil
        if isPunct("{") {
            position += 1
            inTemplate = true
            let template = try parseTriplesTemplate(until: "}")
            inTemplate = false
            try expectPunct("}")
            query.form = .construct(template)
            try parseDatasetClauses(into: &query)
            _ = acceptWord("WHERE")
            query.pattern = try parseGroupGraphPattern()
        } else {
            try parseDatasetClauses(into: &query)
            try expectWord("WHERE")
            try expectPunct("{")
            let template = try parseTriplesTemplate(until: "}")
            try expectPunct("}")
            query.form = .construct(template)
            query.pattern = .bgp(template)
        }
        aggregates = []
        try parseSolutionModifiers(into: &query)
        return query
    }

    private mutating func parseAskQuery() throws(QueryError) -> Query {
        try expectWord("ASK")
        var query = Query()
        query.form = .ask
        try parseDatasetClauses(into: &query)
        _ = acceptWord("WHERE")
        query.pattern = try parseGroupGraphPattern()
        aggregates = []
        try parseSolutionModifiers(into: &query)
        return query
    }

    private mutating func parseDescribeQuery() throws(QueryError) -> Query {
        try expectWord("DESCRIBE")
        var query = Query()
        var targets: [PatternNode] = []
        if acceptPunct("*") {
            query.selectAll = true
        } else {
            while true {
                if case .variable(let name) = current.kind {
                    position += 1
                    targets.append(.variable(variables.slot(name)))
                } else if atIRI {
                    targets.append(.term(.iri(try parseIRI())))
                } else {
                    break
                }
            }
            if targets.isEmpty { throw error("expected variables, IRIs or '*' after DESCRIBE") }
        }
        query.form = .describe(targets)
        try parseDatasetClauses(into: &query)
        if acceptWord("WHERE") || isPunct("{") {
            query.pattern = try parseGroupGraphPattern()
        }
        aggregates = []
        try parseSolutionModifiers(into: &query)
        return query
    }

    // MARK: Graph patterns

    private mutating func parseGroupGraphPattern() throws(QueryError) -> GraphPattern {
        let open = current
        try expectPunct("{")
        depth += 1
        defer { depth -= 1 }
        if depth > Self.maxDepth { throw error("patterns nested too deeply", at: open) }
        if isWord("SELECT") {
            let subquery = try parseSubSelect()
            try expectPunct("}")
            return .subquery(subquery)
        }
        var group: GraphPattern = .empty
        var filters: [Expression] = []
        let savedAggregates = aggregates
        aggregates = nil
        defer { aggregates = savedAggregates }
        while !isPunct("}") {
            let token = current
            try spend(token)
            if acceptWord("OPTIONAL") {
                let inner = try parseGroupGraphPattern()
                if case .filter(let conditions, let body) = inner {
                    group = .leftJoin(group, body, conditions.dropFirst().reduce(conditions[0]) { .and($0, $1) })
                } else {
                    group = .leftJoin(group, inner, nil)
                }
            } else if acceptWord("MINUS") {
                group = .minus(group, try parseGroupGraphPattern())
            } else if acceptWord("GRAPH") {
                let name = try parseVarOrIRI()
                group = join(group, .graph(name, try parseGroupGraphPattern()))
            } else if acceptWord("SERVICE") {
                let silent = acceptWord("SILENT")
                let name = try parseVarOrIRI()
                group = join(group, .service(name, try parseGroupGraphPattern(), silent: silent))
            } else if acceptWord("FILTER") {
                guard let constraint = try parseConstraintIfPresent() else { throw error("expected a constraint after FILTER") }
                filters.append(constraint)
            } else if acceptWord("BIND") {
                try expectPunct("(")
                let expression = try parseExpression()
                try expectWord("AS")
                let varToken = current
                guard case .variable(let name) = varToken.kind else { throw error("expected a variable after AS") }
                position += 1
                try expectPunct(")")
                let slot = variables.slot(name)
                if group.inScopeVariables.contains(slot) {
                    throw error("BIND assigns ?\(name), which is already in scope", at: varToken)
                }
                group = .extend(group, slot, expression)
            } else if acceptWord("VALUES") {
                group = join(group, try parseDataBlock())
            } else if isPunct("{") {
                var alternative = try parseGroupGraphPattern()
                while acceptWord("UNION") {
                    try spend()
                    alternative = .union(alternative, try parseGroupGraphPattern())
                }
                group = join(group, alternative)
            } else if startsTriples {
                group = join(group, try parseTriplesBlock())
                continue
            } else {
                throw error("unexpected \(token.describe) in a group pattern", at: token)
            }
            _ = acceptPunct(".")
        }
        try expectPunct("}")
        return filters.isEmpty ? group : .filter(filters, group)
    }

    private mutating func parseSubSelect() throws(QueryError) -> Query {
        let savedBlanks = blankNodeVariables
        var query = try parseSelectClause()
        _ = acceptWord("WHERE")
        query.pattern = try parseGroupGraphPattern()
        try parseSolutionModifiers(into: &query)
        if isWord("VALUES") {
            position += 1
            query.trailingValues = try parseDataBlock()
        }
        try validateSelect(query)
        if query.selectAll {
            query.projection = query.pattern.inScopeVariables
                .filter { !VariableTable.isHidden(variables.names[$0]) }.map { ($0, nil) }
            query.selectAll = false
        }
        blankNodeVariables = savedBlanks
        return query
    }

    private func join(_ left: GraphPattern, _ right: GraphPattern) -> GraphPattern {
        if case .empty = left { return right }
        if case .empty = right { return left }
        if case .bgp(let a) = left, case .bgp(let b) = right { return .bgp(a + b) }
        if case .join(let x, .bgp(let a)) = left, case .bgp(let b) = right { return .join(x, .bgp(a + b)) }
        return .join(left, right)
    }

    private var startsTriples: Bool {
        switch current.kind {
        case .variable, .iri, .prefixedName, .blankNode, .string, .integer, .decimal, .double: return true
        case .word(let w): return w == "true" || w == "false"
        case .punctuation(let p): return p == "(" || p == "[" || p == "-" || p == "+"
        default: return false
        }
    }

    private mutating func parseVarOrIRI() throws(QueryError) -> PatternNode {
        if case .variable(let name) = current.kind {
            position += 1
            return .variable(variables.slot(name))
        }
        return .term(.iri(try parseIRI()))
    }

    /// VALUES data: `?x { ... }` or `(?x ?y) { (..) ... }`.
    private mutating func parseDataBlock() throws(QueryError) -> GraphPattern {
        var slots: [Int] = []
        var single = false
        if case .variable(let name) = current.kind {
            position += 1
            slots = [variables.slot(name)]
            single = true
        } else {
            try expectPunct("(")
            while case .variable(let name) = current.kind {
                position += 1
                slots.append(variables.slot(name))
            }
            try expectPunct(")")
        }
        try expectPunct("{")
        var rows: [[Term?]] = []
        while !isPunct("}") {
            if single {
                rows.append([try parseDataValue()])
            } else {
                let open = current
                try expectPunct("(")
                var row: [Term?] = []
                while !isPunct(")") { row.append(try parseDataValue()) }
                try expectPunct(")")
                guard row.count == slots.count else {
                    throw error("VALUES row has \(row.count) values for \(slots.count) variables", at: open)
                }
                rows.append(row)
            }
        }
        try expectPunct("}")
        return .values(variables: slots, rows: rows)
    }

    private mutating func parseDataValue() throws(QueryError) -> Term? {
        if acceptWord("UNDEF") { return nil }
        let token = current
        let node = try parseGraphTerm()
        if case .term(let term) = node, !term.isBlank { return term }
        throw error("VALUES accepts IRIs, literals and UNDEF only", at: token)
    }

    // MARK: Triples

    private struct PathTriple {
        var subject: PatternNode
        var predicate: PropertyPath?  // nil when the verb is a variable
        var variablePredicate: PatternNode?
        var object: PatternNode
    }

    private mutating func parseTriplesBlock() throws(QueryError) -> GraphPattern {
        var triples: [PathTriple] = []
        while startsTriples {
            try parseTriplesSameSubject(into: &triples, allowPaths: true)
            if !acceptPunct(".") { break }
        }
        return translate(triples)
    }

    private mutating func parseTriplesTemplate(until closing: String) throws(QueryError) -> [TriplePattern] {
        var triples: [PathTriple] = []
        while startsTriples {
            try parseTriplesSameSubject(into: &triples, allowPaths: false)
            if !acceptPunct(".") { break }
        }
        guard isPunct(closing) else { throw error("unexpected \(current.describe) in a triple template") }
        return triples.map { triple in
            let predicate: PatternNode
            if let variable = triple.variablePredicate { predicate = variable } else if case .link(let term)? = triple.predicate { predicate = .term(term) } else { predicate = .term(.iri("urn:invalid")) }
            return TriplePattern(subject: triple.subject, predicate: predicate, object: triple.object)
        }
    }

    /// Turns parsed triples into BGPs (simple links, inverse links, sequences) and path patterns.
    private func translate(_ triples: [PathTriple]) -> GraphPattern {
        var bgp: [TriplePattern] = []
        var paths: [GraphPattern] = []
        func add(_ s: PatternNode, _ path: PropertyPath, _ o: PatternNode) {
            switch path {
            case .link(let iri): bgp.append(TriplePattern(subject: s, predicate: .term(iri), object: o))
            case .inverse(.link(let iri)): bgp.append(TriplePattern(subject: o, predicate: .term(iri), object: s))
            case .sequence(let a, let b):
                let middle = PatternNode.variable(variables.hidden("path"))
                add(s, a, middle)
                add(middle, b, o)
            default: paths.append(.path(s, path, o))
            }
        }
        for triple in triples {
            if let variable = triple.variablePredicate {
                bgp.append(TriplePattern(subject: triple.subject, predicate: variable, object: triple.object))
            } else if let path = triple.predicate {
                add(triple.subject, path, triple.object)
            }
        }
        var result: GraphPattern = bgp.isEmpty ? .empty : .bgp(bgp)
        for path in paths { result = join(result, path) }
        return result
    }

    private mutating func parseTriplesSameSubject(into triples: inout [PathTriple], allowPaths: Bool) throws(QueryError) {
        if isPunct("[") && !isPunct("]", offset: 1) || isPunct("(") && !isPunct(")", offset: 1) {
            let subject = try parseTriplesNode(into: &triples, allowPaths: allowPaths)
            if startsVerb { try parsePropertyList(subject: subject, into: &triples, allowPaths: allowPaths) }
        } else {
            let subject = try parseGraphTerm()
            try parsePropertyList(subject: subject, into: &triples, allowPaths: allowPaths)
        }
    }

    private var startsVerb: Bool {
        switch current.kind {
        case .variable, .iri, .prefixedName: return true
        case .word(let w): return w == "a"
        case .punctuation(let p): return p == "^" || p == "!" || p == "("
        default: return false
        }
    }

    private mutating func parsePropertyList(subject: PatternNode, into triples: inout [PathTriple], allowPaths: Bool) throws(QueryError) {
        guard startsVerb else { throw error("expected a predicate but found \(current.describe)") }
        while true {
            var variablePredicate: PatternNode? = nil
            var path: PropertyPath? = nil
            if case .variable(let name) = current.kind {
                position += 1
                variablePredicate = .variable(variables.slot(name))
            } else {
                let token = current
                path = try parsePath()
                if !allowPaths, case .link = path! {} else if !allowPaths { throw error("property paths are not allowed in templates", at: token) }
            }
            repeat {
                let object = try parseObject(into: &triples, allowPaths: allowPaths)
                triples.append(PathTriple(subject: subject, predicate: path, variablePredicate: variablePredicate, object: object))
            } while acceptPunct(",")
            guard acceptPunct(";") else { return }
            while acceptPunct(";") {}
            if !startsVerb { return }
        }
    }

    private mutating func parseObject(into triples: inout [PathTriple], allowPaths: Bool) throws(QueryError) -> PatternNode {
        if isPunct("[") && !isPunct("]", offset: 1) || isPunct("(") && !isPunct(")", offset: 1) {
            return try parseTriplesNode(into: &triples, allowPaths: allowPaths)
        }
        return try parseGraphTerm()
    }

    private mutating func freshBlankNode() -> PatternNode {
        if inTemplate { return .term(.blank("t\(variables.hidden("tb"))")) }
        return .variable(variables.hidden("b"))
    }

    /// `[ p o ]` or `( a b c )`.
    private mutating func parseTriplesNode(into triples: inout [PathTriple], allowPaths: Bool) throws(QueryError) -> PatternNode {
        depth += 1
        defer { depth -= 1 }
        if depth > Self.maxDepth { throw error("patterns nested too deeply") }
        if acceptPunct("[") {
            let node = freshBlankNode()
            try parsePropertyList(subject: node, into: &triples, allowPaths: allowPaths)
            try expectPunct("]")
            return node
        }
        try expectPunct("(")
        var items: [PatternNode] = []
        while !isPunct(")") {
            items.append(try parseObject(into: &triples, allowPaths: allowPaths))
        }
        try expectPunct(")")
        let head = freshBlankNode()
        var node = head
        for (index, item) in items.enumerated() {
            triples.append(PathTriple(subject: node, predicate: .link(.iri(Vocabulary.rdfFirst)), object: item))
            let next: PatternNode = index == items.count - 1 ? .term(.iri(Vocabulary.rdfNil)) : freshBlankNode()
            triples.append(PathTriple(subject: node, predicate: .link(.iri(Vocabulary.rdfRest)), object: next))
            node = next
        }
        return head
    }

    /// A variable, IRI, literal, blank node, `[]` or `()`.
    private mutating func parseGraphTerm() throws(QueryError) -> PatternNode {
        let token = current
        switch token.kind {
        case .variable(let name):
            position += 1
            return .variable(variables.slot(name))
        case .iri, .prefixedName:
            return .term(.iri(try parseIRI()))
        case .blankNode(let label):
            position += 1
            if inTemplate { return .term(.blank(label)) }
            if let slot = blankNodeVariables[label] { return .variable(slot) }
            let slot = variables.slot("._:\(label)")
            blankNodeVariables[label] = slot
            return .variable(slot)
        case .string, .integer, .decimal, .double:
            return .term(try parseLiteral())
        case .word(let w) where w == "true" || w == "false":
            position += 1
            return .term(.boolean(w == "true"))
        case .punctuation("-"), .punctuation("+"):
            return .term(try parseLiteral())
        case .punctuation("["):
            position += 1
            try expectPunct("]")
            return freshBlankNode()
        case .punctuation("("):
            position += 1
            try expectPunct(")")
            return .term(.iri(Vocabulary.rdfNil))
        default:
            throw error("expected an RDF term or variable but found \(token.describe)")
        }
    }

    private mutating func parseLiteral() throws(QueryError) -> Term {
        var sign = ""
        if acceptPunct("-") { sign = "-" } else if acceptPunct("+") { sign = "+" }
        let token = current
        switch token.kind {
        case .integer(let text): position += 1; return .typed(sign + text, Vocabulary.xsdInteger)
        case .decimal(let text): position += 1; return .typed(sign + text, Vocabulary.xsdDecimal)
        case .double(let text): position += 1; return .typed(sign + text, Vocabulary.xsdDouble)
        case .string(let value) where sign.isEmpty:
            position += 1
            if case .languageTag(let tag) = current.kind {
                position += 1
                return .literal(Literal(value, language: tag))
            }
            if acceptPunct("^^") { return .typed(value, try parseIRI()) }
            return .string(value)
        default:
            throw error("expected a literal but found \(token.describe)")
        }
    }

    // MARK: Property paths

    private mutating func parsePath() throws(QueryError) -> PropertyPath {
        var path = try parsePathSequence()
        while acceptPunct("|") { try spend(); path = .alternative(path, try parsePathSequence()) }
        return path
    }

    private mutating func parsePathSequence() throws(QueryError) -> PropertyPath {
        var path = try parsePathEltOrInverse()
        while acceptPunct("/") { try spend(); path = .sequence(path, try parsePathEltOrInverse()) }
        return path
    }

    private mutating func parsePathEltOrInverse() throws(QueryError) -> PropertyPath {
        if acceptPunct("^") { return .inverse(try parsePathElt()) }
        return try parsePathElt()
    }

    private mutating func parsePathElt() throws(QueryError) -> PropertyPath {
        let primary = try parsePathPrimary()
        if acceptPunct("*") { return .zeroOrMore(primary) }
        if acceptPunct("+") { return .oneOrMore(primary) }
        if isPunct("?") { position += 1; return .zeroOrOne(primary) }
        return primary
    }

    private mutating func parsePathPrimary() throws(QueryError) -> PropertyPath {
        if current.kind == .word("a") {
            position += 1
            return .link(.iri(Vocabulary.rdfType))
        }
        if acceptPunct("(") {
            depth += 1
            defer { depth -= 1 }
            if depth > Self.maxDepth { throw error("path nested too deeply") }
            let path = try parsePath()
            try expectPunct(")")
            return path
        }
        if acceptPunct("!") {
            var forward: [Term] = []
            var inverse: [Term] = []
            func one(_ parser: inout SPARQLParser) throws(QueryError) {
                let inverted = parser.acceptPunct("^")
                let iri: Term
                if parser.isWord("a") { parser.position += 1; iri = .iri(Vocabulary.rdfType) } else { iri = .iri(try parser.parseIRI()) }
                if inverted { inverse.append(iri) } else { forward.append(iri) }
            }
            if acceptPunct("(") {
                if !isPunct(")") {
                    try one(&self)
                    while acceptPunct("|") { try one(&self) }
                }
                try expectPunct(")")
            } else {
                try one(&self)
            }
            return .negated(forward: forward, inverse: inverse)
        }
        return .link(.iri(try parseIRI()))
    }

    // MARK: Expressions

    private mutating func parseConstraintIfPresent() throws(QueryError) -> Expression? {
        if isPunct("(") {
            position += 1
            let e = try parseExpression()
            try expectPunct(")")
            return e
        }
        return try parseBuiltInOrFunctionIfPresent()
    }

    private mutating func parseBuiltInOrFunctionIfPresent() throws(QueryError) -> Expression? {
        if case .word(let w) = current.kind, w != "a", w != "true", w != "false",
           Self.builtIns.contains(w.uppercased()) || Self.aggregateNames.contains(w.uppercased()) || w.uppercased() == "NOT" || w.uppercased() == "EXISTS" {
            return try parsePrimary()
        }
        if atIRI, isPunct("(", offset: 1) { return try parsePrimary() }
        return nil
    }

    mutating func parseExpression() throws(QueryError) -> Expression {
        depth += 1
        defer { depth -= 1 }
        if depth > Self.maxDepth { throw error("expression nested too deeply") }
        var e = try parseAnd()
        while acceptPunct("||") { try spend(); e = .or(e, try parseAnd()) }
        return e
    }

    private mutating func parseAnd() throws(QueryError) -> Expression {
        var e = try parseRelational()
        while acceptPunct("&&") { try spend(); e = .and(e, try parseRelational()) }
        return e
    }

    private mutating func parseRelational() throws(QueryError) -> Expression {
        let left = try parseAdditive()
        for op in ["=", "!=", "<", ">", "<=", ">="] where isPunct(op) {
            position += 1
            return .compare(ComparisonOperator(rawValue: op)!, left, try parseAdditive())
        }
        if isWord("IN") || (isWord("NOT") && isWord("IN", offset: 1)) {
            let negated = acceptWord("NOT")
            try expectWord("IN")
            return .inList(left, try parseExpressionList(), negated: negated)
        }
        return left
    }

    private mutating func parseExpressionList() throws(QueryError) -> [Expression] {
        try expectPunct("(")
        var list: [Expression] = []
        if acceptPunct(")") { return list }
        list.append(try parseExpression())
        while acceptPunct(",") { list.append(try parseExpression()) }
        try expectPunct(")")
        return list
    }

    private mutating func parseAdditive() throws(QueryError) -> Expression {
        var e = try parseMultiplicative()
        while true {
            if isPunct("+") || isPunct("-") { try spend() }
            if acceptPunct("+") { e = .arithmetic(.add, e, try parseMultiplicative()) } else if acceptPunct("-") { e = .arithmetic(.subtract, e, try parseMultiplicative()) } else { return e }
        }
    }

    private mutating func parseMultiplicative() throws(QueryError) -> Expression {
        var e = try parseUnary()
        while true {
            if isPunct("*") || isPunct("/") { try spend() }
            if acceptPunct("*") { e = .arithmetic(.multiply, e, try parseUnary()) } else if acceptPunct("/") { e = .arithmetic(.divide, e, try parseUnary()) } else { return e }
        }
    }

    private mutating func parseUnary() throws(QueryError) -> Expression {
        if isPunct("!") || isPunct("+") || isPunct("-") { try spend() }
        if acceptPunct("!") { return .not(try parseUnary()) }
        if acceptPunct("+") { return .unaryPlus(try parseUnary()) }
        if acceptPunct("-") {
            let operand = try parseUnary()
            if case .constant(.literal(let literal)) = operand, !literal.lexical.hasPrefix("-"),
               [Vocabulary.xsdInteger, Vocabulary.xsdDecimal, Vocabulary.xsdDouble].contains(literal.datatype) {
                return .constant(.typed("-" + literal.lexical, literal.datatype))
            }
            return .negate(operand)
        }
        return try parsePrimary()
    }

    static let builtIns: Set<String> = [
        "STR", "LANG", "LANGMATCHES", "DATATYPE", "BOUND", "IRI", "URI", "BNODE", "RAND", "ABS", "CEIL", "FLOOR",
        "ROUND", "CONCAT", "SUBSTR", "STRLEN", "REPLACE", "UCASE", "LCASE", "ENCODE_FOR_URI", "CONTAINS", "STRSTARTS",
        "STRENDS", "STRBEFORE", "STRAFTER", "YEAR", "MONTH", "DAY", "HOURS", "MINUTES", "SECONDS", "TIMEZONE", "TZ",
        "NOW", "UUID", "STRUUID", "MD5", "SHA1", "SHA256", "SHA384", "SHA512", "COALESCE", "IF", "STRLANG", "STRDT",
        "SAMETERM", "ISIRI", "ISURI", "ISBLANK", "ISLITERAL", "ISNUMERIC", "REGEX",
    ]
    static let aggregateNames: Set<String> = ["COUNT", "SUM", "MIN", "MAX", "AVG", "SAMPLE", "GROUP_CONCAT"]

    private mutating func parsePrimary() throws(QueryError) -> Expression {
        let token = current
        switch token.kind {
        case .punctuation("("):
            position += 1
            let e = try parseExpression()
            try expectPunct(")")
            return e
        case .variable(let name):
            position += 1
            return .variable(variables.slot(name))
        case .string, .integer, .decimal, .double:
            return .constant(try parseLiteral())
        case .iri, .prefixedName:
            let iri = try parseIRI()
            if isPunct("(") {
                // Extension function or cast; DISTINCT is allowed by the grammar for aggregates only.
                try expectPunct("(")
                var args: [Expression] = []
                if !acceptPunct(")") {
                    if acceptWord("DISTINCT") { throw error("DISTINCT is only allowed in aggregates", at: token) }
                    args.append(try parseExpression())
                    while acceptPunct(",") { args.append(try parseExpression()) }
                    try expectPunct(")")
                }
                return .call(iri, args)
            }
            return .constant(.iri(iri))
        case .word(let word):
            let upper = word.uppercased()
            if word == "true" || word == "false" { position += 1; return .constant(.boolean(word == "true")) }
            position += 1
            if upper == "NOT" {
                try expectWord("EXISTS")
                return .exists(try parseExistsPattern(), negated: true)
            }
            if upper == "EXISTS" { return .exists(try parseExistsPattern(), negated: false) }
            if Self.aggregateNames.contains(upper) { return try parseAggregate(upper, at: token) }
            guard Self.builtIns.contains(upper) else { throw error("unknown function or keyword '\(word)'", at: token) }
            if upper == "BOUND" {
                try expectPunct("(")
                guard case .variable(let name) = current.kind else { throw error("BOUND needs a variable") }
                position += 1
                try expectPunct(")")
                return .bound(variables.slot(name))
            }
            if (upper == "BNODE" || upper == "RAND" || upper == "NOW" || upper == "UUID" || upper == "STRUUID"), isPunct("("), isPunct(")", offset: 1) {
                position += 2
                return .call(upper, [])
            }
            let args = try parseExpressionList()
            let name = upper == "URI" ? "IRI" : (upper == "ISURI" ? "ISIRI" : upper)
            try checkArity(name, args.count, at: token)
            return .call(name, args)
        default:
            throw error("expected an expression but found \(token.describe)")
        }
    }

    private func checkArity(_ name: String, _ count: Int, at token: Token) throws(QueryError) {
        let arity: ClosedRange<Int>
        switch name {
        case "CONCAT", "COALESCE": return
        case "RAND", "NOW", "UUID", "STRUUID": arity = 0...0
        case "BNODE": arity = 0...1
        case "SUBSTR", "REGEX": arity = 2...3
        case "REPLACE": arity = 3...4
        case "IF": arity = 3...3
        case "LANGMATCHES", "CONTAINS", "STRSTARTS", "STRENDS", "STRBEFORE", "STRAFTER", "STRLANG", "STRDT", "SAMETERM": arity = 2...2
        default: arity = 1...1
        }
        guard arity.contains(count) else { throw error("\(name) takes \(arity.lowerBound == arity.upperBound ? "\(arity.lowerBound)" : "\(arity.lowerBound)–\(arity.upperBound)") arguments, not \(count)", at: token) }
    }

    private mutating func parseExistsPattern() throws(QueryError) -> GraphPattern {
        let saved = aggregates
        defer { aggregates = saved }
        return try parseGroupGraphPattern()
    }

    private mutating func parseAggregate(_ name: String, at token: Token) throws(QueryError) -> Expression {
        guard aggregates != nil else { throw error("aggregate \(name) is not allowed here", at: token) }
        try expectPunct("(")
        let distinct = acceptWord("DISTINCT")
        var argument: Expression? = nil
        var separator = " "
        let saved = aggregates
        aggregates = nil  // aggregates may not nest
        if name == "COUNT", acceptPunct("*") {
            argument = nil
        } else {
            argument = try parseExpression()
        }
        aggregates = saved
        if name == "GROUP_CONCAT", acceptPunct(";") {
            try expectWord("SEPARATOR")
            try expectPunct("=")
            guard case .string(let value) = current.kind else { throw error("SEPARATOR needs a string") }
            position += 1
            separator = value
        }
        try expectPunct(")")
        let slot = variables.hidden("agg")
        aggregates!.append(AggregateSpec(function: AggregateSpec.Function(rawValue: name)!, distinct: distinct,
                                         argument: argument, separator: separator, slot: slot))
        return .variable(slot)
    }
}

/// RFC 3986 §5.2 reference resolution (enough for SPARQL and Turtle bases).
func resolveIRI(_ reference: String, against base: String) -> String {
    func split(_ iri: String) -> (scheme: String?, authority: String?, path: String, query: String?, fragment: String?) {
        var rest = Substring(iri)
        var fragment: String? = nil
        if let hash = rest.firstIndex(of: "#") { fragment = String(rest[rest.index(after: hash)...]); rest = rest[..<hash] }
        var query: String? = nil
        if let mark = rest.firstIndex(of: "?") { query = String(rest[rest.index(after: mark)...]); rest = rest[..<mark] }
        var scheme: String? = nil
        if let colon = rest.firstIndex(of: ":"), !rest[..<colon].contains("/"), rest.first?.isLetter == true {
            scheme = String(rest[..<colon])
            rest = rest[rest.index(after: colon)...]
        }
        var authority: String? = nil
        if rest.hasPrefix("//") {
            rest = rest.dropFirst(2)
            let end = rest.firstIndex(of: "/") ?? rest.endIndex
            authority = String(rest[..<end])
            rest = rest[end...]
        }
        return (scheme, authority, String(rest), query, fragment)
    }
    func removeDots(_ path: String) -> String {
        var input = path
        var output: [String] = []
        let absolute = input.hasPrefix("/")
        if absolute { input.removeFirst() }
        let segments = input.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        for (index, segment) in segments.enumerated() {
            let last = index == segments.count - 1
            if segment == "." {
                if last { output.append("") }
            } else if segment == ".." {
                if !output.isEmpty { output.removeLast() }
                if last { output.append("") }
            } else {
                output.append(segment)
            }
        }
        return (absolute ? "/" : "") + output.joined(separator: "/")
    }
    let r = split(reference)
    let b = split(base)
    var target: (scheme: String?, authority: String?, path: String, query: String?)
    if r.scheme != nil {
        target = (r.scheme, r.authority, removeDots(r.path), r.query)
    } else if r.authority != nil {
        target = (b.scheme, r.authority, removeDots(r.path), r.query)
    } else if r.path.isEmpty {
        target = (b.scheme, b.authority, b.path, r.query ?? b.query)
    } else if r.path.hasPrefix("/") {
        target = (b.scheme, b.authority, removeDots(r.path), r.query)
    } else {
        var merged: String
        if b.authority != nil && b.path.isEmpty {
            merged = "/" + r.path
        } else if let slash = b.path.lastIndex(of: "/") {
            merged = String(b.path[...slash]) + r.path
        } else {
            merged = r.path
        }
        merged = removeDots(merged)
        target = (b.scheme, b.authority, merged, r.query)
    }
    var result = ""
    if let scheme = target.scheme { result += scheme + ":" }
    if let authority = target.authority { result += "//" + authority }
    result += target.path
    if let query = target.query { result += "?" + query }
    if let fragment = r.fragment { result += "#" + fragment }
    return result
}
