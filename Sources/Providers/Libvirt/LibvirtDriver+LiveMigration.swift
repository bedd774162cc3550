import Foundation

/// Live migration between two libvirt hosts (two clouds' hypervisors): the guest keeps running
/// while its memory and disk move. Only between libvirt drivers, and only when the destination's
/// daemon is reachable from the source's (`virDomainMigrateToURI3`, peer to peer).
///
/// The destination prepares first (`prepareLiveMigration`: an empty disk of the source disk's
/// virtual size, and the paths the domain will use there); the source then moves the guest
/// (`migrateLive`), and libvirt copies the disk blocks into the prepared file while the guest runs.
extension LibvirtDriver: LiveMigrationDriver {
    public typealias LiveMigrationTarget = Providers.LiveMigrationTarget

    public var liveTargetDirectory: URL? { configuration.instanceDirectory }

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

extension LibvirtDriver {
    /// Destination side, once a guest has arrived: its domain must use the disk and console log
    /// this side prepared for it and nothing else. The source's hypervisor wrote the domain XML it
    /// sent; a hostile source could name another file of this host as a disk (another guest's, a
    /// device) for its guest to read. A guest that does is destroyed and undefined, and the arrival
    /// fails (`invalidInput`), which rolls the migration back.
    public func checkArrival(instance id: String, preparedDisk: String, preparedConsoleLog: String) async throws {
        let status = try await libvirt(.describe) { try await connection.status(of: id) }
        let boot = configuration.directBoot.map { [$0.kernel.path, $0.initrd.path] } ?? []
        let problems = Self.arrivalProblems(
            xml: status.xml, preparedDisk: preparedDisk, preparedConsoleLog: preparedConsoleLog, bootFiles: boot)
        guard !problems.isEmpty else { return }
        _ = try? await perform(.destroy, instance: id)
        try? await terminate(instance: id)
        throw ProviderError(
            driver: driverName, verb: .describe, code: .invalidInput,
            message: "the guest \(id) arrived with files it was not given (\(problems.joined(separator: "; "))); it was destroyed")
    }

    /// What in an arrived domain's XML is not what was prepared: every disk must be a file, and the
    /// one prepared disk; every serial or console log must be the prepared log.
    static func arrivalProblems(xml: String, preparedDisk: String, preparedConsoleLog: String, bootFiles: [String] = []) -> [String] {
        guard let root = try? XMLTree.parse(Data(xml.utf8)), let devices = root.at("devices") else {
            return ["unreadable domain XML"]
        }
        var problems: [String] = []
        // Direct boot reads the kernel and initrd into the guest: only this cloud's own.
        for name in ["kernel", "initrd", "dtb"] {
            if let path = root.at("os")?.child(name)?.text, !bootFiles.contains(path.trimmingCharacters(in: .whitespaces)) {
                problems.append("\(name) \(path.prefix(200))")
            }
        }
        if root.children.contains(where: { $0.name.hasSuffix("commandline") }) { problems.append("a QEMU command line") }
        let disks = devices.children.filter { $0.name == "disk" && $0.attributes["device"] != "cdrom" }
        for disk in disks {
            guard disk.attributes["type"] == "file", let file = disk.child("source")?.attributes["file"] else {
                problems.append("a \(disk.attributes["type"] ?? "?") disk")
                continue
            }
            if file != preparedDisk { problems.append("disk \(file.prefix(200))") }
            if disk.child("backingStore")?.child("source") != nil { problems.append("a disk with a backing store") }
        }
        if disks.count != 1 { problems.append("\(disks.count) disks") }
        for cdrom in devices.children where cdrom.name == "disk" && cdrom.attributes["device"] == "cdrom" {
            if cdrom.child("source") != nil { problems.append("a CD-ROM with a source") }
        }
        // Character devices: a file on the prepared log or a pty, nothing that reaches other files
        // or the network (tcp, udp, unix, pipe, dev).
        for device in devices.children where ["serial", "console", "channel", "parallel"].contains(device.name) {
            let type = device.attributes["type"] ?? "pty"
            guard type == "file" || type == "pty" else {
                problems.append("a \(type) \(device.name)")
                continue
            }
            for path in [device.child("source")?.attributes["path"], device.child("log")?.attributes["file"]].compactMap({ $0 }) {
                if path != preparedConsoleLog, !(type == "pty" && path.hasPrefix("/dev/pts/")) {
                    problems.append("\(device.name) file \(path.prefix(200))")
                }
            }
        }
        for device in devices.children where ["filesystem", "hostdev", "smartcard", "redirdev", "tpm", "shmem"].contains(device.name) {
            problems.append("a \(device.name) device")
        }
        if root.at("memoryBacking")?.child("source") != nil { problems.append("memory backed by a host file") }
        return problems
    }
}
