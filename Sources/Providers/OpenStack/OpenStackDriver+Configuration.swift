import Foundation

extension OpenStackDriver {
    /// How to reach one OpenStack cloud: Keystone v3, the region and interface whose endpoints to use,
    /// and the prices of its flavors (OpenStack has no prices of its own).
    public struct Configuration: Sendable {
        /// Keystone v3, e.g. `http://127.0.0.1:5000/v3` (a URL without `/v3` gets it appended).
        public var authURL: URL
        public var credentials: Credentials
        /// The region whose endpoints are used; nil takes the only region the catalog has (and is an
        /// error when it lists several, naming them).
        public var region: String?
        /// Endpoint interface in the service catalog: `public`, `internal` or `admin`.
        public var interface: String
        /// Price per hour of each flavor, by flavor name. Flavors without a price are listed without one.
        public var prices: [String: Price]
        /// Network for new servers: a Neutron network UUID, or nil for none (`"networks": "none"`).
        public var network: String?
        /// Glance image ids (or names) set as `kernel_id`/`ramdisk_id` on every image this driver imports,
        /// so a disk that carries no boot loader (a migrated direct-boot guest) boots the same way here.
        public var kernelImage: String?
        public var ramdiskImage: String?
        /// The kernel command line for those images (`os_command_line`), e.g. `console=ttyS0` so the
        /// guest's console output reaches Nova's console log.
        public var kernelCommandLine: String?
        /// Servers and images per list request (Nova and Glance follow `next` links for more).
        public var pageSize: Int
        /// How long a snapshot or an image upload may take to become `active` in Glance.
        public var imageTimeout: Duration
        public var retry: RetryPolicy
        /// Per HTTP request (not per transfer: image uploads and downloads run as long as they move data).
        public var requestTimeout: TimeInterval

        public init(
            authURL: URL, credentials: Credentials, region: String? = nil, interface: String = "public",
            prices: [String: Price] = [:], network: String? = nil, kernelImage: String? = nil, ramdiskImage: String? = nil,
            kernelCommandLine: String? = nil, pageSize: Int = 100, imageTimeout: Duration = .seconds(600), retry: RetryPolicy = RetryPolicy(),
            requestTimeout: TimeInterval = 60
        ) {
            self.authURL = authURL
            self.credentials = credentials
            self.region = region
            self.interface = interface
            self.prices = prices
            self.network = network
            self.kernelImage = kernelImage
            self.ramdiskImage = ramdiskImage
            self.kernelCommandLine = kernelCommandLine
            self.pageSize = pageSize
            self.imageTimeout = imageTimeout
            self.retry = retry
            self.requestTimeout = requestTimeout
        }
    }

    /// Keystone v3 credentials. Secrets come from the environment (`OS_PASSWORD`,
    /// `OS_APPLICATION_CREDENTIAL_SECRET`), never from a settings file.
    public enum Credentials: Sendable, Hashable {
        /// A user's password, scoped to a project.
        case password(user: String, userDomain: String, password: String, project: String, projectDomain: String)
        /// An application credential: scoped to the project it was made in, revocable on its own, and
        /// the form an operator should hand to a broker.
        case applicationCredential(id: String, secret: String)

        /// From the variables the `openstack` CLI reads: `OS_APPLICATION_CREDENTIAL_ID` +
        /// `OS_APPLICATION_CREDENTIAL_SECRET` if set, else `OS_USERNAME` + `OS_PASSWORD` +
        /// `OS_PROJECT_NAME` (domains from `OS_USER_DOMAIN_NAME`/`OS_PROJECT_DOMAIN_NAME`, default `Default`).
        /// `overrides` (settings: `user`, `project`, `user-domain`, `project-domain`,
        /// `application-credential-id`) win over the environment for what is not secret.
        public static func from(environment: [String: String], overrides: [String: String] = [:]) -> Credentials? {
            func value(_ option: String, _ variable: String) -> String? {
                if let text = overrides[option], !text.isEmpty { return text }
                if let text = environment[variable], !text.isEmpty { return text }
                return nil
            }
            if let id = value("application-credential-id", "OS_APPLICATION_CREDENTIAL_ID"),
               let secret = environment["OS_APPLICATION_CREDENTIAL_SECRET"], !secret.isEmpty {
                return .applicationCredential(id: id, secret: secret)
            }
            guard let user = value("user", "OS_USERNAME"), let password = environment["OS_PASSWORD"], !password.isEmpty,
                  let project = value("project", "OS_PROJECT_NAME")
            else { return nil }
            return .password(
                user: user, userDomain: value("user-domain", "OS_USER_DOMAIN_NAME") ?? "Default", password: password,
                project: project, projectDomain: value("project-domain", "OS_PROJECT_DOMAIN_NAME") ?? "Default")
        }
    }
}
