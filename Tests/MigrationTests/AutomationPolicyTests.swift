import Foundation
import Policy
import Providers
import Testing

@testable import Migration

/// The automatic-migration decision without IO: triggers, destination choice, quota room, limits.
@Suite struct AutomationPolicyTests {
    let now = Date(timeIntervalSince1970: 1_800_000_000)
    let sizes = [
        InstanceSize(id: "sim.small", vCPU: 1, memoryMiB: 2048, diskGiB: 20, pricePerHour: Price(Decimal(string: "0.0230")!, "EUR")),
        InstanceSize(id: "sim.medium", vCPU: 2, memoryMiB: 4096, diskGiB: 40, pricePerHour: Price(Decimal(string: "0.0460")!, "EUR")),
    ]

    func instance(_ id: String, _ size: String, _ state: InstanceState = .running) -> Instance {
        Instance(id: id, name: "vm-\(id)", sizeID: size, state: state, rawState: state.rawValue)
    }

    func destination(_ id: String, provider: String, smallPrice: String = "0.0230", vcpu: Int = 8, until: TimeInterval = 86_400, entitlements: Set<Entitlement> = [.migrateIn]) -> AutomationPolicy.Destination {
        let terms = Terms(
            resources: ResourceAmount(instances: 4, vcpu: vcpu, memoryGiB: 64, storageGiB: 500),
            period: ValidityPeriod(from: now - 3600, until: now + until),
            rates: RateCard(currency: "EUR", instanceHour: ["sim.small": Decimal(string: smallPrice)!, "sim.medium": Decimal(string: "0.0460")!]),
            sla: ServiceLevel(availabilityPercent: 99, maxMigrationDowntimeSeconds: 600, support: ""), entitlements: entitlements)
        return .init(agreement: Agreement(id: id, negotiationID: "n-\(id)", consumer: "broker@cloud1.test", provider: provider, terms: terms, createdAt: now - 3600), usage: .zero)
    }

    @Test func capacityAboveTheThresholdMovesTheSmallestRunningInstanceToTheCheapestAgreement() {
        let policy = AutomationPolicy(triggers: [.capacity], capacityThresholdPercent: 80, maxPerRound: 2)
        let instances = [instance("a", "sim.medium"), instance("b", "sim.small"), instance("c", "sim.small", .stopped)]
        let capacity = Capacity(maxVCPU: 3, usedVCPU: 3)
        let proposals = policy.evaluate(
            instances: instances, sizes: sizes, capacity: capacity,
            destinations: [destination("expensive", provider: "x@cloud3.test", smallPrice: "0.05"), destination("cheap", provider: "y@cloud2.test")],
            now: now)
        // 3/3 vCPU: moving b (1 vCPU) leaves 2/3 = 66 % < 80 %: one move is enough.
        #expect(proposals.map(\.instanceID) == ["b"])
        #expect(proposals.first?.agreementID == "cheap" && proposals.first?.trigger == .capacity)
        #expect(proposals.first?.reason.contains("vCPU 3/3") == true)
    }

    @Test func nothingMovesUnderTheThresholdWithoutAnAgreementInForceOrWithoutRoom() {
        let policy = AutomationPolicy(triggers: [.capacity, .failure])
        let instances = [instance("a", "sim.small"), instance("e", "sim.small", .error)]
        #expect(policy.evaluate(instances: instances, sizes: sizes, capacity: Capacity(maxVCPU: 10, usedVCPU: 1), destinations: [], now: now).isEmpty)
        // Full capacity, but the only agreement expired, lacks migrate-in, or has no room left.
        let full = Capacity(maxVCPU: 2, usedVCPU: 2)
        #expect(policy.evaluate(instances: instances, sizes: sizes, capacity: full, destinations: [destination("old", provider: "p@c.test", until: -1)], now: now).isEmpty)
        #expect(policy.evaluate(instances: instances, sizes: sizes, capacity: full, destinations: [destination("q", provider: "p@c.test", entitlements: [.query])], now: now).isEmpty)
        var noRoom = destination("tight", provider: "p@c.test", vcpu: 1)
        noRoom.usage = ResourceAmount(instances: 1, vcpu: 1)
        #expect(policy.evaluate(instances: instances, sizes: sizes, capacity: full, destinations: [noRoom], now: now).isEmpty)
    }

    @Test func failedInstancesMoveAndExcludedOnesNever() {
        let policy = AutomationPolicy(triggers: [.failure], exclude: ["vm-x"], maxPerRound: 5)
        let proposals = policy.evaluate(
            instances: [instance("e", "sim.small", .error), instance("x", "sim.small", .error), instance("ok", "sim.small")],
            sizes: sizes, capacity: Capacity(), destinations: [destination("d", provider: "p@c.test")], now: now)
        #expect(proposals.map(\.instanceID) == ["e"])
        #expect(proposals.first?.trigger == .failure)
    }

    @Test func aCheaperPeerRateMovesRunningInstancesOnlyBeyondTheAdvantage() {
        let policy = AutomationPolicy(triggers: [.price], priceAdvantagePercent: 20, maxPerRound: 5)
        let instances = [instance("s", "sim.small")]
        // 0.0184 is exactly 20 % below 0.0230: moves; 0.0190 is not enough.
        #expect(policy.evaluate(instances: instances, sizes: sizes, capacity: Capacity(), destinations: [destination("d", provider: "p@c.test", smallPrice: "0.0184")], now: now).map(\.instanceID) == ["s"])
        #expect(policy.evaluate(instances: instances, sizes: sizes, capacity: Capacity(), destinations: [destination("d", provider: "p@c.test", smallPrice: "0.0190")], now: now).isEmpty)
    }
}
