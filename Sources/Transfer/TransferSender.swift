import Crypto
import Foundation
import Glibc
import Logging
import Synchronization

/// Sends a file to a receiving broker's `TransferServer` over mutual TLS.
///
/// The file is cut into chunks; a reader thread reads and hashes them into a fixed pool of
/// buffers while the connection thread writes them out without waiting for acknowledgements
/// (acks are cumulative and read between writes). After a break the sender reconnects with
/// backoff and the receiver tells it where to resume.
public struct TransferSender: Sendable {
    public struct Options: Sendable, Equatable {
        /// Bytes per chunk (each carries its own SHA-256). 1 MiB by default: on loopback 1 MiB
        /// chunks cost the receiver less kernel time than 4 MiB ones (each pass over a chunk —
        /// decrypt, two hashes, write — stays closer to the cache), with the same throughput.
        public var chunkSize: Int
        /// Chunk buffers in flight: memory is `bufferCount × chunkSize`, whatever the file size.
        public var bufferCount: Int
        public var connectTimeout: TimeInterval
        /// A connection that makes no progress for this long is dropped (and retried).
        public var idleTimeout: TimeInterval
        public var retry: RetryPolicy
        /// Read the file past the page cache (`O_DIRECT`) when the file system and chunk size
        /// allow it, else through it. The file is read once, front to back: copying it out of the
        /// page cache (and filling the cache with pages that are read once) cost the sender more
        /// CPU than the device reading straight into the chunk buffers.
        public var directReads: Bool

        public init(
            chunkSize: Int = 1 << 20, bufferCount: Int = 8, connectTimeout: TimeInterval = 10,
            idleTimeout: TimeInterval = 30, retry: RetryPolicy = RetryPolicy(), directReads: Bool = true
        ) {
            self.chunkSize = chunkSize
            self.bufferCount = max(2, bufferCount)
            self.connectTimeout = connectTimeout
            self.idleTimeout = idleTimeout
            self.retry = retry
            self.directReads = directReads
        }
    }

    /// Misbehaviour on purpose, for tests of the receiver's defences.
    struct Faults: Sendable {
        /// Flip a byte of this chunk after hashing it, as a tampering middlebox or a bad disk would.
        var corruptChunk: UInt64?
    }

    public let identity: TransferIdentity
    public var options: Options
    var faults = Faults()
    let logger: Logger

    public init(identity: TransferIdentity, options: Options = Options(), logger: Logger = Logger(label: "intercloud.transfer")) {
        self.identity = identity
        self.options = options
        self.logger = logger
    }

    /// Sends `file` as transfer `transferID`, authenticating with `identity` and accepting the
    /// receiver only if its leaf certificate's SHA-256 fingerprint is `expectedPeerFingerprint`.
    /// `progress` is called (on the transfer's own thread) whenever the receiver confirms chunks.
    /// Cancelling the calling task breaks the connection; a later `send` of the same transfer
    /// resumes where the receiver got to.
    public func send(
        file: URL, host: String, port: UInt16, transferID: String, token: String, expectedPeerFingerprint: String,
        progress: @escaping @Sendable (TransferProgress) -> Void = { _ in }
    ) async throws(TransferError) -> TransferReceipt {
        let interrupter = ConnectionInterrupter()
        let job = SendJob(
            sender: self, file: file, host: host, port: port, transferID: transferID, token: token,
            expectedPeerFingerprint: expectedPeerFingerprint.lowercased(), progress: progress, interrupter: interrupter)
        let result: Result<TransferReceipt, TransferError> = await withTaskCancellationHandler {
            do throws(TransferError) {
                return .success(try await runOnDedicatedThread(name: "transfer-send") { () throws(TransferError) in try job.run() })
            } catch {
                return .failure(error)
            }
        } onCancel: {
            interrupter.interrupt()
        }
        return try result.get()
    }
}

/// One `send` call: all its attempts, on one dedicated thread.
private struct SendJob: Sendable {
    let sender: TransferSender
    let file: URL
    let host: String
    let port: UInt16
    let transferID: String
    let token: String
    let expectedPeerFingerprint: String
    let progress: @Sendable (TransferProgress) -> Void
    let interrupter: ConnectionInterrupter

    var options: TransferSender.Options { sender.options }

    func run() throws(TransferError) -> TransferReceipt {
        ignoreSIGPIPE()
        let started = Date()
        let fd = Glibc.open(file.path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .fileError("cannot open \(file.path): \(Sockets.errnoText())") }
        let source = FileDescriptor(fd)
        let fileSize = try source.size()
        // Refused (EINVAL) by file systems without direct IO: then the buffered path it is.
        let direct =
            options.directReads && openDirectFlag != 0
            && options.chunkSize % PartialFileStore.directAlignment == 0
            && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | openDirectFlag) == 0
        let prototype = try SenderSession(
            transferID: transferID, token: token, fileSize: fileSize, chunkSize: UInt32(clamping: options.chunkSize))
        var meter = ProgressMeter(totalBytes: fileSize)
        var totals = AttemptTotals()
        var attempt = 0
        while true {
            attempt += 1
            do throws(TransferError) {
                let digest = try runAttempt(
                    session: prototype, source: source, direct: direct, meter: &meter, totals: &totals)
                return TransferReceipt(
                    transferID: transferID, fileSize: fileSize, sha256: Hex.encode(digest),
                    chunkBytesTransferred: totals.chunkBytes, attempts: attempt, resumePoints: totals.resumePoints,
                    duration: Date().timeIntervalSince(started))
            } catch {
                if interrupter.isInterrupted { throw .cancelled }
                guard error.isRetryable, attempt < options.retry.maximumAttempts else { throw error }
                let pause = options.retry.backoff(afterAttempt: attempt)
                sender.logger.info(
                    "transfer \(transferID): attempt \(attempt) failed (\(error)); retrying in \(pause) s")
                try sleep(pause)
            }
        }
    }

    struct AttemptTotals {
        var chunkBytes: UInt64 = 0
        var resumePoints: [UInt64] = []
    }

    /// Sleeps, waking early (as cancelled) if the transfer is interrupted.
    private func sleep(_ interval: TimeInterval) throws(TransferError) {
        let deadline = Date() + interval
        while Date() < deadline {
            if interrupter.isInterrupted { throw .cancelled }
            usleep(useconds_t(min(0.05, max(0, deadline.timeIntervalSinceNow)) * 1_000_000))
        }
    }

    /// One connection: handshake, hello, stream chunks from the resume point, wait for completion.
    /// Returns the end-to-end SHA-256 the receiver confirmed.
    private func runAttempt(
        session prototype: SenderSession, source: FileDescriptor, direct: Bool, meter: inout ProgressMeter,
        totals: inout AttemptTotals
    ) throws(TransferError) -> [UInt8] {
        let fd = try Sockets.connect(host: host, port: port, timeout: options.connectTimeout)
        let expected = expectedPeerFingerprint
        let pin = PeerPin { $0 == expected }
        let context: TLSContext
        do throws(TransferError) {
            context = try TLSContext(role: .client, identity: sender.identity, pin: pin)
        } catch {
            close(fd)
            throw error
        }
        guard interrupter.attach(fd) else {
            interrupter.detach()
            close(fd)
            throw .cancelled
        }
        let stream = try TLSStream(
            fd: fd, context: context, idleTimeout: options.idleTimeout, interrupter: interrupter, writeBatch: 256 * 1024)

        do throws(TransferError) {
            try stream.handshake(asServer: false)
        } catch {
            if let presented = pin.presented.withLock({ $0 }), presented != expected {
                throw .peerCertificateMismatch(expected: expected, presented: presented)
            }
            throw error
        }
        // The verify callback already enforced this; checked again on the finished connection.
        guard let presented = stream.peerFingerprint(), presented == expected else {
            throw .peerCertificateMismatch(expected: expected, presented: stream.peerFingerprint() ?? "none")
        }

        var session = prototype
        try stream.write(ControlFrame.hello(session.hello).encoded())
        var finalDigest: [UInt8]? = nil
        var streamFrom: (index: UInt64, prefix: ChainedDigest)? = nil

        /// Carries out the session's decisions; returns when the session needs more input.
        func apply(_ actions: [SenderSession.Action]) throws(TransferError) {
            for action in actions {
                switch action {
                case .streamChunks(let from, let prefix):
                    streamFrom = (from, prefix)
                    totals.resumePoints.append(from)
                case .reportProgress(let bytes):
                    progress(meter.record(bytesDone: bytes, now: Date()))
                case .finish(let digest):
                    finalDigest = digest
                case .fail(let error):
                    throw error
                }
            }
        }

        try apply(session.received(stream.readControlFrame()))
        guard let (from, prefix) = streamFrom else { throw .protocolViolation("no resume point from the receiver") }

        let chunkCount = session.chunkCount
        if from < chunkCount {
            let pipeline = ChunkReader(
                source: source, layout: session.layout, bufferCount: options.bufferCount,
                chunkCapacity: options.chunkSize, direct: direct, corruptChunk: sender.faults.corruptChunk)
            pipeline.start(from: from, to: chunkCount, prefix: prefix)
            defer { pipeline.stop() }
            do throws(TransferError) {
                for _ in from..<chunkCount {
                    guard let next = pipeline.ready.pop() else { throw .cancelled }
                    let buffer: ChunkBuffer
                    switch next {
                    case .chunk(let chunk): buffer = chunk
                    case .failed(let error): throw error
                    }
                    try stream.write(buffer.frame)
                    session.sentChunk(buffer.index)
                    totals.chunkBytes += UInt64(buffer.length)
                    pipeline.pool.giveBack(buffer)
                    while finalDigest == nil, let frame = try stream.pollControlFrame() {
                        try apply(session.received(frame))
                    }
                }
            } catch {
                // A receiver that refuses sends an error frame, then closes: prefer its reason
                // over the broken pipe it caused.
                if case .connectionLost = error {
                    while let frame = try? stream.pollControlFrame() {
                        if case .error(let code, let reason) = frame { throw .peerRefused(code, reason) }
                    }
                }
                throw error
            }
        }
        while finalDigest == nil {
            try apply(session.received(stream.readControlFrame()))
        }
        stream.shutdownGracefully()
        return finalDigest!
    }
}

/// The sender's reader stage: reads chunks into pool buffers, hashes them (chained, so the same
/// pass yields the end-to-end hash), writes the frame header in front, and queues them for the
/// connection thread. One thread through the page cache, two (read, hash) with direct reads.
private final class ChunkReader: Sendable {
    enum Item: Sendable {
        case chunk(ChunkBuffer)
        case failed(TransferError)
    }

    let source: FileDescriptor
    let layout: ChunkLayout
    let pool: ChunkBufferPool
    let ready: BlockingQueue<Item>
    /// Direct mode: chunks read, not yet hashed.
    private let filled: BlockingQueue<Item>
    let corruptChunk: UInt64?
    /// `source` has O_DIRECT set: whole chunks are read straight into the buffers.
    let direct: Bool
    private let stopped = Atomic<Bool>(false)
    static let sliceLength = 256 * 1024

    init(
        source: FileDescriptor, layout: ChunkLayout, bufferCount: Int, chunkCapacity: Int, direct: Bool,
        corruptChunk: UInt64?
    ) {
        self.direct = direct
        self.source = source
        self.layout = layout
        self.pool = ChunkBufferPool(count: bufferCount, chunkCapacity: chunkCapacity)
        self.ready = BlockingQueue(capacity: bufferCount)
        self.filled = BlockingQueue(capacity: bufferCount)
        self.corruptChunk = corruptChunk
    }

    func start(from: UInt64, to end: UInt64, prefix: ChainedDigest) {
        if direct {
            startDirect(from: from, to: end, prefix: prefix)
        } else {
            startBuffered(from: from, to: end, prefix: prefix)
        }
    }

    /// Through the page cache: one thread reads and hashes slice by slice, so the hash reads
    /// bytes still in cache.
    private func startBuffered(from: UInt64, to end: UInt64, prefix: ChainedDigest) {
        startThread(name: "transfer-read") { [self] in
            var hasher = prefix
            for index in from..<end {
                guard var buffer = pool.take(unless: stopped.load(ordering: .relaxed)) else { return }
                buffer.index = index
                buffer.length = layout.length(of: index)
                do throws(TransferError) {
                    var offset = 0
                    while offset < buffer.length {
                        let slice = UnsafeMutableRawBufferPointer(
                            rebasing: buffer.data[offset..<min(buffer.length, offset + Self.sliceLength)])
                        try source.readFully(into: slice, at: layout.offset(of: index) + UInt64(offset))
                        hasher.update(UnsafeRawBufferPointer(slice))
                        offset += slice.count
                    }
                } catch {
                    pool.giveBack(buffer)
                    ready.push(.failed(error))
                    return
                }
                guard finish(&buffer, hasher: hasher) else { return }
            }
        }
    }

    /// Past the page cache: a reader thread has the device fill whole chunks while a hash thread
    /// hashes the ones already read, so neither waits for the other.
    private func startDirect(from: UInt64, to end: UInt64, prefix: ChainedDigest) {
        startThread(name: "transfer-read") { [self] in
            var direct = true
            for index in from..<end {
                guard var buffer = pool.take(unless: stopped.load(ordering: .relaxed)) else { return }
                buffer.index = index
                buffer.length = layout.length(of: index)
                do throws(TransferError) {
                    if direct, try !readDirect(into: buffer) {
                        // Opened for direct IO but the reads are refused: buffered from here on.
                        direct = false
                        _ = fcntl(source.fd, F_SETFL, fcntl(source.fd, F_GETFL) & ~openDirectFlag)
                    }
                    if !direct { try source.readFully(into: buffer.data, at: layout.offset(of: index)) }
                } catch {
                    pool.giveBack(buffer)
                    filled.push(.failed(error))
                    return
                }
                guard filled.push(.chunk(buffer)) else {
                    pool.giveBack(buffer)
                    return
                }
            }
        }
        startThread(name: "transfer-hash") { [self] in
            var hasher = prefix
            while let item = filled.pop() {
                guard case .chunk(var buffer) = item else {
                    ready.push(item)
                    return
                }
                hasher.update(UnsafeRawBufferPointer(buffer.data))
                guard finish(&buffer, hasher: hasher) else { return }
            }
        }
    }

    /// Sets the chunk's digest and frame header and queues it for the connection thread; false
    /// (buffer returned) once stopped.
    private func finish(_ buffer: inout ChunkBuffer, hasher: ChainedDigest) -> Bool {
        buffer.digest = hasher.chunkDigest(isLast: buffer.index + 1 == layout.chunkCount)
        if buffer.index == corruptChunk { buffer.data[buffer.length / 2] ^= 0xff }
        ChunkFrameHeader.write(into: buffer.header, index: buffer.index, digest: buffer.digest, dataLength: buffer.length)
        guard ready.push(.chunk(buffer)) else {
            pool.giveBack(buffer)
            return false
        }
        return true
    }

    /// Reads chunk `buffer.index` whole with O_DIRECT: the length rounded up to the alignment
    /// (chunk buffers have room for it; the file's end cuts the last read short). Returns false
    /// if the file system refuses direct reads (EINVAL) before any byte arrived.
    private func readDirect(into buffer: ChunkBuffer) throws(TransferError) -> Bool {
        let alignment = PartialFileStore.directAlignment
        let rounded = (buffer.length + alignment - 1) / alignment * alignment
        precondition(ChunkBuffer.headerRoom + rounded <= buffer.storage.count)
        let base = buffer.storage.baseAddress! + ChunkBuffer.headerRoom
        let offset = off_t(layout.offset(of: buffer.index))
        var done = 0
        while done < buffer.length {
            let result = pread(source.fd, base + done, rounded - done, offset + off_t(done))
            if result < 0, errno == EINTR { continue }
            if result < 0, errno == EINVAL, done == 0 { return false }
            guard result > 0 else {
                throw .fileError(result == 0 ? "file ended at \(Int(offset) + done)" : "read: \(Sockets.errnoText())")
            }
            done += result
        }
        return true
    }

    func stop() {
        stopped.store(true, ordering: .relaxed)
        filled.close()
        ready.close()
        // Buffers still queued go back so the pool can be freed.
        for queue in [filled, ready] {
            while let item = queue.tryPop() {
                if case .chunk(let buffer) = item { pool.giveBack(buffer) }
            }
        }
    }
}
