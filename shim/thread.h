/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Per-thread state of the shim.
 *
 * Every thread that makes a driver call gets one struct gs_thread, created on
 * its first call and registered in a global list, so that the gate can see
 * which calls are in flight and introspection can sum the call counters,
 * without any shared counter being written on the hot path. A thread's
 * record is folded into the totals and freed when the thread exits.
 *
 * Separately, a per-thread "inside the shim" depth marks calls the shim
 * makes itself (dumping, restoring, initialising): wrappers forward those
 * to the real driver untracked, ungated and untranslated.
 */
#ifndef GS_THREAD_H
#define GS_THREAD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "g_api.h"

#define GS_TLS __attribute__((tls_model("initial-exec")))

struct gs_thread {
	/* Gate nesting depth of this thread's driver calls; read by the
	 * closer (gate.c). */
	_Atomic unsigned gate_depth;
	/* Symbol index of the outermost call in flight, for reports. */
	_Atomic int gate_symbol;
	/* The gate epoch (word bits, gate.h) this thread's driver state was
	 * last brought up to. Only the thread itself uses it. */
	unsigned gate_epoch;
	pid_t tid;
	struct gs_thread *next;
	struct gs_thread *prev;
	/* Calls seen per symbol. Only this thread writes (plain load + store,
	 * no locked instruction); readers load them atomically. */
	_Atomic uint64_t calls[GS_API_COUNT];
};

extern __thread struct gs_thread *gs_thread_self GS_TLS;
extern __thread unsigned gs_inside_depth GS_TLS;

/* ---- inside the shim ------------------------------------------------------ */

/* True while this thread runs shim code that calls the driver itself. */
static inline bool gs_inside(void)
{
	return __builtin_expect(gs_inside_depth != 0, 0);
}

/* Bracket the shim's own driver calls; nests. */
static inline void gs_inside_begin(void)
{
	gs_inside_depth++;
}

static inline void gs_inside_end(void)
{
	gs_inside_depth--;
}

/* ---- this thread's record ------------------------------------------------- */

/* Slow path of gs_thread_get(): allocate and register. NULL on ENOMEM. */
struct gs_thread *gs_thread_attach(void);

static inline struct gs_thread *gs_thread_get(void)
{
	struct gs_thread *t = gs_thread_self;

	if (__builtin_expect(t == NULL, 0))
		t = gs_thread_attach();
	return t;
}

static inline void gs_thread_count(struct gs_thread *t, int sym)
{
	uint64_t n = atomic_load_explicit(&t->calls[sym], memory_order_relaxed);

	atomic_store_explicit(&t->calls[sym], n + 1, memory_order_relaxed);
}

/* ---- the registry ----------------------------------------------------------- */

/* Visit every live thread record under the registry lock; fn returns
 * non-zero to stop. fn must not call into the registry. Returns fn's value
 * or 0. */
int gs_thread_foreach(int (*fn)(struct gs_thread *t, void *arg), void *arg);

/* Calls of symbol `sym` by every thread, live and exited. */
uint64_t gs_thread_calls(int sym);

/* Fill totals[GS_API_COUNT] with the calls of every symbol. */
void gs_thread_calls_all(uint64_t *totals);

/* Install the fork handler (once). Called by the shim's initialisation. */
void gs_thread_setup(void);

/* Number of registered (live) thread records, for tests. */
unsigned gs_thread_live_count(void);

#endif
