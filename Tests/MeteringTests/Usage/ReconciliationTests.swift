import Foundation
import Testing
@testable import Metering

@Suite struct ReconciliationTests {
    func small(_ seconds: Int64, instances: Int64 = 2) -> [InstanceTypeUsage] {
        [InstanceTypeUsage(instanceType: "m1.small", instances: instances, runningSeconds: seconds)]
    }

    @Test func identicalRecordsAreCountersigned() {
        #expect(Reconciliation(tolerance: .exact).reconcile(provider: record(), own: record()) == .countersign)
    }

    @Test func disputeNamesEachDimensionWithBothValues() {
        let theirs = record(types: small(36_000), bytes: 12_500_000_000)
        var ours = record(types: small(30_000), bytes: 12_400_000_000)
        ours.period = period(0, 12 * hour)
        let outcome = Reconciliation(tolerance: .standard).reconcile(provider: theirs, own: ours)
        #expect(outcome == .dispute(reasons: [
            "period: provider [2026-06-01T00:00:00Z, 2026-06-02T00:00:00Z), consumer [2026-06-01T00:00:00Z, 2026-06-01T12:00:00Z)",
            "instance_type.m1.small.seconds: provider 36000 seconds, consumer 30000 seconds (difference 6000, tolerance 360)",
        ]))
        // 100 MB of 12.5 GB is within 1 %: not a reason.
    }

    @Test func providerCallCountStandsWhenTheConsumerHasNoneAndIsComparedWhenItHasOne() {
        let reconciliation = Reconciliation(tolerance: .exact)
        // The consumer's clients call the service: the consumer's own record has no calls.
        #expect(reconciliation.reconcile(provider: record(calls: 1_500), own: record()) == .countersign)
        #expect(reconciliation.reconcile(provider: record(calls: 1_500), own: record(calls: 1_400)) == .dispute(reasons: [
            "calls: provider 1500 calls, consumer 1400 calls (difference 100, tolerance 0)",
        ]))
        // A consumer that does not take the provider's word disputes a count it cannot check.
        var strict = ReconciliationTolerance.exact
        strict.acceptsProviderCallCount = false
        #expect(Reconciliation(tolerance: strict).reconcile(provider: record(calls: 1_500), own: record()) == .dispute(reasons: [
            "calls: provider 1500 calls, consumer 0 calls (difference 1500, tolerance 0)",
        ]))
    }

    @Test func relativeToleranceEdgeIsInclusive() {
        let tolerance = ReconciliationTolerance(relative: d("0.01"))
        let reconciliation = Reconciliation(tolerance: tolerance)
        // 1 % of the larger value (10000) is 100.
        #expect(reconciliation.reconcile(provider: record(vcpuSeconds: 10_000), own: record(vcpuSeconds: 9_900)) == .countersign)
        #expect(reconciliation.reconcile(provider: record(vcpuSeconds: 9_900), own: record(vcpuSeconds: 10_000)) == .countersign)
        #expect(reconciliation.reconcile(provider: record(vcpuSeconds: 10_000), own: record(vcpuSeconds: 9_899)) == .dispute(reasons: [
            "vcpu_seconds: provider 10000 seconds, consumer 9899 seconds (difference 101, tolerance 100)",
        ]))
    }

    @Test func absoluteToleranceEdgeIsInclusive() {
        let reconciliation = Reconciliation(tolerance: ReconciliationTolerance(relative: d("0.01"), instanceSeconds: 120))
        // Small quantities: 1 % of 220 is 2.2, the absolute 120 s decides.
        #expect(reconciliation.reconcile(provider: record(types: small(100)), own: record(types: small(220))) == .countersign)
        #expect(reconciliation.reconcile(provider: record(types: small(100)), own: record(types: small(221))) == .dispute(reasons: [
            "instance_type.m1.small.seconds: provider 100 seconds, consumer 221 seconds (difference 121, tolerance 120)",
        ]))
        // Instance counts have their own (zero) slack.
        #expect(reconciliation.reconcile(provider: record(types: small(100, instances: 2)), own: record(types: small(100, instances: 3)))
            == .dispute(reasons: ["instance_type.m1.small.instances: provider 2 instances, consumer 3 instances (difference 1, tolerance 0.03)"]))
    }

    @Test func typeSeenByOneSideOnlyCountsAsZeroOnTheOther() {
        let theirs = record(types: small(3_600))
        let ours = record(types: small(3_600) + [InstanceTypeUsage(instanceType: "m1.large", instances: 1, runningSeconds: 7_200)])
        let discrepancies = Reconciliation(tolerance: .standard).discrepancies(provider: theirs, own: ours)
        #expect(discrepancies.map(\.key) == ["instance_type.m1.large.instances", "instance_type.m1.large.seconds"])
        #expect(discrepancies.map(\.provider) == [0, 0])
        #expect(discrepancies.map(\.consumer) == [1, 7_200])
    }

    @Test func identityMismatchesAreReasons() {
        var ours = record()
        ours.agreementID = "a2"
        ours.consumer = "other@cloud3.example"
        guard case .dispute(let reasons) = Reconciliation().reconcile(provider: record(), own: ours) else {
            Issue.record("expected a dispute")
            return
        }
        #expect(reasons == [
            "agreement: provider a1, consumer a2",
            "consumer: provider broker@cloud1.example, consumer other@cloud3.example",
        ])
    }
}
