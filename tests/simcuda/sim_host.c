/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Pinned and registered host memory, and the pointer queries
 * (cuPointerGetAttribute(s), cuMemGetAddressRange) over every kind of memory
 * the simulator knows. With unified addressing a host allocation's device
 * pointer is its host pointer, which is what a real driver hands out too.
 *
 * Queries about addresses the simulator does not know return errors, never
 * abort: classifying an arbitrary pointer is what these calls are for.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "sim_mem.h"

static size_t page_round(size_t v)
{
	return (v + SIM_PAGE - 1) & ~(SIM_PAGE - 1);
}

static bool is_host(const struct sim_range *r)
{
	return r && (r->type == SIM_RANGE_HOST_ALLOC || r->type == SIM_RANGE_HOST_REG);
}

/* ---- pinned allocations ----------------------------------------------------------- */

static CUresult host_alloc(const char *fn, void **pp, size_t size, unsigned flags)
{
	struct sim_ctx *ctx;
	CUresult rc = sim_ctx_require(fn, &ctx);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!pp || size == 0)
		return CUDA_ERROR_INVALID_VALUE;
	if (flags & ~(unsigned)(CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP |
				CU_MEMHOSTALLOC_WRITECOMBINED))
		return CUDA_ERROR_INVALID_VALUE;
	size_t len = page_round(size);
	if (len < size)
		return CUDA_ERROR_OUT_OF_MEMORY;
	struct sim_range *r = calloc(1, sizeof(*r));
	if (!r)
		return CUDA_ERROR_OUT_OF_MEMORY;
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		free(r);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	*r = (struct sim_range){ .start = (uintptr_t)p, .size = size, .type = SIM_RANGE_HOST_ALLOC,
				 .device = -1, .ctx = ctx, .flags = flags, .id = sim_mem_next_id() };
	sim_mem_wrlock();
	rc = sim_range_insert(r);
	sim_mem_unlock();
	if (rc != CUDA_SUCCESS) {
		munmap(p, len);
		free(r);
		return rc;
	}
	*pp = p;
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuMemHostAlloc(void **pp, size_t bytesize, unsigned int Flags)
{
	SIM_ENTER("cuMemHostAlloc");
	return host_alloc("cuMemHostAlloc", pp, bytesize, Flags);
}

SIM_EXPORT CUresult cuMemAllocHost_v2(void **pp, size_t bytesize)
{
	SIM_ENTER("cuMemAllocHost_v2");
	return host_alloc("cuMemAllocHost_v2", pp, bytesize, 0);
}

SIM_EXPORT CUresult cuMemFreeHost(void *p)
{
	SIM_ENTER("cuMemFreeHost");
	struct sim_ctx *ctx;
	CUresult rc = sim_ctx_require("cuMemFreeHost", &ctx);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!p)
		return CUDA_SUCCESS; /* free(NULL), as the driver does */
	sim_mem_rdlock();
	struct sim_range *r = sim_range_find((uintptr_t)p);
	bool ok = r && r->type == SIM_RANGE_HOST_ALLOC && r->start == (uintptr_t)p;
	struct sim_ctx *owner = ok ? r->ctx : NULL;
	sim_mem_unlock();
	if (!ok)
		sim_abort("cuMemFreeHost", "%p is not a live cuMemHostAlloc/cuMemAllocHost pointer", p);
	/* Like cuMemFree, it waits for queued work that may still use it. */
	rc = sim_exec_sync_ctx(owner);
	if (rc != CUDA_SUCCESS)
		return rc;
	sim_mem_wrlock();
	if (sim_range_find((uintptr_t)p) != r) {
		sim_mem_unlock();
		sim_abort("cuMemFreeHost", "%p freed twice (by two threads at once)", p);
	}
	sim_va_release(r->start, page_round(r->size), false);
	sim_range_remove(r);
	sim_mem_unlock();
	free(r);
	return CUDA_SUCCESS;
}

/* ---- registration ------------------------------------------------------------------ */

SIM_EXPORT CUresult cuMemHostRegister_v2(void *p, size_t bytesize, unsigned int Flags)
{
	SIM_ENTER("cuMemHostRegister_v2");
	struct sim_ctx *ctx;
	CUresult rc = sim_ctx_require("cuMemHostRegister_v2", &ctx);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!p || bytesize == 0 || (uintptr_t)p + bytesize < (uintptr_t)p)
		return CUDA_ERROR_INVALID_VALUE;
	if (Flags & ~(unsigned)(CU_MEMHOSTREGISTER_PORTABLE | CU_MEMHOSTREGISTER_DEVICEMAP |
				CU_MEMHOSTREGISTER_IOMEMORY | CU_MEMHOSTREGISTER_READ_ONLY))
		return CUDA_ERROR_INVALID_VALUE;
	/* Device I/O memory cannot exist here. */
	if (Flags & CU_MEMHOSTREGISTER_IOMEMORY)
		return CUDA_ERROR_NOT_SUPPORTED;
	uintptr_t start = (uintptr_t)p;
	/* Pinning needs every page mapped: msync says ENOMEM for a hole. */
	uintptr_t page = start & ~(SIM_PAGE - 1);
	if (msync((void *)page, page_round(start + bytesize - page), MS_ASYNC) != 0)
		return CUDA_ERROR_INVALID_VALUE;

	struct sim_range *r = calloc(1, sizeof(*r));
	if (!r)
		return CUDA_ERROR_OUT_OF_MEMORY;
	*r = (struct sim_range){ .start = start, .size = bytesize, .type = SIM_RANGE_HOST_REG,
				 .device = -1, .ctx = ctx, .flags = Flags, .id = sim_mem_next_id() };
	sim_mem_wrlock();
	if (sim_va_touches_window(start, bytesize)) {
		rc = CUDA_ERROR_INVALID_VALUE; /* device memory is not host memory */
	} else if (sim_range_overlaps(start, bytesize)) {
		rc = CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED;
		for (uintptr_t a = start; a < start + bytesize; a += SIM_PAGE) {
			struct sim_range *o = sim_range_find(a);
			if (o && !is_host(o))
				rc = CUDA_ERROR_INVALID_VALUE;
		}
	} else {
		rc = sim_range_insert(r);
	}
	sim_mem_unlock();
	if (rc != CUDA_SUCCESS)
		free(r);
	return rc;
}

SIM_EXPORT CUresult cuMemHostUnregister(void *p)
{
	SIM_ENTER("cuMemHostUnregister");
	struct sim_ctx *ctx;
	CUresult rc = sim_ctx_require("cuMemHostUnregister", &ctx);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!p)
		return CUDA_ERROR_INVALID_VALUE;
	sim_mem_wrlock();
	struct sim_range *r = sim_range_find((uintptr_t)p);
	if (!r || r->type != SIM_RANGE_HOST_REG || r->start != (uintptr_t)p) {
		sim_mem_unlock();
		return CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED;
	}
	sim_range_remove(r);
	sim_mem_unlock();
	free(r);
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuMemHostGetDevicePointer_v2(CUdeviceptr *pdptr, void *p, unsigned int Flags)
{
	SIM_ENTER("cuMemHostGetDevicePointer_v2");
	struct sim_ctx *ctx;
	CUresult rc = sim_ctx_require("cuMemHostGetDevicePointer_v2", &ctx);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!pdptr || !p || Flags != 0)
		return CUDA_ERROR_INVALID_VALUE;
	sim_mem_rdlock();
	bool ok = is_host(sim_range_find((uintptr_t)p));
	sim_mem_unlock();
	if (!ok)
		return CUDA_ERROR_INVALID_VALUE;
	*pdptr = (CUdeviceptr)(uintptr_t)p;
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuMemHostGetFlags(unsigned int *pFlags, void *p)
{
	SIM_ENTER("cuMemHostGetFlags");
	struct sim_ctx *ctx;
	CUresult rc = sim_ctx_require("cuMemHostGetFlags", &ctx);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!pFlags || !p)
		return CUDA_ERROR_INVALID_VALUE;
	sim_mem_rdlock();
	struct sim_range *r = sim_range_find((uintptr_t)p);
	bool ok = is_host(r);
	if (ok)
		*pFlags = r->flags;
	sim_mem_unlock();
	return ok ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

/* ---- pointer queries ---------------------------------------------------------------- */

SIM_EXPORT CUresult cuMemGetAddressRange_v2(CUdeviceptr *pbase, size_t *psize, CUdeviceptr dptr)
{
	SIM_ENTER("cuMemGetAddressRange_v2");
	if (!pbase && !psize)
		return CUDA_ERROR_INVALID_VALUE;
	uintptr_t p = (uintptr_t)dptr, base = 0;
	size_t size = 0;
	sim_mem_rdlock();
	struct sim_range *r = sim_range_find(p);
	if (r && r->type == SIM_RANGE_RESERVE) {
		/* For VMM, the mapping the address lies in. */
		struct sim_map *m = sim_vmm_map_at(r, p);
		if (m) {
			base = m->start;
			size = m->size;
		}
	} else if (r) {
		base = r->start;
		size = r->size;
	}
	sim_mem_unlock();
	if (!base)
		return CUDA_ERROR_NOT_FOUND;
	if (pbase)
		*pbase = (CUdeviceptr)base;
	if (psize)
		*psize = size;
	return CUDA_SUCCESS;
}

/* The size of each attribute's value, for zero-filling unanswered ones. */
static size_t attr_size(CUpointer_attribute a)
{
	switch (a) {
	case CU_POINTER_ATTRIBUTE_CONTEXT: return sizeof(CUcontext);
	case CU_POINTER_ATTRIBUTE_MEMORY_TYPE: return sizeof(unsigned int);
	case CU_POINTER_ATTRIBUTE_DEVICE_POINTER: return sizeof(CUdeviceptr);
	case CU_POINTER_ATTRIBUTE_HOST_POINTER: return sizeof(void *);
	case CU_POINTER_ATTRIBUTE_P2P_TOKENS: return sizeof(CUDA_POINTER_ATTRIBUTE_P2P_TOKENS);
	case CU_POINTER_ATTRIBUTE_BUFFER_ID: return sizeof(unsigned long long);
	case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL: return sizeof(int);
	case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR: return sizeof(CUdeviceptr);
	case CU_POINTER_ATTRIBUTE_RANGE_SIZE: return sizeof(size_t);
	case CU_POINTER_ATTRIBUTE_ALLOWED_HANDLE_TYPES: return sizeof(unsigned long long);
	case CU_POINTER_ATTRIBUTE_ACCESS_FLAGS: return sizeof(unsigned int);
	case CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE: return sizeof(CUmemoryPool);
	case CU_POINTER_ATTRIBUTE_MAPPING_SIZE: return sizeof(size_t);
	case CU_POINTER_ATTRIBUTE_MAPPING_BASE_ADDR: return sizeof(void *);
	case CU_POINTER_ATTRIBUTE_MEMORY_BLOCK_ID: return sizeof(unsigned long long);
	/* Booleans are written as unsigned int, as the driver does. */
	case CU_POINTER_ATTRIBUTE_SYNC_MEMOPS:
	case CU_POINTER_ATTRIBUTE_IS_MANAGED:
	case CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE:
	case CU_POINTER_ATTRIBUTE_MAPPED:
	case CU_POINTER_ATTRIBUTE_IS_GPU_DIRECT_RDMA_CAPABLE:
	case CU_POINTER_ATTRIBUTE_IS_HW_DECOMPRESS_CAPABLE:
		return sizeof(unsigned int);
	}
	return 0;
}

#define PUT(type, value) (*(type *)data = (type)(value))

/* One attribute of p, with the memory lock held. r is the range holding p,
 * or NULL. */
static CUresult pointer_attr(CUpointer_attribute a, void *data, uintptr_t p, struct sim_range *r)
{
	struct sim_map *m = r && r->type == SIM_RANGE_RESERVE ? sim_vmm_map_at(r, p) : NULL;
	bool device = r && (r->type == SIM_RANGE_ALLOC || r->type == SIM_RANGE_INTERNAL || m);

	if (a == CU_POINTER_ATTRIBUTE_P2P_TOKENS || !attr_size(a))
		return attr_size(a) ? CUDA_ERROR_NOT_SUPPORTED : CUDA_ERROR_INVALID_VALUE;
	if (!r)
		return CUDA_ERROR_INVALID_VALUE;
	/* A reserved but unmapped address answers only where its range is. */
	if (r->type == SIM_RANGE_RESERVE && !m && a != CU_POINTER_ATTRIBUTE_MAPPED &&
	    a != CU_POINTER_ATTRIBUTE_RANGE_START_ADDR && a != CU_POINTER_ATTRIBUTE_RANGE_SIZE)
		return CUDA_ERROR_INVALID_VALUE;
	int dev = m ? sim_vmm_phys_device(m->phys) : device ? r->device : r->ctx ? r->ctx->device : -1;
	unsigned long long block = m ? sim_vmm_phys_id(m->phys) : r->id;

	switch (a) {
	case CU_POINTER_ATTRIBUTE_CONTEXT:
		/* VMM memory belongs to no context. */
		PUT(CUcontext, m ? NULL : (CUcontext)r->ctx);
		break;
	case CU_POINTER_ATTRIBUTE_MEMORY_TYPE:
		PUT(unsigned int, device ? CU_MEMORYTYPE_DEVICE : CU_MEMORYTYPE_HOST);
		break;
	case CU_POINTER_ATTRIBUTE_DEVICE_POINTER:
		if (!sim_ctx_current())
			return CUDA_ERROR_INVALID_CONTEXT;
		PUT(CUdeviceptr, p);
		break;
	case CU_POINTER_ATTRIBUTE_HOST_POINTER:
		/* Device memory has no host address on a GPU, even though the
		 * simulator's has one. */
		if (device)
			return CUDA_ERROR_INVALID_VALUE;
		PUT(void *, p);
		break;
	case CU_POINTER_ATTRIBUTE_SYNC_MEMOPS:
	case CU_POINTER_ATTRIBUTE_IS_MANAGED:
	case CU_POINTER_ATTRIBUTE_IS_GPU_DIRECT_RDMA_CAPABLE:
	case CU_POINTER_ATTRIBUTE_IS_HW_DECOMPRESS_CAPABLE:
		PUT(unsigned int, 0);
		break;
	case CU_POINTER_ATTRIBUTE_BUFFER_ID:
	case CU_POINTER_ATTRIBUTE_MEMORY_BLOCK_ID:
		PUT(unsigned long long, block);
		break;
	case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL:
		PUT(int, dev);
		break;
	case CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE:
		PUT(unsigned int, r->type == SIM_RANGE_ALLOC);
		break;
	case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR:
		PUT(CUdeviceptr, r->start);
		break;
	case CU_POINTER_ATTRIBUTE_RANGE_SIZE:
		PUT(size_t, r->size);
		break;
	case CU_POINTER_ATTRIBUTE_MAPPED:
		PUT(unsigned int, r->type != SIM_RANGE_RESERVE || m);
		break;
	case CU_POINTER_ATTRIBUTE_ALLOWED_HANDLE_TYPES:
		PUT(unsigned long long, m ? sim_vmm_phys_handle_types(m->phys) : 0);
		break;
	case CU_POINTER_ATTRIBUTE_ACCESS_FLAGS: {
		struct sim_ctx *cur = sim_ctx_current();
		unsigned flags;
		if (!cur)
			return CUDA_ERROR_INVALID_CONTEXT;
		if (m)
			flags = sim_vmm_access_of(m, p, cur->device);
		else if (device)
			flags = sim_ctx_peer_access(cur->device, r->device)
					? CU_POINTER_ATTRIBUTE_ACCESS_FLAG_READWRITE
					: CU_POINTER_ATTRIBUTE_ACCESS_FLAG_NONE;
		else
			flags = r->type == SIM_RANGE_HOST_REG && (r->flags & CU_MEMHOSTREGISTER_READ_ONLY)
					? CU_POINTER_ATTRIBUTE_ACCESS_FLAG_READ
					: CU_POINTER_ATTRIBUTE_ACCESS_FLAG_READWRITE;
		PUT(unsigned int, flags);
		break;
	}
	case CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE:
		PUT(CUmemoryPool, NULL);
		break;
	case CU_POINTER_ATTRIBUTE_MAPPING_SIZE:
		PUT(size_t, m ? m->size : r->size);
		break;
	case CU_POINTER_ATTRIBUTE_MAPPING_BASE_ADDR:
		PUT(void *, m ? m->start : r->start);
		break;
	default:
		return CUDA_ERROR_INVALID_VALUE;
	}
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuPointerGetAttribute(void *data, CUpointer_attribute attribute, CUdeviceptr ptr)
{
	SIM_ENTER("cuPointerGetAttribute");
	if (!data)
		return CUDA_ERROR_INVALID_VALUE;
	sim_mem_rdlock();
	CUresult rc = pointer_attr(attribute, data, (uintptr_t)ptr, sim_range_find((uintptr_t)ptr));
	sim_mem_unlock();
	return rc;
}

/* Unlike the single query, an address the driver does not know is no error:
 * every value is left at its "nothing" default. */
SIM_EXPORT CUresult cuPointerGetAttributes(unsigned int numAttributes, CUpointer_attribute *attributes,
					   void **data, CUdeviceptr ptr)
{
	SIM_ENTER("cuPointerGetAttributes");
	if (numAttributes == 0 || !attributes || !data)
		return CUDA_ERROR_INVALID_VALUE;
	for (unsigned i = 0; i < numAttributes; i++)
		if (!data[i] || !attr_size(attributes[i]))
			return CUDA_ERROR_INVALID_VALUE;
	sim_mem_rdlock();
	struct sim_range *r = sim_range_find((uintptr_t)ptr);
	for (unsigned i = 0; i < numAttributes; i++) {
		CUpointer_attribute a = attributes[i];
		if (pointer_attr(a, data[i], (uintptr_t)ptr, r) == CUDA_SUCCESS)
			continue;
		memset(data[i], 0, attr_size(a));
		if (a == CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL)
			*(int *)data[i] = -2; /* what cudaPointerGetAttributes reports */
	}
	sim_mem_unlock();
	return CUDA_SUCCESS;
}
