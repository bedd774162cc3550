import Foundation

extension PeerPolicy {
    /// Checks proposed negotiation terms against this entry, from the side of `role` (the local
    /// broker's role). Both sides check entitlements, quota, placement and period; the provider
    /// also checks prices are not below its rate card, and the consumer checks the SLA offered
    /// meets what it requires. Used to decide whether to accept, counter or terminate.
    public func evaluate(terms: Terms, as role: NegotiationRole) -> PolicyDecision {
        var reasons: [PolicyReason] = []
        let extra = terms.entitlements.subtracting(entitlements)
        if !extra.isEmpty {
            reasons.append(PolicyReason(code: "not-entitled", message: "policy '\(name)' does not grant \(extra.map(\.rawValue).sorted().joined(separator: ", "))"))
        }
        let r = terms.resources
        func check<T: Comparable>(_ field: String, _ value: T, _ limit: T?) {
            if let limit, value > limit {
                reasons.append(PolicyReason(code: "quota-exceeded", message: "\(field): \(value) exceeds quota \(limit)"))
            }
        }
        check("instances", r.instances, quota.instances)
        check("vcpu", r.vcpu, quota.vcpu)
        check("memory_gib", r.memoryGiB, quota.memoryGiB)
        check("storage_gib", r.storageGiB, quota.storageGiB)
        check("transfer_gb", r.transferGB, quota.transferGB)
        if !placement.regions.isEmpty {
            let outside = terms.placement.regions.filter { !placement.regions.contains($0) }
            if !outside.isEmpty || terms.placement.regions.isEmpty {
                reasons.append(PolicyReason(code: "region-not-allowed", message: "regions must be within \(placement.regions)"))
            }
        }
        if !placement.jurisdictions.isEmpty {
            let outside = terms.placement.jurisdictions.filter { !placement.jurisdictions.contains($0) }
            if !outside.isEmpty || terms.placement.jurisdictions.isEmpty {
                reasons.append(PolicyReason(code: "jurisdiction-not-allowed", message: "jurisdictions must be within \(placement.jurisdictions)"))
            }
        }
        // The agreement may not outlast the policy that allows it.
        let period = terms.period
        let startsInside = validity.from.map { from in period.from.map { $0 >= from } ?? false } ?? true
        let endsInside = validity.until.map { until in period.until.map { $0 <= until } ?? false } ?? true
        if !startsInside || !endsInside {
            reasons.append(PolicyReason(code: "outside-validity", message: "agreement period must lie within policy '\(name)' validity"))
        }
        switch role {
        case .provider:
            if let card = rates {
                if terms.rates.currency != card.currency {
                    reasons.append(PolicyReason(code: "currency-mismatch", message: "prices must be in \(card.currency), not \(terms.rates.currency)"))
                } else {
                    for type in terms.instanceTypes {
                        guard let ours = card.instanceHour[type] else {
                            reasons.append(PolicyReason(code: "unpriced-instance-type", message: "no hourly rate for instance type \(type)"))
                            continue
                        }
                        if (terms.rates.instanceHour[type] ?? 0) < ours {
                            reasons.append(PolicyReason(code: "price-too-low", message: "\(type) costs \(ours) \(card.currency)/h"))
                        }
                    }
                    if terms.rates.perGBTransferred < card.perGBTransferred {
                        reasons.append(PolicyReason(code: "price-too-low", message: "transfer costs \(card.perGBTransferred) \(card.currency)/GB"))
                    }
                    if terms.rates.perGBMonthStored < card.perGBMonthStored {
                        reasons.append(PolicyReason(code: "price-too-low", message: "storage costs \(card.perGBMonthStored) \(card.currency)/GB-month"))
                    }
                }
            }
        case .consumer:
            if let required = slaRequired, !terms.sla.satisfies(required) {
                reasons.append(PolicyReason(
                    code: "sla-insufficient",
                    message: "offered \(terms.sla.availabilityPercent)% / \(terms.sla.maxMigrationDowntimeSeconds) s / \(terms.sla.support), required \(required.availabilityPercent)% / \(required.maxMigrationDowntimeSeconds) s / \(required.support)"))
            }
        }
        return reasons.isEmpty ? .allowed : .denied(reasons)
    }
}
