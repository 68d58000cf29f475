// SPDX-License-Identifier: Apache-2.0
//
// gs-mem-holder: a process holding many GiB of device memory filled with a
// known pattern, so that gpu-freeze/gpu-thaw and the driver's own checkpoint
// can be timed on a big process and the contents checked afterwards.
//
//   gs-mem-holder [--gib G] [--chunk-mib M]
//
// Prints "ready bytes=... chunks=... alloc_s=... fill_s=..." once the memory
// is filled, then reads commands on stdin, one per line:
//   verify  ->  "verify ok bad=0 seconds=S" or "verify bad bad=N seconds=S"
//   quit (or end of input)  ->  frees everything, exits 0
// Between commands it makes no CUDA call at all: a freeze finds it idle.
#include <cuda_runtime.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <vector>

#define CK(call)                                                                                   \
	do {                                                                                       \
		cudaError_t ck_rc_ = (call);                                                       \
		if (ck_rc_ != cudaSuccess) {                                                       \
			fprintf(stderr, "gs-mem-holder: %s: %s\n", #call, cudaGetErrorString(ck_rc_)); \
			exit(1);                                                                   \
		}                                                                                  \
	} while (0)

__host__ __device__ static inline uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

__global__ void fill(uint64_t *p, size_t n, uint64_t seed)
{
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
		p[i] = mix64(seed ^ i);
}

__global__ void check(const uint64_t *p, size_t n, uint64_t seed, unsigned long long *bad)
{
	unsigned long long mine = 0;

	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
		mine += p[i] != mix64(seed ^ i);
	if (mine)
		atomicAdd(bad, mine);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
	double gib = 20;
	size_t chunk_mib = 1024;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--gib") && i + 1 < argc)
			gib = atof(argv[++i]);
		else if (!strcmp(argv[i], "--chunk-mib") && i + 1 < argc)
			chunk_mib = strtoull(argv[++i], NULL, 0);
		else {
			fprintf(stderr, "usage: gs-mem-holder [--gib G] [--chunk-mib M]\n");
			return 2;
		}
	}
	if (gib <= 0 || chunk_mib == 0)
		return 2;

	size_t total = (size_t)(gib * (double)(1ull << 30));
	size_t chunk = chunk_mib << 20;
	size_t nchunks = (total + chunk - 1) / chunk;
	std::vector<uint64_t *> chunks(nchunks, nullptr);
	unsigned long long *bad = nullptr;
	size_t free_b = 0, total_b = 0;

	CK(cudaSetDevice(0));
	CK(cudaMemGetInfo(&free_b, &total_b));
	printf("# device memory free=%zu total=%zu asking=%zu\n", free_b, total_b, nchunks * chunk);
	fflush(stdout);

	double t0 = now_s();
	for (size_t c = 0; c < nchunks; c++)
		CK(cudaMalloc(&chunks[c], chunk));
	CK(cudaMalloc(&bad, sizeof(*bad)));
	double t1 = now_s();
	for (size_t c = 0; c < nchunks; c++)
		fill<<<1024, 256>>>(chunks[c], chunk / 8, mix64(c));
	CK(cudaGetLastError());
	CK(cudaDeviceSynchronize());
	double t2 = now_s();
	printf("ready bytes=%zu chunks=%zu alloc_s=%.3f fill_s=%.3f\n", nchunks * chunk, nchunks, t1 - t0, t2 - t1);
	fflush(stdout);

	char line[128];
	while (fgets(line, sizeof(line), stdin)) {
		if (!strncmp(line, "verify", 6)) {
			unsigned long long nbad = 0;
			double v0 = now_s();

			CK(cudaMemset(bad, 0, sizeof(*bad)));
			for (size_t c = 0; c < nchunks; c++)
				check<<<1024, 256>>>(chunks[c], chunk / 8, mix64(c), bad);
			CK(cudaGetLastError());
			CK(cudaMemcpy(&nbad, bad, sizeof(nbad), cudaMemcpyDeviceToHost));
			printf("verify %s bad=%llu seconds=%.3f\n", nbad ? "bad" : "ok", nbad, now_s() - v0);
			fflush(stdout);
		} else if (!strncmp(line, "quit", 4)) {
			break;
		}
	}
	for (size_t c = 0; c < nchunks; c++)
		CK(cudaFree(chunks[c]));
	CK(cudaFree(bad));
	return 0;
}
