import Foundation
import XMLModel

/// A federation payload (catalog query, negotiation, migration, metering, ...) signed by the
/// sender broker's leaf key.
///
/// Wire form, the whole IQ/message payload:
/// ```
/// <signed xmlns='urn:intercloud:envelope:0' ns='urn:intercloud:catalog:0' ts='1700000000123'
///         nonce='base64(16 bytes)' sig='base64'>base64(payload bytes)</signed>
/// ```
///
/// What is signed (`signedBytes`), and why: the *exact payload bytes*, carried base64, plus context,
/// each field length-prefixed (4-byte big-endian length, then bytes):
/// `urn:intercloud:envelope:0` label · sender bare JID · recipient bare JID · payload namespace ·
/// timestamp (Unix ms, 8 bytes big-endian) · nonce · direction (`request` or `answer`) · the nonce of
/// the request answered (empty for a request) · payload.
/// - Exact bytes rather than a canonical XML form: XML canonicalisation (C14N) is complex and
///   fragile across libstrophe, Prosody and Foundation, which re-serialise attributes, prefixes and
///   whitespace freely. Base64 is opaque to every XML layer, so the bytes verified are the bytes
///   signed, and any payload format (XML, SPARQL results, JSON, binary chunks) works the same.
/// - Sender and recipient JIDs are the ones the XMPP server routed the stanza between, not claims
///   in the payload: an envelope cannot be re-sent from or redirected to another broker.
/// - The namespace binds the payload to its protocol part: a signed catalog query cannot be replayed
///   as a migration request.
/// - Timestamp + nonce give the replay window: outside ±skew it is `stale`, inside it the nonce
///   must be new (seen-set persisted in SQLite).
/// - Direction and the answered request's nonce bind an answer to the request it answers: an
///   answer cannot be presented as a request (to make a peer act on it), nor as the answer to
///   another request (a compromised server holding old answers). On the wire an answer carries
///   `re='base64(request nonce)'`; a requester opens answers expecting its own nonce there, and a
///   request must have none. Stripping or changing `re` changes the signed bytes.
/// - The label separates these signatures from the handshake's proof-of-possession signatures made
///   with the same key. Length prefixes make field boundaries unambiguous.
///
/// Between two brokers that made a session (`SessionExchange`), the same bytes may instead be
/// authenticated by HMAC-SHA256 under the session's key: `session='base64(id)' mac='base64(tag)'`
/// in place of `sig`.
public struct SignedEnvelope: Sendable, Hashable {
    public var namespace: String
    /// Milliseconds since 1970 (UTC), as signed.
    public var timestampMilliseconds: Int64
    public var nonce: [UInt8]
    public var payload: [UInt8]
    /// The sender's signature, or with `session` the HMAC-SHA256 tag under that session's key.
    public var signature: [UInt8]
    /// For an answer, the nonce of the request it answers; nil for a request.
    public var inReplyTo: [UInt8]?
    /// The id of the session whose key made `signature` a MAC; nil for a signature.
    public var session: [UInt8]? = nil

    public var isAnswer: Bool { inReplyTo != nil }

    public var timestamp: Date { Date(timeIntervalSince1970: Double(timestampMilliseconds) / 1000) }

    public static let label = "urn:intercloud:envelope:0"

    public static func signedBytes(
        sender: String, recipient: String, namespace: String, timestampMilliseconds: Int64, nonce: [UInt8],
        inReplyTo: [UInt8]? = nil, payload: [UInt8]
    ) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(payload.count + 160)
        func field(_ bytes: some Collection<UInt8>) {
            let count = UInt32(bytes.count)
            out += [UInt8(count >> 24), UInt8(count >> 16 & 0xff), UInt8(count >> 8 & 0xff), UInt8(count & 0xff)]
            out += bytes
        }
        field(Array(label.utf8))
        field(Array(XmppAddr.bare(sender).utf8))
        field(Array(XmppAddr.bare(recipient).utf8))
        field(Array(namespace.utf8))
        field((0..<8).reversed().map { UInt8(truncatingIfNeeded: timestampMilliseconds >> ($0 * 8)) })
        field(nonce)
        field(Array((inReplyTo == nil ? "request" : "answer").utf8))
        field(inReplyTo ?? [])
        field(payload)
        return out
    }

    public func signedBytes(sender: String, recipient: String) -> [UInt8] {
        Self.signedBytes(
            sender: sender, recipient: recipient, namespace: namespace, timestampMilliseconds: timestampMilliseconds,
            nonce: nonce, inReplyTo: inReplyTo, payload: payload)
    }

    /// Signs `payload` from `sender` (our JID) to `recipient` with our identity: a request, or with
    /// `inReplyTo` the answer to the request that carried that nonce.
    public static func seal(
        _ payload: [UInt8], namespace: String, from sender: String, to recipient: String, identity: BrokerIdentity,
        now: Date, nonce: [UInt8] = EnvelopeNonce.make(), inReplyTo: [UInt8]? = nil
    ) throws -> SignedEnvelope {
        try seal(payload, namespace: namespace, from: sender, to: recipient, now: now, nonce: nonce, inReplyTo: inReplyTo) { bytes in
            (try identity.sign(bytes), nil)
        }
    }

    /// Authenticates `payload` from `sender` to `recipient` (the session's peer) with the session's
    /// key instead of a signature.
    public static func seal(
        _ payload: [UInt8], namespace: String, from sender: String, to recipient: String, session: EnvelopeSession,
        now: Date, nonce: [UInt8] = EnvelopeNonce.make(), inReplyTo: [UInt8]? = nil
    ) -> SignedEnvelope {
        seal(payload, namespace: namespace, from: sender, to: recipient, now: now, nonce: nonce, inReplyTo: inReplyTo) { bytes in
            (session.tag(bytes), session.id)
        }
    }

    /// The envelope whose proof `prove` makes over its signed bytes: a signature, or a session's
    /// MAC with the session's id.
    private static func seal<Failure: Error>(
        _ payload: [UInt8], namespace: String, from sender: String, to recipient: String, now: Date, nonce: [UInt8], inReplyTo: [UInt8]?,
        prove: ([UInt8]) throws(Failure) -> (proof: [UInt8], session: [UInt8]?)
    ) throws(Failure) -> SignedEnvelope {
        let milliseconds = Int64((now.timeIntervalSince1970 * 1000).rounded())
        let bytes = signedBytes(
            sender: sender, recipient: recipient, namespace: namespace, timestampMilliseconds: milliseconds,
            nonce: nonce, inReplyTo: inReplyTo, payload: payload)
        let (proof, session) = try prove(bytes)
        return SignedEnvelope(
            namespace: namespace, timestampMilliseconds: milliseconds, nonce: nonce, payload: payload,
            signature: proof, inReplyTo: inReplyTo, session: session)
    }

    // MARK: Wire

    public var element: XMLElement {
        var attributes = ["ns": namespace, "ts": String(timestampMilliseconds), "nonce": TrustWire.b64(nonce)]
        if let session {
            attributes["session"] = TrustWire.b64(session)
            attributes["mac"] = TrustWire.b64(signature)
        } else {
            attributes["sig"] = TrustWire.b64(signature)
        }
        if let inReplyTo { attributes["re"] = TrustWire.b64(inReplyTo) }
        return XMLElement("signed", namespace: TrustNamespace.envelope, attributes: attributes, text: TrustWire.b64(payload))
    }

    public var xml: String { element.serialized() }

    /// Whether a payload is an envelope at all (cheap check before full decoding).
    public static func looksSigned(_ xml: String) -> Bool {
        xml.contains(TrustNamespace.envelope)
    }

    /// Decodes the wire form. Anything that is not a `<signed/>` element of our namespace is
    /// `unsigned`; a `<signed/>` element with missing or bad fields is `malformed`.
    public static func decode(xml: String, maxBytes: Int = 16 << 20) throws(EnvelopeError) -> SignedEnvelope {
        let element: XMLElement
        do { element = try XMLElement.parse(xml, maxBytes: maxBytes) } catch {
            throw EnvelopeError(.malformed, "\(error)")
        }
        return try decode(element)
    }

    public static func decode(_ element: XMLElement) throws(EnvelopeError) -> SignedEnvelope {
        guard element.name == "signed", element.namespace == TrustNamespace.envelope else {
            throw EnvelopeError(.unsigned, "payload <\(element.name)> in \(element.namespace ?? "no namespace") is not signed")
        }
        guard let namespace = element[attribute: "ns"], !namespace.isEmpty,
            let timestamp = element[attribute: "ts"].flatMap({ Int64($0) }),
            let nonce = element[attribute: "nonce"].flatMap(TrustWire.unb64), (8...64).contains(nonce.count),
            let payload = TrustWire.unb64(element.text)
        else { throw EnvelopeError(.malformed, "envelope lacks ns, ts, nonce or payload") }
        // Exactly one proof: a signature, or a session's MAC.
        let signature: [UInt8], session: [UInt8]?
        switch (element[attribute: "sig"], element[attribute: "session"], element[attribute: "mac"]) {
        case (let sig?, nil, nil):
            guard let decoded = TrustWire.unb64(sig), !decoded.isEmpty else { throw EnvelopeError(.malformed, "envelope with a malformed sig") }
            (signature, session) = (decoded, nil)
        case (nil, let id?, let mac?):
            guard let id = TrustWire.unb64(id), id.count == SessionExchange.idBytes,
                let tag = TrustWire.unb64(mac), tag.count == SessionExchange.macBytes
            else { throw EnvelopeError(.malformed, "envelope with a malformed session or mac") }
            (signature, session) = (tag, id)
        default:
            throw EnvelopeError(.malformed, "envelope needs either sig, or session and mac")
        }
        var inReplyTo: [UInt8]?
        if let re = element[attribute: "re"] {
            guard let decoded = TrustWire.unb64(re), (8...64).contains(decoded.count) else {
                throw EnvelopeError(.malformed, "envelope with a malformed re (the answered request's nonce)")
            }
            inReplyTo = decoded
        }
        return SignedEnvelope(
            namespace: namespace, timestampMilliseconds: timestamp, nonce: nonce, payload: payload, signature: signature,
            inReplyTo: inReplyTo, session: session)
    }
}

public enum EnvelopeNonce {
    /// 16 random bytes: collisions within a replay window are negligible.
    public static func make() -> [UInt8] { randomBytes(16) }

    /// `count` (a multiple of 8) bytes from the system generator, 8 per call: one `getrandom`
    /// per 8 bytes instead of one per byte (16 system calls per envelope were measurable).
    static func randomBytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count)
        for _ in 0..<(count / 8) {
            let word = generator.next()
            for shift in stride(from: 0, to: 64, by: 8) { bytes.append(UInt8(truncatingIfNeeded: word >> UInt64(shift))) }
        }
        return bytes
    }
}

/// Why an envelope was refused. Every code maps to the XMPP stanza error `not-authorized`.
public struct EnvelopeError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Code: String, Sendable, Codable, CaseIterable {
        /// A request in a federation namespace without an envelope.
        case unsigned
        case malformed
        case badSignature
        /// No trusted pin for the sender (never handshaken, distrusted, or pinned leaf expired).
        case untrustedSender
        /// The operator revoked the sender's pin.
        case pinRevoked
        /// Nonce already seen inside the window.
        case replayed
        /// Timestamp outside the allowed skew.
        case stale
        /// The envelope is for another namespace than the one it arrived on.
        case wrongNamespace
        /// An answer where a request was expected, or the answer to another request.
        case notThisExchange
        /// The receiver remembers as many of this sender's (or all peers') request nonces inside
        /// the replay window as it will: more are refused until older ones leave the window.
        case tooManyRequests
        /// Authenticated by a session this receiver does not hold (never made, expired, forgotten
        /// at a restart, or made before the sender's pin changed): seal it again with a signature.
        case unknownSession
    }

    public var code: Code
    public var detail: String

    public init(_ code: Code, _ detail: String = "") {
        self.code = code
        self.detail = detail
    }

    /// RFC 6120 stanza error condition to answer with.
    public var stanzaErrorCondition: String { "not-authorized" }

    public var description: String { detail.isEmpty ? code.rawValue : "\(code.rawValue): \(detail)" }
}
