/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gs-workload: the reference workload for migration tests. A small linear
 * regression trained by SGD, written against the CUDA driver API only (cuda.h,
 * -lcuda), that holds every kind of state a migration must carry over:
 *
 *   - weights, gradients, residuals in cuMemAlloc memory;
 *   - the training data in application-managed VMM memory (reserve, two
 *     physical chunks, map, set access), whose targets drift every step;
 *   - a linked list whose nodes hold device pointers to the next node, and a
 *     root pointer stored in device memory; a kernel walks it every step;
 *   - a __device__ step counter incremented by a kernel, read back through
 *     cuModuleGetGlobal;
 *   - two streams ordered by events, pinned host buffers for async copies;
 *   - a second thread allocating, filling, checking and freeing memory
 *     concurrently with the steps.
 *
 * Every step prints a line of hex float bits and checksums that depends on
 * all of that state, so two runs, or a run frozen and thawed on another GPU
 * half-way, can be compared bit for bit. Nothing printed depends on
 * addresses, timing or the device's architecture.
 *
 * For end-to-end tests: --pid-file writes the pid, "ready" is printed once
 * set-up is done, --sleep-ms leaves time between steps to freeze it.
 */
#include <cuda.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gs_kernels.h"

#define SAMPLES 512       /* rows of the training data */
#define FEATURES 16       /* weights */
#define LIST_NODES 8
#define LOSS_BLOCK 128    /* threads of loss_reduce (a power of two) */
#define LEARNING_RATE 0.05f
#define TARGET_DRIFT (-0.0078125f) /* y += drift * residual, each step */
#define CHURN_MIN_ITERATIONS 16
#define CHURN_MAX_WORDS (64 * 1024)

static void check(CUresult rc, const char *what, int line)
{
	const char *name = NULL;

	if (rc == CUDA_SUCCESS)
		return;
	if (cuGetErrorName(rc, &name) != CUDA_SUCCESS || !name)
		name = "unknown error";
	fprintf(stderr, "gs-workload:%d: %s failed: %s (%d)\n", line, what, name, (int)rc);
	exit(1);
}
#define CHECK(call) check((call), #call, __LINE__)

/* What each step copies back, in one pinned allocation. */
enum { SCALAR_LOSS, SCALAR_LIST_SUM, SCALAR_LR_SCALE, SCALARS };
struct readback {
	float w[FEATURES];
	float scalars[SCALARS];
	unsigned long long tick;
	float y[SAMPLES];
};

struct workload {
	CUdevice dev;
	CUcontext ctx;
	CUmodule module;
	CUfunction f_residual, f_grad, f_loss, f_sgd, f_axpy, f_list, f_tick;
	CUstream compute, aux;
	CUevent residual_done, grad_done;

	CUdeviceptr w, grad, r, scalars, root;
	CUdeviceptr nodes[LIST_NODES];
	CUdeviceptr step_global;

	/* application-managed VMM: x in the first chunk, y in the second */
	CUdeviceptr vmm_base;
	size_t vmm_chunk;
	CUmemGenericAllocationHandle vmm_handles[2];
	CUdeviceptr x, y;

	struct readback *rb; /* pinned */
	float *upload;       /* pinned, x then y */

	pthread_t churn;
	atomic_bool churn_stop;
};

struct options {
	unsigned steps;
	unsigned sleep_ms;
	int device;
	const char *module;
	const char *pid_file;
};

static uint32_t xorshift32(uint32_t *state)
{
	uint32_t x = *state;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return *state = x;
}

/* Uniform in [-1, 1), exactly representable: 24 random bits over 2^23. */
static float uniform(uint32_t *state)
{
	return (float)(xorshift32(state) >> 8) * (1.0f / 8388608.0f) - 1.0f;
}

static uint64_t fnv1a(uint64_t h, const void *data, size_t n)
{
	const unsigned char *p = data;

	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	return h;
}
#define FNV_INIT 0xcbf29ce484222325ull

static uint32_t float_bits(float f)
{
	uint32_t u;

	memcpy(&u, &f, sizeof(u));
	return u;
}

static void launch(CUfunction f, unsigned grid, unsigned block, unsigned shared, CUstream s,
		   void **args, int line)
{
	check(cuLaunchKernel(f, grid, 1, 1, block, 1, 1, shared, s, args, NULL), "cuLaunchKernel",
	      line);
}
#define LAUNCH(f, grid, block, shared, s, ...) \
	launch((f), (grid), (block), (shared), (s), (void *[]){ __VA_ARGS__ }, __LINE__)

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* ---- the second thread ------------------------------------------------------ */

/* Allocates, fills, checks and frees buffers of varying sizes until told to
 * stop, on the same context from another thread, so migration tests see
 * allocations come and go while the steps run. It does a minimum number of
 * rounds so every run exercises it; nothing it does shows in the output. */
static void *churn_main(void *arg)
{
	struct workload *wl = arg;
	uint32_t seed = 0x2545f491u;
	unsigned *host = malloc(CHURN_MAX_WORDS * sizeof(*host));

	if (!host) {
		fprintf(stderr, "gs-workload: out of host memory\n");
		exit(1);
	}
	CHECK(cuCtxSetCurrent(wl->ctx));
	for (unsigned round = 0;; round++) {
		if (round >= CHURN_MIN_ITERATIONS && atomic_load(&wl->churn_stop))
			break;
		size_t words = 1 + xorshift32(&seed) % CHURN_MAX_WORDS;
		unsigned pattern = xorshift32(&seed);
		CUdeviceptr p;

		CHECK(cuMemAlloc(&p, words * sizeof(*host)));
		CHECK(cuMemsetD32(p, pattern, words));
		CHECK(cuMemcpyDtoH(host, p, words * sizeof(*host)));
		for (size_t i = 0; i < words; i++) {
			if (host[i] != pattern) {
				fprintf(stderr,
					"gs-workload: churn round %u: word %zu is %08x, expected %08x\n",
					round, i, host[i], pattern);
				exit(1);
			}
		}
		CHECK(cuMemFree(p));
		/* Leave the CPU to the steps on small machines. */
		sleep_ms(1);
	}
	free(host);
	return NULL;
}

/* ---- set-up --------------------------------------------------------------- */

static void setup_vmm(struct workload *wl, size_t bytes_x, size_t bytes_y)
{
	CUmemAllocationProp prop = {
		.type = CU_MEM_ALLOCATION_TYPE_PINNED,
		.location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = wl->dev },
	};
	CUmemAccessDesc access = {
		.location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = wl->dev },
		.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE,
	};
	size_t gran, need = bytes_x > bytes_y ? bytes_x : bytes_y;

	CHECK(cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
	wl->vmm_chunk = (need + gran - 1) / gran * gran;
	CHECK(cuMemAddressReserve(&wl->vmm_base, 2 * wl->vmm_chunk, 0, 0, 0));
	for (int i = 0; i < 2; i++) {
		CHECK(cuMemCreate(&wl->vmm_handles[i], wl->vmm_chunk, &prop, 0));
		CHECK(cuMemMap(wl->vmm_base + i * wl->vmm_chunk, wl->vmm_chunk, 0,
			       wl->vmm_handles[i], 0));
	}
	CHECK(cuMemSetAccess(wl->vmm_base, 2 * wl->vmm_chunk, &access, 1));
	wl->x = wl->vmm_base;
	wl->y = wl->vmm_base + wl->vmm_chunk;
}

/* Nodes in separate allocations, linked in a shuffled order, so walking the
 * list jumps between allocations through pointers stored on the device. */
static void setup_list(struct workload *wl)
{
	CUdeviceptr order[LIST_NODES];

	for (int k = 0; k < LIST_NODES; k++)
		CHECK(cuMemAlloc(&wl->nodes[k], sizeof(struct gs_list_node)));
	for (int k = 0; k < LIST_NODES; k++)
		order[k] = wl->nodes[(k * 3) % LIST_NODES]; /* 3 is coprime with 8 */
	for (int k = 0; k < LIST_NODES; k++) {
		struct gs_list_node node = {
			.value = 1.0f + 0.25f * (float)k,
			.index = (unsigned)k,
			.next = k + 1 < LIST_NODES ? order[k + 1] : 0,
		};
		CHECK(cuMemcpyHtoD(order[k], &node, sizeof(node)));
	}
	CHECK(cuMemAlloc(&wl->root, sizeof(unsigned long long)));
	CHECK(cuMemcpyHtoD(wl->root, &order[0], sizeof(order[0])));
}

static void setup_data(struct workload *wl)
{
	float *x = wl->upload, *y = wl->upload + SAMPLES * FEATURES;
	float w_true[FEATURES];
	uint32_t seed = 0x9e3779b9u;

	for (int j = 0; j < FEATURES; j++)
		w_true[j] = 0.5f * (float)(j % 5 - 2);
	for (int i = 0; i < SAMPLES; i++) {
		float acc = 0.0f;
		for (int j = 0; j < FEATURES; j++) {
			x[i * FEATURES + j] = uniform(&seed);
			acc = acc + x[i * FEATURES + j] * w_true[j];
		}
		y[i] = acc + 0.01f * uniform(&seed);
	}
	CHECK(cuMemcpyHtoDAsync(wl->x, x, SAMPLES * FEATURES * sizeof(float), wl->compute));
	CHECK(cuMemcpyHtoDAsync(wl->y, y, SAMPLES * sizeof(float), wl->compute));
	CHECK(cuMemsetD32Async(wl->w, 0, FEATURES, wl->compute));
	CHECK(cuStreamSynchronize(wl->compute));
}

static void setup(struct workload *wl, const struct options *opt)
{
	size_t global_size;
	int least, greatest;

	CHECK(cuInit(0));
	CHECK(cuDeviceGet(&wl->dev, opt->device));
	/* The primary context, as the runtime API (and so PyTorch) uses. */
	CHECK(cuDevicePrimaryCtxRetain(&wl->ctx, wl->dev));
	CHECK(cuCtxSetCurrent(wl->ctx));

	CHECK(cuModuleLoad(&wl->module, opt->module));
	CHECK(cuModuleGetFunction(&wl->f_residual, wl->module, "linear_residual"));
	CHECK(cuModuleGetFunction(&wl->f_grad, wl->module, "linear_grad"));
	CHECK(cuModuleGetFunction(&wl->f_loss, wl->module, "loss_reduce"));
	CHECK(cuModuleGetFunction(&wl->f_sgd, wl->module, "sgd_update"));
	CHECK(cuModuleGetFunction(&wl->f_axpy, wl->module, "axpy"));
	CHECK(cuModuleGetFunction(&wl->f_list, wl->module, "list_walk"));
	CHECK(cuModuleGetFunction(&wl->f_tick, wl->module, "step_tick"));
	CHECK(cuModuleGetGlobal(&wl->step_global, &global_size, wl->module, "gs_step"));
	if (global_size != sizeof(unsigned long long)) {
		fprintf(stderr, "gs-workload: gs_step has %zu bytes, expected %zu\n", global_size,
			sizeof(unsigned long long));
		exit(1);
	}

	/* One non-blocking stream at the highest priority and one ordinary
	 * (blocking) stream: both kinds of stream state to re-create. */
	CHECK(cuCtxGetStreamPriorityRange(&least, &greatest));
	CHECK(cuStreamCreateWithPriority(&wl->compute, CU_STREAM_NON_BLOCKING, greatest));
	CHECK(cuStreamCreate(&wl->aux, CU_STREAM_DEFAULT));
	CHECK(cuEventCreate(&wl->residual_done, CU_EVENT_DISABLE_TIMING));
	CHECK(cuEventCreate(&wl->grad_done, CU_EVENT_DISABLE_TIMING));

	CHECK(cuMemHostAlloc((void **)&wl->rb, sizeof(*wl->rb), 0));
	memset(wl->rb, 0, sizeof(*wl->rb)); /* printed as is when --steps 0 */
	CHECK(cuMemHostAlloc((void **)&wl->upload, (SAMPLES * FEATURES + SAMPLES) * sizeof(float),
			     CU_MEMHOSTALLOC_PORTABLE));

	CHECK(cuMemAlloc(&wl->w, FEATURES * sizeof(float)));
	CHECK(cuMemAlloc(&wl->grad, FEATURES * sizeof(float)));
	CHECK(cuMemAlloc(&wl->r, SAMPLES * sizeof(float)));
	CHECK(cuMemAlloc(&wl->scalars, SCALARS * sizeof(float)));
	setup_vmm(wl, SAMPLES * FEATURES * sizeof(float), SAMPLES * sizeof(float));
	setup_list(wl);
	setup_data(wl);
	/* The list went through the legacy stream, which the non-blocking
	 * compute stream is not ordered after. */
	CHECK(cuCtxSynchronize());

	atomic_init(&wl->churn_stop, false);
	if (pthread_create(&wl->churn, NULL, churn_main, wl) != 0) {
		fprintf(stderr, "gs-workload: cannot start the second thread\n");
		exit(1);
	}
}

/* ---- one step --------------------------------------------------------------- */

/*
 *  compute: residual ─► record A ───► loss ─► wait B ─► sgd ─► drift y ─► copies
 *  aux:     list walk ─► tick ─► wait A ─► grad ─► record B
 */
static void step(struct workload *wl, unsigned n)
{
	int m = SAMPLES, d = FEATURES, nodes = LIST_NODES;
	float lr = LEARNING_RATE, drift = TARGET_DRIFT;
	CUdeviceptr loss = wl->scalars + SCALAR_LOSS * sizeof(float);
	CUdeviceptr list_sum = wl->scalars + SCALAR_LIST_SUM * sizeof(float);
	CUdeviceptr lr_scale = wl->scalars + SCALAR_LR_SCALE * sizeof(float);
	struct readback *rb = wl->rb;
	uint64_t hw, hy;

	LAUNCH(wl->f_residual, 4, 64, 0, wl->compute, &wl->x, &wl->y, &wl->w, &wl->r, &m, &d);
	CHECK(cuEventRecord(wl->residual_done, wl->compute));

	LAUNCH(wl->f_list, 1, 1, 0, wl->aux, &wl->root, &list_sum);
	LAUNCH(wl->f_tick, 1, 1, 0, wl->aux, &list_sum, &lr_scale, &nodes);
	CHECK(cuStreamWaitEvent(wl->aux, wl->residual_done, 0));
	LAUNCH(wl->f_grad, 1, 32, 0, wl->aux, &wl->x, &wl->r, &wl->grad, &m, &d);
	CHECK(cuEventRecord(wl->grad_done, wl->aux));

	LAUNCH(wl->f_loss, 1, LOSS_BLOCK, LOSS_BLOCK * sizeof(float), wl->compute, &wl->r, &m,
	       &loss);
	CHECK(cuStreamWaitEvent(wl->compute, wl->grad_done, 0));
	LAUNCH(wl->f_sgd, 1, 32, 0, wl->compute, &wl->w, &wl->grad, &lr, &lr_scale, &d);
	LAUNCH(wl->f_axpy, 4, 64, 0, wl->compute, &drift, &wl->r, &wl->y, &m);

	CHECK(cuMemcpyDtoHAsync(rb->w, wl->w, sizeof(rb->w), wl->compute));
	CHECK(cuMemcpyDtoHAsync(rb->scalars, wl->scalars, sizeof(rb->scalars), wl->compute));
	CHECK(cuMemcpyDtoHAsync(&rb->tick, wl->step_global, sizeof(rb->tick), wl->compute));
	CHECK(cuMemcpyDtoHAsync(rb->y, wl->y, sizeof(rb->y), wl->compute));
	CHECK(cuStreamSynchronize(wl->compute));

	/* The device counter must have counted every step exactly once. */
	if (rb->tick != n) {
		fprintf(stderr, "gs-workload: step %u: device step counter is %llu\n", n,
			rb->tick);
		exit(1);
	}
	hw = fnv1a(FNV_INIT, rb->w, sizeof(rb->w));
	hy = fnv1a(FNV_INIT, rb->y, sizeof(rb->y));
	printf("step %u loss=%08x list=%08x lr_scale=%08x tick=%llu w=%016llx y=%016llx\n", n,
	       float_bits(rb->scalars[SCALAR_LOSS]), float_bits(rb->scalars[SCALAR_LIST_SUM]),
	       float_bits(rb->scalars[SCALAR_LR_SCALE]), rb->tick, (unsigned long long)hw,
	       (unsigned long long)hy);
	fflush(stdout);
}

/* ---- the end ---------------------------------------------------------------- */

static void finish(struct workload *wl)
{
	struct readback *rb = wl->rb;
	uint64_t h = FNV_INIT;

	atomic_store(&wl->churn_stop, true);
	if (pthread_join(wl->churn, NULL) != 0) {
		fprintf(stderr, "gs-workload: cannot join the second thread\n");
		exit(1);
	}

	printf("final w");
	for (int j = 0; j < FEATURES; j++)
		printf(" %08x", float_bits(rb->w[j]));
	printf("\n");
	/* Field by field: the struct's padding is no state. */
	h = fnv1a(h, rb->w, sizeof(rb->w));
	h = fnv1a(h, rb->scalars, sizeof(rb->scalars));
	h = fnv1a(h, &rb->tick, sizeof(rb->tick));
	h = fnv1a(h, rb->y, sizeof(rb->y));
	printf("final checksum %016llx\n", (unsigned long long)h);

	/* Tear everything down explicitly: these calls are part of what a
	 * migrated process must still be able to do. */
	CHECK(cuEventDestroy(wl->residual_done));
	CHECK(cuEventDestroy(wl->grad_done));
	CHECK(cuStreamDestroy(wl->compute));
	CHECK(cuStreamDestroy(wl->aux));
	for (int k = 0; k < LIST_NODES; k++)
		CHECK(cuMemFree(wl->nodes[k]));
	CHECK(cuMemFree(wl->root));
	CHECK(cuMemFree(wl->w));
	CHECK(cuMemFree(wl->grad));
	CHECK(cuMemFree(wl->r));
	CHECK(cuMemFree(wl->scalars));
	CHECK(cuMemUnmap(wl->vmm_base, 2 * wl->vmm_chunk));
	for (int i = 0; i < 2; i++)
		CHECK(cuMemRelease(wl->vmm_handles[i]));
	CHECK(cuMemAddressFree(wl->vmm_base, 2 * wl->vmm_chunk));
	CHECK(cuMemFreeHost(wl->rb));
	CHECK(cuMemFreeHost(wl->upload));
	CHECK(cuModuleUnload(wl->module));
	CHECK(cuDevicePrimaryCtxRelease(wl->dev));
	printf("done\n");
}

/* ---- main ------------------------------------------------------------------- */

static void write_pid_file(const char *path)
{
	char tmp[4096];
	FILE *f;

	/* Write then rename, so a reader never sees a partial pid. */
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp) ||
	    !(f = fopen(tmp, "w")) || fprintf(f, "%ld\n", (long)getpid()) < 0 ||
	    fclose(f) != 0 || rename(tmp, path) != 0) {
		perror("gs-workload: cannot write the pid file");
		exit(1);
	}
}

static void usage(FILE *out)
{
	fprintf(out,
		"usage: gs-workload [options]\n"
		"  -m, --module PATH   kernel image (default: $GS_WORKLOAD_MODULE)\n"
		"  -n, --steps N       training steps (default 20)\n"
		"  -s, --sleep-ms MS   sleep after each step (default 0)\n"
		"  -d, --device N      device ordinal (default: $GS_WORKLOAD_DEVICE, else 0)\n"
		"  -p, --pid-file PATH write the pid there once set up\n"
		"Prints \"ready\" once set up, one line per step, a final checksum, \"done\".\n");
}

static unsigned parse_uint(const char *s, const char *what)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v > 0x7fffffffUL) {
		fprintf(stderr, "gs-workload: bad %s: %s\n", what, s);
		exit(2);
	}
	return (unsigned)v;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "module", required_argument, NULL, 'm' },
		{ "steps", required_argument, NULL, 'n' },
		{ "sleep-ms", required_argument, NULL, 's' },
		{ "device", required_argument, NULL, 'd' },
		{ "pid-file", required_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct options opt = { .steps = 20, .module = getenv("GS_WORKLOAD_MODULE") };
	const char *env_device = getenv("GS_WORKLOAD_DEVICE");
	static struct workload wl;
	int c;

	/* Options may also come from the environment, so one command line can
	 * be run in several configurations by a test. */
	if (env_device && *env_device)
		opt.device = (int)parse_uint(env_device, "GS_WORKLOAD_DEVICE");

	while ((c = getopt_long(argc, argv, "m:n:s:d:p:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'm': opt.module = optarg; break;
		case 'n': opt.steps = parse_uint(optarg, "step count"); break;
		case 's': opt.sleep_ms = parse_uint(optarg, "sleep"); break;
		case 'd': opt.device = (int)parse_uint(optarg, "device"); break;
		case 'p': opt.pid_file = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc || !opt.module || !*opt.module) {
		usage(stderr);
		return 2;
	}

	setup(&wl, &opt);
	if (opt.pid_file)
		write_pid_file(opt.pid_file);
	printf("ready\n");
	fflush(stdout);
	for (unsigned n = 1; n <= opt.steps; n++) {
		step(&wl, n);
		if (opt.sleep_ms)
			sleep_ms(opt.sleep_ms);
	}
	finish(&wl);
	return 0;
}
