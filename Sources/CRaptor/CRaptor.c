#include "CRaptor.h"
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

static intercloud_raptor table;
static const intercloud_raptor *loaded;
static char failure[512];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void load_once(void) {
    /* RTLD_LOCAL: Raptor's symbols (and libxml2's, which it loads) stay out of the global
     * namespace. Never closed: each parse opens its own world, but the library stays for the next. */
    void *library = dlopen("libraptor2.so.0", RTLD_NOW | RTLD_LOCAL);
    if (library == NULL) {
        const char *reason = dlerror();
        snprintf(failure, sizeof failure, "Raptor is not available (install libraptor2-0): %s", reason ? reason : "dlopen failed");
        return;
    }
#define INTERCLOUD_RAPTOR_RESOLVE(name) \
    table.name = (__typeof__(name) *)dlsym(library, #name); \
    if (table.name == NULL) { \
        snprintf(failure, sizeof failure, "libraptor2.so.0 has no %s (Raptor too old?)", #name); \
        return; \
    }
    INTERCLOUD_RAPTOR_FUNCTIONS(INTERCLOUD_RAPTOR_RESOLVE)
#undef INTERCLOUD_RAPTOR_RESOLVE
    loaded = &table;
}

const intercloud_raptor *intercloud_raptor_load(const char **error) {
    pthread_once(&once, load_once);
    *error = loaded ? NULL : failure;
    return loaded;
}
