import Foundation

/// Checks a later request (query, federation, migration) against a concluded agreement rather
/// than the policy file: the agreement is what both brokers signed, so it is what binds. Denies
/// outside the agreement's period, for verbs it does not grant, beyond its resources (current
/// usage under this agreement plus the request), and outside its placement and instance types.
public struct AgreementRule: PolicyRule {
    public var agreement: Agreement

    public init(agreement: Agreement) { self.agreement = agreement }

    public func evaluate(_ request: PolicyRequest, context: PolicyContext) -> PolicyDecision {
        var reasons: [PolicyReason] = []
        let terms = agreement.terms
        if !agreement.isValid(at: context.now) {
            reasons.append(PolicyReason(code: "agreement-expired", message: "agreement \(agreement.id) is not in force at \(context.now)"))
        }
        if !terms.entitlements.contains(request.entitlement) {
            reasons.append(PolicyReason(code: "not-entitled", message: "agreement \(agreement.id) does not grant \(request.entitlement.rawValue)"))
        }
        let quota = Quota(
            instances: terms.resources.instances, vcpu: terms.resources.vcpu, memoryGiB: terms.resources.memoryGiB,
            storageGiB: terms.resources.storageGiB, transferGB: terms.resources.transferGB)
        var agreed = PeerPolicy(name: agreement.id, match: [], quota: quota, placement: terms.placement)
        agreed.validity = terms.period
        let withAgreement = PolicyContext(peer: context.peer, now: context.now, usage: context.usage, policy: agreed)
        reasons += QuotaRule().evaluate(request, context: withAgreement).reasons
        reasons += PlacementRule().evaluate(request, context: withAgreement).reasons
        if case .migrateIn(let spec) = request, !terms.instanceTypes.isEmpty, !terms.instanceTypes.contains(spec.instanceType) {
            reasons.append(PolicyReason(code: "instance-type-not-agreed", message: "instance type \(spec.instanceType) is not in agreement \(agreement.id)"))
        }
        return reasons.isEmpty ? .allowed : .denied(reasons)
    }
}
