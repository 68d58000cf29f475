/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench-swap: how long a swap keeps a process stopped (gs_replay_swap:
 * freeze, release, thaw, from the first gated call refused to the gate
 * reopened), device memory going device to device over the peer link
 * against the same swap through host memory (GS_SWAP_VIA_HOST), in
 * alternating rounds of one process moving between two simulated GPUs.
 *
 * The program is linked with the shim's internals, like bench-freeze, and
 * calls the operation directly instead of through the control socket. On
 * the simulated driver a device copy is a memmove and a copy to or from the
 * host a memcpy, so the ratio says what the peer path saves in copies, not
 * what it saves on a GPU, where the host path crosses PCIe twice and the
 * peer path NVLink or PCIe once.
 */
#include <cuda.h>
#include <getopt.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "replay.h"

#define ALLOC_MIB 8u

struct options {
	long mib;
	long rounds;
};

static int usage(FILE *out, int rc)
{
	fprintf(out,
		"usage: bench-swap [--mib N] [--rounds N]\n"
		"Swap a process holding N MiB of device memory (default 256) between two\n"
		"simulated GPUs, device to device and through host memory in turn, N rounds\n"
		"(default 10), and print how long each kind kept it stopped.\n"
		"GPUSWAP_REAL_LIBCUDA must name the simulated driver.\n");
	return rc;
}

/* Fill every allocation with its own value, and check it. */
static CUresult fill(CUdeviceptr *p, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		CUresult rc = cuMemsetD32(p[i], 0x5a000000u + i, (ALLOC_MIB << 20) / 4);
		if (rc != CUDA_SUCCESS)
			return rc;
	}
	return cuCtxSynchronize();
}

static bool intact(CUdeviceptr *p, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		unsigned head = 0, tail = 0;

		if (cuMemcpyDtoH(&head, p[i], 4) != CUDA_SUCCESS ||
		    cuMemcpyDtoH(&tail, p[i] + (ALLOC_MIB << 20) - 4, 4) != CUDA_SUCCESS ||
		    head != 0x5a000000u + i || tail != head)
			return false;
	}
	return true;
}

/* One swap; its time in ms, or a negative value on failure. */
static double swap_once(const char *target, unsigned flags, long long *peer)
{
	json_t *rep = NULL;
	char *err = NULL;
	int64_t t0 = bench_now_ns();
	int rc = gs_replay_swap(target, 5000, flags, NULL, &rep, &err);
	int64_t t1 = bench_now_ns();

	if (rc) {
		fprintf(stderr, "bench-swap: swap to %s failed: %s\n", target, err ? err : "?");
		free(err);
		json_decref(rep);
		return -1;
	}
	*peer = json_integer_value(
		json_object_get(json_object_get(rep, "release"), "bytes_device"));
	json_decref(rep);
	return (double)(t1 - t0) / 1e6;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "mib", required_argument, NULL, 'm' },
		{ "rounds", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct options o = { .mib = 256, .rounds = 10 };
	struct bench_stats peer_st, host_st;
	double *peer_ms, *host_ms, *ratio;
	long long peer_bytes = 0, host_peer_bytes = 0;
	CUdeviceptr *p;
	CUcontext ctx;
	CUdevice dev;
	unsigned n;
	int c, on = 0;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'm':
			if (!bench_parse_count("--mib", optarg, &o.mib))
				return 2;
			break;
		case 'r':
			if (!bench_parse_count("--rounds", optarg, &o.rounds))
				return 2;
			break;
		case 'h': return usage(stdout, 0);
		default: return usage(stderr, 2);
		}
	}
	if (!getenv("GPUSWAP_REAL_LIBCUDA"))
		return usage(stderr, 2);
	/* Two simulated GPUs with room for the state, set before cuInit. */
	char mem[32];
	snprintf(mem, sizeof(mem), "%ld", 2 * o.mib + 512);
	setenv("SIMCUDA_DEVICES", "2", 0);
	setenv("SIMCUDA_MEM_MB", mem, 0);

	n = (unsigned)((o.mib + ALLOC_MIB - 1) / ALLOC_MIB);
	p = calloc(n, sizeof(*p));
	peer_ms = calloc((size_t)o.rounds, sizeof(double));
	host_ms = calloc((size_t)o.rounds, sizeof(double));
	ratio = calloc((size_t)o.rounds, sizeof(double));
	if (!p || !peer_ms || !host_ms || !ratio)
		return 1;
	if (cuInit(0) != CUDA_SUCCESS || cuDeviceGet(&dev, 0) != CUDA_SUCCESS ||
	    cuDevicePrimaryCtxRetain(&ctx, dev) != CUDA_SUCCESS ||
	    cuCtxSetCurrent(ctx) != CUDA_SUCCESS) {
		fprintf(stderr, "bench-swap: no context on the simulated GPU 0\n");
		return 1;
	}
	for (unsigned i = 0; i < n; i++)
		if (cuMemAlloc(&p[i], ALLOC_MIB << 20) != CUDA_SUCCESS) {
			fprintf(stderr, "bench-swap: allocating %u MiB failed\n", n * ALLOC_MIB);
			return 1;
		}
	if (fill(p, n) != CUDA_SUCCESS)
		return 1;

	/* The two kinds in turn, the first of each round alternating, each
	 * swap moving the process to the other GPU. */
	for (long r = 0; r < o.rounds; r++) {
		for (int k = 0; k < 2; k++) {
			bool via_host = (k + r) % 2;
			long long bytes = 0;
			double ms;

			on = 1 - on;
			ms = swap_once(on ? "1" : "0", via_host ? GS_SWAP_VIA_HOST : 0, &bytes);
			if (ms < 0)
				return 1;
			if (via_host) {
				host_ms[r] = ms;
				host_peer_bytes += bytes;
			} else {
				peer_ms[r] = ms;
				peer_bytes = bytes;
			}
		}
		ratio[r] = host_ms[r] / peer_ms[r];
	}
	bool ok = intact(p, n);

	bench_stats_of(peer_ms, (size_t)o.rounds, &peer_st);
	bench_stats_of(host_ms, (size_t)o.rounds, &host_st);
	struct bench_stats ratio_st;
	bench_stats_of(ratio, (size_t)o.rounds, &ratio_st);
	printf("swap of a process holding %u MiB of device memory, %ld rounds, ms stopped:\n",
	       n * ALLOC_MIB, o.rounds);
	printf("%-34s %9s %9s %9s %10s\n", "", "median", "min", "max", "GB/s");
	double bytes = (double)((uint64_t)n * ALLOC_MIB << 20);

	/* GB/s: the application's bytes over the whole stop, not the copy alone. */
	printf("%-34s %9.1f %9.1f %9.1f %10.2f\n", "device to device (peer)", peer_st.median,
	       peer_st.min, peer_st.max, bytes / (peer_st.median * 1e6));
	printf("%-34s %9.1f %9.1f %9.1f %10.2f\n", "through host memory (via_host)",
	       host_st.median, host_st.min, host_st.max, bytes / (host_st.median * 1e6));
	printf("host path / peer path: %.2fx (median of the per-round ratios; %.2f-%.2f)\n",
	       ratio_st.median, ratio_st.min, ratio_st.max);
	printf("device to device: %lld bytes a swap; through host: %lld bytes device to device "
	       "in all; contents after %ld swaps: %s\n", peer_bytes, host_peer_bytes,
	       2 * o.rounds, ok ? "intact" : "DAMAGED");
	return ok && peer_bytes > 0 && host_peer_bytes == 0 ? 0 : 1;
}
