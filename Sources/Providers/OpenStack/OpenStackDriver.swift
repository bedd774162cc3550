import Foundation

/// An OpenStack cloud through its REST APIs: Keystone v3 for the token and service catalog, Nova
/// (compute API microversion `computeMicroversion`) for servers, flavors and limits, Glance v2 for images.
///
/// The lifecycle verbs map onto Nova's server actions; OpenStack's words and ours differ in two places:
///
/// | verb | Nova | state |
/// |------|------|-------|
/// | shutdown / start | `os-stop` / `os-start` | SHUTOFF |
/// | suspend / resume (pause in memory) | `pause` / `unpause` | PAUSED |
/// | save / restore (memory to disk) | `suspend` / `resume` | SUSPENDED |
/// | reboot | `reboot` SOFT | REBOOT → ACTIVE |
/// | snapshot | `createImage` | a Glance image |
///
/// Nova has no forced power-off (`os-stop` waits for the guest up to the image's shutdown timeout),
/// so `destroy` is not declared, nor is `registerImage` (Glance images are created by uploading).
public final class OpenStackDriver: CloudDriver {
    public let driverName = "openstack"
    public let configuration: Configuration
    public let capabilities: DriverCapabilities
    /// 2.37: `"networks": "none"`; 2.45: `createImage` answers the image id; 2.47: a server shows its
    /// flavor by name. Every Nova since Queens (2018) serves 2.60.
    static let computeMicroversion = "2.60"

    let session: KeystoneSession
    let transport: any HTTPTransport
    /// Image uploads and downloads stream files from and to disk, so they go through a transport
    /// of their own, not `transport` (which reads whole bodies into memory).
    let transfers: HTTPClientTransport
    let files = LocalImageFiles(driver: "openstack")

    /// No `destroy` and no `registerImage` (see the type's comment); image files are converted
    /// locally with `qemu-img` before upload and after download.
    public static let declaredCapabilities = CapabilityDeclaration(
        driver: "openstack",
        unconditional: DriverCapabilities(
            verbs: [
                .listSizes, .listInstances, .describe, .create, .start, .shutdown, .reboot, .suspend, .resume, .save,
                .restore, .snapshot, .terminate, .listImages, .deregisterImage, .exportImage, .importImage, .capacity, .connect,
            ],
            exportFormats: Set(ImageFormat.allCases), importFormats: Set(ImageFormat.allCases)),
        formatsNeedQemuImg: true,
        notes: [
            "Nova has no forced power-off, so there is no cancel; suspend/resume are Nova's pause/unpause, "
                + "save/restore its suspend/resume.",
        ])

    public init(configuration: Configuration, transport: any HTTPTransport = HTTPClientTransport()) {
        self.configuration = configuration
        self.transport = transport
        // An idle timeout: a transfer of any size runs as long as bytes keep moving.
        transfers = HTTPClientTransport(timeout: configuration.requestTimeout)
        session = KeystoneSession(
            driver: "openstack", authURL: configuration.authURL, credentials: configuration.credentials,
            region: configuration.region, interface: configuration.interface, transport: transport, retry: configuration.retry)
        capabilities = Self.declaredCapabilities.capabilities(enabling: [])
    }

    /// Authenticates and checks that Nova serves `computeMicroversion`, so a wrong URL, a refused
    /// credential or a too old cloud is reported when the driver is made, not at its first use.
    public func connect() async throws {
        let (data, _) = try await call(.compute, "GET", "", verb: .connect)
        struct Versions: Decodable {
            struct Version: Decodable {
                var version: String
                var min_version: String
            }
            var version: Version
        }
        guard let version = try? JSONDecoder().decode(Versions.self, from: data).version else { return }
        func parts(_ text: String) -> [Int] { text.split(separator: ".").compactMap { Int($0) } }
        if !version.version.isEmpty, parts(version.version).lexicographicallyPrecedes(parts(Self.computeMicroversion)) {
            throw ProviderError(
                driver: driverName, verb: .connect, code: .unsupported,
                message: "Nova serves compute microversions \(version.min_version)–\(version.version); this driver needs \(Self.computeMicroversion)")
        }
    }

    // MARK: Requests

    enum Service: String {
        case compute, image
    }

    /// One authenticated request to a service, relative to its catalog endpoint. A token a service
    /// refuses (401) is renewed once and the request sent again.
    func call(
        _ service: Service, _ method: String, _ path: String, query: [(String, String)] = [], body: Data? = nil,
        verb: Verb, absolute: URL? = nil
    ) async throws -> (Data, HTTPResponse) {
        var renewed = false
        while true {
            let token = try await session.token(verb: verb)
            let url = try absolute ?? endpointURL(service, path: path, query: query, token: token, verb: verb)
            var request = HTTPRequest(url: url, method: method, body: body ?? Data())
            request.setValue(token.value, forHTTPHeaderField: "X-Auth-Token")
            request.setValue("application/json", forHTTPHeaderField: "Accept")
            if service == .compute {
                request.setValue("compute \(Self.computeMicroversion)", forHTTPHeaderField: "OpenStack-API-Version")
            }
            if body != nil { request.setValue("application/json", forHTTPHeaderField: "Content-Type") }
            do {
                return try await OpenStackHTTP.send(
                    request, transport: transport, retry: configuration.retry, driver: driverName, verb: verb,
                    action: "\(method) \(url.path)")
            } catch let error as ProviderError where error.code == .authentication && !renewed {
                await session.invalidate(token.value)
                renewed = true
            }
        }
    }

    func endpointURL(_ service: Service, path: String, query: [(String, String)], token: KeystoneSession.Token, verb: Verb) throws -> URL {
        let base = try session.endpoint(service.rawValue, token: token, verb: verb)
        var components = URLComponents(url: base, resolvingAgainstBaseURL: false)!
        var basePath = components.path
        while basePath.hasSuffix("/") { basePath.removeLast() }
        components.path = basePath + path
        if !query.isEmpty { components.queryItems = query.map { URLQueryItem(name: $0.0, value: $0.1) } }
        guard let url = components.url else {
            throw ProviderError(driver: driverName, verb: verb, code: .invalidInput, message: "cannot form a URL from \(base) and \(path)")
        }
        return url
    }

    /// A link the service returned (a next page), accepted only on the service's own scheme, host and
    /// port: the token goes with every request, so a link elsewhere would hand it to someone else.
    func sameOrigin(_ link: String, service: Service, verb: Verb) async throws -> URL {
        let token = try await session.token(verb: verb)
        let base = try session.endpoint(service.rawValue, token: token, verb: verb)
        guard let url = URL(string: link, relativeTo: base)?.absoluteURL, url.scheme == base.scheme, url.host == base.host,
              url.port == base.port
        else {
            throw ProviderError(
                driver: driverName, verb: verb, code: .backend,
                message: "the \(service.rawValue) service linked to \(link), outside its endpoint \(base.absoluteString)")
        }
        return url
    }

    func json(_ object: [String: Any], verb: Verb) throws -> Data {
        do { return try JSONSerialization.data(withJSONObject: object) } catch {
            throw ProviderError(driver: driverName, verb: verb, code: .invalidInput, message: "cannot encode request: \(error)")
        }
    }

    func decode<T: Decodable>(_ type: T.Type, _ data: Data, verb: Verb, what: String) throws -> T {
        do { return try JSONDecoder().decode(type, from: data) } catch {
            throw ProviderError(driver: driverName, verb: verb, code: .backend, message: "unexpected \(what) answer: \(error)")
        }
    }

    // MARK: Sizes and capacity

    struct Flavor: Decodable {
        var id: String
        var name: String
        var vcpus: Int
        var ram: Int
        var disk: Int
    }

    func flavors(verb: Verb) async throws -> [Flavor] {
        struct Body: Decodable { var flavors: [Flavor] }
        let (data, _) = try await call(.compute, "GET", "/flavors/detail", verb: verb)
        return try decode(Body.self, data, verb: verb, what: "flavor list").flavors
    }

    /// Flavors as sizes, named by flavor name (what operators and `openstack server create --flavor`
    /// use), priced from the configuration.
    public func listSizes() async throws -> [InstanceSize] {
        try await flavors(verb: .listSizes).map { flavor in
            InstanceSize(
                id: flavor.name, name: flavor.name, vCPU: flavor.vcpus, memoryMiB: flavor.ram, diskGiB: flavor.disk,
                pricePerHour: configuration.prices[flavor.name], extra: ["flavorID": flavor.id])
        }.sorted { ($0.vCPU, $0.memoryMiB, $0.id) < ($1.vCPU, $1.memoryMiB, $1.id) }
    }

    public func capacity() async throws -> Capacity {
        struct Body: Decodable {
            struct Limits: Decodable { var absolute: [String: Int] }
            var limits: Limits
        }
        let (data, _) = try await call(.compute, "GET", "/limits", verb: .capacity)
        let absolute = try decode(Body.self, data, verb: .capacity, what: "limits").limits.absolute
        // -1 is Nova's "unlimited".
        func limit(_ key: String) -> Int? { absolute[key].flatMap { $0 < 0 ? nil : $0 } }
        return Capacity(
            maxInstances: limit("maxTotalInstances"), usedInstances: absolute["totalInstancesUsed"] ?? 0,
            maxVCPU: limit("maxTotalCores"), usedVCPU: absolute["totalCoresUsed"] ?? 0,
            maxMemoryMiB: limit("maxTotalRAMSize"), usedMemoryMiB: absolute["totalRAMUsed"] ?? 0)
    }

    // MARK: Servers

    struct Server: Decodable {
        struct FlavorSummary: Decodable { var original_name: String? }
        struct Fault: Decodable {
            var message: String?
            var code: Int?
        }
        /// One entry of Nova's `addresses` (network name → entries): the address, its IP version and
        /// whether it is the port's own (`fixed`) or a floating IP NATed to it (`floating`).
        struct Address: Decodable {
            var addr: String
            var version: Int?
            var type: String?

            enum CodingKeys: String, CodingKey {
                case addr, version
                case type = "OS-EXT-IPS:type"
            }
        }
        var id: String
        var name: String
        var status: String
        var taskState: String?
        var vmState: String?
        var powerState: Int?
        var availabilityZone: String?
        var flavor: FlavorSummary?
        var imageID: String?
        var addresses: [String: [Address]]?
        var created: String?
        var fault: Fault?
        var keyName: String?

        enum CodingKeys: String, CodingKey {
            case id, name, status, flavor, image, addresses, created, fault
            case taskState = "OS-EXT-STS:task_state"
            case vmState = "OS-EXT-STS:vm_state"
            case powerState = "OS-EXT-STS:power_state"
            case availabilityZone = "OS-EXT-AZ:availability_zone"
            case keyName = "key_name"
        }

        struct ImageReference: Decodable { var id: String }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            id = try container.decode(String.self, forKey: .id)
            name = try container.decodeIfPresent(String.self, forKey: .name) ?? id
            status = try container.decodeIfPresent(String.self, forKey: .status) ?? "UNKNOWN"
            taskState = try container.decodeIfPresent(String.self, forKey: .taskState)
            vmState = try container.decodeIfPresent(String.self, forKey: .vmState)
            powerState = try container.decodeIfPresent(Int.self, forKey: .powerState)
            availabilityZone = try container.decodeIfPresent(String.self, forKey: .availabilityZone)
            flavor = try container.decodeIfPresent(FlavorSummary.self, forKey: .flavor)
            // A server booted from a volume has `"image": ""`.
            imageID = (try? container.decodeIfPresent(ImageReference.self, forKey: .image))?.id
            addresses = try container.decodeIfPresent([String: [Address]].self, forKey: .addresses)
            created = try container.decodeIfPresent(String.self, forKey: .created)
            fault = try container.decodeIfPresent(Fault.self, forKey: .fault)
            keyName = try container.decodeIfPresent(String.self, forKey: .keyName)
        }
    }

    /// Nova's status, refined by the task running on the server: `ACTIVE` while `powering-off` is on
    /// its way to stopped, not running.
    static func state(status: String, taskState: String?) -> InstanceState {
        if let task = taskState {
            switch task {
            case "deleting", "soft-deleting": return .terminating
            case "powering-off", "pausing", "suspending", "shelving", "shelving_image_pending_upload",
                 "shelving_image_uploading", "shelving_offloading":
                return .stopping
            case "rebooting", "reboot_pending", "reboot_started", "rebooting_hard", "reboot_pending_hard",
                 "reboot_started_hard":
                return .rebooting
            case "powering-on", "unpausing", "resuming", "unshelving", "spawning", "scheduling", "networking",
                 "block_device_mapping", "rebuilding", "rebuild_spawning", "rebuild_block_device_mapping":
                return .pending
            default: break  // image_snapshot and the like: the server keeps its state meanwhile.
            }
        }
        switch status {
        case "BUILD", "REBUILD": return .pending
        case "ACTIVE": return .running
        case "REBOOT", "HARD_REBOOT": return .rebooting
        case "SHUTOFF", "SHELVED", "SHELVED_OFFLOADED": return .stopped
        case "PAUSED": return .paused
        case "SUSPENDED": return .saved
        case "DELETED", "SOFT_DELETED": return .terminated
        case "ERROR": return .error
        default: return .unknown
        }
    }

    static func instance(_ server: Server) -> Instance {
        var extra: [String: String] = [:]
        if let task = server.taskState { extra["taskState"] = task }
        if let vm = server.vmState { extra["vmState"] = vm }
        if let power = server.powerState { extra["powerState"] = String(power) }
        if let zone = server.availabilityZone { extra["availabilityZone"] = zone }
        if let key = server.keyName { extra["keyName"] = key }
        if let fault = server.fault?.message { extra["fault"] = fault }
        let networks = (server.addresses ?? [:]).filter { !$0.value.isEmpty }.keys.sorted()
        if !networks.isEmpty { extra["networks"] = networks.joined(separator: ",") }
        return Instance(
            id: server.id, name: server.name, sizeID: server.flavor?.original_name, imageID: server.imageID,
            state: state(status: server.status, taskState: server.taskState),
            rawState: server.taskState.map { "\(server.status):\($0)" } ?? server.status, addresses: addresses(server.addresses),
            createdAt: server.created.flatMap(OpenStackDriver.date), extra: extra)
    }

    /// Nova's `addresses` as one list, the address to reach the server first: floating IPs before
    /// fixed ones (a floating IP is the one reachable from outside the server's network), IPv4 before
    /// IPv6, then networks by name and each network's addresses in Nova's order. A server created with
    /// `"networks": "none"` has none.
    static func addresses(_ byNetwork: [String: [Server.Address]]?) -> [String] {
        let all = (byNetwork ?? [:]).keys.sorted().flatMap { byNetwork?[$0] ?? [] }
        let ranked = all.enumerated().sorted { a, b in
            func rank(_ address: Server.Address) -> (Int, Int) {
                (address.type == "floating" ? 0 : 1, address.version == 6 || address.addr.contains(":") ? 1 : 0)
            }
            return (rank(a.element).0, rank(a.element).1, a.offset) < (rank(b.element).0, rank(b.element).1, b.offset)
        }
        var seen = Set<String>()
        return ranked.map(\.element.addr).filter { seen.insert($0).inserted }
    }

    static func date(_ text: String) -> Date? { OpenStackHTTP.date(text) }

    public func listInstances() async throws -> [Instance] {
        try await listServers(filters: [:], verb: .listInstances)
    }

    /// Servers with Nova's list filters (`name` (a regular expression), `status`, `image`, `flavor`,
    /// `changes-since`), one page of `pageSize` at a time, following `servers_links` until the end.
    public func listServers(filters: [String: String], verb: Verb = .listInstances) async throws -> [Instance] {
        struct Body: Decodable {
            struct Link: Decodable {
                var rel: String
                var href: String
            }
            var servers: [Server]
            var servers_links: [Link]?
        }
        var instances: [Instance] = []
        var query = filters.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        query.append(("limit", String(max(1, min(configuration.pageSize, 1000)))))
        var next: URL?
        var pages = 0
        repeat {
            let (data, _) = try await call(.compute, "GET", "/servers/detail", query: query, verb: verb, absolute: next)
            let body = try decode(Body.self, data, verb: verb, what: "server list")
            instances += body.servers.map(Self.instance)
            next = nil
            if let link = body.servers_links?.first(where: { $0.rel == "next" }) {
                next = try await sameOrigin(link.href, service: .compute, verb: verb)
            }
            pages += 1
            // A `next` that never ends would loop forever: stop at a million servers.
            if pages * configuration.pageSize > 1_000_000 || body.servers.isEmpty { break }
        } while next != nil
        return instances
    }

    public func describe(instance id: String) async throws -> Instance {
        try await server(id, verb: .describe)
    }

    func server(_ id: String, verb: Verb) async throws -> Instance {
        struct Body: Decodable { var server: Server }
        try checkIdentifier(id, verb: verb, what: "instance")
        let (data, _) = try await call(.compute, "GET", "/servers/\(id)", verb: verb)
        return Self.instance(try decode(Body.self, data, verb: verb, what: "server").server)
    }

    /// Ids go into URL paths: anything but a plain id would address another resource.
    func checkIdentifier(_ id: String, verb: Verb, what: String) throws {
        let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-_."))
        guard !id.isEmpty, id.count <= 255, id != ".", id != "..", id.unicodeScalars.allSatisfy({ allowed.contains($0) }) else {
            throw ProviderError.notFound(driver: driverName, verb: verb, "\(what) \(id)")
        }
    }

    /// Creates a server from a flavor (by name or id) and a Glance image id. `extra`: `userData` (text,
    /// sent base64), `keyName`, `network` (a Neutron network id; default: the driver's `network`, else
    /// none), `availabilityZone`.
    public func create(_ request: CreateInstanceRequest, progress: ProgressHandler?) async throws -> Instance {
        progress?(ProgressEvent(driver: driverName, verb: .create, completed: 0, total: 2, message: "finding flavor \(request.sizeID)"))
        let flavors = try await flavors(verb: .create)
        guard let flavor = flavors.first(where: { $0.name == request.sizeID }) ?? flavors.first(where: { $0.id == request.sizeID }) else {
            throw ProviderError.notFound(driver: driverName, verb: .create, "flavor \(request.sizeID)")
        }
        var attributes: [String: Any] = ["name": request.name, "flavorRef": flavor.id, "imageRef": request.imageID]
        if let network = request.extra["network"] ?? configuration.network {
            attributes["networks"] = [["uuid": network]]
        } else {
            attributes["networks"] = "none"
        }
        if let userData = request.extra["userData"] { attributes["user_data"] = Data(userData.utf8).base64EncodedString() }
        if let key = request.extra["keyName"] { attributes["key_name"] = key }
        if let zone = request.extra["availabilityZone"] { attributes["availability_zone"] = zone }
        let body = try json(["server": attributes], verb: .create)
        progress?(ProgressEvent(driver: driverName, verb: .create, completed: 1, total: 2, message: "POST /servers"))
        struct Created: Decodable {
            struct Reference: Decodable { var id: String }
            var server: Reference
        }
        let (data, _) = try await call(.compute, "POST", "/servers", body: body, verb: .create)
        let id = try decode(Created.self, data, verb: .create, what: "server create").server.id
        progress?(ProgressEvent(driver: driverName, verb: .create, completed: 2, total: 2, message: "building \(id)"))
        return try await server(id, verb: .create)
    }

    public func perform(_ verb: Verb, instance id: String) async throws -> Instance {
        let action: [String: Any]
        switch verb {
        case .start: action = ["os-start": NSNull()]
        case .shutdown: action = ["os-stop": NSNull()]
        case .reboot: action = ["reboot": ["type": "SOFT"]]
        case .suspend: action = ["pause": NSNull()]
        case .resume: action = ["unpause": NSNull()]
        case .save: action = ["suspend": NSNull()]
        case .restore: action = ["resume": NSNull()]
        case .destroy:
            throw unsupported(verb, "Nova has no forced power-off; shutdown (os-stop) powers off after the image's os_shutdown_timeout")
        default:
            throw ProviderError(driver: driverName, verb: verb, code: .invalidInput, message: "\(verb) is not an instance action")
        }
        try checkIdentifier(id, verb: verb, what: "instance")
        _ = try await call(.compute, "POST", "/servers/\(id)/action", body: try json(action, verb: verb), verb: verb)
        return try await server(id, verb: verb)
    }

    /// The last `lines` of the server's serial console (`os-getConsoleOutput`), as
    /// `openstack console log show` prints it.
    public func consoleOutput(instance id: String, lines: Int? = nil) async throws -> String {
        try checkIdentifier(id, verb: .describe, what: "instance")
        var request: [String: Any] = [:]
        if let lines { request["length"] = lines }
        let body = try json(["os-getConsoleOutput": request], verb: .describe)
        struct Output: Decodable { var output: String }
        let (data, _) = try await call(.compute, "POST", "/servers/\(id)/action", body: body, verb: .describe)
        return try decode(Output.self, data, verb: .describe, what: "console output").output
    }

    public func terminate(instance id: String) async throws {
        try checkIdentifier(id, verb: .terminate, what: "instance")
        _ = try await call(.compute, "DELETE", "/servers/\(id)", verb: .terminate)
    }
}
