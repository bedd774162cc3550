import Foundation
import Logging
import Metering
import Negotiation
import Peering
import Policy
import Providers
import Synchronization
import Trust

/// Runs `AutomationPolicy` every `checkInterval` when `[automation] mode` is `propose` or
/// `migrate` (default `off`): proposals are logged and audited (`automation.proposal`); in
/// `migrate` mode each is carried out through `MigrationService` and its outcome audited
/// (`automation.migration`). A proposal is audited once per instance and trigger until it changes.
public final class AutomationService: Sendable {
    public enum Mode: String, Sendable, Hashable, Codable {
        case off, propose, migrate
    }

    public struct Settings: Sendable, Hashable {
        public var mode: Mode = .off
        public var checkInterval: Duration = .seconds(30)
        public var policy = AutomationPolicy()
        public init() {}
    }

    let settings: Settings
    let local: String
    let provider: ProviderHandle
    let migration: MigrationService
    let negotiation: NegotiationService
    let metering: MeteringService
    let audit: AuditLog
    let logger: Logger
    /// What `run` waits on between rounds; tests pass a clock they advance.
    let clock: any Clock<Duration>
    private let announced = Mutex<Set<String>>([])

    public init(
        context: BrokerContext, settings: Settings, provider: ProviderHandle, migration: MigrationService, negotiation: NegotiationService,
        metering: MeteringService, clock: any Clock<Duration> = ContinuousClock()
    ) {
        self.clock = clock
        self.settings = settings
        self.local = context.local
        self.provider = provider
        self.migration = migration
        self.negotiation = negotiation
        self.metering = metering
        self.audit = context.audit
        self.logger = context.logger
    }

    public func run() async {
        guard settings.mode != .off else { return }
        logger.info("automatic migration: \(settings.mode.rawValue), triggers \(settings.policy.triggers.map(\.rawValue).sorted().joined(separator: ", "))")
        while !Task.isCancelled {
            try? await clock.sleep(for: settings.checkInterval)
            if Task.isCancelled { break }
            await round(now: Date())
        }
    }

    /// One look at the cloud; returns what was proposed.
    @discardableResult
    public func round(now: Date) async -> [AutomationPolicy.Proposal] {
        let proposals: [AutomationPolicy.Proposal]
        do {
            let driver = try await provider.driver()
            let migrating = Set(try migration.journal.unfinished().filter { $0.role == .source }.compactMap {
                try migration.journal.sourceSnapshot($0.migrationID)?.instanceID
            })
            let instances = try await driver.listInstances().filter { !migrating.contains($0.id) }
            let destinations = try negotiation.store.agreements(state: .finalized).map(\.agreement)
                .filter { $0.consumer == local }
                .map { AutomationPolicy.Destination(agreement: $0, usage: metering.usage(agreementID: $0.id, role: .consumer, at: now)) }
            proposals = settings.policy.evaluate(
                instances: instances, sizes: try await driver.listSizes(), capacity: try await driver.capacity(),
                destinations: destinations, now: now)
        } catch {
            logger.warning("automatic migration: cannot look at the cloud: \(error)")
            return []
        }
        for proposal in proposals {
            let key = "\(proposal.instanceID)/\(proposal.trigger.rawValue)/\(proposal.peer)"
            let isNew = announced.withLock { $0.insert(key).inserted }
            if isNew || settings.mode == .migrate {
                logger.notice("automatic migration \(settings.mode == .migrate ? "starting" : "proposed"): \(proposal.instanceName) (\(proposal.instanceID)) → \(proposal.peer) under \(proposal.agreementID): \(proposal.reason)")
                _ = try? await audit.offPool.record(AuditEvent(
                    at: now, module: "broker", kind: "automation.proposal", peer: proposal.peer, action: proposal.instanceID,
                    outcome: .accepted, reason: proposal.trigger.rawValue, detail: "\(proposal.reason); agreement \(proposal.agreementID)"))
            }
            guard settings.mode == .migrate else { continue }
            do {
                let result = try await migration.migrate(instanceID: proposal.instanceID, to: proposal.peer, agreementID: proposal.agreementID)
                let completed = result.outcome == .completed
                _ = try? await audit.offPool.record(AuditEvent(
                    at: Date(), module: "broker", kind: "automation.migration", peer: proposal.peer, action: proposal.instanceID,
                    outcome: completed ? .accepted : .refused, reason: completed ? "completed" : "notCompleted",
                    detail: "migration \(result.migrationID): \(result.outcome)"))
                announced.withLock { _ = $0.remove(key) }
            } catch {
                logger.error("automatic migration of \(proposal.instanceID) failed to start: \(error)")
                _ = try? await audit.offPool.record(AuditEvent(
                    at: Date(), module: "broker", kind: "automation.migration", peer: proposal.peer, action: proposal.instanceID,
                    outcome: .refused, reason: "notStarted", detail: String("\(error)".prefix(500))))
            }
        }
        return proposals
    }
}
