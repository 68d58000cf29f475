/* SPDX-License-Identifier: Apache-2.0 */
#include "sim_test.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Tests set the SIMCUDA_* variables they need and assume the simulator's
 * defaults for the rest: whatever the caller's environment holds must not
 * leak in. Runs in every test process before Criterion starts the test. */
__attribute__((constructor)) static void st_clean_environment(void)
{
	static const char *const vars[] = {
		"SIMCUDA_DEVICES", "SIMCUDA_ARCH", "SIMCUDA_MEM_MB", "SIMCUDA_VMM",
		"SIMCUDA_P2P", "SIMCUDA_VA_BASE", "SIMCUDA_FAIL",
	};

	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		unsetenv(vars[i]);
}

const char *st_err(CUresult rc)
{
	/* A few buffers in turn: one message may name several results. */
	static _Thread_local char bufs[4][96];
	static _Thread_local unsigned next;
	char *buf = bufs[next++ % 4];
	const char *name = NULL;

	/* cuGetErrorName is itself under test: never trust it blindly. */
	if (cuGetErrorName(rc, &name) != CUDA_SUCCESS || !name)
		name = "?";
	snprintf(buf, sizeof(bufs[0]), "%s (%d)", name, (int)rc);
	return buf;
}

void st_setenv(const char *name, const char *value)
{
	cr_assert_eq(setenv(name, value, 1), 0, "setenv %s", name);
}

CUdevice st_device(int ordinal)
{
	CUdevice dev;

	CU_OK(cuDeviceGet(&dev, ordinal));
	return dev;
}

CUcontext st_init(int dev)
{
	CUcontext ctx;

	CU_OK(cuInit(0));
	CU_OK(cuDevicePrimaryCtxRetain(&ctx, st_device(dev)));
	CU_OK(cuCtxSetCurrent(ctx));
	return ctx;
}

size_t st_mem_free(void)
{
	size_t free_bytes, total;

	CU_OK(cuMemGetInfo(&free_bytes, &total));
	cr_assert_leq(free_bytes, total);
	return free_bytes;
}

char *st_kernel_path(const char *file)
{
	const char *dir = getenv("GS_KERNELS_DIR");
	char *path;

	cr_assert(dir && *dir, "GS_KERNELS_DIR is not set (run through meson test)");
	cr_assert_geq(asprintf(&path, "%s/%s", dir, file), 0);
	return path;
}

const char *st_arch_env(const char *var)
{
	const char *v = getenv(var);

	cr_assert(v && *v, "%s is not set (run through meson test)", var);
	return v;
}

void *st_read_kernel(const char *file, size_t *size)
{
	char *path = st_kernel_path(file);
	FILE *f = fopen(path, "rb");
	char *data;
	long n;

	cr_assert(f, "cannot open %s: %s", path, strerror(errno));
	cr_assert_eq(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	cr_assert_gt(n, 0);
	rewind(f);
	data = malloc((size_t)n + 1);
	cr_assert(data);
	cr_assert_eq(fread(data, 1, (size_t)n, f), (size_t)n);
	data[n] = '\0'; /* PTX images are NUL-terminated text */
	fclose(f);
	free(path);
	if (size)
		*size = (size_t)n;
	return data;
}

CUmodule st_load_module(const char *file)
{
	CUmodule mod;
	void *image = st_read_kernel(file, NULL);

	CU_OK(cuModuleLoadData(&mod, image));
	/* The driver copies the image: freeing it must not matter. */
	free(image);
	return mod;
}

CUfunction st_function(CUmodule mod, const char *name)
{
	CUfunction f;

	CU_OK(cuModuleGetFunction(&f, mod, name));
	return f;
}

void st_launch(CUfunction f, unsigned grid, unsigned block, unsigned shared, CUstream s,
	       void **params)
{
	CU_OK(cuLaunchKernel(f, grid, 1, 1, block, 1, 1, shared, s, params, NULL));
}

void st_gate_init(struct st_gate *g)
{
	cr_assert_eq(sem_init(&g->sem, 0, 0), 0);
}

void st_gate_open(struct st_gate *g)
{
	cr_assert_eq(sem_post(&g->sem), 0);
}

void CUDA_CB st_gate_wait(void *gate)
{
	struct st_gate *g = gate;

	while (sem_wait(&g->sem) != 0 && errno == EINTR)
		;
}

void CUDA_CB st_flag_set(void *flag)
{
	atomic_store((atomic_int *)flag, 1);
}

void st_sleep_ms(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

bool st_flag_wait(atomic_int *flag, int ms)
{
	for (int waited = 0; waited <= ms; waited += 2) {
		if (atomic_load(flag))
			return true;
		st_sleep_ms(2);
	}
	return atomic_load(flag) != 0;
}

void CUDA_CB st_log_append(void *item)
{
	struct st_log_item *it = item;
	int i = atomic_fetch_add(&it->log->count, 1);

	if (i < (int)(sizeof(it->log->tags) / sizeof(it->log->tags[0])))
		it->log->tags[i] = it->tag;
}
