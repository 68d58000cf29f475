/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Stand-in for sim_stream.c, built only when that file is absent (see
 * meson.build), so that the rest of the simulator links and its memory and
 * context code can be exercised alone. Work runs synchronously on the
 * calling thread and only the default streams exist: any created stream
 * handle aborts. Not a simulation of streams.
 */
#include "sim_internal.h"

/* One placeholder per kind of default stream; never dereferenced. */
static char legacy_stream, per_thread_stream;

struct sim_stream *sim_stream_resolve(CUstream s, bool ptds, struct sim_ctx *ctx, const char *fn)
{
	if (!ctx)
		sim_abort(fn, "default stream used without a context");
	if (s == CU_STREAM_PER_THREAD || (s == NULL && ptds))
		return (struct sim_stream *)&per_thread_stream;
	if (s == NULL || s == CU_STREAM_LEGACY)
		return (struct sim_stream *)&legacy_stream;
	sim_abort(fn, "stream %p: this build has no streams (sim_stream.c missing)", (void *)s);
}

CUresult sim_stream_submit(struct sim_stream *s, CUresult (*work)(void *arg), void *arg,
			   void (*done)(void *arg))
{
	struct sim_ctx *ctx = sim_ctx_current();
	CUresult rc = ctx ? sim_ctx_sticky(ctx) : CUDA_SUCCESS;

	if (rc != CUDA_SUCCESS)
		return rc;
	rc = work(arg);
	if (rc != CUDA_SUCCESS && ctx)
		sim_ctx_set_sticky(ctx, rc);
	if (done)
		done(arg);
	return CUDA_SUCCESS;
}

CUresult sim_stream_wait(struct sim_stream *s)
{
	struct sim_ctx *ctx = sim_ctx_current();
	return ctx ? sim_ctx_sticky(ctx) : CUDA_SUCCESS;
}

CUresult sim_exec_sync_ctx(struct sim_ctx *ctx)
{
	return sim_ctx_sticky(ctx);
}

void sim_exec_destroy_ctx(struct sim_ctx *ctx)
{
}

bool sim_exec_in_user_code(void)
{
	return false;
}
