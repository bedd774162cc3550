import Foundation
import Testing
@testable import Policy

@Suite struct AgreementTests {
    func agreement(_ t: Terms = terms()) -> Agreement {
        Agreement(id: "a1", negotiationID: "n1", consumer: "broker@cloud1.example", provider: "broker@cloud2.example", terms: t, createdAt: t0)
    }

    @Test func canonicalBytesAreExactAndStable() {
        let text = String(decoding: agreement().canonicalBytes(), as: UTF8.self)
        #expect(text == """
            format=urn:intercloud:agreement:0
            id=a1
            negotiation=n1
            consumer=broker@cloud1.example
            provider=broker@cloud2.example
            created=1780000000
            period.from=1780000000
            period.until=1782592000
            resources.instances=2
            resources.vcpu=8
            resources.memory_gib=16
            resources.storage_gib=100
            resources.transfer_gb=50.5
            instance_types=m1.small
            entitlements=migrate-in,query
            placement.regions=eu-west-1
            placement.jurisdictions=EU
            rates.currency=EUR
            rates.per_gb_transferred=0.02
            rates.per_gb_month_stored=0.04
            rates.instance_hour.m1.small=0.023
            sla.availability_percent=99.9
            sla.max_migration_downtime_seconds=300
            sla.support=24x7

            """)
    }

    @Test func callPriceIsSignedOnlyWhenSet() throws {
        var priced = terms()
        priced.rates.perThousandCalls = Decimal(string: "0.350")!
        let text = String(decoding: agreement(priced).canonicalBytes(), as: UTF8.self)
        #expect(text.contains("rates.per_gb_month_stored=0.04\nrates.per_1000_calls=0.35\nrates.instance_hour."))
        // Unpriced calls leave the encoding of every earlier agreement as it was.
        #expect(!String(decoding: agreement().canonicalBytes(), as: UTF8.self).contains("calls"))
        // Terms stored before the field existed decode with calls unpriced.
        let old = #"{"currency":"EUR","instanceHour":{},"perGBTransferred":0,"perGBMonthStored":0}"#
        #expect(try JSONDecoder().decode(RateCard.self, from: Data(old.utf8)).perThousandCalls == 0)
    }

    @Test func equalValuesSignTheSameAndChangesShow() {
        #expect(agreement(terms(price: "0.0230")).canonicalBytes() == agreement(terms(price: "0.023")).canonicalBytes())
        #expect(agreement(terms(price: "0.024")).canonicalBytes() != agreement().canonicalBytes())
    }

    @Test func separatorsInValuesAreEscaped() {
        var t = terms()
        t.sla.support = "a\nrates.currency=USD"
        let text = String(decoding: agreement(t).canonicalBytes(), as: UTF8.self)
        #expect(text.contains("sla.support=a\\nrates.currency\\=USD\n"))
    }

    @Test func decimalsInPlainNotation() {
        #expect(Agreement.decimal(Decimal(string: "1e3")!) == "1000")
        #expect(Agreement.decimal(Decimal(string: "0.000001")!) == "0.000001")
        #expect(Agreement.decimal(Decimal(string: "-2.50")!) == "-2.5")
        #expect(Agreement.decimal(0) == "0")
    }

    @Test func validity() {
        #expect(agreement().isValid(at: t0))
        #expect(!agreement().isValid(at: t0.addingTimeInterval(86_400 * 30)))
    }
}

@Suite struct AgreementRuleTests {
    let rule = AgreementRule(agreement: Agreement(
        id: "a1", negotiationID: "n1", consumer: "broker@cloud1.example", provider: "broker@cloud2.example", terms: terms(), createdAt: t0))

    func context(at now: Date = t0 + 3600, usage: ResourceAmount = .zero) -> PolicyContext {
        PolicyContext(peer: "broker@cloud1.example", now: now, usage: usage, policy: nil)
    }

    @Test func allowedWithinTheAgreement() {
        #expect(rule.evaluate(migration(), context: context()) == .allowed)
        #expect(rule.evaluate(.query, context: context()) == .allowed)
    }

    @Test func refusedAfterExpiry() {
        #expect(rule.evaluate(.query, context: context(at: t0 + 86_400 * 30)).reasons.map(\.code) == ["agreement-expired"])
    }

    @Test func refusedBeyondQuota() {
        let usage = ResourceAmount(instances: 1, vcpu: 7)
        #expect(rule.evaluate(migration(vcpu: 1), context: context(usage: usage)) == .allowed)
        #expect(rule.evaluate(migration(vcpu: 2), context: context(usage: usage)).reasons.map(\.message) == ["vcpu: 9 would exceed quota 8"])
    }

    @Test func refusedForOtherVerbsTypesAndPlaces() {
        #expect(rule.evaluate(.federate(service: "db", size: .zero), context: context()).reasons.map(\.code) == ["not-entitled"])
        #expect(rule.evaluate(migration(type: "m1.large"), context: context()).reasons.map(\.code) == ["instance-type-not-agreed"])
        #expect(rule.evaluate(migration(region: "us-east", jurisdiction: "EU"), context: context()).reasons.map(\.code) == ["region-not-allowed"])
    }
}
