/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Device memory: the VA windows, the range table, cuMemAlloc & co, module
 * globals, cuMemGetInfo and the access check every copy and launch goes
 * through (see sim_mem.h for the model).
 *
 * Windows are placed just below where the kernel starts top-down mmap
 * placement (0x7e80'0000'0000 up; the mmap base is randomised within the top
 * 1 TiB on x86-64), so glibc, ASan and TSan never put anything there, and
 * the addresses are ordinary application memory for both sanitizers (TSan
 * only instruments a few fixed regions, this one included).
 * SIMCUDA_VA_BASE moves them.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "sim_mem.h"

#define DEFAULT_VA_BASE ((uintptr_t)0x7e8000000000ULL)
#define VA_LIMIT ((uintptr_t)0x7f0000000000ULL) /* the lowest randomised mmap base */
#define GIB ((size_t)1 << 30)

struct window {
	uintptr_t base;
	size_t size;
	uintptr_t cursor; /* next-fit: freed VA is reused late, so stale
			   * pointers fault instead of aliasing new memory */
	size_t guard;	  /* free gap kept after each range found here */
};

static struct {
	pthread_rwlock_t lock;
	struct sim_range **v; /* sorted by start; owned bytes never overlap */
	size_t n, cap;
	struct window win[SIM_MAX_DEVICES + 1]; /* devices, then VMM */
	int ndev;
	size_t used[SIM_MAX_DEVICES];
	size_t total[SIM_MAX_DEVICES];
} mem = { .lock = PTHREAD_RWLOCK_INITIALIZER };

static atomic_ullong next_id = 1;

static size_t round_up(size_t v, size_t a)
{
	return (v + a - 1) & ~(a - 1);
}

/* ---- layout ---------------------------------------------------------------------- */

void sim_mem_layout(struct sim_device *devices, int count, const char *fn)
{
	uintptr_t base = DEFAULT_VA_BASE;
	const char *e = getenv("SIMCUDA_VA_BASE");
	if (e) {
		char *end;
		errno = 0;
		unsigned long long v = strtoull(e, &end, 0);
		if (errno || end == e || *end || v % GIB || v == 0)
			sim_abort(fn, "SIMCUDA_VA_BASE: '%s' is not a 1 GiB-aligned address", e);
		base = (uintptr_t)v;
	}
	uintptr_t at = base;
	size_t vmm_size = 64 * GIB;
	for (int i = 0; i < count; i++) {
		/* Room for fragmentation and guard pages; VA costs nothing. */
		size_t size = round_up(devices[i].mem_total * 4, GIB);
		if (size < 4 * GIB)
			size = 4 * GIB;
		devices[i].va_base = at;
		devices[i].va_size = size;
		mem.win[i] = (struct window){ at, size, at, SIM_PAGE };
		mem.total[i] = devices[i].mem_total;
		vmm_size += devices[i].mem_total * 4;
		at += size;
	}
	vmm_size = round_up(vmm_size, GIB);
	mem.win[count] = (struct window){ at, vmm_size, at, SIM_GRANULARITY };
	mem.ndev = count;
	if (at + vmm_size > VA_LIMIT || at + vmm_size < base)
		sim_abort(fn, "the device VA windows (0x%" PRIxPTR "-0x%" PRIxPTR ") do not fit; "
			  "lower SIMCUDA_MEM_MB/SIMCUDA_DEVICES or set SIMCUDA_VA_BASE",
			  base, at + vmm_size);
}

CUresult sim_mem_init(const char *fn)
{
	for (int i = 0; i <= mem.ndev; i++) {
		struct window *w = &mem.win[i];
		if (!sim_va_claim(w->base, w->size)) {
			fprintf(stderr,
				"simcuda: %s: cannot reserve VA 0x%" PRIxPTR "+0x%zx for %s (in use, "
				"or not usable under a sanitizer); set SIMCUDA_VA_BASE to a free "
				"region\n",
				fn, w->base, w->size, i < mem.ndev ? "device memory" : "VMM");
			while (--i >= 0)
				munmap((void *)mem.win[i].base, mem.win[i].size);
			return CUDA_ERROR_OPERATING_SYSTEM;
		}
	}
	return CUDA_SUCCESS;
}

/* ---- the range table ------------------------------------------------------------- */

void sim_mem_rdlock(void)
{
	pthread_rwlock_rdlock(&mem.lock);
}

void sim_mem_wrlock(void)
{
	pthread_rwlock_wrlock(&mem.lock);
}

void sim_mem_unlock(void)
{
	pthread_rwlock_unlock(&mem.lock);
}

/* What a range occupies and no other may overlap: whole pages of what the
 * simulator maps itself, the exact bytes of a registered host range (two
 * registrations may share a page, as with the driver). */
static uintptr_t range_end(const struct sim_range *r)
{
	if (r->type == SIM_RANGE_HOST_REG)
		return r->start + r->size;
	return r->start + round_up(r->size, SIM_PAGE);
}

/* Index of the first range starting above p. */
static size_t upper_bound(uintptr_t p)
{
	size_t lo = 0, hi = mem.n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (mem.v[mid]->start <= p)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

struct sim_range *sim_range_find(uintptr_t p)
{
	size_t i = upper_bound(p);
	if (i == 0)
		return NULL;
	struct sim_range *r = mem.v[i - 1];
	return p - r->start < r->size ? r : NULL;
}

bool sim_range_overlaps(uintptr_t p, size_t n)
{
	size_t i = upper_bound(p);
	if (i > 0 && range_end(mem.v[i - 1]) > p)
		return true;
	return i < mem.n && mem.v[i]->start < p + n;
}

CUresult sim_range_insert(struct sim_range *r)
{
	if (mem.n == mem.cap) {
		size_t cap = mem.cap ? 2 * mem.cap : 256;
		struct sim_range **v = realloc(mem.v, cap * sizeof(*v));
		if (!v)
			return CUDA_ERROR_OUT_OF_MEMORY;
		mem.v = v;
		mem.cap = cap;
	}
	size_t i = upper_bound(r->start);
	memmove(&mem.v[i + 1], &mem.v[i], (mem.n - i) * sizeof(*mem.v));
	mem.v[i] = r;
	mem.n++;
	return CUDA_SUCCESS;
}

void sim_range_remove(struct sim_range *r)
{
	size_t i = upper_bound(r->start);
	if (i == 0 || mem.v[i - 1] != r)
		sim_abort("simcuda", "range 0x%" PRIxPTR " missing from the table", r->start);
	memmove(&mem.v[i - 1], &mem.v[i], (mem.n - i) * sizeof(*mem.v));
	mem.n--;
}

/* ---- VA ---------------------------------------------------------------------------- */

static const struct window *window_of(uintptr_t p)
{
	for (int i = 0; i <= mem.ndev; i++)
		if (p - mem.win[i].base < mem.win[i].size)
			return &mem.win[i];
	return NULL;
}

bool sim_va_in_window(uintptr_t p, size_t n)
{
	const struct window *w = window_of(p);
	return w && n <= w->base + w->size - p;
}

bool sim_va_touches_window(uintptr_t p, size_t n)
{
	for (int i = 0; i <= mem.ndev; i++)
		if (p < mem.win[i].base + mem.win[i].size && mem.win[i].base < p + n)
			return true;
	return false;
}

uintptr_t sim_va_find(int window, size_t len, size_t align)
{
	struct window *w = &mem.win[window == SIM_WINDOW_VMM ? mem.ndev : window];
	uintptr_t lo = round_up(w->base, align), hi = w->base + w->size;
	uintptr_t c = round_up(w->cursor, align), from = c;
	bool wrapped = false;

	if (len > w->size)
		return 0;
	for (;;) {
		if (wrapped && c >= from)
			return 0;
		if (c + len > hi || c + len < c) {
			if (wrapped)
				return 0;
			wrapped = true;
			c = lo;
			continue;
		}
		/* Owned intervals are disjoint and sorted, so ends grow with
		 * starts: only the neighbours of c can be in the way. */
		size_t i = upper_bound(c);
		if (i > 0 && range_end(mem.v[i - 1]) + w->guard > c) {
			c = round_up(range_end(mem.v[i - 1]) + w->guard, align);
			continue;
		}
		if (i < mem.n && mem.v[i]->start < c + len + w->guard) {
			c = round_up(range_end(mem.v[i]) + w->guard, align);
			continue;
		}
		w->cursor = c + len;
		return c;
	}
}

void *sim_va_claim(uintptr_t p, size_t n)
{
	void *m = mmap((void *)p, n, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m == MAP_FAILED)
		return NULL;
	if (m != (void *)p) {
		munmap(m, n);
		return NULL;
	}
	return m;
}

int sim_va_commit(uintptr_t p, size_t n)
{
	void *m = mmap((void *)p, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
		       -1, 0);
	return m == MAP_FAILED ? -errno : 0;
}

void sim_va_release(uintptr_t p, size_t n, bool in_window)
{
	/* A fresh PROT_NONE mapping drops the pages and keeps the VA reserved,
	 * so nothing else can be mapped where a stale device pointer points. */
	void *m = in_window ? mmap((void *)p, n, PROT_NONE,
				   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0)
			    : (munmap((void *)p, n) ? MAP_FAILED : (void *)p);
	if (m == MAP_FAILED)
		sim_abort("simcuda", "releasing VA 0x%" PRIxPTR "+0x%zx: %s", p, n, strerror(errno));
}

/* ---- accounting ------------------------------------------------------------------- */

CUresult sim_mem_charge(int dev, size_t bytes)
{
	if (bytes > mem.total[dev] - mem.used[dev])
		return CUDA_ERROR_OUT_OF_MEMORY;
	mem.used[dev] += bytes;
	return CUDA_SUCCESS;
}

void sim_mem_uncharge(int dev, size_t bytes)
{
	if (bytes > mem.used[dev])
		sim_abort("simcuda", "device %d: freeing %zu bytes of %zu in use", dev, bytes,
			  mem.used[dev]);
	mem.used[dev] -= bytes;
}

unsigned long long sim_mem_next_id(void)
{
	return atomic_fetch_add(&next_id, 1);
}

/* ---- access ------------------------------------------------------------------------ */

static const char *range_kind(const struct sim_range *r)
{
	switch (r->type) {
	case SIM_RANGE_ALLOC: return "cuMemAlloc allocation";
	case SIM_RANGE_INTERNAL: return "module global";
	case SIM_RANGE_HOST_ALLOC: return "pinned host allocation";
	case SIM_RANGE_HOST_REG: return "registered host range";
	case SIM_RANGE_RESERVE: return "VMM reservation";
	}
	return "range";
}

_Noreturn static void no_allocation(uintptr_t p, size_t n, const char *fn)
{
	sim_abort(fn, "device address 0x%" PRIxPTR " (%zu bytes) is in no live allocation%s", p, n,
		  window_of(p) ? " (freed, never allocated, or out of bounds)" : "");
}

CUresult sim_mem_access_locked(CUdeviceptr dp, size_t n, int dev, bool write, const char *fn)
{
	uintptr_t p = (uintptr_t)dp;
	struct sim_range *r = sim_range_find(p);

	if (!r) {
		/* An empty access just past the end of an allocation is fine. */
		if (n == 0 && p > 0 && (r = sim_range_find(p - 1)) && r->type != SIM_RANGE_RESERVE)
			return CUDA_SUCCESS;
		no_allocation(p, n, fn);
	}
	if (r->type == SIM_RANGE_RESERVE) {
		/* A VMM access may run on into an adjoining reservation, as
		 * device code may on a GPU when both are mapped. */
		uintptr_t end = p + (n ? n : 1), at = p, stop;
		for (;;) {
			CUresult rc = sim_vmm_access_locked(r, at, end - at, dev, write, &stop);
			if (rc != CUDA_SUCCESS || stop >= end)
				return rc;
			at = stop;
			r = sim_range_find(at);
			if (!r || r->type != SIM_RANGE_RESERVE)
				sim_abort(fn, "access 0x%" PRIxPTR "+%zu runs past the end of the VMM "
					  "reservation at 0x%" PRIxPTR, p, n, at);
		}
	}
	if (n > r->size - (p - r->start))
		sim_abort(fn, "access 0x%" PRIxPTR "+%zu runs past the end of the %s "
			  "0x%" PRIxPTR "+%zu", p, n, range_kind(r), r->start, r->size);
	switch (r->type) {
	case SIM_RANGE_ALLOC:
	case SIM_RANGE_INTERNAL:
		/* Another device reaches this memory only through peer access. */
		if (dev >= 0 && !sim_ctx_peer_access(dev, r->device))
			return CUDA_ERROR_ILLEGAL_ADDRESS;
		return CUDA_SUCCESS;
	case SIM_RANGE_HOST_REG:
		if (write && (r->flags & CU_MEMHOSTREGISTER_READ_ONLY))
			return CUDA_ERROR_ILLEGAL_ADDRESS;
		return CUDA_SUCCESS;
	default:
		return CUDA_SUCCESS;
	}
}

CUresult sim_mem_access(CUdeviceptr p, size_t n, int dev, bool write, const char *fn, void **host)
{
	sim_mem_rdlock();
	CUresult rc = sim_mem_access_locked(p, n, dev, write, fn);
	sim_mem_unlock();
	if (host)
		*host = rc == CUDA_SUCCESS ? (void *)(uintptr_t)p : NULL;
	return rc;
}

int sim_mem_device_of(CUdeviceptr p)
{
	int dev = -1;
	sim_mem_rdlock();
	struct sim_range *r = sim_range_find((uintptr_t)p);
	if (r && (r->type == SIM_RANGE_ALLOC || r->type == SIM_RANGE_INTERNAL)) {
		dev = r->device;
	} else if (r && r->type == SIM_RANGE_RESERVE) {
		struct sim_map *m = sim_vmm_map_at(r, (uintptr_t)p);
		if (m)
			dev = sim_vmm_phys_device(m->phys);
	}
	sim_mem_unlock();
	return dev;
}

/* ---- device allocations ----------------------------------------------------------- */

static CUresult device_alloc(int dev, struct sim_ctx *ctx, size_t size, enum sim_range_type type,
			     CUdeviceptr *out)
{
	if (size > mem.total[dev])
		return CUDA_ERROR_OUT_OF_MEMORY;
	size_t len = round_up(size, SIM_PAGE);
	/* Large allocations are 2 MiB-aligned, as the driver places them. */
	size_t align = len >= SIM_GRANULARITY ? SIM_GRANULARITY : SIM_PAGE;
	struct sim_range *r = calloc(1, sizeof(*r));
	if (!r)
		return CUDA_ERROR_OUT_OF_MEMORY;
	r->size = size;
	r->type = type;
	r->device = dev;
	r->ctx = ctx;
	r->id = sim_mem_next_id();
	r->in_window = true;

	sim_mem_wrlock();
	CUresult rc = sim_mem_charge(dev, len);
	if (rc == CUDA_SUCCESS) {
		r->start = sim_va_find(dev, len, align);
		rc = r->start ? sim_range_insert(r) : CUDA_ERROR_OUT_OF_MEMORY;
		if (rc != CUDA_SUCCESS)
			sim_mem_uncharge(dev, len);
	}
	sim_mem_unlock();
	if (rc != CUDA_SUCCESS) {
		free(r);
		return rc;
	}
	/* The VA is claimed in the table; the pages are made outside the lock. */
	if (sim_va_commit(r->start, len) != 0) {
		sim_mem_wrlock();
		sim_va_release(r->start, len, true);
		sim_range_remove(r);
		sim_mem_uncharge(dev, len);
		sim_mem_unlock();
		free(r);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	if (type == SIM_RANGE_ALLOC)
		memset((void *)r->start, SIM_POISON, len);
	*out = (CUdeviceptr)r->start;
	return CUDA_SUCCESS;
}

/* With the write lock held. */
static void device_free_locked(struct sim_range *r)
{
	size_t len = round_up(r->size, SIM_PAGE);
	sim_va_release(r->start, len, true);
	sim_range_remove(r);
	sim_mem_uncharge(r->device, len);
}

SIM_EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize)
{
	SIM_ENTER("cuMemAlloc_v2");
	struct sim_ctx *ctx;
	CUresult rc = sim_ctx_require("cuMemAlloc_v2", &ctx);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!dptr || bytesize == 0)
		return CUDA_ERROR_INVALID_VALUE;
	return device_alloc(ctx->device, ctx, bytesize, SIM_RANGE_ALLOC, dptr);
}

SIM_EXPORT CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pPitch, size_t WidthInBytes,
				       size_t Height, unsigned int ElementSizeBytes)
{
	SIM_ENTER("cuMemAllocPitch_v2");
	struct sim_ctx *ctx;
	CUresult rc = sim_ctx_require("cuMemAllocPitch_v2", &ctx);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!dptr || !pPitch || WidthInBytes == 0 || Height == 0)
		return CUDA_ERROR_INVALID_VALUE;
	if (ElementSizeBytes != 4 && ElementSizeBytes != 8 && ElementSizeBytes != 16)
		return CUDA_ERROR_INVALID_VALUE;
	/* Rows start at the texture alignment, as cudaMallocPitch shows. */
	size_t pitch = round_up(WidthInBytes, 512);
	if (pitch < WidthInBytes || Height > SIZE_MAX / pitch)
		return CUDA_ERROR_OUT_OF_MEMORY;
	rc = device_alloc(ctx->device, ctx, pitch * Height, SIM_RANGE_ALLOC, dptr);
	if (rc == CUDA_SUCCESS)
		*pPitch = pitch;
	return rc;
}

SIM_EXPORT CUresult cuMemFree_v2(CUdeviceptr dptr)
{
	SIM_ENTER("cuMemFree_v2");
	struct sim_ctx *ctx;
	CUresult rc = sim_ctx_require("cuMemFree_v2", &ctx);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (dptr == 0)
		return CUDA_SUCCESS; /* free(NULL), as the driver does */

	uintptr_t p = (uintptr_t)dptr;
	sim_mem_rdlock();
	struct sim_range *r = sim_range_find(p);
	struct sim_ctx *owner = r ? r->ctx : NULL;
	bool ok = r && r->type == SIM_RANGE_ALLOC && r->start == p;
	sim_mem_unlock();
	if (!ok) {
		if (r)
			sim_abort("cuMemFree_v2", "0x%" PRIxPTR " is %s the %s 0x%" PRIxPTR "+%zu, "
				  "not a cuMemAlloc pointer", p,
				  r->start == p ? "the start of" : "inside", range_kind(r), r->start,
				  r->size);
		sim_abort("cuMemFree_v2", "0x%" PRIxPTR " is not a live allocation (freed already, "
			  "or never allocated)", p);
	}
	/* cuMemFree synchronises: work already queued that uses the memory
	 * (in its own context or the caller's) finishes first. A context with
	 * a sticky error refuses, as every call in it does. */
	rc = sim_exec_sync_ctx(owner);
	if (rc == CUDA_SUCCESS && owner != ctx)
		rc = sim_exec_sync_ctx(ctx);
	if (rc != CUDA_SUCCESS)
		return rc;

	sim_mem_wrlock();
	struct sim_range *again = sim_range_find(p);
	if (again != r || r->start != p) {
		sim_mem_unlock();
		sim_abort("cuMemFree_v2", "0x%" PRIxPTR " freed twice (by two threads at once)", p);
	}
	device_free_locked(r);
	sim_mem_unlock();
	free(r);
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total)
{
	SIM_ENTER("cuMemGetInfo_v2");
	struct sim_ctx *ctx;
	CUresult rc = sim_ctx_require("cuMemGetInfo_v2", &ctx);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!free_bytes || !total)
		return CUDA_ERROR_INVALID_VALUE;
	sim_mem_rdlock();
	*total = mem.total[ctx->device];
	*free_bytes = mem.total[ctx->device] - mem.used[ctx->device];
	sim_mem_unlock();
	return CUDA_SUCCESS;
}

/* ---- simulator-owned memory and context teardown --------------------------------- */

CUresult sim_mem_alloc_internal(int dev, size_t size, CUdeviceptr *out)
{
	struct sim_ctx *cur = sim_ctx_current();
	if (!sim_device(dev))
		sim_abort("sim_mem_alloc_internal", "invalid device %d", dev);
	/* The owner shows up as CU_POINTER_ATTRIBUTE_CONTEXT: the context the
	 * module is loaded into, which is current while it loads. */
	return device_alloc(dev, cur && cur->device == dev ? cur : NULL, size ? size : 1,
			    SIM_RANGE_INTERNAL, out);
}

void sim_mem_free_internal(CUdeviceptr dp)
{
	uintptr_t p = (uintptr_t)dp;
	sim_mem_wrlock();
	struct sim_range *r = sim_range_find(p);
	if (!r || r->type != SIM_RANGE_INTERNAL || r->start != p) {
		sim_mem_unlock();
		sim_abort("sim_mem_free_internal", "0x%" PRIxPTR " is not simulator-owned memory", p);
	}
	device_free_locked(r);
	sim_mem_unlock();
	free(r);
}

void sim_mem_destroy_ctx(struct sim_ctx *ctx)
{
	struct sim_range **doomed = NULL;
	size_t count = 0;

	sim_mem_wrlock();
	for (size_t i = 0; i < mem.n;) {
		struct sim_range *r = mem.v[i];
		/* Module globals are freed by the module teardown before this;
		 * VMM memory belongs to no context. */
		if (r->ctx != ctx || r->type == SIM_RANGE_INTERNAL || r->type == SIM_RANGE_RESERVE) {
			i++;
			continue;
		}
		struct sim_range **grown = realloc(doomed, (count + 1) * sizeof(*doomed));
		if (!grown)
			sim_abort("cuCtxDestroy_v2", "out of host memory");
		doomed = grown;
		doomed[count++] = r;
		if (r->type == SIM_RANGE_ALLOC) {
			device_free_locked(r);
		} else {
			if (r->type == SIM_RANGE_HOST_ALLOC)
				sim_va_release(r->start, round_up(r->size, SIM_PAGE), false);
			sim_range_remove(r);
		}
	}
	sim_mem_unlock();
	for (size_t i = 0; i < count; i++)
		free(doomed[i]);
	free(doomed);
}
