import Discovery
import Trust
import XMPP
import XMLModel

/// `urn:intercloud:federation-ping:0`: the smallest signed federation request. A trusted peer
/// sends `<ping xmlns='urn:intercloud:federation-ping:0'>TEXT</ping>` in an envelope; the answer,
/// signed too, is `<pong xmlns='…' cloud='cloud1' load='0.2'>TEXT</pong>`. It proves an envelope
/// round trip with a peer works (operators, tests, benchmarks) before the real federation parts use
/// the same path.
public enum FederationPing {
    public static let namespace = "urn:intercloud:federation-ping:0"
    public static let maxTextBytes = 1024

    public struct Pong: Sendable, Hashable {
        public var cloud: String
        public var load: Double
        public var text: String

        public init(cloud: String, load: Double, text: String) {
            self.cloud = cloud
            self.load = load
            self.text = text
        }
    }

    public struct ProtocolError: Error, CustomStringConvertible {
        public var description: String
    }

    static func request(text: String) -> [UInt8] {
        Array(XMLElement("ping", namespace: namespace, text: text).serialized().utf8)
    }

    /// The text of a ping request, or a `bad-request` error.
    static func parseRequest(_ bytes: [UInt8]) throws(StanzaError) -> String {
        guard let element = try? XMLElement.parse(String(decoding: bytes, as: UTF8.self), maxBytes: maxTextBytes * 6 + 256),
            element.name == "ping", element.namespace == namespace, element.elements.isEmpty, element.attributes.isEmpty,
            element.text.utf8.count <= maxTextBytes
        else { throw .badRequest("expected <ping xmlns='\(namespace)'> with at most \(maxTextBytes) bytes of text") }
        return element.text
    }

    static func answer(text: String, announcement: Announcement) -> [UInt8] {
        Array(XMLElement(
            "pong", namespace: namespace,
            attributes: ["cloud": announcement.cloud, "load": String(announcement.load)], text: text
        ).serialized().utf8)
    }

    static func parseAnswer(_ bytes: [UInt8]) throws -> Pong {
        let element = try XMLElement.parse(String(decoding: bytes, as: UTF8.self), maxBytes: maxTextBytes * 6 + 512)
        guard element.name == "pong", element.namespace == namespace, let cloud = element[attribute: "cloud"],
            let load = element[attribute: "load"].flatMap(Double.init)
        else { throw ProtocolError(description: "unexpected federation-ping answer") }
        return Pong(cloud: cloud, load: load, text: element.text)
    }
}
