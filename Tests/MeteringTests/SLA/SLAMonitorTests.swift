import Foundation
import Policy
import Testing
@testable import Metering

@Suite struct SLAMonitorTests {
    let sla = ServiceLevel(availabilityPercent: d("99.9"), maxMigrationDowntimeSeconds: 300, support: "24x7")
    let window = period(0, 10_000)

    /// Down 1000–1300 and 5000–5600 (two down samples in a row make one outage).
    static let samples: [(TimeInterval, Bool)] = [
        (-50, true), (1_000, false), (1_300, true), (5_000, false), (5_010, false), (5_600, true), (12_000, true),
    ]

    func monitor(_ samples: [(TimeInterval, Bool)] = samples, stalenessLimit: TimeInterval? = nil) -> SLAMonitor {
        var monitor = SLAMonitor(stalenessLimit: stalenessLimit)
        for (offset, up) in samples { monitor.record(AvailabilitySample(time: t0 + offset, isUp: up), agreementID: "a1") }
        return monitor
    }

    @Test func availabilityDowntimeAndLongestOutage() {
        let measurement = monitor().measure(agreementID: "a1", period: window)
        #expect(measurement.observedSeconds == 10_000)
        #expect(measurement.upSeconds == 9_100)
        #expect(measurement.availabilityPercent == 91)
        #expect(measurement.downtime == [
            DowntimeInterval(from: t0 + 1_000, until: t0 + 1_300),
            DowntimeInterval(from: t0 + 5_000, until: t0 + 5_600),
        ])
        #expect(measurement.longestOutage == DowntimeInterval(from: t0 + 5_000, until: t0 + 5_600))
    }

    @Test func outOfOrderSamplesGiveTheSameResult() {
        let shuffled = monitor(Self.samples.reversed())
        #expect(shuffled.samples == monitor().samples)
        #expect(shuffled.measure(agreementID: "a1", period: window) == monitor().measure(agreementID: "a1", period: window))
    }

    @Test func downtimeIsClampedToThePeriod() {
        let measurement = monitor().measure(agreementID: "a1", period: period(5_300, 20_000))
        #expect(measurement.downtime == [DowntimeInterval(from: t0 + 5_300, until: t0 + 5_600)])
        #expect(measurement.observedSeconds == 14_700)
    }

    @Test func availabilityBreachNamesTheMeasuredAndAgreedValues() {
        let breaches = monitor().breaches(agreementID: "a1", period: window, serviceLevel: sla)
        #expect(breaches == [SLABreach(
            agreementID: "a1", kind: .availability,
            detail: "availability 91% below 99.9%: down 900 s of 10000 s observed, longest outage 600 s from 2026-06-01T01:23:20Z",
            from: t0, until: t0 + 10_000)])
    }

    @Test func availabilityExactlyAtTheAgreedLevelIsNoBreach() {
        // Down 10 s of 10000 s: exactly 99.9 %.
        let atLevel = monitor([(0, true), (100, false), (110, true)])
        #expect(atLevel.measure(agreementID: "a1", period: window).availabilityPercent == d("99.9"))
        #expect(atLevel.breaches(agreementID: "a1", period: window, serviceLevel: sla).isEmpty)
        // One more second down breaches.
        let below = monitor([(0, true), (100, false), (111, true)])
        #expect(below.breaches(agreementID: "a1", period: window, serviceLevel: sla).map(\.kind) == [.availability])
    }

    @Test func unobservedTimeIsNeitherUpNorDown() {
        // Probing stopped for two hours after a down sample: with a 60 s staleness limit only 60 s count as down.
        let gappy = monitor([(0, true), (1_000, false), (8_200, true)], stalenessLimit: 60)
        let measurement = gappy.measure(agreementID: "a1", period: window)
        #expect(measurement.observedSeconds == 180)
        #expect(measurement.upSeconds == 120)
        #expect(measurement.unobservedSeconds == 9_820)
        #expect(measurement.downtime == [DowntimeInterval(from: t0 + 1_000, until: t0 + 1_060)])
        // No samples at all: nothing measured, no availability breach.
        let none = SLAMonitor()
        #expect(none.measure(agreementID: "a1", period: window).availabilityPercent == nil)
        #expect(none.breaches(agreementID: "a1", period: window, serviceLevel: sla).isEmpty)
    }

    @Test func migrationDowntimeAboveTheMaximumIsABreach() {
        var monitor = monitor([(0, true)])
        monitor.record(MigrationDowntime(migrationID: "m-ok", from: t0 + 100, until: t0 + 400), agreementID: "a1")
        monitor.record(MigrationDowntime(migrationID: "m-slow", from: t0 + 2_000, until: t0 + 2_420), agreementID: "a1")
        monitor.record(MigrationDowntime(migrationID: "m-later", from: t0 + 20_000, until: t0 + 21_000), agreementID: "a1")
        #expect(monitor.breaches(agreementID: "a1", period: window, serviceLevel: sla) == [SLABreach(
            agreementID: "a1", kind: .migrationDowntime, detail: "migration m-slow: downtime 420 s above 300 s",
            from: t0 + 2_000, until: t0 + 2_420)])
    }

    @Test func discardKeepsTheStateAtTheCut() {
        var pruned = monitor()
        pruned.discard(before: t0 + 5_100)
        #expect(pruned.samples["a1"]?.first == AvailabilitySample(time: t0 + 5_010, isUp: false))
        #expect(pruned.measure(agreementID: "a1", period: period(5_100, 10_000))
            == monitor().measure(agreementID: "a1", period: period(5_100, 10_000)))
    }
}
