/// Denies migrating in an instance type the rate card has no price for: running it could not be
/// billed. Entries without a rate card (free peering) allow every type.
public struct InstanceTypePricedRule: PolicyRule {
    public init() {}

    public func evaluate(_ request: PolicyRequest, context: PolicyContext) -> PolicyDecision {
        guard case .migrateIn(let spec) = request, let rates = context.policy?.rates, !rates.instanceHour.isEmpty else { return .allowed }
        return rates.instanceHour[spec.instanceType] != nil
            ? .allowed
            : .denied("unpriced-instance-type", "no hourly rate for instance type \(spec.instanceType)")
    }
}
