/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cuMemcpy* and cuMemset*. Every copy runs on a stream worker, so it is as
 * asynchronous as on a GPU, and each call returns when the CUDA "API
 * synchronization behavior" rules say it does:
 *
 *   host to device, pageable source   the source is staged at call time (the
 *                                     synchronous form first waits for the
 *                                     stream); returns before the copy runs
 *   host to device, pinned source     synchronous form waits; Async does not
 *   device to host                    synchronous form waits; Async waits only
 *                                     for a pageable destination
 *   device to device                  never waits
 *   host to host                      always waits
 *   memset                            waits only when the target is pinned
 *                                     host memory (synchronous form)
 *
 * and a context created with CU_CTX_SYNC_MEMOPS makes every synchronous form
 * wait. Code that relies on a synchronous cuMemcpyDtoD or cuMemset having
 * finished (it has not, on a GPU) is caught that way.
 *
 * Device ranges are checked with sim_mem_access when the call is made (an
 * inaccessible one is CUDA_ERROR_INVALID_VALUE then) and again when the
 * worker runs the copy (CUDA_ERROR_ILLEGAL_ADDRESS then, which becomes the
 * context's sticky error). The worker holds the memory lock while copying so
 * that a concurrent free or unmap cannot pull pages from under it.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "sim_mem.h"

enum side {
	SIDE_DEVICE,   /* device memory: checked again at run time */
	SIDE_PINNED,   /* pinned or registered host memory: likewise */
	SIDE_PAGEABLE, /* any other host memory: the caller's to keep valid */
};

/* What an argument is declared as. */
enum role {
	ROLE_DEVICE,  /* CUdeviceptr (pinned host pointers are valid ones too) */
	ROLE_HOST,    /* void *host */
	ROLE_UNIFIED, /* cuMemcpy: whatever the address is */
};

struct copy {
	const char *fn;
	uintptr_t dst, src;
	size_t dpitch, spitch, width, height;
	enum side dside, sside;
	void *staging;
	unsigned elem; /* memset: 1, 2 or 4; 0 for a copy */
	uint32_t value;
};

static size_t extent(size_t pitch, size_t width, size_t height)
{
	return height ? (height - 1) * pitch + width : 0;
}

/* With the memory lock held: where [p, p+n) is, and whether it is usable. */
static CUresult side_check(const char *fn, uintptr_t p, size_t n, bool write, enum role role,
			   enum side *side)
{
	struct sim_range *r = sim_range_find(p);
	bool host = r && (r->type == SIM_RANGE_HOST_ALLOC || r->type == SIM_RANGE_HOST_REG);

	if (role == ROLE_HOST) {
		/* A device address passed as host memory crashes or fails on a
		 * GPU; here it would silently work, so it is refused loudly. */
		if ((r && !host) || (!r && sim_va_in_window(p, 1)))
			sim_abort(fn, "host pointer 0x%" PRIxPTR " is device memory", p);
		*side = host && n <= r->size - (p - r->start) ? SIDE_PINNED : SIDE_PAGEABLE;
		return CUDA_SUCCESS;
	}
	if (role == ROLE_UNIFIED && !r && !sim_va_in_window(p, 1)) {
		*side = SIDE_PAGEABLE;
		return CUDA_SUCCESS;
	}
	*side = host ? SIDE_PINNED : SIDE_DEVICE;
	CUresult rc = sim_mem_access_locked((CUdeviceptr)p, n, -1, write, fn);
	return rc == CUDA_SUCCESS ? rc : CUDA_ERROR_INVALID_VALUE;
}

static void fill(uint8_t *p, size_t width, unsigned elem, uint32_t value)
{
	if (elem == 1) {
		memset(p, (int)value, width);
		return;
	}
	for (size_t i = 0; i < width; i += elem)
		memcpy(p + i, &value, elem);
}

static CUresult copy_run(void *arg)
{
	struct copy *c = arg;
	CUresult rc = CUDA_SUCCESS;

	sim_mem_rdlock();
	if (c->dside != SIDE_PAGEABLE)
		rc = sim_mem_access_locked(c->dst, extent(c->dpitch, c->width, c->height), -1, true,
					   c->fn);
	if (rc == CUDA_SUCCESS && !c->elem && c->sside != SIDE_PAGEABLE)
		rc = sim_mem_access_locked(c->src, extent(c->spitch, c->width, c->height), -1,
					   false, c->fn);
	if (rc == CUDA_SUCCESS) {
		for (size_t y = 0; y < c->height; y++) {
			uint8_t *d = (uint8_t *)(c->dst + y * c->dpitch);
			if (c->elem)
				fill(d, c->width, c->elem, c->value);
			else
				memmove(d, (const uint8_t *)(c->src + y * c->spitch), c->width);
		}
	}
	sim_mem_unlock();
	return rc;
}

static void copy_free(void *arg)
{
	struct copy *c = arg;
	free(c->staging);
	free(c);
}

/* Validates both sides of c (dst_role, src_role), then submits it to the
 * stream (async) or to the calling thread's default stream, waiting as the
 * table at the top says. */
static CUresult copy_issue(const char *fn, bool ptds, CUstream hstream, bool async, struct copy *c,
			   enum role dst_role, enum role src_role)
{
	struct sim_ctx *ctx;
	CUresult rc = sim_ctx_require(fn, &ctx);
	if (rc != CUDA_SUCCESS)
		return rc;
	struct sim_stream *s = sim_stream_resolve(async ? hstream : NULL, ptds, ctx, fn);
	if (c->width == 0 || c->height == 0)
		return CUDA_SUCCESS;

	c->fn = fn;
	sim_mem_rdlock();
	rc = side_check(fn, c->dst, extent(c->dpitch, c->width, c->height), true, dst_role,
			&c->dside);
	if (rc == CUDA_SUCCESS && !c->elem)
		rc = side_check(fn, c->src, extent(c->spitch, c->width, c->height), false, src_role,
				&c->sside);
	sim_mem_unlock();
	if (rc != CUDA_SUCCESS)
		return rc;

	bool sync_memops = !async && (sim_ctx_flags(ctx) & CU_CTX_SYNC_MEMOPS);
	bool dst_host = c->dside != SIDE_DEVICE, src_host = !c->elem && c->sside != SIDE_DEVICE;
	bool wait, stage = false;
	if (c->elem)
		wait = !async && c->dside == SIDE_PINNED;
	else if (dst_host && src_host)
		wait = true;
	else if (dst_host)
		wait = !async || c->dside == SIDE_PAGEABLE;
	else if (src_host && c->sside == SIDE_PAGEABLE)
		wait = false, stage = true;
	else
		wait = !async && src_host;
	wait |= sync_memops;

	struct copy *heap = malloc(sizeof(*heap));
	if (!heap)
		return CUDA_ERROR_OUT_OF_MEMORY;
	*heap = *c;
	if (stage && !wait) {
		/* The synchronous form copies the pageable buffer only after
		 * the work queued before it (a host function may fill it). */
		if (!async && (rc = sim_stream_wait(s)) != CUDA_SUCCESS) {
			free(heap);
			return rc;
		}
		heap->staging = malloc(c->width * c->height);
		if (!heap->staging) {
			free(heap);
			return CUDA_ERROR_OUT_OF_MEMORY;
		}
		for (size_t y = 0; y < c->height; y++)
			memcpy((uint8_t *)heap->staging + y * c->width,
			       (const uint8_t *)(c->src + y * c->spitch), c->width);
		heap->src = (uintptr_t)heap->staging;
		heap->spitch = c->width;
	}
	rc = sim_stream_submit(s, copy_run, heap, copy_free);
	if (rc != CUDA_SUCCESS) {
		copy_free(heap);
		return rc;
	}
	return wait ? sim_stream_wait(s) : CUDA_SUCCESS;
}

static CUresult copy_1d(const char *fn, bool ptds, CUstream s, bool async, uintptr_t dst,
			enum role dst_role, uintptr_t src, enum role src_role, size_t n)
{
	if ((src_role == ROLE_HOST && !src && n) || (dst_role == ROLE_HOST && !dst && n))
		return CUDA_ERROR_INVALID_VALUE;
	struct copy c = { .dst = dst, .src = src, .dpitch = n, .spitch = n, .width = n, .height = 1 };
	return copy_issue(fn, ptds, s, async, &c, dst_role, src_role);
}

/* ---- 2D --------------------------------------------------------------------------- */

static CUresult copy_2d(const char *fn, bool ptds, CUstream s, bool async, const CUDA_MEMCPY2D *p,
			bool aligned)
{
	if (!p)
		return CUDA_ERROR_INVALID_VALUE;
	const struct {
		CUmemorytype type;
		const void *host;
		CUdeviceptr dev;
		CUarray array;
		size_t x, y, pitch;
	} side[2] = {
		{ p->dstMemoryType, p->dstHost, p->dstDevice, p->dstArray, p->dstXInBytes, p->dstY,
		  p->dstPitch },
		{ p->srcMemoryType, p->srcHost, p->srcDevice, p->srcArray, p->srcXInBytes, p->srcY,
		  p->srcPitch },
	};
	uintptr_t addr[2];
	enum role role[2];
	for (int i = 0; i < 2; i++) {
		size_t pitch = side[i].pitch;
		switch (side[i].type) {
		case CU_MEMORYTYPE_HOST:
			addr[i] = (uintptr_t)side[i].host;
			role[i] = ROLE_HOST;
			break;
		case CU_MEMORYTYPE_DEVICE:
			addr[i] = (uintptr_t)side[i].dev;
			role[i] = ROLE_DEVICE;
			break;
		case CU_MEMORYTYPE_UNIFIED:
			addr[i] = (uintptr_t)side[i].dev;
			role[i] = ROLE_UNIFIED;
			break;
		case CU_MEMORYTYPE_ARRAY:
			return CUDA_ERROR_NOT_SUPPORTED; /* CUDA arrays are not simulated */
		default:
			return CUDA_ERROR_INVALID_VALUE;
		}
		if (p->Height > 1 && pitch < p->WidthInBytes + side[i].x)
			return CUDA_ERROR_INVALID_VALUE;
		if (aligned && pitch > 0x7fffffff) /* CU_DEVICE_ATTRIBUTE_MAX_PITCH */
			return CUDA_ERROR_INVALID_VALUE;
		if (role[i] == ROLE_HOST && !addr[i] && p->WidthInBytes && p->Height)
			return CUDA_ERROR_INVALID_VALUE;
		addr[i] += side[i].y * pitch + side[i].x;
	}
	struct copy c = { .dst = addr[0], .src = addr[1], .dpitch = side[0].pitch,
			  .spitch = side[1].pitch, .width = p->WidthInBytes, .height = p->Height };
	return copy_issue(fn, ptds, s, async, &c, role[0], role[1]);
}

/* ---- peer ------------------------------------------------------------------------- */

static CUresult copy_peer(const char *fn, bool ptds, CUstream s, bool async, CUdeviceptr dst,
			  CUcontext dst_ctx, CUdeviceptr src, CUcontext src_ctx, size_t n)
{
	struct sim_ctx *cur;
	CUresult rc = sim_ctx_require(fn, &cur);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!dst_ctx || !src_ctx)
		return CUDA_ERROR_INVALID_CONTEXT;
	struct sim_ctx *dc = sim_handle_get(SIM_KIND_CTX, dst_ctx, fn);
	struct sim_ctx *sc = sim_handle_get(SIM_KIND_CTX, src_ctx, fn);
	if (n == 0)
		return CUDA_SUCCESS;
	/* Each pointer must be memory of its context's device. */
	if (sim_mem_device_of(dst) != dc->device || sim_mem_device_of(src) != sc->device) {
		/* Unknown addresses get the usual abort from the access check. */
		sim_mem_access(dst, n, -1, true, fn, NULL);
		sim_mem_access(src, n, -1, false, fn, NULL);
		return CUDA_ERROR_INVALID_VALUE;
	}
	if (!async) {
		/* Serialised with the pending work of both contexts. */
		if ((rc = sim_exec_sync_ctx(sc)) != CUDA_SUCCESS ||
		    (dc != sc && (rc = sim_exec_sync_ctx(dc)) != CUDA_SUCCESS))
			return rc;
	}
	struct copy c = { .dst = dst, .src = src, .dpitch = n, .spitch = n, .width = n, .height = 1 };
	rc = copy_issue(fn, ptds, s, async, &c, ROLE_DEVICE, ROLE_DEVICE);
	/* ... and with their future work, which a context other than the
	 * current one only sees once the copy is done. */
	if (rc == CUDA_SUCCESS && !async && (sc != cur || dc != cur))
		rc = sim_stream_wait(sim_stream_resolve(NULL, ptds, cur, fn));
	return rc;
}

/* ---- memset ----------------------------------------------------------------------- */

static CUresult set_2d(const char *fn, bool ptds, CUstream s, bool async, CUdeviceptr dst,
		       size_t pitch, unsigned elem, uint32_t value, size_t width, size_t height)
{
	if ((uintptr_t)dst % elem || (height > 1 && pitch % elem))
		return CUDA_ERROR_INVALID_VALUE;
	if (width > SIZE_MAX / elem || (height > 1 && pitch < width * elem))
		return CUDA_ERROR_INVALID_VALUE;
	struct copy c = { .dst = dst, .dpitch = pitch, .width = width * elem, .height = height,
			  .elem = elem, .value = value };
	return copy_issue(fn, ptds, s, async, &c, ROLE_DEVICE, ROLE_DEVICE);
}

static CUresult set_1d(const char *fn, bool ptds, CUstream s, bool async, CUdeviceptr dst,
		       unsigned elem, uint32_t value, size_t n)
{
	return set_2d(fn, ptds, s, async, dst, n * elem, elem, value, n, 1);
}

/* ---- exports ------------------------------------------------------------------------ */

/* Each entry point and its per-thread-default-stream twin (cuda.h's _ptds
 * for synchronous calls, _ptsz for those taking a stream). */
#define SIM_PAIR(name, suffix, params, call)                       \
	SIM_EXPORT CUresult name params;                           \
	SIM_EXPORT CUresult name##suffix params;                   \
	SIM_EXPORT CUresult name params                            \
	{                                                          \
		const char *fn = #name;                            \
		const bool ptds = false;                           \
		SIM_ENTER(fn);                                     \
		return call;                                       \
	}                                                          \
	SIM_EXPORT CUresult name##suffix params                    \
	{                                                          \
		const char *fn = #name #suffix;                    \
		const bool ptds = true;                            \
		SIM_ENTER(fn);                                     \
		return call;                                       \
	}

#define H ROLE_HOST
#define D ROLE_DEVICE
#define U ROLE_UNIFIED

SIM_PAIR(cuMemcpy, _ptds, (CUdeviceptr dst, CUdeviceptr src, size_t ByteCount),
	 copy_1d(fn, ptds, NULL, false, dst, U, src, U, ByteCount))
SIM_PAIR(cuMemcpyAsync, _ptsz, (CUdeviceptr dst, CUdeviceptr src, size_t ByteCount, CUstream hStream),
	 copy_1d(fn, ptds, hStream, true, dst, U, src, U, ByteCount))
SIM_PAIR(cuMemcpyHtoD_v2, _ptds, (CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount),
	 copy_1d(fn, ptds, NULL, false, dstDevice, D, (uintptr_t)srcHost, H, ByteCount))
SIM_PAIR(cuMemcpyDtoH_v2, _ptds, (void *dstHost, CUdeviceptr srcDevice, size_t ByteCount),
	 copy_1d(fn, ptds, NULL, false, (uintptr_t)dstHost, H, srcDevice, D, ByteCount))
SIM_PAIR(cuMemcpyDtoD_v2, _ptds, (CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount),
	 copy_1d(fn, ptds, NULL, false, dstDevice, D, srcDevice, D, ByteCount))
SIM_PAIR(cuMemcpyHtoDAsync_v2, _ptsz,
	 (CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount, CUstream hStream),
	 copy_1d(fn, ptds, hStream, true, dstDevice, D, (uintptr_t)srcHost, H, ByteCount))
SIM_PAIR(cuMemcpyDtoHAsync_v2, _ptsz,
	 (void *dstHost, CUdeviceptr srcDevice, size_t ByteCount, CUstream hStream),
	 copy_1d(fn, ptds, hStream, true, (uintptr_t)dstHost, H, srcDevice, D, ByteCount))
SIM_PAIR(cuMemcpyDtoDAsync_v2, _ptsz,
	 (CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount, CUstream hStream),
	 copy_1d(fn, ptds, hStream, true, dstDevice, D, srcDevice, D, ByteCount))
SIM_PAIR(cuMemcpyPeer, _ptds,
	 (CUdeviceptr dstDevice, CUcontext dstContext, CUdeviceptr srcDevice, CUcontext srcContext,
	  size_t ByteCount),
	 copy_peer(fn, ptds, NULL, false, dstDevice, dstContext, srcDevice, srcContext, ByteCount))
SIM_PAIR(cuMemcpyPeerAsync, _ptsz,
	 (CUdeviceptr dstDevice, CUcontext dstContext, CUdeviceptr srcDevice, CUcontext srcContext,
	  size_t ByteCount, CUstream hStream),
	 copy_peer(fn, ptds, hStream, true, dstDevice, dstContext, srcDevice, srcContext, ByteCount))
SIM_PAIR(cuMemcpy2D_v2, _ptds, (const CUDA_MEMCPY2D *pCopy),
	 copy_2d(fn, ptds, NULL, false, pCopy, true))
SIM_PAIR(cuMemcpy2DUnaligned_v2, _ptds, (const CUDA_MEMCPY2D *pCopy),
	 copy_2d(fn, ptds, NULL, false, pCopy, false))
SIM_PAIR(cuMemcpy2DAsync_v2, _ptsz, (const CUDA_MEMCPY2D *pCopy, CUstream hStream),
	 copy_2d(fn, ptds, hStream, true, pCopy, true))

SIM_PAIR(cuMemsetD8_v2, _ptds, (CUdeviceptr dstDevice, unsigned char uc, size_t N),
	 set_1d(fn, ptds, NULL, false, dstDevice, 1, uc, N))
SIM_PAIR(cuMemsetD16_v2, _ptds, (CUdeviceptr dstDevice, unsigned short us, size_t N),
	 set_1d(fn, ptds, NULL, false, dstDevice, 2, us, N))
SIM_PAIR(cuMemsetD32_v2, _ptds, (CUdeviceptr dstDevice, unsigned int ui, size_t N),
	 set_1d(fn, ptds, NULL, false, dstDevice, 4, ui, N))
SIM_PAIR(cuMemsetD2D8_v2, _ptds,
	 (CUdeviceptr dstDevice, size_t dstPitch, unsigned char uc, size_t Width, size_t Height),
	 set_2d(fn, ptds, NULL, false, dstDevice, dstPitch, 1, uc, Width, Height))
SIM_PAIR(cuMemsetD2D16_v2, _ptds,
	 (CUdeviceptr dstDevice, size_t dstPitch, unsigned short us, size_t Width, size_t Height),
	 set_2d(fn, ptds, NULL, false, dstDevice, dstPitch, 2, us, Width, Height))
SIM_PAIR(cuMemsetD2D32_v2, _ptds,
	 (CUdeviceptr dstDevice, size_t dstPitch, unsigned int ui, size_t Width, size_t Height),
	 set_2d(fn, ptds, NULL, false, dstDevice, dstPitch, 4, ui, Width, Height))
SIM_PAIR(cuMemsetD8Async, _ptsz, (CUdeviceptr dstDevice, unsigned char uc, size_t N, CUstream hStream),
	 set_1d(fn, ptds, hStream, true, dstDevice, 1, uc, N))
SIM_PAIR(cuMemsetD16Async, _ptsz,
	 (CUdeviceptr dstDevice, unsigned short us, size_t N, CUstream hStream),
	 set_1d(fn, ptds, hStream, true, dstDevice, 2, us, N))
SIM_PAIR(cuMemsetD32Async, _ptsz, (CUdeviceptr dstDevice, unsigned int ui, size_t N, CUstream hStream),
	 set_1d(fn, ptds, hStream, true, dstDevice, 4, ui, N))
SIM_PAIR(cuMemsetD2D8Async, _ptsz,
	 (CUdeviceptr dstDevice, size_t dstPitch, unsigned char uc, size_t Width, size_t Height,
	  CUstream hStream),
	 set_2d(fn, ptds, hStream, true, dstDevice, dstPitch, 1, uc, Width, Height))
SIM_PAIR(cuMemsetD2D16Async, _ptsz,
	 (CUdeviceptr dstDevice, size_t dstPitch, unsigned short us, size_t Width, size_t Height,
	  CUstream hStream),
	 set_2d(fn, ptds, hStream, true, dstDevice, dstPitch, 2, us, Width, Height))
SIM_PAIR(cuMemsetD2D32Async, _ptsz,
	 (CUdeviceptr dstDevice, size_t dstPitch, unsigned int ui, size_t Width, size_t Height,
	  CUstream hStream),
	 set_2d(fn, ptds, hStream, true, dstDevice, dstPitch, 4, ui, Width, Height))
