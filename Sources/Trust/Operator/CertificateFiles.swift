import Foundation
import X509

/// File-level operations behind `intercloud certs init-ca|issue|show`, kept here (and tested) so
/// the CLI command stays a thin argument parser.
///
/// Layout: a CA directory holds `ca.key` (0600) and `ca.pem` (the CA certificate first, then its
/// issuers up to the root); a broker directory holds `broker.key` (0600) and `broker-chain.pem`
/// (leaf first, then intermediates, without the root).
public enum CertificateFiles {
    public static let caKey = "ca.key"
    public static let caChain = "ca.pem"
    public static let brokerKey = "broker.key"
    public static let brokerChain = "broker-chain.pem"

    /// Creates a root CA in `directory`, or an intermediate signed by the CA in `parentDirectory`.
    /// Refuses to overwrite an existing key.
    @discardableResult
    public static func initCA(
        directory: String, commonName: String, organization: String? = nil, parentDirectory: String? = nil,
        validityDays: Int = 3650, now: Date = Date()
    ) throws -> CertificateAuthority {
        let keyPath = path(directory, caKey)
        guard !FileManager.default.fileExists(atPath: keyPath) else {
            throw TrustSetupError.invalidArgument("\(keyPath) exists; refusing to overwrite a CA key")
        }
        // Backdate a little so peers with a slightly slow clock accept the certificate at once.
        let notBefore = now - 300
        let validity = TimeInterval(validityDays) * 86_400
        let ca: CertificateAuthority
        if let parentDirectory {
            let parent = try loadCA(directory: parentDirectory)
            ca = try parent.makeIntermediate(
                commonName: commonName, organization: organization, notBefore: notBefore, validity: validity)
        } else {
            ca = try CertificateAuthority.makeRoot(
                commonName: commonName, organization: organization, notBefore: notBefore, validity: validity)
        }
        try ca.save(keyPath: keyPath, chainPath: path(directory, caChain))
        return ca
    }

    public static func loadCA(directory: String) throws -> CertificateAuthority {
        try CertificateAuthority.load(keyPath: path(directory, caKey), chainPath: path(directory, caChain))
    }

    /// Issues a broker identity for `jid` with the CA in `caDirectory`, writing it to `outputDirectory`.
    @discardableResult
    public static func issue(
        caDirectory: String, jid: String, outputDirectory: String, validityDays: Int = 365, now: Date = Date()
    ) throws -> BrokerIdentity {
        guard jid.contains("@") || jid.contains(".") else {
            throw TrustSetupError.invalidArgument("\(jid) is not a JID")
        }
        let keyPath = path(outputDirectory, brokerKey)
        guard !FileManager.default.fileExists(atPath: keyPath) else {
            throw TrustSetupError.invalidArgument("\(keyPath) exists; refusing to overwrite a broker key")
        }
        let identity = try loadCA(directory: caDirectory).issueBrokerIdentity(
            jid: jid, notBefore: now - 300, validity: TimeInterval(validityDays) * 86_400)
        try identity.save(keyPath: keyPath, chainPath: path(outputDirectory, brokerChain))
        return identity
    }

    /// Summaries of every certificate in a PEM/DER file, in file order.
    public static func show(path: String) throws -> [CertificateSummary] {
        try PEMFiles.certificates(atPath: path).map(CertificateSummary.init)
    }

    static func path(_ directory: String, _ name: String) -> String {
        (directory as NSString).appendingPathComponent(name)
    }
}
