import Foundation
import Providers

/// The broker's one connection to its local cloud (`[provider]`), made on first use and shared by
/// the inventory publisher, metering and migration. A driver that cannot be made is tried again on
/// the next call, so a cloud that comes up late is picked up without restarting the broker.
public actor ProviderHandle {
    public nonisolated let settings: BrokerConfiguration.ProviderSettings
    private var made: (any CloudDriver)?

    public init(settings: BrokerConfiguration.ProviderSettings) {
        self.settings = settings
    }

    public func driver() async throws -> any CloudDriver {
        if let made { return made }
        let driver = try await DriverRegistry.make(DriverSettings(kind: settings.driver, options: settings.options))
        made = driver
        return driver
    }
}
