#ifndef INTERCLOUD_CLIBVIRT_SHIM_H
#define INTERCLOUD_CLIBVIRT_SHIM_H
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#endif
