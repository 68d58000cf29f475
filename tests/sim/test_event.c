/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Events: query and synchronise, elapsed time, the documented errors of
 * cuEventElapsedTime, record with flags.
 */
#include "sim_test.h"

TestSuite(event, .timeout = SIM_TEST_TIMEOUT);

static void CUDA_CB sleep_30ms(void *arg)
{
	st_sleep_ms(30);
}

Test(event, unrecorded_event_is_complete)
{
	CUevent e;

	st_init(0);
	CU_OK(cuEventCreate(&e, 0));
	CU_OK(cuEventQuery(e));
	CU_OK(cuEventSynchronize(e));
	CU_OK(cuEventDestroy(e));
}

Test(event, query_follows_the_stream)
{
	struct st_gate gate;
	CUstream s;
	CUevent e;

	st_init(0);
	st_gate_init(&gate);
	CU_OK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
	CU_OK(cuEventCreate(&e, CU_EVENT_BLOCKING_SYNC));
	CU_OK(cuLaunchHostFunc(s, st_gate_wait, &gate));
	CU_OK(cuEventRecord(e, s));
	CU_ERR(cuEventQuery(e), CUDA_ERROR_NOT_READY);
	st_sleep_ms(30);
	CU_ERR(cuEventQuery(e), CUDA_ERROR_NOT_READY);
	st_gate_open(&gate);
	CU_OK(cuEventSynchronize(e));
	CU_OK(cuEventQuery(e));
}

Test(event, elapsed_time)
{
	CUstream s;
	CUevent a, b;
	float ms = -1.0f;

	st_init(0);
	CU_OK(cuStreamCreate(&s, 0));
	CU_OK(cuEventCreate(&a, 0));
	CU_OK(cuEventCreate(&b, 0));
	CU_OK(cuEventRecord(a, s));
	CU_OK(cuLaunchHostFunc(s, sleep_30ms, NULL));
	CU_OK(cuEventRecord(b, s));
	CU_OK(cuEventSynchronize(b));
	CU_OK(cuEventElapsedTime(&ms, a, b));
	/* Measured when the stream reached each event, not when recorded. */
	cr_assert_geq(ms, 29.0f, "elapsed %f ms across a 30 ms host function", (double)ms);
	cr_assert_lt(ms, 5000.0f);
}

Test(event, elapsed_time_errors)
{
	struct st_gate gate;
	CUstream s;
	CUevent a, b, untimed, never;
	float ms;

	st_init(0);
	st_gate_init(&gate);
	CU_OK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
	CU_OK(cuEventCreate(&a, 0));
	CU_OK(cuEventCreate(&b, 0));
	CU_OK(cuEventCreate(&never, 0));
	CU_OK(cuEventCreate(&untimed, CU_EVENT_DISABLE_TIMING));
	CU_OK(cuEventRecord(a, s));
	CU_OK(cuEventRecord(untimed, s));
	CU_OK(cuStreamSynchronize(s));

	/* Documented: timing disabled or never recorded -> invalid handle. */
	CU_ERR(cuEventElapsedTime(&ms, a, untimed), CUDA_ERROR_INVALID_HANDLE);
	CU_ERR(cuEventElapsedTime(&ms, a, never), CUDA_ERROR_INVALID_HANDLE);

	/* Recorded but not reached yet -> not ready. */
	CU_OK(cuLaunchHostFunc(s, st_gate_wait, &gate));
	CU_OK(cuEventRecord(b, s));
	CU_ERR(cuEventElapsedTime(&ms, a, b), CUDA_ERROR_NOT_READY);
	st_gate_open(&gate);
	CU_OK(cuEventSynchronize(b));
	CU_OK(cuEventElapsedTime(&ms, a, b));
	CU_ERR(cuEventElapsedTime(NULL, a, b), CUDA_ERROR_INVALID_VALUE);
}

Test(event, record_on_default_streams)
{
	CUevent e;

	st_init(0);
	CU_OK(cuEventCreate(&e, 0));
	CU_OK(cuEventRecord(e, NULL));
	CU_OK(cuEventSynchronize(e));
	CU_OK(cuEventRecord(e, CU_STREAM_PER_THREAD));
	CU_OK(cuEventSynchronize(e));
	CU_OK(cuEventRecordWithFlags(e, CU_STREAM_LEGACY, CU_EVENT_RECORD_DEFAULT));
	CU_OK(cuEventSynchronize(e));
}

Test(event, bad_flags)
{
	CUevent e;

	st_init(0);
	CU_ERR(cuEventCreate(&e, 0x100), CUDA_ERROR_INVALID_VALUE);
}

/* Re-recording moves the event to the new position. */
Test(event, re_record)
{
	struct st_gate gate;
	CUstream s;
	CUevent e;

	st_init(0);
	st_gate_init(&gate);
	CU_OK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
	CU_OK(cuEventCreate(&e, CU_EVENT_DISABLE_TIMING));
	CU_OK(cuEventRecord(e, s));
	CU_OK(cuEventSynchronize(e));
	CU_OK(cuLaunchHostFunc(s, st_gate_wait, &gate));
	CU_OK(cuEventRecord(e, s));
	CU_ERR(cuEventQuery(e), CUDA_ERROR_NOT_READY);
	st_gate_open(&gate);
	CU_OK(cuEventSynchronize(e));
}
