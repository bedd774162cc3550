import Foundation
import Glibc
import Logging
import Synchronization

/// The receiving side: listens for sending brokers, accepts only transfers registered in advance
/// (from offers accepted over XMPP), and writes each to its registered destination.
///
/// Connections are refused during the TLS handshake when the client's certificate matches no
/// registered transfer, and after the hello when the transfer id, token, peer certificate or size
/// do not match one registration. Each connection runs on its own threads. The accept thread
/// keeps the server alive until `shutdown()` is called.
public final class TransferServer: Sendable {
    public struct Options: Sendable, Equatable {
        /// Largest chunk a sender may use (its buffers are allocated only after authentication).
        public var maximumChunkSize: Int
        /// Chunk buffers per connection (network → store pipeline).
        public var bufferCount: Int
        /// The TLS handshake and the hello together, from the TCP accept: an absolute deadline.
        public var handshakeTimeout: TimeInterval
        /// Longest wait for the next bytes of an authenticated connection.
        public var idleTimeout: TimeInterval
        public var maximumConnections: Int
        /// Connections from one remote address at once (before anyone is authenticated the address
        /// is all we know; an IPv6 address counts as its /64): one source cannot take every slot.
        public var maximumConnectionsPerAddress: Int
        /// A registered transfer with no connection for this long fails (`timedOut`): announced and
        /// never connected, or broken off and never resumed. Its waiter is told; the offer ends.
        public var waitTimeout: TimeInterval
        /// fsync the file before renaming it into place (and the directory after).
        public var syncOnCompletion: Bool
        /// Write chunks past the page cache (`O_DIRECT`) when the file system and chunk size allow
        /// it, else through it. An image is written once and read later: copying it into the page
        /// cache costs the receiver a CPU copy plus page allocation per byte (on the reference VM
        /// the larger part of its CPU time) and evicts other cached data; direct writes go from the
        /// chunk buffer to the device.
        public var directWrites: Bool

        public init(
            maximumChunkSize: Int = 16 << 20, bufferCount: Int = 8, handshakeTimeout: TimeInterval = 10,
            idleTimeout: TimeInterval = 30, maximumConnections: Int = 16, maximumConnectionsPerAddress: Int = 4,
            waitTimeout: TimeInterval = 120, syncOnCompletion: Bool = true, directWrites: Bool = true
        ) {
            self.maximumChunkSize = maximumChunkSize
            self.bufferCount = max(2, bufferCount)
            self.handshakeTimeout = handshakeTimeout
            self.idleTimeout = idleTimeout
            self.maximumConnections = maximumConnections
            self.maximumConnectionsPerAddress = maximumConnectionsPerAddress
            self.waitTimeout = waitTimeout
            self.syncOnCompletion = syncOnCompletion
            self.directWrites = directWrites
        }
    }

    /// Misbehaviour on purpose, for tests of resumption.
    struct Faults: Sendable {
        /// Break the next connection off after it has stored this many chunks (once).
        var dropConnectionAfterStoredChunks: Int?
    }

    /// The port actually bound (useful with port 0).
    public let port: UInt16
    public let host: String
    let options: Options
    let logger: Logger
    let registry: TransferRegistry
    let faults = Mutex(Faults())
    private let context: TLSContext
    private let listener: Int32
    private let wakeUp: (read: Int32, write: Int32)
    private let connections = Mutex<[ObjectIdentifier: (interrupter: ConnectionInterrupter, address: String)]>([:])
    private let stopped = Atomic<Bool>(false)

    public init(
        host: String = "127.0.0.1", port: UInt16 = 0, identity: TransferIdentity, options: Options = Options(),
        logger: Logger = Logger(label: "intercloud.transfer")
    ) throws(TransferError) {
        ignoreSIGPIPE()
        let registry = TransferRegistry()
        self.registry = registry
        self.options = options
        self.logger = logger
        self.host = host
        // During the handshake: any certificate pinned for some pending transfer; the exact match
        // with the named transfer is checked after the hello.
        self.context = try TLSContext(
            role: .server, identity: identity, pin: PeerPin { registry.isExpectedPeer($0) })
        let (fd, boundPort) = try Sockets.listen(host: host, port: port)
        var pipeEnds: [Int32] = [0, 0]
        guard pipe(&pipeEnds) == 0 else {
            close(fd)
            throw .connectionFailed("pipe: \(Sockets.errnoText())")
        }
        for end in pipeEnds { Sockets.setCloseOnExec(end) }
        Sockets.setNonBlocking(pipeEnds[1])
        self.listener = fd
        self.port = boundPort
        self.wakeUp = (pipeEnds[0], pipeEnds[1])
        startThread(name: "transfer-accept") { [self] in acceptLoop() }
    }

    /// Accepts a transfer from an offer. Its destination's directory must exist; the destination
    /// itself is replaced atomically on completion.
    public func register(_ transfer: ExpectedTransfer) throws(TransferError) {
        guard !transfer.transferID.isEmpty, transfer.transferID.utf8.count <= WireLimits.maximumIdentifierLength,
            !transfer.token.isEmpty, transfer.token.utf8.count <= WireLimits.maximumIdentifierLength
        else { throw .invalidArgument("transfer id and token must be 1...\(WireLimits.maximumIdentifierLength) bytes") }
        guard Hex.decode(transfer.sha256)?.count == WireLimits.digestLength else {
            throw .invalidArgument("SHA-256 must be 64 hex digits")
        }
        guard Hex.decode(transfer.peerFingerprint)?.count == WireLimits.digestLength else {
            throw .invalidArgument("peer fingerprint must be 64 hex digits")
        }
        var isDirectory: ObjCBool = false
        let directory = transfer.destination.deletingLastPathComponent().path
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw .fileError("destination directory \(directory) does not exist")
        }
        try registry.register(transfer)
    }

    /// Withdraws a pending transfer: its waiters get `.cancelled`, its token stops working.
    public func cancel(transferID: String) {
        registry.finish(transferID, with: .failure(.cancelled))
    }

    /// Why the transfer failed for good (no connection within `waitTimeout`, cancelled, a broken
    /// stream that was not resumed in time), or nil while it may still complete or did complete.
    /// Does not wait.
    public func failure(of transferID: String) -> TransferError? {
        registry.failure(of: transferID)
    }

    /// Waits until the transfer completes (the file is at its destination) or fails for good.
    public func completion(of transferID: String) async throws(TransferError) -> TransferReceipt {
        let result: Result<TransferReceipt, TransferError> = await withCheckedContinuation { continuation in
            registry.waitForOutcome(transferID) { continuation.resume(returning: $0) }
        }
        return try result.get()
    }

    /// Stops accepting and breaks off connections in progress (their transfers can resume later
    /// on another server).
    public func shutdown() {
        guard !stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        var byte: UInt8 = 1
        _ = write(wakeUp.write, &byte, 1)
        connections.withLock { for connection in $0.values { connection.interrupter.interrupt() } }
    }

    deinit {
        shutdown()
        close(wakeUp.write)
    }

    private func acceptLoop() {
        defer {
            close(listener)
            close(wakeUp.read)
        }
        while !stopped.load(ordering: .acquiring) {
            var descriptors = [
                pollfd(fd: listener, events: Int16(POLLIN), revents: 0),
                pollfd(fd: wakeUp.read, events: Int16(POLLIN), revents: 0),
            ]
            // Wakes once a second to end transfers that waited too long for a connection.
            let ready = poll(&descriptors, 2, 1000)
            registry.expireWaiting(olderThan: options.waitTimeout, now: Date(), logger: logger)
            if ready < 0 { if errno == EINTR { continue } else { return } }
            if descriptors[1].revents != 0 { return }
            guard descriptors[0].revents & Int16(POLLIN) != 0 else { continue }
            var peerAddress = sockaddr_storage()
            var peerAddressLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let fd = withUnsafeMutablePointer(to: &peerAddress) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { accept(listener, $0, &peerAddressLength) }
            }
            guard fd >= 0 else { continue }
            Sockets.setCloseOnExec(fd)
            // IPv6 connections count against their /64: one host usually holds all of it.
            let address = Sockets.sourceKey(peerAddress)
            let interrupter = ConnectionInterrupter()
            let refusal: String? = connections.withLock { table in
                guard table.count < options.maximumConnections else { return "\(options.maximumConnections) connections already" }
                guard table.values.filter({ $0.address == address }).count < options.maximumConnectionsPerAddress else {
                    return "\(options.maximumConnectionsPerAddress) connections from \(address) already"
                }
                table[ObjectIdentifier(interrupter)] = (interrupter, address)
                return nil
            }
            guard refusal == nil, interrupter.attach(fd) else {
                logger.warning("transfer server: refusing a connection: \(refusal ?? "cannot watch it")")
                connections.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(interrupter)) }
                close(fd)
                continue
            }
            Sockets.setNoDelay(fd)
            startThread(name: "transfer-receive") { [self] in
                ReceiverConnection(server: self, fd: fd, interrupter: interrupter).run()
                connections.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(interrupter)) }
            }
        }
    }

    var tlsContext: TLSContext { context }
}

/// Registered transfers and their outcomes, shared by the connection threads.
final class TransferRegistry: Sendable {
    struct Entry {
        var expected: ExpectedTransfer
        var activeConnection = false
        /// When it was registered, or its last connection ended: the start of its wait.
        var waitingSince = Date()
        var outcome: Result<TransferReceipt, TransferError>?
        var waiters: [@Sendable (Result<TransferReceipt, TransferError>) -> Void] = []
        var started: Date?
        var chunkBytes: UInt64 = 0
        var attempts = 0
        var resumePoints: [UInt64] = []
    }

    private let entries = Mutex<[String: Entry]>([:])

    func register(_ transfer: ExpectedTransfer) throws(TransferError) {
        let added = entries.withLock { table in
            guard table[transfer.transferID] == nil else { return false }
            table[transfer.transferID] = Entry(expected: transfer)
            return true
        }
        guard added else { throw .invalidArgument("transfer \(transfer.transferID) is already registered") }
    }

    /// Registered and not yet completed, failed or cancelled.
    func isPending(_ transferID: String) -> Bool {
        entries.withLock { $0[transferID].map { $0.outcome == nil } ?? false }
    }

    /// A pending transfer pins this peer.
    func isExpectedPeer(_ fingerprint: String) -> Bool {
        entries.withLock { table in
            table.values.contains { $0.outcome == nil && $0.expected.peerFingerprint == fingerprint }
        }
    }

    /// Looks the hello up and lets the session decide, atomically with claiming the transfer for
    /// this connection (so two connections cannot both write it).
    func evaluate(_ hello: Hello, session: inout ReceiverSession, now: Date) -> [ReceiverSession.Action] {
        entries.withLock { table in
            let lookup: ReceiverSession.Lookup
            if let entry = table[hello.transferID], entry.outcome == nil {
                lookup = .registered(entry.expected, activeElsewhere: entry.activeConnection)
            } else {
                lookup = .notRegistered
            }
            let actions = session.receivedHello(hello, lookup: lookup)
            if actions.contains(where: { if case .prepareStorage = $0 { true } else { false } }) {
                table[hello.transferID]?.activeConnection = true
                table[hello.transferID]?.attempts += 1
                if table[hello.transferID]?.started == nil { table[hello.transferID]?.started = now }
            }
            return actions
        }
    }

    /// A connection that had claimed `transferID` ends.
    func release(_ transferID: String, chunkBytes: UInt64, resumePoint: UInt64?) {
        entries.withLock { table in
            table[transferID]?.activeConnection = false
            table[transferID]?.waitingSince = Date()
            table[transferID]?.chunkBytes += chunkBytes
            if let resumePoint { table[transferID]?.resumePoints.append(resumePoint) }
        }
    }

    func receipt(for transferID: String, sha256: [UInt8], now: Date) -> TransferReceipt? {
        entries.withLock { table in
            guard let entry = table[transferID] else { return nil }
            return TransferReceipt(
                transferID: transferID, fileSize: entry.expected.fileSize, sha256: Hex.encode(sha256),
                chunkBytesTransferred: entry.chunkBytes, attempts: entry.attempts, resumePoints: entry.resumePoints,
                duration: now.timeIntervalSince(entry.started ?? now))
        }
    }

    /// Fails every pending transfer that has had no connection for `limit` seconds.
    func expireWaiting(olderThan limit: TimeInterval, now: Date, logger: Logger) {
        let expired: [String] = entries.withLock { table in
            table.filter { $0.value.outcome == nil && !$0.value.activeConnection && now.timeIntervalSince($0.value.waitingSince) >= limit }
                .map(\.key)
        }
        for transferID in expired {
            logger.notice("transfer \(transferID): no connection for \(Int(limit)) s; the transfer ends")
            finish(transferID, with: .failure(.timedOut("no connection for \(Int(limit)) s")))
        }
    }

    func failure(of transferID: String) -> TransferError? {
        entries.withLock { table in
            guard case .failure(let error)? = table[transferID]?.outcome else { return nil }
            return error
        }
    }

    /// Records the final outcome (first one wins) and tells the waiters.
    func finish(_ transferID: String, with outcome: Result<TransferReceipt, TransferError>) {
        let waiters: [@Sendable (Result<TransferReceipt, TransferError>) -> Void] = entries.withLock { table in
            guard var entry = table[transferID], entry.outcome == nil else { return [] }
            entry.outcome = outcome
            let waiting = entry.waiters
            entry.waiters = []
            table[transferID] = entry
            return waiting
        }
        for waiter in waiters { waiter(outcome) }
    }

    func waitForOutcome(_ transferID: String, _ resume: @escaping @Sendable (Result<TransferReceipt, TransferError>) -> Void) {
        let ready: Result<TransferReceipt, TransferError>? = entries.withLock { table in
            guard var entry = table[transferID] else { return .failure(.invalidArgument("unknown transfer \(transferID)")) }
            if let outcome = entry.outcome { return outcome }
            entry.waiters.append(resume)
            table[transferID] = entry
            return nil
        }
        if let ready { resume(ready) }
    }
}

/// Writes to a socket whose peer has gone must fail with EPIPE, not kill the process (OpenSSL's
/// socket BIO uses plain write()). Process-wide, once.
private let sigpipeIgnored: Bool = {
    signal(SIGPIPE, SIG_IGN)
    return true
}()

func ignoreSIGPIPE() { _ = sigpipeIgnored }
