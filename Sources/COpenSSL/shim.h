#ifndef INTERCLOUD_COPENSSL_SHIM_H
#define INTERCLOUD_COPENSSL_SHIM_H
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/bio.h>
#include <openssl/sha.h>

/* OpenSSL API that is a macro in C and so does not import into Swift. */

static inline int ic_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version) {
    return (int)SSL_CTX_set_min_proto_version(ctx, version);
}

static inline long ic_SSL_CTX_set_mode(SSL_CTX *ctx, long mode) {
    return SSL_CTX_set_mode(ctx, mode);
}

static inline void ic_SSL_CTX_set_read_ahead(SSL_CTX *ctx, int yes) {
    SSL_CTX_set_read_ahead(ctx, yes);
}

static inline int ic_SSL_CTX_add1_chain_cert(SSL_CTX *ctx, X509 *certificate) {
    return (int)SSL_CTX_add1_chain_cert(ctx, certificate);
}

static inline void ic_OPENSSL_free(void *pointer) {
    OPENSSL_free(pointer);
}

/* SHA-256 with its chaining state reachable (the EVP interface hides it): the transfer channel
   checks each chunk against the running whole-file hash state, so one pass serves both the chunk
   check and the end-to-end digest. Wrapped here because the low-level calls are deprecated in
   OpenSSL 3 (still present, and the same SHA-NI code as EVP). */
static inline void ic_SHA256_Init(SHA256_CTX *context) { (void)SHA256_Init(context); }
static inline void ic_SHA256_Update(SHA256_CTX *context, const void *bytes, size_t count) {
    (void)SHA256_Update(context, bytes, count);
}
static inline void ic_SHA256_Final(unsigned char *digest, SHA256_CTX *context) { (void)SHA256_Final(digest, context); }

static inline const int ic_TLS1_3_VERSION(void) { return TLS1_3_VERSION; }
static inline const long ic_SSL_MODE_ENABLE_PARTIAL_WRITE(void) { return SSL_MODE_ENABLE_PARTIAL_WRITE; }
static inline const long ic_SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER(void) { return SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER; }
static inline const long ic_SSL_MODE_RELEASE_BUFFERS(void) { return SSL_MODE_RELEASE_BUFFERS; }

#endif
