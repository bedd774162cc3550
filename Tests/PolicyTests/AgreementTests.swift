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
