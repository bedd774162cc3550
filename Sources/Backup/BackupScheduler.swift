import Foundation
import Logging
import ServiceLifecycle

/// When policies fall due: a pure decision over the policies and when each last ran.
public enum BackupSchedule {
    /// Policies due at `now` (never run, or their `every` has passed since their last run
    /// started), in file order, and when the next not-yet-due one falls due. Policies without
    /// `every` are never due.
    public static func due(_ policies: [BackupPolicy], lastStarts: [String: Date], now: Date) -> (due: [BackupPolicy], next: Date?) {
        var due: [BackupPolicy] = []
        var next: Date?
        for policy in policies {
            guard let every = policy.every else { continue }
            guard let last = lastStarts[policy.name] else {
                due.append(policy)
                continue
            }
            let at = last.addingTimeInterval(every)
            if at <= now {
                due.append(policy)
            } else if next.map({ at < $0 }) ?? true {
                next = at
            }
        }
        return (due, next)
    }
}

/// Runs backup policies on their schedules inside `intercloud serve`: first it finishes what a
/// killed broker left under way, then it runs each policy when it falls due, one run at a time
/// (a run is disk and network heavy; two at once would only slow both). A failed run is logged
/// and audited by the runner and the schedule goes on.
public struct BackupScheduler: Service, CustomStringConvertible {
    public static let defaultCheckInterval: TimeInterval = 60

    /// Builds the runner; called again at the next check while the cloud cannot be reached.
    public let makeRunner: @Sendable () async throws -> BackupRunner
    public let policies: [BackupPolicy]
    /// The longest sleep between looks at the schedule.
    public let checkInterval: TimeInterval
    public let logger: Logger
    /// The file `intercloud backup` commands lock (beside the database): the scheduler holds it
    /// while it acts, so a command and the broker never drive one job at once. Nil: no lock.
    public let lockPath: String?

    public var description: String { "backup scheduler" }

    public init(
        policies: [BackupPolicy], checkInterval: TimeInterval = defaultCheckInterval, lockPath: String? = nil, logger: Logger,
        makeRunner: @escaping @Sendable () async throws -> BackupRunner
    ) {
        self.makeRunner = makeRunner
        self.lockPath = lockPath
        self.policies = policies
        self.checkInterval = checkInterval
        self.logger = logger
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown { await loop() }
    }

    func loop() async {
        let scheduled = policies.filter { $0.every != nil }
        logger.info("backup: \(scheduled.count) scheduled policies: \(scheduled.map { "\($0.name) every \(Int($0.every!))s" }.joined(separator: ", "))")
        var runner: BackupRunner?
        while !Task.isCancelled {
            var next: Date?
            let lock = lockPath.map(FileLock.init)
            if let lock, !lock.acquired {
                logger.debug("backup: an `intercloud backup` command holds \(lock.path); looking again later")
            } else {
                do {
                    let current: BackupRunner
                    if let runner { current = runner } else {
                        current = try await makeRunner()
                        runner = current
                    }
                    // Every pass (a cheap query when nothing is under way): a job a command or a
                    // shutdown left is finished as soon as the lock and its store allow.
                    let resumed = try await current.resume()
                    if !resumed.runs.isEmpty || !resumed.restores.isEmpty {
                        logger.info("backup: finished \(resumed.runs.count) run(s) and \(resumed.restores.count) restore(s) left under way")
                    }
                    let plan = BackupSchedule.due(policies, lastStarts: try current.journal.lastRunStarts(), now: Date())
                    next = plan.next
                    for policy in plan.due where !Task.isCancelled {
                        do {
                            let run = try await current.run(policy)
                            logger.info("backup: run \(run.runID) of \(policy.name) ended \(run.phase.rawValue)")
                        } catch { logger.error("backup: policy \(policy.name) was not run: \(error)") }
                    }
                } catch { logger.error("backup: \(error); trying again in \(Int(checkInterval)) s") }
            }
            lock?.release()
            let wait = min(checkInterval, max(1, (next ?? .distantFuture).timeIntervalSinceNow))
            try? await Task.sleep(for: .milliseconds(Int64(wait * 1000)))
        }
    }
}

/// A non-blocking exclusive `flock` on a file, taken at init.
final class FileLock: Sendable {
    let path: String
    private let descriptor: Int32
    let acquired: Bool

    init(_ path: String) {
        self.path = path
        descriptor = open(path, O_CREAT | O_RDWR, 0o600)
        acquired = descriptor >= 0 && flock(descriptor, LOCK_EX | LOCK_NB) == 0
    }

    func release() {
        guard descriptor >= 0 else { return }
        if acquired { flock(descriptor, LOCK_UN) }
        close(descriptor)
    }
}
