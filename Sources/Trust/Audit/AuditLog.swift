import Foundation
import GRDB

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

    public init(
        at: Date, module: String, kind: String, peer: String, action: String, outcome: Outcome,
        reason: String = "", detail: String = ""
    ) {
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
/// of every module. Writes are synchronous and durable (the database runs `synchronous = FULL`):
/// a refusal is on disk before the refusal is sent.
public struct AuditLog: Sendable {
    public let database: DatabasePool

    public init(database: DatabasePool) { self.database = database }

    @discardableResult
    public func record(_ event: AuditEvent) throws -> AuditEvent {
        try database.write { db in
            try db.execute(
                sql: """
                    INSERT INTO audit_event (at, module, kind, peer, action, outcome, reason, detail)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    event.at.timeIntervalSince1970, event.module, event.kind, event.peer, event.action,
                    event.outcome.rawValue, event.reason, event.detail,
                ])
            var recorded = event
            recorded.id = db.lastInsertedRowID
            return recorded
        }
    }

    /// Convenience for a refusal by any module.
    @discardableResult
    public func refused(
        module: String, kind: String, peer: String, action: String, reason: String, detail: String = "",
        at: Date
    ) throws -> AuditEvent {
        try record(AuditEvent(
            at: at, module: module, kind: kind, peer: XmppAddr.bare(peer), action: action, outcome: .refused,
            reason: reason, detail: detail))
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
                    reason: row["reason"], detail: row["detail"])
                event.id = row["id"]
                return event
            }
        }
    }
}
