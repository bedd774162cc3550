import CStrophe
import Foundation
import Logging
import XMLModel

#if canImport(Glibc)
import Glibc
#endif

/// The loop-thread side of one client connection: owns the `xmpp_conn_t`, runs the lifecycle and
/// IQ-tracking state machines, and performs their actions.
final class ConnectionCore: @unchecked Sendable {
    // @unchecked Sendable: created on any thread but, after `attach()`, every mutable property is
    // read and written only on the XMPPRuntime loop thread (all entry points go through
    // `runtime.submit` or libstrophe callbacks, which run on that thread).

    /// Loop time: how long after `XMPPRuntime.clockOrigin` (see `XMPPRuntime.loopTime`).
    /// `ContinuousClock.Instant` is a resilient type of the standard library, so every copy of a
    /// state machine generic over it went through value-witness calls, on every loop iteration
    /// (the lifecycle's copies alone were ~3.5 % of the loop thread in the profile).
    /// `Duration` is frozen: the same state machines over it copy as plain bytes.
    typealias Instant = Duration

    let configuration: XMPPClientConfiguration
    let runtime: XMPPRuntime
    let logger: Logger
    private(set) var connection: OpaquePointer?

    var descriptor: Int32 = -1
    var sawResumed = false
    private var connectPending = false
    private var releasePending = false
    private var lifecycle: ConnectionLifecycle<Instant>
    private var tracker = IQTracker<Instant>()
    private var continuations: [String: CheckedContinuation<Stanza, any Error>] = [:]
    private var stopWaiters: [CheckedContinuation<Void, Never>] = []
    private var onlineWaiters: [UUID: CheckedContinuation<Void, any Error>] = [:]
    var iqHandlers: [String: RegisteredIQHandler] = [:]
    var observers: [UUID: @Sendable (XMPPClient.Event) -> Void] = [:]
    private(set) var boundJID: String = ""

    init(configuration: XMPPClientConfiguration, runtime: XMPPRuntime, logger: Logger) {
        self.configuration = configuration
        self.runtime = runtime
        self.logger = logger
        self.lifecycle = ConnectionLifecycle(
            backoff: .init(initial: configuration.backoff.initial, maximum: configuration.backoff.maximum))
    }

    var isSecured: Bool { connection.map { xmpp_conn_is_secured($0) != 0 } ?? false }
    var isOnline: Bool { lifecycle.isOnline }
    var isConnecting: Bool { if case .connecting = lifecycle.state { true } else { false } }
    var wantsSocketPolling: Bool {
        switch lifecycle.state {
        case .connecting, .online, .stopping: true
        default: false
        }
    }
    var wantsWritable: Bool {
        guard let connection else { return false }
        return awaitingWritable || xmpp_conn_is_connecting(connection) != 0 || xmpp_conn_send_queue_len(connection) > 0
    }

    /// Bytes were queued since the loop last slept.
    private var sentSinceSleep = false
    /// The last write stopped because the socket was full: poll for writability until it is not.
    private var awaitingWritable = false
    /// Loop iterations still owed to a large stanza that may not have left yet (see
    /// `checkPendingWrite`).
    private var pendingWriteIterations = 0
    /// How many bytes of a stanza one loop iteration is sure to move when the socket has room:
    /// over TLS one record (OpenSSL's largest is 16 KiB), in plaintext at least the smallest send
    /// buffer the kernel gives (4 KiB and more). A stanza of n bytes is owed n / 4 KiB iterations.
    static let writeUnitBytes = 4096

    /// What the loop does about a connection's writes before it sleeps.
    enum PendingWrite {
        /// Nothing was sent, or all of it left.
        case none
        /// Bytes were sent since the loop last slept; none are known to be left.
        case sent
        /// libstrophe still holds bytes and the socket can take them: iterate again, do not sleep.
        case writeAgain
    }

    /// Called before the loop sleeps.
    ///
    /// libstrophe 0.12's queue length leaves out the stanza it is writing once part of it has left
    /// (`xmpp_conn_send_queue_len` subtracts a head item marked work-in-progress), so after a
    /// write cut short nothing in its API says bytes remain, and the loop would sleep until its
    /// poll cap (250 ms) with a stanza half sent. A write is cut short two ways:
    /// - the socket is full: libstrophe writes until the socket refuses, so a socket that is not
    ///   writable now had a write cut short; the loop then sleeps until the socket is writable
    ///   (one `poll` of one descriptor, only after sends);
    /// - over TLS, each `xmpp_run_once` writes at most one record of a stanza (partial-write
    ///   mode), however much the socket could take.
    /// And the look at the socket can miss a full one: the server may drain it between the short
    /// write and the look (seen in plaintext over loopback). So a large stanza is also owed
    /// iterations when it is queued (`writeUnitBytes`), which the loop runs while the socket has
    /// room, before it sleeps; an iteration with nothing left to write costs a few µs. A small
    /// stanza cut short unnoticed is caught by the loop's short sleeps after sends.
    func checkPendingWrite() -> PendingWrite {
        let sent = sentSinceSleep
        sentSinceSleep = false
        guard sent || awaitingWritable || pendingWriteIterations > 0 else { return .none }
        guard descriptor >= 0, let connection, xmpp_conn_is_connected(connection) != 0 else {
            awaitingWritable = false
            pendingWriteIterations = 0
            return sent ? .sent : .none
        }
        var probe = pollfd(fd: descriptor, events: Int16(POLLOUT), revents: 0)
        awaitingWritable = poll(&probe, 1, 0) == 0
        if !awaitingWritable, pendingWriteIterations > 0 {
            pendingWriteIterations -= 1
            return .writeAgain
        }
        return sent ? .sent : .none
    }

    /// Whether libstrophe may hold bytes to write: our own stanzas are counted in its send queue;
    /// its internal writes (SASL, stream reset, bind, stream-management acks) happen only before
    /// the session is online or with stream management on.
    var mayHaveUnsentBytes: Bool {
        guard let connection else { return false }
        return !lifecycle.isOnline || configuration.streamManagement || xmpp_conn_send_queue_len(connection) > 0
    }

    var nextDeadline: Instant? {
        switch (tracker.nextDeadline, lifecycle.reconnectDeadline) {
        case (let a?, let b?): min(a, b)
        case (let a?, nil): a
        case (nil, let b?): b
        case (nil, nil): nil
        }
    }

    var ownBareJID: String { configuration.jid.bare.description }

    // MARK: Lifecycle

    func start() {
        let conn = xmpp_conn_new(runtime.context)!
        connection = conn
        runtime.cores[conn] = self
        xmpp_conn_set_jid(conn, configuration.jid.description)
        xmpp_conn_set_pass(conn, configuration.password)
        var flags: Int = 0
        switch configuration.tls {
        case .required(let caFile):
            flags |= intercloud_flag_mandatory_tls
            xmpp_conn_set_cafile(conn, caFile)
            xmpp_conn_set_certfail_handler(conn, stropheCertificateFailure)
        case .disabledForTesting:
            flags |= intercloud_flag_disable_tls
        case .trustAnyCertificateForTesting:
            flags |= intercloud_flag_trust_tls
        }
        if !configuration.streamManagement { flags |= intercloud_flag_disable_sm }
        xmpp_conn_set_flags(conn, flags)
        xmpp_conn_set_sockopt_callback(conn, stropheSocketOptions)
        xmpp_handler_add(conn, stropheStanzaHandler, nil, nil, nil, Unmanaged.passUnretained(self).toOpaque())
        perform(lifecycle.start())
    }

    private func connect() {
        guard let connection else { return }
        descriptor = -1
        sawResumed = false
        connectPending = false
        XMPPRuntime.shared.lowDescriptors.releaseOne()
        defer { XMPPRuntime.shared.lowDescriptors.fill() }
        let result = xmpp_connect_client(
            connection, configuration.host, configuration.port ?? 0, stropheConnectionHandler,
            Unmanaged.passUnretained(self).toOpaque())
        if result != 0 {
            logger.warning("connect to \(configuration.host ?? configuration.jid.domainpart) failed to start (\(result))")
            perform(lifecycle.disconnected(now: runtime.loopTime(), jitter: Double.random(in: 0..<1), add: +))
        }
    }

    func connectionEstablished() {
        // Whether the session was resumed is only known once the whole `<resumed/>` element has
        // been processed, so the decision waits until the end of this loop iteration.
        connectPending = true
        if let bound = connection.flatMap({ xmpp_conn_get_bound_jid($0) }) { boundJID = String(cString: bound) }
    }

    func connectionLost(reason: String) {
        descriptor = -1
        connectPending = false
        let wasOnline = lifecycle.isOnline
        let action = lifecycle.disconnected(now: runtime.loopTime(), jitter: Double.random(in: 0..<1), add: +)
        if wasOnline { logger.warning("connection lost: \(reason)") }
        notify(.disconnected(reason: reason))
        perform(action)
    }

    func afterIteration(now: Instant) {
        if releasePending {
            releasePending = false
            if let connection {
                runtime.cores[connection] = nil
                xmpp_conn_release(connection)
                self.connection = nil
            }
            let waiters = stopWaiters
            stopWaiters.removeAll()
            for waiter in waiters { waiter.resume() }
            return
        }
        if connectPending {
            connectPending = false
            perform(lifecycle.connected(resumed: sawResumed))
        }
        for id in tracker.expire(now: now) {
            continuations.removeValue(forKey: id)?.resume(throwing: XMPPError.timeout(requestID: id))
        }
        perform(lifecycle.tick(now: now))
    }

    func stop(_ waiter: CheckedContinuation<Void, Never>) {
        stopWaiters.append(waiter)
        perform(lifecycle.stop())
    }

    private func perform(_ action: ConnectionLifecycle<Instant>.Action) {
        switch action {
        case .startConnecting:
            connect()
        case .sessionStarted(let epoch, let failBefore):
            for id in tracker.sessionReplaced(newEpoch: failBefore) {
                continuations.removeValue(forKey: id)?.resume(throwing: XMPPError.sessionLost)
            }
            logger.info("session started as \(boundJID) (session \(epoch))")
            resumeOnlineWaiters()
            notify(.sessionStarted(epoch: epoch))
        case .sessionResumed(let epoch):
            logger.info("session resumed (XEP-0198) as \(boundJID) (session \(epoch))")
            resumeOnlineWaiters()
            notify(.sessionResumed(epoch: epoch))
        case .scheduleReconnect(let at, let attempt):
            let delay = at - runtime.loopTime()
            logger.info("reconnecting in \(delay) (attempt \(attempt + 1))")
        case .sendUnavailableAndDisconnect:
            if let connection {
                if xmpp_conn_is_connected(connection) != 0 {
                    send(Stanza.presence(type: "unavailable"))
                }
                xmpp_disconnect(connection)
            }
        case .finished:
            for id in tracker.removeAll() {
                continuations.removeValue(forKey: id)?.resume(throwing: XMPPError.stopped)
            }
            for (_, waiter) in onlineWaiters { waiter.resume(throwing: XMPPError.stopped) }
            onlineWaiters.removeAll()
            notify(.stopped)
            // This runs inside libstrophe's disconnect callback: releasing the connection here would
            // free memory libstrophe is still using. Release it after the loop iteration instead.
            releasePending = true
        case .none:
            break
        }
    }

    private func resumeOnlineWaiters() {
        for (_, waiter) in onlineWaiters { waiter.resume() }
        onlineWaiters.removeAll()
    }

    func waitUntilOnline(id: UUID, _ waiter: CheckedContinuation<Void, any Error>) {
        if lifecycle.isOnline { waiter.resume() } else if case .stopped = lifecycle.state {
            waiter.resume(throwing: XMPPError.stopped)
        } else { onlineWaiters[id] = waiter }
    }

    func cancelOnlineWait(id: UUID) {
        onlineWaiters.removeValue(forKey: id)?.resume(throwing: CancellationError())
    }

    private func notify(_ event: XMPPClient.Event) {
        for observer in observers.values { observer(event) }
    }

    // MARK: Sending

    /// Serialized stanzas are built here, reused across sends (loop-confined like the rest).
    private var sendBuffer: [UInt8] = []

    /// Sends our own serialization with `xmpp_send_raw` rather than a libstrophe tree through
    /// `xmpp_send`: building the tree (an allocation per name, attribute and text) and having
    /// libstrophe render it cost ~10 µs of loop-thread CPU per request and answer. For libstrophe
    /// 0.12.2 the two are the same send: both queue one item owned by the user
    /// (`send_raw`/`send_stanza` → `_send_raw`, owner `XMPP_QUEUE_USER`), so with stream
    /// management on, each is followed by an `<r/>`, counted once when written and kept for
    /// resending on resumption. That holds because every raw send here is exactly one stanza.
    func send(_ stanza: Stanza) {
        guard let connection else { return }
        sendBuffer.removeAll(keepingCapacity: true)
        stanza.element.appendWireBytes(to: &sendBuffer, parentNamespace: "jabber:client")
        sendBuffer.withUnsafeBytes { bytes in
            xmpp_send_raw(connection, bytes.baseAddress!.assumingMemoryBound(to: CChar.self), bytes.count)
        }
        sentSinceSleep = true
        if sendBuffer.count > Self.writeUnitBytes {
            pendingWriteIterations += (sendBuffer.count + Self.writeUnitBytes - 1) / Self.writeUnitBytes
        }
        runtime.activity = true
    }

    func sendRequest(
        _ type: Stanza.IQType, to: JID?, payload: XMLElement, timeout: Duration, id: String,
        continuation: CheckedContinuation<Stanza, any Error>
    ) {
        guard lifecycle.isOnline, connection != nil else {
            continuation.resume(throwing: XMPPError.notConnected)
            return
        }
        tracker.sent(id: id, to: to?.description, deadline: runtime.loopTime() + timeout, sessionEpoch: lifecycle.currentEpoch)
        continuations[id] = continuation
        send(Stanza.iq(type, id: id, to: to, payload: payload))
    }

    func cancelRequest(id: String) {
        if tracker.cancelled(id: id) {
            continuations.removeValue(forKey: id)?.resume(throwing: CancellationError())
        }
    }

    // MARK: Receiving

    func received(_ raw: OpaquePointer) {
        guard let name = xmpp_stanza_get_name(raw) else { return }
        let isIQ = strcmp(name, "iq") == 0
        guard isIQ || strcmp(name, "presence") == 0 || strcmp(name, "message") == 0 else { return }
        let element: XMLElement
        do {
            element = try StropheBridge.element(from: raw, limit: configuration.maxInboundStanzaBytes)
        } catch {
            refuseOversized(raw, limit: error.limit)
            return
        }
        let stanza = Stanza(element)
        if isIQ { receivedIQ(stanza) } else { notify(.stanza(stanza)) }
    }

    private func refuseOversized(_ raw: OpaquePointer, limit: Int) {
        let from = xmpp_stanza_get_from(raw).map { String(cString: $0) } ?? "?"
        let type = xmpp_stanza_get_type(raw).map { String(cString: $0) }
        let id = xmpp_stanza_get_id(raw).map { String(cString: $0) }
        logger.warning("refused oversized stanza from \(from): over \(limit) bytes")
        notify(.refused(from: from, reason: "stanza over \(limit) bytes"))
        if xmpp_stanza_get_name(raw).map({ strcmp($0, "iq") == 0 }) == true, type == "get" || type == "set" {
            var attributes: [(String, String)] = []
            if let id { attributes.append(("id", id)) }
            attributes.append(("from", from))
            let stub = Stanza(XMLElement("iq", attributes: attributes))
            send(stub.errorReply(.oversized(limit: limit)))
        }
    }

    private func receivedIQ(_ stanza: Stanza) {
        switch stanza.type {
        case "result", "error":
            guard let id = stanza.id else { return }
            switch tracker.received(
                id: id, from: stanza.fromString, ownBareJID: ownBareJID, ownDomain: configuration.jid.domainpart)
            {
            case .deliver(let id):
                let continuation = continuations.removeValue(forKey: id)
                if let error = stanza.stanzaError {
                    continuation?.resume(throwing: XMPPError.stanza(error))
                } else {
                    continuation?.resume(returning: stanza)
                }
            case .ignoreSpoofed(let id, let from):
                logger.warning("ignored IQ response \(id) from \(from ?? "(none)"): not the addressee")
            case .ignoreUnknown:
                break
            }
        case "get", "set":
            dispatchRequest(stanza)
        default:
            send(stanza.errorReply(.badRequest("IQ type must be get, set, result or error")))
        }
    }

    private func dispatchRequest(_ stanza: Stanza) {
        let payloads = stanza.element.elements
        guard payloads.count == 1, let payload = payloads.first else {
            // RFC 6120 §8.2.3: an IQ get or set carries exactly one payload element.
            logger.notice("bad-request to \(stanza.fromString ?? "?"): IQ with \(payloads.count) payload elements")
            notify(.refused(from: stanza.fromString ?? "?", reason: "IQ with \(payloads.count) payloads"))
            send(stanza.errorReply(.badRequest("an IQ get or set carries exactly one payload element")))
            return
        }
        guard let namespace = payload.namespace, let handler = iqHandlers[namespace] else {
            send(stanza.errorReply(.serviceUnavailable()))
            return
        }
        if let limit = handler.maxPayloadBytes, payload.approximateByteCount > limit {
            notify(.refused(from: stanza.fromString ?? "?", reason: "\(namespace) payload over \(limit) bytes"))
            send(stanza.errorReply(.oversized(limit: limit)))
            return
        }
        switch handler.handler {
        case .immediate(let respond):
            do {
                let result = try respond(stanza)
                send(stanza.result(payload: result))
            } catch {
                send(stanza.errorReply(error))
            }
        case .deferred(let accept):
            let responder = IQResponder(request: stanza, runtime: runtime, core: self)
            accept(stanza, responder)
        }
    }
}

struct RegisteredIQHandler {
    var handler: IQHandler
    var maxPayloadBytes: Int?
}
