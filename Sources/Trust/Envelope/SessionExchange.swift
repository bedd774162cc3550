import Crypto
import Foundation
import XMLModel

/// The session exchange (`urn:intercloud:session:0`, docs/protocol/session.md): a requester sends
/// an ephemeral X25519 public key in a signed `<offer/>`, the responder answers with its own in a
/// signed `<accept/>`, and both derive the session's MAC key and id with HKDF-SHA256 from the
/// shared secret, bound to both JIDs and both public keys. Pure: no IO, no clock of its own.
public enum SessionExchange {
    public static let namespace = TrustNamespace.session
    public static let keyBytes = 32
    public static let idBytes = 16
    public static let macBytes = 32

    /// A requester's half of an exchange: the private key lives only until the answer is read.
    public struct Offer: Sendable {
        let privateKey: Curve25519.KeyAgreement.PrivateKey
        /// When the offer was made: the session's lifetime counts from here, so the requester
        /// stops using it before the responder (who counts from its answer) forgets it.
        public let madeAt: Date
        public var publicKey: [UInt8] { Array(privateKey.publicKey.rawRepresentation) }

        public init(madeAt: Date = Date()) {
            privateKey = Curve25519.KeyAgreement.PrivateKey()
            self.madeAt = madeAt
        }
        /// A fixed key, for the protocol document's test vector.
        public init(privateKey raw: [UInt8], madeAt: Date = Date()) throws {
            privateKey = try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: raw)
            self.madeAt = madeAt
        }

        /// `<offer xmlns='urn:intercloud:session:0' key='…'/>`, the payload of a signed request.
        public var payload: [UInt8] { Array(XMLElement("offer", namespace: namespace, attributes: ["key": TrustWire.b64(publicKey)]).serialized().utf8) }

        /// Reads the responder's `<accept/>` and derives the session. Throws `SessionExchangeError`
        /// for an answer that does not decode, or whose `id` is not the one derived here (the two
        /// sides did not agree on a key).
        public func complete(
            accept payload: [UInt8], requester: String, responder: String, fingerprint: String, now: Date
        ) throws(SessionExchangeError) -> EnvelopeSession {
            let accept = try Accept.decode(payload)
            let derived = try derive(
                privateKey: privateKey, peerPublicKey: accept.key, requester: requester, responder: responder,
                requesterKey: publicKey, responderKey: accept.key)
            guard derived.id == accept.id else {
                throw SessionExchangeError("the accepted session's id is not the one derived here")
            }
            return EnvelopeSession(
                peer: XmppAddr.bare(responder), id: derived.id, key: derived.key, fingerprint: fingerprint, established: now,
                expires: madeAt.addingTimeInterval(min(TimeInterval(accept.seconds), EnvelopeSessions.maxLifetime)))
        }
    }

    /// The responder's half: reads `<offer/>`, derives the session, and returns it with the
    /// `<accept/>` payload to answer with.
    public static func accept(
        offer payload: [UInt8], requester: String, responder: String, fingerprint: String, now: Date,
        lifetime: TimeInterval = EnvelopeSessions.maxLifetime, privateKey raw: [UInt8]? = nil
    ) throws(SessionExchangeError) -> (answer: [UInt8], session: EnvelopeSession) {
        let offered = try decodeOffer(payload)
        let privateKey: Curve25519.KeyAgreement.PrivateKey
        if let raw {
            do { privateKey = try .init(rawRepresentation: raw) } catch { throw SessionExchangeError("bad private key") }
        } else {
            privateKey = .init()
        }
        let ownKey = Array(privateKey.publicKey.rawRepresentation)
        let derived = try derive(
            privateKey: privateKey, peerPublicKey: offered, requester: requester, responder: responder, requesterKey: offered,
            responderKey: ownKey)
        let seconds = Int(min(max(1, lifetime), EnvelopeSessions.maxLifetime))
        let answer = Accept(key: ownKey, id: derived.id, seconds: seconds)
        let session = EnvelopeSession(
            peer: XmppAddr.bare(requester), id: derived.id, key: derived.key, fingerprint: fingerprint, established: now,
            expires: now.addingTimeInterval(TimeInterval(seconds)))
        return (Array(answer.element.serialized().utf8), session)
    }

    /// HKDF-SHA256 (RFC 5869) over the X25519 shared secret; salt: the namespace's 24 ASCII bytes;
    /// info: requester bare JID, responder bare JID, requester public key, responder public key,
    /// each as a 4-byte big-endian length and its bytes; 48 bytes out: the MAC key (32), then
    /// the session id (16).
    static func derive(
        privateKey: Curve25519.KeyAgreement.PrivateKey, peerPublicKey: [UInt8], requester: String, responder: String,
        requesterKey: [UInt8], responderKey: [UInt8]
    ) throws(SessionExchangeError) -> (key: SymmetricKey, id: [UInt8]) {
        let shared: SharedSecret
        do {
            let peer = try Curve25519.KeyAgreement.PublicKey(rawRepresentation: peerPublicKey)
            shared = try privateKey.sharedSecretFromKeyAgreement(with: peer)
        } catch {
            throw SessionExchangeError("no shared secret with that public key")
        }
        // A low-order public key makes the secret all zeros whatever our key (RFC 7748 §6.1):
        // a peer could then fix the session key. swift-crypto does not refuse it, so we do.
        guard shared.withUnsafeBytes({ $0.contains { $0 != 0 } }) else {
            throw SessionExchangeError("the public key is of low order (all-zero shared secret)")
        }
        let material = shared.hkdfDerivedSymmetricKey(
            using: SHA256.self, salt: Array(namespace.utf8),
            sharedInfo: info(requester: requester, responder: responder, requesterKey: requesterKey, responderKey: responderKey),
            outputByteCount: keyBytes + idBytes)
        let bytes = material.withUnsafeBytes { Array($0) }
        return (SymmetricKey(data: bytes[0..<keyBytes]), Array(bytes[keyBytes...]))
    }

    public static func info(requester: String, responder: String, requesterKey: [UInt8], responderKey: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        for field in [Array(XmppAddr.bare(requester).utf8), Array(XmppAddr.bare(responder).utf8), requesterKey, responderKey] {
            let count = UInt32(field.count)
            out += [UInt8(count >> 24), UInt8(count >> 16 & 0xff), UInt8(count >> 8 & 0xff), UInt8(count & 0xff)] + field
        }
        return out
    }

    // MARK: Wire

    /// Neither message has content: anything bigger than this is not one.
    public static let maxPayloadBytes = 512

    public struct Accept: Sendable, Hashable {
        public var key: [UInt8]
        public var id: [UInt8]
        public var seconds: Int

        public var element: XMLElement {
            XMLElement(
                "accept", namespace: namespace,
                attributes: ["key": TrustWire.b64(key), "id": TrustWire.b64(id), "seconds": String(seconds)])
        }

        public static func decode(_ payload: [UInt8]) throws(SessionExchangeError) -> Accept {
            let element = try SessionExchange.element(payload, named: "accept")
            guard let key = element[attribute: "key"].flatMap(TrustWire.unb64), key.count == keyBytes else {
                throw SessionExchangeError("<accept/> without a 32-byte key")
            }
            guard let id = element[attribute: "id"].flatMap(TrustWire.unb64), id.count == idBytes else {
                throw SessionExchangeError("<accept/> without a 16-byte id")
            }
            guard let text = element[attribute: "seconds"], text.utf8.allSatisfy({ (0x30...0x39).contains($0) }), text.utf8.count <= 5,
                let seconds = Int(text), (1...Int(EnvelopeSessions.maxLifetime)).contains(seconds)
            else { throw SessionExchangeError("<accept/> without seconds from 1 to \(Int(EnvelopeSessions.maxLifetime))") }
            return Accept(key: key, id: id, seconds: seconds)
        }
    }

    /// The public key of an `<offer/>`.
    public static func decodeOffer(_ payload: [UInt8]) throws(SessionExchangeError) -> [UInt8] {
        let element = try element(payload, named: "offer")
        guard let key = element[attribute: "key"].flatMap(TrustWire.unb64), key.count == keyBytes else {
            throw SessionExchangeError("<offer/> without a 32-byte key")
        }
        return key
    }

    static func element(_ payload: [UInt8], named name: String) throws(SessionExchangeError) -> XMLElement {
        guard payload.count <= maxPayloadBytes else { throw SessionExchangeError("payload larger than \(maxPayloadBytes) bytes") }
        let element: XMLElement
        do { element = try XMLElement.parse(String(decoding: payload, as: UTF8.self), maxBytes: maxPayloadBytes) } catch {
            throw SessionExchangeError("not XML: \(error)")
        }
        guard element.name == name, element.namespace == namespace else {
            throw SessionExchangeError("expected <\(name) xmlns='\(namespace)'/>, got <\(element.name)> in \(element.namespace ?? "no namespace")")
        }
        guard element.elements.isEmpty, element.text.allSatisfy(\.isWhitespace) else {
            throw SessionExchangeError("<\(name)/> has content")
        }
        return element
    }
}

/// A session message that does not decode or does not agree; answered `bad-request`.
public struct SessionExchangeError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
