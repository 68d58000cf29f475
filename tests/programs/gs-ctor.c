/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gs-ctor: checks, in main(), what libgsctor's constructor did with the
 * driver before main() ran: the context it made current on the main thread
 * is still current, its allocation is still valid and holds what it wrote,
 * and the driver keeps working (another allocation, a free).
 * Exit 0 and "ctor ok" on success.
 */
#include <cuda.h>
#include <stdio.h>
#include <stdlib.h>

#include "gs-ctor.h"

static int fail(const char *what, CUresult rc)
{
	const char *name = NULL;

	if (cuGetErrorName(rc, &name) != CUDA_SUCCESS || !name)
		name = "unknown error";
	fprintf(stderr, "gs-ctor: %s: %s (%d)\n", what, name, (int)rc);
	return 1;
}

int main(void)
{
	static unsigned host[GS_CTOR_WORDS];
	const struct gs_ctor_state *st = &gs_ctor_state;
	CUcontext cur = NULL;
	CUdeviceptr base = 0, extra = 0;
	size_t size = 0;
	CUresult rc;

	if (st->stage != GS_CTOR_STAGE_DONE) {
		fprintf(stderr, "gs-ctor: the constructor stopped at stage %d\n", (int)st->stage);
		return fail("constructor", st->rc);
	}
	if ((rc = cuCtxGetCurrent(&cur)) != CUDA_SUCCESS)
		return fail("cuCtxGetCurrent", rc);
	if (cur != st->ctx) {
		fprintf(stderr, "gs-ctor: current context %p, the constructor made %p current\n",
			(void *)cur, (void *)st->ctx);
		return 1;
	}
	if ((rc = cuMemGetAddressRange(&base, &size, st->ptr + 8)) != CUDA_SUCCESS)
		return fail("cuMemGetAddressRange", rc);
	if (base != st->ptr || size < GS_CTOR_WORDS * sizeof(unsigned)) {
		fprintf(stderr, "gs-ctor: allocation range %#llx+%zu, expected %#llx+%zu\n",
			(unsigned long long)base, size, (unsigned long long)st->ptr,
			GS_CTOR_WORDS * sizeof(unsigned));
		return 1;
	}
	if ((rc = cuMemcpyDtoH(host, st->ptr, sizeof(host))) != CUDA_SUCCESS)
		return fail("cuMemcpyDtoH", rc);
	for (int i = 0; i < GS_CTOR_WORDS; i++) {
		if (host[i] != GS_CTOR_PATTERN) {
			fprintf(stderr, "gs-ctor: word %d is %08x, expected %08x\n", i, host[i],
				GS_CTOR_PATTERN);
			return 1;
		}
	}
	if ((rc = cuMemAlloc(&extra, 4096)) != CUDA_SUCCESS)
		return fail("cuMemAlloc", rc);
	if ((rc = cuMemFree(extra)) != CUDA_SUCCESS)
		return fail("cuMemFree", rc);
	if ((rc = cuMemFree(st->ptr)) != CUDA_SUCCESS)
		return fail("cuMemFree", rc);
	if ((rc = cuDevicePrimaryCtxRelease(st->dev)) != CUDA_SUCCESS)
		return fail("cuDevicePrimaryCtxRelease", rc);
	printf("ctor ok\n");
	return 0;
}
