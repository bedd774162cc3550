import Foundation

// Expression evaluation and the SPARQL 1.1 function library (§17). An expression error is `nil`:
// FILTER treats it as false, BIND leaves the variable unbound, as the specification requires.

extension Evaluator {
    /// Whether a FILTER keeps the row (an error counts as false). Numeric comparisons and their
    /// conjunctions/disjunctions are decided without building result terms: they are the
    /// typical catalog filters and run once per candidate row.
    func effectiveBooleanValue(_ expression: Expression, _ row: RowRef) -> Bool {
        switch expression {
        case .and(let a, let b):
            // error && x is false or an error: the row is dropped either way.
            return effectiveBooleanValue(a, row) && effectiveBooleanValue(b, row)
        case .or(let a, let b):
            // error || true is true; error || false is an error: dropped.
            return effectiveBooleanValue(a, row) || effectiveBooleanValue(b, row)
        case .compare(let op, let a, let b) where a.isLeaf && b.isLeaf:
            if let x = numericOperand(a, row), let y = numericOperand(b, row) {
                guard let order = Numeric.compare(x, y) else { return op == .notEqual }
                switch op {
                case .equal: return order == 0
                case .notEqual: return order != 0
                case .less: return order < 0
                case .greater: return order > 0
                case .lessOrEqual: return order <= 0
                case .greaterOrEqual: return order >= 0
                }
            }
        default:
            break
        }
        guard let value = evaluate(expression, row) else { return false }
        return Self.booleanValue(value) ?? false
    }

    /// SPARQL effective boolean value; nil is a type error.
    static func booleanValue(_ term: Term) -> Bool? {
        guard case .literal(let literal) = term else { return nil }
        if literal.datatype == Vocabulary.xsdBoolean {
            switch literal.lexical {
            case "true", "1": return true
            case "false", "0": return false
            default: return false
            }
        }
        if literal.datatype == Vocabulary.xsdString && literal.language == nil { return !literal.lexical.isEmpty }
        if let numeric = Numeric(literal) {
            let value = numeric.asDouble
            return !(value == 0 || value.isNaN)
        }
        if Numeric.integerTypes.contains(literal.datatype) || literal.datatype == Vocabulary.xsdDecimal
            || literal.datatype == Vocabulary.xsdDouble || literal.datatype == Vocabulary.xsdFloat {
            return false  // ill-formed numeric
        }
        return nil
    }

    func evaluate(_ expression: Expression, _ row: RowRef) -> Term? {
        switch expression {
        case .variable(let slot):
            let value = row[slot]
            return value == 0 ? nil : term(value)
        case .constant(let term):
            return term
        case .bound(let slot):
            return .boolean(row[slot] != 0)
        case .or(let a, let b):
            let left = evaluate(a, row).flatMap(Self.booleanValue)
            if left == true { return .boolean(true) }
            let right = evaluate(b, row).flatMap(Self.booleanValue)
            if right == true { return .boolean(true) }
            if left == false && right == false { return .boolean(false) }
            return nil
        case .and(let a, let b):
            let left = evaluate(a, row).flatMap(Self.booleanValue)
            if left == false { return .boolean(false) }
            let right = evaluate(b, row).flatMap(Self.booleanValue)
            if right == false { return .boolean(false) }
            if left == true && right == true { return .boolean(true) }
            return nil
        case .not(let a):
            guard let value = evaluate(a, row).flatMap(Self.booleanValue) else { return nil }
            return .boolean(!value)
        case .compare(let op, let a, let b):
            // Fast path: both sides numeric (the common catalog filter), using cached values.
            if a.isLeaf, b.isLeaf, let x = numericOperand(a, row), let y = numericOperand(b, row) {
                guard let order = Numeric.compare(x, y) else { return op == .notEqual ? .boolean(true) : (op == .equal ? .boolean(false) : nil) }
                switch op {
                case .equal: return .boolean(order == 0)
                case .notEqual: return .boolean(order != 0)
                case .less: return .boolean(order < 0)
                case .greater: return .boolean(order > 0)
                case .lessOrEqual: return .boolean(order <= 0)
                case .greaterOrEqual: return .boolean(order >= 0)
                }
            }
            guard let x = evaluate(a, row), let y = evaluate(b, row) else { return nil }
            return compare(op, x, y).map(Term.boolean)
        case .arithmetic(let op, let a, let b):
            guard let x = numericOperand(a, row), let y = numericOperand(b, row) else { return nil }
            return Numeric.arithmetic(op, x, y)?.term
        case .negate(let a):
            guard let x = evaluate(a, row)?.literal.flatMap(Numeric.init) else { return nil }
            return Numeric.arithmetic(.subtract, .integer(0), x).map { result in
                if case .decimal = x, case .decimal = result { return result.term }
                return result.term
            }
        case .unaryPlus(let a):
            guard let x = evaluate(a, row)?.literal.flatMap(Numeric.init) else { return nil }
            return x.term
        case .inList(let a, let list, let negated):
            guard let x = evaluate(a, row) else { return nil }
            var sawError = false
            for item in list {
                guard let y = evaluate(item, row) else { sawError = true; continue }
                if let equal = compare(.equal, x, y) {
                    if equal { return .boolean(!negated) }
                } else {
                    sawError = true
                }
            }
            return sawError ? nil : .boolean(negated)
        case .exists(let pattern, let negated):
            return .boolean(exists(pattern, row) != negated)
        case .call(let name, let args):
            return call(name, args, row)
        }
    }

    /// The numeric value of an operand, if it is a number; uses the per-id cache for variables.
    @inline(__always) func numericOperand(_ expression: Expression, _ row: RowRef) -> Numeric? {
        switch expression {
        case .variable(let slot):
            let value = row[slot]
            return value == 0 ? nil : numeric(id: value)
        case .constant(.literal(let literal)):
            return Numeric(literal)
        default:
            return evaluate(expression, row)?.literal.flatMap(Numeric.init)
        }
    }

    /// RDFterm-equal and the ordering operators; nil is a type error.
    func compare(_ op: ComparisonOperator, _ x: Term, _ y: Term) -> Bool? {
        guard let order = compareValues(x, y, forEquality: op == .equal || op == .notEqual) else { return nil }
        switch op {
        case .equal: return order == 0
        case .notEqual: return order != 0
        case .less: return order == -1
        case .greater: return order == 1
        case .lessOrEqual: return order == -1 || order == 0
        case .greaterOrEqual: return order == 1 || order == 0
        }
    }

    /// -1/0/1, 2 for "different but unordered" (equality only), nil for a type error.
    private func compareValues(_ x: Term, _ y: Term, forEquality: Bool) -> Int? {
        if case .literal(let a) = x, case .literal(let b) = y {
            if let m = Numeric(a), let n = Numeric(b) { return Numeric.compare(m, n) ?? (forEquality ? 2 : nil) }
            let aString = a.datatype == Vocabulary.xsdString, bString = b.datatype == Vocabulary.xsdString
            if aString && bString { return a.lexical < b.lexical ? -1 : (a.lexical > b.lexical ? 1 : 0) }
            if a.datatype == Vocabulary.xsdBoolean && b.datatype == Vocabulary.xsdBoolean,
               let p = Self.booleanValue(x), let q = Self.booleanValue(y) {
                return p == q ? 0 : (!p ? -1 : 1)
            }
            if a.datatype == Vocabulary.xsdDateTime && b.datatype == Vocabulary.xsdDateTime,
               let p = DateTimeValue(a.lexical), let q = DateTimeValue(b.lexical) {
                if p.hasTimezone != q.hasTimezone { return forEquality ? (p.seconds == q.seconds ? nil : 2) : nil }
                return p.seconds < q.seconds ? -1 : (p.seconds > q.seconds ? 1 : 0)
            }
            if a == b { return 0 }
            if !forEquality { return nil }
            if a.language != nil && b.language != nil { return 2 }
            // Different literals of which we do not know the value space: equality is an error
            // unless both are in known, distinct value spaces.
            let known: Set<String> = [Vocabulary.xsdString, Vocabulary.xsdBoolean, Vocabulary.xsdDateTime, Vocabulary.rdfLangString]
            let aKnown = known.contains(a.datatype) || Numeric(a) != nil
            let bKnown = known.contains(b.datatype) || Numeric(b) != nil
            if aKnown && bKnown { return 2 }
            return nil
        }
        if !forEquality { return nil }
        return x == y ? 0 : 2
    }

    // MARK: Function library

    private func string(_ term: Term?) -> Literal? {
        guard case .literal(let literal)? = term, literal.datatype == Vocabulary.xsdString || literal.language != nil else { return nil }
        return literal
    }

    /// Result literal carrying the language of `like` (string functions preserve tags).
    private func stringLike(_ text: String, _ like: Literal) -> Term? {
        guard text.utf8.count <= Self.maxStringBytes else { return nil }
        if let language = like.language { return .literal(Literal(text, language: language)) }
        return .string(text)
    }

    /// Argument compatibility for CONTAINS, STRSTARTS... (§17.4.3.1.3).
    private func compatible(_ a: Literal, _ b: Literal) -> Bool {
        b.language == nil || a.language == b.language
    }

    private func call(_ name: String, _ args: [Expression], _ row: RowRef) -> Term? {
        // Functions with special evaluation rules first.
        switch name {
        case "IF":
            guard let condition = evaluate(args[0], row).flatMap(Self.booleanValue) else { return nil }
            return evaluate(condition ? args[1] : args[2], row)
        case "COALESCE":
            for arg in args { if let value = evaluate(arg, row) { return value } }
            return nil
        case "BNODE":
            blankNodeCounter += 1
            if args.isEmpty { return .blank("q\(blankNodeCounter)") }
            guard let label = string(evaluate(args[0], row)), label.language == nil else { return nil }
            return .blank("q\(label.lexical.hashValue & 0xFFFFFF)_\(row.base)")
        case "RAND": return .typed(String(Double.random(in: 0..<1)), Vocabulary.xsdDouble)
        case "NOW": return now
        case "UUID": return .iri("urn:uuid:" + UUID().uuidString.lowercased())
        case "STRUUID": return .string(UUID().uuidString.lowercased())
        default: break
        }
        var values: [Term] = []
        values.reserveCapacity(args.count)
        for arg in args {
            guard let value = evaluate(arg, row) else { return nil }
            values.append(value)
        }
        let first = values.first
        switch name {
        case "STR":
            switch first {
            case .iri(let iri)?: return .string(iri.value)
            case .literal(let literal)?: return .string(literal.lexical)
            default: return nil
            }
        case "LANG":
            guard let literal = first?.literal else { return nil }
            return .string(literal.language ?? "")
        case "DATATYPE":
            guard let literal = first?.literal else { return nil }
            return .iri(literal.datatype)
        case "LANGMATCHES":
            guard let tag = string(values[0])?.lexical.lowercased(), let range = string(values[1])?.lexical.lowercased() else { return nil }
            if range == "*" { return .boolean(!tag.isEmpty) }
            return .boolean(tag == range || tag.hasPrefix(range + "-"))
        case "IRI":
            switch first {
            case .iri?: return first
            case .literal(let literal)? where literal.datatype == Vocabulary.xsdString:
                if let baseIRI, !literal.lexical.contains(":") { return .iri(resolveIRI(literal.lexical, against: baseIRI)) }
                return .iri(literal.lexical)
            default: return nil
            }
        case "ISIRI": return .boolean(first?.isIRI ?? false)
        case "ISBLANK": return .boolean(first?.isBlank ?? false)
        case "ISLITERAL": return .boolean(first?.isLiteral ?? false)
        case "ISNUMERIC": return .boolean(first?.literal.flatMap(Numeric.init) != nil)
        case "SAMETERM": return .boolean(values[0] == values[1])
        case "ABS", "CEIL", "FLOOR", "ROUND":
            guard let number = first?.literal.flatMap(Numeric.init) else { return nil }
            switch number {
            case .integer(let v): return name == "ABS" ? .integer(abs(v)) : .integer(v)
            case .decimal(let v):
                var result = v
                var input = v
                switch name {
                case "ABS": result = v < 0 ? -v : v
                case "CEIL": NSDecimalRound(&result, &input, 0, .up)
                case "FLOOR": NSDecimalRound(&result, &input, 0, .down)
                default:
                    // XPath fn:round: halves go towards positive infinity.
                    var shifted = v + Decimal(string: "0.5")!
                    NSDecimalRound(&result, &shifted, 0, .down)
                }
                return Numeric.decimal(result).term
            case .double(let v), .float(let v):
                let result: Double
                switch name {
                case "ABS": result = abs(v)
                case "CEIL": result = v.rounded(.up)
                case "FLOOR": result = v.rounded(.down)
                default: result = (v + 0.5).rounded(.down)
                }
                if case .float = number { return Numeric.float(result).term }
                return Numeric.double(result).term
            }
        case "STRLEN":
            guard let literal = string(first) else { return nil }
            return .integer(literal.lexical.unicodeScalars.count)
        case "UCASE", "LCASE":
            guard let literal = string(first) else { return nil }
            return stringLike(name == "UCASE" ? literal.lexical.uppercased() : literal.lexical.lowercased(), literal)
        case "ENCODE_FOR_URI":
            guard let literal = string(first) else { return nil }
            var out = ""
            for byte in literal.lexical.utf8 {
                let c = Character(Unicode.Scalar(byte))
                if byte < 0x80 && (c.isLetter || c.isNumber || "-_.~".contains(c)) { out.append(c) } else { out += String(format: "%%%02X", byte) }
            }
            return .string(out)
        case "CONCAT":
            var text = ""
            var language: String?? = .none
            for value in values {
                guard let literal = string(value) else { return nil }
                text += literal.lexical
                switch language {
                case .none: language = .some(literal.language)
                case .some(let existing) where existing != literal.language: language = .some(nil)
                default: break
                }
            }
            guard text.utf8.count <= Self.maxStringBytes else { return nil }
            if case .some(.some(let tag)) = language { return .literal(Literal(text, language: tag)) }
            return .string(text)
        case "SUBSTR":
            guard let literal = string(values[0]), let startNumber = values[1].literal.flatMap(Numeric.init) else { return nil }
            let scalars = Array(literal.lexical.unicodeScalars)
            let start = startNumber.asDouble.rounded(.toNearestOrAwayFromZero)
            var end = Double.infinity
            if values.count > 2 {
                guard let length = values[2].literal.flatMap(Numeric.init) else { return nil }
                end = start + length.asDouble.rounded(.toNearestOrAwayFromZero)
            }
            if start.isNaN || end.isNaN { return stringLike("", literal) }
            var view = String.UnicodeScalarView()
            for (index, scalar) in scalars.enumerated() {
                let position = Double(index + 1)
                if position >= start && position < end { view.append(scalar) }
            }
            return stringLike(String(view), literal)
        case "CONTAINS", "STRSTARTS", "STRENDS", "STRBEFORE", "STRAFTER":
            guard let a = string(values[0]), let b = string(values[1]), compatible(a, b) else { return nil }
            let text = a.lexical, part = b.lexical
            switch name {
            case "CONTAINS": return .boolean(part.isEmpty || text.contains(part))
            case "STRSTARTS": return .boolean(text.hasPrefix(part))
            case "STRENDS": return .boolean(text.hasSuffix(part))
            case "STRBEFORE":
                if part.isEmpty { return stringLike("", a) }
                guard let range = text.range(of: part) else { return .string("") }
                return stringLike(String(text[..<range.lowerBound]), a)
            default:
                if part.isEmpty { return stringLike(text, a) }
                guard let range = text.range(of: part) else { return .string("") }
                return stringLike(String(text[range.upperBound...]), a)
            }
        case "STRLANG":
            guard let literal = string(values[0]), literal.language == nil, let tag = string(values[1]), tag.language == nil, !tag.lexical.isEmpty else { return nil }
            return .literal(Literal(literal.lexical, language: tag.lexical))
        case "STRDT":
            guard let literal = string(values[0]), literal.language == nil, case .iri(let datatype) = values[1] else { return nil }
            return .typed(literal.lexical, datatype.value)
        case "REGEX":
            guard let literal = string(values[0]), literal.lexical.utf8.count <= Self.maxRegexSubjectBytes,
                  let pattern = string(values[1]), pattern.language == nil else { return nil }
            var flags = ""
            if values.count > 2 { guard let f = string(values[2]) else { return nil }; flags = f.lexical }
            guard let expression = regex(pattern.lexical, flags: flags), let found = firstMatch(expression, in: literal.lexical) else {
                return nil
            }
            return .boolean(found)
        case "REPLACE":
            guard let literal = string(values[0]), literal.lexical.utf8.count <= Self.maxRegexSubjectBytes,
                  let pattern = string(values[1]), pattern.language == nil,
                  let replacement = string(values[2]), replacement.language == nil else { return nil }
            var flags = ""
            if values.count > 3 { guard let f = string(values[3]) else { return nil }; flags = f.lexical }
            guard let expression = regex(pattern.lexical, flags: flags) else { return nil }
            // XPath uses $1 for groups, as NSRegularExpression does.
            guard let result = replacingMatches(expression, in: literal.lexical, template: replacement.lexical) else { return nil }
            return stringLike(result, literal)
        case "YEAR", "MONTH", "DAY", "HOURS", "MINUTES", "SECONDS", "TIMEZONE", "TZ":
            guard let literal = first?.literal, literal.datatype == Vocabulary.xsdDateTime, let value = DateTimeValue(literal.lexical) else { return nil }
            switch name {
            case "YEAR": return .integer(value.year)
            case "MONTH": return .integer(value.month)
            case "DAY": return .integer(value.day)
            case "HOURS": return .integer(value.hour)
            case "MINUTES": return .integer(value.minute)
            case "SECONDS": return Numeric.decimal(value.second).term
            case "TZ": return .string(value.timezone ?? "")
            default:
                guard let zone = value.timezone else { return nil }
                if zone == "Z" { return .typed("PT0S", Vocabulary.xsd + "dayTimeDuration") }
                let negative = zone.hasPrefix("-")
                let parts = zone.dropFirst().split(separator: ":")
                let hours = Int(parts[0]) ?? 0, minutes = Int(parts[1]) ?? 0
                var text = (negative ? "-" : "") + "PT"
                if hours > 0 { text += "\(hours)H" }
                if minutes > 0 { text += "\(minutes)M" }
                if hours == 0 && minutes == 0 { text += "0S" }
                return .typed(text, Vocabulary.xsd + "dayTimeDuration")
            }
        case "MD5", "SHA1", "SHA256", "SHA384", "SHA512":
            guard let literal = string(first), literal.language == nil else { return nil }
            return Digest.hex(name, Array(literal.lexical.utf8)).map(Term.string)
        default:
            return cast(name, values)
        }
    }

    /// `text` with every match of `expression` replaced by `template`, built inside the same
    /// interruptible enumeration as `firstMatch` (every match and every progress report checks the
    /// deadline); nil when it was stopped.
    func replacingMatches(_ expression: NSRegularExpression, in text: String, template: String) -> String? {
        let source = text as NSString
        var result = ""
        var copiedUpTo = 0
        var stoppedBy: QueryError?
        let deadline = self.deadline
        let timeout = limits.timeout
        expression.enumerateMatches(in: text, options: [.reportProgress], range: NSRange(location: 0, length: source.length)) { match, _, stop in
            if Task.isCancelled {
                stoppedBy = .cancelled
                stop.pointee = true
                return
            }
            if ContinuousClock.now > deadline {
                stoppedBy = .limitExceeded("query ran longer than \(timeout) (in a regular expression)")
                stop.pointee = true
                return
            }
            guard let match else { return }
            result.append(source.substring(with: NSRange(location: copiedUpTo, length: match.range.location - copiedUpTo)))
            result.append(expression.replacementString(for: match, in: text, offset: 0, template: template))
            copiedUpTo = match.range.location + match.range.length
        }
        if let stoppedBy {
            interruptedMatch = stoppedBy
            return nil
        }
        result.append(source.substring(from: copiedUpTo))
        return result
    }

    /// Whether `expression` matches somewhere in `text`; nil when the match was stopped because the
    /// query ran out of time or was cancelled. ICU calls the progress block periodically while a
    /// match runs (every few hundred microseconds, `.reportProgress`), so even a pattern that
    /// backtracks polynomially over the subject (`.*.*.*.*x`) ends at the deadline, not after it.
    func firstMatch(_ expression: NSRegularExpression, in text: String) -> Bool? {
        var found = false
        var stoppedBy: QueryError?
        let deadline = self.deadline
        let timeout = limits.timeout
        expression.enumerateMatches(in: text, options: [.reportProgress], range: NSRange(text.startIndex..., in: text)) { result, _, stop in
            if result != nil {
                found = true
                stop.pointee = true
            } else if Task.isCancelled {
                stoppedBy = .cancelled
                stop.pointee = true
            } else if ContinuousClock.now > deadline {
                stoppedBy = .limitExceeded("query ran longer than \(timeout) (in a regular expression)")
                stop.pointee = true
            }
        }
        if let stoppedBy {
            interruptedMatch = stoppedBy
            return nil
        }
        return found
    }

    private func regex(_ pattern: String, flags: String) -> NSRegularExpression? {
        // Patterns come from peers: bound their size (backtracking cost grows with it) and
        // compile each distinct pattern once per query rather than once per row.
        guard pattern.utf8.count <= 1024, Self.isSafeRegex(pattern) else { return nil }
        let key = flags + "\u{0}" + pattern
        if let cached = regexCache[key] { return cached }
        var options: NSRegularExpression.Options = []
        for flag in flags {
            switch flag {
            case "i": options.insert(.caseInsensitive)
            case "s": options.insert(.dotMatchesLineSeparators)
            case "m": options.insert(.anchorsMatchLines)
            case "x": options.insert(.allowCommentsAndWhitespace)
            case "q": options.insert(.ignoreMetacharacters)
            default: return nil
            }
        }
        let compiled = try? NSRegularExpression(pattern: pattern, options: options)
        if regexCache.count < 256 { regexCache[key] = compiled }
        return compiled
    }

    /// Longest string a function may build (CONCAT, REPLACE, GROUP_CONCAT...): doubling a string
    /// through a chain of BINDs would otherwise exhaust memory long before any time limit.
    static let maxStringBytes = 1 << 20
    /// Longest text REGEX / REPLACE runs on.
    static let maxRegexSubjectBytes = 64 * 1024

    /// Refuses patterns that can backtrack exponentially, since a running match cannot be
    /// interrupted by the query deadline: a repeated group that itself contains a quantifier or an
    /// alternation (`(a+)+`, `(a|aa)*`), and back-references. Plain catalog patterns
    /// (`^eu-`, `gpu|tpu`, `[0-9]+x`) stay allowed.
    static func isSafeRegex(_ pattern: String) -> Bool {
        var groups: [Bool] = []  // per open group: does it contain a quantifier or '|'?
        var lastClosedGroupWasRisky = false
        var escaped = false
        var inClass = false
        for c in pattern {
            if escaped {
                escaped = false
                if c.isNumber && c != "0" { return false }
                lastClosedGroupWasRisky = false
                continue
            }
            if c == "\\" { escaped = true; continue }
            if inClass { if c == "]" { inClass = false }; continue }
            switch c {
            case "[": inClass = true; lastClosedGroupWasRisky = false
            case "(": groups.append(false); lastClosedGroupWasRisky = false
            case ")":
                let risky = groups.popLast() ?? false
                lastClosedGroupWasRisky = risky
                if risky, !groups.isEmpty { groups[groups.count - 1] = true }
            case "*", "+", "{":
                if lastClosedGroupWasRisky { return false }
                if !groups.isEmpty { groups[groups.count - 1] = true }
                lastClosedGroupWasRisky = false
            case "?":
                if !groups.isEmpty { groups[groups.count - 1] = true }
                lastClosedGroupWasRisky = false
            case "|":
                if !groups.isEmpty { groups[groups.count - 1] = true }
                lastClosedGroupWasRisky = false
            default:
                lastClosedGroupWasRisky = false
            }
        }
        return true
    }

    /// XSD constructor functions (casts), e.g. `xsd:integer(?x)`.
    private func cast(_ iri: String, _ values: [Term]) -> Term? {
        guard iri.hasPrefix(Vocabulary.xsd), values.count == 1 else { return nil }
        let value = values[0]
        if case .blank = value { return nil }
        let lexical: String
        switch value {
        case .iri(let i):
            guard iri == Vocabulary.xsdString else { return nil }
            lexical = i.value
        case .literal(let literal): lexical = literal.lexical
        case .blank: return nil
        }
        let literal = value.literal
        let number = literal.flatMap(Numeric.init)
        let isBoolean = literal?.datatype == Vocabulary.xsdBoolean
        switch iri {
        case Vocabulary.xsdString:
            return .string(lexical)
        case Vocabulary.xsdBoolean:
            if let number { return .boolean(!(number.asDouble == 0 || number.asDouble.isNaN)) }
            switch lexical { case "true", "1": return .boolean(true); case "false", "0": return .boolean(false); default: return nil }
        case Vocabulary.xsdInteger:
            if isBoolean { return .integer(lexical == "true" || lexical == "1" ? 1 : 0) }
            if let number {
                let double = number.asDouble
                guard double.isFinite else { return nil }
                if case .integer(let v) = number { return .integer(v) }
                return .integer(Int(double.rounded(.towardZero)))
            }
            guard literal?.datatype == Vocabulary.xsdString, Numeric.isIntegerLexical(lexical), let v = Int(lexical) else { return nil }
            return .integer(v)
        case Vocabulary.xsdDecimal:
            if isBoolean { return .typed(lexical == "true" || lexical == "1" ? "1.0" : "0.0", Vocabulary.xsdDecimal) }
            if let number {
                guard number.asDouble.isFinite else { return nil }
                return Numeric.decimal(number.asDecimal).term
            }
            guard literal?.datatype == Vocabulary.xsdString, Numeric.isDecimalLexical(lexical),
                  let v = Decimal(string: lexical, locale: Locale(identifier: "en_US_POSIX")) else { return nil }
            return Numeric.decimal(v).term
        case Vocabulary.xsdDouble, Vocabulary.xsdFloat:
            let result: Double
            if isBoolean { result = lexical == "true" || lexical == "1" ? 1 : 0 } else if let number { result = number.asDouble } else {
                guard literal?.datatype == Vocabulary.xsdString else { return nil }
                switch lexical {
                case "INF": result = .infinity
                case "-INF": result = -.infinity
                case "NaN": result = .nan
                default:
                    guard Numeric.isDoubleLexical(lexical), let v = Double(lexical) else { return nil }
                    result = v
                }
            }
            return iri == Vocabulary.xsdDouble ? Numeric.double(result).term : Numeric.float(Double(Float(result))).term
        case Vocabulary.xsdDateTime:
            guard literal?.datatype == Vocabulary.xsdDateTime || literal?.datatype == Vocabulary.xsdString, DateTimeValue(lexical) != nil else { return nil }
            return .typed(lexical, Vocabulary.xsdDateTime)
        default:
            return nil
        }
    }
}
