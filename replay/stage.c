/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Staging: the device-to-device path of a swap (DESIGN.md §7). While the
 * process is frozen and its memory still on the source GPU, every region of
 * device memory (the arena's chunks, the application's cuMemCreate
 * allocations) whose device moves to a GPU the source can reach as a peer
 * (or stays on its GPU, in a forced swap) is copied straight into new
 * physical memory on the target, mapped by the shim at a temporary address. The release then saves only what was not
 * staged (module variables, regions of devices with no peer path) to host
 * memory, and the thaw maps the staged memory at the original addresses
 * instead of creating and filling new memory: the contents cross the
 * interconnect once and never touch the host.
 *
 * Ownership: the staging holds one reference to each staged allocation and
 * its temporary mapping. A thaw that adopts the memory takes a reference of
 * its own (cuMemRetainAllocationHandle), so undoing a failed thaw leaves the
 * staged contents intact; the staging is dropped once the thaw committed
 * (rp_saved_free). Staged memory a thaw cannot use (its target GPU is not
 * where the memory is) is first copied to host memory (rp_unstage).
 *
 * The copy is made by the source GPU (its work context and a stream of its
 * own), writing over the peer link: the temporary mapping grants access to
 * both GPUs. A VMM mapping is reachable only by the devices it grants access
 * to, and granting it to another GPU needs a peer link: where there is none
 * (cuDeviceCanAccessPeer), that device's regions take the host path.
 */
#define GS_LOG_SUBSYS "replay"
#include "rp_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "log.h"
#include "thread.h"

/* Copies are issued in pieces of this size, the stream synchronised every
 * RP_STAGE_SYNC bytes: progress without a copy per piece waiting. */
#define RP_STAGE_PIECE (64u << 20)
#define RP_STAGE_SYNC (UINT64_C(512) << 20)

/* ---- one region's staged memory ------------------------------------------------------ */

void rp_stage_drop(struct rp_region *r)
{
	CUresult rc;

	if (!r->stage_handle)
		return;
	gs_inside_begin();
	if (r->stage_va) {
		rc = RP_REAL(cuMemUnmap, r->stage_va, r->size);
		if (rc != CUDA_SUCCESS)
			gs_warn("unmapping staged memory at %#llx failed (%s)",
				(unsigned long long)r->stage_va, rp_cu_name(rc));
		rc = RP_REAL(cuMemAddressFree, r->stage_va, r->size);
		if (rc != CUDA_SUCCESS)
			gs_warn("freeing the staging range %#llx failed (%s)",
				(unsigned long long)r->stage_va, rp_cu_name(rc));
	}
	rc = RP_REAL(cuMemRelease, (CUmemGenericAllocationHandle)r->stage_handle);
	if (rc != CUDA_SUCCESS)
		gs_warn("releasing staged memory %#llx failed (%s)",
			(unsigned long long)r->stage_handle, rp_cu_name(rc));
	gs_inside_end();
	r->stage_handle = 0;
	r->stage_va = 0;
	r->stage_device = -1;
}

uint64_t rp_stage_adopt(const struct rp_region *r, int real_device)
{
	CUmemGenericAllocationHandle h = 0;
	CUresult rc;

	if (!r->stage_handle || r->stage_device != real_device)
		return 0;
	gs_inside_begin();
	rc = RP_REAL(cuMemRetainAllocationHandle, &h, (void *)(uintptr_t)r->stage_va);
	if (rc == CUDA_SUCCESS && h != r->stage_handle) {
		/* Another allocation at that address cannot be: refuse rather
		 * than hand out memory that is not the region's. */
		RP_REAL(cuMemRelease, h);
		rc = CUDA_ERROR_INVALID_HANDLE;
	}
	gs_inside_end();
	if (rc != CUDA_SUCCESS) {
		gs_warn("taking staged memory %#llx failed (%s); its contents will be copied",
			(unsigned long long)r->stage_handle, rp_cu_name(rc));
		return 0;
	}
	return h;
}

bool rp_region_staged_on(const struct rp_region *r, int real_device)
{
	return r->stage_handle && r->stage_device == real_device;
}

/* ---- staging ----------------------------------------------------------------------------- */

struct prop_find {
	uint64_t app;
	CUmemAllocationProp prop;
	unsigned long long flags;
	bool found;
};

static int phys_prop_cb(const struct gs_rec *rec, void *arg)
{
	const struct gs_phys_rec *p = (const struct gs_phys_rec *)rec;
	struct prop_find *f = arg;

	f->prop = p->prop;
	f->flags = p->flags;
	f->found = true;
	return 0;
}

/* The properties the region's memory is created with on `dst`; false
 * when it cannot be staged (memory not on a device, unknown record). */
static bool region_prop(const struct rp_region *g, int dst, CUmemAllocationProp *prop,
			unsigned long long *flags)
{
	struct prop_find f = { .app = g->phys };

	*flags = 0;
	if (g->kind == RP_REGION_ARENA)
		return gs_devmem_chunk_prop(g->device, dst, prop) == 0;
	if (g->kind != RP_REGION_PHYS)
		return false;
	gs_trk_with(GS_KIND_PHYS, g->phys, phys_prop_cb, &f);
	if (!f.found || f.prop.location.type != CU_MEM_LOCATION_TYPE_DEVICE)
		return false;
	*prop = f.prop;
	prop->location.id = dst;
	*flags = f.flags;
	return true;
}

/* Physical memory for g on dst, mapped at a new address that both GPUs can
 * reach. */
static CUresult stage_alloc(struct rp_region *g, int src, int dst)
{
	CUmemAccessDesc access[2] = {
		{ .location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = dst },
		  .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE },
		{ .location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = src },
		  .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE },
	};
	CUmemGenericAllocationHandle h = 0;
	CUmemAllocationProp prop;
	unsigned long long flags;
	CUdeviceptr va = 0;
	CUresult rc;

	if (!region_prop(g, dst, &prop, &flags))
		return CUDA_ERROR_NOT_SUPPORTED;
	rc = RP_REAL(cuMemCreate, &h, g->size, &prop, flags);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = RP_REAL(cuMemAddressReserve, &va, g->size, 0, 0, 0);
	if (rc != CUDA_SUCCESS)
		goto release;
	rc = RP_REAL(cuMemMap, va, g->size, 0, h, 0);
	if (rc != CUDA_SUCCESS)
		goto unreserve;
	/* One entry when the memory stays on its GPU: a location twice in
	 * one call is not something to ask of the driver. */
	rc = RP_REAL(cuMemSetAccess, va, g->size, access, src == dst ? 1 : 2);
	if (rc != CUDA_SUCCESS)
		goto unmap;
	g->stage_handle = h;
	g->stage_va = va;
	g->stage_device = dst;
	return CUDA_SUCCESS;
unmap:
	RP_REAL(cuMemUnmap, va, g->size);
unreserve:
	RP_REAL(cuMemAddressFree, va, g->size);
release:
	RP_REAL(cuMemRelease, h);
	return rc;
}

/* Whether GPU src can write into memory of GPU dst (cached per pair): its
 * own always, another one over a peer link. */
static bool peer_ok(int src, int dst, signed char cache[GS_MAX_DEVICES][GS_MAX_DEVICES])
{
	int can = 0, vmm = 0;

	if (src < 0 || dst < 0 || src >= GS_MAX_DEVICES || dst >= GS_MAX_DEVICES)
		return false;
	if (cache[src][dst] == 0) {
		bool ok = (src == dst ||
			   (RP_REAL(cuDeviceCanAccessPeer, &can, src, dst) == CUDA_SUCCESS && can)) &&
			  RP_REAL(cuDeviceGetAttribute, &vmm,
				  CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED,
				  dst) == CUDA_SUCCESS && vmm;
		cache[src][dst] = ok ? 1 : -1;
	}
	return cache[src][dst] > 0;
}

/* Copy the staged regions among copies[] that are on GPU `src` (their
 * real_device) into their staging (to_stage), or out of it into copies[].va,
 * in `work` (or the GPU's primary context, borrowed). */
static CUresult stage_copy_device(int src, CUcontext work, struct rp_copy *copies, size_t n,
				  bool to_stage, const struct gs_progress *progress, uint64_t *done,
				  uint64_t total, uint64_t *bad_va)
{
	CUcontext ctx = work, popped;
	CUstream stream = NULL;
	bool retained = false;
	uint64_t unsynced = 0;
	CUresult rc = CUDA_SUCCESS;

	if (!ctx) {
		rc = RP_REAL(cuDevicePrimaryCtxRetain, &ctx, src);
		if (rc != CUDA_SUCCESS)
			return rc;
		retained = true;
	}
	rc = RP_REAL(cuCtxPushCurrent_v2, ctx);
	if (rc != CUDA_SUCCESS)
		goto release;
	rc = RP_REAL(cuStreamCreate, &stream, CU_STREAM_NON_BLOCKING);
	for (size_t i = 0; i < n && rc == CUDA_SUCCESS; i++) {
		struct rp_region *g = copies[i].region;

		if (!g->stage_handle || copies[i].real_device != src)
			continue;
		for (uint64_t off = 0; off < g->size && rc == CUDA_SUCCESS; off += RP_STAGE_PIECE) {
			size_t len = g->size - off < RP_STAGE_PIECE ? g->size - off : RP_STAGE_PIECE;

			rc = to_stage ? RP_REAL(cuMemcpyDtoDAsync_v2, g->stage_va + off,
						copies[i].va + off, len, stream)
				      : RP_REAL(cuMemcpyDtoDAsync_v2, copies[i].va + off,
						g->stage_va + off, len, stream);
			*bad_va = g->va;
			if (rc != CUDA_SUCCESS)
				break;
			unsynced += len;
			if (unsynced >= RP_STAGE_SYNC) {
				rc = RP_REAL(cuStreamSynchronize, stream);
				*done += unsynced;
				unsynced = 0;
				rp_progress(progress, "copy", *done, total);
			}
		}
	}
	if (stream) {
		CUresult s = RP_REAL(cuStreamSynchronize, stream);

		if (rc == CUDA_SUCCESS)
			rc = s;
		RP_REAL(cuStreamDestroy_v2, stream);
	}
	*done += unsynced;
	rp_progress(progress, "copy", *done, total);
	RP_REAL(cuCtxPopCurrent_v2, &popped);
release:
	if (retained)
		RP_REAL(cuDevicePrimaryCtxRelease_v2, src);
	return rc;
}

int rp_stage(struct rp_saved *s, struct rp_copy *copies, size_t n, CUcontext const *work,
	     const int *map, const struct gs_progress *progress, json_t *warnings,
	     uint64_t *staged)
{
	signed char peer[GS_MAX_DEVICES][GS_MAX_DEVICES];
	uint64_t total = 0, done = 0, bad_va = 0;
	CUresult rc = CUDA_SUCCESS;

	*staged = 0;
	memset(peer, 0, sizeof(peer));
	gs_inside_begin();
	for (size_t i = 0; i < n && rc == CUDA_SUCCESS; i++) {
		struct rp_region *g = copies[i].region;
		int src = copies[i].real_device;
		int dst = g->device >= 0 && g->device < s->ndev ? map[g->device] : -1;

		g->stage_device = -1;
		if (g->kind == RP_REGION_GLOBAL || !peer_ok(src, dst, peer))
			continue;
		rc = stage_alloc(g, src, dst);
		if (rc == CUDA_ERROR_NOT_SUPPORTED) {
			rc = CUDA_SUCCESS;
			continue;
		}
		if (rc != CUDA_SUCCESS) {
			/* No room on that GPU (it holds the source too, or other
			 * memory): its regions go through host memory, the
			 * other GPUs' still go direct. */
			rp_warn(warnings, "allocating memory for %#llx on GPU %d to copy it device "
				"to device failed (%s); GPU %d's memory goes through host memory",
				(unsigned long long)g->va, dst, rp_cu_name(rc), dst);
			for (size_t k = 0; k < i; k++) {
				if (copies[k].region->stage_handle &&
				    copies[k].region->stage_device == dst) {
					total -= copies[k].region->size;
					rp_stage_drop(copies[k].region);
				}
			}
			for (int d = 0; d < GS_MAX_DEVICES; d++)
				peer[d][dst] = -1;
			rc = CUDA_SUCCESS;
			continue;
		}
		total += g->size;
	}
	gs_inside_end();
	if (rc == CUDA_SUCCESS && total) {
		rp_progress(progress, "copy", 0, total);
		for (int src = 0; src < GS_MAX_DEVICES && rc == CUDA_SUCCESS; src++) {
			bool any = false;

			for (size_t i = 0; i < n && !any; i++)
				any = copies[i].region->stage_handle && copies[i].real_device == src;
			if (!any)
				continue;
			gs_inside_begin();
			rc = stage_copy_device(src, work[src], copies, n, true, progress, &done,
					       total, &bad_va);
			gs_inside_end();
		}
	}
	if (rc != CUDA_SUCCESS) {
		/* The host path still works: nothing is lost by dropping the
		 * staging, the source memory is untouched. */
		rp_warn(warnings, "copying memory device to device (near %#llx) failed (%s); "
			"copying through host memory instead", (unsigned long long)bad_va,
			rp_cu_name(rc));
		for (size_t i = 0; i < n; i++)
			rp_stage_drop(copies[i].region);
		return 0;
	}
	*staged = total;
	if (total)
		gs_info("staged %llu bytes on the target GPUs, device to device",
			(unsigned long long)total);
	return 0;
}

/* ---- into rebuilt memory ----------------------------------------------------------------- */

int rp_stage_restore(struct rp_copy *copies, size_t n, CUcontext const *work,
		     const struct gs_progress *progress, char **err)
{
	uint64_t total = 0, done = 0, bad_va = 0;
	CUresult rc = CUDA_SUCCESS;

	for (size_t i = 0; i < n; i++)
		total += copies[i].region->size;
	for (int dev = 0; dev < GS_MAX_DEVICES && rc == CUDA_SUCCESS && total; dev++) {
		bool any = false;

		for (size_t i = 0; i < n && !any; i++)
			any = copies[i].real_device == dev;
		if (!any)
			continue;
		gs_inside_begin();
		rc = stage_copy_device(dev, work[dev], copies, n, false, progress, &done, total,
				       &bad_va);
		gs_inside_end();
	}
	if (rc != CUDA_SUCCESS)
		return rp_fail(err, rp_cu_errno(rc), "copying staged memory into place (near %#llx) "
			       "failed: %s", (unsigned long long)bad_va, rp_cu_name(rc));
	return 0;
}

/* ---- back to host memory ----------------------------------------------------------------- */

int rp_unstage(struct rp_saved *s, const int *map, const struct gs_progress *progress,
	       char **err)
{
	struct rp_copy *copies = calloc(s->nregions ? s->nregions : 1, sizeof(*copies));
	CUcontext none[GS_MAX_DEVICES] = { 0 };
	size_t n = 0;
	int rc;

	if (!copies)
		return rp_fail(err, -ENOMEM, "out of memory");
	for (size_t i = 0; i < s->nregions; i++) {
		struct rp_region *g = &s->regions[i];

		if (!g->stage_handle)
			continue;
		if (map && g->device >= 0 && g->device < s->ndev &&
		    rp_region_staged_on(g, map[g->device]))
			continue;
		copies[n++] = (struct rp_copy){ .region = g, .va = g->stage_va,
						.real_device = g->stage_device };
	}
	if (!n) {
		free(copies);
		return 0;
	}
	gs_info("copying %zu staged regions to host memory", n);
	rc = rp_dump(copies, n, none, NULL, progress, err);
	if (rc) {
		/* Whatever reached host memory goes: the staged copy stays
		 * the one copy of the contents. */
		for (size_t i = 0; i < n; i++)
			rp_region_drop_host(copies[i].region);
	} else {
		for (size_t i = 0; i < n; i++)
			rp_stage_drop(copies[i].region);
	}
	free(copies);
	return rc;
}
