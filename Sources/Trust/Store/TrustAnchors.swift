import Foundation
import X509

/// The operator's anchors and CRLs, read from configured files (see `certs/README.md`).
///
/// An anchor is trusted for every peer (an Intercloud root) unless the operator limits it to some
/// JID domains (`[trust] anchor_domains`): a partner's CA then vouches only for that partner's
/// brokers, and a chain from it for any other domain is refused (`anchorOutOfScope`), so one
/// partner's CA cannot certify a broker claiming to be another partner.
public struct TrustAnchors: Sendable {
    public var anchors: [Certificate]
    public var crls: [CertificateRevocationList]
    /// Anchor → the JID domain patterns it may vouch for (`cloud2.example`, `*.cloud2.example`).
    /// Anchors not listed vouch for every domain.
    public var scopes: [Certificate: [String]]
    /// When a pinned peer may present another key (`KeyChangePolicy`).
    public var keyChange: KeyChangePolicy

    public init(
        anchors: [Certificate], crls: [CertificateRevocationList] = [], scopes: [Certificate: [String]] = [:],
        keyChange: KeyChangePolicy = .sameAnchor
    ) {
        self.anchors = anchors
        self.crls = crls
        self.scopes = scopes
        self.keyChange = keyChange
    }

    /// Whether `anchor` may vouch for a broker of `domain`.
    public func allows(anchor: Certificate, domain: String) -> Bool {
        guard let patterns = scopes[anchor] else { return true }
        let domain = domain.lowercased()
        return patterns.contains { pattern in
            let pattern = pattern.lowercased()
            if pattern.hasPrefix("*.") { return domain.hasSuffix(String(pattern.dropFirst(1))) }
            return domain == pattern
        }
    }

    /// Loads anchor files (PEM bundles or DER) and CRL files (PEM or DER). A path that is a
    /// directory contributes every `*.pem`/`*.crt`/`*.der` (anchors) or `*.crl`/`*.pem` (CRLs) in it.
    /// `scopes`: anchor file → JID domain patterns every certificate in that file is limited to.
    public static func load(anchorPaths: [String], crlPaths: [String] = [], scopes: [String: [String]] = [:]) throws -> TrustAnchors {
        var anchors: [Certificate] = []
        for path in try expand(anchorPaths, extensions: ["pem", "crt", "cer", "der"]) {
            anchors += try PEMFiles.certificates(atPath: path)
        }
        var scoped: [Certificate: [String]] = [:]
        for (path, patterns) in scopes {
            for certificate in try PEMFiles.certificates(atPath: path) {
                guard anchors.contains(certificate) else {
                    throw TrustSetupError.invalidArgument("anchor_domains names \(path), whose certificates are not among trust.anchors")
                }
                scoped[certificate, default: []] += patterns
            }
        }
        var crls: [CertificateRevocationList] = []
        for path in try expand(crlPaths, extensions: ["crl", "pem", "der"]) {
            crls.append(try CertificateRevocationList(fileContents: try Data(contentsOf: URL(fileURLWithPath: path))))
        }
        return TrustAnchors(anchors: anchors, crls: crls, scopes: scoped)
    }

    static func expand(_ paths: [String], extensions: Set<String>) throws -> [String] {
        var result: [String] = []
        for path in paths {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
                let names = try FileManager.default.contentsOfDirectory(atPath: path).sorted()
                result += names.filter { extensions.contains(($0 as NSString).pathExtension.lowercased()) }
                    .map { (path as NSString).appendingPathComponent($0) }
            } else {
                result.append(path)
            }
        }
        return result
    }
}

/// When a pinned peer may change its key without the operator (`[trust] key_change`).
public enum KeyChangePolicy: String, Sendable, Codable, CaseIterable {
    /// A new key whose chain ends at the same anchor as the pinned one (a routine renewal).
    case sameAnchor = "same-anchor"
    /// Never on its own: the operator consents first (`intercloud trust allow JID --new-key`).
    case operatorOnly = "operator"
}
