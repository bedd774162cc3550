import Foundation
import Synchronization
import Glibc
import Logging

/// One accepted connection on the receiving side: the IO around a `ReceiverSession`.
///
/// Chunks flow network thread → verify thread (chained SHA-256, which checks the chunk and carries
/// the end-to-end hash) → store thread (write at offset, record digest) through a fixed pool of
/// buffers; the stages report back through an event queue that the network thread drains between
/// frames.
struct ReceiverConnection {
    let server: TransferServer
    let fd: Int32
    let interrupter: ConnectionInterrupter

    enum StageEvent: Sendable {
        case rejected(index: UInt64, computed: [UInt8])
        case stored(index: UInt64)
        case allStored(sha256: [UInt8])
        case storageFailed(String)
    }

    private var logger: Logger { server.logger }

    func run() {
        let stream: TLSStream
        do throws(TransferError) {
            stream = try TLSStream(
                fd: fd, context: server.tlsContext, idleTimeout: server.options.handshakeTimeout, interrupter: interrupter)
        } catch {
            logger.warning("transfer connection: \(error)")
            return
        }
        // The handshake and the hello after it must finish within handshakeTimeout in all: a
        // client that trickles bytes cannot hold a connection slot for longer.
        stream.setDeadline(ContinuousClock.now.advanced(by: .milliseconds(Int64(server.options.handshakeTimeout * 1000))))
        do throws(TransferError) {
            try stream.handshake(asServer: true)
        } catch {
            logger.notice("transfer connection refused during TLS handshake: \(error)")
            return
        }
        guard let fingerprint = stream.peerFingerprint() else { return }
        var connection = ActiveConnection(
            server: server, stream: stream, interrupter: interrupter,
            session: ReceiverSession(
                peerFingerprint: fingerprint, maximumChunkSize: UInt32(clamping: server.options.maximumChunkSize)))
        connection.run()
    }
}

/// The state of one authenticated connection while it runs.
private struct ActiveConnection {
    let server: TransferServer
    let stream: TLSStream
    let interrupter: ConnectionInterrupter
    var session: ReceiverSession
    var claimedTransfer: String?
    var pipeline: StoragePipeline?
    var chunkBytes: UInt64 = 0
    var closing = false
    var failureSent = false

    init(server: TransferServer, stream: TLSStream, interrupter: ConnectionInterrupter, session: ReceiverSession) {
        self.server = server
        self.stream = stream
        self.interrupter = interrupter
        self.session = session
    }

    var logger: Logger { server.logger }

    mutating func run() {
        do throws(TransferError) {
            let header = try stream.readFrameHeader(maximumChunkFrameLength: 0)
            guard header.type == .hello else { throw .protocolViolation("expected a hello, got \(header.type)") }
            guard case .hello(let hello) = try stream.decode(header, payload: stream.readExactly(header.length)) else {
                throw .protocolViolation("undecodable hello")
            }
            stream.setDeadline(nil)  // authenticated: from here each wait is bounded by idleTimeout
            try execute(server.registry.evaluate(hello, session: &session, now: Date()))
            while !closing {
                if let event = pipeline?.events.tryPop() {
                    try handle(event)
                } else if session.phase == .receiving, session.nextChunkOnWire < session.layout.chunkCount {
                    try receiveFrame()
                } else if session.phase == .receiving, let pipeline {
                    // Everything is on the wire; wait for the stages, but not past an interrupt.
                    if let event = pipeline.events.pop(timeout: 0.2) {
                        try handle(event)
                    } else if interrupter.isInterrupted {
                        throw .cancelled
                    }
                } else {
                    break
                }
            }
        } catch {
            if interrupter.isInterrupted {
                logger.info("transfer connection broken off: \(error)")
            } else {
                logger.notice("transfer connection ended: \(error)")
                if case .protocolViolation(let why) = error, !failureSent {
                    // The peer sent garbage: tell it why; a claimed transfer fails (the peer is
                    // authenticated, and garbage is not a network fault).
                    try? execute(session.peerViolatedProtocol(why))
                }
            }
        }
        pipeline?.finish()
        if let claimedTransfer {
            server.registry.release(claimedTransfer, chunkBytes: chunkBytes, resumePoint: session.resumeFrom)
        }
    }

    private mutating func receiveFrame() throws(TransferError) {
        stream.setIdleTimeout(server.options.idleTimeout)
        let header = try stream.readFrameHeader(maximumChunkFrameLength: session.maximumChunkFrameLength)
        guard header.type == .chunk else {
            try execute(session.received(stream.decode(header, payload: stream.readExactly(header.length))))
            return
        }
        let chunkHeader = try stream.readExactly(WireLimits.chunkHeaderLength)
        let index = chunkHeader[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let digest = Array(chunkHeader[8..<40])
        try execute(
            session.receivedChunkHeader(
                index: index, digest: digest, dataLength: header.length - WireLimits.chunkHeaderLength))
    }

    private mutating func handle(_ event: ReceiverConnection.StageEvent) throws(TransferError) {
        switch event {
        case .rejected(let index, let computed):
            try execute(session.chunkRejected(index: index, computed: computed))
        case .stored(let index):
            if let transferID = claimedTransfer, !server.registry.isPending(transferID) {
                // Withdrawn by the receiving broker while in flight.
                try execute(session.cancelled())
                return
            }
            try execute(session.chunkStored(index: index))
            let drop = server.faults.withLock { faults -> Bool in
                guard let limit = faults.dropConnectionAfterStoredChunks, session.storedChunks - session.resumeFrom >= UInt64(limit)
                else { return false }
                faults.dropConnectionAfterStoredChunks = nil
                return true
            }
            if drop {
                interrupter.interrupt()
                throw .connectionLost("dropped on purpose after \(session.storedChunks) chunks")
            }
        case .allStored(let digest):
            try execute(session.allChunksStored(sha256: digest))
        case .storageFailed(let reason):
            try execute(session.storageFailed(reason))
        }
    }

    private mutating func execute(_ actions: [ReceiverSession.Action]) throws(TransferError) {
        for action in actions {
            switch action {
            case .prepareStorage(let transfer, let layout):
                claimedTransfer = transfer.transferID
                let pool = ChunkBufferPool(count: server.options.bufferCount, chunkCapacity: Int(layout.chunkSize))
                let opened: PartialFileStore.Opened
                do throws(TransferError) {
                    guard let scratch = pool.take() else { throw .cancelled }
                    defer { pool.giveBack(scratch) }
                    opened = try PartialFileStore.open(
                        transfer, layout: layout, direct: server.options.directWrites,
                        scratch: UnsafeMutableRawBufferPointer(rebasing: scratch.storage[ChunkBuffer.headerRoom...]))
                } catch {
                    try execute(session.storageFailed("\(error)"))
                    return
                }
                let pipeline = StoragePipeline(pool: pool, store: opened.store, prefix: opened.prefixHasher)
                pipeline.start()
                self.pipeline = pipeline
                let complete = opened.verifiedChunks == layout.chunkCount
                try execute(
                    session.storagePrepared(
                        verifiedChunks: opened.verifiedChunks,
                        // Mid-file the state is on a chunk (so block) boundary; a complete file's
                        // state may not be, and the sender needs none then.
                        prefixChainingValue: complete ? [UInt8](repeating: 0, count: WireLimits.digestLength)
                            : opened.prefixHasher.chainingValue,
                        fullFileSHA256: complete ? opened.prefixHasher.finalDigest : nil))
            case .send(let frame):
                if case .error = frame { failureSent = true }
                try stream.write(frame.encoded())
            case .receiveChunkData(let index, let length, let digest):
                guard let pipeline, var buffer = pipeline.pool.take(unless: interrupter.isInterrupted) else {
                    throw .cancelled
                }
                buffer.index = index
                buffer.length = length
                buffer.digest = digest
                do throws(TransferError) {
                    try stream.readExactly(into: buffer.data)
                } catch {
                    pipeline.pool.giveBack(buffer)
                    throw error
                }
                chunkBytes += UInt64(length)
                pipeline.chunks.push(buffer)
            case .finalize:
                guard let pipeline else { return }
                pipeline.finish()
                if let transferID = claimedTransfer, !server.registry.isPending(transferID) {
                    pipeline.store.discard()
                    try execute(session.cancelled())
                    return
                }
                do throws(TransferError) {
                    try pipeline.store.finalize(sync: server.options.syncOnCompletion)
                } catch {
                    try execute(session.storageFailed("\(error)"))
                    return
                }
                try execute(session.finalized())
            case .discardPartial:
                pipeline?.finish()
                pipeline?.store.discard()
            case .reportCompleted(let digest):
                guard let transferID = claimedTransfer else { continue }
                server.registry.release(transferID, chunkBytes: chunkBytes, resumePoint: session.resumeFrom)
                chunkBytes = 0
                claimedTransfer = nil
                if let receipt = server.registry.receipt(for: transferID, sha256: digest, now: Date()) {
                    server.registry.finish(transferID, with: .success(receipt))
                }
                logger.info("transfer \(transferID) complete")
            case .reportFailed(let error):
                if let transferID = claimedTransfer {
                    logger.warning("transfer \(transferID) failed: \(error)")
                    server.registry.finish(transferID, with: .failure(error))
                }
            case .close(let reason):
                logger.debug("transfer connection closing: \(reason)")
                closing = true
                stream.shutdownGracefully()
                if failureSent { lingerBeforeClose() }
            }
        }
    }

    /// After refusing, keep reading (and dropping) for a moment so the refusal reaches the sender:
    /// closing with unread data would make the kernel reset the connection and the sender could
    /// lose the error frame.
    private func lingerBeforeClose() {
        shutdown(stream.fd, Int32(SHUT_WR))
        let deadline = Date() + 2
        var scratch = [UInt8](repeating: 0, count: 64 * 1024)
        while Date() < deadline {
            var descriptor = pollfd(fd: stream.fd, events: Int16(POLLIN), revents: 0)
            guard poll(&descriptor, 1, 100) >= 0 else { return }
            let result = scratch.withUnsafeMutableBytes { read(stream.fd, $0.baseAddress, $0.count) }
            if result == 0 { return }
            if result < 0, errno != EAGAIN, errno != EINTR { return }
        }
    }
}

/// The verify and store stages of one connection, with their queues and buffer pool.
///
/// Verify thread: absorbs each chunk into the chained SHA-256 and compares the chunk's chained
/// digest. Store thread: writes the chunk at its offset (unless already written), records it as
/// verified, reports it stored. Only a chunk that matched is recorded and counted as stored.
///
/// With direct writes the store thread mostly waits for the device while the verify thread hashes
/// the next chunk, so hashing never waits for the disk. Through the page cache the verify thread
/// writes slice by slice right after hashing each slice instead (the copy into the page cache then
/// reads bytes the hash just pulled into this core's cache), before the chunk is checked; a chunk
/// that did not match stays unrecorded in the partial file (a resume re-verifies against the
/// record, and the transfer is refused anyway).
private final class StoragePipeline: Sendable {
    let pool: ChunkBufferPool
    let store: PartialFileStore
    let chunks: BlockingQueue<ChunkBuffer>
    private let verified: BlockingQueue<ChunkBuffer>
    let events = BlockingQueue<ReceiverConnection.StageEvent>(capacity: Int.max)
    private let prefix: ChainedDigest
    private let stagesDone = DispatchSemaphore(value: 0)

    init(pool: ChunkBufferPool, store: PartialFileStore, prefix: ChainedDigest) {
        self.pool = pool
        self.store = store
        self.prefix = prefix
        self.chunks = BlockingQueue(capacity: pool.count)
        self.verified = BlockingQueue(capacity: pool.count)
    }

    func start() {
        let direct = store.writesDirectly
        startThread(name: "transfer-verify") { [self] in
            defer {
                verified.close()
                stagesDone.signal()
            }
            var hasher = prefix
            var stopped = false
            while let buffer = chunks.pop() {
                if stopped {
                    pool.giveBack(buffer)
                    continue
                }
                let data = UnsafeRawBufferPointer(buffer.data)
                let chunkOffset = store.layout.offset(of: buffer.index)
                do throws(TransferError) {
                    var offset = 0
                    while offset < data.count {
                        let slice = UnsafeRawBufferPointer(rebasing: data[offset..<min(data.count, offset + Self.sliceLength)])
                        hasher.update(slice)
                        if !direct { try store.write(slice, at: chunkOffset + UInt64(offset)) }
                        offset += slice.count
                    }
                } catch {
                    stopped = true
                    events.push(.storageFailed("\(error)"))
                    pool.giveBack(buffer)
                    continue
                }
                let computed = hasher.chunkDigest(isLast: buffer.index + 1 == store.layout.chunkCount)
                guard constantTimeEqual(computed, buffer.digest) else {
                    stopped = true
                    events.push(.rejected(index: buffer.index, computed: computed))
                    pool.giveBack(buffer)
                    continue
                }
                if !verified.push(buffer) { pool.giveBack(buffer) }
            }
        }
        startThread(name: "transfer-store") { [self] in
            defer { stagesDone.signal() }
            var failed = false
            while let buffer = verified.pop() {
                defer { pool.giveBack(buffer) }
                if failed { continue }
                do throws(TransferError) {
                    if direct { try store.write(UnsafeRawBufferPointer(buffer.data), at: store.layout.offset(of: buffer.index)) }
                    try store.recordVerified(index: buffer.index, digest: buffer.digest)
                } catch {
                    failed = true
                    events.push(.storageFailed("\(error)"))
                    continue
                }
                events.push(.stored(index: buffer.index))
                if buffer.index + 1 == store.layout.chunkCount { events.push(.allStored(sha256: buffer.digest)) }
            }
        }
    }

    private let finished = Atomic<Bool>(false)
    /// Small enough to stay in a core's L2 cache between the hash and the write.
    static let sliceLength = 256 * 1024

    /// Stops the stages after what is queued and waits for both to exit (idempotent).
    func finish() {
        guard !finished.exchange(true, ordering: .acquiringAndReleasing) else { return }
        chunks.close()
        stagesDone.wait()
        stagesDone.wait()
    }
}
