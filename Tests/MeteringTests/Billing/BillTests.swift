import Foundation
import Policy
import Testing
@testable import Metering

@Suite struct BillTests {
    let month = period(0, 31 * 24 * hour)

    func bill(_ records: [UsageRecord], rates: RateCard = rates, period: MeteringPeriod? = nil) throws -> Bill {
        try Bill(provider: provider, consumer: consumer, period: period ?? month, rates: rates, records: records)
    }

    @Test func linesLikeAProviderEstimate() throws {
        // 2 × m1.small for 730 h, 1 × m1.large for 100 h, 12.5 GB out, 100 GB stored for 730 h.
        let usage = record(
            period: month,
            types: [
                InstanceTypeUsage(instanceType: "m1.small", instances: 2, runningSeconds: 2 * 730 * 3600),
                InstanceTypeUsage(instanceType: "m1.large", instances: 1, runningSeconds: 100 * 3600),
            ],
            vcpuSeconds: 0, bytes: 12_500_000_000, byteSeconds: 100 * 1_000_000_000 * 730 * 3600)
        let bill = try bill([usage])
        #expect(bill.lines.map(\.item) == ["m1.large", "m1.small", "Data transfer", "Storage"])
        #expect(bill.lines.map(\.quantity) == [100, 1460, d("12.5"), 100])
        #expect(bill.lines.map(\.unit) == ["hour", "hour", "GB", "GB-month"])
        #expect(bill.lines.map(\.instances) == [1, 2, nil, nil])
        // 100 × 0.092, 1460 × 0.023 = 33.58, 12.5 × 0.02, 100 × 0.04.
        #expect(bill.lines.map(\.amount) == [d("9.2"), d("33.58"), d("0.25"), 4])
        #expect(bill.total == d("47.03"))
        #expect(bill.currency == "EUR")
    }

    @Test func federatedCallsAreBilledPerThousand() throws {
        var card = rates
        card.perThousandCalls = d("0.35")
        let bill = try bill([record(period: month, types: [], vcpuSeconds: 0, bytes: 0, byteSeconds: 0, calls: 12_345)], rates: card)
        #expect(bill.lines.map(\.item) == ["Federated service calls"])
        #expect(bill.lines.first?.kind == .calls && bill.lines.first?.unit == "1000 calls")
        #expect(bill.lines.first?.quantity == d("12.345"))
        // 12.345 × 0.35 = 4.32075 → 4.32.
        #expect(bill.total == d("4.32"))
        // Records without calls bill no calls line.
        #expect(try self.bill([record(period: month)], rates: card).lines.allSatisfy { $0.kind != .calls })
    }

    @Test func totalIsExactToTheCentWhereFloatsDrift() throws {
        // Ten types at 0.1 per hour for one hour each: ten lines of 0.10. Summed as binary floats
        // they come to 0.9999999999999999.
        let types = (0..<10).map { InstanceTypeUsage(instanceType: "t\($0)", instances: 1, runningSeconds: 3600) }
        let tenCents = RateCard(currency: "EUR", instanceHour: Dictionary(uniqueKeysWithValues: types.map { ($0.instanceType, d("0.1")) }))
        let tenLines = try bill([record(period: month, types: types, bytes: 0, byteSeconds: 0)], rates: tenCents)
        #expect(tenLines.lines.count == 10)
        #expect(tenLines.total == 1)
        #expect(Array(repeating: 0.1, count: 10).reduce(0, +) != 1.0)
        #expect(BillRenderer.fixed(tenLines.total, digits: 2) == "1.00")

        // 0.1 + 0.2: 1 GB transferred at 0.1 and 1 GB-month stored at 0.2.
        let pointOnePointTwo = RateCard(currency: "EUR", perGBTransferred: d("0.1"), perGBMonthStored: d("0.2"))
        let small = try bill(
            [record(period: month, types: [], vcpuSeconds: 0, bytes: 1_000_000_000, byteSeconds: 1_000_000_000 * 730 * 3600)],
            rates: pointOnePointTwo)
        #expect(small.total == d("0.3"))
        #expect(0.1 + 0.2 != 0.3)
    }

    @Test func eachLineIsRoundedHalfUpOnceFromExactQuantities() throws {
        // 0.125 → 0.13 (banker's rounding would give 0.12); 0.145 → 0.15 (banker's: 0.14).
        let card = RateCard(currency: "EUR", instanceHour: ["a": d("0.125"), "b": d("0.145"), "c": d("0.0249")])
        let types = [
            InstanceTypeUsage(instanceType: "a", instances: 1, runningSeconds: 3600),
            InstanceTypeUsage(instanceType: "b", instances: 1, runningSeconds: 3600),
            // 20 minutes at 0.0249/h = 0.0083 → 0.01, computed from seconds, not from a rounded 0.3333 h.
            InstanceTypeUsage(instanceType: "c", instances: 1, runningSeconds: 1200),
        ]
        let bill = try bill([record(period: month, types: types, bytes: 0, byteSeconds: 0)], rates: card)
        #expect(bill.lines.map(\.amount) == [d("0.13"), d("0.15"), d("0.01")])
        #expect(bill.total == d("0.29"))
        #expect(Bill.round(d("0.135"), digits: 2) == d("0.14"))
        #expect(Bill.round(d("0.1349999"), digits: 2) == d("0.13"))
    }

    @Test func severalRecordsAreAggregatedPerInstanceType() throws {
        let first = record(sequence: 1, period: period(0, 15 * 24 * hour),
                           types: [InstanceTypeUsage(instanceType: "m1.small", instances: 3, runningSeconds: 1_800)],
                           vcpuSeconds: 0, bytes: 1, byteSeconds: 0)
        let second = record(sequence: 2, period: period(15 * 24 * hour, 30 * 24 * hour),
                            types: [InstanceTypeUsage(instanceType: "m1.small", instances: 1, runningSeconds: 1_800)],
                            vcpuSeconds: 0, bytes: 0, byteSeconds: 0)
        let card = RateCard(currency: "EUR", instanceHour: ["m1.small": d("0.03")], perGBTransferred: d("0.02"))
        let bill = try bill([second, first], rates: card)
        #expect(bill.records.map(\.key.sequence) == [1, 2])
        #expect(bill.lines.count == 2)
        // One hour in total, rounded once: 0.03 (two half hours rounded apart would be 0.02 + 0.02).
        #expect(bill.lines[0].amount == d("0.03"))
        #expect(bill.lines[0].instances == 3)
        // One byte: 0.00000002 → 0.00, still listed.
        #expect(bill.lines[1].item == "Data transfer")
        #expect(bill.lines[1].amount == 0)
    }

    @Test func currencyMinorUnits() throws {
        let yen = RateCard(currency: "JPY", instanceHour: ["m1.small": d("3.5")])
        let bill = try bill([record(period: month, types: [InstanceTypeUsage(instanceType: "m1.small", instances: 1, runningSeconds: 3600)], bytes: 0, byteSeconds: 0)], rates: yen)
        #expect(bill.total == 4)
        #expect(Bill.minorUnitDigits(currency: "KWD") == 3)
        #expect(Bill.minorUnitDigits(currency: "USD") == 2)
    }

    @Test func refusesWhatWouldBeWronglyBilled() throws {
        let inMonth = record(period: period(0, 24 * hour))
        #expect(throws: BillError.unpricedInstanceType("m9.huge")) {
            try bill([record(types: [InstanceTypeUsage(instanceType: "m9.huge", instances: 1, runningSeconds: 1)])])
        }
        #expect(throws: BillError.duplicateRecord(inMonth.key)) { try bill([inMonth, inMonth]) }
        #expect(throws: BillError.overlappingRecords(inMonth.key, record(sequence: 2, period: period(12 * hour, 36 * hour)).key)) {
            try bill([inMonth, record(sequence: 2, period: period(12 * hour, 36 * hour))])
        }
        #expect(throws: BillError.recordOutsidePeriod(inMonth.key, inMonth.period)) {
            try bill([inMonth], period: period(hour, 31 * 24 * hour))
        }
        var foreign = inMonth
        foreign.consumer = "someone@cloud9.example"
        #expect(throws: BillError.recordForAnotherPeer(foreign.key, provider: provider, consumer: "someone@cloud9.example")) {
            try bill([foreign])
        }
        #expect(throws: BillError.self) { try bill([], rates: RateCard(currency: "euro")) }
        // Nothing to bill is a valid, empty bill.
        let empty = try bill([])
        #expect(empty.lines.isEmpty && empty.total == 0)
    }
}
