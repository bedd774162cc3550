import Crypto
import Foundation
import Logging
import Policy
import Providers
import Storage

/// The thin IO layer of service federation: performs the actions of `FederatedService` with a cloud
/// driver, the journal and the metering hook.
///
/// `provision` answers a peer's `select`, `status`, `renew` and `teardown` its other requests,
/// `tick` tears services down when their agreement ends and retries failed teardowns, and `resume`
/// finishes what a previous process left unfinished. Before every action the machine's snapshot and
/// the step are written to the journal (SQLite, `synchronous = FULL`), so nothing is performed that
/// a restart would not know about. The broker checks the peer's agreement and entitlement before
/// calling in; this layer checks everything about the template and the service.
public actor FederationRunner {
    /// Journal writes wait for their fsync on the storage thread, not on a cooperative one.
    public nonisolated var unownedExecutor: UnownedSerialExecutor { StorageExecutor.shared.asUnownedSerialExecutor() }

    public struct Configuration: Sendable {
        public var service: FederatedService.Configuration
        /// How often the driver is asked whether a starting instance runs yet.
        public var pollInterval: Duration

        public init(service: FederatedService.Configuration = .init(), pollInterval: Duration = .milliseconds(100)) {
            self.service = service
            self.pollInterval = pollInterval
        }
    }

    /// A journal write or a finished driver step, reported to the observer.
    public struct JournalEvent: Sendable, Hashable {
        public enum Stage: String, Sendable, Hashable {
            /// The snapshot was committed; the action is about to be performed.
            case journaled
            /// The action was performed; its result is not yet journaled.
            case performed
        }

        public var serviceID: String
        public var phase: FederatedService.Phase
        /// The action (`create`, `await-running`, `terminate`, ...).
        public var step: String
        public var stage: Stage
    }

    /// Called at each `JournalEvent`. If it throws, the runner stops on the spot and refuses all
    /// further work, exactly as if the process died there (what the crash tests use).
    public typealias JournalObserver = @Sendable (JournalEvent) async throws -> Void

    private let driver: any CloudDriver
    public nonisolated let journal: FederationJournal
    private let configuration: Configuration
    private let metering: (any FederationMeteringHook)?
    private let logger: Logger
    private let observer: JournalObserver?
    private var machines: [String: FederatedService] = [:]
    /// Services with a step sequence under way; `tick` and `resume` leave them alone.
    private var busy: Set<String> = []
    /// Service ids of `select`s being checked, before their first journal write.
    private var selecting: Set<String> = []
    private var halted = false

    public init(
        driver: any CloudDriver, journal: FederationJournal, configuration: Configuration = .init(),
        metering: (any FederationMeteringHook)? = nil, logger: Logger = Logger(label: "intercloud.federation"),
        observer: JournalObserver? = nil
    ) {
        self.driver = driver
        self.journal = journal
        self.configuration = configuration
        self.metering = metering
        self.logger = logger
        self.observer = observer
    }

    // MARK: templates

    /// Replaces the stored templates with those of `paths` (call at start; files are the source of truth).
    @discardableResult
    public func importTemplates(paths: [String], now: Date) throws -> [ServerTemplate] {
        let templates = try TemplateLoader.load(paths: paths)
        try journal.importTemplates(templates, now: now)
        return templates
    }

    /// The catalog entry for the stored templates, with the driver's sizes and images.
    public func catalogTurtle(cloudIRI: String) async throws -> String {
        let sizes = try await driver.listSizes()
        let images = try await driver.listImages()
        return TemplateCatalog.turtle(templates: try journal.templates(), cloudIRI: cloudIRI, sizes: sizes, images: images)
    }

    // MARK: requests from the consumer

    /// Provisions `selection` for `consumer` and waits until it is active. Refuses (with a reason
    /// for the peer) a used service id, an unknown template, invalid parameters, an ended agreement,
    /// or a size or image the driver does not have; a failure after creation is undone before
    /// the error is thrown.
    public func provision(
        serviceID: String, selection: ServiceSelection, consumer: String, agreementEndsAt: Date, now: Date
    ) async throws(FederationError) -> ProvisionedService {
        try checkRunning()
        do { try FederationMessage(serviceID: serviceID, body: .select(selection)).validate() } catch {
            throw .refused(error.message)
        }
        let existing: FederatedService.Snapshot?
        let template: ServerTemplate?
        do {
            existing = try journal.snapshot(serviceID)
            template = try journal.template(named: selection.templateName)
        } catch { throw .journal("\(error)") }
        guard existing == nil, machines[serviceID] == nil, !selecting.contains(serviceID) else {
            throw .refused("service id \(serviceID) is already used")
        }
        // Held across the driver calls below, so a concurrent select with the same id is refused too.
        selecting.insert(serviceID)
        defer { selecting.remove(serviceID) }
        guard let template else { throw .refused("no template named \(selection.templateName)") }
        guard now < agreementEndsAt else { throw .refused("agreement \(selection.agreementID) has ended") }
        let rendered: RenderedTemplate
        do { rendered = try template.render(parameters: selection.parameters) } catch {
            throw .refused("invalid parameters: \(error.description)")
        }
        let size: InstanceSize
        let imageID: String
        do {
            guard let found = try await driver.listSizes().first(where: { $0.id == template.size }) else {
                throw FederationError.refused("size \(template.size) of template \(template.name) is not available")
            }
            size = found
            let images = try await driver.listImages()
            if images.contains(where: { $0.id == template.image }) {
                imageID = template.image
            } else {
                let named = images.filter { $0.name == template.image }
                guard named.count == 1 else {
                    throw FederationError.refused(
                        named.isEmpty ? "image \(template.image) of template \(template.name) is not available"
                            : "image name \(template.image) is ambiguous (\(named.count) images)")
                }
                imageID = named[0].id
            }
        } catch let error as FederationError {
            throw error
        } catch {
            throw .refused("the cloud could not be asked for sizes and images: \(error)")
        }
        var machine = FederatedService(
            serviceID: serviceID, agreementID: selection.agreementID, consumer: consumer, templateName: template.name,
            imageID: imageID, size: size, userData: rendered.userData, interface: template.interface,
            agreementEndsAt: agreementEndsAt, configuration: configuration.service, now: now)
        let action = machine.start(now: now)
        do {
            try journal.save(machine.snapshot, step: Self.stepName(action), detail: "selected \(template.name)", insert: true, now: now)
        } catch { throw .journal("\(error)") }
        machines[serviceID] = machine
        try await observe(serviceID, machine.phase, Self.stepName(action), .journaled)
        let token = try await run(serviceID, from: action, now: now)
        guard let final = machines[serviceID]?.snapshot else { throw .unknownService(serviceID) }
        guard final.phase == .active, let endpoint = final.endpoint, let credentials = final.credentials, let token else {
            throw .refused("provisioning \(template.name) failed: \(final.failureReason ?? final.teardownReason ?? final.phase.rawValue)")
        }
        return ProvisionedService(
            endpoint: endpoint, interfaceDescription: template.interface.description,
            credentials: ServiceCredentials(username: credentials.username, token: token, expiresAt: credentials.expiresAt))
    }

    /// The service's state as the consumer may see it.
    public func status(serviceID: String) throws(FederationError) -> ServiceStatus {
        try checkRunning()
        return try load(serviceID).status
    }

    /// New credentials for an active service; the old token stops working at once.
    public func renew(serviceID: String, now: Date) async throws(FederationError) -> ServiceCredentials {
        try checkRunning()
        var machine = try load(serviceID)
        let action = try machine.renew(now: now)
        machines[serviceID] = machine
        guard case .issueCredentials(let credentials) = action else { throw .invalidState("nothing to renew") }
        let token = Self.newToken()
        do {
            try journal.save(
                machine.snapshot, step: Self.stepName(action), detail: "generation \(credentials.generation)",
                issuing: .init(credentials: credentials, tokenSHA256: FederationJournal.hash(token: token)), now: now)
        } catch { throw .journal("\(error)") }
        try await observe(serviceID, machine.phase, Self.stepName(action), .journaled)
        return ServiceCredentials(username: credentials.username, token: token, expiresAt: credentials.expiresAt)
    }

    /// Ends the service (idempotent) and returns its state: `ended` once the instance is gone, or
    /// `tearingDown` while a driver failure is retried at `tick`.
    @discardableResult
    public func teardown(serviceID: String, reason: String = "requested by the consumer", now: Date) async throws(FederationError) -> ServiceStatus {
        try checkRunning()
        _ = try load(serviceID)
        _ = try await apply(serviceID, now: now) { $0.requestTeardown(reason: reason, now: now) }
        return try load(serviceID).status
    }

    /// Answers one request of `consumer` (after the broker verified the signed envelope, and for
    /// `select` the agreement, whose end it passes as `agreementEndsAt`). A service is only known to
    /// the consumer that selected it: others are told it does not exist. Never throws: every
    /// failure becomes a `refused` answer, without internal details.
    public func handle(_ message: FederationMessage, from consumer: String, agreementEndsAt: Date?, now: Date) async -> FederationMessage {
        func answer(_ body: FederationMessage.Body) -> FederationMessage { FederationMessage(serviceID: message.serviceID, body: body) }
        do {
            try message.validate()
        } catch {
            return answer(.refused(reason: error.description))
        }
        do throws(FederationError) {
            switch message.body {
            case .select(let selection):
                guard let agreementEndsAt else { return answer(.refused(reason: "no agreement \(selection.agreementID) in force")) }
                let service = try await provision(
                    serviceID: message.serviceID, selection: selection, consumer: consumer, agreementEndsAt: agreementEndsAt, now: now)
                return answer(.provisioned(service))
            case .status:
                try checkOwner(message.serviceID, consumer)
                return answer(.state(try status(serviceID: message.serviceID)))
            case .renew:
                try checkOwner(message.serviceID, consumer)
                return answer(.renewed(try await renew(serviceID: message.serviceID, now: now)))
            case .teardown:
                try checkOwner(message.serviceID, consumer)
                let status = try await teardown(serviceID: message.serviceID, now: now)
                return status.phase.isFinal ? answer(.done) : answer(.state(status))
            case .provisioned, .state, .renewed, .done, .refused:
                return answer(.refused(reason: "\(message.kind) is an answer, not a request"))
            }
        } catch {
            switch error {
            case .journal, .halted:
                logger.error("federation: cannot answer", metadata: ["service": "\(message.serviceID)", "error": "\(error)"])
                return answer(.refused(reason: "internal error"))
            default:
                return answer(.refused(reason: error.description))
            }
        }
    }

    /// `handle(_:from:agreementEndsAt:now:)` with the agreement the broker found for the request
    /// (nil: none). A `select` is refused unless the agreement is the one it names, binds this
    /// consumer, is in force, grants `federate`, and allows the template's size among its
    /// instance types (an empty list allows any); the service ends with the agreement's period
    /// (an open-ended agreement: on request only).
    public func handle(_ message: FederationMessage, from consumer: String, agreement: Agreement?, now: Date) async -> FederationMessage {
        guard case .select(let selection) = message.body else {
            return await handle(message, from: consumer, agreementEndsAt: nil, now: now)
        }
        if let reason = await refusal(selection, consumer: consumer, agreement: agreement, now: now) {
            return FederationMessage(serviceID: message.serviceID, body: .refused(reason: reason))
        }
        let endsAt = agreement?.terms.period.until ?? .distantFuture
        return await handle(message, from: consumer, agreementEndsAt: endsAt, now: now)
    }

    private func refusal(_ selection: ServiceSelection, consumer: String, agreement: Agreement?, now: Date) async -> String? {
        guard let agreement, agreement.id == selection.agreementID else { return "no agreement \(selection.agreementID.prefix(128))" }
        guard agreement.consumer == consumer else { return "agreement \(agreement.id) is not with \(consumer)" }
        guard agreement.isValid(at: now) else { return "agreement \(agreement.id) is not in force" }
        guard agreement.terms.entitlements.contains(.federate) else { return "agreement \(agreement.id) does not grant federate" }
        let instanceTypes = agreement.terms.instanceTypes
        if !instanceTypes.isEmpty, let template = try? journal.template(named: selection.templateName),
           !instanceTypes.contains(template.size) {
            return "agreement \(agreement.id) does not cover instance type \(template.size) (covers \(instanceTypes.joined(separator: ", ")))"
        }
        return nil
    }

    private func checkOwner(_ serviceID: String, _ consumer: String) throws(FederationError) {
        try checkRunning()
        guard try load(serviceID).snapshot.consumer == consumer else { throw .unknownService(serviceID) }
    }

    // MARK: clock and restart

    /// Tears down services whose agreement has ended and retries failed steps. Call it at the
    /// earliest `nextDeadline` of the services (or periodically).
    @discardableResult
    public func tick(now: Date) async throws(FederationError) -> [String: ServiceStatus] {
        try checkRunning()
        var changed: [String: ServiceStatus] = [:]
        for serviceID in try unfinished() where !busy.contains(serviceID) {
            let before = try load(serviceID).phase
            _ = try await apply(serviceID, now: now) { $0.tick(now: now) }
            let after = try load(serviceID).status
            if after.phase != before { changed[serviceID] = after }
        }
        return changed
    }

    /// Resumes every unfinished service after a restart (the resume rule of `FederatedService`).
    @discardableResult
    public func resume(now: Date) async throws(FederationError) -> [String: ServiceStatus] {
        try checkRunning()
        var result: [String: ServiceStatus] = [:]
        for serviceID in try unfinished() where !busy.contains(serviceID) {
            let stored: FederatedService.Snapshot?
            do { stored = try journal.snapshot(serviceID) } catch { throw .journal("\(error)") }
            guard let stored else { continue }
            machines[serviceID] = FederatedService(resuming: stored)
            _ = try await apply(serviceID, now: now) { $0.resume(now: now) }
            result[serviceID] = try load(serviceID).status
        }
        return result
    }

    /// The earliest time `tick` has something to do, nil when no service is unfinished.
    public func nextDeadline() throws(FederationError) -> Date? {
        var earliest: Date?
        for serviceID in try unfinished() {
            guard let deadline = try load(serviceID).nextDeadline else { continue }
            earliest = min(earliest ?? deadline, deadline)
        }
        return earliest
    }

    // MARK: the action loop

    /// Applies `event` to the machine, journals, and runs the resulting actions to the end.
    private func apply(
        _ serviceID: String, now: Date, _ event: (inout FederatedService) -> FederatedService.Action
    ) async throws(FederationError) -> String? {
        guard var machine = machines[serviceID] else { throw .unknownService(serviceID) }
        let action = event(&machine)
        if action == .none, machine.snapshot == machines[serviceID]?.snapshot { return nil }
        let (next, token) = try await commit(serviceID, machine, action, detail: "", now: now)
        return try await run(serviceID, from: next, firstToken: token, now: now)
    }

    /// Performs `action` and every action that follows from it, until the machine has nothing to do.
    /// Returns the token issued on the way (activation), which exists nowhere else.
    private func run(
        _ serviceID: String, from action: FederatedService.Action, firstToken: String? = nil, now: Date
    ) async throws(FederationError) -> String? {
        guard action != .none else { return firstToken }
        // A request that only marks the machine while another call's step is in flight (a
        // teardown during provisioning) must not clear that call's claim on the service.
        let claimed = busy.insert(serviceID).inserted
        defer { if claimed { busy.remove(serviceID) } }
        var action = action
        var token = firstToken
        while action != .none {
            let phase = machines[serviceID]?.phase ?? .failed
            let event = try await perform(serviceID, action, now: now)
            try await observe(serviceID, phase, Self.stepName(action), .performed)
            guard let event else { return token }
            guard var machine = machines[serviceID] else { throw .unknownService(serviceID) }
            let outcome = event.apply(&machine)
            let (next, issued) = try await commit(serviceID, machine, outcome, detail: event.detail, now: now)
            if let issued { token = issued }
            action = next
        }
        return token
    }

    /// Journals the machine with the step it is about to perform (and the hash of credentials it
    /// issues), then reports to the observer.
    private func commit(
        _ serviceID: String, _ machine: FederatedService, _ action: FederatedService.Action, detail: String, now: Date
    ) async throws(FederationError) -> (FederatedService.Action, String?) {
        var issued: FederationJournal.IssuedCredentials?
        var token: String?
        if case .activate(_, let credentials, _) = action {
            let fresh = Self.newToken()
            token = fresh
            issued = .init(credentials: credentials, tokenSHA256: FederationJournal.hash(token: fresh))
        }
        var revoke = false
        if case .finished = action { revoke = true }
        do {
            try journal.save(
                machine.snapshot, step: Self.stepName(action), detail: detail, issuing: issued, revokeCredentials: revoke, now: now)
        } catch { throw .journal("\(error)") }
        machines[serviceID] = machine
        try await observe(serviceID, machine.phase, Self.stepName(action), .journaled)
        return (action, token)
    }

    /// A driver result, to be applied to the machine.
    private struct Event {
        var detail: String
        var apply: (inout FederatedService) -> FederatedService.Action
    }

    /// Performs one action; returns the event it produced, or nil when the machine expects none.
    private func perform(_ serviceID: String, _ action: FederatedService.Action, now: Date) async throws(FederationError) -> Event? {
        switch action {
        case .none:
            return nil
        case .create(let request):
            do {
                let instance = try await driver.create(request, progress: nil)
                return Event(detail: "created \(instance.id)") { $0.created(instance, now: now) }
            } catch {
                let reason = Self.describe(error)
                logger.warning("federation: create failed", metadata: ["service": "\(serviceID)", "error": "\(reason)"])
                return Event(detail: "create failed: \(reason)") { $0.createFailed(reason: reason, now: now) }
            }
        case .locate(let name):
            do {
                let found = try await driver.listInstances().filter { $0.name == name }
                return Event(detail: "found \(found.map(\.id))") { $0.located(found, now: now) }
            } catch {
                let reason = Self.describe(error)
                return Event(detail: "listing failed: \(reason)") { $0.locateFailed(reason: reason, now: now) }
            }
        case .awaitRunning(let instanceID, let deadline):
            // The deadline is in the caller's time; the wait itself is real time from here.
            let remaining = deadline.timeIntervalSince(now)
            guard remaining > 0 else {
                return Event(detail: "boot deadline passed") { $0.startFailed(reason: "not running by \(deadline)", now: now) }
            }
            do {
                let instance = try await driver.waitFor(
                    instance: instanceID, state: .running, timeout: .milliseconds(Int64(remaining * 1000)),
                    pollInterval: configuration.pollInterval)
                return Event(detail: "running at \(instance.addresses)") { $0.running(instance, now: now) }
            } catch {
                let reason = Self.describe(error)
                return Event(detail: "start failed: \(reason)") { $0.startFailed(reason: reason, now: now) }
            }
        case .activate(_, _, let placement), .confirmPlacement(let placement):
            await report { try await $0.placed(placement) }
            return nil
        case .issueCredentials:
            return nil
        case .terminate(let instanceID):
            do {
                try await driver.terminate(instance: instanceID)
                return Event(detail: "terminated \(instanceID)") { $0.terminated(now: now) }
            } catch let error as ProviderError where error.code == .notFound {
                return Event(detail: "\(instanceID) already gone") { $0.terminated(now: now) }
            } catch {
                let reason = Self.describe(error)
                logger.warning("federation: terminate failed", metadata: ["service": "\(serviceID)", "error": "\(reason)"])
                return Event(detail: "terminate failed: \(reason)") { $0.terminateFailed(reason: reason, now: now) }
            }
        case .finished(let removal):
            if let removal { await report { try await $0.removed(removal) } }
            do { try journal.markFinished(serviceID: serviceID, now: now) } catch { throw .journal("\(error)") }
            return nil
        }
    }

    /// Metering failures are logged, not fatal: the service itself is fine, and the broker's
    /// metering samples the driver independently.
    private func report(_ body: (any FederationMeteringHook) async throws -> Void) async {
        guard let metering else { return }
        do { try await body(metering) } catch {
            logger.error("federation: metering hook failed", metadata: ["error": "\(error)"])
        }
    }

    // MARK: helpers

    private func load(_ serviceID: String) throws(FederationError) -> FederatedService {
        if let machine = machines[serviceID] { return machine }
        let stored: FederatedService.Snapshot?
        do { stored = try journal.snapshot(serviceID) } catch { throw .journal("\(error)") }
        guard let stored else { throw .unknownService(serviceID) }
        let machine = FederatedService(resuming: stored)
        machines[serviceID] = machine
        return machine
    }

    private func unfinished() throws(FederationError) -> [String] {
        do { return try journal.unfinished() } catch { throw .journal("\(error)") }
    }

    private func checkRunning() throws(FederationError) {
        if halted { throw .halted }
    }

    private func observe(_ serviceID: String, _ phase: FederatedService.Phase, _ step: String, _ stage: JournalEvent.Stage) async throws(FederationError) {
        guard let observer else { return }
        do {
            try await observer(JournalEvent(serviceID: serviceID, phase: phase, step: step, stage: stage))
        } catch {
            halted = true
            throw .halted
        }
        if halted { throw .halted }
    }

    /// 32 random bytes, base64url without padding (43 characters).
    static func newToken() -> String {
        SymmetricKey(size: .bits256).withUnsafeBytes { Data($0) }.base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func describe(_ error: any Error) -> String {
        (error as? ProviderError)?.description ?? String(describing: error)
    }

    static func stepName(_ action: FederatedService.Action) -> String {
        switch action {
        case .none: "none"
        case .create: "create"
        case .locate: "locate"
        case .awaitRunning: "await-running"
        case .activate: "activate"
        case .issueCredentials: "issue-credentials"
        case .confirmPlacement: "confirm-placement"
        case .terminate: "terminate"
        case .finished: "finished"
        }
    }
}
