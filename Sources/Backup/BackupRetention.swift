import Foundation

/// Which backups a policy's retention deletes: a pure decision over what the store holds.
///
/// Per instance, the newest `keepLast` backups are kept; with `keepDays`, those older than that
/// go too, except the instance's newest backup, so retention never leaves an instance with none.
/// Unfinished backups (no manifest) older than `staleAfter` are deleted: what a killed run left.
public enum BackupRetention {
    public struct Entry: Sendable, Hashable {
        public var backupID: String
        /// The instance the backup is of (the manifest's instance name); nil for an unfinished one.
        public var instance: String?
        public var createdAt: Date

        public init(backupID: String, instance: String?, createdAt: Date) {
            self.backupID = backupID
            self.instance = instance
            self.createdAt = createdAt
        }
    }

    /// Backup ids to delete, oldest first. `protected` ids (a run's own backups in progress) are
    /// never chosen.
    public static func deletions(
        _ entries: [Entry], keepLast: Int, keepDays: Int?, now: Date, staleAfter: TimeInterval = 86_400, protected: Set<String> = []
    ) -> [String] {
        var doomed: [Entry] = []
        let byInstance = Dictionary(grouping: entries.filter { $0.instance != nil }, by: { $0.instance! })
        for (_, backups) in byInstance {
            let newestFirst = backups.sorted { ($0.createdAt, $0.backupID) > ($1.createdAt, $1.backupID) }
            for (index, entry) in newestFirst.enumerated() where index > 0 {
                let tooMany = index >= keepLast
                let tooOld = keepDays.map { now.timeIntervalSince(entry.createdAt) > TimeInterval($0) * 86_400 } ?? false
                if tooMany || tooOld { doomed.append(entry) }
            }
        }
        doomed += entries.filter { $0.instance == nil && now.timeIntervalSince($0.createdAt) > staleAfter }
        return doomed.filter { !protected.contains($0.backupID) }
            .sorted { ($0.createdAt, $0.backupID) < ($1.createdAt, $1.backupID) }.map(\.backupID)
    }
}
