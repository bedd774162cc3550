/// Denies requests whose verb the peer is not entitled to.
public struct EntitlementRule: PolicyRule {
    public init() {}

    public func evaluate(_ request: PolicyRequest, context: PolicyContext) -> PolicyDecision {
        guard let policy = context.policy else { return .allowed }
        let needed = request.entitlement
        return policy.entitlements.contains(needed)
            ? .allowed
            : .denied("not-entitled", "policy '\(policy.name)' does not grant \(needed.rawValue) to \(context.peer)")
    }
}
