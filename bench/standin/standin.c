/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A stand-in libcuda.so.1 for the benchmarks: each entry point returns
 * CUDA_SUCCESS at once and touches nothing. Called directly, a call costs
 * what any call through a pointer costs; called through the shim, it costs
 * that plus the shim's wrapper. The difference is the shim's own cost per
 * call, free of the simulated driver's queueing, whose noise alone is larger
 * than the whole wrapper.
 *
 * It has only what bench-calls uses. The shim finds nothing else in it, which
 * is fine: the benchmark never calls anything else.
 */
#include <cuda.h>

#define STANDIN_EXPORT __attribute__((visibility("default")))

STANDIN_EXPORT CUresult cuInit(unsigned int flags)
{
	return CUDA_SUCCESS;
}

STANDIN_EXPORT CUresult cuDriverGetVersion(int *driverVersion)
{
	*driverVersion = CUDA_VERSION;
	return CUDA_SUCCESS;
}

STANDIN_EXPORT CUresult cuLaunchKernel(CUfunction f, unsigned int gridDimX, unsigned int gridDimY,
				       unsigned int gridDimZ, unsigned int blockDimX,
				       unsigned int blockDimY, unsigned int blockDimZ,
				       unsigned int sharedMemBytes, CUstream hStream,
				       void **kernelParams, void **extra)
{
	return CUDA_SUCCESS;
}

/* cuda.h maps cuMemcpyHtoDAsync to the exported cuMemcpyHtoDAsync_v2. */
STANDIN_EXPORT CUresult cuMemcpyHtoDAsync(CUdeviceptr dstDevice, const void *srcHost,
					  size_t ByteCount, CUstream hStream)
{
	return CUDA_SUCCESS;
}
