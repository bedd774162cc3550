import Foundation
import GRDB
import Storage

/// The backup tables. "backups.v1" is frozen: a schema change is a new migration.
public enum BackupSchema: SchemaContributor {
    public static func registerMigrations(in migrator: inout DatabaseMigrator) {
        migrator.registerMigration("backups.v1") { db in
            // One row per backup run or restore: the machine's snapshot, rewritten before every action.
            try db.create(table: "backup_job") { t in
                t.column("id", .text).primaryKey()
                // "run" or "restore".
                t.column("kind", .text).notNull()
                t.column("policy", .text).notNull()
                t.column("phase", .text).notNull()
                t.column("settled", .boolean).notNull()
                t.column("snapshot", .blob).notNull()
                t.column("created_at", .datetime).notNull()
                t.column("updated_at", .datetime).notNull()
            }
            try db.create(index: "backup_job_by_policy", on: "backup_job", columns: ["kind", "policy", "created_at"])
            try db.create(table: "backup_step") { t in
                t.autoIncrementedPrimaryKey("seq")
                t.column("job_id", .text).notNull()
                t.column("at", .datetime).notNull()
                t.column("phase", .text).notNull()
                t.column("step", .text).notNull()
                t.column("detail", .text).notNull()
            }
            try db.create(index: "backup_step_by_job", on: "backup_step", columns: ["job_id", "seq"])
        }
    }
}

/// One line of a run's or restore's step log.
public struct BackupStepRecord: Sendable, Hashable, Codable, FetchableRecord {
    public var seq: Int64
    public var jobID: String
    public var at: Date
    public var phase: String
    public var step: String
    public var detail: String

    enum CodingKeys: String, CodingKey {
        case seq, jobID = "job_id", at, phase, step, detail
    }
}

/// The backup journal in SQLite (`synchronous = FULL`, see `IntercloudDatabase`): each job's
/// snapshot is written in the same transaction as the step it is about to perform.
public struct BackupJournal: Sendable {
    public enum Kind: String, Sendable, Codable { case run, restore }

    public let database: DatabasePool

    public init(database: DatabasePool) { self.database = database }

    public static func open(path: String) throws -> BackupJournal {
        BackupJournal(database: try IntercloudDatabase.open(path: path, schema: [BackupSchema.self]))
    }

    /// Adds the backup tables to a database opened for other modules (the broker's own).
    public static func prepare(_ database: DatabasePool) throws {
        var migrator = DatabaseMigrator()
        BackupSchema.registerMigrations(in: &migrator)
        try migrator.migrate(database)
    }

    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }()

    /// Stores a job's snapshot and logs the step about to be performed, in one transaction.
    /// `insert` adds the job and refuses a second unsettled run of one policy.
    func save<S: Encodable>(
        _ snapshot: S, id: String, kind: Kind, policy: String, phase: String, settled: Bool, step: String, detail: String,
        insert: Bool = false, now: Date
    ) async throws {
        let data = try Self.encoder.encode(snapshot)
        try await database.write { db in
            if insert {
                if kind == .run, let holder = try String.fetchOne(
                    db, sql: "SELECT id FROM backup_job WHERE kind = 'run' AND policy = ? AND settled = 0", arguments: [policy]) {
                    throw BackupError.refused("policy \(policy) has a run under way (\(holder)); resume it first")
                }
                try db.execute(
                    sql: """
                        INSERT INTO backup_job (id, kind, policy, phase, settled, snapshot, created_at, updated_at)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                        """,
                    arguments: [id, kind.rawValue, policy, phase, settled, data, now, now])
            } else {
                try db.execute(
                    sql: "UPDATE backup_job SET phase = ?, settled = ?, snapshot = ?, updated_at = ? WHERE id = ?",
                    arguments: [phase, settled, data, now, id])
                guard db.changesCount == 1 else { throw BackupError.unknownRun(id) }
            }
            try db.execute(
                sql: "INSERT INTO backup_step (job_id, at, phase, step, detail) VALUES (?, ?, ?, ?, ?)",
                arguments: [id, now, phase, step, String(detail.prefix(2000))])
        }
    }

    /// Logs a step's result (the snapshot is stored with the next action).
    func log(id: String, phase: String, step: String, detail: String, now: Date) async throws {
        try await database.write { db in
            try db.execute(
                sql: "INSERT INTO backup_step (job_id, at, phase, step, detail) VALUES (?, ?, ?, ?, ?)",
                arguments: [id, now, phase, step, String(detail.prefix(2000))])
        }
    }

    public func run(_ id: String) throws -> BackupRun.Snapshot? {
        try document(id, kind: .run).map { try JSONDecoder().decode(BackupRun.Snapshot.self, from: $0) }
    }

    public func restore(_ id: String) throws -> BackupRestore.Snapshot? {
        try document(id, kind: .restore).map { try JSONDecoder().decode(BackupRestore.Snapshot.self, from: $0) }
    }

    private func document(_ id: String, kind: Kind) throws -> Data? {
        try database.read { db in
            try Data.fetchOne(db, sql: "SELECT snapshot FROM backup_job WHERE id = ? AND kind = ?", arguments: [id, kind.rawValue])
        }
    }

    /// Runs, newest first (of one policy, or all).
    public func runs(policy: String? = nil, limit: Int = 100) throws -> [BackupRun.Snapshot] {
        let documents = try database.read { db in
            if let policy {
                return try Data.fetchAll(
                    db, sql: "SELECT snapshot FROM backup_job WHERE kind = 'run' AND policy = ? ORDER BY created_at DESC, rowid DESC LIMIT ?",
                    arguments: [policy, limit])
            }
            return try Data.fetchAll(
                db, sql: "SELECT snapshot FROM backup_job WHERE kind = 'run' ORDER BY created_at DESC, rowid DESC LIMIT ?", arguments: [limit])
        }
        return try documents.map { try JSONDecoder().decode(BackupRun.Snapshot.self, from: $0) }
    }

    /// Restores, newest first.
    public func restores(limit: Int = 100) throws -> [BackupRestore.Snapshot] {
        let documents = try database.read { db in
            try Data.fetchAll(
                db, sql: "SELECT snapshot FROM backup_job WHERE kind = 'restore' ORDER BY created_at DESC, rowid DESC LIMIT ?", arguments: [limit])
        }
        return try documents.map { try JSONDecoder().decode(BackupRestore.Snapshot.self, from: $0) }
    }

    /// When each policy's newest run started: what the schedule counts from.
    public func lastRunStarts() throws -> [String: Date] {
        try database.read { db in
            var result: [String: Date] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT policy, MAX(created_at) AS started FROM backup_job WHERE kind = 'run' GROUP BY policy") {
                result[row["policy"]] = row["started"]
            }
            return result
        }
    }

    /// Jobs with a step under way, oldest first: what a restart resumes.
    public func unsettled() throws -> [(id: String, kind: Kind)] {
        try database.read { db in
            try Row.fetchAll(db, sql: "SELECT id, kind FROM backup_job WHERE settled = 0 ORDER BY created_at, rowid").compactMap { row in
                Kind(rawValue: row["kind"]).map { (row["id"], $0) }
            }
        }
    }

    public func steps(_ id: String) throws -> [BackupStepRecord] {
        try database.read { db in
            try BackupStepRecord.fetchAll(db, sql: "SELECT * FROM backup_step WHERE job_id = ? ORDER BY seq", arguments: [id])
        }
    }
}
