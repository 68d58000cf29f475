// SPDX-License-Identifier: Apache-2.0
//
// Device code of the test kernels (see gs_kernels.h for the list). Built with
// -fmad=false so that every float operation is a separately rounded IEEE op,
// exactly what the C emulations in emu.c do: a workload then computes the
// same bits on a GPU as in the simulated driver, and its output can be
// compared across the two.

#include "gs_kernels.h"

__device__ unsigned long long gs_step;
__device__ int gs_magic = GS_MAGIC_INIT;
__device__ float gs_table[GS_TABLE_LEN];

#define GRID_STRIDE(i, n)                                                     \
	for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + \
				    threadIdx.x;                                  \
	     i < (unsigned long long)(n);                                         \
	     i += (unsigned long long)gridDim.x * blockDim.x)

__device__ static bool first_thread(void)
{
	return blockIdx.x == 0 && blockIdx.y == 0 && blockIdx.z == 0 &&
	       threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0;
}

extern "C" __global__ void axpy(float a, const float *x, float *y, int n)
{
	GRID_STRIDE(i, n)
		y[i] = y[i] + a * x[i];
}

extern "C" __global__ void sgd_update(float *w, const float *grad, float lr,
				      const float *lr_scale, int n)
{
	float step = lr * *lr_scale;

	GRID_STRIDE(i, n)
		w[i] = w[i] - step * grad[i];
}

extern "C" __global__ void linear_residual(const float *x, const float *y, const float *w,
					   float *r, int m, int d)
{
	GRID_STRIDE(i, m) {
		float acc = 0.0f;
		for (int j = 0; j < d; j++)
			acc = acc + x[i * d + j] * w[j];
		r[i] = acc - y[i];
	}
}

extern "C" __global__ void linear_grad(const float *x, const float *r, float *grad, int m,
				       int d)
{
	float scale = 2.0f / (float)m;

	GRID_STRIDE(j, d) {
		float acc = 0.0f;
		for (int i = 0; i < m; i++)
			acc = acc + r[i] * x[i * d + j];
		grad[j] = acc * scale;
	}
}

// One block. Each thread sums the squares of a strided slice, then a tree
// reduction in dynamic shared memory: a fixed order of additions for a
// given block size, which the emulation reproduces.
extern "C" __global__ void loss_reduce(const float *r, int m, float *loss)
{
	extern __shared__ float part[];
	unsigned t = threadIdx.x;
	float acc = 0.0f;

	for (int i = t; i < m; i += blockDim.x)
		acc = acc + r[i] * r[i];
	part[t] = acc;
	__syncthreads();
	for (unsigned s = blockDim.x / 2; s > 0; s /= 2) {
		if (t < s)
			part[t] = part[t] + part[t + s];
		__syncthreads();
	}
	if (t == 0)
		*loss = part[0] / (float)m;
}

extern "C" __global__ void list_walk(const unsigned long long *root, float *sum)
{
	if (!first_thread())
		return;
	float acc = 0.0f;
	for (unsigned long long p = *root; p != 0;) {
		struct gs_list_node *node = (struct gs_list_node *)p;
		acc = acc + node->value;
		node->value = node->value * 0.9375f + 0.0625f;
		p = node->next;
	}
	*sum = acc;
}

extern "C" __global__ void step_tick(const float *list_sum, float *lr_scale, int nodes)
{
	if (!first_thread())
		return;
	unsigned long long s = ++gs_step;
	*lr_scale = (*list_sum / (float)nodes) / (1.0f + 0.125f * (float)s);
}

extern "C" __global__ void global_read(int *magic, unsigned long long *step, float *table)
{
	if (!first_thread())
		return;
	*magic = gs_magic;
	*step = gs_step;
	for (int i = 0; i < GS_TABLE_LEN; i++)
		table[i] = gs_table[i];
}

extern "C" __global__ void global_write(int magic, float table_value)
{
	if (!first_thread())
		return;
	gs_magic = magic;
	for (int i = 0; i < GS_TABLE_LEN; i++)
		gs_table[i] = table_value + (float)i;
}

extern "C" __global__ void params_mixed(int i, const int *p, double d, struct gs_mix24 s,
					float4 v, double *out)
{
	if (!first_thread())
		return;
	out[0] = i;
	out[1] = *p;
	out[2] = d;
	out[3] = s.i;
	out[4] = s.f;
	out[5] = s.d;
	out[6] = (double)s.l;
	out[7] = v.x;
	out[8] = v.y;
	out[9] = v.z;
	out[10] = v.w;
}

extern "C" __global__ void params_pad(char c, float4 v, short s, unsigned long long u,
				      double *out)
{
	if (!first_thread())
		return;
	out[0] = c;
	out[1] = v.x;
	out[2] = v.y;
	out[3] = v.z;
	out[4] = v.w;
	out[5] = s;
	out[6] = (double)u;
}

extern "C" __global__ void report_launch(unsigned *out)
{
	if (!first_thread())
		return;
	out[0] = gridDim.x;
	out[1] = gridDim.y;
	out[2] = gridDim.z;
	out[3] = blockDim.x;
	out[4] = blockDim.y;
	out[5] = blockDim.z;
}

extern "C" __global__ void fill_u32(unsigned *p, unsigned value, unsigned n)
{
	GRID_STRIDE(i, n)
		p[i] = value;
}

extern "C" __global__ void seq_append(unsigned *log, unsigned value)
{
	if (!first_thread())
		return;
	unsigned idx = atomicAdd(&log[0], 1u);
	log[1 + idx] = value;
}

extern "C" __global__ void noop(void)
{
}

// Has no host emulation on purpose: launching it in the simulated driver
// must fail with CUDA_ERROR_NOT_FOUND.
extern "C" __global__ void unemulated(int *p)
{
	*p = 1;
}
