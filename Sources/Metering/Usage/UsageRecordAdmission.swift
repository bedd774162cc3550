import Foundation
import Policy

/// What a consumer checks in a provider's usage record before it reconciles, countersigns or even
/// stores it: a signed record is the provider's word, and the provider may lie.
///
/// The record must lie inside the agreement's validity and on its period grid (periods of
/// `periodSeconds` from the agreement's start, as the provider closes them); it must not overlap a
/// record this consumer already countersigned under the same agreement (one hour is billed once);
/// its quantities must fit what the agreement allows (no more running seconds than its instances
/// could run, no more vCPU seconds than its vCPUs, no more bytes stored than its storage, no more
/// bytes transferred than its transfer); and calls are counted only for a consumer that
/// holds federated services under the agreement, up to a ceiling it sets. All arithmetic on the
/// provider's numbers is checked: an overflow is a refusal, never a crash.
public struct UsageRecordAdmission: Sendable, Equatable {
    /// The length of one metering period, in seconds (`[metering] period_seconds`).
    public var periodSeconds: Int64
    /// The most calls per second of period the consumer accepts being billed for
    /// (`[metering] max_calls_per_second`).
    public var maxCallsPerSecond: Int64

    public init(periodSeconds: Int64, maxCallsPerSecond: Int64 = 1000) {
        self.periodSeconds = periodSeconds
        self.maxCallsPerSecond = maxCallsPerSecond
    }

    /// Why a record is refused: a stable code (audited) and a sentence (sent to the provider).
    public struct Refusal: Error, Sendable, Equatable, CustomStringConvertible {
        public var code: String
        public var detail: String
        public var description: String { "\(code): \(detail)" }
    }

    /// The consumer's side of the facts the record is checked against.
    public struct Context: Sendable {
        public var agreement: Agreement
        /// Periods of records under this agreement the consumer countersigned, other than this record's key.
        public var countersignedPeriods: [MeteringPeriod]
        /// Whether the consumer holds (or held) federated services under this agreement.
        public var hasFederatedServices: Bool

        public init(agreement: Agreement, countersignedPeriods: [MeteringPeriod], hasFederatedServices: Bool) {
            self.agreement = agreement
            self.countersignedPeriods = countersignedPeriods
            self.hasFederatedServices = hasFederatedServices
        }
    }

    public func check(_ record: UsageRecord, _ context: Context) throws(Refusal) {
        let agreement = context.agreement
        let period = record.period
        let from = CanonicalText.wholeSeconds(period.from)
        let until = CanonicalText.wholeSeconds(period.until)
        let start = CanonicalText.wholeSeconds(agreement.terms.period.from ?? agreement.createdAt)
        if from < start {
            throw Refusal(code: "outsideAgreement", detail: "the period \(period) starts before the agreement (\(agreement.terms.period.from ?? agreement.createdAt))")
        }
        if let end = agreement.terms.period.until, until > CanonicalText.wholeSeconds(end) {
            throw Refusal(code: "outsideAgreement", detail: "the period \(period) ends after the agreement (\(end))")
        }
        guard periodSeconds > 0, until - from == periodSeconds, (from - start) % periodSeconds == 0 else {
            throw Refusal(
                code: "offGrid",
                detail: "the period \(period) is not one of the agreement's \(periodSeconds) s periods from \(Date(timeIntervalSince1970: TimeInterval(start)))")
        }
        if let settled = context.countersignedPeriods.first(where: { $0.overlaps(period) }) {
            throw Refusal(code: "overlapsSettled", detail: "the period \(period) overlaps \(settled), already countersigned")
        }
        try checkQuantities(record, agreement)
        try checkCalls(record, context)
    }

    private func checkQuantities(_ record: UsageRecord, _ agreement: Agreement) throws(Refusal) {
        let seconds = record.period.seconds
        let resources = agreement.terms.resources
        // Zero in the agreement means "not limited by count" there; the price list still bounds it.
        if resources.instances > 0 {
            var running: Int64 = 0
            for type in record.usage.instanceTypes {
                let (sum, overflow) = running.addingReportingOverflow(type.runningSeconds)
                guard !overflow else { throw Refusal(code: "aboveAgreement", detail: "running seconds overflow") }
                running = sum
            }
            let (allowed, overflow) = Int64(resources.instances).multipliedReportingOverflow(by: seconds)
            if !overflow, running > allowed {
                throw Refusal(
                    code: "aboveAgreement",
                    detail: "\(running) instance-seconds in \(seconds) s exceed the agreement's \(resources.instances) instances")
            }
        }
        if resources.vcpu > 0 {
            let (allowed, overflow) = Int64(resources.vcpu).multipliedReportingOverflow(by: seconds)
            if !overflow, record.usage.vcpuSeconds > allowed {
                throw Refusal(
                    code: "aboveAgreement",
                    detail: "\(record.usage.vcpuSeconds) vCPU-seconds in \(seconds) s exceed the agreement's \(resources.vcpu) vCPUs")
            }
        }
        // Bytes: never negative; stored bytes within the agreement's storage at every second of the
        // period, transferred bytes within the whole agreement's transfer (one period cannot
        // carry more than all of them). Decimal: no overflow to check.
        let usage = record.usage
        if usage.bytesTransferred < 0 || usage.byteSecondsStored < 0 {
            throw Refusal(code: "malformedQuantity", detail: "negative bytes transferred or stored")
        }
        if resources.storageGiB > 0 {
            let allowed = resources.storageGiB * Decimal(1 << 30) * Decimal(seconds)
            if usage.byteSecondsStored > allowed {
                throw Refusal(
                    code: "aboveAgreement",
                    detail: "\(usage.byteSecondsStored) byte-seconds stored in \(seconds) s exceed the agreement's \(resources.storageGiB) GiB")
            }
        }
        if resources.transferGB > 0 {
            let allowed = resources.transferGB * Metering.bytesPerGB
            if usage.bytesTransferred > allowed {
                throw Refusal(
                    code: "aboveAgreement",
                    detail: "\(usage.bytesTransferred) bytes transferred exceed the agreement's \(resources.transferGB) GB")
            }
        }
        if !agreement.terms.instanceTypes.isEmpty {
            for type in record.usage.instanceTypes where !agreement.terms.instanceTypes.contains(type.instanceType) {
                throw Refusal(code: "aboveAgreement", detail: "instance type \(type.instanceType) is not in the agreement")
            }
        }
    }

    private func checkCalls(_ record: UsageRecord, _ context: Context) throws(Refusal) {
        let calls = record.usage.calls
        guard calls > 0 else { return }
        guard context.hasFederatedServices else {
            throw Refusal(code: "callsNotAgreed", detail: "\(calls) calls billed, but no federated service was selected under this agreement")
        }
        let (ceiling, overflow) = maxCallsPerSecond.multipliedReportingOverflow(by: record.period.seconds)
        if !overflow, calls > ceiling {
            throw Refusal(
                code: "callsAboveCeiling",
                detail: "\(calls) calls in \(record.period.seconds) s exceed the \(maxCallsPerSecond) per second this consumer accepts")
        }
    }
}
