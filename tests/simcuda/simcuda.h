/* SPDX-License-Identifier: Apache-2.0 */
/*
 * simcuda: the simulated CUDA driver used by gpuswap's test suite.
 *
 * This header is the one interface test programs see besides cuda.h: how a
 * kernel launch reaches host code. Launching kernel NAME calls
 *
 *     void simcuda_kernel_NAME(const simcuda_launch *launch, void **params);
 *
 * found with dlsym(RTLD_DEFAULT, "simcuda_kernel_NAME") (test programs link
 * with export_dynamic). `params` is exactly the kernelParams array of
 * cuLaunchKernel (for the `extra` form the simulator unpacks the buffer with
 * the cubin's parameter layout first). Device pointers are host-addressable
 * in the simulator, so an emulation dereferences them directly.
 */
#ifndef SIMCUDA_H
#define SIMCUDA_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct simcuda_launch {
	unsigned grid[3];
	unsigned block[3];
	unsigned shared_bytes;
	int device; /* the real (simulated) ordinal running the kernel */
	/* Host-addressable storage of the __device__ variable NAME of the
	 * module the kernel belongs to, or NULL if the module has none. */
	void *(*global)(const struct simcuda_launch *launch, const char *name);
} simcuda_launch;

typedef void simcuda_kernel_fn(const simcuda_launch *launch, void **params);

#ifdef __cplusplus
}
#endif
#endif
