/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Contexts: primary and created, the per-thread current context and its
 * stack (push/pop), limits, stream priority range, destruction freeing what
 * the context owned.
 */
#include <pthread.h>

#include "sim_test.h"

TestSuite(ctx, .timeout = SIM_TEST_TIMEOUT);

static CUcontext current(void)
{
	CUcontext c = (CUcontext)0x1;

	CU_OK(cuCtxGetCurrent(&c));
	return c;
}

static CUcontext create_ctx(int dev)
{
	CUcontext c = NULL;

	CU_OK(cuCtxCreate(&c, NULL, 0, st_device(dev)));
	cr_assert_not_null(c);
	return c;
}

Test(ctx, none_current_after_init)
{
	CUdeviceptr p;
	CUdevice dev;

	CU_OK(cuInit(0));
	cr_assert_null(current());
	CU_ERR(cuMemAlloc(&p, 64), CUDA_ERROR_INVALID_CONTEXT);
	CU_ERR(cuCtxGetDevice(&dev), CUDA_ERROR_INVALID_CONTEXT);
	CU_ERR(cuCtxSynchronize(), CUDA_ERROR_INVALID_CONTEXT);
}

Test(ctx, primary_retain_is_refcounted)
{
	CUcontext a, b;
	unsigned flags;
	int active = -1;
	CUdevice dev;

	CU_OK(cuInit(0));
	dev = st_device(0);
	CU_OK(cuDevicePrimaryCtxGetState(dev, &flags, &active));
	cr_assert_eq(active, 0);
	CU_OK(cuDevicePrimaryCtxRetain(&a, dev));
	CU_OK(cuDevicePrimaryCtxRetain(&b, dev));
	cr_assert_eq(a, b, "two retains gave two primary contexts");
	CU_OK(cuDevicePrimaryCtxGetState(dev, &flags, &active));
	cr_assert_eq(active, 1);
	/* Retaining does not make it current. */
	cr_assert_null(current());
	CU_OK(cuDevicePrimaryCtxRelease(dev));
	CU_OK(cuDevicePrimaryCtxGetState(dev, &flags, &active));
	cr_assert_eq(active, 1, "released once of twice, yet inactive");
	CU_OK(cuDevicePrimaryCtxRelease(dev));
	CU_OK(cuDevicePrimaryCtxGetState(dev, &flags, &active));
	cr_assert_eq(active, 0);
}

Test(ctx, primary_per_device)
{
	CUcontext a, b;

	CU_OK(cuInit(0));
	CU_OK(cuDevicePrimaryCtxRetain(&a, st_device(0)));
	CU_OK(cuDevicePrimaryCtxRetain(&b, st_device(1)));
	cr_assert_neq(a, b);
	CU_OK(cuCtxSetCurrent(b));
	CUdevice dev = -1;
	CU_OK(cuCtxGetDevice(&dev));
	cr_assert_eq(dev, 1);
}

Test(ctx, primary_flags)
{
	unsigned flags = 0;
	int active;
	CUcontext c;

	CU_OK(cuInit(0));
	CU_OK(cuDevicePrimaryCtxSetFlags(st_device(0), CU_CTX_SCHED_BLOCKING_SYNC));
	CU_OK(cuDevicePrimaryCtxGetState(st_device(0), &flags, &active));
	cr_assert_eq(flags & CU_CTX_SCHED_MASK, CU_CTX_SCHED_BLOCKING_SYNC);
	CU_OK(cuDevicePrimaryCtxRetain(&c, st_device(0)));
	CU_OK(cuCtxSetCurrent(c));
	flags = 0;
	CU_OK(cuCtxGetFlags(&flags));
	cr_assert_eq(flags & CU_CTX_SCHED_MASK, CU_CTX_SCHED_BLOCKING_SYNC);
}

Test(ctx, primary_reset_frees_memory)
{
	CUcontext other;
	size_t free0;
	CUdeviceptr p;

	st_init(0);
	/* Measure from a created context on the same device, which the reset
	 * of the primary context does not touch. */
	other = create_ctx(0);
	free0 = st_mem_free();
	CU_OK(cuCtxPopCurrent(&other));
	CU_OK(cuMemAlloc(&p, 8 << 20));
	CU_OK(cuCtxPushCurrent(other));
	cr_assert_lt(st_mem_free(), free0);
	CU_OK(cuDevicePrimaryCtxReset(st_device(0)));
	cr_assert_eq(st_mem_free(), free0, "memory of a reset primary context not freed");
}

Test(ctx, create_pushes_and_destroy_pops)
{
	CUcontext prim, c;
	CUdevice dev = -1;
	unsigned version = 0;

	prim = st_init(0);
	c = create_ctx(1);
	cr_assert_neq(c, prim);
	cr_assert_eq(current(), c, "a created context is made current");
	CU_OK(cuCtxGetDevice(&dev));
	cr_assert_eq(dev, 1);
	CU_OK(cuCtxGetApiVersion(c, &version));
	cr_assert_geq(version, 3020);
	CU_OK(cuCtxDestroy(c));
	cr_assert_eq(current(), prim, "destroying the current context pops it");
}

Test(ctx, push_pop_stack)
{
	CUcontext a, b, popped;

	CU_OK(cuInit(0));
	a = create_ctx(0);
	b = create_ctx(0);
	cr_assert_neq(a, b, "two created contexts on one device are distinct");
	cr_assert_eq(current(), b);
	CU_OK(cuCtxPopCurrent(&popped));
	cr_assert_eq(popped, b);
	cr_assert_eq(current(), a);
	CU_OK(cuCtxPushCurrent(b));
	CU_OK(cuCtxPushCurrent(a));
	cr_assert_eq(current(), a);
	CU_OK(cuCtxPopCurrent(&popped));
	cr_assert_eq(popped, a);
	CU_OK(cuCtxPopCurrent(&popped));
	cr_assert_eq(popped, b);
	CU_OK(cuCtxPopCurrent(&popped));
	cr_assert_eq(popped, a);
	cr_assert_null(current());
	CU_ERR(cuCtxPopCurrent(&popped), CUDA_ERROR_INVALID_CONTEXT);
}

Test(ctx, set_current_replaces_top)
{
	CUcontext a, b, popped;

	CU_OK(cuInit(0));
	a = create_ctx(0);
	b = create_ctx(1);
	/* Stack: a, b. cuCtxSetCurrent replaces the top (b) with a. */
	CU_OK(cuCtxSetCurrent(a));
	CU_OK(cuCtxPopCurrent(&popped));
	cr_assert_eq(popped, a);
	cr_assert_eq(current(), a);
	CU_OK(cuCtxSetCurrent(NULL));
	cr_assert_null(current());
	CU_OK(cuCtxDestroy(b));
}

struct thread_probe {
	CUcontext seen_at_start;
	CUcontext set;
	CUcontext seen_after_set;
	CUresult rc;
};

static void *probe_thread(void *arg)
{
	struct thread_probe *p = arg;

	p->rc = cuCtxGetCurrent(&p->seen_at_start);
	if (p->rc == CUDA_SUCCESS)
		p->rc = cuCtxSetCurrent(p->set);
	if (p->rc == CUDA_SUCCESS)
		p->rc = cuCtxGetCurrent(&p->seen_after_set);
	return NULL;
}

Test(ctx, current_is_per_thread)
{
	CUcontext mine, other;
	struct thread_probe probe = { .seen_at_start = (CUcontext)0x1 };
	pthread_t t;

	mine = st_init(0);
	CU_OK(cuDevicePrimaryCtxRetain(&other, st_device(1)));
	probe.set = other;
	cr_assert_eq(pthread_create(&t, NULL, probe_thread, &probe), 0);
	cr_assert_eq(pthread_join(t, NULL), 0);
	CU_OK(probe.rc);
	cr_assert_null(probe.seen_at_start, "a new thread inherited a current context");
	cr_assert_eq(probe.seen_after_set, other);
	cr_assert_eq(current(), mine, "another thread's cuCtxSetCurrent changed ours");
}

Test(ctx, limits)
{
	CUcontext a, b;
	size_t v = 0, dflt = 0;

	a = st_init(0);
	CU_OK(cuCtxGetLimit(&dflt, CU_LIMIT_STACK_SIZE));
	cr_assert_gt(dflt, 0);
	CU_OK(cuCtxSetLimit(CU_LIMIT_STACK_SIZE, 4096));
	CU_OK(cuCtxGetLimit(&v, CU_LIMIT_STACK_SIZE));
	cr_assert_eq(v, 4096);
	CU_OK(cuCtxSetLimit(CU_LIMIT_MALLOC_HEAP_SIZE, 16 << 20));
	CU_OK(cuCtxGetLimit(&v, CU_LIMIT_MALLOC_HEAP_SIZE));
	cr_assert_eq(v, (size_t)16 << 20);
	CU_OK(cuCtxSetLimit(CU_LIMIT_PRINTF_FIFO_SIZE, 2 << 20));
	CU_OK(cuCtxGetLimit(&v, CU_LIMIT_PRINTF_FIFO_SIZE));
	cr_assert_eq(v, (size_t)2 << 20);
	CU_FAILS(cuCtxSetLimit(CU_LIMIT_MAX, 1));
	CU_FAILS(cuCtxGetLimit(&v, CU_LIMIT_MAX));

	/* Limits belong to the context. */
	b = create_ctx(0);
	CU_OK(cuCtxGetLimit(&v, CU_LIMIT_STACK_SIZE));
	cr_assert_eq(v, dflt, "a new context inherited another's stack limit");
	CU_OK(cuCtxSetCurrent(a));
	CU_OK(cuCtxGetLimit(&v, CU_LIMIT_STACK_SIZE));
	cr_assert_eq(v, 4096);
	CU_OK(cuCtxDestroy(b));
}

Test(ctx, ids_distinct)
{
	CUcontext a, b;
	unsigned long long ia = 0, ib = 0;

	a = st_init(0);
	b = create_ctx(0);
	CU_OK(cuCtxGetId(a, &ia));
	CU_OK(cuCtxGetId(b, &ib));
	cr_assert_neq(ia, ib);
}

Test(ctx, stream_priority_range)
{
	int least = 99, greatest = 99;

	st_init(0);
	CU_OK(cuCtxGetStreamPriorityRange(&least, &greatest));
	/* Lower numbers are higher priorities; current GPUs report [0, -5]. */
	cr_assert_eq(least, 0);
	cr_assert_lt(greatest, least);
}

Test(ctx, cache_config)
{
	CUfunc_cache c = CU_FUNC_CACHE_PREFER_NONE;

	st_init(0);
	CU_OK(cuCtxSetCacheConfig(CU_FUNC_CACHE_PREFER_SHARED));
	CU_OK(cuCtxGetCacheConfig(&c));
	cr_assert_eq(c, CU_FUNC_CACHE_PREFER_SHARED);
}

Test(ctx, destroy_frees_memory)
{
	CUcontext prim, c;
	size_t free0;
	CUdeviceptr p;

	prim = st_init(0);
	free0 = st_mem_free();
	c = create_ctx(0);
	CU_OK(cuMemAlloc(&p, 32 << 20));
	CU_OK(cuCtxDestroy(c));
	CU_OK(cuCtxSetCurrent(prim));
	cr_assert_eq(st_mem_free(), free0, "memory of a destroyed context not freed");
}

struct slow_arg {
	atomic_int flag;
};

static void CUDA_CB slow_set(void *arg)
{
	st_sleep_ms(50);
	st_flag_set(&((struct slow_arg *)arg)->flag);
}

Test(ctx, synchronize_waits_for_all_streams)
{
	struct slow_arg a = { 0 }, b = { 0 };
	CUstream s;

	st_init(0);
	CU_OK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
	CU_OK(cuLaunchHostFunc(s, slow_set, &a));
	CU_OK(cuLaunchHostFunc(NULL, slow_set, &b));
	CU_OK(cuCtxSynchronize());
	cr_assert_eq(atomic_load(&a.flag), 1, "cuCtxSynchronize returned before stream work");
	cr_assert_eq(atomic_load(&b.flag), 1, "cuCtxSynchronize returned before NULL-stream work");
}
