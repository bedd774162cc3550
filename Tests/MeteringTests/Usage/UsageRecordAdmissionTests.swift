import Foundation
import Testing
@testable import Metering
import Policy

/// A provider's signed record is its word: the consumer checks it against what was agreed.
@Suite("Usage record admission")
struct UsageRecordAdmissionTests {
    /// From t0 for 30 days: 2 instances, 4 vCPUs, m1.small and m1.large.
    let agreement = Agreement(
        id: "a1", negotiationID: "n1", consumer: consumer, provider: provider,
        terms: Terms(
            resources: ResourceAmount(instances: 2, vcpu: 4), instanceTypes: ["m1.small", "m1.large"],
            period: ValidityPeriod(from: t0, until: t0 + 30 * 24 * hour), rates: rates,
            sla: ServiceLevel(availabilityPercent: d("99.9"), maxMigrationDowntimeSeconds: 300, support: "24x7"),
            entitlements: [.query]),
        createdAt: t0 - 60)
    let admission = UsageRecordAdmission(periodSeconds: 3600, maxCallsPerSecond: 10)

    func hourRecord(_ index: Int, sequence: Int64 = 1, running: Int64 = 3600, vcpu: Int64 = 3600, calls: Int64 = 0, type: String = "m1.small") -> UsageRecord {
        record(
            sequence: sequence, period: period(Double(index) * hour, Double(index + 1) * hour),
            types: [InstanceTypeUsage(instanceType: type, instances: 1, runningSeconds: running)], vcpuSeconds: vcpu, calls: calls)
    }

    func context(settled: [MeteringPeriod] = [], services: Bool = false) -> UsageRecordAdmission.Context {
        .init(agreement: agreement, countersignedPeriods: settled, hasFederatedServices: services)
    }

    func code(_ record: UsageRecord, _ context: UsageRecordAdmission.Context) -> String? {
        do {
            try admission.check(record, context)
            return nil
        } catch { return error.code }
    }

    @Test("an honest hour on the grid is admitted")
    func honest() {
        #expect(code(hourRecord(5), context()) == nil)
        #expect(code(hourRecord(5, running: 7200, vcpu: 14_400), context()) == nil)  // exactly the agreed maximum
    }

    @Test("periods outside the agreement or off its grid are refused")
    func validityAndGrid() {
        #expect(code(hourRecord(-1), context()) == "outsideAgreement")
        #expect(code(hourRecord(30 * 24), context()) == "outsideAgreement")
        var shifted = hourRecord(3)
        shifted.period = MeteringPeriod(from: t0 + 3 * hour + 600, until: t0 + 4 * hour + 600)
        #expect(code(shifted, context()) == "offGrid")
        var long = hourRecord(3)
        long.period = MeteringPeriod(from: t0 + 3 * hour, until: t0 + 5 * hour)
        #expect(code(long, context()) == "offGrid")
    }

    @Test("a record overlapping a countersigned one is refused: an hour is billed once")
    func overlap() {
        #expect(code(hourRecord(7, sequence: 9), context(settled: [period(7 * hour, 8 * hour)])) == "overlapsSettled")
        #expect(code(hourRecord(8, sequence: 9), context(settled: [period(7 * hour, 8 * hour)])) == nil)
    }

    @Test("quantities beyond the agreement, and types outside it, are refused; huge numbers never trap")
    func quantities() {
        #expect(code(hourRecord(2, running: 7201), context()) == "aboveAgreement")
        #expect(code(hourRecord(2, vcpu: 14_401), context()) == "aboveAgreement")
        #expect(code(hourRecord(2, type: "gpu.huge"), context()) == "aboveAgreement")
        var overflowing = hourRecord(2)
        overflowing.usage.instanceTypes = [
            InstanceTypeUsage(instanceType: "m1.small", instances: 1, runningSeconds: Int64.max),
            InstanceTypeUsage(instanceType: "m1.large", instances: 1, runningSeconds: Int64.max),
        ]
        #expect(code(overflowing, context()) == "aboveAgreement")
        overflowing.usage.instanceTypes = []
        overflowing.usage.calls = Int64.max
        #expect(code(overflowing, context(services: true)) == "callsAboveCeiling")
    }

    @Test("bytes stored and transferred are bounded by the agreement's storage and transfer, and never negative")
    func bytes() {
        var bounded = agreement
        bounded.terms.resources.storageGiB = 10
        bounded.terms.resources.transferGB = 5
        let context = UsageRecordAdmission.Context(agreement: bounded, countersignedPeriods: [], hasFederatedServices: false)
        var record = hourRecord(4)
        record.usage.byteSecondsStored = Decimal(10 << 30) * 3600  // 10 GiB all hour: the most
        record.usage.bytesTransferred = 5_000_000_000
        #expect(code(record, context) == nil)
        record.usage.byteSecondsStored += 1
        #expect(code(record, context) == "aboveAgreement")
        record.usage.byteSecondsStored = 0
        record.usage.bytesTransferred = Decimal(string: "1e30")!
        #expect(code(record, context) == "aboveAgreement")
        record.usage.bytesTransferred = -1
        #expect(code(record, context) == "malformedQuantity")
        // Unbounded in the agreement (0): only the sign is checked.
        var unbounded = hourRecord(4)
        unbounded.usage.bytesTransferred = Decimal(string: "1e30")!
        #expect(code(unbounded, self.context()) == nil)
    }

    @Test("calls are billed only to a consumer with federated services, and up to its ceiling")
    func calls() {
        #expect(code(hourRecord(1, calls: 5), context(services: false)) == "callsNotAgreed")
        #expect(code(hourRecord(1, calls: 36_000), context(services: true)) == nil)
        #expect(code(hourRecord(1, calls: 36_001), context(services: true)) == "callsAboveCeiling")
    }
}
