import Foundation
import GRDB
import Storage

/// One audited decision: who (peer), what (module, kind, action), why (outcome, reason, detail),
/// when (at).
public struct AuditEvent: Sendable, Codable, Hashable {
    public enum Outcome: String, Sendable, Codable, CaseIterable {
        case accepted
        case refused
        /// An operator decision (allow, revoke, distrust) made through the CLI.
        case `operator`
    }

    /// Row id, assigned when recorded.
    public var id: Int64?
    public var at: Date
    /// Module that decided: "trust", "catalog", "negotiation", "migration", "metering", ...
    public var module: String
    /// What kind of decision, dotted: "trust.handshake", "trust.envelope", "trust.operator",
    /// "catalog.query", ... Free text so every module can add kinds without a migration.
    public var kind: String
    /// Bare JID of the peer concerned ("" if none).
    public var peer: String
    /// What was attempted or decided, e.g. "handshake", "revoke", the IQ namespace of a request.
    public var action: String
    public var outcome: Outcome
    /// Machine-readable code (`TrustRefusalReason` raw value, `EnvelopeError` code, a module's own).
    public var reason: String
    public var detail: String
    /// How many decisions this row stands for: 1, or for a summary of aggregated refusals the
    /// number counted in its window (`RefusalAggregator`).
    public var count: Int = 1

    public init(
        at: Date, module: String, kind: String, peer: String, action: String, outcome: Outcome,
        reason: String = "", detail: String = "", count: Int = 1
    ) {
        self.count = count
        self.at = at
        self.module = module
        self.kind = kind
        self.peer = peer
        self.action = action
        self.outcome = outcome
        self.reason = reason
        self.detail = detail
    }
}

/// Filters for `AuditLog.events`. Every filter is optional; results are newest first.
public struct AuditQuery: Sendable, Hashable {
    public var peer: String?
    public var module: String?
    /// Exact kind, or a prefix when it ends with "." (e.g. "trust.").
    public var kind: String?
    public var outcome: AuditEvent.Outcome?
    public var reason: String?
    public var since: Date?
    public var until: Date?
    public var limit: Int

    public init(
        peer: String? = nil, module: String? = nil, kind: String? = nil, outcome: AuditEvent.Outcome? = nil,
        reason: String? = nil, since: Date? = nil, until: Date? = nil, limit: Int = 1000
    ) {
        self.peer = peer
        self.module = module
        self.kind = kind
        self.outcome = outcome
        self.reason = reason
        self.since = since
        self.until = until
        self.limit = limit
    }
}

/// The broker's audit log (table of `AuditSchema`): every trust decision and every refused request
/// of every module. Writes are durable (the database runs `synchronous = FULL`): a refusal is on
/// disk before the refusal is sent.
///
/// Two ways to write the same records:
/// - `offPool` (async), for code on the cooperative pool: records go through a group commit
///   (`GroupCommit`), so records that arrive while the previous commit waits for the disk share
///   the next transaction, a burst of refusals costs one fsync per batch instead of one each, and
///   no fsync holds a pool thread. Each caller returns only once its own record is committed.
/// - the methods of `AuditLog` itself, synchronous: the caller's thread waits for the commit. For
///   code that runs off the pool and must not suspend: actors on `StorageExecutor` (a suspension
///   would let another message in between a state change and its journal write), commands, and
///   tests that read the log right after.
///
/// Every text field is cut to a bound before it is written (a peer chooses JIDs, namespaces and
/// details). With an `aggregator`, refusals are aggregated per sender, kind and reason (see
/// `RefusalAggregator`): the first of a window is written at once, the rest are counted into one
/// summary row, so a flood costs a bounded number of rows and fsyncs.
public struct AuditLog: Sendable {
    public let database: DatabasePool
    public let aggregator: RefusalAggregator?
    private let group: GroupCommit<[AuditEvent], [AuditEvent]>

    /// The longest text kept per field, in UTF-8 bytes; longer values are cut at a scalar and end
    /// in "…". Bytes, not characters: one Character may hold any number of combining scalars.
    public static let fieldLimits = (peer: 320, action: 200, reason: 100, detail: 1000)

    public init(database: DatabasePool, aggregator: RefusalAggregator? = nil) {
        self.database = database
        self.aggregator = aggregator
        self.group = GroupCommit(database: database) { db, events in try Self.insert(events, db) }
    }

    /// Writes `event` as it is: decisions about something journaled (a negotiation that ended, a
    /// migration step), whose number is bounded by what peers may start. Refusals of requests,
    /// which a flood can multiply, go through `refused(...)`. Blocks until committed.
    @discardableResult
    public func record(_ event: AuditEvent) throws -> AuditEvent? {
        try database.write { db in try Self.insert([event], db) }.first
    }

    /// Writes a refused request through the aggregator when there is one. Returns the row written,
    /// or nil when the refusal was only counted into an open window. Blocks until committed.
    @discardableResult
    public func recordRefusal(_ event: AuditEvent) throws -> AuditEvent? {
        let (rows, returnsLast) = admit(event)
        guard !rows.isEmpty else { return nil }
        let written = try database.write { db in try Self.insert(rows, db) }
        return returnsLast ? written.last : nil
    }

    /// Convenience for a refusal by any module. Blocks until committed.
    @discardableResult
    public func refused(
        module: String, kind: String, peer: String, action: String, reason: String, detail: String = "",
        at: Date
    ) throws -> AuditEvent? {
        try recordRefusal(Self.refusal(module: module, kind: kind, peer: peer, action: action, reason: reason, detail: detail, at: at))
    }

    /// Writes the summaries of aggregation windows that ended by `now`. Blocks until committed.
    @discardableResult
    public func flushAggregated(now: Date) throws -> Int {
        guard let aggregator else { return 0 }
        return try writeAll(aggregator.due(now: now))
    }

    /// Writes the summaries of every open aggregation window (at shutdown). Blocks until committed.
    @discardableResult
    public func drainAggregated() throws -> Int {
        guard let aggregator else { return 0 }
        return try writeAll(aggregator.drain())
    }

    /// Deletes events older than `date` (retention); returns how many. Blocks until committed.
    @discardableResult
    public func prune(before date: Date) throws -> Int {
        try database.write { db in try Self.delete(before: date, db) }
    }

    private func writeAll(_ events: [AuditEvent]) throws -> Int {
        guard !events.isEmpty else { return 0 }
        return try database.write { db in try Self.insert(events, db) }.count
    }

    /// Transactions the group commit of `offPool` has made (benchmarks, tests).
    public var groupTransactions: Int { group.transactions }

    /// The same writes for code on the cooperative pool: async, waiting on GRDB's writer queue,
    /// records group-committed. See the type's comment.
    public var offPool: OffPool { OffPool(log: self) }

    public struct OffPool: Sendable {
        let log: AuditLog

        @discardableResult
        public func record(_ event: AuditEvent) async throws -> AuditEvent? {
            try await log.group.commit([event]).first
        }

        @discardableResult
        public func recordRefusal(_ event: AuditEvent) async throws -> AuditEvent? {
            let (rows, returnsLast) = log.admit(event)
            guard !rows.isEmpty else { return nil }
            let written = try await log.group.commit(rows)
            return returnsLast ? written.last : nil
        }

        @discardableResult
        public func refused(
            module: String, kind: String, peer: String, action: String, reason: String, detail: String = "",
            at: Date
        ) async throws -> AuditEvent? {
            try await recordRefusal(AuditLog.refusal(
                module: module, kind: kind, peer: peer, action: action, reason: reason, detail: detail, at: at))
        }

        /// Writes the summaries of aggregation windows that ended by `now` (call it periodically).
        @discardableResult
        public func flushAggregated(now: Date) async throws -> Int {
            guard let aggregator = log.aggregator else { return 0 }
            return try await commitAll(aggregator.due(now: now))
        }

        /// Writes the summaries of every open aggregation window (at shutdown).
        @discardableResult
        public func drainAggregated() async throws -> Int {
            guard let aggregator = log.aggregator else { return 0 }
            return try await commitAll(aggregator.drain())
        }

        /// Deletes events older than `date` (retention); returns how many.
        @discardableResult
        public func prune(before date: Date) async throws -> Int {
            try await log.database.durableWrite { db in try AuditLog.delete(before: date, db) }
        }

        private func commitAll(_ events: [AuditEvent]) async throws -> Int {
            guard !events.isEmpty else { return 0 }
            return try await log.group.commit(events).count
        }
    }

    static func delete(before date: Date, _ db: Database) throws -> Int {
        try db.execute(sql: "DELETE FROM audit_event WHERE at < ?", arguments: [date.timeIntervalSince1970])
        return db.changesCount
    }

    static func refusal(
        module: String, kind: String, peer: String, action: String, reason: String, detail: String, at: Date
    ) -> AuditEvent {
        AuditEvent(
            at: at, module: module, kind: kind, peer: XmppAddr.bare(peer), action: action, outcome: .refused,
            reason: reason, detail: detail)
    }

    /// The rows a refusal makes: through the aggregator, the summaries of windows it closed plus
    /// the refusal itself if it opens a window (then `returnsLast`); without one, the event alone.
    func admit(_ event: AuditEvent) -> (rows: [AuditEvent], returnsLast: Bool) {
        guard event.outcome == .refused, let aggregator else { return ([event], true) }
        let (decision, summaries) = aggregator.admit(Self.bounded(event))
        guard case .write(let first) = decision else { return (summaries, false) }
        return (summaries + [first], true)
    }

    /// The event with every text field cut to `fieldLimits`.
    static func bounded(_ event: AuditEvent) -> AuditEvent {
        func cut(_ text: String, _ limit: Int) -> String {
            guard text.utf8.count > limit else { return text }
            var kept = String.UnicodeScalarView()
            var bytes = 0
            for scalar in text.unicodeScalars {
                let size = String(scalar).utf8.count
                guard bytes + size <= limit - 3 else { break }  // "…" is 3 bytes
                kept.append(scalar)
                bytes += size
            }
            return String(kept) + "…"
        }
        var bounded = event
        bounded.peer = cut(event.peer, fieldLimits.peer)
        bounded.action = cut(event.action, fieldLimits.action)
        bounded.reason = cut(event.reason, fieldLimits.reason)
        bounded.detail = cut(event.detail, fieldLimits.detail)
        return bounded
    }

    static func insert(_ events: [AuditEvent], _ db: Database) throws -> [AuditEvent] {
        try events.map { event in
            let event = Self.bounded(event)
            try db.execute(
                sql: """
                    INSERT INTO audit_event (at, module, kind, peer, action, outcome, reason, detail, count)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    event.at.timeIntervalSince1970, event.module, event.kind, event.peer, event.action,
                    event.outcome.rawValue, event.reason, event.detail, event.count,
                ])
            var recorded = event
            recorded.id = db.lastInsertedRowID
            return recorded
        }
    }

    public func events(matching query: AuditQuery = AuditQuery()) throws -> [AuditEvent] {
        var clauses: [String] = []
        var arguments: StatementArguments = []
        if let peer = query.peer { clauses.append("peer = ?"); arguments += [XmppAddr.bare(peer)] }
        if let module = query.module { clauses.append("module = ?"); arguments += [module] }
        if let kind = query.kind {
            if kind.hasSuffix(".") {
                clauses.append("substr(kind, 1, ?) = ?"); arguments += [kind.count, kind]
            } else {
                clauses.append("kind = ?"); arguments += [kind]
            }
        }
        if let outcome = query.outcome { clauses.append("outcome = ?"); arguments += [outcome.rawValue] }
        if let reason = query.reason { clauses.append("reason = ?"); arguments += [reason] }
        if let since = query.since { clauses.append("at >= ?"); arguments += [since.timeIntervalSince1970] }
        if let until = query.until { clauses.append("at < ?"); arguments += [until.timeIntervalSince1970] }
        let whereClause = clauses.isEmpty ? "" : "WHERE " + clauses.joined(separator: " AND ")
        arguments += [query.limit]
        let sql = "SELECT * FROM audit_event \(whereClause) ORDER BY at DESC, id DESC LIMIT ?"
        return try database.read { db in
            try Row.fetchAll(db, sql: sql, arguments: arguments).map { row in
                var event = AuditEvent(
                    at: Date(timeIntervalSince1970: row["at"]), module: row["module"], kind: row["kind"],
                    peer: row["peer"], action: row["action"],
                    outcome: AuditEvent.Outcome(rawValue: row["outcome"]) ?? .refused,
                    reason: row["reason"], detail: row["detail"], count: row["count"])
                event.id = row["id"]
                return event
            }
        }
    }
}
