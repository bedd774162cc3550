import Foundation
import Providers

extension BrokerSettings {
    /// `[provider]`: the local cloud this broker drives. Driver kinds come from `DriverRegistry`,
    /// the one list of them.
    enum Provider {
        static let driver = Setting<String>(
            "provider", "driver", required: true, rule: .oneOf(DriverRegistry.kinds.keys.sorted()),
            "Driver kind (see `intercloud provider --help`).")
        static let options = Setting<SettingTable>(
            "provider", "options", default: SettingTable(entries: [:]),
            rule: SettingRule(text: "a table of strings") { table in
                table.entries.first { if case .string = $0.value { false } else { true } }.map { "must map option names to strings (\($0.key.tomlText))" }
            },
            "Driver options by their CLI names (`data-dir`, `uri`, `endpoint`, ...); file and folder options are resolved against this file.")
        static let refreshSeconds = Setting<Int>(
            "provider", "refresh_seconds", default: 30, rule: .atLeast(1),
            "Seconds between inventory refreshes (sizes, images, free capacity published in the catalog).")

        static let section = SettingsSection("provider", "Optional; without it the broker drives no cloud of its own.", [
            driver.erased, options.erased, refreshSeconds.erased,
        ])
    }
}
