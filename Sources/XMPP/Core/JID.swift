/// A Jabber ID (RFC 7622): `localpart@domainpart/resourcepart`.
///
/// Parsing is strict because JIDs arrive from the network: each part is bounded to 1023 bytes,
/// the domain must be non-empty and free of characters no domain can hold, and the localpart may
/// not contain the characters RFC 7622 §3.3.1 forbids. Comparison is on the normalized form
/// (lower-cased local and domain parts; full Unicode PRECIS mapping is not attempted).
public struct JID: Sendable, Hashable, Comparable, CustomStringConvertible, Codable {
    public let localpart: String?
    public let domainpart: String
    public let resourcepart: String?

    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case empty
        case emptyPart(String)
        case tooLong(String)
        case forbiddenCharacter(Character, part: String)

        public var description: String {
            switch self {
            case .empty: "empty JID"
            case .emptyPart(let part): "empty \(part) in JID"
            case .tooLong(let part): "JID \(part) longer than 1023 bytes"
            case .forbiddenCharacter(let character, let part): "character '\(character)' not allowed in JID \(part)"
            }
        }
    }

    public init(_ string: String) throws(ParseError) {
        guard !string.isEmpty else { throw .empty }
        // JIDs are parsed for every inbound request. For an ASCII string, searching bytes finds
        // the same separators as searching Characters (the only ASCII grapheme of two scalars is
        // CR LF, which holds neither '/', '@' nor '.') at a fraction of the cost; other strings
        // keep the Character search.
        let ascii = string.utf8.allSatisfy { $0 < 0x80 }
        func firstIndex(of separator: Unicode.Scalar, in text: Substring) -> Substring.Index? {
            ascii ? text.utf8.firstIndex(of: UInt8(ascii: separator)) : text.firstIndex(of: Character(separator))
        }
        var rest = Substring(string)
        var resource: String?
        if let slash = firstIndex(of: "/", in: rest) {
            resource = String(rest[rest.index(after: slash)...])
            rest = rest[..<slash]
            guard !(resource ?? "").isEmpty else { throw .emptyPart("resourcepart") }
        }
        var local: String?
        if let at = firstIndex(of: "@", in: rest) {
            local = String(rest[..<at])
            rest = rest[rest.index(after: at)...]
            guard !(local ?? "").isEmpty else { throw .emptyPart("localpart") }
        }
        var domain = String(rest)
        if ascii ? domain.utf8.last == UInt8(ascii: ".") : domain.hasSuffix(".") { domain.removeLast() }
        guard !domain.isEmpty else { throw .emptyPart("domainpart") }
        try JID.validate(local: local, domain: domain, resource: resource)
        self.localpart = local?.lowercased()
        self.domainpart = domain.lowercased()
        self.resourcepart = resource
    }

    public init(localpart: String?, domainpart: String, resourcepart: String? = nil) throws(ParseError) {
        guard !domainpart.isEmpty else { throw .emptyPart("domainpart") }
        try JID.validate(local: localpart, domain: domainpart, resource: resourcepart)
        self.localpart = localpart?.lowercased()
        self.domainpart = domainpart.lowercased()
        self.resourcepart = resourcepart
    }

    private static func validate(local: String?, domain: String, resource: String?) throws(ParseError) {
        // Scans UTF-8 bytes (every forbidden character is ASCII; multi-byte sequences are letters
        // as far as this check goes): JIDs are parsed for every inbound request.
        func check(_ value: String?, part: String, forbidden: StaticString) throws(ParseError) {
            guard let value else { return }
            if value.utf8.count > 1023 { throw .tooLong(part) }
            for byte in value.utf8 {
                if byte < 0x20 || byte == 0x7F { throw .forbiddenCharacter(Character(Unicode.Scalar(byte)), part: part) }
                var index = 0
                let table = forbidden.utf8Start
                while index < forbidden.utf8CodeUnitCount {
                    if table[index] == byte { throw .forbiddenCharacter(Character(Unicode.Scalar(byte)), part: part) }
                    index += 1
                }
            }
        }
        try check(local, part: "localpart", forbidden: "\"&'/:<>@ ")
        try check(domain, part: "domainpart", forbidden: "@/ <>'\"&\\")
        try check(resource, part: "resourcepart", forbidden: "")
    }

    public var bare: JID {
        JID(uncheckedLocal: localpart, domain: domainpart, resource: nil)
    }

    public var isBare: Bool { resourcepart == nil }

    public func with(resource: String) throws(ParseError) -> JID {
        try JID(localpart: localpart, domainpart: domainpart, resourcepart: resource)
    }

    private init(uncheckedLocal: String?, domain: String, resource: String?) {
        self.localpart = uncheckedLocal
        self.domainpart = domain
        self.resourcepart = resource
    }

    public var description: String {
        var result = ""
        if let localpart { result += localpart + "@" }
        result += domainpart
        if let resourcepart { result += "/" + resourcepart }
        return result
    }

    public static func < (lhs: JID, rhs: JID) -> Bool { lhs.description < rhs.description }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let string = try container.decode(String.self)
        do { self = try JID(string) } catch {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: error.description)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
