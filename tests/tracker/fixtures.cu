// SPDX-License-Identifier: Apache-2.0
//
// Code for the tracker's image tests: one kernel whose parameter layout the
// tests know (see trk_test.h), one __device__ global, built into each kind
// of image the driver accepts.

extern "C" __device__ int trk_counter;
__device__ int trk_counter = 7;

// Parameters at their natural alignment: 0 (4 bytes), 8 (8), 16 (1), 24 (8).
extern "C" __global__ void trk_kernel(int a, double *p, char c, unsigned long long u)
{
	if (threadIdx.x == 0 && blockIdx.x == 0)
		*p = a + c + (double)u + trk_counter;
}

extern "C" __global__ void trk_empty(void)
{
}
