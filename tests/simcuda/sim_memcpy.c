/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cuMemcpy* (1D, 2D, 3D, peer) and cuMemset*. Every copy runs on a stream worker, so it is as
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
 *
 * A copy is made by a device: the current context's (a peer copy: each
 * side's own context's). VMM memory must be mapped readable (source) or
 * writable (destination) for that device with cuMemSetAccess, as on a GPU,
 * where a copy engine cannot reach a mapping its device has no access to.
 * cuMemAlloc memory of another device is reachable by any copy (the driver
 * stages it through the host when the devices are not peers).
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

/* Up to three dimensions: `depth` slices of `height` rows of `width` bytes,
 * rows `pitch` apart and slices `slice` apart on each side. */
struct copy {
	const char *fn;
	uintptr_t dst, src;
	size_t dpitch, spitch, width, height;
	size_t dslice, sslice, depth;
	enum side dside, sside;
	/* The device copying each side (VMM access is checked for it); set by
	 * peer copies, else the current context's. */
	int ddev, sdev;
	bool devs_set;
	void *staging;
	unsigned elem; /* memset: 1, 2 or 4; 0 for a copy */
	uint32_t value;
};

/* Bytes from the first to the past-the-end byte touched on one side. */
static size_t extent(size_t slice, size_t pitch, const struct copy *c)
{
	if (!c->width || !c->height || !c->depth)
		return 0;
	return (c->depth - 1) * slice + (c->height - 1) * pitch + c->width;
}

/* Whether extent() can be computed without overflow. */
static bool extent_ok(size_t slice, size_t pitch, const struct copy *c)
{
	size_t a, b;
	return !__builtin_mul_overflow(c->depth ? c->depth - 1 : 0, slice, &a) &&
	       !__builtin_mul_overflow(c->height ? c->height - 1 : 0, pitch, &b) &&
	       !__builtin_add_overflow(a, b, &a) && !__builtin_add_overflow(a, c->width, &a);
}

/* With the memory lock held: whether device `dev` can copy [p, p+n). Only VMM
 * mappings have per-device access for copies (see the top). */
static CUresult copy_access(uintptr_t p, size_t n, int dev, bool write, const char *fn)
{
	struct sim_range *r = sim_range_find(p);

	return sim_mem_access_locked((CUdeviceptr)p, n,
				     r && r->type == SIM_RANGE_RESERVE ? dev : -1, write, fn);
}

/* With the memory lock held: where [p, p+n) is, and whether device `dev`
 * can copy it. */
static CUresult side_check(const char *fn, uintptr_t p, size_t n, int dev, bool write,
			   enum role role, enum side *side)
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
	CUresult rc = copy_access(p, n, dev, write, fn);
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
		rc = copy_access(c->dst, extent(c->dslice, c->dpitch, c), c->ddev, true, c->fn);
	if (rc == CUDA_SUCCESS && !c->elem && c->sside != SIDE_PAGEABLE)
		rc = copy_access(c->src, extent(c->sslice, c->spitch, c), c->sdev, false, c->fn);
	for (size_t z = 0; rc == CUDA_SUCCESS && z < c->depth; z++) {
		for (size_t y = 0; y < c->height; y++) {
			uint8_t *d = (uint8_t *)(c->dst + z * c->dslice + y * c->dpitch);
			if (c->elem)
				fill(d, c->width, c->elem, c->value);
			else
				memmove(d, (const uint8_t *)(c->src + z * c->sslice + y * c->spitch),
					c->width);
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
	if (!c->depth)
		c->depth = 1;
	if (c->width == 0 || c->height == 0)
		return CUDA_SUCCESS;
	if (!extent_ok(c->dslice, c->dpitch, c) || (!c->elem && !extent_ok(c->sslice, c->spitch, c)))
		return CUDA_ERROR_INVALID_VALUE;

	c->fn = fn;
	if (!c->devs_set)
		c->ddev = c->sdev = ctx->device;
	sim_mem_rdlock();
	rc = side_check(fn, c->dst, extent(c->dslice, c->dpitch, c), c->ddev, true, dst_role,
			&c->dside);
	if (rc == CUDA_SUCCESS && !c->elem)
		rc = side_check(fn, c->src, extent(c->sslice, c->spitch, c), c->sdev, false,
				src_role, &c->sside);
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
		size_t rows = c->height * c->depth;
		heap->staging = rows <= SIZE_MAX / c->width ? malloc(c->width * rows) : NULL;
		if (!heap->staging) {
			free(heap);
			return CUDA_ERROR_OUT_OF_MEMORY;
		}
		uint8_t *to = heap->staging;
		for (size_t z = 0; z < c->depth; z++)
			for (size_t y = 0; y < c->height; y++, to += c->width)
				memcpy(to, (const uint8_t *)(c->src + z * c->sslice + y * c->spitch),
				       c->width);
		heap->src = (uintptr_t)heap->staging;
		heap->spitch = c->width;
		heap->sslice = c->width * c->height;
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
	struct copy c = { .dst = dst, .src = src, .dpitch = n, .spitch = n, .width = n, .height = 1,
			  .depth = 1 };
	return copy_issue(fn, ptds, s, async, &c, dst_role, src_role);
}

/* ---- 2D and 3D ---------------------------------------------------------------------- */

/* One side of a CUDA_MEMCPY2D / CUDA_MEMCPY3D(_PEER). */
struct side_desc {
	CUmemorytype type;
	const void *host;
	CUdeviceptr dev;
	CUarray array;
	size_t x, y, z, pitch, height;
};

/* The address of the side's first byte, and the role its pointer plays. */
static CUresult side_start(const struct side_desc *d, size_t width, size_t height, size_t depth,
			   bool aligned, uintptr_t *addr, enum role *role)
{
	switch (d->type) {
	case CU_MEMORYTYPE_HOST:
		*addr = (uintptr_t)d->host;
		*role = ROLE_HOST;
		break;
	case CU_MEMORYTYPE_DEVICE:
		*addr = (uintptr_t)d->dev;
		*role = ROLE_DEVICE;
		break;
	case CU_MEMORYTYPE_UNIFIED:
		*addr = (uintptr_t)d->dev;
		*role = ROLE_UNIFIED;
		break;
	case CU_MEMORYTYPE_ARRAY:
		return CUDA_ERROR_NOT_SUPPORTED; /* CUDA arrays are not simulated */
	default:
		return CUDA_ERROR_INVALID_VALUE;
	}
	if (!width || !height || !depth)
		return CUDA_SUCCESS;
	if ((height > 1 || depth > 1) && d->pitch < width + d->x)
		return CUDA_ERROR_INVALID_VALUE;
	if (depth > 1 && d->height < height + d->y)
		return CUDA_ERROR_INVALID_VALUE;
	if (aligned && d->pitch > 0x7fffffff) /* CU_DEVICE_ATTRIBUTE_MAX_PITCH */
		return CUDA_ERROR_INVALID_VALUE;
	if (*role == ROLE_HOST && !*addr)
		return CUDA_ERROR_INVALID_VALUE;
	size_t off, slice;
	if (__builtin_mul_overflow(d->pitch, d->height, &slice) ||
	    __builtin_mul_overflow(d->z, slice, &off) || __builtin_add_overflow(off, d->y * d->pitch, &off) ||
	    __builtin_add_overflow(off, d->x, &off) || __builtin_add_overflow(*addr, off, addr))
		return CUDA_ERROR_INVALID_VALUE;
	return CUDA_SUCCESS;
}

static CUresult copy_sides(const char *fn, bool ptds, CUstream s, bool async,
			   const struct side_desc *dst, const struct side_desc *src, size_t width,
			   size_t height, size_t depth, bool aligned)
{
	uintptr_t daddr, saddr;
	enum role drole, srole;
	CUresult rc = side_start(dst, width, height, depth, aligned, &daddr, &drole);
	if (rc == CUDA_SUCCESS)
		rc = side_start(src, width, height, depth, aligned, &saddr, &srole);
	if (rc != CUDA_SUCCESS)
		return rc;
	struct copy c = { .dst = daddr, .src = saddr, .dpitch = dst->pitch, .spitch = src->pitch,
			  .dslice = dst->pitch * dst->height, .sslice = src->pitch * src->height,
			  .width = width, .height = height, .depth = depth };
	return copy_issue(fn, ptds, s, async, &c, drole, srole);
}

static CUresult copy_2d(const char *fn, bool ptds, CUstream s, bool async, const CUDA_MEMCPY2D *p,
			bool aligned)
{
	if (!p)
		return CUDA_ERROR_INVALID_VALUE;
	struct side_desc dst = { p->dstMemoryType, p->dstHost, p->dstDevice, p->dstArray,
				 p->dstXInBytes, p->dstY, 0, p->dstPitch, 0 };
	struct side_desc src = { p->srcMemoryType, p->srcHost, p->srcDevice, p->srcArray,
				 p->srcXInBytes, p->srcY, 0, p->srcPitch, 0 };
	return copy_sides(fn, ptds, s, async, &dst, &src, p->WidthInBytes, p->Height, 1, aligned);
}

static CUresult copy_3d(const char *fn, bool ptds, CUstream s, bool async, const CUDA_MEMCPY3D *p)
{
	if (!p || p->srcLOD || p->dstLOD || p->reserved0 || p->reserved1)
		return CUDA_ERROR_INVALID_VALUE;
	struct side_desc dst = { p->dstMemoryType, p->dstHost, p->dstDevice, p->dstArray,
				 p->dstXInBytes, p->dstY, p->dstZ, p->dstPitch, p->dstHeight };
	struct side_desc src = { p->srcMemoryType, p->srcHost, p->srcDevice, p->srcArray,
				 p->srcXInBytes, p->srcY, p->srcZ, p->srcPitch, p->srcHeight };
	return copy_sides(fn, ptds, s, async, &dst, &src, p->WidthInBytes, p->Height, p->Depth, true);
}

/* ---- peer ----------------------------------------------------------------------------- */

/* Whether a side that is device memory belongs to the context's device. */
static bool peer_side_ok(uintptr_t p, enum role role, const struct sim_ctx *ctx)
{
	if (role == ROLE_HOST)
		return true;
	int dev = sim_mem_device_of((CUdeviceptr)p);
	return dev == ctx->device || (dev < 0 && role == ROLE_UNIFIED);
}

static CUresult peer_issue(const char *fn, bool ptds, CUstream s, bool async, struct copy *c,
			   enum role drole, CUcontext dst_ctx, enum role srole, CUcontext src_ctx)
{
	struct sim_ctx *cur;
	CUresult rc = sim_ctx_require(fn, &cur);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!dst_ctx || !src_ctx)
		return CUDA_ERROR_INVALID_CONTEXT;
	struct sim_ctx *dc = sim_handle_get(SIM_KIND_CTX, dst_ctx, fn);
	struct sim_ctx *sc = sim_handle_get(SIM_KIND_CTX, src_ctx, fn);
	if (!c->width || !c->height || !c->depth)
		return CUDA_SUCCESS;
	/* Each pointer must be memory of its context's device; addresses the
	 * simulator does not know get the usual abort from the access check. */
	if (!peer_side_ok(c->dst, drole, dc) || !peer_side_ok(c->src, srole, sc)) {
		sim_mem_access(c->dst, 1, -1, true, fn, NULL);
		sim_mem_access(c->src, 1, -1, false, fn, NULL);
		return CUDA_ERROR_INVALID_VALUE;
	}
	c->ddev = dc->device;
	c->sdev = sc->device;
	c->devs_set = true;
	if (!async) {
		/* Serialised with the pending work of both contexts. */
		if ((rc = sim_exec_sync_ctx(sc)) != CUDA_SUCCESS ||
		    (dc != sc && (rc = sim_exec_sync_ctx(dc)) != CUDA_SUCCESS))
			return rc;
	}
	rc = copy_issue(fn, ptds, s, async, c, drole, srole);
	/* ... and with their future work, which a context other than the
	 * current one only sees once the copy is done. */
	if (rc == CUDA_SUCCESS && !async && (sc != cur || dc != cur))
		rc = sim_stream_wait(sim_stream_resolve(NULL, ptds, cur, fn));
	return rc;
}

static CUresult copy_peer(const char *fn, bool ptds, CUstream s, bool async, CUdeviceptr dst,
			  CUcontext dst_ctx, CUdeviceptr src, CUcontext src_ctx, size_t n)
{
	struct copy c = { .dst = dst, .src = src, .dpitch = n, .spitch = n, .width = n, .height = 1,
			  .depth = 1 };
	return peer_issue(fn, ptds, s, async, &c, ROLE_DEVICE, dst_ctx, ROLE_DEVICE, src_ctx);
}

static CUresult copy_3d_peer(const char *fn, bool ptds, CUstream s, bool async,
			     const CUDA_MEMCPY3D_PEER *p)
{
	if (!p || p->srcLOD || p->dstLOD)
		return CUDA_ERROR_INVALID_VALUE;
	struct side_desc dst = { p->dstMemoryType, p->dstHost, p->dstDevice, p->dstArray,
				 p->dstXInBytes, p->dstY, p->dstZ, p->dstPitch, p->dstHeight };
	struct side_desc src = { p->srcMemoryType, p->srcHost, p->srcDevice, p->srcArray,
				 p->srcXInBytes, p->srcY, p->srcZ, p->srcPitch, p->srcHeight };
	uintptr_t daddr, saddr;
	enum role drole, srole;
	CUresult rc = side_start(&dst, p->WidthInBytes, p->Height, p->Depth, true, &daddr, &drole);
	if (rc == CUDA_SUCCESS)
		rc = side_start(&src, p->WidthInBytes, p->Height, p->Depth, true, &saddr, &srole);
	if (rc != CUDA_SUCCESS)
		return rc;
	struct copy c = { .dst = daddr, .src = saddr, .dpitch = dst.pitch, .spitch = src.pitch,
			  .dslice = dst.pitch * dst.height, .sslice = src.pitch * src.height,
			  .width = p->WidthInBytes, .height = p->Height, .depth = p->Depth };
	return peer_issue(fn, ptds, s, async, &c, drole, p->dstContext, srole, p->srcContext);
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
			  .depth = 1, .elem = elem, .value = value };
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
SIM_PAIR(cuMemcpy3D_v2, _ptds, (const CUDA_MEMCPY3D *pCopy),
	 copy_3d(fn, ptds, NULL, false, pCopy))
SIM_PAIR(cuMemcpy3DAsync_v2, _ptsz, (const CUDA_MEMCPY3D *pCopy, CUstream hStream),
	 copy_3d(fn, ptds, hStream, true, pCopy))
SIM_PAIR(cuMemcpy3DPeer, _ptds, (const CUDA_MEMCPY3D_PEER *pCopy),
	 copy_3d_peer(fn, ptds, NULL, false, pCopy))
SIM_PAIR(cuMemcpy3DPeerAsync, _ptsz, (const CUDA_MEMCPY3D_PEER *pCopy, CUstream hStream),
	 copy_3d_peer(fn, ptds, hStream, true, pCopy))

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
