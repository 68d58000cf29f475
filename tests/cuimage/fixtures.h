/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Types shared by the fixture kernels (fixtures.cu) and the tests, so the
 * tests compute the parameter layout the .cu declares with offsetof: the
 * CUDA ABI lays kernel parameters out like the members of a struct.
 */
#ifndef CUIMAGE_FIXTURES_H
#define CUIMAGE_FIXTURES_H

struct s24 {
	int a;
	double b;
	char c[8];
};

/* Over 4096 bytes of parameters: CUDA 12.1+ "large kernel parameters". */
struct big5000 {
	char b[5000];
};

#ifdef __CUDACC__
typedef float4 fx_float4;
#else
typedef struct {
	float x, y, z, w;
} __attribute__((aligned(16))) fx_float4;
#endif

#define FX_TABLE_LEN 100
#define FX_SCALAR 3.5
#define FX_MANAGED 5
#define FX_COEF_LEN 16

#endif
