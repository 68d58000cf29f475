/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Helpers shared by the simulated driver's Criterion tests.
 *
 * Every test runs in a process of its own (Criterion's default), so a test
 * sets SIMCUDA_* variables with setenv() before its first driver call and
 * gets a simulator configured for it alone. The tests are written against
 * cuda.h and linked with the toolkit's stub libcuda, like an application:
 * what they check is what the real driver does, and they could run on a GPU
 * machine as well (except where a comment says they test a simcuda promise).
 */
#ifndef SIM_TEST_H
#define SIM_TEST_H

#include <criterion/criterion.h>
#include <cuda.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

/* Suites time out rather than hang the whole run when a stream never drains. */
#define SIM_TEST_TIMEOUT 20

/* "CUDA_ERROR_OUT_OF_MEMORY (2)" for messages; never NULL. */
const char *st_err(CUresult rc);

#define CU_OK(call)                                                                  \
	do {                                                                         \
		CUresult st_rc_ = (call);                                            \
		cr_assert_eq(st_rc_, CUDA_SUCCESS, "%s: %s", #call, st_err(st_rc_)); \
	} while (0)

#define CU_ERR(call, want)                                                           \
	do {                                                                         \
		CUresult st_rc_ = (call);                                            \
		CUresult st_want_ = (want);                                          \
		cr_assert_eq(st_rc_, st_want_, "%s: %s, expected %s", #call,         \
			     st_err(st_rc_), st_err(st_want_));                      \
	} while (0)

/* Any error: where the driver documents only that the call fails. */
#define CU_FAILS(call)                                                               \
	do {                                                                         \
		CUresult st_rc_ = (call);                                            \
		cr_assert_neq(st_rc_, CUDA_SUCCESS, "%s succeeded, expected an error",\
			      #call);                                                \
	} while (0)

/* setenv that cannot silently fail. */
void st_setenv(const char *name, const char *value);

/* cuInit, then retain device `dev`'s primary context and make it current. */
CUcontext st_init(int dev);
CUdevice st_device(int ordinal);

/* Free memory of the current context's device, from cuMemGetInfo. */
size_t st_mem_free(void);

/* Kernel images built by tests/kernels (found through $GS_KERNELS_DIR). */
char *st_kernel_path(const char *file);              /* malloc'd */
void *st_read_kernel(const char *file, size_t *size); /* malloc'd, NUL-terminated */
const char *st_arch_env(const char *var);             /* $GS_ARCH_LOW etc. */
CUmodule st_load_module(const char *file);
CUfunction st_function(CUmodule mod, const char *name);

/* A host function / kernel launch helpers. */
void st_launch(CUfunction f, unsigned grid, unsigned block, unsigned shared, CUstream s,
	       void **params);

/* A gate: host function st_gate_wait blocks the stream it runs on until the
 * test calls st_gate_open. */
struct st_gate {
	sem_t sem;
};
void st_gate_init(struct st_gate *g);
void st_gate_open(struct st_gate *g);
void CUDA_CB st_gate_wait(void *gate); /* a CUhostFn */

/* A flag that host function st_flag_set sets. */
void CUDA_CB st_flag_set(void *flag); /* atomic_int * */
/* Polls the flag for up to ms milliseconds; returns whether it got set. */
bool st_flag_wait(atomic_int *flag, int ms);
void st_sleep_ms(int ms);

/* Sequence log: host function st_log_append appends its tag in order. */
struct st_log {
	atomic_int count;
	int tags[1024];
};
struct st_log_item {
	struct st_log *log;
	int tag;
};
void CUDA_CB st_log_append(void *item); /* struct st_log_item * */

#endif
