import Crypto
import Foundation
import SwiftASN1
import X509

/// A broker's identity: its private key and its certificate chain (leaf first, then intermediates;
/// the anchor itself is not sent).
///
/// The leaf carries the broker's bare JID as an XmppAddr. The key is held as a swift-certificates
/// `Certificate.PrivateKey` so keys made by `openssl` (PKCS#8 or SEC1, P-256/P-384/Ed25519) load too;
/// our own tooling makes P-256 keys.
public struct BrokerIdentity: Sendable {
    public var privateKey: Certificate.PrivateKey
    /// Leaf first, then intermediates up to (not including) a trust anchor.
    public var chain: [Certificate]

    public init(privateKey: Certificate.PrivateKey, chain: [Certificate]) throws {
        guard let leaf = chain.first else { throw TrustSetupError.emptyChain }
        guard leaf.publicKey == privateKey.publicKey else { throw TrustSetupError.keyDoesNotMatchCertificate }
        self.privateKey = privateKey
        self.chain = chain
    }

    public var leaf: Certificate { chain[0] }

    /// The JID(s) the leaf certifies.
    public var jids: [String] { XmppAddr.values(in: leaf) }

    /// SHA-256 fingerprint of the leaf DER, lowercase hex: what presence announcements carry.
    public var fingerprint: String { CertificateFingerprint.sha256(leaf) }

    /// Signs `bytes` with the scheme implied by the key type (ECDSA with the curve's hash, or
    /// Ed25519). The signature is DER (ECDSA) or raw (Ed25519), as swift-certificates encodes it.
    public func sign(_ bytes: some DataProtocol) throws -> [UInt8] {
        let algorithm = try SignatureScheme.algorithm(for: privateKey.publicKey)
        return try privateKey.sign(bytes: bytes, signatureAlgorithm: algorithm).rawRepresentation
    }

    /// Loads a PEM private key and a PEM chain file (leaf first, as `openssl` and our CLI write it).
    public static func load(keyPath: String, chainPath: String) throws -> BrokerIdentity {
        let key = try Certificate.PrivateKey(pemEncoded: try String(contentsOfFile: keyPath, encoding: .utf8))
        let chain = try PEMFiles.certificates(atPath: chainPath)
        return try BrokerIdentity(privateKey: key, chain: chain)
    }

    /// Writes the key (mode 0600) and the chain (0644).
    public func save(keyPath: String, chainPath: String) throws {
        try PEMFiles.writePrivateKey(privateKey, toPath: keyPath)
        try PEMFiles.writeCertificates(chain, toPath: chainPath)
    }
}

/// Picks the signature algorithm from the public key type, so signer and verifier agree without
/// negotiating: proof-of-possession and envelope signatures are always made with the leaf key.
enum SignatureScheme {
    static func algorithm(for key: Certificate.PublicKey) throws -> Certificate.SignatureAlgorithm {
        if P256.Signing.PublicKey(key) != nil { return .ecdsaWithSHA256 }
        if P384.Signing.PublicKey(key) != nil { return .ecdsaWithSHA384 }
        if P521.Signing.PublicKey(key) != nil { return .ecdsaWithSHA512 }
        if Curve25519.Signing.PublicKey(key) != nil { return .ed25519 }
        throw TrustSetupError.unsupportedKey(String(describing: key))
    }

    static func isValid(signature: [UInt8], for bytes: some DataProtocol, key: Certificate.PublicKey) -> Bool {
        guard let algorithm = try? algorithm(for: key) else { return false }
        return key.isValidSignature(signature, for: bytes, signatureAlgorithm: algorithm)
    }
}

/// Certificate fingerprints as shown to operators and pinned in the store.
public enum CertificateFingerprint {
    /// SHA-256 over the certificate DER, lowercase hex without separators (`openssl x509
    /// -fingerprint -sha256` prints the same bytes, uppercase with colons).
    public static func sha256(_ certificate: Certificate) -> String {
        var serializer = DER.Serializer()
        // Serialising a parsed or freshly built certificate cannot fail: it re-emits stored bytes.
        try! serializer.serialize(certificate)
        return hex(SHA256.hash(data: serializer.serializedBytes))
    }

    static func hex(_ bytes: some Sequence<UInt8>) -> String {
        bytes.map { String(format: "%02x", $0) }.joined()
    }
}

/// Errors of setup-time operations (loading files, building certificates), not trust refusals.
public enum TrustSetupError: Error, Equatable, CustomStringConvertible {
    case emptyChain
    case keyDoesNotMatchCertificate
    case unsupportedKey(String)
    case noCertificateInFile(String)
    case malformedCRL(String)
    case invalidArgument(String)

    public var description: String {
        switch self {
        case .emptyChain: "the certificate chain is empty"
        case .keyDoesNotMatchCertificate: "the private key does not match the leaf certificate"
        case .unsupportedKey(let key): "unsupported key type \(key)"
        case .noCertificateInFile(let path): "no certificate found in \(path)"
        case .malformedCRL(let why): "malformed CRL: \(why)"
        case .invalidArgument(let why): why
        }
    }
}

/// Detached signatures over documents both brokers keep (agreements, usage records): made with a
/// broker's leaf key (`BrokerIdentity.sign`), checked here against the signer's certificate, so a
/// third party holding the document, the signatures and the certificates can check them offline.
public enum DetachedSignature {
    public static func isValid(_ signature: [UInt8], for bytes: some DataProtocol, signedBy certificate: Certificate) -> Bool {
        SignatureScheme.isValid(signature: signature, for: bytes, key: certificate.publicKey)
    }
}
