/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Emulations of the few test kernels (tests/kernels/gs_kernels.cu) the
 * replay tests launch, for the simulated driver. Besides doing what the
 * device code does, each records the simulated device it ran on: a test
 * checks that after a thaw kernels really run on the target GPU.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gs_kernels.h"
#include "replay_test.h"

_Atomic int replay_last_device = -1;
_Atomic unsigned replay_launches;

static void ran(const simcuda_launch *launch)
{
	atomic_store(&replay_last_device, launch->device);
	atomic_fetch_add(&replay_launches, 1);
}

static void *arg_ptr(void **params, int k)
{
	uint64_t v;

	memcpy(&v, params[k], sizeof(v));
	return (void *)(uintptr_t)v;
}

static unsigned arg_uint(void **params, int k)
{
	unsigned v;

	memcpy(&v, params[k], sizeof(v));
	return v;
}

static void *global(const simcuda_launch *launch, const char *name)
{
	void *p = launch->global ? launch->global(launch, name) : NULL;

	if (!p) {
		fprintf(stderr, "replay emulation: no storage for __device__ %s\n", name);
		abort();
	}
	return p;
}

void simcuda_kernel_fill_u32(const simcuda_launch *launch, void **params)
{
	unsigned *p = arg_ptr(params, 0);
	unsigned value = arg_uint(params, 1);
	unsigned n = arg_uint(params, 2);

	ran(launch);
	for (unsigned i = 0; i < n; i++)
		p[i] = value;
}

void simcuda_kernel_global_write(const simcuda_launch *launch, void **params)
{
	int magic;
	float value;
	int *g_magic = global(launch, "gs_magic");
	float *g_table = global(launch, "gs_table");

	ran(launch);
	memcpy(&magic, params[0], sizeof(magic));
	memcpy(&value, params[1], sizeof(value));
	*g_magic = magic;
	for (int i = 0; i < GS_TABLE_LEN; i++)
		g_table[i] = value + (float)i;
}

void simcuda_kernel_global_read(const simcuda_launch *launch, void **params)
{
	int *magic = arg_ptr(params, 0);
	unsigned long long *step = arg_ptr(params, 1);
	float *table = arg_ptr(params, 2);

	ran(launch);
	*magic = *(const int *)global(launch, "gs_magic");
	*step = *(const unsigned long long *)global(launch, "gs_step");
	memcpy(table, global(launch, "gs_table"), GS_TABLE_LEN * sizeof(float));
}

void simcuda_kernel_noop(const simcuda_launch *launch, void **params)
{
	(void)params;
	ran(launch);
}
