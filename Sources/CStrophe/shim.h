#ifndef INTERCLOUD_CSTROPHE_SHIM_H
#define INTERCLOUD_CSTROPHE_SHIM_H
#include <strophe.h>

/* The XMPP_CONN_FLAG_* macros import into Swift as UInt while xmpp_conn_set_flags takes a long:
   give them typed names so Swift code needs no casts. */
static const long intercloud_flag_disable_tls = (long)XMPP_CONN_FLAG_DISABLE_TLS;
static const long intercloud_flag_mandatory_tls = (long)XMPP_CONN_FLAG_MANDATORY_TLS;
static const long intercloud_flag_trust_tls = (long)XMPP_CONN_FLAG_TRUST_TLS;
static const long intercloud_flag_disable_sm = (long)XMPP_CONN_FLAG_DISABLE_SM;

#endif
