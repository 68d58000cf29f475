/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The tracking hooks (shim/track_*.c), through the shim's generated
 * wrappers linked into this program, over a scripted fake driver
 * (hookfake.c): what the simulated driver does not model, and driver
 * behaviour a test has to script (an invalidated capture, a context first
 * seen current, a handle value reused after a migration).
 */
#include <criterion/criterion.h>
#include <cuda.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "introspect.h"
#include "shim.h"
#include "trk_test.h"

/* Declared by cuda.h only in per-thread-default-stream mode. */
CUresult cuStreamBeginCapture_v2_ptsz(CUstream hStream, CUstreamCaptureMode mode);
CUresult cuStreamEndCapture_ptsz(CUstream hStream, CUgraph *phGraph);
CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t bytesize, CUstream hStream);

#define CK(call)                                                                   \
	do {                                                                       \
		CUresult ck_rc_ = (call);                                          \
		cr_assert_eq(ck_rc_, CUDA_SUCCESS, "%s: %d", #call, (int)ck_rc_);  \
	} while (0)

#define FAKE_PRIMARY 0xc0000

static void (*force_handle)(uint64_t);
static void (*set_current)(CUcontext);
static void (*set_primary_active)(int);
static void (*set_end_capture)(CUresult, CUstreamCaptureStatus);

static void *control(void *fake, const char *name)
{
	void *fn = dlsym(fake, name);

	cr_assert_not_null(fn, "%s: not the hook test's fake driver", name);
	return fn;
}

static void setup(void)
{
	void *fake;

	trk_test_setup();
	CK(cuInit(0)); /* loads the fake through the shim */
	fake = dlopen(getenv("GPUSWAP_REAL_LIBCUDA"), RTLD_NOW | RTLD_NOLOAD);
	cr_assert_not_null(fake, "the fake driver is not loaded");
	*(void **)&force_handle = control(fake, "hookfake_force_handle");
	*(void **)&set_current = control(fake, "hookfake_set_current");
	*(void **)&set_primary_active = control(fake, "hookfake_set_primary_active");
	*(void **)&set_end_capture = control(fake, "hookfake_set_end_capture");
}

TestSuite(hooks, .init = setup, .timeout = 60);

static uint64_t unsup(enum gs_unsup_kind what)
{
	struct gs_trk_stats st;

	gs_trk_get_stats(&st);
	return st.unsup_count[what];
}

/* cudart's primary context: current without the shim having seen it made. */
Test(hooks, context_first_seen_current_is_adopted)
{
	struct gs_ctx_rec c;
	struct gs_stream_rec s;
	CUcontext p;
	CUstream st;

	CK(cuStreamCreate(&st, CU_STREAM_NON_BLOCKING));
	cr_assert_eq(trk_get(GS_KIND_CTX, FAKE_PRIMARY, &c, sizeof(c)), 0);
	cr_assert_eq(c.origin, GS_CTX_ADOPTED);
	cr_assert(c.primary, "the device's primary context is active");
	cr_assert_eq(trk_get(GS_KIND_STREAM, U(st), &s, sizeof(s)), 0);
	cr_assert_eq(s.ctx, FAKE_PRIMARY);
	cr_assert_eq(s.flags, CU_STREAM_NON_BLOCKING);

	/* Then retained through the API: the same record. */
	CK(cuDevicePrimaryCtxRetain(&p, 0));
	cr_assert_eq(U(p), FAKE_PRIMARY);
	cr_assert_eq(gs_trk_count(GS_KIND_CTX), 1);
	/* The driver reset it at a release: everything in it went. */
	set_primary_active(0);
	CK(cuDevicePrimaryCtxRelease(0));
	cr_assert_eq(gs_trk_count(GS_KIND_CTX), 0);
	cr_assert_eq(gs_trk_count(GS_KIND_STREAM), 0);
	set_primary_active(1);
}

Test(hooks, unknown_context_that_is_not_primary)
{
	CUevent e;

	set_primary_active(0);
	set_current(H(CUcontext, 0xd0000));
	CK(cuEventCreate(&e, 0));
	cr_assert_eq(trk_problems("unknown origin"), 1);
	set_current(H(CUcontext, FAKE_PRIMARY));
	set_primary_active(1);
}

Test(hooks, capture_graph_exec)
{
	struct gs_stream_rec s;
	CUstream st;
	CUgraph g;
	CUgraphExec x;

	CK(cuStreamCreate(&st, 0));
	CK(cuStreamBeginCapture(st, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL));
	cr_assert_eq(unsup(GS_UNSUP_STREAM_CAPTURE), 1);
	cr_assert_eq(trk_get(GS_KIND_STREAM, U(st), &s, sizeof(s)), 0);
	cr_assert(s.capturing);
	cr_assert_eq(s.capture_mode, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL);
	CK(cuStreamEndCapture(st, &g));
	cr_assert_eq(unsup(GS_UNSUP_STREAM_CAPTURE), 0);
	cr_assert_eq(unsup(GS_UNSUP_GRAPH), 1);
	CK(cuGraphInstantiate(&x, g, 0));
	cr_assert_eq(unsup(GS_UNSUP_GRAPH_EXEC), 1);
	CK(cuGraphDestroy(g));
	cr_assert_eq(unsup(GS_UNSUP_GRAPH_EXEC), 1, "an exec outlives its graph");
	CK(cuGraphExecDestroy(x));
	CK(cuGraphCreate(&g, 0));
	CUgraph clone;

	CK(cuGraphClone(&clone, g));
	cr_assert_eq(unsup(GS_UNSUP_GRAPH), 2);
	CK(cuGraphDestroy(g));
	CK(cuGraphDestroy(clone));
	cr_assert_eq(gs_trk_count(GS_KIND_UNSUPPORTED), 0);
}

/* An invalidated capture ends with an error: no capture is left recorded,
 * no graph came out. */
Test(hooks, invalidated_capture_ends)
{
	CUstream st;
	CUgraph g = NULL;

	CK(cuStreamCreate(&st, 0));
	CK(cuStreamBeginCapture(st, CU_STREAM_CAPTURE_MODE_GLOBAL));
	set_end_capture(CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, CU_STREAM_CAPTURE_STATUS_NONE);
	cr_assert_eq(cuStreamEndCapture(st, &g), CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);
	cr_assert_eq(unsup(GS_UNSUP_STREAM_CAPTURE), 0);
	cr_assert_eq(unsup(GS_UNSUP_GRAPH), 0);
}

/* Ended from the wrong thread: refused, and the capture goes on. */
Test(hooks, refused_end_keeps_capture)
{
	CUstream st;
	CUgraph g;

	CK(cuStreamCreate(&st, 0));
	CK(cuStreamBeginCapture(st, CU_STREAM_CAPTURE_MODE_GLOBAL));
	set_end_capture(CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD, CU_STREAM_CAPTURE_STATUS_ACTIVE);
	cr_assert_eq(cuStreamEndCapture(st, &g), CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD);
	cr_assert_eq(unsup(GS_UNSUP_STREAM_CAPTURE), 1);
	CK(cuStreamEndCapture(st, &g));
	cr_assert_eq(unsup(GS_UNSUP_STREAM_CAPTURE), 0);
}

Test(hooks, per_thread_stream_capture)
{
	CUgraph g;

	CK(cuStreamBeginCapture_v2_ptsz(NULL, CU_STREAM_CAPTURE_MODE_GLOBAL));
	cr_assert(trk_exists(GS_KIND_UNSUPPORTED, U(CU_STREAM_PER_THREAD)),
		  "NULL in a _ptsz call is the per-thread stream");
	CK(cuStreamEndCapture_ptsz(NULL, &g));
	cr_assert_eq(unsup(GS_UNSUP_STREAM_CAPTURE), 0);
	cr_assert_eq(gs_introspect_call_count("cuStreamEndCapture_ptsz"), 1,
		     "a custom export is counted once");
}

Test(hooks, unsupported_memory)
{
	CUmemPoolProps props = { .allocType = CU_MEM_ALLOCATION_TYPE_PINNED };
	CUDA_ARRAY_DESCRIPTOR ad = { .Width = 16, .Height = 16, .Format = CU_AD_FORMAT_FLOAT,
				     .NumChannels = 1 };
	CUmemoryPool pool;
	CUdeviceptr a, b, m, ipc;
	CUipcMemHandle ih = { { 0 } };
	CUarray arr;
	CUstream st;
	struct gs_unsup_rec u;

	CK(cuStreamCreate(&st, 0));
	CK(cuMemPoolCreate(&pool, &props));
	CK(cuMemAllocAsync(&a, 4096, st));
	CK(cuMemAllocAsync_ptsz(&b, 8192, NULL));
	CK(cuMemAllocManaged(&m, 1 << 20, CU_MEM_ATTACH_GLOBAL));
	CK(cuArrayCreate(&arr, &ad));
	CK(cuIpcOpenMemHandle(&ipc, ih, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS));
	CK(cuIpcGetMemHandle(&ih, m));
	cr_assert_eq(unsup(GS_UNSUP_MEMPOOL), 1);
	cr_assert_eq(unsup(GS_UNSUP_ASYNC_ALLOC), 2);
	cr_assert_eq(unsup(GS_UNSUP_MANAGED), 1);
	cr_assert_eq(unsup(GS_UNSUP_ARRAY), 1);
	cr_assert_eq(unsup(GS_UNSUP_IPC_MEM_IMPORT), 1);
	cr_assert_eq(unsup(GS_UNSUP_IPC_MEM_EXPORT), 1);
	cr_assert_eq(trk_get(GS_KIND_UNSUPPORTED, a, &u, sizeof(u)), 0);
	cr_assert_eq(u.size, 4096);
	cr_assert_eq(u.ctx, FAKE_PRIMARY, "the stream's context");
	cr_assert_eq(gs_trk_check(NULL, NULL), -EINVAL);
	cr_assert_eq(trk_problems(""), 7);

	CK(cuMemFreeAsync(a, st));
	cr_assert_eq(unsup(GS_UNSUP_ASYNC_ALLOC), 1);
	/* What cuMemFree hands the tracker for memory the arena did not serve. */
	cr_assert_eq(gs_trk_foreign_free(b), 0);
	cr_assert_eq(gs_trk_foreign_free(m), 0);
	cr_assert_eq(unsup(GS_UNSUP_IPC_MEM_EXPORT), 0, "freed with its memory");
	CK(cuArrayDestroy(arr));
	CK(cuIpcCloseMemHandle(ipc));
	CK(cuMemPoolDestroy(pool));
	cr_assert_eq(gs_trk_count(GS_KIND_UNSUPPORTED), 0);
}

Test(hooks, ipc_events_and_green_contexts)
{
	CUipcEventHandle ih;
	CUevent e, opened;
	CUgreenCtx green;
	CUcontext gctx;
	CUdevResourceDesc desc = NULL;
	CUstream gs;

	CK(cuEventCreate(&e, CU_EVENT_INTERPROCESS | CU_EVENT_DISABLE_TIMING));
	CK(cuIpcGetEventHandle(&ih, e));
	CK(cuIpcGetEventHandle(&ih, e));
	CK(cuIpcOpenEventHandle(&opened, ih));
	cr_assert_eq(unsup(GS_UNSUP_IPC_EVENT_EXPORT), 1, "one export however often asked");
	cr_assert_eq(unsup(GS_UNSUP_IPC_EVENT_IMPORT), 1);
	cr_assert_eq(gs_trk_count(GS_KIND_EVENT), 2);
	CK(cuEventDestroy(e));
	CK(cuEventDestroy(opened));
	cr_assert_eq(gs_trk_count(GS_KIND_UNSUPPORTED), 0);

	CK(cuGreenCtxCreate(&green, desc, 0, CU_GREEN_CTX_DEFAULT_STREAM));
	CK(cuCtxFromGreenCtx(&gctx, green));
	CK(cuGreenCtxStreamCreate(&gs, green, CU_STREAM_NON_BLOCKING, 0));
	cr_assert_eq(trk_problems("green"), 3);
	CK(cuStreamDestroy(gs));
	CK(cuGreenCtxDestroy(green));
	cr_assert_eq(unsup(GS_UNSUP_GREEN_CTX), 0);
}

/* cuLinkComplete's output has no header that tells its size: the module
 * loaded from it is copied with the size the driver gave. */
Test(hooks, link_output_module)
{
	CUjit_option opt = CU_JIT_MAX_REGISTERS;
	void *val = (void *)(uintptr_t)32;
	char input[] = "input bytes";
	struct gs_module_rec m;
	CUlinkState link;
	void *out;
	size_t size;
	CUmodule mod;

	CK(cuLinkCreate(1, &opt, &val, &link));
	CK(cuLinkAddData(link, CU_JIT_INPUT_PTX, input, sizeof(input), "in.ptx", 0, NULL, NULL));
	CK(cuLinkComplete(link, &out, &size));
	CK(cuModuleLoadData(&mod, out));
	cr_assert_eq(trk_get(GS_KIND_MODULE, U(mod), &m, sizeof(m)), 0);
	cr_assert(m.from_link);
	cr_assert_eq(m.image.size, size);
	cr_assert_eq(m.image.error, 0);
	cr_assert_eq(m.ctx, FAKE_PRIMARY);
	CK(cuLinkDestroy(link));
	cr_assert_eq(gs_trk_count(GS_KIND_LINK), 0);
	CK(cuModuleUnload(mod));
	cr_assert_eq(gs_trk_count(GS_KIND_MODULE), 0);
}

Test(hooks, module_options_and_globals)
{
	static const char ptx[] = ".version 8.0\n.target sm_80\n.address_size 64\n";
	char log[64];
	CUjit_option opts[] = { CU_JIT_INFO_LOG_BUFFER, CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES,
				CU_JIT_OPTIMIZATION_LEVEL };
	void *vals[] = { log, (void *)(uintptr_t)sizeof(log), (void *)(uintptr_t)2 };
	struct gs_module_rec m;
	struct gs_global_rec g;
	CUdeviceptr p;
	CUmodule mod;

	CK(cuModuleLoadDataEx(&mod, ptx, 3, opts, vals));
	cr_assert_eq(trk_get(GS_KIND_MODULE, U(mod), &m, sizeof(m)), 0);
	cr_assert_eq(m.source, GS_MODSRC_DATA_EX);
	cr_assert_eq(m.image.kind, GS_IMAGE_PTX);
	cr_assert_eq(m.image.size, sizeof(ptx));
	cr_assert_eq(m.jit.lost, 0);
	cr_assert_eq(m.jit.opts[2].value, 2);
	cr_assert_eq(m.sm, 80, "the fake device is sm_80");
	/* Without bytes, the hook asks the driver for the size. */
	CK(cuModuleGetGlobal(&p, NULL, mod, "x"));
	cr_assert_eq(trk_get(GS_KIND_GLOBAL, p, &g, sizeof(g)), 0);
	cr_assert_eq(g.size, 64);
	cr_assert_eq(g.ctx, FAKE_PRIMARY);
	/* Without the address, there is nothing the application holds. */
	size_t n;

	CK(cuModuleGetGlobal(NULL, &n, mod, "y"));
	cr_assert_eq(gs_trk_count(GS_KIND_GLOBAL), 1);
}

Test(hooks, vmm_and_multicast)
{
	CUmemAllocationProp prop = { .type = CU_MEM_ALLOCATION_TYPE_PINNED };
	CUmulticastObjectProp mp = { .numDevices = 1, .size = 2 << 20 };
	CUmemGenericAllocationHandle h, mc;

	prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	CK(cuMemCreate(&h, 2 << 20, &prop, 0));
	CK(cuMulticastCreate(&mc, &mp));
	cr_assert(trk_exists(GS_KIND_PHYS, h));
	cr_assert_eq(unsup(GS_UNSUP_MULTICAST), 1);
	CK(cuMemRelease(mc));
	CK(cuMemRelease(h));
	cr_assert_eq(unsup(GS_UNSUP_MULTICAST), 0, "cuMemRelease also releases multicast objects");
	cr_assert_eq(gs_trk_count(GS_KIND_PHYS), 0);
}

/*
 * After a migration: the new driver hands out, for a new stream, the value
 * an old stream still holds as the application's handle. The application
 * gets a fresh synthetic value instead, and both handles stay distinct.
 */
Test(hooks, handle_collision_after_migration)
{
	CUstream old_stream, fresh;
	struct gs_stream_rec s;
	uint64_t real;

	CK(cuStreamCreate(&old_stream, 0));
	cr_assert_eq(gs_trk_rebind(GS_KIND_STREAM, U(old_stream), 0x9990000), 0);
	gs_set_migrated(true);
	force_handle(U(old_stream));
	CK(cuStreamCreate(&fresh, 0));
	cr_assert_neq(fresh, old_stream);
	cr_assert(gs_hmap_is_synthetic(U(fresh)), "got %p", (void *)fresh);
	cr_assert_eq(trk_get(GS_KIND_STREAM, U(fresh), &s, sizeof(s)), 0);
	cr_assert_eq(s.hdr.real, U(old_stream));
	cr_assert_eq(gs_hmap_to_real(gs_trk_handlemap(GS_KIND_STREAM), U(old_stream), &real), 0);
	cr_assert_eq(real, 0x9990000);
	CK(cuStreamDestroy(fresh));
	cr_assert(trk_exists(GS_KIND_STREAM, U(old_stream)));
	cr_assert_not(trk_exists(GS_KIND_STREAM, U(fresh)));
	gs_set_migrated(false);
}
