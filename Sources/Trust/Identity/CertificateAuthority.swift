import Crypto
import Foundation
import SwiftASN1
import X509

/// A certificate authority able to issue broker leaves: an Intercloud root, or a per-cloud
/// intermediate signed by a root. Times are passed in (never read here) so tests can make expired
/// and not-yet-valid certificates and the CLI can stay deterministic in its own tests.
public struct CertificateAuthority: Sendable {
    public var privateKey: Certificate.PrivateKey
    /// The CA's own certificate first, then its issuers up to (not including) the root anchor. For a
    /// root CA this is just the self-signed root.
    public var chain: [Certificate]

    public init(privateKey: Certificate.PrivateKey, chain: [Certificate]) throws {
        guard let first = chain.first else { throw TrustSetupError.emptyChain }
        guard first.publicKey == privateKey.publicKey else { throw TrustSetupError.keyDoesNotMatchCertificate }
        self.privateKey = privateKey
        self.chain = chain
    }

    public var certificate: Certificate { chain[0] }

    /// A self-signed root CA with a fresh P-256 key.
    public static func makeRoot(
        commonName: String,
        organization: String? = nil,
        notBefore: Date,
        validity: TimeInterval = 10 * 365 * 86_400,
        key: P256.Signing.PrivateKey = P256.Signing.PrivateKey()
    ) throws -> CertificateAuthority {
        let privateKey = Certificate.PrivateKey(key)
        let name = try distinguishedName(commonName: commonName, organization: organization)
        let certificate = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: privateKey.publicKey,
            notValidBefore: notBefore,
            notValidAfter: notBefore + validity,
            issuer: name,
            subject: name,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try caExtensions(publicKey: privateKey.publicKey, issuerKey: nil, pathLength: nil),
            issuerPrivateKey: privateKey
        )
        return try CertificateAuthority(privateKey: privateKey, chain: [certificate])
    }

    /// An intermediate CA (e.g. one per cloud) signed by this CA.
    public func makeIntermediate(
        commonName: String,
        organization: String? = nil,
        notBefore: Date,
        validity: TimeInterval = 5 * 365 * 86_400,
        key: P256.Signing.PrivateKey = P256.Signing.PrivateKey()
    ) throws -> CertificateAuthority {
        let privateKey = Certificate.PrivateKey(key)
        let certificate = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: privateKey.publicKey,
            notValidBefore: notBefore,
            notValidAfter: notBefore + validity,
            issuer: self.certificate.subject,
            subject: try Self.distinguishedName(commonName: commonName, organization: organization),
            signatureAlgorithm: try SignatureScheme.algorithm(for: self.privateKey.publicKey),
            extensions: try Self.caExtensions(
                publicKey: privateKey.publicKey, issuerKey: self.certificate.publicKey, pathLength: 0),
            issuerPrivateKey: self.privateKey
        )
        return try CertificateAuthority(privateKey: privateKey, chain: [certificate] + chain)
    }

    /// What a broker leaf should contain. The defaults give a correct broker certificate; tests
    /// override them to make certificates that must be refused.
    public struct LeafOptions: Sendable {
        /// XmppAddr values; `nil` means "the JID given to `issueBrokerIdentity`", `[]` none at all.
        public var xmppAddrs: [String]?
        public var keyUsage: KeyUsage
        public var serialNumber: Certificate.SerialNumber?

        public init(
            xmppAddrs: [String]? = nil,
            keyUsage: KeyUsage = KeyUsage(digitalSignature: true),
            serialNumber: Certificate.SerialNumber? = nil
        ) {
            self.xmppAddrs = xmppAddrs
            self.keyUsage = keyUsage
            self.serialNumber = serialNumber
        }
    }

    /// Issues a broker identity for `jid`: a fresh P-256 key and a leaf whose subjectAltName carries
    /// the bare JID as XmppAddr, key usage digitalSignature (critical), extended key usage
    /// clientAuth + serverAuth (brokers sign both as initiator and responder), and the chain up to
    /// (not including) the root.
    public func issueBrokerIdentity(
        jid: String,
        notBefore: Date,
        validity: TimeInterval = 365 * 86_400,
        options: LeafOptions = LeafOptions(),
        key: P256.Signing.PrivateKey = P256.Signing.PrivateKey()
    ) throws -> BrokerIdentity {
        try issueBrokerIdentity(
            jid: jid, notBefore: notBefore, validity: validity, options: options, privateKey: Certificate.PrivateKey(key))
    }

    /// Same, with a key of another type (P-384, P-521, Ed25519; RSA leaves are refused by peers).
    public func issueBrokerIdentity(
        jid: String,
        notBefore: Date,
        validity: TimeInterval = 365 * 86_400,
        options: LeafOptions = LeafOptions(),
        privateKey: Certificate.PrivateKey
    ) throws -> BrokerIdentity {
        let bareJID = XmppAddr.bare(jid)
        let addresses = options.xmppAddrs ?? [bareJID]
        let issuerPublicKey = certificate.publicKey
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.notCertificateAuthority)
            Critical(options.keyUsage)
            try ExtendedKeyUsage([.clientAuth, .serverAuth])
            SubjectKeyIdentifier(hash: privateKey.publicKey)
            AuthorityKeyIdentifier(keyIdentifier: SubjectKeyIdentifier(hash: issuerPublicKey).keyIdentifier)
            if !addresses.isEmpty {
                SubjectAlternativeNames(try addresses.map { try XmppAddr.generalName($0) })
            }
        }
        let leaf = try Certificate(
            version: .v3,
            serialNumber: options.serialNumber ?? Certificate.SerialNumber(),
            publicKey: privateKey.publicKey,
            notValidBefore: notBefore,
            notValidAfter: notBefore + validity,
            issuer: certificate.subject,
            subject: try Self.distinguishedName(commonName: bareJID, organization: nil),
            signatureAlgorithm: try SignatureScheme.algorithm(for: self.privateKey.publicKey),
            extensions: extensions,
            issuerPrivateKey: self.privateKey
        )
        // The anchor (last element of a root-terminated chain) is not sent: the peer has it.
        let intermediates = chain.filter { !$0.isSelfIssued }
        return try BrokerIdentity(privateKey: privateKey, chain: [leaf] + intermediates)
    }

    public static func load(keyPath: String, chainPath: String) throws -> CertificateAuthority {
        let key = try Certificate.PrivateKey(pemEncoded: try String(contentsOfFile: keyPath, encoding: .utf8))
        return try CertificateAuthority(privateKey: key, chain: try PEMFiles.certificates(atPath: chainPath))
    }

    public func save(keyPath: String, chainPath: String) throws {
        try PEMFiles.writePrivateKey(privateKey, toPath: keyPath)
        try PEMFiles.writeCertificates(chain, toPath: chainPath)
    }

    static func distinguishedName(commonName: String, organization: String?) throws -> DistinguishedName {
        try DistinguishedName {
            if let organization { OrganizationName(organization) }
            CommonName(commonName)
        }
    }

    static func caExtensions(
        publicKey: Certificate.PublicKey, issuerKey: Certificate.PublicKey?, pathLength: Int?
    ) throws -> Certificate.Extensions {
        try Certificate.Extensions {
            Critical(BasicConstraints.isCertificateAuthority(maxPathLength: pathLength))
            Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            SubjectKeyIdentifier(hash: publicKey)
            if let issuerKey {
                AuthorityKeyIdentifier(keyIdentifier: SubjectKeyIdentifier(hash: issuerKey).keyIdentifier)
            }
        }
    }
}

extension SubjectKeyIdentifier {
    /// RFC 5280 §4.2.1.2 method (1): SHA-1 of the subjectPublicKey bits. Used only as an identifier.
    init(hash key: Certificate.PublicKey) {
        let spki = key.subjectPublicKeyInfoBytes
        self.init(keyIdentifier: ArraySlice(Insecure.SHA1.hash(data: Array(spki))))
    }
}

extension Certificate {
    /// Self-issued (subject == issuer): a root anchor, never sent in a chain.
    var isSelfIssued: Bool { subject == issuer }
}

/// What `intercloud certs show` prints.
public struct CertificateSummary: Sendable, Codable, Equatable {
    public var subject: String
    public var issuer: String
    public var serialNumber: String
    public var notBefore: Date
    public var notAfter: Date
    public var xmppAddrs: [String]
    public var isCertificateAuthority: Bool
    public var keyUsage: String?
    public var publicKey: String
    public var sha256Fingerprint: String

    public init(_ certificate: Certificate) {
        subject = String(describing: certificate.subject)
        issuer = String(describing: certificate.issuer)
        serialNumber = String(describing: certificate.serialNumber)
        notBefore = certificate.notValidBefore
        notAfter = certificate.notValidAfter
        xmppAddrs = XmppAddr.values(in: certificate)
        if case .some(.isCertificateAuthority) = try? certificate.extensions.basicConstraints {
            isCertificateAuthority = true
        } else {
            isCertificateAuthority = false
        }
        keyUsage = (try? certificate.extensions.keyUsage).flatMap { $0.map { String(describing: $0) } }
        publicKey = String(describing: certificate.publicKey)
        sha256Fingerprint = CertificateFingerprint.sha256(certificate)
    }

    /// Human-readable, one field per line.
    public var text: String {
        let formatter = ISO8601DateFormatter()
        return """
            subject:     \(subject)
            issuer:      \(issuer)
            serial:      \(serialNumber)
            not before:  \(formatter.string(from: notBefore))
            not after:   \(formatter.string(from: notAfter))
            XmppAddr:    \(xmppAddrs.isEmpty ? "(none)" : xmppAddrs.joined(separator: ", "))
            CA:          \(isCertificateAuthority ? "yes" : "no")
            key usage:   \(keyUsage ?? "(none)")
            public key:  \(publicKey)
            SHA-256:     \(sha256Fingerprint)
            """
    }
}
