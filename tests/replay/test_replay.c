/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Replay operations end to end on the simulated driver (SIMCUDA_ARCH
 * sm_80,sm_90): one scenario per run, named by argv[1] (meson runs each as
 * its own test: the process state is the thing under test).
 *
 *   basic     freeze, release to host memory, thaw on the other GPU; a
 *             thread blocked at the gate meanwhile goes on, in its context
 *   pingpong  0 -> 1 -> 0 -> 1, changing contents in between
 *   stack     two contexts on two GPUs, swapped by maps three times in a
 *             row; the thread's context stack comes back in order
 *   relthread a thread that had a context runs a migration itself
 *   nocode    a cubin-only sm_90 module refuses sm_80, then goes to sm_90
 *   fault     every driver call of a thaw failing in turn (SIMCUDA_FAIL, in
 *             child processes): each thaw undoes itself, a retry works
 *   image     release to an image directory, thaw from it
 *   swap      gs_replay_swap both ways, three times, device to device
 *   swapback  a swap whose thaw fails on the target goes back to the source
 *   swaphost  GPUs that cannot be peers: a swap through host memory
 *   swapstagefail  memory for the staging cannot be made: host path
 *   swapcopyfail   the device-to-device copy fails: host path
 *   (replay-swap-noadopt runs `swap` with cuMemRetainAllocationHandle
 *   failing: staged memory is copied into place instead of taken over)
 *   swapcross two devices exchanged by one swap, and back
 *   swapsame  a forced swap onto the GPU it is on, device to device
 *   blockers  an unsupported object: check and release refuse, thaw resumes
 *   timeout   a call that does not finish: the freeze gives up and says which
 *   devspec   device specifications
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "g_api.h"
#include "gate.h"
#include "replay.h"
#include "replay_test.h"
#include "rp_internal.h"
#include "tracker.h"

int replay_failures;

static void sleep_ms(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

static const char *fatbin(void)
{
	return wl_kernels("gs_kernels.fatbin");
}

/* One operation, its message printed on failure. */
static int op_freeze(void)
{
	char *err = NULL;
	json_t *rep = NULL;
	int rc = gs_replay_freeze(5000, &rep, &err);

	CHECK(rc == 0, "freeze: %d %s", rc, err ? err : "");
	json_decref(rep);
	free(err);
	return rc;
}

static int op_release(const char *dir)
{
	char *err = NULL;
	json_t *rep = NULL;
	int rc = gs_replay_release(dir, NULL, &rep, &err);

	CHECK(rc == 0, "release: %d %s", rc, err ? err : "");
	json_decref(rep);
	free(err);
	return rc;
}

static int op_thaw(const char *spec, const char *dir)
{
	char *err = NULL;
	json_t *rep = NULL;
	int rc = gs_replay_thaw(spec, dir, NULL, &rep, &err);

	CHECK(rc == 0, "thaw %s: %d %s", spec ? spec : "(same)", rc, err ? err : "");
	json_decref(rep);
	free(err);
	return rc;
}

static int migrate(const char *spec)
{
	if (op_freeze() || op_release(NULL) || op_thaw(spec, NULL))
		return -1;
	CHECK(gs_replay_state() == GS_STATE_RUNNING, "state %s",
	      gs_proc_state_name(gs_replay_state()));
	return 0;
}

/* ---- basic -------------------------------------------------------------------------- */

struct worker {
	struct wl *w;
	pthread_t thread;
	atomic_int stage;       /* 1: ready, 2: go, 3: done */
	CUresult rc;
	CUcontext current;      /* real current context after its call */
};

static void *worker_main(void *arg)
{
	struct worker *k = arg;

	/* The primary context current on this thread, as cudart does. */
	k->rc = cuCtxSetCurrent(k->w->pctx);
	atomic_store(&k->stage, 1);
	while (atomic_load(&k->stage) < 2)
		sleep_ms(1);
	if (k->rc == CUDA_SUCCESS)
		/* Sleeps at the closed gate until the thaw. */
		k->rc = cuMemsetD32(k->w->out, 0x77777777u, (unsigned)(k->w->out_size / 4));
	/* Asynchronous, in another context than the main thread's reads. */
	if (k->rc == CUDA_SUCCESS)
		k->rc = cuCtxSynchronize();
	gs_real.cuCtxGetCurrent(&k->current);
	atomic_store(&k->stage, 3);
	return NULL;
}

static int scenario_basic(void)
{
	struct wl w;
	struct worker k = { .w = &w };
	json_t *st = NULL;
	uint32_t words[4];

	if (wl_setup(&w, 0, fatbin()) || wl_verify(&w, 0))
		return -1;
	REQUIRE(pthread_create(&k.thread, NULL, worker_main, &k) == 0, "pthread_create");
	while (atomic_load(&k.stage) < 1)
		sleep_ms(1);

	if (op_freeze())
		return -1;
	CHECK(gs_replay_state() == GS_STATE_FROZEN, "not frozen");
	atomic_store(&k.stage, 2);
	sleep_ms(50);
	CHECK(atomic_load(&k.stage) == 2, "the worker's call went through a closed gate");
	if (op_release(NULL))
		return -1;
	CHECK(gs_replay_state() == GS_STATE_RELEASED, "not released");
	/* Nothing of the process is left on the GPU, and the handles wait
	 * for their new values. */
	CHECK(rp_is_placeholder(wl_real(GS_KIND_CTX, (uintptr_t)w.ctx)), "context still bound");
	CHECK(rp_is_placeholder(wl_real(GS_KIND_STREAM, (uintptr_t)w.stream)), "stream still bound");
	{
		unsigned flags;
		int active = 1;
		CHECK(gs_real.cuDevicePrimaryCtxGetState(0, &flags, &active) == CUDA_SUCCESS &&
		      !active, "the primary context of GPU 0 is still active");
	}
	CHECK(gs_replay_status(&st) == 0 && !strcmp(json_string_value(json_object_get(st, "state")),
						    "released"), "status");
	json_decref(st);
	CHECK(atomic_load(&k.stage) == 2, "the worker ran while released");

	if (op_thaw("1", NULL))
		return -1;
	pthread_join(k.thread, NULL);
	CHECK(k.rc == CUDA_SUCCESS, "the worker's cuMemsetD32 after the thaw: %d", (int)k.rc);
	CHECK(k.current == (CUcontext)(uintptr_t)wl_real(GS_KIND_CTX, (uintptr_t)w.pctx),
	      "the worker's current context is %p, not the new primary context", (void *)k.current);
	CHECK(cuMemcpyDtoH(words, w.out, sizeof(words)) == CUDA_SUCCESS &&
	      words[0] == 0x77777777u && words[3] == 0x77777777u,
	      "the worker's memset did not land: %#x", words[0]);
	if (wl_verify(&w, 1) || wl_verify_app(&w, 1))
		return -1;
	if (wl_mutate(&w) || wl_verify(&w, 1))
		return -1;
	return wl_teardown(&w);
}

/* ---- pingpong ------------------------------------------------------------------------- */

static int scenario_pingpong(void)
{
	static const char *const targets[] = { "1", "0", "1", "0", "1" };
	struct wl w;

	if (wl_setup(&w, 0, fatbin()))
		return -1;
	for (size_t i = 0; i < sizeof(targets) / sizeof(targets[0]); i++) {
		int rdev = atoi(targets[i]);

		if (migrate(targets[i]) || wl_verify(&w, rdev) || wl_verify_app(&w, rdev) ||
		    wl_mutate(&w) || wl_verify(&w, rdev))
			return -1;
	}
	return wl_teardown(&w);
}

/* ---- stack ------------------------------------------------------------------------------ */

static int scenario_stack(void)
{
	struct wl w0, w1;
	CUcontext top = NULL, below = NULL, popped = NULL;

	/* Both set up from this thread: its stack ends [w0.ctx, w1.ctx]. */
	if (wl_setup(&w0, 0, fatbin()) || wl_setup(&w1, 1, fatbin()))
		return -1;
	/* Three migrations in a row, this thread making no call in between:
	 * its stack still holds the handles of two migrations ago. */
	if (op_freeze() || op_release(NULL) || op_thaw("0=1,1=0", NULL) ||
	    op_freeze() || op_release(NULL) || op_thaw("0=0,1=1", NULL) ||
	    op_freeze() || op_release(NULL) || op_thaw("0=1,1=0", NULL))
		return -1;
	/* Any call repairs the stack first. */
	CU(cuCtxGetCurrent(&top));
	CU(gs_real.cuCtxGetCurrent(&top));
	CHECK(top == (CUcontext)(uintptr_t)wl_real(GS_KIND_CTX, (uintptr_t)w1.ctx),
	      "top of the stack %p", (void *)top);
	CU(gs_real.cuCtxPopCurrent_v2(&popped));
	CU(gs_real.cuCtxGetCurrent(&below));
	CHECK(below == (CUcontext)(uintptr_t)wl_real(GS_KIND_CTX, (uintptr_t)w0.ctx),
	      "below it %p", (void *)below);
	CU(gs_real.cuCtxPushCurrent_v2(popped));
	/* wl_verify checks the current context against its own. */
	CU(gs_real.cuCtxPushCurrent_v2(below));
	if (wl_verify(&w0, 1))
		return -1;
	CU(gs_real.cuCtxPopCurrent_v2(&popped));
	if (wl_verify(&w1, 0) || wl_teardown(&w1))
		return -1;
	return wl_teardown(&w0);
}

/* ---- relthread ------------------------------------------------------------------------ */

/* A thread that held a context before a migration and made no call since
 * runs the next migration itself: its stack, parked while it destroys the
 * contexts, belongs to the epoch before. */
struct relthread {
	struct wl *w;
	atomic_int stage;
	int rc;
	CUcontext current;
};

static void *relthread_main(void *arg)
{
	struct relthread *r = arg;
	CUcontext app = NULL;

	r->rc = cuCtxSetCurrent(r->w->ctx) == CUDA_SUCCESS ? 0 : -1;
	atomic_store(&r->stage, 1);
	while (atomic_load(&r->stage) < 2)
		sleep_ms(1);
	if (!r->rc)
		r->rc = migrate("0");
	if (!r->rc)
		r->rc = cuCtxGetCurrent(&app) == CUDA_SUCCESS ? 0 : -1;
	gs_real.cuCtxGetCurrent(&r->current);
	atomic_store(&r->stage, 3);
	return NULL;
}

static int scenario_relthread(void)
{
	struct wl w;
	struct relthread r = { .w = &w };
	pthread_t th;

	if (wl_setup(&w, 0, fatbin()))
		return -1;
	REQUIRE(pthread_create(&th, NULL, relthread_main, &r) == 0, "pthread_create");
	while (atomic_load(&r.stage) < 1)
		sleep_ms(1);
	if (migrate("1"))
		return -1;
	atomic_store(&r.stage, 2);
	pthread_join(th, NULL);
	CHECK(r.rc == 0, "the thread's migration failed");
	CHECK(r.current == (CUcontext)(uintptr_t)wl_real(GS_KIND_CTX, (uintptr_t)w.ctx),
	      "the thread's context is %p, not the new one", (void *)r.current);
	if (wl_verify(&w, 0))
		return -1;
	return wl_teardown(&w);
}

/* ---- nocode ----------------------------------------------------------------------------- */

static int scenario_nocode(void)
{
	const char *cubin = getenv("GS_KERNELS_CUBIN");
	struct wl w;
	char *err = NULL;
	int rc;

	if (!cubin || strcmp(cubin, "gs_kernels_sm90.cubin")) {
		fprintf(stderr, "needs the sm_90 cubin (GS_KERNELS_CUBIN)\n");
		return 77;
	}
	/* Device 1 is the sm_90 one: only it can load the cubin. */
	if (wl_setup(&w, 1, wl_kernels(cubin)))
		return -1;
	if (op_freeze() || op_release(NULL))
		return -1;
	rc = gs_replay_thaw("0", NULL, NULL, NULL, &err);
	CHECK(rc == -ENOEXEC, "thaw onto sm_80: %d", rc);
	CHECK(err && strstr(err, "sm_80") && strstr(err, "cubin sm_90"),
	      "the message does not say what is missing: %s", err ? err : "(none)");
	free(err);
	CHECK(gs_replay_state() == GS_STATE_RELEASED, "a refused thaw left %s",
	      gs_proc_state_name(gs_replay_state()));
	if (op_thaw("1", NULL) || wl_verify(&w, 1))
		return -1;
	return wl_teardown(&w);
}

/* ---- fault ---------------------------------------------------------------------------------- */

/* Calls the real driver gets, counted in the parent to aim SIMCUDA_FAIL at
 * the k-th call a thaw makes (the simulator counts the same calls). */
#define COUNTED(X)                                                                       \
	X(cuMemCreate, "cuMemCreate", (CUmemGenericAllocationHandle * h, size_t s,           \
		const CUmemAllocationProp *p, unsigned long long f), (h, s, p, f))            \
	X(cuMemAddressReserve, "cuMemAddressReserve", (CUdeviceptr * p, size_t s, size_t a,  \
		CUdeviceptr h, unsigned long long f), (p, s, a, h, f))                         \
	X(cuMemMap, "cuMemMap", (CUdeviceptr p, size_t s, size_t o,                         \
		CUmemGenericAllocationHandle h, unsigned long long f), (p, s, o, h, f))        \
	X(cuMemSetAccess, "cuMemSetAccess", (CUdeviceptr p, size_t s,                       \
		const CUmemAccessDesc *d, size_t n), (p, s, d, n))                            \
	X(cuCtxCreate_v4, "cuCtxCreate", (CUcontext * c, CUctxCreateParams *p, unsigned f,  \
		CUdevice d), (c, p, f, d))                                                   \
	X(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain", (CUcontext * c, CUdevice d), \
		(c, d))                                                                      \
	X(cuModuleLoadData, "cuModuleLoadData", (CUmodule * m, const void *i), (m, i))      \
	X(cuModuleGetFunction, "cuModuleGetFunction", (CUfunction * f, CUmodule m,          \
		const char *n), (f, m, n))                                                   \
	X(cuModuleGetGlobal_v2, "cuModuleGetGlobal", (CUdeviceptr * p, size_t *s,           \
		CUmodule m, const char *n), (p, s, m, n))                                     \
	X(cuStreamCreateWithPriority, "cuStreamCreateWithPriority", (CUstream * s,          \
		unsigned f, int p), (s, f, p))                                               \
	X(cuEventCreate, "cuEventCreate", (CUevent * e, unsigned f), (e, f))                \
	X(cuMemHostRegister_v2, "cuMemHostRegister", (void *p, size_t s, unsigned f),       \
		(p, s, f))                                                                   \
	X(cuMemcpyHtoDAsync_v2, "cuMemcpyHtoDAsync", (CUdeviceptr d, const void *s,         \
		size_t n, CUstream st), (d, s, n, st))                                        \
	X(cuFuncSetAttribute, "cuFuncSetAttribute", (CUfunction f, CUfunction_attribute a,  \
		int v), (f, a, v))

enum {
#define X(fn, base, params, args) COUNT_##fn,
	COUNTED(X)
#undef X
	NCOUNTED
};

static const char *const counted_names[NCOUNTED] = {
#define X(fn, base, params, args) base,
	COUNTED(X)
#undef X
};

static atomic_uint counts[NCOUNTED];

#define X(fn, base, params, args)                                                       \
	static gs_fn_##fn *orig_##fn;                                                   \
	static CUresult count_##fn params                                               \
	{                                                                               \
		atomic_fetch_add(&counts[COUNT_##fn], 1);                               \
		return orig_##fn args;                                                   \
	}
COUNTED(X)
#undef X

static void install_counters(void)
{
#define X(fn, base, params, args)                                                       \
	orig_##fn = gs_real.fn;                                                         \
	gs_real.fn = count_##fn;
	COUNTED(X)
#undef X
}

static int run_child(const char *name, unsigned nth)
{
	char spec[128], *argv[] = { "test_replay", "fault-child", NULL };
	pid_t pid;
	int status = 0;

	snprintf(spec, sizeof(spec), "%s:%u", name, nth);
	pid = fork();
	if (pid == 0) {
		setenv("SIMCUDA_FAIL", spec, 1);
		execv("/proc/self/exe", argv);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		return -1;
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "with SIMCUDA_FAIL=%s: the child %s %d", spec,
	      WIFEXITED(status) ? "exited" : "died of signal",
	      WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	return 0;
}

static int fault_workload(struct wl *w)
{
	if (wl_setup(w, 0, fatbin()) || op_freeze() || op_release(NULL))
		return -1;
	return 0;
}

static int scenario_fault(void)
{
	unsigned before[NCOUNTED], during[NCOUNTED], children = 0;
	struct wl w;

	CU(cuInit(0));
	install_counters();
	if (fault_workload(&w))
		return -1;
	for (int i = 0; i < NCOUNTED; i++)
		before[i] = atomic_load(&counts[i]);
	if (op_thaw("1", NULL))
		return -1;
	for (int i = 0; i < NCOUNTED; i++)
		during[i] = atomic_load(&counts[i]) - before[i];
	if (wl_verify(&w, 1) || wl_teardown(&w))
		return -1;
	for (int i = 0; i < NCOUNTED; i++) {
		CHECK(during[i] > 0, "the thaw made no %s call: the test aims at nothing",
		      counted_names[i]);
		for (unsigned k = 1; k <= during[i]; k++, children++)
			run_child(counted_names[i], before[i] + k);
	}
	printf("%u faulty thaws rolled back and retried\n", children);
	return replay_failures ? -1 : 0;
}

static int scenario_fault_child(void)
{
	const char *spec = getenv("SIMCUDA_FAIL");
	struct wl w;
	char *err = NULL;
	int rc;

	if (fault_workload(&w))
		return -1;
	rc = gs_replay_thaw("1", NULL, NULL, NULL, &err);
	CHECK(rc != 0, "%s: the thaw succeeded although a call failed", spec);
	CHECK(rc == 0 || (err && *err), "%s: no message", spec);
	if (err)
		fprintf(stderr, "%s: thaw refused as it should: %s\n", spec, err);
	free(err);
	CHECK(gs_replay_state() == (rc ? GS_STATE_RELEASED : GS_STATE_RUNNING), "state %s",
	      gs_proc_state_name(gs_replay_state()));
	if (rc == 0)
		return -1;
	CHECK(rp_is_placeholder(wl_real(GS_KIND_CTX, (uintptr_t)w.ctx)),
	      "%s: a failed thaw rebound the context", spec);
	/* The fault was one call: the retry goes through. */
	if (op_thaw("1", NULL) || wl_verify(&w, 1))
		return -1;
	return wl_teardown(&w);
}

/* ---- image ---------------------------------------------------------------------------------- */

static int scenario_image(void)
{
	char dir[] = "/tmp/gs-replay-image-XXXXXX", img[256], img2[256], manifest[300];
	struct stat sb;
	struct wl w;
	int rc;

	REQUIRE(mkdtemp(dir), "mkdtemp");
	snprintf(img, sizeof(img), "%s/one", dir);
	snprintf(img2, sizeof(img2), "%s/two", dir);
	if (wl_setup(&w, 0, fatbin()))
		return -1;
	if (op_freeze() || op_release(img))
		return -1;
	snprintf(manifest, sizeof(manifest), "%s/manifest.json", img);
	CHECK(stat(manifest, &sb) == 0 && sb.st_size > 0, "no manifest in %s", img);
	/* The contents are only in the image: the thaw finds it by itself. */
	if (op_thaw("1", NULL) || wl_verify(&w, 1) || wl_mutate(&w))
		return -1;
	if (op_freeze() || op_release(img2) || op_thaw("0", img2) || wl_verify(&w, 0) ||
	    wl_mutate(&w))
		return -1;
	/* Released to host memory first, then to an image: the host copies
	 * go, the image serves the thaw. */
	snprintf(img, sizeof(img), "%s/three", dir);
	if (op_freeze() || op_release(NULL) || op_release(img))
		return -1;
	CHECK(rp.saved.nregions && !rp.saved.regions[0].host, "host copies kept");
	if (op_thaw("1", NULL) || wl_verify(&w, 1) || wl_verify_app(&w, 1) || wl_teardown(&w))
		return -1;
	rc = system("rm -rf /tmp/gs-replay-image-*");
	(void)rc;
	return 0;
}

/* ---- swap ----------------------------------------------------------------------------------- */

/* A swap that must succeed; *peer (may be NULL): the bytes it copied
 * device to device, and *warned whether it reported warnings. */
static int swap_flags(const char *spec, unsigned flags, long long *peer, bool *warned)
{
	char *err = NULL;
	json_t *rep = NULL;
	int rc = gs_replay_swap(spec, 5000, flags, NULL, &rep, &err);
	json_t *rel = json_object_get(rep, "release");

	CHECK(rc == 0, "swap %s: %d %s", spec, rc, err ? err : "");
	CHECK(gs_replay_state() == GS_STATE_RUNNING, "state after swap: %s",
	      gs_proc_state_name(gs_replay_state()));
	if (peer)
		*peer = json_integer_value(json_object_get(rel, "bytes_device"));
	if (warned)
		*warned = json_array_size(json_object_get(rel, "warnings")) > 0;
	json_decref(rep);
	free(err);
	return rc;
}

static int swap_report(const char *spec, long long *peer, bool *warned)
{
	return swap_flags(spec, 0, peer, warned);
}

static int swap_to(const char *spec)
{
	return swap_report(spec, NULL, NULL);
}

/* Free memory of a real GPU, asked of the driver directly. */
static size_t real_free(int real)
{
	size_t free_b = 0, total = 0;
	CUcontext ctx = NULL, popped;

	gs_inside_begin();
	if (gs_real.cuDevicePrimaryCtxRetain(&ctx, real) == CUDA_SUCCESS) {
		if (gs_real.cuCtxPushCurrent_v2(ctx) == CUDA_SUCCESS) {
			gs_real.cuMemGetInfo_v2(&free_b, &total);
			gs_real.cuCtxPopCurrent_v2(&popped);
		}
		gs_real.cuDevicePrimaryCtxRelease_v2(real);
	}
	gs_inside_end();
	return free_b;
}

/* Swaps go device to device (the simulated GPUs are peers), leave nothing
 * behind on either GPU, and the contents arrive intact. */
static int scenario_swap(void)
{
	struct wl w;
	long long peer = 0;
	size_t free1 = 0, free0 = 0;

	if (wl_setup(&w, 0, fatbin()))
		return -1;
	for (int round = 0; round < 3; round++) {
		if (swap_report("1", &peer, NULL) || wl_verify(&w, 1) || wl_verify_app(&w, 1) ||
		    wl_mutate(&w))
			return -1;
		CHECK(peer > 0, "round %d: nothing went device to device", round);
		if (round == 0)
			free1 = real_free(1);
		CHECK(real_free(1) == free1, "round %d: GPU 1 has %zu bytes free, %zu after the "
		      "first swap (staged memory left behind?)", round, real_free(1), free1);
		if (swap_report("0", &peer, NULL) || wl_verify(&w, 0) || wl_verify_app(&w, 0))
			return -1;
		CHECK(peer > 0, "round %d: nothing went device to device on the way back", round);
		if (round == 0)
			free0 = real_free(0);
		CHECK(real_free(0) == free0, "round %d: GPU 0 has %zu bytes free, %zu after the "
		      "first swap back", round, real_free(0), free0);
	}
	/* Asked to, a swap leaves the peer path alone. */
	if (swap_flags("1", GS_SWAP_VIA_HOST, &peer, NULL) || wl_verify(&w, 1) ||
	    wl_verify_app(&w, 1))
		return -1;
	CHECK(peer == 0, "a swap through host memory copied %lld bytes device to device", peer);
	return wl_teardown(&w);
}

/* Two devices exchanged in one swap: each one's memory is staged on the
 * other's GPU while both are still in use. */
static int scenario_swapcross(void)
{
	struct wl w0, w1;
	long long peer = 0;
	CUcontext popped = NULL;

	/* Set up from this thread: its stack ends [w0.ctx, w1.ctx]. */
	if (wl_setup(&w0, 0, fatbin()) || wl_setup(&w1, 1, fatbin()))
		return -1;
	for (int round = 0; round < 2; round++) {
		int on0 = round == 0 ? 1 : 0; /* where device 0 runs after the swap */

		if (swap_report(round == 0 ? "0=1,1=0" : "0=0,1=1", &peer, NULL))
			return -1;
		CHECK(peer > 0, "round %d: nothing went device to device", round);
		if (wl_verify(&w1, 1 - on0))
			return -1;
		CU(cuCtxPushCurrent(w0.ctx));
		if (wl_verify(&w0, on0) || wl_mutate(&w0))
			return -1;
		CU(cuCtxPopCurrent(&popped));
		if (wl_mutate(&w1))
			return -1;
	}
	if (wl_teardown(&w1))
		return -1;
	CU(cuCtxPushCurrent(w0.ctx));
	return wl_teardown(&w0);
}

/* A forced swap onto the GPU the process is on: every object rebuilt, the
 * memory copied within the GPU, nothing left behind. */
static int scenario_swapsame(void)
{
	struct wl w;
	long long peer = 0;

	if (wl_setup(&w, 0, fatbin()))
		return -1;
	if (swap_flags("0", 0, &peer, NULL))
		return -1;
	CHECK(peer == 0, "an unforced swap onto its own GPU moved %lld bytes", peer);
	for (int round = 0; round < 3; round++) {
		unsigned flags = GS_SWAP_FORCE | (round == 2 ? GS_SWAP_VIA_HOST : 0);
		size_t before = real_free(0);

		if (swap_flags("0", flags, &peer, NULL))
			return -1;
		/* More when the arena's spare chunk went (spares are not
		 * carried over), never less. */
		CHECK(real_free(0) >= before, "round %d: GPU 0 has %zu bytes free, %zu before the "
		      "swap (staged memory left behind?)", round, real_free(0), before);
		CHECK(round == 2 ? peer == 0 : peer > 0, "round %d: %lld bytes copied within the GPU",
		      round, peer);
		if (wl_verify(&w, 0) || wl_verify_app(&w, 0) || wl_mutate(&w))
			return -1;
	}
	return wl_teardown(&w);
}

/* GPUs that cannot be peers: everything goes through host memory. */
static int scenario_swaphost(void)
{
	struct wl w;
	long long peer = -1;

	setenv("SIMCUDA_P2P", "0", 1);
	if (wl_setup(&w, 0, fatbin()))
		return -1;
	if (swap_report("1", &peer, NULL) || wl_verify(&w, 1) || wl_verify_app(&w, 1) ||
	    wl_mutate(&w))
		return -1;
	CHECK(peer == 0, "%lld bytes went device to device between GPUs that are not peers", peer);
	if (swap_to("0") || wl_verify(&w, 0) || wl_verify_app(&w, 0))
		return -1;
	return wl_teardown(&w);
}

/* Staging that fails half-way (the target runs out of memory for it) is
 * undone and the swap goes through host memory. */
static atomic_int creates_before_failure;
static gs_fn_cuMemCreate *real_mem_create;

static CUresult failing_mem_create(CUmemGenericAllocationHandle *h, size_t size,
				   const CUmemAllocationProp *prop, unsigned long long flags)
{
	if (atomic_fetch_sub(&creates_before_failure, 1) == 0)
		return CUDA_ERROR_OUT_OF_MEMORY;
	return real_mem_create(h, size, prop, flags);
}

/* The device-to-device copy fails: the staging is dropped, the host path
 * takes everything. */
static atomic_int copies_before_failure;
static gs_fn_cuMemcpyDtoDAsync_v2 *real_dtod;

static CUresult failing_dtod(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s)
{
	if (atomic_fetch_sub(&copies_before_failure, 1) == 0)
		return CUDA_ERROR_ILLEGAL_ADDRESS;
	return real_dtod(dst, src, n, s);
}

/* A swap with a fault armed (inject(true)) until it returns: it must fall
 * back to host memory with a warning, move the process intact, and leave
 * nothing on the target. */
static int swap_falls_back(void (*inject)(bool on), const char *what)
{
	struct wl w;
	long long peer = -1;
	bool warned = false;
	size_t free1;
	int rc;

	if (wl_setup(&w, 0, fatbin()))
		return -1;
	free1 = real_free(1);
	inject(true);
	rc = swap_report("1", &peer, &warned);
	inject(false);
	if (rc)
		return -1;
	CHECK(peer == 0 && warned, "after %s: %lld bytes device to device, warned %d", what, peer,
	      warned);
	if (wl_verify(&w, 1) || wl_verify_app(&w, 1) || wl_mutate(&w))
		return -1;
	if (swap_to("0") || wl_verify(&w, 0) || wl_verify_app(&w, 0))
		return -1;
	CHECK(real_free(1) == free1, "GPU 1 has %zu bytes free, %zu before (staging left "
	      "behind?)", real_free(1), free1);
	return wl_teardown(&w);
}

static void fail_copy(bool on)
{
	if (on) {
		real_dtod = gs_real.cuMemcpyDtoDAsync_v2;
		gs_real.cuMemcpyDtoDAsync_v2 = failing_dtod;
		atomic_store(&copies_before_failure, 1);
	} else {
		gs_real.cuMemcpyDtoDAsync_v2 = real_dtod;
	}
}

static void fail_create(bool on)
{
	if (on) {
		real_mem_create = gs_real.cuMemCreate;
		gs_real.cuMemCreate = failing_mem_create;
		atomic_store(&creates_before_failure, 2);
	} else {
		gs_real.cuMemCreate = real_mem_create;
	}
}

static int scenario_swapcopyfail(void)
{
	return swap_falls_back(fail_copy, "a failed copy");
}

static int scenario_swapstagefail(void)
{
	return swap_falls_back(fail_create, "a failed allocation for the staging");
}

/* A swap whose thaw on the target fails goes back where it was. */
static atomic_int fail_module_loads;
static gs_fn_cuModuleLoadData *real_module_load;

static CUresult failing_module_load(CUmodule *m, const void *image)
{
	if (atomic_fetch_sub(&fail_module_loads, 1) > 0)
		return CUDA_ERROR_OUT_OF_MEMORY;
	return real_module_load(m, image);
}

static int scenario_swapback(void)
{
	struct wl w;
	char *err = NULL;
	size_t free1;
	int rc;

	if (wl_setup(&w, 0, fatbin()))
		return -1;
	free1 = real_free(1);
	real_module_load = gs_real.cuModuleLoadData;
	gs_real.cuModuleLoadData = failing_module_load;
	atomic_store(&fail_module_loads, 1);
	rc = gs_replay_swap("1", 5000, 0, NULL, NULL, &err);
	gs_real.cuModuleLoadData = real_module_load;
	CHECK(rc != 0, "the swap succeeded although the module could not be loaded");
	CHECK(err && strstr(err, "runs on where it was"), "message: %s", err ? err : "(none)");
	free(err);
	CHECK(gs_replay_state() == GS_STATE_RUNNING, "state %s", gs_proc_state_name(gs_replay_state()));
	if (wl_verify(&w, 0) || wl_verify_app(&w, 0))
		return -1;
	/* The memory staged on the target for the failed thaw is gone. */
	CHECK(real_free(1) == free1, "GPU 1 has %zu bytes free, %zu before the swap",
	      real_free(1), free1);
	/* And the next swap goes through. */
	if (swap_to("1") || wl_verify(&w, 1))
		return -1;
	return wl_teardown(&w);
}

/* ---- blockers ------------------------------------------------------------------------------- */

static int scenario_blockers(void)
{
	struct wl w;
	json_t *rep = NULL;
	char *err = NULL;
	int rc;

	if (wl_setup(&w, 0, fatbin()))
		return -1;
	/* What the hook of cuGraphCreate records. */
	REQUIRE(gs_trk_unsup_add(GS_UNSUP_GRAPH, 0x6a6a000, 0, w.ctx, 0, "cuGraphCreate") == 0,
		"recording a graph");
	CU(gs_replay_check(&rep, &err) == 0 ? CUDA_SUCCESS : CUDA_ERROR_UNKNOWN);
	CHECK(json_is_false(json_object_get(rep, "migratable")), "a graph is migratable?");
	{
		const char *b = json_string_value(json_array_get(json_object_get(rep, "blockers"), 0));
		CHECK(b && strstr(b, "cuGraphCreate"), "the blocker does not name the graph: %s",
		      b ? b : "(none)");
	}
	json_decref(rep);
	if (op_freeze())
		return -1;
	rc = gs_replay_release(NULL, NULL, NULL, &err);
	CHECK(rc == -EOPNOTSUPP, "release with a graph: %d", rc);
	CHECK(err && strstr(err, "graph"), "message: %s", err ? err : "(none)");
	free(err);
	CHECK(gs_replay_state() == GS_STATE_FROZEN, "state %s", gs_proc_state_name(gs_replay_state()));
	/* Thaw without a target resumes where it was. */
	if (op_thaw(NULL, NULL))
		return -1;
	CHECK(gs_replay_state() == GS_STATE_RUNNING, "not running");
	gs_trk_unsup_remove(GS_UNSUP_GRAPH, 0x6a6a000);
	rep = NULL;
	CHECK(gs_replay_check(&rep, NULL) == 0 && json_is_true(json_object_get(rep, "migratable")),
	      "still blocked");
	json_decref(rep);
	if (wl_verify(&w, 0))
		return -1;
	return wl_teardown(&w);
}

/* ---- timeout ------------------------------------------------------------------------------- */

static void CUDA_CB slow_host_fn(void *arg)
{
	(void)arg;
	sleep_ms(1500);
}

struct syncer {
	CUcontext ctx;
	CUstream stream;
	CUresult rc;
};

static void *syncer_main(void *arg)
{
	struct syncer *s = arg;

	s->rc = cuCtxSetCurrent(s->ctx);
	if (s->rc == CUDA_SUCCESS)
		s->rc = cuStreamSynchronize(s->stream);
	return NULL;
}

static int scenario_timeout(void)
{
	struct syncer s = { 0 };
	pthread_t th;
	CUdevice d;
	json_t *rep = NULL;
	char *err = NULL;
	int rc;

	CU(cuInit(0));
	CU(cuDeviceGet(&d, 0));
	CU(cuCtxCreate(&s.ctx, NULL, 0, d));
	CU(cuStreamCreate(&s.stream, 0));
	CU(cuLaunchHostFunc(s.stream, slow_host_fn, NULL));
	REQUIRE(pthread_create(&th, NULL, syncer_main, &s) == 0, "pthread_create");
	sleep_ms(200);
	rc = gs_replay_freeze(200, &rep, &err);
	CHECK(rc == -ETIMEDOUT, "freeze: %d", rc);
	CHECK(err && strstr(err, "cuStreamSynchronize"), "the message does not name the call: %s",
	      err ? err : "(none)");
	CHECK(json_array_size(json_object_get(rep, "in_flight")) == 1, "in_flight");
	CHECK(gs_replay_state() == GS_STATE_RUNNING, "state %s", gs_proc_state_name(gs_replay_state()));
	CHECK(!gs_gate_is_closed(), "the gate stayed closed");
	free(err);
	json_decref(rep);
	pthread_join(th, NULL);
	CHECK(s.rc == CUDA_SUCCESS, "cuStreamSynchronize: %d", (int)s.rc);
	return replay_failures ? -1 : 0;
}

/* ---- devspec ------------------------------------------------------------------------------- */

static int scenario_devspec(void)
{
	int cur[4] = { 0, 1, 2, 3 }, out[4];
	char *err = NULL, uuid[64];
	CUuuid u;

	CU(cuInit(0));
	CHECK(rp_devspec_parse("1", 0x1, cur, 4, out, NULL) == 0 && out[0] == 1 && out[1] == 0 &&
	      out[2] == 2 && out[3] == 3, "'1': %d %d %d %d", out[0], out[1], out[2], out[3]);
	CHECK(rp_devspec_parse("0=1,1=0", 0x3, cur, 4, out, NULL) == 0 && out[0] == 1 &&
	      out[1] == 0, "'0=1,1=0'");
	CHECK(rp_devspec_parse(NULL, 0x3, cur, 4, out, NULL) == 0 && out[0] == 0 && out[1] == 1,
	      "NULL keeps the map");
	CHECK(rp_devspec_parse("1", 0x3, cur, 4, out, &err) == -EINVAL && err &&
	      strstr(err, "0=1,1=0"), "one ordinal for two devices: %s", err ? err : "");
	free(err);
	err = NULL;
	CHECK(rp_devspec_parse("7", 0x1, cur, 4, out, &err) == -ENODEV, "GPU 7");
	free(err);
	err = NULL;
	CHECK(rp_devspec_parse("0=1", 0x3, cur, 4, out, &err) == -EINVAL, "device 1 unmapped");
	free(err);
	err = NULL;
	CHECK(rp_devspec_parse("0=1,1=1", 0x3, cur, 4, out, &err) == -EINVAL, "two on one");
	free(err);
	err = NULL;
	CHECK(rp_devspec_parse("x", 0x1, cur, 4, out, &err) == -EINVAL, "garbage");
	free(err);
	CU(gs_real.cuDeviceGetUuid_v2(&u, 1));
	snprintf(uuid, sizeof(uuid), "GPU-%02x%02x%02x%02x-%02x%02x", (unsigned char)u.bytes[0],
		 (unsigned char)u.bytes[1], (unsigned char)u.bytes[2], (unsigned char)u.bytes[3],
		 (unsigned char)u.bytes[4], (unsigned char)u.bytes[5]);
	/* The simulator's UUIDs differ only at the end. */
	err = NULL;
	CHECK(rp_devspec_parse(uuid, 0x1, cur, 4, out, &err) == -EINVAL && err &&
	      strstr(err, "matches GPUs"), "an ambiguous prefix: %s", err ? err : "");
	free(err);
	snprintf(uuid, sizeof(uuid), "GPU-");
	for (int i = 0; i < 16; i++)
		snprintf(uuid + strlen(uuid), sizeof(uuid) - strlen(uuid), "%02x%s",
			 (unsigned char)u.bytes[i], i == 3 || i == 5 || i == 7 || i == 9 ? "-" : "");
	CHECK(rp_devspec_parse(uuid, 0x1, cur, 4, out, NULL) == 0 && out[0] == 1, "%s", uuid);
	return replay_failures ? -1 : 0;
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(void);
	} scenarios[] = {
		{ "basic", scenario_basic },       { "pingpong", scenario_pingpong },
		{ "stack", scenario_stack },       { "nocode", scenario_nocode },
		{ "relthread", scenario_relthread },
		{ "fault", scenario_fault },       { "fault-child", scenario_fault_child },
		{ "image", scenario_image },       { "swap", scenario_swap },
		{ "swapback", scenario_swapback }, { "swaphost", scenario_swaphost },
		{ "swapstagefail", scenario_swapstagefail }, { "swapcross", scenario_swapcross },
		{ "swapsame", scenario_swapsame },
		{ "swapcopyfail", scenario_swapcopyfail },
		{ "blockers", scenario_blockers }, { "timeout", scenario_timeout },
		{ "devspec", scenario_devspec },
	};
	int rc = -1;

	if (argc != 2) {
		fprintf(stderr, "usage: %s SCENARIO\n", argv[0]);
		return 2;
	}
	for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++) {
		if (strcmp(argv[1], scenarios[i].name))
			continue;
		rc = scenarios[i].fn();
		if (rc == 77)
			return 77;
		if (rc || replay_failures) {
			fprintf(stderr, "%s: FAIL (%d check(s))\n", argv[1], replay_failures);
			return 1;
		}
		printf("%s: pass\n", argv[1]);
		return 0;
	}
	fprintf(stderr, "unknown scenario %s\n", argv[1]);
	return 2;
}
