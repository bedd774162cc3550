import Foundation

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

/// A driver that moves a running guest to a peer hypervisor of its own kind: what the migration
/// runner needs for a live migration, so it asks for the capability instead of a concrete driver.
/// Only libvirt has it today.
public protocol LiveMigrationDriver: CloudDriver {
    /// Source side: the virtual size of the instance's disk, which the destination's disk must have.
    func liveMigrationDiskBytes(instance id: String) async throws -> Int64
    /// Destination side: an empty disk of that size and a console log for the arriving guest.
    func prepareLiveMigration(name: String, virtualSizeBytes: Int64) async throws -> LiveMigrationTarget
    /// Source side: moves the running guest to `target` (over TLS when `tls`).
    func migrateLive(instance id: String, to target: LiveMigrationTarget, tls: Bool) async throws
    /// Destination side: the guest that arrived uses exactly the prepared files, else it is destroyed.
    func checkArrival(instance id: String, preparedDisk: String, preparedConsoleLog: String) async throws
    /// Where prepared live targets are made: the runner removes files only inside it.
    var liveTargetDirectory: URL? { get }
}
