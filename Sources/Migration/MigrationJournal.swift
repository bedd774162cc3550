import Foundation
import GRDB
import Storage

/// The migration tables. "migration.v1" is frozen: a schema change is a new migration.
public enum MigrationSchema: SchemaContributor {
    public static func registerMigrations(in migrator: inout DatabaseMigrator) {
        migrator.registerMigration("migration.v1") { db in
            // One row per migration and side: the machine's snapshot, rewritten before every action.
            try db.create(table: "migration") { t in
                t.column("id", .text).notNull()
                t.column("role", .text).notNull()
                t.column("peer", .text).notNull()
                t.column("phase", .text).notNull()
                t.column("finished", .boolean).notNull()
                t.column("snapshot", .blob).notNull()
                t.column("created_at", .datetime).notNull()
                t.column("updated_at", .datetime).notNull()
                t.primaryKey(["id", "role"])
            }
            // What happened, in order: for `intercloud migrations` and `migrations watch ID`.
            try db.create(table: "migration_step") { t in
                t.autoIncrementedPrimaryKey("seq")
                t.column("migration_id", .text).notNull()
                t.column("role", .text).notNull()
                t.column("at", .datetime).notNull()
                t.column("phase", .text).notNull()
                t.column("step", .text).notNull()
                t.column("outcome", .text).notNull()
                t.column("detail", .text).notNull()
            }
            try db.create(index: "migration_step_by_migration", on: "migration_step", columns: ["migration_id", "seq"])
            try db.create(table: "migration_progress") { t in
                t.autoIncrementedPrimaryKey("seq")
                t.column("migration_id", .text).notNull()
                t.column("role", .text).notNull()
                t.column("at", .datetime).notNull()
                t.column("bytes", .integer).notNull()
                t.column("total_bytes", .integer)
                t.column("bytes_per_second", .double).notNull()
                t.column("eta_seconds", .double)
            }
            try db.create(index: "migration_progress_by_migration", on: "migration_progress", columns: ["migration_id", "seq"])
        }
    }
}

/// One migration as listed by `intercloud migrations`.
public struct MigrationSummary: Sendable, Hashable {
    public var migrationID: String
    public var role: MigrationRole
    public var peer: String
    public var phase: String
    public var finished: Bool
    public var createdAt: Date
    public var updatedAt: Date
}

/// One line of a migration's step log.
public struct MigrationStepRecord: Sendable, Hashable, Codable, FetchableRecord {
    public var seq: Int64
    public var migrationID: String
    public var role: String
    public var at: Date
    public var phase: String
    /// The action (`send propose`, `driver shutdown`, ...).
    public var step: String
    /// `issued`, `succeeded`, `failed`, `answered`, `retry`, `completed`, `rolled-back`.
    public var outcome: String
    public var detail: String

    enum CodingKeys: String, CodingKey {
        case seq, migrationID = "migration_id", role, at, phase, step, outcome, detail
    }
}

/// One progress report of an image transfer.
public struct MigrationProgressRecord: Sendable, Hashable, Codable, FetchableRecord {
    public var seq: Int64
    public var migrationID: String
    public var role: String
    public var at: Date
    public var bytes: Int64
    public var totalBytes: Int64?
    public var bytesPerSecond: Double
    public var etaSeconds: Double?

    enum CodingKeys: String, CodingKey {
        case seq, migrationID = "migration_id", role, at, bytes, totalBytes = "total_bytes"
        case bytesPerSecond = "bytes_per_second", etaSeconds = "eta_seconds"
    }
}

/// The migration journal in SQLite: the snapshot of each machine, written (with `synchronous = FULL`,
/// see `IntercloudDatabase`) before the action it leads to is performed, a step log and transfer progress.
public struct MigrationJournal: Sendable {
    public let database: DatabasePool

    /// Uses a database opened with `MigrationSchema` among its contributors (the broker's own).
    public init(database: DatabasePool) {
        self.database = database
    }

    /// Opens (or creates) a database holding only the migration tables.
    public static func open(path: String) throws -> MigrationJournal {
        MigrationJournal(database: try IntercloudDatabase.open(path: path, schema: [MigrationSchema.self]))
    }

    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }()

    /// Stores a machine's snapshot and logs the step it is about to perform, in one transaction.
    func save<S: Encodable & Sendable>(
        _ snapshot: S, migrationID: String, role: MigrationRole, peer: String, phase: String, finished: Bool,
        step: String, outcome: String, detail: String, now: Date
    ) async throws {
        let data = try Self.encoder.encode(snapshot)
        // GRDB's async write: the durable commit (an fsync) runs on the database's own writer
        // queue while this task is suspended, not on one of the cooperative threads.
        try await database.write { db in
            try db.execute(
                sql: """
                    INSERT INTO migration (id, role, peer, phase, finished, snapshot, created_at, updated_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT (id, role) DO UPDATE SET phase = excluded.phase, finished = excluded.finished,
                        snapshot = excluded.snapshot, updated_at = excluded.updated_at
                    """,
                arguments: [migrationID, role.rawValue, peer, phase, finished, data, now, now])
            try Self.insertStep(db, migrationID: migrationID, role: role, phase: phase, step: step, outcome: outcome, detail: detail, now: now)
        }
    }

    /// Logs the result of a step (the snapshot is stored with the next action).
    func log(migrationID: String, role: MigrationRole, phase: String, step: String, outcome: String, detail: String, now: Date) async throws {
        try await database.write { db in
            try Self.insertStep(db, migrationID: migrationID, role: role, phase: phase, step: step, outcome: outcome, detail: detail, now: now)
        }
    }

    private static func insertStep(
        _ db: Database, migrationID: String, role: MigrationRole, phase: String, step: String, outcome: String, detail: String, now: Date
    ) throws {
        try db.execute(
            sql: "INSERT INTO migration_step (migration_id, role, at, phase, step, outcome, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
            arguments: [migrationID, role.rawValue, now, phase, step, outcome, String(detail.prefix(2000))])
    }

    func recordProgress(migrationID: String, role: MigrationRole, progress: TransferProgress, now: Date) throws {
        try database.write { db in
            try db.execute(
                sql: """
                    INSERT INTO migration_progress (migration_id, role, at, bytes, total_bytes, bytes_per_second, eta_seconds)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [migrationID, role.rawValue, now, progress.bytes, progress.totalBytes, progress.bytesPerSecond, progress.etaSeconds])
        }
    }

    public func sourceSnapshot(_ migrationID: String) throws -> SourceMigration.Snapshot? {
        try snapshot(migrationID, role: .source)
    }

    public func destinationSnapshot(_ migrationID: String) throws -> DestinationMigration.Snapshot? {
        try snapshot(migrationID, role: .destination)
    }

    private func snapshot<S: Decodable>(_ migrationID: String, role: MigrationRole) throws -> S? {
        let data = try database.read { db in
            try Data.fetchOne(db, sql: "SELECT snapshot FROM migration WHERE id = ? AND role = ?", arguments: [migrationID, role.rawValue])
        }
        guard let data else { return nil }
        return try JSONDecoder().decode(S.self, from: data)
    }

    /// All migrations, newest first.
    public func migrations() throws -> [MigrationSummary] {
        try database.read { db in
            try Row.fetchAll(db, sql: "SELECT id, role, peer, phase, finished, created_at, updated_at FROM migration ORDER BY created_at DESC, id")
                .map { row in
                    MigrationSummary(
                        migrationID: row["id"], role: MigrationRole(rawValue: row["role"]) ?? .source, peer: row["peer"],
                        phase: row["phase"], finished: row["finished"], createdAt: row["created_at"], updatedAt: row["updated_at"])
                }
        }
    }

    /// Migrations not yet completed or rolled back, to resume after a restart.
    public func unfinished() throws -> [(migrationID: String, role: MigrationRole)] {
        try database.read { db in
            try Row.fetchAll(db, sql: "SELECT id, role FROM migration WHERE finished = 0 ORDER BY created_at, id").compactMap { row in
                MigrationRole(rawValue: row["role"]).map { (row["id"], $0) }
            }
        }
    }

    /// The step log of a migration; `after` a sequence number to follow it (`migrations watch ID`).
    public func steps(_ migrationID: String, role: MigrationRole? = nil, after seq: Int64 = 0) throws -> [MigrationStepRecord] {
        try database.read { db in
            try MigrationStepRecord.fetchAll(
                db,
                sql: "SELECT * FROM migration_step WHERE migration_id = ? AND (? IS NULL OR role = ?) AND seq > ? ORDER BY seq",
                arguments: [migrationID, role?.rawValue, role?.rawValue, seq])
        }
    }

    public func progress(_ migrationID: String, after seq: Int64 = 0) throws -> [MigrationProgressRecord] {
        try database.read { db in
            try MigrationProgressRecord.fetchAll(
                db, sql: "SELECT * FROM migration_progress WHERE migration_id = ? AND seq > ? ORDER BY seq", arguments: [migrationID, seq])
        }
    }

    /// Size ids held by destination migrations that reserved capacity but may not have created their
    /// instance yet (an instance, once created, counts in the driver's own capacity; while `creating`
    /// it may be counted twice, which errs on the safe side).
    public func reservedSizeIDs(excluding migrationID: String? = nil) throws -> [String] {
        let phases = [DestinationPhase.offering, .preparing, .reserved, .receiving, .importing, .creating, .arriving].map(\.rawValue)
        let rows = try database.read { db in
            try Row.fetchAll(
                db,
                sql: "SELECT id, snapshot FROM migration WHERE role = 'destination' AND finished = 0 AND phase IN (\(phases.map { _ in "?" }.joined(separator: ",")))",
                arguments: StatementArguments(phases))
        }
        return try rows.compactMap { row -> String? in
            let id: String = row["id"]
            guard id != migrationID else { return nil }
            let data: Data = row["snapshot"]
            return try JSONDecoder().decode(DestinationMigration.Snapshot.self, from: data).reservation?.sizeID
        }
    }
}
