/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Device memory as the application sees it (DESIGN.md §5): cuMemAlloc,
 * cuMemAllocPitch and cuMemFree served from the arena, and the pointer
 * queries answered for arena memory exactly as the driver answers them for
 * a cuMemAlloc pointer.
 *
 * Each application device gets one arena (arena_core.c) on its first
 * cuMemAlloc, bound here to the real driver's VMM calls. A device without
 * VMM, or GPUSWAP_ALLOC=passthrough, is served by the real cuMemAlloc and the
 * allocation only recorded.
 *
 * The driver sees arena memory as VMM mappings of the shim's reservation, so
 * it would describe it differently from a cuMemAlloc pointer (range = the
 * whole window, no context, handle types of the chunk). The attributes that
 * differ are answered here from the arena's records; those about the mapping
 * itself (access flags, RDMA, sync memops, tokens) are still the driver's.
 * Arena address space with no allocation in it is asked about as NOWHERE, so
 * the application gets the driver's own "not a CUDA pointer" answers.
 */
#define GS_LOG_SUBSYS "shim"
#include "arena.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "track.h"

/* The kernel never maps the first 64 KiB and no driver places memory
 * there: no allocation, host mapping or registration can contain it. */
#define NOWHERE ((CUdeviceptr)0x1000)

/* Rows of a pitched allocation start at this alignment, as cudaMallocPitch
 * shows on current GPUs (and the simulator models). */
#define PITCH_ALIGN 512u

enum device_mode {
	MODE_UNSET = 0,
	MODE_ARENA,
	MODE_PASSTHROUGH,
};

struct device {
	_Atomic int mode;
	_Atomic(struct gs_arena *) arena;
	int app;                    /* application ordinal (the index) */
	CUmemAllocationProp prop;   /* template of every chunk's cuMemCreate */
	/* Peer grants received before the arena existed, by accessor. */
	unsigned pending_grants[GS_MAX_DEVICES];
};

static struct device devices[GS_MAX_DEVICES];
/* 1 + the highest ordinal that has an arena: lookups scan only that far. */
static _Atomic int devices_used;
/* Device set-up and peer grants; both rare. */
static pthread_mutex_t setup_lock = PTHREAD_MUTEX_INITIALIZER;

static struct {
	bool passthrough;
	uint64_t base;
} config;
static pthread_once_t config_once = PTHREAD_ONCE_INIT;

/* ---- handles and ordinals ----------------------------------------------------- */

static CUcontext ctx_real(CUcontext app)
{
	return (CUcontext)(uintptr_t)gs_hook_to_real(GS_KIND_CTX, (uintptr_t)app);
}

CUresult gs_mem_current(CUcontext *ctx, int *app_dev, int *real_dev)
{
	CUcontext real = NULL;
	CUdevice dev;
	CUresult rc;

	/* The driver's own error when it has one (not initialised, ...). */
	rc = GS_MEM_REAL(cuCtxGetCurrent, &real);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!real)
		return CUDA_ERROR_INVALID_CONTEXT;
	rc = GS_MEM_REAL(cuCtxGetDevice, &dev);
	if (rc != CUDA_SUCCESS)
		return rc;
	*ctx = (CUcontext)(uintptr_t)gs_hook_to_app(GS_KIND_CTX, (uintptr_t)real);
	/* Records a context the tracker has not seen yet (cudart's primary
	 * context), which the allocation record is about to name. */
	*app_dev = gs_hook_ctx_device(*ctx);
	if (*app_dev < 0)
		*app_dev = gs_devmap_to_app(gs_trk_devmap(), dev);
	if (*app_dev < 0)
		*app_dev = dev;
	*real_dev = dev;
	return CUDA_SUCCESS;
}

static void trk_warn(int rc, const char *what, uint64_t addr)
{
	if (rc < 0)
		gs_log_at(GS_LOG_WARN, -rc, "tracker: recording %s %#llx failed", what,
			  (unsigned long long)addr);
}

/* ---- the arena's driver ------------------------------------------------------- */

static CUresult op_reserve(void *opaque, uint64_t hint, uint64_t size, uint64_t *va)
{
	CUdeviceptr p = 0;
	CUresult rc = GS_MEM_REAL(cuMemAddressReserve, &p, size, 0, hint, 0);

	(void)opaque;
	if (rc != CUDA_SUCCESS)
		return rc;
	*va = p;
	trk_warn(gs_trk_reserve_add(p, size, 0, hint, 0, GS_OWNER_SHIM), "arena window", p);
	return CUDA_SUCCESS;
}

static CUresult op_unreserve(void *opaque, uint64_t va, uint64_t size)
{
	CUresult rc = GS_MEM_REAL(cuMemAddressFree, va, size);

	(void)opaque;
	if (rc == CUDA_SUCCESS)
		trk_warn(gs_trk_reserve_free(va, size), "freed arena window", va);
	return rc;
}

static CUresult op_create(void *opaque, int device, uint64_t size, uint64_t *handle)
{
	struct device *d = opaque;
	CUmemAllocationProp prop = d->prop;
	CUmemGenericAllocationHandle h = 0, app;
	CUresult rc;

	prop.location.id = device;
	rc = GS_MEM_REAL(cuMemCreate, &h, size, &prop, 0);
	if (rc != CUDA_SUCCESS)
		return rc;
	app = h;
	trk_warn(gs_trk_phys_created(h, size, &prop, 0, GS_OWNER_SHIM, false, &app),
		 "arena chunk", h);
	*handle = app;
	return CUDA_SUCCESS;
}

static CUresult op_release(void *opaque, uint64_t handle)
{
	CUresult rc = GS_MEM_REAL(cuMemRelease, gs_hook_to_real(GS_KIND_PHYS, handle));

	(void)opaque;
	if (rc == CUDA_SUCCESS)
		trk_warn(gs_trk_phys_released(handle), "released arena chunk", handle);
	return rc;
}

static CUresult op_map(void *opaque, uint64_t va, uint64_t size, uint64_t handle)
{
	CUresult rc = GS_MEM_REAL(cuMemMap, va, size, 0, gs_hook_to_real(GS_KIND_PHYS, handle), 0);

	(void)opaque;
	if (rc == CUDA_SUCCESS)
		trk_warn(gs_trk_map_add(va, size, 0, handle, 0, GS_OWNER_SHIM), "arena mapping", va);
	return rc;
}

static CUresult op_unmap(void *opaque, uint64_t va, uint64_t size)
{
	CUresult rc = GS_MEM_REAL(cuMemUnmap, va, size);

	(void)opaque;
	if (rc == CUDA_SUCCESS)
		trk_warn(gs_trk_unmap(va, size), "arena unmapping", va);
	return rc;
}

static CUresult op_set_access(void *opaque, uint64_t va, uint64_t size, const int *devs,
			      unsigned ndevs, bool readwrite)
{
	CUmemAccessDesc desc[GS_MAX_DEVICES];
	CUresult rc;

	(void)opaque;
	if (ndevs > GS_MAX_DEVICES)
		return CUDA_ERROR_INVALID_VALUE;
	for (unsigned i = 0; i < ndevs; i++) {
		desc[i] = (CUmemAccessDesc){
			.location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = devs[i] },
			.flags = readwrite ? CU_MEM_ACCESS_FLAGS_PROT_READWRITE
					   : CU_MEM_ACCESS_FLAGS_PROT_NONE,
		};
	}
	rc = GS_MEM_REAL(cuMemSetAccess, va, size, desc, ndevs);
	if (rc == CUDA_SUCCESS)
		trk_warn(gs_trk_set_access(va, size, desc, ndevs), "arena access", va);
	return rc;
}

static void op_report(void *opaque, const char *what, uint64_t va, CUresult rc)
{
	struct device *d = opaque;

	gs_warn("arena of device %d: %s at %#llx failed with %d; the driver may keep that "
		"memory until the process exits", d->app, what, (unsigned long long)va, (int)rc);
}

static const struct gs_arena_ops arena_ops = {
	.reserve = op_reserve,
	.unreserve = op_unreserve,
	.create = op_create,
	.release = op_release,
	.map = op_map,
	.unmap = op_unmap,
	.set_access = op_set_access,
	.report = op_report,
};

/* ---- set-up ------------------------------------------------------------------- */

static void ctx_teardown(CUcontext ctx, void *arg)
{
	(void)arg;
	gs_arena_ctx_destroyed(ctx);
}

static void config_read(void)
{
	const char *alloc = getenv("GPUSWAP_ALLOC");
	const char *base = getenv("GPUSWAP_ARENA_BASE");
	int rc;

	config.base = GS_ARENA_DEFAULT_BASE;
	if (alloc && strcmp(alloc, "passthrough") == 0)
		config.passthrough = true;
	else if (alloc && *alloc && strcmp(alloc, "vmm") != 0)
		gs_warn("GPUSWAP_ALLOC=%s: expected vmm or passthrough; using vmm", alloc);
	if (base && *base) {
		char *end;
		errno = 0;
		unsigned long long v = strtoull(base, &end, 0);
		/* 2 MiB: the granularity of every current GPU; the device's
		 * own is checked when its arena is made. */
		if (errno || *end || v == 0 || v % (UINT64_C(2) << 20))
			gs_warn("GPUSWAP_ARENA_BASE=%s is not a 2 MiB-aligned address; using %#llx",
				base, (unsigned long long)config.base);
		else
			config.base = v;
	}
	/* Before the first allocation: no arena memory can belong to a
	 * context destroyed earlier. */
	rc = gs_trk_on_ctx_teardown(ctx_teardown, NULL);
	if (rc < 0)
		gs_log_at(GS_LOG_ERROR, -rc, "cannot register for context teardown: memory of "
			  "destroyed contexts will stay allocated");
}

static int query_attr(CUdevice_attribute attr, int dev)
{
	int v = 0;

	if (GS_MEM_REAL(cuDeviceGetAttribute, &v, attr, dev) != CUDA_SUCCESS)
		return 0;
	return v;
}

/*
 * Four times the device's memory (whole GiB), so address space never runs
 * out before memory does however fragmented it gets, and a thaw onto a
 * somewhat larger GPU still fits; at most the stride between windows.
 * Reserving no more than that keeps the window small enough for a driver
 * that has to place it elsewhere (the simulator under a sanitizer).
 */
static uint64_t window_size_for(int real, uint64_t gran)
{
	const uint64_t gib = UINT64_C(1) << 30;
	size_t total = 0;
	uint64_t size;

	if (GS_MEM_REAL(cuDeviceTotalMem_v2, &total, real) != CUDA_SUCCESS || total == 0 ||
	    total > GS_ARENA_WINDOW_STRIDE / 4)
		return GS_ARENA_WINDOW_STRIDE;
	size = (4 * (uint64_t)total + gib - 1) & ~(gib - 1);
	/* Granularities are powers of two; one above 1 GiB would need it. */
	return (size + gran - 1) & ~(gran - 1);
}

/* With setup_lock held. */
static enum device_mode device_setup(struct device *d, int app, int real)
{
	struct gs_arena *a;
	uint64_t gran, base, window, window_size;
	size_t g = 0;
	CUresult rc;

	d->app = app;
	if (config.passthrough) {
		gs_info("device %d: GPUSWAP_ALLOC=passthrough: cuMemAlloc goes to the driver", app);
		return MODE_PASSTHROUGH;
	}
	if (!query_attr(CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, real)) {
		gs_warn("device %d has no virtual memory management: cuMemAlloc goes to the "
			"driver, and a restore must find the same addresses free", app);
		return MODE_PASSTHROUGH;
	}
	d->prop = (CUmemAllocationProp){
		.type = CU_MEM_ALLOCATION_TYPE_PINNED,
		.requestedHandleTypes = CU_MEM_HANDLE_TYPE_NONE,
		.location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = real },
	};
	/* cuMemAlloc memory can be used for GPUDirect RDMA; VMM memory only
	 * when created so. */
	if (query_attr(CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_WITH_CUDA_VMM_SUPPORTED, real))
		d->prop.allocFlags.gpuDirectRDMACapable = 1;
	rc = GS_MEM_REAL(cuMemGetAllocationGranularity, &g, &d->prop,
			 CU_MEM_ALLOC_GRANULARITY_MINIMUM);
	gran = g;
	if (rc != CUDA_SUCCESS || gran == 0) {
		gs_warn("device %d: cuMemGetAllocationGranularity failed (%d): cuMemAlloc goes "
			"to the driver", app, (int)rc);
		return MODE_PASSTHROUGH;
	}

	base = config.base + (uint64_t)app * GS_ARENA_WINDOW_STRIDE;
	struct gs_arena_config cfg = {
		.ops = &arena_ops,
		.opaque = d,
		.base = base,
		.size = window_size_for(real, gran),
		.granularity = gran,
		.device = real,
		.max_spare = 1,
		/* Placed elsewhere (something else holds the range, or a
		 * sanitizer's memory layout), the window still serves the
		 * process; only a later restore may find it taken. */
		.exact_base = false,
	};
	rc = gs_arena_create(&cfg, &a);
	if (rc != CUDA_SUCCESS) {
		gs_warn("device %d: cannot reserve the arena window at %#llx (%d): cuMemAlloc "
			"goes to the driver", app, (unsigned long long)base, (int)rc);
		return MODE_PASSTHROUGH;
	}
	gs_arena_window(a, &window, &window_size);
	if (window != base)
		gs_warn("device %d: the driver placed the arena window at %#llx, not at %#llx; "
			"a restore may not get it back (set GPUSWAP_ARENA_BASE to a free range)",
			app, (unsigned long long)window, (unsigned long long)base);
	else
		gs_info("device %d: arena window %#llx, %llu MiB chunks", app,
			(unsigned long long)window, (unsigned long long)(cfg.granularity >> 20));
	for (int acc = 0; acc < GS_MAX_DEVICES; acc++) {
		for (; d->pending_grants[acc]; d->pending_grants[acc]--) {
			rc = gs_arena_peer_access(a, gs_devmap_to_real(gs_trk_devmap(), acc),
						  true);
			if (rc != CUDA_SUCCESS)
				gs_warn("device %d: granting device %d access to the arena failed "
					"(%d)", app, acc, (int)rc);
		}
	}
	atomic_store_explicit(&d->arena, a, memory_order_release);
	if (atomic_load_explicit(&devices_used, memory_order_relaxed) < app + 1)
		atomic_store_explicit(&devices_used, app + 1, memory_order_release);
	return MODE_ARENA;
}

static enum device_mode device_mode(int app, int real)
{
	struct device *d = &devices[app];
	int mode = atomic_load_explicit(&d->mode, memory_order_acquire);

	if (GS_LIKELY(mode != MODE_UNSET))
		return mode;
	pthread_once(&config_once, config_read);
	pthread_mutex_lock(&setup_lock);
	mode = atomic_load_explicit(&d->mode, memory_order_relaxed);
	if (mode == MODE_UNSET) {
		mode = device_setup(d, app, real);
		atomic_store_explicit(&d->mode, mode, memory_order_release);
	}
	pthread_mutex_unlock(&setup_lock);
	return mode;
}

/* The device whose arena window holds ptr, or NULL. Lock-free: windows
 * never move while the arena exists. */
static struct device *device_of(CUdeviceptr ptr)
{
	int n = atomic_load_explicit(&devices_used, memory_order_acquire);

	for (int i = 0; i < n; i++) {
		struct gs_arena *a = atomic_load_explicit(&devices[i].arena, memory_order_acquire);
		if (a && gs_arena_in_window(a, ptr))
			return &devices[i];
	}
	return NULL;
}

/* ---- allocation ------------------------------------------------------------------- */

static CUresult record(CUdeviceptr va, size_t size, size_t footprint, CUcontext ctx, int dev,
		       unsigned flags, size_t pitch, uint64_t buffer_id)
{
	struct gs_alloc_desc desc = {
		.addr = va,
		.size = size,
		.footprint = footprint,
		.ctx = ctx,
		.device = dev,
		.flags = flags,
		.pitch = pitch,
		.buffer_id = buffer_id,
	};
	int rc = gs_trk_alloc_add(&desc);

	/* An allocation the dump cannot see would be lost silently at the
	 * first migration: better to fail it now. */
	if (rc < 0) {
		gs_log_at(GS_LOG_ERROR, -rc, "tracker: recording allocation %#llx failed",
			  (unsigned long long)va);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	return CUDA_SUCCESS;
}

static CUresult arena_alloc(struct device *d, CUcontext ctx, size_t size, size_t pitch,
			    CUdeviceptr *dptr)
{
	struct gs_arena *a = atomic_load_explicit(&d->arena, memory_order_acquire);
	struct gs_arena_allocation al;
	CUresult rc;

	rc = gs_arena_alloc(a, size, ctx, &al);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = record(al.va, size, al.footprint, ctx, d->app, pitch ? GS_ALLOC_PITCH : 0, pitch,
		    al.buffer_id);
	if (rc != CUDA_SUCCESS) {
		gs_arena_free(a, al.va);
		return rc;
	}
	*dptr = al.va;
	return CUDA_SUCCESS;
}

static CUresult devmem_alloc(CUdeviceptr *dptr, size_t bytesize)
{
	CUcontext ctx;
	int app, real;
	CUresult rc;

	rc = gs_mem_current(&ctx, &app, &real);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!dptr || bytesize == 0)
		return CUDA_ERROR_INVALID_VALUE;
	if (app < GS_MAX_DEVICES && device_mode(app, real) == MODE_ARENA)
		return arena_alloc(&devices[app], ctx, bytesize, 0, dptr);

	CUdeviceptr p;
	rc = GS_MEM_REAL(cuMemAlloc_v2, &p, bytesize);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = record(p, bytesize, bytesize, ctx, app, GS_ALLOC_PASSTHROUGH, 0, 0);
	if (rc != CUDA_SUCCESS) {
		GS_MEM_REAL(cuMemFree_v2, p);
		return rc;
	}
	*dptr = p;
	return CUDA_SUCCESS;
}

static CUresult devmem_alloc_pitch(CUdeviceptr *dptr, size_t *pitch, size_t width,
				   size_t height, unsigned element_size)
{
	CUcontext ctx;
	int app, real;
	CUresult rc;

	rc = gs_mem_current(&ctx, &app, &real);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (app >= GS_MAX_DEVICES || device_mode(app, real) != MODE_ARENA) {
		rc = GS_MEM_REAL(cuMemAllocPitch_v2, dptr, pitch, width, height, element_size);
		if (rc != CUDA_SUCCESS)
			return rc;
		rc = record(*dptr, *pitch * height, *pitch * height, ctx, app,
			    GS_ALLOC_PASSTHROUGH | GS_ALLOC_PITCH, *pitch, 0);
		if (rc != CUDA_SUCCESS)
			GS_MEM_REAL(cuMemFree_v2, *dptr);
		return rc;
	}
	if (!dptr || !pitch || width == 0 || height == 0)
		return CUDA_ERROR_INVALID_VALUE;
	if (element_size != 4 && element_size != 8 && element_size != 16)
		return CUDA_ERROR_INVALID_VALUE;
	size_t rowpitch = (width + PITCH_ALIGN - 1) & ~(size_t)(PITCH_ALIGN - 1);
	if (rowpitch < width || height > SIZE_MAX / rowpitch)
		return CUDA_ERROR_OUT_OF_MEMORY;
	rc = arena_alloc(&devices[app], ctx, rowpitch * height, rowpitch, dptr);
	if (rc == CUDA_SUCCESS)
		*pitch = rowpitch;
	return rc;
}

CUresult gs_mem_ctx_sync(CUcontext ctx, CUcontext current)
{
	CUcontext popped;
	CUresult rc;

	if (gs_real.cuCtxSynchronize_v2)
		return gs_real.cuCtxSynchronize_v2(ctx);
	/* Drivers before cuCtxSynchronize_v2 synchronise the current context
	 * only. */
	if (ctx == current)
		return GS_MEM_REAL(cuCtxSynchronize);
	rc = GS_MEM_REAL(cuCtxPushCurrent_v2, ctx);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = GS_MEM_REAL(cuCtxSynchronize);
	GS_MEM_REAL(cuCtxPopCurrent_v2, &popped);
	return rc;
}

static CUresult arena_free(struct device *d, CUdeviceptr ptr)
{
	struct gs_arena *a = atomic_load_explicit(&d->arena, memory_order_acquire);
	struct gs_arena_allocation al;
	struct gs_alloc_desc desc;
	CUcontext current = NULL, owner;
	CUresult rc;

	rc = GS_MEM_REAL(cuCtxGetCurrent, &current);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!current)
		return CUDA_ERROR_INVALID_CONTEXT;
	/* Interior pointers, double frees and addresses where nothing is
	 * allocated: the driver's answer for a pointer it did not hand out. */
	if (!gs_arena_lookup(a, ptr, &al) || al.va != ptr)
		return CUDA_ERROR_INVALID_VALUE;
	/* A context with a sticky error refuses, as every call in it does. */
	owner = ctx_real(al.ctx);
	/* The driver's cuMemFree synchronises: work already queued may still
	 * use the memory. */
	rc = gs_mem_ctx_sync(owner, current);
	if (rc == CUDA_SUCCESS && owner != current)
		rc = gs_mem_ctx_sync(current, current);
	if (rc != CUDA_SUCCESS)
		return rc;
	/* The record goes first: once the arena has the address back, another
	 * thread may be handed it and record it anew. */
	gs_trk_alloc_remove(ptr, &desc);
	return gs_arena_free(a, ptr);
}

static CUresult devmem_free(CUdeviceptr ptr)
{
	struct gs_alloc_desc desc;
	struct device *d = device_of(ptr);
	CUresult rc;
	int trk;

	if (d)
		return arena_free(d, ptr);
	trk = gs_trk_alloc_remove(ptr, &desc);
	rc = GS_MEM_REAL(cuMemFree_v2, ptr);
	if (trk == 0 && rc != CUDA_SUCCESS)
		trk_warn(gs_trk_alloc_add(&desc), "allocation", ptr);
	else if (trk != 0 && rc == CUDA_SUCCESS && ptr)
		gs_trk_foreign_free(ptr); /* managed, stream-ordered, IPC: not ours */
	return rc;
}

/* ---- pointer queries ---------------------------------------------------------------- */

static CUresult devmem_address_range(CUdeviceptr *pbase, size_t *psize, CUdeviceptr ptr)
{
	struct device *d = device_of(ptr);
	struct gs_arena_allocation al;

	/* Argument checks are the driver's. */
	if (!d || (!pbase && !psize))
		return GS_MEM_REAL(cuMemGetAddressRange_v2, pbase, psize, ptr);
	if (!gs_arena_lookup(atomic_load_explicit(&d->arena, memory_order_acquire), ptr, &al))
		return GS_MEM_REAL(cuMemGetAddressRange_v2, pbase, psize, NOWHERE);
	/* The size asked for, as the driver reports a cuMemAlloc allocation:
	 * not the slot or chunk around it. */
	if (pbase)
		*pbase = al.va;
	if (psize)
		*psize = al.size;
	return CUDA_SUCCESS;
}

/* Attributes the arena answers; the others describe the mapping itself
 * (access flags, RDMA, sync memops, P2P tokens, decompression) and the
 * driver's answer for the VMM mapping is the right one. */
static bool attr_is_local(CUpointer_attribute attr)
{
	switch (attr) {
	case CU_POINTER_ATTRIBUTE_CONTEXT:
	case CU_POINTER_ATTRIBUTE_MEMORY_TYPE:
	case CU_POINTER_ATTRIBUTE_DEVICE_POINTER:
	case CU_POINTER_ATTRIBUTE_HOST_POINTER:
	case CU_POINTER_ATTRIBUTE_BUFFER_ID:
	case CU_POINTER_ATTRIBUTE_IS_MANAGED:
	case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL:
	case CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE:
	case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR:
	case CU_POINTER_ATTRIBUTE_RANGE_SIZE:
	case CU_POINTER_ATTRIBUTE_MAPPED:
	case CU_POINTER_ATTRIBUTE_ALLOWED_HANDLE_TYPES:
	case CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE:
	case CU_POINTER_ATTRIBUTE_MAPPING_SIZE:
	case CU_POINTER_ATTRIBUTE_MAPPING_BASE_ADDR:
	case CU_POINTER_ATTRIBUTE_MEMORY_BLOCK_ID:
		return true;
	default:
		return false;
	}
}

#define PUT(type, value) (*(type *)data = (type)(value))

/* One local attribute of ptr, inside arena allocation al of device d. The
 * value types are the driver's: booleans as unsigned int. */
static CUresult attr_local(CUpointer_attribute attr, void *data, CUdeviceptr ptr,
			   const struct device *d, const struct gs_arena_allocation *al)
{
	CUcontext current = NULL;

	switch (attr) {
	case CU_POINTER_ATTRIBUTE_CONTEXT:
		PUT(CUcontext, al->ctx);
		break;
	case CU_POINTER_ATTRIBUTE_MEMORY_TYPE:
		PUT(unsigned int, CU_MEMORYTYPE_DEVICE);
		break;
	case CU_POINTER_ATTRIBUTE_DEVICE_POINTER:
		/* "the device pointer through which kernels of the current
		 * context may access ptr": no context, no answer. */
		if (GS_MEM_REAL(cuCtxGetCurrent, &current) != CUDA_SUCCESS || !current)
			return CUDA_ERROR_INVALID_CONTEXT;
		PUT(CUdeviceptr, ptr);
		break;
	case CU_POINTER_ATTRIBUTE_HOST_POINTER:
		return CUDA_ERROR_INVALID_VALUE; /* device memory has no host address */
	case CU_POINTER_ATTRIBUTE_BUFFER_ID:
	case CU_POINTER_ATTRIBUTE_MEMORY_BLOCK_ID:
		/* Each allocation is its own block, as a cuMemAlloc is; the
		 * chunk's id would be shared by its slab neighbours. */
		PUT(unsigned long long, al->buffer_id);
		break;
	case CU_POINTER_ATTRIBUTE_IS_MANAGED:
		PUT(unsigned int, 0);
		break;
	case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL:
		PUT(int, d->app);
		break;
	case CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE:
		/* VMM memory cannot be exported with cuIpcGetMemHandle: say
		 * so rather than let the export fail later. */
		PUT(unsigned int, 0);
		break;
	case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR:
	case CU_POINTER_ATTRIBUTE_MAPPING_BASE_ADDR:
		PUT(CUdeviceptr, al->va);
		break;
	case CU_POINTER_ATTRIBUTE_RANGE_SIZE:
	case CU_POINTER_ATTRIBUTE_MAPPING_SIZE:
		PUT(size_t, al->size);
		break;
	case CU_POINTER_ATTRIBUTE_MAPPED:
		PUT(unsigned int, 1);
		break;
	case CU_POINTER_ATTRIBUTE_ALLOWED_HANDLE_TYPES:
		PUT(unsigned long long, CU_MEM_HANDLE_TYPE_NONE);
		break;
	case CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE:
		PUT(CUmemoryPool, NULL);
		break;
	default:
		return CUDA_ERROR_INVALID_VALUE;
	}
	return CUDA_SUCCESS;
}

static CUresult devmem_attribute(void *data, CUpointer_attribute attr, CUdeviceptr ptr)
{
	struct device *d = device_of(ptr);
	struct gs_arena_allocation al;

	if (!d || !data)
		return GS_MEM_REAL(cuPointerGetAttribute, data, attr, ptr);
	if (!gs_arena_lookup(atomic_load_explicit(&d->arena, memory_order_acquire), ptr, &al))
		return GS_MEM_REAL(cuPointerGetAttribute, data, attr, NOWHERE);
	if (!attr_is_local(attr))
		return GS_MEM_REAL(cuPointerGetAttribute, data, attr, ptr);
	return attr_local(attr, data, ptr, d, &al);
}

static CUresult devmem_attributes(unsigned n, CUpointer_attribute *attrs, void **data,
				  CUdeviceptr ptr)
{
	CUpointer_attribute fwd_attrs_stack[32], *fwd_attrs = fwd_attrs_stack;
	void *fwd_data_stack[32], **fwd_data = fwd_data_stack;
	struct device *d = device_of(ptr);
	struct gs_arena_allocation al;
	unsigned k = 0;
	CUresult rc = CUDA_SUCCESS;

	if (!d || n == 0 || !attrs || !data)
		return GS_MEM_REAL(cuPointerGetAttributes, n, attrs, data, ptr);
	for (unsigned i = 0; i < n; i++)
		if (!data[i])
			return GS_MEM_REAL(cuPointerGetAttributes, n, attrs, data, ptr);
	if (!gs_arena_lookup(atomic_load_explicit(&d->arena, memory_order_acquire), ptr, &al))
		return GS_MEM_REAL(cuPointerGetAttributes, n, attrs, data, NOWHERE);

	if (n > 32) {
		fwd_attrs = malloc(n * sizeof(*fwd_attrs));
		fwd_data = malloc(n * sizeof(*fwd_data));
		if (!fwd_attrs || !fwd_data) {
			rc = CUDA_ERROR_OUT_OF_MEMORY;
			goto out;
		}
	}
	/* The driver's part first: if it rejects an attribute the whole call
	 * fails, before anything of ours was written. */
	for (unsigned i = 0; i < n; i++) {
		if (!attr_is_local(attrs[i])) {
			fwd_attrs[k] = attrs[i];
			fwd_data[k] = data[i];
			k++;
		}
	}
	if (k) {
		rc = GS_MEM_REAL(cuPointerGetAttributes, k, fwd_attrs, fwd_data, ptr);
		if (rc != CUDA_SUCCESS)
			goto out;
	}
	/* Unlike the single query, one attribute without an answer is no
	 * error: it gets its null value. Only the pointer-valued ones can
	 * fail here. */
	for (unsigned i = 0; i < n; i++)
		if (attr_is_local(attrs[i]) &&
		    attr_local(attrs[i], data[i], ptr, d, &al) != CUDA_SUCCESS)
			memset(data[i], 0, sizeof(CUdeviceptr));
out:
	if (fwd_attrs != fwd_attrs_stack)
		free(fwd_attrs);
	if (fwd_data != fwd_data_stack)
		free(fwd_data);
	return rc;
}

/* ---- hooks for the rest of the shim -------------------------------------------------- */

void gs_arena_ctx_destroyed(CUcontext ctx)
{
	int n = atomic_load_explicit(&devices_used, memory_order_acquire);

	for (int i = 0; i < n; i++) {
		struct gs_arena *a = atomic_load_explicit(&devices[i].arena, memory_order_acquire);
		size_t freed = a ? gs_arena_free_ctx(a, ctx) : 0;
		if (!freed)
			continue;
		/* All of a destroyed context's memory goes back to the driver,
		 * the spare chunk included, as the driver's own would. */
		gs_arena_trim(a);
		gs_debug("context %p destroyed: freed its %zu allocations on device %d",
			 (void *)ctx, freed, i);
	}
}

void gs_arena_peer_access_changed(int owner, int accessor, bool enabled)
{
	struct device *d;
	struct gs_arena *a;
	CUresult rc;

	if (owner < 0 || owner >= GS_MAX_DEVICES || accessor < 0 || accessor >= GS_MAX_DEVICES ||
	    owner == accessor)
		return;
	d = &devices[owner];
	pthread_mutex_lock(&setup_lock);
	a = atomic_load_explicit(&d->arena, memory_order_acquire);
	if (!a) {
		/* No arena yet: it applies the grants when it is made. */
		if (enabled)
			d->pending_grants[accessor]++;
		else if (d->pending_grants[accessor])
			d->pending_grants[accessor]--;
		pthread_mutex_unlock(&setup_lock);
		return;
	}
	rc = gs_arena_peer_access(a, gs_devmap_to_real(gs_trk_devmap(), accessor), enabled);
	pthread_mutex_unlock(&setup_lock);
	if (rc != CUDA_SUCCESS)
		gs_warn("peer access of device %d to the arena of device %d: %s failed (%d)%s",
			accessor, owner, enabled ? "granting" : "revoking", (int)rc,
			enabled ? "; kernels there will fault on that memory" : "");
}

enum gs_devmem_kind gs_devmem_classify(CUdeviceptr ptr)
{
	struct gs_alloc_desc desc;
	struct gs_arena_allocation al;
	struct device *d = device_of(ptr);

	if (d)
		return gs_arena_lookup(atomic_load_explicit(&d->arena, memory_order_acquire), ptr,
				       &al) ? GS_DEVMEM_ARENA : GS_DEVMEM_NONE;
	if (gs_trk_alloc_find(ptr, &desc) == 0 && (desc.flags & GS_ALLOC_PASSTHROUGH))
		return GS_DEVMEM_PASSTHROUGH;
	return GS_DEVMEM_NONE;
}

struct gs_arena *gs_devmem_arena(int device)
{
	if (device < 0 || device >= GS_MAX_DEVICES)
		return NULL;
	return atomic_load_explicit(&devices[device].arena, memory_order_acquire);
}

/* ---- entry points --------------------------------------------------------------------- */

CUresult gs_mem_enter(struct gs_thread **self, int sym)
{
	CUresult rc = gs_init();

	if (rc != CUDA_SUCCESS)
		return rc;
	*self = gs_thread_get();
	if (!*self)
		return CUDA_ERROR_OUT_OF_MEMORY;
	gs_gate_enter(*self, sym);
	return CUDA_SUCCESS;
}

CUresult gs_custom_cuMemAlloc_v2(bool ptds, CUdeviceptr *dptr, size_t bytesize)
{
	struct gs_thread *self;
	CUresult rc;

	(void)ptds;
	if (gs_inside())
		return GS_MEM_REAL(cuMemAlloc_v2, dptr, bytesize);
	rc = gs_mem_enter(&self, GS_SYM_cuMemAlloc_v2);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = devmem_alloc(dptr, bytesize);
	gs_gate_exit(self);
	return rc;
}

CUresult gs_custom_cuMemAllocPitch_v2(bool ptds, CUdeviceptr *dptr, size_t *pPitch,
				      size_t WidthInBytes, size_t Height,
				      unsigned int ElementSizeBytes)
{
	struct gs_thread *self;
	CUresult rc;

	(void)ptds;
	if (gs_inside())
		return GS_MEM_REAL(cuMemAllocPitch_v2, dptr, pPitch, WidthInBytes, Height,
				   ElementSizeBytes);
	rc = gs_mem_enter(&self, GS_SYM_cuMemAllocPitch_v2);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = devmem_alloc_pitch(dptr, pPitch, WidthInBytes, Height, ElementSizeBytes);
	gs_gate_exit(self);
	return rc;
}

CUresult gs_custom_cuMemFree_v2(bool ptds, CUdeviceptr dptr)
{
	struct gs_thread *self;
	CUresult rc;

	(void)ptds;
	if (gs_inside())
		return GS_MEM_REAL(cuMemFree_v2, dptr);
	rc = gs_mem_enter(&self, GS_SYM_cuMemFree_v2);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = devmem_free(dptr);
	gs_gate_exit(self);
	return rc;
}

CUresult gs_custom_cuMemGetAddressRange_v2(bool ptds, CUdeviceptr *pbase, size_t *psize,
					   CUdeviceptr dptr)
{
	struct gs_thread *self;
	CUresult rc;

	(void)ptds;
	if (gs_inside())
		return GS_MEM_REAL(cuMemGetAddressRange_v2, pbase, psize, dptr);
	rc = gs_mem_enter(&self, GS_SYM_cuMemGetAddressRange_v2);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = devmem_address_range(pbase, psize, dptr);
	gs_gate_exit(self);
	return rc;
}

CUresult gs_custom_cuPointerGetAttribute(bool ptds, void *data, CUpointer_attribute attribute,
					 CUdeviceptr ptr)
{
	struct gs_thread *self;
	CUresult rc;

	(void)ptds;
	if (gs_inside())
		return GS_MEM_REAL(cuPointerGetAttribute, data, attribute, ptr);
	rc = gs_mem_enter(&self, GS_SYM_cuPointerGetAttribute);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = devmem_attribute(data, attribute, ptr);
	gs_gate_exit(self);
	return rc;
}

CUresult gs_custom_cuPointerGetAttributes(bool ptds, unsigned int numAttributes,
					  CUpointer_attribute *attributes, void **data,
					  CUdeviceptr ptr)
{
	struct gs_thread *self;
	CUresult rc;

	(void)ptds;
	if (gs_inside())
		return GS_MEM_REAL(cuPointerGetAttributes, numAttributes, attributes, data, ptr);
	rc = gs_mem_enter(&self, GS_SYM_cuPointerGetAttributes);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = devmem_attributes(numAttributes, attributes, data, ptr);
	gs_gate_exit(self);
	return rc;
}
