/* SPDX-License-Identifier: Apache-2.0 */
/*
 * simcuda internals shared between its source files. Ownership:
 *   sim_core.c   init, env, fault injection, handles, cuGetProcAddress,
 *                cuGetExportTable, version
 *   sim_error.c  cuGetErrorName / cuGetErrorString
 *   sim_device.c devices, attributes, PCI ids, peer capability
 *   sim_ctx.c    primary and created contexts, current context, limits,
 *                peer access
 *   sim_mem.c    VA windows, range table, cuMemAlloc, access checks
 *                (sim_mem.h: shared by the memory files only)
 *   sim_host.c   pinned / registered host memory, pointer queries
 *   sim_memcpy.c memcpy / memset
 *   sim_vmm.c    cuMemAddressReserve/Create/Map/SetAccess/...
 *   sim_stream.c streams (one worker thread each), events, host functions
 *   sim_module.c modules, libraries, functions, kernels, globals, launches
 */
#ifndef SIM_INTERNAL_H
#define SIM_INTERNAL_H

#include <cuda.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "simcuda.h"

#define SIM_EXPORT __attribute__((visibility("default")))

/* What cuDriverGetVersion reports: the CUDA 13.0 driver API. */
#define SIM_DRIVER_VERSION 13000
/* Devices are numbered 0..SIM_MAX_DEVICES-1 (per-device bit masks fit a u64). */
#define SIM_MAX_DEVICES 64

/* ---- diagnostics and entry ------------------------------------------------ */

/* Strictness: print "simcuda: FN: <message>" to stderr and abort(). */
_Noreturn void sim_abort(const char *fn, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Called first by every exported entry point. Reads the environment once,
 * returns CUDA_ERROR_NOT_INITIALIZED when cuInit has not succeeded (unless
 * needs_init is false), then applies SIMCUDA_FAIL=<fn>:<nth>[:<CUresult>]. */
CUresult sim_enter(const char *fn, bool needs_init);
#define SIM_ENTER(fn)                                                     \
	do {                                                              \
		CUresult sim_enter_rc_ = sim_enter((fn), true);           \
		if (sim_enter_rc_ != CUDA_SUCCESS)                        \
			return sim_enter_rc_;                             \
	} while (0)

/* "CUDA_ERROR_OUT_OF_MEMORY" for CUDA_ERROR_OUT_OF_MEMORY; NULL for a value
 * cuda.h does not define. */
const char *sim_result_name(CUresult rc);
/* A CUresult from its cuda.h name or a decimal number; false if neither. */
bool sim_result_parse(const char *text, CUresult *out);

/* ---- handles ------------------------------------------------------------- */

enum sim_kind {
	SIM_KIND_CTX = 1,
	SIM_KIND_STREAM,
	SIM_KIND_EVENT,
	SIM_KIND_MODULE,
	SIM_KIND_FUNCTION,
	SIM_KIND_LIBRARY,
	SIM_KIND_KERNEL,
	SIM_KIND_LINK,
	SIM_KIND_MEMHANDLE, /* CUmemGenericAllocationHandle (sim_vmm.c) */
};

/* Every handle-backed object starts with this header. The handle value the
 * application sees is the object's address. Destroyed objects are never
 * freed nor reused (they stay as tombstones), so any later use of a stale
 * handle is detected and named as "destroyed" rather than "garbage". */
struct sim_obj {
	uint32_t magic;
	enum sim_kind kind;
	bool dead;
};

/* Zeroed object of `size` bytes (>= sizeof(struct sim_obj)), registered live. */
void *sim_handle_new(enum sim_kind kind, size_t size);
/* The live object behind `handle` of the given kind; aborts naming fn and
 * the value when it is NULL, garbage, destroyed or of another kind. */
void *sim_handle_get(enum sim_kind kind, const void *handle, const char *fn);
/* Whether `handle` is a live object of the kind, without aborting. */
bool sim_handle_is_live(enum sim_kind kind, const void *handle);
void sim_handle_destroy(void *obj);

/* ---- devices ------------------------------------------------------------- */

struct sim_device {
	int ordinal;
	int sm_major, sm_minor;
	char name[64];
	CUuuid uuid;
	int pci_bus;
	size_t mem_total;
	uintptr_t va_base; /* this device's VA window for cuMemAlloc & co */
	size_t va_size;
	bool vmm; /* CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED */
	bool p2p; /* may be a peer of every other device with p2p set */
};
int sim_device_count(void);
/* NULL when out of range. */
const struct sim_device *sim_device(int ordinal);
/* Aborts naming fn when `dev` is not a valid ordinal. */
const struct sim_device *sim_device_get(CUdevice dev, const char *fn);
/* cuDeviceGetAttribute without the entry-point prologue (no fault injection
 * counting): false for an attribute cuda.h does not define. */
bool sim_device_attribute(const struct sim_device *d, CUdevice_attribute attr, int *value);
/* cuDeviceCanAccessPeer without the prologue. */
bool sim_device_can_peer(const struct sim_device *a, const struct sim_device *b);

/* ---- contexts ------------------------------------------------------------ */

struct sim_exec; /* sim_stream.c / sim_module.c per-context state */

struct sim_ctx {
	struct sim_obj hdr;
	int device;
	unsigned flags;
	bool primary;
	size_t limits[CU_LIMIT_MAX];
	CUfunc_cache cache_config;
	CUresult sticky_error; /* set by failed asynchronous work */
	struct sim_exec *exec;
	pthread_mutex_t lock;
};

/* The calling thread's current context, or NULL. */
struct sim_ctx *sim_ctx_current(void);
/* The current context, usable: CUDA_ERROR_INVALID_CONTEXT when there is
 * none, CUDA_ERROR_CONTEXT_IS_DESTROYED when it was destroyed (by another
 * thread) or is a released primary context, and its sticky error after a
 * fault (every call in a faulted context fails with it, as on a GPU). */
CUresult sim_ctx_require(const char *fn, struct sim_ctx **out);
/* A CUcontext argument (NULL = current). Aborts on a bad handle. Returns
 * NULL when c is NULL and no context is current. */
struct sim_ctx *sim_ctx_from_handle(CUcontext c, const char *fn);
/* The context's sticky error (CUDA_SUCCESS when healthy), read under
 * ctx->lock; sim_ctx_set_sticky keeps the first error recorded. Asynchronous
 * work that fails goes through sim_ctx_set_sticky, never by writing the
 * field directly, so readers on other threads see it race-free. */
CUresult sim_ctx_sticky(struct sim_ctx *ctx);
void sim_ctx_set_sticky(struct sim_ctx *ctx, CUresult rc);
/* Whether some live context on device `from` has peer access enabled to a
 * context on device `to` (cuCtxEnablePeerAccess); true when from == to. */
bool sim_ctx_peer_access(int from, int to);

/* ---- execution (sim_stream.c) --------------------------------------------- */

struct sim_stream;

/* Resolve a CUstream argument of entry point fn against ctx: NULL (the legacy
 * default stream, or the per-thread one when `ptds` is true, i.e. the call came
 * through a _ptsz/_ptds symbol), CU_STREAM_LEGACY, CU_STREAM_PER_THREAD, or a
 * created stream. Aborts on a bad handle or a stream of another context. */
struct sim_stream *sim_stream_resolve(CUstream s, bool ptds, struct sim_ctx *ctx,
				      const char *fn);
/* Enqueue work executed in order on the stream's worker, with the legacy
 * default stream's implicit synchronisation applied. If `work` returns an
 * error it becomes the context's sticky error. `done` (may be NULL) runs
 * after `work` to free `arg`. */
CUresult sim_stream_submit(struct sim_stream *s, CUresult (*work)(void *arg),
			   void *arg, void (*done)(void *arg));
/* Block until everything submitted to s so far has run. */
CUresult sim_stream_wait(struct sim_stream *s);
/* cuCtxSynchronize: wait for every stream of ctx; returns the sticky error. */
CUresult sim_exec_sync_ctx(struct sim_ctx *ctx);
/* Destroy every stream, event, module of ctx (cuCtxDestroy, primary reset). */
void sim_exec_destroy_ctx(struct sim_ctx *ctx);
/* True on a stream worker while it runs application code (host functions,
 * stream callbacks, kernel emulations): the driver refuses calls from there
 * with CUDA_ERROR_NOT_PERMITTED, which sim_enter should return. */
bool sim_exec_in_user_code(void);

/* ---- memory (sim_mem.c / sim_vmm.c) ---------------------------------------- */

/* Check that [p, p+n) lies in device memory (cuMemAlloc, mapped VMM, module
 * globals) or in pinned/registered host memory, accessible from device `dev`
 * (-1: any) for reading (or writing). Returns CUDA_SUCCESS and the host
 * address; CUDA_ERROR_ILLEGAL_ADDRESS for a reserved range that is unmapped or
 * not accessible; aborts naming fn for an address in no allocation at all. */
CUresult sim_mem_access(CUdeviceptr p, size_t n, int dev, bool write,
			const char *fn, void **host);
/* Device memory owned by the simulator itself (module globals): counted in
 * cuMemGetInfo like any allocation, zero-filled. */
CUresult sim_mem_alloc_internal(int dev, size_t size, CUdeviceptr *out);
void sim_mem_free_internal(CUdeviceptr p);
/* Free everything a context allocated (cuCtxDestroy). */
void sim_mem_destroy_ctx(struct sim_ctx *ctx);
/* The device whose memory holds p (cuMemAlloc, module global or mapped VMM),
 * or -1 for host memory and addresses the simulator does not know. */
int sim_mem_device_of(CUdeviceptr p);

#endif
