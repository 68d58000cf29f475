/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the replay operations share (not an interface outside replay/):
 *
 *   state.c    the process state, the operation lock, the saved state of a
 *              released process, status, errors, and the per-thread current
 *              context catch-up after a migration
 *   freeze.c   check, freeze (gate + drain + synchronise)
 *   devspec.c  device specifications -> device-ordinal maps
 *   dump.c     device -> host copies through pinned staging buffers (host
 *              memory or an image directory)
 *   restore.c  the reverse
 *   release.c  save everything, then destroy every driver object
 *   thaw.c     check the target, rebuild, restore, rebind, resume
 *   swap.c     freeze + release + thaw
 *
 * Every driver call made here goes through gs_real between
 * gs_inside_begin()/gs_inside_end(), with real handles: the operations run
 * with the gate closed, on the control thread (or a test), and must neither
 * be gated nor tracked. Tracker records are only read while the gate is
 * closed: no hook can change them meanwhile, the arena's own VMM records
 * aside (which replay never walks).
 */
#ifndef GS_RP_INTERNAL_H
#define GS_RP_INTERNAL_H

#include <cuda.h>
#include <jansson.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "g_api.h"
#include "handlemap.h"
#include "replay.h"
#include "tracker.h"

/* ---- errors (state.c) ------------------------------------------------------ */

/* Log `fmt` as an error and, when err is non-NULL and still empty, store it
 * there (malloc'd). Returns rc, so `return rp_fail(err, -EIO, ...)`. */
int rp_fail(char **err, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* "CUDA_ERROR_OUT_OF_MEMORY" for a driver result (the real driver's name
 * when it has one). */
const char *rp_cu_name(CUresult rc);
/* A driver result as -errno, for the operations' return values. */
int rp_cu_errno(CUresult rc);

/* A driver call of the shim's own: straight to the real driver. A missing
 * entry point answers CUDA_ERROR_NOT_FOUND. */
#define RP_REAL(fn, ...) (gs_real.fn ? gs_real.fn(__VA_ARGS__) : CUDA_ERROR_NOT_FOUND)

/* ---- a small hash index (state.c) ---------------------------------------------- */

/* Non-zero 64-bit keys to 64-bit values, for the look-ups a release or a
 * thaw makes per object (handles, addresses): linear probing, grown at
 * half full. Single-threaded. */
struct rp_index {
	uint64_t *keys, *vals;
	size_t cap, n;
};
int rp_index_put(struct rp_index *x, uint64_t key, uint64_t val);
bool rp_index_get(const struct rp_index *x, uint64_t key, uint64_t *val);
void rp_index_free(struct rp_index *x);

/* ---- a growing array (state.c) ------------------------------------------------------ */

/* Snapshots of records taken inside tracker walks: appends only, and a
 * walk that runs out of memory stops and leaves `oom` set. */
struct rp_vec {
	void *v;
	size_t n, cap, elem;
	bool oom;
};
#define RP_VEC(type) { .elem = sizeof(type) }
#define RP_VEC_AT(vec, type, i) ((type *)(vec).v + (i))
/* A zeroed new element, or NULL (oom set). */
void *rp_vec_push(struct rp_vec *v);

/* ---- progress ------------------------------------------------------------------ */

static inline void rp_progress(const struct gs_progress *p, const char *phase, uint64_t done,
			       uint64_t total)
{
	if (p && p->emit)
		p->emit(p->arg, phase, done, total);
}

/* ---- the saved state of a released process (state.c) ---------------------------- */

enum rp_region_kind {
	RP_REGION_ARENA = 0, /* a chunk of the cuMemAlloc arena, at its address */
	RP_REGION_PHYS,      /* an application cuMemCreate allocation, whole */
	RP_REGION_GLOBAL,    /* a __device__ / __constant__ variable of a module */
};

struct rp_region {
	enum rp_region_kind kind;
	int device;          /* app ordinal of the device holding it */
	/* ARENA: the chunk's address. GLOBAL: the variable's address when it
	 * was saved (what the application knows if `tracked`). PHYS: a key
	 * outside any address space the process uses (image extents need
	 * distinct ranges); the memory is reached through a temporary mapping. */
	uint64_t va;
	uint64_t size;
	uint64_t phys;       /* PHYS: app handle */
	/* GLOBAL: the module or library it belongs to (app handle), the
	 * context (app handle) and its name. */
	enum gs_kind owner_kind;
	uint64_t owner;
	uint64_t ctx;
	char *name;
	bool tracked;        /* GLOBAL: the application looked it up... */
	uint64_t app_va;     /* ...and knows it at this address (the key of
			      * its tracker record; `va` after a migration
			      * is where it was moved to) */
	void *host;          /* contents in host memory (mmap'd, page-rounded) */
	uint32_t extent;     /* contents in the image: its extent id */
	/* During a thaw: where the contents go (device address). */
	uint64_t dest;
	/* Staged (stage.c): the contents are in physical memory on real GPU
	 * stage_device (handle stage_handle, a reference of the staging's),
	 * mapped at stage_va; 0 when not staged. */
	uint64_t stage_handle;
	uint64_t stage_va;
	int stage_device;
	/* During a thaw: the staged memory became the region's memory.
	 * False outside a thaw (a failed thaw clears it after its undo). */
	bool adopted;
};

/* A primary context released at a release, and how many times: a thaw
 * retains the new one as often, so the application's (and cudart's) later
 * releases balance. */
struct rp_primary {
	uint64_t ctx;        /* app handle */
	int device;          /* app ordinal */
	unsigned releases;
};

struct rp_saved {
	struct rp_region *regions;
	size_t nregions, cap;
	uint64_t bytes;           /* sum of region sizes */
	char *image_dir;          /* contents in this image; NULL: host memory */
	int ndev;                 /* device-ordinal map size */
	int src_real[GS_MAX_DEVICES]; /* app ordinal -> real ordinal at release */
	unsigned src_sm[GS_MAX_DEVICES]; /* app ordinal -> compute capability then */
	struct rp_primary *primaries;
	size_t nprimaries;
	uint64_t used_devices;    /* bit per app ordinal holding state */
};

struct rp_state {
	pthread_mutex_t op_lock;  /* one operation at a time */
	pthread_mutex_t lock;     /* the fields below, for status readers */
	enum gs_proc_state state;
	struct rp_saved saved;    /* valid while RELEASED */
	uint64_t migrations;      /* successful thaws onto new state */
	uint64_t placeholder;     /* next placeholder real handle (release) */
};

extern struct rp_state rp;

void rp_set_state(enum gs_proc_state s);
int rp_region_add(struct rp_saved *s, const struct rp_region *r);
void rp_saved_free(struct rp_saved *s);
/* Take the operation lock, or -EBUSY with a message. */
int rp_op_begin(char **err);
void rp_op_end(void);

/* ---- handles (state.c) ------------------------------------------------------------ */

/* The kinds whose records carry driver handles a release destroys and a
 * thaw re-creates, in the order a thaw rebinds them. */
extern const enum gs_kind rp_handle_kinds[];
extern const unsigned rp_nhandle_kinds;

/*
 * After a release the app handles of every destroyed object are rebound to
 * placeholders: values no driver hands out (non-canonical addresses, apart
 * from the handle map's synthetic app values), so the real handles a thaw
 * gets can never meet a stale one in the handle maps (where the tracker
 * would take them for a repeated look-up or a stale record). 0 or -errno.
 */
int rp_rebind_placeholders(char **err);
bool rp_is_placeholder(uint64_t v);
#define RP_PLACEHOLDER_BASE 0x7ee1000000000000ull

/* The real handle an app handle is bound to (itself when unmapped). */
uint64_t rp_to_real(enum gs_kind kind, uint64_t app);

/* ---- per-thread current contexts (state.c) --------------------------------------- */

/*
 * Remember, for the current gate epoch, which real context handle stood for
 * which app context (call before the contexts are destroyed): threads still
 * holding those handles in their driver context stacks translate them when
 * they next pass the gate (gs_gate_set_epoch_handler).
 */
int rp_generation_record(char **err);
void rp_epoch_handler_install(void);
/* The calling thread is about to destroy contexts that may be on its own
 * stack: take its stack off, to be handed back at its next call after the
 * thaw (the driver would pop a destroyed context off the destroying thread
 * only, losing the thread's place). */
void rp_park_own_stack(void);

/* ---- freeze.c --------------------------------------------------------------------- */

/* Wait for every context's work (real calls). 0 or -errno. */
int rp_sync_contexts(char **err);
/* Everything that stands in the way of a release, appended to `blockers`
 * (an array of strings); returns how many. */
int rp_blockers(json_t *blockers);

/* ---- devspec.c --------------------------------------------------------------------- */

/* Bit per app ordinal whose device holds any state of the process. */
uint64_t rp_used_devices(void);
/*
 * Turn a device specification into a complete app -> real ordinal map of
 * `ndev` entries (`cur` is the current one). An ordinal or GPU-<uuid> names
 * the target of the one device the process uses; "a=b,c=d" maps app
 * ordinals (b, d: ordinals or UUIDs). Devices the spec leaves out keep their
 * current device when it is free, else take the lowest free one. NULL
 * keeps `cur`. 0, or -EINVAL / -ENODEV with a message.
 */
int rp_devspec_parse(const char *spec, uint64_t used, const int *cur, int ndev, int *out,
		     char **err);
/* Number of real devices (cuDeviceGetCount), or -errno. */
int rp_real_device_count(void);
/* Compute capability (major * 10 + minor) of a real device, 0 unknown. */
unsigned rp_real_sm(int real);

/* ---- dump.c / restore.c ------------------------------------------------------------- */

struct gs_image_writer;

/* One region to copy, and where on the device it is now. */
struct rp_copy {
	struct rp_region *region;
	uint64_t va;         /* device address to copy from / to */
	int real_device;     /* the device holding it (real ordinal) */
};

/*
 * Copy regions device -> host memory (region->host, allocated here) or, with
 * a writer, -> image extents (region->extent). `work[d]` is a real context
 * of real device d to copy in (NULL: the device's primary context is
 * retained for the copy). 0 or -errno (message in *err).
 */
int rp_dump(struct rp_copy *copies, size_t n, CUcontext const *work,
	    struct gs_image_writer *w, const struct gs_progress *progress, char **err);
/* The reverse: region->host or the image at `image_dir` -> the device. */
int rp_restore(struct rp_copy *copies, size_t n, CUcontext const *work, const char *image_dir,
	       const struct gs_progress *progress, char **err);
/* Free a region's host copy. */
void rp_region_drop_host(struct rp_region *r);

/* Run fn with real context ctx current on this thread (pushed, then popped).
 * Returns fn's result, or the push's error. */
CUresult rp_in_ctx(CUcontext ctx, CUresult (*fn)(void *arg), void *arg);

/* A temporary mapping of a physical allocation, to reach its contents. */
struct rp_tmpmap {
	CUdeviceptr va;
	size_t size;
	bool mapped;
};
CUresult rp_tmpmap_make(struct rp_tmpmap *m, CUmemGenericAllocationHandle real, size_t size,
			int real_device);
void rp_tmpmap_drop(struct rp_tmpmap *m);

/* ---- stage.c ------------------------------------------------------------------------- */

/*
 * Copy the memory regions among copies[0..n) (as a release prepared them:
 * the source address and GPU of each) whose device `map` (app -> real)
 * sends to a GPU the source can write to over a peer link into new memory
 * there, and mark them staged. Regions that cannot be staged are left for
 * the host path; when staging fails it is undone with a warning, the host
 * path taking everything. *staged: the bytes staged. 0, or -errno for
 * failures that stop the release.
 */
int rp_stage(struct rp_saved *s, struct rp_copy *copies, size_t n, CUcontext const *work,
	     const int *map, const struct gs_progress *progress, json_t *warnings,
	     uint64_t *staged);
/* Copy staged regions to host memory and drop their staging: all of them
 * (map NULL), or those whose device `map` does not send to the GPU holding
 * them. On failure everything stays staged. 0 or -errno. */
int rp_unstage(struct rp_saved *s, const int *map, const struct gs_progress *progress,
	       char **err);
/* Release a region's staged memory (no-op when not staged). */
void rp_stage_drop(struct rp_region *r);
/* Whether the region's contents wait in memory on real GPU `real_device`. */
bool rp_region_staged_on(const struct rp_region *r, int real_device);
/* The driver handle of the region's staged memory on `real_device` with a
 * new reference for the caller, or 0 (not staged there, or it failed). */
uint64_t rp_stage_adopt(const struct rp_region *r, int real_device);
/* Copy staged regions into the memory a thaw made for them, where it
 * could not adopt the staged memory itself (copies[].va: the destination,
 * on copies[].real_device, the GPU holding the staging). 0 or -errno. */
int rp_stage_restore(struct rp_copy *copies, size_t n, CUcontext const *work,
		     const struct gs_progress *progress, char **err);

/* ---- release.c ---------------------------------------------------------------------- */

/* stage_map (NULL: none): the app -> real map of a thaw that follows at
 * once, whose memory may be staged on the targets (stage.c). */
int rp_release(const char *image_dir, const int *stage_map, const struct gs_progress *progress,
	       json_t *report, char **err);

/* ---- thaw.c ------------------------------------------------------------------------- */

/* From RELEASED: `map` is the complete app -> real map to thaw onto. */
int rp_thaw(const int *map, const char *image_dir, const struct gs_progress *progress,
	    json_t *report, char **err);

/* ---- freeze.c ---------------------------------------------------------------------- */

int rp_freeze(unsigned timeout_ms, json_t *report, char **err);
/* FROZEN -> RUNNING without a migration. */
int rp_unfreeze(char **err);

/* Log a warning and, when `warnings` is non-NULL, add it to the operation's
 * report: the warnings of release and thaw reach the tool as well as the log. */
void rp_warnv(json_t *warnings, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));
void rp_warn(json_t *warnings, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
