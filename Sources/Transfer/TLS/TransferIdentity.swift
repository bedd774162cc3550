import COpenSSL
import Crypto
import Foundation

/// A broker's certificate chain and private key as the transfer channel presents them: leaf
/// first, then intermediates (the root anchor is not sent). Held as DER so it can be handed to
/// OpenSSL for each TLS context.
public struct TransferIdentity: Sendable, Equatable {
    public var certificateChainDER: [[UInt8]]
    /// PKCS#8 or SEC1 DER.
    public var privateKeyDER: [UInt8]

    /// From DER bytes (leaf first).
    public init(certificateChainDER: [[UInt8]], privateKeyDER: [UInt8]) throws(TransferError) {
        guard !certificateChainDER.isEmpty else { throw .invalidArgument("empty certificate chain") }
        self.certificateChainDER = certificateChainDER
        self.privateKeyDER = privateKeyDER
        // Load once so a bad chain or a key that does not match the leaf fails here, not at the
        // first connection.
        let context = try TLSContext.make(role: .client, identity: self)
        SSL_CTX_free(context)
    }

    /// From PEM text: a chain bundle (leaf first) and a private key.
    public init(certificateChainPEM: String, privateKeyPEM: String) throws(TransferError) {
        let chain = try PEMText.certificatesDER(certificateChainPEM)
        let key = try PEMText.privateKeyDER(privateKeyPEM)
        try self.init(certificateChainDER: chain, privateKeyDER: key)
    }

    /// From PEM files, as the broker keeps its identity on disk.
    public init(certificateChainFile: URL, privateKeyFile: URL) throws(TransferError) {
        let chain: String
        let key: String
        do {
            chain = try String(contentsOf: certificateChainFile, encoding: .utf8)
            key = try String(contentsOf: privateKeyFile, encoding: .utf8)
        } catch {
            throw .fileError("cannot read identity files: \(error)")
        }
        try self.init(certificateChainPEM: chain, privateKeyPEM: key)
    }

    /// Lowercase hex SHA-256 of the leaf DER: what the peer pins (same as Trust's fingerprints).
    public var fingerprint: String { CertificateFingerprints.sha256(der: certificateChainDER[0]) }
}

enum CertificateFingerprints {
    static func sha256(der: some DataProtocol) -> String { Hex.encode(SHA256.hash(data: der)) }

    /// Fingerprint of an OpenSSL certificate, from its DER encoding.
    static func sha256(_ certificate: OpaquePointer) -> String? {
        var out: UnsafeMutablePointer<UInt8>? = nil
        let length = i2d_X509(certificate, &out)
        guard length > 0, let out else { return nil }
        defer { ic_OPENSSL_free(out) }
        return sha256(der: UnsafeBufferPointer(start: out, count: Int(length)))
    }
}

/// PEM decoding through OpenSSL's own readers, so whatever `openssl` writes loads here.
enum PEMText {
    static func certificatesDER(_ pem: String) throws(TransferError) -> [[UInt8]] {
        var result: [[UInt8]] = []
        try withMemoryBIO(pem) { bio throws(TransferError) in
            while let certificate = PEM_read_bio_X509(bio, nil, nil, nil) {
                defer { X509_free(certificate) }
                var out: UnsafeMutablePointer<UInt8>? = nil
                let length = i2d_X509(certificate, &out)
                guard length > 0, let out else { throw .invalidArgument("cannot encode certificate") }
                result.append(Array(UnsafeBufferPointer(start: out, count: Int(length))))
                ic_OPENSSL_free(out)
            }
            ERR_clear_error()  // the loop ends on a "no start line" error
        }
        guard !result.isEmpty else { throw .invalidArgument("no certificate in PEM text") }
        return result
    }

    static func privateKeyDER(_ pem: String) throws(TransferError) -> [UInt8] {
        var result: [UInt8] = []
        try withMemoryBIO(pem) { bio throws(TransferError) in
            guard let key = PEM_read_bio_PrivateKey(bio, nil, nil, nil) else {
                throw .invalidArgument("no private key in PEM text: \(OpenSSLErrors.drain())")
            }
            defer { EVP_PKEY_free(key) }
            var out: UnsafeMutablePointer<UInt8>? = nil
            let length = i2d_PrivateKey(key, &out)
            guard length > 0, let out else { throw .invalidArgument("cannot encode private key") }
            result = Array(UnsafeBufferPointer(start: out, count: Int(length)))
            ic_OPENSSL_free(out)
        }
        return result
    }

    private static func withMemoryBIO(
        _ text: String, _ body: (OpaquePointer) throws(TransferError) -> Void
    ) throws(TransferError) {
        // BIO_new_mem_buf does not copy: keep the bytes in storage that outlives the BIO.
        let bytes = Array(text.utf8)
        let storage = UnsafeMutableRawPointer.allocate(byteCount: max(1, bytes.count), alignment: 1)
        defer { storage.deallocate() }
        bytes.withUnsafeBytes { if let base = $0.baseAddress { storage.copyMemory(from: base, byteCount: bytes.count) } }
        guard let bio = BIO_new_mem_buf(storage, Int32(bytes.count)) else {
            throw .invalidArgument("cannot allocate a memory BIO")
        }
        defer { BIO_free(bio) }
        try body(bio)
    }
}

enum OpenSSLErrors {
    /// Empties this thread's OpenSSL error queue into one line.
    static func drain() -> String {
        var messages: [String] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            var buffer = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buffer, buffer.count)
            messages.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return messages.isEmpty ? "no OpenSSL error" : messages.joined(separator: "; ")
    }
}
