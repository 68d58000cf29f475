/* SPDX-License-Identifier: Apache-2.0 */
/* What libgsctor's constructor did, for gs-ctor's main() to check. */
#ifndef GS_CTOR_H
#define GS_CTOR_H

#include <cuda.h>

#define GS_CTOR_WORDS 1024
#define GS_CTOR_PATTERN 0xc0ffee11u

enum gs_ctor_stage {
	GS_CTOR_STAGE_NOT_RUN = 0,
	GS_CTOR_STAGE_INIT,
	GS_CTOR_STAGE_DEVICE,
	GS_CTOR_STAGE_CONTEXT,
	GS_CTOR_STAGE_ALLOC,
	GS_CTOR_STAGE_FILL,
	GS_CTOR_STAGE_DONE,
};

struct gs_ctor_state {
	enum gs_ctor_stage stage; /* the last stage started */
	CUresult rc;              /* its result */
	CUdevice dev;
	CUcontext ctx;
	CUdeviceptr ptr;
};

extern struct gs_ctor_state gs_ctor_state;

#endif
