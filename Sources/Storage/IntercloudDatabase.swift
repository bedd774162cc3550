import Foundation
import GRDB

/// A module's contribution to the broker database schema.
///
/// Each module owns its tables and registers its migrations under identifiers prefixed with the
/// module name (`"peers.v1"`, `"trust.v1"`, ...). Migrations are frozen once shipped: a schema change
/// is a new migration, never an edit of an old one (GRDB "Good Practices").
public protocol SchemaContributor {
    static func registerMigrations(in migrator: inout DatabaseMigrator)
}

/// Opens the broker's SQLite database.
///
/// WAL mode lets the CLI (`intercloud peers`, `intercloud audit`) read while a broker writes, and
/// `synchronous = FULL` makes each committed journal entry durable before it is acknowledged, so a
/// killed process loses nothing it has already answered for.
public enum IntercloudDatabase {
    public static func open(
        path: String,
        schema: [any SchemaContributor.Type],
        readOnly: Bool = false
    ) throws -> DatabasePool {
        var configuration = Configuration()
        configuration.readonly = readOnly
        configuration.busyMode = .timeout(5)
        // Each reader connection holds three descriptors (database, WAL, shared memory). A broker
        // opens several databases (its own, its cloud driver's), and its XMPP library can only
        // wait on descriptors below 1024, so readers are kept few: reads are short here.
        configuration.maximumReaderCount = 3
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
            try db.execute(sql: "PRAGMA foreign_keys = ON")
        }
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent()
        if !readOnly {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        }
        let pool = try DatabasePool(path: path, configuration: configuration)
        if !readOnly {
            // GRDB switches the writer to synchronous = NORMAL when it enables WAL, after
            // prepareDatabase ran; set FULL again on the writer so commits are durable on power loss.
            try pool.writeWithoutTransaction { try $0.execute(sql: "PRAGMA synchronous = FULL") }
            var migrator = DatabaseMigrator()
            for contributor in schema {
                contributor.registerMigrations(in: &migrator)
            }
            try migrator.migrate(pool)
        }
        return pool
    }

    /// An in-memory-like database for unit tests: a fresh file in a temporary directory, so WAL and
    /// concurrent readers behave exactly as in production.
    public static func temporary(schema: [any SchemaContributor.Type]) throws -> (DatabasePool, URL) {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("intercloud-db-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let path = directory.appendingPathComponent("broker.sqlite").path
        return (try open(path: path, schema: schema), directory)
    }
}
