import Foundation
import Providers

/// What a backup is, written beside its disk as `manifest.json` after the disk is complete: a
/// backup without a manifest is unfinished (a run was killed mid-upload) and is never restored.
///
/// The store is outside this broker's control (a shared bucket, a mounted directory), so a manifest
/// read back is hostile input: `decode` bounds its size, checks every field against what this
/// broker writes, and a restore checks the disk against the manifest's digest before it is used.
public struct BackupManifest: Codable, Sendable, Hashable {
    public static let formatVersion = "intercloud-backup/1"
    public static let maximumBytes = 64 * 1024
    public static let fileName = "manifest.json"

    public struct Source: Codable, Sendable, Hashable {
        /// The driver kind the instance ran on.
        public var driver: String
        public var instanceID: String
        public var instanceName: String
        /// Size and image it was created with, when the driver reported them: a restore uses the
        /// size unless told otherwise.
        public var sizeID: String?
        public var imageID: String?

        public init(driver: String, instanceID: String, instanceName: String, sizeID: String?, imageID: String?) {
            self.driver = driver
            self.instanceID = instanceID
            self.instanceName = instanceName
            self.sizeID = sizeID
            self.imageID = imageID
        }
    }

    public struct Disk: Codable, Sendable, Hashable {
        /// The object's name beside the manifest: `disk.<format>`.
        public var name: String
        public var format: ImageFormat
        public var bytes: Int64
        /// SHA-256 of the object as stored.
        public var sha256: String
        /// SHA-256 of the raw disk content (the same in every format), when the driver knows it.
        public var contentSHA256: String?

        public init(name: String, format: ImageFormat, bytes: Int64, sha256: String, contentSHA256: String?) {
            self.name = name
            self.format = format
            self.bytes = bytes
            self.sha256 = sha256
            self.contentSHA256 = contentSHA256
        }
    }

    public var format: String
    public var backupID: String
    public var policy: String
    public var runID: String
    public var method: BackupPolicy.Method
    public var createdAt: Date
    public var source: Source
    public var disk: Disk

    public init(backupID: String, policy: String, runID: String, method: BackupPolicy.Method, createdAt: Date, source: Source, disk: Disk) {
        self.format = Self.formatVersion
        self.backupID = backupID
        self.policy = policy
        self.runID = runID
        self.method = method
        self.createdAt = createdAt
        self.source = source
        self.disk = disk
    }

    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }()

    public func encoded() throws -> Data { try Self.encoder.encode(self) }

    /// Reads a manifest found at `<policy>/<backupID>/manifest.json`, refusing anything this broker
    /// would not have written there.
    public static func decode(_ data: Data, policy: String, backupID: String) throws(BackupError) -> BackupManifest {
        guard data.count <= maximumBytes else { throw .invalidManifest(backupID, "larger than \(maximumBytes) bytes") }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        let manifest: BackupManifest
        do { manifest = try decoder.decode(BackupManifest.self, from: data) } catch {
            throw .invalidManifest(backupID, "not a backup manifest: \(String(describing: error).prefix(200))")
        }
        guard manifest.format == formatVersion else { throw .invalidManifest(backupID, "format '\(manifest.format.prefix(40))', expected \(formatVersion)") }
        guard manifest.backupID == backupID else { throw .invalidManifest(backupID, "names backup '\(manifest.backupID.prefix(40))'") }
        guard manifest.policy == policy else { throw .invalidManifest(backupID, "belongs to policy '\(manifest.policy.prefix(40))'") }
        guard BackupPolicyLoader.formats.contains(manifest.disk.format), manifest.disk.name == diskName(manifest.disk.format) else {
            throw .invalidManifest(backupID, "disk '\(manifest.disk.name.prefix(40))' in \(manifest.disk.format)")
        }
        guard manifest.disk.bytes > 0, isDigest(manifest.disk.sha256), manifest.disk.contentSHA256.map(isDigest) ?? true else {
            throw .invalidManifest(backupID, "disk size or digest malformed")
        }
        for text in [manifest.source.driver, manifest.source.instanceID, manifest.source.instanceName, manifest.runID]
        where text.isEmpty || text.utf8.count > 255 {
            throw .invalidManifest(backupID, "source field empty or longer than 255 bytes")
        }
        // Shown in listings, logs and the audit, and the ids go back to a driver on restore: no
        // control characters (a forged name must not rewrite an operator's terminal).
        for text in [manifest.source.driver, manifest.source.instanceID, manifest.source.instanceName, manifest.runID]
            + [manifest.source.sizeID, manifest.source.imageID].compactMap({ $0 })
        where !isPrintable(text) || text.utf8.count > 255 {
            throw .invalidManifest(backupID, "a source field holds control characters or is longer than 255 bytes")
        }
        return manifest
    }

    /// No C0 or C1 control character, no DEL.
    static func isPrintable(_ text: String) -> Bool {
        text.unicodeScalars.allSatisfy { !($0.value < 0x20 || (0x7f...0x9f).contains($0.value)) }
    }

    public static func diskName(_ format: ImageFormat) -> String { "disk.\(format.rawValue)" }

    static func isDigest(_ text: String) -> Bool {
        text.utf8.count == 64 && text.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
    }

    /// Backup ids: `bk-` then a UTC time and random hex, so they sort by creation and name a key
    /// component safely.
    public static func isBackupID(_ text: String) -> Bool {
        text.hasPrefix("bk-") && (10...48).contains(text.utf8.count)
            && text.utf8.dropFirst(3).allSatisfy { (48...57).contains($0) || (97...122).contains($0) || $0 == 45 }
    }
}
