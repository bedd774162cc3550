import Foundation
import SwiftASN1
import X509

/// An X.509 v2 CRL (RFC 5280 §5), parsed with just what revocation checking needs.
///
/// swift-certificates 1.21 has no CRL type, so this parses `CertificateList` with SwiftASN1:
///
/// ```
/// CertificateList ::= SEQUENCE { tbsCertList TBSCertList, signatureAlgorithm AlgorithmIdentifier,
///                                signatureValue BIT STRING }
/// TBSCertList ::= SEQUENCE { version INTEGER OPTIONAL, signature AlgorithmIdentifier, issuer Name,
///     thisUpdate Time, nextUpdate Time OPTIONAL,
///     revokedCertificates SEQUENCE OF SEQUENCE { userCertificate INTEGER, revocationDate Time,
///                                                crlEntryExtensions Extensions OPTIONAL } OPTIONAL,
///     crlExtensions [0] EXPLICIT Extensions OPTIONAL }
/// ```
///
/// Limits (deliberate): CRL and entry extensions are not interpreted (no delta CRLs, no indirect
/// CRLs, no issuing-distribution-point scoping). A CRL applies to certificates whose issuer name
/// equals the CRL issuer and whose issuer key verifies the CRL signature.
public struct CertificateRevocationList: Sendable, Hashable {
    public var issuer: DistinguishedName
    public var thisUpdate: Date
    public var nextUpdate: Date?
    public var revokedSerialNumbers: Set<Certificate.SerialNumber>
    /// The exact DER, kept so the file can be re-emitted and hashed.
    public var derBytes: [UInt8]
    var tbsBytes: ArraySlice<UInt8>
    var signatureAlgorithm: ASN1ObjectIdentifier
    var signatureBytes: ArraySlice<UInt8>

    public init(derEncoded der: [UInt8]) throws {
        let root = try DER.parse(der)
        let parts = try Self.children(of: root, count: 3...3)
        tbsBytes = parts[0].encodedBytes
        signatureAlgorithm = try Self.algorithmOID(parts[1])
        signatureBytes = try ASN1BitString(derEncoded: parts[2]).bytes
        derBytes = der

        var tbs = try Self.children(of: parts[0], count: 3...7)[...]
        if tbs.first?.identifier == .integer {
            let version = try Int(derEncoded: tbs.removeFirst())
            guard version == 1 else { throw TrustSetupError.malformedCRL("unsupported version \(version)") }
        }
        guard let innerAlgorithm = tbs.popFirst(), try Self.algorithmOID(innerAlgorithm) == signatureAlgorithm
        else { throw TrustSetupError.malformedCRL("inner and outer signature algorithms differ") }
        guard let issuerNode = tbs.popFirst() else { throw TrustSetupError.malformedCRL("no issuer") }
        issuer = try DistinguishedName(derEncoded: issuerNode)
        guard let thisUpdateNode = tbs.popFirst() else { throw TrustSetupError.malformedCRL("no thisUpdate") }
        thisUpdate = try Self.date(thisUpdateNode)
        nextUpdate = nil
        if let node = tbs.first, node.identifier == .utcTime || node.identifier == .generalizedTime {
            nextUpdate = try Self.date(tbs.removeFirst())
        }
        revokedSerialNumbers = []
        if let node = tbs.first, node.identifier == .sequence {
            for entry in try Self.children(of: tbs.removeFirst(), count: 0...Int.max) {
                let fields = try Self.children(of: entry, count: 2...3)
                revokedSerialNumbers.insert(Certificate.SerialNumber(bytes: try ArraySlice<UInt8>(derEncoded: fields[0])))
            }
        }
        // Anything left must be the [0] crlExtensions wrapper.
        if let node = tbs.first, node.identifier != ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific) {
            throw TrustSetupError.malformedCRL("unexpected element \(node.identifier)")
        }
    }

    /// Parses a PEM (`-----BEGIN X509 CRL-----`) or DER file's contents.
    public init(fileContents data: Data) throws {
        if let text = String(data: data, encoding: .utf8), text.contains("-----BEGIN") {
            let document = try PEMDocument(pemString: text)
            guard document.discriminator == "X509 CRL" else {
                throw TrustSetupError.malformedCRL("PEM block is \(document.discriminator), not X509 CRL")
            }
            try self.init(derEncoded: document.derBytes)
        } else {
            try self.init(derEncoded: Array(data))
        }
    }

    public var pemString: String {
        PEMDocument(type: "X509 CRL", derBytes: derBytes).pemString
    }

    /// Whether `issuer` signed this CRL: names must match and the issuer's key must verify the
    /// signature over the exact TBSCertList bytes received.
    public func isSigned(by issuer: Certificate) -> Bool {
        guard issuer.subject == self.issuer, let algorithm = Self.signatureAlgorithms[signatureAlgorithm] else {
            return false
        }
        return issuer.publicKey.isValidSignature(signatureBytes, for: tbsBytes, signatureAlgorithm: algorithm)
    }

    public func isRevoked(_ certificate: Certificate) -> Bool {
        certificate.issuer == issuer && revokedSerialNumbers.contains(certificate.serialNumber)
    }

    // MARK: Making CRLs (operator tooling and tests)

    /// Builds and signs a v2 CRL listing `revoked` serial numbers, as `openssl ca -gencrl` would.
    public static func make(
        issuer: CertificateAuthority,
        revoked: [(serialNumber: Certificate.SerialNumber, date: Date)],
        thisUpdate: Date,
        nextUpdate: Date
    ) throws -> CertificateRevocationList {
        let algorithm = try SignatureScheme.algorithm(for: issuer.privateKey.publicKey)
        guard let oid = signatureAlgorithms.first(where: { $0.value == algorithm })?.key else {
            throw TrustSetupError.unsupportedKey(String(describing: issuer.privateKey.publicKey))
        }
        var tbs = DER.Serializer()
        try tbs.appendConstructedNode(identifier: .sequence) { coder in
            try coder.serialize(1)  // v2
            try coder.appendConstructedNode(identifier: .sequence) { try $0.serialize(oid) }
            try coder.serialize(issuer.certificate.subject)
            try serializeTime(thisUpdate, into: &coder)
            try serializeTime(nextUpdate, into: &coder)
            if !revoked.isEmpty {
                try coder.appendConstructedNode(identifier: .sequence) { coder in
                    for entry in revoked {
                        try coder.appendConstructedNode(identifier: .sequence) { coder in
                            try coder.serialize(entry.serialNumber.bytes)
                            try serializeTime(entry.date, into: &coder)
                        }
                    }
                }
            }
        }
        let tbsBytes = tbs.serializedBytes
        let signature = try issuer.privateKey.sign(bytes: tbsBytes, signatureAlgorithm: algorithm)
        var whole = DER.Serializer()
        try whole.appendConstructedNode(identifier: .sequence) { coder in
            coder.serializeRawBytes(tbsBytes)
            try coder.appendConstructedNode(identifier: .sequence) { try $0.serialize(oid) }
            try coder.serialize(ASN1BitString(bytes: signature.rawRepresentation[...]))
        }
        return try CertificateRevocationList(derEncoded: whole.serializedBytes)
    }

    // MARK: DER helpers

    static let signatureAlgorithms: [ASN1ObjectIdentifier: Certificate.SignatureAlgorithm] = [
        [1, 2, 840, 10045, 4, 3, 2]: .ecdsaWithSHA256,
        [1, 2, 840, 10045, 4, 3, 3]: .ecdsaWithSHA384,
        [1, 2, 840, 10045, 4, 3, 4]: .ecdsaWithSHA512,
        [1, 2, 840, 113549, 1, 1, 11]: .sha256WithRSAEncryption,
        [1, 2, 840, 113549, 1, 1, 12]: .sha384WithRSAEncryption,
        [1, 2, 840, 113549, 1, 1, 13]: .sha512WithRSAEncryption,
        [1, 3, 101, 112]: .ed25519,
    ]

    private static func children(of node: ASN1Node, count: ClosedRange<Int>) throws -> [ASN1Node] {
        guard node.identifier == .sequence, case .constructed(let nodes) = node.content else {
            throw TrustSetupError.malformedCRL("expected a SEQUENCE, found \(node.identifier)")
        }
        let children = Array(nodes)
        guard count.contains(children.count) else {
            throw TrustSetupError.malformedCRL("SEQUENCE has \(children.count) elements")
        }
        return children
    }

    private static func algorithmOID(_ node: ASN1Node) throws -> ASN1ObjectIdentifier {
        let fields = try children(of: node, count: 1...2)
        return try ASN1ObjectIdentifier(derEncoded: fields[0])
    }

    private static func date(_ node: ASN1Node) throws -> Date {
        var components = DateComponents()
        components.timeZone = TimeZone(identifier: "UTC")
        if node.identifier == .utcTime {
            let time = try UTCTime(derEncoded: node)
            (components.year, components.month, components.day) = (time.year, time.month, time.day)
            (components.hour, components.minute, components.second) = (time.hours, time.minutes, time.seconds)
        } else {
            let time = try GeneralizedTime(derEncoded: node)
            (components.year, components.month, components.day) = (time.year, time.month, time.day)
            (components.hour, components.minute, components.second) = (time.hours, time.minutes, time.seconds)
        }
        guard let date = utcCalendar.date(from: components) else {
            throw TrustSetupError.malformedCRL("invalid time")
        }
        return date
    }

    /// RFC 5280 §5.1.2.4: UTCTime through 2049, GeneralizedTime from 2050.
    private static func serializeTime(_ date: Date, into coder: inout DER.Serializer) throws {
        let c = utcCalendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        let (year, month, day) = (c.year!, c.month!, c.day!)
        let (hours, minutes, seconds) = (c.hour!, c.minute!, c.second!)
        if year < 2050 {
            try coder.serialize(
                try UTCTime(year: year, month: month, day: day, hours: hours, minutes: minutes, seconds: seconds))
        } else {
            try coder.serialize(
                try GeneralizedTime(
                    year: year, month: month, day: day, hours: hours, minutes: minutes, seconds: seconds,
                    fractionalSeconds: 0))
        }
    }

    private static let utcCalendar: Calendar = {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        return calendar
    }()
}
