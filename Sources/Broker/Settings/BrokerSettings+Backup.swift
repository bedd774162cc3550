import Backup
import Foundation

extension BrokerSettings {
    /// `[backup]`: backup policies `intercloud serve` runs on their schedules.
    enum Backup {
        static let policies = Setting<[String]>(
            "backup", "policies", default: [],
            "Backup policy files or folders (README, \"Backups\"); those with `every` run on schedule, with the [provider] driver.")
        static let staging = Setting<String>(
            "backup", "staging", note: "<broker.database>.backups",
            "Folder for disks exported before upload and downloaded before a restore.")
        static let checkSeconds = Setting<Double>(
            "backup", "check_seconds", default: BackupScheduler.defaultCheckInterval, rule: .atLeast(1),
            "Longest wait between looks at the schedule.")

        static let section = SettingsSection(
            "backup", "Optional; without policies nothing is backed up on its own (`intercloud backup run` still works).",
            [policies.erased, staging.erased, checkSeconds.erased])
    }
}
