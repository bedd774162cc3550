import Foundation
import Logging
import Synchronization
import XMLModel

public struct XMPPClientConfiguration: Sendable {
    public enum TLSMode: Sendable, Equatable {
        /// STARTTLS required; the server certificate must chain to the CA in this PEM file and name
        /// the server's domain.
        case required(caFile: String)
        /// Plain TCP. Only for tests on loopback.
        case disabledForTesting
        /// TLS without certificate verification. Only for tests.
        case trustAnyCertificateForTesting
    }

    /// Our full JID (with a resource).
    public var jid: JID
    public var password: String
    /// Server host and port when they are not found through the JID's domain (DNS SRV).
    public var host: String?
    public var port: UInt16?
    public var tls: TLSMode
    /// XEP-0198: lets a dropped connection resume without losing stanzas, at the price of an ack
    /// request after every stanza (roughly halves throughput through Prosody).
    public var streamManagement: Bool
    public var backoff: ConnectionLifecycle<ContinuousClock.Instant>.Backoff
    /// Stanzas larger than this (names + attributes + text) are refused before any handler sees them.
    public var maxInboundStanzaBytes: Int
    /// The socket's send buffer (`SO_SNDBUF`) in bytes; nil leaves it to the kernel, which grows it
    /// with the connection's needs. A fixed small buffer bounds the memory a slow server can pin
    /// per connection, at the price of more partial writes (the tests use it to force them).
    public var socketSendBufferBytes: Int?

    public init(
        jid: JID, password: String, host: String? = nil, port: UInt16? = nil,
        tls: TLSMode, streamManagement: Bool = true,
        backoff: ConnectionLifecycle<ContinuousClock.Instant>.Backoff = .init(),
        maxInboundStanzaBytes: Int = 512 * 1024,
        socketSendBufferBytes: Int? = nil
    ) {
        self.jid = jid
        self.password = password
        self.host = host
        self.port = port
        self.tls = tls
        self.streamManagement = streamManagement
        self.backoff = backoff
        self.maxInboundStanzaBytes = maxInboundStanzaBytes
        self.socketSendBufferBytes = socketSendBufferBytes
    }
}

public enum XMPPError: Error, Equatable, CustomStringConvertible {
    case timeout(requestID: String)
    /// The peer answered with a stanza error.
    case stanza(StanzaError)
    case notConnected
    /// The session ended without being resumed, so the request can never be answered.
    case sessionLost
    case stopped

    public var description: String {
        switch self {
        case .timeout(let id): "request \(id) timed out"
        case .stanza(let error): "peer answered with error: \(error)"
        case .notConnected: "not connected to the XMPP server"
        case .sessionLost: "XMPP session lost before the answer came (not resumed)"
        case .stopped: "XMPP client stopped"
        }
    }
}

/// How an IQ get/set in one namespace is answered.
public enum IQHandler: Sendable {
    /// Runs synchronously on the event-loop thread (the hot path: no hop, the reply leaves in the same
    /// loop iteration). Must not block. Returns the result payload (or nil for an empty result), or
    /// throws a `StanzaError` for an error reply.
    case immediate(@Sendable (Stanza) throws(StanzaError) -> XMLElement?)
    /// Called on the event-loop thread with a responder that async code answers later, from any thread.
    case deferred(@Sendable (Stanza, IQResponder) -> Void)
}

/// Answers one inbound IQ request exactly once.
public struct IQResponder: Sendable {
    let request: Stanza
    let runtime: XMPPRuntime
    let core: ConnectionCore

    public func respond(_ payload: XMLElement?) {
        let reply = request.result(payload: payload)
        runtime.submit { [core] in core.send(reply) }
    }

    public func fail(_ error: StanzaError) {
        let reply = request.errorReply(error)
        runtime.submit { [core] in core.send(reply) }
    }
}

/// An XMPP client connection. Thread-safe: every call hops to the runtime's loop thread.
public final class XMPPClient: Sendable {
    public enum Event: Sendable {
        case sessionStarted(epoch: Int)
        case sessionResumed(epoch: Int)
        case disconnected(reason: String)
        /// A presence or message stanza.
        case stanza(Stanza)
        /// Something inbound was refused before reaching a handler (oversized, malformed).
        case refused(from: String, reason: String)
        case stopped
    }

    public let configuration: XMPPClientConfiguration
    let core: ConnectionCore
    let runtime: XMPPRuntime

    public init(configuration: XMPPClientConfiguration, logger: Logger = Logger(label: "intercloud.xmpp")) {
        var logger = logger
        logger[metadataKey: "jid"] = "\(configuration.jid)"
        self.configuration = configuration
        self.runtime = .shared
        self.core = ConnectionCore(configuration: configuration, runtime: .shared, logger: logger)
    }

    public var jid: JID { configuration.jid }

    /// Request ids: a random per-client prefix and a counter. Cheaper than a UUID per request
    /// (which reads the system's random source each time); uniqueness is all the id needs, since
    /// answers are also matched on their sender.
    private let requestPrefix = String(UInt64.random(in: 0...UInt64.max), radix: 36)
    private let requestCounter = Atomic<UInt64>(0)

    private func nextRequestID() -> String {
        let number = requestCounter.add(1, ordering: .relaxed).newValue
        return requestPrefix + "-" + String(number, radix: 36)
    }

    /// Starts connecting (and keeps reconnecting with backoff until `stop()`).
    public func start() {
        runtime.submit { [core] in core.start() }
    }

    /// Waits until a session is established (or resumed).
    public func waitUntilOnline(timeout: Duration = .seconds(10)) async throws {
        let id = UUID()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { [core, runtime] in
                try await withTaskCancellationHandler {
                    try await withCheckedThrowingContinuation { continuation in
                        runtime.submit { core.waitUntilOnline(id: id, continuation) }
                    }
                } onCancel: {
                    runtime.submit { core.cancelOnlineWait(id: id) }
                }
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw XMPPError.timeout(requestID: "connect")
            }
            try await group.next()
            group.cancelAll()
        }
    }

    /// Sends an unavailable presence, closes the stream and stops reconnecting.
    public func stop() async {
        await withCheckedContinuation { continuation in
            runtime.submit { [core] in core.stop(continuation) }
        }
    }

    public func send(_ stanza: Stanza) {
        runtime.submit { [core] in core.send(stanza) }
    }

    /// Sends an IQ and awaits its result. A `type='error'` answer throws `XMPPError.stanza`.
    public func iq(
        _ type: Stanza.IQType = .get, to: JID?, payload: XMLElement, timeout: Duration = .seconds(10)
    ) async throws -> Stanza {
        let id = nextRequestID()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                runtime.submit { [core] in
                    core.sendRequest(type, to: to, payload: payload, timeout: timeout, id: id, continuation: continuation)
                }
            }
        } onCancel: { [core, runtime] in
            runtime.submit { core.cancelRequest(id: id) }
        }
    }

    /// Registers the handler for IQ get/set whose payload is in `namespace`. Unregistered
    /// namespaces are answered `service-unavailable` (RFC 6120 §8.3.3.19).
    public func setIQHandler(namespace: String, maxPayloadBytes: Int? = nil, _ handler: IQHandler) {
        runtime.submit { [core] in
            core.iqHandlers[namespace] = RegisteredIQHandler(handler: handler, maxPayloadBytes: maxPayloadBytes)
        }
    }

    /// Observes events on the loop thread. The observer must not block.
    @discardableResult
    public func observe(_ observer: @escaping @Sendable (Event) -> Void) -> UUID {
        let id = UUID()
        runtime.submit { [core] in core.observers[id] = observer }
        return id
    }

    public func removeObserver(_ id: UUID) {
        runtime.submit { [core] in core.observers[id] = nil }
    }

    /// Events as an async sequence (buffered).
    public func events() -> AsyncStream<Event> {
        let (stream, continuation) = AsyncStream<Event>.makeStream()
        let id = observe { event in continuation.yield(event) }
        continuation.onTermination = { [weak self] _ in self?.removeObserver(id) }
        return stream
    }

    /// Runs `body` on the event-loop thread, for callers that need a consistent view of the
    /// connection (tests, benchmarks).
    public func onLoop(_ body: @escaping @Sendable () -> Void) {
        runtime.submit(body)
    }
}
