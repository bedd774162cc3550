import Foundation
import Policy
import Providers

/// Decides, from one look at the local cloud and the agreements in force, which instances should
/// move to a peer and why (issue 7, part 6). Pure: the caller passes everything in, including
/// the time, and performs (or only proposes) what comes out.
///
/// Triggers, each enabled by name in `[automation] triggers`:
/// - `capacity`: used vCPU, memory or instances above `capacityThresholdPercent` of the cloud's
///   limit; the smallest running instances move first until the projection is under the threshold.
/// - `failure`: an instance in the `error` state (its host failed) moves so it runs elsewhere.
/// - `price`: a peer's agreed hourly rate for the instance's type is at least
///   `priceAdvantagePercent` below the local size's price in the same currency.
/// An instance moves only to a peer whose agreement is in force, grants `migrate-in`, lists the
/// instance type (or any priced type) and has room left in its quota for it; the cheapest such
/// agreement wins. Instances named in `exclude` never move; at most `maxPerRound` per look.
public struct AutomationPolicy: Sendable, Hashable {
    public enum Trigger: String, Sendable, Hashable, Codable, CaseIterable {
        case capacity, failure, price
    }

    public var triggers: Set<Trigger>
    public var capacityThresholdPercent: Decimal
    public var priceAdvantagePercent: Decimal
    public var exclude: Set<String>
    public var maxPerRound: Int

    public init(
        triggers: Set<Trigger> = [.capacity, .failure], capacityThresholdPercent: Decimal = 90, priceAdvantagePercent: Decimal = 20,
        exclude: Set<String> = [], maxPerRound: Int = 1
    ) {
        self.triggers = triggers
        self.capacityThresholdPercent = capacityThresholdPercent
        self.priceAdvantagePercent = priceAdvantagePercent
        self.exclude = exclude
        self.maxPerRound = maxPerRound
    }

    /// An agreement in which this broker is the consumer, with what it already uses there.
    public struct Destination: Sendable, Hashable {
        public var agreement: Agreement
        public var usage: ResourceAmount

        public init(agreement: Agreement, usage: ResourceAmount) {
            self.agreement = agreement
            self.usage = usage
        }
    }

    public struct Proposal: Sendable, Hashable {
        public var instanceID: String
        public var instanceName: String
        public var peer: String
        public var agreementID: String
        public var trigger: Trigger
        public var reason: String
    }

    public func evaluate(
        instances: [Instance], sizes: [InstanceSize], capacity: Capacity, destinations: [Destination], now: Date
    ) -> [Proposal] {
        let sizeByID = Dictionary(sizes.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        var candidates: [(Instance, Trigger, String)] = []
        let movable = instances.filter { !exclude.contains($0.id) && !exclude.contains($0.name) }

        if triggers.contains(.failure) {
            for instance in movable where instance.state == .error {
                candidates.append((instance, .failure, "instance \(instance.name) is in error (\(instance.rawState)) on this cloud"))
            }
        }
        if triggers.contains(.capacity) {
            var projected = capacity
            let running = movable.filter { $0.state == .running }
                .sorted { (sizeByID[$0.sizeID ?? ""]?.vCPU ?? 0, $0.id) < (sizeByID[$1.sizeID ?? ""]?.vCPU ?? 0, $1.id) }
            for instance in running where overThreshold(projected) != nil {
                let why = overThreshold(projected)!
                candidates.append((instance, .capacity, "capacity: \(why) above \(capacityThresholdPercent)%"))
                if let size = sizeByID[instance.sizeID ?? ""] {
                    projected.usedInstances -= 1
                    projected.usedVCPU -= size.vCPU
                    projected.usedMemoryMiB -= size.memoryMiB
                }
            }
        }
        if triggers.contains(.price) {
            for instance in movable where instance.state == .running {
                guard let size = sizeByID[instance.sizeID ?? ""], let local = size.pricePerHour else { continue }
                for destination in destinations {
                    let rates = destination.agreement.terms.rates
                    guard rates.currency == local.currency, let theirs = rates.instanceHour[size.id] else { continue }
                    if theirs * 100 <= local.amount * (100 - priceAdvantagePercent) {
                        candidates.append((instance, .price, "price: \(size.id) costs \(local.amount) \(local.currency)/h here, \(theirs) at \(destination.agreement.provider)"))
                        break
                    }
                }
            }
        }

        var proposals: [Proposal] = []
        var used = Dictionary(destinations.map { ($0.agreement.id, $0.usage) }, uniquingKeysWith: { first, _ in first })
        var moved = Set<String>()
        for (instance, trigger, reason) in candidates where !moved.contains(instance.id) {
            guard proposals.count < maxPerRound, let size = sizeByID[instance.sizeID ?? ""] else { continue }
            let demand = ResourceAmount(instances: 1, vcpu: size.vCPU, memoryGiB: Decimal(size.memoryMiB) / 1024, storageGiB: Decimal(size.diskGiB))
            let fitting = destinations.filter { destination in
                let agreement = destination.agreement
                let terms = agreement.terms
                guard agreement.isValid(at: now), terms.entitlements.contains(.migrateIn) else { return false }
                if !terms.instanceTypes.isEmpty, !terms.instanceTypes.contains(size.id) { return false }
                let after = (used[agreement.id] ?? .zero) + demand
                let limit = terms.resources
                return after.instances <= limit.instances && after.vcpu <= limit.vcpu && after.memoryGiB <= limit.memoryGiB
                    && after.storageGiB <= limit.storageGiB
            }
            let cheapest = fitting.min { a, b in
                (a.agreement.terms.rates.instanceHour[size.id] ?? .greatestFiniteMagnitude, a.agreement.id)
                    < (b.agreement.terms.rates.instanceHour[size.id] ?? .greatestFiniteMagnitude, b.agreement.id)
            }
            guard let target = cheapest else { continue }
            used[target.agreement.id] = (used[target.agreement.id] ?? .zero) + demand
            moved.insert(instance.id)
            proposals.append(Proposal(
                instanceID: instance.id, instanceName: instance.name, peer: target.agreement.provider, agreementID: target.agreement.id,
                trigger: trigger, reason: reason))
        }
        return proposals
    }

    /// The first dimension above the threshold, described, or nil.
    func overThreshold(_ capacity: Capacity) -> String? {
        func percent(_ used: Int, _ max: Int?) -> Decimal? {
            guard let max, max > 0 else { return nil }
            return Decimal(used) * 100 / Decimal(max)
        }
        let dimensions: [(String, Int, Int?)] = [
            ("vCPU", capacity.usedVCPU, capacity.maxVCPU), ("memory", capacity.usedMemoryMiB, capacity.maxMemoryMiB),
            ("instances", capacity.usedInstances, capacity.maxInstances),
        ]
        for (name, used, max) in dimensions {
            if let value = percent(used, max), value > capacityThresholdPercent {
                return "\(name) \(used)/\(max!) (\(NSDecimalNumber(decimal: value).intValue)%)"
            }
        }
        return nil
    }
}
