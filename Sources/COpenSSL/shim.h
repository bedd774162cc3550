#ifndef INTERCLOUD_COPENSSL_SHIM_H
#define INTERCLOUD_COPENSSL_SHIM_H
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#endif
