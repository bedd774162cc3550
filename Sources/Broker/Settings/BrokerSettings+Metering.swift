import Foundation
import Metering

extension BrokerSettings {
    /// `[metering]`: sampling and usage periods. The defaults are `MeteringService.Settings`'.
    enum Metering {
        static let defaults = MeteringService.Settings()

        static let sampleSeconds = Setting<Double>(
            "metering", "sample_seconds", default: defaults.sampleInterval, rule: .atLeast(0.05),
            "Seconds between samples of the provider driver.")
        static let periodSeconds = Setting<Double>(
            "metering", "period_seconds", default: defaults.periodSeconds, rule: .atLeast(1), "Length of one usage record's period.")
        static let tolerancePercent = Setting<Double>(
            "metering", "tolerance_percent", default: (defaults.tolerance.relative * 100).settingDouble, rule: .within(0, 100),
            "Relative difference the consumer accepts before disputing a record.")
        static let maxCallsPerSecond = Setting<Int>(
            "metering", "max_calls_per_second", default: Int(defaults.maxCallsPerSecond), rule: .atLeast(1),
            "Consumer side: the most federated calls per second of a period it accepts being billed for.")

        static let section = SettingsSection("metering", "Optional.", [
            sampleSeconds.erased, periodSeconds.erased, tolerancePercent.erased, maxCallsPerSecond.erased,
        ])
    }
}
