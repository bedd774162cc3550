import Foundation

/// The sender's side of one connection, as a value-type state machine: it decides what to send
/// and whether what the receiver says makes sense; the IO layer reads the file, hashes, and moves
/// bytes. One session per connection attempt.
struct SenderSession: Sendable {
    enum Phase: Equatable, Sendable {
        case awaitingAccept
        case streaming
        case finished
        case failed
    }

    enum Action: Equatable, Sendable {
        /// Send chunks `from ..< chunkCount`, pipelined, chaining digests on from `prefix` (the
        /// hash state over the chunks before `from`, as the receiver has them).
        case streamChunks(from: UInt64, prefix: ChainedDigest)
        case reportProgress(bytesDone: UInt64)
        /// The receiver confirmed the whole file (its end-to-end SHA-256).
        case finish(sha256: [UInt8])
        case fail(TransferError)
    }

    let hello: Hello
    let chunkCount: UInt64
    private(set) var phase: Phase = .awaitingAccept
    private(set) var resumeFrom: UInt64 = 0
    private(set) var chunksSent: UInt64 = 0
    private(set) var storedChunks: UInt64 = 0

    init(transferID: String, token: String, fileSize: UInt64, chunkSize: UInt32) throws(TransferError) {
        guard (WireLimits.minimumChunkSize...WireLimits.maximumChunkSize).contains(chunkSize),
            chunkSize % UInt32(ChainedDigest.blockLength) == 0
        else {
            throw .invalidArgument(
                "chunk size \(chunkSize) outside \(WireLimits.minimumChunkSize)...\(WireLimits.maximumChunkSize) or not a multiple of \(ChainedDigest.blockLength)")
        }
        guard !transferID.isEmpty, transferID.utf8.count <= WireLimits.maximumIdentifierLength,
            token.utf8.count <= WireLimits.maximumIdentifierLength
        else { throw .invalidArgument("transfer id and token must be 1...\(WireLimits.maximumIdentifierLength) bytes") }
        hello = Hello(fileSize: fileSize, chunkSize: chunkSize, transferID: transferID, token: token)
        chunkCount = ChunkLayout(fileSize: fileSize, chunkSize: UInt64(chunkSize)).chunkCount
    }

    var layout: ChunkLayout { ChunkLayout(fileSize: hello.fileSize, chunkSize: UInt64(hello.chunkSize)) }

    mutating func received(_ frame: ControlFrame) -> [Action] {
        switch (phase, frame) {
        case (.awaitingAccept, .accept(let resume, let chainingValue)):
            guard resume <= chunkCount else {
                return fail(.protocolViolation("receiver asked to resume at chunk \(resume) of \(chunkCount)"))
            }
            // From the start the state is SHA-256's own; later, the receiver's (a wrong one only
            // makes the receiver refuse its own chunks).
            let prefix: ChainedDigest
            if resume == 0 {
                prefix = ChainedDigest()
            } else if resume < chunkCount,
                let restored = ChainedDigest(chainingValue: chainingValue, absorbedBytes: layout.bytes(before: resume))
            {
                prefix = restored
            } else if resume == chunkCount {
                prefix = ChainedDigest()  // nothing left to send
            } else {
                return fail(.protocolViolation("receiver sent an unusable hash state for chunk \(resume)"))
            }
            phase = .streaming
            resumeFrom = resume
            chunksSent = resume
            storedChunks = resume
            return [.reportProgress(bytesDone: layout.bytes(before: resume)), .streamChunks(from: resume, prefix: prefix)]
        case (.streaming, .ack(let stored)):
            // Cumulative, never backwards, never ahead of what was sent.
            guard stored >= storedChunks, stored <= chunksSent else {
                return fail(.protocolViolation("ack for \(stored) chunks after \(storedChunks), \(chunksSent) sent"))
            }
            guard stored > storedChunks else { return [] }
            storedChunks = stored
            return [.reportProgress(bytesDone: layout.bytes(before: stored))]
        case (.streaming, .complete(let size, let digest)):
            guard storedChunks == chunkCount || chunksSent == chunkCount, size == hello.fileSize else {
                return fail(.protocolViolation("completion before all chunks were sent"))
            }
            storedChunks = chunkCount
            phase = .finished
            return [.reportProgress(bytesDone: hello.fileSize), .finish(sha256: digest)]
        case (_, .error(let code, let reason)):
            return fail(.peerRefused(code, reason))
        default:
            return fail(.protocolViolation("unexpected \(frame.type) frame while \(phase)"))
        }
    }

    /// The IO layer put chunk `index` on the wire.
    mutating func sentChunk(_ index: UInt64) {
        precondition(phase == .streaming && index == chunksSent, "chunks go out in order")
        chunksSent = index + 1
    }

    private mutating func fail(_ error: TransferError) -> [Action] {
        phase = .failed
        return [.fail(error)]
    }
}

/// How a file is cut into chunks: all `chunkSize` long except a shorter last one.
struct ChunkLayout: Equatable, Sendable {
    var fileSize: UInt64
    var chunkSize: UInt64

    var chunkCount: UInt64 { (fileSize + chunkSize - 1) / chunkSize }

    func offset(of index: UInt64) -> UInt64 { index * chunkSize }

    func length(of index: UInt64) -> Int {
        Int(min(chunkSize, fileSize - offset(of: index)))
    }

    func bytes(before index: UInt64) -> UInt64 { min(fileSize, index * chunkSize) }
}
