/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the generated wrappers (g_wrappers.c) and the hand-written hooks
 * need from the shim's core: initialisation, per-thread state, the gate,
 * the migrated flag.
 */
#ifndef GS_SHIM_H
#define GS_SHIM_H

#include <cuda.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "g_api.h"
#include "gate.h"
#include "thread.h"

#define GS_EXPORT __attribute__((visibility("default")))
#define GS_LIKELY(x) __builtin_expect(!!(x), 1)
#define GS_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* ---- initialisation (init.c) ---------------------------------------------- */

enum gs_init_state {
	GS_INIT_NONE,      /* not yet (or in progress) */
	GS_INIT_READY,     /* real driver loaded */
	GS_INIT_NO_DRIVER, /* none found: every call fails with NO_DEVICE */
};

extern _Atomic int gs_init_state;

/* Run the one-time initialisation (pthread_once) if it has not run.
 * CUDA_SUCCESS, or CUDA_ERROR_NO_DEVICE without a real driver. */
CUresult gs_init_slow(void);

static inline __attribute__((always_inline)) CUresult gs_init(void)
{
	if (GS_LIKELY(atomic_load_explicit(&gs_init_state, memory_order_acquire) == GS_INIT_READY))
		return CUDA_SUCCESS;
	return gs_init_slow();
}

/* Start of every wrapped call: initialisation, this thread's record, the
 * call counter. */
static inline __attribute__((always_inline)) CUresult gs_call_begin(int sym, struct gs_thread **self)
{
	CUresult rc = gs_init();
	struct gs_thread *t;

	if (GS_UNLIKELY(rc != CUDA_SUCCESS))
		return rc;
	t = gs_thread_get();
	if (GS_UNLIKELY(t == NULL))
		return CUDA_ERROR_OUT_OF_MEMORY;
	gs_thread_count(t, sym);
	*self = t;
	return CUDA_SUCCESS;
}

/* Count a call to a custom export (which does its own initialisation). */
void gs_count_call(int sym);

/* The driver has no `sym` (or there is no driver, or initialisation is
 * still running on this thread): the error to return. Logs once per symbol. */
CUresult gs_missing(int sym);

/* ---- handle translation (DESIGN.md §4) ------------------------------------ */

/*
 * False until the first migration: handles are the real driver's and
 * wrappers take no translation step. Set by thaw, with the gate closed,
 * once the handle maps are in place.
 */
extern _Atomic bool gs_migrated;

static inline bool gs_migrated_load(void)
{
	return atomic_load_explicit(&gs_migrated, memory_order_relaxed);
}

void gs_set_migrated(bool migrated);

/* Marks where a wrapper will translate handles once migrated; logs once
 * per symbol that translation is not available yet. */
void gs_translation_pending(int sym);

#endif
