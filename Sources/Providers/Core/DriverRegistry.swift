import Foundation

/// How a driver is chosen and configured from plain settings (a `[providers.NAME]` TOML table, CLI
/// flags), like Libcloud's `DRIVERS` registry: one place that knows every driver kind and its options.
public struct DriverSettings: Sendable, Hashable {
    /// `simcloud`, `libvirt`, `ec2` or `openstack`.
    public var kind: String
    /// Option names as in the configuration file (`data-dir`, `uri`, `endpoint`, ...).
    public var options: [String: String]

    public init(kind: String, options: [String: String] = [:]) {
        self.kind = kind
        self.options = options
    }
}

public enum DriverRegistry {
    /// Every driver kind and the options it reads.
    public static let kinds: [String: [String]] = [
        "simcloud": ["data-dir", "boot-delay-ms", "shutdown-delay-ms", "terminate-delay-ms", "max-instances", "max-vcpu", "max-memory-mib"],
        "libvirt": ["uri", "image-dir", "instance-dir", "domain-type", "kernel", "initrd", "cmdline", "file-owner-uid", "boot-marker"],
        "ec2": ["endpoint", "s3-endpoint", "region", "image-owners", "image-bucket", "import-export", "page-size"],
        "openstack": [
            "auth-url", "region", "interface", "user", "user-domain", "project", "project-domain", "application-credential-id",
            "network", "prices", "currency", "kernel-image", "ramdisk-image", "kernel-command-line", "page-size",
            "image-timeout-seconds",
        ],
    ]

    /// Every driver type, in the lifecycle table's column order. Each kind of `kinds` is here.
    public static let drivers: [any CloudDriver.Type] = [SimCloud.self, LibvirtDriver.self, EC2Driver.self, OpenStackDriver.self]

    /// Builds a driver. Secrets come from `environment`, never from the settings file: EC2's from
    /// `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (`AWS_SESSION_TOKEN` optional), OpenStack's from
    /// `OS_PASSWORD` or `OS_APPLICATION_CREDENTIAL_SECRET` (with the other `OS_*` variables the
    /// `openstack` CLI reads for what the options leave out). An OpenStack driver has authenticated and
    /// checked the compute API version when this returns.
    public static func make(
        _ settings: DriverSettings, environment: [String: String] = ProcessInfo.processInfo.environment
    ) async throws -> any CloudDriver {
        let options = settings.options
        func invalid(_ message: String) -> ProviderError {
            ProviderError(driver: settings.kind, verb: .connect, code: .invalidInput, message: message)
        }
        guard let known = kinds[settings.kind] else {
            throw invalid("unknown driver \(settings.kind); drivers: \(kinds.keys.sorted().joined(separator: ", "))")
        }
        let unknown = Set(options.keys).subtracting(known)
        guard unknown.isEmpty else {
            throw invalid("unknown option(s) \(unknown.sorted().joined(separator: ", ")); \(settings.kind) reads \(known.joined(separator: ", "))")
        }
        func integer(_ key: String) throws -> Int? {
            guard let text = options[key] else { return nil }
            guard let value = Int(text) else { throw invalid("\(key) must be an integer, not \(text)") }
            return value
        }
        switch settings.kind {
        case "simcloud":
            guard let directory = options["data-dir"] else { throw invalid("simcloud needs data-dir") }
            var delays = SimCloud.Delays()
            if let boot = try integer("boot-delay-ms") { delays.boot = .milliseconds(boot) }
            if let shutdown = try integer("shutdown-delay-ms") { delays.shutdown = .milliseconds(shutdown) }
            if let terminate = try integer("terminate-delay-ms") { delays.terminate = .milliseconds(terminate) }
            let limits = SimCloud.Limits(
                maxInstances: try integer("max-instances") ?? 20, maxVCPU: try integer("max-vcpu") ?? 64,
                maxMemoryMiB: try integer("max-memory-mib") ?? 131_072)
            do {
                return try SimCloud(configuration: .init(
                    dataDirectory: URL(fileURLWithPath: directory), delays: delays, limits: limits))
            } catch {
                throw ProviderError(driver: "simcloud", verb: .connect, code: .unavailable, message: "cannot open \(directory): \(error)")
            }
        case "libvirt":
            guard let uri = options["uri"] else { throw invalid("libvirt needs uri") }
            var boot: LibvirtDriver.DirectBoot?
            if let kernel = options["kernel"], let initrd = options["initrd"] {
                boot = .init(kernel: URL(fileURLWithPath: kernel), initrd: URL(fileURLWithPath: initrd),
                             commandLine: options["cmdline"] ?? "console=ttyS0")
            }
            let owner = try integer("file-owner-uid").map { LibvirtDriver.FileOwner(uid: UInt32($0), gid: UInt32($0)) }
            return try await LibvirtDriver.connect(.init(
                uri: uri, imageDirectory: options["image-dir"].map { URL(fileURLWithPath: $0) },
                instanceDirectory: options["instance-dir"].map { URL(fileURLWithPath: $0) },
                domainType: options["domain-type"], directBoot: boot, fileOwner: owner, bootMarker: options["boot-marker"]))
        case "ec2":
            guard let endpointText = options["endpoint"], let endpoint = URL(string: endpointText) else {
                throw invalid("ec2 needs endpoint (an http or https URL)")
            }
            guard let credentials = SigV4Signer.Credentials.fromEnvironment(environment) else {
                throw ProviderError(
                    driver: "ec2", verb: .connect, code: .authentication,
                    message: "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
            }
            return EC2Driver(configuration: .init(
                endpoint: endpoint, s3Endpoint: options["s3-endpoint"].flatMap(URL.init(string:)),
                region: options["region"] ?? "us-east-1", credentials: credentials,
                pageSize: try integer("page-size") ?? 100,
                imageOwners: options["image-owners"]?.split(separator: ",").map(String.init) ?? ["self"],
                imageImportExport: options["import-export"].map { $0 == "true" } ?? false,
                imageBucket: options["image-bucket"] ?? "intercloud-images"))
        case "openstack":
            guard let authText = options["auth-url"] ?? environment["OS_AUTH_URL"], let authURL = URL(string: authText),
                  ["http", "https"].contains(authURL.scheme ?? "")
            else {
                throw invalid("openstack needs auth-url (Keystone, e.g. https://keystone.example:5000/v3) or OS_AUTH_URL")
            }
            guard let credentials = OpenStackDriver.Credentials.from(environment: environment, overrides: options) else {
                throw ProviderError(
                    driver: "openstack", verb: .connect, code: .authentication,
                    message: "set OS_APPLICATION_CREDENTIAL_ID and OS_APPLICATION_CREDENTIAL_SECRET, or OS_USERNAME, OS_PASSWORD and OS_PROJECT_NAME")
            }
            let currency = options["currency"] ?? "USD"
            var prices: [String: Price] = [:]
            for entry in (options["prices"] ?? "").split(separator: ",") {
                let parts = entry.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                guard parts.count == 2, let price = Price(string: parts[1], currency: currency), price.amount >= 0 else {
                    throw invalid("prices must read FLAVOR=PRICE[,FLAVOR=PRICE...] with a decimal price, not \(entry)")
                }
                prices[parts[0]] = price
            }
            let timeout = try integer("image-timeout-seconds") ?? 600
            guard timeout > 0 else { throw invalid("image-timeout-seconds must be positive") }
            let driver = OpenStackDriver(configuration: .init(
                authURL: authURL, credentials: credentials, region: options["region"] ?? environment["OS_REGION_NAME"],
                interface: options["interface"] ?? environment["OS_INTERFACE"] ?? "public", prices: prices,
                network: options["network"], kernelImage: options["kernel-image"], ramdiskImage: options["ramdisk-image"],
                kernelCommandLine: options["kernel-command-line"],
                pageSize: try integer("page-size") ?? 100, imageTimeout: .seconds(timeout)))
            try await driver.connect()
            return driver
        default:
            throw invalid("unknown driver \(settings.kind)")
        }
    }
}
