/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A driver-API program run with the shim preloaded over the simulated
 * driver (see meson.build): what it creates and destroys must show in the
 * tracker's counts (gs_introspect_tracker_count, found with dlsym like the
 * rest of the introspection API), and the memory the tracker records must
 * match what the simulator itself accounts (cuMemGetInfo).
 *
 * Written against cuda.h only, like an application: no gpuswap header.
 */
#include <criterion/criterion.h>
#include <cuda.h>
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CK(call)                                                                   \
	do {                                                                       \
		CUresult ck_rc_ = (call);                                          \
		cr_assert_eq(ck_rc_, CUDA_SUCCESS, "%s: %d", #call, (int)ck_rc_);  \
	} while (0)

typedef int tracker_count_fn(const char *kind, uint64_t *count, uint64_t *bytes);

static tracker_count_fn *tracker_count;
static CUdevice dev;
static CUcontext ctx;

static void setup(void)
{
	/* POSIX's way to take a function from dlsym without a cast ISO C
	 * forbids. */
	*(void **)&tracker_count = dlsym(RTLD_DEFAULT, "gs_introspect_tracker_count");
	cr_assert_not_null(tracker_count, "gs_introspect_tracker_count not found: the shim "
			   "must be preloaded (run through meson)");
	CK(cuInit(0));
	CK(cuDeviceGet(&dev, 0));
	CK(cuCtxCreate(&ctx, NULL, 0, dev));
}

static void teardown(void)
{
	if (ctx)
		cuCtxDestroy(ctx);
}

static uint64_t count(const char *kind)
{
	uint64_t n = 0;

	cr_assert_eq(tracker_count(kind, &n, NULL), 0, "kind %s", kind);
	return n;
}

static uint64_t bytes(const char *kind)
{
	uint64_t n = 0;

	cr_assert_eq(tracker_count(kind, NULL, &n), 0, "kind %s", kind);
	return n;
}

static size_t used_memory(void)
{
	size_t free_b = 0, total = 0;

	CK(cuMemGetInfo(&free_b, &total));
	return total - free_b;
}

/* A fixture of tests/kernels; the string lives until the test ends. */
static const char *kernels_path(const char *name)
{
	const char *dir = getenv("GS_KERNELS_DIR");
	char *path;

	cr_assert_not_null(dir, "GS_KERNELS_DIR not set");
	cr_assert_gt(asprintf(&path, "%s/%s", dir, name), 0);
	return path;
}

static size_t file_size(const char *path)
{
	struct stat st;

	cr_assert_eq(stat(path, &st), 0, "%s", path);
	return (size_t)st.st_size;
}

static void *file_read(const char *path, size_t *size)
{
	FILE *f = fopen(path, "rb");
	void *buf;

	cr_assert_not_null(f, "%s", path);
	*size = file_size(path);
	buf = malloc(*size);
	cr_assert_eq(fread(buf, 1, *size, f), *size);
	fclose(f);
	return buf;
}

TestSuite(shim, .init = setup, .fini = teardown, .timeout = 120);

Test(shim, introspection_names)
{
	uint64_t n;

	cr_assert_eq(tracker_count("stream", &n, NULL), 0);
	cr_assert_eq(tracker_count("unsupported:graph", &n, NULL), 0);
	cr_assert_neq(tracker_count("no-such-kind", &n, NULL), 0);
	cr_assert_neq(tracker_count("unsupported:nothing", &n, NULL), 0);
}

Test(shim, contexts)
{
	CUcontext second, primary, again;

	cr_assert_eq(count("ctx"), 1);
	CK(cuCtxCreate(&second, NULL, CU_CTX_SCHED_BLOCKING_SYNC, dev));
	cr_assert_eq(count("ctx"), 2);
	CK(cuCtxDestroy(second));
	cr_assert_eq(count("ctx"), 1);

	CK(cuDevicePrimaryCtxRetain(&primary, dev));
	CK(cuDevicePrimaryCtxRetain(&again, dev));
	cr_assert_eq(primary, again);
	cr_assert_eq(count("ctx"), 2, "one record per primary context");
	CK(cuCtxSetCurrent(primary));
	CUstream s;

	CK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
	CK(cuCtxSetLimit(CU_LIMIT_STACK_SIZE, 4096));
	cr_assert_eq(count("stream"), 1);
	CK(cuDevicePrimaryCtxRelease(dev));
	cr_assert_eq(count("stream"), 1, "still retained once");
	CK(cuDevicePrimaryCtxRelease(dev));
	/* The last release resets the primary context: its stream is gone. */
	cr_assert_eq(count("stream"), 0);
	cr_assert_eq(count("ctx"), 1);
	CK(cuCtxSetCurrent(ctx));
}

Test(shim, streams_and_events)
{
	CUstream s[5];
	CUevent e[3];
	int lo = 0, hi = 0;

	CK(cuCtxGetStreamPriorityRange(&lo, &hi));
	CK(cuStreamCreate(&s[0], CU_STREAM_DEFAULT));
	CK(cuStreamCreate(&s[1], CU_STREAM_NON_BLOCKING));
	CK(cuStreamCreateWithPriority(&s[2], CU_STREAM_NON_BLOCKING, hi));
	CK(cuStreamCreateWithPriority(&s[3], CU_STREAM_DEFAULT, lo));
	CK(cuStreamCreate(&s[4], CU_STREAM_DEFAULT));
	CK(cuEventCreate(&e[0], CU_EVENT_DEFAULT));
	CK(cuEventCreate(&e[1], CU_EVENT_DISABLE_TIMING));
	CK(cuEventCreate(&e[2], CU_EVENT_BLOCKING_SYNC));
	cr_assert_eq(count("stream"), 5);
	cr_assert_eq(count("event"), 3);
	/* The handles the application got still work. */
	CK(cuEventRecord(e[0], s[2]));
	CK(cuStreamWaitEvent(s[3], e[0], 0));
	CK(cuStreamSynchronize(s[3]));
	CK(cuStreamDestroy(s[1]));
	CK(cuStreamDestroy(s[4]));
	CK(cuEventDestroy(e[1]));
	cr_assert_eq(count("stream"), 3);
	cr_assert_eq(count("event"), 2);
	/* A failed call records nothing. */
	cr_assert_neq(cuStreamCreate(NULL, 0), CUDA_SUCCESS);
	cr_assert_eq(count("stream"), 3);
	/* Destroying the context takes the rest. */
	CK(cuCtxDestroy(ctx));
	ctx = NULL;
	cr_assert_eq(count("stream"), 0);
	cr_assert_eq(count("event"), 0);
	cr_assert_eq(count("ctx"), 0);
}

Test(shim, modules_functions_globals)
{
	const char *fatbin = kernels_path("gs_kernels.fatbin");
	const char *ptx_path = kernels_path("gs_kernels.ptx");
	size_t ptx_size;
	char *ptx_file = file_read(ptx_path, &ptx_size);
	char *ptx = malloc(ptx_size + 1);
	CUmodule a, b;
	CUfunction f, f2, g;
	CUdeviceptr step;
	size_t step_size;

	memcpy(ptx, ptx_file, ptx_size);
	ptx[ptx_size] = 0;
	CK(cuModuleLoad(&a, fatbin));
	CK(cuModuleLoadData(&b, ptx));
	free(ptx);
	free(ptx_file);
	cr_assert_eq(count("module"), 2);
	cr_assert_eq(bytes("module"), file_size(fatbin) + ptx_size + 1,
		     "a private copy of each image (the fatbin file, the PTX with its NUL): "
		     "%llu bytes, expected %zu + %zu + 1", (unsigned long long)bytes("module"),
		     file_size(fatbin), ptx_size);

	CK(cuModuleGetFunction(&f, a, "axpy"));
	CK(cuModuleGetFunction(&f2, a, "axpy"));
	cr_assert_eq(f, f2);
	CK(cuModuleGetFunction(&g, b, "noop"));
	cr_assert_eq(count("function"), 2);
	CK(cuFuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 1024));
	CK(cuModuleGetGlobal(&step, &step_size, a, "gs_step"));
	CK(cuModuleGetGlobal(&step, NULL, a, "gs_magic"));
	cr_assert_eq(count("global"), 2);
	cr_assert_eq(bytes("global"), step_size + sizeof(int));

	CK(cuModuleUnload(a));
	cr_assert_eq(count("module"), 1);
	cr_assert_eq(count("function"), 1);
	cr_assert_eq(count("global"), 0);
	CK(cuModuleUnload(b));
	cr_assert_eq(count("function"), 0);
	cr_assert_eq(bytes("module"), 0);
}

Test(shim, libraries_and_kernels)
{
	const char *fatbin = kernels_path("gs_kernels.fatbin");
	CUlibrary lib;
	CUkernel k;
	CUfunction f;
	CUmodule m;

	CK(cuLibraryLoadFromFile(&lib, fatbin, NULL, NULL, 0, NULL, NULL, 0));
	cr_assert_eq(count("library"), 1);
	cr_assert_eq(bytes("library"), file_size(fatbin));
	CK(cuLibraryGetKernel(&k, lib, "axpy"));
	CK(cuKernelGetFunction(&f, k));
	CK(cuLibraryGetModule(&m, lib));
	cr_assert_eq(count("kernel"), 1);
	cr_assert_eq(count("function"), 1);
	cr_assert_eq(count("module"), 1);
	CK(cuLibraryUnload(lib));
	cr_assert_eq(count("library"), 0);
	cr_assert_eq(count("kernel"), 0);
	cr_assert_eq(count("function"), 0);
	cr_assert_eq(count("module"), 0);
}

/* Device memory: the tracker's records of physical memory (the arena's
 * chunks and the application's own) account for exactly what the simulator
 * says is in use. */
Test(shim, memory_matches_the_driver)
{
	size_t used0 = used_memory();
	uint64_t phys0 = bytes("phys"), allocs0 = count("alloc");
	CUdeviceptr p[4];
	size_t sizes[4] = { 1000, 1 << 20, 3 << 20, 512 };

	for (int i = 0; i < 4; i++)
		CK(cuMemAlloc(&p[i], sizes[i]));
	cr_assert_eq(count("alloc"), allocs0 + 4);
	cr_assert_eq(bytes("alloc"), 1000 + (1 << 20) + (3 << 20) + 512);
	cr_assert_eq(used_memory() - used0, bytes("phys") - phys0,
		     "driver: %zu bytes more in use, tracker: %llu", used_memory() - used0,
		     (unsigned long long)(bytes("phys") - phys0));
	CK(cuMemFree(p[1]));
	CK(cuMemFree(p[3]));
	cr_assert_eq(count("alloc"), allocs0 + 2);
	cr_assert_eq(used_memory() - used0, bytes("phys") - phys0);
	CK(cuMemFree(p[0]));
	CK(cuMemFree(p[2]));
	cr_assert_eq(count("alloc"), allocs0);
}

/* The application's own VMM, as PyTorch's expandable segments use it. */
Test(shim, application_vmm)
{
	CUmemAllocationProp prop = { .type = CU_MEM_ALLOCATION_TYPE_PINNED };
	CUmemAccessDesc access = { .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
	CUmemGenericAllocationHandle h[2];
	size_t gran = 0, used0;
	uint64_t resv0 = count("reservation"), phys0 = bytes("phys"), maps0 = count("mapping");
	CUdeviceptr va;

	prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	prop.location.id = dev;
	access.location = prop.location;
	CK(cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
	used0 = used_memory();
	CK(cuMemAddressReserve(&va, 8 * gran, 0, 0, 0));
	CK(cuMemCreate(&h[0], gran, &prop, 0));
	CK(cuMemCreate(&h[1], 2 * gran, &prop, 0));
	CK(cuMemMap(va, gran, 0, h[0], 0));
	CK(cuMemMap(va + gran, 2 * gran, 0, h[1], 0));
	CK(cuMemSetAccess(va, 3 * gran, &access, 1));
	cr_assert_eq(count("reservation"), resv0 + 1);
	cr_assert_eq(count("mapping"), maps0 + 2);
	cr_assert_eq(bytes("phys") - phys0, 3 * gran);
	cr_assert_eq(used_memory() - used0, 3 * gran);
	/* Released handles: the mappings keep the memory. */
	CK(cuMemRelease(h[0]));
	CK(cuMemRelease(h[1]));
	cr_assert_eq(bytes("phys") - phys0, 3 * gran);
	cr_assert_eq(used_memory() - used0, 3 * gran);
	CK(cuMemsetD8(va, 0x5a, 3 * gran));
	CK(cuCtxSynchronize());
	CK(cuMemUnmap(va, 3 * gran));
	cr_assert_eq(bytes("phys"), phys0);
	cr_assert_eq(used_memory(), used0);
	cr_assert_eq(count("mapping"), maps0);
	CK(cuMemAddressFree(va, 8 * gran));
	cr_assert_eq(count("reservation"), resv0);
}

/* Run with SIMCUDA_FAIL=cuStreamDestroy_v2:1:...: the driver refuses the
 * first destroy, so the stream lives on and so does its record. */
TestSuite(fault, .init = setup, .fini = teardown, .timeout = 120);

Test(fault, failed_destroy_keeps_the_record)
{
	CUstream s;

	CK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
	cr_assert_eq(count("stream"), 1);
	cr_assert_eq(cuStreamDestroy(s), CUDA_ERROR_INVALID_VALUE, "SIMCUDA_FAIL not applied?");
	cr_assert_eq(count("stream"), 1, "the stream still exists");
	CK(cuStreamSynchronize(s));
	CK(cuStreamDestroy(s));
	cr_assert_eq(count("stream"), 0);
}
