#include "CLibvirt.h"
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

static intercloud_libvirt table;
static const intercloud_libvirt *loaded;
static char failure[512];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void load_once(void) {
    /* RTLD_LOCAL: libvirt's symbols stay out of the global namespace. Never closed: libvirt keeps
     * threads and global state for the life of the process. */
    void *library = dlopen("libvirt.so.0", RTLD_NOW | RTLD_LOCAL);
    if (library == NULL) {
        const char *reason = dlerror();
        snprintf(failure, sizeof failure, "libvirt is not available (install libvirt0): %s", reason ? reason : "dlopen failed");
        return;
    }
#define INTERCLOUD_LIBVIRT_RESOLVE(name) \
    table.name = (__typeof__(name) *)dlsym(library, #name); \
    if (table.name == NULL) { \
        snprintf(failure, sizeof failure, "libvirt.so.0 has no %s (libvirt too old?)", #name); \
        return; \
    }
    INTERCLOUD_LIBVIRT_FUNCTIONS(INTERCLOUD_LIBVIRT_RESOLVE)
#undef INTERCLOUD_LIBVIRT_RESOLVE
    loaded = &table;
}

const intercloud_libvirt *intercloud_libvirt_load(const char **error) {
    pthread_once(&once, load_once);
    *error = loaded ? NULL : failure;
    return loaded;
}

int intercloud_virConnectDomainEventRegisterLifecycle(
    virConnectPtr conn, virConnectDomainEventCallback callback, void *opaque,
    virFreeCallback freecb) {
    return loaded->virConnectDomainEventRegisterAny(
        conn, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE, VIR_DOMAIN_EVENT_CALLBACK(callback), opaque, freecb);
}

static void quiet_errors(void *userData, virErrorPtr error) { (void)userData; (void)error; }

void intercloud_virSetQuietErrors(void) { loaded->virSetErrorFunc(NULL, quiet_errors); }
