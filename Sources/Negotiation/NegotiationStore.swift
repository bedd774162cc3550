import Foundation
import GRDB
import Policy
import Storage

/// The negotiation journal and the agreements both brokers signed, in the broker's SQLite
/// database. Every machine snapshot is written here before its action is performed (see
/// `NegotiationStateMachine`), so a killed broker resumes from exactly what its peer may know.
///
/// Tables (frozen migration `negotiation.v1`):
/// - `negotiation`: one row per negotiation, the machine's JSON snapshot plus columns for listing.
/// - `agreement`: the agreement, its canonical bytes, both signatures and both certificate chains
///   (PEM), enough to prove it to a third party (`intercloud agreement export|verify`).
/// - `negotiation_request`: negotiations an operator asked for from the CLI; the running broker
///   takes them (like `peer_approval`).
public struct NegotiationStore: Sendable {
    public let database: DatabasePool

    public init(database: DatabasePool) { self.database = database }

    public enum Schema: SchemaContributor {
        public static func registerMigrations(in migrator: inout DatabaseMigrator) {
            migrator.registerMigration("negotiation.v1") { db in
                try db.create(table: "negotiation") { t in
                    t.primaryKey("id", .text)
                    t.column("peer", .text).notNull().indexed()
                    t.column("peer_full_jid", .text).notNull()
                    t.column("role", .text).notNull()
                    t.column("state", .text).notNull()
                    t.column("snapshot", .blob).notNull()
                    t.column("reason", .text)
                    t.column("created_at", .datetime).notNull()
                    t.column("updated_at", .datetime).notNull()
                }
                try db.create(table: "agreement") { t in
                    t.primaryKey("id", .text)
                    t.column("negotiation_id", .text).notNull().unique()
                    t.column("consumer", .text).notNull().indexed()
                    t.column("provider", .text).notNull().indexed()
                    t.column("state", .text).notNull()
                    t.column("agreement", .blob).notNull()
                    t.column("canonical", .blob).notNull()
                    t.column("provider_signature", .blob).notNull()
                    t.column("provider_chain", .text).notNull()
                    t.column("consumer_signature", .blob)
                    t.column("consumer_chain", .text)
                    t.column("valid_from", .datetime)
                    t.column("valid_until", .datetime)
                    t.column("created_at", .datetime).notNull()
                    t.column("updated_at", .datetime).notNull()
                }
                try db.create(table: "negotiation_request") { t in
                    t.primaryKey("id", .text)
                    t.column("peer", .text).notNull()
                    t.column("terms", .blob).notNull()
                    t.column("requested_at", .datetime).notNull()
                    t.column("taken", .boolean).notNull().defaults(to: false)
                }
            }
        }
    }

    /// One negotiation as listed by `intercloud negotiations`.
    public struct Row: Sendable, Hashable, Codable, FetchableRecord {
        public var id: String
        public var peer: String
        public var peerFullJID: String
        public var role: String
        public var state: String
        public var reason: String?
        public var createdAt: Date
        public var updatedAt: Date

        public init(row: GRDB.Row) {
            id = row["id"]
            peer = row["peer"]
            peerFullJID = row["peer_full_jid"]
            role = row["role"]
            state = row["state"]
            reason = row["reason"]
            createdAt = row["created_at"]
            updatedAt = row["updated_at"]
        }
    }

    /// States of a stored agreement: `agreed` (provider signed), `verified` (both signed),
    /// `finalized` (in force within its period), `terminated` (the negotiation ended before finalizing).
    public enum AgreementState: String, Sendable, Codable {
        case agreed, verified, finalized, terminated
    }

    public struct StoredAgreement: Sendable, Hashable {
        public var agreement: Agreement
        public var state: AgreementState
        public var canonical: [UInt8]
        public var providerSignature: [UInt8]
        public var providerChainPEM: String
        public var consumerSignature: [UInt8]?
        public var consumerChainPEM: String?
    }

    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .secondsSince1970
        encoder.outputFormatting = .sortedKeys
        return encoder
    }()

    static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .secondsSince1970
        return decoder
    }()

    // MARK: negotiations

    /// Writes the snapshot (insert or update) in one transaction with `alsoInSameTransaction`.
    public func save(
        _ snapshot: NegotiationStateMachine.Snapshot, peerFullJID: String, now: Date,
        alsoInSameTransaction: ((Database) throws -> Void)? = nil
    ) throws {
        let blob = try Self.encoder.encode(snapshot)
        try database.write { db in
            try db.execute(
                sql: """
                    INSERT INTO negotiation(id, peer, peer_full_jid, role, state, snapshot, reason, created_at, updated_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT(id) DO UPDATE SET peer_full_jid = excluded.peer_full_jid, state = excluded.state,
                      snapshot = excluded.snapshot, reason = excluded.reason, updated_at = excluded.updated_at
                    """,
                arguments: [
                    snapshot.negotiationID, snapshot.peer, peerFullJID, snapshot.role.rawValue, snapshot.state.rawValue, blob,
                    snapshot.terminationReason, now, now,
                ])
            try alsoInSameTransaction?(db)
        }
    }

    public func snapshot(_ id: String) throws -> (snapshot: NegotiationStateMachine.Snapshot, peerFullJID: String)? {
        try database.read { db in
            guard let row = try GRDB.Row.fetchOne(db, sql: "SELECT snapshot, peer_full_jid FROM negotiation WHERE id = ?", arguments: [id]) else {
                return nil
            }
            let blob: Data = row["snapshot"]
            return (try Self.decoder.decode(NegotiationStateMachine.Snapshot.self, from: blob), row["peer_full_jid"])
        }
    }

    /// Negotiations not yet FINALIZED or TERMINATED, to resume at start.
    public func unfinished() throws -> [(snapshot: NegotiationStateMachine.Snapshot, peerFullJID: String)] {
        try database.read { db in
            try GRDB.Row.fetchAll(
                db, sql: "SELECT snapshot, peer_full_jid FROM negotiation WHERE state NOT IN ('FINALIZED', 'TERMINATED') ORDER BY created_at"
            ).map { row in
                let blob: Data = row["snapshot"]
                return (try Self.decoder.decode(NegotiationStateMachine.Snapshot.self, from: blob), row["peer_full_jid"])
            }
        }
    }

    public func negotiations(peer: String? = nil) throws -> [Row] {
        try database.read { db in
            if let peer {
                return try Row.fetchAll(db, sql: "SELECT * FROM negotiation WHERE peer = ? ORDER BY created_at DESC", arguments: [peer])
            }
            return try Row.fetchAll(db, sql: "SELECT * FROM negotiation ORDER BY created_at DESC")
        }
    }

    public func negotiation(_ id: String) throws -> Row? {
        try database.read { db in try Row.fetchOne(db, sql: "SELECT * FROM negotiation WHERE id = ?", arguments: [id]) }
    }

    // MARK: operator requests

    /// Queues a negotiation for the running broker (from the CLI).
    public func requestNegotiation(id: String, peer: String, terms: Terms, now: Date) throws {
        let blob = try Self.encoder.encode(terms)
        try database.write { db in
            try db.execute(
                sql: "INSERT INTO negotiation_request(id, peer, terms, requested_at, taken) VALUES (?, ?, ?, ?, 0)",
                arguments: [id, peer, blob, now])
        }
    }

    /// Requests not yet taken, marked taken in the same transaction.
    public func takeRequests() throws -> [(id: String, peer: String, terms: Terms)] {
        try database.write { db in
            let rows = try GRDB.Row.fetchAll(db, sql: "SELECT id, peer, terms FROM negotiation_request WHERE taken = 0 ORDER BY requested_at")
            try db.execute(sql: "UPDATE negotiation_request SET taken = 1 WHERE taken = 0")
            return rows.compactMap { row in
                let blob: Data = row["terms"]
                guard let terms = try? Self.decoder.decode(Terms.self, from: blob) else { return nil }
                return (row["id"], row["peer"], terms)
            }
        }
    }

    // MARK: agreements

    /// Records an agreement signed by the provider (state `agreed`), inside the caller's transaction.
    static func insertAgreement(
        _ agreement: Agreement, providerSignature: [UInt8], providerChainPEM: String, now: Date, in db: Database
    ) throws {
        try db.execute(
            sql: """
                INSERT INTO agreement(id, negotiation_id, consumer, provider, state, agreement, canonical, provider_signature,
                  provider_chain, valid_from, valid_until, created_at, updated_at)
                VALUES (?, ?, ?, ?, 'agreed', ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(id) DO NOTHING
                """,
            arguments: [
                agreement.id, agreement.negotiationID, agreement.consumer, agreement.provider, try encoder.encode(agreement),
                Data(agreement.canonicalBytes()), Data(providerSignature), providerChainPEM, agreement.terms.period.from,
                agreement.terms.period.until, now, now,
            ])
    }

    static func addCountersignature(agreementID: String, signature: [UInt8], chainPEM: String, now: Date, in db: Database) throws {
        try db.execute(
            sql: "UPDATE agreement SET consumer_signature = ?, consumer_chain = ?, state = 'verified', updated_at = ? WHERE id = ? AND state IN ('agreed', 'verified')",
            arguments: [Data(signature), chainPEM, now, agreementID])
    }

    static func setAgreementState(negotiationID: String, _ state: AgreementState, now: Date, in db: Database) throws {
        try db.execute(
            sql: "UPDATE agreement SET state = ?, updated_at = ? WHERE negotiation_id = ? AND state != 'finalized'",
            arguments: [state.rawValue, now, negotiationID])
    }

    public func agreement(_ id: String) throws -> StoredAgreement? {
        try database.read { db in
            try GRDB.Row.fetchOne(db, sql: "SELECT * FROM agreement WHERE id = ?", arguments: [id]).map(Self.stored)
        }
    }

    public func agreement(negotiationID: String) throws -> StoredAgreement? {
        try database.read { db in
            try GRDB.Row.fetchOne(db, sql: "SELECT * FROM agreement WHERE negotiation_id = ?", arguments: [negotiationID]).map(Self.stored)
        }
    }

    /// Agreements with `peer` on either side, newest first; `state` filters.
    public func agreements(peer: String? = nil, state: AgreementState? = nil) throws -> [StoredAgreement] {
        try database.read { db in
            var sql = "SELECT * FROM agreement WHERE 1 = 1"
            var arguments: StatementArguments = []
            if let peer {
                sql += " AND (consumer = ? OR provider = ?)"
                _ = arguments.append(contentsOf: [peer, peer])
            }
            if let state {
                sql += " AND state = ?"
                _ = arguments.append(contentsOf: [state.rawValue])
            }
            sql += " ORDER BY created_at DESC, id"
            return try GRDB.Row.fetchAll(db, sql: sql, arguments: arguments).map(Self.stored)
        }
    }

    /// Visits FINALIZED agreements between `consumer` and `provider` in force at `date`, newest
    /// first, decoding one at a time until `visit` returns true (found). Cheap for the common case
    /// where the newest agreement answers a request check.
    public func firstAgreementInForce(
        consumer: String, provider: String, at date: Date, where visit: (Agreement) -> Bool
    ) throws -> Agreement? {
        try database.read { db in
            let rows = try GRDB.Row.fetchCursor(
                db,
                sql: """
                    SELECT agreement FROM agreement
                    WHERE consumer = ? AND provider = ? AND state = 'finalized'
                      AND (valid_from IS NULL OR valid_from <= ?) AND (valid_until IS NULL OR valid_until > ?)
                    ORDER BY created_at DESC, id
                    """,
                arguments: [consumer, provider, date, date])
            while let row = try rows.next() {
                let blob: Data = row["agreement"]
                let agreement = try Self.decoder.decode(Agreement.self, from: blob)
                if visit(agreement) { return agreement }
            }
            return nil
        }
    }

    static func stored(_ row: GRDB.Row) throws -> StoredAgreement {
        let blob: Data = row["agreement"]
        let canonical: Data = row["canonical"]
        let providerSignature: Data = row["provider_signature"]
        let consumerSignature: Data? = row["consumer_signature"]
        return StoredAgreement(
            agreement: try decoder.decode(Agreement.self, from: blob),
            state: AgreementState(rawValue: row["state"]) ?? .terminated,
            canonical: Array(canonical), providerSignature: Array(providerSignature), providerChainPEM: row["provider_chain"],
            consumerSignature: consumerSignature.map(Array.init), consumerChainPEM: row["consumer_chain"])
    }
}
