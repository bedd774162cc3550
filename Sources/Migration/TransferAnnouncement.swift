import Trust
import XMPP
import XMLModel

/// `<announce xmlns='urn:intercloud:transfer:0' migration='' token='' size='' sha256=''/>`: the
/// source's word, in a signed request, that it is about to send the disk of `migration` over the
/// TLS transfer channel with the reservation's `token`; and `<accepted migration=''/>`, the
/// destination's answer once the transfer is registered. docs/protocol/transfer.md.
///
/// One parser and one writer for the broker, its tests and the protocol document's test.
public struct TransferAnnouncement: Sendable, Hashable {
    public static let namespace = "urn:intercloud:transfer:0"
    /// Bounds the payload before it is parsed (a handful of short attributes).
    public static let maxBytes = 4096

    public var migrationID: String
    public var token: String
    public var size: Int64
    /// The image's SHA-256, 64 hex digits.
    public var sha256: String

    public init(migrationID: String, token: String, size: Int64, sha256: String) {
        self.migrationID = migrationID
        self.token = token
        self.size = size
        self.sha256 = sha256
    }

    static let expected = "expected <announce xmlns='\(namespace)' migration='' token='' size='' sha256=''/>"

    /// Reads an announcement as the destination does, or refuses it (`bad-request`).
    public init(parsing payload: [UInt8]) throws(StanzaError) {
        guard payload.count <= Self.maxBytes,
            let element = try? XMLElement.parse(String(decoding: payload, as: UTF8.self), maxBytes: Self.maxBytes),
            element.name == "announce", element.namespace == Self.namespace, element.elements.isEmpty,
            let migrationID = element[attribute: "migration"], let token = element[attribute: "token"],
            let size = element[attribute: "size"].flatMap(Int64.init), size >= 0,
            let sha256 = element[attribute: "sha256"], sha256.count == 64
        else { throw .badRequest(Self.expected) }
        self.init(migrationID: migrationID, token: token, size: size, sha256: sha256)
    }

    public var payload: [UInt8] {
        Array(XMLElement(
            "announce", namespace: Self.namespace,
            attributes: ["migration": migrationID, "token": token, "size": String(size), "sha256": sha256]
        ).serialized().utf8)
    }

    /// The destination's answer to an announcement it registered.
    public static func accepted(migrationID: String) -> [UInt8] {
        Array(XMLElement("accepted", namespace: namespace, attributes: ["migration": migrationID]).serialized().utf8)
    }

    /// Reads the destination's answer: the migration it accepted the transfer of.
    public static func parseAccepted(_ payload: [UInt8]) throws(StanzaError) -> String {
        guard payload.count <= maxBytes,
            let element = try? XMLElement.parse(String(decoding: payload, as: UTF8.self), maxBytes: maxBytes),
            element.name == "accepted", element.namespace == namespace, element.elements.isEmpty,
            let migrationID = element[attribute: "migration"]
        else { throw .badRequest("expected <accepted xmlns='\(namespace)' migration=''/>") }
        return migrationID
    }
}
