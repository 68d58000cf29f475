/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Device memory as the application sees it (DESIGN.md §5): cuMemAlloc,
 * cuMemAllocPitch and cuMemFree served from the arena, and the pointer
 * queries answered for arena memory exactly as the driver answers them for
 * a cuMemAlloc pointer.
 *
 * Each application device gets one arena (arena_core.c) on its first
 * cuMemAlloc, bound to the real driver's VMM calls (arena_driver.c). A
 * device without VMM, or GPUSWAP_ALLOC=passthrough, is served by the real
 * cuMemAlloc and the allocation only recorded.
 *
 * The driver sees arena memory as VMM mappings of the shim's reservation, so
 * it would describe it differently from a cuMemAlloc pointer (range = the
 * whole window, no context, handle types of the chunk). The attributes that
 * differ are answered here from the arena's records; those about the mapping
 * itself (access flags, RDMA, sync memops, tokens) are still the driver's.
 * Arena address space with no allocation in it is asked about as NOWHERE, so
 * the application gets the driver's own "not a CUDA pointer" answers.
 */
#define GS_LOG_SUBSYS "shim"
#include "arena.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "track.h"
#include "translate.h"

/* In the first 64 KiB, which Linux keeps unmapped (vm.mmap_min_addr) and
 * no driver places memory in: no allocation, host mapping or registration
 * can contain it. */
#define NOWHERE ((CUdeviceptr)0x1000)

/* Rows of a pitched allocation start at this alignment, as cudaMallocPitch
 * shows on current GPUs (and the simulator models). */
#define PITCH_ALIGN 512u

/* ---- allocation ------------------------------------------------------------------- */

static CUresult record(CUdeviceptr va, size_t size, size_t footprint, CUcontext ctx, int dev,
		       unsigned flags, size_t pitch, uint64_t buffer_id)
{
	struct gs_alloc_desc desc = {
		.addr = va,
		.size = size,
		.footprint = footprint,
		.ctx = ctx,
		.device = dev,
		.flags = flags,
		.pitch = pitch,
		.buffer_id = buffer_id,
	};
	int rc = gs_trk_alloc_add(&desc);

	/* An allocation the dump cannot see would be lost silently at the
	 * first migration: better to fail it now. */
	if (rc < 0) {
		gs_log_at(GS_LOG_ERROR, -rc, "tracker: recording allocation %#llx failed",
			  (unsigned long long)va);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	return CUDA_SUCCESS;
}

static CUresult arena_alloc(struct gs_arena *a, int dev, CUcontext ctx, size_t size,
			    size_t pitch, CUdeviceptr *dptr)
{
	struct gs_arena_allocation al;
	CUresult rc;

	rc = gs_arena_alloc(a, size, ctx, &al);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = record(al.va, size, al.footprint, ctx, dev, pitch ? GS_ALLOC_PITCH : 0, pitch,
		    al.buffer_id);
	if (rc != CUDA_SUCCESS) {
		gs_arena_free(a, al.va);
		return rc;
	}
	*dptr = al.va;
	return CUDA_SUCCESS;
}

static CUresult devmem_alloc(CUdeviceptr *dptr, size_t bytesize)
{
	struct gs_arena *a;
	CUcontext ctx;
	int app, real;
	CUresult rc;

	rc = gs_mem_current(&ctx, &app, &real);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!dptr || bytesize == 0)
		return CUDA_ERROR_INVALID_VALUE;
	a = gs_devmem_arena_for(app, real);
	if (a)
		return arena_alloc(a, app, ctx, bytesize, 0, dptr);

	CUdeviceptr p;
	rc = GS_MEM_REAL(cuMemAlloc_v2, &p, bytesize);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = record(p, bytesize, bytesize, ctx, app, GS_ALLOC_PASSTHROUGH, 0, 0);
	if (rc != CUDA_SUCCESS) {
		GS_MEM_REAL(cuMemFree_v2, p);
		return rc;
	}
	*dptr = p;
	return CUDA_SUCCESS;
}

static CUresult devmem_alloc_pitch(CUdeviceptr *dptr, size_t *pitch, size_t width,
				   size_t height, unsigned element_size)
{
	struct gs_arena *a;
	CUcontext ctx;
	int app, real;
	CUresult rc;

	rc = gs_mem_current(&ctx, &app, &real);
	if (rc != CUDA_SUCCESS)
		return rc;
	a = gs_devmem_arena_for(app, real);
	if (!a) {
		rc = GS_MEM_REAL(cuMemAllocPitch_v2, dptr, pitch, width, height, element_size);
		if (rc != CUDA_SUCCESS)
			return rc;
		rc = record(*dptr, *pitch * height, *pitch * height, ctx, app,
			    GS_ALLOC_PASSTHROUGH | GS_ALLOC_PITCH, *pitch, 0);
		if (rc != CUDA_SUCCESS)
			GS_MEM_REAL(cuMemFree_v2, *dptr);
		return rc;
	}
	if (!dptr || !pitch || width == 0 || height == 0)
		return CUDA_ERROR_INVALID_VALUE;
	if (element_size != 4 && element_size != 8 && element_size != 16)
		return CUDA_ERROR_INVALID_VALUE;
	size_t rowpitch = (width + PITCH_ALIGN - 1) & ~(size_t)(PITCH_ALIGN - 1);
	if (rowpitch < width || height > SIZE_MAX / rowpitch)
		return CUDA_ERROR_OUT_OF_MEMORY;
	rc = arena_alloc(a, app, ctx, rowpitch * height, rowpitch, dptr);
	if (rc == CUDA_SUCCESS)
		*pitch = rowpitch;
	return rc;
}

static CUresult arena_free(struct gs_arena *a, CUdeviceptr ptr)
{
	struct gs_arena_allocation al;
	struct gs_alloc_desc desc;
	CUcontext current = NULL, owner;
	CUresult rc;

	rc = GS_MEM_REAL(cuCtxGetCurrent, &current);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!current)
		return CUDA_ERROR_INVALID_CONTEXT;
	/* Interior pointers, double frees and addresses where nothing is
	 * allocated: the driver's answer for a pointer it did not hand out. */
	if (!gs_arena_lookup(a, ptr, &al) || al.va != ptr)
		return CUDA_ERROR_INVALID_VALUE;
	/* A context with a sticky error refuses, as every call in it does. */
	owner = gs_mem_ctx_real(al.ctx);
	/* The driver's cuMemFree synchronises: work already queued may still
	 * use the memory. */
	rc = gs_mem_ctx_sync(owner, current);
	if (rc == CUDA_SUCCESS && owner != current)
		rc = gs_mem_ctx_sync(current, current);
	if (rc != CUDA_SUCCESS)
		return rc;
	/* The record goes first: once the arena has the address back, another
	 * thread may be handed it and record it anew. */
	gs_trk_alloc_remove(ptr, &desc);
	return gs_arena_free(a, ptr);
}

static CUresult devmem_free(CUdeviceptr ptr)
{
	struct gs_alloc_desc desc;
	struct gs_arena *a = gs_devmem_arena_at(ptr, NULL);
	CUresult rc;
	int trk;

	if (a)
		return arena_free(a, ptr);
	trk = gs_trk_alloc_remove(ptr, &desc);
	rc = GS_MEM_REAL(cuMemFree_v2, ptr);
	if (trk == 0 && rc != CUDA_SUCCESS) {
		/* Still allocated: keep it on record. */
		trk = gs_trk_alloc_add(&desc);
		if (trk < 0)
			gs_log_at(GS_LOG_WARN, -trk, "tracker: recording allocation %#llx again "
				  "failed", (unsigned long long)ptr);
	} else if (trk != 0 && rc == CUDA_SUCCESS && ptr)
		gs_trk_foreign_free(ptr); /* managed, stream-ordered, IPC: not ours */
	return rc;
}

/* ---- pointer queries ---------------------------------------------------------------- */

enum where {
	OUTSIDE, /* in no arena window: the driver's business */
	HOLE,    /* in a window, in no allocation */
	INSIDE,  /* in an arena allocation */
};

/* Where ptr falls; INSIDE fills *al and *dev (the app ordinal). */
static enum where arena_where(CUdeviceptr ptr, struct gs_arena_allocation *al, int *dev)
{
	struct gs_arena *a = gs_devmem_arena_at(ptr, dev);

	if (!a)
		return OUTSIDE;
	return gs_arena_lookup(a, ptr, al) ? INSIDE : HOLE;
}

static CUresult devmem_address_range(CUdeviceptr *pbase, size_t *psize, CUdeviceptr ptr)
{
	struct gs_arena_allocation al;
	int dev;
	enum where w = arena_where(ptr, &al, &dev);

	/* Argument checks are the driver's. A module variable a migration moved
	 * is asked for at its new address and answered at the old one, the
	 * only one the application knows. */
	if (w == OUTSIDE || (!pbase && !psize)) {
		CUresult rc = GS_MEM_REAL(cuMemGetAddressRange_v2, pbase, psize,
					  gs_xlat_devptr(ptr));
		if (rc == CUDA_SUCCESS && pbase)
			*pbase = gs_xlat_devptr_app(*pbase);
		return rc;
	}
	if (w == HOLE)
		return GS_MEM_REAL(cuMemGetAddressRange_v2, pbase, psize, NOWHERE);
	/* The size asked for, as the driver reports a cuMemAlloc allocation:
	 * not the slot or chunk around it. */
	if (pbase)
		*pbase = al.va;
	if (psize)
		*psize = al.size;
	return CUDA_SUCCESS;
}

/* Attributes the arena answers; the others describe the mapping itself
 * (RDMA, sync memops, P2P tokens, decompression) and the driver's answer
 * for the VMM mapping is the right one. Access flags are the arena's: its
 * mappings also grant access for copies (gs_devmem_device_used), which
 * cuMemAlloc memory does not report. */
static bool attr_is_local(CUpointer_attribute attr)
{
	switch (attr) {
	case CU_POINTER_ATTRIBUTE_CONTEXT:
	case CU_POINTER_ATTRIBUTE_MEMORY_TYPE:
	case CU_POINTER_ATTRIBUTE_DEVICE_POINTER:
	case CU_POINTER_ATTRIBUTE_HOST_POINTER:
	case CU_POINTER_ATTRIBUTE_BUFFER_ID:
	case CU_POINTER_ATTRIBUTE_IS_MANAGED:
	case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL:
	case CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE:
	case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR:
	case CU_POINTER_ATTRIBUTE_RANGE_SIZE:
	case CU_POINTER_ATTRIBUTE_MAPPED:
	case CU_POINTER_ATTRIBUTE_ALLOWED_HANDLE_TYPES:
	case CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE:
	case CU_POINTER_ATTRIBUTE_MAPPING_SIZE:
	case CU_POINTER_ATTRIBUTE_MAPPING_BASE_ADDR:
	case CU_POINTER_ATTRIBUTE_MEMORY_BLOCK_ID:
	case CU_POINTER_ATTRIBUTE_ACCESS_FLAGS:
		return true;
	default:
		return false;
	}
}

#define PUT(type, value) (*(type *)data = (type)(value))

static int peers_of(const struct gs_rec *rec, void *arg)
{
	*(uint64_t *)arg = ((const struct gs_ctx_rec *)rec)->peers_enabled;
	return 0;
}

/* What cuMemAlloc memory of app device `dev` answers for the access flags:
 * read-write for the current context's own device and for a context that
 * enabled peer access to `dev`, none otherwise. */
static CUresult legacy_access(int dev, unsigned *flags)
{
	int cur_dev = -1;
	CUcontext cur = gs_hook_current_ctx(&cur_dev);
	uint64_t peers = 0;

	if (!cur)
		return CUDA_ERROR_INVALID_CONTEXT;
	if (cur_dev != dev)
		gs_trk_with(GS_KIND_CTX, (uint64_t)(uintptr_t)cur, peers_of, &peers);
	*flags = cur_dev == dev || (dev < 64 && (peers & (UINT64_C(1) << dev)))
			 ? CU_POINTER_ATTRIBUTE_ACCESS_FLAG_READWRITE
			 : CU_POINTER_ATTRIBUTE_ACCESS_FLAG_NONE;
	return CUDA_SUCCESS;
}

/* One local attribute of ptr, inside arena allocation al of app device dev.
 * The value types are the driver's: booleans as unsigned int. */
static CUresult attr_local(CUpointer_attribute attr, void *data, CUdeviceptr ptr, int dev,
			   const struct gs_arena_allocation *al)
{
	CUcontext current = NULL;

	switch (attr) {
	case CU_POINTER_ATTRIBUTE_CONTEXT:
		PUT(CUcontext, al->ctx);
		break;
	case CU_POINTER_ATTRIBUTE_MEMORY_TYPE:
		PUT(unsigned int, CU_MEMORYTYPE_DEVICE);
		break;
	case CU_POINTER_ATTRIBUTE_DEVICE_POINTER:
		/* "the device pointer through which kernels of the current
		 * context may access ptr": no context, no answer. */
		if (GS_MEM_REAL(cuCtxGetCurrent, &current) != CUDA_SUCCESS || !current)
			return CUDA_ERROR_INVALID_CONTEXT;
		PUT(CUdeviceptr, ptr);
		break;
	case CU_POINTER_ATTRIBUTE_HOST_POINTER:
		return CUDA_ERROR_INVALID_VALUE; /* device memory has no host address */
	case CU_POINTER_ATTRIBUTE_BUFFER_ID:
	case CU_POINTER_ATTRIBUTE_MEMORY_BLOCK_ID:
		/* Each allocation is its own block, as a cuMemAlloc is; the
		 * chunk's id would be shared by its slab neighbours. */
		PUT(unsigned long long, al->buffer_id);
		break;
	case CU_POINTER_ATTRIBUTE_IS_MANAGED:
		PUT(unsigned int, 0);
		break;
	case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL:
		PUT(int, dev);
		break;
	case CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE:
		/* VMM memory cannot be exported with cuIpcGetMemHandle: say
		 * so rather than let the export fail later. */
		PUT(unsigned int, 0);
		break;
	case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR:
	case CU_POINTER_ATTRIBUTE_MAPPING_BASE_ADDR:
		PUT(CUdeviceptr, al->va);
		break;
	case CU_POINTER_ATTRIBUTE_RANGE_SIZE:
	case CU_POINTER_ATTRIBUTE_MAPPING_SIZE:
		PUT(size_t, al->size);
		break;
	case CU_POINTER_ATTRIBUTE_MAPPED:
		PUT(unsigned int, 1);
		break;
	case CU_POINTER_ATTRIBUTE_ALLOWED_HANDLE_TYPES:
		PUT(unsigned long long, CU_MEM_HANDLE_TYPE_NONE);
		break;
	case CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE:
		PUT(CUmemoryPool, NULL);
		break;
	case CU_POINTER_ATTRIBUTE_ACCESS_FLAGS:
		return legacy_access(dev, data);
	default:
		return CUDA_ERROR_INVALID_VALUE;
	}
	return CUDA_SUCCESS;
}

/* The driver's own answers name its contexts and devices: after a
 * migration, those are mapped back to the application's. */
static CUresult driver_attribute(void *data, CUpointer_attribute attr, CUdeviceptr ptr)
{
	CUresult rc = GS_MEM_REAL(cuPointerGetAttribute, data, attr, gs_xlat_devptr(ptr));

	if (rc == CUDA_SUCCESS)
		gs_xlat_pointer_attr_to_app(attr, data);
	return rc;
}

static CUresult driver_attributes(unsigned n, CUpointer_attribute *attrs, void **data,
				  CUdeviceptr ptr)
{
	CUresult rc = GS_MEM_REAL(cuPointerGetAttributes, n, attrs, data, gs_xlat_devptr(ptr));

	for (unsigned i = 0; rc == CUDA_SUCCESS && attrs && data && i < n; i++)
		gs_xlat_pointer_attr_to_app(attrs[i], data[i]);
	return rc;
}

static CUresult devmem_attribute(void *data, CUpointer_attribute attr, CUdeviceptr ptr)
{
	struct gs_arena_allocation al;
	int dev;
	enum where w = arena_where(ptr, &al, &dev);

	if (w == OUTSIDE || !data)
		return driver_attribute(data, attr, ptr);
	if (w == HOLE)
		return driver_attribute(data, attr, NOWHERE);
	if (!attr_is_local(attr))
		return driver_attribute(data, attr, ptr);
	return attr_local(attr, data, ptr, dev, &al);
}

static CUresult devmem_attributes(unsigned n, CUpointer_attribute *attrs, void **data,
				  CUdeviceptr ptr)
{
	CUpointer_attribute fwd_attrs_stack[32], *fwd_attrs = fwd_attrs_stack;
	void *fwd_data_stack[32], **fwd_data = fwd_data_stack;
	struct gs_arena_allocation al;
	int dev;
	enum where w = arena_where(ptr, &al, &dev);
	unsigned k = 0;
	CUresult rc = CUDA_SUCCESS;

	if (w == OUTSIDE || n == 0 || !attrs || !data)
		return driver_attributes(n, attrs, data, ptr);
	for (unsigned i = 0; i < n; i++)
		if (!data[i])
			return driver_attributes(n, attrs, data, ptr);
	if (w == HOLE)
		return driver_attributes(n, attrs, data, NOWHERE);

	if (n > 32) {
		fwd_attrs = malloc(n * sizeof(*fwd_attrs));
		fwd_data = malloc(n * sizeof(*fwd_data));
		if (!fwd_attrs || !fwd_data) {
			rc = CUDA_ERROR_OUT_OF_MEMORY;
			goto out;
		}
	}
	/* The driver's part first: if it rejects an attribute the whole call
	 * fails, before anything of ours was written. */
	for (unsigned i = 0; i < n; i++) {
		if (!attr_is_local(attrs[i])) {
			fwd_attrs[k] = attrs[i];
			fwd_data[k] = data[i];
			k++;
		}
	}
	if (k) {
		rc = driver_attributes(k, fwd_attrs, fwd_data, ptr);
		if (rc != CUDA_SUCCESS)
			goto out;
	}
	/* Unlike the single query, one attribute without an answer is no
	 * error: it gets its null value, in the attribute's own size (the
	 * context-dependent ones fail here: the device pointer, 8 bytes, and
	 * the access flags, 4). */
	for (unsigned i = 0; i < n; i++)
		if (attr_is_local(attrs[i]) &&
		    attr_local(attrs[i], data[i], ptr, dev, &al) != CUDA_SUCCESS)
			memset(data[i], 0, attrs[i] == CU_POINTER_ATTRIBUTE_ACCESS_FLAGS
						   ? sizeof(unsigned) : sizeof(CUdeviceptr));
out:
	if (fwd_attrs != fwd_attrs_stack)
		free(fwd_attrs);
	if (fwd_data != fwd_data_stack)
		free(fwd_data);
	return rc;
}

/* ---- introspection -------------------------------------------------------------------- */

enum gs_devmem_kind gs_devmem_classify(CUdeviceptr ptr)
{
	struct gs_alloc_desc desc;
	struct gs_arena_allocation al;
	int dev;

	switch (arena_where(ptr, &al, &dev)) {
	case INSIDE:
		return GS_DEVMEM_ARENA;
	case HOLE:
		return GS_DEVMEM_NONE;
	case OUTSIDE:
		break;
	}
	if (gs_trk_alloc_find(ptr, &desc) == 0 && (desc.flags & GS_ALLOC_PASSTHROUGH))
		return GS_DEVMEM_PASSTHROUGH;
	return GS_DEVMEM_NONE;
}

/* ---- entry points --------------------------------------------------------------------- */

CUresult gs_custom_cuMemAlloc_v2(bool ptds, CUdeviceptr *dptr, size_t bytesize)
{
	struct gs_thread *self;
	CUresult rc;

	(void)ptds;
	if (gs_inside())
		return GS_MEM_REAL(cuMemAlloc_v2, dptr, bytesize);
	rc = gs_mem_enter(&self, GS_SYM_cuMemAlloc_v2);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = devmem_alloc(dptr, bytesize);
	gs_gate_exit(self);
	return rc;
}

CUresult gs_custom_cuMemAllocPitch_v2(bool ptds, CUdeviceptr *dptr, size_t *pPitch,
				      size_t WidthInBytes, size_t Height,
				      unsigned int ElementSizeBytes)
{
	struct gs_thread *self;
	CUresult rc;

	(void)ptds;
	if (gs_inside())
		return GS_MEM_REAL(cuMemAllocPitch_v2, dptr, pPitch, WidthInBytes, Height,
				   ElementSizeBytes);
	rc = gs_mem_enter(&self, GS_SYM_cuMemAllocPitch_v2);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = devmem_alloc_pitch(dptr, pPitch, WidthInBytes, Height, ElementSizeBytes);
	gs_gate_exit(self);
	return rc;
}

CUresult gs_custom_cuMemFree_v2(bool ptds, CUdeviceptr dptr)
{
	struct gs_thread *self;
	CUresult rc;

	(void)ptds;
	if (gs_inside())
		return GS_MEM_REAL(cuMemFree_v2, dptr);
	rc = gs_mem_enter(&self, GS_SYM_cuMemFree_v2);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = devmem_free(dptr);
	gs_gate_exit(self);
	return rc;
}

CUresult gs_custom_cuMemGetAddressRange_v2(bool ptds, CUdeviceptr *pbase, size_t *psize,
					   CUdeviceptr dptr)
{
	struct gs_thread *self;
	CUresult rc;

	(void)ptds;
	if (gs_inside())
		return GS_MEM_REAL(cuMemGetAddressRange_v2, pbase, psize, dptr);
	rc = gs_mem_enter(&self, GS_SYM_cuMemGetAddressRange_v2);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = devmem_address_range(pbase, psize, dptr);
	gs_gate_exit(self);
	return rc;
}

CUresult gs_custom_cuPointerGetAttribute(bool ptds, void *data, CUpointer_attribute attribute,
					 CUdeviceptr ptr)
{
	struct gs_thread *self;
	CUresult rc;

	(void)ptds;
	if (gs_inside())
		return GS_MEM_REAL(cuPointerGetAttribute, data, attribute, ptr);
	rc = gs_mem_enter(&self, GS_SYM_cuPointerGetAttribute);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = devmem_attribute(data, attribute, ptr);
	gs_gate_exit(self);
	return rc;
}

CUresult gs_custom_cuPointerGetAttributes(bool ptds, unsigned int numAttributes,
					  CUpointer_attribute *attributes, void **data,
					  CUdeviceptr ptr)
{
	struct gs_thread *self;
	CUresult rc;

	(void)ptds;
	if (gs_inside())
		return GS_MEM_REAL(cuPointerGetAttributes, numAttributes, attributes, data, ptr);
	rc = gs_mem_enter(&self, GS_SYM_cuPointerGetAttributes);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = devmem_attributes(numAttributes, attributes, data, ptr);
	gs_gate_exit(self);
	return rc;
}
