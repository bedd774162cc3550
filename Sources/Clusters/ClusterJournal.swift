import Foundation
import GRDB
import Storage

/// The cluster tables. "clusters.v1" is frozen: a schema change is a new migration.
public enum ClusterSchema: SchemaContributor {
    public static func registerMigrations(in migrator: inout DatabaseMigrator) {
        migrator.registerMigration("clusters.v1") { db in
            // One row per launched cluster: the machine's snapshot, rewritten before every action.
            try db.create(table: "cluster") { t in
                t.column("id", .text).primaryKey()
                t.column("name", .text).notNull()
                t.column("phase", .text).notNull()
                // Phase settled (nothing under way), so `resume` leaves it alone.
                t.column("settled", .boolean).notNull()
                t.column("source", .text).notNull()
                t.column("snapshot", .blob).notNull()
                t.column("created_at", .datetime).notNull()
                t.column("updated_at", .datetime).notNull()
            }
            try db.create(index: "cluster_by_name", on: "cluster", columns: ["name", "created_at"])
            // What happened, in order: `intercloud cluster show` prints it.
            try db.create(table: "cluster_step") { t in
                t.autoIncrementedPrimaryKey("seq")
                t.column("cluster_id", .text).notNull()
                t.column("at", .datetime).notNull()
                t.column("phase", .text).notNull()
                t.column("step", .text).notNull()
                t.column("detail", .text).notNull()
            }
            try db.create(index: "cluster_step_by_cluster", on: "cluster_step", columns: ["cluster_id", "seq"])
        }
    }
}

/// One line of a cluster's step log.
public struct ClusterStepRecord: Sendable, Hashable, Codable, FetchableRecord {
    public var seq: Int64
    public var clusterID: String
    public var at: Date
    public var phase: String
    public var step: String
    public var detail: String

    enum CodingKeys: String, CodingKey {
        case seq, clusterID = "cluster_id", at, phase, step, detail
    }
}

/// The cluster journal in SQLite: each cluster's snapshot, written (with `synchronous = FULL`, see
/// `IntercloudDatabase`) in the same transaction as the step it is about to perform, and the step log.
public struct ClusterJournal: Sendable {
    public let database: DatabasePool

    /// Uses a database that has the cluster tables (see `prepare`).
    public init(database: DatabasePool) {
        self.database = database
    }

    /// Opens (or creates) a database holding only the cluster tables.
    public static func open(path: String) throws -> ClusterJournal {
        ClusterJournal(database: try IntercloudDatabase.open(path: path, schema: [ClusterSchema.self]))
    }

    /// Adds the cluster tables to a database opened for other modules (the broker's own), with a
    /// migrator of their own.
    public static func prepare(_ database: DatabasePool) throws {
        var migrator = DatabaseMigrator()
        ClusterSchema.registerMigrations(in: &migrator)
        try migrator.migrate(database)
    }

    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }()

    /// Stores a snapshot and logs the step about to be performed, in one transaction. `insert`
    /// adds a new cluster and refuses one whose name a cluster not yet final holds.
    func save(_ snapshot: Cluster.Snapshot, step: String, detail: String, insert: Bool = false, now: Date) throws {
        let data = try Self.encoder.encode(snapshot)
        try database.write { db in
            if insert {
                let holder = try String.fetchOne(
                    db, sql: "SELECT id FROM cluster WHERE name = ? AND phase NOT IN (?, ?)",
                    arguments: [snapshot.name, Cluster.Phase.tornDown.rawValue, Cluster.Phase.failed.rawValue])
                if let holder {
                    throw ClusterError.refused("a cluster named \(snapshot.name) exists (\(holder)); tear it down first")
                }
                try db.execute(
                    sql: """
                        INSERT INTO cluster (id, name, phase, settled, source, snapshot, created_at, updated_at)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                        """,
                    arguments: [
                        snapshot.clusterID, snapshot.name, snapshot.phase.rawValue, snapshot.phase.isSettled, snapshot.source, data, now, now,
                    ])
            } else {
                try db.execute(
                    sql: "UPDATE cluster SET phase = ?, settled = ?, snapshot = ?, updated_at = ? WHERE id = ?",
                    arguments: [snapshot.phase.rawValue, snapshot.phase.isSettled, data, now, snapshot.clusterID])
                guard db.changesCount == 1 else { throw ClusterError.unknownCluster(snapshot.clusterID) }
            }
            try Self.insertStep(db, clusterID: snapshot.clusterID, phase: snapshot.phase.rawValue, step: step, detail: detail, now: now)
        }
    }

    /// Logs a step's result (the snapshot is stored with the next action).
    func log(clusterID: String, phase: Cluster.Phase, step: String, detail: String, now: Date) throws {
        try database.write { db in
            try Self.insertStep(db, clusterID: clusterID, phase: phase.rawValue, step: step, detail: detail, now: now)
        }
    }

    private static func insertStep(_ db: Database, clusterID: String, phase: String, step: String, detail: String, now: Date) throws {
        try db.execute(
            sql: "INSERT INTO cluster_step (cluster_id, at, phase, step, detail) VALUES (?, ?, ?, ?, ?)",
            arguments: [clusterID, now, phase, step, String(detail.prefix(2000))])
    }

    public func snapshot(_ clusterID: String) throws -> Cluster.Snapshot? {
        let data = try database.read { db in
            try Data.fetchOne(db, sql: "SELECT snapshot FROM cluster WHERE id = ?", arguments: [clusterID])
        }
        return try data.map { try JSONDecoder().decode(Cluster.Snapshot.self, from: $0) }
    }

    /// The id of the newest cluster named `name` (older ones are final: a name is reused only then).
    public func clusterID(named name: String) throws -> String? {
        try database.read { db in
            try String.fetchOne(db, sql: "SELECT id FROM cluster WHERE name = ? ORDER BY created_at DESC, rowid DESC LIMIT 1", arguments: [name])
        }
    }

    /// Every cluster's snapshot, newest first.
    public func snapshots() throws -> [Cluster.Snapshot] {
        let documents = try database.read { db in
            try Data.fetchAll(db, sql: "SELECT snapshot FROM cluster ORDER BY created_at DESC, rowid DESC")
        }
        return try documents.map { try JSONDecoder().decode(Cluster.Snapshot.self, from: $0) }
    }

    /// Clusters with a step under way, oldest first: what a restart resumes.
    public func unsettled() throws -> [String] {
        try database.read { db in
            try String.fetchAll(db, sql: "SELECT id FROM cluster WHERE settled = 0 ORDER BY created_at, rowid")
        }
    }

    /// When a cluster was launched and last changed.
    public func times(_ clusterID: String) throws -> (createdAt: Date, updatedAt: Date)? {
        try database.read { db in
            try Row.fetchOne(db, sql: "SELECT created_at, updated_at FROM cluster WHERE id = ?", arguments: [clusterID])
                .map { ($0["created_at"], $0["updated_at"]) }
        }
    }

    /// The step log of a cluster, oldest first.
    public func steps(_ clusterID: String) throws -> [ClusterStepRecord] {
        try database.read { db in
            try ClusterStepRecord.fetchAll(db, sql: "SELECT * FROM cluster_step WHERE cluster_id = ? ORDER BY seq", arguments: [clusterID])
        }
    }
}
