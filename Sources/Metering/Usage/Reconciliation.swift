import Foundation

/// How far the consumer's own measurement may be from the provider's before it disputes.
///
/// A dimension agrees when |provider − consumer| ≤ max(absolute, relative × max(provider, consumer)):
/// the absolute slack covers small quantities, where sampling at different instants makes a large
/// relative difference (an instance started between two observations), and the relative slack covers
/// large ones. Both edges are inclusive.
public struct ReconciliationTolerance: Codable, Sendable, Hashable {
    /// Fraction of the larger of the two values, e.g. 0.01 for 1 %.
    public var relative: Decimal
    /// Slack for each instance type's running seconds.
    public var instanceSeconds: Int64
    /// Slack for each instance type's count of distinct instances.
    public var instances: Int64
    public var vcpuSeconds: Int64
    public var bytesTransferred: Decimal
    public var byteSecondsStored: Decimal
    /// Slack for federated calls, when the consumer counts them too.
    public var calls: Int64
    /// Whether the provider's call count stands when the consumer has none of its own: its clients
    /// call the federated service directly, so usually only the provider sees the calls.
    public var acceptsProviderCallCount: Bool

    public init(
        relative: Decimal, instanceSeconds: Int64 = 0, instances: Int64 = 0, vcpuSeconds: Int64 = 0,
        bytesTransferred: Decimal = 0, byteSecondsStored: Decimal = 0, calls: Int64 = 0, acceptsProviderCallCount: Bool = true
    ) {
        self.relative = relative
        self.instanceSeconds = instanceSeconds
        self.instances = instances
        self.vcpuSeconds = vcpuSeconds
        self.bytesTransferred = bytesTransferred
        self.byteSecondsStored = byteSecondsStored
        self.calls = calls
        self.acceptsProviderCallCount = acceptsProviderCallCount
    }

    private enum CodingKeys: String, CodingKey {
        case relative, instanceSeconds, instances, vcpuSeconds, bytesTransferred, byteSecondsStored, calls, acceptsProviderCallCount
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            relative: try c.decode(Decimal.self, forKey: .relative), instanceSeconds: try c.decode(Int64.self, forKey: .instanceSeconds),
            instances: try c.decode(Int64.self, forKey: .instances), vcpuSeconds: try c.decode(Int64.self, forKey: .vcpuSeconds),
            bytesTransferred: try c.decode(Decimal.self, forKey: .bytesTransferred),
            byteSecondsStored: try c.decode(Decimal.self, forKey: .byteSecondsStored),
            calls: try c.decodeIfPresent(Int64.self, forKey: .calls) ?? 0,
            acceptsProviderCallCount: try c.decodeIfPresent(Bool.self, forKey: .acceptsProviderCallCount) ?? true)
    }

    /// Every dimension must match exactly.
    public static let exact = ReconciliationTolerance(relative: 0)

    /// 1 % relative; absolute slack of two one-minute sampling steps per instance type, 2 vCPUs
    /// over the same, 1 MB transferred, 1 GB-hour stored.
    public static let standard = ReconciliationTolerance(
        relative: Decimal(string: "0.01")!, instanceSeconds: 120, instances: 0, vcpuSeconds: 240,
        bytesTransferred: 1_000_000, byteSecondsStored: 3_600_000_000_000)

    func absolute(forKey key: String) -> Decimal {
        switch key {
        case "vcpu_seconds": Decimal(vcpuSeconds)
        case "bytes_transferred": bytesTransferred
        case "byte_seconds_stored": byteSecondsStored
        case "calls": Decimal(calls)
        case _ where key.hasSuffix(".instances"): Decimal(instances)
        default: Decimal(instanceSeconds)
        }
    }
}

/// One dimension on which the two records differ beyond the tolerance.
public struct UsageDiscrepancy: Sendable, Hashable, CustomStringConvertible {
    /// The dimension's canonical key, e.g. `instance_type.m1.small.seconds`.
    public var key: String
    public var unit: String
    public var provider: Decimal
    public var consumer: Decimal
    /// The largest difference the tolerance allowed.
    public var allowed: Decimal

    public var description: String {
        let difference = provider > consumer ? provider - consumer : consumer - provider
        return "\(key): provider \(CanonicalText.decimal(provider)) \(unit), consumer \(CanonicalText.decimal(consumer)) \(unit) "
            + "(difference \(CanonicalText.decimal(difference)), tolerance \(CanonicalText.decimal(Self.rounded(allowed))))"
    }

    /// The allowed difference can be a long fraction (1 % of an odd number): 6 places are plenty to read.
    private static func rounded(_ value: Decimal) -> Decimal {
        var input = value, output = Decimal()
        NSDecimalRound(&output, &input, 6, .plain)
        return output
    }
}

/// What the consumer does with a provider's record.
public enum ReconciliationOutcome: Sendable, Hashable {
    case countersign
    /// One human-readable reason per differing field or dimension, with both values.
    case dispute(reasons: [String])
}

/// The consumer's check of a provider's usage record against its own view of the same period.
public struct Reconciliation: Sendable, Hashable {
    public var tolerance: ReconciliationTolerance

    public init(tolerance: ReconciliationTolerance = .standard) {
        self.tolerance = tolerance
    }

    /// Countersign when the records are about the same agreement, parties and period and every
    /// dimension agrees within the tolerance; otherwise dispute with every reason.
    public func reconcile(provider record: UsageRecord, own: UsageRecord) -> ReconciliationOutcome {
        var reasons = identityMismatches(provider: record, own: own)
        reasons += discrepancies(provider: record, own: own).map(\.description)
        return reasons.isEmpty ? .countersign : .dispute(reasons: reasons)
    }

    /// Dimensions that differ beyond the tolerance. A dimension present on one side only (an
    /// instance type the other did not see) counts as 0 on the other, except the provider's call
    /// count when the consumer has none (`acceptsProviderCallCount`).
    public func discrepancies(provider record: UsageRecord, own: UsageRecord) -> [UsageDiscrepancy] {
        let providerLines = record.lines, ownLines = own.lines
        let ownByKey = Dictionary(ownLines.map { ($0.key, $0) }, uniquingKeysWith: { first, _ in first })
        let providerByKey = Dictionary(providerLines.map { ($0.key, $0) }, uniquingKeysWith: { first, _ in first })
        // Provider's order first, then what only the consumer saw, each in canonical order.
        let keys = providerLines.map(\.key) + ownLines.map(\.key).filter { providerByKey[$0] == nil }
        var found: [UsageDiscrepancy] = []
        for key in keys {
            if key == "calls", ownByKey[key] == nil, tolerance.acceptsProviderCallCount { continue }
            let providerValue = providerByKey[key]?.quantity ?? 0
            let ownValue = ownByKey[key]?.quantity ?? 0
            let unit = providerByKey[key]?.unit ?? ownByKey[key]?.unit ?? ""
            let allowed = max(tolerance.absolute(forKey: key), tolerance.relative * max(providerValue, ownValue))
            let difference = providerValue > ownValue ? providerValue - ownValue : ownValue - providerValue
            if difference > allowed {
                found.append(UsageDiscrepancy(key: key, unit: unit, provider: providerValue, consumer: ownValue, allowed: allowed))
            }
        }
        return found
    }

    private func identityMismatches(provider record: UsageRecord, own: UsageRecord) -> [String] {
        var reasons: [String] = []
        if record.agreementID != own.agreementID {
            reasons.append("agreement: provider \(record.agreementID), consumer \(own.agreementID)")
        }
        if record.provider != own.provider {
            reasons.append("provider: provider \(record.provider), consumer \(own.provider)")
        }
        if record.consumer != own.consumer {
            reasons.append("consumer: provider \(record.consumer), consumer \(own.consumer)")
        }
        if record.period != own.period {
            reasons.append("period: provider \(record.period), consumer \(own.period)")
        }
        return reasons
    }
}
