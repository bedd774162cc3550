#ifndef INTERCLOUD_CRAPTOR_H
#define INTERCLOUD_CRAPTOR_H
/* Raptor 2, loaded on first use.
 *
 * Raptor is needed only where RDF is parsed ([catalog] files at start, a peer's RDF/XML catalog
 * answer, a service template's Turtle), and linking it maps raptor2 and what only it pulls in
 * (libcurl-gnutls, libxslt, libyajl) into every process, parsing or not. So nothing links raptor2: `RDFLoader` calls
 * `intercloud_raptor_load`, which opens libraptor2.so.0 and resolves the functions below into a
 * table, once per process. The header still comes from libraptor2-dev for types and constants;
 * calling a Raptor function directly instead of through the table fails at link time. */
#include <stddef.h>
#include <raptor2/raptor2.h>

/* Every Raptor function the loader calls. Adding one here is all a new call needs. */
#define INTERCLOUD_RAPTOR_FUNCTIONS(X) \
    X(raptor_free_parser) \
    X(raptor_free_uri) \
    X(raptor_free_world) \
    X(raptor_new_parser) \
    X(raptor_new_uri) \
    X(raptor_new_world_internal) \
    X(raptor_parser_parse_abort) \
    X(raptor_parser_parse_chunk) \
    X(raptor_parser_parse_start) \
    X(raptor_parser_set_option) \
    X(raptor_parser_set_statement_handler) \
    X(raptor_uri_as_string) \
    X(raptor_world_open) \
    X(raptor_world_set_log_handler)

/* One field per function, named as in Raptor and typed from Raptor's own prototype. */
typedef struct intercloud_raptor {
#define INTERCLOUD_RAPTOR_FIELD(name) __typeof__(name) *_Nonnull name;
    INTERCLOUD_RAPTOR_FUNCTIONS(INTERCLOUD_RAPTOR_FIELD)
#undef INTERCLOUD_RAPTOR_FIELD
} intercloud_raptor;

/* Opens libraptor2.so.0 and resolves every function, the first time only (thread-safe). Returns
 * the table, or NULL with `*error` set to why (the library or a function is missing); the answer
 * does not change for the life of the process. */
const intercloud_raptor *_Nullable intercloud_raptor_load(const char *_Nullable *_Nonnull error);
#endif
