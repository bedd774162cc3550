import Foundation

/// The broker's one connection to its local cloud (`[provider]`), made on first use and shared by
/// the inventory publisher, metering, migration and federation. A driver that cannot be made is
/// tried again on the next call, so a cloud that comes up late is picked up without restarting.
public actor ProviderHandle {
    /// The driver kind and its options, as `[provider]` names them.
    public nonisolated let settings: DriverSettings
    /// The driver being made or made. Shared so that callers arriving while `make` is suspended
    /// (actor reentrancy) wait for the same driver instead of opening a second one on the same
    /// backend (two SimClouds on one directory would both seed it).
    private var making: Task<any CloudDriver, any Error>?

    public init(settings: DriverSettings) {
        self.settings = settings
    }

    public func driver() async throws -> any CloudDriver {
        if let making { return try await making.value }
        let settings = settings
        let task = Task { try await DriverRegistry.make(settings) }
        making = task
        do {
            return try await task.value
        } catch {
            making = nil
            throw error
        }
    }
}
