/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A fault injected into the real driver's answer (SIMCUDA_FAIL, set per
 * mode by meson.build) is returned unchanged to the caller and leaves no
 * stale record.
 *
 * Each mode makes one tracked call whose driver call fails (for cuMemAlloc
 * and cuMemHostAlloc: a driver call the shim makes to serve it) and checks:
 *   - the caller gets exactly the injected CUresult;
 *   - the output parameter still holds what the caller put there;
 *   - every tracker count and byte total is as before, and so is the
 *     simulator's cuMemGetInfo;
 *   - the same call made again succeeds and is recorded, so the comparison
 *     above would have seen a record had one been made.
 * tests/tracker covers a failing destroy (the record must stay); these are
 * the creating calls.
 *
 * argv[1]: the mode; argv[2]: the CUresult (number) SIMCUDA_FAIL injects.
 */
#include <cuda.h>
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include "shimsim.h"

#define SENTINEL ((uint64_t)0x5e5e5e5e5e5eull)

static CUresult injected;
static CUcontext primary;
static size_t gran;

static const char ptx[] =
	".version 8.0\n.target sm_80\n.address_size 64\n"
	".visible .entry shimsim_fault()\n{\n\tret;\n}\n";

static size_t free_memory(void)
{
	size_t free_b = 0, total = 0;

	CU_REQUIRE(cuMemGetInfo(&free_b, &total));
	return free_b;
}

struct before {
	struct ss_counts counts;
	size_t free_b;
	CUcontext current;
};

static void snapshot(struct before *b)
{
	ss_counts_get(&b->counts);
	b->free_b = free_memory();
	CU_REQUIRE(cuCtxGetCurrent(&b->current));
}

/* The failed call changed nothing the tracker or the driver shows. */
static void unchanged(const char *call, CUresult rc, const struct before *b)
{
	struct ss_counts now;
	CUcontext current = NULL;

	CHECK(rc == injected, "%s returned %s, the driver failed it with %s", call, ss_err(rc),
	      ss_err(injected));
	ss_counts_get(&now);
	CHECK(ss_counts_diff(call, &b->counts, &now) == 0, "%s left records behind", call);
	CHECK(free_memory() == b->free_b, "%s: free memory %zu, was %zu", call, free_memory(),
	      b->free_b);
	CU_CHECK(cuCtxGetCurrent(&current));
	CHECK(current == b->current, "%s changed the current context", call);
}

static uint64_t count_of(enum ss_kind k)
{
	struct ss_counts c;

	ss_counts_get(&c);
	return c.count[k];
}

/* The retry made a record: the comparison could have seen one. */
#define RECORDED(kind, before_counts)                                                   \
	CHECK(count_of(kind) == (before_counts).count[kind] + 1,                        \
	      "the retry made %llu %s records, expected 1",                             \
	      (unsigned long long)(count_of(kind) - (before_counts).count[kind]),       \
	      ss_kind_names[kind])

static CUmemAllocationProp device_prop(void)
{
	CUmemAllocationProp prop = {
		.type = CU_MEM_ALLOCATION_TYPE_PINNED,
		.location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = 0 },
	};
	return prop;
}

static void mode_stream(void)
{
	struct before b;
	CUstream s = (CUstream)(uintptr_t)SENTINEL;

	snapshot(&b);
	unchanged("cuStreamCreate", cuStreamCreate(&s, CU_STREAM_NON_BLOCKING), &b);
	CHECK(s == (CUstream)(uintptr_t)SENTINEL, "cuStreamCreate wrote %p", (void *)s);
	CU_CHECK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
	RECORDED(SS_STREAM, b.counts);
	CU_CHECK(cuStreamDestroy(s));
}

static void mode_stream_priority(void)
{
	struct before b;
	CUstream s = (CUstream)(uintptr_t)SENTINEL;
	int lo, hi;

	CU_REQUIRE(cuCtxGetStreamPriorityRange(&lo, &hi));
	snapshot(&b);
	unchanged("cuStreamCreateWithPriority", cuStreamCreateWithPriority(&s, 0, hi), &b);
	CHECK(s == (CUstream)(uintptr_t)SENTINEL, "cuStreamCreateWithPriority wrote %p", (void *)s);
	CU_CHECK(cuStreamCreateWithPriority(&s, 0, hi));
	RECORDED(SS_STREAM, b.counts);
	CU_CHECK(cuStreamDestroy(s));
}

static void mode_event(void)
{
	struct before b;
	CUevent e = (CUevent)(uintptr_t)SENTINEL;

	snapshot(&b);
	unchanged("cuEventCreate", cuEventCreate(&e, CU_EVENT_DISABLE_TIMING), &b);
	CHECK(e == (CUevent)(uintptr_t)SENTINEL, "cuEventCreate wrote %p", (void *)e);
	CU_CHECK(cuEventCreate(&e, CU_EVENT_DISABLE_TIMING));
	RECORDED(SS_EVENT, b.counts);
	CU_CHECK(cuEventDestroy(e));
}

/* The shim copies the image for a later restore: a failed load must not
 * keep the copy (module bytes are compared too). */
static void mode_module(void)
{
	struct before b;
	CUmodule m = (CUmodule)(uintptr_t)SENTINEL;
	char *path = ss_kernel_path("gs_kernels.fatbin");
	void *image = ss_read_file(path, NULL);

	snapshot(&b);
	unchanged("cuModuleLoadData", cuModuleLoadData(&m, image), &b);
	CHECK(m == (CUmodule)(uintptr_t)SENTINEL, "cuModuleLoadData wrote %p", (void *)m);
	CU_CHECK(cuModuleLoadData(&m, image));
	RECORDED(SS_MODULE, b.counts);
	CU_CHECK(cuModuleUnload(m));
	free(image);
	free(path);
}

static void mode_function(void)
{
	struct before b;
	CUmodule m;
	CUfunction f = (CUfunction)(uintptr_t)SENTINEL;

	CU_REQUIRE(cuModuleLoadData(&m, ptx));
	snapshot(&b);
	unchanged("cuModuleGetFunction", cuModuleGetFunction(&f, m, "shimsim_fault"), &b);
	CHECK(f == (CUfunction)(uintptr_t)SENTINEL, "cuModuleGetFunction wrote %p", (void *)f);
	CU_CHECK(cuModuleGetFunction(&f, m, "shimsim_fault"));
	RECORDED(SS_FUNCTION, b.counts);
	CU_CHECK(cuModuleUnload(m));
}

/* cuCtxCreate pushes the new context: a failed one must not have. */
static void mode_ctx_create(void)
{
	struct before b;
	CUcontext c = (CUcontext)(uintptr_t)SENTINEL;

	snapshot(&b);
	unchanged("cuCtxCreate", cuCtxCreate(&c, NULL, 0, 0), &b);
	CHECK(c == (CUcontext)(uintptr_t)SENTINEL, "cuCtxCreate wrote %p", (void *)c);
	CU_CHECK(cuCtxCreate(&c, NULL, 0, 0));
	RECORDED(SS_CTX, b.counts);
	CU_CHECK(cuCtxDestroy(c));
}

/* The first retain of device 1's primary context (the set-up retained
 * device 0's: SIMCUDA_FAIL names the second call). */
static void mode_primary(void)
{
	struct before b;
	CUcontext c = (CUcontext)(uintptr_t)SENTINEL;

	snapshot(&b);
	unchanged("cuDevicePrimaryCtxRetain", cuDevicePrimaryCtxRetain(&c, 1), &b);
	CHECK(c == (CUcontext)(uintptr_t)SENTINEL, "cuDevicePrimaryCtxRetain wrote %p", (void *)c);
	CU_CHECK(cuDevicePrimaryCtxRetain(&c, 1));
	RECORDED(SS_CTX, b.counts);
	CU_CHECK(cuDevicePrimaryCtxRelease(1));
}

static void mode_reserve(void)
{
	struct before b;
	CUdeviceptr va = SENTINEL;

	snapshot(&b);
	unchanged("cuMemAddressReserve", cuMemAddressReserve(&va, 4 * gran, 0, 0, 0), &b);
	CHECK(va == SENTINEL, "cuMemAddressReserve wrote %#llx", (unsigned long long)va);
	CU_CHECK(cuMemAddressReserve(&va, 4 * gran, 0, 0, 0));
	RECORDED(SS_RESERVATION, b.counts);
	CU_CHECK(cuMemAddressFree(va, 4 * gran));
}

static void mode_mem_create(void)
{
	CUmemAllocationProp prop = device_prop();
	struct before b;
	CUmemGenericAllocationHandle h = SENTINEL;

	snapshot(&b);
	unchanged("cuMemCreate", cuMemCreate(&h, 2 * gran, &prop, 0), &b);
	CHECK(h == SENTINEL, "cuMemCreate wrote %#llx", (unsigned long long)h);
	CU_CHECK(cuMemCreate(&h, 2 * gran, &prop, 0));
	RECORDED(SS_PHYS, b.counts);
	CU_CHECK(cuMemRelease(h));
}

static void mode_mem_map(void)
{
	CUmemAllocationProp prop = device_prop();
	CUmemAccessDesc access = {
		.location = prop.location,
		.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE,
	};
	struct before b;
	CUmemGenericAllocationHandle h;
	CUdeviceptr va;

	CU_REQUIRE(cuMemAddressReserve(&va, 4 * gran, 0, 0, 0));
	CU_REQUIRE(cuMemCreate(&h, gran, &prop, 0));
	snapshot(&b);
	unchanged("cuMemMap", cuMemMap(va + gran, gran, 0, h, 0), &b);
	CU_CHECK(cuMemMap(va + gran, gran, 0, h, 0));
	RECORDED(SS_MAPPING, b.counts);
	/* The retried mapping is usable: the failed one left nothing in the
	 * way. */
	CU_CHECK(cuMemSetAccess(va + gran, gran, &access, 1));
	CU_CHECK(cuMemsetD8(va + gran, 0x11, gran));
	/* The memset may still run: unmapping under it is the caller's bug. */
	CU_CHECK(cuCtxSynchronize());
	CU_CHECK(cuMemUnmap(va + gran, gran));
	CU_CHECK(cuMemRelease(h));
	CU_CHECK(cuMemAddressFree(va, 4 * gran));
}

/* cuMemAlloc served by the arena: the injected failure is in a driver call
 * the shim makes (a second chunk's cuMemCreate, cuMemMap or cuMemSetAccess,
 * after a first allocation set up the window and one chunk). */
static void mode_mem_alloc(const char *inner)
{
	struct before b;
	CUdeviceptr first, p = SENTINEL;
	size_t size = 3 * gran; /* more than any chunk the first one left */
	char what[64];

	snprintf(what, sizeof(what), "cuMemAlloc (failing %s)", inner);
	CU_REQUIRE(cuMemAlloc(&first, 1000));
	snapshot(&b);
	unchanged(what, cuMemAlloc(&p, size), &b);
	CHECK(p == SENTINEL, "%s wrote %#llx", what, (unsigned long long)p);
	CU_CHECK(cuMemAlloc(&p, size));
	RECORDED(SS_ALLOC, b.counts);
	CU_CHECK(cuMemsetD8(p, 0x22, size));
	CU_CHECK(cuMemFree(p));
	CU_CHECK(cuMemFree(first));
}

/* cuMemHostAlloc served by the shim (mmap + cuMemHostRegister). */
static void mode_host_alloc(void)
{
	struct before b;
	void *p = (void *)(uintptr_t)SENTINEL;

	snapshot(&b);
	unchanged("cuMemHostAlloc", cuMemHostAlloc(&p, 100000, CU_MEMHOSTALLOC_DEVICEMAP), &b);
	CHECK(p == (void *)(uintptr_t)SENTINEL, "cuMemHostAlloc wrote %p", p);
	CU_CHECK(cuMemHostAlloc(&p, 100000, CU_MEMHOSTALLOC_DEVICEMAP));
	RECORDED(SS_HOST, b.counts);
	CU_CHECK(cuMemFreeHost(p));
}

static const struct {
	const char *name;
	void (*run)(void);
} modes[] = {
	{ "stream", mode_stream },
	{ "stream-priority", mode_stream_priority },
	{ "event", mode_event },
	{ "module", mode_module },
	{ "function", mode_function },
	{ "ctx-create", mode_ctx_create },
	{ "primary-retain", mode_primary },
	{ "reserve", mode_reserve },
	{ "mem-create", mode_mem_create },
	{ "mem-map", mode_mem_map },
	{ "host-alloc", mode_host_alloc },
};

int main(int argc, char **argv)
{
	CUmemAllocationProp prop = device_prop();
	const char *mode = argc > 1 ? argv[1] : "";
	const char *spec = getenv("SIMCUDA_FAIL");

	REQUIRE(argc == 3, "usage: %s MODE CURESULT (with SIMCUDA_FAIL set)", argv[0]);
	REQUIRE(spec && *spec, "SIMCUDA_FAIL is not set: nothing would fail");
	injected = (CUresult)atoi(argv[2]);
	ss_introspect_load(RTLD_DEFAULT);
	CU_REQUIRE(cuInit(0));
	CU_REQUIRE(cuDevicePrimaryCtxRetain(&primary, 0));
	CU_REQUIRE(cuCtxSetCurrent(primary));
	CU_REQUIRE(cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));

	if (!strncmp(mode, "mem-alloc-", 10)) {
		mode_mem_alloc(mode + 10);
	} else {
		size_t i;

		for (i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
			if (!strcmp(modes[i].name, mode))
				break;
		REQUIRE(i < sizeof(modes) / sizeof(modes[0]), "unknown mode %s", mode);
		modes[i].run();
	}
	CU_CHECK(cuDevicePrimaryCtxRelease(0));
	printf("mode %s, SIMCUDA_FAIL=%s\n", mode, spec);
	return ss_result("a driver fault passes through the shim and leaves no record");
}
