/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Handle and device-ordinal translation after a migration (shim/translate.h),
 * through the shim's generated wrappers linked into this program, over the
 * simulated driver with two devices of different sizes.
 *
 * No replay code is involved: migrate() does what a thaw does to the state
 * the translation sees. Behind the shim's back (gs_inside) it makes the
 * application's objects again on simulated device 1, destroys the originals
 * on device 0, rebinds every app handle to its new real one, maps app
 * ordinal 0 to device 1 (and 1 to 0), and switches translation on. The
 * simulator aborts on a destroyed handle, so any app handle that reached it
 * untranslated would end the test.
 *
 * Each test runs in a process of its own (Criterion's default).
 */
#include <criterion/criterion.h>
#include <cuda.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shim.h"
#include "gs_kernels.h"
#include "simcuda.h"
#include "tracker.h"
#include "translate.h"

#define CK(call)                                                                   \
	do {                                                                       \
		CUresult ck_rc_ = (call);                                          \
		cr_assert_eq(ck_rc_, CUDA_SUCCESS, "%s: %d", #call, (int)ck_rc_);  \
	} while (0)

#define U(h) ((uint64_t)(uintptr_t)(h))
#define MIB ((size_t)1 << 20)

/* Device 0 has 256 MiB, device 1 512 MiB: sizes tell them apart. */
#define DEV0_MIB 256
#define DEV1_MIB 512

/* ---- a kernel that says where it ran ---------------------------------------------- */

static _Atomic int launched_on = -1;

/* report_launch(unsigned *out): out[0] = 100 + the real device running it. */
void simcuda_kernel_report_launch(const simcuda_launch *launch, void **params);
void simcuda_kernel_report_launch(const simcuda_launch *launch, void **params)
{
	unsigned *out = (unsigned *)(uintptr_t)*(CUdeviceptr *)params[0];

	atomic_store(&launched_on, launch->device);
	out[0] = 100u + (unsigned)launch->device;
}

/* The emulation of fill_u32 (gs_kernels.h), whose pointer parameter the
 * tests point at a global: it writes wherever the address it gets is. */
void simcuda_kernel_fill_u32(const simcuda_launch *launch, void **params)
{
	unsigned *p = (unsigned *)(uintptr_t)*(CUdeviceptr *)params[0];
	unsigned value = *(unsigned *)params[1];
	unsigned n = *(unsigned *)params[2];
	unsigned threads = launch->grid[0] * launch->block[0];

	for (unsigned t = 0; t < threads; t++)
		for (unsigned i = t; i < n; i += threads)
			p[i] = value;
}

/* ---- the application's objects, and the migration ----------------------------------- */

struct objs {
	CUcontext ctx;
	CUstream stream;
	CUevent event;
	CUmodule mod;
	CUfunction fn;
};

static char image[4096];

static void setup(void)
{
	const char *dir = getenv("GS_KERNELS_DIR");

	cr_assert_not_null(dir, "GS_KERNELS_DIR is not set");
	snprintf(image, sizeof(image), "%s/gs_kernels.fatbin", dir);
	setenv("SIMCUDA_DEVICES", "2", 1);
	setenv("SIMCUDA_MEM_MB", "256,512", 1);
	/* One architecture: the module images fit both devices alike. */
	setenv("SIMCUDA_ARCH", "sm_80", 1);
	CK(cuInit(0));
}

TestSuite(xlat, .init = setup, .timeout = 60);

static void make(struct objs *o, CUdevice dev)
{
	CK(cuCtxCreate(&o->ctx, NULL, 0, dev));
	CK(cuStreamCreate(&o->stream, CU_STREAM_NON_BLOCKING));
	/* Without timing: launch completion events must be. */
	CK(cuEventCreate(&o->event, CU_EVENT_DISABLE_TIMING));
	CK(cuModuleLoad(&o->mod, image));
	CK(cuModuleGetFunction(&o->fn, o->mod, "report_launch"));
}

static void app_setup(struct objs *app)
{
	CUdevice d0;

	CK(cuDeviceGet(&d0, 0));
	make(app, d0);
}

static void rebind(enum gs_kind kind, uint64_t app, uint64_t real)
{
	cr_assert_eq(gs_trk_rebind(kind, app, real), 0, "rebind %s %#llx",
		     gs_kind_name(kind), (unsigned long long)app);
}

static void map_devices(void)
{
	static const int real_of_app[2] = { 1, 0 };
	struct gs_devmap *dm = gs_trk_devmap();

	cr_assert_eq(gs_devmap_reset(dm, 2), 0);
	cr_assert_eq(gs_devmap_set(dm, real_of_app, 2), 0);
}

/* A thaw onto device 1, as far as translation can tell. *real gets the new
 * real objects; the real context is current on this thread, as thaw leaves
 * the thread it runs on. */
static void migrate(const struct objs *app, struct objs *real)
{
	gs_inside_begin();
	make(real, 1);
	CK(cuModuleUnload(app->mod));
	CK(cuEventDestroy(app->event));
	CK(cuStreamDestroy(app->stream));
	CK(cuCtxDestroy(app->ctx));
	gs_inside_end();
	rebind(GS_KIND_CTX, U(app->ctx), U(real->ctx));
	rebind(GS_KIND_STREAM, U(app->stream), U(real->stream));
	rebind(GS_KIND_EVENT, U(app->event), U(real->event));
	rebind(GS_KIND_MODULE, U(app->mod), U(real->mod));
	rebind(GS_KIND_FUNCTION, U(app->fn), U(real->fn));
	map_devices();
	gs_set_migrated(true);
}

static CUdeviceptr launch_report(CUfunction fn, CUstream stream)
{
	CUdeviceptr out;
	void *params[] = { &out };

	CK(cuMemAlloc(&out, 64));
	CK(cuMemsetD8(out, 0, 64));
	/* The memset is on the legacy stream, which a non-blocking stream
	 * does not wait for. */
	CK(cuCtxSynchronize());
	atomic_store(&launched_on, -1);
	CK(cuLaunchKernel(fn, 1, 1, 1, 1, 1, 1, 0, stream, params, NULL));
	return out;
}

/* ---- calls with app handles reach the new objects ------------------------------------ */

Test(xlat, calls_reach_the_new_objects)
{
	struct objs app, real;
	unsigned host[4] = { 0 };
	CUdeviceptr out;

	app_setup(&app);
	migrate(&app, &real);

	out = launch_report(app.fn, app.stream);
	CK(cuEventRecord(app.event, app.stream));
	CK(cuEventSynchronize(app.event));
	CK(cuEventQuery(app.event));
	CK(cuStreamSynchronize(app.stream));
	cr_assert_eq(atomic_load(&launched_on), 1, "the kernel ran on device %d",
		     atomic_load(&launched_on));
	CK(cuMemcpyDtoH(host, out, sizeof(host)));
	cr_assert_eq(host[0], 101u, "the kernel wrote %u", host[0]);
	/* Special stream values pass unchanged. */
	CK(cuStreamSynchronize(NULL));
	CK(cuStreamSynchronize(CU_STREAM_LEGACY));
	CK(cuStreamSynchronize(CU_STREAM_PER_THREAD));
	CK(cuMemFree(out));
}

static void CUDA_CB record_stream(CUstream s, CUresult status, void *user)
{
	(void)status;
	__atomic_store_n((CUstream *)user, s, __ATOMIC_RELEASE);
}

Test(xlat, launch_ex_and_stream_callback)
{
	struct objs app, real;
	CUdeviceptr out;
	void *params[] = { &out };
	CUlaunchConfig cfg = {
		.gridDimX = 1, .gridDimY = 1, .gridDimZ = 1,
		.blockDimX = 1, .blockDimY = 1, .blockDimZ = 1,
	};
	static CUstream seen;

	CUlaunchAttribute attr = { .id = CU_LAUNCH_ATTRIBUTE_LAUNCH_COMPLETION_EVENT };

	app_setup(&app);
	migrate(&app, &real);
	CK(cuMemAlloc(&out, 64));
	cfg.hStream = app.stream;
	attr.value.launchCompletionEvent.event = app.event;
	cfg.attrs = &attr;
	cfg.numAttrs = 1;
	CK(cuLaunchKernelEx(&cfg, app.fn, params, NULL));
	cr_assert(cfg.hStream == app.stream && attr.value.launchCompletionEvent.event == app.event,
		  "the caller's configuration was changed");
	CK(cuEventSynchronize(app.event));
	CK(cuStreamSynchronize(app.stream));
	cr_assert_eq(atomic_load(&launched_on), 1);

	/* The driver calls back with its own stream; the application's
	 * callback sees its own. */
	CK(cuStreamAddCallback(app.stream, record_stream, &seen, 0));
	CK(cuStreamSynchronize(app.stream));
	cr_assert_eq(__atomic_load_n(&seen, __ATOMIC_ACQUIRE), app.stream,
		     "callback got %p, the app's stream is %p, the real one %p", (void *)seen,
		     (void *)app.stream, (void *)real.stream);
}

/* ---- returned handles and ordinals are the application's ------------------------------ */

Test(xlat, returned_handles_are_the_apps)
{
	struct objs app, real;
	CUcontext c = NULL;
	CUmodule m = NULL;
	CUfunction f = NULL;
	CUdevice d = -1;

	app_setup(&app);
	migrate(&app, &real);

	CK(cuCtxGetCurrent(&c));
	cr_assert_eq(c, app.ctx);
	CK(cuStreamGetCtx(app.stream, &c));
	cr_assert_eq(c, app.ctx);
	CK(cuFuncGetModule(&m, app.fn));
	cr_assert_eq(m, app.mod);
	CK(cuCtxPushCurrent(app.ctx));
	CK(cuCtxPopCurrent(&c));
	cr_assert_eq(c, app.ctx);
	CK(cuCtxGetDevice(&d));
	cr_assert_eq(d, 0, "cuCtxGetDevice: %d (the work runs on device 1)", d);
	/* A repeated look-up: the driver returns the new function, the
	 * application gets the handle it has. */
	CK(cuModuleGetFunction(&f, app.mod, "report_launch"));
	cr_assert_eq(f, app.fn);
}

Test(xlat, device_ordinals)
{
	struct objs app, real;
	size_t total = 0, free_before = 0, free_after = 0;
	CUdeviceptr p;
	CUdevice d = -1;
	int n = 0, ord = -1;

	app_setup(&app);
	migrate(&app, &real);

	CK(cuDeviceGetCount(&n));
	cr_assert_eq(n, 2);
	CK(cuDeviceGet(&d, 0));
	cr_assert_eq(d, 0);
	CK(cuDeviceGet(&d, 1));
	cr_assert_eq(d, 1);
	/* App device 0 is device 1 now, and the other way round. */
	CK(cuDeviceTotalMem(&total, 0));
	cr_assert_eq(total, DEV1_MIB * MIB);
	CK(cuDeviceTotalMem(&total, 1));
	cr_assert_eq(total, DEV0_MIB * MIB);
	CK(cuDeviceGetAttribute(&n, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, 0));

	/* Memory of the current (app) context comes from device 1. */
	CK(cuMemGetInfo(&free_before, &total));
	cr_assert_eq(total, DEV1_MIB * MIB);
	CK(cuMemAlloc(&p, 32 * MIB));
	CK(cuMemGetInfo(&free_after, &total));
	cr_assert_geq(free_before - free_after, 32 * MIB);
	CK(cuPointerGetAttribute(&ord, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, p));
	cr_assert_eq(ord, 0);
	CK(cuMemFree(p));

	/* Special ordinals pass unchanged. */
	cr_assert_eq(gs_xlat_device(CU_DEVICE_CPU), CU_DEVICE_CPU);
	cr_assert_eq(gs_xlat_device(CU_DEVICE_INVALID), CU_DEVICE_INVALID);
	cr_assert_eq(gs_xlat_device(7), 7);
}

/* Memory locations in structures: a VMM allocation made for app device 0 is
 * made, mapped and made accessible on device 1. */
Test(xlat, vmm_locations)
{
	struct objs app, real;
	CUmemAllocationProp prop = {
		.type = CU_MEM_ALLOCATION_TYPE_PINNED,
		.location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = 0 },
	};
	CUmemAccessDesc access = {
		.location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = 0 },
		.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE,
	};
	CUmemAllocationProp got;
	CUmemGenericAllocationHandle h;
	CUdeviceptr va;
	size_t gran = 0;
	unsigned long long flags = 0;
	unsigned v = 0;
	int ord = -1;

	app_setup(&app);
	migrate(&app, &real);

	CK(cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
	CK(cuMemAddressReserve(&va, gran, 0, 0, 0));
	CK(cuMemCreate(&h, gran, &prop, 0));
	CK(cuMemMap(va, gran, 0, h, 0));
	CK(cuMemSetAccess(va, gran, &access, 1));
	cr_assert_eq(access.location.id, 0, "the caller's descriptor was changed");
	/* Device 1 (the current context's) may touch it. */
	CK(cuMemsetD32(va, 0x5eed, gran / 4));
	CK(cuMemcpyDtoH(&v, va, sizeof(v)));
	cr_assert_eq(v, 0x5eedu);
	CK(cuMemGetAccess(&flags, &access.location, va));
	cr_assert_eq(flags, CU_MEM_ACCESS_FLAGS_PROT_READWRITE);

	CK(cuMemGetAllocationPropertiesFromHandle(&got, h));
	cr_assert_eq(got.location.id, 0, "app ordinal expected, got %d", got.location.id);
	gs_inside_begin();
	CK(cuMemGetAllocationPropertiesFromHandle(&got, gs_xlat_phys(h)));
	gs_inside_end();
	cr_assert_eq(got.location.id, 1, "the memory is on device %d", got.location.id);
	/* Answered by the driver (application VMM memory): its ordinal, mapped. */
	CK(cuPointerGetAttribute(&ord, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, va));
	cr_assert_eq(ord, 0);

	CK(cuMemUnmap(va, gran));
	CK(cuMemRelease(h));
	CK(cuMemAddressFree(va, gran));
}

/* ---- objects made after the switch ------------------------------------------------- */

static int find_stream(const struct gs_rec *rec, void *arg)
{
	const struct gs_stream_rec *s = GS_REC_AS(struct gs_stream_rec, GS_KIND_STREAM, rec);

	*(uint64_t *)arg = s ? s->ctx : 0;
	return 1;
}

static int find_function(const struct gs_rec *rec, void *arg)
{
	const struct gs_function_rec *f = GS_REC_AS(struct gs_function_rec, GS_KIND_FUNCTION,
						    rec);

	*(uint64_t *)arg = f ? f->module : 0;
	return 1;
}

Test(xlat, new_objects_and_track_hooks)
{
	struct gs_handlemap *streams = gs_trk_handlemap(GS_KIND_STREAM);
	struct objs app, real;
	CUfunction noop;
	CUstream s;
	uint64_t ctx = 0, mod = 0, r;

	app_setup(&app);
	migrate(&app, &real);

	/* No collision: the new stream keeps the driver's value. */
	CK(cuStreamCreate(&s, 0));
	cr_assert_neq(s, app.stream);
	cr_assert_not(gs_hmap_is_synthetic(U(s)));
	cr_assert_eq(gs_xlat_stream(s), s);
	/* Its record names the app context, not the real one. */
	cr_assert_eq(gs_trk_with(GS_KIND_STREAM, U(s), find_stream, &ctx), 1);
	cr_assert_eq(ctx, U(app.ctx));
	(void)launch_report(app.fn, s);
	CK(cuStreamSynchronize(s));
	cr_assert_eq(atomic_load(&launched_on), 1);

	/* A look-up in an app module: the hook records it under that module. */
	CK(cuModuleGetFunction(&noop, app.mod, "noop"));
	cr_assert_eq(gs_trk_with(GS_KIND_FUNCTION, U(noop), find_function, &mod), 1);
	cr_assert_eq(mod, U(app.mod));
	CK(cuFuncSetCacheConfig(app.fn, CU_FUNC_CACHE_PREFER_SHARED));

	/* Destroying drops both sides of the pair. */
	CK(cuStreamDestroy(s));
	cr_assert_eq(gs_hmap_to_real(streams, U(s), &r), -ENOENT);
	cr_assert_eq(gs_hmap_to_app(streams, U(s), &r), -ENOENT);
	CK(cuStreamDestroy(app.stream));
	cr_assert_eq(gs_hmap_to_real(streams, U(app.stream), &r), -ENOENT);
	cr_assert_eq(gs_hmap_to_app(streams, U(real.stream), &r), -ENOENT);
}

/*
 * A new object whose real handle is a live app handle. The simulator keeps
 * one primary context per device for good, so after the swap of ordinals
 * the primary context of app device 1 (device 0 now) has the very value the
 * application holds for its app device 0 primary context.
 */
Test(xlat, colliding_handle_gets_a_synthetic_value)
{
	struct objs app, real;
	CUcontext p0, p1_real, p;
	CUdevice d = -1;

	app_setup(&app);
	CK(cuDevicePrimaryCtxRetain(&p0, 0));
	migrate(&app, &real);
	gs_inside_begin();
	CK(cuDevicePrimaryCtxRetain(&p1_real, 1));
	CK(cuDevicePrimaryCtxRelease(0));
	gs_inside_end();
	rebind(GS_KIND_CTX, U(p0), U(p1_real));

	CK(cuDevicePrimaryCtxRetain(&p, 1));
	cr_assert_neq(p, p0);
	cr_assert(gs_hmap_is_synthetic(U(p)), "got %p", (void *)p);
	cr_assert_eq(gs_xlat_ctx(p), p0, "the new context's real handle is the old value");
	cr_assert_eq(gs_xlat_ctx(p0), p1_real);
	CK(cuCtxSetCurrent(p));
	CK(cuCtxGetDevice(&d));
	cr_assert_eq(d, 1);
	CK(cuCtxGetCurrent(&p1_real));
	cr_assert_eq(p1_real, p);
	CK(cuCtxSetCurrent(p0));
	CK(cuCtxGetDevice(&d));
	cr_assert_eq(d, 0);
}

/* ---- before a migration ------------------------------------------------------------- */

Test(xlat, identity_before_migration)
{
	struct objs app;
	CUcontext c;
	CUdevice d;

	app_setup(&app);
	/* Even with a rebound pair, nothing is translated while not migrated. */
	rebind(GS_KIND_STREAM, U(app.stream), 0x5000);
	map_devices();
	cr_assert_eq(gs_xlat_stream(app.stream), app.stream);
	cr_assert_eq(gs_xlat_stream_app((CUstream)0x5000), (CUstream)0x5000);
	cr_assert_eq(gs_xlat_device(0), 0);
	rebind(GS_KIND_STREAM, U(app.stream), U(app.stream));
	CK(cuCtxGetCurrent(&c));
	cr_assert_eq(c, app.ctx);
	CK(cuCtxGetDevice(&d));
	cr_assert_eq(d, 0);
	(void)launch_report(app.fn, app.stream);
	CK(cuStreamSynchronize(app.stream));
	cr_assert_eq(atomic_load(&launched_on), 0);
}

Test(xlat, unknown_handles_pass_through)
{
	struct objs app, real;

	app_setup(&app);
	migrate(&app, &real);
	cr_assert_eq(gs_xlat_stream((CUstream)0xdead0), (CUstream)0xdead0);
	cr_assert_eq(gs_xlat_ctx_app((CUcontext)0xdead0), (CUcontext)0xdead0);
	cr_assert_eq(gs_xlat_stream(NULL), NULL);
	cr_assert_eq(gs_xlat_function(app.fn), real.fn);
	cr_assert_eq(gs_xlat_function_app(real.fn), app.fn);
}

/* ---- __device__ globals at new addresses ------------------------------------------------ */

/* The module's globals as the application looked them up before the
 * migration (old), and where the reloaded module has them (new). */
struct globals {
	CUdeviceptr magic, table, magic_new, table_new;
	size_t magic_size, table_size;
};

static void lookup_globals(const struct objs *app, struct globals *g)
{
	CK(cuModuleGetGlobal(&g->magic, &g->magic_size, app->mod, "gs_magic"));
	CK(cuModuleGetGlobal(&g->table, &g->table_size, app->mod, "gs_table"));
	cr_assert_eq(g->magic_size, sizeof(int));
	cr_assert_eq(g->table_size, GS_TABLE_LEN * sizeof(float));
}

/* migrate(), plus what a thaw does for globals: rebind each to its address
 * in the reloaded module, then publish the moved set. */
static void migrate_with_globals(const struct objs *app, struct objs *real, struct globals *g)
{
	size_t n;

	migrate(app, real);
	gs_inside_begin();
	CK(cuModuleGetGlobal(&g->magic_new, &n, real->mod, "gs_magic"));
	CK(cuModuleGetGlobal(&g->table_new, &n, real->mod, "gs_table"));
	gs_inside_end();
	cr_assert_neq(g->magic_new, g->magic, "the reloaded module kept the address");
	rebind(GS_KIND_GLOBAL, g->magic, g->magic_new);
	rebind(GS_KIND_GLOBAL, g->table, g->table_new);
	cr_assert_eq(gs_xlat_refresh_moved_globals(), 2);
	cr_assert_eq(gs_xlat_moved_count(), 2);
}

/* The new storage, read behind the shim's back. */
static void read_new(CUdeviceptr va, void *host, size_t n)
{
	gs_inside_begin();
	CK(cuMemcpyDtoH(host, va, n));
	gs_inside_end();
}

Test(xlat, globals_copies_reach_the_new_storage)
{
	struct objs app, real;
	struct globals g;
	CUdeviceptr p = 0;
	size_t size = 0;
	int magic = 0x600dcafe, got = 0;
	unsigned table[GS_TABLE_LEN];

	app_setup(&app);
	lookup_globals(&app, &g);
	migrate_with_globals(&app, &real, &g);

	CK(cuMemcpyHtoD(g.magic, &magic, sizeof(magic)));
	read_new(g.magic_new, &got, sizeof(got));
	cr_assert_eq(got, magic);
	got = 0;
	CK(cuMemcpyDtoH(&got, g.magic, sizeof(got)));
	cr_assert_eq(got, magic);
	/* An address inside the global, not only its start. */
	CK(cuMemsetD32(g.table + 4 * sizeof(float), 0x3f800000u, GS_TABLE_LEN - 4));
	read_new(g.table_new, table, sizeof(table));
	cr_assert_eq(table[4], 0x3f800000u);
	cr_assert_eq(table[GS_TABLE_LEN - 1], 0x3f800000u);

	/* The look-up answers with the address the application knows, and
	 * the tracker keeps one record for it. */
	CK(cuModuleGetGlobal(&p, &size, app.mod, "gs_magic"));
	cr_assert_eq(p, g.magic, "got %#llx, old %#llx, new %#llx", (unsigned long long)p,
		     (unsigned long long)g.magic, (unsigned long long)g.magic_new);
	cr_assert_eq(size, sizeof(int));
	cr_assert_eq(gs_trk_count(GS_KIND_GLOBAL), 2);
}

Test(xlat, globals_in_2d_and_3d_copies)
{
	struct objs app, real;
	struct globals g;
	unsigned src[GS_TABLE_LEN], table[GS_TABLE_LEN], back[GS_TABLE_LEN] = { 0 };
	CUDA_MEMCPY2D c2 = {
		.srcMemoryType = CU_MEMORYTYPE_HOST,
		.dstMemoryType = CU_MEMORYTYPE_DEVICE,
		.WidthInBytes = 4 * sizeof(unsigned),
		.Height = 2,
		.srcPitch = 4 * sizeof(unsigned),
		.dstPitch = 8 * sizeof(unsigned),
	};
	CUDA_MEMCPY3D c3 = {
		.srcMemoryType = CU_MEMORYTYPE_DEVICE,
		.dstMemoryType = CU_MEMORYTYPE_HOST,
		.WidthInBytes = GS_TABLE_LEN * sizeof(unsigned),
		.Height = 1,
		.Depth = 1,
	};

	for (unsigned i = 0; i < GS_TABLE_LEN; i++)
		src[i] = 1000 + i;
	app_setup(&app);
	lookup_globals(&app, &g);
	migrate_with_globals(&app, &real, &g);
	CK(cuMemsetD32(g.table, 0, GS_TABLE_LEN));

	c2.srcHost = src;
	c2.dstDevice = g.table;
	CK(cuMemcpy2D(&c2));
	cr_assert_eq(c2.dstDevice, g.table, "the caller's structure was changed");
	read_new(g.table_new, table, sizeof(table));
	cr_assert_eq(table[0], 1000u);
	cr_assert_eq(table[3], 1003u);
	cr_assert_eq(table[4], 0u);
	cr_assert_eq(table[8], 1004u);
	cr_assert_eq(table[11], 1007u);

	c3.srcDevice = g.table;
	c3.dstHost = back;
	CK(cuMemcpy3D(&c3));
	cr_assert_eq(c3.srcDevice, g.table);
	cr_assert_eq(memcmp(back, table, sizeof(table)), 0);
}

/* fill_u32(unsigned *p, unsigned value, unsigned n) with p the old address
 * of gs_table: every launch form writes the new storage, and the
 * application's parameter arrays stay as they were. */
Test(xlat, globals_as_kernel_parameters)
{
	struct objs app, real;
	struct globals g;
	CUfunction fill;
	CUdeviceptr ptr;
	unsigned value = 7, n = GS_TABLE_LEN, table[GS_TABLE_LEN];
	void *params[3] = { &ptr, &value, &n };
	struct {
		uint64_t p;
		unsigned value, n;
	} buf;
	size_t buf_size = sizeof(buf);
	void *extra[] = { CU_LAUNCH_PARAM_BUFFER_POINTER, &buf, CU_LAUNCH_PARAM_BUFFER_SIZE,
			  &buf_size, CU_LAUNCH_PARAM_END };
	CUlaunchConfig cfg = {
		.gridDimX = 1, .gridDimY = 1, .gridDimZ = 1,
		.blockDimX = 4, .blockDimY = 1, .blockDimZ = 1,
	};

	app_setup(&app);
	CK(cuModuleGetFunction(&fill, app.mod, "fill_u32"));
	lookup_globals(&app, &g);
	migrate_with_globals(&app, &real, &g);
	{
		CUfunction f_real;

		gs_inside_begin();
		CK(cuModuleGetFunction(&f_real, real.mod, "fill_u32"));
		gs_inside_end();
		rebind(GS_KIND_FUNCTION, U(fill), U(f_real));
	}

	ptr = g.table;
	CK(cuLaunchKernel(fill, 1, 1, 1, 4, 1, 1, 0, app.stream, params, NULL));
	CK(cuStreamSynchronize(app.stream));
	read_new(g.table_new, table, sizeof(table));
	for (unsigned i = 0; i < GS_TABLE_LEN; i++)
		cr_assert_eq(table[i], 7u, "table[%u] = %u", i, table[i]);
	cr_assert(params[0] == &ptr && ptr == g.table, "the caller's parameters were changed");

	buf.p = g.table;
	buf.value = 8;
	buf.n = GS_TABLE_LEN;
	CK(cuLaunchKernel(fill, 1, 1, 1, 4, 1, 1, 0, app.stream, NULL, extra));
	CK(cuStreamSynchronize(app.stream));
	read_new(g.table_new, table, sizeof(table));
	cr_assert_eq(table[0], 8u);
	cr_assert_eq(table[GS_TABLE_LEN - 1], 8u);
	cr_assert(extra[1] == &buf && buf.p == g.table, "the caller's buffer was changed");

	value = 9;
	cfg.hStream = app.stream;
	CK(cuLaunchKernelEx(&cfg, fill, params, NULL));
	CK(cuStreamSynchronize(app.stream));
	read_new(g.table_new, table, sizeof(table));
	cr_assert_eq(table[GS_TABLE_LEN - 1], 9u);

	/* An address inside the global, passed as a pointer. */
	value = 10;
	n = 1;
	ptr = g.table + (GS_TABLE_LEN - 1) * sizeof(unsigned);
	CK(cuLaunchKernel(fill, 1, 1, 1, 1, 1, 1, 0, app.stream, params, NULL));
	CK(cuStreamSynchronize(app.stream));
	read_new(g.table_new, table, sizeof(table));
	cr_assert_eq(table[GS_TABLE_LEN - 1], 10u);
	cr_assert_eq(table[0], 9u);
}

/* Unloading the module drops its ranges: the set is empty again. */
Test(xlat, unloading_drops_moved_globals)
{
	struct objs app, real;
	struct globals g;

	app_setup(&app);
	lookup_globals(&app, &g);
	migrate_with_globals(&app, &real, &g);
	CK(cuModuleUnload(app.mod));
	cr_assert_eq(gs_trk_count(GS_KIND_GLOBAL), 0);
	cr_assert_eq(gs_xlat_moved_count(), 0);
	cr_assert_eq(gs_xlat_devptr(g.magic), g.magic);
}

/* The set itself: look-ups at the edges, both directions, bad input. */
Test(xlat, moved_set)
{
	const struct gs_moved_range r[] = {
		{ .old_va = 0x20000, .new_va = 0x90000, .size = 0x100 },
		{ .old_va = 0x10000, .new_va = 0x80000, .size = 0x10 },
		{ .old_va = 0x30000, .new_va = 0x30000, .size = 0x10 }, /* did not move */
		{ .old_va = 0x40000, .new_va = 0xa0000, .size = 0 },    /* size unknown */
	};
	const struct gs_moved_range overlap[] = {
		{ .old_va = 0x10000, .new_va = 0x80000, .size = 0x20 },
		{ .old_va = 0x10010, .new_va = 0x90000, .size = 0x10 },
	};

	cr_assert_eq(gs_xlat_devptr(0x10000), 0x10000, "nothing moved yet");
	cr_assert_eq(gs_xlat_set_moved_globals(r, 4), 0);
	cr_assert_eq(gs_xlat_moved_count(), 3);
	cr_assert_eq(gs_xlat_devptr(0x10000), 0x80000);
	cr_assert_eq(gs_xlat_devptr(0x1000f), 0x8000f);
	cr_assert_eq(gs_xlat_devptr(0x10010), 0x10010);
	cr_assert_eq(gs_xlat_devptr(0xffff), 0xffff);
	cr_assert_eq(gs_xlat_devptr(0x200ff), 0x900ff);
	cr_assert_eq(gs_xlat_devptr(0x30000), 0x30000);
	cr_assert_eq(gs_xlat_devptr(0x40000), 0xa0000);
	cr_assert_eq(gs_xlat_devptr(0x40001), 0x40001);
	cr_assert_eq(gs_xlat_devptr(0), 0);
	cr_assert_eq(gs_xlat_devptr_app(0x90010), 0x20010);
	cr_assert_eq(gs_xlat_devptr_app(0x80010), 0x80010);
	cr_assert_eq(gs_xlat_set_moved_globals(overlap, 2), -EINVAL);
	cr_assert_eq(gs_xlat_moved_count(), 3, "a refused set replaced the old one");
	cr_assert_eq(gs_xlat_set_moved_globals(NULL, 0), 0);
	cr_assert_eq(gs_xlat_moved_count(), 0);
	cr_assert_eq(gs_xlat_devptr(0x10000), 0x10000);
}

/* ---- untranslated calls are recorded ------------------------------------------------- */

static int count_problem(const char *symbol, const char *params, uint64_t calls, void *arg)
{
	if (strcmp(symbol, "cuMemMapArrayAsync") == 0) {
		cr_assert_str_eq(params, "mapInfoList");
		*(uint64_t *)arg = calls;
	}
	return 0;
}

Test(xlat, untranslated_calls_are_recorded)
{
	size_t (*untranslated)(const char **, size_t) = gs_introspect_untranslated;
	struct objs app, real;
	const char *names[4];
	uint64_t calls = 0;
	int syms[4];

	app_setup(&app);
	cr_assert_not_null(gs_xlat_untranslated[GS_SYM_cuMemMapArrayAsync]);
	cr_assert_null(gs_xlat_untranslated[GS_SYM_cuLaunchKernel]);
	cr_assert_eq(gs_xlat_check(count_problem, &calls), 0);
	migrate(&app, &real);
	/* The simulator has no sparse arrays: the call fails, but is counted. */
	(void)cuMemMapArrayAsync(NULL, 0, app.stream);
	cr_assert_eq(gs_xlat_check(count_problem, &calls), 1);
	cr_assert_eq(calls, 1);
	gs_xlat_unsupported(GS_SYM_cuMemMapArrayAsync);
	gs_xlat_unsupported(GS_SYM_cuMemMapArrayAsync);
	cr_assert_eq(gs_xlat_unsupported_seen(syms, 4), 1);
	cr_assert_eq(syms[0], GS_SYM_cuMemMapArrayAsync);
	cr_assert_eq(untranslated(names, 4), 1);
	cr_assert_str_eq(names[0], "cuMemMapArrayAsync");
}

/* ---- export tables -------------------------------------------------------------------- */

static const CUuuid cudart_interface = { {
	(char)0x6B, (char)0xD5, (char)0xFB, (char)0x6C, (char)0x5B, (char)0xF4, (char)0xE7,
	(char)0x4A, (char)0x89, (char)0x87, (char)0xD9, (char)0x39, (char)0x12, (char)0xFD,
	(char)0x9D, (char)0xF9 } };
static const CUuuid context_storage = { {
	(char)0xC6, (char)0x93, (char)0x33, (char)0x6E, (char)0x11, (char)0x21, (char)0xDF,
	(char)0x11, (char)0xA8, (char)0xC3, (char)0x68, (char)0xF3, (char)0x55, (char)0xD8,
	(char)0x95, (char)0x93 } };

/* Stand-ins for the driver's entries. */
static CUcontext primary_answer;
static CUdevice primary_asked = -1;
static uintptr_t cls_ctx_seen[4];

static CUresult fake_primary(CUcontext *pctx, CUdevice dev)
{
	primary_asked = dev;
	*pctx = primary_answer;
	return CUDA_SUCCESS;
}

static CUresult fake_cls_set(uintptr_t ctx, uintptr_t key, uintptr_t value, uintptr_t dtor)
{
	(void)key, (void)value, (void)dtor;
	cls_ctx_seen[1] = ctx;
	return CUDA_SUCCESS;
}

static CUresult fake_cls_remove(uintptr_t ctx, uintptr_t key)
{
	(void)key;
	cls_ctx_seen[2] = ctx;
	return CUDA_SUCCESS;
}

static CUresult fake_cls_get(void **value, uintptr_t ctx, uintptr_t key)
{
	(void)key;
	*value = (void *)0x77;
	cls_ctx_seen[3] = ctx;
	return CUDA_SUCCESS;
}

static void put_fn(uintptr_t *table, int slot, gs_any_fn fn)
{
	memcpy(&table[slot], &fn, sizeof(fn));
}

static gs_any_fn get_fn(const void *table, int slot)
{
	gs_any_fn fn;

	memcpy(&fn, (const uintptr_t *)table + slot, sizeof(fn));
	return fn;
}

Test(xlat, export_tables)
{
	uintptr_t cudart[4] = { sizeof(cudart), 0x1111, 0, 0x3333 };
	uintptr_t cls[5] = { sizeof(cls), 0, 0, 0, 0x4444 };
	const void *out = NULL;
	struct objs app, real;
	CUresult (*primary)(CUcontext *, CUdevice);
	CUresult (*set)(CUcontext, void *, void *, void *);
	CUresult (*remove)(CUcontext, void *);
	CUresult (*get)(void **, CUcontext, void *);
	CUcontext c = NULL;
	void *v = NULL;

	put_fn(cudart, 2, (gs_any_fn)fake_primary);
	put_fn(cls, 1, (gs_any_fn)fake_cls_set);
	put_fn(cls, 2, (gs_any_fn)fake_cls_remove);
	put_fn(cls, 3, (gs_any_fn)fake_cls_get);
	app_setup(&app);

	/* Before a migration: the driver's own table. */
	cr_assert_eq(gs_xlat_wrap_export_table(&cudart_interface, cudart, &out), 0);
	cr_assert_eq(out, cudart);

	migrate(&app, &real);
	cr_assert_eq(gs_xlat_wrap_export_table(&cudart_interface, cudart, &out), 0);
	cr_assert_neq(out, cudart);
	cr_assert_eq(((const uintptr_t *)out)[0], sizeof(cudart));
	cr_assert_eq(((const uintptr_t *)out)[1], 0x1111);
	cr_assert_eq(((const uintptr_t *)out)[3], 0x3333);
	primary = (CUresult(*)(CUcontext *, CUdevice))get_fn(out, 2);
	primary_answer = real.ctx;
	CK(primary(&c, 0));
	cr_assert_eq(primary_asked, 1, "the driver was asked about device %d", primary_asked);
	cr_assert_eq(c, app.ctx);
	/* The same table again: the same copy. */
	{
		const void *again = NULL;

		cr_assert_eq(gs_xlat_wrap_export_table(&cudart_interface, cudart, &again), 0);
		cr_assert_eq(again, out);
	}

	cr_assert_eq(gs_xlat_wrap_export_table(&context_storage, cls, &out), 0);
	cr_assert_eq(((const uintptr_t *)out)[4], 0x4444);
	set = (CUresult(*)(CUcontext, void *, void *, void *))get_fn(out, 1);
	remove = (CUresult(*)(CUcontext, void *))get_fn(out, 2);
	get = (CUresult(*)(void **, CUcontext, void *))get_fn(out, 3);
	CK(set(app.ctx, (void *)0x10, (void *)0x20, NULL));
	CK(get(&v, app.ctx, (void *)0x10));
	CK(remove(app.ctx, (void *)0x10));
	cr_assert_eq(v, (void *)0x77);
	for (int i = 1; i <= 3; i++)
		cr_assert_eq(cls_ctx_seen[i], U(real.ctx), "entry %d got %#lx", i,
			     (unsigned long)cls_ctx_seen[i]);
}

Test(xlat, export_table_with_unexpected_layout_passes_through)
{
	uintptr_t odd[4] = { 13, 0, 0, 0 }, empty[4] = { sizeof(empty), 0, 0, 0 };
	uintptr_t good[4] = { sizeof(good), 0, 0, 0 }, other[4] = { sizeof(other), 0, 0, 0 };
	struct objs app, real;
	const void *out = NULL;

	app_setup(&app);
	migrate(&app, &real);
	put_fn(good, 2, (gs_any_fn)fake_primary);
	put_fn(other, 2, (gs_any_fn)fake_primary);
	cr_assert_eq(gs_xlat_wrap_export_table(&cudart_interface, odd, &out), -EPROTO);
	cr_assert_eq(gs_xlat_wrap_export_table(&cudart_interface, empty, &out), -EPROTO);
	cr_assert_eq(gs_xlat_wrap_export_table(&cudart_interface, good, &out), 0);
	cr_assert_eq(gs_xlat_wrap_export_table(&cudart_interface, other, &out), -EEXIST);
}
