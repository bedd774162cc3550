import Foundation
import Testing
@testable import Metering

@Suite struct UsageMeterTests {
    /// Ten hours with a start, a stop, a type change, a termination, a counter reset and observations
    /// before and after the period.
    static let simulated: [UsageObservation] = [
        // Before the period: gives the state at t0 and the transfer baseline.
        observation(at: -600, [instance("i-1", "m1.small", vcpu: 1), instance("i-2", "m1.large", vcpu: 4, .stopped)],
                    transferred: 1_000, stored: 10_000_000_000),
        observation(at: 2 * hour, [instance("i-1", "m1.small", vcpu: 1), instance("i-2", "m1.large", vcpu: 4)],
                    transferred: 5_000_001_000, stored: 10_000_000_000),
        observation(at: 3.5 * hour, [instance("i-1", "m1.small", vcpu: 1, .stopped), instance("i-2", "m1.large", vcpu: 4)],
                    transferred: 5_500_001_000, stored: 20_000_000_000),
        // i-1 resized while stopped and started again as m1.large.
        observation(at: 5 * hour, [instance("i-1", "m1.large", vcpu: 4), instance("i-2", "m1.large", vcpu: 4)],
                    transferred: 5_500_001_000, stored: 20_000_000_000),
        // The counter restarted (broker restart): 2 GB since the reset.
        observation(at: 7 * hour, [instance("i-1", "m1.large", vcpu: 4), instance("i-2", "m1.large", vcpu: 4, .terminated)],
                    transferred: 2_000_000_000, stored: 20_000_000_000),
        // After the period: closes the last interval; its transfer belongs to the next period.
        observation(at: 12 * hour, [instance("i-1", "m1.large", vcpu: 4)], transferred: 3_000_000_000, stored: 20_000_000_000),
    ]

    @Test func simulatedPeriodMatchesHandComputedHours() throws {
        let usage = try UsageMeter.integrate(Self.simulated, agreementID: "a1", period: period(0, 10 * hour))
        // m1.small: i-1 from t0 to 3.5 h.
        #expect(usage.instanceType("m1.small") == InstanceTypeUsage(instanceType: "m1.small", instances: 1, runningSeconds: 12_600))
        #expect(usage.instanceType("m1.small")?.hours == d("3.5"))
        // m1.large: i-2 from 2 h to 7 h (5 h), i-1 from 5 h to 10 h (5 h).
        #expect(usage.instanceType("m1.large") == InstanceTypeUsage(instanceType: "m1.large", instances: 2, runningSeconds: 36_000))
        #expect(usage.instanceType("m1.large")?.hours == 10)
        // 1 vCPU × 3.5 h + 4 vCPU × 10 h.
        #expect(usage.vcpuSeconds == 156_600)
        #expect(usage.vcpuHours == d("43.5"))
        // 5 GB + 0.5 GB + 2 GB after the reset; the 1 GB after the period is not counted.
        #expect(usage.bytesTransferred == 7_500_000_000)
        #expect(usage.gbTransferred == d("7.5"))
        // 10 GB × 3.5 h + 20 GB × 6.5 h.
        #expect(usage.gbHoursStored == 165)
        #expect(usage.instanceTypes.map(\.instanceType) == ["m1.large", "m1.small"])
    }

    @Test func adjacentPeriodsSplitUsageWithoutOverlapOrGap() throws {
        let whole = try UsageMeter.integrate(Self.simulated, agreementID: "a1", period: period(0, 10 * hour))
        let first = try UsageMeter.integrate(Self.simulated, agreementID: "a1", period: period(0, 4 * hour))
        let second = try UsageMeter.integrate(Self.simulated, agreementID: "a1", period: period(4 * hour, 10 * hour))
        #expect(first.instanceType("m1.small")!.runningSeconds + (second.instanceType("m1.small")?.runningSeconds ?? 0) == 12_600)
        #expect(first.instanceType("m1.large")!.runningSeconds + second.instanceType("m1.large")!.runningSeconds == 36_000)
        #expect(first.vcpuSeconds + second.vcpuSeconds == whole.vcpuSeconds)
        #expect(first.bytesTransferred + second.bytesTransferred == whole.bytesTransferred)
        #expect(first.bytesTransferred == 5_500_000_000)
        #expect(first.byteSecondsStored + second.byteSecondsStored == whole.byteSecondsStored)
    }

    @Test func counterResetCountsTheNewValue() throws {
        let series = [
            observation(at: 0, [], transferred: 900),
            observation(at: 60, [], transferred: 1_000),
            observation(at: 120, [], transferred: 40),   // reset: 40 bytes since
            observation(at: 180, [], transferred: 100),
            observation(at: 240, [], transferred: 100),  // no change
        ]
        let usage = try UsageMeter.integrate(series, agreementID: "a1", period: period(0, 300))
        // 100 before the reset, 40 at the reset, 60 after it.
        #expect(usage.bytesTransferred == 200)
    }

    @Test func nothingIsCountedBeforeTheFirstObservation() throws {
        let series = [observation(at: 1800, [instance("i-1", "m1.small", vcpu: 2)], transferred: 5_000, stored: 1_000)]
        let usage = try UsageMeter.integrate(series, agreementID: "a1", period: period(0, hour))
        #expect(usage.instanceType("m1.small")?.runningSeconds == 1800)
        #expect(usage.vcpuSeconds == 3600)
        // The first reading is the baseline, not an increase.
        #expect(usage.bytesTransferred == 0)
        #expect(usage.byteSecondsStored == 1_800_000)
    }

    @Test func stalenessLimitStopsChargingThroughAGap() throws {
        let series = [
            observation(at: 0, [instance("i-1", "m1.small", vcpu: 1)]),
            // The broker saw nothing for three hours.
            observation(at: 3 * hour, [instance("i-1", "m1.small", vcpu: 1)]),
        ]
        let held = try UsageMeter.integrate(series, agreementID: "a1", period: period(0, 4 * hour))
        let limited = try UsageMeter.integrate(series, agreementID: "a1", period: period(0, 4 * hour), stalenessLimit: 300)
        #expect(held.instanceType("m1.small")?.runningSeconds == 14_400)
        #expect(limited.instanceType("m1.small")?.runningSeconds == 600)
    }

    @Test func onlyBillableStatesCount() throws {
        let states: [MeteredInstanceState] = MeteredInstanceState.allCases
        let series = [observation(at: 0, states.enumerated().map { index, state in instance("i-\(index)", "m1.small", vcpu: 1, state) })]
        let usage = try UsageMeter.integrate(series, agreementID: "a1", period: period(0, 100))
        #expect(usage.instanceType("m1.small") == InstanceTypeUsage(instanceType: "m1.small", instances: 2, runningSeconds: 200))
    }

    @Test func fractionalTimesAreTruncatedToWholeSeconds() throws {
        let series = [
            observation(at: 0.9, [instance("i-1", "m1.small", vcpu: 1)]),
            observation(at: 10.7, [instance("i-1", "m1.small", vcpu: 1, .stopped)]),
        ]
        let usage = try UsageMeter.integrate(series, agreementID: "a1", period: period(0, 20))
        #expect(usage.instanceType("m1.small")?.runningSeconds == 10)
    }

    @Test func refusesDisorderForeignAgreementsAndDuplicates() {
        var meter = UsageMeter(agreementID: "a1", period: period(0, hour))
        #expect(throws: Never.self) { try meter.observe(observation(at: 100, [])) }
        #expect(throws: UsageMeterError.self) { try meter.observe(observation(at: 50, [])) }
        #expect(throws: UsageMeterError.wrongAgreement(expected: "a1", found: "a2")) {
            try meter.observe(observation(at: 200, [], agreement: "a2"))
        }
        #expect(throws: UsageMeterError.invalidObservation("instance i-1 listed twice")) {
            try meter.observe(observation(at: 300, [instance("i-1", "a", vcpu: 1), instance("i-1", "b", vcpu: 1)]))
        }
        #expect(throws: UsageMeterError.self) {
            try meter.observe(observation(at: 400, [instance("i-1", "bad\ntype", vcpu: 1)]))
        }
    }

    @Test func streamingEqualsBatchAndRecordIsValid() throws {
        var meter = UsageMeter(agreementID: "a1", period: period(0, 10 * hour))
        for item in Self.simulated { try meter.observe(item) }
        #expect(meter.measuredUsage == (try UsageMeter.integrate(Self.simulated, agreementID: "a1", period: period(0, 10 * hour))))
        let record = try meter.record(provider: provider, consumer: consumer, sequence: 3, createdAt: t0 + 10 * hour)
        #expect(record.sequence == 3)
        #expect(try UsageRecord(canonicalBytes: record.canonicalBytes()) == record)
    }

    @Test func byteSumsStayExactBeyond64Bits() throws {
        var sum = ExactSum()
        sum.add(UInt64.max)
        sum.add(UInt64.max)
        sum.add(1)
        #expect(sum.value == d("36893488147419103231"))
        sum.add(UInt64.max, times: 3)
        #expect(sum.value == d("92233720368547758076"))
        // 16 EB stored for a day, through the meter.
        let huge = [observation(at: 0, [], transferred: 0, stored: UInt64.max)]
        let usage = try UsageMeter.integrate(huge, agreementID: "a1", period: period(0, 24 * hour))
        #expect(usage.byteSecondsStored == d("1593798687968505259536000"))
    }
}
