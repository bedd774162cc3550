import Foundation
import Migration

extension BrokerSettings {
    /// `[automation]`: migration driven by policy. The defaults are `AutomationService.Settings`'.
    enum Automation {
        static let defaults = AutomationService.Settings()

        static let mode = Setting<String>(
            "automation", "mode", default: defaults.mode.rawValue,
            rule: .oneOf([AutomationService.Mode.off, .propose, .migrate].map(\.rawValue)),
            "off; propose (log and audit only); migrate.")
        static let checkSeconds = Setting<Double>(
            "automation", "check_seconds", default: defaults.checkInterval.settingSeconds, rule: .atLeast(0.1),
            "How often the cloud is looked at.")
        static let triggers = Setting<[String]>(
            "automation", "triggers", default: defaults.policy.triggers.map(\.rawValue).sorted(),
            rule: .each(of: AutomationPolicy.Trigger.allCases.map(\.rawValue)), "What makes an instance move.")
        static let capacityThresholdPercent = Setting<Double>(
            "automation", "capacity_threshold_percent", default: defaults.policy.capacityThresholdPercent.settingDouble,
            rule: .within(0, 100, lowerExcluded: true), "capacity: used vCPU, memory or instances above this share of the cloud's limit.")
        static let priceAdvantagePercent = Setting<Double>(
            "automation", "price_advantage_percent", default: defaults.policy.priceAdvantagePercent.settingDouble,
            rule: .within(0, 100, upperExcluded: true), "price: a peer's agreed rate at least this much below the local price.")
        static let exclude = Setting<[String]>(
            "automation", "exclude", default: [], "Instance IDs or names that never move automatically.")
        static let maxPerRound = Setting<Int>(
            "automation", "max_per_round", default: defaults.policy.maxPerRound, rule: .atLeast(1), "Instances moved per look at most.")

        static let section = SettingsSection("automation", "Optional; automatic migration is off without it.", [
            mode.erased, checkSeconds.erased, triggers.erased, capacityThresholdPercent.erased, priceAdvantagePercent.erased,
            exclude.erased, maxPerRound.erased,
        ])
    }
}
