/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Test kernels: data layouts shared by the device code (gs_kernels.cu), its
 * host emulations for the simulated driver (emu.c) and the programs and tests
 * that launch them. Included by nvcc and by the C compiler, so only plain C.
 *
 * Kernels (all extern "C", 1-D grid-stride unless noted):
 *   axpy(float a, const float *x, float *y, int n)           y += a*x
 *   sgd_update(float *w, const float *grad, float lr,
 *              const float *lr_scale, int n)                 w -= lr*(*lr_scale)*grad
 *   linear_residual(const float *x, const float *y,
 *                   const float *w, float *r, int m, int d)  r = x.w - y (x is m x d)
 *   linear_grad(const float *x, const float *r, float *grad,
 *               int m, int d)                                grad = (2/m) x^T r
 *   loss_reduce(const float *r, int m, float *loss)          one block, blockDim a power
 *                                                            of two, dynamic shared memory
 *                                                            of blockDim floats: mean(r^2)
 *   list_walk(const unsigned long long *root, float *sum)    one thread: walks the list
 *                                                            whose head address is *root,
 *                                                            sums and then decays values
 *   step_tick(const float *list_sum, float *lr_scale,
 *             int nodes)                                     one thread: ++gs_step and a
 *                                                            learning-rate scale from it
 *   global_read(int *magic, unsigned long long *step,
 *               float *table)                                copies the __device__ globals
 *   global_write(int magic, float table_value)               sets them
 *   params_mixed(int i, const int *p, double d,
 *                struct gs_mix24 s, float4 v, double *out)   writes every parameter to out
 *   params_pad(char c, float4 v, short s,
 *              unsigned long long u, double *out)            same, with padding holes
 *   report_launch(unsigned *out)                             gridDim.xyz, blockDim.xyz
 *   fill_u32(unsigned *p, unsigned value, unsigned n)
 *   seq_append(unsigned *log, unsigned value)                one thread: log[1+log[0]++] = value
 *   noop(void)
 *   unemulated(int *p)                                       deliberately has no emulation
 *
 * __device__ globals: gs_step (unsigned long long, zero), gs_magic (int,
 * GS_MAGIC_INIT), gs_table (float[GS_TABLE_LEN], zero).
 */
#ifndef GS_KERNELS_H
#define GS_KERNELS_H

#define GS_MAGIC_INIT 0x5eed1234
#define GS_TABLE_LEN 16

/* A list node in device memory. `next` is the device address of the next
 * node (0 ends the list): a device pointer stored in device memory, which a
 * migration must keep valid by restoring every allocation at its address. */
struct gs_list_node {
	float value;
	unsigned index;
	unsigned long long next;
};

/* A 24-byte, 8-aligned by-value kernel parameter. */
struct gs_mix24 {
	int i;
	float f;
	double d;
	long long l;
};

/* Where each parameter of params_mixed / params_pad lies in the parameter
 * buffer, as the CUDA ABI lays it out (each at its natural alignment; float4
 * is 16-aligned). Tests compare these with cuFuncGetParamInfo and use them to
 * build `extra` launch buffers. */
#define GS_PARAMS_MIXED_COUNT 6
#define GS_PARAMS_MIXED_BYTES 72
#define GS_PARAMS_MIXED_OFFSETS { 0, 8, 16, 24, 48, 64 }
#define GS_PARAMS_MIXED_SIZES { 4, 8, 8, 24, 16, 8 }
#define GS_PARAMS_MIXED_OUT 11 /* doubles written */

#define GS_PARAMS_PAD_COUNT 5
#define GS_PARAMS_PAD_BYTES 56
#define GS_PARAMS_PAD_OFFSETS { 0, 16, 32, 40, 48 }
#define GS_PARAMS_PAD_SIZES { 1, 16, 2, 8, 8 }
#define GS_PARAMS_PAD_OUT 7

#ifndef __CUDACC__
/* Host twin of CUDA's float4 (same size and alignment). */
struct gs_float4 {
	float x, y, z, w;
} __attribute__((aligned(16)));

#include "simcuda.h"

/* Host emulations (emu.c), found by the simulated driver with dlsym. */
#define GS_EMU(name) void simcuda_kernel_##name(const simcuda_launch *launch, void **params)
GS_EMU(axpy);
GS_EMU(sgd_update);
GS_EMU(linear_residual);
GS_EMU(linear_grad);
GS_EMU(loss_reduce);
GS_EMU(list_walk);
GS_EMU(step_tick);
GS_EMU(global_read);
GS_EMU(global_write);
GS_EMU(params_mixed);
GS_EMU(params_pad);
GS_EMU(report_launch);
GS_EMU(fill_u32);
GS_EMU(seq_append);
GS_EMU(noop);
#undef GS_EMU
#endif

#endif
