import Foundation
import GRDB
import Logging
import Negotiation
import Peering
import Policy
import Providers
import Storage
import Trust
import XMPP
import XMLModel

/// Metering between brokers (`urn:intercloud:metering:0`, in signed envelopes):
///
/// - **Provider.** Samples its driver for every FINALIZED agreement in which it is the provider
///   (`sample(now:)`): the state of each workload placed under the agreement, bytes stored, and an
///   availability sample. When a metering period ends (`closePeriods(now:)`), it integrates the
///   samples into a `UsageRecord`, signs its canonical bytes, stores it in the ledger as
///   `proposed`, and sends it to the consumer; the answer (countersignature or dispute) settles the
///   ledger entry. Unsettled records are sent again at every round until the consumer answers.
///   SLA breaches measured over the period are stored with it.
/// - **Consumer.** Checks the record (canonical encoding, its own agreement with the sender, the
///   provider's signature against the pinned certificate), builds its own record for the same
///   period from what it placed at the provider and transferred there, reconciles the two
///   (`Reconciliation`), and countersigns or disputes with reasons; both go to its own ledger
///   before the answer leaves, and disputes are audited.
///
/// Bytes transferred are summed per period from each side's transfer log rather than read from a
/// counter at sample times: a counter read at the next sample would move bytes transferred just
/// before a period's end into the next period on the provider's side only.
/// What metering needs to know about federated services, which service federation keeps: the
/// calls to bill and whether an agreement has services to call at all (a consumer refuses call
/// charges under an agreement it federated nothing under). Broker composes it from Federation's
/// store, so metering does not depend on federation, which reports its placements to metering.
public protocol FederatedServiceUsage: Sendable {
    /// Calls with valid credentials to services provided under the agreement during `period`.
    func validCalls(agreementID: String, in period: MeteringPeriod) throws -> Int64
    /// Whether this broker consumes a service under the agreement.
    func consumesServices(agreementID: String) throws -> Bool
}

public actor MeteringService {
    /// Journal writes wait for their fsync on the storage thread, not on a cooperative one.
    public nonisolated var unownedExecutor: UnownedSerialExecutor { StorageExecutor.shared.asUnownedSerialExecutor() }

    public struct Settings: Sendable, Hashable {
        public var sampleInterval: TimeInterval
        public var periodSeconds: TimeInterval
        public var tolerance: ReconciliationTolerance
        /// Consumer side: the most calls per second of a period it accepts being billed for.
        public var maxCallsPerSecond: Int64

        public init(
            sampleInterval: TimeInterval = 60, periodSeconds: TimeInterval = 3600, tolerance: ReconciliationTolerance = .standard,
            maxCallsPerSecond: Int64 = 1000
        ) {
            self.sampleInterval = sampleInterval
            self.periodSeconds = periodSeconds
            self.tolerance = tolerance
            self.maxCallsPerSecond = maxCallsPerSecond
        }
    }

    public static let namespace = "urn:intercloud:metering:0"

    public nonisolated let store: MeteringStore
    public nonisolated let ledger: UsageLedger
    nonisolated let local: String
    let identity: BrokerIdentity?
    let trustStore: TrustStore?
    let negotiations: NegotiationStore
    let transport: any SignedTransport
    let audit: AuditLog
    let provider: ProviderHandle?
    let federatedServices: any FederatedServiceUsage
    public nonisolated let settings: Settings
    let logger: Logger

    public init(
        context: BrokerContext, negotiations: NegotiationStore, provider: ProviderHandle?, federatedServices: any FederatedServiceUsage,
        settings: Settings
    ) {
        self.local = context.local
        self.identity = context.identity
        self.trustStore = context.trustStore
        self.store = MeteringStore(database: context.database)
        self.ledger = UsageLedger(database: context.database)
        self.negotiations = negotiations
        self.transport = context.transport
        self.audit = context.audit
        self.provider = provider
        self.federatedServices = federatedServices
        self.settings = settings
        self.logger = context.logger
    }

    public nonisolated func install() {
        transport.serve(namespace: Self.namespace, maxPayloadBytes: 64 * 1024) { [self] request throws(StanzaError) in
            try await self.handle(request)
        }
    }

    /// Samples, closes elapsed periods and resends unsettled records every `sampleInterval`.
    public func run() async {
        while !Task.isCancelled {
            let now = Date()
            await sample(now: now)
            await closePeriods(now: now)
            try? await Task.sleep(for: .milliseconds(Int64(settings.sampleInterval * 1000)))
        }
    }

    // MARK: agreements

    /// FINALIZED agreements in which this broker is `role`.
    func agreements(as role: LedgerRole) -> [Agreement] {
        let stored = (try? negotiations.agreements(state: .finalized)) ?? []
        return stored.map(\.agreement).filter { role == .provider ? $0.provider == local : $0.consumer == local }
    }

    /// Resources placed under the agreement at `date` (what quota checks count as used).
    public nonisolated func usage(agreementID: String, role: LedgerRole, at date: Date) -> ResourceAmount {
        let active = ((try? store.placements(agreementID: agreementID, role: role)) ?? [])
            .filter { $0.placedAt <= date && ($0.removedAt.map { date < $0 } ?? true) }
        return ResourceAmount(
            instances: active.count, vcpu: active.reduce(0) { $0 + $1.vcpu },
            memoryGiB: active.reduce(Decimal(0)) { $0 + $1.memoryGiB },
            storageGiB: active.reduce(Decimal(0)) { $0 + Decimal($1.diskBytes) / 1_073_741_824 })
    }

    // MARK: provider: sampling

    /// One observation (and availability sample) per agreement in force with workloads placed.
    public func sample(now: Date) async {
        for agreement in agreements(as: .provider) {
            guard let placements = try? store.placements(agreementID: agreement.id, role: .provider) else { continue }
            let active = placements.filter { $0.placedAt <= now && ($0.removedAt.map { now < $0 } ?? true) }
            if active.isEmpty, placements.isEmpty { continue }
            var instances: [ObservedInstance] = []
            var reachable = true
            if let provider, !active.isEmpty {
                do {
                    let driver = try await provider.driver()
                    let states = Dictionary(try await driver.listInstances().map { ($0.id, $0.state) }, uniquingKeysWith: { first, _ in first })
                    for placement in active {
                        let state = states[placement.instanceID].flatMap { MeteredInstanceState(rawValue: $0.rawValue) } ?? .terminated
                        instances.append(ObservedInstance(
                            id: placement.instanceID, instanceType: placement.instanceType, vcpu: placement.vcpu,
                            memoryGiB: placement.memoryGiB, state: state))
                    }
                } catch {
                    reachable = false
                    logger.warning("metering: provider driver unreachable: \(error)")
                    instances = active.map {
                        ObservedInstance(id: $0.instanceID, instanceType: $0.instanceType, vcpu: $0.vcpu, memoryGiB: $0.memoryGiB, state: .unknown)
                    }
                }
            }
            let stored = UInt64(active.reduce(Int64(0)) { $0 + $1.diskBytes })
            let observation = UsageObservation(
                time: now, agreementID: agreement.id, instances: instances,
                bytesTransferred: (try? store.transferred(agreementID: agreement.id, role: .provider, upTo: now)) ?? 0, bytesStored: stored)
            do {
                try store.addObservation(observation)
                let up = reachable && !instances.contains { $0.state == .error }
                try store.addAvailability(agreementID: agreement.id, AvailabilitySample(time: now, isUp: up))
            } catch {
                logger.error("metering: cannot store a sample for \(agreement.id): \(error)")
            }
        }
    }

    // MARK: provider: records

    /// The metering periods of `agreement` that have ended by `now`, aligned to its start.
    func elapsedPeriods(of agreement: Agreement, now: Date) -> [MeteringPeriod] {
        guard let start = agreement.terms.period.from ?? Optional(agreement.createdAt) else { return [] }
        var periods: [MeteringPeriod] = []
        var from = start
        let end = min(now, agreement.terms.period.until ?? now)
        while from.addingTimeInterval(settings.periodSeconds) <= end, periods.count < 10_000 {
            let until = from.addingTimeInterval(settings.periodSeconds)
            periods.append(MeteringPeriod(from: from, until: until))
            from = until
        }
        return periods
    }

    /// Closes every elapsed period not yet recorded, and sends every unsettled record again.
    @discardableResult
    public func closePeriods(now: Date) async -> [LedgerEntry] {
        var entries: [LedgerEntry] = []
        for agreement in agreements(as: .provider) {
            // Periods are recorded from the first activity under the agreement on: a workload
            // placed or bytes transferred (a migration's transfer precedes its placement).
            let placements = (try? store.placements(agreementID: agreement.id, role: .provider)) ?? []
            let firstTransfer = try? store.firstTransfer(agreementID: agreement.id, role: .provider)
            guard let firstPlaced = (placements.map(\.placedAt) + [firstTransfer].compactMap { $0 }).min() else { continue }
            let recorded = (try? ledger.entries(peer: agreement.consumer, overlapping: MeteringPeriod(from: .distantPast, until: .distantFuture)))?
                .filter { $0.key.agreementID == agreement.id && $0.role == .provider } ?? []
            for period in elapsedPeriods(of: agreement, now: now) where period.until > firstPlaced {
                if let existing = recorded.first(where: { $0.period == period }) {
                    if existing.state == .proposed, let settled = try? await send(existing, agreement: agreement) { entries.append(settled) }
                    continue
                }
                if let entry = try? await closePeriod(agreement: agreement, period: period, now: now) { entries.append(entry) }
            }
        }
        return entries
    }

    /// Integrates, signs, stores and sends the record of one period (or resends the stored one).
    public func closePeriod(agreementID: String, period: MeteringPeriod, now: Date) async throws -> LedgerEntry {
        guard let agreement = agreements(as: .provider).first(where: { $0.id == agreementID }) else {
            throw MeteringFailure("no agreement \(agreementID) in force with this broker as provider")
        }
        return try await closePeriod(agreement: agreement, period: period, now: now)
    }

    func closePeriod(agreement: Agreement, period: MeteringPeriod, now: Date) async throws -> LedgerEntry {
        guard let identity else { throw MeteringFailure("this broker has no [trust] identity to sign usage records") }
        if let existing = try ledger.entries(peer: agreement.consumer, overlapping: period)
            .first(where: { $0.key.agreementID == agreement.id && $0.role == .provider && $0.period == period })
        {
            return existing.state == .proposed ? try await send(existing, agreement: agreement) : existing
        }
        let observations = try store.observations(agreementID: agreement.id, from: period.from, until: period.until)
        var meter = UsageMeter(agreementID: agreement.id, period: period)
        try meter.observe(observations)
        var record = try meter.record(
            provider: local, consumer: agreement.consumer, sequence: try ledger.nextSequence(agreementID: agreement.id, provider: local),
            createdAt: now)
        record.usage.bytesTransferred = try transferredInPeriod(agreement.id, role: .provider, period)
        record.usage.calls = try federatedServices.validCalls(agreementID: agreement.id, in: period)
        try record.validate()
        let signature = try identity.sign(record.canonicalBytes())
        let entry = try ledger.propose(record, providerSignature: signature, role: .provider, at: now)
        recordBreaches(agreement: agreement, period: period, now: now)
        logger.info("metering: usage record \(entry.key) for \(period) proposed to \(agreement.consumer)")
        return (try? await send(entry, agreement: agreement)) ?? entry
    }

    private func transferredInPeriod(_ agreementID: String, role: LedgerRole, _ period: MeteringPeriod) throws -> Decimal {
        let before = try store.transferred(agreementID: agreementID, role: role, upTo: period.from.addingTimeInterval(-0.000_001))
        let through = try store.transferred(agreementID: agreementID, role: role, upTo: period.until.addingTimeInterval(-0.000_001))
        return Decimal(through - before)
    }

    private func recordBreaches(agreement: Agreement, period: MeteringPeriod, now: Date) {
        guard let samples = try? store.availability(agreementID: agreement.id, from: period.from, until: period.until) else { return }
        var monitor = SLAMonitor(stalenessLimit: settings.sampleInterval * 3)
        for sample in samples { monitor.record(sample, agreementID: agreement.id) }
        for breach in monitor.breaches(agreementID: agreement.id, period: period, serviceLevel: agreement.terms.sla) {
            logger.notice("SLA breach under \(agreement.id): \(breach.detail)")
            try? ledger.recordBreach(breach, at: now)
        }
    }

    /// Records a migration's downtime against the agreement's SLA (a breach when above the maximum).
    public func recordMigrationDowntime(agreementID: String, migrationID: String, from: Date, until: Date) {
        guard let agreement = agreements(as: .provider).first(where: { $0.id == agreementID })
            ?? agreements(as: .consumer).first(where: { $0.id == agreementID })
        else { return }
        var monitor = SLAMonitor()
        monitor.record(MigrationDowntime(migrationID: migrationID, from: from, until: until), agreementID: agreementID)
        let period = MeteringPeriod(from: from, until: until.addingTimeInterval(1))
        for breach in monitor.breaches(agreementID: agreementID, period: period, serviceLevel: agreement.terms.sla) where breach.kind == .migrationDowntime {
            try? ledger.recordBreach(breach, at: Date())
        }
    }

    /// Sends a proposed record and settles it with the consumer's answer.
    private func send(_ entry: LedgerEntry, agreement: Agreement) async throws -> LedgerEntry {
        let payload = MeteringWire.usage(record: entry.canonicalBytes, signature: entry.providerSignature)
        let answer = try await transport.request(.set, to: try JID(agreement.consumer), namespace: Self.namespace, payload: payload, timeout: .seconds(10))
        let now = Date()
        switch try MeteringWire.parseAnswer(answer) {
        case .countersigned(let signature):
            guard let leaf = try? trustStore?.pin(for: agreement.consumer)?.leaf(),
                DetachedSignature.isValid(signature, for: entry.canonicalBytes, signedBy: leaf)
            else { throw MeteringFailure("the countersignature of \(entry.key) does not verify with \(agreement.consumer)'s pinned certificate") }
            logger.info("metering: \(entry.key) countersigned by \(agreement.consumer)")
            return try ledger.countersign(entry.key, consumerSignature: signature, at: now)
        case .disputed(let reasons):
            logger.notice("metering: \(entry.key) disputed by \(agreement.consumer): \(reasons.joined(separator: "; "))")
            return try ledger.dispute(entry.key, reasons: reasons, at: now)
        }
    }

    // MARK: consumer

    func handle(_ request: SignedRequest) async throws(StanzaError) -> [UInt8] {
        let now = Date()
        guard request.type == .set else { throw refuse(request.peer, "malformed", "IQ get", .badRequest("usage records are IQ sets")) }
        let parsed: (record: [UInt8], signature: [UInt8])
        do { parsed = try MeteringWire.parseUsage(request.payload) } catch {
            throw refuse(request.peer, "malformed", "\(error)", .badRequest("\(error)"))
        }
        let record: UsageRecord
        do { record = try UsageRecord(canonicalBytes: parsed.record) } catch {
            throw refuse(request.peer, "malformed", "\(error)", .badRequest("not a canonical usage record: \(error)"))
        }
        guard record.provider == request.peer, record.consumer == local else {
            throw refuse(request.peer, "wrongParties", "\(record.provider) → \(record.consumer)", .forbidden("the record is not between \(request.peer) and \(local)"))
        }
        guard let agreement = agreements(as: .consumer).first(where: { $0.id == record.agreementID && $0.provider == request.peer }) else {
            throw refuse(request.peer, "unknownAgreement", record.agreementID, .itemNotFound("no agreement \(record.agreementID) in force with \(request.peer)"))
        }
        guard let leaf = try? trustStore?.pin(for: request.peer)?.leaf(), DetachedSignature.isValid(parsed.signature, for: parsed.record, signedBy: leaf)
        else { throw refuse(request.peer, "badSignature", record.key.description, .notAcceptable("the provider signature does not verify")) }
        guard let identity else { throw .serviceUnavailable("this broker cannot countersign") }
        // The provider's word is checked against what was agreed before anything is stored.
        do {
            let settled = try ledger.entries(peer: request.peer, overlapping: record.period, state: .countersigned)
                .filter { $0.key.agreementID == agreement.id && $0.key != record.key }.map(\.period)
            let hasServices = try federatedServices.consumesServices(agreementID: agreement.id)
            try UsageRecordAdmission(periodSeconds: Int64(settings.periodSeconds), maxCallsPerSecond: settings.maxCallsPerSecond)
                .check(record, .init(agreement: agreement, countersignedPeriods: settled, hasFederatedServices: hasServices))
        } catch let refusal as UsageRecordAdmission.Refusal {
            throw refuse(request.peer, refusal.code, refusal.detail, .notAcceptable(refusal.detail))
        } catch {
            logger.error("metering: cannot check \(record.key): \(error)")
            throw .internalServerError("cannot check the usage record")
        }
        do {
            let entry = try ledger.propose(record, providerSignature: parsed.signature, role: .consumer, at: now)
            switch entry.state {
            case .countersigned: return MeteringWire.countersigned(signature: entry.consumerSignature ?? [])
            case .disputed: return MeteringWire.disputed(reasons: entry.disputeReasons)
            case .proposed: break
            }
            let own = try ownRecord(agreement: agreement, period: record.period, sequence: record.sequence, createdAt: record.createdAt)
            switch Reconciliation(tolerance: settings.tolerance).reconcile(provider: record, own: own) {
            case .countersign:
                let signature = try identity.sign(parsed.record)
                _ = try ledger.countersign(record.key, consumerSignature: signature, at: now)
                logger.info("metering: countersigned \(record.key) from \(request.peer)")
                return MeteringWire.countersigned(signature: signature)
            case .dispute(let reasons):
                let bounded = Array(reasons.prefix(UsageLedger.maximumDisputeReasons)).map { String($0.prefix(1000)) }
                _ = try ledger.dispute(record.key, reasons: bounded, at: now)
                logger.notice("metering: disputed \(record.key) from \(request.peer): \(bounded.joined(separator: "; "))")
                _ = try? audit.refused(
                    module: "broker", kind: "metering.record", peer: request.peer, action: Self.namespace, reason: "usageDisputed",
                    detail: String(bounded.joined(separator: "; ").prefix(500)), at: now)
                return MeteringWire.disputed(reasons: bounded)
            }
        } catch let error as LedgerError {
            throw refuse(request.peer, "ledgerRefused", "\(error)", .notAcceptable("\(error)"))
        } catch {
            logger.error("metering: cannot settle \(record.key): \(error)")
            throw .internalServerError("cannot store the usage record")
        }
    }

    /// The consumer's own view of a period: what it placed at the provider (assumed running while
    /// placed), its disk bytes stored there, and what it transferred there.
    func ownRecord(agreement: Agreement, period: MeteringPeriod, sequence: Int64, createdAt: Date) throws -> UsageRecord {
        let placements = try store.placements(agreementID: agreement.id, role: .consumer)
        var times = Set([period.from])
        for placement in placements {
            if period.contains(placement.placedAt) { times.insert(placement.placedAt) }
            if let removed = placement.removedAt, period.contains(removed) { times.insert(removed) }
        }
        let observations = times.sorted().map { time in
            let active = placements.filter { $0.placedAt <= time && ($0.removedAt.map { time < $0 } ?? true) }
            return UsageObservation(
                time: time, agreementID: agreement.id,
                instances: active.map {
                    ObservedInstance(id: $0.instanceID, instanceType: $0.instanceType, vcpu: $0.vcpu, memoryGiB: $0.memoryGiB, state: .running)
                },
                bytesTransferred: 0, bytesStored: UInt64(active.reduce(Int64(0)) { $0 + $1.diskBytes }))
        }
        var meter = UsageMeter(agreementID: agreement.id, period: period)
        try meter.observe(observations)
        var record = try meter.record(provider: agreement.provider, consumer: local, sequence: sequence, createdAt: createdAt)
        record.usage.bytesTransferred = try transferredInPeriod(agreement.id, role: .consumer, period)
        return record
    }

    private func refuse(_ peer: String, _ reason: String, _ detail: String, _ error: StanzaError) -> StanzaError {
        logger.notice("refused usage record from \(peer): \(reason): \(detail)")
        _ = try? audit.refused(
            module: "broker", kind: "metering.record", peer: peer, action: Self.namespace, reason: reason, detail: String(detail.prefix(500)),
            at: Date())
        return error
    }
}

struct MeteringFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// `<usage xmlns='urn:intercloud:metering:0' record='BASE64' signature='BASE64'/>`, answered by
/// `<countersigned signature='BASE64'/>` or `<disputed><reason>…</reason>…</disputed>`. The record's
/// canonical bytes travel base64-encoded so that no XML whitespace handling can change what was signed.
public enum MeteringWire {
    public enum Answer: Sendable, Equatable {
        case countersigned([UInt8])
        case disputed([String])
    }

    struct Malformed: Error, CustomStringConvertible {
        var description: String
    }

    public static func usage(record: [UInt8], signature: [UInt8]) -> [UInt8] {
        Array(XMLElement(
            "usage", namespace: MeteringService.namespace,
            attributes: ["record": Data(record).base64EncodedString(), "signature": Data(signature).base64EncodedString()]
        ).serialized().utf8)
    }

    public static func parseUsage(_ bytes: [UInt8]) throws -> (record: [UInt8], signature: [UInt8]) {
        guard let element = try? XMLElement.parse(String(decoding: bytes, as: UTF8.self), maxBytes: 64 * 1024),
            element.name == "usage", element.namespace == MeteringService.namespace, element.elements.isEmpty,
            let record = element[attribute: "record"].flatMap({ Data(base64Encoded: $0) }),
            let signature = element[attribute: "signature"].flatMap({ Data(base64Encoded: $0) }),
            record.count <= Metering.maximumRecordBytes, signature.count <= UsageLedger.maximumSignatureBytes
        else { throw Malformed(description: "expected <usage xmlns='\(MeteringService.namespace)' record='BASE64' signature='BASE64'/>") }
        return (Array(record), Array(signature))
    }

    public static func countersigned(signature: [UInt8]) -> [UInt8] {
        Array(XMLElement("countersigned", namespace: MeteringService.namespace, attributes: ["signature": Data(signature).base64EncodedString()]).serialized().utf8)
    }

    public static func disputed(reasons: [String]) -> [UInt8] {
        Array(XMLElement(
            "disputed", namespace: MeteringService.namespace, attributes: [:],
            elements: reasons.map { XMLElement("reason", text: $0) }
        ).serialized().utf8)
    }

    public static func parseAnswer(_ bytes: [UInt8]) throws -> Answer {
        guard let element = try? XMLElement.parse(String(decoding: bytes, as: UTF8.self), maxBytes: 256 * 1024),
            element.namespace == MeteringService.namespace
        else { throw Malformed(description: "unexpected metering answer") }
        switch element.name {
        case "countersigned":
            guard let signature = element[attribute: "signature"].flatMap({ Data(base64Encoded: $0) }), !signature.isEmpty else {
                throw Malformed(description: "countersignature missing")
            }
            return .countersigned(Array(signature))
        case "disputed":
            let reasons = element.children(named: "reason").map(\.text).filter { !$0.isEmpty }
            guard !reasons.isEmpty else { throw Malformed(description: "dispute without reasons") }
            return .disputed(Array(reasons.prefix(UsageLedger.maximumDisputeReasons)))
        default:
            throw Malformed(description: "unexpected metering answer <\(element.name)>")
        }
    }
}
