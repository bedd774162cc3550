import Crypto
import Foundation
import XMLModel

/// XEP-0115: Entity Capabilities. A hash of our disco#info carried in every presence, so peers learn
/// our features without asking (and cache them by hash).
public enum EntityCapabilities {
    public static let namespace = "http://jabber.org/protocol/caps"

    /// The verification string of XEP-0115 §5.1 (without data forms), SHA-1, base64.
    public static func verificationString(for info: DiscoInfo) -> String {
        var input = ""
        let identities = info.identities
            .map { "\($0.category)/\($0.type)/\($0.lang ?? "")/\($0.name ?? "")" }
            .sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        for identity in identities { input += identity + "<" }
        for feature in info.features.sorted(by: { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }) {
            input += feature + "<"
        }
        let digest = Insecure.SHA1.hash(data: Data(input.utf8))
        return Data(digest).base64EncodedString()
    }

    /// The `<c/>` element for presence.
    public static func element(node: String, info: DiscoInfo) -> XMLElement {
        XMLElement("c", namespace: namespace, attributes: [
            ("hash", "sha-1"), ("node", node), ("ver", verificationString(for: info)),
        ])
    }

    public struct Advertised: Sendable, Hashable {
        public var node: String
        public var ver: String
        public var hash: String
    }

    public static func parse(presence: Stanza) -> Advertised? {
        guard let c = presence.element.child(named: "c", namespace: namespace),
            let node = c[attribute: "node"], let ver = c[attribute: "ver"]
        else { return nil }
        return Advertised(node: node, ver: ver, hash: c[attribute: "hash"] ?? "")
    }
}
