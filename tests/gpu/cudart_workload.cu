// SPDX-License-Identifier: Apache-2.0
//
// gs-cudart-workload: a runtime-API program of the kind the shim must carry
// through a migration untouched: cudaMalloc'd buffers, <<<>>> kernels, cuBLAS
// SGEMM, two streams ordered by events, pinned host memory, and __device__
// globals. Every step folds what it computed into a running digest held in
// device memory and prints it, so two runs compare bit for bit:
//
//   step N <16 hex digits>       one per step (deterministic)
//   done steps=N digest=<hex>    at the end (deterministic)
//   # ...                        anything else (not compared)
//
//   gs-cudart-workload [--steps N] [--n DIM] [--pace-ms MS]
//
// --pace-ms sleeps between steps (outside any CUDA call) so a freeze can land
// in the middle of a run of known length.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CK(call)                                                                                        \
	do {                                                                                            \
		cudaError_t ck_rc_ = (call);                                                            \
		if (ck_rc_ != cudaSuccess) {                                                            \
			fprintf(stderr, "gs-cudart-workload: %s: %s\n", #call, cudaGetErrorString(ck_rc_)); \
			exit(1);                                                                        \
		}                                                                                       \
	} while (0)

#define CKB(call)                                                                                \
	do {                                                                                     \
		cublasStatus_t ckb_rc_ = (call);                                                 \
		if (ckb_rc_ != CUBLAS_STATUS_SUCCESS) {                                          \
			fprintf(stderr, "gs-cudart-workload: %s: cuBLAS status %d\n", #call,     \
				(int)ckb_rc_);                                                   \
			exit(1);                                                                 \
		}                                                                                \
	} while (0)

enum { THREADS = 256, DIGEST_BLOCKS = 64 };

// Module globals: a thaw must bring them back with their values.
__device__ unsigned long long g_steps;
__device__ unsigned long long g_digest;

__device__ static inline uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

__global__ void init_matrix(float *m, int count, uint64_t seed)
{
	for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < count; i += gridDim.x * blockDim.x)
		m[i] = (float)((mix64(seed ^ (uint64_t)i) >> 40) & 0xffff) / 65536.0f - 0.5f;
}

// Keeps values bounded whatever the number of steps.
__global__ void update(float *a, const float *c, const float *cprev, int count, int step)
{
	for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < count; i += gridDim.x * blockDim.x)
		a[i] = tanhf(0.75f * a[i] + 0.5f * c[i] - 0.25f * cprev[i] + 1e-3f * (float)(step % 7));
	if (blockIdx.x == 0 && threadIdx.x == 0)
		g_steps += 1;
}

// Fixed assignment of elements to threads and a fixed-shape tree: the digest
// does not depend on scheduling.
__global__ void block_digest(const float *c, int count, uint64_t *partials)
{
	__shared__ uint64_t sh[THREADS];
	uint64_t h = 0;

	for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < count; i += gridDim.x * blockDim.x)
		h = mix64(h ^ __float_as_uint(c[i]) ^ ((uint64_t)i << 32));
	sh[threadIdx.x] = h;
	__syncthreads();
	for (int s = THREADS / 2; s > 0; s >>= 1) {
		if ((int)threadIdx.x < s)
			sh[threadIdx.x] = mix64(sh[threadIdx.x] ^ (sh[threadIdx.x + s] * 0x9e3779b97f4a7c15ull));
		__syncthreads();
	}
	if (threadIdx.x == 0)
		partials[blockIdx.x] = sh[0];
}

__global__ void final_digest(const uint64_t *partials, int n, unsigned long long *out)
{
	uint64_t d = g_digest;

	for (int i = 0; i < n; i++)
		d = mix64(d ^ partials[i]);
	d = mix64(d ^ g_steps);
	g_digest = d;
	*out = d;
}

int main(int argc, char **argv)
{
	int steps = 300, n = 512, pace_ms = 0;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--steps") && i + 1 < argc)
			steps = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--n") && i + 1 < argc)
			n = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--pace-ms") && i + 1 < argc)
			pace_ms = atoi(argv[++i]);
		else {
			fprintf(stderr, "usage: gs-cudart-workload [--steps N] [--n DIM] [--pace-ms MS]\n");
			return 2;
		}
	}
	if (steps < 1 || n < 16 || n > 8192 || pace_ms < 0)
		return 2;

	const int count = n * n;
	const size_t bytes = (size_t)count * sizeof(float);
	float *a, *b, *c, *cprev;
	uint64_t *partials;
	unsigned long long *out, *host_out;
	cudaStream_t s_main, s_blas;
	cudaEvent_t a_ready, c_ready;
	cublasHandle_t blas;
	int prio_low, prio_high;

	CK(cudaSetDevice(0));
	CK(cudaMalloc(&a, bytes));
	CK(cudaMalloc(&b, bytes));
	CK(cudaMalloc(&c, bytes));
	CK(cudaMalloc(&cprev, bytes));
	CK(cudaMalloc(&partials, DIGEST_BLOCKS * sizeof(uint64_t)));
	CK(cudaMalloc(&out, sizeof(*out)));
	// Pinned host memory dies with its context unless the shim carries it.
	CK(cudaMallocHost(&host_out, sizeof(*host_out)));
	CK(cudaDeviceGetStreamPriorityRange(&prio_low, &prio_high));
	CK(cudaStreamCreateWithFlags(&s_main, cudaStreamNonBlocking));
	CK(cudaStreamCreateWithPriority(&s_blas, cudaStreamNonBlocking, prio_high));
	CK(cudaEventCreateWithFlags(&a_ready, cudaEventDisableTiming));
	CK(cudaEventCreateWithFlags(&c_ready, cudaEventDisableTiming));
	CKB(cublasCreate(&blas));
	CKB(cublasSetStream(blas, s_blas));

	const int grid = (count + THREADS - 1) / THREADS > 1024 ? 1024 : (count + THREADS - 1) / THREADS;
	init_matrix<<<grid, THREADS, 0, s_main>>>(a, count, 1);
	init_matrix<<<grid, THREADS, 0, s_main>>>(b, count, 2);
	CK(cudaMemsetAsync(c, 0, bytes, s_main));
	CK(cudaMemsetAsync(cprev, 0, bytes, s_main));
	CK(cudaGetLastError());

	const float alpha = 1.0f / (float)n, beta = 0.0f;
	for (int step = 1; step <= steps; step++) {
		update<<<grid, THREADS, 0, s_main>>>(a, c, cprev, count, step);
		CK(cudaMemcpyAsync(cprev, c, bytes, cudaMemcpyDeviceToDevice, s_main));
		CK(cudaEventRecord(a_ready, s_main));
		CK(cudaStreamWaitEvent(s_blas, a_ready, 0));
		CKB(cublasSgemm(blas, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, a, n, b, n, &beta, c, n));
		block_digest<<<DIGEST_BLOCKS, THREADS, 0, s_blas>>>(c, count, partials);
		final_digest<<<1, 1, 0, s_blas>>>(partials, DIGEST_BLOCKS, out);
		CK(cudaGetLastError());
		CK(cudaMemcpyAsync(host_out, out, sizeof(*out), cudaMemcpyDeviceToHost, s_blas));
		CK(cudaEventRecord(c_ready, s_blas));
		CK(cudaStreamWaitEvent(s_main, c_ready, 0));
		CK(cudaEventSynchronize(c_ready));
		printf("step %d %016llx\n", step, *host_out);
		fflush(stdout);
		if (pace_ms)
			usleep((useconds_t)pace_ms * 1000);
	}

	unsigned long long steps_done = 0, digest = 0;
	CK(cudaMemcpyFromSymbol(&steps_done, g_steps, sizeof(steps_done)));
	CK(cudaMemcpyFromSymbol(&digest, g_digest, sizeof(digest)));
	printf("done steps=%llu digest=%016llx\n", steps_done, digest);

	CKB(cublasDestroy(blas));
	CK(cudaEventDestroy(a_ready));
	CK(cudaEventDestroy(c_ready));
	CK(cudaStreamDestroy(s_main));
	CK(cudaStreamDestroy(s_blas));
	CK(cudaFreeHost(host_out));
	CK(cudaFree(a));
	CK(cudaFree(b));
	CK(cudaFree(c));
	CK(cudaFree(cprev));
	CK(cudaFree(partials));
	CK(cudaFree(out));
	return 0;
}
