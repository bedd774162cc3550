import Broker
import Foundation
import Metering
import Negotiation
import Peering
import Policy
import Providers
import TestSupport
import Testing
import Trust
import XMPP

/// Metering between two brokers over a real Prosody (issue 6, parts 3 and 4): the provider drives
/// a real SimCloud; a simulated period is sampled at chosen times, integrated, signed, sent, and
/// countersigned or disputed by the consumer.
@Suite(.serialized, .timeLimit(.minutes(3))) struct BrokerMeteringIntegrationTests {
    let negotiation: BrokerNegotiationIntegrationTests

    init() throws { negotiation = try BrokerNegotiationIntegrationTests() }

    static let gib: Int64 = 1 << 30

    /// A finalized agreement between the pair; the provider drives SimCloud with instant boots
    /// and samples only when told to (the hourly loop stays out of the simulated periods).
    func meteredPair() async throws -> (BrokerNegotiationIntegrationTests.Pair, Agreement) {
        let pair = try await negotiation.trustedPair(providerSection: """
            [provider]
            driver = "simcloud"
            options = { data-dir = "sim-\(UUID().uuidString.prefix(6))", boot-delay-ms = "0" }

            [metering]
            sample_seconds = 3600
            period_seconds = 3600
            """)
        var terms = agreementTerms()
        terms.instanceTypes = ["sim.small", "sim.medium"]
        terms.rates.instanceHour = ["sim.small": Decimal(string: "0.0230")!, "sim.medium": Decimal(string: "0.0460")!]
        let outcome = try await pair.consumer.node.negotiation.negotiate(with: try JID(pair.providerJID), terms: terms)
        #expect(outcome.state == .finalized, "\(outcome.reason ?? "")")
        // The provider finalizes when its finalize message is acknowledged, just after the consumer.
        #expect(await eventually { await pair.provider.node.negotiation.state(of: outcome.negotiationID) == .finalized })
        return (pair, try #require(outcome.agreement))
    }

    func place(_ pair: BrokerNegotiationIntegrationTests.Pair, _ agreement: Agreement, _ instance: Instance, type: String, vcpu: Int, disk: Int64, at time: Date) throws {
        for (node, role, peer) in [(pair.provider.node, LedgerRole.provider, pair.consumerJID), (pair.consumer.node, .consumer, pair.providerJID)] {
            try node.metering.store.place(MeteringStore.Placement(
                agreementID: agreement.id, instanceID: instance.id, role: role, peer: peer, instanceType: type, vcpu: vcpu,
                memoryGiB: 2, diskBytes: disk, placedAt: time))
        }
    }

    @Test func recordsMatchTheDriverStateOverASimulatedPeriodAndTheBillIsExactToTheCent() async throws {
        let (pair, agreement) = try await meteredPair()
        let driver = try await #require(pair.provider.node.provider).driver()
        let image = try #require(try await driver.listImages().first)
        let small = try await driver.create(CreateInstanceRequest(name: "web", sizeID: "sim.small", imageID: image.id), progress: nil)
        let medium = try await driver.create(CreateInstanceRequest(name: "db", sizeID: "sim.medium", imageID: image.id), progress: nil)
        _ = try await driver.waitFor(instance: small.id, state: .running, timeout: .seconds(10))
        _ = try await driver.waitFor(instance: medium.id, state: .running, timeout: .seconds(10))

        // A simulated hour one day into the agreement: both running from t0; the medium instance
        // terminated at t0+30 min (removed on both sides); 2.5 GB transferred at t0+1 min.
        let t0 = agreement.terms.period.from!.addingTimeInterval(86_400)
        try place(pair, agreement, small, type: "sim.small", vcpu: 1, disk: 20 * Self.gib, at: t0)
        try place(pair, agreement, medium, type: "sim.medium", vcpu: 2, disk: 40 * Self.gib, at: t0)
        for (node, role) in [(pair.provider.node, LedgerRole.provider), (pair.consumer.node, .consumer)] {
            try node.metering.store.addTransfer(agreementID: agreement.id, role: role, bytes: 2_500_000_000, at: t0.addingTimeInterval(60))
        }
        let metering = pair.provider.node.metering
        await metering.sample(now: t0)
        try await driver.terminate(instance: medium.id)
        for (node, role) in [(pair.provider.node, LedgerRole.provider), (pair.consumer.node, .consumer)] {
            try node.metering.store.remove(agreementID: agreement.id, instanceID: medium.id, role: role, at: t0.addingTimeInterval(1800))
        }
        await metering.sample(now: t0.addingTimeInterval(1800))
        // An outage of 10 minutes in the hour: below the agreed 99.9 %.
        try metering.store.addAvailability(agreementID: agreement.id, AvailabilitySample(time: t0.addingTimeInterval(2400), isUp: false))
        try metering.store.addAvailability(agreementID: agreement.id, AvailabilitySample(time: t0.addingTimeInterval(3000), isUp: true))

        let period = MeteringPeriod(from: t0, until: t0.addingTimeInterval(3600))
        let entry = try await metering.closePeriod(agreementID: agreement.id, period: period, now: t0.addingTimeInterval(3600))
        #expect(entry.state == .countersigned, "\(entry.disputeReasons)")
        let record = try entry.record()
        #expect(record.usage.instanceType("sim.small")?.runningSeconds == 3600)
        #expect(record.usage.instanceType("sim.medium")?.runningSeconds == 1800)
        #expect(record.usage.vcpuSeconds == 3600 + 2 * 1800)
        #expect(record.usage.bytesTransferred == 2_500_000_000)
        #expect(record.usage.byteSecondsStored == Decimal(20 * Self.gib * 3600 + 40 * Self.gib * 1800))

        // Both ledgers hold the same bytes, the consumer's signature verifies with its certificate.
        let atConsumer = try #require(try pair.consumer.node.metering.ledger.entry(entry.key))
        #expect(atConsumer.state == .countersigned && atConsumer.canonicalBytes == entry.canonicalBytes)
        #expect(atConsumer.consumerSignature == entry.consumerSignature)
        let consumerLeaf = try #require(try pair.provider.node.trust?.service.store.pin(for: pair.consumerJID)?.leaf())
        #expect(DetachedSignature.isValid(try #require(entry.consumerSignature), for: entry.canonicalBytes, signedBy: consumerLeaf))

        // The bill: each line rounded half-up to the cent, the total their sum.
        let bill = try Bill(
            provider: pair.providerJID, consumer: pair.consumerJID, period: period, rates: agreement.terms.rates,
            records: try pair.provider.node.metering.ledger.billableRecords(peer: pair.consumerJID, role: .provider, period: period))
        #expect(bill.lines.map { "\($0.item)=\($0.amount)" } == ["sim.medium=0.02", "sim.small=0.02", "Data transfer=0.05", "Storage=0"])
        #expect(bill.total == Decimal(string: "0.09")!, "\(BillRenderer.table(bill))")
        #expect(BillRenderer.csv(bill).contains("sim.medium"))

        // The outage is a recorded SLA breach.
        let breaches = try metering.ledger.breaches(agreementID: agreement.id, overlapping: period)
        #expect(breaches.map(\.kind) == [.availability], "\(breaches)")
        await negotiation.stop(pair)
    }

    @Test func theConsumerDisputesARecordThatDisagreesWithItsOwnView() async throws {
        let (pair, agreement) = try await meteredPair()
        let driver = try await #require(pair.provider.node.provider).driver()
        let image = try #require(try await driver.listImages().first)
        let small = try await driver.create(CreateInstanceRequest(name: "web", sizeID: "sim.small", imageID: image.id), progress: nil)
        _ = try await driver.waitFor(instance: small.id, state: .running, timeout: .seconds(10))
        let t0 = agreement.terms.period.from!.addingTimeInterval(2 * 86_400)
        try place(pair, agreement, small, type: "sim.small", vcpu: 1, disk: 0, at: t0)
        // The consumer asked for the instance to go after 10 minutes; the provider kept it running.
        try pair.consumer.node.metering.store.remove(agreementID: agreement.id, instanceID: small.id, role: .consumer, at: t0.addingTimeInterval(600))
        let metering = pair.provider.node.metering
        await metering.sample(now: t0)
        await metering.sample(now: t0.addingTimeInterval(1800))
        let period = MeteringPeriod(from: t0, until: t0.addingTimeInterval(3600))
        let entry = try await metering.closePeriod(agreementID: agreement.id, period: period, now: t0.addingTimeInterval(3600))
        #expect(entry.state == .disputed)
        #expect(entry.disputeReasons.contains { $0.contains("sim.small") && $0.contains("3600") && $0.contains("600") }, "\(entry.disputeReasons)")
        let atConsumer = try #require(try pair.consumer.node.metering.ledger.entry(entry.key))
        #expect(atConsumer.state == .disputed && atConsumer.disputeReasons == entry.disputeReasons)
        #expect(pair.consumer.auditEvents(kind: "metering.record").map(\.reason) == ["usageDisputed"])
        // A disputed record is not billed.
        #expect(try metering.ledger.billableRecords(peer: pair.consumerJID, role: .provider, period: period).isEmpty)
        // Closing the same period again sends nothing new: the ledger already settled it.
        let again = try await metering.closePeriod(agreementID: agreement.id, period: period, now: t0.addingTimeInterval(3700))
        #expect(again.key == entry.key && again.state == .disputed)
        await negotiation.stop(pair)
    }

    @Test func forgedAndMalformedUsageRecordsAreRefusedAndAudited() async throws {
        let (pair, agreement) = try await meteredPair()
        let consumerFull = try RunningBroker.full(pair.consumerJID)
        let signed = pair.provider.node.signed
        let namespace = "urn:intercloud:metering:0"
        let record = UsageRecord(
            agreementID: agreement.id, provider: pair.providerJID, consumer: pair.consumerJID,
            period: MeteringPeriod(from: agreement.terms.period.from!, until: agreement.terms.period.from!.addingTimeInterval(3600)),
            sequence: 0, usage: MeasuredUsage(), createdAt: agreement.terms.period.from!)
        func usage(_ bytes: [UInt8], signature: [UInt8]) -> [UInt8] {
            Array("<usage xmlns='\(namespace)' record='\(Data(bytes).base64EncodedString())' signature='\(Data(signature).base64EncodedString())'/>".utf8)
        }
        // Signed with a key that is not the provider's: refused, nothing stored.
        let stranger = try CertificateAuthority.makeRoot(commonName: "x", notBefore: Date() - 3600)
        let forgedSignature = try stranger.issueBrokerIdentity(jid: pair.providerJID, notBefore: Date() - 3600).sign(record.canonicalBytes())
        let forged = await stanzaCondition {
            _ = try await signed.request(.set, to: consumerFull, namespace: namespace, payload: usage(record.canonicalBytes(), signature: forgedSignature))
        }
        #expect(forged == "not-acceptable")
        // Not canonical text.
        let garbage = await stanzaCondition {
            _ = try await signed.request(.set, to: consumerFull, namespace: namespace, payload: usage(Array("hello".utf8), signature: [1, 2, 3]))
        }
        #expect(garbage == "bad-request")
        // A record naming other parties.
        var other = record
        other.provider = "someone@cloud9.test"
        let wrongParties = await stanzaCondition {
            _ = try await signed.request(.set, to: consumerFull, namespace: namespace, payload: usage(other.canonicalBytes(), signature: [1]))
        }
        #expect(wrongParties == "forbidden")
        let reasons = pair.consumer.auditEvents(kind: "metering.record").map(\.reason)
        #expect(Set(reasons) == ["badSignature", "malformed", "wrongParties"], "\(reasons)")
        #expect(try pair.consumer.node.metering.ledger.entry(record.key) == nil)
        await negotiation.stop(pair)
    }

    @Test("records signed by the real provider but lying about the period, the quantities or calls are refused, audited, not stored")
    func lyingRecordsSignedByTheProviderAreRefused() async throws {
        let (pair, agreement) = try await meteredPair()
        let consumerFull = try RunningBroker.full(pair.consumerJID)
        let signed = pair.provider.node.signed
        let providerIdentity = try #require(pair.provider.node.trust?.service.identity)
        let namespace = "urn:intercloud:metering:0"
        let start = agreement.terms.period.from!
        func send(_ record: UsageRecord) async throws -> String? {
            let bytes = record.canonicalBytes()
            let signature = try providerIdentity.sign(bytes)
            let payload = Array(
                "<usage xmlns='\(namespace)' record='\(Data(bytes).base64EncodedString())' signature='\(Data(signature).base64EncodedString())'/>".utf8)
            return await stanzaCondition {
                _ = try await signed.request(.set, to: consumerFull, namespace: namespace, payload: payload)
            }
        }
        func record(sequence: Int64, from: Date, seconds: TimeInterval = 3600, calls: Int64 = 0) -> UsageRecord {
            UsageRecord(
                agreementID: agreement.id, provider: pair.providerJID, consumer: pair.consumerJID,
                period: MeteringPeriod(from: from, until: from.addingTimeInterval(seconds)), sequence: sequence,
                usage: MeasuredUsage(calls: calls), createdAt: from.addingTimeInterval(seconds))
        }
        let offGrid = record(sequence: 1, from: start.addingTimeInterval(1800))
        let beforeAgreement = record(sequence: 2, from: start.addingTimeInterval(-3600))
        let callsWithoutServices = record(sequence: 3, from: start.addingTimeInterval(3600), calls: 1_000_000)
        #expect(try await send(offGrid) == "not-acceptable")
        #expect(try await send(beforeAgreement) == "not-acceptable")
        #expect(try await send(callsWithoutServices) == "not-acceptable")
        for lie in [offGrid, beforeAgreement, callsWithoutServices] {
            #expect(try pair.consumer.node.metering.ledger.entry(lie.key) == nil)
        }
        let reasons = Set(pair.consumer.auditEvents(kind: "metering.record").map(\.reason))
        #expect(reasons == ["offGrid", "outsideAgreement", "callsNotAgreed"], "\(reasons)")
        await negotiation.stop(pair)
    }
}
