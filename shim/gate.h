/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The gate (DESIGN.md §6): every gated driver call runs between
 * gs_gate_enter() and gs_gate_exit(). A freeze closes the gate, waits for
 * the calls in flight to leave, and from then on threads that arrive sleep
 * until the gate reopens.
 *
 * Fast path: a store to this thread's own depth counter and one load of the
 * global gate word, no locked instruction, no fence. The store -> load order
 * that the closer relies on (a thread either sees the gate closed or is seen
 * in flight) is enforced from the closer's side with membarrier(2)
 * (MEMBARRIER_CMD_PRIVATE_EXPEDITED), the scheme of userspace RCU. Where the
 * kernel lacks it, the gate word carries GS_GATE_FENCE permanently, which
 * sends every call through a slow path with a full fence.
 *
 * A thread already inside a gated call (a driver callback calling the
 * driver again on the same thread) is let through a closed gate: blocking
 * it would make the drain wait for itself.
 */
#ifndef GS_GATE_H
#define GS_GATE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "thread.h"

#define GS_GATE_CLOSED 1u
#define GS_GATE_FENCE 2u
#define GS_GATE_FLAGS (GS_GATE_CLOSED | GS_GATE_FENCE)

/*
 * The bits above the flags count migrations ("epochs"). After a migration
 * the driver's per-thread state (each thread's current context stack) still
 * names the contexts the migration destroyed, and only the thread itself can
 * change it. So every thread remembers the epoch it last brought its driver
 * state up to (gs_thread.gate_epoch, kept as word bits), and the fast path
 * compares the whole word with that: a new epoch sends the thread's next
 * gated call through the slow path once, which runs the epoch handler on
 * the thread before the call proceeds.
 */
#define GS_GATE_EPOCH_SHIFT 2
#define GS_GATE_EPOCH_ONE (1u << GS_GATE_EPOCH_SHIFT)

/* Equal to the calling thread's gate_epoch on the fast path. A 32-bit
 * futex word. */
extern _Atomic unsigned gs_gate_word;

void gs_gate_enter_slow(struct gs_thread *t);
void gs_gate_exit_slow(struct gs_thread *t);

static inline __attribute__((always_inline)) void gs_gate_enter(struct gs_thread *t, int sym)
{
	unsigned depth = atomic_load_explicit(&t->gate_depth, memory_order_relaxed);

	if (depth == 0)
		atomic_store_explicit(&t->gate_symbol, sym, memory_order_relaxed);
	atomic_store_explicit(&t->gate_depth, depth + 1, memory_order_relaxed);
	/* Compiler barrier only: the CPU-level order comes from membarrier()
	 * in gs_gate_close(). */
	atomic_signal_fence(memory_order_seq_cst);
	if (__builtin_expect(atomic_load_explicit(&gs_gate_word, memory_order_acquire) !=
			     t->gate_epoch, 0))
		gs_gate_enter_slow(t);
}

static inline __attribute__((always_inline)) void gs_gate_exit(struct gs_thread *t)
{
	unsigned depth = atomic_load_explicit(&t->gate_depth, memory_order_relaxed);

	atomic_store_explicit(&t->gate_depth, depth - 1, memory_order_release);
	atomic_signal_fence(memory_order_seq_cst);
	if (__builtin_expect(atomic_load_explicit(&gs_gate_word, memory_order_relaxed) &
			     GS_GATE_FLAGS, 0))
		gs_gate_exit_slow(t);
}

enum gs_gate_barrier {
	GS_GATE_BARRIER_AUTO,       /* membarrier if the kernel has it */
	GS_GATE_BARRIER_MEMBARRIER, /* fail with -ENOSYS if it does not */
	GS_GATE_BARRIER_FENCE,      /* fences in every call (tests) */
};

/* Choose how the closer orders memory. Call once before the first call is
 * gated (the shim's initialisation does); 0 or -errno. */
int gs_gate_setup(enum gs_gate_barrier barrier);

/* Whether calls pay for a fence (no membarrier). */
bool gs_gate_uses_fences(void);

#define GS_GATE_REPORT_MAX 32

struct gs_gate_inflight {
	pid_t tid;
	int symbol;         /* index in gs_api_symbols, -1 if unknown */
	const char *name;   /* gs_api_symbols[symbol] or "?" */
};

struct gs_gate_report {
	unsigned in_flight; /* threads still inside a call (may exceed the array) */
	struct gs_gate_inflight calls[GS_GATE_REPORT_MAX];
};

/*
 * Close the gate and wait up to timeout_ms for every call in flight to
 * leave (the calling thread's own call, if any, is not waited for).
 * Returns 0 with the gate closed and nothing in flight;
 * -ETIMEDOUT with the gate reopened and *report (if non-NULL) naming the
 * calls that were still in flight; -EALREADY if the gate is already closed;
 * or another -errno with the gate reopened.
 */
int gs_gate_close(unsigned timeout_ms, struct gs_gate_report *report);

/* Where one close's time went (bench/bench-freeze prints it). */
struct gs_gate_close_stats {
	int64_t barrier_ns;  /* the membarrier call (0 in fence mode) */
	int64_t drain_ns;    /* after it, until nothing was in flight */
	unsigned in_flight;  /* calls in flight at the first scan */
	unsigned scans;      /* scans of the thread records */
	unsigned sleeps;     /* futex waits of the closer */
	unsigned timeouts;   /* ... of which ended by their timeout */
	pid_t last_tid;      /* a thread in flight at the last scan that found one */
};

/* gs_gate_close(), also filling *stats (if non-NULL) when it returns 0 or
 * -ETIMEDOUT. */
int gs_gate_close_stats(unsigned timeout_ms, struct gs_gate_report *report,
			struct gs_gate_close_stats *stats);

/* Reopen the gate and wake every thread waiting at it. 0, or -EALREADY if
 * it was open. */
int gs_gate_open(void);

bool gs_gate_is_closed(void);

/*
 * Epochs. The handler runs on a thread at its first outermost gated call in
 * a new epoch, after the gate let it through and before the call goes on
 * (the thread counts as in flight meanwhile, so no freeze can overtake it);
 * `old_epoch` is the epoch the thread's driver state belongs to. It must
 * make its own driver calls inside the shim (gs_inside_begin).
 */
typedef void gs_gate_epoch_fn(struct gs_thread *t, unsigned old_epoch, unsigned new_epoch);
void gs_gate_set_epoch_handler(gs_gate_epoch_fn *fn);
/* The current epoch. */
unsigned gs_gate_epoch(void);
/* Start the next epoch; the gate must be closed (-EPERM otherwise). Threads
 * meet the handler once it reopens. */
int gs_gate_next_epoch(unsigned *epoch);

/* A thread record is going away while its depth is non-zero. */
void gs_gate_thread_gone(void);

/* Fork child: nobody in the child can reopen a gate closed in the parent. */
void gs_gate_reset_after_fork(void);

#endif
