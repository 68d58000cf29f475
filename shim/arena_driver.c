/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The device-memory layer's side facing the real driver (arena.h, part 2):
 * one arena per application device, set up at its first cuMemAlloc and
 * bound to the driver's VMM calls; the hooks other parts of the shim call
 * (context teardown, peer access); and the helpers the memory entry points
 * (arena.c, hostmem.c) share.
 *
 * Every VMM object the arena makes is recorded in the tracker with owner
 * GS_OWNER_SHIM, so inspection and statistics see the whole address space.
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
/*
 * Devices (app ordinals) the process has made a context on. Memory from
 * cuMemAlloc can be copied by any device (with unified addressing a
 * cuMemcpy from a context of one device reaches another's allocation, the
 * driver staging it when they are not peers). A VMM mapping can only be
 * reached by the devices it grants access to, so each arena grants access
 * to every device here that can be its peer, once, never revoked: without
 * it a copy the application makes across devices would fail under the shim
 * only. Device pairs that cannot be peers stay unreachable (see
 * docs/limitations.md).
 */
static _Atomic uint64_t copy_devices;
/* 1 + the highest ordinal that has an arena: lookups scan only that far. */
static _Atomic int devices_used;
/* Device set-up and peer grants; both rare. */
static pthread_mutex_t setup_lock = PTHREAD_MUTEX_INITIALIZER;

static struct {
	bool passthrough;
	uint64_t base;
} config;
static pthread_once_t config_once = PTHREAD_ONCE_INIT;

/* ---- shared by the memory entry points ---------------------------------------- */

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

CUcontext gs_mem_ctx_real(CUcontext app)
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

/* ---- the arena's driver ------------------------------------------------------- */

/* The tracker failing to record a VMM object of the arena costs
 * inspection, not correctness: the arena keeps its own records. */
static void trk_warn(int rc, const char *what, uint64_t addr)
{
	if (rc < 0)
		gs_log_at(GS_LOG_WARN, -rc, "tracker: recording %s %#llx failed", what,
			  (unsigned long long)addr);
}

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

static void op_adopt(void *opaque, int device, uint64_t size, uint64_t real, uint64_t *handle)
{
	struct device *d = opaque;
	CUmemAllocationProp prop = d->prop;
	CUmemGenericAllocationHandle app = real;

	prop.location.id = device;
	trk_warn(gs_trk_phys_created(real, size, &prop, 0, GS_OWNER_SHIM, false, &app),
		 "adopted arena chunk", real);
	*handle = app;
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
	.adopt = op_adopt,
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

/* Grant `accessor` (app ordinal) access to `owner`'s arena for copies, if the
 * two can be peers. With setup_lock held. */
static void copy_grant(int owner, struct gs_arena *a, int accessor)
{
	struct gs_devmap *dm = gs_trk_devmap();
	int ro = gs_devmap_to_real(dm, owner), ra = gs_devmap_to_real(dm, accessor), can = 0;
	CUresult rc;

	if (ro < 0 || ra < 0 || ro == ra)
		return;
	rc = GS_MEM_REAL(cuDeviceCanAccessPeer, &can, ra, ro);
	if (rc != CUDA_SUCCESS || !can) {
		gs_debug("device %d cannot reach the arena of device %d: copies between them "
			 "under the shim need a peer path", accessor, owner);
		return;
	}
	rc = gs_arena_peer_access(a, ra, true);
	if (rc != CUDA_SUCCESS)
		gs_warn("granting device %d access to the arena of device %d failed (%d): "
			"copies from there will fail", accessor, owner, (int)rc);
}

void gs_devmem_device_used(int app)
{
	uint64_t bit;

	if (app < 0 || app >= GS_MAX_DEVICES)
		return;
	bit = UINT64_C(1) << app;
	if (atomic_load_explicit(&copy_devices, memory_order_acquire) & bit)
		return;
	pthread_mutex_lock(&setup_lock);
	if (!(atomic_load_explicit(&copy_devices, memory_order_relaxed) & bit)) {
		atomic_fetch_or_explicit(&copy_devices, bit, memory_order_release);
		for (int o = 0; o < GS_MAX_DEVICES; o++) {
			struct gs_arena *a = atomic_load_explicit(&devices[o].arena,
								  memory_order_acquire);
			if (a && o != app)
				copy_grant(o, a, app);
		}
	}
	pthread_mutex_unlock(&setup_lock);
}

int gs_devmem_chunk_prop(int app, int real, CUmemAllocationProp *prop)
{
	if (app < 0 || app >= GS_MAX_DEVICES ||
	    !atomic_load_explicit(&devices[app].arena, memory_order_acquire))
		return -ENODEV;
	*prop = devices[app].prop;
	prop->location.id = real;
	return 0;
}

uint64_t gs_devmem_copy_devices(void)
{
	return atomic_load_explicit(&copy_devices, memory_order_acquire);
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
		gs_info("device %d: arena window %#llx, %llu GiB, %llu MiB chunks", app,
			(unsigned long long)window, (unsigned long long)(window_size >> 30),
			(unsigned long long)(cfg.granularity >> 20));
	uint64_t copiers = atomic_load_explicit(&copy_devices, memory_order_relaxed);
	for (int acc = 0; acc < GS_MAX_DEVICES; acc++)
		if (acc != app && (copiers & (UINT64_C(1) << acc)))
			copy_grant(app, a, acc);
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

struct gs_arena *gs_devmem_arena_for(int app, int real)
{
	struct device *d;
	int mode;

	if (app < 0 || app >= GS_MAX_DEVICES)
		return NULL;
	d = &devices[app];
	mode = atomic_load_explicit(&d->mode, memory_order_acquire);
	if (GS_UNLIKELY(mode == MODE_UNSET)) {
		pthread_once(&config_once, config_read);
		pthread_mutex_lock(&setup_lock);
		mode = atomic_load_explicit(&d->mode, memory_order_relaxed);
		if (mode == MODE_UNSET) {
			mode = device_setup(d, app, real);
			atomic_store_explicit(&d->mode, mode, memory_order_release);
		}
		pthread_mutex_unlock(&setup_lock);
	}
	if (mode != MODE_ARENA)
		return NULL;
	return atomic_load_explicit(&d->arena, memory_order_acquire);
}

struct gs_arena *gs_devmem_arena_at(CUdeviceptr ptr, int *device)
{
	/* Lock-free: a window never moves while its arena exists. */
	int n = atomic_load_explicit(&devices_used, memory_order_acquire);

	for (int i = 0; i < n; i++) {
		struct gs_arena *a = atomic_load_explicit(&devices[i].arena, memory_order_acquire);
		if (a && gs_arena_in_window(a, ptr)) {
			if (device)
				*device = i;
			return a;
		}
	}
	return NULL;
}

/* ---- hooks for the rest of the shim -------------------------------------------------- */

struct ctx_allocs {
	CUcontext ctx;
	uint64_t *va;
	size_t n, cap;
	bool oom;
};

static int collect_ctx_alloc(const struct gs_arena_allocation *al, void *arg)
{
	struct ctx_allocs *c = arg;

	if (al->ctx != c->ctx)
		return 0;
	if (c->n == c->cap) {
		size_t cap = c->cap ? 2 * c->cap : 64;
		uint64_t *va = realloc(c->va, cap * sizeof(*va));
		if (!va) {
			c->oom = true;
			return 1;
		}
		c->va = va;
		c->cap = cap;
	}
	c->va[c->n++] = al->va;
	return 0;
}

/* The tracker records go first, the addresses after, as in cuMemFree: once
 * the arena has the addresses back another thread's cuMemAlloc may be handed
 * one of them, and its record would collide with the stale one (the
 * allocation would then fail with a spurious out-of-memory). */
static void untrack_ctx_allocs(struct gs_arena *a, CUcontext ctx)
{
	struct ctx_allocs c = { .ctx = ctx };

	gs_arena_foreach_allocation(a, collect_ctx_alloc, &c);
	if (c.oom)
		gs_error("context %p destroyed: out of memory listing its allocations; "
			 "some stay recorded", (void *)ctx);
	for (size_t i = 0; i < c.n; i++)
		gs_trk_alloc_remove(c.va[i], NULL);
	free(c.va);
}

void gs_arena_ctx_destroyed(CUcontext ctx)
{
	int n = atomic_load_explicit(&devices_used, memory_order_acquire);

	for (int i = 0; i < n; i++) {
		struct gs_arena *a = atomic_load_explicit(&devices[i].arena, memory_order_acquire);
		if (a)
			untrack_ctx_allocs(a, ctx);
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

struct gs_arena *gs_devmem_arena(int device)
{
	if (device < 0 || device >= GS_MAX_DEVICES)
		return NULL;
	return atomic_load_explicit(&devices[device].arena, memory_order_acquire);
}
