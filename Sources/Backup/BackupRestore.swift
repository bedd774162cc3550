import Foundation
import Providers

/// One restore of a backup into a cloud driver (the one it came from or any other), as a value
/// type with no IO: `init` and `start`, then the events, each returning the next `Action`.
///
/// ```
/// downloading → importing → creating → booting (then the downloaded file is removed) → restored
///      any failure → cleaning (the instance and image this restore made) → failed
/// ```
///
/// The disk is downloaded to a local file and checked against the manifest's size and SHA-256
/// before the driver sees it; the driver then admits it (`ImageInspection`: in its declared
/// format, naming no other file) and, when the manifest has the raw content's digest, checks
/// that too. The image and the instance are named after the restore, so a restart finds them.
///
/// **Resume rule**: downloading → download again; importing → look the image up by name (adopt
/// it, or import again); creating → look the instance up by name (adopt it, or create again);
/// booting → wait again; cleaning → clean again.
public struct BackupRestore: Sendable {
    public enum Phase: String, Codable, Sendable, Hashable, CaseIterable {
        case downloading, importing, creating, booting, restored, cleaning, failed

        public var isFinal: Bool { self == .restored || self == .failed }
    }

    public enum Action: Sendable, Hashable {
        case none
        case download(key: String, to: URL, maxBytes: Int64)
        case locateImage(name: String)
        /// Import the file, checked against `fileSHA256`; the image's raw content must then have
        /// `contentSHA256`, when the manifest gives one and the driver reports it.
        case importImage(file: URL, name: String, format: ImageFormat, fileSHA256: String, contentSHA256: String?)
        case locateInstance(name: String)
        case create(CreateInstanceRequest)
        case awaitRunning(instanceID: String, timeout: TimeInterval)
        /// Remove what the restore made: the instance, the image, the downloaded file.
        case clean(instanceID: String?, imageID: String?, file: URL?)
        /// Remove the downloaded file (after a successful import).
        case removeFile(URL)
    }

    public struct Snapshot: Codable, Sendable, Hashable {
        public var restoreID: String
        public var manifest: BackupManifest
        public var target: BackupTarget
        /// The driver kind restored into.
        public var driver: String
        public var instanceName: String
        public var sizeID: String
        public var file: URL
        public var maxBytes: Int64
        public var bootTimeout: TimeInterval
        public var phase: Phase
        public var imageID: String?
        public var instanceID: String?
        public var addresses: [String]
        public var fileRemoved: Bool
        public var startedAt: Date
        public var finishedAt: Date?
        public var reason: String?

        public var imageName: String { "restore-\(manifest.backupID)-\(restoreID)" }
        public var diskKey: String { BackupRun.key(policy: manifest.policy, backupID: manifest.backupID, manifest.disk.name) }
    }

    public private(set) var snapshot: Snapshot
    public var phase: Phase { snapshot.phase }

    public init(
        restoreID: String, manifest: BackupManifest, target: BackupTarget, driver: String, instanceName: String, sizeID: String,
        file: URL, maxBytes: Int64, bootTimeout: TimeInterval, now: Date
    ) {
        snapshot = Snapshot(
            restoreID: restoreID, manifest: manifest, target: target, driver: driver, instanceName: instanceName, sizeID: sizeID,
            file: file, maxBytes: maxBytes, bootTimeout: bootTimeout, phase: .downloading, addresses: [], fileRemoved: false,
            startedAt: now)
    }

    public init(resuming snapshot: Snapshot) { self.snapshot = snapshot }

    public mutating func start(now: Date) -> Action {
        .download(key: snapshot.diskKey, to: snapshot.file, maxBytes: snapshot.maxBytes)
    }

    public mutating func resume(now: Date) -> Action {
        switch snapshot.phase {
        case .downloading: return start(now: now)
        case .importing: return snapshot.imageID == nil ? .locateImage(name: snapshot.imageName) : beginCreate()
        case .creating: return snapshot.instanceID == nil ? .locateInstance(name: snapshot.instanceName) : beginBoot()
        case .booting: return beginBoot()
        case .cleaning: return cleanAction()
        case .restored, .failed: return .none
        }
    }

    public mutating func downloaded(bytes: Int64, sha256: String, now: Date) -> Action {
        guard snapshot.phase == .downloading else { return .none }
        let disk = snapshot.manifest.disk
        guard bytes == disk.bytes, sha256 == disk.sha256 else {
            return fail("the stored disk is \(bytes) bytes with SHA-256 \(sha256.prefix(12))…; the manifest says \(disk.bytes) bytes, \(disk.sha256.prefix(12))…", now: now)
        }
        snapshot.phase = .importing
        return importAction()
    }

    public mutating func imageLocated(_ image: Image?, now: Date) -> Action {
        guard snapshot.phase == .importing else { return .none }
        guard let image else { return importAction() }
        return imported(image, now: now)
    }

    public mutating func imported(_ image: Image, now: Date) -> Action {
        guard snapshot.phase == .importing else { return .none }
        snapshot.imageID = image.id
        return beginCreate()
    }

    /// The import made `image`, but its content is not the backup's: removed when cleaning up.
    public mutating func importRefused(_ image: Image, reason: String, now: Date) -> Action {
        guard snapshot.phase == .importing else { return .none }
        snapshot.imageID = image.id
        return fail(reason, now: now)
    }

    public mutating func instanceLocated(_ instance: Instance?, now: Date) -> Action {
        guard snapshot.phase == .creating else { return .none }
        guard let instance else { return createAction() }
        return created(instance, now: now)
    }

    public mutating func created(_ instance: Instance, now: Date) -> Action {
        guard snapshot.phase == .creating else { return .none }
        snapshot.instanceID = instance.id
        return beginBoot()
    }

    public mutating func running(_ instance: Instance, now: Date) -> Action {
        guard snapshot.phase == .booting else { return .none }
        snapshot.addresses = instance.addresses
        return .removeFile(snapshot.file)
    }

    /// The downloaded file is gone: the restore is done.
    public mutating func fileRemoved(now: Date) -> Action {
        guard snapshot.phase == .booting else { return .none }
        snapshot.fileRemoved = true
        snapshot.phase = .restored
        snapshot.finishedAt = now
        return .none
    }

    public mutating func cleaned(now: Date) -> Action {
        guard snapshot.phase == .cleaning else { return .none }
        snapshot.phase = .failed
        snapshot.fileRemoved = true
        snapshot.finishedAt = now
        return .none
    }

    public mutating func stepFailed(_ reason: String, now: Date) -> Action {
        switch snapshot.phase {
        case .cleaning:
            snapshot.reason = (snapshot.reason.map { $0 + "; " } ?? "") + "clean-up failed: \(reason)"
            snapshot.phase = .failed
            snapshot.finishedAt = now
            return .none
        case .restored, .failed:
            return .none
        default:
            return fail(reason, now: now)
        }
    }

    private func importAction() -> Action {
        .importImage(
            file: snapshot.file, name: snapshot.imageName, format: snapshot.manifest.disk.format,
            fileSHA256: snapshot.manifest.disk.sha256, contentSHA256: snapshot.manifest.disk.contentSHA256)
    }

    private mutating func beginCreate() -> Action {
        snapshot.phase = .creating
        return createAction()
    }

    private func createAction() -> Action {
        .create(CreateInstanceRequest(name: snapshot.instanceName, sizeID: snapshot.sizeID, imageID: snapshot.imageID ?? ""))
    }

    private mutating func beginBoot() -> Action {
        snapshot.phase = .booting
        return .awaitRunning(instanceID: snapshot.instanceID ?? "", timeout: snapshot.bootTimeout)
    }

    private func cleanAction() -> Action {
        .clean(instanceID: snapshot.instanceID, imageID: snapshot.imageID, file: snapshot.fileRemoved ? nil : snapshot.file)
    }

    private mutating func fail(_ reason: String, now: Date) -> Action {
        snapshot.reason = reason
        snapshot.phase = .cleaning
        return cleanAction()
    }
}
