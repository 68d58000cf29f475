/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Handle and device-ordinal translation after a migration (DESIGN.md §4).
 *
 * Until the first migration the application's handles are the driver's and
 * nothing here is on any call path. Thaw rebuilds every object on the new
 * GPU, rebinds each app handle to its new real one (gs_trk_rebind) and the
 * app ordinals to the new devices (gs_devmap_set), then calls
 * gs_set_migrated(true). From then on the generated wrappers (g_wrappers.c)
 * map arguments app -> real and what the driver writes back real -> app,
 * with the hand-written gs_xlat_hook_* of translate_hook.c where a
 * parameter's type does not tell what to map.
 *
 * The helpers below are for hand-written code that calls the driver itself
 * (custom exports, hooks): each returns its argument unchanged before a
 * migration, so such code calls them unconditionally. After one:
 *   - app -> real: an unknown value passes through unchanged (the driver
 *     rejects it as it would have; logged at debug level), and so do the
 *     special values (NULL, CU_STREAM_LEGACY, CU_STREAM_PER_THREAD,
 *     CU_DEVICE_CPU, CU_DEVICE_INVALID, ordinals the application never saw);
 *   - real -> app: a handle the maps do not know passes through unchanged;
 *   - gs_xlat_adopt: a handle of a new object that no tracking hook records
 *     is registered, keeping its value unless that collides with a live app
 *     handle (then a fresh synthetic one).
 *
 * Device addresses stay the same across a migration, except those of
 * __device__ globals: see "device addresses of moved __device__ globals".
 */
#ifndef GS_TRANSLATE_H
#define GS_TRANSLATE_H

#include <cuda.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "shim.h"
#include "tracker.h"

/* The translating half of a wrapper: out of line and out of the way of the
 * call path it is not on before a migration. */
#define GS_XLAT_COLD __attribute__((cold, noinline))

/* ---- handles ------------------------------------------------------------- */

/* kind: a handle kind with a map (gs_trk_handlemap); others pass through.
 * A GS_KIND_FUNCTION value the function map does not know is also looked up
 * as a CUkernel: the driver accepts a CUkernel wherever it takes a
 * CUfunction. */
uint64_t gs_xlat_to_real(enum gs_kind kind, uint64_t app);
uint64_t gs_xlat_to_app(enum gs_kind kind, uint64_t real);
uint64_t gs_xlat_adopt(enum gs_kind kind, uint64_t real);

#define GS_XLAT_TYPED(name, type, kind)                                            \
	static inline type gs_xlat_##name(type app)                                 \
	{                                                                           \
		return (type)(uintptr_t)gs_xlat_to_real(kind, (uint64_t)(uintptr_t)app); \
	}                                                                           \
	static inline type gs_xlat_##name##_app(type real)                          \
	{                                                                           \
		return (type)(uintptr_t)gs_xlat_to_app(kind, (uint64_t)(uintptr_t)real); \
	}

/* gs_xlat_stream(app) -> real, gs_xlat_stream_app(real) -> app, ... */
GS_XLAT_TYPED(ctx, CUcontext, GS_KIND_CTX)
GS_XLAT_TYPED(stream, CUstream, GS_KIND_STREAM)
GS_XLAT_TYPED(event, CUevent, GS_KIND_EVENT)
GS_XLAT_TYPED(module, CUmodule, GS_KIND_MODULE)
GS_XLAT_TYPED(library, CUlibrary, GS_KIND_LIBRARY)
GS_XLAT_TYPED(function, CUfunction, GS_KIND_FUNCTION)
GS_XLAT_TYPED(kernel, CUkernel, GS_KIND_KERNEL)
GS_XLAT_TYPED(link, CUlinkState, GS_KIND_LINK)
GS_XLAT_TYPED(phys, CUmemGenericAllocationHandle, GS_KIND_PHYS)

#undef GS_XLAT_TYPED

/* ---- device ordinals ------------------------------------------------------ */

/* App ordinal -> the ordinal of the device now underneath, and back. */
int gs_xlat_device_to_real(int app);
int gs_xlat_device_to_app(int real);

static inline CUdevice gs_xlat_device(CUdevice app)
{
	return gs_xlat_device_to_real(app);
}

static inline CUdevice gs_xlat_device_app(CUdevice real)
{
	return gs_xlat_device_to_app(real);
}

/* A location's id is an ordinal when its type is CU_MEM_LOCATION_TYPE_DEVICE
 * (a NUMA node or nothing otherwise). In place. */
void gs_xlat_memloc_to_real(CUmemLocation *loc);
void gs_xlat_memloc_to_app(CUmemLocation *loc);

/* cuPointerGetAttribute(s) answered by the driver: the context and device
 * ordinal attributes, real -> app, in place. Other attributes untouched. */
void gs_xlat_pointer_attr_to_app(CUpointer_attribute attr, void *data);

/* ---- device addresses of moved __device__ globals ------------------------ */
/*
 * Device memory keeps its addresses across a migration (DESIGN.md §5), but a
 * module's __device__ variables live in memory the driver places when it
 * loads the module: after the thaw reloads it, each variable the
 * application looked up is at a new address while the application still
 * holds the old one. From the thaw on, addresses inside an old range are
 * mapped to the new storage wherever the shim sees them as CUdeviceptr
 * arguments (by value, in const structures, in kernel parameters), and the
 * few calls that return a global's address map it back.
 *
 * The set is an immutable sorted array published through an atomic
 * pointer: readers take no lock, and before any global moved the look-up
 * is one load and a branch. Every reader runs inside the gate (generated
 * wrappers, translate_hook.c hooks, the arena's pointer queries), and the thaw
 * publishes with the gate closed, so no reader holds an array then: a
 * publication with the gate closed frees the arrays retired before it, and
 * keeps the one it replaces until the next (a call let through the closed
 * gate, nested in one in flight, could still be reading it). A set
 * published with the gate open (after a module unload,
 * gs_xlat_moved_globals_unloaded) frees nothing.
 */
struct gs_moved_range {
	CUdeviceptr old_va; /* the address the application holds */
	CUdeviceptr new_va; /* where the variable is now */
	size_t size;        /* bytes; 0 counts as 1 (the address itself) */
};

struct gs_moved_set;

/* NULL while no global has moved. Read through the helpers below. */
extern _Atomic(const struct gs_moved_set *) gs_xlat_moved;

CUdeviceptr gs_xlat_moved_to_real(const struct gs_moved_set *s, CUdeviceptr app);
CUdeviceptr gs_xlat_moved_to_app(const struct gs_moved_set *s, CUdeviceptr real);

/* An address the application passes -> the address the driver must get. */
static inline CUdeviceptr gs_xlat_devptr(CUdeviceptr app)
{
	const struct gs_moved_set *s = atomic_load_explicit(&gs_xlat_moved,
							     memory_order_acquire);

	return GS_UNLIKELY(s != NULL) ? gs_xlat_moved_to_real(s, app) : app;
}

/* A global's address the driver returns -> the one the application knows. */
static inline CUdeviceptr gs_xlat_devptr_app(CUdeviceptr real)
{
	const struct gs_moved_set *s = atomic_load_explicit(&gs_xlat_moved,
							     memory_order_acquire);

	return GS_UNLIKELY(s != NULL) ? gs_xlat_moved_to_app(s, real) : real;
}

/*
 * Thaw, with the gate closed: replace the whole set. Ranges may come in any
 * order; old ranges must not overlap each other, nor new ranges each other
 * (-EINVAL, the set unchanged). Ranges with old_va == new_va are dropped;
 * n == 0 empties the set. 0, -EINVAL or -ENOMEM.
 */
int gs_xlat_set_moved_globals(const struct gs_moved_range *ranges, size_t n);

/* Thaw, with the gate closed, after gs_trk_rebind of every global: the set
 * built from the tracker's global records whose real address differs from
 * the app one. Returns the number of moved globals, or -errno. */
int gs_xlat_refresh_moved_globals(void);

/* After a module or library was unloaded on the migrated path (gate open):
 * drops the ranges of globals the tracker no longer has. */
void gs_xlat_moved_globals_unloaded(void);

/* Number of ranges in the set. */
size_t gs_xlat_moved_count(void);

/*
 * Kernel parameters holding the address of a moved global (8-byte
 * parameters, layout from the tracker). gs_xlat_kernel_params_begin points
 * *kernel_params (and *extra, either may be NULL) at private copies with
 * the new addresses when any parameter needs it, and leaves them as they
 * are otherwise; the application's arrays are never written. The driver
 * copies parameters at launch, so the copies live only until
 * gs_xlat_kernel_params_end, after the call. `f` is the app-visible
 * CUfunction (or a CUkernel passed as one). CUDA_SUCCESS, or
 * CUDA_ERROR_OUT_OF_MEMORY.
 */
#define GS_KPARAMS_STACK 32
#define GS_KPARAMS_EXTRA_STACK 256

struct gs_kparams_copy {
	void **params;       /* the kernelParams copy, or NULL */
	uint64_t *values;    /* the translated values it points to */
	void **extra;        /* the extra copy, or NULL */
	unsigned char *buffer; /* the extra parameter buffer copy */
	/* storage for small launches */
	void *params_stack[GS_KPARAMS_STACK];
	uint64_t values_stack[GS_KPARAMS_STACK];
	void *extra_stack[8];
	_Alignas(16) unsigned char buffer_stack[GS_KPARAMS_EXTRA_STACK];
};

CUresult gs_xlat_kernel_params_begin(struct gs_kparams_copy *c, CUfunction f,
				     void ***kernel_params, void ***extra);
void gs_xlat_kernel_params_end(struct gs_kparams_copy *c);

/* ---- what is not translated ------------------------------------------------ */

/* Symbol `sym` was called after a migration with arguments the shim leaves
 * untranslated (gs_xlat_untranslated[sym], or part of a hand-written hook):
 * logged once per symbol, and recorded. */
void gs_xlat_unsupported(int sym);

/* Symbols recorded by gs_xlat_unsupported, in symbol order: fills at most
 * cap entries of syms, returns how many there are. */
size_t gs_xlat_unsupported_seen(int *syms, size_t cap);

/* Exported like gs_introspect_* (found with dlsym by tests and tools): the
 * names of the symbols gs_xlat_unsupported_seen lists. Fills at most cap
 * entries, returns how many there are. */
GS_EXPORT size_t gs_introspect_untranslated(const char **symbols, size_t cap);

/*
 * For gpu-freeze --check: every symbol that has parameters the shim cannot
 * translate after a migration and that the application has called (before
 * or since a migration). fn gets the symbol, its untranslated parameters, and
 * the application's call count; a non-zero return stops the walk. Returns
 * the number of symbols reported.
 */
typedef int gs_xlat_problem_fn(const char *symbol, const char *params, uint64_t calls,
			       void *arg);
int gs_xlat_check(gs_xlat_problem_fn *fn, void *arg);

/* ---- export tables -------------------------------------------------------- */

/*
 * The wrapper builder (exporttable.h) of the export tables that carry
 * CUcontext values: the cudart interface (entry 2 returns a device's primary
 * context) and context-local storage (keyed by context). Before a migration
 * it hands back the driver's table itself. Once migrated it returns a copy
 * of the driver's table, sized by the table's own leading size field, whose
 * context-carrying entries are shim functions that forward to the driver's
 * and translate. A table whose layout looks unexpected is passed through
 * (-EPROTO, logged). A table the application obtained before the migration
 * (cudart asks at start-up and keeps the pointer) is not reached by this.
 */
int gs_xlat_wrap_export_table(const CUuuid *id, const void *real_table,
			      const void **app_table);

#endif
