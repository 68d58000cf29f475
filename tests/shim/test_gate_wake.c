/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The closer's wake-ups (shim/gate.c): every thread that leaves a closed
 * gate, or steps back from it, must wake a closer that sleeps on the drain.
 * A lost wake-up would not show in the close's result (the closer's futex
 * wait times out, it scans again and finds the gate drained), only in its
 * time: so these checks count the closer's futex waits that ended by their
 * timeout (gs_gate_close_stats), which must be none. No check depends on
 * how fast anything runs. Run as `test_gate_wake membarrier` or
 * `test_gate_wake fence`.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "gatetest.h"
#include "proctable.h"
#include "shimtest.h"
#include "thread.h"

/* Long enough that no healthy drain below comes near it: a close that
 * needed its timeout to notice a leaver shows up as a counted timeout. */
#define CLOSE_TIMEOUT_MS 20000u

static void sleep_us(long us)
{
	struct timespec ts = { .tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000 };

	nanosleep(&ts, NULL);
}

struct holder {
	pthread_t thread;
	_Atomic int inside;
	_Atomic int release;
};

static void *holder_main(void *arg)
{
	struct holder *h = arg;
	struct gs_thread *t = gs_thread_get();

	gs_gate_enter(t, GS_SYM_cuStreamSynchronize);
	atomic_store(&h->inside, 1);
	while (!atomic_load(&h->release))
		sleep_us(100);
	gs_gate_exit(t);
	return NULL;
}

struct closer {
	pthread_t thread;
	int rc;
	struct gs_gate_close_stats st;
};

static void *closer_main(void *arg)
{
	struct closer *c = arg;

	c->rc = gs_gate_close_stats(CLOSE_TIMEOUT_MS, NULL, &c->st);
	return NULL;
}

/* One call in flight, left long after the closer has gone to sleep: its
 * exit alone must wake the closer. */
static void test_sleeping_closer_woken(void)
{
	struct holder h;
	struct closer c;

	memset(&h, 0, sizeof(h));
	memset(&c, 0, sizeof(c));
	REQUIRE(pthread_create(&h.thread, NULL, holder_main, &h) == 0, "create holder");
	while (!atomic_load(&h.inside))
		sleep_us(100);
	REQUIRE(pthread_create(&c.thread, NULL, closer_main, &c) == 0, "create closer");
	while (!gs_gate_is_closed())
		sleep_us(100);
	sleep_us(50000);
	atomic_store(&h.release, 1);
	pthread_join(c.thread, NULL);
	pthread_join(h.thread, NULL);
	CHECK(c.rc == 0, "close returned %d", c.rc);
	CHECK(c.st.in_flight == 1, "in flight at the first scan: %u", c.st.in_flight);
	CHECK(c.st.timeouts == 0, "the closer's futex wait timed out %u times: a lost wake-up",
	      c.st.timeouts);
	CHECK(gs_gate_open() == 0, "open");
}

/* Callers that stay in their calls for varying times (none, a yield, a
 * short sleep), so that closes end while the closer scans or sleeps, and
 * callers meet the closed gate at every point of their call. */
static _Atomic int stop;

static void *worker_main(void *arg)
{
	struct gs_thread *t = gs_thread_get();
	unsigned x = (unsigned)(uintptr_t)arg * 2654435761u + 1;

	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		x = x * 1103515245u + 12345u;
		gs_gate_enter(t, GS_SYM_cuStreamQuery);
		switch ((x >> 16) % 8) {
		case 0:
			sleep_us((long)((x >> 8) % 200));
			break;
		case 1:
			sched_yield();
			break;
		default:
			break;
		}
		gs_gate_exit(t);
	}
	return NULL;
}

static void test_stress(void)
{
	enum { WORKERS = 6 };
	int rounds = UNDER_TSAN ? 200 : 2000;
	pthread_t w[WORKERS];
	unsigned timeouts = 0, sleeps = 0, failed = 0;

	for (int i = 0; i < WORKERS; i++)
		REQUIRE(pthread_create(&w[i], NULL, worker_main, (void *)(uintptr_t)i) == 0,
			"create");
	for (int r = 0; r < rounds; r++) {
		struct gs_gate_close_stats st;

		if (gs_gate_close_stats(CLOSE_TIMEOUT_MS, NULL, &st) != 0) {
			failed++;
			continue;
		}
		timeouts += st.timeouts;
		sleeps += st.sleeps;
		gs_gate_open();
		if (r % 4 == 0)
			sleep_us(100);
	}
	atomic_store(&stop, 1);
	for (int i = 0; i < WORKERS; i++)
		pthread_join(w[i], NULL);
	CHECK(failed == 0, "%u closes failed", failed);
	CHECK(timeouts == 0, "the closer's futex wait timed out %u times: a lost wake-up",
	      timeouts);
	printf("stress: %d closes, %u futex sleeps of the closer, none timed out\n", rounds, sleeps);
}

int main(int argc, char **argv)
{
	gatetest_setup(argc, argv, "gate wake-up test");

	test_sleeping_closer_woken();
	test_stress();
	return shimtest_result("gate-wake");
}
