import COpenSSL
import Foundation
import Synchronization

/// Decides whether a peer's leaf certificate is acceptable, by its SHA-256 fingerprint. The chain
/// is not validated against anchors here: the peer was authenticated by Trust over XMPP and its
/// leaf pinned; the TLS handshake proves the peer holds that leaf's key.
final class PeerPin: Sendable {
    private let accepts: @Sendable (String) -> Bool
    /// The last fingerprint the peer presented (client side: one context per connection, so this
    /// is the server's), for error messages.
    let presented = Mutex<String?>(nil)

    init(accepts: @escaping @Sendable (String) -> Bool) { self.accepts = accepts }

    func evaluate(_ fingerprint: String) -> Bool {
        presented.withLock { $0 = fingerprint }
        return accepts(fingerprint)
    }
}

/// An OpenSSL `SSL_CTX` set up for the transfer channel: TLS 1.3 only, our chain and key, the
/// peer's certificate required and checked against a `PeerPin`.
final class TLSContext: @unchecked Sendable {
    // @unchecked: the SSL_CTX is configured once in init and only read afterwards (SSL_new), which
    // OpenSSL allows from any thread; `pin` is Sendable.
    enum Role { case client, server }

    let context: OpaquePointer
    let pin: PeerPin

    /// AES-128-GCM first: fastest with AES-NI, and what both ends pick when they can.
    static let cipherSuites = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

    /// `cipherSuites` other than the default are for tests of negotiation.
    init(role: Role, identity: TransferIdentity, pin: PeerPin, cipherSuites: String = TLSContext.cipherSuites) throws(TransferError) {
        self.context = try Self.make(role: role, identity: identity, cipherSuites: cipherSuites)
        self.pin = pin
        SSL_CTX_set_verify(context, SSL_VERIFY_PEER | (role == .server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), nil)
        SSL_CTX_set_cert_verify_callback(context, { storeContext, argument in
            guard let storeContext, let argument,
                let leaf = X509_STORE_CTX_get0_cert(storeContext),
                let fingerprint = CertificateFingerprints.sha256(leaf)
            else { return 0 }
            let pin = Unmanaged<PeerPin>.fromOpaque(argument).takeUnretainedValue()
            if pin.evaluate(fingerprint) { return 1 }
            // CERT_REJECTED makes OpenSSL answer with a bad_certificate alert, so the peer can tell
            // a refused certificate from other handshake failures.
            X509_STORE_CTX_set_error(storeContext, X509_V_ERR_CERT_REJECTED)
            return 0
        }, Unmanaged.passUnretained(pin).toOpaque())  // `self.pin` keeps it alive as long as the context
    }

    deinit { SSL_CTX_free(context) }

    /// A context with protocol settings and identity, without peer verification (also used to
    /// check an identity loads).
    static func make(
        role: Role, identity: TransferIdentity, cipherSuites: String = TLSContext.cipherSuites
    ) throws(TransferError) -> OpaquePointer {
        ERR_clear_error()
        guard let context = SSL_CTX_new(role == .server ? TLS_server_method() : TLS_client_method()) else {
            throw .tlsFailure("SSL_CTX_new: \(OpenSSLErrors.drain())")
        }
        do throws(TransferError) {
            guard ic_SSL_CTX_set_min_proto_version(context, ic_TLS1_3_VERSION()) == 1,
                SSL_CTX_set_ciphersuites(context, cipherSuites) == 1
            else { throw .tlsFailure("protocol settings: \(OpenSSLErrors.drain())") }
            // The server's order decides (SSL_OP_CIPHER_SERVER_PREFERENCE, bit 22; a macro Swift
            // cannot import): a client listing AES-256 first still gets AES-128.
            _ = SSL_CTX_set_options(context, UInt64(1) << 22)
            // Partial writes let one thread interleave reading acks with writing a big chunk.
            _ = ic_SSL_CTX_set_mode(
                context, ic_SSL_MODE_ENABLE_PARTIAL_WRITE() | ic_SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER())
            ic_SSL_CTX_set_read_ahead(context, 1)
            SSL_CTX_set_default_read_buffer_len(context, 64 * 1024)
            // No session resumption: every connection is a fresh, fully authenticated handshake,
            // and the server sends no tickets after it.
            _ = SSL_CTX_set_num_tickets(context, 0)
            try load(identity, into: context)
            return context
        } catch {
            SSL_CTX_free(context)
            throw error
        }
    }

    private static func load(_ identity: TransferIdentity, into context: OpaquePointer) throws(TransferError) {
        for (position, der) in identity.certificateChainDER.enumerated() {
            let certificate: OpaquePointer? = der.withUnsafeBufferPointer { buffer in
                var cursor: UnsafePointer<UInt8>? = buffer.baseAddress
                return d2i_X509(nil, &cursor, buffer.count)
            }
            guard let certificate else {
                throw .invalidArgument("certificate \(position) is not DER: \(OpenSSLErrors.drain())")
            }
            defer { X509_free(certificate) }
            let loaded =
                position == 0
                ? SSL_CTX_use_certificate(context, certificate) : ic_SSL_CTX_add1_chain_cert(context, certificate)
            guard loaded == 1 else { throw .tlsFailure("loading certificate \(position): \(OpenSSLErrors.drain())") }
        }
        let key: OpaquePointer? = identity.privateKeyDER.withUnsafeBufferPointer { buffer in
            var cursor: UnsafePointer<UInt8>? = buffer.baseAddress
            return d2i_AutoPrivateKey(nil, &cursor, buffer.count)
        }
        guard let key else { throw .invalidArgument("private key is not DER: \(OpenSSLErrors.drain())") }
        defer { EVP_PKEY_free(key) }
        guard SSL_CTX_use_PrivateKey(context, key) == 1, SSL_CTX_check_private_key(context) == 1 else {
            throw .invalidArgument("private key does not match the leaf certificate: \(OpenSSLErrors.drain())")
        }
    }
}
