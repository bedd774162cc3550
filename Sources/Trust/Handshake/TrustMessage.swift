import Foundation
import SwiftASN1
import X509
import XMLModel

/// The messages of the trust handshake (`urn:intercloud:trust:0`).
///
/// ```
/// A → B  IQ set     <hello nonce=Na>chain(A)</hello>
/// B → A  IQ result  <result nonce=Nb echo=Na>chain(B) <signature>sig_B(transcript)</signature></result>
/// A → B  IQ set     <finish session=Na echo=Nb><signature>sig_A(transcript)</signature></finish>
/// B → A  IQ result  <ok session=Na/>
/// either IQ error   <refused reason=code session=Na>detail</refused>
/// ```
/// Two IQ round trips. JIDs are deliberately *not* on the wire: both sides sign the JIDs the XMPP
/// server routed the stanzas between, so a relayed handshake fails the signature check.
public enum TrustMessage: Sendable, Hashable {
    case hello(Hello)
    case result(Result)
    case finish(Finish)
    case ok(Ok)
    case refused(Refused)

    public struct Hello: Sendable, Hashable {
        public var chain: [Certificate]
        public var nonce: [UInt8]
        public init(chain: [Certificate], nonce: [UInt8]) { self.chain = chain; self.nonce = nonce }
    }

    public struct Result: Sendable, Hashable {
        public var chain: [Certificate]
        public var nonce: [UInt8]
        /// The initiator's nonce this result answers.
        public var echo: [UInt8]
        public var signature: [UInt8]
        public init(chain: [Certificate], nonce: [UInt8], echo: [UInt8], signature: [UInt8]) {
            self.chain = chain; self.nonce = nonce; self.echo = echo; self.signature = signature
        }
    }

    public struct Finish: Sendable, Hashable {
        /// The initiator's nonce: identifies the handshake at the responder.
        public var session: [UInt8]
        /// The responder's nonce this finish answers.
        public var echo: [UInt8]
        public var signature: [UInt8]
        public init(session: [UInt8], echo: [UInt8], signature: [UInt8]) {
            self.session = session; self.echo = echo; self.signature = signature
        }
    }

    public struct Ok: Sendable, Hashable {
        public var session: [UInt8]
        public init(session: [UInt8]) { self.session = session }
    }

    public struct Refused: Sendable, Hashable {
        public var reason: TrustRefusalReason
        public var detail: String
        public var session: [UInt8]?
        public init(reason: TrustRefusalReason, detail: String, session: [UInt8]?) {
            self.reason = reason; self.detail = detail; self.session = session
        }
    }

    /// The initiator nonce identifying the handshake, when the message carries one.
    public var session: [UInt8]? {
        switch self {
        case .hello(let hello): hello.nonce
        case .result(let result): result.echo
        case .finish(let finish): finish.session
        case .ok(let ok): ok.session
        case .refused(let refused): refused.session
        }
    }
}

/// Encoding and decoding of `TrustMessage` as the IQ's inner payload XML.
public enum TrustWire {
    public static let namespace = TrustNamespace.handshake
    /// Bounds on what a peer may send us, checked while decoding.
    static let maxChainLength = 8
    static let nonceLengths = 16...64

    public static func encode(_ message: TrustMessage) -> String { element(message).serialized() }

    public static func element(_ message: TrustMessage) -> XMLElement {
        switch message {
        case .hello(let hello):
            return XMLElement(
                "hello", namespace: namespace, attributes: ["nonce": b64(hello.nonce)],
                elements: hello.chain.map(certificateElement))
        case .result(let result):
            return XMLElement(
                "result", namespace: namespace,
                attributes: ["nonce": b64(result.nonce), "echo": b64(result.echo)],
                elements: result.chain.map(certificateElement)
                    + [XMLElement("signature", text: b64(result.signature))])
        case .finish(let finish):
            return XMLElement(
                "finish", namespace: namespace,
                attributes: ["session": b64(finish.session), "echo": b64(finish.echo)],
                elements: [XMLElement("signature", text: b64(finish.signature))])
        case .ok(let ok):
            return XMLElement("ok", namespace: namespace, attributes: ["session": b64(ok.session)])
        case .refused(let refused):
            var attributes = ["reason": refused.reason.rawValue]
            if let session = refused.session { attributes["session"] = b64(session) }
            return XMLElement("refused", namespace: namespace, attributes: attributes, text: refused.detail)
        }
    }

    public static func decode(xml: String) throws -> TrustMessage {
        try decode(try XMLElement.parse(xml, maxBytes: 256 * 1024))
    }

    public static func decode(_ element: XMLElement) throws -> TrustMessage {
        guard element.namespace == namespace else {
            throw TrustRefusal(.malformed, "payload namespace \(element.namespace ?? "none") is not \(namespace)")
        }
        switch element.name {
        case "hello":
            return .hello(.init(chain: try chain(element), nonce: try nonce(element, "nonce")))
        case "result":
            return .result(.init(
                chain: try chain(element), nonce: try nonce(element, "nonce"), echo: try nonce(element, "echo"),
                signature: try signature(element)))
        case "finish":
            return .finish(.init(
                session: try nonce(element, "session"), echo: try nonce(element, "echo"),
                signature: try signature(element)))
        case "ok":
            return .ok(.init(session: try nonce(element, "session")))
        case "refused":
            guard let reason = element[attribute: "reason"].flatMap(TrustRefusalReason.init(rawValue:)) else {
                // An unknown code from a newer peer is still a refusal.
                return .refused(.init(reason: .peerRefused, detail: element.text, session: try? nonce(element, "session")))
            }
            return .refused(.init(reason: reason, detail: element.text, session: try? nonce(element, "session")))
        default:
            throw TrustRefusal(.malformed, "unknown trust element <\(element.name)>")
        }
    }

    static func b64(_ bytes: [UInt8]) -> String { Data(bytes).base64EncodedString() }

    static func unb64(_ text: String) -> [UInt8]? { Data(base64Encoded: text).map(Array.init) }

    static func certificateElement(_ certificate: Certificate) -> XMLElement {
        XMLElement("cert", text: b64((try? certificate.derBytes()) ?? []))
    }

    private static func chain(_ element: XMLElement) throws -> [Certificate] {
        let certs = element.children(named: "cert")
        guard (1...maxChainLength).contains(certs.count) else {
            throw TrustRefusal(.malformed, "chain has \(certs.count) certificates")
        }
        return try certs.map { cert in
            guard let der = unb64(cert.text), let certificate = try? Certificate(derEncoded: der) else {
                throw TrustRefusal(.malformed, "undecodable certificate")
            }
            return certificate
        }
    }

    private static func nonce(_ element: XMLElement, _ attribute: String) throws -> [UInt8] {
        guard let text = element[attribute: attribute], let bytes = unb64(text), nonceLengths.contains(bytes.count) else {
            throw TrustRefusal(.malformed, "missing or bad \(attribute)")
        }
        return bytes
    }

    private static func signature(_ element: XMLElement) throws -> [UInt8] {
        guard let text = element.child(named: "signature")?.text, let bytes = unb64(text), !bytes.isEmpty,
            bytes.count <= 1024
        else { throw TrustRefusal(.malformed, "missing or bad signature") }
        return bytes
    }
}
