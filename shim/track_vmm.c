/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tracking hooks for the application's own virtual memory management
 * (reservations, physical handles, mappings, access: PyTorch's expandable
 * segments, NCCL), and for the kinds of memory a migration cannot carry yet
 * (pools and stream-ordered allocations, arrays, managed memory, IPC,
 * shareable handles, multicast), which are recorded so that a freeze
 * refuses while any is live (DESIGN.md §5).
 */
#define GS_LOG_SUBSYS "tracker"

#include <errno.h>

#include "log.h"
#include "track.h"
#include "translate.h"

/* ---- reservations ---------------------------------------------------------------- */

void gs_track_cuMemAddressReserve(bool ptds, CUdeviceptr *ptr, size_t size, size_t alignment,
				  CUdeviceptr addr, unsigned long long flags)
{
	int rc;

	(void)ptds;
	rc = gs_trk_reserve_add(*ptr, size, alignment, addr, flags, GS_OWNER_APP);
	if (rc)
		gs_hook_failed("cuMemAddressReserve", rc);
}

void gs_track_cuMemAddressFree(bool ptds, CUdeviceptr ptr, size_t size)
{
	int rc;

	(void)ptds;
	rc = gs_trk_reserve_free(ptr, size);
	if (rc)
		gs_hook_failed("cuMemAddressFree", rc);
}

/* ---- physical memory ---------------------------------------------------------------- */

void gs_track_cuMemCreate(bool ptds, CUmemGenericAllocationHandle *handle, size_t size,
			  const CUmemAllocationProp *prop, unsigned long long flags)
{
	CUmemGenericAllocationHandle app;
	int rc;

	(void)ptds;
	rc = gs_trk_phys_created(*handle, size, prop, flags, GS_OWNER_APP, false, &app);
	if (rc) {
		gs_hook_failed("cuMemCreate", rc);
		return;
	}
	*handle = app;
}

/* cuMemRelease also releases multicast objects. */
void gs_track_cuMemRelease(bool ptds, CUmemGenericAllocationHandle handle)
{
	int rc;

	(void)ptds;
	rc = gs_trk_phys_released(handle);
	if (rc == -ENOENT) {
		rc = gs_trk_unsup_remove(GS_UNSUP_MULTICAST, handle);
		/* After a migration the wrapper registered the multicast
		 * handle in the physical-handle map (xlat-new), which no
		 * record owns. */
		if (rc == 0)
			gs_hmap_remove(gs_trk_handlemap(GS_KIND_PHYS), handle);
	}
	if (rc)
		gs_hook_failed("cuMemRelease", rc);
}

void gs_track_cuMemRetainAllocationHandle(bool ptds, CUmemGenericAllocationHandle *handle,
					  void *addr)
{
	CUmemGenericAllocationHandle app;
	int rc;

	(void)ptds;
	rc = gs_trk_phys_retained((uintptr_t)addr, *handle, &app);
	if (rc) {
		gs_hook_failed("cuMemRetainAllocationHandle", rc);
		return;
	}
	*handle = app;
}

/* Physical memory another process (or API) owns: recorded as physical
 * memory so mappings of it are tracked, and as unsupported. */
void gs_track_cuMemImportFromShareableHandle(bool ptds, CUmemGenericAllocationHandle *handle,
					     void *osHandle,
					     CUmemAllocationHandleType shHandleType)
{
	CUmemAllocationProp prop = { 0 };
	CUmemGenericAllocationHandle app;
	int rc;

	(void)ptds;
	(void)osHandle;
	(void)shHandleType;
	if (!gs_real.cuMemGetAllocationPropertiesFromHandle ||
	    gs_real.cuMemGetAllocationPropertiesFromHandle(&prop, *handle) != CUDA_SUCCESS)
		prop.type = CU_MEM_ALLOCATION_TYPE_INVALID;
	/* Records hold app ordinals; the driver answered with its own. */
	gs_xlat_memloc_to_app(&prop.location);
	rc = gs_trk_phys_created(*handle, 0, &prop, 0, GS_OWNER_APP, true, &app);
	if (rc) {
		gs_hook_failed("cuMemImportFromShareableHandle", rc);
		return;
	}
	*handle = app;
	rc = gs_trk_unsup_add(GS_UNSUP_SHAREABLE_IMPORT, app, 0, NULL, 0,
			      "cuMemImportFromShareableHandle");
	if (rc)
		gs_hook_failed("cuMemImportFromShareableHandle", rc);
}

void gs_track_cuMemExportToShareableHandle(bool ptds, void *shareableHandle,
					   CUmemGenericAllocationHandle handle,
					   CUmemAllocationHandleType handleType,
					   unsigned long long flags)
{
	int rc;

	(void)ptds;
	(void)shareableHandle;
	(void)handleType;
	(void)flags;
	rc = gs_trk_unsup_add(GS_UNSUP_SHAREABLE_EXPORT, handle, 0, NULL, 0,
			      "cuMemExportToShareableHandle");
	if (rc && rc != -EEXIST)
		gs_hook_failed("cuMemExportToShareableHandle", rc);
}

void gs_track_cuMulticastCreate(bool ptds, CUmemGenericAllocationHandle *mcHandle,
				const CUmulticastObjectProp *prop)
{
	int rc;

	(void)ptds;
	rc = gs_trk_unsup_add(GS_UNSUP_MULTICAST, *mcHandle, prop ? prop->size : 0, NULL, 0,
			      "cuMulticastCreate");
	if (rc)
		gs_hook_failed("cuMulticastCreate", rc);
}

/* ---- mappings and access ----------------------------------------------------------- */

void gs_track_cuMemMap(bool ptds, CUdeviceptr ptr, size_t size, size_t offset,
		       CUmemGenericAllocationHandle handle, unsigned long long flags)
{
	int rc;

	(void)ptds;
	rc = gs_trk_map_add(ptr, size, offset, handle, flags, GS_OWNER_APP);
	if (rc)
		gs_hook_failed("cuMemMap", rc);
}

void gs_track_cuMemUnmap(bool ptds, CUdeviceptr ptr, size_t size)
{
	int rc;

	(void)ptds;
	rc = gs_trk_unmap(ptr, size);
	if (rc)
		gs_hook_failed("cuMemUnmap", rc);
}

void gs_track_cuMemSetAccess(bool ptds, CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc,
			     size_t count)
{
	int rc;

	(void)ptds;
	rc = gs_trk_set_access(ptr, size, desc, count);
	if (rc)
		gs_hook_failed("cuMemSetAccess", rc);
}

/* ---- memory pools and stream-ordered allocations ------------------------------------ */

static void unsup_added(const char *call, enum gs_unsup_kind what, uint64_t key, size_t size,
			CUcontext ctx)
{
	int rc = gs_trk_unsup_add(what, key, size, ctx, 0, call);

	if (rc)
		gs_hook_failed(call, rc);
}

static void unsup_removed(const char *call, enum gs_unsup_kind what, uint64_t key)
{
	int rc = gs_trk_unsup_remove(what, key);

	if (rc)
		gs_hook_failed(call, rc);
}

/* The context of a stream-ordered allocation: its stream's. */
static CUcontext stream_ctx(bool ptds, CUstream s)
{
	CUstream real = (CUstream)(uintptr_t)gs_hook_to_real(GS_KIND_STREAM, (uintptr_t)s);
	gs_fn_cuStreamGetCtx *get = ptds ? gs_real.cuStreamGetCtx_ptsz : gs_real.cuStreamGetCtx;
	CUcontext ctx = NULL;

	if (!s || !get || get(real, &ctx) != CUDA_SUCCESS || !ctx)
		return gs_hook_current_ctx(NULL);
	return (CUcontext)(uintptr_t)gs_hook_to_app(GS_KIND_CTX, (uintptr_t)ctx);
}

void gs_track_cuMemPoolCreate(bool ptds, CUmemoryPool *pool, const CUmemPoolProps *poolProps)
{
	(void)ptds;
	(void)poolProps;
	unsup_added("cuMemPoolCreate", GS_UNSUP_MEMPOOL, (uintptr_t)*pool, 0, NULL);
}

void gs_track_cuMemPoolImportFromShareableHandle(bool ptds, CUmemoryPool *pool_out,
						 void *handle,
						 CUmemAllocationHandleType handleType,
						 unsigned long long flags)
{
	(void)ptds;
	(void)handle;
	(void)handleType;
	(void)flags;
	unsup_added("cuMemPoolImportFromShareableHandle", GS_UNSUP_MEMPOOL, (uintptr_t)*pool_out,
		    0, NULL);
}

void gs_track_cuMemPoolDestroy(bool ptds, CUmemoryPool pool)
{
	(void)ptds;
	unsup_removed("cuMemPoolDestroy", GS_UNSUP_MEMPOOL, (uintptr_t)pool);
}

void gs_track_cuMemAllocAsync(bool ptds, CUdeviceptr *dptr, size_t bytesize, CUstream hStream)
{
	unsup_added("cuMemAllocAsync", GS_UNSUP_ASYNC_ALLOC, *dptr, bytesize,
		    stream_ctx(ptds, hStream));
}

void gs_track_cuMemAllocFromPoolAsync(bool ptds, CUdeviceptr *dptr, size_t bytesize,
				      CUmemoryPool pool, CUstream hStream)
{
	(void)pool;
	unsup_added("cuMemAllocFromPoolAsync", GS_UNSUP_ASYNC_ALLOC, *dptr, bytesize,
		    stream_ctx(ptds, hStream));
}

void gs_track_cuMemPoolImportPointer(bool ptds, CUdeviceptr *ptr_out, CUmemoryPool pool,
				     CUmemPoolPtrExportData *shareData)
{
	(void)ptds;
	(void)pool;
	(void)shareData;
	unsup_added("cuMemPoolImportPointer", GS_UNSUP_ASYNC_ALLOC, *ptr_out, 0,
		    gs_hook_current_ctx(NULL));
}

/* The memory is the application's no more once the free is queued. (A
 * cuMemFree of such a pointer reaches the arena, which calls
 * gs_trk_foreign_free.) */
void gs_track_cuMemFreeAsync(bool ptds, CUdeviceptr dptr, CUstream hStream)
{
	(void)ptds;
	(void)hStream;
	unsup_removed("cuMemFreeAsync", GS_UNSUP_ASYNC_ALLOC, dptr);
}

/* ---- arrays, managed memory, IPC ------------------------------------------------------ */

void gs_track_cuMemAllocManaged(bool ptds, CUdeviceptr *dptr, size_t bytesize,
				unsigned int flags)
{
	(void)ptds;
	(void)flags;
	unsup_added("cuMemAllocManaged", GS_UNSUP_MANAGED, *dptr, bytesize,
		    gs_hook_current_ctx(NULL));
}

void gs_track_cuArrayCreate_v2(bool ptds, CUarray *pHandle,
			       const CUDA_ARRAY_DESCRIPTOR *pAllocateArray)
{
	(void)ptds;
	(void)pAllocateArray;
	unsup_added("cuArrayCreate", GS_UNSUP_ARRAY, (uintptr_t)*pHandle, 0,
		    gs_hook_current_ctx(NULL));
}

void gs_track_cuArray3DCreate_v2(bool ptds, CUarray *pHandle,
				 const CUDA_ARRAY3D_DESCRIPTOR *pAllocateArray)
{
	(void)ptds;
	(void)pAllocateArray;
	unsup_added("cuArray3DCreate", GS_UNSUP_ARRAY, (uintptr_t)*pHandle, 0,
		    gs_hook_current_ctx(NULL));
}

void gs_track_cuArrayDestroy(bool ptds, CUarray hArray)
{
	(void)ptds;
	unsup_removed("cuArrayDestroy", GS_UNSUP_ARRAY, (uintptr_t)hArray);
}

void gs_track_cuMipmappedArrayCreate(bool ptds, CUmipmappedArray *pHandle,
				     const CUDA_ARRAY3D_DESCRIPTOR *pMipmappedArrayDesc,
				     unsigned int numMipmapLevels)
{
	(void)ptds;
	(void)pMipmappedArrayDesc;
	(void)numMipmapLevels;
	unsup_added("cuMipmappedArrayCreate", GS_UNSUP_MIPMAPPED_ARRAY, (uintptr_t)*pHandle, 0,
		    gs_hook_current_ctx(NULL));
}

void gs_track_cuMipmappedArrayDestroy(bool ptds, CUmipmappedArray hMipmappedArray)
{
	(void)ptds;
	unsup_removed("cuMipmappedArrayDestroy", GS_UNSUP_MIPMAPPED_ARRAY,
		      (uintptr_t)hMipmappedArray);
}

/* An exported allocation stays exported until it is freed (the arena's
 * gs_trk_alloc_remove / gs_trk_foreign_free forget the export). */
void gs_track_cuIpcGetMemHandle(bool ptds, CUipcMemHandle *pHandle, CUdeviceptr dptr)
{
	int rc;

	(void)ptds;
	(void)pHandle;
	rc = gs_trk_unsup_add(GS_UNSUP_IPC_MEM_EXPORT, dptr, 0, gs_hook_current_ctx(NULL), 0,
			      "cuIpcGetMemHandle");
	if (rc && rc != -EEXIST)
		gs_hook_failed("cuIpcGetMemHandle", rc);
}

void gs_track_cuIpcOpenMemHandle_v2(bool ptds, CUdeviceptr *pdptr, CUipcMemHandle handle,
				    unsigned int Flags)
{
	(void)ptds;
	(void)handle;
	(void)Flags;
	unsup_added("cuIpcOpenMemHandle", GS_UNSUP_IPC_MEM_IMPORT, *pdptr, 0,
		    gs_hook_current_ctx(NULL));
}

void gs_track_cuIpcCloseMemHandle(bool ptds, CUdeviceptr dptr)
{
	(void)ptds;
	unsup_removed("cuIpcCloseMemHandle", GS_UNSUP_IPC_MEM_IMPORT, dptr);
}
