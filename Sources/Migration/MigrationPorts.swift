import Foundation
import Policy

/// Carries `urn:intercloud:migration:0` requests to the peer broker and returns its answer (the
/// broker implements it over XMPP IQs). Implementations validate the answer with
/// `MigrationMessage.decode` / `validate()` before returning it: it comes from another party.
public protocol MigrationPeerLink: Sendable {
    /// Sends `message` to `peer` (a bare JID) and waits for its answer. Throws if no answer came.
    func send(_ message: MigrationMessage, to peer: String) async throws -> MigrationMessage
}

/// Progress of a transfer, as journaled for `migrations watch`.
public struct TransferProgress: Sendable, Hashable {
    public var bytes: Int64
    public var totalBytes: Int64?
    public var bytesPerSecond: Double
    /// Seconds left at the current rate, when the total is known.
    public var etaSeconds: Double?

    public init(bytes: Int64, totalBytes: Int64?, bytesPerSecond: Double, etaSeconds: Double?) {
        self.bytes = bytes
        self.totalBytes = totalBytes
        self.bytesPerSecond = bytesPerSecond
        self.etaSeconds = etaSeconds
    }
}

/// A file the destination received, hashed on arrival by the destination itself.
public struct ReceivedImageFile: Sendable, Hashable {
    public var url: URL
    public var bytes: Int64
    public var sha256: String
    /// This broker computed `sha256` itself from the bytes as it stored them (the transfer
    /// channel hashes every chunk it writes and matches the source's signed digest), so the
    /// runner need not read the file again. Otherwise the runner hashes the file.
    public var hashedAsStored: Bool

    public init(url: URL, bytes: Int64, sha256: String, hashedAsStored: Bool = false) {
        self.url = url
        self.bytes = bytes
        self.sha256 = sha256
        self.hashedAsStored = hashedAsStored
    }
}

/// Moves disk images between the brokers (the broker implements it with the Transfer module's
/// mutual-TLS channel). Every method is idempotent: the runner repeats them after a restart.
public protocol ImageTransport: Sendable {
    /// Destination: prepares to receive the disk of `migrationID`, refusing more than `maximumBytes`;
    /// the offer goes to the source. Asked again for the same migration, returns an equivalent offer.
    func prepareOffer(migrationID: String, maximumBytes: Int64) async throws -> TransferOffer
    /// Destination: the file received for `offer`, with its size and SHA-256 computed here.
    func receivedFile(for offer: TransferOffer) async throws -> ReceivedImageFile
    /// Destination: withdraws the offer of `migrationID` and deletes anything received for it.
    func withdraw(migrationID: String) async throws
    /// Source: sends `file` to the destination's `offer`, reporting progress.
    func send(file: URL, to offer: TransferOffer, progress: @escaping @Sendable (TransferProgress) -> Void) async throws
    /// Destination: why the transfer announced for `migrationID` ended without a file (it never
    /// connected within its deadline, broke off for good, was cancelled); nil while it can still
    /// complete, once it completed, or when none was announced. Does not wait.
    func transferFailure(migrationID: String) async -> String?
}

extension ImageTransport {
    /// Transports whose transfers cannot lapse on their own (a local copy) never report one.
    public func transferFailure(migrationID: String) async -> String? { nil }
}

/// Moves metering with the instance (the broker implements it with the Metering module).
public protocol MeteringHandoff: Sendable {
    func apply(_ change: MeteringChange, at: Date) async throws
}

/// Decides whether a migration may happen: the agreement must exist and be in force, and the
/// policy must allow the request for the peer (the broker evaluates `PolicySet.evaluate`).
public typealias MigrationAuthorizer = @Sendable (
    _ request: PolicyRequest, _ peer: String, _ agreementID: String, _ now: Date
) async -> PolicyDecision

/// Decides whether a migration that `MigrationAuthorizer` allowed may also be live: the agreement
/// must grant `migrate-live` and the policy must allow it for the peer (the broker checks both).
/// `role` says which side asks: the source (moving out) or the destination (moving in).
public typealias LiveMigrationAuthorizer = @Sendable (
    _ role: MigrationRole, _ peer: String, _ agreementID: String, _ now: Date
) async -> PolicyDecision
