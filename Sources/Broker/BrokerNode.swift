import Backup
import CatalogQueries
import Discovery
import Foundation
import GRDB
import Federation
import Logging
import Metering
import Migration
import Negotiation
import Peering
import Policy
import Providers
import ServiceLifecycle
import Storage
import Synchronization
import Transfer
import Trust
import XMPP
import XMLModel

/// One cloud's broker: an XMPP client that announces the cloud, finds peers in exchange rooms and
/// through direct peering, keeps the peer registry, and answers federation requests.
///
/// The discovery logic lives in `PeerDiscovery` (a pure state machine); this type performs its
/// actions: sending presence, writing the registry, asking peers for their features. With a
/// `[trust]` section it also announces its certificate fingerprint, handshakes with the peers it
/// sees (`BrokerTrust`) and serves signed federation requests (`SignedRequests`); without one it
/// announces no fingerprint and refuses every federation request.
public final class BrokerNode: Service, Sendable {
    public static let capsNode = "urn:intercloud:broker"
    public static let statusNamespace = Announcement.namespace

    public let configuration: BrokerConfiguration
    public let client: XMPPClient
    public let registry: PeerRegistry
    public let database: DatabasePool
    let logger: Logger
    private let discovery: Mutex<PeerDiscovery>
    /// Peers currently known to be brokers (bare JIDs), read on the loop thread by hot-path handlers.
    private let knownPeers = Mutex<Set<String>>([])
    /// Discovery's inputs in arrival order, and barriers (`discoveryCaughtUp`) among them.
    private enum DiscoveryInput: Sendable {
        case event(PeerDiscovery.Event)
        case barrier(UInt64)
    }
    /// Callers of `discoveryCaughtUp` waiting for their barrier; all let go when discovery stops.
    private let barriers = Mutex<(next: UInt64, waiting: [UInt64: CheckedContinuation<Void, Never>], stopped: Bool)>((0, [:], false))
    private let inputs: AsyncStream<DiscoveryInput>
    private let inputContinuation: AsyncStream<DiscoveryInput>.Continuation
    private let announcement: Mutex<Announcement>
    /// Certificates, handshakes and pins; nil without a `[trust]` section.
    public let trust: BrokerTrust?
    /// Federation namespaces that only accept signed envelopes from trusted peers.
    public let signed: SignedRequests
    /// Every trust decision and refused request of this broker.
    public let audit: AuditLog
    /// The catalog peers query (`urn:intercloud:catalog:0`), served through `signed`.
    public let catalog: CatalogService
    /// Catalog queries from this broker to its peers (one peer, or fan-out).
    public let catalogQueries: CatalogQuerier
    /// Contract negotiations and the agreements in force (`urn:intercloud:negotiation:0`).
    public let negotiation: NegotiationService
    /// The peer policy files' entries (empty without `[policy]`).
    public let policies: PolicySet
    /// The local cloud's driver (nil without `[provider]`).
    public let provider: ProviderHandle?
    /// Usage records, the bilateral ledger and SLA measurement (`urn:intercloud:metering:0`).
    public let metering: MeteringService
    /// Cold migration to and from peers (`urn:intercloud:migration:0`); nil without both
    /// `[provider]` and `[trust]` (the transfer channel authenticates with the broker certificate).
    public let migration: MigrationService?
    /// Service federation from server templates (`urn:intercloud:federation:0`).
    public let federation: FederationService
    /// Automatic migration by policy (`[automation]`, off by default; needs migration).
    public let automation: AutomationService?
    /// Backup policies of `[backup] policies`; those with `every` run on schedule.
    public let backupPolicies: [BackupPolicy]
    private let tasks = TaskBag()

    public static var schema: [any SchemaContributor.Type] { [
        PeerRegistry.Schema.self, TrustSchema.self, AuditSchema.self, NegotiationStore.Schema.self, MeteringSchema.self,
        MeteringStore.Schema.self, MigrationSchema.self, MigrationService.Schema.self, FederationSchema.self,
        FederationStore.Schema.self, BackupSchema.self,
    ] }

    /// - Parameters:
    ///   - clock: what the periodic loops built here wait on between rounds (automatic
    ///     migration's checks); tests pass a clock they advance instead of sleeping.
    ///   - wallClock: the time negotiation deadlines and journal entries are read from
    ///     (`BrokerContext.now`); tests pass one set ahead instead of waiting for a deadline.
    public init(
        configuration: BrokerConfiguration, logger: Logger = Logger(label: "intercloud.broker"),
        clock: any Clock<Duration> = ContinuousClock(), wallClock: @escaping @Sendable () -> Date = { Date() }
    ) throws {
        var logger = logger
        logger[metadataKey: "cloud"] = "\(configuration.broker.cloud)"
        self.configuration = configuration
        self.logger = logger
        self.database = try IntercloudDatabase.open(path: configuration.databasePath, schema: Self.schema)
        self.registry = PeerRegistry(database: database)
        self.client = XMPPClient(configuration: configuration.xmpp, logger: logger)
        // One audit log for every service: its aggregator bounds what refusal floods cost.
        self.audit = AuditLog(database: database, aggregator: RefusalAggregator(settings: configuration.audit.aggregation))
        if let settings = configuration.trust {
            trust = try BrokerTrust(
                settings: settings, ownJID: configuration.xmpp.jid, database: database, audit: audit, client: client,
                logger: logger, tasks: tasks)
        } else {
            trust = nil
            logger.warning("no [trust] section in \(configuration.sourcePath): announcing no certificate fingerprint; no peer can be trusted and every federation request will be refused (not-authorized)")
        }
        self.signed = SignedRequests(
            trust: trust?.service, audit: audit, client: client, registry: registry, logger: logger, tasks: tasks,
            sessions: configuration.trust?.sessions ?? false)
        self.catalog = CatalogService(catalog: try BrokerCatalog(configuration: configuration), audit: audit, logger: logger)
        self.catalogQueries = CatalogQuerier(signed: signed, peers: registry)
        var policies = PolicySet()
        if !configuration.policyFiles.isEmpty {
            do { policies = try PolicyLoader.load(paths: configuration.policyFiles) } catch {
                throw BrokerConfiguration.Error(path: configuration.sourcePath, message: "policy files:\n\(error)")
            }
        }
        self.policies = policies
        let context = BrokerContext(
            local: configuration.xmpp.jid.bare.description, identity: trust?.service.identity, trustStore: trust?.service.store,
            database: database, transport: signed, audit: audit, policies: policies, logger: logger, now: wallClock)
        let negotiation = NegotiationService(
            context: context, configuration: configuration.negotiation, admission: configuration.negotiationAdmission)
        self.negotiation = negotiation
        let provider = configuration.provider.map { ProviderHandle(settings: DriverSettings(kind: $0.driver, options: $0.options)) }
        self.provider = provider
        self.metering = MeteringService(
            context: context, negotiations: negotiation.store, provider: provider,
            federatedServices: FederationServiceUsage(database: database), settings: configuration.metering)
        if let provider, let trust, let settings = configuration.trust {
            let identity: TransferIdentity
            do {
                identity = try TransferIdentity(
                    certificateChainFile: URL(fileURLWithPath: settings.chainPath), privateKeyFile: URL(fileURLWithPath: settings.keyPath))
            } catch {
                throw BrokerConfiguration.Error(path: configuration.sourcePath, message: "trust.key/trust.chain unusable for the transfer channel: \(error)")
            }
            let sessions = PeerSessionWatch()
            sessions.observe(client)
            self.migration = MigrationService(
                context: context, settings: configuration.migration, provider: provider, sessions: sessions, negotiation: negotiation,
                metering: metering, trustStore: trust.service.store, identity: identity,
                region: configuration.broker.regions.first ?? configuration.broker.cloud)
        } else {
            self.migration = nil
        }
        self.federation = FederationService(
            context: context, settings: configuration.federation, provider: provider, negotiation: negotiation, metering: metering,
            catalog: BrokerFederationCatalog(catalog: catalog.catalog, queries: catalogQueries))
        if let migration, let provider {
            self.automation = AutomationService(
                context: context, settings: configuration.automation, provider: provider, migration: migration, negotiation: negotiation,
                metering: metering, clock: clock)
        } else {
            if configuration.automation.mode != .off {
                logger.warning("[automation] needs [provider] and [trust] (migration); automatic migration is off")
            }
            self.automation = nil
        }
        if !configuration.policyFiles.isEmpty {
            // With [policy], a peer may query if its policy entry or an agreement in force grants
            // `query`; without [policy] every trusted peer may query.
            catalog.setEntitlementCheck { [logger, policies] peer in
                let now = Date()
                guard case .denied(let reasons) = policies.evaluate(.query, peer: peer, now: now) else { return true }
                if negotiation.check(.query, from: peer, now: now) == .allowed { return true }
                logger.notice("catalog query from \(peer) not entitled: \(reasons.map { "\($0)" }.joined(separator: "; "))")
                return false
            }
        }
        if configuration.backup.policyPaths.isEmpty {
            backupPolicies = []
        } else {
            do { backupPolicies = try BackupPolicyLoader.load(paths: configuration.backup.policyPaths) } catch {
                throw BrokerConfiguration.Error(path: configuration.sourcePath, message: "backup policy files:\n\(error)")
            }
            if provider == nil {
                throw BrokerConfiguration.Error(path: configuration.sourcePath, message: "[backup] policies need a [provider] whose instances they back up")
            }
        }
        let known = try registry.all()
        self.discovery = Mutex(PeerDiscovery(settings: .init(
            ownJID: configuration.xmpp.jid, rooms: configuration.rooms, directPeers: configuration.directPeers,
            approvalPatterns: configuration.approvalPatterns,
            approvedPeers: known.filter { $0.subscription == "approved" }.compactMap { try? JID($0.jid) },
            pendingApprovals: known.filter { $0.subscription == "pending-approval" }.compactMap { try? JID($0.jid) })))
        (inputs, inputContinuation) = AsyncStream<DiscoveryInput>.makeStream()
        announcement = Mutex(Announcement(
            cloud: configuration.broker.cloud, regions: configuration.broker.regions,
            load: configuration.broker.load ?? 0, fingerprint: trust?.fingerprint ?? ""))
        if let known = try? registry.all() { knownPeers.withLock { $0 = Set(known.map(\.jid)) } }
    }

    /// What this broker says about itself in disco#info (XEP-0030) and caps (XEP-0115).
    public var discoInfo: DiscoInfo {
        var features = [
            DiscoInfo.infoNamespace, DiscoInfo.itemsNamespace, EntityCapabilities.namespace, Ping.namespace,
            MultiUserChat.namespace, Announcement.namespace,
        ]
        // The federation namespaces are those a service serves through the signed transport
        // (`installHandlers`): without trust they are served only to be refused, so not offered.
        if trust != nil { features += [TrustNamespace.handshake, TrustNamespace.envelope] + signed.namespaces }
        return DiscoInfo(
            identities: [.init(category: "automation", type: "intercloud-broker", name: configuration.broker.cloud)],
            features: features)
    }

    public var currentAnnouncement: Announcement { announcement.withLock { $0 } }

    public func updateFingerprint(_ fingerprint: String) {
        announcement.withLock { $0.fingerprint = fingerprint }
    }

    private func installHandlers() {
        client.servePing()
        let ownBare = configuration.xmpp.jid.bare.description
        client.setIQHandler(namespace: Self.statusNamespace, maxPayloadBytes: 1024, .immediate { [weak self] request throws(StanzaError) in
            guard let self else { throw .serviceUnavailable() }
            // Structure first: a malformed request is bad-request whoever sends it.
            guard request.type == "get" else { throw .badRequest("status is an IQ get") }
            guard let payload = request.payload, payload.name == "status", payload.elements.isEmpty, payload.attributes.isEmpty else {
                self.logger.notice("bad-request to status from \(request.fromString ?? "?"): malformed payload")
                throw .badRequest("expected an empty <status xmlns='\(Announcement.namespace)'/>")
            }
            guard let from = request.from else { throw .jidMalformed("invalid sender JID") }
            let sender = from.bare.description
            guard sender == ownBare || self.knownPeers.withLock({ $0.contains(sender) }) else {
                self.logger.notice("forbidden status request from unknown sender \(sender)")
                throw .forbidden("\(sender) is not a known peer broker")
            }
            return self.announcement.withLock { $0.element }
        })
        trust?.installHandler()
        signed.serve(namespace: FederationPing.namespace, maxPayloadBytes: 8 * 1024) { [weak self] request throws(StanzaError) in
            guard let self else { throw .serviceUnavailable() }
            let text = try FederationPing.parseRequest(request.payload)
            return FederationPing.answer(text: text, announcement: self.currentAnnouncement)
        }
        signed.serveSessions()
        catalog.install(on: signed)
        negotiation.install()
        metering.install()
        migration?.install()
        federation.install()
        // Last: what disco#info offers is what was installed above.
        let info = discoInfo
        client.serveServiceDiscovery({ info }, capsNode: Self.capsNode)
    }

    /// Sends a signed federation ping to a trusted peer broker (its full JID) and returns its
    /// verified, signed answer.
    public func federationPing(_ peer: JID, text: String = "", timeout: Duration = .seconds(10)) async throws -> FederationPing.Pong {
        let answer = try await signed.request(
            .get, to: peer, namespace: FederationPing.namespace, payload: FederationPing.request(text: text), timeout: timeout)
        return try FederationPing.parseAnswer(answer)
    }

    public func run() async throws {
        installHandlers()
        let observer = client.observe { [inputContinuation] event in
            switch event {
            case .sessionStarted: inputContinuation.yield(.event(.sessionStarted))
            case .disconnected: inputContinuation.yield(.event(.sessionLost))
            case .stanza(let stanza) where stanza.kind == .presence: inputContinuation.yield(.event(.presence(stanza)))
            default: break
            }
        }
        client.start()
        logger.info("broker for cloud \(configuration.broker.cloud) starting as \(configuration.xmpp.jid)")
        let wait = configuration.approvalWait.components
        let approvalWait = TimeInterval(wait.seconds) + TimeInterval(wait.attoseconds) / 1e18
        let registry = self.registry, inputContinuation = self.inputContinuation, logger = self.logger
        let trust = self.trust, audit = self.audit, auditSettings = configuration.audit
        let negotiation = self.negotiation, metering = self.metering, migration = self.migration
        let automation = self.automation, federation = self.federation
        // Every long-running loop is a Service of one group, so shutdown is ordered (the reverse
        // of this list: automation, which drives the others, first; the audit flush last) and
        // awaited: no loop still writes when `shutdown()` closes the database.
        let loops: [BrokerLoop] = [
            BrokerLoop("audit") {
                // Summaries of aggregated refusals go out a little after their window ends;
                // retention is applied hourly.
                var pruned = Date.distantPast
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(max(1, min(auditSettings.aggregation.window / 4, 15))))
                    let now = Date()
                    do { try await audit.offPool.flushAggregated(now: now) } catch { logger.error("audit summaries not written: \(error)") }
                    if let retention = auditSettings.retention, now.timeIntervalSince(pruned) >= 3600 {
                        pruned = now
                        do {
                            let removed = try await audit.offPool.prune(before: now.addingTimeInterval(-retention))
                            if removed > 0 { logger.info("audit retention: removed \(removed) events older than \(Int(retention / 86_400)) days") }
                        } catch { logger.error("audit retention failed: \(error)") }
                    }
                }
            },
            BrokerLoop("operator decisions") {
                while !Task.isCancelled {
                    do {
                        for (jid, decision) in try await registry.takeOperatorDecisions() {
                            logger.info("operator \(decision == .approve ? "approved" : "rejected") peering with \(jid)")
                            inputContinuation.yield(.event(decision == .approve ? .operatorApproved(jid) : .operatorRejected(jid)))
                        }
                        let expired = try registry.pendingApprovals(requestedBefore: Date() - approvalWait)
                        if !expired.isEmpty { inputContinuation.yield(.event(.pendingApprovalsExpired(expired))) }
                    } catch { logger.error("cannot read approvals: \(error)") }
                    try? await Task.sleep(for: .seconds(1))
                }
            },
            BrokerLoop("trust revalidation") {
                guard let trust else { return }
                while !Task.isCancelled {
                    try? await Task.sleep(for: trust.settings.revalidationInterval)
                    if Task.isCancelled { break }
                    await trust.reloadAnchors()
                }
            },
            BrokerLoop("inventory") { [weak self] in await self?.publishInventory() },
            BrokerLoop("negotiation") { await negotiation.run() },
            BrokerLoop("metering") { await metering.run() },
            BrokerLoop("migration") { await migration?.run() },
            BrokerLoop("federation") { await federation.run() },
            BrokerLoop("automation") { await automation?.run() },
        ]
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = loops.map {
            .init(service: $0, successTerminationBehavior: .ignore)
        }
        if let backups = try backupScheduler() { services.append(.init(service: backups, successTerminationBehavior: .ignore)) }
        let group = ServiceGroup(configuration: .init(
            // A loop with nothing to do (no provider, no trust) returns at once; the others go on.
            services: services,
            logger: logger))
        let running = Task { try await group.run() }
        for await input in inputs.cancelOnGracefulShutdown() {
            switch input {
            case .event(let event):
                let actions = discovery.withLock { $0.handle(event) }
                for action in actions { await perform(action) }
            case .barrier(let id):
                barriers.withLock { $0.waiting.removeValue(forKey: id) }?.resume()
            }
        }
        // Barriers queued behind the end are let go.
        let left = barriers.withLock { state in
            state.stopped = true
            defer { state.waiting = [:] }
            return Array(state.waiting.values)
        }
        for continuation in left { continuation.resume() }
        await group.triggerGracefulShutdown()
        do { try await running.value } catch { logger.error("a broker loop failed: \(error)") }
        client.removeObserver(observer)
        await shutdown()
    }

    /// Returns once every discovery input that arrived before this call (presences, session
    /// events, operator decisions) has been handled and its actions performed (registry written,
    /// presence sent). Tests use it to show that something did not happen, instead of waiting.
    public func discoveryCaughtUp() async {
        await withCheckedContinuation { continuation in
            let id = barriers.withLock { state -> UInt64? in
                guard !state.stopped else { return nil }
                state.next += 1
                state.waiting[state.next] = continuation
                return state.next
            }
            guard let id else { return continuation.resume() }
            if case .terminated = inputContinuation.yield(.barrier(id)) {
                barriers.withLock { $0.waiting.removeValue(forKey: id) }?.resume()
            }
        }
    }

    /// The service that runs `[backup]` policies on their schedules, or nil without any.
    private func backupScheduler() throws -> BackupScheduler? {
        guard let provider, !backupPolicies.isEmpty else { return nil }
        let settings = configuration.backup, database = database, audit = audit
        var backupLogger = logger
        backupLogger[metadataKey: "module"] = "backup"
        let runnerLogger = backupLogger
        return BackupScheduler(
            policies: backupPolicies, checkInterval: settings.checkInterval, lockPath: configuration.databasePath + ".backups.lock",
            logger: backupLogger
        ) {
            BackupRunner(
                driver: try await provider.driver(), journal: BackupJournal(database: database),
                configuration: .init(staging: URL(fileURLWithPath: settings.staging)), audit: audit, logger: runnerLogger)
        }
    }

    /// With a `[provider]`, publishes the driver's inventory (sizes with prices, images, free
    /// capacity) in the catalog now and every refresh interval. A driver that cannot be reached is
    /// reported and tried again at the next interval; the broker keeps serving meanwhile.
    private func publishInventory() async {
        guard let provider, let settings = configuration.provider else { return }
        var published = false
        while !Task.isCancelled {
            do {
                let driver = try await provider.driver()
                let count = try await BrokerInventory.refresh(
                    from: driver, into: catalog.catalog.store, cloud: catalog.catalog.cloudIRI,
                    regions: configuration.broker.regions, now: Date())
                if !published { logger.info("published \(settings.driver) inventory in the catalog (\(count) triples)") }
                published = true
            } catch {
                logger.error("provider \(settings.driver): inventory not published: \(error)")
            }
            try? await Task.sleep(for: settings.refresh)
        }
    }

    /// Leaves the rooms, sends unavailable presence, closes the database.
    private func shutdown() async {
        logger.info("shutting down: leaving rooms and going offline")
        for room in configuration.rooms {
            if let leave = try? MultiUserChat.leavePresence(room: room, nickname: configuration.nickname) { client.send(leave) }
        }
        // Handshakes and requests still running finish (or see cancellation) before the database closes.
        await tasks.close()
        await client.stop()
        try? await registry.allOffline()
        // Refusals still counted in open windows are written before the database closes.
        _ = try? await audit.offPool.drainAggregated()
        // Last write: the replay window's run ended cleanly (its nonces are durable with it).
        do { try trust?.service.endRun() } catch { logger.error("replay window not closed cleanly: \(error)") }
        trust?.service.close()
        try? database.close()
        logger.info("stopped")
    }

    private func presenceExtensions() -> [XMLElement] {
        [EntityCapabilities.element(node: Self.capsNode, info: discoInfo), announcement.withLock { $0.element }]
    }

    /// Performs one discovery action. Registry and audit writes are awaited (their commits wait on
    /// GRDB's writer queue, not on a cooperative thread), and actions run one at a time in order,
    /// so a row is written before anything that follows it is sent.
    private func perform(_ action: PeerDiscovery.Action) async {
        let now = Date()
        do {
            switch action {
            case .announce:
                client.send(Stanza.presence(children: presenceExtensions()))
            case .joinRoom(let room):
                logger.info("joining exchange room \(room)")
                client.send(try MultiUserChat.joinPresence(room: room, nickname: configuration.nickname, extensions: presenceExtensions()))
            case .subscribe(let jid):
                client.send(Stanza.presence(type: "subscribe", to: jid))
            case .approveSubscription(let jid):
                logger.info("approving peering request from \(jid)")
                try await registry.setSubscription(jid, "approved", now: now)
                client.send(Stanza.presence(type: "subscribed", to: jid))
            case .peerSeen(let observation):
                let isNew = try registry.peer(observation.jid)?.online != true
                try await registry.seen(observation, now: now)
                knownPeers.withLock { _ = $0.insert(observation.jid.description) }
                if isNew {
                    logger.info("peer \(observation.jid) (cloud \(observation.announcement.cloud)) online via \(observation.via)")
                }
                trust?.peerSeen(
                    observation.jid, fullJID: observation.fullJID, fingerprint: observation.announcement.fingerprint,
                    cameOnline: isNew)
            case .peerOffline(let jid):
                try await registry.offline(jid, now: now)
                logger.info("peer \(jid) offline")
            case .allPeersOffline:
                try await registry.allOffline()
            case .declineSubscription(let jid, let reason):
                logger.notice("peering request from \(jid) declined: \(reason)")
                // Audited first: once the row is gone, the decision must already be on record.
                _ = try? await audit.offPool.record(AuditEvent(
                    at: now, module: "broker", kind: "peering.request", peer: jid.description, action: "subscribe",
                    outcome: .refused, reason: "declined", detail: reason))
                try await registry.clearPendingApproval(jid)
                client.send(Stanza.presence(type: "unsubscribed", to: jid))
            case .recordPendingApproval(let jid):
                logger.notice("peering request from \(jid) waits for approval: intercloud peers approve \(jid) --config \(configuration.sourcePath)")
                try await registry.setSubscription(jid, "pending-approval", now: now)
            case .queryFeatures(let full):
                Task { [client, inputContinuation, logger] in
                    do {
                        let info = try await client.discoverInfo(of: full)
                        let ver = EntityCapabilities.verificationString(for: info)
                        inputContinuation.yield(.event(.featuresDiscovered(capsVer: ver, peer: full, features: info.features)))
                    } catch {
                        logger.warning("disco#info to \(full) failed: \(error)")
                    }
                }
            case .rejoinRoom(let room, let delay, let attempt):
                let presence = try MultiUserChat.joinPresence(room: room, nickname: configuration.nickname, extensions: presenceExtensions())
                Task { [client, logger] in
                    try? await Task.sleep(for: delay)
                    logger.info("joining exchange room \(room) again (attempt \(attempt + 1))")
                    client.send(presence)
                }
            case .configureRoom(let room):
                logger.info("created exchange room \(room); configuring it")
                Task { [client, logger] in
                    do {
                        _ = try await client.iq(.set, to: room, payload: MultiUserChat.exchangeRoomConfiguration())
                    } catch {
                        logger.warning("configuring room \(room) failed: \(error)")
                    }
                }
            case .storeFeatures(let jid, let features):
                try await registry.storeFeatures(jid, features: features)
            case .refused(let from, let reason, let stranger):
                // Audited through the aggregator: a flood of presences costs one row per sender
                // and window, and the log says so once per window too.
                let written = try await audit.offPool.refused(
                    module: "discovery", kind: stranger ? "discovery.stranger" : "discovery.presence", peer: from,
                    action: "presence", reason: stranger ? "stranger" : "ignored", detail: reason, at: now)
                if written != nil { logger.notice("ignored presence from \(from): \(reason) (repeats are counted, audited once per window)") }
            }
        } catch {
            logger.error("registry write failed for \(action): \(error)")
        }
    }
}

/// One of the broker's long-running loops as a swift-service-lifecycle `Service`: it runs until
/// the group shuts down gracefully, which cancels it (the loops watch `Task.isCancelled`).
struct BrokerLoop: Service, CustomStringConvertible {
    let description: String
    let body: @Sendable () async -> Void

    init(_ name: String, _ body: @escaping @Sendable () async -> Void) {
        description = name
        self.body = body
    }

    func run() async throws {
        await cancelWhenGracefulShutdown { await body() }
    }
}
