import Foundation
import Policy

/// Terms a consumer asks for in the integration suites: two SimCloud small instances for `days`,
/// at `price` per instance hour, with the entitlements the test needs.
func agreementTerms(
    entitlements: Set<Entitlement> = [.query, .migrateIn], vcpu: Int = 4, price: String = "0.0230", days: Double = 30,
    from: Date = Date()
) -> Terms {
    let start = Date(timeIntervalSince1970: from.timeIntervalSince1970.rounded(.down))
    return Terms(
        resources: ResourceAmount(instances: 2, vcpu: vcpu, memoryGiB: 8, storageGiB: 80, transferGB: Decimal(string: "12.5")!),
        instanceTypes: ["sim.small"],
        period: ValidityPeriod(from: start, until: start.addingTimeInterval(days * 86_400)),
        rates: RateCard(
            currency: "EUR", instanceHour: ["sim.small": Decimal(string: price)!],
            perGBTransferred: Decimal(string: price == "0" ? "0" : "0.02")!, perGBMonthStored: Decimal(string: price == "0" ? "0" : "0.04")!),
        sla: ServiceLevel(availabilityPercent: Decimal(string: "99.9")!, maxMigrationDowntimeSeconds: 300, support: "24x7"),
        entitlements: entitlements)
}
