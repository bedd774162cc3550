import Foundation
import Policy
import Providers

/// Which side of a migration a machine, journal row or runner plays.
public enum MigrationRole: String, Codable, Sendable, Hashable {
    case source, destination
}

/// A file in the runner's per-migration work directory (exported disk, converted disk, received file).
/// Only the file name is stored: the work directory belongs to the runner's configuration.
public struct StagedFile: Codable, Sendable, Hashable {
    public var name: String
    public var format: ImageFormat
    public var bytes: Int64
    public var sha256: String

    public init(name: String, format: ImageFormat, bytes: Int64, sha256: String) {
        self.name = name
        self.format = format
        self.bytes = bytes
        self.sha256 = sha256
    }
}

/// One call into the cloud driver or the local file system. Every operation is idempotent, because
/// the resume rule issues again the operation that was in flight when the process stopped:
/// - stop/start/terminate first look at the instance and do nothing if it is already there;
/// - snapshot, import and create look for what an earlier attempt made (by the migration's
///   deterministic image name) before making anything;
/// - export and convert overwrite their own output file; removals ignore what is already gone.
public enum MigrationOperation: Codable, Sendable, Hashable {
    /// Graceful shutdown, waiting up to `gracePeriod` seconds for the instance to be stopped.
    case shutdown(instanceID: String, gracePeriod: TimeInterval)
    /// Hard power-off (the instance still exists), waiting until it is stopped.
    case destroy(instanceID: String)
    /// Captures the stopped instance's disk as image `imageName` (or finds the one made earlier).
    case snapshot(instanceID: String, imageName: String)
    /// Writes the image to a staged file.
    case export(imageID: String, format: ImageFormat, fileName: String)
    /// `qemu-img convert` of a staged file into another format.
    case convert(source: StagedFile, format: ImageFormat, fileName: String)
    /// Starts the instance if it is not running and waits until it runs.
    case start(instanceID: String)
    /// Deletes the instance for good and waits until it is gone.
    case terminate(instanceID: String)
    /// Deregisters every image named `imageName`.
    case deregisterImages(named: String)
    /// Removes staged files.
    case removeFiles([String])
    /// Destination: sizes, free capacity (minus other reservations) and import formats.
    case inspect
    /// Destination: imports a received file as image `imageName`, verifying its checksum first and
    /// refusing it (`ImageInspection`) if it names another file or describes a virtual disk larger
    /// than `maxVirtualSizeBytes` (nil in journals written before the limit existed: the strict checks
    /// without a size limit).
    case importImage(file: StagedFile, imageName: String, maxVirtualSizeBytes: Int64?)
    /// Destination: creates (or finds) the instance from `imageID`.
    case create(name: String, sizeID: String, imageID: String, extra: [String: String])
    /// Destination: terminates every instance created from an image named `imageName`.
    case terminateInstances(fromImagesNamed: String)

    // Live migration (libvirt on both sides).

    /// Destination: an empty disk of `diskBytes` and the paths for the guest `name` to arrive in.
    case prepareLive(name: String, instanceID: String, diskBytes: Int64)
    /// Source: the hypervisor moves the running guest to `target` (it keeps running here if that
    /// fails). Never issued twice: after a restart the source looks at the facts instead.
    case migrateLive(instanceID: String, target: LiveMigrationOffer)
    /// Either side: whether the guest is on this hypervisor, and running.
    case probeGuest(instanceID: String)
    /// Destination: waits (briefly) for the arrived guest to be running.
    case confirmLive(instanceID: String)
    /// Destination: removes the prepared files, refusing while the guest is here.
    case discardLiveTarget(instanceID: String, diskPath: String?, consoleLogPath: String?)
}

/// A call into the image transport.
public enum TransportOperation: Codable, Sendable, Hashable {
    /// Destination: prepare to receive one file of at most `maximumBytes`.
    case prepareOffer(migrationID: String, maximumBytes: Int64)
    /// Destination: hand over the file received for `offer`, hashed locally.
    case receive(TransferOffer, format: ImageFormat)
    /// Destination: withdraw the offer and delete anything received (releases the reservation's channel).
    case withdraw(migrationID: String)
    /// Source: send a staged file to the destination's offer.
    case send(StagedFile, TransferOffer)
}

/// Metering follows the instance: the source stops charging, the destination starts.
///
/// `since`: when the destination's copy started running (the destination's clock for `start`, the
/// moment the source heard of it for `stop`). The copy uses the provider's resources from then, so
/// it is metered from then, not from the cut-over that follows (nil in journals written before it
/// was recorded: metered from the change).
public enum MeteringChange: Codable, Sendable, Hashable {
    case stop(migrationID: String, instanceID: String, movedTo: String, since: Date? = nil)
    case start(migrationID: String, instanceID: String, sizeID: String, agreementID: String, movedFrom: String, since: Date? = nil)
}

/// The one side effect a migration machine asks for. The runner stores the machine's snapshot
/// *before* performing it, then reports the result with `handle(_:now:)`.
public enum MigrationAction: Codable, Sendable, Hashable {
    /// Evaluate the policy for this request and the agreement (pure, but journaled like any step);
    /// for a live migration (`mode` `.live`) the agreement and the policy must allow that too.
    case authorize(PolicyRequest, agreementID: String, mode: MigrationMode? = nil)
    /// Source: send to the destination and report its answer (`.answer`) or the failure.
    case send(MigrationMessage)
    /// Destination: answer the message being handled with this; handling is over.
    case reply(MigrationMessage)
    case driver(MigrationOperation)
    case transport(TransportOperation)
    case metering(MeteringChange)
    /// A step that must eventually succeed failed: wait, then call `retry(now:)`.
    case retry(after: TimeInterval, reason: String)
    /// Nothing to do until the peer sends something.
    case wait
    case completed
    case rolledBack(reason: String)
}

/// What came of an action.
public enum StepResult: Sendable, Hashable {
    case authorized(PolicyDecision)
    case answer(MigrationMessage)
    /// The instance is stopped; `gracefully` is false when the grace period ran out first.
    case stopped(gracefully: Bool)
    case image(Image)
    case file(StagedFile)
    case inventory(DestinationInventory)
    case offer(TransferOffer)
    case instance(Instance)
    case liveTarget(LiveMigrationOffer)
    case presence(GuestPresence)
    case done
    case failed(String)
}

/// What the destination can host right now.
public struct DestinationInventory: Sendable, Hashable {
    public var sizes: [InstanceSize]
    /// Capacity with other migrations' reservations already counted as used.
    public var capacity: Capacity
    /// Formats the destination imports, most preferred first.
    public var importFormats: [ImageFormat]
    public var region: String
    /// Source network name → destination network name.
    public var networkMap: [String: String]
    /// The network for instances whose source network is not in `networkMap`.
    public var defaultNetwork: String?
    /// The driver's name, for refusals.
    public var driverName: String
    /// Whether the driver receives live migrations (libvirt).
    public var acceptsLiveMigration: Bool

    public init(
        sizes: [InstanceSize], capacity: Capacity, importFormats: [ImageFormat], region: String,
        networkMap: [String: String] = [:], defaultNetwork: String? = nil, driverName: String = "", acceptsLiveMigration: Bool = false
    ) {
        self.sizes = sizes
        self.capacity = capacity
        self.importFormats = importFormats
        self.region = region
        self.networkMap = networkMap
        self.defaultNetwork = defaultNetwork
        self.driverName = driverName
        self.acceptsLiveMigration = acceptsLiveMigration
    }
}

/// Settings shared by both machines.
public struct MigrationConfiguration: Codable, Sendable, Hashable {
    /// How long a graceful shutdown may take before the source powers the instance off.
    public var gracefulShutdownTimeout: TimeInterval
    /// Attempts of one step across restarts (the resume rule issues an in-flight step again).
    public var maxAttempts: Int
    /// Pause before retrying a step that must succeed (undoing, or finishing after the cut-over).
    public var retryDelay: TimeInterval
    /// How long the destination holds a reservation the source does not use (see `DestinationMigration.expire`).
    public var reservationTimeout: TimeInterval

    /// The one default of `[migration] graceful_shutdown_seconds`: the broker's settings and its
    /// configuration reference read it from here.
    public static let defaultGracefulShutdownTimeout: TimeInterval = 30

    public init(
        gracefulShutdownTimeout: TimeInterval = defaultGracefulShutdownTimeout, maxAttempts: Int = 3, retryDelay: TimeInterval = 2,
        reservationTimeout: TimeInterval = 3600
    ) {
        self.gracefulShutdownTimeout = gracefulShutdownTimeout
        self.maxAttempts = maxAttempts
        self.retryDelay = retryDelay
        self.reservationTimeout = reservationTimeout
    }
}

/// The image name both sides use for a migration's disk, so that an interrupted snapshot or import
/// can be found (and reused or removed) after a restart.
public func migrationImageName(_ migrationID: String) -> String { "migration-\(migrationID)" }

extension MigrationSpec {
    init(_ spec: MigratingInstanceSpec, region: String?) {
        let memoryGiB = Decimal(spec.memoryMiB) / 1024
        self.init(
            instanceType: spec.instanceType, vcpu: spec.vCPU, memoryGiB: memoryGiB, diskGiB: Decimal(spec.diskGiB),
            region: region ?? spec.region ?? "", transferGB: Decimal(spec.diskGiB))
    }
}
