import XMPP
import XMLModel

/// The `<announce xmlns='urn:intercloud:presence:0'/>` a broker puts in its presence: which cloud
/// it speaks for, its regions, its load and its certificate fingerprint. Also the answer to a
/// `<status/>` query in the same namespace.
public struct Announcement: Sendable, Hashable, Codable {
    public static let namespace = "urn:intercloud:presence:0"
    public static let maxRegions = 64

    public var cloud: String
    public var regions: [String]
    public var load: Double
    /// SHA-256 fingerprint of the broker leaf certificate (lowercase hex of the DER, as
    /// `CertificateFingerprint.sha256` and `intercloud trust list` show it); empty without `[trust]`.
    public var fingerprint: String

    public init(cloud: String, regions: [String], load: Double, fingerprint: String) {
        self.cloud = cloud
        self.regions = regions
        self.load = load
        self.fingerprint = fingerprint
    }

    public var element: XMLElement {
        var element = XMLElement("announce", namespace: Announcement.namespace, attributes: [
            ("version", "0"), ("cloud", cloud), ("load", String(format2(load))), ("fingerprint", fingerprint),
        ])
        for region in regions { element.append(XMLElement("region", text: region)) }
        return element
    }

    private func format2(_ value: Double) -> String {
        let scaled = (value * 1000).rounded() / 1000
        return String(scaled)
    }

    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case notAnAnnouncement
        case invalid(String)
        public var description: String {
            switch self {
            case .notAnAnnouncement: "not an announcement"
            case .invalid(let why): "invalid announcement: \(why)"
            }
        }
    }

    /// Parses an announcement received from the network, refusing anything out of bounds.
    public init(parsing element: XMLElement) throws(ParseError) {
        guard element.name == "announce", element.namespace == Announcement.namespace else { throw .notAnAnnouncement }
        guard let cloud = element[attribute: "cloud"], Announcement.isValidName(cloud) else {
            throw .invalid("cloud must be 1-64 letters, digits, '.', '_' or '-'")
        }
        let regionElements = element.children(named: "region")
        guard regionElements.count <= Announcement.maxRegions else { throw .invalid("more than \(Announcement.maxRegions) regions") }
        var regions: [String] = []
        for region in regionElements {
            guard Announcement.isValidName(region.text) else { throw .invalid("bad region name") }
            regions.append(region.text)
        }
        guard element.elements.count == regionElements.count else { throw .invalid("unexpected child element") }
        let loadText = element[attribute: "load"] ?? "0"
        guard let load = Double(loadText), load.isFinite, load >= 0, load <= 1_000 else { throw .invalid("load must be a number ≥ 0") }
        let fingerprint = element[attribute: "fingerprint"] ?? ""
        guard fingerprint.utf8.count <= 200, fingerprint.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == ":") }) else {
            throw .invalid("bad fingerprint")
        }
        self.init(cloud: cloud, regions: regions, load: load, fingerprint: fingerprint)
    }

    public static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 64
            && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "_" || $0 == "-") }
    }

    /// Finds and parses the announcement in a presence stanza, if it carries one.
    public static func find(in presence: Stanza) -> Result<Announcement, ParseError>? {
        guard let element = presence.element.child(named: "announce", namespace: namespace) else { return nil }
        do { return .success(try Announcement(parsing: element)) } catch { return .failure(error) }
    }
}
