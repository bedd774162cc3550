import Backup
import Foundation
import Testing

@Suite("backup retention and schedule")
struct BackupRetentionTests {
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    func entry(_ id: String, _ instance: String?, daysAgo: Double) -> BackupRetention.Entry {
        .init(backupID: id, instance: instance, createdAt: now.addingTimeInterval(-daysAgo * 86_400))
    }

    @Test("keep_last keeps the newest N per instance, each instance on its own")
    func keepLast() {
        let entries = [
            entry("bk-a1", "web", daysAgo: 3), entry("bk-a2", "web", daysAgo: 2), entry("bk-a3", "web", daysAgo: 1),
            entry("bk-b1", "db", daysAgo: 3),
        ]
        #expect(BackupRetention.deletions(entries, keepLast: 2, keepDays: nil, now: now) == ["bk-a1"])
        #expect(BackupRetention.deletions(entries, keepLast: 1, keepDays: nil, now: now) == ["bk-a1", "bk-a2"])
    }

    @Test("keep_days deletes older backups, but never an instance's newest")
    func keepDays() {
        let entries = [entry("bk-old1", "web", daysAgo: 40), entry("bk-old2", "web", daysAgo: 35), entry("bk-db", "db", daysAgo: 90)]
        #expect(BackupRetention.deletions(entries, keepLast: 10, keepDays: 30, now: now) == ["bk-old1"])
    }

    @Test("unfinished backups go once stale; protected ones never")
    func unfinished() {
        let entries = [entry("bk-u1", nil, daysAgo: 2), entry("bk-u2", nil, daysAgo: 0.1), entry("bk-w1", "web", daysAgo: 5), entry("bk-w2", "web", daysAgo: 1)]
        // Oldest first: bk-w1 was made five days ago, bk-u1 two.
        #expect(BackupRetention.deletions(entries, keepLast: 1, keepDays: nil, now: now) == ["bk-w1", "bk-u1"])
        #expect(BackupRetention.deletions(entries, keepLast: 1, keepDays: nil, now: now, protected: ["bk-w1"]) == ["bk-u1"])
    }

    func policy(_ name: String, every: TimeInterval?) -> BackupPolicy {
        BackupPolicy(name: name, instances: ["x"], every: every, target: .directory(path: "/b"))
    }

    @Test("a policy is due when it never ran or its interval passed; the next due time is the earliest")
    func schedule() {
        let policies = [policy("never", every: 3600), policy("recent", every: 3600), policy("stale", every: 600), policy("manual", every: nil)]
        let last = ["recent": now.addingTimeInterval(-1200), "stale": now.addingTimeInterval(-601), "manual": now.addingTimeInterval(-1e6)]
        let plan = BackupSchedule.due(policies, lastStarts: last, now: now)
        #expect(plan.due.map(\.name) == ["never", "stale"])
        #expect(plan.next == now.addingTimeInterval(2400))
        let later = BackupSchedule.due(policies, lastStarts: last.merging(["never": now, "stale": now]) { $1 }, now: now)
        #expect(later.due.isEmpty)
        #expect(later.next == now.addingTimeInterval(600))
    }
}
