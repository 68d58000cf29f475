/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gs-driver-ckpt: the driver's own answer to gpu-freeze/gpu-thaw, as the
 * baseline the kit measures gpuswap against. It drives another process
 * through the checkpoint API of cuda.h (CUDA 12.8+ / driver 570+):
 *
 *   cuCheckpointProcessLock        further CUDA calls of PID block
 *   cuCheckpointProcessCheckpoint  device memory moves to host memory and
 *                                  the GPU is released
 *   cuCheckpointProcessRestore     back on the GPU (same addresses)
 *   cuCheckpointProcessUnlock      PID runs on
 *
 *   gs-driver-ckpt [--lock-timeout-ms N] PID   the round trip, each step timed
 *   gs-driver-ckpt --state PID                 the process state only
 *
 * The calls must come from another process than the one checkpointed, and
 * this one calls cuInit first: restore requires it unless persistence mode is
 * on. Output: one JSON object per line. Exit status: 0 when every step
 * succeeded, 3 when the driver refuses the API here (CUDA_ERROR_NOT_SUPPORTED
 * at the first step: a sandbox or an old driver), 1 on any other failure
 * (after trying to leave PID running), 2 on a usage error.
 */
#include <cuda.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *err_name(CUresult rc)
{
	const char *s = NULL;

	if (cuGetErrorName(rc, &s) != CUDA_SUCCESS || !s)
		return "CUDA_ERROR_UNKNOWN_CODE";
	return s;
}

static const char *state_name(int pid)
{
	CUprocessState state;

	if (cuCheckpointProcessGetState(pid, &state) != CUDA_SUCCESS)
		return "unknown";
	switch (state) {
	case CU_PROCESS_STATE_RUNNING:
		return "running";
	case CU_PROCESS_STATE_LOCKED:
		return "locked";
	case CU_PROCESS_STATE_CHECKPOINTED:
		return "checkpointed";
	case CU_PROCESS_STATE_FAILED:
		return "failed";
	}
	return "unknown";
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void report(const char *step, CUresult rc, double seconds, int pid)
{
	printf("{\"part\":\"%s\",\"result\":\"%s\",\"seconds\":%.6f,\"state_after\":\"%s\"}\n", step,
	       err_name(rc), seconds, state_name(pid));
	fflush(stdout);
}

enum step { LOCK, CHECKPOINT, RESTORE, UNLOCK, NSTEPS };

static CUresult run_step(enum step s, int pid, unsigned int lock_timeout_ms)
{
	switch (s) {
	case LOCK: {
		CUcheckpointLockArgs args;

		memset(&args, 0, sizeof(args));
		args.timeoutMs = lock_timeout_ms;
		return cuCheckpointProcessLock(pid, &args);
	}
	case CHECKPOINT: {
		CUcheckpointCheckpointArgs args;

		memset(&args, 0, sizeof(args));
		return cuCheckpointProcessCheckpoint(pid, &args);
	}
	case RESTORE: {
		/* No GPU pairs: back onto the same device. */
		CUcheckpointRestoreArgs args;

		memset(&args, 0, sizeof(args));
		return cuCheckpointProcessRestore(pid, &args);
	}
	case UNLOCK: {
		CUcheckpointUnlockArgs args;

		memset(&args, 0, sizeof(args));
		return cuCheckpointProcessUnlock(pid, &args);
	}
	case NSTEPS:
		break;
	}
	return CUDA_ERROR_INVALID_VALUE;
}

/* After a failure: never leave the measured process stuck. */
static void recover(int pid, unsigned int lock_timeout_ms)
{
	CUprocessState state;

	if (cuCheckpointProcessGetState(pid, &state) != CUDA_SUCCESS)
		return;
	if (state == CU_PROCESS_STATE_CHECKPOINTED) {
		report("recover_restore", run_step(RESTORE, pid, lock_timeout_ms), 0, pid);
		if (cuCheckpointProcessGetState(pid, &state) != CUDA_SUCCESS)
			return;
	}
	if (state == CU_PROCESS_STATE_LOCKED)
		report("recover_unlock", run_step(UNLOCK, pid, lock_timeout_ms), 0, pid);
}

int main(int argc, char **argv)
{
	static const char *const names[NSTEPS] = { "lock", "checkpoint", "restore", "unlock" };
	unsigned int lock_timeout_ms = 10000;
	bool state_only = false;
	int pid = 0, tid = 0, version = 0;
	double total = 0;
	CUresult rc;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--lock-timeout-ms") && i + 1 < argc)
			lock_timeout_ms = (unsigned int)strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--state"))
			state_only = true;
		else if (!pid && argv[i][0] >= '1' && argv[i][0] <= '9')
			pid = atoi(argv[i]);
		else
			pid = -1;
	}
	if (pid <= 0) {
		fprintf(stderr, "usage: gs-driver-ckpt [--lock-timeout-ms N] PID\n"
				"       gs-driver-ckpt --state PID\n");
		return 2;
	}

	rc = cuInit(0);
	cuDriverGetVersion(&version);
	printf("{\"part\":\"init\",\"result\":\"%s\",\"cuda_driver_version\":%d,\"state\":\"%s\"}\n",
	       err_name(rc), version, rc == CUDA_SUCCESS ? state_name(pid) : "unknown");
	fflush(stdout);
	if (rc != CUDA_SUCCESS)
		return 1;
	rc = cuCheckpointProcessGetRestoreThreadId(pid, &tid);
	printf("{\"part\":\"restore_thread\",\"result\":\"%s\",\"tid\":%d}\n", err_name(rc), tid);
	fflush(stdout);
	if (state_only)
		return 0;

	for (int s = LOCK; s < NSTEPS; s++) {
		double t0 = now_s(), dt;

		rc = run_step((enum step)s, pid, lock_timeout_ms);
		dt = now_s() - t0;
		total += dt;
		report(names[s], rc, dt, pid);
		if (rc != CUDA_SUCCESS) {
			recover(pid, lock_timeout_ms);
			return s == LOCK && rc == CUDA_ERROR_NOT_SUPPORTED ? 3 : 1;
		}
	}
	printf("{\"part\":\"summary\",\"result\":\"CUDA_SUCCESS\",\"seconds\":%.6f}\n", total);
	return 0;
}
