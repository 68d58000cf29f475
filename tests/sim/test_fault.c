/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fault injection (a simcuda promise, DESIGN.md §11):
 * SIMCUDA_FAIL=<function>:<nth>[+][:<CUresult>][,...] makes exactly the nth
 * call of the function fail with the code, before it does anything, so the
 * failed call has no side effect and later calls work again.
 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "sim_test.h"

TestSuite(fault, .timeout = SIM_TEST_TIMEOUT);

static CUmemAllocationProp device_prop(void)
{
	CUmemAllocationProp prop = {
		.type = CU_MEM_ALLOCATION_TYPE_PINNED,
		.location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = 0 },
	};
	return prop;
}

Test(fault, nth_call_fails_once)
{
	CUmemAllocationProp prop = device_prop();
	CUmemGenericAllocationHandle h[4];
	const CUmemGenericAllocationHandle sentinel = 0x5e5e5e5eull;
	size_t g, free_before;

	st_setenv("SIMCUDA_FAIL", "cuMemCreate:3:CUDA_ERROR_OUT_OF_MEMORY");
	st_init(0);
	CU_OK(cuMemGetAllocationGranularity(&g, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
	CU_OK(cuMemCreate(&h[0], g, &prop, 0));
	CU_OK(cuMemCreate(&h[1], g, &prop, 0));
	free_before = st_mem_free();
	h[2] = sentinel;
	CU_ERR(cuMemCreate(&h[2], g, &prop, 0), CUDA_ERROR_OUT_OF_MEMORY);
	/* No side effect: no handle written, no memory taken. */
	cr_assert_eq(h[2], sentinel);
	cr_assert_eq(st_mem_free(), free_before);
	CU_OK(cuMemCreate(&h[3], g, &prop, 0));
	CU_OK(cuMemRelease(h[3]));
	CU_OK(cuMemRelease(h[0]));
	CU_OK(cuMemRelease(h[1]));
}

Test(fault, default_code_is_unknown)
{
	CUstream s = (CUstream)0x77;

	st_setenv("SIMCUDA_FAIL", "cuStreamCreate:1");
	st_init(0);
	CU_ERR(cuStreamCreate(&s, 0), CUDA_ERROR_UNKNOWN);
	cr_assert_eq(s, (CUstream)0x77);
	CU_OK(cuStreamCreate(&s, 0));
	CU_OK(cuStreamDestroy(s));
}

/* The function is named by its base name: cuMemAlloc counts the calls of
 * cuMemAlloc_v2, which is what cuda.h calls. */
Test(fault, versioned_symbols_count_under_base_name)
{
	CUdeviceptr p = 0, q = 0;
	size_t free_before;

	st_setenv("SIMCUDA_FAIL", "cuMemAlloc:2:CUDA_ERROR_OUT_OF_MEMORY");
	st_init(0);
	CU_OK(cuMemAlloc(&p, 4096));
	free_before = st_mem_free();
	CU_ERR(cuMemAlloc(&q, 4096), CUDA_ERROR_OUT_OF_MEMORY);
	cr_assert_eq(q, 0);
	cr_assert_eq(st_mem_free(), free_before);
	CU_OK(cuMemAlloc(&q, 4096));
	CU_OK(cuMemFree(p));
	CU_OK(cuMemFree(q));
}

Test(fault, numeric_code_and_several_specs)
{
	CUmodule mod;
	CUevent e;
	void *image;

	st_setenv("SIMCUDA_FAIL", "cuModuleLoadData:1:200,cuEventCreate:2");
	st_init(0);
	image = st_read_kernel("gs_kernels.fatbin", NULL);
	CU_ERR(cuModuleLoadData(&mod, image), CUDA_ERROR_INVALID_IMAGE); /* 200 */
	CU_OK(cuModuleLoadData(&mod, image));
	CU_OK(cuEventCreate(&e, 0));
	CU_FAILS(cuEventCreate(&e, 0));
	CU_OK(cuEventCreate(&e, 0));
}

Test(fault, and_later)
{
	CUevent e;

	st_setenv("SIMCUDA_FAIL", "cuEventCreate:2+:CUDA_ERROR_NOT_SUPPORTED");
	st_init(0);
	CU_OK(cuEventCreate(&e, 0));
	for (int i = 0; i < 5; i++)
		CU_ERR(cuEventCreate(&e, 0), CUDA_ERROR_NOT_SUPPORTED);
}

/* Calls refused for lack of cuInit are not counted. */
Test(fault, uninitialised_calls_not_counted)
{
	CUdeviceptr p;

	st_setenv("SIMCUDA_FAIL", "cuMemAlloc:1:CUDA_ERROR_OUT_OF_MEMORY");
	CU_ERR(cuMemAlloc(&p, 64), CUDA_ERROR_NOT_INITIALIZED);
	st_init(0);
	CU_ERR(cuMemAlloc(&p, 64), CUDA_ERROR_OUT_OF_MEMORY);
	CU_OK(cuMemAlloc(&p, 64));
}

Test(fault, init_can_fail)
{
	st_setenv("SIMCUDA_FAIL", "cuInit:1:CUDA_ERROR_NO_DEVICE");
	CU_ERR(cuInit(0), CUDA_ERROR_NO_DEVICE);
	CUdeviceptr p;
	CU_ERR(cuMemAlloc(&p, 64), CUDA_ERROR_NOT_INITIALIZED);
	CU_OK(cuInit(0));
}

/* Asynchronous calls fail at the call: nothing is queued. */
Test(fault, async_call_fails_without_queueing)
{
	CUstream s;
	unsigned *h;
	CUdeviceptr d;

	st_setenv("SIMCUDA_FAIL", "cuMemsetD32Async:2:CUDA_ERROR_LAUNCH_FAILED");
	st_init(0);
	CU_OK(cuStreamCreate(&s, 0));
	CU_OK(cuMemHostAlloc((void **)&h, 16, CU_MEMHOSTALLOC_DEVICEMAP));
	memset(h, 0, 16);
	CU_OK(cuMemHostGetDevicePointer(&d, h, 0));
	CU_OK(cuMemsetD32Async(d, 1, 1, s));
	CU_ERR(cuMemsetD32Async(d + 4, 2, 1, s), CUDA_ERROR_LAUNCH_FAILED);
	CU_OK(cuMemsetD32Async(d + 8, 3, 1, s));
	CU_OK(cuStreamSynchronize(s));
	cr_assert_eq(h[0], 1);
	cr_assert_eq(h[1], 0, "the failed call's memset ran");
	cr_assert_eq(h[2], 3);
}

struct racer {
	CUcontext ctx;
	int fails, oks;
};

static void *alloc_racer(void *arg)
{
	struct racer *r = arg;

	if (cuCtxSetCurrent(r->ctx) != CUDA_SUCCESS) {
		r->fails = 1000;
		return NULL;
	}
	for (int i = 0; i < 25; i++) {
		CUdeviceptr p;
		CUresult rc = cuMemAlloc(&p, 256);

		if (rc == CUDA_SUCCESS) {
			r->oks++;
			cuMemFree(p);
		} else {
			r->fails++;
		}
	}
	return NULL;
}

/* With several threads exactly one call is the nth. */
Test(fault, exactly_one_call_among_threads)
{
	enum { T = 4 };
	struct racer r[T];
	pthread_t t[T];
	CUcontext ctx;
	int fails = 0, oks = 0;

	st_setenv("SIMCUDA_FAIL", "cuMemAlloc:37:CUDA_ERROR_OUT_OF_MEMORY");
	ctx = st_init(0);
	memset(r, 0, sizeof(r));
	for (int i = 0; i < T; i++) {
		r[i].ctx = ctx;
		cr_assert_eq(pthread_create(&t[i], NULL, alloc_racer, &r[i]), 0);
	}
	for (int i = 0; i < T; i++) {
		cr_assert_eq(pthread_join(t[i], NULL), 0);
		fails += r[i].fails;
		oks += r[i].oks;
	}
	cr_assert_eq(fails, 1, "%d calls failed", fails);
	cr_assert_eq(oks, T * 25 - 1);
}

Test(fault, malformed_spec_aborts, .signal = SIGABRT)
{
	st_setenv("SIMCUDA_FAIL", "cuMemAlloc:zero");
	cuInit(0);
}

Test(fault, unknown_code_aborts, .signal = SIGABRT)
{
	st_setenv("SIMCUDA_FAIL", "cuMemAlloc:1:CUDA_ERROR_NO_SUCH_THING");
	cuInit(0);
}
