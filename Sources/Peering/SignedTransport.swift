import XMPP

/// An inbound federation request whose envelope verified against the sender's pin.
public struct SignedRequest: Sendable {
    /// The routed sender (full JID).
    public var from: JID
    /// The sender's bare JID, as pinned.
    public var peer: String
    public var namespace: String
    public var type: Stanza.IQType
    /// The payload bytes exactly as the peer signed them.
    public var payload: [UInt8]

    public init(from: JID, peer: String, namespace: String, type: Stanza.IQType, payload: [UInt8]) {
        self.from = from
        self.peer = peer
        self.namespace = namespace
        self.type = type
        self.payload = payload
    }
}

/// Answers a verified request with the payload bytes of the (signed) answer, or throws a stanza
/// error. Runs in a task of its own, so it may await and touch the database.
public typealias SignedRequestHandler = @Sendable (SignedRequest) async throws(StanzaError) -> [UInt8]

/// The one way a protocol service talks to peer brokers: signed requests out, signed requests in.
///
/// Services see payload bytes only. Sealing and opening envelopes, pins, the replay window, request
/// slots and the audit of refusals are the transport's (`SignedRequests` in Broker, over XMPP), so
/// no service can forget one of them, and a service can be built and tested without an XMPP
/// client of its own.
public protocol SignedTransport: Sendable {
    /// Serves `namespace`: only envelopes signed by a trusted peer reach `handler`, and only with a
    /// payload of at most `maxPayloadBytes`.
    func serve(namespace: String, maxPayloadBytes: Int, _ handler: @escaping SignedRequestHandler)

    /// Sends a signed request to `peer` and returns the verified payload of its signed answer.
    /// A bare JID goes to the full JID the peer was last seen at (`PeerUnknown` if it never was).
    /// Throws the peer's stanza error, a timeout, or an envelope error if the answer is not
    /// properly signed by the pinned peer.
    func request(_ type: Stanza.IQType, to peer: JID, namespace: String, payload: [UInt8], timeout: Duration) async throws -> [UInt8]

    /// Where a request to `peer` goes: a full JID as is, a bare JID to the full JID the peer was
    /// last seen at. Throws `PeerUnknown` for a bare JID never seen.
    func route(to peer: JID) throws -> JID

    /// Returns once requests can be sent (this broker's session is up), or throws after `timeout`.
    func waitUntilOnline(timeout: Duration) async throws
}

extension SignedTransport {
    public func request(_ type: Stanza.IQType = .get, to peer: JID, namespace: String, payload: [UInt8]) async throws -> [UInt8] {
        try await request(type, to: peer, namespace: namespace, payload: payload, timeout: .seconds(10))
    }
}

/// A bare JID the broker has never seen online, so there is no full JID to send to.
public struct PeerUnknown: Error, CustomStringConvertible {
    public var peer: String
    public init(_ peer: String) { self.peer = peer }
    public var description: String { "\(peer) is not a known peer (see `intercloud peers`)" }
}

/// A federation action that needs the `[trust]` section (a key to sign with) on a broker without one.
public struct BrokerTrustSetupError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
