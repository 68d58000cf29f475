/* SPDX-License-Identifier: Apache-2.0 */
#define GS_LOG_SUBSYS "shim"
#include "gate.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "proctable.h"

_Atomic unsigned gs_gate_word;

/* Bumped by every thread that leaves the gate while it is closed; the
 * closer sleeps on it (futex) instead of polling. */
static _Atomic unsigned drain_seq;
/* One closer at a time; also orders close/open. */
static pthread_mutex_t close_lock = PTHREAD_MUTEX_INITIALIZER;
static bool use_membarrier;

static long futex(_Atomic unsigned *word, int op, unsigned val, const struct timespec *timeout)
{
	/* The futex syscall takes the plain 32-bit word; _Atomic unsigned has
	 * the same size and representation here. */
	return syscall(SYS_futex, (unsigned *)word, op, val, timeout, NULL, 0);
}

static int membarrier(int cmd, unsigned flags)
{
	return (int)syscall(__NR_membarrier, cmd, flags, 0);
}

int gs_gate_setup(enum gs_gate_barrier barrier)
{
	int mask;

	if (barrier == GS_GATE_BARRIER_FENCE) {
		use_membarrier = false;
		atomic_fetch_or(&gs_gate_word, GS_GATE_FENCE);
		return 0;
	}
	mask = membarrier(MEMBARRIER_CMD_QUERY, 0);
	if (mask >= 0 && (mask & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
	    membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0) == 0) {
		use_membarrier = true;
		atomic_fetch_and(&gs_gate_word, ~GS_GATE_FENCE);
		return 0;
	}
	if (barrier == GS_GATE_BARRIER_MEMBARRIER)
		return -ENOSYS;
	gs_info("membarrier(PRIVATE_EXPEDITED) unavailable: every gated call pays a fence");
	use_membarrier = false;
	atomic_fetch_or(&gs_gate_word, GS_GATE_FENCE);
	return 0;
}

bool gs_gate_uses_fences(void)
{
	return (atomic_load(&gs_gate_word) & GS_GATE_FENCE) != 0;
}

bool gs_gate_is_closed(void)
{
	return (atomic_load(&gs_gate_word) & GS_GATE_CLOSED) != 0;
}

static void wake_closer(void)
{
	atomic_fetch_add_explicit(&drain_seq, 1, memory_order_release);
	futex(&drain_seq, FUTEX_WAKE_PRIVATE, 1, NULL);
}

void gs_gate_thread_gone(void)
{
	if (atomic_load(&gs_gate_word) & GS_GATE_CLOSED)
		wake_closer();
}

/*
 * The gate word, read after this thread's depth update is globally ordered
 * when fences stand in for membarrier: a sequentially consistent
 * read-modify-write of our own depth, then a sequentially consistent load,
 * pairing with the closer's seq_cst fetch_or of the word and seq_cst loads
 * of the depths (Dekker's pattern in the C11 model). An RMW rather than
 * atomic_thread_fence, which ThreadSanitizer cannot model.
 */
static unsigned load_word_ordered(struct gs_thread *t)
{
	unsigned w = atomic_load_explicit(&gs_gate_word, memory_order_acquire);

	if (w & GS_GATE_FENCE) {
		atomic_fetch_add_explicit(&t->gate_depth, 0, memory_order_seq_cst);
		w = atomic_load_explicit(&gs_gate_word, memory_order_seq_cst);
	}
	return w;
}

static _Atomic(gs_gate_epoch_fn *) epoch_handler;

void gs_gate_set_epoch_handler(gs_gate_epoch_fn *fn)
{
	atomic_store_explicit(&epoch_handler, fn, memory_order_release);
}

unsigned gs_gate_epoch(void)
{
	return atomic_load(&gs_gate_word) >> GS_GATE_EPOCH_SHIFT;
}

int gs_gate_next_epoch(unsigned *epoch)
{
	unsigned w;
	int rc = 0;

	pthread_mutex_lock(&close_lock);
	if (!(atomic_load(&gs_gate_word) & GS_GATE_CLOSED)) {
		rc = -EPERM;
	} else {
		/* Wraps after 2^30 migrations, back into the same bits. */
		w = atomic_fetch_add(&gs_gate_word, GS_GATE_EPOCH_ONE) + GS_GATE_EPOCH_ONE;
		if (epoch)
			*epoch = w >> GS_GATE_EPOCH_SHIFT;
	}
	pthread_mutex_unlock(&close_lock);
	return rc;
}

/* The thread passed an open gate in a newer epoch than its driver state's. */
static void epoch_catch_up(struct gs_thread *t, unsigned w)
{
	gs_gate_epoch_fn *fn = atomic_load_explicit(&epoch_handler, memory_order_acquire);
	unsigned old = t->gate_epoch;

	t->gate_epoch = w & ~GS_GATE_FLAGS;
	if (fn)
		fn(t, old >> GS_GATE_EPOCH_SHIFT, w >> GS_GATE_EPOCH_SHIFT);
}

void gs_gate_enter_slow(struct gs_thread *t)
{
	for (;;) {
		unsigned w = load_word_ordered(t);

		if (!(w & GS_GATE_CLOSED)) {
			/* Only the outermost call: a nested one runs inside a
			 * call that already passed in this epoch. */
			if ((w & ~GS_GATE_FLAGS) != t->gate_epoch &&
			    atomic_load_explicit(&t->gate_depth, memory_order_relaxed) == 1)
				epoch_catch_up(t, w);
			return;
		}
		/* Nested call of a thread already in flight. */
		if (atomic_load_explicit(&t->gate_depth, memory_order_relaxed) > 1)
			return;
		/* Step back out, so the drain does not count this thread, and
		 * sleep until the word changes (the gate reopens). */
		atomic_store_explicit(&t->gate_depth, 0, memory_order_release);
		wake_closer();
		futex(&gs_gate_word, FUTEX_WAIT_PRIVATE, w, NULL);
		/* Rare: a full barrier (seq_cst store) keeps the retry simple. */
		atomic_store_explicit(&t->gate_depth, 1, memory_order_seq_cst);
	}
}

void gs_gate_exit_slow(struct gs_thread *t)
{
	unsigned w = load_word_ordered(t);

	if ((w & GS_GATE_CLOSED) &&
	    atomic_load_explicit(&t->gate_depth, memory_order_relaxed) == 0)
		wake_closer();
}

struct scan {
	pid_t self;
	unsigned busy;
	pid_t busy_tid;
	struct gs_gate_report *report;
};

static int scan_thread(struct gs_thread *t, void *arg)
{
	struct scan *s = arg;

	if (t->tid == s->self)
		return 0;
	/* seq_cst: pairs with load_word_ordered() in fence mode. */
	if (atomic_load_explicit(&t->gate_depth, memory_order_seq_cst) == 0)
		return 0;
	s->busy_tid = t->tid;
	if (s->report && s->busy < GS_GATE_REPORT_MAX) {
		struct gs_gate_inflight *c = &s->report->calls[s->busy];
		int sym = atomic_load_explicit(&t->gate_symbol, memory_order_relaxed);

		c->tid = t->tid;
		c->symbol = sym;
		c->name = (sym >= 0 && (size_t)sym < gs_api_symbols_len) ? gs_api_symbols[sym] : "?";
	}
	s->busy++;
	return 0;
}

static unsigned count_in_flight(struct gs_gate_report *report, pid_t *busy_tid)
{
	struct scan s = { .self = gettid(), .busy = 0, .report = report };

	gs_thread_foreach(scan_thread, &s);
	if (report)
		report->in_flight = s.busy;
	if (busy_tid && s.busy)
		*busy_tid = s.busy_tid;
	return s.busy;
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Clear CLOSED and wake every sleeper. Called with close_lock held. */
static void reopen_locked(void)
{
	atomic_fetch_and(&gs_gate_word, ~GS_GATE_CLOSED);
	futex(&gs_gate_word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL);
}

int gs_gate_close(unsigned timeout_ms, struct gs_gate_report *report)
{
	return gs_gate_close_stats(timeout_ms, report, NULL);
}

int gs_gate_close_stats(unsigned timeout_ms, struct gs_gate_report *report,
			struct gs_gate_close_stats *stats)
{
	struct gs_gate_close_stats st = { 0 };
	int64_t deadline, t0, t1;
	int rc = 0;

	pthread_mutex_lock(&close_lock);
	if (atomic_load(&gs_gate_word) & GS_GATE_CLOSED) {
		pthread_mutex_unlock(&close_lock);
		return -EALREADY;
	}
	atomic_fetch_or_explicit(&gs_gate_word, GS_GATE_CLOSED, memory_order_seq_cst);
	/*
	 * Pairs with the compiler-only barrier between the depth store and the
	 * gate-word load in gs_gate_enter(): after this, every thread either
	 * has its depth store visible to the scan below or will see the gate
	 * closed. (In fence mode the seq_cst operations above and in the scan
	 * do the same.)
	 */
	t0 = now_ns();
	if (use_membarrier && membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0) != 0) {
		rc = -errno;
		gs_perror("membarrier failed while closing the gate");
		reopen_locked();
		pthread_mutex_unlock(&close_lock);
		return rc;
	}
	t1 = now_ns();
	st.barrier_ns = use_membarrier ? t1 - t0 : 0;

	deadline = t1 + (int64_t)timeout_ms * 1000000;
	for (;;) {
		unsigned seq = atomic_load_explicit(&drain_seq, memory_order_acquire);
		unsigned busy;
		int64_t left;
		struct timespec ts;

		busy = count_in_flight(NULL, &st.last_tid);
		if (st.scans++ == 0)
			st.in_flight = busy;
		if (busy == 0)
			break;
		left = deadline - now_ns();
		if (left <= 0) {
			if (report)
				count_in_flight(report, NULL);
			reopen_locked();
			rc = -ETIMEDOUT;
			break;
		}
		ts.tv_sec = left / 1000000000;
		ts.tv_nsec = left % 1000000000;
		/* Returns at once if a thread left since seq was read. */
		st.sleeps++;
		if (futex(&drain_seq, FUTEX_WAIT_PRIVATE, seq, &ts) != 0 && errno == ETIMEDOUT)
			st.timeouts++;
	}
	st.drain_ns = now_ns() - t1;
	pthread_mutex_unlock(&close_lock);
	if (stats)
		*stats = st;
	return rc;
}

int gs_gate_open(void)
{
	int rc = 0;

	pthread_mutex_lock(&close_lock);
	if (atomic_load(&gs_gate_word) & GS_GATE_CLOSED)
		reopen_locked();
	else
		rc = -EALREADY;
	pthread_mutex_unlock(&close_lock);
	return rc;
}

void gs_gate_reset_after_fork(void)
{
	pthread_mutex_init(&close_lock, NULL);
	atomic_fetch_and(&gs_gate_word, ~GS_GATE_CLOSED);
}
