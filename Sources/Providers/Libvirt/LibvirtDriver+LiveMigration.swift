import Foundation

/// Live migration between two libvirt hosts (two clouds' hypervisors): the guest keeps running
/// while its memory and disk move. Only between libvirt drivers, and only when the destination's
/// daemon is reachable from the source's (`virDomainMigrateToURI3`, peer to peer).
///
/// The destination prepares first (`prepareLiveMigration`: an empty disk of the source disk's
/// virtual size, and the paths the domain will use there); the source then moves the guest
/// (`migrateLive`), and libvirt copies the disk blocks into the prepared file while the guest runs.
extension LibvirtDriver {
    /// Where a live-migrated guest lands: the destination daemon and the files made for it there.
    public struct LiveMigrationTarget: Sendable, Hashable {
        /// The destination daemon's URI as the source daemon must reach it.
        public var uri: String
        public var disk: URL
        public var consoleLog: URL

        public init(uri: String, disk: URL, consoleLog: URL) {
            self.uri = uri
            self.disk = disk
            self.consoleLog = consoleLog
        }
    }

    /// Source side: the virtual size of the instance's disk, which the destination's disk must have.
    public func liveMigrationDiskBytes(instance id: String) async throws -> Int64 {
        let status = try await libvirt(.describe) { try await connection.status(of: id) }
        guard let disk = Self.parseDomain(status.xml).disk else {
            throw ProviderError(driver: driverName, verb: .describe, code: .invalidState, message: "instance \(id) has no disk")
        }
        // `-U`: the running guest holds the image's write lock.
        return try await libvirt(.describe) { try await QemuImg.info(URL(fileURLWithPath: disk), shareLock: true).virtualSize }
    }

    /// Destination side: an empty qcow2 disk of `virtualSizeBytes` in the instance directory (owned by
    /// the hypervisor's user), and the console log path, for a guest named `name` to arrive in.
    public func prepareLiveMigration(name: String, virtualSizeBytes: Int64) async throws -> LiveMigrationTarget {
        guard name.range(of: "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$", options: .regularExpression) != nil else {
            throw ProviderError(driver: driverName, verb: .create, code: .invalidInput, message: "invalid domain name \"\(name)\"")
        }
        guard virtualSizeBytes > 0, let directory = configuration.instanceDirectory else {
            throw unsupported(.create, "live migration needs an instance directory and a disk size")
        }
        let disk = directory.appendingPathComponent("\(name)-\(UUID().uuidString.prefix(8)).qcow2")
        do {
            try await QemuImg.run(["create", "-q", "-f", "qcow2", disk.path, String(virtualSizeBytes)])
            try chown(disk)
        } catch {
            try? FileManager.default.removeItem(at: disk)
            throw files.mapError(error, verb: .create)
        }
        return LiveMigrationTarget(uri: configuration.uri, disk: disk, consoleLog: directory.appendingPathComponent("\(name).console.log"))
    }

    /// Source side: moves the running instance to `target` without stopping it. On success the
    /// domain is defined and running at the destination (same UUID) and gone here, and this side's
    /// overlay disk is removed. On failure the guest keeps running here (libvirt's own guarantee).
    /// `tls`: the migration stream is encrypted by QEMU (`VIR_MIGRATE_TLS`; both hypervisors need
    /// their TLS certificates configured).
    public func migrateLive(instance id: String, to target: LiveMigrationTarget, tls: Bool = false) async throws {
        try await libvirt(.terminate) {
            let status = try await connection.status(of: id)
            guard Self.state(status) == .running else {
                throw ProviderError.invalidState(
                    driver: driverName, verb: .terminate, "instance \(id) is \(Self.rawState(status)); only a running guest is live-migrated")
            }
            let parsed = Self.parseDomain(status.xml)
            var xml = try await connection.migratableXML(of: id)
            // The same domain, with its files where the destination prepared them.
            if let disk = parsed.disk { xml = xml.replacingOccurrences(of: "'\(disk)'", with: "'\(target.disk.path)'") }
            if let log = parsed.consoleLog { xml = xml.replacingOccurrences(of: "'\(log)'", with: "'\(target.consoleLog.path)'") }
            try await connection.migrateLive(id, destinationURI: target.uri, destinationXML: xml, tls: tls)
            if let disk = parsed.disk, let directory = configuration.instanceDirectory, disk.hasPrefix(directory.path) {
                try? FileManager.default.removeItem(atPath: disk)
            }
        }
    }
}
