import Foundation
import GRDB

/// Which side of the agreement this broker is on for a ledger row.
public enum LedgerRole: String, Codable, Sendable, Hashable, CaseIterable {
    case provider, consumer
}

/// Where a usage record stands between the two brokers.
public enum LedgerState: String, Codable, Sendable, Hashable, CaseIterable {
    /// Signed by the provider, awaiting the consumer's answer.
    case proposed
    /// Signed by both: billable.
    case countersigned
    /// The consumer refused it, with reasons; the provider answers with a new record (new sequence).
    case disputed
}

/// One ledger row.
public struct LedgerEntry: Sendable, Hashable {
    public var key: UsageRecordKey
    public var consumer: String
    public var role: LedgerRole
    /// The other broker's bare JID.
    public var peer: String
    public var period: MeteringPeriod
    public var createdAt: Date
    public var canonicalBytes: [UInt8]
    /// Hex SHA-256 of `canonicalBytes`.
    public var sha256: String
    public var providerSignature: [UInt8]
    public var consumerSignature: [UInt8]?
    public var disputeReasons: [String]
    public var state: LedgerState
    public var recordedAt: Date
    public var settledAt: Date?

    /// The record, parsed back from the stored bytes.
    public func record() throws(UsageRecordError) -> UsageRecord {
        try UsageRecord(canonicalBytes: canonicalBytes)
    }
}

/// What a third party needs to check a usage record offline: the exact signed bytes, their
/// digest, the provider's signature and the consumer's countersignature (or dispute reasons). The
/// signatures are checked with the brokers' certificates, outside this module.
public struct UsageProof: Codable, Sendable, Hashable {
    public var key: UsageRecordKey
    public var canonicalBytes: [UInt8]
    public var sha256: String
    public var providerSignature: [UInt8]
    public var consumerSignature: [UInt8]?
    public var state: LedgerState
    public var disputeReasons: [String]
}

/// Why the ledger refused a write.
public enum LedgerError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A different record is already stored under this key: a provider may not rewrite history.
    case conflictingRecord(UsageRecordKey, storedSHA256: String, offeredSHA256: String)
    case notFound(UsageRecordKey)
    /// E.g. countersigning a disputed record.
    case invalidTransition(UsageRecordKey, from: LedgerState, to: LedgerState)
    case invalidInput(String)
    /// A stored row that cannot be read back (edited outside the broker).
    case corruptRow(String)

    public var description: String {
        switch self {
        case .conflictingRecord(let key, let stored, let offered):
            "usage record \(key) already stored with SHA-256 \(stored); refusing a different one (\(offered))"
        case .notFound(let key): "no usage record \(key) in the ledger"
        case .invalidTransition(let key, let from, let to): "usage record \(key) is \(from.rawValue), cannot become \(to.rawValue)"
        case .invalidInput(let detail): "invalid ledger input: \(detail)"
        case .corruptRow(let detail): "corrupt ledger row: \(detail)"
        }
    }
}

/// The bilateral usage ledger (tables of `MeteringSchema`). Both brokers keep one: the provider
/// records what it signed and later the consumer's answer; the consumer records what it received
/// and its answer. Every write is one transaction committed with `synchronous = FULL` (see
/// `durableWrite`), so it is on disk before the call returns.
public struct UsageLedger: Sendable {
    public let database: DatabasePool

    /// Upper bound on a signature's size (RSA-8192 is 1 KiB; ECDSA and Ed25519 far less).
    public static let maximumSignatureBytes = 2048
    public static let maximumDisputeReasons = 64
    public static let maximumDisputeReasonBytes = 2048

    public init(database: DatabasePool) { self.database = database }

    /// Stores a provider-signed record as `proposed`. Storing the same record again (same canonical
    /// bytes) succeeds and returns the stored entry unchanged, so retries are harmless; a different
    /// record under the same (agreement, sequence, provider) is refused.
    @discardableResult
    public func propose(_ record: UsageRecord, providerSignature: [UInt8], role: LedgerRole, at now: Date) throws -> LedgerEntry {
        do { try record.validate() } catch { throw LedgerError.invalidInput("\(error)") }
        try Self.checkSignature(providerSignature)
        let bytes = record.canonicalBytes()
        guard bytes.count <= Metering.maximumRecordBytes else { throw LedgerError.invalidInput("record of \(bytes.count) bytes") }
        let digest = SHA256.hex(SHA256.digest(bytes))
        let key = record.key
        return try durableWrite { db in
            if let existing = try Self.fetch(key, in: db) {
                guard existing.canonicalBytes == bytes else {
                    throw LedgerError.conflictingRecord(key, storedSHA256: existing.sha256, offeredSHA256: digest)
                }
                return existing
            }
            try db.execute(
                sql: """
                    INSERT INTO metering_usage_record (
                        agreement_id, sequence, provider, consumer, role, peer, period_from, period_until, created_at,
                        canonical, sha256, provider_signature, state, recorded_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    key.agreementID, key.sequence, key.provider, record.consumer, role.rawValue,
                    role == .provider ? record.consumer : record.provider,
                    CanonicalText.wholeSeconds(record.period.from), CanonicalText.wholeSeconds(record.period.until),
                    CanonicalText.wholeSeconds(record.createdAt), Data(bytes), digest, Data(providerSignature),
                    LedgerState.proposed.rawValue, now.timeIntervalSince1970,
                ])
            guard let stored = try Self.fetch(key, in: db) else { throw LedgerError.notFound(key) }
            return stored
        }
    }

    /// Marks a proposed record countersigned with the consumer's signature. Countersigning again
    /// returns the entry unchanged (the first countersignature is kept); a disputed record cannot
    /// be countersigned.
    @discardableResult
    public func countersign(_ key: UsageRecordKey, consumerSignature: [UInt8], at now: Date) throws -> LedgerEntry {
        try Self.checkSignature(consumerSignature)
        return try transition(key, to: .countersigned, at: now) { db in
            try db.execute(
                sql: """
                    UPDATE metering_usage_record SET state = ?, consumer_signature = ?, settled_at = ?
                    WHERE agreement_id = ? AND sequence = ? AND provider = ?
                    """,
                arguments: [LedgerState.countersigned.rawValue, Data(consumerSignature), now.timeIntervalSince1970,
                            key.agreementID, key.sequence, key.provider])
        }
    }

    /// Marks a proposed record disputed with the consumer's reasons. Disputing again returns the
    /// entry unchanged; a countersigned record cannot be disputed.
    @discardableResult
    public func dispute(_ key: UsageRecordKey, reasons: [String], at now: Date) throws -> LedgerEntry {
        guard !reasons.isEmpty, reasons.count <= Self.maximumDisputeReasons,
              reasons.allSatisfy({ !$0.isEmpty && $0.utf8.count <= Self.maximumDisputeReasonBytes })
        else {
            throw LedgerError.invalidInput("a dispute needs 1 to \(Self.maximumDisputeReasons) non-empty reasons of at most \(Self.maximumDisputeReasonBytes) bytes")
        }
        let encoded = String(decoding: try JSONEncoder().encode(reasons), as: UTF8.self)
        return try transition(key, to: .disputed, at: now) { db in
            try db.execute(
                sql: """
                    UPDATE metering_usage_record SET state = ?, dispute_reasons = ?, settled_at = ?
                    WHERE agreement_id = ? AND sequence = ? AND provider = ?
                    """,
                arguments: [LedgerState.disputed.rawValue, encoded, now.timeIntervalSince1970,
                            key.agreementID, key.sequence, key.provider])
        }
    }

    public func entry(_ key: UsageRecordKey) throws -> LedgerEntry? {
        try database.read { db in try Self.fetch(key, in: db) }
    }

    /// Entries with `peer` whose period overlaps `period`, optionally in one state, oldest period first.
    public func entries(peer: String, overlapping period: MeteringPeriod, state: LedgerState? = nil) throws -> [LedgerEntry] {
        var sql = "SELECT * FROM metering_usage_record WHERE peer = ? AND period_from < ? AND period_until > ?"
        var arguments: StatementArguments = [
            peer, CanonicalText.wholeSeconds(period.until), CanonicalText.wholeSeconds(period.from),
        ]
        if let state { sql += " AND state = ?"; arguments += [state.rawValue] }
        sql += " ORDER BY period_from, agreement_id, sequence"
        return try database.read { db in
            try Row.fetchAll(db, sql: sql, arguments: arguments).map(Self.entry(from:))
        }
    }

    /// Countersigned records with `peer`, in `role`, lying entirely within `period`: what a bill for
    /// that period covers.
    public func billableRecords(peer: String, role: LedgerRole, period: MeteringPeriod) throws -> [UsageRecord] {
        try entries(peer: peer, overlapping: period, state: .countersigned)
            .filter { $0.role == role && period.contains($0.period) }
            .map { entry in
                do { return try entry.record() } catch { throw LedgerError.corruptRow("\(entry.key): \(error)") }
            }
    }

    /// The next free sequence number for a provider's records under an agreement.
    public func nextSequence(agreementID: String, provider: String) throws -> Int64 {
        try database.read { db in
            let highest = try Int64.fetchOne(
                db, sql: "SELECT MAX(sequence) FROM metering_usage_record WHERE agreement_id = ? AND provider = ?",
                arguments: [agreementID, provider])
            return (highest ?? -1) + 1
        }
    }

    /// The stored bytes, digest and signatures of a record, for a third party to check.
    public func proof(of key: UsageRecordKey) throws -> UsageProof {
        guard let entry = try entry(key) else { throw LedgerError.notFound(key) }
        return UsageProof(
            key: key, canonicalBytes: entry.canonicalBytes, sha256: entry.sha256, providerSignature: entry.providerSignature,
            consumerSignature: entry.consumerSignature, state: entry.state, disputeReasons: entry.disputeReasons)
    }

    /// Stores a breach. The same breach (agreement, kind, from, until) recorded again replaces its
    /// detail, so re-measuring a period as samples arrive does not duplicate it.
    public func recordBreach(_ breach: SLABreach, at now: Date) throws {
        guard breach.detail.utf8.count <= 4096 else { throw LedgerError.invalidInput("breach detail longer than 4096 bytes") }
        try durableWrite { db in
            try db.execute(
                sql: """
                    INSERT INTO metering_sla_breach (agreement_id, kind, detail, from_time, until_time, recorded_at)
                    VALUES (?, ?, ?, ?, ?, ?)
                    ON CONFLICT (agreement_id, kind, from_time, until_time)
                    DO UPDATE SET detail = excluded.detail, recorded_at = excluded.recorded_at
                    """,
                arguments: [breach.agreementID, breach.kind.rawValue, breach.detail, breach.from.timeIntervalSince1970,
                            breach.until.timeIntervalSince1970, now.timeIntervalSince1970])
        }
    }

    /// Breaches overlapping `period`, of one agreement or all, oldest first.
    public func breaches(agreementID: String? = nil, overlapping period: MeteringPeriod) throws -> [SLABreach] {
        var sql = "SELECT * FROM metering_sla_breach WHERE from_time < ? AND until_time > ?"
        var arguments: StatementArguments = [period.until.timeIntervalSince1970, period.from.timeIntervalSince1970]
        if let agreementID { sql += " AND agreement_id = ?"; arguments += [agreementID] }
        sql += " ORDER BY from_time, id"
        return try database.read { db in
            try Row.fetchAll(db, sql: sql, arguments: arguments).map { row in
                let kindText: String = row["kind"]
                guard let kind = SLABreach.Kind(rawValue: kindText) else { throw LedgerError.corruptRow("breach kind \(kindText)") }
                return SLABreach(
                    agreementID: row["agreement_id"], kind: kind, detail: row["detail"],
                    from: Date(timeIntervalSince1970: row["from_time"]), until: Date(timeIntervalSince1970: row["until_time"]))
            }
        }
    }

    // MARK: - Rows

    /// Applies `update` if the record is proposed; returns it unchanged if already in `target`.
    private func transition(
        _ key: UsageRecordKey, to target: LedgerState, at now: Date, update: (Database) throws -> Void
    ) throws -> LedgerEntry {
        try durableWrite { db in
            guard let existing = try Self.fetch(key, in: db) else { throw LedgerError.notFound(key) }
            switch existing.state {
            case target: return existing
            case .proposed: break
            default: throw LedgerError.invalidTransition(key, from: existing.state, to: target)
            }
            try update(db)
            guard let updated = try Self.fetch(key, in: db) else { throw LedgerError.notFound(key) }
            return updated
        }
    }

    /// One immediate transaction on the writer connection with `synchronous = FULL`. Set here and
    /// not only when the database is opened because GRDB's `DatabasePool` switches the writer to
    /// `synchronous = NORMAL` when it enables WAL, after the configuration's `prepareDatabase`
    /// runs; in WAL mode NORMAL can lose the last commits on power loss, and a countersigned record
    /// must not be lost once acknowledged.
    private func durableWrite<T>(_ body: (Database) throws -> T) throws -> T {
        try database.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
            var result: T?
            try db.inTransaction(.immediate) {
                result = try body(db)
                return .commit
            }
            guard let result else { throw LedgerError.corruptRow("transaction ended without a result") }
            return result
        }
    }

    private static func checkSignature(_ signature: [UInt8]) throws {
        guard !signature.isEmpty, signature.count <= maximumSignatureBytes else {
            throw LedgerError.invalidInput("signature of \(signature.count) bytes (1 to \(maximumSignatureBytes))")
        }
    }

    private static func fetch(_ key: UsageRecordKey, in db: Database) throws -> LedgerEntry? {
        try Row.fetchOne(
            db, sql: "SELECT * FROM metering_usage_record WHERE agreement_id = ? AND sequence = ? AND provider = ?",
            arguments: [key.agreementID, key.sequence, key.provider]
        ).map(entry(from:))
    }

    private static func entry(from row: Row) throws -> LedgerEntry {
        let roleText: String = row["role"], stateText: String = row["state"]
        guard let role = LedgerRole(rawValue: roleText), let state = LedgerState(rawValue: stateText) else {
            throw LedgerError.corruptRow("role \(roleText), state \(stateText)")
        }
        var reasons: [String] = []
        if let reasonsText: String = row["dispute_reasons"] {
            do {
                reasons = try JSONDecoder().decode([String].self, from: Data(reasonsText.utf8))
            } catch {
                throw LedgerError.corruptRow("dispute reasons: \(error)")
            }
        }
        let canonical: Data = row["canonical"], providerSignature: Data = row["provider_signature"]
        let consumerSignature: Data? = row["consumer_signature"]
        let periodFrom: Int64 = row["period_from"], periodUntil: Int64 = row["period_until"], created: Int64 = row["created_at"]
        let settled: Double? = row["settled_at"]
        return LedgerEntry(
            key: UsageRecordKey(agreementID: row["agreement_id"], sequence: row["sequence"], provider: row["provider"]),
            consumer: row["consumer"], role: role, peer: row["peer"],
            period: MeteringPeriod(
                from: Date(timeIntervalSince1970: TimeInterval(periodFrom)), until: Date(timeIntervalSince1970: TimeInterval(periodUntil))),
            createdAt: Date(timeIntervalSince1970: TimeInterval(created)),
            canonicalBytes: [UInt8](canonical), sha256: row["sha256"], providerSignature: [UInt8](providerSignature),
            consumerSignature: consumerSignature.map { [UInt8]($0) }, disputeReasons: reasons, state: state,
            recordedAt: Date(timeIntervalSince1970: row["recorded_at"]), settledAt: settled.map(Date.init(timeIntervalSince1970:)))
    }
}
