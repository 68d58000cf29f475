/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench-calls: what the shim adds to a driver call, measured inside one
 * process. Written against cuda.h and linked with -lcuda like an
 * application; run with the shim preloaded (or without it, as a control).
 *
 * Each call is timed in two arms that run the same machine code, a loop
 * calling through a function pointer, and differ only in the target:
 *   baseline  the driver's own function, found with dlsym() in the driver
 *             named by --driver (the library the shim forwards to);
 *   shim      the function this program is linked to: the shim's wrapper when
 *             the shim is preloaded, otherwise the driver again.
 * A call through a pointer is also how cudart and the libraries above it
 * reach the driver (cuGetProcAddress), so this is the form that matters.
 * The arms alternate round by round (baseline first in even rounds, second
 * in odd ones), so drift in clock speed or load falls on both alike.
 *
 * Without the shim, both arms call the same function and the "added" column
 * shows what the method cannot resolve: a control row, labelled "no shim".
 *
 * --module selects the simulated driver: real objects (a context, the noop
 * kernel of the test fatbin, a stream, device memory, pinned host memory)
 * and a stream synchronisation, untimed, after every batch, so that each
 * batch starts with an empty queue. Without it the driver is expected to be
 * the stand-in (bench/standin), which dereferences nothing, and the
 * handles are placeholders.
 */
#include <cuda.h>
#include <cudaTypedefs.h>
#include <dlfcn.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define COPY_BYTES 256

struct arm {
	PFN_cuLaunchKernel_v4000 launch;
	PFN_cuMemcpyHtoDAsync_v3020 copy;
};

struct work {
	bool sim;
	CUdevice dev;
	CUcontext ctx;
	CUmodule module;
	CUfunction func;
	CUstream stream;
	CUdeviceptr dst;
	void *src;
};

struct options {
	const char *driver;
	const char *module;
	const char *label;
	const char *only; /* "baseline" or "shim": one arm, nothing printed (callgrind) */
	long rounds;
	long calls;
	long warmup;
	bool rows_only;
};

#define CHECK(call)                                                             \
	do {                                                                    \
		CUresult check_rc_ = (call);                                    \
		if (check_rc_ != CUDA_SUCCESS) {                                \
			fprintf(stderr, "bench-calls: %s failed: %d\n", #call, \
				(int)check_rc_);                                \
			exit(1);                                                \
		}                                                               \
	} while (0)

/*
 * The timed loops. noinline: both arms must run this very code, and
 * callgrind attributes instructions to these functions by name. The result
 * is checked on every call, as an application would.
 */
static __attribute__((noinline)) CUresult launch_batch(PFN_cuLaunchKernel_v4000 launch,
						       const struct work *w, long n)
{
	for (long i = 0; i < n; i++) {
		CUresult rc = launch(w->func, 1, 1, 1, 1, 1, 1, 0, w->stream, NULL, NULL);

		if (__builtin_expect(rc != CUDA_SUCCESS, 0))
			return rc;
	}
	return CUDA_SUCCESS;
}

static __attribute__((noinline)) CUresult copy_batch(PFN_cuMemcpyHtoDAsync_v3020 copy,
						     const struct work *w, long n)
{
	for (long i = 0; i < n; i++) {
		CUresult rc = copy(w->dst, w->src, COPY_BYTES, w->stream);

		if (__builtin_expect(rc != CUDA_SUCCESS, 0))
			return rc;
	}
	return CUDA_SUCCESS;
}

enum call_kind { CALL_LAUNCH, CALL_COPY };

static const char *const call_names[] = {
	[CALL_LAUNCH] = "cuLaunchKernel",
	[CALL_COPY] = "cuMemcpyHtoDAsync",
};

/* ns per call of one batch. */
static double time_batch(enum call_kind kind, const struct arm *arm, const struct work *w, long n)
{
	int64_t t0, t1;
	CUresult rc;

	t0 = bench_now_ns();
	if (kind == CALL_LAUNCH)
		rc = launch_batch(arm->launch, w, n);
	else
		rc = copy_batch(arm->copy, w, n);
	t1 = bench_now_ns();
	if (rc != CUDA_SUCCESS) {
		fprintf(stderr, "bench-calls: %s failed: %d\n", call_names[kind], (int)rc);
		exit(1);
	}
	/* Untimed: the simulator's queue would otherwise grow without bound. */
	if (w->sim)
		CHECK(cuStreamSynchronize(w->stream));
	return (double)(t1 - t0) / (double)n;
}

static void setup_sim(struct work *w, const char *module)
{
	w->sim = true;
	CHECK(cuInit(0));
	CHECK(cuDeviceGet(&w->dev, 0));
	CHECK(cuDevicePrimaryCtxRetain(&w->ctx, w->dev));
	CHECK(cuCtxSetCurrent(w->ctx));
	CHECK(cuModuleLoad(&w->module, module));
	CHECK(cuModuleGetFunction(&w->func, w->module, "noop"));
	CHECK(cuStreamCreate(&w->stream, CU_STREAM_NON_BLOCKING));
	CHECK(cuMemAlloc(&w->dst, COPY_BYTES));
	CHECK(cuMemAllocHost(&w->src, COPY_BYTES));
	memset(w->src, 0x5a, COPY_BYTES);
}

static void teardown_sim(struct work *w)
{
	CHECK(cuStreamSynchronize(w->stream));
	CHECK(cuMemFreeHost(w->src));
	CHECK(cuMemFree(w->dst));
	CHECK(cuStreamDestroy(w->stream));
	CHECK(cuModuleUnload(w->module));
	CHECK(cuDevicePrimaryCtxRelease(w->dev));
}

/* The stand-in never looks at its arguments: placeholders, distinct from
 * NULL so that nothing on the way can take a shortcut for them. */
static unsigned char standin_src[COPY_BYTES];

static void setup_standin(struct work *w)
{
	CHECK(cuInit(0));
	w->func = (CUfunction)(uintptr_t)0x1000;
	w->stream = (CUstream)(uintptr_t)0x2000;
	w->dst = (CUdeviceptr)0x7f0000000000ull;
	w->src = standin_src;
}

/*
 * POSIX guarantees that dlsym's void * and function pointers convert to
 * each other; ISO C does not, and -Wpedantic says so for a cast. Copying
 * the representation says the same thing without the warning.
 */
_Static_assert(sizeof(void *) == sizeof(PFN_cuLaunchKernel_v4000) &&
	       sizeof(void *) == sizeof(PFN_cuMemcpyHtoDAsync_v3020),
	       "function and object pointers differ in size");

/* The file a function comes from, for messages. */
static const char *object_of(PFN_cuLaunchKernel_v4000 fn)
{
	Dl_info info;
	void *addr;

	memcpy(&addr, &fn, sizeof(addr));
	if (dladdr(addr, &info) && info.dli_fname)
		return info.dli_fname;
	return "?";
}

/*
 * The two arms. The driver is opened by its path: if it is already loaded
 * (by the shim, or as this program's libcuda.so.1) dlopen returns that
 * same copy, so the baseline runs exactly the code the shim forwards to.
 */
static void resolve_arms(const char *driver, struct arm *baseline, struct arm *linked, bool *shim)
{
	void *h = dlopen(driver, RTLD_NOW | RTLD_LOCAL);
	void *launch, *copy;

	if (!h) {
		fprintf(stderr, "bench-calls: cannot load %s: %s\n", driver, dlerror());
		exit(1);
	}
	launch = dlsym(h, "cuLaunchKernel");
	copy = dlsym(h, "cuMemcpyHtoDAsync_v2");
	if (!launch || !copy) {
		fprintf(stderr, "bench-calls: %s lacks cuLaunchKernel or cuMemcpyHtoDAsync_v2\n",
			driver);
		exit(1);
	}
	memcpy(&baseline->launch, &launch, sizeof(launch));
	memcpy(&baseline->copy, &copy, sizeof(copy));
	linked->launch = cuLaunchKernel;
	linked->copy = cuMemcpyHtoDAsync;

	/* The shim exports its introspection entry point; the driver does not. */
	*shim = dlsym(RTLD_DEFAULT, "gs_introspect_version") != NULL;
	if (*shim && linked->launch == baseline->launch) {
		fprintf(stderr, "bench-calls: the shim is loaded but cuLaunchKernel resolves to "
			"the driver (%s)\n", object_of(baseline->launch));
		exit(1);
	}
	if (!*shim && linked->launch != baseline->launch) {
		fprintf(stderr, "bench-calls: this program's libcuda.so.1 is %s, not %s: "
			"set LD_LIBRARY_PATH (or GPUSWAP_REAL_LIBCUDA) to the same driver\n",
			object_of(linked->launch), driver);
		exit(1);
	}
}

static void measure(enum call_kind kind, const struct options *opt, const struct arm *baseline,
		    const struct arm *linked, const struct work *w, bool shim)
{
	double *base = calloc((size_t)opt->rounds, sizeof(*base));
	double *with = calloc((size_t)opt->rounds, sizeof(*with));
	char what[128];

	if (!base || !with) {
		fprintf(stderr, "bench-calls: out of memory\n");
		exit(1);
	}
	for (long r = -opt->warmup; r < opt->rounds; r++) {
		double b, l;

		if (opt->only) {
			if (strcmp(opt->only, "baseline") == 0)
				time_batch(kind, baseline, w, opt->calls);
			else
				time_batch(kind, linked, w, opt->calls);
			continue;
		}
		if (r & 1) {
			l = time_batch(kind, linked, w, opt->calls);
			b = time_batch(kind, baseline, w, opt->calls);
		} else {
			b = time_batch(kind, baseline, w, opt->calls);
			l = time_batch(kind, linked, w, opt->calls);
		}
		if (r >= 0) {
			base[r] = b;
			with[r] = l;
		}
	}
	if (!opt->only) {
		snprintf(what, sizeof(what), "%s, %s%s", call_names[kind], opt->label,
			 shim ? "" : ", no shim");
		bench_print_row(what, base, with, (size_t)opt->rounds);
	}
	free(base);
	free(with);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: bench-calls --driver PATH [--module FATBIN] [options]\n"
		"Times cuLaunchKernel and cuMemcpyHtoDAsync called directly in the driver\n"
		"at PATH and through the function this program is linked to (the shim's\n"
		"wrapper when libgpuswap.so is preloaded), in alternating rounds.\n"
		"  --driver PATH    the driver the shim forwards to (libcuda.so.1)\n"
		"  --module FATBIN  the driver is the simulator: load FATBIN, launch 'noop'\n"
		"  --label TEXT     names the driver in the rows\n"
		"  --rounds N       rounds per arm (default 31)\n"
		"  --calls N        calls per round (default 1000000; 20000 with --module)\n"
		"  --warmup N       untimed rounds first (default 3)\n"
		"  --only ARM       run one arm (baseline|shim) and print nothing (callgrind)\n"
		"  --rows-only      no column headings\n");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "driver", required_argument, NULL, 'd' },
		{ "module", required_argument, NULL, 'm' },
		{ "label", required_argument, NULL, 'l' },
		{ "rounds", required_argument, NULL, 'r' },
		{ "calls", required_argument, NULL, 'n' },
		{ "warmup", required_argument, NULL, 'w' },
		{ "only", required_argument, NULL, 'o' },
		{ "rows-only", no_argument, NULL, 'R' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct options opt = { .rounds = 31, .warmup = 3, .calls = 0 };
	struct arm baseline, linked;
	struct work w = { 0 };
	bool shim;
	int c;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'd': opt.driver = optarg; break;
		case 'm': opt.module = optarg; break;
		case 'l': opt.label = optarg; break;
		case 'r': if (!bench_parse_count("--rounds", optarg, &opt.rounds)) return 2; break;
		case 'n': if (!bench_parse_count("--calls", optarg, &opt.calls)) return 2; break;
		case 'w':
			if (strcmp(optarg, "0") == 0)
				opt.warmup = 0;
			else if (!bench_parse_count("--warmup", optarg, &opt.warmup))
				return 2;
			break;
		case 'o':
			if (strcmp(optarg, "baseline") != 0 && strcmp(optarg, "shim") != 0) {
				fprintf(stderr, "--only: expected baseline or shim\n");
				return 2;
			}
			opt.only = optarg;
			break;
		case 'R': opt.rows_only = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!opt.driver || optind != argc) {
		usage(stderr);
		return 2;
	}
	if (!opt.label)
		opt.label = opt.module ? "simulated driver" : "stand-in driver";
	if (opt.calls == 0)
		opt.calls = opt.module ? 20000 : 1000000;

	/* Set up first: the shim loads the driver on its first call, and the
	 * baseline must then find that same copy. */
	if (opt.module)
		setup_sim(&w, opt.module);
	else
		setup_standin(&w);
	resolve_arms(opt.driver, &baseline, &linked, &shim);

	if (!opt.rows_only && !opt.only)
		bench_print_header();
	measure(CALL_LAUNCH, &opt, &baseline, &linked, &w, shim);
	measure(CALL_COPY, &opt, &baseline, &linked, &w, shim);

	if (w.sim)
		teardown_sim(&w);
	return 0;
}
