import Foundation

/// Integrates a time-ordered series of `UsageObservation`s of one agreement over a period
/// [from, until) into `MeasuredUsage`.
///
/// The rule (both brokers apply it, so their records can agree):
/// - Times are whole Unix seconds (fractions dropped).
/// - **Step function.** What an observation shows holds from its time until the next observation's
///   time; the last observation holds until the end of the period. Before the first observation
///   nothing is known and nothing is counted. With `stalenessLimit`, an observation holds at most
///   that long: a gap in observing (the broker was down) is not charged.
/// - **Clamping.** Only the part of each interval inside [from, until) counts. Feed the last
///   observation before `from` too: it gives the state at `from` and the transfer baseline.
/// - **Instances.** For each interval, every instance in a billable state (`isBillable`: running,
///   rebooting) adds the interval's seconds to its instance type observed at the interval's start,
///   and vCPUs × seconds to vCPU-seconds. A type change between two observations takes effect at
///   the later one. An instance counts once towards its type's `instances` if it ran with that type
///   for at least one second of the period.
/// - **Transfer.** The counter's increase between two consecutive observations is attributed to
///   the later observation's time and counts if that time is inside the period, so consecutive
///   periods split the bytes without overlap or gap. A decrease is a reset: the increase is the new
///   value (bytes between the last reading and the reset are unknowable and lost).
/// - **Storage.** Bytes stored × seconds, with the step function above.
///
/// Everything is integer arithmetic (`Int64` seconds, `Decimal` for byte sums), so the result is
/// exact; hours and GB are derived later.
public struct UsageMeter: Sendable {
    public let agreementID: String
    public let period: MeteringPeriod
    /// Longest time an observation is assumed to hold, or `nil` for "until the next one".
    public let stalenessLimit: TimeInterval?

    private var previous: UsageObservation?
    private var secondsByType: [String: Int64] = [:]
    private var instancesByType: [String: Set<String>] = [:]
    private var vcpuSeconds: Int64 = 0
    // Byte sums are exact: integer accumulators that spill into a Decimal before they would
    // overflow (Decimal arithmetic is several times slower than integer arithmetic).
    private var bytesTransferred = ExactSum()
    private var byteSecondsStored = ExactSum()

    public init(agreementID: String, period: MeteringPeriod, stalenessLimit: TimeInterval? = nil) {
        self.agreementID = agreementID
        self.period = period
        // Clamped so that converting it to whole seconds can never trap.
        self.stalenessLimit = stalenessLimit.map { $0.isNaN ? 0 : min(max($0, 0), 1e12) }
    }

    /// Adds the next observation. Observations must come in non-decreasing time order and belong to
    /// this meter's agreement; ones after the period are accepted (they close the last interval).
    public mutating func observe(_ observation: UsageObservation) throws(UsageMeterError) {
        guard observation.agreementID == agreementID else {
            throw .wrongAgreement(expected: agreementID, found: observation.agreementID)
        }
        try Self.validate(observation)
        let now = CanonicalText.wholeSeconds(observation.time)
        if let previous {
            let then = CanonicalText.wholeSeconds(previous.time)
            guard now >= then else { throw .outOfOrder(previous: previous.time, next: observation.time) }
            credit(previous, from: then, to: now)
            let increase = observation.bytesTransferred >= previous.bytesTransferred
                ? observation.bytesTransferred - previous.bytesTransferred
                : observation.bytesTransferred
            if isInPeriod(now) { bytesTransferred.add(increase) }
        }
        previous = observation
    }

    /// Adds every observation of a series, in order.
    public mutating func observe(_ observations: some Sequence<UsageObservation>) throws(UsageMeterError) {
        for observation in observations { try observe(observation) }
    }

    /// The usage so far, with the last observation held until the end of the period (or its
    /// staleness limit). Does not change the meter: observing more later is fine.
    public var measuredUsage: MeasuredUsage {
        var closed = self
        if let previous {
            closed.credit(previous, from: CanonicalText.wholeSeconds(previous.time), to: CanonicalText.wholeSeconds(period.until))
        }
        return MeasuredUsage(
            instanceTypes: closed.secondsByType.keys.map { type in
                InstanceTypeUsage(
                    instanceType: type, instances: Int64(closed.instancesByType[type]?.count ?? 0),
                    runningSeconds: closed.secondsByType[type] ?? 0)
            },
            vcpuSeconds: closed.vcpuSeconds, bytesTransferred: closed.bytesTransferred.value,
            byteSecondsStored: closed.byteSecondsStored.value)
    }

    /// The record for the period, ready to sign.
    public func record(provider: String, consumer: String, sequence: Int64, createdAt: Date) throws(UsageRecordError) -> UsageRecord {
        let record = UsageRecord(
            agreementID: agreementID, provider: provider, consumer: consumer, period: period, sequence: sequence,
            usage: measuredUsage, createdAt: createdAt)
        try record.validate()
        return record
    }

    /// Integrates a whole series at once.
    public static func integrate(
        _ observations: some Sequence<UsageObservation>, agreementID: String, period: MeteringPeriod,
        stalenessLimit: TimeInterval? = nil
    ) throws(UsageMeterError) -> MeasuredUsage {
        var meter = UsageMeter(agreementID: agreementID, period: period, stalenessLimit: stalenessLimit)
        try meter.observe(observations)
        return meter.measuredUsage
    }

    private func isInPeriod(_ second: Int64) -> Bool {
        CanonicalText.wholeSeconds(period.from) <= second && second < CanonicalText.wholeSeconds(period.until)
    }

    /// Charges `observation`'s state over [start, end) clamped to the period and the staleness limit.
    private mutating func credit(_ observation: UsageObservation, from start: Int64, to end: Int64) {
        var end = min(end, CanonicalText.wholeSeconds(period.until))
        if let stalenessLimit {
            end = min(end, start + Int64(stalenessLimit.rounded(.down)))
        }
        let start = max(start, CanonicalText.wholeSeconds(period.from))
        guard end > start else { return }
        let seconds = end - start
        for instance in observation.instances where instance.state.isBillable {
            secondsByType[instance.instanceType, default: 0] += seconds
            instancesByType[instance.instanceType, default: []].insert(instance.id)
            vcpuSeconds += Int64(instance.vcpu) * seconds
        }
        byteSecondsStored.add(observation.bytesStored, times: UInt64(seconds))
    }

    private static func validate(_ observation: UsageObservation) throws(UsageMeterError) {
        guard observation.instances.count <= UsageObservation.maximumInstances else {
            throw .invalidObservation("more than \(UsageObservation.maximumInstances) instances")
        }
        guard observation.time.timeIntervalSince1970 >= 0, observation.time.timeIntervalSince1970 < 1e11 else {
            throw .invalidObservation("time out of range")
        }
        var ids = Set<String>()
        for instance in observation.instances {
            guard ids.insert(instance.id).inserted else { throw .invalidObservation("instance \(instance.id) listed twice") }
            guard instance.vcpu >= 0, instance.vcpu <= 4096 else { throw .invalidObservation("instance \(instance.id): vCPU count \(instance.vcpu)") }
            do {
                try UsageRecord.validateIdentifier(instance.instanceType, field: "instance type")
            } catch {
                throw .invalidObservation("instance \(instance.id): \(error)")
            }
        }
    }
}

/// A non-negative integer sum, exact at any size: a `UInt64` that spills into a `Decimal` (38 digits)
/// before it would overflow.
struct ExactSum: Sendable {
    private var spilled: Decimal = 0
    private var pending: UInt64 = 0

    var value: Decimal { spilled + Decimal(pending) }

    mutating func add(_ amount: UInt64) {
        let (sum, overflow) = pending.addingReportingOverflow(amount)
        if overflow {
            spilled += Decimal(pending)
            pending = amount
        } else {
            pending = sum
        }
    }

    mutating func add(_ amount: UInt64, times factor: UInt64) {
        let (product, overflow) = amount.multipliedReportingOverflow(by: factor)
        if overflow {
            spilled += Decimal(amount) * Decimal(factor)
        } else {
            add(product)
        }
    }
}

/// Why an observation was refused by a `UsageMeter`.
public enum UsageMeterError: Error, Sendable, Hashable, CustomStringConvertible {
    case wrongAgreement(expected: String, found: String)
    case outOfOrder(previous: Date, next: Date)
    case invalidObservation(String)

    public var description: String {
        switch self {
        case .wrongAgreement(let expected, let found): "observation for agreement \(found), meter is for \(expected)"
        case .outOfOrder(let previous, let next): "observation at \(next.formatted(.iso8601)) is before the previous one at \(previous.formatted(.iso8601))"
        case .invalidObservation(let detail): "invalid observation: \(detail)"
        }
    }
}
