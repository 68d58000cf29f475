// SPDX-License-Identifier: Apache-2.0
// Kernels and variables whose layout the image parser must report.
#include "fixtures.h"

__device__ int g_counter;
__device__ float g_table[FX_TABLE_LEN] = { 1.0f, 2.0f };
__device__ double g_scalar = FX_SCALAR;
__constant__ float c_coef[FX_COEF_LEN] = { 0.5f, -1.0f, 3.0f };
__managed__ int m_val = FX_MANAGED;

// Not a kernel: must not be listed (it gets its own .text section with -rdc).
__device__ __noinline__ float helper(float x)
{
	return x * c_coef[1] + g_table[2];
}

extern "C" __global__ void mixed(int a, float *p, double d, struct s24 s, fx_float4 v)
{
	if (threadIdx.x == 0) {
		p[0] = helper(a + d + s.b + v.x + g_table[a]);
		g_counter++;
	}
}

__global__ void cpp_kernel(char c, short sh, long long ll, const int *q)
{
	if (q)
		g_counter += c + sh + ll + *q + m_val;
	g_scalar += 1;
}

extern "C" __global__ void noparams(void)
{
	g_counter = 0;
}

extern "C" __global__ void bigparams(char c, struct big5000 b, float *out)
{
	out[0] = b.b[c] + c_coef[0];
}
