/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Pinned host memory served by the shim: see hostmem.h.
 */
#define GS_LOG_SUBSYS "shim"
#include "hostmem.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "arena.h"
#include "log.h"
#include "track.h"

#define ALLOC_FLAGS                                                                    \
	(CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP | CU_MEMHOSTALLOC_WRITECOMBINED)

static pthread_once_t setup_once = PTHREAD_ONCE_INIT;

static void teardown(CUcontext ctx, void *arg)
{
	(void)arg;
	gs_hostmem_ctx_destroyed(ctx);
}

static void setup(void)
{
	int rc = gs_trk_on_ctx_teardown(teardown, NULL);

	if (rc < 0)
		gs_log_at(GS_LOG_ERROR, -rc, "cannot register for context teardown: pinned host "
			  "memory of destroyed contexts will stay allocated");
}

static size_t page_round(size_t n)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	return (n + page - 1) & ~(page - 1);
}

unsigned gs_hostmem_register_flags(unsigned alloc_flags)
{
	/* DEVICEMAP always: with unified addressing all of the driver's own
	 * pinned memory is mapped for the device, whatever the flags said.
	 * PORTABLE as asked, so the driver's idea of which contexts the
	 * memory is pinned for stays the application's. */
	return CU_MEMHOSTREGISTER_DEVICEMAP |
	       (alloc_flags & CU_MEMHOSTALLOC_PORTABLE ? CU_MEMHOSTREGISTER_PORTABLE : 0);
}

/* Undo the registration of ptr made in real context ctx, in that context:
 * a registration that is not PORTABLE belongs to it. */
static CUresult unregister_in(CUcontext ctx, void *ptr)
{
	CUcontext current = NULL, popped;
	CUresult rc;

	if (GS_MEM_REAL(cuCtxGetCurrent, &current) != CUDA_SUCCESS || current == ctx)
		return GS_MEM_REAL(cuMemHostUnregister, ptr);
	rc = GS_MEM_REAL(cuCtxPushCurrent_v2, ctx);
	if (rc != CUDA_SUCCESS)
		return GS_MEM_REAL(cuMemHostUnregister, ptr);
	rc = GS_MEM_REAL(cuMemHostUnregister, ptr);
	GS_MEM_REAL(cuCtxPopCurrent_v2, &popped);
	return rc;
}

static CUresult host_alloc(void **pp, size_t size, unsigned flags)
{
	CUcontext ctx;
	CUdeviceptr devptr = 0;
	int app_dev, real_dev;
	CUresult rc;

	rc = gs_mem_current(&ctx, &app_dev, &real_dev);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!pp || size == 0 || (flags & ~(unsigned)ALLOC_FLAGS))
		return CUDA_ERROR_INVALID_VALUE;
	size_t len = page_round(size);
	if (len < size)
		return CUDA_ERROR_OUT_OF_MEMORY;
	/* Before the first allocation: none can belong to a context destroyed
	 * earlier. */
	pthread_once(&setup_once, setup);

	/* Private anonymous memory: nothing outlives the process, and like the
	 * driver's pinned memory it is zero-filled on first touch. */
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return CUDA_ERROR_OUT_OF_MEMORY;
	/* Exactly the size asked for, so the driver's view of the range
	 * (cuMemGetAddressRange, RANGE_SIZE) is the allocation's. */
	rc = GS_MEM_REAL(cuMemHostRegister_v2, p, size, gs_hostmem_register_flags(flags));
	if (rc != CUDA_SUCCESS) {
		munmap(p, len);
		return rc;
	}
	if (GS_MEM_REAL(cuMemHostGetDevicePointer_v2, &devptr, p, 0) != CUDA_SUCCESS)
		devptr = 0;

	struct gs_host_desc desc = {
		.ptr = p,
		.size = size,
		.kind = GS_HOST_ALLOC,
		.flags = flags,
		.ctx = ctx,
		.devptr = devptr,
	};
	int trk = gs_trk_host_add(&desc);
	if (trk < 0) {
		/* Unrecorded memory would not be registered again after a
		 * migration: fail the allocation instead. */
		gs_log_at(GS_LOG_ERROR, -trk, "tracker: recording host allocation %p failed", p);
		GS_MEM_REAL(cuMemHostUnregister, p);
		munmap(p, len);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	*pp = p;
	return CUDA_SUCCESS;
}

/* The shim allocation containing p (exactly starting at it if `start`). */
static bool find_ours(const void *p, bool start, struct gs_host_desc *out)
{
	if (!p || gs_trk_host_find(p, out) != 0 || out->kind != GS_HOST_ALLOC)
		return false;
	return !start || out->ptr == p;
}

/* Unpin and unmap. ctx_alive: the allocating context still exists (a free),
 * else it was just destroyed and must not be made current again. */
static void release(const struct gs_host_desc *d, bool ctx_alive)
{
	CUresult rc = ctx_alive ? unregister_in(gs_mem_ctx_real(d->ctx), d->ptr)
				: GS_MEM_REAL(cuMemHostUnregister, d->ptr);

	/* After cuCtxDestroy the driver has already dropped the registration
	 * with the context: nothing left to undo then. */
	if (rc != CUDA_SUCCESS && (ctx_alive || (rc != CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED &&
						 rc != CUDA_ERROR_INVALID_CONTEXT)))
		gs_warn("unregistering pinned host memory %p failed (%d)", d->ptr, (int)rc);
	if (munmap(d->ptr, page_round(d->size)) != 0)
		gs_pwarn("munmap of pinned host memory %p", d->ptr);
}

static CUresult host_free(void *p)
{
	struct gs_host_desc d;
	CUcontext current = NULL;
	CUresult rc;

	if (!find_ours(p, true, &d))
		return GS_MEM_REAL(cuMemFreeHost, p);
	rc = GS_MEM_REAL(cuCtxGetCurrent, &current);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!current)
		return CUDA_ERROR_INVALID_CONTEXT;
	/* Like cuMemFree, the driver's cuMemFreeHost waits for queued work
	 * that may still read or write the memory. */
	rc = gs_mem_ctx_sync(gs_mem_ctx_real(d.ctx), current);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (gs_trk_host_remove(p, &d) != 0)
		return CUDA_ERROR_INVALID_VALUE; /* freed by another thread meanwhile */
	release(&d, true);
	return CUDA_SUCCESS;
}

static CUresult host_get_flags(unsigned *flags, void *p)
{
	struct gs_host_desc d;
	CUcontext current = NULL;
	CUresult rc;

	if (!flags || !find_ours(p, false, &d))
		return GS_MEM_REAL(cuMemHostGetFlags, flags, p);
	rc = GS_MEM_REAL(cuCtxGetCurrent, &current);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!current)
		return CUDA_ERROR_INVALID_CONTEXT;
	/* The driver would report the registration's flags. */
	*flags = d.flags;
	return CUDA_SUCCESS;
}

static CUresult host_unregister(void *p)
{
	struct gs_host_desc d;
	CUcontext current = NULL;
	CUresult rc;

	if (find_ours(p, false, &d)) {
		rc = GS_MEM_REAL(cuCtxGetCurrent, &current);
		if (rc != CUDA_SUCCESS)
			return rc;
		if (!current)
			return CUDA_ERROR_INVALID_CONTEXT;
		/* To the application this is cuMemHostAlloc memory, which
		 * the driver never lets anyone unregister. */
		return CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED;
	}
	rc = GS_MEM_REAL(cuMemHostUnregister, p);
	if (rc == CUDA_SUCCESS) {
		int trk = gs_trk_host_remove(p, &d);
		if (trk < 0 && trk != -ENOENT)
			gs_log_at(GS_LOG_WARN, -trk, "tracker: forgetting registration %p failed",
				  p);
	}
	return rc;
}

void gs_track_cuMemHostRegister_v2(bool ptds, void *p, size_t bytesize, unsigned int Flags)
{
	CUcontext ctx = NULL;
	CUdeviceptr devptr = 0;
	int app_dev, real_dev;

	(void)ptds;
	if (gs_mem_current(&ctx, &app_dev, &real_dev) != CUDA_SUCCESS)
		ctx = NULL;
	if (GS_MEM_REAL(cuMemHostGetDevicePointer_v2, &devptr, p, 0) != CUDA_SUCCESS)
		devptr = 0;
	struct gs_host_desc desc = {
		.ptr = p,
		.size = bytesize,
		.kind = GS_HOST_REGISTER,
		.flags = Flags,
		.ctx = ctx,
		.devptr = devptr,
	};
	int trk = gs_trk_host_add(&desc);
	if (trk < 0)
		gs_log_at(GS_LOG_WARN, -trk, "tracker: recording registration %p (%zu bytes) "
			  "failed; a migration will not register it again", p, bytesize);
}

struct doomed {
	struct gs_host_desc *v;
	size_t n, cap;
	CUcontext ctx;
	bool truncated;
};

static int collect(const struct gs_rec *rec, void *arg)
{
	const struct gs_host_rec *h = GS_REC_AS(struct gs_host_rec, GS_KIND_HOST, rec);
	struct doomed *d = arg;

	if (!h || h->d.kind != GS_HOST_ALLOC || h->d.ctx != d->ctx)
		return 0;
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 16;
		struct gs_host_desc *v = realloc(d->v, cap * sizeof(*v));
		if (!v) {
			d->truncated = true;
			return 1;
		}
		d->v = v;
		d->cap = cap;
	}
	d->v[d->n++] = h->d;
	return 0;
}

void gs_hostmem_ctx_destroyed(CUcontext ctx)
{
	struct doomed d = { .ctx = ctx };

	/* Collected under the tracker lock, released outside it: releasing
	 * calls the driver and the tracker. */
	gs_trk_foreach(GS_KIND_HOST, collect, &d);
	for (size_t i = 0; i < d.n; i++) {
		struct gs_host_desc gone;
		/* The record goes before the memory: an mmap on another thread
		 * may get the same address back at once. */
		if (gs_trk_host_remove(d.v[i].ptr, &gone) == 0)
			release(&gone, false);
	}
	if (d.truncated)
		gs_error("context %p destroyed: out of memory listing its pinned host memory; "
			 "some of it stays allocated", (void *)ctx);
	else if (d.n)
		gs_debug("context %p destroyed: freed its %zu pinned host allocations",
			 (void *)ctx, d.n);
	free(d.v);
}

/* ---- entry points --------------------------------------------------------------------- */

CUresult gs_custom_cuMemAllocHost_v2(bool ptds, void **pp, size_t bytesize)
{
	struct gs_thread *self;
	CUresult rc;

	(void)ptds;
	if (gs_inside())
		return GS_MEM_REAL(cuMemAllocHost_v2, pp, bytesize);
	rc = gs_mem_enter(&self, GS_SYM_cuMemAllocHost_v2);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = host_alloc(pp, bytesize, 0);
	gs_gate_exit(self);
	return rc;
}

CUresult gs_custom_cuMemHostAlloc(bool ptds, void **pp, size_t bytesize, unsigned int Flags)
{
	struct gs_thread *self;
	CUresult rc;

	(void)ptds;
	if (gs_inside())
		return GS_MEM_REAL(cuMemHostAlloc, pp, bytesize, Flags);
	rc = gs_mem_enter(&self, GS_SYM_cuMemHostAlloc);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = host_alloc(pp, bytesize, Flags);
	gs_gate_exit(self);
	return rc;
}

CUresult gs_custom_cuMemFreeHost(bool ptds, void *p)
{
	struct gs_thread *self;
	CUresult rc;

	(void)ptds;
	if (gs_inside())
		return GS_MEM_REAL(cuMemFreeHost, p);
	rc = gs_mem_enter(&self, GS_SYM_cuMemFreeHost);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = host_free(p);
	gs_gate_exit(self);
	return rc;
}

CUresult gs_custom_cuMemHostGetFlags(bool ptds, unsigned int *pFlags, void *p)
{
	struct gs_thread *self;
	CUresult rc;

	(void)ptds;
	if (gs_inside())
		return GS_MEM_REAL(cuMemHostGetFlags, pFlags, p);
	rc = gs_mem_enter(&self, GS_SYM_cuMemHostGetFlags);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = host_get_flags(pFlags, p);
	gs_gate_exit(self);
	return rc;
}

CUresult gs_custom_cuMemHostUnregister(bool ptds, void *p)
{
	struct gs_thread *self;
	CUresult rc;

	(void)ptds;
	if (gs_inside())
		return GS_MEM_REAL(cuMemHostUnregister, p);
	rc = gs_mem_enter(&self, GS_SYM_cuMemHostUnregister);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = host_unregister(p);
	gs_gate_exit(self);
	return rc;
}
