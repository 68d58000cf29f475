/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Pinned host memory (DESIGN.md §5).
 *
 * The driver frees cuMemHostAlloc / cuMemAllocHost memory with the context
 * that allocated it, so memory the application still points to would vanish
 * when a migration destroys the contexts. The shim therefore allocates it
 * itself (anonymous mmap) and pins it with cuMemHostRegister; a migration
 * drops the registrations with the old contexts and registers the same
 * ranges again in the new ones, at the same addresses.
 *
 * Custom entry points (annotations.txt; prototypes in g_api.h):
 *   cuMemAllocHost_v2, cuMemHostAlloc   mmap + register, recorded
 *   cuMemFreeHost                       unregister + munmap
 *   cuMemHostGetFlags                   the flags the application passed
 *   cuMemHostUnregister                 refuses the shim's allocations (as
 *                                       the driver refuses its own), records
 *                                       the application's unregistrations
 * Track hook: cuMemHostRegister_v2 records the application's registrations.
 * cuMemHostGetDevicePointer and the pointer queries need nothing: the driver
 * knows the shim's memory as a registration, mapped (DEVICEMAP) like the
 * driver's own pinned memory, and answers for it as for its own.
 *
 * What a registration cannot reproduce: CU_MEMHOSTALLOC_WRITECOMBINED. The
 * memory is ordinary cached memory; programs behave the same, but CPU reads
 * are faster and host-to-device copies over PCIe may be slightly slower than
 * from write-combined memory. cuMemHostGetFlags still reports the flag.
 *
 * Every shim allocation and application registration is a tracker record
 * (gs_trk_host_*, kind GS_HOST_ALLOC / GS_HOST_REGISTER): the table lookups
 * here use, and what a restore walks.
 */
#ifndef GS_HOSTMEM_H
#define GS_HOSTMEM_H

#include <cuda.h>

/* The cuMemHostRegister flags that pin a shim allocation made with
 * cuMemHostAlloc flags `alloc_flags`: for the first registration and for
 * registering it again in a new context after a migration. */
unsigned gs_hostmem_register_flags(unsigned alloc_flags);

/*
 * A context (app-visible handle) died (cuCtxDestroy, the last primary
 * release, a primary reset): the shim's host allocations made in it are
 * unpinned and unmapped, as the driver frees its own. The context is gone:
 * it is never made current again here. Registered as a tracker teardown
 * callback before the first allocation.
 */
void gs_hostmem_ctx_destroyed(CUcontext ctx);

#endif
