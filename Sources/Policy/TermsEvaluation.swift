import Foundation

extension PeerPolicy {
    /// Checks proposed negotiation terms against this entry, from the side of `role` (the local
    /// broker's role). Both sides check the period lies within the entry's validity; the provider
    /// also checks entitlements, quota, placement and that prices are not below its rate card; the
    /// consumer checks the SLA offered meets what it requires and prices are not above its
    /// ceilings (`max_rates`). Used to decide whether to accept, counter or terminate.
    public func evaluate(terms: Terms, as role: NegotiationRole) -> PolicyDecision {
        var reasons: [PolicyReason] = []
        // Entitlements, quota and placement in our entry for a peer describe what that peer may do
        // in *our* cloud, so only the provider checks them; the consumer's entry for its provider
        // says nothing about the provider's cloud.
        if role == .provider { checkProviderLimits(terms, into: &reasons) }
        // The agreement may not outlast the policy that allows it.
        let period = terms.period
        let startsInside = validity.from.map { from in period.from.map { $0 >= from } ?? false } ?? true
        let endsInside = validity.until.map { until in period.until.map { $0 <= until } ?? false } ?? true
        if !startsInside || !endsInside {
            reasons.append(PolicyReason(code: "outside-validity", message: "agreement period must lie within policy '\(name)' validity"))
        }
        switch role {
        case .provider:
            checkPrices(terms, into: &reasons)
        case .consumer:
            if let required = slaRequired, !terms.sla.satisfies(required) {
                reasons.append(PolicyReason(
                    code: "sla-insufficient",
                    message: "offered \(terms.sla.availabilityPercent)% / \(terms.sla.maxMigrationDowntimeSeconds) s / \(terms.sla.support), required \(required.availabilityPercent)% / \(required.maxMigrationDowntimeSeconds) s / \(required.support)"))
            }
            if let ceiling = maxRates { checkCeiling(ceiling, terms, into: &reasons) }
        }
        return reasons.isEmpty ? .allowed : .denied(reasons)
    }

    private func checkProviderLimits(_ terms: Terms, into reasons: inout [PolicyReason]) {
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
    }

    private func checkCeiling(_ ceiling: PriceCeiling, _ terms: Terms, into reasons: inout [PolicyReason]) {
        let rates = terms.rates
        guard rates.currency == ceiling.currency else {
            reasons.append(PolicyReason(code: "currency-mismatch", message: "we pay in \(ceiling.currency), not \(rates.currency)"))
            return
        }
        func over(_ what: String, _ price: Decimal, _ limit: Decimal?, _ unit: String) {
            if let limit, price > limit {
                reasons.append(PolicyReason(
                    code: "price-too-high", message: "\(what) costs \(price) \(rates.currency)\(unit), we pay at most \(limit)"))
            }
        }
        for type in rates.instanceHour.keys.sorted() {
            over(type, rates.instanceHour[type]!, ceiling.instanceHour[type], "/h")
        }
        over("transfer", rates.perGBTransferred, ceiling.perGBTransferred, "/GB")
        over("storage", rates.perGBMonthStored, ceiling.perGBMonthStored, "/GB-month")
        over("federated calls", rates.perThousandCalls, ceiling.perThousandCalls, " per 1000")
    }

    private func checkPrices(_ terms: Terms, into reasons: inout [PolicyReason]) {
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
                    if terms.entitlements.contains(.federate), terms.rates.perThousandCalls < card.perThousandCalls {
                        reasons.append(PolicyReason(code: "price-too-low", message: "federated calls cost \(card.perThousandCalls) \(card.currency) per 1000"))
                    }
                }
            }
    }

    /// The provider's counter to `terms` under this entry: entitlements narrowed to those granted,
    /// resources capped by the quota, instance types narrowed to priced ones, our rate card and
    /// SLA, placement within ours, and the period clipped to the entry's validity. Nil when nothing
    /// asked for is granted: there is nothing to offer, and the provider terminates instead.
    public func counterOffer(to terms: Terms) -> Terms? {
        let granted = terms.entitlements.intersection(entitlements)
        guard !granted.isEmpty else { return nil }
        var offer = terms
        offer.entitlements = granted
        func cap<T: Comparable>(_ value: T, _ limit: T?) -> T { limit.map { min(value, $0) } ?? value }
        offer.resources = ResourceAmount(
            instances: cap(terms.resources.instances, quota.instances), vcpu: cap(terms.resources.vcpu, quota.vcpu),
            memoryGiB: cap(terms.resources.memoryGiB, quota.memoryGiB), storageGiB: cap(terms.resources.storageGiB, quota.storageGiB),
            transferGB: cap(terms.resources.transferGB, quota.transferGB))
        if let card = rates {
            if !terms.instanceTypes.isEmpty {
                offer.instanceTypes = terms.instanceTypes.filter { card.instanceHour[$0] != nil }
                if offer.instanceTypes.isEmpty { offer.instanceTypes = card.instanceHour.keys.sorted() }
            }
            let types = offer.instanceTypes.isEmpty ? Array(card.instanceHour.keys) : offer.instanceTypes
            offer.rates = RateCard(
                currency: card.currency, instanceHour: card.instanceHour.filter { types.contains($0.key) },
                perGBTransferred: card.perGBTransferred, perGBMonthStored: card.perGBMonthStored,
                perThousandCalls: granted.contains(.federate) ? card.perThousandCalls : 0)
        }
        if let sla = slaOffered { offer.sla = sla }
        if !placement.regions.isEmpty {
            let inside = terms.placement.regions.filter { placement.regions.contains($0) }
            offer.placement.regions = inside.isEmpty ? placement.regions : inside
        }
        if !placement.jurisdictions.isEmpty {
            let inside = terms.placement.jurisdictions.filter { placement.jurisdictions.contains($0) }
            offer.placement.jurisdictions = inside.isEmpty ? placement.jurisdictions : inside
        }
        if let from = validity.from, offer.period.from.map({ $0 < from }) ?? true { offer.period.from = from }
        if let until = validity.until, offer.period.until.map({ $0 > until }) ?? true { offer.period.until = until }
        return offer
    }
}
