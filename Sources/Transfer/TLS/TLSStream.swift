import COpenSSL
import Foundation
import Glibc

/// One TLS connection over a non-blocking socket, driven by a single thread with `poll`.
///
/// Writes never deadlock against a peer that is itself writing: while a write waits for room,
/// whatever the peer sent is read into a bounded inbound buffer, and reads take from that buffer
/// first. Every wait is bounded by `idleTimeout`.
final class TLSStream {
    let fd: Int32
    private let ssl: OpaquePointer
    private var idleTimeout: TimeInterval
    private var inbound: [UInt8] = []
    private var inboundStart = 0
    /// A failure met while reading ahead, raised once the frames read before it are consumed (a
    /// peer that sends an error frame and closes must not have its frame lost).
    private var deferredFailure: TransferError?
    /// Bytes read ahead while writing are small control frames; a peer that makes us buffer more
    /// than this without reading our frames is refused.
    static let maximumBufferedInbound = 1 << 20

    private let interrupter: ConnectionInterrupter?

    /// OpenSSL's write BIO when writes are batched (see `init`), else nil.
    private var writeBuffer: OpaquePointer?

    /// Takes ownership of `fd` (closed when the stream goes away, after `interrupter` has let go
    /// of it, so an interrupt can never hit a reused descriptor number).
    ///
    /// With `writeBatch` > 0, TLS records are gathered into socket writes of up to that many bytes
    /// (each `write` call ends with a flush): OpenSSL writes every 16 KiB record with its own
    /// system call, and for a bulk sender on loopback that per-call kernel work (segment,
    /// transmit, the receiver's wake-up) cost more than copying records once more.
    init(
        fd: Int32, context: TLSContext, idleTimeout: TimeInterval, interrupter: ConnectionInterrupter? = nil,
        writeBatch: Int = 0
    ) throws(TransferError) {
        self.interrupter = interrupter
        Sockets.setNonBlocking(fd)
        guard let ssl = SSL_new(context.context) else {
            interrupter?.detach()
            Glibc.close(fd)
            throw .tlsFailure("SSL_new: \(OpenSSLErrors.drain())")
        }
        SSL_set_fd(ssl, fd)
        self.fd = fd
        self.ssl = ssl
        self.idleTimeout = idleTimeout
        if writeBatch > 0, let socketBIO = SSL_get_wbio(ssl), let buffer = BIO_new(BIO_f_buffer()) {
            _ = BIO_int_ctrl(buffer, BIO_C_SET_BUFF_SIZE, writeBatch, 1)
            // The socket BIO stays the read BIO; the chain buffer → socket becomes the write BIO
            // (SSL_set0_wbio releases the socket BIO's write reference, the chain holds this one).
            BIO_up_ref(socketBIO)
            BIO_push(buffer, socketBIO)
            SSL_set0_wbio(ssl, buffer)
            writeBuffer = buffer
        }
    }

    deinit {
        interrupter?.detach()
        SSL_free(ssl)
        Glibc.close(fd)
    }

    func setIdleTimeout(_ timeout: TimeInterval) { idleTimeout = timeout }

    /// An absolute deadline on top of the idle timeout (nil: none). A peer that trickles one byte
    /// per idle period never trips the idle timeout; the deadline bounds the whole phase
    /// (the server sets it for the TLS handshake and the hello).
    private var deadline: ContinuousClock.Instant?

    func setDeadline(_ deadline: ContinuousClock.Instant?) { self.deadline = deadline }

    /// Milliseconds `poll` may wait: the idle timeout, cut to what is left before the deadline.
    private func pollBudget(during operation: String) throws(TransferError) -> Int32 {
        guard let deadline else { return Sockets.milliseconds(idleTimeout) }
        let left = ContinuousClock.now.duration(to: deadline)
        guard left > .zero else { throw .timedOut("\(operation) did not finish before its deadline") }
        let leftSeconds = Double(left.components.seconds) + Double(left.components.attoseconds) / 1e18
        return Sockets.milliseconds(min(idleTimeout, leftSeconds))
    }

    func handshake(asServer: Bool) throws(TransferError) {
        while true {
            ERR_clear_error()
            let result = asServer ? SSL_accept(ssl) : SSL_connect(ssl)
            if result == 1 { return }
            try waitAfter(result, during: "handshake")
        }
    }

    /// The peer's leaf fingerprint (lowercase hex SHA-256 of its DER), after the handshake.
    func peerFingerprint() -> String? {
        guard let certificate = SSL_get1_peer_certificate(ssl) else { return nil }
        defer { X509_free(certificate) }
        return CertificateFingerprints.sha256(certificate)
    }

    /// The TLS 1.3 cipher suite in use, after the handshake (e.g. "TLS_AES_128_GCM_SHA256").
    func negotiatedCipherSuite() -> String? {
        guard let cipher = SSL_get_current_cipher(ssl), let name = SSL_CIPHER_get_name(cipher) else { return nil }
        return String(cString: name)
    }

    func write(_ bytes: [UInt8]) throws(TransferError) {
        try withBytes(bytes) { (buffer) throws(TransferError) in try write(buffer) }
    }

    func write(_ buffer: UnsafeRawBufferPointer) throws(TransferError) {
        guard let base = buffer.baseAddress else { return }
        var offset = 0
        while offset < buffer.count {
            ERR_clear_error()
            var written = 0
            let result = SSL_write_ex(ssl, base + offset, buffer.count - offset, &written)
            if result == 1 {
                offset += written
                continue
            }
            try waitAfter(result, during: "write", drainWhileWaiting: true)
        }
        try flush()
    }

    /// Pushes out what the write buffer holds (nothing to do without one).
    private func flush() throws(TransferError) {
        guard let writeBuffer else { return }
        while BIO_ctrl(writeBuffer, BIO_CTRL_WPENDING, 0, nil) > 0 {
            if BIO_ctrl(writeBuffer, BIO_CTRL_FLUSH, 0, nil) > 0 { continue }
            guard BIO_test_flags(writeBuffer, BIO_FLAGS_SHOULD_RETRY) != 0 else {
                throw .connectionLost("write: \(Sockets.errnoText())")
            }
            var descriptor = pollfd(fd: fd, events: Int16(POLLOUT) | Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, Sockets.milliseconds(idleTimeout))
            if ready == 0 { throw .timedOut("no progress on write for \(idleTimeout) s") }
            if ready < 0, errno != EINTR { throw .connectionLost("poll: \(Sockets.errnoText())") }
            if descriptor.revents & Int16(POLLIN) != 0 { try pumpAvailable() }
        }
    }

    /// Fills `buffer` completely, taking bytes read ahead first.
    func readExactly(into buffer: UnsafeMutableRawBufferPointer) throws(TransferError) {
        guard let base = buffer.baseAddress else { return }
        var filled = takeInbound(into: buffer)
        while filled < buffer.count {
            if let deferredFailure { throw deferredFailure }
            ERR_clear_error()
            var read = 0
            let result = SSL_read_ex(ssl, base + filled, buffer.count - filled, &read)
            if result == 1 {
                filled += read
                continue
            }
            try waitAfter(result, during: "read")
        }
    }

    func readExactly(_ count: Int) throws(TransferError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try withBytes(&bytes) { (buffer) throws(TransferError) in try readExactly(into: buffer) }
        return bytes
    }

    /// Reads one control frame, waiting for it.
    func readControlFrame() throws(TransferError) -> ControlFrame {
        let header = try readFrameHeader(maximumChunkFrameLength: 0)
        return try decode(header, payload: readExactly(header.length))
    }

    func readFrameHeader(maximumChunkFrameLength: Int) throws(TransferError) -> FrameHeader {
        let bytes = try readExactly(WireLimits.frameHeaderLength)
        do {
            return try FrameHeader.parse(bytes, maximumChunkFrameLength: maximumChunkFrameLength)
        } catch {
            throw .protocolViolation(error.description)
        }
    }

    func decode(_ header: FrameHeader, payload: [UInt8]) throws(TransferError) -> ControlFrame {
        do {
            return try ControlFrame.decode(type: header.type, payload: payload[...])
        } catch {
            throw .protocolViolation(error.description)
        }
    }

    /// Returns a control frame if one has fully arrived, without waiting.
    func pollControlFrame() throws(TransferError) -> ControlFrame? {
        try pumpAvailable()
        let available = inbound.count - inboundStart
        guard available >= WireLimits.frameHeaderLength else { return nil }
        let header: FrameHeader
        do {
            header = try FrameHeader.parse(inbound[inboundStart..<inboundStart + WireLimits.frameHeaderLength], maximumChunkFrameLength: 0)
        } catch {
            throw .protocolViolation(error.description)
        }
        guard available >= WireLimits.frameHeaderLength + header.length else { return nil }
        let payloadStart = inboundStart + WireLimits.frameHeaderLength
        let payload = Array(inbound[payloadStart..<payloadStart + header.length])
        inboundStart = payloadStart + header.length
        compactInbound()
        return try decode(header, payload: payload)
    }

    /// Sends close_notify (best effort, no waiting) so the peer sees an orderly end.
    func shutdownGracefully() {
        ERR_clear_error()
        _ = SSL_shutdown(ssl)
        if let writeBuffer { _ = BIO_ctrl(writeBuffer, BIO_CTRL_FLUSH, 0, nil) }
        ERR_clear_error()
    }

    // MARK: - Internals

    private func takeInbound(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        let count = min(buffer.count, inbound.count - inboundStart)
        guard count > 0 else { return 0 }
        inbound.withUnsafeBytes { source in
            buffer.baseAddress!.copyMemory(from: source.baseAddress! + inboundStart, byteCount: count)
        }
        inboundStart += count
        compactInbound()
        return count
    }

    private func compactInbound() {
        if inboundStart == inbound.count {
            inbound.removeAll(keepingCapacity: true)
            inboundStart = 0
        } else if inboundStart > 64 * 1024 {
            inbound.removeFirst(inboundStart)
            inboundStart = 0
        }
    }

    /// Reads whatever plaintext is available now into the inbound buffer.
    private func pumpAvailable() throws(TransferError) {
        if let deferredFailure {
            if inbound.count == inboundStart { throw deferredFailure }
            return
        }
        var scratch = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            ERR_clear_error()
            var read = 0
            let result = scratch.withUnsafeMutableBytes { SSL_read_ex(ssl, $0.baseAddress, $0.count, &read) }
            if result == 1 {
                guard inbound.count - inboundStart + read <= Self.maximumBufferedInbound else {
                    throw .protocolViolation("peer sent more than \(Self.maximumBufferedInbound) bytes without reading")
                }
                inbound += scratch[0..<read]
                continue
            }
            switch SSL_get_error(ssl, result) {
            case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE: return
            default:
                let error = failure(result, during: "read")
                guard inbound.count > inboundStart else { throw error }
                deferredFailure = error
                return
            }
        }
    }

    /// After an SSL call returned `result` != 1: waits for the socket if OpenSSL wants IO, throws
    /// otherwise.
    private func waitAfter(_ result: Int32, during operation: String, drainWhileWaiting: Bool = false) throws(TransferError) {
        let error = SSL_get_error(ssl, result)
        let events: Int16
        switch error {
        case SSL_ERROR_WANT_READ: events = Int16(POLLIN)
        case SSL_ERROR_WANT_WRITE: events = Int16(POLLOUT) | (drainWhileWaiting ? Int16(POLLIN) : 0)
        default: throw failure(result, during: operation, sslError: error)
        }
        var descriptor = pollfd(fd: fd, events: events, revents: 0)
        let ready = poll(&descriptor, 1, try pollBudget(during: operation))
        if ready == 0 {
            if let deadline, ContinuousClock.now >= deadline { throw .timedOut("\(operation) did not finish before its deadline") }
            throw .timedOut("no progress on \(operation) for \(idleTimeout) s")
        }
        if ready < 0, errno != EINTR { throw .connectionLost("poll: \(Sockets.errnoText())") }
        if drainWhileWaiting, descriptor.revents & Int16(POLLIN) != 0 { try pumpAvailable() }
    }

    private func failure(_ result: Int32, during operation: String, sslError: Int32? = nil) -> TransferError {
        let savedErrno = errno
        let error = sslError ?? SSL_get_error(ssl, result)
        switch error {
        case SSL_ERROR_ZERO_RETURN:
            return .connectionLost("peer closed the connection during \(operation)")
        case SSL_ERROR_SYSCALL:
            let detail = OpenSSLErrors.drain()
            if savedErrno == 0 { return .connectionLost("unexpected end of stream during \(operation)") }
            return .connectionLost("\(operation): \(String(cString: strerror(savedErrno))) (\(detail))")
        default:
            let detail = OpenSSLErrors.drain()
            // An alert about our certificate: the peer's pin refused us.
            if detail.contains("alert"), detail.contains("certificate") { return .certificateRefusedByPeer(detail) }
            if detail.contains("unexpected eof") { return .connectionLost("unexpected end of stream during \(operation)") }
            return .tlsFailure("\(operation): \(detail)")
        }
    }
}
