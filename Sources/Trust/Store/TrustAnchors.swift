import Foundation
import X509

/// The operator's anchors and CRLs, read from configured files (see `certs/README.md`).
///
/// Every anchor is trusted for every peer: an Intercloud root, each partner cloud's CA (pairwise
/// anchors), or both. Scoping an anchor to some peers only is not supported yet.
public struct TrustAnchors: Sendable {
    public var anchors: [Certificate]
    public var crls: [CertificateRevocationList]

    public init(anchors: [Certificate], crls: [CertificateRevocationList] = []) {
        self.anchors = anchors
        self.crls = crls
    }

    /// Loads anchor files (PEM bundles or DER) and CRL files (PEM or DER). A path that is a
    /// directory contributes every `*.pem`/`*.crt`/`*.der` (anchors) or `*.crl`/`*.pem` (CRLs) in it.
    public static func load(anchorPaths: [String], crlPaths: [String] = []) throws -> TrustAnchors {
        var anchors: [Certificate] = []
        for path in try expand(anchorPaths, extensions: ["pem", "crt", "cer", "der"]) {
            anchors += try PEMFiles.certificates(atPath: path)
        }
        var crls: [CertificateRevocationList] = []
        for path in try expand(crlPaths, extensions: ["crl", "pem", "der"]) {
            crls.append(try CertificateRevocationList(fileContents: try Data(contentsOf: URL(fileURLWithPath: path))))
        }
        return TrustAnchors(anchors: anchors, crls: crls)
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
