import Broker
import Foundation
import Negotiation
import Peering
import Policy
import TestSupport
import Testing
import Trust
import XMPP

/// Contract negotiation between two trusted brokers over a real Prosody (issue 6, part 2): cloud1
/// is the consumer, cloud2 the provider; each decides with its own policy file.
@Suite(.serialized, .timeLimit(.minutes(4))) struct BrokerNegotiationIntegrationTests {
    let server: TestProsody

    init() throws { server = try TestProsody.shared() }

    struct Pair {
        var fixture: TrustFixture
        var root: (ca: CertificateAuthority, path: String)
        var consumerConfig: BrokerConfiguration
        var providerConfig: BrokerConfiguration
        var consumerJID: String
        var providerJID: String
        var consumer: RunningBroker
        var provider: RunningBroker
    }

    static func providerPolicy(consumer: String, availability: String = "99.9", extraPrices: [String: String] = [:]) -> String {
        """
        version = 1

        [[peer]]
        name = "cloud1-partner"
        match = ["\(consumer)"]
        entitlements = ["query", "migrate-in", "federate"]

        [peer.quota]
        instances = 4
        vcpu = 8
        memory_gib = 32
        storage_gib = 200
        transfer_gb = 100

        [peer.rates]
        currency = "EUR"
        per_gb_transferred = "0.02"
        per_gb_month_stored = "0.04"

        [peer.rates.instance_hour]
        "sim.small" = "0.0230"
        "sim.medium" = "0.0460"
        \(extraPrices.keys.sorted().map { "\"\($0)\" = \"\(extraPrices[$0]!)\"" }.joined(separator: "\n"))

        [peer.sla_offered]
        availability_percent = "\(availability)"
        max_migration_downtime_seconds = 300
        support = "24x7"
        """
    }

    static func consumerPolicy(provider: String, requiredAvailability: String = "99.5", extra: String = "") -> String {
        """
        version = 1

        [[peer]]
        name = "cloud2-provider"
        match = ["\(provider)"]
        entitlements = ["query", "migrate-out"]

        [peer.sla_required]
        availability_percent = "\(requiredAvailability)"
        max_migration_downtime_seconds = 600
        support = "24x7"
        \(extra)
        """
    }

    /// Two brokers under one root CA, each with a policy file and short negotiation timers.
    func trustedPair(
        requiredAvailability: String = "99.5", negotiationTOML: String = "", consumerSection: String = "", providerSection: String = "",
        providerPrices: [String: String] = [:], consumerPolicyExtra: String = "", consumerClock: any Clock<Duration> = ContinuousClock()
    ) async throws -> Pair {
        let fixture = TrustFixture(brokers: BrokerFixture(server: server))
        let root = try fixture.root("root")
        let room = "exchange-\(UUID().uuidString.prefix(8).lowercased())@conference.cloud1.test"
        let consumerAccount = try server.freshAccount(prefix: "broker-cloud1", host: "cloud1.test")
        let providerAccount = try server.freshAccount(prefix: "broker-cloud2", host: "cloud2.test")
        func config(cloud: String, host: String, account: (jid: String, password: String), policy: String, extra: String) throws -> BrokerConfiguration {
            let identity = try root.ca.issueBrokerIdentity(jid: account.jid, notBefore: Date() - TrustFixture.day)
            let name = "\(cloud)-\(UUID().uuidString.prefix(6))"
            try identity.save(
                keyPath: fixture.directory.appendingPathComponent("\(name).key").path,
                chainPath: fixture.directory.appendingPathComponent("\(name)-chain.pem").path)
            try policy.write(to: fixture.directory.appendingPathComponent("\(name)-policy.toml"), atomically: true, encoding: .utf8)
            let toml = """
                [trust]
                key = "\(name).key"
                chain = "\(name)-chain.pem"
                anchors = ["\(root.path)"]

                [policy]
                files = ["\(name)-policy.toml"]

                [negotiation]
                \(negotiationTOML)

                \(extra)
                """
            return try fixture.brokers.configuration(cloud: cloud, host: host, rooms: [room], account: account, extraTOML: toml).0
        }
        let consumerConfig = try config(
            cloud: "cloud1", host: "cloud1.test", account: consumerAccount,
            policy: Self.consumerPolicy(provider: providerAccount.jid, requiredAvailability: requiredAvailability, extra: consumerPolicyExtra),
            extra: consumerSection)
        let providerConfig = try config(
            cloud: "cloud2", host: "cloud2.test", account: providerAccount, policy: Self.providerPolicy(consumer: consumerAccount.jid, extraPrices: providerPrices),
            extra: providerSection)
        let consumer = try RunningBroker(configuration: consumerConfig, clock: consumerClock)
        let provider = try RunningBroker(configuration: providerConfig)
        #expect(await eventually(timeout: .seconds(30)) { consumer.isTrusted(providerAccount.jid) && provider.isTrusted(consumerAccount.jid) })
        return Pair(
            fixture: fixture, root: root, consumerConfig: consumerConfig, providerConfig: providerConfig, consumerJID: consumerAccount.jid,
            providerJID: providerAccount.jid, consumer: consumer, provider: provider)
    }

    func stop(_ pair: Pair) async {
        await pair.consumer.stop()
        await pair.provider.stop()
    }

    @Test func happyPathEndsFinalizedWithAnAgreementBothSignedAndVerifiableOffline() async throws {
        let pair = try await trustedPair()
        let outcome = try await pair.consumer.node.negotiation.negotiate(with: try JID(pair.providerJID), terms: agreementTerms())
        #expect(outcome.state == .finalized, "\(outcome.reason ?? "")")
        let agreement = try #require(outcome.agreement)
        #expect(agreement.consumer == pair.consumerJID && agreement.provider == pair.providerJID)
        #expect(agreement.terms == agreementTerms(from: agreement.terms.period.from!))
        // The provider reaches FINALIZED when its finalize message is acknowledged.
        #expect(await eventually { await pair.provider.node.negotiation.state(of: outcome.negotiationID) == .finalized })
        let atProvider = try #require(try pair.provider.node.negotiation.store.agreement(agreement.id))
        let atConsumer = try #require(try pair.consumer.node.negotiation.store.agreement(agreement.id))
        #expect(atProvider.state == .finalized && atConsumer.state == .finalized)
        #expect(atProvider.canonical == agreement.canonicalBytes() && atConsumer.canonical == atProvider.canonical)
        #expect(atProvider.consumerSignature != nil && atProvider.consumerSignature == atConsumer.consumerSignature)
        #expect(atProvider.providerSignature == atConsumer.providerSignature)

        // Offline: the exported document verifies, with and without the trust anchors.
        let document = try SignedAgreementDocument(stored: atConsumer)
        let decoded = try SignedAgreementDocument.decode(try document.encoded())
        let checks = await decoded.verify(anchors: try TrustAnchors.load(anchorPaths: [pair.root.path]))
        let failed = checks.filter { !$0.passed }
        #expect(failed.isEmpty, "\(failed)")
        #expect(checks.count == 10)

        // Later requests are checked against it at the provider.
        let spec = MigrationSpec(instanceType: "sim.small", vcpu: 2, memoryGiB: 2, diskGiB: 20, region: "cloud2-a", transferGB: 2)
        #expect(pair.provider.node.negotiation.check(.migrateIn(spec), from: pair.consumerJID) == .allowed)
        #expect(pair.provider.node.negotiation.check(.migrateOut(spec), from: pair.consumerJID).reasons.map(\.code) == ["not-entitled"])
        // Beyond quota: 2 vCPU already used of 4 agreed, 4 more asked.
        var big = spec
        big.vcpu = 4
        #expect(pair.provider.node.negotiation.check(.migrateIn(big), from: pair.consumerJID, usage: ResourceAmount(instances: 1, vcpu: 2))
            .reasons.map(\.code).contains("quota-exceeded"))
        // After expiry: refused.
        #expect(pair.provider.node.negotiation.check(.migrateIn(spec), from: pair.consumerJID, now: Date().addingTimeInterval(31 * 86_400))
            .reasons.map(\.code).contains("agreement-expired"))
        // Not an agreement of the consumer's as provider.
        #expect(pair.consumer.node.negotiation.check(.migrateIn(spec), from: pair.providerJID).reasons.map(\.code) == ["no-agreement"])
        #expect(pair.consumer.auditEvents(kind: "negotiation.finalized").count == 1)
        #expect(pair.provider.auditEvents(kind: "negotiation.finalized").count == 1)
        await stop(pair)
    }

    @Test func tamperedAgreementFileFailsVerification() async throws {
        let pair = try await trustedPair()
        let outcome = try await pair.consumer.node.negotiation.negotiate(with: try JID(pair.providerJID), terms: agreementTerms())
        let agreement = try #require(outcome.agreement)
        let stored = try #require(try pair.consumer.node.negotiation.store.agreement(agreement.id))
        await stop(pair)
        let document = try SignedAgreementDocument(stored: stored)

        // A cheaper price in both the record and the signed text: the signatures no longer verify.
        var cheaper = document
        cheaper.agreement.terms.rates.instanceHour["sim.small"] = Decimal(string: "0.0010")!
        cheaper.canonical = String(decoding: cheaper.agreement.canonicalBytes(), as: UTF8.self)
        let cheaperChecks = await cheaper.verify()
        #expect(cheaperChecks.filter { !$0.passed }.map(\.name) == ["provider signature", "consumer signature"])

        // Only the record changed: it no longer matches the signed text.
        var recordOnly = document
        recordOnly.agreement.terms.resources.vcpu = 64
        #expect(await recordOnly.verify().filter { !$0.passed }.map(\.name) == ["canonical text matches the agreement record"])

        // A chain swapped for another broker's: the name and the signature fail.
        var swapped = document
        swapped.provider.chain = document.consumer.chain
        let swappedFailures = await swapped.verify().filter { !$0.passed }.map(\.name)
        #expect(swappedFailures.contains("provider signature") && swappedFailures.contains("provider certificate names \(pair.providerJID)"))

        // Anchored at a different root: both chains refused.
        let other = try pair.fixture.root("other")
        let anchored = await document.verify(anchors: try TrustAnchors.load(anchorPaths: [other.path]))
        #expect(anchored.filter { !$0.passed }.map(\.name) == ["provider chain", "consumer chain"])
    }

    @Test func counterOfferIsAcceptedAndTheAgreementCarriesTheProvidersTerms() async throws {
        let pair = try await trustedPair()
        // Prices 0 (asking for the rate card) and more vCPU than the quota of 8.
        let outcome = try await pair.consumer.node.negotiation.negotiate(
            with: try JID(pair.providerJID), terms: agreementTerms(vcpu: 16, price: "0"))
        #expect(outcome.state == .finalized, "\(outcome.reason ?? "")")
        let terms = try #require(outcome.agreement?.terms)
        #expect(terms.resources.vcpu == 8)
        #expect(terms.rates.instanceHour == ["sim.small": Decimal(string: "0.0230")!])
        #expect(terms.rates.perGBTransferred == Decimal(string: "0.02")!)
        let rows = try pair.consumer.node.negotiation.store.negotiations()
        #expect(rows.first?.state == "FINALIZED")
        await stop(pair)
    }

    @Test func rejectionsCarryThePolicyReasonToBothSides() async throws {
        // The provider grants no migrate-out: it terminates with its policy's reason.
        let pair = try await trustedPair(requiredAvailability: "99.99")
        let refused = try await pair.consumer.node.negotiation.negotiate(with: try JID(pair.providerJID), terms: agreementTerms(entitlements: [.migrateOut]))
        #expect(refused.state == .terminated)
        #expect(refused.reason?.contains("not-entitled") == true, "\(refused.reason ?? "")")
        #expect(await eventually { await pair.provider.node.negotiation.state(of: refused.negotiationID) == .terminated })

        // The consumer requires 99.99% but the provider offers 99.9%: the consumer terminates.
        let weak = try await pair.consumer.node.negotiation.negotiate(with: try JID(pair.providerJID), terms: agreementTerms(price: "0"))
        #expect(weak.state == .terminated)
        #expect(weak.reason?.contains("sla-insufficient") == true, "\(weak.reason ?? "")")
        #expect(await eventually { await pair.provider.node.negotiation.state(of: weak.negotiationID) == .terminated })
        #expect(try pair.provider.node.negotiation.store.agreements().isEmpty)
        #expect(pair.consumer.auditEvents(kind: "negotiation.terminated").count == 2)
        await stop(pair)
    }

    @Test func aConsumerRefusesAnOfferAboveItsPriceCeiling() async throws {
        // The consumer asks 0.01/h; the provider counters with its card, 0.0230/h for sim.small;
        // the consumer pays at most 0.02 and terminates.
        let pair = try await trustedPair(consumerPolicyExtra: """

            [peer.max_rates]
            currency = "EUR"
            [peer.max_rates.instance_hour]
            "sim.small" = "0.02"
            """)
        let outcome = try await pair.consumer.node.negotiation.negotiate(with: try JID(pair.providerJID), terms: agreementTerms(price: "0.01"))
        #expect(outcome.state == .terminated)
        #expect(outcome.reason?.contains("price-too-high") == true, "\(outcome.reason ?? "")")
        #expect(await eventually { await pair.provider.node.negotiation.state(of: outcome.negotiationID) == .terminated })
        #expect(try pair.consumer.node.negotiation.store.agreements().isEmpty)
        await stop(pair)
    }

    @Test func aPeerThatNeverAnswersTimesOutAfterTheRetryLimit() async throws {
        let pair = try await trustedPair(negotiationTOML: "step_timeout_seconds = 0.5\nmax_attempts = 2")
        // A client on the provider's account that swallows every envelope without answering.
        let account = try server.freshAccount(prefix: "silent", host: "cloud2.test")
        let silent = XMPPClient(configuration: .init(
            jid: try JID(account.jid + "/silent"), password: account.password, host: "127.0.0.1", port: server.port,
            tls: .required(caFile: server.caFile), streamManagement: false))
        silent.setIQHandler(namespace: TrustNamespace.envelope, .deferred { _, _ in })
        silent.start()
        try await silent.waitUntilOnline(timeout: .seconds(10))
        let started = ContinuousClock.now
        let outcome = try await pair.consumer.node.negotiation.negotiate(with: try JID(account.jid + "/silent"), terms: agreementTerms())
        #expect(outcome.state == .terminated)
        #expect(outcome.reason?.contains("no result for request after 2 attempts") == true, "\(outcome.reason ?? "")")
        #expect(ContinuousClock.now - started >= .milliseconds(900))
        await silent.stop()
        await stop(pair)
    }

    /// A broker stopped while a negotiation waits for its decision, restarted from its database:
    /// the negotiation resumes and both sides end FINALIZED.
    @Test(arguments: ["provider-requested", "consumer-agreed", "provider-verified"])
    func restartInTheMiddleResumesToTheSameEndOnBothSides(_ point: String) async throws {
        let pair = try await trustedPair()
        let restartProvider = point.hasPrefix("provider")
        let target: NegotiationState = switch point {
        case "provider-requested": .requested
        case "consumer-agreed": .agreed
        default: .verified
        }
        let held = restartProvider ? pair.provider : pair.consumer
        await held.node.negotiation.holdDecisions(in: [target])
        let id = try await pair.consumer.node.negotiation.start(with: try JID(pair.providerJID), terms: agreementTerms())
        #expect(await eventually { await held.node.negotiation.state(of: id) == target })
        await held.stop()
        let restarted = try RunningBroker(configuration: restartProvider ? pair.providerConfig : pair.consumerConfig)
        let other = restartProvider ? pair.consumer : pair.provider
        #expect(await eventually(timeout: .seconds(30)) { await restarted.node.negotiation.state(of: id) == .finalized })
        #expect(await eventually(timeout: .seconds(30)) { await other.node.negotiation.state(of: id) == .finalized })
        let consumerNode = restartProvider ? pair.consumer : restarted
        let outcome = await consumerNode.node.negotiation.outcome(of: id)
        #expect(outcome.state == .finalized)
        await restarted.stop()
        await other.stop()
    }

    /// Restarted after its decision deadline: the broker terminates on resume and tells its peer;
    /// both sides end TERMINATED.
    @Test func restartAfterTheDeadlineTerminatesOnBothSides() async throws {
        let pair = try await trustedPair(negotiationTOML: "decision_timeout_seconds = 2")
        await pair.provider.node.negotiation.holdDecisions(in: [.requested])
        let id = try await pair.consumer.node.negotiation.start(with: try JID(pair.providerJID), terms: agreementTerms())
        #expect(await eventually { await pair.provider.node.negotiation.state(of: id) == .requested })
        await pair.provider.stop()
        // Restarted as if 3 s later: past the 2 s decision deadline, without waiting for it.
        let restarted = try RunningBroker(configuration: pair.providerConfig, wallClock: { Date() + 3 })
        #expect(await eventually(timeout: .seconds(20)) { await restarted.node.negotiation.state(of: id) == .terminated })
        #expect(await eventually(timeout: .seconds(20)) { await pair.consumer.node.negotiation.state(of: id) == .terminated })
        let reason = try pair.consumer.node.negotiation.store.negotiation(id)?.reason ?? ""
        #expect(reason.contains("no progress in REQUESTED") || reason.contains("restarted after the REQUESTED deadline"), "\(reason)")
        await restarted.stop()
        await pair.consumer.stop()
    }

    @Test func malformedAndForeignMessagesAreRefusedAndAudited() async throws {
        let pair = try await trustedPair()
        let provider = try RunningBroker.full(pair.providerJID)
        // Not JSON.
        let garbage = Array("<negotiation xmlns='urn:intercloud:negotiation:0'>{not json</negotiation>".utf8)
        let bad = await stanzaCondition {
            _ = try await pair.consumer.node.signed.request(.set, to: provider, namespace: "urn:intercloud:negotiation:0", payload: garbage)
        }
        #expect(bad == "bad-request")
        // A message for a negotiation the provider never heard of.
        let foreign = Array("<negotiation xmlns='urn:intercloud:negotiation:0'>{\"negotiationID\":\"neg-x\",\"messageID\":\"neg-x/consumer/2\",\"body\":{\"accept\":{}}}</negotiation>".utf8)
        let unknown = await stanzaCondition {
            _ = try await pair.consumer.node.signed.request(.set, to: provider, namespace: "urn:intercloud:negotiation:0", payload: foreign)
        }
        #expect(unknown == "item-not-found")
        let refusals = pair.provider.auditEvents(peer: pair.consumerJID, kind: "negotiation.message").map(\.reason)
        #expect(refusals.contains("malformed") && refusals.contains("unknownNegotiation"))
        #expect(try pair.provider.node.negotiation.store.negotiations().isEmpty)
        await stop(pair)
    }

    /// A peer may hold `max_open_per_peer` negotiations open with us as provider: the next request
    /// is refused `resource-constraint` (audited, nothing stored) until one ends.
    @Test func aPeerCannotOpenMoreNegotiationsThanItsShare() async throws {
        let pair = try await trustedPair(negotiationTOML: "max_open_per_peer = 2\nmax_open = 4")
        await pair.provider.node.negotiation.holdDecisions(in: [.requested])
        let provider = try JID(pair.providerJID)
        var open: [String] = []
        for _ in 0..<2 {
            let id = try await pair.consumer.node.negotiation.start(with: provider, terms: agreementTerms())
            #expect(await eventually { await pair.provider.node.negotiation.state(of: id) == .requested })
            open.append(id)
        }
        let third = try await pair.consumer.node.negotiation.start(with: provider, terms: agreementTerms())
        let refused = await pair.consumer.node.negotiation.outcome(of: third)
        #expect(refused.state == .terminated)
        #expect(refused.reason?.contains("2 negotiations with this peer are already open") == true, "\(refused.reason ?? "")")
        #expect(await pair.provider.node.negotiation.state(of: third) == nil)
        #expect(try pair.provider.node.negotiation.store.negotiations().count == 2)
        #expect(pair.provider.auditEvents(peer: pair.consumerJID, kind: "negotiation.message").map(\.reason).contains("tooManyOpen"))

        // Once they end, the peer's share is free again.
        await pair.provider.node.negotiation.holdDecisions(in: [])
        for id in open { #expect(await pair.consumer.node.negotiation.outcome(of: id).state == .finalized) }
        let after = try await pair.consumer.node.negotiation.negotiate(with: provider, terms: agreementTerms())
        #expect(after.state == .finalized, "\(after.reason ?? "")")
        await stop(pair)
    }
}
