#ifndef INTERCLOUD_CLIBVIRT_H
#define INTERCLOUD_CLIBVIRT_H
/* libvirt, loaded on first use.
 *
 * Only brokers configured with a libvirt driver need libvirt, and linking it maps libvirt and
 * the dozens of libraries it depends on (GnuTLS, libxml2, libnl, ...) into every broker process:
 * about a fifth of an idle broker's resident memory. So nothing links libvirt: the driver calls
 * `intercloud_libvirt_load`, which opens libvirt.so.0 and resolves the functions below into a
 * table, once per process. The header still comes from libvirt-dev for types and constants;
 * calling a libvirt function directly instead of through the table fails at link time. */
#include <stddef.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

/* Every libvirt function the driver calls. Adding one here is all a new call needs. */
#define INTERCLOUD_LIBVIRT_FUNCTIONS(X) \
    X(virConnectClose) \
    X(virConnectDomainEventDeregisterAny) \
    X(virConnectDomainEventRegisterAny) \
    X(virConnectIsAlive) \
    X(virConnectListAllDomains) \
    X(virConnectOpen) \
    X(virConnectSetKeepAlive) \
    X(virDomainCreate) \
    X(virDomainDefineXML) \
    X(virDomainDestroy) \
    X(virDomainFree) \
    X(virDomainGetName) \
    X(virDomainGetState) \
    X(virDomainGetUUIDString) \
    X(virDomainGetXMLDesc) \
    X(virDomainHasManagedSaveImage) \
    X(virDomainListAllSnapshots) \
    X(virDomainLookupByName) \
    X(virDomainLookupByUUIDString) \
    X(virDomainManagedSave) \
    X(virDomainManagedSaveRemove) \
    X(virDomainMigrateToURI3) \
    X(virDomainReboot) \
    X(virDomainResume) \
    X(virDomainShutdown) \
    X(virDomainSnapshotCreateXML) \
    X(virDomainSnapshotFree) \
    X(virDomainSnapshotGetName) \
    X(virDomainSuspend) \
    X(virDomainUndefineFlags) \
    X(virEventRegisterDefaultImpl) \
    X(virEventRunDefaultImpl) \
    X(virGetLastError) \
    X(virNodeGetInfo) \
    X(virResetLastError) \
    X(virSetErrorFunc) \
    X(virTypedParamsAddString) \
    X(virTypedParamsFree)

/* One field per function, named as in libvirt and typed from libvirt's own prototype. */
typedef struct intercloud_libvirt {
#define INTERCLOUD_LIBVIRT_FIELD(name) __typeof__(name) *_Nonnull name;
    INTERCLOUD_LIBVIRT_FUNCTIONS(INTERCLOUD_LIBVIRT_FIELD)
#undef INTERCLOUD_LIBVIRT_FIELD
} intercloud_libvirt;

/* Opens libvirt.so.0 and resolves every function, the first time only (thread-safe). Returns the
 * table, or NULL with `*error` set to why (the library or a function is missing); the answer does
 * not change for the life of the process. */
const intercloud_libvirt *_Nullable intercloud_libvirt_load(const char *_Nullable *_Nonnull error);

/* The two helpers below call through the loaded table: only after intercloud_libvirt_load succeeded. */

/* VIR_DOMAIN_EVENT_CALLBACK is a cast macro Swift cannot import: register the lifecycle callback
 * through a real function that does the cast in C. */
int intercloud_virConnectDomainEventRegisterLifecycle(
    virConnectPtr _Nonnull conn,
    virConnectDomainEventCallback _Nonnull callback, void *_Nullable opaque, virFreeCallback _Nullable freecb);

/* Silences libvirt's default error printing to stderr; errors reach Swift through virGetLastError. */
void intercloud_virSetQuietErrors(void);
#endif
