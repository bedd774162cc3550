import Foundation
import Synchronization

/// A serial executor with a thread of its own, for actors that write SQLite synchronously.
///
/// A GRDB write with `synchronous = FULL` waits for an fsync before it returns. On the cooperative
/// pool (one thread per core: two on the machines this project targets) every such wait holds a
/// thread that XMPP handlers, signature checks and every other service need. The actors that
/// journal a state change before they answer (negotiation, metering) run on this executor instead
/// (`unownedExecutor`): their writes stay exactly where they are, with no new suspension point, so
/// their reasoning (nothing interleaves between a change and its journal write) holds; only the
/// waiting moves to this thread. Work they await elsewhere (signing, XMPP) still runs on the pool.
public final class StorageExecutor: SerialExecutor {
    /// The one storage thread of this process: SQLite serialises a database's writers anyway.
    public static let shared = StorageExecutor(name: "intercloud-storage")

    private let jobs = Mutex<[UnownedJob]>([])
    private let ready = DispatchSemaphore(value: 0)
    /// The storage thread's name (what `top -H` and debuggers show).
    public let name: String
    /// The storage thread's POSIX id, once it runs.
    private let threadID = Mutex<pthread_t?>(nil)

    init(name: String) {
        self.name = name
        let thread = Thread { [self] in run() }
        thread.name = name
        thread.start()
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        jobs.withLock { $0.append(job) }
        ready.signal()
    }

    public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    /// Whether the caller runs on the storage thread.
    public var isCurrent: Bool {
        guard let id = threadID.withLock({ $0 }) else { return false }
        return pthread_equal(id, pthread_self()) != 0
    }

    private func run() {
        threadID.withLock { $0 = pthread_self() }
        while true {
            ready.wait()
            // Everything queued so far, in order, in one take: removing jobs one at a time from
            // the front of an array would cost a copy of the rest per job when work piles up.
            // A later signal then finds the queue empty and waits again.
            let batch = jobs.withLock { queued in
                defer { queued.removeAll(keepingCapacity: true) }
                return queued
            }
            for job in batch { job.runSynchronously(on: asUnownedSerialExecutor()) }
        }
    }
}
