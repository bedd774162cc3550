import GRDB
import Synchronization

extension DatabasePool {
    /// Runs `updates` in one transaction on GRDB's writer queue and returns once it is committed
    /// (durable: the broker's writer runs `synchronous = FULL`). The caller's thread is free
    /// meanwhile, so an fsync never holds one of the cooperative pool's threads.
    ///
    /// Unlike GRDB's async `write`, cancelling the caller does not interrupt the transaction: a
    /// write asked for is done, as the synchronous write it replaces was. Shutdown cancels the
    /// tasks whose audit records and registry rows must still land.
    public func durableWrite<T: Sendable>(_ updates: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            asyncWriteWithoutTransaction { db in
                continuation.resume(with: Result {
                    var result: T?
                    try db.inTransaction {
                        result = try updates(db)
                        return .commit
                    }
                    return result!
                })
            }
        }
    }
}

/// Writes what many callers ask for in shared transactions: one commit, and so one fsync, for
/// everything that arrived while the previous commit was on its way to the disk.
///
/// A caller's `commit(_:)` returns when its item is committed, exactly as if it had written alone:
/// nothing is acknowledged before it is durable. Each item is applied in a savepoint of its own,
/// so an item that fails rolls back alone and only its caller sees the error; the others commit.
/// Items are applied in the order they were submitted. The writing happens on GRDB's writer queue
/// (never on the cooperative pool) and is not interrupted by the caller's cancellation.
///
/// How the batches form: the first item queued when no batch is scheduled schedules one on the
/// writer queue; items queued before that batch starts join it; items queued while it commits
/// schedule the next. Under no load a batch holds one item and costs what a lone write did.
public final class GroupCommit<Item: Sendable, Output: Sendable>: Sendable {
    private struct Waiter: Sendable {
        var item: Item
        var continuation: CheckedContinuation<Output, any Error>
    }

    private struct Queue: Sendable {
        var waiting: [Waiter] = []
        var scheduled = false
    }

    public let database: DatabasePool
    private let apply: @Sendable (Database, Item) throws -> Output
    private let queue = Mutex(Queue())
    /// Transactions committed so far (diagnostics, benchmarks, tests).
    private let commits = Atomic<Int>(0)

    /// - Parameter apply: writes one item inside the shared transaction and returns its output.
    public init(database: DatabasePool, apply: @escaping @Sendable (Database, Item) throws -> Output) {
        self.database = database
        self.apply = apply
    }

    /// Queues `item` and returns its output once the transaction holding it is committed.
    public func commit(_ item: Item) async throws -> Output {
        try await withCheckedThrowingContinuation { continuation in
            let schedule = queue.withLock { queue in
                queue.waiting.append(Waiter(item: item, continuation: continuation))
                defer { queue.scheduled = true }
                return !queue.scheduled
            }
            if schedule { database.asyncWriteWithoutTransaction { [self] db in drain(db) } }
        }
    }

    /// How many transactions committed batches so far.
    public var transactions: Int { commits.load(ordering: .relaxed) }

    /// Items waiting for the next batch (tests).
    var queued: Int { queue.withLock { $0.waiting.count } }

    private func drain(_ db: Database) {
        // Everything queued until now goes into this transaction; later items schedule the next.
        let batch = queue.withLock { queue in
            defer {
                queue.waiting.removeAll(keepingCapacity: true)
                queue.scheduled = false
            }
            return queue.waiting
        }
        guard !batch.isEmpty else { return }
        var results: [Result<Output, any Error>] = []
        results.reserveCapacity(batch.count)
        do {
            try db.inTransaction {
                for waiter in batch {
                    var result: Result<Output, any Error> = .failure(CancellationError())
                    try db.inSavepoint {
                        result = Result { try apply(db, waiter.item) }
                        if case .failure = result { return .rollback }
                        return .commit
                    }
                    results.append(result)
                }
                return .commit
            }
            commits.add(1, ordering: .relaxed)
        } catch {
            // The commit itself failed (disk full, I/O error): nothing of the batch is durable.
            results = batch.map { _ in .failure(error) }
        }
        for (waiter, result) in zip(batch, results) { waiter.continuation.resume(with: result) }
    }
}
