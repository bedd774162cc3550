import Foundation

/// A real OpenStack (Keystone, Glance, Placement, Neutron with a Linux bridge and a DHCP agent, Nova
/// with one libvirt/QEMU compute service) on loopback, started by the test process itself through
/// `scripts/openstack.sh` once per process and stopped when the process exits. Starting takes one to
/// two minutes; every test that needs it shares it, so tests must clean up what they create.
public struct TestOpenStack: Sendable {
    /// What `scripts/openstack.sh start` wrote to `openstack.json`.
    public var authURL: URL
    public var region: String
    public var username: String
    public var password: String
    public var projectName: String
    public var userDomain: String
    public var projectDomain: String
    public var applicationCredentialID: String
    public var applicationCredentialSecret: String
    /// The busybox test guest's disk (raw, with `kernel_id`/`ramdisk_id`), its kernel and ramdisk.
    public var imageID: String
    public var kernelImageID: String
    public var ramdiskImageID: String
    public var flavor: String
    public var flavors: [String]
    /// What the guest's init prints on its serial console when it has booted.
    public var guestMarker: String
    /// The host-only guest network `intercloud-private` (flat, DHCP, no gateway) and its /24; this
    /// machine has `hostAddress` on it, so a test reaches a guest's ports at the guest's address. Nil
    /// for a cloud started by an older `openstack.sh`, whose servers had no network.
    public var networkID: String?
    public var networkName: String?
    public var networkCIDR: String?
    public var hostAddress: String?
    public var directory: URL

    /// `OS_*` variables for the `openstack` CLI, with the application credential (or the password).
    public func environment(applicationCredential: Bool = true) -> [String: String] {
        var environment = ProcessInfo.processInfo.environment
        for key in environment.keys where key.hasPrefix("OS_") { environment[key] = nil }
        environment["OS_AUTH_URL"] = authURL.absoluteString
        environment["OS_IDENTITY_API_VERSION"] = "3"
        environment["OS_REGION_NAME"] = region
        environment["OS_INTERFACE"] = "public"
        if applicationCredential {
            environment["OS_AUTH_TYPE"] = "v3applicationcredential"
            environment["OS_APPLICATION_CREDENTIAL_ID"] = applicationCredentialID
            environment["OS_APPLICATION_CREDENTIAL_SECRET"] = applicationCredentialSecret
        } else {
            environment["OS_USERNAME"] = username
            environment["OS_PASSWORD"] = password
            environment["OS_PROJECT_NAME"] = projectName
            environment["OS_USER_DOMAIN_NAME"] = userDomain
            environment["OS_PROJECT_DOMAIN_NAME"] = projectDomain
        }
        return environment
    }

    private static let sharedStart: Result<TestOpenStack, any Error> = {
        do {
            let root = try TestProsody.repositoryRoot()
            // INTERCLOUD_OPENSTACK_DIR names a cloud started by hand (`scripts/openstack.sh start DIR`)
            // that outlives test runs; otherwise the cloud stops when this process exits (WATCH_PID).
            let kept = ProcessInfo.processInfo.environment["INTERCLOUD_OPENSTACK_DIR"]
            let directory = URL(fileURLWithPath: kept ?? "/var/tmp/intercloud-openstack-tests")
            _ = try RequiredProgram.path("/usr/bin/nova-compute", package: "nova-compute (scripts/openstack.sh install)")
            let watch = kept == nil ? " \(getpid())" : ""
            try runShell("bash \(shellQuoted(root.path))/scripts/openstack.sh start \(shellQuoted(directory.path))\(watch)")
            return .success(try load(directory))
        } catch {
            return .failure(error)
        }
    }()

    /// The shared cloud, started on first use off the cooperative pool (it takes one to two minutes).
    public static func shared() async throws -> TestOpenStack {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(with: sharedStart) }
        }
    }

    static func load(_ directory: URL) throws -> TestOpenStack {
        let data = try Data(contentsOf: directory.appendingPathComponent("openstack.json"))
        guard let facts = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw TestServiceError(message: "openstack.json is not an object")
        }
        func text(_ key: String) throws -> String {
            guard let value = facts[key] as? String, !value.isEmpty else {
                throw TestServiceError(message: "openstack.json has no \(key)")
            }
            return value
        }
        guard let authURL = URL(string: try text("auth_url")) else { throw TestServiceError(message: "auth_url is not a URL") }
        return TestOpenStack(
            authURL: authURL, region: try text("region_name"), username: try text("username"), password: try text("password"),
            projectName: try text("project_name"), userDomain: try text("user_domain_name"),
            projectDomain: try text("project_domain_name"), applicationCredentialID: try text("application_credential_id"),
            applicationCredentialSecret: try text("application_credential_secret"), imageID: try text("image_id"),
            kernelImageID: try text("kernel_image_id"), ramdiskImageID: try text("ramdisk_image_id"), flavor: try text("flavor"),
            flavors: facts["flavors"] as? [String] ?? [], guestMarker: try text("guest_marker"),
            networkID: facts["network_id"] as? String, networkName: facts["network_name"] as? String,
            networkCIDR: facts["network_cidr"] as? String, hostAddress: facts["host_address"] as? String, directory: directory)
    }

    /// What the test guest (scripts/guest-build.sh) does once it has a NIC: it prints
    /// `INTERCLOUD-GUEST-ADDRESS eth0 ADDRESS` on its console when DHCP gave it an address, and serves
    /// `INTERCLOUD-GUEST-HTTP boot=ID` over HTTP on port 8080.
    public static let guestAddressMarker = "INTERCLOUD-GUEST-ADDRESS"
    public static let guestHTTPMarker = "INTERCLOUD-GUEST-HTTP"
    public static let guestHTTPPort = 8080

    /// The body `url` answers from this machine (curl, 3 s at most, no proxy), or nil.
    public static func fetch(_ url: String) -> String? {
        try? runProgram("/usr/bin/curl", ["-sS", "--noproxy", "*", "--max-time", "3", url])
    }

    /// Runs the `openstack` CLI (Debian's python3-openstackclient) against this cloud and parses its
    /// `-f json` output.
    public func cli(_ arguments: [String], applicationCredential: Bool = true) throws -> Any {
        let output = try runProgram(
            "/usr/bin/openstack", arguments + ["-f", "json"], environment: environment(applicationCredential: applicationCredential))
        return try JSONSerialization.jsonObject(with: Data(output.utf8), options: [.fragmentsAllowed])
    }
}
