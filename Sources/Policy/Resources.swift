import Foundation

/// An amount of cloud resources: a quota, a peer's current usage, or the size of a request.
/// Memory, storage and transfer are `Decimal` so that sums and comparisons are exact (a quota
/// of 0.3 GiB must not be exceeded by 0.1 + 0.2).
public struct ResourceAmount: Codable, Sendable, Hashable {
    public var instances: Int
    public var vcpu: Int
    public var memoryGiB: Decimal
    public var storageGiB: Decimal
    public var transferGB: Decimal

    public init(instances: Int = 0, vcpu: Int = 0, memoryGiB: Decimal = 0, storageGiB: Decimal = 0, transferGB: Decimal = 0) {
        self.instances = instances
        self.vcpu = vcpu
        self.memoryGiB = memoryGiB
        self.storageGiB = storageGiB
        self.transferGB = transferGB
    }

    public static let zero = ResourceAmount()

    public static func + (lhs: ResourceAmount, rhs: ResourceAmount) -> ResourceAmount {
        ResourceAmount(
            instances: lhs.instances + rhs.instances, vcpu: lhs.vcpu + rhs.vcpu,
            memoryGiB: lhs.memoryGiB + rhs.memoryGiB, storageGiB: lhs.storageGiB + rhs.storageGiB,
            transferGB: lhs.transferGB + rhs.transferGB)
    }
}

/// Upper bounds per peer. A `nil` dimension is unlimited; a file that wants "none" writes 0.
public struct Quota: Codable, Sendable, Hashable {
    public var instances: Int?
    public var vcpu: Int?
    public var memoryGiB: Decimal?
    public var storageGiB: Decimal?
    public var transferGB: Decimal?

    public init(instances: Int? = nil, vcpu: Int? = nil, memoryGiB: Decimal? = nil, storageGiB: Decimal? = nil, transferGB: Decimal? = nil) {
        self.instances = instances
        self.vcpu = vcpu
        self.memoryGiB = memoryGiB
        self.storageGiB = storageGiB
        self.transferGB = transferGB
    }

    public static let unlimited = Quota()
}

/// Prices charged to a peer. Money is `Decimal` throughout: bills must be exact to the cent.
public struct RateCard: Codable, Sendable, Hashable {
    /// ISO 4217 code, e.g. "EUR".
    public var currency: String
    /// Price per instance-hour, by instance type name.
    public var instanceHour: [String: Decimal]
    public var perGBTransferred: Decimal
    public var perGBMonthStored: Decimal
    /// Price per 1000 calls to federated services (credentials checked by the provider's broker).
    public var perThousandCalls: Decimal

    public init(
        currency: String, instanceHour: [String: Decimal] = [:], perGBTransferred: Decimal = 0, perGBMonthStored: Decimal = 0,
        perThousandCalls: Decimal = 0
    ) {
        self.currency = currency
        self.instanceHour = instanceHour
        self.perGBTransferred = perGBTransferred
        self.perGBMonthStored = perGBMonthStored
        self.perThousandCalls = perThousandCalls
    }

    private enum CodingKeys: String, CodingKey { case currency, instanceHour, perGBTransferred, perGBMonthStored, perThousandCalls }

    /// `perThousandCalls` came later: terms stored without it price calls at zero.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            currency: try c.decode(String.self, forKey: .currency),
            instanceHour: try c.decode([String: Decimal].self, forKey: .instanceHour),
            perGBTransferred: try c.decode(Decimal.self, forKey: .perGBTransferred),
            perGBMonthStored: try c.decode(Decimal.self, forKey: .perGBMonthStored),
            perThousandCalls: try c.decodeIfPresent(Decimal.self, forKey: .perThousandCalls) ?? 0)
    }
}

/// The most a consumer pays a provider (`[peer.max_rates]`): offers above any ceiling are refused.
/// A dimension without a ceiling is not limited; instance types without one are not limited either.
public struct PriceCeiling: Codable, Sendable, Hashable {
    public var currency: String
    public var instanceHour: [String: Decimal]
    public var perGBTransferred: Decimal?
    public var perGBMonthStored: Decimal?
    public var perThousandCalls: Decimal?

    public init(
        currency: String, instanceHour: [String: Decimal] = [:], perGBTransferred: Decimal? = nil, perGBMonthStored: Decimal? = nil,
        perThousandCalls: Decimal? = nil
    ) {
        self.currency = currency
        self.instanceHour = instanceHour
        self.perGBTransferred = perGBTransferred
        self.perGBMonthStored = perGBMonthStored
        self.perThousandCalls = perThousandCalls
    }
}

/// Service levels: what this cloud offers to a peer, or what it requires from one.
public struct ServiceLevel: Codable, Sendable, Hashable {
    /// Percent, e.g. 99.9.
    public var availabilityPercent: Decimal
    public var maxMigrationDowntimeSeconds: Int
    /// Free text agreed by operators, e.g. "24x7" or "business-hours".
    public var support: String

    public init(availabilityPercent: Decimal, maxMigrationDowntimeSeconds: Int, support: String) {
        self.availabilityPercent = availabilityPercent
        self.maxMigrationDowntimeSeconds = maxMigrationDowntimeSeconds
        self.support = support
    }

    /// Whether `self` (an offer) is at least as good as `required`. Support levels are opaque
    /// strings, so they must match exactly unless nothing is required.
    public func satisfies(_ required: ServiceLevel) -> Bool {
        availabilityPercent >= required.availabilityPercent
            && maxMigrationDowntimeSeconds <= required.maxMigrationDowntimeSeconds
            && (required.support.isEmpty || support == required.support)
    }
}

/// Where a peer's workloads and data may live. Empty lists mean "anywhere".
public struct Placement: Codable, Sendable, Hashable {
    public var regions: [String]
    public var jurisdictions: [String]

    public init(regions: [String] = [], jurisdictions: [String] = []) {
        self.regions = regions
        self.jurisdictions = jurisdictions
    }

    public static let anywhere = Placement()
}

/// A half-open interval [from, until). `nil` bounds are open-ended.
public struct ValidityPeriod: Codable, Sendable, Hashable {
    public var from: Date?
    public var until: Date?

    public init(from: Date? = nil, until: Date? = nil) {
        self.from = from
        self.until = until
    }

    public static let always = ValidityPeriod()

    public func contains(_ date: Date) -> Bool {
        (from.map { $0 <= date } ?? true) && (until.map { date < $0 } ?? true)
    }

    public func overlaps(_ other: ValidityPeriod) -> Bool {
        let startsBeforeOtherEnds = switch (from, other.until) {
        case let (a?, b?): a < b
        default: true
        }
        let otherStartsBeforeThisEnds = switch (other.from, until) {
        case let (a?, b?): a < b
        default: true
        }
        return startsBeforeOtherEnds && otherStartsBeforeThisEnds
    }
}
