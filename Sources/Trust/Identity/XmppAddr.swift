import SwiftASN1
import X509

/// The XmppAddr identifier of RFC 6120 §13.7.1.4: a subjectAltName `otherName` whose type is
/// id-on-xmppAddr (1.3.6.1.5.5.7.8.5) and whose value is the JID as a UTF8String.
///
/// Brokers are XMPP clients, so the identity that matters is the bare JID the server routes
/// stanzas from; DNS names in the certificate are irrelevant to us and ignored.
public enum XmppAddr {
    /// id-on-xmppAddr.
    public static let oid: ASN1ObjectIdentifier = [1, 3, 6, 1, 5, 5, 7, 8, 5]

    /// The general name carrying `jid`, ready for a `SubjectAlternativeNames` extension.
    public static func generalName(_ jid: String) throws -> GeneralName {
        .otherName(GeneralName.OtherName(typeID: oid, value: try ASN1Any(erasing: ASN1UTF8String(jid))))
    }

    /// All XmppAddr values of a certificate (usually one). Malformed values are skipped rather than
    /// thrown: a certificate whose only XmppAddr is malformed simply has no usable XmppAddr.
    public static func values(in certificate: Certificate) -> [String] {
        guard let names = try? certificate.extensions.subjectAlternativeNames else { return [] }
        return names.compactMap { name in
            guard case .otherName(let other) = name, other.typeID == oid, let value = other.value else { return nil }
            return try? String(ASN1UTF8String(asn1Any: value))
        }
    }

    /// The bare form of a JID (`local@domain`), lowercased.
    ///
    /// Full PRECIS (RFC 7622) is not applied: the XMPP server has already normalised the JIDs it
    /// routes, and certificates are issued by our tooling from the configured JID. Domains are
    /// case-insensitive, and the localpart profile (UsernameCaseMapped, nodeprep before it) maps
    /// case too, so lowercasing both sides makes `Broker@Cloud1.test` in a certificate match the
    /// routed `broker@cloud1.test`.
    public static func bare(_ jid: String) -> String {
        var jid = Substring(jid)
        if let slash = jid.firstIndex(of: "/") { jid = jid[..<slash] }
        return jid.lowercased()
    }
}
