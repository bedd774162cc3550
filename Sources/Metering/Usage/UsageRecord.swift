import Foundation

/// A half-open metering period [from, until) with both bounds set, in whole seconds.
public struct MeteringPeriod: Codable, Sendable, Hashable, CustomStringConvertible {
    public var from: Date
    public var until: Date

    /// Bounds are truncated to whole seconds, as every protocol time is.
    public init(from: Date, until: Date) {
        self.from = Date(timeIntervalSince1970: TimeInterval(CanonicalText.wholeSeconds(from)))
        self.until = Date(timeIntervalSince1970: TimeInterval(CanonicalText.wholeSeconds(until)))
    }

    public var seconds: Int64 { CanonicalText.wholeSeconds(until) - CanonicalText.wholeSeconds(from) }
    public var isEmpty: Bool { until <= from }

    public func contains(_ date: Date) -> Bool { from <= date && date < until }

    /// Whether `other` lies entirely inside this period.
    public func contains(_ other: MeteringPeriod) -> Bool { from <= other.from && other.until <= until }

    public func overlaps(_ other: MeteringPeriod) -> Bool { from < other.until && other.from < until }

    /// ISO 8601 UTC bounds, e.g. `[2026-06-01T00:00:00Z, 2026-07-01T00:00:00Z)`.
    public var description: String {
        "[\(from.formatted(.iso8601)), \(until.formatted(.iso8601)))"
    }
}

/// Usage of one instance type in a period.
public struct InstanceTypeUsage: Codable, Sendable, Hashable {
    public var instanceType: String
    /// Distinct instances seen running with this type during the period.
    public var instances: Int64
    /// Sum over those instances of the seconds they were running with this type.
    public var runningSeconds: Int64

    public init(instanceType: String, instances: Int64, runningSeconds: Int64) {
        self.instanceType = instanceType
        self.instances = instances
        self.runningSeconds = runningSeconds
    }

    /// Instance-hours, exact up to `Decimal`'s 38 digits (seconds / 3600 is a repeating fraction).
    public var hours: Decimal { Decimal(runningSeconds) / 3600 }
}

/// What was measured in a period, in exact integer base units (seconds, bytes). Derived hours and GB
/// are `Decimal`s computed on demand, so a record never carries a rounded quantity.
public struct MeasuredUsage: Codable, Sendable, Hashable {
    /// Sorted by instance type (UTF-8 byte order), one entry per type.
    public var instanceTypes: [InstanceTypeUsage]
    /// Sum over running instances of vCPUs × seconds running.
    public var vcpuSeconds: Int64
    /// Bytes moved under the agreement (sum of counter increments).
    public var bytesTransferred: Decimal
    /// Sum over time of bytes stored × seconds.
    public var byteSecondsStored: Decimal
    /// Calls to federated services provided under the agreement whose credentials the provider's
    /// broker accepted. Only the provider sees them: the consumer's clients call the service.
    public var calls: Int64

    public init(
        instanceTypes: [InstanceTypeUsage] = [], vcpuSeconds: Int64 = 0, bytesTransferred: Decimal = 0, byteSecondsStored: Decimal = 0,
        calls: Int64 = 0
    ) {
        self.instanceTypes = instanceTypes.sorted { CanonicalText.utf8Precedes($0.instanceType, $1.instanceType) }
        self.vcpuSeconds = vcpuSeconds
        self.bytesTransferred = bytesTransferred
        self.byteSecondsStored = byteSecondsStored
        self.calls = calls
    }

    private enum CodingKeys: String, CodingKey { case instanceTypes, vcpuSeconds, bytesTransferred, byteSecondsStored, calls }

    /// `calls` came later: stored usage without it reads as no calls.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            instanceTypes: try container.decode([InstanceTypeUsage].self, forKey: .instanceTypes),
            vcpuSeconds: try container.decode(Int64.self, forKey: .vcpuSeconds),
            bytesTransferred: try container.decode(Decimal.self, forKey: .bytesTransferred),
            byteSecondsStored: try container.decode(Decimal.self, forKey: .byteSecondsStored),
            calls: try container.decodeIfPresent(Int64.self, forKey: .calls) ?? 0)
    }

    public static let zero = MeasuredUsage()

    public func instanceType(_ name: String) -> InstanceTypeUsage? {
        instanceTypes.first { $0.instanceType == name }
    }

    public var vcpuHours: Decimal { Decimal(vcpuSeconds) / 3600 }
    /// Exact: dividing by a power of ten.
    public var gbTransferred: Decimal { bytesTransferred / Metering.bytesPerGB }
    public var gbHoursStored: Decimal { byteSecondsStored / (Metering.bytesPerGB * 3600) }
}

/// One measured dimension of a record, flattened for comparison and display.
public struct UsageLine: Sendable, Hashable {
    /// The dimension's key in the canonical encoding, e.g. `vcpu_seconds` or
    /// `instance_type.m1.small.seconds`.
    public var key: String
    public var quantity: Decimal
    /// The base unit: "seconds", "instances", "bytes" or "byte-seconds".
    public var unit: String
}

/// A provider's statement of what a consumer used under one agreement in one period. The provider
/// signs `canonicalBytes()`; the consumer countersigns the same bytes or disputes them.
public struct UsageRecord: Codable, Sendable, Hashable {
    public static let format = "urn:intercloud:usage:0"

    public var agreementID: String
    /// Bare JIDs of the two brokers.
    public var provider: String
    public var consumer: String
    public var period: MeteringPeriod
    /// Per agreement and provider, increasing; a corrected record after a dispute takes a new number.
    public var sequence: Int64
    public var usage: MeasuredUsage
    public var createdAt: Date

    public init(
        agreementID: String, provider: String, consumer: String, period: MeteringPeriod, sequence: Int64,
        usage: MeasuredUsage, createdAt: Date
    ) {
        self.agreementID = agreementID
        self.provider = provider
        self.consumer = consumer
        self.period = period
        self.sequence = sequence
        self.usage = usage
        self.createdAt = Date(timeIntervalSince1970: TimeInterval(CanonicalText.wholeSeconds(createdAt)))
    }

    /// The identity of a record in a ledger.
    public var key: UsageRecordKey { UsageRecordKey(agreementID: agreementID, sequence: sequence, provider: provider) }

    /// Every dimension, in canonical order: totals first, then per instance type.
    public var lines: [UsageLine] {
        var lines = [
            UsageLine(key: "vcpu_seconds", quantity: Decimal(usage.vcpuSeconds), unit: "seconds"),
            UsageLine(key: "bytes_transferred", quantity: usage.bytesTransferred, unit: "bytes"),
            UsageLine(key: "byte_seconds_stored", quantity: usage.byteSecondsStored, unit: "byte-seconds"),
        ]
        if usage.calls > 0 { lines.append(UsageLine(key: "calls", quantity: Decimal(usage.calls), unit: "calls")) }
        for type in usage.instanceTypes {
            lines.append(UsageLine(key: "instance_type.\(type.instanceType).instances", quantity: Decimal(type.instances), unit: "instances"))
            lines.append(UsageLine(key: "instance_type.\(type.instanceType).seconds", quantity: Decimal(type.runningSeconds), unit: "seconds"))
        }
        return lines
    }

    /// The bytes the provider signs and the consumer countersigns. Rules of
    /// `Agreement.canonicalBytes()`: UTF-8 lines `key=value\n` in the fixed order below; instance
    /// types sorted by UTF-8 bytes; decimals in plain notation; dates as integer Unix seconds; `\`,
    /// newline and `=` escaped as `\\`, `\n`, `\=` in keys and values. Quantities are integers in
    /// base units (seconds, bytes, byte-seconds), so both sides compute the same text without any
    /// rounding rule. `calls` is written only when non-zero, so records without federated calls
    /// keep the encoding they always had. Any other change needs a new first line.
    public func canonicalBytes() -> [UInt8] {
        var lines: [(String, String)] = [
            ("format", Self.format),
            ("agreement", agreementID),
            ("sequence", String(sequence)),
            ("provider", provider),
            ("consumer", consumer),
            ("created", CanonicalText.seconds(createdAt)),
            ("period.from", CanonicalText.seconds(period.from)),
            ("period.until", CanonicalText.seconds(period.until)),
            ("vcpu_seconds", String(usage.vcpuSeconds)),
            ("bytes_transferred", CanonicalText.decimal(usage.bytesTransferred)),
            ("byte_seconds_stored", CanonicalText.decimal(usage.byteSecondsStored)),
        ]
        if usage.calls > 0 { lines.append(("calls", String(usage.calls))) }
        for type in usage.instanceTypes.sorted(by: { CanonicalText.utf8Precedes($0.instanceType, $1.instanceType) }) {
            lines.append(("instance_type.\(type.instanceType).instances", String(type.instances)))
            lines.append(("instance_type.\(type.instanceType).seconds", String(type.runningSeconds)))
        }
        return CanonicalText.encode(lines)
    }

    /// Parses a record received from a peer. Accepts only the canonical encoding (the parsed record
    /// must encode back to exactly `bytes`), so the values used are the values signed; validates
    /// every field and bounds sizes (`Metering.maximumRecordBytes`, `maximumInstanceTypes`,
    /// `maximumIdentifierBytes`).
    public init(canonicalBytes bytes: [UInt8]) throws(UsageRecordError) {
        guard bytes.count <= Metering.maximumRecordBytes else {
            throw .tooLarge("\(bytes.count) bytes, at most \(Metering.maximumRecordBytes)")
        }
        let pairs = try CanonicalText.decode(bytes)
        var remaining = pairs[...]
        func take(_ expected: String) throws(UsageRecordError) -> String {
            guard let (key, value) = remaining.popFirst() else { throw .malformed("missing \(expected)") }
            guard key == expected else { throw .malformed("expected \(expected), found \(key.prefix(80))") }
            return value
        }
        let format = try take("format")
        guard format == Self.format else { throw .unsupportedFormat(String(format.prefix(80))) }
        let agreementID = try take("agreement")
        let sequence = try CanonicalText.parseCount(try take("sequence"), field: "sequence")
        let provider = try take("provider")
        let consumer = try take("consumer")
        let created = try CanonicalText.parseDate(try take("created"), field: "created")
        let from = try CanonicalText.parseDate(try take("period.from"), field: "period.from")
        let until = try CanonicalText.parseDate(try take("period.until"), field: "period.until")
        let vcpuSeconds = try CanonicalText.parseCount(try take("vcpu_seconds"), field: "vcpu_seconds")
        let transferred = try CanonicalText.parseIntegralDecimal(try take("bytes_transferred"), field: "bytes_transferred")
        let stored = try CanonicalText.parseIntegralDecimal(try take("byte_seconds_stored"), field: "byte_seconds_stored")
        var calls: Int64 = 0
        if remaining.first?.0 == "calls" { calls = try CanonicalText.parseCount(try take("calls"), field: "calls") }

        var types: [InstanceTypeUsage] = []
        while let (countKey, countValue) = remaining.popFirst() {
            guard types.count < Metering.maximumInstanceTypes else {
                throw .tooLarge("more than \(Metering.maximumInstanceTypes) instance types")
            }
            let prefix = "instance_type.", countSuffix = ".instances", secondsSuffix = ".seconds"
            guard countKey.hasPrefix(prefix), countKey.hasSuffix(countSuffix),
                  countKey.utf8.count > prefix.utf8.count + countSuffix.utf8.count
            else { throw .malformed("unexpected key \(countKey.prefix(80))") }
            let type = String(countKey.dropFirst(prefix.count).dropLast(countSuffix.count))
            let instances = try CanonicalText.parseCount(countValue, field: countKey)
            guard let (secondsKey, secondsValue) = remaining.popFirst(), secondsKey == prefix + type + secondsSuffix else {
                throw .malformed("missing \(prefix)\(type.prefix(80))\(secondsSuffix)")
            }
            let seconds = try CanonicalText.parseCount(secondsValue, field: secondsKey)
            types.append(InstanceTypeUsage(instanceType: type, instances: instances, runningSeconds: seconds))
        }

        let record = UsageRecord(
            agreementID: agreementID, provider: provider, consumer: consumer,
            period: MeteringPeriod(from: from, until: until), sequence: sequence,
            usage: MeasuredUsage(
                instanceTypes: types, vcpuSeconds: vcpuSeconds, bytesTransferred: transferred, byteSecondsStored: stored, calls: calls),
            createdAt: created)
        try record.validate()
        guard record.canonicalBytes() == bytes else {
            throw .notCanonical("the bytes differ from the record's canonical encoding (order, duplicates or number form)")
        }
        self = record
    }

    /// Checks what any record must satisfy before it is signed or accepted: non-empty identifiers
    /// without control characters and within bounds, distinct instance types, dates between 1970
    /// and 9999, a non-empty period,
    /// and usage that fits in the period (no type runs longer than instances × period).
    public func validate() throws(UsageRecordError) {
        for (field, value) in [("agreement", agreementID), ("provider", provider), ("consumer", consumer)] {
            try Self.validateIdentifier(value, field: field)
        }
        for (field, date) in [("created", createdAt), ("period.from", period.from), ("period.until", period.until)] {
            // Years 1970 to 9999: anything else is a peer's mistake or an attempt to upset date code.
            guard (0..<253_402_300_800).contains(CanonicalText.wholeSeconds(date)) else { throw .invalid("\(field) out of range") }
        }
        guard period.from < period.until else { throw .invalid("period is empty: \(period)") }
        guard sequence >= 0 else { throw .invalid("negative sequence") }
        guard usage.vcpuSeconds >= 0, usage.bytesTransferred >= 0, usage.byteSecondsStored >= 0, usage.calls >= 0 else {
            throw .invalid("negative quantity")
        }
        guard usage.instanceTypes.count <= Metering.maximumInstanceTypes else {
            throw .tooLarge("more than \(Metering.maximumInstanceTypes) instance types")
        }
        var seen = Set<String>()
        for type in usage.instanceTypes {
            try Self.validateIdentifier(type.instanceType, field: "instance type")
            guard seen.insert(type.instanceType).inserted else { throw .invalid("instance type \(type.instanceType) listed twice") }
            guard type.instances >= 0, type.runningSeconds >= 0 else { throw .invalid("negative quantity for \(type.instanceType)") }
            let (bound, overflow) = type.instances.multipliedReportingOverflow(by: period.seconds)
            guard overflow || type.runningSeconds <= bound else {
                throw .invalid("\(type.instanceType): \(type.runningSeconds) s exceeds \(type.instances) instances × \(period.seconds) s")
            }
        }
    }

    static func validateIdentifier(_ value: String, field: String) throws(UsageRecordError) {
        guard !value.isEmpty else { throw .invalid("\(field) is empty") }
        guard value.utf8.count <= Metering.maximumIdentifierBytes else { throw .tooLarge("\(field) longer than \(Metering.maximumIdentifierBytes) bytes") }
        guard !value.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
            throw .invalid("\(field) contains a control character")
        }
    }
}

/// The identity of a usage record in a ledger: the provider numbers its records per agreement.
public struct UsageRecordKey: Codable, Sendable, Hashable, CustomStringConvertible {
    public var agreementID: String
    public var sequence: Int64
    public var provider: String

    public init(agreementID: String, sequence: Int64, provider: String) {
        self.agreementID = agreementID
        self.sequence = sequence
        self.provider = provider
    }

    public var description: String { "\(agreementID)#\(sequence)@\(provider)" }
}

/// Why a usage record was refused.
public enum UsageRecordError: Error, Sendable, Hashable, CustomStringConvertible {
    case tooLarge(String)
    case malformed(String)
    case unsupportedFormat(String)
    case notCanonical(String)
    case invalid(String)

    public var description: String {
        switch self {
        case .tooLarge(let detail): "usage record too large: \(detail)"
        case .malformed(let detail): "malformed usage record: \(detail)"
        case .unsupportedFormat(let format): "unsupported usage record format: \(format)"
        case .notCanonical(let detail): "usage record not in canonical form: \(detail)"
        case .invalid(let detail): "invalid usage record: \(detail)"
        }
    }
}
