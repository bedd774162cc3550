import Foundation
import Logging
import Peering
import Synchronization
import Transfer
import Trust
import XMPP

/// `ImageTransport` for migrations between brokers: the data goes over the Transfer module's
/// mutual-TLS channel (each side presents its broker certificate; each accepts only the peer's
/// pinned fingerprint), the control over XMPP.
///
/// 1. Destination, at reservation: `prepareOffer` makes a one-time token; the offer (host, port,
///    token) travels to the source inside the signed `reserved` message.
/// 2. Source, when its file is ready: announces size and SHA-256 in a signed IQ
///    (`<announce xmlns='urn:intercloud:transfer:0'/>`); the destination checks them against the
///    offer (size bound, sender) and registers the expected transfer with its TLS server.
/// 3. Source sends: chunks hashed one by one, the whole file hashed end to end, resumed from the
///    last verified chunk after a break (the receiver keeps its partial file and chunk record).
/// 4. Destination, on `transferred`: waits for the completed file and reports it.
///
/// The TLS server only accepts connections for registered transfers from the pinned certificate,
/// and writes only to the registered destination inside the migration's work folder.
final class BrokerImageTransport: ImageTransport, Sendable {
    public static let namespace = TransferAnnouncement.namespace

    struct Offer: Sendable {
        var token: String
        var maximumBytes: Int64
        var peer: String?
        var destination: URL
        var registeredSHA256: String?
    }

    let server: TransferServer
    let sender: TransferSender
    let advertisedHost: String
    let workDirectory: URL
    let signed: any SignedTransport
    let trustStore: TrustStore
    let logger: Logger
    private let offers = Mutex<[String: Offer]>([:])
    /// Bytes moved per migration (both sides), for metering.
    let onTransferred: @Sendable (_ migrationID: String, _ bytes: Int64) -> Void

    init(
        identity: TransferIdentity, host: String, port: UInt16, waitTimeout: TimeInterval = TransferServer.Options().waitTimeout,
        advertisedHost: String, workDirectory: URL, signed: any SignedTransport,
        trustStore: TrustStore, logger: Logger,
        lookupOffer: @escaping @Sendable (Migration.TransferOffer) -> (migrationID: String, peer: String, sha256: String?)?,
        onTransferred: @escaping @Sendable (String, Int64) -> Void
    ) throws {
        self.lookupOffer = lookupOffer
        var options = TransferServer.Options()
        options.waitTimeout = waitTimeout
        server = try TransferServer(host: host, port: port, identity: identity, options: options, logger: logger)
        sender = TransferSender(identity: identity, logger: logger)
        self.advertisedHost = advertisedHost
        self.workDirectory = workDirectory
        self.signed = signed
        self.trustStore = trustStore
        self.logger = logger
        self.onTransferred = onTransferred
    }

    /// Bounds an announcement's payload (a handful of short attributes).
    static let maxAnnouncementBytes = 4096

    func shutdown() { server.shutdown() }

    private func file(for migrationID: String) -> URL {
        workDirectory.appendingPathComponent(migrationID, isDirectory: true).appendingPathComponent("received.img")
    }

    // MARK: destination

    func prepareOffer(migrationID: String, maximumBytes: Int64) async throws -> Migration.TransferOffer {
        let destination = file(for: migrationID)
        try FileManager.default.createDirectory(at: destination.deletingLastPathComponent(), withIntermediateDirectories: true)
        let offer = offers.withLock { offers in
            if let existing = offers[migrationID] { return existing }
            let fresh = Offer(token: Self.token(), maximumBytes: maximumBytes, peer: nil, destination: destination, registeredSHA256: nil)
            offers[migrationID] = fresh
            return fresh
        }
        return Migration.TransferOffer(host: advertisedHost, port: String(server.port), token: offer.token)
    }

    /// The source's announcement: registers the transfer with the TLS server.
    /// Answers a peer's `<announce/>` of an image it is about to send.
    func announced(_ request: SignedRequest) throws(StanzaError) -> [UInt8] {
        let announcement = try TransferAnnouncement(parsing: request.payload)
        let (migrationID, token, size, sha256) = (announcement.migrationID, announcement.token, announcement.size, announcement.sha256)
        guard var offer = offers.withLock({ $0[migrationID] }), offer.token == token else {
            throw .itemNotFound("no transfer offer for migration \(migrationID) with this token")
        }
        guard size <= offer.maximumBytes else {
            throw .notAcceptable("image of \(size) bytes exceeds the \(offer.maximumBytes) bytes reserved")
        }
        if let peer = offer.peer, peer != request.peer { throw .forbidden("the offer belongs to \(peer)") }
        guard let fingerprint = (try? trustStore.pin(for: request.peer))??.fingerprint else {
            throw .notAuthorized("\(request.peer) has no pinned certificate")
        }
        if offer.registeredSHA256 == nil || offer.registeredSHA256 == sha256.lowercased() {
            do {
                try server.register(ExpectedTransfer(
                    transferID: migrationID, token: token, destination: offer.destination, fileSize: UInt64(size), sha256: sha256,
                    peerFingerprint: fingerprint))
            } catch {
                // Registered already (an announcement repeated after a break): the same transfer goes on.
                if offer.registeredSHA256 == nil { throw .notAcceptable("cannot accept the transfer: \(error)") }
            }
        } else {
            throw .notAcceptable("a different image was announced for migration \(migrationID)")
        }
        offer.peer = request.peer
        offer.registeredSHA256 = sha256.lowercased()
        offers.withLock { $0[migrationID] = offer }
        logger.info("migration \(migrationID): expecting \(size) bytes from \(request.peer) over TLS")
        return TransferAnnouncement.accepted(migrationID: migrationID)
    }

    func receivedFile(for offer: Migration.TransferOffer) async throws -> ReceivedImageFile {
        guard let (migrationID, stored) = offers.withLock({ $0.first { $0.value.token == offer.token } }) else {
            throw MigrationTransportError("no offer with this token (the broker restarted before the transfer completed)")
        }
        if FileManager.default.fileExists(atPath: stored.destination.path), let expected = stored.registeredSHA256 {
            // Completed (renamed into place only after the end-to-end hash matched).
            if let receipt = try? await server.completion(of: migrationID) {
                onTransferred(migrationID, Int64(receipt.fileSize))
                return ReceivedImageFile(url: stored.destination, bytes: Int64(receipt.fileSize), sha256: receipt.sha256, hashedAsStored: true)
            }
            let (bytes, digest) = try await FileDigest.sha256(of: stored.destination)
            guard digest == expected else { throw MigrationTransportError("received file does not match the announced SHA-256") }
            return ReceivedImageFile(url: stored.destination, bytes: bytes, sha256: digest, hashedAsStored: true)
        }
        let receipt: TransferReceipt
        do { receipt = try await server.completion(of: migrationID) } catch {
            throw MigrationTransportError("transfer for migration \(migrationID) failed: \(error)")
        }
        onTransferred(migrationID, Int64(receipt.fileSize))
        return ReceivedImageFile(url: stored.destination, bytes: Int64(receipt.fileSize), sha256: receipt.sha256, hashedAsStored: true)
    }

    func transferFailure(migrationID: String) async -> String? {
        server.failure(of: migrationID).map { "\($0)" }
    }

    func withdraw(migrationID: String) async throws {
        server.cancel(transferID: migrationID)
        offers.withLock { _ = $0.removeValue(forKey: migrationID) }
        let folder = workDirectory.appendingPathComponent(migrationID, isDirectory: true)
        for suffix in ["", ".partial", ".partial.chunks"] {
            try? FileManager.default.removeItem(at: folder.appendingPathComponent("received.img\(suffix)"))
        }
    }

    // MARK: source

    /// The migration an offer belongs to, its peer and the staged file's SHA-256, from the source
    /// journal (the offer came in the destination's `reserved` answer, stored there).
    let lookupOffer: @Sendable (Migration.TransferOffer) -> (migrationID: String, peer: String, sha256: String?)?

    func send(file: URL, to offer: Migration.TransferOffer, progress: @escaping @Sendable (Migration.TransferProgress) -> Void) async throws {
        guard let context = lookupOffer(offer) else { throw MigrationTransportError("no migration in the journal holds this offer") }
        try await send(file: file, sha256: context.sha256, to: offer, migrationID: context.migrationID, peer: context.peer, progress: progress)
    }

    /// Announces the file to `peer` then sends it over TLS, resuming after breaks.
    func send(
        file: URL, sha256 knownSHA256: String?, to offer: Migration.TransferOffer, migrationID: String, peer: String,
        progress: @escaping @Sendable (Migration.TransferProgress) -> Void
    ) async throws {
        guard let port = UInt16(offer.port), !offer.host.isEmpty else { throw MigrationTransportError("invalid offer \(offer.host):\(offer.port)") }
        let size: Int64
        let sha256: String
        if let knownSHA256 {
            size = Int64((try FileManager.default.attributesOfItem(atPath: file.path)[.size] as? NSNumber)?.int64Value ?? 0)
            sha256 = knownSHA256
        } else {
            (size, sha256) = try await FileDigest.sha256(of: file)
        }
        let target = try signed.route(to: try JID(peer))
        let announcement = TransferAnnouncement(migrationID: migrationID, token: offer.token, size: size, sha256: sha256)
        let answer = try await signed.request(.set, to: target, namespace: Self.namespace, payload: announcement.payload, timeout: .seconds(30))
        guard try TransferAnnouncement.parseAccepted(answer) == migrationID else {
            throw MigrationTransportError("\(peer) accepted the transfer of another migration")
        }
        guard let fingerprint = try trustStore.pin(for: peer)?.fingerprint else {
            throw MigrationTransportError("\(peer) has no pinned certificate")
        }
        let receipt = try await sender.send(
            file: file, host: offer.host, port: port, transferID: migrationID, token: offer.token, expectedPeerFingerprint: fingerprint
        ) { update in
            progress(Migration.TransferProgress(
                bytes: Int64(update.bytesDone), totalBytes: Int64(update.totalBytes), bytesPerSecond: update.bytesPerSecond,
                etaSeconds: update.eta))
        }
        onTransferred(migrationID, Int64(receipt.fileSize))
        logger.info("migration \(migrationID): sent \(receipt.fileSize) bytes in \(String(format: "%.2f", receipt.duration)) s (\(receipt.attempts) attempt(s))")
    }

    static func token() -> String {
        (0..<24).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
    }
}

struct MigrationTransportError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
