/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench-freeze: how long closing the gate takes (gs_gate_close(): close,
 * then wait until no driver call is in flight) while threads keep calling
 * the driver through the shim, against the same close with nobody calling.
 * The target is 5 ms (DESIGN.md §6). What a freeze does after the gate is
 * closed (waiting for the GPU's queues) is not included: it depends on the
 * application's work, not on the shim.
 *
 * The program is linked with the shim's internals, so its driver calls are
 * the shim's wrappers, gated exactly as in a preloaded shim, and the gate is
 * closed by a direct call instead of a round trip through the control
 * socket (whose latency would swamp the figure). The driver under the shim
 * is the one GPUSWAP_REAL_LIBCUDA names: the simulator, in run.sh.
 *
 * The callers alternate cuCtxGetDevice and cuStreamQuery, two cheap gated
 * (`pass`) calls, so a close always finds some of them in flight or about
 * to enter. The baseline and loaded arms alternate in blocks, the callers
 * parked outside any call during baseline blocks, so that whatever the
 * machine does to one arm it does to the other.
 */
#include <cuda.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "gate.h"

#define TARGET_MS 5.0
/* Far above any drain seen: a close that times out is counted, not timed. */
#define CLOSE_TIMEOUT_MS 2000u
#define BLOCK 20

struct options {
	long freezes;
	long threads;
	long open_us;
	bool rows_only;
};

static CUcontext ctx;
static CUstream stream;
/* Callers park (outside any call) while this is false. */
static atomic_bool calling;
static atomic_bool stop;
static atomic_long parked;
static atomic_long calls;
static atomic_int call_errors;

static void sleep_us(long us)
{
	struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static void *caller_main(void *arg)
{
	long n = 0;
	bool is_parked = false;
	CUdevice dev;

	(void)arg;
	if (cuCtxSetCurrent(ctx) != CUDA_SUCCESS) {
		atomic_fetch_add(&call_errors, 1);
		return NULL;
	}
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		if (!atomic_load_explicit(&calling, memory_order_acquire)) {
			if (!is_parked) {
				is_parked = true;
				atomic_fetch_add(&parked, 1);
			}
			/* Polling, not a condition variable: waking 8 threads at
			 * the start of a loaded block must not itself be timed. */
			sleep_us(200);
			continue;
		}
		if (is_parked) {
			is_parked = false;
			atomic_fetch_sub(&parked, 1);
		}
		/* cuStreamQuery may answer CUDA_ERROR_NOT_READY; only a real
		 * failure means the figures are not what they claim. */
		if (cuCtxGetDevice(&dev) != CUDA_SUCCESS)
			atomic_fetch_add(&call_errors, 1);
		CUresult r = cuStreamQuery(stream);
		if (r != CUDA_SUCCESS && r != CUDA_ERROR_NOT_READY)
			atomic_fetch_add(&call_errors, 1);
		n += 2;
	}
	atomic_fetch_add(&calls, n);
	return NULL;
}

/* One freeze: close and drain, timed; reopen; let the callers run again
 * for open_us so the next close meets them in their steady state.
 * Returns the latency in ms, or -1 on a timeout. */
static double one_freeze(const struct options *o, long *timeouts)
{
	struct gs_gate_report rep;
	int64_t t0 = bench_now_ns();
	int rc = gs_gate_close(CLOSE_TIMEOUT_MS, &rep);
	int64_t t1 = bench_now_ns();

	if (rc == -ETIMEDOUT) {
		++*timeouts;
		sleep_us(o->open_us);
		return -1;
	}
	if (rc != 0) {
		fprintf(stderr, "bench-freeze: gs_gate_close: %s\n", strerror(-rc));
		exit(1);
	}
	gs_gate_open();
	sleep_us(o->open_us);
	return (double)(t1 - t0) / 1e6;
}

static void print_row(const char *what, const double *ms, size_t n, long timeouts)
{
	struct bench_stats s;

	bench_stats_of(ms, n, &s);
	/* p99 by rank, as bench_stats has no tail quantile: the smallest
	 * sample at or above 99% of the others. */
	double *sorted = malloc(n * sizeof(*sorted));
	if (!sorted) {
		perror("bench-freeze");
		exit(1);
	}
	memcpy(sorted, ms, n * sizeof(*sorted));
	for (size_t i = 1; i < n; i++)
		for (size_t j = i; j > 0 && sorted[j - 1] > sorted[j]; j--) {
			double x = sorted[j];
			sorted[j] = sorted[j - 1];
			sorted[j - 1] = x;
		}
	size_t k = (size_t)(0.99 * (double)(n - 1) + 0.5);
	printf("%-40s %9.3f %9.3f %9.3f %9.3f %8ld\n", what, s.median, sorted[k], s.max, s.min,
	       timeouts);
	free(sorted);
}

static void usage(FILE *f)
{
	fputs("usage: bench-freeze [--freezes N] [--threads T] [--open-us U] [--rows-only]\n"
	      "  Times gs_gate_close() (close + drain) N times (default 200) while T threads\n"
	      "  (default 8) call cuCtxGetDevice/cuStreamQuery through the shim, against N\n"
	      "  closes with the threads parked; the gate stays open U us (default 2000)\n"
	      "  between closes. The driver is GPUSWAP_REAL_LIBCUDA.\n",
	      f);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"freezes", required_argument, NULL, 'n'},
		{"threads", required_argument, NULL, 't'},
		{"open-us", required_argument, NULL, 'u'},
		{"rows-only", no_argument, NULL, 'r'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct options o = {.freezes = 200, .threads = 8, .open_us = 2000};
	CUdevice dev;
	int c;

	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'n':
			if (!bench_parse_count("--freezes", optarg, &o.freezes))
				return 2;
			break;
		case 't':
			if (!bench_parse_count("--threads", optarg, &o.threads))
				return 2;
			break;
		case 'u':
			if (!bench_parse_count("--open-us", optarg, &o.open_us))
				return 2;
			break;
		case 'r':
			o.rows_only = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}

	/* These go through the shim's wrappers, which initialise the shim
	 * (and its gate) and load the driver. */
	if (cuInit(0) != CUDA_SUCCESS || cuDeviceGet(&dev, 0) != CUDA_SUCCESS ||
	    cuDevicePrimaryCtxRetain(&ctx, dev) != CUDA_SUCCESS ||
	    cuCtxSetCurrent(ctx) != CUDA_SUCCESS ||
	    cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING) != CUDA_SUCCESS) {
		fprintf(stderr, "bench-freeze: no driver context (is GPUSWAP_REAL_LIBCUDA set?)\n");
		return 1;
	}

	pthread_t *tids = calloc((size_t)o.threads, sizeof(*tids));
	double *base = calloc((size_t)o.freezes, sizeof(*base));
	double *loaded = calloc((size_t)o.freezes, sizeof(*loaded));
	size_t nb = 0, nl = 0;
	long tb = 0, tl = 0;

	if (!tids || !base || !loaded) {
		perror("bench-freeze");
		return 1;
	}
	for (long i = 0; i < o.threads; i++)
		if (pthread_create(&tids[i], NULL, caller_main, NULL) != 0) {
			perror("bench-freeze: pthread_create");
			return 1;
		}

	int64_t loaded_ns = 0;
	for (long done = 0; done < o.freezes; done += BLOCK) {
		long n = o.freezes - done < BLOCK ? o.freezes - done : BLOCK;

		/* Baseline block: every caller parked, outside the driver. */
		atomic_store(&calling, false);
		while (atomic_load(&parked) < o.threads)
			sleep_us(100);
		for (long i = 0; i < n; i++) {
			double ms = one_freeze(&o, &tb);
			if (ms >= 0)
				base[nb++] = ms;
		}
		/* Loaded block; the first open period lets the callers start. */
		int64_t t0 = bench_now_ns();
		atomic_store(&calling, true);
		sleep_us(o.open_us);
		for (long i = 0; i < n; i++) {
			double ms = one_freeze(&o, &tl);
			if (ms >= 0)
				loaded[nl++] = ms;
		}
		loaded_ns += bench_now_ns() - t0;
	}
	atomic_store(&stop, true);
	for (long i = 0; i < o.threads; i++)
		pthread_join(tids[i], NULL);
	if (atomic_load(&call_errors) != 0) {
		fprintf(stderr, "bench-freeze: %d driver calls failed\n", atomic_load(&call_errors));
		return 1;
	}
	if (nb == 0 || nl == 0) {
		fprintf(stderr, "bench-freeze: every close timed out\n");
		return 1;
	}

	if (!o.rows_only) {
		printf("%-40s %9s %9s %9s %9s %8s\n", "gate close + drain, ms", "median", "p99",
		       "max", "min", "timeouts");
	}
	print_row("no calling threads (baseline)", base, nb, tb);
	char what[64];
	snprintf(what, sizeof(what), "%ld threads calling", o.threads);
	print_row(what, loaded, nl, tl);

	struct bench_stats s;
	bench_stats_of(loaded, nl, &s);
	/* Calls kept flowing: without this a loaded arm whose threads were
	 * starved would look like a fast baseline. */
	printf("%ld freezes per arm, gate open %ld us between them; callers made %.2f M calls/s "
	       "during loaded blocks\n",
	       o.freezes, o.open_us, (double)atomic_load(&calls) / ((double)loaded_ns / 1e9) / 1e6);
	printf("target < %.0f ms per freeze (close + drain, %ld threads calling): median %.3f ms, "
	       "max %.3f ms, %s\n",
	       TARGET_MS, o.threads, s.median, s.max,
	       s.max < TARGET_MS && tl == 0 ? "met" : s.median < TARGET_MS ? "met at the median" : "missed");
	free(tids);
	free(base);
	free(loaded);
	return 0;
}
