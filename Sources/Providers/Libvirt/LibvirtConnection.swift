import CLibvirt
import Foundation

// The only file that touches CLibvirt. Everything above it sees Swift types and `LibvirtError`.

/// libvirt's functions, resolved from libvirt.so.0 when the first connection opens (CLibvirt does
/// not link libvirt: a broker without a libvirt driver never maps it or its dependencies).
enum LibvirtLibrary {
    /// The outcome of the one load attempt of this process.
    static let functions: Result<intercloud_libvirt, LibvirtError> = {
        var reason: UnsafePointer<CChar>?
        guard let table = intercloud_libvirt_load(&reason) else {
            let message = reason.map { String(cString: $0) } ?? "libvirt could not be loaded"
            return .failure(LibvirtError(code: -1, kind: .unreachable, message: message, operation: "load libvirt"))
        }
        return .success(table.pointee)
    }()

    static func load() throws(LibvirtError) { _ = try functions.get() }
}

/// The loaded functions, for code that runs only on behalf of an open `LibvirtConnection`: `open`
/// loads the library before anything else, so by then this cannot fail.
private var virt: intercloud_libvirt {
    guard case .success(let table) = LibvirtLibrary.functions else { preconditionFailure("libvirt used before it was loaded") }
    return table
}

/// A libvirt failure as reported by `virGetLastError`, captured on the thread that made the call
/// (libvirt's last error is thread-local, which is one reason every call runs on one serial queue).
struct LibvirtError: Error, Sendable, CustomStringConvertible {
    enum Kind: Sendable {
        case noDomain, invalidState, unsupported, authentication, unreachable, invalidInput, alreadyExists, other
    }

    var code: Int32
    var kind: Kind
    var message: String
    var operation: String

    var description: String { "\(operation): \(message) (libvirt error \(code))" }
}

/// A domain as libvirt reports it.
struct DomainStatus: Sendable {
    var uuid: String
    var name: String
    /// `virDomainState` and its reason, as raw numbers; mapped by `LibvirtDriver`.
    var state: Int32
    var reason: Int32
    var hasManagedSave: Bool
    var xml: String
}

/// A lifecycle event (`VIR_DOMAIN_EVENT_*`) for one domain.
struct DomainEvent: Sendable {
    var uuid: String
    var name: String
    var event: Int32
    var detail: Int32
}

enum DomainAction: String, Sendable {
    case create, shutdown, destroy, reboot, suspend, resume, managedSave, managedSaveRemove, undefine
}

/// One libvirt connection, confined to a serial queue.
///
/// `@unchecked Sendable`: `handle` is only read or written inside `queue.sync`/`queue.async` blocks
/// (and in `deinit`, when no other reference exists), so the C pointer is never used concurrently and
/// each call's `virGetLastError` is read on the thread that made the call.
final class LibvirtConnection: @unchecked Sendable {
    let uri: String
    private let queue: DispatchQueue
    private var handle: virConnectPtr?
    private var callbackID: Int32 = -1
    private let sink = EventSink()

    /// libvirt's default event loop, run on one dedicated thread for the whole process. It must be
    /// registered before the first connection is opened so the remote driver gets keepalives and events.
    /// Started only once the library has loaded.
    private static let eventLoop: Void = {
        intercloud_virSetQuietErrors()
        _ = virt.virEventRegisterDefaultImpl()
        let thread = Thread {
            while true { _ = virt.virEventRunDefaultImpl() }
        }
        thread.name = "libvirt-events"
        thread.start()
    }()

    private init(uri: String, handle: virConnectPtr, queue: DispatchQueue) {
        self.uri = uri
        self.handle = handle
        self.queue = queue
    }

    /// Opens `uri` (`test:///default`, `qemu:///session`, `qemu+unix:///session?socket=...`).
    /// Loads libvirt first if this is the process's first connection (see `LibvirtLibrary`).
    static func open(uri: String) async throws -> LibvirtConnection {
        try LibvirtLibrary.load()
        _ = eventLoop
        let queue = DispatchQueue(label: "libvirt \(uri)")
        let connection: LibvirtConnection = try await withCheckedThrowingContinuation { continuation in
            queue.async {
                guard let handle = virt.virConnectOpen(uri) else {
                    continuation.resume(throwing: Self.lastError("connect to \(uri)"))
                    return
                }
                // Remote connections: detect a dead daemon instead of hanging (the test driver has no keepalive).
                _ = virt.virConnectSetKeepAlive(handle, 5, 3)
                virt.virResetLastError()
                continuation.resume(returning: LibvirtConnection(uri: uri, handle: handle, queue: queue))
            }
        }
        try await connection.registerEvents()
        return connection
    }

    deinit {
        if let handle {
            if callbackID >= 0 { _ = virt.virConnectDomainEventDeregisterAny(handle, callbackID) }
            _ = virt.virConnectClose(handle)
        }
    }

    var events: AsyncStream<DomainEvent> { sink.stream() }

    /// The one error funnel: turns libvirt's thread-local last error into a `LibvirtError`.
    private static func lastError(_ operation: String) -> LibvirtError {
        guard let error = virt.virGetLastError() else {
            return LibvirtError(code: -1, kind: .other, message: "unknown libvirt error", operation: operation)
        }
        let code = error.pointee.code
        let message = error.pointee.message.map { String(cString: $0) } ?? "no message"
        let kind: LibvirtError.Kind
        switch virErrorNumber(rawValue: UInt32(code)) {
        case VIR_ERR_NO_DOMAIN, VIR_ERR_NO_STORAGE_VOL, VIR_ERR_NO_STORAGE_POOL, VIR_ERR_NO_DOMAIN_SNAPSHOT: kind = .noDomain
        case VIR_ERR_OPERATION_INVALID: kind = .invalidState
        case VIR_ERR_NO_SUPPORT, VIR_ERR_CONFIG_UNSUPPORTED, VIR_ERR_ARGUMENT_UNSUPPORTED: kind = .unsupported
        case VIR_ERR_AUTH_FAILED, VIR_ERR_AUTH_CANCELLED, VIR_ERR_ACCESS_DENIED: kind = .authentication
        case VIR_ERR_SYSTEM_ERROR, VIR_ERR_NO_CONNECT, VIR_ERR_RPC: kind = .unreachable
        case VIR_ERR_INVALID_ARG, VIR_ERR_XML_ERROR, VIR_ERR_XML_DETAIL: kind = .invalidInput
        case VIR_ERR_DOM_EXIST: kind = .alreadyExists
        default: kind = .other
        }
        virt.virResetLastError()
        return LibvirtError(code: code, kind: kind, message: message, operation: operation)
    }

    /// Runs `body` on the connection's queue.
    private func perform<T: Sendable>(_ operation: String, _ body: @escaping @Sendable (virConnectPtr) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            queue.async { [self] in
                guard let handle else {
                    continuation.resume(throwing: LibvirtError(code: -1, kind: .unreachable, message: "connection closed", operation: operation))
                    return
                }
                continuation.resume(with: Result { try body(handle) })
            }
        }
    }

    private func registerEvents() async throws {
        let sink = self.sink
        let id = try await perform("register lifecycle events") { handle -> Int32 in
            // The registration keeps a reference to the sink; libvirt releases it through the free callback.
            let opaque = Unmanaged.passRetained(sink).toOpaque()
            let id = intercloud_virConnectDomainEventRegisterLifecycle(handle, { _, domain, event, detail, opaque in
                guard let domain, let opaque else { return 0 }
                let sink = Unmanaged<EventSink>.fromOpaque(opaque).takeUnretainedValue()
                sink.publish(DomainEvent(
                    uuid: LibvirtConnection.uuid(of: domain), name: virt.virDomainGetName(domain).map { String(cString: $0) } ?? "",
                    event: event, detail: detail))
                return 0
            }, opaque, { opaque in
                if let opaque { Unmanaged<EventSink>.fromOpaque(opaque).release() }
            })
            if id < 0 { throw Self.lastError("register lifecycle events") }
            return id
        }
        queue.sync { callbackID = id }
    }

    private static func uuid(of domain: virDomainPtr) -> String {
        var buffer = [CChar](repeating: 0, count: Int(VIR_UUID_STRING_BUFLEN))
        _ = virt.virDomainGetUUIDString(domain, &buffer)
        return buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    private static func lookup(_ handle: virConnectPtr, _ uuid: String, _ operation: String) throws -> virDomainPtr {
        // Instances are addressed by UUID; a name also works so a domain defined outside us can be named.
        if let domain = virt.virDomainLookupByUUIDString(handle, uuid) { return domain }
        virt.virResetLastError()
        if let domain = virt.virDomainLookupByName(handle, uuid) { return domain }
        throw lastError("\(operation) \(uuid)")
    }

    private static func status(_ domain: virDomainPtr, _ operation: String) throws -> DomainStatus {
        var state: Int32 = 0
        var reason: Int32 = 0
        guard virt.virDomainGetState(domain, &state, &reason, 0) == 0 else { throw lastError(operation) }
        let managed = virt.virDomainHasManagedSaveImage(domain, 0)
        if managed < 0 { virt.virResetLastError() }
        guard let xml = virt.virDomainGetXMLDesc(domain, 0) else { throw lastError(operation) }
        defer { free(xml) }
        return DomainStatus(
            uuid: uuid(of: domain), name: virt.virDomainGetName(domain).map { String(cString: $0) } ?? "", state: state,
            reason: reason, hasManagedSave: managed == 1, xml: String(cString: xml))
    }

    // MARK: Operations

    func defineDomain(xml: String) async throws -> DomainStatus {
        try await perform("define domain") { handle in
            guard let domain = virt.virDomainDefineXML(handle, xml) else { throw Self.lastError("define domain") }
            defer { virt.virDomainFree(domain) }
            return try Self.status(domain, "define domain")
        }
    }

    func listDomains() async throws -> [DomainStatus] {
        try await perform("list domains") { handle in
            var domains: UnsafeMutablePointer<virDomainPtr?>?
            let count = virt.virConnectListAllDomains(handle, &domains, 0)
            guard count >= 0 else { throw Self.lastError("list domains") }
            defer {
                for index in 0..<Int(count) { if let domain = domains?[index] { virt.virDomainFree(domain) } }
                free(domains)
            }
            var result: [DomainStatus] = []
            for index in 0..<Int(count) {
                guard let domain = domains?[index] else { continue }
                // A domain undefined between listing and reading is simply skipped.
                if let status = try? Self.status(domain, "list domains") { result.append(status) }
            }
            return result
        }
    }

    func status(of uuid: String) async throws -> DomainStatus {
        try await perform("describe") { handle in
            let domain = try Self.lookup(handle, uuid, "describe")
            defer { virt.virDomainFree(domain) }
            return try Self.status(domain, "describe \(uuid)")
        }
    }

    func apply(_ action: DomainAction, to uuid: String) async throws {
        try await perform(action.rawValue) { handle in
            let domain = try Self.lookup(handle, uuid, action.rawValue)
            defer { virt.virDomainFree(domain) }
            let result: Int32
            switch action {
            case .create: result = virt.virDomainCreate(domain)
            case .shutdown: result = virt.virDomainShutdown(domain)
            case .destroy: result = virt.virDomainDestroy(domain)
            case .reboot: result = virt.virDomainReboot(domain, 0)
            case .suspend: result = virt.virDomainSuspend(domain)
            case .resume: result = virt.virDomainResume(domain)
            case .managedSave: result = virt.virDomainManagedSave(domain, 0)
            case .managedSaveRemove: result = virt.virDomainManagedSaveRemove(domain, 0)
            case .undefine:
                // Also drop managed-save images and snapshot metadata, which would otherwise block undefine.
                let flags = VIR_DOMAIN_UNDEFINE_MANAGED_SAVE.rawValue | VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA.rawValue
                result = virt.virDomainUndefineFlags(domain, flags)
            }
            if result < 0 { throw Self.lastError("\(action.rawValue) \(uuid)") }
        }
    }

    /// A libvirt domain snapshot (`virDomainSnapshotCreateXML`), returning its name.
    func createDomainSnapshot(of uuid: String, name: String) async throws -> String {
        try await perform("snapshot") { handle in
            let domain = try Self.lookup(handle, uuid, "snapshot")
            defer { virt.virDomainFree(domain) }
            let xml = "<domainsnapshot><name>\(name)</name></domainsnapshot>"
            guard let snapshot = virt.virDomainSnapshotCreateXML(domain, xml, 0) else { throw Self.lastError("snapshot \(uuid)") }
            defer { virt.virDomainSnapshotFree(snapshot) }
            return virt.virDomainSnapshotGetName(snapshot).map { String(cString: $0) } ?? name
        }
    }

    func domainSnapshotNames(of uuid: String) async throws -> [String] {
        try await perform("list snapshots") { handle in
            let domain = try Self.lookup(handle, uuid, "list snapshots")
            defer { virt.virDomainFree(domain) }
            var snapshots: UnsafeMutablePointer<virDomainSnapshotPtr?>?
            let count = virt.virDomainListAllSnapshots(domain, &snapshots, 0)
            guard count >= 0 else { throw Self.lastError("list snapshots \(uuid)") }
            defer {
                for index in 0..<Int(count) { if let snapshot = snapshots?[index] { virt.virDomainSnapshotFree(snapshot) } }
                free(snapshots)
            }
            return (0..<Int(count)).compactMap { snapshots?[$0].flatMap { virt.virDomainSnapshotGetName($0) }.map { String(cString: $0) } }
        }
    }

    /// The domain's XML as a migration destination needs it (`VIR_DOMAIN_XML_MIGRATABLE`).
    func migratableXML(of uuid: String) async throws -> String {
        try await perform("migratable xml") { handle in
            let domain = try Self.lookup(handle, uuid, "migratable xml")
            defer { virt.virDomainFree(domain) }
            guard let xml = virt.virDomainGetXMLDesc(domain, VIR_DOMAIN_XML_MIGRATABLE.rawValue) else { throw Self.lastError("migratable xml \(uuid)") }
            defer { free(xml) }
            return String(cString: xml)
        }
    }

    /// Live migration, peer to peer (`virDomainMigrateToURI3`): this connection's daemon connects to
    /// `destinationURI` itself and moves the running guest there, copying its disks while it runs
    /// (`VIR_MIGRATE_NON_SHARED_DISK`: the two hosts share no storage) into the files named in
    /// `destinationXML`, which must exist. The destination keeps the domain defined, the source
    /// undefines it. Blocks this connection's queue for the duration (seconds for a small guest).
    func migrateLive(_ uuid: String, destinationURI: String, destinationXML: String, tls: Bool = false) async throws {
        try await perform("live migrate") { handle in
            let domain = try Self.lookup(handle, uuid, "live migrate")
            defer { virt.virDomainFree(domain) }
            var parameters: virTypedParameterPtr?
            var count: Int32 = 0
            var capacity: Int32 = 0
            defer { virt.virTypedParamsFree(parameters, count) }
            // VIR_MIGRATE_PARAM_DEST_XML
            guard virt.virTypedParamsAddString(&parameters, &count, &capacity, "destination_xml", destinationXML) == 0 else {
                throw Self.lastError("live migrate \(uuid)")
            }
            let flags = VIR_MIGRATE_LIVE.rawValue | VIR_MIGRATE_PEER2PEER.rawValue | VIR_MIGRATE_PERSIST_DEST.rawValue
                | VIR_MIGRATE_UNDEFINE_SOURCE.rawValue | VIR_MIGRATE_NON_SHARED_DISK.rawValue
                | (tls ? VIR_MIGRATE_TLS.rawValue : 0)
            guard virt.virDomainMigrateToURI3(domain, destinationURI, parameters, UInt32(count), flags) == 0 else {
                throw Self.lastError("live migrate \(uuid) to \(destinationURI)")
            }
        }
    }

    /// Host CPUs and memory (KiB).
    func nodeInfo() async throws -> (cpus: Int, memoryKiB: Int) {
        try await perform("node info") { handle in
            var info = virNodeInfo()
            guard virt.virNodeGetInfo(handle, &info) == 0 else { throw Self.lastError("node info") }
            return (Int(info.cpus), Int(info.memory))
        }
    }

    /// Whether the connection still answers (detects a daemon that died).
    func isAlive() async -> Bool {
        (try? await perform("ping") { handle in virt.virConnectIsAlive(handle) == 1 }) ?? false
    }
}

/// Fans libvirt lifecycle events out to AsyncStreams.
/// `@unchecked Sendable`: `continuations` is only touched while holding `lock`; events arrive on the
/// libvirt event thread, subscribers on any task.
final class EventSink: @unchecked Sendable {
    private let lock = NSLock()
    private var continuations: [UUID: AsyncStream<DomainEvent>.Continuation] = [:]

    func stream() -> AsyncStream<DomainEvent> {
        AsyncStream(bufferingPolicy: .bufferingNewest(256)) { continuation in
            let id = UUID()
            lock.withLock { continuations[id] = continuation }
            continuation.onTermination = { [weak self] _ in
                guard let self else { return }
                _ = self.lock.withLock { self.continuations.removeValue(forKey: id) }
            }
        }
    }

    func publish(_ event: DomainEvent) {
        let targets = lock.withLock { Array(continuations.values) }
        for continuation in targets { continuation.yield(event) }
    }
}

/// Names of libvirt's state and reason numbers for `Instance.rawState` (`shutoff:destroyed`).
enum LibvirtStateNames {
    static func state(_ state: Int32) -> String {
        switch virDomainState(rawValue: UInt32(state)) {
        case VIR_DOMAIN_NOSTATE: "nostate"
        case VIR_DOMAIN_RUNNING: "running"
        case VIR_DOMAIN_BLOCKED: "blocked"
        case VIR_DOMAIN_PAUSED: "paused"
        case VIR_DOMAIN_SHUTDOWN: "shutdown"
        case VIR_DOMAIN_SHUTOFF: "shutoff"
        case VIR_DOMAIN_CRASHED: "crashed"
        case VIR_DOMAIN_PMSUSPENDED: "pmsuspended"
        default: "state\(state)"
        }
    }

    static func reason(state: Int32, reason: Int32) -> String {
        let r = UInt32(reason)
        switch virDomainState(rawValue: UInt32(state)) {
        case VIR_DOMAIN_RUNNING:
            switch virDomainRunningReason(rawValue: r) {
            case VIR_DOMAIN_RUNNING_BOOTED: return "booted"
            case VIR_DOMAIN_RUNNING_MIGRATED: return "migrated"
            case VIR_DOMAIN_RUNNING_RESTORED: return "restored"
            case VIR_DOMAIN_RUNNING_UNPAUSED: return "unpaused"
            case VIR_DOMAIN_RUNNING_FROM_SNAPSHOT: return "from-snapshot"
            default: return "\(reason)"
            }
        case VIR_DOMAIN_PAUSED:
            switch virDomainPausedReason(rawValue: r) {
            case VIR_DOMAIN_PAUSED_USER: return "user"
            case VIR_DOMAIN_PAUSED_SAVE: return "save"
            case VIR_DOMAIN_PAUSED_SHUTTING_DOWN: return "shutting-down"
            case VIR_DOMAIN_PAUSED_CRASHED: return "crashed"
            default: return "\(reason)"
            }
        case VIR_DOMAIN_SHUTOFF:
            switch virDomainShutoffReason(rawValue: r) {
            case VIR_DOMAIN_SHUTOFF_SHUTDOWN: return "shutdown"
            case VIR_DOMAIN_SHUTOFF_DESTROYED: return "destroyed"
            case VIR_DOMAIN_SHUTOFF_CRASHED: return "crashed"
            case VIR_DOMAIN_SHUTOFF_SAVED: return "saved"
            case VIR_DOMAIN_SHUTOFF_FAILED: return "failed"
            case VIR_DOMAIN_SHUTOFF_FROM_SNAPSHOT: return "from-snapshot"
            default: return "unknown"
            }
        default: return "\(reason)"
        }
    }

    /// The numeric values the driver's state mapping needs, without importing CLibvirt there.
    static let running = Int32(VIR_DOMAIN_RUNNING.rawValue)
    static let blocked = Int32(VIR_DOMAIN_BLOCKED.rawValue)
    static let paused = Int32(VIR_DOMAIN_PAUSED.rawValue)
    static let shutdown = Int32(VIR_DOMAIN_SHUTDOWN.rawValue)
    static let shutoff = Int32(VIR_DOMAIN_SHUTOFF.rawValue)
    static let crashed = Int32(VIR_DOMAIN_CRASHED.rawValue)
    static let pmsuspended = Int32(VIR_DOMAIN_PMSUSPENDED.rawValue)
    static let pausedSaveReason = Int32(VIR_DOMAIN_PAUSED_SAVE.rawValue)
    static let runningBootedReason = Int32(VIR_DOMAIN_RUNNING_BOOTED.rawValue)
}
