import Foundation
import Testing
@testable import Policy

let cloud2Broker = "broker@cloud2.example/intercloud"
/// 2026-06-01T00:00:00Z, inside example-cloud1's validity.
let june = Date(timeIntervalSince1970: 1_780_272_000)

func exampleSet() throws -> PolicySet {
    try PolicyLoader.load(paths: [policiesDirectory.appendingPathComponent("example-cloud1.toml").path])
}

func migration(vcpu: Int = 2, memory: String = "4", region: String = "eu-west-1", jurisdiction: String? = "EU", type: String = "m1.small") -> PolicyRequest {
    .migrateIn(MigrationSpec(
        instanceType: type, vcpu: vcpu, memoryGiB: Decimal(string: memory)!, diskGiB: 20, region: region,
        jurisdiction: jurisdiction, transferGB: 20))
}

@Suite struct PolicyEvaluationTests {
    @Test func mostSpecificEntryGoverns() throws {
        let set = try exampleSet()
        #expect(set.policy(for: cloud2Broker, at: june)?.name == "cloud2-2026")
        #expect(set.policy(for: "someone@elsewhere.example", at: june)?.name == "public-catalog")
        // After cloud2's entry expires, the catch-all governs cloud2 too.
        #expect(set.policy(for: cloud2Broker, at: june.addingTimeInterval(365 * 86_400))?.name == "public-catalog")
        #expect(set.policy(for: "evil@cloud2.example.attacker", at: june)?.name == "public-catalog")
    }

    @Test func allowedMigration() throws {
        #expect(try exampleSet().evaluate(migration(), peer: cloud2Broker, now: june) == .allowed)
    }

    @Test func notEntitledSaysWhy() throws {
        let decision = try exampleSet().evaluate(migration(), peer: "x@elsewhere.example", now: june)
        #expect(decision.reasons.map(\.code) == ["not-entitled"])
        #expect(decision.reasons.first?.message == "policy 'public-catalog' does not grant migrate-in to x@elsewhere.example")
    }

    @Test func unknownPeerIsDenied() throws {
        let set = PolicySet(peers: [PeerPolicy(name: "only", match: [JIDPattern("a@b.example")!], entitlements: [.query])])
        #expect(set.evaluate(.query, peer: "c@d.example", now: june).reasons.map(\.code) == ["unknown-peer"])
        #expect(set.evaluate(.query, peer: "A@B.example/res", now: june) == .allowed)
    }

    @Test func quotaIsExactWithDecimals() throws {
        let quota = Quota(memoryGiB: Decimal(string: "0.3"))
        let set = PolicySet(peers: [PeerPolicy(name: "q", match: [JIDPattern("*")!], entitlements: [.migrateIn], quota: quota)])
        let usage = ResourceAmount(memoryGiB: Decimal(string: "0.1")!)
        // 0.1 + 0.2 is exactly 0.3: allowed (with Double it would be 0.30000000000000004 > 0.3).
        #expect(set.evaluate(migration(memory: "0.2", jurisdiction: nil), peer: "p@x.example", usage: usage, now: june) == .allowed)
        let over = set.evaluate(migration(memory: "0.2000001", jurisdiction: nil), peer: "p@x.example", usage: usage, now: june)
        #expect(over.reasons == [PolicyReason(code: "quota-exceeded", message: "memory_gib: 0.3000001 would exceed quota 0.3")])
    }

    @Test func everyExceededQuotaIsReported() throws {
        let usage = ResourceAmount(instances: 20, vcpu: 63)
        let decision = try exampleSet().evaluate(migration(vcpu: 2), peer: cloud2Broker, usage: usage, now: june)
        #expect(decision.reasons.map(\.message) == ["instances: 21 would exceed quota 20", "vcpu: 65 would exceed quota 64"])
    }

    @Test func placement() throws {
        let set = try exampleSet()
        #expect(set.evaluate(migration(region: "us-east", jurisdiction: "US"), peer: cloud2Broker, now: june).reasons.map(\.code)
            == ["region-not-allowed", "jurisdiction-not-allowed"])
        #expect(set.evaluate(migration(jurisdiction: nil), peer: cloud2Broker, now: june).reasons.map(\.code) == ["jurisdiction-unknown"])
    }

    @Test func unpricedInstanceType() throws {
        let decision = try exampleSet().evaluate(migration(type: "gpu.huge"), peer: cloud2Broker, now: june)
        #expect(decision.reasons.map(\.code) == ["unpriced-instance-type"])
    }

    @Test func validityRuleOnAGivenEntry() throws {
        let entry = try #require(try exampleSet().peers.first)
        let later = june.addingTimeInterval(365 * 86_400)
        let decision = ValidityRule().evaluate(.query, context: PolicyContext(peer: cloud2Broker, now: later, policy: entry))
        #expect(decision.reasons.map(\.code) == ["outside-validity"])
    }

    @Test func combinators() {
        struct Fixed: PolicyRule {
            let decision: PolicyDecision
            func evaluate(_ request: PolicyRequest, context: PolicyContext) -> PolicyDecision { decision }
        }
        let context = PolicyContext(peer: "p@x.example", now: june, policy: nil)
        let no1 = Fixed(decision: .denied("a", "first")), no2 = Fixed(decision: .denied("b", "second")), yes = Fixed(decision: .allowed)
        #expect(AllOf { yes; no1; no2 }.evaluate(.query, context: context).reasons.map(\.code) == ["a", "b"])
        #expect(AllOf { yes }.evaluate(.query, context: context) == .allowed)
        #expect(AnyOf { no1; yes }.evaluate(.query, context: context) == .allowed)
        #expect(AnyOf { no1; no2 }.evaluate(.query, context: context).reasons.map(\.code) == ["a", "b"])
        #expect(AnyOf([]).evaluate(.query, context: context).isAllowed == false)
        let nested = AllOf { yes; AnyOf { no1; no2 } }
        #expect(nested.evaluate(.query, context: context).reasons.count == 2)
    }

    @Test func consumerRefusesPricesAboveItsCeilings() throws {
        var entry = try #require(try exampleSet().peers.first)
        entry.slaRequired = nil
        entry.maxRates = PriceCeiling(currency: "EUR", instanceHour: ["m1.small": Decimal(string: "0.03")!], perGBTransferred: Decimal(string: "0.02")!)
        var offer = terms()
        offer.period = ValidityPeriod(from: june, until: june.addingTimeInterval(86_400))
        offer.rates = RateCard(currency: "EUR", instanceHour: ["m1.small": Decimal(string: "0.03")!], perGBTransferred: Decimal(string: "0.02")!, perGBMonthStored: 5)
        // At the ceiling is fine; storage has no ceiling.
        #expect(entry.evaluate(terms: offer, as: .consumer) == .allowed)
        offer.rates.instanceHour["m1.small"] = Decimal(string: "0.0301")!
        offer.rates.perGBTransferred = Decimal(string: "0.05")!
        let refused = entry.evaluate(terms: offer, as: .consumer)
        #expect(refused.reasons.map(\.code) == ["price-too-high", "price-too-high"])
        #expect(refused.reasons.first?.message == "m1.small costs 0.0301 EUR/h, we pay at most 0.03")
        offer.rates.currency = "USD"
        #expect(entry.evaluate(terms: offer, as: .consumer).reasons.map(\.code) == ["currency-mismatch"])
        // The provider side does not apply the consumer's ceilings.
        #expect(!entry.evaluate(terms: offer, as: .provider).reasons.contains { $0.code == "price-too-high" })
    }

    @Test func termsCheckedAgainstPolicy() throws {
        let entry = try #require(try exampleSet().peers.first)
        var good = terms()
        good.period = ValidityPeriod(from: june, until: june.addingTimeInterval(86_400))
        #expect(entry.evaluate(terms: good, as: .provider) == .allowed)
        var cheap = good
        cheap.rates.instanceHour["m1.small"] = Decimal(string: "0.0229")
        cheap.entitlements.insert(.migrateOut)
        #expect(entry.evaluate(terms: cheap, as: .provider).reasons.map(\.code) == ["not-entitled", "price-too-low"])
        // Calls are priced only for federation: a card with a call price refuses cheaper terms then.
        var priced = entry
        priced.rates?.perThousandCalls = Decimal(string: "0.35")!
        priced.entitlements.insert(.federate)
        var federating = good
        federating.entitlements.insert(.federate)
        #expect(priced.evaluate(terms: federating, as: .provider).reasons.map(\.code) == ["price-too-low"])
        federating.rates.perThousandCalls = Decimal(string: "0.35")!
        #expect(priced.evaluate(terms: federating, as: .provider) == .allowed)
        #expect(priced.evaluate(terms: good, as: .provider) == .allowed)
        #expect(priced.counterOffer(to: federating)?.rates.perThousandCalls == Decimal(string: "0.35")!)
        #expect(priced.counterOffer(to: good)?.rates.perThousandCalls == 0)
        var weak = good
        weak.sla.availabilityPercent = Decimal(string: "99.49")!
        #expect(entry.evaluate(terms: weak, as: .consumer).reasons.map(\.code) == ["sla-insufficient"])
        var endless = good
        endless.period.until = nil
        #expect(entry.evaluate(terms: endless, as: .provider).reasons.map(\.code) == ["outside-validity"])
    }
}

@Test func explanationNamesEntryAndReasons() throws {
    let text = try exampleSet().explain(migration(region: "us-east", jurisdiction: "US"), peer: cloud2Broker, now: june).description
    #expect(text.hasPrefix("peer: broker@cloud2.example/intercloud\nrequest: migrate-in\npolicy: cloud2-2026 ("))
    #expect(text.hasSuffix("#peer[0])\ndecision: denied\n  - region-not-allowed: region us-east is not in [\"eu-west-1\", \"eu-central-1\"]\n  - jurisdiction-not-allowed: jurisdiction US is not in [\"EU\"]"))
}
