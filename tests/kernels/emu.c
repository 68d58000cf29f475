/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Host emulations of the test kernels, called by the simulated driver when a
 * kernel of the same name is launched (simcuda.h). Each does what the device
 * code in gs_kernels.cu does, in the same order of float operations (this file
 * is built with -ffp-contract=off, the kernels with -fmad=false), so results
 * are identical run after run and match a GPU bit for bit.
 *
 * Device pointers are host-addressable in the simulator, so pointer
 * parameters are dereferenced directly. Parameter values are read with
 * memcpy: the kernelParams array an application passes need not point at
 * suitably aligned storage.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gs_kernels.h"

static void get_arg(void **params, int k, void *dst, size_t size)
{
	memcpy(dst, params[k], size);
}

static int arg_int(void **params, int k)
{
	int v;

	get_arg(params, k, &v, sizeof(v));
	return v;
}

static unsigned arg_uint(void **params, int k)
{
	unsigned v;

	get_arg(params, k, &v, sizeof(v));
	return v;
}

static float arg_float(void **params, int k)
{
	float v;

	get_arg(params, k, &v, sizeof(v));
	return v;
}

static void *arg_ptr(void **params, int k)
{
	uint64_t v; /* a device address, 8 bytes in the parameter buffer */

	get_arg(params, k, &v, sizeof(v));
	return (void *)(uintptr_t)v;
}

/* Storage of a __device__ variable of the launched kernel's module. The
 * kernels only name globals their module defines, so NULL is a simulator
 * bug; say so rather than crash on a worker thread. */
static void *device_global(const simcuda_launch *launch, const char *name)
{
	void *p = launch->global ? launch->global(launch, name) : NULL;

	if (!p) {
		fprintf(stderr, "gs kernel emulation: no storage for __device__ %s\n", name);
		abort();
	}
	return p;
}

/* Threads of the 1-D grid-stride loops in the device code (only x counts:
 * the kernels index with blockIdx.x / threadIdx.x). */
static unsigned long long grid_threads(const simcuda_launch *launch)
{
	return (unsigned long long)launch->grid[0] * launch->block[0];
}

/* Visit i in [0, n) in the order thread t, t+T, t+2T... of each thread in
 * turn. Kernels using it write disjoint elements, so any order gives the
 * same result; this one mirrors the device loop. */
#define GRID_STRIDE(launch, i, n)                                                  \
	for (unsigned long long t_ = 0, T_ = grid_threads(launch); t_ < T_; t_++) \
		for (unsigned long long i = t_; i < (unsigned long long)(n); i += T_)

/* The body of a "first thread only" kernel runs once, if any thread runs. */
static int launches_a_thread(const simcuda_launch *launch)
{
	return launch->grid[0] && launch->grid[1] && launch->grid[2] && launch->block[0] &&
	       launch->block[1] && launch->block[2];
}

void simcuda_kernel_axpy(const simcuda_launch *launch, void **params)
{
	float a = arg_float(params, 0);
	const float *x = arg_ptr(params, 1);
	float *y = arg_ptr(params, 2);
	int n = arg_int(params, 3);

	GRID_STRIDE(launch, i, n)
		y[i] = y[i] + a * x[i];
}

void simcuda_kernel_sgd_update(const simcuda_launch *launch, void **params)
{
	float *w = arg_ptr(params, 0);
	const float *grad = arg_ptr(params, 1);
	float lr = arg_float(params, 2);
	const float *lr_scale = arg_ptr(params, 3);
	int n = arg_int(params, 4);
	float step = lr * *lr_scale;

	GRID_STRIDE(launch, i, n)
		w[i] = w[i] - step * grad[i];
}

void simcuda_kernel_linear_residual(const simcuda_launch *launch, void **params)
{
	const float *x = arg_ptr(params, 0);
	const float *y = arg_ptr(params, 1);
	const float *w = arg_ptr(params, 2);
	float *r = arg_ptr(params, 3);
	int m = arg_int(params, 4);
	int d = arg_int(params, 5);

	GRID_STRIDE(launch, i, m) {
		float acc = 0.0f;
		for (int j = 0; j < d; j++)
			acc = acc + x[i * d + j] * w[j];
		r[i] = acc - y[i];
	}
}

void simcuda_kernel_linear_grad(const simcuda_launch *launch, void **params)
{
	const float *x = arg_ptr(params, 0);
	const float *r = arg_ptr(params, 1);
	float *grad = arg_ptr(params, 2);
	int m = arg_int(params, 3);
	int d = arg_int(params, 4);
	float scale = 2.0f / (float)m;

	GRID_STRIDE(launch, j, d) {
		float acc = 0.0f;
		for (int i = 0; i < m; i++)
			acc = acc + r[i] * x[i * d + j];
		grad[j] = acc * scale;
	}
}

/* The device code needs one block whose size is a power of two and dynamic
 * shared memory for blockDim floats; on a GPU anything else reads or writes
 * out of bounds. The emulation makes such misuse visible as a NaN loss. */
void simcuda_kernel_loss_reduce(const simcuda_launch *launch, void **params)
{
	const float *r = arg_ptr(params, 0);
	int m = arg_int(params, 1);
	float *loss = arg_ptr(params, 2);
	unsigned b = launch->block[0];
	float *part;

	if (launch->grid[0] != 1 || b == 0 || (b & (b - 1)) != 0 ||
	    launch->shared_bytes < b * sizeof(float) || !(part = calloc(b, sizeof(float)))) {
		*loss = NAN;
		return;
	}
	for (unsigned t = 0; t < b; t++) {
		float acc = 0.0f;
		for (int i = (int)t; i < m; i += (int)b)
			acc = acc + r[i] * r[i];
		part[t] = acc;
	}
	for (unsigned s = b / 2; s > 0; s /= 2)
		for (unsigned t = 0; t < s; t++)
			part[t] = part[t] + part[t + s];
	*loss = part[0] / (float)m;
	free(part);
}

void simcuda_kernel_list_walk(const simcuda_launch *launch, void **params)
{
	const unsigned long long *root = arg_ptr(params, 0);
	float *sum = arg_ptr(params, 1);
	float acc = 0.0f;

	if (!launches_a_thread(launch))
		return;
	for (unsigned long long p = *root; p != 0;) {
		struct gs_list_node *node = (struct gs_list_node *)(uintptr_t)p;
		acc = acc + node->value;
		node->value = node->value * 0.9375f + 0.0625f;
		p = node->next;
	}
	*sum = acc;
}

void simcuda_kernel_step_tick(const simcuda_launch *launch, void **params)
{
	const float *list_sum = arg_ptr(params, 0);
	float *lr_scale = arg_ptr(params, 1);
	int nodes = arg_int(params, 2);
	unsigned long long *step = device_global(launch, "gs_step");

	if (!launches_a_thread(launch))
		return;
	unsigned long long s = ++*step;
	*lr_scale = (*list_sum / (float)nodes) / (1.0f + 0.125f * (float)s);
}

void simcuda_kernel_global_read(const simcuda_launch *launch, void **params)
{
	int *magic = arg_ptr(params, 0);
	unsigned long long *step = arg_ptr(params, 1);
	float *table = arg_ptr(params, 2);
	const int *g_magic = device_global(launch, "gs_magic");
	const unsigned long long *g_step = device_global(launch, "gs_step");
	const float *g_table = device_global(launch, "gs_table");

	if (!launches_a_thread(launch))
		return;
	*magic = *g_magic;
	*step = *g_step;
	for (int i = 0; i < GS_TABLE_LEN; i++)
		table[i] = g_table[i];
}

void simcuda_kernel_global_write(const simcuda_launch *launch, void **params)
{
	int magic = arg_int(params, 0);
	float value = arg_float(params, 1);
	int *g_magic = device_global(launch, "gs_magic");
	float *g_table = device_global(launch, "gs_table");

	if (!launches_a_thread(launch))
		return;
	*g_magic = magic;
	for (int i = 0; i < GS_TABLE_LEN; i++)
		g_table[i] = value + (float)i;
}

void simcuda_kernel_params_mixed(const simcuda_launch *launch, void **params)
{
	int i = arg_int(params, 0);
	const int *p = arg_ptr(params, 1);
	double d;
	struct gs_mix24 s;
	struct gs_float4 v;
	double *out = arg_ptr(params, 5);

	if (!launches_a_thread(launch))
		return;
	get_arg(params, 2, &d, sizeof(d));
	get_arg(params, 3, &s, sizeof(s));
	get_arg(params, 4, &v, sizeof(v));
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

void simcuda_kernel_params_pad(const simcuda_launch *launch, void **params)
{
	char c;
	struct gs_float4 v;
	short s;
	unsigned long long u;
	double *out = arg_ptr(params, 4);

	if (!launches_a_thread(launch))
		return;
	get_arg(params, 0, &c, sizeof(c));
	get_arg(params, 1, &v, sizeof(v));
	get_arg(params, 2, &s, sizeof(s));
	get_arg(params, 3, &u, sizeof(u));
	out[0] = c;
	out[1] = v.x;
	out[2] = v.y;
	out[3] = v.z;
	out[4] = v.w;
	out[5] = s;
	out[6] = (double)u;
}

void simcuda_kernel_report_launch(const simcuda_launch *launch, void **params)
{
	unsigned *out = arg_ptr(params, 0);

	if (!launches_a_thread(launch))
		return;
	for (int k = 0; k < 3; k++) {
		out[k] = launch->grid[k];
		out[3 + k] = launch->block[k];
	}
}

void simcuda_kernel_fill_u32(const simcuda_launch *launch, void **params)
{
	unsigned *p = arg_ptr(params, 0);
	unsigned value = arg_uint(params, 1);
	unsigned n = arg_uint(params, 2);

	GRID_STRIDE(launch, i, n)
		p[i] = value;
}

void simcuda_kernel_seq_append(const simcuda_launch *launch, void **params)
{
	unsigned *log = arg_ptr(params, 0);
	unsigned value = arg_uint(params, 1);

	if (!launches_a_thread(launch))
		return;
	/* Streams run on separate worker threads, as kernels on a GPU run
	 * concurrently: the slot is claimed atomically like atomicAdd does. */
	unsigned idx = __atomic_fetch_add(&log[0], 1u, __ATOMIC_SEQ_CST);
	log[1 + idx] = value;
}

void simcuda_kernel_noop(const simcuda_launch *launch, void **params)
{
}
