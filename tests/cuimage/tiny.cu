// SPDX-License-Identifier: Apache-2.0
// The smallest useful module: the malformed-input tests try every truncation.
__device__ int tiny_var = 1;

extern "C" __global__ void tiny(int *p, double d)
{
	p[0] = tiny_var + (int)d;
}
