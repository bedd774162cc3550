import Foundation
@testable import Metering
import Policy

/// 2026-06-01T00:00:00Z.
let t0 = Date(timeIntervalSince1970: 1_780_272_000)
let hour: TimeInterval = 3600
let provider = "broker@cloud2.example"
let consumer = "broker@cloud1.example"

func d(_ text: String) -> Decimal { Decimal(string: text, locale: Locale(identifier: "en_US_POSIX"))! }

func instance(_ id: String, _ type: String, vcpu: Int, _ state: MeteredInstanceState = .running) -> ObservedInstance {
    ObservedInstance(id: id, instanceType: type, vcpu: vcpu, memoryGiB: Decimal(vcpu * 2), state: state)
}

func observation(
    at offset: TimeInterval, _ instances: [ObservedInstance], transferred: UInt64 = 0, stored: UInt64 = 0, agreement: String = "a1"
) -> UsageObservation {
    UsageObservation(time: t0 + offset, agreementID: agreement, instances: instances, bytesTransferred: transferred, bytesStored: stored)
}

func period(_ fromOffset: TimeInterval, _ untilOffset: TimeInterval) -> MeteringPeriod {
    MeteringPeriod(from: t0 + fromOffset, until: t0 + untilOffset)
}

func record(
    agreement: String = "a1", sequence: Int64 = 1, period: MeteringPeriod = period(0, 24 * hour),
    types: [InstanceTypeUsage] = [InstanceTypeUsage(instanceType: "m1.small", instances: 2, runningSeconds: 36_000)],
    vcpuSeconds: Int64 = 36_000, bytes: Decimal = 12_500_000_000, byteSeconds: Decimal = 360_000_000_000_000, calls: Int64 = 0
) -> UsageRecord {
    UsageRecord(
        agreementID: agreement, provider: provider, consumer: consumer, period: period, sequence: sequence,
        usage: MeasuredUsage(instanceTypes: types, vcpuSeconds: vcpuSeconds, bytesTransferred: bytes, byteSecondsStored: byteSeconds, calls: calls),
        createdAt: t0 + 24 * hour + 60)
}

let rates = RateCard(
    currency: "EUR", instanceHour: ["m1.small": d("0.023"), "m1.large": d("0.092")],
    perGBTransferred: d("0.02"), perGBMonthStored: d("0.04"))
