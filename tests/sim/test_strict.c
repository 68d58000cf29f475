/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Strictness (a simcuda promise, DESIGN.md §11): a destroyed, foreign or
 * garbage handle, a device address in no allocation, or a stream of another
 * context aborts the process with a message naming the call. The real
 * driver may return an error or crash later; the simulator stops at the
 * first misuse so that a shim bug cannot go unnoticed.
 *
 * Each test is expected to die of SIGABRT; one that returns fails. The
 * control tests at the end do the same calls correctly and must not abort.
 */
#include <stdint.h>
#include <stdlib.h>

#include "sim_test.h"

TestSuite(strict, .timeout = SIM_TEST_TIMEOUT);

/* A heap block of junk: no handle the driver ever gave out. */
static void *garbage(void)
{
	unsigned char *p = malloc(256);

	cr_assert(p);
	for (int i = 0; i < 256; i++)
		p[i] = (unsigned char)(i * 29 + 3);
	return p;
}

Test(strict, destroyed_stream, .signal = SIGABRT)
{
	CUstream s;

	st_init(0);
	CU_OK(cuStreamCreate(&s, 0));
	CU_OK(cuStreamDestroy(s));
	cuStreamQuery(s);
}

Test(strict, destroyed_stream_in_async_copy, .signal = SIGABRT)
{
	CUstream s;
	CUdeviceptr p;

	st_init(0);
	CU_OK(cuMemAlloc(&p, 64));
	CU_OK(cuStreamCreate(&s, 0));
	CU_OK(cuStreamDestroy(s));
	cuMemsetD8Async(p, 0, 64, s);
}

Test(strict, garbage_stream, .signal = SIGABRT)
{
	st_init(0);
	cuStreamSynchronize((CUstream)garbage());
}

Test(strict, garbage_event, .signal = SIGABRT)
{
	st_init(0);
	cuEventQuery((CUevent)garbage());
}

Test(strict, garbage_context, .signal = SIGABRT)
{
	CU_OK(cuInit(0));
	cuCtxSetCurrent((CUcontext)garbage());
}

Test(strict, garbage_module, .signal = SIGABRT)
{
	CUfunction f;

	st_init(0);
	cuModuleGetFunction(&f, (CUmodule)garbage(), "axpy");
}

Test(strict, garbage_function, .signal = SIGABRT)
{
	st_init(0);
	cuLaunchKernel((CUfunction)garbage(), 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL);
}

/* A handle of one kind passed as another. */
Test(strict, event_passed_as_stream, .signal = SIGABRT)
{
	CUevent e;

	st_init(0);
	CU_OK(cuEventCreate(&e, 0));
	cuStreamQuery((CUstream)e);
}

Test(strict, destroyed_event, .signal = SIGABRT)
{
	CUevent e;

	st_init(0);
	CU_OK(cuEventCreate(&e, 0));
	CU_OK(cuEventDestroy(e));
	cuEventRecord(e, NULL);
}

Test(strict, destroyed_context, .signal = SIGABRT)
{
	CUcontext c;

	CU_OK(cuInit(0));
	CU_OK(cuCtxCreate(&c, NULL, 0, st_device(0)));
	CU_OK(cuCtxDestroy(c));
	cuCtxPushCurrent(c);
}

Test(strict, function_of_unloaded_module, .signal = SIGABRT)
{
	CUmodule mod;
	CUfunction f;

	st_init(0);
	mod = st_load_module("gs_kernels.fatbin");
	f = st_function(mod, "noop");
	CU_OK(cuModuleUnload(mod));
	cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL);
}

Test(strict, pointer_in_no_allocation, .signal = SIGABRT)
{
	int host = 0;

	st_init(0);
	/* A pageable host address is no device memory. */
	cuMemsetD32((CUdeviceptr)(uintptr_t)&host, 0, 1);
}

Test(strict, copy_from_no_allocation, .signal = SIGABRT)
{
	char buf[16];

	st_init(0);
	cuMemcpyDtoH(buf, (CUdeviceptr)0x1000, sizeof(buf));
}

Test(strict, freed_pointer, .signal = SIGABRT)
{
	CUdeviceptr p;
	char buf[16];

	st_init(0);
	CU_OK(cuMemAlloc(&p, 1 << 20));
	CU_OK(cuMemFree(p));
	cuMemcpyHtoD(p + 64, buf, sizeof(buf));
}

Test(strict, stream_of_another_context, .signal = SIGABRT)
{
	CUcontext a, b;
	CUstream s;
	CUdeviceptr p;

	CU_OK(cuInit(0));
	CU_OK(cuCtxCreate(&a, NULL, 0, st_device(0)));
	CU_OK(cuStreamCreate(&s, 0));
	CU_OK(cuCtxCreate(&b, NULL, 0, st_device(0)));
	CU_OK(cuMemAlloc(&p, 64));
	/* b is current; s belongs to a. */
	cuMemsetD8Async(p, 0, 64, s);
}

/* A CUfunction belongs to one context; the launch happens in the stream's
 * context (cuda.h), which here is another device's. */
Test(strict, function_and_stream_of_different_contexts, .signal = SIGABRT)
{
	CUcontext c1;
	CUstream s0;
	CUmodule mod;

	st_setenv("SIMCUDA_DEVICES", "2");
	st_init(0);
	CU_OK(cuStreamCreate(&s0, 0));
	CU_OK(cuDevicePrimaryCtxRetain(&c1, st_device(1)));
	CU_OK(cuCtxSetCurrent(c1));
	mod = st_load_module("gs_kernels.fatbin");
	cuLaunchKernel(st_function(mod, "noop"), 1, 1, 1, 1, 1, 1, 0, s0, NULL, NULL);
}

Test(strict, map_outside_reservation, .signal = SIGABRT)
{
	CUmemAllocationProp prop = {
		.type = CU_MEM_ALLOCATION_TYPE_PINNED,
		.location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = 0 },
	};
	CUmemGenericAllocationHandle h;
	CUdeviceptr va;
	size_t g;

	st_init(0);
	CU_OK(cuMemGetAllocationGranularity(&g, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
	CU_OK(cuMemCreate(&h, g, &prop, 0));
	CU_OK(cuMemAddressReserve(&va, g, 0, 0, 0));
	CU_OK(cuMemAddressFree(va, g));
	cuMemMap(va, g, 0, h, 0);
}

/* Controls: the same calls done right do not abort, so the tests above
 * abort for the misuse and not for something else. */
Test(strict, controls)
{
	CUstream s;
	CUevent e;
	CUcontext a, b;
	CUmodule mod;
	CUdeviceptr p;
	char buf[16] = { 0 };
	unsigned v = 1, n = 4;

	st_init(0);
	CU_OK(cuStreamCreate(&s, 0));
	CU_OK(cuStreamQuery(s));
	CU_OK(cuEventCreate(&e, 0));
	CU_OK(cuEventRecord(e, NULL));
	CU_OK(cuEventSynchronize(e));
	mod = st_load_module("gs_kernels.fatbin");
	CU_OK(cuMemAlloc(&p, 1 << 20));
	CU_OK(cuMemcpyHtoD(p + 64, buf, sizeof(buf)));
	CU_OK(cuLaunchKernel(st_function(mod, "fill_u32"), 1, 1, 1, 1, 1, 1, 0, s,
			     (void *[]){ &p, &v, &n }, NULL));
	CU_OK(cuStreamSynchronize(s));
	CU_OK(cuCtxCreate(&a, NULL, 0, st_device(0)));
	CU_OK(cuStreamCreate(&s, 0));
	CU_OK(cuCtxCreate(&b, NULL, 0, st_device(0)));
	CU_OK(cuCtxSetCurrent(a));
	CU_OK(cuMemAlloc(&p, 64));
	CU_OK(cuMemsetD8Async(p, 0, 64, s));
	CU_OK(cuStreamSynchronize(s));
	/* Querying and synchronising another context's stream is allowed. */
	CU_OK(cuCtxSetCurrent(b));
	CU_OK(cuStreamQuery(s));
	CU_OK(cuStreamSynchronize(s));
}
