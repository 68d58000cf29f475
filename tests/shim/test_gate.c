/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The gate (shim/gate.c) on its own: closing with nothing in flight, the
 * drain, the timeout report, threads sleeping at a closed gate, nested calls,
 * thread exit, and a stress run in which a closer mutates plain (non-atomic)
 * data while the gate is closed and callers check it inside the gate: any
 * missing ordering shows up as a torn read, and under ThreadSanitizer as a
 * race report. Run as `test_gate membarrier` or `test_gate fence`.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gatetest.h"
#include "proctable.h"
#include "shimtest.h"
#include "thread.h"

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

/* A thread that enters the gate and stays until released. */
struct holder {
	pthread_t thread;
	int sym;
	bool nested;          /* make a nested call once the gate is closed */
	_Atomic int inside;   /* 1 once in the gate */
	_Atomic int release;  /* set to let it leave */
	_Atomic int64_t left_ns;
	pid_t tid;
};

static void *holder_main(void *arg)
{
	struct holder *h = arg;
	struct gs_thread *t = gs_thread_get();

	h->tid = gettid();
	gs_gate_enter(t, h->sym);
	atomic_store(&h->inside, 1);
	if (h->nested) {
		while (!gs_gate_is_closed())
			sleep_ms(1);
		/* Same thread, already in flight: must not wait at the gate. */
		gs_gate_enter(t, GS_SYM_cuInit);
		gs_gate_exit(t);
		atomic_store(&h->inside, 2);
	}
	while (!atomic_load(&h->release))
		sleep_ms(1);
	atomic_store(&h->left_ns, now_ns());
	gs_gate_exit(t);
	return NULL;
}

static void holder_start(struct holder *h, int sym, bool nested)
{
	memset(h, 0, sizeof(*h));
	h->sym = sym;
	h->nested = nested;
	REQUIRE(pthread_create(&h->thread, NULL, holder_main, h) == 0, "pthread_create");
	while (!atomic_load(&h->inside))
		sleep_ms(1);
}

static void test_basic(void)
{
	struct gs_thread *t = gs_thread_get();
	int64_t t0;

	REQUIRE(t != NULL, "no thread record");
	gs_gate_enter(t, GS_SYM_cuInit);
	CHECK(atomic_load(&t->gate_depth) == 1, "depth %u", atomic_load(&t->gate_depth));
	gs_gate_exit(t);
	CHECK(atomic_load(&t->gate_depth) == 0, "depth %u", atomic_load(&t->gate_depth));

	t0 = now_ns();
	CHECK(gs_gate_close(1000, NULL) == 0, "close with nothing in flight");
	CHECK(now_ns() - t0 < 500000000, "closing an idle gate took %lld ns",
	      (long long)(now_ns() - t0));
	CHECK(gs_gate_is_closed(), "gate not closed");
	CHECK(gs_gate_close(1000, NULL) == -EALREADY, "second close");
	CHECK(gs_gate_open() == 0, "open");
	CHECK(!gs_gate_is_closed(), "gate still closed");
	CHECK(gs_gate_open() == -EALREADY, "second open");
}

static void test_timeout_report(void)
{
	struct gs_gate_report rep;
	struct holder h;
	int64_t t0, took;
	int rc;

	holder_start(&h, GS_SYM_cuStreamSynchronize, false);
	memset(&rep, 0, sizeof(rep));
	t0 = now_ns();
	rc = gs_gate_close(150, &rep);
	took = now_ns() - t0;
	CHECK(rc == -ETIMEDOUT, "close returned %d, want -ETIMEDOUT", rc);
	CHECK(took >= 140000000, "timed out after %lld ns, before the timeout", (long long)took);
	CHECK(!gs_gate_is_closed(), "a timed-out close must reopen the gate");
	CHECK(rep.in_flight == 1, "in_flight %u", rep.in_flight);
	CHECK(rep.calls[0].tid == h.tid, "reported tid %d, want %d", (int)rep.calls[0].tid,
	      (int)h.tid);
	CHECK(rep.calls[0].name && strcmp(rep.calls[0].name, "cuStreamSynchronize") == 0,
	      "reported call %s", rep.calls[0].name ? rep.calls[0].name : "(null)");
	atomic_store(&h.release, 1);
	pthread_join(h.thread, NULL);
}

struct closer {
	pthread_t thread;
	unsigned timeout_ms;
	int rc;
	int64_t done_ns;
};

static void *closer_main(void *arg)
{
	struct closer *c = arg;

	c->rc = gs_gate_close(c->timeout_ms, NULL);
	c->done_ns = now_ns();
	return NULL;
}

static void test_drain(void)
{
	struct holder h;
	struct closer c = { .timeout_ms = 10000 };

	holder_start(&h, GS_SYM_cuMemcpyDtoH_v2, false);
	REQUIRE(pthread_create(&c.thread, NULL, closer_main, &c) == 0, "pthread_create");
	while (!gs_gate_is_closed())
		sleep_ms(1);
	sleep_ms(50);
	atomic_store(&h.release, 1);
	pthread_join(c.thread, NULL);
	pthread_join(h.thread, NULL);
	CHECK(c.rc == 0, "close returned %d", c.rc);
	CHECK(c.done_ns >= atomic_load(&h.left_ns), "close returned before the call left");
	CHECK(c.done_ns - atomic_load(&h.left_ns) < 2000000000LL,
	      "the closer took %lld ns to notice the drain (it must be woken, not poll)",
	      (long long)(c.done_ns - atomic_load(&h.left_ns)));
	CHECK(gs_gate_open() == 0, "open");
}

struct arrival {
	pthread_t thread;
	_Atomic int *passed;
};

static void *arrival_main(void *arg)
{
	struct arrival *a = arg;
	struct gs_thread *t = gs_thread_get();

	gs_gate_enter(t, GS_SYM_cuLaunchKernel);
	atomic_fetch_add(a->passed, 1);
	gs_gate_exit(t);
	return NULL;
}

static void test_arrivals_sleep(void)
{
	enum { N = 4 };
	struct arrival a[N];
	_Atomic int passed = 0;

	CHECK(gs_gate_close(1000, NULL) == 0, "close");
	for (int i = 0; i < N; i++) {
		a[i].passed = &passed;
		REQUIRE(pthread_create(&a[i].thread, NULL, arrival_main, &a[i]) == 0, "create");
	}
	sleep_ms(150);
	CHECK(atomic_load(&passed) == 0, "%d thread(s) passed a closed gate", atomic_load(&passed));
	/* Sleepers have stepped back out: a second closer would not wait. */
	CHECK(gs_gate_open() == 0, "open");
	for (int i = 0; i < N; i++)
		pthread_join(a[i].thread, NULL);
	CHECK(atomic_load(&passed) == N, "%d of %d threads passed after reopening",
	      atomic_load(&passed), N);
}

static void test_nested(void)
{
	struct holder h;
	struct closer c = { .timeout_ms = 10000 };

	holder_start(&h, GS_SYM_cuStreamSynchronize, true);
	REQUIRE(pthread_create(&c.thread, NULL, closer_main, &c) == 0, "pthread_create");
	for (int i = 0; i < 2000 && atomic_load(&h.inside) != 2; i++)
		sleep_ms(1);
	CHECK(atomic_load(&h.inside) == 2, "a nested call blocked at the closed gate");
	atomic_store(&h.release, 1);
	pthread_join(h.thread, NULL);
	pthread_join(c.thread, NULL);
	CHECK(c.rc == 0, "close returned %d", c.rc);
	CHECK(gs_gate_open() == 0, "open");
}

static void *count_and_exit(void *arg)
{
	struct gs_thread *t = gs_thread_get();

	(void)arg;
	for (int i = 0; i < 5; i++)
		gs_thread_count(t, GS_SYM_cuCtxSynchronize);
	return NULL;
}

static void test_thread_exit(void)
{
	unsigned before = gs_thread_live_count();
	uint64_t calls = gs_thread_calls(GS_SYM_cuCtxSynchronize);
	pthread_t th;

	REQUIRE(pthread_create(&th, NULL, count_and_exit, NULL) == 0, "create");
	pthread_join(th, NULL);
	CHECK(gs_thread_live_count() == before, "an exited thread is still registered (%u, %u)",
	      gs_thread_live_count(), before);
	CHECK(gs_thread_calls(GS_SYM_cuCtxSynchronize) == calls + 5,
	      "an exited thread's calls were lost");
}

/* fork() while another thread is inside a call: the child has no such
 * thread, so a gate closed in the child must not wait for it. */
static void test_fork(void)
{
	struct holder h;
	pid_t pid;
	int status = 0;

	gs_thread_setup();
	holder_start(&h, GS_SYM_cuStreamSynchronize, false);
	pid = fork();
	REQUIRE(pid >= 0, "fork");
	if (pid == 0) {
		int rc = gs_gate_close(2000, NULL);

		_exit(rc == 0 && gs_thread_live_count() == 1 ? 0 : 1);
	}
	waitpid(pid, &status, 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "in a fork child, the parent's in-flight call still blocked the gate");
	atomic_store(&h.release, 1);
	pthread_join(h.thread, NULL);
}

/* ---- stress ---------------------------------------------------------------- */

/* Plain data: written only while the gate is closed and drained, read only
 * inside the gate. */
static struct {
	unsigned long a, b;
} shared;
static _Atomic int stress_stop;
static _Atomic unsigned long torn;

static void *stress_worker(void *arg)
{
	struct gs_thread *t = gs_thread_get();
	unsigned long calls = 0;

	(void)arg;
	while (!atomic_load_explicit(&stress_stop, memory_order_relaxed)) {
		gs_gate_enter(t, GS_SYM_cuMemcpyAsync);
		if (shared.a != shared.b)
			atomic_fetch_add(&torn, 1);
		gs_gate_exit(t);
		calls++;
	}
	return (void *)calls;
}

static void test_stress(void)
{
	enum { WORKERS = 6 };
	int rounds = UNDER_TSAN ? 150 : 1000;
	pthread_t w[WORKERS];
	unsigned long total = 0;
	int failed_closes = 0;

	for (int i = 0; i < WORKERS; i++)
		REQUIRE(pthread_create(&w[i], NULL, stress_worker, NULL) == 0, "create");
	for (int r = 0; r < rounds; r++) {
		if (gs_gate_close(10000, NULL) != 0) {
			failed_closes++;
			continue;
		}
		shared.a++;
		/* Give a torn read a chance to be observed. */
		for (volatile int spin = 0; spin < 100; spin++)
			;
		shared.b++;
		gs_gate_open();
	}
	atomic_store(&stress_stop, 1);
	for (int i = 0; i < WORKERS; i++) {
		void *n;

		pthread_join(w[i], &n);
		total += (unsigned long)n;
	}
	CHECK(failed_closes == 0, "%d closes failed", failed_closes);
	CHECK(atomic_load(&torn) == 0, "%lu calls saw data changed under them",
	      atomic_load(&torn));
	CHECK(shared.a == (unsigned long)rounds && shared.b == (unsigned long)rounds,
	      "rounds lost");
	printf("stress: %d close/open rounds, %lu gated calls\n", rounds, total);
}

static void measure(void)
{
	struct gs_thread *t = gs_thread_get();
	const long n = 20 * 1000 * 1000;
	int64_t t0 = now_ns();

	for (long i = 0; i < n; i++) {
		gs_gate_enter(t, GS_SYM_cuLaunchKernel);
		gs_gate_exit(t);
	}
	printf("enter+exit: %.2f ns per call (%s)\n", (double)(now_ns() - t0) / (double)n,
	       gs_gate_uses_fences() ? "fences" : "membarrier");
}

int main(int argc, char **argv)
{
	gatetest_setup(argc, argv, "gate test");

	test_basic();
	test_timeout_report();
	test_drain();
	test_arrivals_sleep();
	test_nested();
	test_thread_exit();
	test_fork();
	test_stress();
	if (!UNDER_TSAN)
		measure();
	return shimtest_result("gate");
}
