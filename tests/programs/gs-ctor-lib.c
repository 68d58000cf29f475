/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libgsctor: a shared library whose constructor uses the driver before the
 * program's main() runs, as some libraries do at load time. It exists to test
 * that the shim copes with a driver call arriving before anything else had a
 * chance to initialise it (libfaketime has the same kind of test). The
 * results are left in gs_ctor_state for gs-ctor's main() to check.
 */
#include <cuda.h>

#include "gs-ctor.h"

struct gs_ctor_state gs_ctor_state;

__attribute__((constructor)) static void gs_ctor_init(void)
{
	struct gs_ctor_state *st = &gs_ctor_state;

	st->stage = GS_CTOR_STAGE_INIT;
	if ((st->rc = cuInit(0)) != CUDA_SUCCESS)
		return;
	st->stage = GS_CTOR_STAGE_DEVICE;
	if ((st->rc = cuDeviceGet(&st->dev, 0)) != CUDA_SUCCESS)
		return;
	st->stage = GS_CTOR_STAGE_CONTEXT;
	if ((st->rc = cuDevicePrimaryCtxRetain(&st->ctx, st->dev)) != CUDA_SUCCESS ||
	    (st->rc = cuCtxSetCurrent(st->ctx)) != CUDA_SUCCESS)
		return;
	st->stage = GS_CTOR_STAGE_ALLOC;
	if ((st->rc = cuMemAlloc(&st->ptr, GS_CTOR_WORDS * sizeof(unsigned))) != CUDA_SUCCESS)
		return;
	st->stage = GS_CTOR_STAGE_FILL;
	if ((st->rc = cuMemsetD32(st->ptr, GS_CTOR_PATTERN, GS_CTOR_WORDS)) != CUDA_SUCCESS)
		return;
	st->stage = GS_CTOR_STAGE_DONE;
}
