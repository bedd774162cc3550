import Foundation

/// A libvirt host: domains are instances, files in `imageDirectory` are images.
///
/// Every call goes through one `LibvirtConnection` (one serial queue). libvirt lifecycle events keep
/// `cachedState(of:)` current and are offered as `lifecycleEvents()`; `describe` always asks libvirt.
public final class LibvirtDriver: CloudDriver {
    public let driverName = "libvirt"
    public let configuration: Configuration
    public let capabilities: DriverCapabilities
    let connection: LibvirtConnection
    let files = LocalImageFiles(driver: "libvirt")
    let cache = StateCache()
    private let eventTask: Task<Void, Never>

    static let metadataNamespace = "urn:intercloud:providers:0"

    /// Images are files in the image directory: without one, there are no image verbs.
    public static let imageDirectoryCondition = CapabilityCondition(option: "image-dir")

    public static let declaredCapabilities = CapabilityDeclaration(
        driver: "libvirt",
        unconditional: DriverCapabilities(verbs: [
            .listSizes, .listInstances, .describe, .create, .start, .shutdown, .destroy, .reboot, .suspend, .resume,
            .save, .restore, .terminate, .capacity, .connect,
        ]),
        conditional: [
            .init(imageDirectoryCondition, DriverCapabilities(
                verbs: [.listImages, .registerImage, .deregisterImage, .exportImage, .importImage, .snapshot],
                exportFormats: Set(ImageFormat.allCases), importFormats: Set(ImageFormat.allCases))),
        ],
        formatsNeedQemuImg: true,
        // The source's guest has a disk file only when created from an image; the destination
        // prepares the arriving disk in `instance-dir`, which defaults to beside `image-dir`.
        liveMigrationCondition: imageDirectoryCondition,
        notes: [
            "migrate live goes from one libvirt host to another whose daemon it reaches (peer to peer); "
                + "the guest keeps running while its memory and disk are copied.",
        ])

    private init(configuration: Configuration, connection: LibvirtConnection) {
        self.configuration = configuration
        self.connection = connection
        capabilities = Self.declaredCapabilities.capabilities(
            enabling: configuration.imageDirectory != nil ? [Self.imageDirectoryCondition] : [])
        let events = connection.events
        let cache = self.cache
        eventTask = Task {
            for await event in events { cache.apply(event) }
        }
    }

    deinit { eventTask.cancel() }

    /// Connects to `configuration.uri`. Fails with `.unavailable` if the daemon cannot be reached.
    public static func connect(_ configuration: Configuration) async throws -> LibvirtDriver {
        let connection: LibvirtConnection
        do { connection = try await LibvirtConnection.open(uri: configuration.uri) } catch let error as LibvirtError {
            var mapped = map(error, verb: .connect)
            if mapped.code == .backend { mapped.code = .unavailable }
            throw mapped
        }
        for directory in [configuration.imageDirectory, configuration.instanceDirectory].compactMap({ $0 }) {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        }
        return LibvirtDriver(configuration: configuration, connection: connection)
    }

    /// Runs a libvirt call for `verb`, mapping `LibvirtError` through the one funnel.
    func libvirt<T>(_ verb: Verb, _ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch let error as LibvirtError {
            throw Self.map(error, verb: verb)
        } catch let error as ProviderError {
            throw error
        } catch {
            throw ProviderError.wrap(error, driver: driverName, verb: verb)
        }
    }

    static func map(_ error: LibvirtError, verb: Verb) -> ProviderError {
        let code: ProviderError.Code = switch error.kind {
        case .noDomain: .notFound
        case .invalidState: .invalidState
        case .unsupported: .unsupported
        case .authentication: .authentication
        case .unreachable: .unavailable
        case .invalidInput, .alreadyExists: .invalidInput
        case .other: .backend
        }
        return ProviderError(
            driver: "libvirt", verb: verb, code: code, backendCode: "VIR_ERR_\(error.code)", message: error.description)
    }

    // MARK: Sizes, capacity

    public func listSizes() async throws -> [InstanceSize] { configuration.sizes }

    public func capacity() async throws -> Capacity {
        try await libvirt(.capacity) {
            let node = try await connection.nodeInfo()
            let domains = try await connection.listDomains().filter { $0.state != LibvirtStateNames.shutoff }
            let parsed = domains.map { Self.parseDomain($0.xml) }
            return Capacity(
                maxVCPU: node.cpus, usedVCPU: parsed.reduce(0) { $0 + $1.vcpu },
                maxMemoryMiB: node.memoryKiB / 1024, usedMemoryMiB: parsed.reduce(0) { $0 + $1.memoryMiB })
        }
    }

    // MARK: Instances

    public func listInstances() async throws -> [Instance] {
        try await libvirt(.listInstances) { try await connection.listDomains().map(instance) }
    }

    public func describe(instance id: String) async throws -> Instance {
        try await libvirt(.describe) { instance(try await connection.status(of: id)) }
    }

    public func cachedState(of id: String) -> (state: InstanceState, rawState: String)? { cache.state(of: id) }

    /// libvirt lifecycle events, normalized.
    public func lifecycleEvents() -> AsyncStream<InstanceEvent> {
        let events = connection.events
        return AsyncStream { continuation in
            let task = Task {
                for await event in events { continuation.yield(InstanceEvent(event)) }
                continuation.finish()
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    public func create(_ request: CreateInstanceRequest, progress: ProgressHandler?) async throws -> Instance {
        let verb = Verb.create
        guard let size = configuration.sizes.first(where: { $0.id == request.sizeID }) else {
            throw ProviderError(
                driver: driverName, verb: verb, code: .invalidInput,
                message: "unknown size \(request.sizeID); sizes: \(configuration.sizes.map(\.id).joined(separator: ", "))")
        }
        guard request.name.range(of: "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$", options: .regularExpression) != nil else {
            throw ProviderError(driver: driverName, verb: verb, code: .invalidInput, message: "invalid domain name \"\(request.name)\"")
        }
        var disk: URL?
        var diskFormat = "qcow2"
        if configuration.imageDirectory != nil {
            guard let image = try imageManifest(request.imageID) else {
                throw ProviderError.notFound(driver: driverName, verb: verb, "image \(request.imageID)")
            }
            disk = configuration.instanceDirectory!.appendingPathComponent("\(request.name)-\(UUID().uuidString.prefix(8)).qcow2")
            progress?(ProgressEvent(driver: driverName, verb: verb, completed: 0, total: 3, message: "creating overlay disk"))
            do {
                try await QemuImg.run([
                    "create", "-q", "-f", "qcow2", "-F", image.format.rawValue, "-b", image.file.path, disk!.path,
                ])
                try chown(disk!)
            } catch {
                if let disk { try? FileManager.default.removeItem(at: disk) }
                throw files.mapError(error, verb: verb)
            }
        } else if request.imageID != "none" {
            throw ProviderError.notFound(
                driver: driverName, verb: verb, "image \(request.imageID) (no image directory configured; use image \"none\")")
        } else {
            diskFormat = ""
        }
        let xml = domainXML(request: request, size: size, disk: disk, diskFormat: diskFormat)
        progress?(ProgressEvent(driver: driverName, verb: verb, completed: 1, total: 3, message: "defining domain"))
        var defined: DomainStatus?
        do {
            defined = try await connection.defineDomain(xml: xml)
            progress?(ProgressEvent(driver: driverName, verb: verb, completed: 2, total: 3, message: "starting domain"))
            try await connection.apply(.create, to: defined!.uuid)
            let status = try await connection.status(of: defined!.uuid)
            progress?(ProgressEvent(driver: driverName, verb: verb, completed: 3, total: 3, message: "started"))
            return instance(status)
        } catch {
            // Undo in reverse: the domain definition, then the disk. Nothing half-made stays behind.
            if let uuid = defined?.uuid {
                try? await connection.apply(.destroy, to: uuid)
                try? await connection.apply(.undefine, to: uuid)
            }
            if let disk { try? FileManager.default.removeItem(at: disk) }
            if let error = error as? LibvirtError { throw Self.map(error, verb: verb) }
            throw ProviderError.wrap(error, driver: driverName, verb: verb)
        }
    }

    public func perform(_ verb: Verb, instance id: String) async throws -> Instance {
        try await libvirt(verb) {
            switch verb {
            case .start:
                try await connection.apply(.create, to: id)
            case .shutdown: try await connection.apply(.shutdown, to: id)
            case .destroy: try await connection.apply(.destroy, to: id)
            case .reboot: try await connection.apply(.reboot, to: id)
            case .suspend:
                // QEMU accepts suspending a paused domain as a no-op; we report it like every other driver.
                let status = try await connection.status(of: id)
                guard Self.state(status) == .running else {
                    throw ProviderError.invalidState(driver: driverName, verb: verb, "instance \(id) is \(Self.rawState(status)); cannot suspend it")
                }
                try await connection.apply(.suspend, to: id)
            case .resume:
                let status = try await connection.status(of: id)
                guard Self.state(status) == .paused else {
                    throw ProviderError.invalidState(driver: driverName, verb: verb, "instance \(id) is \(Self.rawState(status)); cannot resume it")
                }
                try await connection.apply(.resume, to: id)
            case .save: try await connection.apply(.managedSave, to: id)
            case .restore:
                guard try await connection.status(of: id).hasManagedSave else {
                    throw ProviderError.invalidState(driver: driverName, verb: verb, "instance \(id) has no saved state to restore")
                }
                try await connection.apply(.create, to: id)
            default:
                throw ProviderError(driver: driverName, verb: verb, code: .invalidInput, message: "\(verb) is not an instance action")
            }
            return instance(try await connection.status(of: id))
        }
    }

    public func terminate(instance id: String) async throws {
        try await libvirt(.terminate) {
            let status = try await connection.status(of: id)
            if status.state != LibvirtStateNames.shutoff {
                do { try await connection.apply(.destroy, to: id) } catch let error as LibvirtError where error.kind == .invalidState {}
            }
            try await connection.apply(.undefine, to: id)
            if let disk = Self.parseDomain(status.xml).disk, let directory = configuration.instanceDirectory,
               disk.hasPrefix(directory.path) {
                try? FileManager.default.removeItem(atPath: disk)
            }
        }
    }

    /// A libvirt domain snapshot (internal to the hypervisor, unlike `snapshot`, which makes an image).
    public func checkpoint(instance id: String, name: String) async throws -> String {
        try await libvirt(.snapshot) { try await connection.createDomainSnapshot(of: id, name: name) }
    }

    public func checkpoints(instance id: String) async throws -> [String] {
        try await libvirt(.snapshot) { try await connection.domainSnapshotNames(of: id) }
    }

    /// Whether the daemon still answers.
    public func isAlive() async -> Bool { await connection.isAlive() }

    // MARK: Mapping

    static func state(_ status: DomainStatus) -> InstanceState {
        switch status.state {
        case LibvirtStateNames.running, LibvirtStateNames.blocked: .running
        case LibvirtStateNames.paused: status.reason == LibvirtStateNames.pausedSaveReason ? .stopping : .paused
        case LibvirtStateNames.pmsuspended: .paused
        case LibvirtStateNames.shutdown: .stopping
        case LibvirtStateNames.shutoff: status.hasManagedSave ? .saved : .stopped
        case LibvirtStateNames.crashed: .error
        default: .unknown
        }
    }

    static func rawState(_ status: DomainStatus) -> String {
        "\(LibvirtStateNames.state(status.state)):\(LibvirtStateNames.reason(state: status.state, reason: status.reason))"
            + (status.hasManagedSave ? "+managedsave" : "")
    }

    func instance(_ status: DomainStatus) -> Instance {
        let parsed = Self.parseDomain(status.xml)
        var extra: [String: String] = ["uuid": status.uuid, "vcpu": String(parsed.vcpu), "memoryMiB": String(parsed.memoryMiB)]
        if let disk = parsed.disk { extra["disk"] = disk }
        if let console = parsed.consoleLog { extra["consoleLog"] = console }
        var state = Self.state(status)
        var rawState = Self.rawState(status)
        // A running emulator is not yet a running guest: with a boot marker configured, a guest that
        // was booted here counts as running only once its console log shows the marker. One that
        // arrived running (live migration) or was restored from a saved state booted before: its
        // log here starts after the marker, so it is not asked for.
        if state == .running, status.reason == LibvirtStateNames.runningBootedReason, let marker = configuration.bootMarker,
           let log = parsed.consoleLog, !Self.consoleLog(log, contains: marker) {
            state = .pending
            rawState += "+booting"
        }
        return Instance(
            id: status.uuid, name: status.name, sizeID: parsed.size, imageID: parsed.image, state: state,
            rawState: rawState, addresses: [], createdAt: parsed.created, extra: extra)
    }

    /// Whether the first MiB of the console log holds `marker`. Bounded because the guest writes the
    /// log: a boot marker comes early, and a chatty guest must not make every describe read megabytes.
    static func consoleLog(_ path: String, contains marker: String) -> Bool {
        guard let handle = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? handle.close() }
        guard let data = try? handle.read(upToCount: 1 << 20) else { return false }
        return data.range(of: Data(marker.utf8)) != nil
    }

    struct ParsedDomain {
        var size: String?
        var image: String?
        var created: Date?
        var vcpu = 0
        var memoryMiB = 0
        var disk: String?
        var consoleLog: String?
    }

    static func parseDomain(_ xml: String) -> ParsedDomain {
        var parsed = ParsedDomain()
        guard let root = try? XMLTree.parse(Data(xml.utf8)) else { return parsed }
        if let metadata = root.child("metadata")?.children.first(where: { $0.name.hasSuffix("instance") }) {
            parsed.size = metadata.string("size")
            parsed.image = metadata.string("image")
            parsed.created = metadata.string("created").flatMap { ISO8601DateFormatter().date(from: $0) }
        }
        parsed.vcpu = Int(root.string("vcpu") ?? "") ?? 0
        // libvirt normalizes <memory> to KiB.
        parsed.memoryMiB = (Int(root.string("memory") ?? "") ?? 0) / 1024
        parsed.disk = root.at("devices")?.children.first { $0.name == "disk" }?.child("source")?.attributes["file"]
        parsed.consoleLog = root.at("devices")?.children.first { $0.name == "serial" }?.child("source")?.attributes["path"]
        return parsed
    }

    func domainXML(request: CreateInstanceRequest, size: InstanceSize, disk: URL?, diskFormat: String) -> String {
        func escape(_ text: String) -> String {
            text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
                .replacingOccurrences(of: "'", with: "&apos;").replacingOccurrences(of: "\"", with: "&quot;")
        }
        var os = "<type arch='x86_64'>hvm</type>"
        if let boot = configuration.directBoot {
            os += "<kernel>\(escape(boot.kernel.path))</kernel><initrd>\(escape(boot.initrd.path))</initrd>"
            os += "<cmdline>\(escape(boot.commandLine))</cmdline>"
        } else {
            os += "<boot dev='hd'/>"
        }
        var devices = ""
        if let disk {
            devices += "<disk type='file' device='disk'><driver name='qemu' type='\(diskFormat)'/>"
            devices += "<source file='\(escape(disk.path))'/><target dev='vda' bus='virtio'/></disk>"
        }
        if configuration.domainType != "test", let directory = configuration.instanceDirectory {
            let log = directory.appendingPathComponent("\(request.name).console.log")
            devices += "<serial type='file'><source path='\(escape(log.path))'/><target port='0'/></serial>"
        }
        let created = ISO8601DateFormatter().string(from: Date())
        return """
            <domain type='\(configuration.domainType)'>
              <name>\(escape(request.name))</name>
              <memory unit='MiB'>\(size.memoryMiB)</memory>
              <vcpu>\(size.vCPU)</vcpu>
              <metadata><ic:instance xmlns:ic='\(Self.metadataNamespace)'><ic:size>\(escape(size.id))</ic:size><ic:image>\(escape(request.imageID))</ic:image><ic:created>\(created)</ic:created></ic:instance></metadata>
              <os>\(os)</os>
              <features><acpi/></features>
              <on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>
              <devices>\(devices)</devices>
            </domain>
            """
    }

    func chown(_ url: URL) throws {
        guard let owner = configuration.fileOwner else { return }
        try FileManager.default.setAttributes(
            [.ownerAccountID: NSNumber(value: owner.uid), .groupOwnerAccountID: NSNumber(value: owner.gid)],
            ofItemAtPath: url.path)
    }
}

/// A normalized lifecycle event.
public struct InstanceEvent: Sendable, Hashable {
    public var instanceID: String
    public var name: String
    /// libvirt's event name (`started`, `suspended`, `resumed`, `stopped`, `shutdown`, `pmsuspended`, `crashed`, `defined`, `undefined`).
    public var event: String
    /// The state the event implies, when it implies one.
    public var state: InstanceState?

    init(_ event: DomainEvent) {
        instanceID = event.uuid
        name = event.name
        // VIR_DOMAIN_EVENT_* numbering (stable ABI): 0 defined, 1 undefined, 2 started, 3 suspended,
        // 4 resumed, 5 stopped, 6 shutdown, 7 pmsuspended, 8 crashed.
        switch event.event {
        case 0: (self.event, state) = ("defined", nil)
        case 1: (self.event, state) = ("undefined", .terminated)
        case 2: (self.event, state) = ("started", .running)
        case 3: (self.event, state) = ("suspended", .paused)
        case 4: (self.event, state) = ("resumed", .running)
        case 5: (self.event, state) = ("stopped", .stopped)
        case 6: (self.event, state) = ("shutdown", .stopping)
        case 7: (self.event, state) = ("pmsuspended", .paused)
        case 8: (self.event, state) = ("crashed", .error)
        default: (self.event, state) = ("event\(event.event)", nil)
        }
    }
}

/// The last state each domain's events reported.
/// `@unchecked Sendable`: `states` is only touched while holding `lock`.
final class StateCache: @unchecked Sendable {
    private let lock = NSLock()
    private var states: [String: (InstanceState, String)] = [:]

    func apply(_ event: DomainEvent) {
        let normalized = InstanceEvent(event)
        guard let state = normalized.state else { return }
        lock.withLock { states[event.uuid] = (state, "event:\(normalized.event):\(event.detail)") }
    }

    func state(of id: String) -> (state: InstanceState, rawState: String)? {
        lock.withLock { states[id].map { ($0.0, $0.1) } }
    }
}
