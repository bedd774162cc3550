import Catalog
import Foundation
import GRDB
import Logging
import Metering
import Negotiation
import Peering
import Policy
import Providers
import Storage
import Synchronization
import Trust
import XMPP

/// The catalog as service federation uses it: this broker's templates are published in it, and a
/// peer's catalog is asked for the size of a template before selecting it. Broker implements it
/// with its catalog service and catalog queries.
public protocol FederationCatalog: Sendable {
    /// The IRI naming this cloud in its catalog.
    var cloudIRI: IRI { get }
    /// Replaces a named graph of this broker's catalog as a whole.
    func replaceGraph(_ graph: IRI, with triples: [Triple])
    /// Sends a signed SPARQL query to a peer and returns its verified answer.
    func query(_ sparql: String, peer: JID) async throws -> QueryResult
}

/// Service federation between brokers (`urn:intercloud:federation:0`, in signed envelopes).
///
/// - **Provider.** Imports the server templates of `[federation] templates`, publishes them in the
///   catalog (named graph `templatesGraph`, replaced as a whole), and answers peers' `select`:
///   the named agreement must be a FINALIZED one this broker provides to the peer, the template
///   must exist and accept the parameters, and the agreement (`AgreementRule`: period,
///   entitlement `federate`, quota with what is placed or being provisioned under it, instance
///   types) and the policy file must allow the template's size. Then the Federation module's
///   runner provisions it through the driver (journaled), metering records the placement (role
///   provider), and the answer carries endpoint, interface description and short-lived
///   credentials. `status`, `renew` and `teardown` are answered for the consumer that selected the
///   service only; services end with their agreement (`tick`). Every refusal is audited before its
///   stanza error leaves, and changes nothing.
/// - **Consumer.** `select(peer:templateName:...)` looks the template up in the peer's catalog
///   (for its size), sends `select`, stores the service (endpoint, expiry, never the token) and
///   records its own placement (role consumer); `status`, `renew`, `teardown` follow.
/// - **Calls.** `validateCall(serviceID:token:)` checks credentials presented to a provided service
///   and counts the call per service in SQLite (`FederationStore.callCount`).
///
/// Operators ask from the CLI (`intercloud federate`, `intercloud services`): requests are queued
/// in the database and the running broker performs them (`run()`), like migrations.
public final class FederationService: Sendable {
    /// `[federation]` of the broker configuration.
    public struct Settings: Sendable, Hashable {
        /// Template files or folders (resolved paths).
        public var templatePaths: [String]
        /// How long issued credentials hold before `renew` (seconds).
        public var credentialTTL: TimeInterval
        /// How long an instance may take to run before the select fails (seconds).
        public var bootTimeout: TimeInterval
        /// Wait between retries of a failed teardown (seconds).
        public var teardownRetryInterval: TimeInterval
        /// How often the driver is asked whether a starting instance runs.
        public var pollInterval: Duration
        /// Where the call gate listens (`FederationCallGate`), or nil for none.
        public var callGate: CallGateAddress?

        public struct CallGateAddress: Sendable, Hashable {
            /// An IPv4 or IPv6 literal.
            public var host: String
            /// 0: a free port, chosen when it opens.
            public var port: UInt16
            public init(host: String, port: UInt16) {
                self.host = host
                self.port = port
            }
        }

        public init(
            templatePaths: [String] = [], credentialTTL: TimeInterval = 900, bootTimeout: TimeInterval = 300,
            teardownRetryInterval: TimeInterval = 30, pollInterval: Duration = .milliseconds(200)
        ) {
            self.templatePaths = templatePaths
            self.credentialTTL = credentialTTL
            self.bootTimeout = bootTimeout
            self.teardownRetryInterval = teardownRetryInterval
            self.pollInterval = pollInterval
        }
    }

    /// A request to a peer failed: its stanza error, or why its answer was unusable.
    public struct RequestError: Error, Sendable, CustomStringConvertible {
        public var description: String
        /// The peer's stanza error condition (`forbidden`, `item-not-found`, ...), when it sent one.
        public var condition: String?
        public init(_ description: String, condition: String? = nil) {
            self.description = description
            self.condition = condition
        }
    }

    public static let namespace = FederationMessage.namespace
    /// The catalog graph holding this broker's templates (query it with `GRAPH ?g { ... }` or by name).
    public static let templatesGraph = IRI("urn:intercloud:graph:templates")
    static let maxPayloadBytes = FederationMessage.maximumEncodedBytes * 2

    public let journal: FederationJournal
    public let database: DatabasePool
    public let settings: Settings
    let local: String
    let provider: ProviderHandle?
    let transport: any SignedTransport
    let negotiation: NegotiationService
    let metering: MeteringService
    let policies: PolicySet
    let audit: AuditLog
    let catalog: any FederationCatalog
    let logger: Logger
    /// Counts checked calls (`validateCall`) with group commits.
    let calls: FederationStore.CallCounter
    private let runnerState = Mutex<FederationRunner?>(nil)
    private let gate = Mutex<FederationCallGate?>(nil)
    /// Names, sizes and modification times of the template files last read: a change means reload.
    private let templateFingerprint = Mutex<String?>(nil)
    /// Demand of selects being checked or provisioned, by service id: counted as used by quota
    /// checks, so two concurrent selects cannot both fit into the last free share.
    private let pending = Mutex<[String: (agreementID: String, demand: ResourceAmount)]>([:])

    /// Builds the service from the broker's context, its negotiation and metering, and the catalog.
    public init(
        context: BrokerContext, settings: Settings, provider: ProviderHandle?, negotiation: NegotiationService, metering: MeteringService,
        catalog: any FederationCatalog
    ) {
        self.local = context.local
        self.settings = settings
        self.provider = provider
        self.database = context.database
        self.journal = FederationJournal(database: context.database)
        self.calls = FederationStore.CallCounter(database: context.database)
        self.transport = context.transport
        self.negotiation = negotiation
        self.metering = metering
        self.policies = context.policies
        self.audit = context.audit
        self.catalog = catalog
        self.logger = context.logger
    }

    /// Whether this broker provides services (driver reached, templates imported and published).
    public var isReady: Bool { runnerState.withLock { $0 != nil } }

    /// The runner, once the driver was reached (provider side).
    public var runner: FederationRunner? { runnerState.withLock { $0 } }

    // MARK: lifecycle

    /// Serves peers' federation requests (provider side).
    public func install() {
        transport.serve(namespace: Self.namespace, maxPayloadBytes: Self.maxPayloadBytes) { [self] request throws(StanzaError) in
            try await self.answer(request)
        }
    }

    /// Until cancelled: starts the runner when the driver can be reached (imports and publishes
    /// the templates, resumes unfinished services), performs operator requests, tears services
    /// down at their agreement's end, and ends consumed services whose agreement ended; with
    /// `[federation] call_gate`, serves the call gate alongside.
    public func run() async {
        await withDiscardingTaskGroup { group in
            if provider != nil, let address = settings.callGate {
                let (host, port) = (address.host, address.port)
                do {
                    let gate = try FederationCallGate(host: host, port: port, database: database, logger: logger)
                    self.gate.withLock { $0 = gate }
                    group.addTask { [logger] in
                        do { try await gate.run() } catch is CancellationError {} catch {
                            logger.error("federation: call gate on \(host):\(port) stopped: \(error)")
                        }
                    }
                } catch {
                    logger.error("federation: cannot open the call gate on \(host):\(port): \(error)")
                }
            }
            await serve()
            group.cancelAll()
        }
    }

    /// The call gate's port once it listens (nil without `[federation] call_gate`).
    public func callGatePort() async throws -> UInt16? {
        guard let gate = gate.withLock({ $0 }) else { return nil }
        return try await gate.port()
    }

    private func serve() async {
        var nextStartAttempt = Date.distantPast
        var nextTemplateCheck = Date.distantPast
        while !Task.isCancelled {
            let now = Date()
            if provider != nil, !isReady, now >= nextStartAttempt {
                do { try await startRunner(now: now) } catch {
                    logger.error("federation: not providing services yet: \(error)")
                    nextStartAttempt = now.addingTimeInterval(5)
                }
            }
            if isReady, now >= nextTemplateCheck {
                nextTemplateCheck = now.addingTimeInterval(Self.templateCheckInterval)
                await reloadTemplatesIfChanged(now: now)
            }
            await takeRequests()
            if let runner, let deadline = try? await runner.nextDeadline(), deadline <= now {
                do {
                    for (serviceID, status) in try await runner.tick(now: now) {
                        logger.info("federation: service \(serviceID) is \(status.phase.rawValue)\(status.reason.map { ": \($0)" } ?? "")")
                    }
                } catch { logger.error("federation: tick failed: \(error)") }
            }
            await endConsumedServices(now: now)
            try? await Task.sleep(for: .milliseconds(200))
        }
    }

    private func startRunner(now: Date) async throws {
        guard let provider else { return }
        let driver = try await provider.driver()
        let runner = FederationRunner(
            driver: driver, journal: journal,
            configuration: .init(
                service: .init(
                    credentialTTL: settings.credentialTTL, bootTimeout: settings.bootTimeout,
                    teardownRetryInterval: settings.teardownRetryInterval),
                pollInterval: settings.pollInterval),
            metering: BrokerFederationMetering(store: metering.store), logger: logger)
        let fingerprint = Self.fingerprint(of: settings.templatePaths)
        let templates = try await runner.importTemplates(paths: try Self.templateFiles(settings.templatePaths), now: now)
        templateFingerprint.withLock { $0 = fingerprint }
        let triples = try await publish(runner)
        runnerState.withLock { $0 = runner }
        logger.info("federation: offering \(templates.count) template(s) (\(triples) catalog triples)")
        for (serviceID, status) in (try? await runner.resume(now: now)) ?? [:] {
            logger.info("federation: service \(serviceID) resumed: \(status.phase.rawValue)")
        }
    }

    /// How often the template files are checked for changes (seconds).
    static let templateCheckInterval: TimeInterval = 2

    /// Templates are read again when their files change (added, removed, edited): the new set
    /// replaces the old one in the journal and the catalog. A set with errors is refused as a
    /// whole, logged and audited with every `file:line: field` problem, and the templates in use
    /// stay. Services already running keep what they were provisioned from.
    func reloadTemplatesIfChanged(now: Date) async {
        guard let runner else { return }
        let fingerprint = Self.fingerprint(of: settings.templatePaths)
        guard templateFingerprint.withLock({ $0 }) != fingerprint else { return }
        templateFingerprint.withLock { $0 = fingerprint }
        do {
            let templates = try await runner.importTemplates(paths: try Self.templateFiles(settings.templatePaths), now: now)
            let triples = try await publish(runner)
            logger.info("federation: template files changed; offering \(templates.count) template(s) (\(triples) catalog triples)")
            _ = try? await audit.offPool.record(AuditEvent(
                at: now, module: "broker", kind: "federation.templates", peer: local, action: "reload", outcome: .accepted,
                reason: "reloaded", detail: templates.map(\.name).joined(separator: ", ")))
        } catch {
            logger.error("federation: template files changed but are not valid; still offering the previous templates:\n\(error)")
            _ = try? await audit.offPool.record(AuditEvent(
                at: now, module: "broker", kind: "federation.templates", peer: local, action: "reload", outcome: .refused,
                reason: "invalid-templates", detail: String(describing: error)))
        }
    }

    /// What changes when a template file is added, removed or edited.
    static func fingerprint(of paths: [String]) -> String {
        let files = (try? templateFiles(paths)) ?? paths
        return files.map { file in
            let attributes = try? FileManager.default.attributesOfItem(atPath: file)
            let size = (attributes?[.size] as? NSNumber)?.int64Value ?? -1
            let modified = (attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? -1
            return "\(file)\u{1}\(size)\u{1}\(modified)"
        }.joined(separator: "\n")
    }

    /// The template files of `paths`: a file as given, a folder's `*.toml` files in name order.
    public static func templateFiles(_ paths: [String]) throws -> [String] {
        try paths.flatMap { path -> [String] in
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else { return [path] }
            return try FileManager.default.contentsOfDirectory(atPath: path).filter { $0.hasSuffix(".toml") }.sorted()
                .map { (path as NSString).appendingPathComponent($0) }
        }
    }

    /// Replaces the templates graph of the catalog with the runner's templates.
    @discardableResult
    func publish(_ runner: FederationRunner) async throws -> Int {
        let turtle = try await runner.catalogTurtle(cloudIRI: catalog.cloudIRI.value)
        // Blank nodes (the parameters) are renamed so they never meet those of other documents.
        let triples = try RDFLoader.parse(turtle, format: .turtle).map { triple in
            func rename(_ term: Term) -> Term {
                if case .blank(let node) = term { return .blank("tmpl_" + node.label) }
                return term
            }
            return Triple(rename(triple.subject), triple.predicate, rename(triple.object))
        }
        catalog.replaceGraph(Self.templatesGraph, with: triples)
        return triples.count
    }

    // MARK: provider: peers' requests

    func answer(_ request: SignedRequest) async throws(StanzaError) -> [UInt8] {
        let now = Date()
        let peer = request.peer
        let message: FederationMessage
        do { message = try FederationWire.decode(request.payload) } catch {
            throw await refuse(peer, "malformed", error.description, .badRequest(error.description))
        }
        guard let runner else {
            throw await refuse(
                peer, "unavailable", "no provider runner",
                .serviceUnavailable("this broker provides no federated services (no provider, or its cloud is not reachable yet)"))
        }
        let answer: FederationMessage
        switch message.body {
        case .select(let selection):
            let agreement = try await authorizeSelect(selection, serviceID: message.serviceID, peer: peer, now: now)
            defer { _ = pending.withLock { $0.removeValue(forKey: message.serviceID) } }
            answer = await runner.handle(message, from: peer, agreement: agreement, now: now)
        case .status, .renew, .teardown:
            // A service is only known to the consumer that selected it.
            guard (try? journal.snapshot(message.serviceID))?.consumer == peer else {
                throw await refuse(peer, "unknown-service", message.serviceID, .itemNotFound("no service \(message.serviceID)"))
            }
            answer = await runner.handle(message, from: peer, agreementEndsAt: nil, now: now)
        case .provisioned, .state, .renewed, .done, .refused:
            throw await refuse(peer, "malformed", "\(message.kind) sent as a request", .badRequest("\(message.kind) is an answer, not a request"))
        }
        if case .refused(let reason) = answer.body {
            throw await refuse(peer, "refused", "\(message.kind) \(message.serviceID): \(reason)", .notAcceptable(reason))
        }
        if case .provisioned(let service) = answer.body {
            _ = try? await audit.offPool.record(AuditEvent(
                at: now, module: "broker", kind: "federation.provisioned", peer: peer, action: Self.namespace, outcome: .accepted,
                reason: "provisioned", detail: "\(message.serviceID) at \(service.endpoint.url)"))
            logger.info("federation: provisioned \(message.serviceID) for \(peer) at \(service.endpoint.url)")
        }
        do { return try FederationWire.encode(answer) } catch { throw .internalServerError("cannot encode the answer") }
    }

    /// Checks a `select` before anything is created: agreement, template, parameters, entitlement
    /// and quota, policy. On success the demand is held in `pending` under the service id (the
    /// caller removes it once the runner answered).
    private func authorizeSelect(
        _ selection: ServiceSelection, serviceID: String, peer: String, now: Date
    ) async throws(StanzaError) -> Agreement {
        let agreementID = selection.agreementID
        // Ids are unique across roles: a peer may not name its service after one we consume
        // elsewhere (the id keys our metering placements, logs and the operator's commands).
        let ours: FederationStore.ConsumedService?
        do { ours = try FederationStore.consumed(database: database, serviceID: serviceID) } catch {
            throw .internalServerError("services unreadable")
        }
        if ours != nil {
            throw await refuse(peer, "service-id-in-use", serviceID, .conflict("service id \(serviceID) is already used here; choose another"))
        }
        let stored: NegotiationStore.StoredAgreement?
        do { stored = try negotiation.store.agreement(agreementID) } catch {
            logger.error("federation: agreements unreadable: \(error)")
            throw .internalServerError("agreements unreadable")
        }
        guard let stored, stored.state == .finalized, stored.agreement.provider == local, stored.agreement.consumer == peer else {
            throw await refuse(
                peer, "no-agreement", "no finalized agreement \(agreementID) provided to \(peer)",
                .forbidden("no agreement \(agreementID) in force in which \(local) provides to \(peer)"))
        }
        let template: ServerTemplate?
        do { template = try journal.template(named: selection.templateName) } catch {
            logger.error("federation: templates unreadable: \(error)")
            throw .internalServerError("templates unreadable")
        }
        guard let template else {
            throw await refuse(peer, "unknown-template", selection.templateName, .itemNotFound("no template named \(selection.templateName)"))
        }
        do { _ = try template.render(parameters: selection.parameters) } catch {
            throw await refuse(peer, "bad-parameter", "\(template.name): \(error)", .badRequest("invalid parameters: \(error)"))
        }
        let size: InstanceSize
        do {
            guard let provider, let found = try await provider.driver().listSizes().first(where: { $0.id == template.size }) else {
                throw RequestError("size \(template.size) is not available")
            }
            size = found
        } catch {
            throw await refuse(peer, "unavailable", "\(template.name): \(error)", .serviceUnavailable("size \(template.size) of \(template.name) is not available"))
        }
        let demand = ResourceAmount(
            instances: 1, vcpu: size.vCPU, memoryGiB: Decimal(size.memoryMiB) / 1024, storageGiB: Decimal(size.diskGiB))
        let request = PolicyRequest.federate(service: template.name, size: demand)
        let placed = metering.usage(agreementID: agreementID, role: .provider, at: now)
        // Checked and reserved under one lock: a concurrent select sees this one's demand.
        let decision: PolicyDecision = pending.withLock { pending in
            guard pending[serviceID] == nil else { return .denied("service-id-in-use", "service id \(serviceID) is being provisioned") }
            let usage = pending.values.filter { $0.agreementID == agreementID }.reduce(placed) { $0 + $1.demand }
            var decision = AgreementRule(agreement: stored.agreement).evaluate(
                request, context: PolicyContext(peer: peer, now: now, usage: usage, policy: nil))
            if decision == .allowed, !policies.peers.isEmpty,
               case .denied(let reasons) = policies.evaluate(request, peer: peer, usage: usage, now: now) {
                decision = .denied(reasons.map { PolicyReason(code: "policy-\($0.code)", message: $0.message) })
            }
            if decision == .allowed { pending[serviceID] = (agreementID, demand) }
            return decision
        }
        if case .denied(let reasons) = decision {
            let text = NegotiationMove.text(of: reasons)
            throw await refuse(peer, reasons.first?.code ?? "denied", "\(template.name) under \(agreementID): \(text)", .forbidden(text))
        }
        return stored.agreement
    }

    private func refuse(_ peer: String, _ reason: String, _ detail: String, _ error: StanzaError) async -> StanzaError {
        logger.notice("federation: refused request from \(peer): \(reason): \(detail)")
        _ = try? await audit.offPool.refused(
            module: "broker", kind: "federation.request", peer: peer, action: Self.namespace, reason: reason,
            detail: String(detail.prefix(500)), at: Date())
        return error
    }

    // MARK: provider: metered calls

    /// Checks credentials presented for a provided service and counts the call (valid or not)
    /// against it; the count is in `FederationStore.callCount` and `intercloud services show`.
    public func validateCall(serviceID: String, token: String, now: Date = Date()) async throws -> CredentialValidation {
        try await calls.validate(serviceID: serviceID, token: token, now: now)
    }

    // MARK: consumer

    /// Selects `templateName` at `peer` under `agreementID` (default: the newest agreement in
    /// force in which the peer provides to this broker and grants `federate`). Returns the
    /// service with its token, which is stored nowhere: show it to the operator once.
    public func select(
        peer: String, templateName: String, parameters: [String: String] = [:], agreementID: String? = nil, serviceID: String? = nil,
        now: Date = Date()
    ) async throws -> FederationStore.RequestOutcome {
        let bare = XmppAddr.bare(peer)
        let agreement = try consumerAgreement(with: bare, id: agreementID, now: now)
        let serviceID = serviceID ?? "svc-" + RandomIdentifier.hex(bytes: 8)
        // Unique across roles: not one of the services we provide either.
        if (try? journal.snapshot(serviceID)) != nil || (try? FederationStore.consumed(database: database, serviceID: serviceID)) != nil {
            throw RequestError("service id \(serviceID) is already used on this broker")
        }
        let message = FederationMessage(
            serviceID: serviceID, body: .select(ServiceSelection(templateName: templateName, parameters: parameters, agreementID: agreement.id)))
        do { try message.validate() } catch { throw RequestError(error.description) }
        let target = try transport.route(to: try JID(bare))
        let figures = await lookUp(templateName, at: target)
        try await database.write { db in
            try FederationStore.insertConsumed(
                db, serviceID: serviceID, peer: bare, agreementID: agreement.id, template: templateName,
                agreementEndsAt: agreement.terms.period.until, now: now)
        }
        let answer: FederationMessage
        do {
            answer = try await send(message, to: target, timeout: .seconds(settings.bootTimeout + 60))
        } catch let error as RequestError where error.condition != nil {
            // Refused: the provider created nothing, and neither do we.
            try? await database.write { db in try db.execute(sql: "DELETE FROM federation_consumed WHERE service_id = ?", arguments: [serviceID]) }
            throw error
        } catch {
            try? await database.write { db in
                try FederationStore.updateConsumed(db, serviceID: serviceID, phase: "unknown", reason: "\(error)", now: Date())
            }
            throw RequestError("\(error) (ask again with `intercloud services show \(serviceID)`)")
        }
        guard case .provisioned(let service) = answer.body, answer.serviceID == serviceID else {
            try? await database.write { db in try FederationStore.updateConsumed(db, serviceID: serviceID, phase: "unknown", reason: "unexpected answer", now: Date()) }
            throw RequestError("unexpected answer \(answer.kind) to select")
        }
        let placedAt = Date()
        try await database.write { db in
            try FederationStore.updateConsumed(
                db, serviceID: serviceID, phase: FederatedService.Phase.active.rawValue, endpoint: service.endpoint,
                interface: service.interfaceDescription, credentials: service.credentials, now: placedAt)
        }
        // The consumer does not learn the provider's instance id: the service id names the workload.
        try await metering.store.offPool.place(MeteringStore.Placement(
            agreementID: agreement.id, instanceID: serviceID, role: .consumer, peer: bare, instanceType: figures.instanceType ?? "unknown",
            vcpu: figures.vcpu ?? 0, memoryGiB: Decimal(figures.memoryMiB ?? 0) / 1024, diskBytes: Int64(figures.diskGiB ?? 0) << 30,
            placedAt: placedAt))
        logger.info("federation: \(templateName) at \(bare) is \(serviceID) at \(service.endpoint.url)")
        return FederationStore.RequestOutcome(
            serviceID: serviceID, role: "consumer", phase: FederatedService.Phase.active.rawValue, endpoint: service.endpoint.url,
            protocolName: service.endpoint.protocolName, interfaceDescription: service.interfaceDescription,
            username: service.credentials.username, token: service.credentials.token, credentialsExpireAt: service.credentials.expiresAt)
    }

    /// Asks the provider for a consumed service's state and stores it.
    public func status(serviceID: String) async throws -> FederationStore.RequestOutcome {
        let consumed = try consumedService(serviceID)
        let answer = try await send(FederationMessage(serviceID: serviceID, body: .status), to: consumed.peer)
        guard case .state(let status) = answer.body else { throw RequestError("unexpected answer \(answer.kind) to status") }
        return try await record(status, of: consumed)
    }

    /// New credentials for a consumed service; the old token stops working.
    public func renew(serviceID: String) async throws -> FederationStore.RequestOutcome {
        let consumed = try consumedService(serviceID)
        let answer = try await send(FederationMessage(serviceID: serviceID, body: .renew), to: consumed.peer)
        guard case .renewed(let credentials) = answer.body else { throw RequestError("unexpected answer \(answer.kind) to renew") }
        let now = Date()
        try await database.write { db in
            try FederationStore.updateConsumed(db, serviceID: serviceID, phase: consumed.phase, credentials: credentials, now: now)
        }
        return FederationStore.RequestOutcome(
            serviceID: serviceID, role: "consumer", phase: consumed.phase, endpoint: consumed.endpoint, protocolName: consumed.protocolName,
            interfaceDescription: consumed.interfaceDescription, username: credentials.username, token: credentials.token,
            credentialsExpireAt: credentials.expiresAt)
    }

    /// Ends a service: a consumed one at its provider, a provided one here (operator request).
    public func teardown(serviceID: String) async throws -> FederationStore.RequestOutcome {
        if let consumed = try FederationStore.consumed(database: database, serviceID: serviceID) {
            let answer = try await send(FederationMessage(serviceID: serviceID, body: .teardown), to: consumed.peer)
            switch answer.body {
            case .done: return try await record(ServiceStatus(phase: .ended, reason: "requested by the consumer"), of: consumed)
            case .state(let status): return try await record(status, of: consumed)
            default: throw RequestError("unexpected answer \(answer.kind) to teardown")
            }
        }
        guard let runner, try journal.snapshot(serviceID) != nil else { throw RequestError("no service \(serviceID)") }
        let status: ServiceStatus
        do { status = try await runner.teardown(serviceID: serviceID, reason: "ended by the provider's operator", now: Date()) } catch {
            throw RequestError(error.description)
        }
        return FederationStore.RequestOutcome(
            serviceID: serviceID, role: "provider", phase: status.phase.rawValue, endpoint: status.endpoint?.url, reason: status.reason)
    }

    private func record(_ status: ServiceStatus, of consumed: FederationStore.ConsumedService) async throws -> FederationStore.RequestOutcome {
        let now = Date()
        try await database.durableWrite { db in
            try FederationStore.updateConsumed(db, serviceID: consumed.serviceID, phase: status.phase.rawValue, reason: status.reason, now: now)
            if let expiry = status.credentialsExpireAt {
                try db.execute(
                    sql: "UPDATE federation_consumed SET credentials_expire_at = ? WHERE service_id = ?", arguments: [expiry, consumed.serviceID])
            }
        }
        if status.phase.isFinal {
            try await metering.store.offPool.remove(agreementID: consumed.agreementID, instanceID: consumed.serviceID, role: .consumer, at: now)
        }
        return FederationStore.RequestOutcome(
            serviceID: consumed.serviceID, role: "consumer", phase: status.phase.rawValue, endpoint: status.endpoint?.url ?? consumed.endpoint,
            protocolName: consumed.protocolName, interfaceDescription: consumed.interfaceDescription, username: consumed.username,
            credentialsExpireAt: status.credentialsExpireAt ?? consumed.credentialsExpireAt, reason: status.reason)
    }

    private func consumedService(_ serviceID: String) throws -> FederationStore.ConsumedService {
        guard let consumed = try FederationStore.consumed(database: database, serviceID: serviceID) else {
            throw RequestError("no service \(serviceID) selected at a peer")
        }
        return consumed
    }

    /// The agreement a `select` runs under: the one named, or the newest in force that the peer
    /// provides to this broker granting `federate`.
    private func consumerAgreement(with peer: String, id: String?, now: Date) throws -> Agreement {
        if let id {
            guard let stored = try negotiation.store.agreement(id), stored.state == .finalized,
                  stored.agreement.provider == peer, stored.agreement.consumer == local
            else { throw RequestError("no finalized agreement \(id) in which \(peer) provides to \(local)") }
            return stored.agreement
        }
        guard let found = try negotiation.store.agreements(peer: peer, state: .finalized).map(\.agreement).first(where: {
            $0.provider == peer && $0.consumer == local && $0.isValid(at: now) && $0.terms.entitlements.contains(.federate)
        }) else {
            throw RequestError("no agreement in force with \(peer) granting federate: negotiate one first (intercloud negotiate --peer \(peer) --entitle federate)")
        }
        return found
    }

    /// What the peer's catalog says about the template's size (for the consumer's own metering).
    /// Best effort: the provider decides anyway, and a peer that does not let us query still serves.
    private func lookUp(_ templateName: String, at target: JID) async -> (instanceType: String?, vcpu: Int?, memoryMiB: Int?, diskGiB: Int?) {
        // The name passed `FederationMessage.validate` (letters, digits, `._:@-`): safe in a literal.
        let sparql = """
            PREFIX ic: <\(TemplateCatalog.namespace)>
            SELECT ?type ?vcpu ?memory ?disk WHERE { GRAPH ?g {
              ?offering a ic:Offering ; ic:name "\(templateName)" ; ic:service ?service ; ic:instanceType ?t .
              ?t ic:name ?type .
              OPTIONAL { ?offering ic:vcpu ?vcpu } OPTIONAL { ?offering ic:memoryMiB ?memory } OPTIONAL { ?offering ic:diskGiB ?disk }
            } } LIMIT 1
            """
        guard case .solutions(let table)? = try? await catalog.query(sparql, peer: target), let row = table.rows.first else {
            logger.notice("federation: template \(templateName) not found in \(target)'s catalog; metering it with unknown figures")
            return (nil, nil, nil, nil)
        }
        func cell(_ name: String) -> String? {
            guard let index = table.variables.firstIndex(of: name), index < row.count, case .literal(let literal)? = row[index] else { return nil }
            return literal.lexical
        }
        return (cell("type"), cell("vcpu").flatMap(Int.init), cell("memory").flatMap(Int.init), cell("disk").flatMap(Int.init))
    }

    /// Sends one federation message to `peer` (bare JID of a trusted broker) and returns its
    /// answer; a refusal (stanza error or `refused`) throws `RequestError` with the reason. The
    /// operations above use it; it is public for tools and tests that speak the protocol directly.
    public func exchange(_ message: FederationMessage, with peer: String, timeout: Duration = .seconds(60)) async throws -> FederationMessage {
        try await send(message, to: peer, timeout: timeout)
    }

    private func send(_ message: FederationMessage, to peer: String, timeout: Duration = .seconds(60)) async throws -> FederationMessage {
        try await send(message, to: try transport.route(to: try JID(peer)), timeout: timeout)
    }

    private func send(_ message: FederationMessage, to target: JID, timeout: Duration) async throws -> FederationMessage {
        let bytes: [UInt8]
        do {
            bytes = try await transport.request(.set, to: target, namespace: Self.namespace, payload: try FederationWire.encode(message), timeout: timeout)
        } catch XMPPError.stanza(let error) {
            throw RequestError("\(target.bare) refused: \(error.condition)\(error.text.map { ": \($0)" } ?? "")", condition: error.condition)
        }
        let answer: FederationMessage
        do { answer = try FederationWire.decode(bytes) } catch { throw RequestError("unusable answer from \(target.bare): \(error)") }
        if case .refused(let reason) = answer.body { throw RequestError("\(target.bare) refused: \(reason)", condition: "refused") }
        return answer
    }

    /// The provider tears services down when their agreement ends; the consumer ends its own view
    /// (and placement) at the same moment without asking.
    private func endConsumedServices(now: Date) async {
        let ended: [FederationStore.ConsumedService]
        do {
            ended = try FederationStore.consumed(database: database).filter {
                $0.phase == FederatedService.Phase.active.rawValue && ($0.agreementEndsAt.map { $0 <= now } ?? false)
            }
        } catch { return }
        for service in ended {
            _ = try? await record(ServiceStatus(phase: .ended, reason: "agreement \(service.agreementID) ended"), of: service)
        }
    }

    // MARK: operator requests

    private func takeRequests() async {
        let requests: [FederationStore.QueuedRequest]
        do { requests = try await FederationStore.takeRequests(database: database) } catch { return }
        for request in requests {
            Task {
                let outcome: Result<FederationStore.RequestOutcome, any Error>
                do { outcome = .success(try await self.perform(request)) } catch { outcome = .failure(error) }
                await FederationStore.finish(database: self.database, id: request.id, outcome: outcome)
            }
        }
    }

    private func perform(_ request: FederationStore.QueuedRequest) async throws -> FederationStore.RequestOutcome {
        switch request.kind {
        case .select:
            guard let peer = request.peer, let template = request.template else { throw RequestError("select needs a peer and a template") }
            return try await select(
                peer: peer, templateName: template, parameters: request.parameters, agreementID: request.agreementID, serviceID: request.serviceID)
        case .status:
            guard let id = request.serviceID else { throw RequestError("status needs a service id") }
            if try FederationStore.consumed(database: database, serviceID: id) == nil, let snapshot = try journal.snapshot(id) {
                return FederationStore.RequestOutcome(
                    serviceID: id, role: "provider", phase: snapshot.phase.rawValue, endpoint: snapshot.endpoint?.url,
                    credentialsExpireAt: snapshot.credentials?.expiresAt, reason: snapshot.failureReason ?? snapshot.teardownReason)
            }
            return try await status(serviceID: id)
        case .renew:
            guard let id = request.serviceID else { throw RequestError("renew needs a service id") }
            return try await renew(serviceID: id)
        case .teardown:
            guard let id = request.serviceID else { throw RequestError("teardown needs a service id") }
            return try await teardown(serviceID: id)
        }
    }
}
