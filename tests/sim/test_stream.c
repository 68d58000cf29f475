/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Streams: work really is asynchronous and in order; cuStreamWaitEvent
 * orders streams; the legacy default stream synchronises with blocking
 * streams and the per-thread one does not; priorities, flags, callbacks,
 * destroying a busy stream.
 *
 * The observable used throughout: a host function blocking on a semaphore
 * (a "gate") holds a stream, and later work writes page-locked host memory
 * or sets a flag, which the test reads without synchronising.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "sim_test.h"

TestSuite(stream, .timeout = SIM_TEST_TIMEOUT);

/* How long a test watches for work that must not run. */
#define QUIET_MS 60
/* How long it waits for work that must run. */
#define RUN_MS 3000

Test(stream, work_is_asynchronous)
{
	struct st_gate gate;
	atomic_int done = 0;
	CUstream s;
	unsigned *h;
	CUdeviceptr d;

	st_init(0);
	st_gate_init(&gate);
	CU_OK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
	CU_OK(cuMemHostAlloc((void **)&h, 256 * sizeof(unsigned), CU_MEMHOSTALLOC_DEVICEMAP));
	memset(h, 0, 256 * sizeof(unsigned));
	CU_OK(cuMemHostGetDevicePointer(&d, h, 0));

	CU_OK(cuLaunchHostFunc(s, st_gate_wait, &gate));
	CU_OK(cuMemsetD32Async(d, 0xab, 256, s));
	CU_OK(cuLaunchHostFunc(s, st_flag_set, &done));
	/* Every call above returned while the stream was held. */
	CU_ERR(cuStreamQuery(s), CUDA_ERROR_NOT_READY);
	st_sleep_ms(QUIET_MS);
	cr_assert_eq(h[0], 0, "a memset ran before the host function ahead of it returned");
	cr_assert_eq(h[255], 0);
	cr_assert_eq(atomic_load(&done), 0);
	CU_ERR(cuStreamQuery(s), CUDA_ERROR_NOT_READY);

	st_gate_open(&gate);
	CU_OK(cuStreamSynchronize(s));
	cr_assert_eq(h[0], 0xab);
	cr_assert_eq(h[255], 0xab);
	cr_assert_eq(atomic_load(&done), 1);
	CU_OK(cuStreamQuery(s));
	CU_OK(cuStreamDestroy(s));
}

Test(stream, idle_stream_is_ready)
{
	CUstream s;

	st_init(0);
	CU_OK(cuStreamCreate(&s, 0));
	CU_OK(cuStreamQuery(s));
	CU_OK(cuStreamSynchronize(s));
	CU_OK(cuStreamQuery(NULL));
}

Test(stream, order_within_a_stream)
{
	enum { N = 200 };
	static struct st_log log;
	static struct st_log_item items[N];
	CUstream s;

	st_init(0);
	CU_OK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
	for (int i = 0; i < N; i++) {
		items[i] = (struct st_log_item){ &log, i };
		CU_OK(cuLaunchHostFunc(s, st_log_append, &items[i]));
	}
	CU_OK(cuStreamSynchronize(s));
	cr_assert_eq(atomic_load(&log.count), N);
	for (int i = 0; i < N; i++)
		cr_assert_eq(log.tags[i], i, "position %d ran item %d", i, log.tags[i]);
}

/* Memsets and copies in both directions keep their order. */
Test(stream, copies_keep_order)
{
	enum { ROUNDS = 50, W = 8 };
	unsigned *h, *snap;
	CUstream s;
	CUdeviceptr d;

	st_init(0);
	CU_OK(cuStreamCreate(&s, 0));
	CU_OK(cuMemHostAlloc((void **)&h, ROUNDS * sizeof(unsigned), 0));
	CU_OK(cuMemHostAlloc((void **)&snap, ROUNDS * W * sizeof(unsigned), 0));
	for (unsigned v = 0; v < ROUNDS; v++)
		h[v] = 1000 + v;
	memset(snap, 0, ROUNDS * W * sizeof(unsigned));
	CU_OK(cuMemAlloc(&d, W * sizeof(unsigned)));
	for (unsigned v = 0; v < ROUNDS; v++) {
		CU_OK(cuMemsetD32Async(d, v, W, s));
		CU_OK(cuMemcpyHtoDAsync(d + sizeof(unsigned), &h[v], sizeof(unsigned), s));
		CU_OK(cuMemcpyDtoHAsync(snap + v * W, d, W * sizeof(unsigned), s));
	}
	CU_OK(cuStreamSynchronize(s));
	for (unsigned v = 0; v < ROUNDS; v++) {
		cr_assert_eq(snap[v * W], v, "round %u", v);
		cr_assert_eq(snap[v * W + 1], 1000 + v, "round %u", v);
		cr_assert_eq(snap[v * W + W - 1], v, "round %u", v);
	}
}

Test(stream, wait_event_orders_streams)
{
	struct st_gate gate;
	atomic_int flag = 0;
	CUstream a, b;
	CUevent e;

	st_init(0);
	st_gate_init(&gate);
	CU_OK(cuStreamCreate(&a, CU_STREAM_NON_BLOCKING));
	CU_OK(cuStreamCreate(&b, CU_STREAM_NON_BLOCKING));
	CU_OK(cuEventCreate(&e, CU_EVENT_DISABLE_TIMING));

	CU_OK(cuLaunchHostFunc(a, st_gate_wait, &gate));
	CU_OK(cuEventRecord(e, a));
	CU_OK(cuStreamWaitEvent(b, e, 0));
	CU_OK(cuLaunchHostFunc(b, st_flag_set, &flag));
	st_sleep_ms(QUIET_MS);
	cr_assert_eq(atomic_load(&flag), 0, "stream b ran past an event not yet reached");
	CU_ERR(cuStreamQuery(b), CUDA_ERROR_NOT_READY);
	st_gate_open(&gate);
	CU_OK(cuStreamSynchronize(b));
	cr_assert_eq(atomic_load(&flag), 1);
}

/* The wait is on the event's position when cuStreamWaitEvent is called, not
 * on whatever the other stream does later. */
Test(stream, wait_event_captures_position)
{
	struct st_gate first, second;
	atomic_int flag = 0;
	CUstream a, b;
	CUevent e;

	st_init(0);
	st_gate_init(&first);
	st_gate_init(&second);
	CU_OK(cuStreamCreate(&a, CU_STREAM_NON_BLOCKING));
	CU_OK(cuStreamCreate(&b, CU_STREAM_NON_BLOCKING));
	CU_OK(cuEventCreate(&e, CU_EVENT_DISABLE_TIMING));

	CU_OK(cuLaunchHostFunc(a, st_gate_wait, &first));
	CU_OK(cuEventRecord(e, a));
	CU_OK(cuLaunchHostFunc(a, st_gate_wait, &second));
	CU_OK(cuStreamWaitEvent(b, e, 0));
	CU_OK(cuLaunchHostFunc(b, st_flag_set, &flag));
	/* Re-recording after the wait was queued does not move it. */
	CU_OK(cuEventRecord(e, a));
	st_gate_open(&first);
	cr_assert(st_flag_wait(&flag, RUN_MS), "b still waits although the event was reached");
	CU_ERR(cuStreamQuery(a), CUDA_ERROR_NOT_READY);
	st_gate_open(&second);
	CU_OK(cuStreamSynchronize(a));
}

Test(stream, wait_on_unrecorded_event_is_noop)
{
	atomic_int flag = 0;
	CUstream b;
	CUevent e;

	st_init(0);
	CU_OK(cuStreamCreate(&b, CU_STREAM_NON_BLOCKING));
	CU_OK(cuEventCreate(&e, 0));
	CU_OK(cuStreamWaitEvent(b, e, 0));
	CU_OK(cuLaunchHostFunc(b, st_flag_set, &flag));
	CU_OK(cuStreamSynchronize(b));
	cr_assert_eq(atomic_load(&flag), 1);
}

/* Events work across contexts and devices. */
Test(stream, wait_event_across_devices)
{
	struct st_gate gate;
	atomic_int flag = 0;
	CUcontext c0, c1;
	CUstream a, b;
	CUevent e;

	st_setenv("SIMCUDA_DEVICES", "2");
	c0 = st_init(0);
	st_gate_init(&gate);
	CU_OK(cuStreamCreate(&a, CU_STREAM_NON_BLOCKING));
	CU_OK(cuEventCreate(&e, CU_EVENT_DISABLE_TIMING));
	CU_OK(cuLaunchHostFunc(a, st_gate_wait, &gate));
	CU_OK(cuEventRecord(e, a));

	CU_OK(cuDevicePrimaryCtxRetain(&c1, st_device(1)));
	CU_OK(cuCtxSetCurrent(c1));
	CU_OK(cuStreamCreate(&b, CU_STREAM_NON_BLOCKING));
	CU_OK(cuStreamWaitEvent(b, e, 0));
	CU_OK(cuLaunchHostFunc(b, st_flag_set, &flag));
	st_sleep_ms(QUIET_MS);
	cr_assert_eq(atomic_load(&flag), 0);
	st_gate_open(&gate);
	CU_OK(cuStreamSynchronize(b));
	cr_assert_eq(atomic_load(&flag), 1);
	CU_OK(cuCtxSetCurrent(c0));
}

/* The legacy default stream waits for every blocking stream of its context,
 * and blocking streams wait for it. */
Test(stream, legacy_default_waits_for_blocking_streams)
{
	struct st_gate gate;
	atomic_int flag = 0;
	CUstream s;

	st_init(0);
	st_gate_init(&gate);
	CU_OK(cuStreamCreate(&s, CU_STREAM_DEFAULT));
	CU_OK(cuLaunchHostFunc(s, st_gate_wait, &gate));
	CU_OK(cuLaunchHostFunc(NULL, st_flag_set, &flag));
	st_sleep_ms(QUIET_MS);
	cr_assert_eq(atomic_load(&flag), 0, "legacy stream work overtook a blocking stream");
	st_gate_open(&gate);
	CU_OK(cuStreamSynchronize(NULL));
	cr_assert_eq(atomic_load(&flag), 1);
}

Test(stream, blocking_stream_waits_for_legacy_default)
{
	struct st_gate gate;
	atomic_int flag = 0;
	CUstream s;

	st_init(0);
	st_gate_init(&gate);
	CU_OK(cuStreamCreate(&s, CU_STREAM_DEFAULT));
	CU_OK(cuLaunchHostFunc(CU_STREAM_LEGACY, st_gate_wait, &gate));
	CU_OK(cuLaunchHostFunc(s, st_flag_set, &flag));
	st_sleep_ms(QUIET_MS);
	cr_assert_eq(atomic_load(&flag), 0, "blocking stream work overtook the legacy stream");
	st_gate_open(&gate);
	CU_OK(cuStreamSynchronize(s));
	cr_assert_eq(atomic_load(&flag), 1);
}

Test(stream, non_blocking_stream_ignores_legacy_default)
{
	struct st_gate gate;
	atomic_int flag = 0, flag2 = 0;
	CUstream s;

	st_init(0);
	st_gate_init(&gate);
	CU_OK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
	CU_OK(cuLaunchHostFunc(s, st_gate_wait, &gate));
	CU_OK(cuLaunchHostFunc(NULL, st_flag_set, &flag));
	cr_assert(st_flag_wait(&flag, RUN_MS), "legacy stream waited for a non-blocking one");
	st_gate_open(&gate);
	CU_OK(cuStreamSynchronize(s));

	/* And the other way round. */
	st_gate_init(&gate);
	CU_OK(cuLaunchHostFunc(NULL, st_gate_wait, &gate));
	CU_OK(cuLaunchHostFunc(s, st_flag_set, &flag2));
	cr_assert(st_flag_wait(&flag2, RUN_MS), "a non-blocking stream waited for legacy");
	st_gate_open(&gate);
	CU_OK(cuCtxSynchronize());
}

/* The per-thread default stream is an ordinary blocking stream: it does not
 * wait for other blocking streams, only for the legacy default stream. */
Test(stream, per_thread_default_ignores_blocking_streams)
{
	struct st_gate gate;
	atomic_int flag = 0;
	CUstream s;

	st_init(0);
	st_gate_init(&gate);
	CU_OK(cuStreamCreate(&s, CU_STREAM_DEFAULT));
	CU_OK(cuLaunchHostFunc(s, st_gate_wait, &gate));
	CU_OK(cuLaunchHostFunc(CU_STREAM_PER_THREAD, st_flag_set, &flag));
	cr_assert(st_flag_wait(&flag, RUN_MS),
		  "per-thread default stream waited for a blocking stream");
	st_gate_open(&gate);
	CU_OK(cuCtxSynchronize());
}

Test(stream, per_thread_default_and_legacy_synchronise)
{
	struct st_gate gate, gate2;
	atomic_int flag = 0, flag2 = 0;

	st_init(0);
	st_gate_init(&gate);
	st_gate_init(&gate2);
	CU_OK(cuLaunchHostFunc(CU_STREAM_PER_THREAD, st_gate_wait, &gate));
	CU_OK(cuLaunchHostFunc(CU_STREAM_LEGACY, st_flag_set, &flag));
	st_sleep_ms(QUIET_MS);
	cr_assert_eq(atomic_load(&flag), 0, "legacy stream overtook the per-thread stream");
	st_gate_open(&gate);
	CU_OK(cuStreamSynchronize(CU_STREAM_LEGACY));
	cr_assert_eq(atomic_load(&flag), 1);

	CU_OK(cuLaunchHostFunc(CU_STREAM_LEGACY, st_gate_wait, &gate2));
	CU_OK(cuLaunchHostFunc(CU_STREAM_PER_THREAD, st_flag_set, &flag2));
	st_sleep_ms(QUIET_MS);
	cr_assert_eq(atomic_load(&flag2), 0, "per-thread stream overtook the legacy stream");
	st_gate_open(&gate2);
	CU_OK(cuStreamSynchronize(CU_STREAM_PER_THREAD));
	cr_assert_eq(atomic_load(&flag2), 1);
}

/* The _ptsz entry points (what code built with per-thread default streams
 * calls, and what cuGetProcAddress hands out with the per-thread flag) read
 * a NULL stream as the per-thread default stream. */
Test(stream, ptsz_symbol_null_stream_is_per_thread)
{
	CUresult (*launch_host_func_ptsz)(CUstream, CUhostFn, void *);
	struct st_gate gate;
	atomic_int flag = 0, flag2 = 0;
	CUstream s;
	void *sym;

	st_init(0);
	sym = dlsym(RTLD_DEFAULT, "cuLaunchHostFunc_ptsz");
	cr_assert_not_null(sym, "cuLaunchHostFunc_ptsz is not exported");
	memcpy(&launch_host_func_ptsz, &sym, sizeof(sym));
	st_gate_init(&gate);
	CU_OK(cuStreamCreate(&s, CU_STREAM_DEFAULT));
	CU_OK(cuLaunchHostFunc(s, st_gate_wait, &gate));
	/* Through _ptsz, NULL does not wait for the blocking stream... */
	CU_OK(launch_host_func_ptsz(NULL, st_flag_set, &flag));
	cr_assert(st_flag_wait(&flag, RUN_MS), "_ptsz with NULL used the legacy stream");
	/* ...through the plain symbol it does. */
	CU_OK(cuLaunchHostFunc(NULL, st_flag_set, &flag2));
	st_sleep_ms(QUIET_MS);
	cr_assert_eq(atomic_load(&flag2), 0, "plain symbol with NULL did not use the legacy stream");
	st_gate_open(&gate);
	CU_OK(cuCtxSynchronize());
	cr_assert_eq(atomic_load(&flag2), 1);
}

struct other_thread {
	CUcontext ctx;
	atomic_int flag;
	CUresult rc;
};

static void *per_thread_worker(void *arg)
{
	struct other_thread *o = arg;

	o->rc = cuCtxSetCurrent(o->ctx);
	if (o->rc == CUDA_SUCCESS)
		o->rc = cuLaunchHostFunc(CU_STREAM_PER_THREAD, st_flag_set, &o->flag);
	if (o->rc == CUDA_SUCCESS)
		o->rc = cuStreamSynchronize(CU_STREAM_PER_THREAD);
	return NULL;
}

Test(stream, per_thread_streams_are_per_thread)
{
	struct st_gate gate;
	struct other_thread o = { 0 };
	pthread_t t;

	o.ctx = st_init(0);
	st_gate_init(&gate);
	CU_OK(cuLaunchHostFunc(CU_STREAM_PER_THREAD, st_gate_wait, &gate));
	cr_assert_eq(pthread_create(&t, NULL, per_thread_worker, &o), 0);
	/* The other thread's per-thread stream is not held by ours. */
	cr_assert(st_flag_wait(&o.flag, RUN_MS), "another thread's per-thread stream was held");
	cr_assert_eq(pthread_join(t, NULL), 0);
	CU_OK(o.rc);
	st_gate_open(&gate);
	CU_OK(cuStreamSynchronize(CU_STREAM_PER_THREAD));
}

Test(stream, priorities)
{
	int least, greatest, p = 99;
	CUstream hi, lo, mid, dflt;

	st_init(0);
	CU_OK(cuCtxGetStreamPriorityRange(&least, &greatest));
	/* Out-of-range priorities are clamped (documented). */
	CU_OK(cuStreamCreateWithPriority(&hi, 0, greatest - 100));
	CU_OK(cuStreamGetPriority(hi, &p));
	cr_assert_eq(p, greatest);
	CU_OK(cuStreamCreateWithPriority(&lo, 0, least + 100));
	CU_OK(cuStreamGetPriority(lo, &p));
	cr_assert_eq(p, least);
	if (greatest < least - 1) {
		CU_OK(cuStreamCreateWithPriority(&mid, 0, least - 1));
		CU_OK(cuStreamGetPriority(mid, &p));
		cr_assert_eq(p, least - 1);
	}
	CU_OK(cuStreamCreate(&dflt, 0));
	CU_OK(cuStreamGetPriority(dflt, &p));
	cr_assert_eq(p, 0);
}

Test(stream, flags_ctx_and_ids)
{
	CUcontext ctx, got = NULL;
	CUstream a, b;
	unsigned flags = 99;
	unsigned long long ia = 0, ib = 0;

	ctx = st_init(0);
	CU_OK(cuStreamCreate(&a, CU_STREAM_NON_BLOCKING));
	CU_OK(cuStreamCreate(&b, CU_STREAM_DEFAULT));
	CU_OK(cuStreamGetFlags(a, &flags));
	cr_assert_eq(flags, CU_STREAM_NON_BLOCKING);
	CU_OK(cuStreamGetFlags(b, &flags));
	cr_assert_eq(flags, CU_STREAM_DEFAULT);
	CU_OK(cuStreamGetCtx(a, &got));
	cr_assert_eq(got, ctx);
	CU_OK(cuStreamGetId(a, &ia));
	CU_OK(cuStreamGetId(b, &ib));
	cr_assert_neq(ia, ib);
	CU_ERR(cuStreamCreate(&a, 0x80), CUDA_ERROR_INVALID_VALUE);
}

/* Documented: cuStreamDestroy returns at once; queued work still runs. */
Test(stream, destroy_busy_stream)
{
	struct st_gate gate;
	atomic_int flag = 0;
	CUstream s;

	st_init(0);
	st_gate_init(&gate);
	CU_OK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
	CU_OK(cuLaunchHostFunc(s, st_gate_wait, &gate));
	CU_OK(cuLaunchHostFunc(s, st_flag_set, &flag));
	CU_OK(cuStreamDestroy(s));
	cr_assert_eq(atomic_load(&flag), 0);
	st_gate_open(&gate);
	cr_assert(st_flag_wait(&flag, RUN_MS), "work queued before cuStreamDestroy was dropped");
	CU_OK(cuCtxSynchronize());
}

struct callback_record {
	CUstream stream;
	CUresult status;
	atomic_int calls;
};

static void CUDA_CB record_callback(CUstream s, CUresult status, void *user)
{
	struct callback_record *r = user;

	r->stream = s;
	r->status = status;
	atomic_fetch_add(&r->calls, 1);
}

Test(stream, add_callback)
{
	struct callback_record r = { .status = (CUresult)-1 };
	CUstream s;

	st_init(0);
	CU_OK(cuStreamCreate(&s, 0));
	CU_OK(cuStreamAddCallback(s, record_callback, &r, 0));
	CU_OK(cuStreamSynchronize(s));
	cr_assert_eq(atomic_load(&r.calls), 1);
	cr_assert_eq(r.stream, s);
	cr_assert_eq(r.status, CUDA_SUCCESS);
	CU_ERR(cuStreamAddCallback(s, record_callback, &r, 1), CUDA_ERROR_INVALID_VALUE);
}

struct nested_call {
	CUresult rc;
	atomic_int done;
};

static void CUDA_CB call_driver(void *arg)
{
	struct nested_call *n = arg;
	CUdeviceptr p;

	n->rc = cuMemAlloc(&p, 64);
	atomic_store(&n->done, 1);
}

/* Host functions must not call the driver; the simulator refuses with
 * CUDA_ERROR_NOT_PERMITTED, as the driver does, rather than deadlock. */
Test(stream, host_function_may_not_call_driver)
{
	struct nested_call n = { .rc = CUDA_SUCCESS };
	CUstream s;

	st_init(0);
	CU_OK(cuStreamCreate(&s, 0));
	CU_OK(cuLaunchHostFunc(s, call_driver, &n));
	CU_OK(cuStreamSynchronize(s));
	cr_assert_eq(atomic_load(&n.done), 1);
	CU_ERR(n.rc, CUDA_ERROR_NOT_PERMITTED);
}

static void CUDA_CB open_gate(void *gate)
{
	sem_post(&((struct st_gate *)gate)->sem);
}

/* Stream i holds on gate i and then opens gate i-1; the test opens the last
 * gate. Stream 0's work was queued first, so this only completes if the
 * streams really run at the same time (a single executor would sit in
 * stream 0's wait forever and the test would time out). */
Test(stream, streams_run_concurrently)
{
	enum { N = 6 };
	struct st_gate gates[N];
	CUstream s[N];
	atomic_int flags[N];

	st_init(0);
	for (int i = 0; i < N; i++) {
		st_gate_init(&gates[i]);
		atomic_init(&flags[i], 0);
		CU_OK(cuStreamCreate(&s[i], CU_STREAM_NON_BLOCKING));
	}
	for (int i = 0; i < N; i++) {
		CU_OK(cuLaunchHostFunc(s[i], st_gate_wait, &gates[i]));
		if (i > 0)
			CU_OK(cuLaunchHostFunc(s[i], open_gate, &gates[i - 1]));
		CU_OK(cuLaunchHostFunc(s[i], st_flag_set, &flags[i]));
	}
	st_gate_open(&gates[N - 1]);
	for (int i = 0; i < N; i++)
		cr_assert(st_flag_wait(&flags[i], RUN_MS), "stream %d never ran", i);
	CU_OK(cuCtxSynchronize());
}
