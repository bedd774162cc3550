import Foundation

/// Dense integer ids for terms. Id 0 is reserved for "unbound" in solution rows.
public struct TermDictionary: Sendable {
    private(set) var terms: [Term] = [.iri("urn:intercloud:unbound")]
    private var ids: [Term: Int] = [:]

    public init() {}

    public var count: Int { terms.count - 1 }

    public func id(of term: Term) -> Int? { ids[term] }

    public func term(_ id: Int) -> Term { terms[id] }

    mutating func intern(_ term: Term) -> Int {
        if let id = ids[term] { return id }
        let id = terms.count
        terms.append(term)
        ids[term] = id
        return id
    }
}

/// Three ids, used as an index key in one of the orders SPO, POS or OSP.
struct IndexKey: Hashable, Sendable, Equatable {
    var first: Int32
    var second: Int32
    var third: Int32

    @inline(__always) static func less(_ lhs: IndexKey, _ rhs: IndexKey) -> Bool {
        if lhs.first != rhs.first { return lhs.first < rhs.first }
        if lhs.second != rhs.second { return lhs.second < rhs.second }
        return lhs.third < rhs.third
    }
}

/// One graph's triples in three sorted orders, so that any pattern with bound positions is a
/// binary-searched contiguous range: SPO answers s / s+p / s+p+o, POS answers p / p+o, OSP
/// answers o / o+s. Immutable once built; queries share it without locking.
struct IndexedGraph: Sendable {
    let spo: [IndexKey]
    let pos: [IndexKey]
    let osp: [IndexKey]

    init(triples: Set<IndexKey>) {
        let keys = Array(triples)
        let maxID = keys.reduce(Int32(0)) { max($0, $1.first, $1.second, $1.third) }
        if maxID < (1 << 21) {
            // Ids fit in 21 bits: sort each order as packed 64-bit integers, several times faster
            // than comparing three fields through a closure.
            func sorted(_ pack: (IndexKey) -> UInt64) -> [IndexKey] {
                var packed = keys.map(pack)
                packed.sort()
                let mask: UInt64 = (1 << 21) - 1
                return packed.map { IndexKey(first: Int32($0 >> 42), second: Int32(($0 >> 21) & mask), third: Int32($0 & mask)) }
            }
            spo = sorted { UInt64($0.first) << 42 | UInt64($0.second) << 21 | UInt64($0.third) }
            pos = sorted { UInt64($0.second) << 42 | UInt64($0.third) << 21 | UInt64($0.first) }
            osp = sorted { UInt64($0.third) << 42 | UInt64($0.first) << 21 | UInt64($0.second) }
        } else {
            var spo = keys
            spo.sort(by: IndexKey.less)
            var pos = spo.map { IndexKey(first: $0.second, second: $0.third, third: $0.first) }
            pos.sort(by: IndexKey.less)
            var osp = spo.map { IndexKey(first: $0.third, second: $0.first, third: $0.second) }
            osp.sort(by: IndexKey.less)
            self.spo = spo
            self.pos = pos
            self.osp = osp
        }
    }

    var count: Int { spo.count }

    /// The range of `keys` whose first `bound` components equal those of `prefix`.
    @inline(__always)
    private static func range(_ keys: [IndexKey], _ prefix: IndexKey, bound: Int) -> Range<Int> {
        if bound == 0 { return 0..<keys.count }
        func compare(_ key: IndexKey) -> Int {
            if key.first != prefix.first { return key.first < prefix.first ? -1 : 1 }
            if bound == 1 { return 0 }
            if key.second != prefix.second { return key.second < prefix.second ? -1 : 1 }
            if bound == 2 { return 0 }
            if key.third != prefix.third { return key.third < prefix.third ? -1 : 1 }
            return 0
        }
        var low = 0
        var high = keys.count
        while low < high {
            let mid = (low + high) >> 1
            if compare(keys[mid]) < 0 { low = mid + 1 } else { high = mid }
        }
        let start = low
        high = keys.count
        while low < high {
            let mid = (low + high) >> 1
            if compare(keys[mid]) <= 0 { low = mid + 1 } else { high = mid }
        }
        return start..<low
    }

    /// Chooses the index and prefix for a pattern; 0 means "any".
    @inline(__always)
    private func plan(_ s: Int, _ p: Int, _ o: Int) -> (keys: [IndexKey], order: Int, range: Range<Int>) {
        let s32 = Int32(truncatingIfNeeded: s), p32 = Int32(truncatingIfNeeded: p), o32 = Int32(truncatingIfNeeded: o)
        if s != 0 {
            if p != 0 {
                return (spo, 0, Self.range(spo, IndexKey(first: s32, second: p32, third: o32), bound: o != 0 ? 3 : 2))
            }
            if o != 0 { return (osp, 2, Self.range(osp, IndexKey(first: o32, second: s32, third: 0), bound: 2)) }
            return (spo, 0, Self.range(spo, IndexKey(first: s32, second: 0, third: 0), bound: 1))
        }
        if p != 0 {
            return (pos, 1, Self.range(pos, IndexKey(first: p32, second: o32, third: 0), bound: o != 0 ? 2 : 1))
        }
        if o != 0 { return (osp, 2, Self.range(osp, IndexKey(first: o32, second: 0, third: 0), bound: 1)) }
        return (spo, 0, 0..<spo.count)
    }

    /// Number of triples matching the pattern (0 = any position): exact, used by the planner.
    func count(_ s: Int, _ p: Int, _ o: Int) -> Int { plan(s, p, o).range.count }

    /// Calls `body(s, p, o)` for every matching triple; `body` returns false to stop early.
    @inline(__always)
    func match(_ s: Int, _ p: Int, _ o: Int, _ body: (Int, Int, Int) throws -> Bool) rethrows {
        let (keys, order, range) = plan(s, p, o)
        for index in range {
            let key = keys[index]
            let a = Int(key.first), b = Int(key.second), c = Int(key.third)
            let keepGoing: Bool
            switch order {
            case 0: keepGoing = try body(a, b, c)
            case 1: keepGoing = try body(c, a, b)
            default: keepGoing = try body(b, c, a)
            }
            if !keepGoing { return }
        }
    }

    /// Every id used as subject or object (the nodes of the graph), for zero-length paths.
    func nodes() -> [Int] {
        var seen = Set<Int>()
        var result: [Int] = []
        for key in spo where seen.insert(Int(key.first)).inserted { result.append(Int(key.first)) }
        for key in osp where seen.insert(Int(key.first)).inserted { result.append(Int(key.first)) }
        return result
    }

    static let empty = IndexedGraph(triples: [])
}

/// An immutable view of the store: what a query runs against. Cheap to take; it shares storage with
/// the store until the store changes.
public struct StoreSnapshot: Sendable {
    public let dictionary: TermDictionary
    /// Graph id 0 is the default graph; other keys are the ids of named graphs' IRIs.
    let graphs: [Int: IndexedGraph]

    var defaultGraph: IndexedGraph { graphs[0] ?? .empty }
    var namedGraphIDs: [Int] { graphs.keys.filter { $0 != 0 }.sorted() }

    /// Every triple of the default graph (or of `graph`), decoded.
    public func triples(graph: IRI? = nil) -> [Triple] {
        let index: IndexedGraph
        if let graph {
            guard let id = dictionary.id(of: .iri(graph)), let named = graphs[id] else { return [] }
            index = named
        } else {
            index = defaultGraph
        }
        return index.spo.map {
            Triple(dictionary.term(Int($0.first)), dictionary.term(Int($0.second)), dictionary.term(Int($0.third)))
        }
    }

    public var tripleCount: Int { graphs.values.reduce(0) { $0 + $1.count } }
}

/// An in-memory RDF store: dictionary-encoded terms, triples of the default graph and of named
/// graphs indexed SPO / POS / OSP.
///
/// Writers take a lock; readers (queries) work on a `StoreSnapshot`, so a long query never blocks
/// a load and always sees one consistent state.
///
/// ```swift
/// let store = TripleStore()
/// try store.load(turtle: text, baseIRI: "https://cloud1.example/")
/// let result = try SPARQLEngine(store).execute(query: "SELECT ...", limits: QueryLimits())
/// ```
public final class TripleStore: @unchecked Sendable {
    // @unchecked Sendable: every mutable field below is only touched while holding `lock`.
    private let lock = NSLock()
    private var dictionary = TermDictionary()
    private var graphTriples: [Int: Set<IndexKey>] = [:]
    private var cachedSnapshot: StoreSnapshot?
    private var loadCounter = 0

    public init() {}

    /// Loads a document in any supported syntax into the default graph, or into `graph`.
    /// Blank nodes are renamed apart so that two documents never share one.
    /// - Returns: the number of triples read.
    @discardableResult
    public func load(_ data: Data, format: RDFFormat, baseIRI: String? = nil, graph: IRI? = nil,
                     limits: LoadLimits = .default) throws(RDFLoadError) -> Int {
        let triples = try RDFLoader.parse(data, format: format, baseIRI: baseIRI, limits: limits)
        lock.lock()
        defer { lock.unlock() }
        loadCounter += 1
        let prefix = "b\(loadCounter)_"
        insertLocked(triples, graph: graph) { term in
            if case .blank(let node) = term { return .blank(prefix + node.label) }
            return term
        }
        return triples.count
    }

    @discardableResult
    public func load(turtle: String, baseIRI: String? = nil, graph: IRI? = nil,
                     limits: LoadLimits = .default) throws(RDFLoadError) -> Int {
        try load(Data(turtle.utf8), format: .turtle, baseIRI: baseIRI, graph: graph, limits: limits)
    }

    @discardableResult
    public func load(nTriples: String, graph: IRI? = nil, limits: LoadLimits = .default) throws(RDFLoadError) -> Int {
        try load(Data(nTriples.utf8), format: .nTriples, graph: graph, limits: limits)
    }

    /// Loads a file; the format comes from `format` or else from the file extension.
    @discardableResult
    public func load(file: URL, format: RDFFormat? = nil, baseIRI: String? = nil, graph: IRI? = nil,
                     limits: LoadLimits = .default) throws(RDFLoadError) -> Int {
        guard let chosen = format ?? RDFFormat(fileExtension: file.pathExtension) else {
            throw .unreadable("unknown RDF format for \(file.lastPathComponent)")
        }
        if let size = (try? FileManager.default.attributesOfItem(atPath: file.path))?[.size] as? Int,
           size > limits.maxInputBytes {
            throw .refused("file of \(size) bytes is over the \(limits.maxInputBytes)-byte limit")
        }
        let data: Data
        do { data = try Data(contentsOf: file) } catch { throw .unreadable(String(describing: error)) }
        return try load(data, format: chosen, baseIRI: baseIRI ?? file.absoluteString, graph: graph, limits: limits)
    }

    /// Adds triples as given (blank node labels kept).
    public func insert<S: Sequence>(_ triples: S, graph: IRI? = nil) where S.Element == Triple {
        lock.lock()
        defer { lock.unlock() }
        insertLocked(triples, graph: graph) { $0 }
    }

    public func insert(_ triple: Triple, graph: IRI? = nil) { insert([triple], graph: graph) }

    /// Removes triples; returns how many were present.
    @discardableResult
    public func remove<S: Sequence>(_ triples: S, graph: IRI? = nil) -> Int where S.Element == Triple {
        lock.lock()
        defer { lock.unlock() }
        let graphID = graph.map { dictionary.intern(.iri($0)) } ?? 0
        var removed = 0
        for triple in triples {
            guard let s = dictionary.id(of: triple.subject), let p = dictionary.id(of: triple.predicate),
                  let o = dictionary.id(of: triple.object) else { continue }
            if graphTriples[graphID]?.remove(IndexKey(first: Int32(s), second: Int32(p), third: Int32(o))) != nil {
                removed += 1
            }
        }
        if removed > 0 { cachedSnapshot = nil }
        return removed
    }

    /// Replaces the whole content of one named graph (or of the default graph) in one step, so
    /// queries see either the old or the new content: used for live inventory refreshed from
    /// provider drivers, kept in its own graph apart from static descriptions.
    public func replaceGraph(_ graph: IRI?, with triples: [Triple]) {
        lock.lock()
        defer { lock.unlock() }
        let graphID = graph.map { dictionary.intern(.iri($0)) } ?? 0
        graphTriples[graphID] = []
        insertLocked(triples, graph: graph) { $0 }
    }

    /// Empties the default graph and every named graph.
    public func removeAll() {
        lock.lock()
        defer { lock.unlock() }
        graphTriples = [:]
        cachedSnapshot = nil
    }

    private func insertLocked<S: Sequence>(_ triples: S, graph: IRI?, map: (Term) -> Term) where S.Element == Triple {
        let graphID = graph.map { dictionary.intern(.iri($0)) } ?? 0
        var set = graphTriples[graphID] ?? []
        graphTriples[graphID] = nil  // keep the set uniquely referenced while mutating it
        // Documents repeat subjects on consecutive lines and use few predicates: remembering the
        // last subject and recent predicates skips most dictionary hashing during bulk loads.
        var lastSubject: (Term, Int)? = nil
        var recentPredicates: [(Term, Int)] = []
        for triple in triples {
            let subjectTerm = map(triple.subject)
            let s: Int
            if let last = lastSubject, last.0 == subjectTerm { s = last.1 } else {
                s = dictionary.intern(subjectTerm)
                lastSubject = (subjectTerm, s)
            }
            let predicateTerm = triple.predicate
            let p: Int
            if let hit = recentPredicates.first(where: { $0.0 == predicateTerm }) { p = hit.1 } else {
                p = dictionary.intern(predicateTerm)
                if recentPredicates.count < 32 { recentPredicates.append((predicateTerm, p)) }
            }
            let o = dictionary.intern(map(triple.object))
            set.insert(IndexKey(first: Int32(s), second: Int32(p), third: Int32(o)))
        }
        graphTriples[graphID] = set
        cachedSnapshot = nil
    }

    /// The current state, indexed. Built once per change and then shared.
    public func snapshot() -> StoreSnapshot {
        lock.lock()
        defer { lock.unlock() }
        if let cachedSnapshot { return cachedSnapshot }
        var graphs: [Int: IndexedGraph] = [:]
        for (id, triples) in graphTriples where !triples.isEmpty || id == 0 {
            graphs[id] = IndexedGraph(triples: triples)
        }
        let snapshot = StoreSnapshot(dictionary: dictionary, graphs: graphs)
        cachedSnapshot = snapshot
        return snapshot
    }

    /// Number of triples in all graphs.
    public var count: Int {
        lock.lock()
        defer { lock.unlock() }
        return graphTriples.values.reduce(0) { $0 + $1.count }
    }

    /// Every triple of the default graph (or of `graph`).
    public func triples(graph: IRI? = nil) -> [Triple] { snapshot().triples(graph: graph) }

    /// The IRIs of the named graphs.
    public var graphNames: [IRI] {
        let snapshot = snapshot()
        return snapshot.namedGraphIDs.compactMap { id in
            if case .iri(let iri) = snapshot.dictionary.term(id) { return iri }
            return nil
        }
    }

    /// The default graph (or `graph`) as N-Triples.
    public func serializedNTriples(graph: IRI? = nil) -> String { serializeNTriples(triples(graph: graph)) }
}
