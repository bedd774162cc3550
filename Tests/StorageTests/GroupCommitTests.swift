import Foundation
import GRDB
import Testing
@testable import Storage

private struct Schema: SchemaContributor {
    static func registerMigrations(in migrator: inout DatabaseMigrator) {
        migrator.registerMigration("test.v1") { db in
            try db.create(table: "item") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("value", .integer).notNull().unique()
            }
        }
    }
}

private struct Refused: Error, Equatable {}

/// Holds GRDB's writer queue until released, so the test decides when a batch may start.
private final class WriterGate: Sendable {
    private let released = DispatchSemaphore(value: 0)
    init(_ database: DatabasePool) {
        database.asyncWriteWithoutTransaction { [released] _ in released.wait() }
    }
    func release() { released.signal() }
}

@Suite struct GroupCommitTests {
    func temporary() throws -> (DatabasePool, URL) { try IntercloudDatabase.temporary(schema: [Schema.self]) }

    func values(_ database: DatabasePool) throws -> [Int] {
        try database.read { db in try Int.fetchAll(db, sql: "SELECT value FROM item ORDER BY id") }
    }

    /// While the writer is busy, 50 callers queue; when it frees, all of them share one commit,
    /// each gets its own output, and the rows are in the order the callers were queued.
    @Test func callersQueuedDuringACommitShareTheNextOne() async throws {
        let (database, directory) = try temporary()
        defer { try? FileManager.default.removeItem(at: directory) }
        let group = GroupCommit<Int, Int64>(database: database) { db, value in
            try db.execute(sql: "INSERT INTO item (value) VALUES (?)", arguments: [value])
            return db.lastInsertedRowID
        }
        let gate = WriterGate(database)
        var tasks: [Task<Int64, any Error>] = []
        for value in 0..<50 {
            tasks.append(Task { try await group.commit(value) })
            // One at a time into the queue, so the order of the rows is known.
            while group.queued < value + 1 { await Task.yield() }
        }
        #expect(group.transactions == 0)
        gate.release()
        var ids: [Int64] = []
        for task in tasks { ids.append(try await task.value) }
        #expect(group.transactions == 1)
        #expect(try values(database) == Array(0..<50))
        #expect(ids == Array(1...50))
    }

    /// An item that fails rolls back alone: its caller gets the error, the others commit.
    @Test func aFailingItemFailsOnlyItsCaller() async throws {
        let (database, directory) = try temporary()
        defer { try? FileManager.default.removeItem(at: directory) }
        let group = GroupCommit<Int, Void>(database: database) { db, value in
            try db.execute(sql: "INSERT INTO item (value) VALUES (?)", arguments: [value])
            if value == 2 { throw Refused() }
        }
        let gate = WriterGate(database)
        let tasks = (1...3).map { value in Task { try await group.commit(value) } }
        while group.queued < 3 { await Task.yield() }
        gate.release()
        var failures = 0
        for task in tasks {
            do { try await task.value } catch { #expect(error as? Refused == Refused()); failures += 1 }
        }
        #expect(failures == 1)
        #expect(try values(database).sorted() == [1, 3])
        #expect(group.transactions == 1)
    }

    /// A caller cancelled while its item waits still has it written (as a synchronous write
    /// would), unlike GRDB's async write, which is interrupted.
    @Test func cancellationDoesNotDropAQueuedWrite() async throws {
        let (database, directory) = try temporary()
        defer { try? FileManager.default.removeItem(at: directory) }
        let group = GroupCommit<Int, Void>(database: database) { db, value in
            try db.execute(sql: "INSERT INTO item (value) VALUES (?)", arguments: [value])
        }
        let gate = WriterGate(database)
        let task = Task { try await group.commit(7) }
        while group.queued < 1 { await Task.yield() }
        task.cancel()
        gate.release()
        try await task.value
        #expect(try values(database) == [7])

        let gate2 = WriterGate(database)
        let single = Task { try await database.durableWrite { db in try db.execute(sql: "INSERT INTO item (value) VALUES (8)") } }
        single.cancel()
        gate2.release()
        try await single.value
        #expect(try values(database) == [7, 8])
    }
}
