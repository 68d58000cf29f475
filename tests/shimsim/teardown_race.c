/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Destroying a context while other threads allocate device memory.
 *
 * The driver frees a destroyed context's cuMemAlloc memory; the shim's arena
 * does the same, and the tracker drops the context's allocation records. The
 * addresses go back to the arena, and the next cuMemAlloc of any thread may
 * get one of them: that allocation must succeed and be recorded, and no
 * record of the dead context's may be left.
 *
 * One thread creates a context, makes small allocations in it (packed into
 * the same arena chunk as everybody's) and destroys it, over and over; two
 * threads allocate and free small buffers in the primary context meanwhile.
 * Every cuMemAlloc must succeed (there is plenty of memory), and at the end
 * the tracker holds no allocation.
 */
#include <cuda.h>
#include <dlfcn.h>
#include <pthread.h>

#include "shimsim.h"

#define CYCLES 400
#define ENOUGH 5 /* failures seen: stop, the point is made */
#define PER_CTX 8
#define SMALL 512
#define BIG (5u << 20)

static CUcontext primary;
static atomic_bool done;
static atomic_int alloc_failures;

static void *destroyer(void *arg)
{
	(void)arg;
	CU_CHECK(cuCtxSetCurrent(primary));
	for (int i = 0; i < CYCLES && !atomic_load(&done); i++) {
		CUcontext c;
		CUdeviceptr p;

		CU_CHECK(cuCtxCreate(&c, NULL, 0, 0));
		for (int k = 0; k < PER_CTX; k++)
			if (cuMemAlloc(&p, SMALL) != CUDA_SUCCESS)
				atomic_fetch_add(&alloc_failures, 1);
		/* Whole chunks too: releasing them at the teardown takes driver
		 * calls, time in which the small addresses are free again. */
		if (cuMemAlloc(&p, BIG) != CUDA_SUCCESS)
			atomic_fetch_add(&alloc_failures, 1);
		/* Takes the allocations with it, and pops it. */
		CU_CHECK(cuCtxDestroy(c));
	}
	atomic_store(&done, true);
	return NULL;
}

static void *allocator(void *arg)
{
	int id = (int)(intptr_t)arg;

	CU_CHECK(cuCtxSetCurrent(primary));
	while (!atomic_load(&done)) {
		CUdeviceptr p[4];

		for (int k = 0; k < 4; k++) {
			CUresult rc = cuMemAlloc(&p[k], SMALL);

			if (rc != CUDA_SUCCESS) {
				if (atomic_fetch_add(&alloc_failures, 1) < ENOUGH)
					CHECK(0, "thread %d: cuMemAlloc(%d): %s, with plenty of "
					      "memory", id, SMALL, ss_err(rc));
				else
					atomic_store(&done, true);
				p[k] = 0;
			}
		}
		for (int k = 0; k < 4; k++)
			if (p[k])
				CU_CHECK(cuMemFree(p[k]));
	}
	return NULL;
}

int main(void)
{
	pthread_t t[3];
	CUdeviceptr warm;
	uint64_t allocs = 1;

	ss_introspect_load(RTLD_DEFAULT);
	CU_REQUIRE(cuInit(0));
	CU_REQUIRE(cuDevicePrimaryCtxRetain(&primary, 0));
	CU_REQUIRE(cuCtxSetCurrent(primary));
	/* The arena and its first chunk exist before the threads start. */
	CU_REQUIRE(cuMemAlloc(&warm, SMALL));
	REQUIRE(pthread_create(&t[0], NULL, destroyer, NULL) == 0, "pthread_create");
	for (intptr_t i = 1; i < 3; i++)
		REQUIRE(pthread_create(&t[i], NULL, allocator, (void *)i) == 0, "pthread_create");
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	CHECK(atomic_load(&alloc_failures) == 0, "%d cuMemAlloc calls failed",
	      atomic_load(&alloc_failures));
	CU_CHECK(cuMemFree(warm));
	CHECK(ss_gs.tracker_count("alloc", &allocs, NULL) == 0 && allocs == 0,
	      "%llu allocation records left", (unsigned long long)allocs);
	CU_CHECK(cuDevicePrimaryCtxRelease(0));
	return ss_result("context teardown racing with allocations");
}
