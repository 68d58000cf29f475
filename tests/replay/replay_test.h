/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The replay tests: a driver-API workload linked with the shim's internals
 * (libgpuswap_core), run against the simulated driver with two devices of
 * different architectures. The workload sets up state with known contents,
 * the tests move it between the devices with the gs_replay_* operations and
 * check every byte, the module variables, where kernels run, and the
 * tracker's handles. Exit 0 pass, 1 fail, 77 skip.
 */
#ifndef REPLAY_TEST_H
#define REPLAY_TEST_H

#include <cuda.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

extern int replay_failures;

#define CHECK(cond, ...)                                                          \
	do {                                                                      \
		if (!(cond)) {                                                    \
			fprintf(stderr, "%s:%d: FAIL (%s): ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__);                             \
			fputc('\n', stderr);                                      \
			replay_failures++;                                        \
		}                                                                 \
	} while (0)

/* A check that makes the rest of the test meaningless. */
#define REQUIRE(cond, ...)                                                        \
	do {                                                                      \
		if (!(cond)) {                                                    \
			CHECK(cond, __VA_ARGS__);                                 \
			return -1;                                                \
		}                                                                 \
	} while (0)

#define CU(call)                                                                  \
	do {                                                                      \
		CUresult cu_rc_ = (call);                                         \
		REQUIRE(cu_rc_ == CUDA_SUCCESS, "%s: %d", #call, (int)cu_rc_);   \
	} while (0)

/* Set by the kernel emulations (replay_emu.c). */
extern _Atomic int replay_last_device;
extern _Atomic unsigned replay_launches;

/* ---- the workload (workload.c) ---------------------------------------------------- */

struct wl {
	int dev;                      /* app ordinal it was made on */
	CUcontext ctx;                /* created context, current on the main thread */
	CUcontext pctx;               /* the device's primary context, retained */
	CUmodule mod;
	CUfunction f_fill, f_gwrite, f_gread;
	CUdeviceptr g_magic;          /* as cuModuleGetGlobal gave it */
	size_t g_magic_size;
	CUdeviceptr big, small, out;
	size_t big_size, small_size, out_size;
	void *pinned;                 /* cuMemAllocHost */
	size_t pinned_size;
	void *reg;                    /* cuMemHostRegister of our own memory */
	size_t reg_size;
	CUdeviceptr vmm;              /* the application's own VMM range */
	size_t vmm_size;
	CUmemGenericAllocationHandle phys;
	CUstream stream;
	CUevent event;
	/* expected contents */
	unsigned gen;
	int magic;
	float table_base;
	size_t granularity;
};

/* Set up everything on app device `dev`, loading the module at `path`. */
int wl_setup(struct wl *w, int dev, const char *path);
/* Check every byte and object as it must be on real device `rdev`. */
int wl_verify(struct wl *w, int rdev);
/* The same through the application's own handles and entry points. */
int wl_verify_app(struct wl *w, int rdev);
/* Destroy everything, through the application's entry points. */
int wl_teardown(struct wl *w);
/* Change contents on the device it runs on now (kernels, copies). */
int wl_mutate(struct wl *w);

/* The current real handle of an app handle (the tracker's map). */
uint64_t wl_real(int kind, uint64_t app);
/* Launch through the real driver with translated handles, in the real
 * context of app context `ctx`, and wait. */
CUresult wl_launch(struct wl *w, CUfunction app_fn, void **params);

const char *wl_kernels(const char *name);

#endif
