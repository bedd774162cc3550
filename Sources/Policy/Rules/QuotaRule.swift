import Foundation

/// Denies when current usage plus the request's demand would exceed any quota dimension.
/// Reaching a quota exactly is allowed. Every exceeded dimension is reported.
public struct QuotaRule: PolicyRule {
    public init() {}

    public func evaluate(_ request: PolicyRequest, context: PolicyContext) -> PolicyDecision {
        guard let quota = context.policy?.quota else { return .allowed }
        let after = context.usage + request.demand
        var reasons: [PolicyReason] = []
        func check<T: Comparable>(_ name: String, _ value: T, _ limit: T?) {
            if let limit, value > limit {
                reasons.append(PolicyReason(code: "quota-exceeded", message: "\(name): \(value) would exceed quota \(limit)"))
            }
        }
        check("instances", after.instances, quota.instances)
        check("vcpu", after.vcpu, quota.vcpu)
        check("memory_gib", after.memoryGiB, quota.memoryGiB)
        check("storage_gib", after.storageGiB, quota.storageGiB)
        check("transfer_gb", after.transferGB, quota.transferGB)
        return reasons.isEmpty ? .allowed : .denied(reasons)
    }
}
