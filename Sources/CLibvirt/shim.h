#ifndef INTERCLOUD_CLIBVIRT_SHIM_H
#define INTERCLOUD_CLIBVIRT_SHIM_H
#include <stddef.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

/* VIR_DOMAIN_EVENT_CALLBACK is a cast macro Swift cannot import: register the lifecycle callback
 * through a real function that does the cast in C. */
static inline int intercloud_virConnectDomainEventRegisterLifecycle(
    virConnectPtr conn, virConnectDomainEventCallback callback, void *opaque, virFreeCallback freecb) {
    return virConnectDomainEventRegisterAny(
        conn, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE, VIR_DOMAIN_EVENT_CALLBACK(callback), opaque, freecb);
}

/* Silences libvirt's default error printing to stderr; errors reach Swift through virGetLastError. */
static void intercloud_virQuietErrorFunc(void *userData, virErrorPtr error) { (void)userData; (void)error; }
static inline void intercloud_virSetQuietErrors(void) { virSetErrorFunc(NULL, intercloud_virQuietErrorFunc); }
#endif
