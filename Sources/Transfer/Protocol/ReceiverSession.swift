import Foundation

/// A transfer the receiving broker agreed to (from an offer carried over XMPP): what may arrive,
/// from whom, and where it goes. The destination is chosen here, never by the peer.
public struct ExpectedTransfer: Sendable, Equatable {
    public var transferID: String
    /// One-time secret from the offer; the sender must present it in its hello.
    public var token: String
    /// Where the completed file is renamed to. The partial file and its progress record live next
    /// to it (`<destination>.partial`, `<destination>.partial.chunks`).
    public var destination: URL
    public var fileSize: UInt64
    /// Expected SHA-256 of the whole file, lowercase hex.
    public var sha256: String
    /// Lowercase hex SHA-256 of the sending broker's leaf certificate (DER), as pinned by Trust.
    public var peerFingerprint: String

    public init(
        transferID: String, token: String, destination: URL, fileSize: UInt64, sha256: String, peerFingerprint: String
    ) {
        self.transferID = transferID
        self.token = token
        self.destination = destination
        self.fileSize = fileSize
        self.sha256 = sha256.lowercased()
        self.peerFingerprint = peerFingerprint.lowercased()
    }
}

/// The receiver's side of one connection, as a value-type state machine. The IO layer feeds it
/// what arrived and what the storage pipeline finished, and carries out the actions it returns.
struct ReceiverSession: Sendable {
    enum Phase: Equatable, Sendable {
        case awaitingHello
        case preparingStorage
        case receiving
        case finalizing
        case completed
        case failed
    }

    /// What the registry knows about the transfer a hello names.
    enum Lookup: Sendable {
        case notRegistered
        case registered(ExpectedTransfer, activeElsewhere: Bool)
    }

    enum Action: Equatable, Sendable {
        /// Claim the transfer for this connection, open the partial file and find the resume point.
        case prepareStorage(ExpectedTransfer, ChunkLayout)
        case send(ControlFrame)
        /// Read this chunk's bytes into a buffer and pass them to verification and storage.
        case receiveChunkData(index: UInt64, length: Int, digest: [UInt8])
        /// Everything is stored and the end-to-end hash matched: sync, rename into place.
        case finalize
        /// Remove the partial file and its progress record (resuming could not help).
        case discardPartial
        /// The transfer is done for good: completion is reported to whoever waits for it.
        case reportCompleted(sha256: [UInt8])
        /// The transfer failed for good (not just this connection).
        case reportFailed(TransferError)
        /// Stop this connection; the transfer (if any) stays registered and may be resumed.
        case close(reason: String)
    }

    let peerFingerprint: String
    let maximumChunkSize: UInt32
    private(set) var phase: Phase = .awaitingHello
    private(set) var transfer: ExpectedTransfer?
    private(set) var layout = ChunkLayout(fileSize: 0, chunkSize: 1)
    private(set) var expectedSHA256: [UInt8] = []
    /// Next chunk index expected on the wire.
    private(set) var nextChunkOnWire: UInt64 = 0
    /// Chunks verified and written, contiguous from 0.
    private(set) var storedChunks: UInt64 = 0
    private(set) var resumeFrom: UInt64 = 0

    init(peerFingerprint: String, maximumChunkSize: UInt32) {
        self.peerFingerprint = peerFingerprint.lowercased()
        self.maximumChunkSize = maximumChunkSize
    }

    var maximumChunkFrameLength: Int {
        phase == .receiving ? WireLimits.chunkHeaderLength + Int(layout.chunkSize) : 0
    }

    mutating func receivedHello(_ hello: Hello, lookup: Lookup) -> [Action] {
        guard phase == .awaitingHello else { return refuseConnection(.malformedFrame, "second hello") }
        guard hello.version == WireLimits.protocolVersion else {
            return refuseConnection(.unsupportedVersion, "version \(hello.version), expected \(WireLimits.protocolVersion)")
        }
        guard case .registered(let expected, let activeElsewhere) = lookup,
            constantTimeEqual(Array(expected.token.utf8), Array(hello.token.utf8))
        else { return refuseConnection(.unknownTransfer, "no transfer \(hello.transferID) with that token") }
        guard constantTimeEqual(Array(expected.peerFingerprint.utf8), Array(peerFingerprint.utf8)) else {
            return refuseConnection(
                .peerCertificateNotAccepted, "certificate \(peerFingerprint) is not the one pinned for this transfer")
        }
        guard hello.fileSize == expected.fileSize else {
            return refuseConnection(.offerMismatch, "size \(hello.fileSize), offer said \(expected.fileSize)")
        }
        guard (WireLimits.minimumChunkSize...maximumChunkSize).contains(hello.chunkSize) else {
            return refuseConnection(
                .offerMismatch, "chunk size \(hello.chunkSize) outside \(WireLimits.minimumChunkSize)...\(maximumChunkSize)")
        }
        guard hello.chunkSize % UInt32(ChainedDigest.blockLength) == 0 else {
            return refuseConnection(.offerMismatch, "chunk size \(hello.chunkSize) is not a multiple of \(ChainedDigest.blockLength)")
        }
        guard let digest = Hex.decode(expected.sha256), digest.count == WireLimits.digestLength else {
            return refuseConnection(.offerMismatch, "registered SHA-256 is not 64 hex digits")
        }
        guard !activeElsewhere else { return refuseConnection(.busy, "another connection is carrying this transfer") }
        transfer = expected
        expectedSHA256 = digest
        layout = ChunkLayout(fileSize: hello.fileSize, chunkSize: UInt64(hello.chunkSize))
        phase = .preparingStorage
        return [.prepareStorage(expected, layout)]
    }

    /// Storage is open; `verifiedChunks` chunks on disk still match their recorded digests, and
    /// `prefixChainingValue` is the SHA-256 chaining value over them (the sender continues from it).
    /// `fullFileSHA256` is the end-to-end digest when every chunk is already there.
    mutating func storagePrepared(
        verifiedChunks: UInt64, prefixChainingValue: [UInt8], fullFileSHA256: [UInt8]?
    ) -> [Action] {
        guard phase == .preparingStorage, verifiedChunks <= layout.chunkCount else {
            return storageFailed("resume point \(verifiedChunks) beyond \(layout.chunkCount) chunks")
        }
        phase = .receiving
        resumeFrom = verifiedChunks
        nextChunkOnWire = verifiedChunks
        storedChunks = verifiedChunks
        var actions: [Action] = [.send(.accept(resumeFrom: verifiedChunks, chainingValue: prefixChainingValue))]
        if verifiedChunks == layout.chunkCount, let fullFileSHA256 {
            actions += allChunksStored(sha256: fullFileSHA256)
        }
        return actions
    }

    mutating func receivedChunkHeader(index: UInt64, digest: [UInt8], dataLength: Int) -> [Action] {
        guard phase == .receiving else { return refuseTransfer(.malformedFrame, "chunk \(index) while \(phase)") }
        guard index == nextChunkOnWire, index < layout.chunkCount else {
            return refuseTransfer(.malformedFrame, "chunk \(index) where \(nextChunkOnWire) was expected")
        }
        guard dataLength == layout.length(of: index) else {
            return refuseTransfer(
                .malformedFrame, "chunk \(index) has \(dataLength) bytes, expected \(layout.length(of: index))")
        }
        nextChunkOnWire += 1
        return [.receiveChunkData(index: index, length: dataLength, digest: digest)]
    }

    /// The bytes of chunk `index` did not hash (chained after the chunks before it) to the digest
    /// that came with them.
    mutating func chunkRejected(index: UInt64, computed: [UInt8]) -> [Action] {
        refuseTransfer(.chunkDigestMismatch, "chunk \(index) hashes to \(Hex.encode(computed))")
    }

    mutating func chunkStored(index: UInt64) -> [Action] {
        guard phase == .receiving, index == storedChunks else { return [] }
        storedChunks += 1
        return [.send(.ack(storedChunks: storedChunks))]
    }

    /// The storage pipeline hashed the last chunk: `sha256` covers the whole file.
    mutating func allChunksStored(sha256: [UInt8]) -> [Action] {
        guard phase == .receiving, storedChunks == layout.chunkCount else { return [] }
        guard constantTimeEqual(sha256, expectedSHA256) else {
            return refuseTransfer(
                .endToEndDigestMismatch,
                "file hashes to \(Hex.encode(sha256)), expected \(Hex.encode(expectedSHA256))") + [.discardPartial]
        }
        phase = .finalizing
        return [.finalize]
    }

    mutating func finalized() -> [Action] {
        guard phase == .finalizing else { return [] }
        phase = .completed
        return [
            .send(.complete(fileSize: layout.fileSize, sha256: expectedSHA256)),
            .reportCompleted(sha256: expectedSHA256),
            .close(reason: "transfer complete"),
        ]
    }

    /// The receiving broker withdrew the transfer while this connection carried it: tell the
    /// sender, drop what was written (the outcome is already recorded).
    mutating func cancelled() -> [Action] {
        phase = .failed
        return [
            .send(.error(.cancelled, "the receiver withdrew this transfer")), .discardPartial,
            .close(reason: "transfer withdrawn"),
        ]
    }

    mutating func storageFailed(_ reason: String) -> [Action] {
        refuseTransfer(.storageFailure, reason)
    }

    /// A frame could not be parsed (bad type, oversized, truncated).
    mutating func peerViolatedProtocol(_ reason: String) -> [Action] {
        refuseTransfer(.malformedFrame, reason)
    }

    /// A control frame arrived while chunks were expected: only an error (the sender giving up)
    /// makes sense.
    mutating func received(_ frame: ControlFrame) -> [Action] {
        if case .error(let code, let reason) = frame {
            phase = .failed
            return [.close(reason: "sender gave up (\(code)): \(reason)")]
        }
        return refuseTransfer(.malformedFrame, "unexpected \(frame.type) frame")
    }

    /// Refuses this connection only; a registered transfer stays pending (a stranger's mistake
    /// must not cancel someone else's transfer).
    private mutating func refuseConnection(_ code: RefusalCode, _ reason: String) -> [Action] {
        phase = .failed
        return [.send(.error(code, reason)), .close(reason: "\(code): \(reason)")]
    }

    /// Refuses the transfer for good: the authenticated sender sent something that retrying will
    /// not fix.
    private mutating func refuseTransfer(_ code: RefusalCode, _ reason: String) -> [Action] {
        guard transfer != nil else { return refuseConnection(code, reason) }
        phase = .failed
        return [.send(.error(code, reason)), .reportFailed(.refused(code, reason)), .close(reason: "\(code): \(reason)")]
    }
}

/// Compares secrets without an early exit, so timing does not tell how much of a guess matched.
func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    var difference: UInt8 = 0
    for index in a.indices { difference |= a[index] ^ b[index] }
    return difference == 0
}
