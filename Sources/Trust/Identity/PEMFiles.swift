import Foundation
import SwiftASN1
import X509

/// Reading and writing PEM files. Private keys are created with mode 0600 before any byte is
/// written, so a key never exists on disk with wider permissions, even briefly.
public enum PEMFiles {
    /// All certificates in a PEM file (bundle order preserved). DER files are accepted too.
    public static func certificates(atPath path: String) throws -> [Certificate] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let certificates = try certificates(fromFileContents: data)
        guard !certificates.isEmpty else { throw TrustSetupError.noCertificateInFile(path) }
        return certificates
    }

    public static func certificates(fromFileContents data: Data) throws -> [Certificate] {
        if let text = String(data: data, encoding: .utf8), text.contains("-----BEGIN") {
            return try certificates(fromPEM: text)
        }
        return [try Certificate(derEncoded: Array(data))]
    }

    public static func certificates(fromPEM text: String) throws -> [Certificate] {
        try PEMDocument.parseMultiple(pemString: text)
            .filter { $0.discriminator == "CERTIFICATE" }
            .map { try Certificate(pemDocument: $0) }
    }

    public static func pem(_ certificates: [Certificate]) throws -> String {
        try certificates.map { try $0.serializeAsPEM().pemString }.joined(separator: "\n") + "\n"
    }

    public static func writeCertificates(_ certificates: [Certificate], toPath path: String) throws {
        try write(Data(try pem(certificates).utf8), toPath: path, mode: 0o644)
    }

    public static func writePrivateKey(_ key: Certificate.PrivateKey, toPath path: String) throws {
        try write(Data((try key.serializeAsPEM().pemString + "\n").utf8), toPath: path, mode: 0o600)
    }

    /// Writes through a temporary file created with `mode`, then renames it into place, so readers
    /// never see a half-written file and a key's permissions are right from creation.
    static func write(_ data: Data, toPath path: String, mode: mode_t) throws {
        let url = URL(fileURLWithPath: path)
        try FileManager.default.createDirectory(
            at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        let temporary = path + ".tmp-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL, mode)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        let handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
        do {
            try handle.write(contentsOf: data)
            try handle.synchronize()
            try handle.close()
            // umask may have narrowed the mode at creation; make it exact.
            guard chmod(temporary, mode) == 0, rename(temporary, path) == 0 else {
                throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
            }
        } catch {
            unlink(temporary)
            throw error
        }
    }
}
