/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The device-memory arena (DESIGN.md §5).
 *
 * cuMemAlloc* is served from a virtual address window that the shim reserves
 * once per device at a fixed base, backed on demand by physical chunks of the
 * device's allocation granularity. Because the window belongs to the shim and
 * not to a driver allocation, a restore can reserve the very same window again
 * and back it with chunks created on another GPU: every device pointer the
 * application holds stays valid.
 *
 * This header has two halves:
 *
 *  1. The allocator core (arena_core.c): a pure data structure. It reaches the
 *     driver only through `struct gs_arena_ops`, so unit tests drive it with
 *     a fake, and a thaw re-attaches the same records to another device.
 *
 *  2. The shim's device-memory layer: the custom entry points cuMemAlloc,
 *     cuMemAllocPitch, cuMemFree, cuMemGetAddressRange and
 *     cuPointerGetAttribute(s) and the passthrough fallback (arena.c); one
 *     core arena per application-visible device bound to the real driver's
 *     VMM calls, and the hooks for the rest of the shim (arena_driver.c).
 */
#ifndef GS_ARENA_H
#define GS_ARENA_H

#include <cuda.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ===================================================================== */
/* 1. Allocator core                                                      */
/* ===================================================================== */

/* Every allocation is aligned to at least this, like the driver's. */
#define GS_ARENA_MIN_ALIGN 512u

/*
 * Buffer ids of arena allocations start here. The driver numbers its own
 * allocations from small integers; ids from this range can never equal one
 * the driver hands out for a passthrough or host allocation in the same
 * process, and they stay the same across a migration.
 */
#define GS_ARENA_BUFFER_ID_BASE (UINT64_C(1) << 48)

/*
 * What the core needs from a driver. Every function returns CUDA_SUCCESS or
 * the driver's error, which the core hands back to its caller unchanged.
 * `opaque` is gs_arena_config.opaque.
 */
struct gs_arena_ops {
	/* Reserve `size` bytes of address space, preferably at `hint`; the
	 * result may be elsewhere (the core checks). */
	CUresult (*reserve)(void *opaque, uint64_t hint, uint64_t size, uint64_t *va);
	CUresult (*unreserve)(void *opaque, uint64_t va, uint64_t size);
	/* Physical memory of `size` bytes on `device`. */
	CUresult (*create)(void *opaque, int device, uint64_t size, uint64_t *handle);
	/* Optional. Take physical memory made elsewhere as a chunk of `size`
	 * bytes on `device`: `real` is the driver's handle, with a reference
	 * of its own that the arena now owns (released with `release`).
	 * Cannot fail. */
	void (*adopt)(void *opaque, int device, uint64_t size, uint64_t real, uint64_t *handle);
	CUresult (*release)(void *opaque, uint64_t handle);
	CUresult (*map)(void *opaque, uint64_t va, uint64_t size, uint64_t handle);
	CUresult (*unmap)(void *opaque, uint64_t va, uint64_t size);
	/* Give each of `devices` read-write access (readwrite) or none. */
	CUresult (*set_access)(void *opaque, uint64_t va, uint64_t size,
			       const int *devices, unsigned ndevices, bool readwrite);
	/* Optional. A clean-up step failed where the caller cannot be told
	 * (freeing never fails for the application): log it. `what` names the
	 * op ("unmap", "release", ...). */
	void (*report)(void *opaque, const char *what, uint64_t va, CUresult rc);
};

struct gs_arena_config {
	const struct gs_arena_ops *ops;
	void *opaque;
	uint64_t base;        /* wanted start of the window */
	uint64_t size;        /* window size; multiple of granularity */
	uint64_t granularity; /* chunk size: power of two, >= 2 * GS_ARENA_MIN_ALIGN */
	int device;           /* device new chunks are created on */
	/*
	 * Emptied slab chunks kept backed for reuse: a program that allocates
	 * and frees one small buffer in a loop would otherwise pay a create +
	 * map + set_access + unmap + release every time. 0 keeps none, so the
	 * driver's cuMemGetInfo always equals the arena's use.
	 */
	unsigned max_spare;
	/*
	 * The window must start exactly at `base` (a restore needs the old
	 * addresses). When false, a window placed elsewhere by the driver is
	 * accepted and gs_arena_window() tells where.
	 */
	bool exact_base;
};

struct gs_arena;

/* Reserve the window and set up an empty arena. CUDA_ERROR_INVALID_VALUE for
 * a bad config, CUDA_ERROR_ALREADY_MAPPED when exact_base and the driver put
 * the window elsewhere, else the driver's error or CUDA_ERROR_OUT_OF_MEMORY. */
CUresult gs_arena_create(const struct gs_arena_config *cfg, struct gs_arena **out);
/* Unmap and release every chunk, free the window and the records. */
void gs_arena_destroy(struct gs_arena *a);

/* The window actually reserved. Immutable for the arena's life, so this
 * and gs_arena_in_window() need no lock. */
void gs_arena_window(const struct gs_arena *a, uint64_t *base, uint64_t *size);
bool gs_arena_in_window(const struct gs_arena *a, uint64_t ptr);

struct gs_arena_allocation {
	uint64_t va;        /* start */
	uint64_t size;      /* size requested */
	CUcontext ctx;
	uint64_t buffer_id;
	uint64_t footprint; /* address space it occupies: its slot, or its span */
	uint64_t chunk_va;  /* the span of chunks holding it */
	uint64_t chunk_size;
};

/* Allocate `size` bytes (> 0) for context `ctx`, recorded with the next
 * buffer id; *out describes it. CUDA_ERROR_INVALID_VALUE for size 0;
 * CUDA_ERROR_OUT_OF_MEMORY (or the driver's error) leaves the arena and the
 * driver as they were. */
CUresult gs_arena_alloc(struct gs_arena *a, uint64_t size, CUcontext ctx,
			struct gs_arena_allocation *out);
/* Free the allocation starting at `va`. CUDA_ERROR_INVALID_VALUE when `va`
 * is not the start of a live allocation (interior pointer, double free). */
CUresult gs_arena_free(struct gs_arena *a, uint64_t va);
/* The live allocation containing `ptr` (va <= ptr < va + size): true and *out
 * filled, or false. */
bool gs_arena_lookup(struct gs_arena *a, uint64_t ptr, struct gs_arena_allocation *out);
/* Free every allocation of `ctx` (its context was destroyed); returns how
 * many. */
size_t gs_arena_free_ctx(struct gs_arena *a, CUcontext ctx);
/* Release the spare chunks. */
void gs_arena_trim(struct gs_arena *a);

/* Grant (readwrite) or revoke another device's access to every chunk, now
 * and for chunks created later. Grants are counted per device: a revoke
 * undoes one grant, access goes at the last. The owning device always has
 * access. */
CUresult gs_arena_peer_access(struct gs_arena *a, int device, bool readwrite);

/*
 * Walking the records (dump, inspection). The arena lock is held during the
 * walk: the callback must not call back into the arena. A non-zero return
 * stops the walk and is returned. Spare chunks hold no allocation and are not
 * walked.
 */
struct gs_arena_chunk {
	uint64_t va;
	uint64_t size;
	uint64_t handle; /* 0 while detached */
	int device;      /* device the chunk was last created on */
};
int gs_arena_foreach_chunk(struct gs_arena *a,
			   int (*fn)(const struct gs_arena_chunk *c, void *arg), void *arg);
int gs_arena_foreach_allocation(struct gs_arena *a,
				int (*fn)(const struct gs_arena_allocation *al, void *arg),
				void *arg);

struct gs_arena_stats {
	uint64_t allocations;     /* live allocations */
	uint64_t bytes_requested; /* sum of their sizes */
	uint64_t chunks;          /* live spans holding allocations */
	uint64_t bytes_backed;    /* physical bytes, spares included */
	uint64_t spare_chunks;
	uint64_t window_free;     /* unbacked address space left */
	bool attached;
};
void gs_arena_stats(struct gs_arena *a, struct gs_arena_stats *out);

/*
 * Migration. detach: unmap and release every chunk and free the window; the
 * records stay (the caller saved the contents first). attach: reserve the
 * same window again, exactly, and create every chunk on `device` at its old
 * address with access for the owner and `peers` (a device named n times
 * holds n grants, see gs_arena_peer_access). attach either succeeds
 * completely or leaves the arena detached and the driver as it was, so a
 * later attach (another device) can still work.
 */
CUresult gs_arena_detach(struct gs_arena *a);
CUresult gs_arena_attach(struct gs_arena *a, int device, const int *peers, unsigned npeers);
/*
 * attach, taking for some chunks memory that is already there (a swap
 * copied the contents into it over peer access): `fn` returns, for the chunk
 * at `va`, the driver's handle of memory of `size` bytes on `device` with a
 * reference for the arena, or 0 to create the chunk as attach does. The
 * arena owns every reference fn hands out, even when the attach fails (it
 * releases them then).
 */
typedef uint64_t gs_arena_adopt_fn(void *arg, uint64_t va, uint64_t size);
CUresult gs_arena_attach_adopt(struct gs_arena *a, int device, const int *peers, unsigned npeers,
			       gs_arena_adopt_fn *fn, void *arg);

/* The size classes small allocations are packed into, for a granularity:
 * fills up to max sizes (ascending) and returns the count. */
unsigned gs_arena_size_classes(uint64_t granularity, uint64_t *sizes, unsigned max);

/* ===================================================================== */
/* 2. The shim's device-memory layer (arena.c, arena_driver.c)            */
/* ===================================================================== */

/*
 * Default start of the arena windows: 0x4000'0000'0000 (64 TiB). Device
 * ordinal d (the application's numbering) gets the window starting at
 * base + d * GS_ARENA_WINDOW_STRIDE.
 *
 * Why there, on x86-64 Linux with 47-bit user addresses:
 *  - the driver puts cuMemAlloc memory and its own reservations in the mmap
 *    area, which grows down from under 0x7fff'ffff'ffff (its top randomised
 *    by up to 16 TiB), or low in the address space; 64 TiB is tens of TiB
 *    from both, so neither the process's mappings nor a new context's
 *    internal allocations on a thaw target grow into the windows;
 *  - PIE executables and their brk heap sit at 0x55xx'xxxx'xxxx and grow
 *    upwards, away from it;
 *  - AddressSanitizer's shadow ends at 0x1000'7fff'7fff, below it.
 *    (ThreadSanitizer accepts application memory only in a few fixed
 *    ranges, none of them here: under TSan the driver places the window
 *    elsewhere and the arena accepts that with a warning.)
 *  - it is inside the 49-bit virtual address space of current GPUs.
 * Twenty 1 TiB windows fit below the PIE area.
 */
#define GS_ARENA_DEFAULT_BASE UINT64_C(0x400000000000)
/* Windows start 1 TiB apart: several times the memory of any GPU today. A
 * device's window is four times its memory, at most this. */
#define GS_ARENA_WINDOW_STRIDE (UINT64_C(1) << 40)

/*
 * The custom entry points (annotations.txt) are gs_custom_cuMemAlloc_v2,
 * gs_custom_cuMemAllocPitch_v2, gs_custom_cuMemFree_v2,
 * gs_custom_cuMemGetAddressRange_v2, gs_custom_cuPointerGetAttribute and
 * gs_custom_cuPointerGetAttributes, declared in g_api.h.
 *
 * Every allocation served (arena or passthrough) is recorded in the tracker
 * (gs_trk_alloc_add), where dump and gpu-ps find it; the arena's window and
 * chunks are recorded as GS_OWNER_SHIM VMM records. A restore re-creates
 * the arena's mappings with gs_arena_detach / gs_arena_attach on the arena
 * of each device (gs_devmem_arena), not from those VMM records.
 *
 * Environment (read once): GPUSWAP_ALLOC=vmm|passthrough (default vmm),
 * GPUSWAP_ARENA_BASE=<address> (default GS_ARENA_DEFAULT_BASE).
 */

/*
 * A context (app-visible handle) died: cuCtxDestroy, the last primary
 * release, a primary reset. Every arena allocation it made is freed, as the
 * driver frees a destroyed context's memory (the tracker drops the records
 * itself). Registered as a tracker teardown callback (gs_trk_on_ctx_teardown)
 * before the first allocation: the context hooks need not call it.
 */
void gs_arena_ctx_destroyed(CUcontext ctx);

/*
 * The hook of cuCtxEnablePeerAccess / cuCtxDisablePeerAccess calls this
 * after the real call succeeded: `accessor` (the device of the current
 * context) may now (no longer) use memory of `owner` (the peer context's
 * device). The driver grants legacy peer access to its own allocations,
 * never to VMM mappings, so the arena grants it to its chunks itself.
 * Ordinals are the application's. Counted: each enable needs its disable.
 */
void gs_arena_peer_access_changed(int owner, int accessor, bool enabled);

/*
 * A context was made on application device `app`: from now on that device
 * may copy from and to every arena its GPU can be a peer of (VMM mappings
 * are reachable only by the devices they grant access to, cuMemAlloc memory
 * by any). Called by the context hooks; cheap after the first time.
 */
void gs_devmem_device_used(int app);
/* The properties the arena of app device `app` creates its chunks with,
 * placed on real device `real`: 0, or -ENODEV when it has no arena. */
int gs_devmem_chunk_prop(int app, int real, CUmemAllocationProp *prop);
/* Bit per application device gs_devmem_device_used has seen. */
uint64_t gs_devmem_copy_devices(void);

/* The arena serving application device `app` (real ordinal `real`), made at
 * the first call; NULL when the device is served by passthrough. */
struct gs_arena *gs_devmem_arena_for(int app, int real);
/* The arena whose window holds `ptr`, and its application device in
 * *device (may be NULL); NULL for none. Lock-free. */
struct gs_arena *gs_devmem_arena_at(CUdeviceptr ptr, int *device);

/* Which allocator served `ptr`, if any (freeze --check, tests). */
enum gs_devmem_kind {
	GS_DEVMEM_NONE = 0,     /* nothing the shim served */
	GS_DEVMEM_ARENA,        /* inside a live arena allocation */
	GS_DEVMEM_PASSTHROUGH,  /* the real cuMemAlloc: no VMM, or GPUSWAP_ALLOC=passthrough */
};
enum gs_devmem_kind gs_devmem_classify(CUdeviceptr ptr);

/* The arena of application device `device`: NULL before its first
 * cuMemAlloc, and for a device served by passthrough. Dump and restore walk
 * it and detach / attach it. */
struct gs_arena *gs_devmem_arena(int device);

/*
 * Shared by the memory entry points (arena.c, hostmem.c): the frame of a
 * custom export called by the application. Initialises the shim (once),
 * finds this thread's record and enters the gate; on CUDA_SUCCESS the caller
 * leaves with gs_gate_exit(*self).
 */
struct gs_thread;
CUresult gs_mem_enter(struct gs_thread **self, int sym);
/* A call the shim makes itself goes straight to the real driver. */
#define GS_MEM_REAL(fn, ...) (gs_real.fn ? gs_real.fn(__VA_ARGS__) : gs_missing(GS_SYM_##fn))
/* The calling thread's current context (app handle) and its device (app and
 * real ordinals); CUDA_ERROR_INVALID_CONTEXT when there is none. */
CUresult gs_mem_current(CUcontext *ctx, int *app_dev, int *real_dev);
/* The real handle behind an app-visible context (itself until a migration). */
CUcontext gs_mem_ctx_real(CUcontext app);
/* Wait for the work of real context ctx, as the driver's frees do; current
 * is the calling thread's current (real) context. */
CUresult gs_mem_ctx_sync(CUcontext ctx, CUcontext current);

#endif
