import Broker
import Foundation
import Metering
@testable import Migration
import Negotiation
import Policy
import Providers
import TestSupport
import Testing
import Trust
import XMPP

/// Cold migration between two brokers over a real Prosody (issue 7): each cloud runs its own
/// SimCloud; the disk travels over the brokers' mutual-TLS channel.
@Suite(.serialized, .timeLimit(.minutes(4))) struct BrokerMigrationIntegrationTests {
    let negotiation: BrokerNegotiationIntegrationTests

    init() throws { negotiation = try BrokerNegotiationIntegrationTests() }

    static let section = """
        [provider]
        driver = "simcloud"
        options = { data-dir = "sim-%@", boot-delay-ms = "0" }

        [migration]
        graceful_shutdown_seconds = 5
        boot_timeout_seconds = 30
        """

    func pair(consumerExtra: String = "", consumerClock: any Clock<Duration> = ContinuousClock()) async throws -> BrokerNegotiationIntegrationTests.Pair {
        let pair = try await negotiation.trustedPair(
            consumerSection: Self.section.replacingOccurrences(of: "%@", with: "c-\(UUID().uuidString.prefix(6))") + consumerExtra,
            providerSection: Self.section.replacingOccurrences(of: "%@", with: "p-\(UUID().uuidString.prefix(6))"),
            consumerClock: consumerClock)
        #expect(await eventually(timeout: .seconds(20)) { pair.consumer.node.migration?.isReady == true && pair.provider.node.migration?.isReady == true })
        return pair
    }

    func agree(_ pair: BrokerNegotiationIntegrationTests.Pair, instances: Int = 2, vcpu: Int = 4, types: [String]? = nil) async throws -> Agreement {
        var terms = agreementTerms(vcpu: vcpu)
        if let types { terms.instanceTypes = types }
        terms.resources.instances = instances
        terms.resources.storageGiB = 100
        terms.resources.transferGB = 100
        let outcome = try await pair.consumer.node.negotiation.negotiate(with: try JID(pair.providerJID), terms: terms)
        #expect(outcome.state == .finalized, "\(outcome.reason ?? "")")
        #expect(await eventually { await pair.provider.node.negotiation.state(of: outcome.negotiationID) == .finalized })
        return try #require(outcome.agreement)
    }

    func runningInstance(_ node: BrokerNode, size: String = "sim.small") async throws -> (any CloudDriver, Instance) {
        let driver = try await #require(node.provider).driver()
        let image = try #require(try await driver.listImages().first)
        let instance = try await driver.create(CreateInstanceRequest(name: "web-1", sizeID: size, imageID: image.id), progress: nil)
        return (driver, try await driver.waitFor(instance: instance.id, state: .running, timeout: .seconds(10)))
    }

    @Test func simCloudToSimCloudEndsWithOneRunningCopyAtTheDestinationAndMeteringMoved() async throws {
        let pair = try await pair()
        let agreement = try await agree(pair)
        let (source, instance) = try await runningInstance(pair.consumer.node)
        let destination = try await #require(pair.provider.node.provider).driver()
        let before = try await destination.listInstances().count

        let migration = try #require(pair.consumer.node.migration)
        let result = try await migration.migrate(instanceID: instance.id, to: pair.providerJID)
        #expect(result.outcome == .completed, "\(result.outcome)")

        // Exactly one running copy, at the destination; the source copy is gone.
        let sourceInstances = try await source.listInstances().filter { $0.id == instance.id && $0.state != .terminated }
        #expect(sourceInstances.isEmpty)
        let arrived = try await destination.listInstances()
        #expect(arrived.count == before + 1)
        #expect(arrived.filter { $0.state == .running }.count == before + 1)
        // Both journals agree on the end.
        let sourceSummary = try #require(try migration.journal.migrations().first { $0.migrationID == result.migrationID })
        #expect(sourceSummary.finished && sourceSummary.phase == "completed")
        #expect(await eventually {
            (try? pair.provider.node.migration?.journal.migrations().first { $0.migrationID == result.migrationID })??.phase == "completed"
        })
        // The disk moved over TLS and both sides metered the bytes; metering placements moved.
        let steps = try migration.journal.steps(result.migrationID).map(\.step)
        #expect(steps.contains { $0.contains("send") }, "\(steps)")
        #expect(!(try migration.journal.progress(result.migrationID)).isEmpty)
        #expect(try pair.consumer.node.metering.store.transferred(agreementID: agreement.id, role: .consumer, upTo: Date()) > 0)
        #expect(await eventually { ((try? pair.provider.node.metering.store.transferred(agreementID: agreement.id, role: .provider, upTo: Date())) ?? 0) > 0 })
        #expect(try pair.provider.node.metering.store.placements(agreementID: agreement.id, role: .provider).count == 1)
        #expect(try pair.consumer.node.metering.store.placements(agreementID: agreement.id, role: .consumer).count == 1)
        await negotiation.stop(pair)
    }

    @Test func withoutAnAgreementOrBeyondItsQuotaNothingMovesAndTheSourceKeepsRunning() async throws {
        let pair = try await pair()
        let (source, instance) = try await runningInstance(pair.consumer.node, size: "sim.medium")
        let destination = try await #require(pair.provider.node.provider).driver()
        let before = try await destination.listInstances().count
        let migration = try #require(pair.consumer.node.migration)

        // No agreement at all: refused before anything happens.
        await #expect(throws: (any Error).self) { try await migration.migrate(instanceID: instance.id, to: pair.providerJID) }

        // An agreement of 1 vCPU: the destination refuses a 2-vCPU instance (quota), the source rolls back.
        let agreement = try await agree(pair, instances: 1, vcpu: 1)
        let refused = try await migration.migrate(instanceID: instance.id, to: pair.providerJID, agreementID: agreement.id)
        guard case .rolledBack(let reason) = refused.outcome else { Issue.record("expected a rollback, got \(refused.outcome)"); return }
        #expect(reason.contains("quota-exceeded"), "\(reason)")
        #expect(try await source.describe(instance: instance.id).state == .running)
        #expect(try await destination.listInstances().count == before)

        // A made-up agreement: refused the same way.
        let bogus = try await migration.migrate(instanceID: instance.id, to: pair.providerJID, agreementID: "agr-0000000000000000")
        guard case .rolledBack(let bogusReason) = bogus.outcome else { Issue.record("expected a rollback, got \(bogus.outcome)"); return }
        #expect(bogusReason.contains("agreement"), "\(bogusReason)")
        #expect(try await source.describe(instance: instance.id).state == .running)
        #expect(try await destination.listInstances().count == before)
        await negotiation.stop(pair)
    }

    /// Stages, at the destination, another migration under a fresh one-instance agreement in
    /// `phase` (as a peer would leave it), then migrates a running instance there: it must be
    /// refused for quota, and the source copy must keep running.
    func expectQuotaRefusal(whileAnotherIs phase: DestinationPhase, spec: MigratingInstanceSpec) async throws {
        let pair = try await pair()
        let agreement = try await agree(pair, instances: 1, vcpu: 4)
        let (source, instance) = try await runningInstance(pair.consumer.node)
        let destination = try #require(pair.provider.node.migration)
        var other = DestinationMigration(
            migrationID: "mig-other", peer: pair.consumerJID, proposal: MigrationProposal(agreementID: agreement.id, instance: spec), now: Date())
        if phase != .authorizing { _ = other.begin(now: Date()) }
        var snapshot = other.snapshot
        snapshot.phase = phase
        try await destination.journal.save(
            snapshot, migrationID: "mig-other", role: .destination, peer: pair.consumerJID, phase: phase.rawValue, finished: false,
            step: "staged", outcome: "issued", detail: "", now: Date())

        let refused = try await pair.consumer.node.migration!.migrate(instanceID: instance.id, to: pair.providerJID, agreementID: agreement.id)
        guard case .rolledBack(let reason) = refused.outcome else { Issue.record("expected a rollback, got \(refused.outcome)"); return }
        #expect(reason.contains("quota-exceeded"), "\(reason)")
        #expect(try await source.describe(instance: instance.id).state == .running)
        #expect(destination.inFlightMigrations(agreementID: agreement.id).count == 1)
        await negotiation.stop(pair)
    }

    /// A peer's migration left holding a reservation (never transferred, never cut over) counts
    /// against the agreement's quota: a second migration that would exceed it is refused.
    @Test func reservationsInProgressCountAgainstTheQuota() async throws {
        try await expectQuotaRefusal(whileAnotherIs: .reserved, spec: MigratingInstanceSpec(
            name: "held", instanceType: "sim.small", vCPU: 1, memoryMiB: 512, diskGiB: 1, imageFormats: [.raw], canConvert: false))
    }

    /// Proposals that arrive together are each still `authorizing` when the others are decided: they
    /// count against the quota too, or all would pass on the same usage.
    @Test func proposalsBeingAuthorizedCountAgainstTheQuota() async throws {
        try await expectQuotaRefusal(whileAnotherIs: .authorizing, spec: MigratingInstanceSpec(
            name: "other", instanceType: "sim.medium", vCPU: 2, memoryMiB: 2048, diskGiB: 2, imageFormats: [.raw], canConvert: false))
    }

    /// `[automation] mode = "migrate"`: a cloud over its capacity threshold moves an instance to
    /// the peer it holds an agreement with, by itself, and audits it. The automation's check
    /// interval runs on a test clock: each "nothing happens" below is a whole round that ran and
    /// decided nothing (the loop is asleep again), not a real wait that a slow round could outlast.
    @Test func automaticMigrationMovesAnInstanceWhenTheCloudIsOverCapacity() async throws {
        let clock = TestClock()
        let pair = try await pair(consumerExtra: """

            [automation]
            mode = "migrate"
            check_seconds = 0.5
            triggers = ["capacity"]
            capacity_threshold_percent = 75
            """, consumerClock: clock)
        /// One check of the automation: wake it and wait until it sleeps again.
        func round() async {
            await clock.waitForSleepers()
            clock.advance(by: .milliseconds(500))
            await clock.waitForSleepers()
        }
        let source = try await #require(pair.consumer.node.provider).driver()
        let destination = try await #require(pair.provider.node.provider).driver()
        _ = try await runningInstance(pair.consumer.node)
        _ = try await runningInstance(pair.consumer.node)
        _ = try await runningInstance(pair.consumer.node)
        _ = try await runningInstance(pair.consumer.node)
        // 4 instances of the 20 SimCloud allows is low; vCPU 4 of 64 too: nothing to do yet.
        await round()
        #expect(try await destination.listInstances().isEmpty)
        _ = try await agree(pair)
        // Now an agreement exists, but the cloud is still under its threshold: still nothing.
        await round()
        #expect(try await destination.listInstances().isEmpty)
        #expect(pair.consumer.auditEvents(kind: "automation.proposal").isEmpty)
        // Fill the cloud past 75 % of its instance limit (20): the next round moves one instance
        // (in `migrate` mode a round returns when its migrations have ended).
        for _ in 0..<12 { _ = try await runningInstance(pair.consumer.node) }
        await round()
        #expect(((try? await destination.listInstances()) ?? []).count >= 1)
        #expect(pair.consumer.auditEvents(kind: "automation.migration").contains { $0.reason == "completed" })
        let proposal = try #require(pair.consumer.auditEvents(kind: "automation.proposal").first)
        #expect(proposal.reason == "capacity" && proposal.detail.contains("instances"))
        #expect(try await source.listInstances().filter { $0.state == .running }.count <= 15)
        await negotiation.stop(pair)
    }
}
