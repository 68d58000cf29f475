/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The replay tests' workload: one device's worth of every kind of state a
 * migration must carry, with contents derived from a generation number so
 * that any byte that was lost, moved or left stale shows.
 *
 * The application side uses the shim's exported entry points, like a
 * program would. Checks of objects behind handles go to the real driver
 * with the real handles the tracker maps the app handles to: they hold with
 * or without the translation layer.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "g_api.h"
#include "gs_kernels.h"
#include "replay_test.h"
#include "rp_internal.h"
#include "tracker.h"
#include "translate.h"

#define SMALL_BYTES 4096
#define FILL_WORDS 1024

uint64_t wl_real(int kind, uint64_t app)
{
	return rp_to_real((enum gs_kind)kind, app);
}

const char *wl_kernels(const char *name)
{
	static char path[4096];
	const char *dir = getenv("GS_KERNELS_DIR");

	snprintf(path, sizeof(path), "%s/%s", dir ? dir : ".", name);
	return path;
}

static uint32_t big_word(size_t i, unsigned gen)
{
	if (gen && i < FILL_WORDS)
		return 0xa0000000u + gen;
	return (uint32_t)(i * 2654435761u) ^ 0x5a5a0000u;
}

static uint8_t small_byte(size_t i, unsigned gen)
{
	return (uint8_t)(i * 13 + gen * 7 + 1);
}

static uint8_t vmm_byte(size_t i, unsigned gen)
{
	return (uint8_t)((i >> 12) ^ (i * 31) ^ (gen * 101));
}

static uint8_t host_byte(size_t i)
{
	return (uint8_t)(i * 3 + 17);
}

CUresult wl_launch(struct wl *w, CUfunction app_fn, void **params)
{
	CUcontext ctx = (CUcontext)(uintptr_t)wl_real(GS_KIND_CTX, (uintptr_t)w->ctx);
	CUfunction fn = (CUfunction)(uintptr_t)wl_real(GS_KIND_FUNCTION, (uintptr_t)app_fn);
	CUstream st = (CUstream)(uintptr_t)wl_real(GS_KIND_STREAM, (uintptr_t)w->stream);
	CUcontext popped;
	CUresult rc;

	rc = gs_real.cuCtxPushCurrent_v2(ctx);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = gs_real.cuLaunchKernel(fn, 1, 1, 1, 1, 1, 1, 0, st, params, NULL);
	if (rc == CUDA_SUCCESS)
		rc = gs_real.cuStreamSynchronize(st);
	gs_real.cuCtxPopCurrent_v2(&popped);
	return rc;
}

static int write_small(struct wl *w)
{
	uint8_t buf[SMALL_BYTES];

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = small_byte(i, w->gen);
	/* A device pointer stored in device memory: valid only if the big
	 * allocation comes back at its address. */
	memcpy(buf, &w->big, sizeof(w->big));
	CU(cuMemcpyHtoD(w->small, buf, sizeof(buf)));
	return 0;
}

static int write_vmm(struct wl *w)
{
	uint8_t *buf = malloc(w->vmm_size);

	REQUIRE(buf, "out of memory");
	for (size_t i = 0; i < w->vmm_size; i++)
		buf[i] = vmm_byte(i, w->gen);
	CUresult rc = cuMemcpyHtoD(w->vmm, buf, w->vmm_size);
	free(buf);
	CU(rc);
	return 0;
}

static int write_globals(struct wl *w)
{
	void *params[] = { &w->magic, &w->table_base };

	/* Through the kernel: the variable lives in the module's storage,
	 * written as device code writes it. */
	CU(wl_launch(w, w->f_gwrite, params));
	return 0;
}

int wl_setup(struct wl *w, int dev, const char *path)
{
	CUdevice d;
	CUmemAllocationProp prop = { 0 };
	CUmemAccessDesc access = { 0 };
	uint32_t *big;
	long page = sysconf(_SC_PAGESIZE);
	int prio_lo = 0, prio_hi = 0;

	memset(w, 0, sizeof(*w));
	w->dev = dev;
	w->magic = 0x1234abcd;
	w->table_base = 2.5f;
	CU(cuInit(0));
	CU(cuDeviceGet(&d, dev));
	CU(cuDevicePrimaryCtxRetain(&w->pctx, d));
	CU(cuCtxCreate(&w->ctx, NULL, 0, d));
	CU(cuCtxSetLimit(CU_LIMIT_STACK_SIZE, 4096));
	CU(cuCtxGetStreamPriorityRange(&prio_lo, &prio_hi));

	CU(cuModuleLoad(&w->mod, path));
	CU(cuModuleGetFunction(&w->f_fill, w->mod, "fill_u32"));
	CU(cuModuleGetFunction(&w->f_gwrite, w->mod, "global_write"));
	CU(cuModuleGetFunction(&w->f_gread, w->mod, "global_read"));
	CU(cuFuncSetAttribute(w->f_fill, CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT, 50));
	CU(cuModuleGetGlobal(&w->g_magic, &w->g_magic_size, w->mod, "gs_magic"));
	CU(cuStreamCreateWithPriority(&w->stream, CU_STREAM_NON_BLOCKING, prio_hi));
	CU(cuEventCreate(&w->event, CU_EVENT_DISABLE_TIMING));

	/* Device memory: one allocation of its own chunks, two packed ones. */
	w->big_size = (3u << 20) + 4096;
	w->small_size = SMALL_BYTES;
	w->out_size = 4096;
	CU(cuMemAlloc(&w->big, w->big_size));
	CU(cuMemAlloc(&w->small, w->small_size));
	CU(cuMemAlloc(&w->out, w->out_size));
	big = malloc(w->big_size);
	REQUIRE(big, "out of memory");
	for (size_t i = 0; i < w->big_size / 4; i++)
		big[i] = big_word(i, 0);
	CUresult rc = cuMemcpyHtoD(w->big, big, w->big_size);
	free(big);
	CU(rc);
	if (write_small(w))
		return -1;
	CU(cuMemsetD8(w->out, 0, w->out_size));

	/* Pinned host memory, the shim's and the application's own. */
	w->pinned_size = 64 << 10;
	CU(cuMemAllocHost(&w->pinned, w->pinned_size));
	for (size_t i = 0; i < w->pinned_size; i++)
		((uint8_t *)w->pinned)[i] = host_byte(i);
	w->reg_size = 16 * (size_t)page;
	w->reg = mmap(NULL, w->reg_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	REQUIRE(w->reg != MAP_FAILED, "mmap");
	for (size_t i = 0; i < w->reg_size; i++)
		((uint8_t *)w->reg)[i] = host_byte(i + 5);
	CU(cuMemHostRegister(w->reg, w->reg_size, CU_MEMHOSTREGISTER_PORTABLE));

	/* The application's own VMM, as PyTorch's expandable segments. */
	prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
	prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	prop.location.id = dev;
	CU(cuMemGetAllocationGranularity(&w->granularity, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
	w->vmm_size = 2 * w->granularity;
	CU(cuMemAddressReserve(&w->vmm, 4 * w->granularity, 0, 0, 0));
	CU(cuMemCreate(&w->phys, w->vmm_size, &prop, 0));
	CU(cuMemMap(w->vmm, w->vmm_size, 0, w->phys, 0));
	access.location = prop.location;
	access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
	CU(cuMemSetAccess(w->vmm, w->vmm_size, &access, 1));
	if (write_vmm(w))
		return -1;

	if (write_globals(w))
		return -1;
	CU(cuEventRecord(w->event, w->stream));
	CU(cuStreamSynchronize(w->stream));
	return 0;
}

int wl_mutate(struct wl *w)
{
	unsigned value, n = FILL_WORDS;
	void *params[] = { &w->big, &value, &n };

	w->gen++;
	value = big_word(0, w->gen);
	CU(wl_launch(w, w->f_fill, params));
	w->magic = 0x1000 + (int)w->gen;
	w->table_base = (float)w->gen * 10.0f;
	if (write_globals(w) || write_small(w) || write_vmm(w))
		return -1;
	return 0;
}

static int global_rec_real(const struct gs_rec *rec, void *arg)
{
	*(uint64_t *)arg = rec->real;
	return 0;
}

int wl_verify(struct wl *w, int rdev)
{
	CUcontext ctx = (CUcontext)(uintptr_t)wl_real(GS_KIND_CTX, (uintptr_t)w->ctx);
	CUcontext pctx = (CUcontext)(uintptr_t)wl_real(GS_KIND_CTX, (uintptr_t)w->pctx);
	CUmodule mod = (CUmodule)(uintptr_t)wl_real(GS_KIND_MODULE, (uintptr_t)w->mod);
	CUstream st = (CUstream)(uintptr_t)wl_real(GS_KIND_STREAM, (uintptr_t)w->stream);
	CUevent ev = (CUevent)(uintptr_t)wl_real(GS_KIND_EVENT, (uintptr_t)w->event);
	CUfunction fill = (CUfunction)(uintptr_t)wl_real(GS_KIND_FUNCTION, (uintptr_t)w->f_fill);
	CUcontext cur = NULL, prim = NULL, popped;
	CUdevice d = -1;
	CUdeviceptr g = 0, devptr = 0;
	size_t gsize = 0, limit = 0;
	unsigned flags = 0;
	uint64_t rec_real = 0;
	int attr = 0, bad = 0;
	uint8_t *buf;
	unsigned long long step = 0;

	/* Contexts: on the target, the primary one the target's. */
	CU(gs_real.cuCtxGetDevice_v2(&d, ctx));
	CHECK(d == rdev, "created context on GPU %d, expected %d", d, rdev);
	CU(gs_real.cuDevicePrimaryCtxRetain(&prim, rdev));
	gs_real.cuDevicePrimaryCtxRelease_v2(rdev);
	CHECK(prim == pctx, "primary context %p is not GPU %d's (%p)", (void *)pctx, rdev,
	      (void *)prim);

	/* Memory, through the application's entry points: pointers only, no
	 * handle to translate. The first call after a thaw also gives this
	 * thread its context back. */
	buf = malloc(w->big_size > w->vmm_size ? w->big_size : w->vmm_size);
	REQUIRE(buf, "out of memory");
	CUresult rc = cuMemcpyDtoH(buf, w->big, w->big_size);
	CHECK(rc == CUDA_SUCCESS, "reading the big allocation: %d", (int)rc);
	CHECK(gs_real.cuCtxGetCurrent(&cur) == CUDA_SUCCESS && cur == ctx,
	      "current context %p, expected %p", (void *)cur, (void *)ctx);
	for (size_t i = 0; rc == CUDA_SUCCESS && i < w->big_size / 4 && bad < 5; i++) {
		uint32_t v;

		memcpy(&v, buf + 4 * i, 4);
		if (v != big_word(i, w->gen)) {
			CHECK(v == big_word(i, w->gen), "big[%zu] = %#x, expected %#x", i, v,
			      big_word(i, w->gen));
			bad++;
		}
	}
	rc = cuMemcpyDtoH(buf, w->small, w->small_size);
	CHECK(rc == CUDA_SUCCESS, "reading the small allocation: %d", (int)rc);
	CHECK(!memcmp(buf, &w->big, sizeof(w->big)), "the device pointer stored in device memory "
	      "changed");
	for (size_t i = sizeof(w->big); rc == CUDA_SUCCESS && i < w->small_size && bad < 10; i++)
		if (buf[i] != small_byte(i, w->gen)) {
			CHECK(buf[i] == small_byte(i, w->gen), "small[%zu] = %#x", i, buf[i]);
			bad++;
		}
	rc = cuMemcpyDtoH(buf, w->vmm, w->vmm_size);
	CHECK(rc == CUDA_SUCCESS, "reading the VMM range: %d", (int)rc);
	for (size_t i = 0; rc == CUDA_SUCCESS && i < w->vmm_size && bad < 15; i++)
		if (buf[i] != vmm_byte(i, w->gen)) {
			CHECK(buf[i] == vmm_byte(i, w->gen), "vmm[%zu] = %#x", i, buf[i]);
			bad++;
		}
	free(buf);

	/* Pinned host memory: same bytes, pinned again. */
	for (size_t i = 0; i < w->pinned_size && bad < 20; i++)
		if (((uint8_t *)w->pinned)[i] != host_byte(i)) {
			CHECK(0, "pinned[%zu] changed", i);
			bad++;
		}
	for (size_t i = 0; i < w->reg_size && bad < 25; i++)
		if (((uint8_t *)w->reg)[i] != host_byte(i + 5)) {
			CHECK(0, "registered[%zu] changed", i);
			bad++;
		}
	CHECK(gs_real.cuMemHostGetDevicePointer_v2(&devptr, w->pinned, 0) == CUDA_SUCCESS,
	      "the shim's pinned memory is not registered on the target");
	CHECK(gs_real.cuMemHostGetDevicePointer_v2(&devptr, w->reg, 0) == CUDA_SUCCESS,
	      "the application's registration was not made again");

	/* The module variable: new storage, old contents; the tracker knows
	 * where it went. */
	CU(gs_real.cuModuleGetGlobal_v2(&g, &gsize, mod, "gs_magic"));
	CHECK(gsize == w->g_magic_size, "gs_magic has %zu bytes", gsize);
	{
		int magic = 0;
		CHECK(cuMemcpyDtoH(&magic, g, sizeof(magic)) == CUDA_SUCCESS && magic == w->magic,
		      "gs_magic = %#x, expected %#x", magic, w->magic);
	}
	CHECK(gs_trk_with(GS_KIND_GLOBAL, w->g_magic, global_rec_real, &rec_real) == 0 &&
	      rec_real == g, "the tracker's gs_magic record says %#llx, the variable is at %#llx",
	      (unsigned long long)rec_real, (unsigned long long)g);
	/* What the translation layer makes of the address the application
	 * cached: the variable's new storage, at the same offset. */
	CHECK(gs_xlat_devptr(w->g_magic + 2) == g + 2, "a cached gs_magic address maps to %#llx, "
	      "the variable is at %#llx", (unsigned long long)gs_xlat_devptr(w->g_magic + 2),
	      (unsigned long long)g);
	CHECK(gs_xlat_devptr(w->big) == w->big, "the arena moved?");

	/* Kernels run on the target and see the restored variables. */
	{
		CUdeviceptr magic_p = w->out, step_p = w->out + 8, table_p = w->out + 16;
		void *params[] = { &magic_p, &step_p, &table_p };
		float table[GS_TABLE_LEN];
		int magic = 0;

		atomic_store(&replay_last_device, -1);
		rc = wl_launch(w, w->f_gread, params);
		CHECK(rc == CUDA_SUCCESS, "launching global_read: %d", (int)rc);
		CHECK(atomic_load(&replay_last_device) == rdev, "kernel ran on GPU %d, expected %d",
		      atomic_load(&replay_last_device), rdev);
		CHECK(cuMemcpyDtoH(&magic, magic_p, 4) == CUDA_SUCCESS && magic == w->magic,
		      "the kernel read gs_magic = %#x, expected %#x", magic, w->magic);
		CHECK(cuMemcpyDtoH(&step, step_p, 8) == CUDA_SUCCESS && step == 0,
		      "gs_step = %llu", step);
		CHECK(cuMemcpyDtoH(table, table_p, sizeof(table)) == CUDA_SUCCESS,
		      "reading the table");
		for (int i = 0; i < GS_TABLE_LEN; i++)
			CHECK(table[i] == w->table_base + (float)i, "gs_table[%d] = %g", i,
			      (double)table[i]);
	}

	/* Streams, events, limits, function attributes. */
	CHECK(gs_real.cuStreamGetFlags(st, &flags) == CUDA_SUCCESS &&
	      flags == CU_STREAM_NON_BLOCKING, "stream flags %u", flags);
	CHECK(gs_real.cuEventQuery(ev) == CUDA_SUCCESS, "the event is not usable");
	CHECK(gs_real.cuFuncGetAttribute(&attr, CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT,
					 fill) == CUDA_SUCCESS && attr == 50,
	      "carveout %d", attr);
	CU(gs_real.cuCtxPushCurrent_v2(ctx));
	CHECK(gs_real.cuCtxGetLimit(&limit, CU_LIMIT_STACK_SIZE) == CUDA_SUCCESS && limit == 4096,
	      "stack size limit %zu", limit);
	gs_real.cuCtxPopCurrent_v2(&popped);
	return replay_failures ? -1 : 0;
}

/* The application's side after a migration: its own handles, through the
 * shim's entry points (the translation layer maps them to the new ones). */
int wl_verify_app(struct wl *w, int rdev)
{
	CUcontext cur = NULL;
	CUdevice d = -1;
	CUfunction noop = NULL;
	CUstream s2 = NULL;
	CUdeviceptr g = 0, extra = 0;
	size_t gsize = 0;
	unsigned value = 0xbeef0000u + w->gen, n = 4, words[4] = { 0 };
	void *params[] = { &w->out, &value, &n };
	void *host = NULL;
	int magic = 0;

	CU(cuCtxGetCurrent(&cur));
	CHECK(cur == w->ctx, "cuCtxGetCurrent gave %p, the application's context is %p",
	      (void *)cur, (void *)w->ctx);
	CU(cuCtxGetDevice(&d));
	CHECK(d == w->dev, "cuCtxGetDevice gave %d, the application's device is %d", d, w->dev);

	atomic_store(&replay_last_device, -1);
	CU(cuLaunchKernel(w->f_fill, 1, 1, 1, 1, 1, 1, 0, w->stream, params, NULL));
	CU(cuEventRecord(w->event, w->stream));
	CU(cuEventSynchronize(w->event));
	CU(cuStreamSynchronize(w->stream));
	CHECK(atomic_load(&replay_last_device) == rdev, "the application's launch ran on GPU %d",
	      atomic_load(&replay_last_device));
	CU(cuMemcpyDtoH(words, w->out, sizeof(words)));
	CHECK(words[0] == value && words[3] == value, "the application's kernel wrote %#x", words[0]);

	/* New objects after the migration, in the migrated objects. */
	CU(cuModuleGetFunction(&noop, w->mod, "noop"));
	CU(cuLaunchKernel(noop, 1, 1, 1, 1, 1, 1, 0, w->stream, NULL, NULL));
	CU(cuStreamCreate(&s2, 0));
	CU(cuStreamSynchronize(s2));
	CU(cuStreamDestroy(s2));
	CU(cuMemAlloc(&extra, 1 << 20));
	CU(cuMemsetD8(extra, 0x5c, 1 << 20));
	CU(cuMemFree(extra));
	CU(cuMemAllocHost(&host, 4096));
	CU(cuMemFreeHost(host));

	/* The module variable, looked up again by the application. */
	CU(cuModuleGetGlobal(&g, &gsize, w->mod, "gs_magic"));
	CU(cuMemcpyDtoH(&magic, g, sizeof(magic)));
	CHECK(magic == w->magic, "gs_magic through the application's look-up: %#x", magic);
	/* The address looked up before the migration, as cudart caches it. */
	magic = 0;
	CU(cuMemcpyDtoH(&magic, w->g_magic, sizeof(magic)));
	CHECK(magic == w->magic, "gs_magic through its cached address: %#x", magic);
	return replay_failures ? -1 : 0;
}

/* Tear down as a program does at its end, after however many migrations:
 * the destruction goes through the translation layer and the hooks. */
int wl_teardown(struct wl *w)
{
	CUcontext popped;
	CUdevice d;

	/* Work still queued (a staged copy into the VMM range) must finish
	 * before its memory goes, as on a GPU. */
	CU(cuCtxPushCurrent(w->ctx));
	CU(cuCtxSynchronize());
	CU(cuCtxPopCurrent(&popped));
	CU(cuStreamDestroy(w->stream));
	CU(cuEventDestroy(w->event));
	CU(cuMemUnmap(w->vmm, w->vmm_size));
	CU(cuMemRelease(w->phys));
	CU(cuMemAddressFree(w->vmm, 4 * w->granularity));
	CU(cuMemHostUnregister(w->reg));
	munmap(w->reg, w->reg_size);
	CU(cuMemFreeHost(w->pinned));
	CU(cuMemFree(w->big));
	CU(cuModuleUnload(w->mod));
	CU(cuCtxDestroy(w->ctx));
	CU(cuDeviceGet(&d, w->dev));
	CU(cuDevicePrimaryCtxRelease(d));
	return replay_failures ? -1 : 0;
}
