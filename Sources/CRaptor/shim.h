#ifndef INTERCLOUD_CRAPTOR_SHIM_H
#define INTERCLOUD_CRAPTOR_SHIM_H
#include <raptor2.h>
#endif
