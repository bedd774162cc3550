import Foundation
import GRDB
import Storage
import XMPP

/// A peer broker as the registry knows it.
public struct PeerRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "peer"
    public var jid: String
    public var cloud: String?
    public var regions: String
    public var load: Double?
    public var fingerprint: String?
    public var features: String
    public var via: String?
    public var fullJID: String?
    /// none, pending-approval (asked us; waits for the operator), approved.
    public var subscription: String
    public var online: Bool
    public var firstSeen: Date
    public var lastSeen: Date

    enum CodingKeys: String, CodingKey {
        case jid, cloud, regions, load, fingerprint, features, via, subscription, online
        case fullJID = "full_jid", firstSeen = "first_seen", lastSeen = "last_seen"
    }

    public var regionList: [String] { (try? JSONDecoder().decode([String].self, from: Data(regions.utf8))) ?? [] }
    public var featureList: [String] { (try? JSONDecoder().decode([String].self, from: Data(features.utf8))) ?? [] }
}

/// The peer registry in SQLite. Every write is its own transaction, durable before the broker acts
/// on it (see `IntercloudDatabase`). The running broker's writes are async (`durableWrite`: the
/// fsync waits on GRDB's writer queue, not on a cooperative thread); the operator's decisions,
/// written by the CLI, stay synchronous. Reads stay synchronous: a WAL read of a few indexed rows
/// waits for no writer and no disk flush, and a hop to a reader queue would cost more than it.
public struct PeerRegistry: Sendable {
    public let database: DatabasePool

    public init(database: DatabasePool) { self.database = database }

    public enum Schema: SchemaContributor {
        public static func registerMigrations(in migrator: inout DatabaseMigrator) {
            // Frozen: never edit once shipped; add "peers.v2" instead.
            migrator.registerMigration("peers.v1") { db in
                try db.create(table: "peer") { t in
                    t.column("jid", .text).primaryKey()
                    t.column("cloud", .text)
                    t.column("regions", .text).notNull().defaults(to: "[]")
                    t.column("load", .double)
                    t.column("fingerprint", .text)
                    t.column("features", .text).notNull().defaults(to: "[]")
                    t.column("via", .text)
                    t.column("full_jid", .text)
                    t.column("subscription", .text).notNull().defaults(to: "none")
                    t.column("online", .boolean).notNull().defaults(to: false)
                    t.column("first_seen", .datetime).notNull()
                    t.column("last_seen", .datetime).notNull()
                }
                try db.create(table: "peer_approval") { t in
                    t.column("jid", .text).primaryKey()
                    t.column("approved_at", .datetime).notNull()
                    t.column("applied", .boolean).notNull().defaults(to: false)
                }
            }
            // The operator may also reject a peering request, and a request waits only so long:
            // when it was made is kept apart from `first_seen` (the peer may be known from a room).
            migrator.registerMigration("peers.v2-reject") { db in
                try db.alter(table: "peer_approval") { t in
                    t.add(column: "decision", .text).notNull().defaults(to: "approve")
                }
                try db.alter(table: "peer") { t in t.add(column: "requested_at", .datetime) }
                try db.execute(sql: "UPDATE peer SET requested_at = first_seen WHERE subscription = 'pending-approval'")
            }
        }
    }

    static func json(_ values: [String]) -> String {
        String(decoding: (try? JSONEncoder().encode(values)) ?? Data("[]".utf8), as: UTF8.self)
    }

    public func seen(_ observation: PeerDiscovery.Observation, now: Date) async throws {
        try await database.durableWrite { db in
            let key = observation.jid.description
            if var record = try PeerRecord.fetchOne(db, key: key) {
                record.cloud = observation.announcement.cloud
                record.regions = Self.json(observation.announcement.regions)
                record.load = observation.announcement.load
                record.fingerprint = observation.announcement.fingerprint
                record.via = observation.via
                record.fullJID = observation.fullJID.description
                record.online = true
                record.lastSeen = now
                try record.update(db)
            } else {
                try PeerRecord(
                    jid: key, cloud: observation.announcement.cloud, regions: Self.json(observation.announcement.regions),
                    load: observation.announcement.load, fingerprint: observation.announcement.fingerprint,
                    features: "[]", via: observation.via, fullJID: observation.fullJID.description, subscription: "none",
                    online: true, firstSeen: now, lastSeen: now
                ).insert(db)
            }
        }
    }

    public func offline(_ jid: JID, now: Date) async throws {
        try await database.durableWrite { db in
            try db.execute(sql: "UPDATE peer SET online = 0, last_seen = ? WHERE jid = ?", arguments: [now, jid.bare.description])
        }
    }

    public func allOffline() async throws {
        try await database.durableWrite { db in try db.execute(sql: "UPDATE peer SET online = 0 WHERE online = 1") }
    }

    public func storeFeatures(_ jid: JID, features: [String]) async throws {
        try await database.durableWrite { db in
            try db.execute(sql: "UPDATE peer SET features = ? WHERE jid = ?", arguments: [Self.json(features.sorted()), jid.bare.description])
        }
    }

    public func setSubscription(_ jid: JID, _ state: String, now: Date) async throws {
        try await database.durableWrite { db in
            let key = jid.bare.description
            if try PeerRecord.fetchOne(db, key: key) == nil {
                try PeerRecord(jid: key, cloud: nil, regions: "[]", load: nil, fingerprint: nil, features: "[]", via: nil,
                               fullJID: nil, subscription: state, online: false, firstSeen: now, lastSeen: now).insert(db)
            } else {
                try db.execute(sql: "UPDATE peer SET subscription = ? WHERE jid = ?", arguments: [state, key])
            }
            let requestedAt: Date? = state == "pending-approval" ? now : nil
            try db.execute(sql: "UPDATE peer SET requested_at = ? WHERE jid = ?", arguments: [requestedAt, key])
        }
    }

    public func all() throws -> [PeerRecord] {
        try database.read { db in try PeerRecord.order(Column("jid")).fetchAll(db) }
    }

    public func peer(_ jid: JID) throws -> PeerRecord? {
        try database.read { db in try PeerRecord.fetchOne(db, key: jid.bare.description) }
    }

    /// Records an operator's approval (from the CLI); the running broker applies it.
    public func approve(_ jid: JID, now: Date) throws {
        try recordDecision(jid, .approve, now: now)
    }

    /// Records an operator's rejection of a peering request (from the CLI); the running broker
    /// answers the peer `unsubscribed` and drops the request.
    public func reject(_ jid: JID, now: Date) throws {
        try recordDecision(jid, .reject, now: now)
    }

    public enum Decision: String, Sendable {
        case approve, reject
    }

    private func recordDecision(_ jid: JID, _ decision: Decision, now: Date) throws {
        try database.write { db in
            try db.execute(
                sql: """
                    INSERT INTO peer_approval(jid, approved_at, applied, decision) VALUES (?, ?, 0, ?)
                    ON CONFLICT(jid) DO UPDATE SET approved_at = excluded.approved_at, applied = 0, decision = excluded.decision
                    """,
                arguments: [jid.bare.description, now, decision.rawValue])
        }
    }

    /// Operator decisions not yet applied by the broker, in order, marked applied in the same
    /// transaction.
    public func takeOperatorDecisions() async throws -> [(jid: JID, decision: Decision)] {
        let rows = try await database.durableWrite { db in
            let rows = try Row.fetchAll(db, sql: "SELECT jid, decision FROM peer_approval WHERE applied = 0 ORDER BY approved_at")
            guard !rows.isEmpty else { return [(String, String)]() }
            try db.execute(sql: "UPDATE peer_approval SET applied = 1 WHERE applied = 0")
            return rows.map { ($0["jid"] as String, $0["decision"] as String) }
        }
        return rows.compactMap { jid, decision in
            guard let jid = try? JID(jid), let decision = Decision(rawValue: decision) else { return nil }
            return (jid, decision)
        }
    }

    /// Peering requests waiting for the operator since before `cutoff`. The broker asks every
    /// second, idle or not: the cutoff is bound as a `StoredDate`, which keeps GRDB's
    /// `DateFormatter` (and with it ICU) out of a broker that does nothing else.
    public func pendingApprovals(requestedBefore cutoff: Date) throws -> [JID] {
        try database.read { db in
            try String.fetchAll(
                db, sql: "SELECT jid FROM peer WHERE subscription = 'pending-approval' AND requested_at < ? ORDER BY requested_at",
                arguments: [StoredDate(cutoff)]
            ).compactMap { try? JID($0) }
        }
    }

    /// Drops a declined peering request: a row that exists only because of the request goes,
    /// a peer also known otherwise (from a room) keeps its row with no subscription.
    public func clearPendingApproval(_ jid: JID) async throws {
        try await database.durableWrite { db in
            let key = jid.bare.description
            try db.execute(sql: "DELETE FROM peer WHERE jid = ? AND subscription = 'pending-approval' AND via IS NULL", arguments: [key])
            try db.execute(
                sql: "UPDATE peer SET subscription = 'none', requested_at = NULL WHERE jid = ? AND subscription = 'pending-approval'",
                arguments: [key])
        }
    }
}
