/// Denies migrations to a region or jurisdiction the peer's placement does not allow. A
/// jurisdiction list with a request that does not say its jurisdiction is a refusal: data
/// residency must be shown, not assumed.
public struct PlacementRule: PolicyRule {
    public init() {}

    public func evaluate(_ request: PolicyRequest, context: PolicyContext) -> PolicyDecision {
        guard let placement = context.policy?.placement else { return .allowed }
        let spec: MigrationSpec
        switch request {
        case .migrateIn(let m), .migrateOut(let m): spec = m
        case .query, .federate: return .allowed
        }
        var reasons: [PolicyReason] = []
        if !placement.regions.isEmpty, !placement.regions.contains(spec.region) {
            reasons.append(PolicyReason(code: "region-not-allowed", message: "region \(spec.region) is not in \(placement.regions)"))
        }
        if !placement.jurisdictions.isEmpty {
            if let j = spec.jurisdiction {
                if !placement.jurisdictions.contains(j) {
                    reasons.append(PolicyReason(code: "jurisdiction-not-allowed", message: "jurisdiction \(j) is not in \(placement.jurisdictions)"))
                }
            } else {
                reasons.append(PolicyReason(code: "jurisdiction-unknown", message: "region \(spec.region) has no known jurisdiction; allowed: \(placement.jurisdictions)"))
            }
        }
        return reasons.isEmpty ? .allowed : .denied(reasons)
    }
}
