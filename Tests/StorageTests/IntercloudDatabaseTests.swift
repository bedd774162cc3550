import Foundation
import GRDB
import Storage
import Testing

private enum ExampleSchema: SchemaContributor {
    static func registerMigrations(in migrator: inout DatabaseMigrator) {
        migrator.registerMigration("example.v1") { db in
            try db.create(table: "example") { t in
                t.column("id", .integer).primaryKey()
                t.column("name", .text).notNull()
            }
        }
    }
}

@Suite struct IntercloudDatabaseTests {
    @Test func migratesAndUsesWAL() throws {
        let (pool, directory) = try IntercloudDatabase.temporary(schema: [ExampleSchema.self])
        defer { try? FileManager.default.removeItem(at: directory) }
        try pool.write { db in try db.execute(sql: "INSERT INTO example(name) VALUES ('a')") }
        let mode = try pool.read { db in try String.fetchOne(db, sql: "PRAGMA journal_mode") }
        #expect(mode == "wal")
        let count = try pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM example") }
        #expect(count == 1)
    }

    /// Commits must survive power loss: the writer connection runs with synchronous = FULL (2),
    /// although GRDB lowers it to NORMAL when it enables WAL.
    @Test func writerCommitsWithSynchronousFull() throws {
        let (pool, directory) = try IntercloudDatabase.temporary(schema: [ExampleSchema.self])
        defer { try? FileManager.default.removeItem(at: directory) }
        let level = try pool.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") }
        #expect(level == 2)
    }

    @Test func reopeningKeepsDataAndDoesNotRerunMigrations() throws {
        let (pool, directory) = try IntercloudDatabase.temporary(schema: [ExampleSchema.self])
        defer { try? FileManager.default.removeItem(at: directory) }
        try pool.write { db in try db.execute(sql: "INSERT INTO example(name) VALUES ('kept')") }
        let path = pool.path
        try pool.close()
        let reopened = try IntercloudDatabase.open(path: path, schema: [ExampleSchema.self])
        let names = try reopened.read { db in try String.fetchAll(db, sql: "SELECT name FROM example") }
        #expect(names == ["kept"])
    }
}
