import Foundation
import Policy

/// One priced line of a bill.
public struct BillLine: Codable, Sendable, Hashable {
    public enum Kind: String, Codable, Sendable, Hashable {
        case compute, transfer, storage, calls
    }

    public var kind: Kind
    /// What is charged, e.g. "m1.small", "Data transfer", "Storage".
    public var item: String
    /// For compute lines.
    public var instanceType: String?
    /// For compute lines: the most distinct instances of the type seen in any one billed record
    /// (records count distinct instances per period; across periods the same instance would count
    /// again, so the peak is what is meaningful).
    public var instances: Int64?
    /// Exact quantity in the record's base unit: seconds, bytes or byte-seconds.
    public var baseQuantity: Decimal
    public var baseUnit: String
    /// Quantity in the priced unit (hours, GB, GB-month), to `Decimal` precision; shown rounded.
    public var quantity: Decimal
    public var unit: String
    /// Price per `unit`.
    public var rate: Decimal
    /// quantity × rate, rounded half-up to the currency's minor unit.
    public var amount: Decimal
}

/// A usage record a bill covers.
public struct BilledRecord: Codable, Sendable, Hashable {
    public var key: UsageRecordKey
    public var period: MeteringPeriod
}

/// What a consumer owes a provider for a set of usage records between two dates, priced with the
/// agreement's `RateCard`.
///
/// Rounding: each line's amount is computed from exact base units (one multiplication, one
/// division) and rounded once to the currency's minor unit, half-up (`NSDecimalRound` `.plain`:
/// halves away from zero, and amounts are never negative). Half-up is what invoices and the large
/// providers' bills use and what a customer checking a line by hand expects (0.125 → 0.13); banker's
/// rounding only pays off when many rounded values are summed, and here only rounded lines are
/// summed, a handful per bill. The total is the sum of the rounded lines, so it is exact to the
/// cent and equals what the reader adds up.
public struct Bill: Codable, Sendable, Hashable {
    public var provider: String
    public var consumer: String
    public var period: MeteringPeriod
    public var currency: String
    public var records: [BilledRecord]
    /// Compute lines by instance type (UTF-8 order), then transfer, then storage; lines with
    /// nothing used are left out.
    public var lines: [BillLine]
    public var total: Decimal

    /// Prices `records` (all between `provider` and `consumer`, each inside `period`).
    public init(provider: String, consumer: String, period: MeteringPeriod, rates: RateCard, records: [UsageRecord]) throws(BillError) {
        guard !period.isEmpty else { throw .invalid("empty period \(period)") }
        guard Self.isCurrencyCode(rates.currency) else { throw .invalid("currency \(rates.currency) is not an ISO 4217 code") }
        var keys = Set<UsageRecordKey>()
        for record in records {
            do { try record.validate() } catch { throw .invalid("record \(record.key): \(error)") }
            guard record.provider == provider, record.consumer == consumer else {
                throw .recordForAnotherPeer(record.key, provider: record.provider, consumer: record.consumer)
            }
            guard period.contains(record.period) else { throw .recordOutsidePeriod(record.key, record.period) }
            guard keys.insert(record.key).inserted else { throw .duplicateRecord(record.key) }
        }
        // The same agreement billed twice for the same time is a double charge, whatever the sequence.
        let byAgreement = Dictionary(grouping: records, by: \.agreementID)
        for group in byAgreement.values {
            let sorted = group.sorted { $0.period.from < $1.period.from }
            for (earlier, later) in zip(sorted, sorted.dropFirst()) where earlier.period.overlaps(later.period) {
                throw .overlappingRecords(earlier.key, later.key)
            }
        }

        let digits = Self.minorUnitDigits(currency: rates.currency)
        var seconds: [String: Int64] = [:]
        var peakInstances: [String: Int64] = [:]
        var bytes: Decimal = 0
        var byteSeconds: Decimal = 0
        var calls: Int64 = 0
        for record in records {
            for type in record.usage.instanceTypes {
                seconds[type.instanceType, default: 0] += type.runningSeconds
                peakInstances[type.instanceType] = max(peakInstances[type.instanceType] ?? 0, type.instances)
            }
            bytes += record.usage.bytesTransferred
            byteSeconds += record.usage.byteSecondsStored
            calls += record.usage.calls
        }

        var lines: [BillLine] = []
        for type in seconds.keys.sorted(by: CanonicalText.utf8Precedes) {
            let runningSeconds = seconds[type]!
            guard runningSeconds > 0 else { continue }
            guard let rate = rates.instanceHour[type] else { throw .unpricedInstanceType(type) }
            let base = Decimal(runningSeconds)
            lines.append(BillLine(
                kind: .compute, item: type, instanceType: type, instances: peakInstances[type],
                baseQuantity: base, baseUnit: "seconds", quantity: base / 3600, unit: "hour", rate: rate,
                amount: Self.round(base * rate / 3600, digits: digits)))
        }
        if bytes > 0 {
            lines.append(BillLine(
                kind: .transfer, item: "Data transfer", instanceType: nil, instances: nil,
                baseQuantity: bytes, baseUnit: "bytes", quantity: bytes / Metering.bytesPerGB, unit: "GB",
                rate: rates.perGBTransferred,
                amount: Self.round(bytes * rates.perGBTransferred / Metering.bytesPerGB, digits: digits)))
        }
        if byteSeconds > 0 {
            let perGBMonth = Metering.bytesPerGB * 3600 * Metering.hoursPerBillingMonth
            lines.append(BillLine(
                kind: .storage, item: "Storage", instanceType: nil, instances: nil,
                baseQuantity: byteSeconds, baseUnit: "byte-seconds", quantity: byteSeconds / perGBMonth,
                unit: "GB-month", rate: rates.perGBMonthStored,
                amount: Self.round(byteSeconds * rates.perGBMonthStored / perGBMonth, digits: digits)))
        }
        if calls > 0 {
            let base = Decimal(calls)
            lines.append(BillLine(
                kind: .calls, item: "Federated service calls", instanceType: nil, instances: nil,
                baseQuantity: base, baseUnit: "calls", quantity: base / 1000, unit: "1000 calls", rate: rates.perThousandCalls,
                amount: Self.round(base * rates.perThousandCalls / 1000, digits: digits)))
        }
        for line in lines where line.rate < 0 {
            throw .invalid("negative rate for \(line.item)")
        }

        self.provider = provider
        self.consumer = consumer
        self.period = period
        self.currency = rates.currency
        self.records = records
            .map { BilledRecord(key: $0.key, period: $0.period) }
            .sorted { ($0.period.from, $0.key.agreementID, $0.key.sequence) < ($1.period.from, $1.key.agreementID, $1.key.sequence) }
        self.lines = lines
        self.total = lines.reduce(Decimal(0)) { $0 + $1.amount }
    }

    /// Digits after the decimal point in `currency`'s minor unit (ISO 4217): 2 unless listed.
    public static func minorUnitDigits(currency: String) -> Int16 {
        switch currency {
        case "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF": 0
        case "BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND": 3
        default: 2
        }
    }

    /// Half-up to `digits` places (see the type's comment for why not banker's rounding).
    public static func round(_ value: Decimal, digits: Int16) -> Decimal {
        var input = value, output = Decimal()
        NSDecimalRound(&output, &input, Int(digits), .plain)
        return output
    }

    static func isCurrencyCode(_ code: String) -> Bool {
        code.utf8.count == 3 && code.utf8.allSatisfy { $0 >= 0x41 && $0 <= 0x5A }
    }
}

/// Why a bill could not be computed.
public enum BillError: Error, Sendable, Hashable, CustomStringConvertible {
    case invalid(String)
    case recordForAnotherPeer(UsageRecordKey, provider: String, consumer: String)
    case recordOutsidePeriod(UsageRecordKey, MeteringPeriod)
    case duplicateRecord(UsageRecordKey)
    case overlappingRecords(UsageRecordKey, UsageRecordKey)
    /// Usage of an instance type the rate card has no price for: refused rather than billed at 0.
    case unpricedInstanceType(String)

    public var description: String {
        switch self {
        case .invalid(let detail): "invalid bill: \(detail)"
        case .recordForAnotherPeer(let key, let provider, let consumer): "record \(key) is between \(provider) and \(consumer), not the billed peers"
        case .recordOutsidePeriod(let key, let period): "record \(key) covers \(period), outside the billed period"
        case .duplicateRecord(let key): "record \(key) given twice"
        case .overlappingRecords(let a, let b): "records \(a) and \(b) cover overlapping periods of the same agreement"
        case .unpricedInstanceType(let type): "no instance-hour rate for \(type) in the rate card"
        }
    }
}
