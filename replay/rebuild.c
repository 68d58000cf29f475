/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Re-creating the process's objects on the thaw's target (DESIGN.md §7):
 * contexts (primary ones retained as often as the release released them),
 * the arenas at their windows, the application's reservations at their
 * addresses, physical memory on the target, mappings at the same offsets
 * and access for the mapped devices, pinned host memory registered again,
 * libraries and modules loaded from the tracker's copies of their images,
 * functions, kernels and variables resolved again, attributes, cache
 * configurations and limits re-applied, streams and events made again.
 * Every object made is recorded (rp_made_add) for thaw.c to undo or to
 * rebind; nothing here touches the tracker's records.
 */
#define GS_LOG_SUBSYS "replay"
#include "rp_thaw.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "hostmem.h"
#include "log.h"
#include "thread.h"

/* ---- snapshots -------------------------------------------------------------------------- */

/* Records copied whole (their pointers are not used after the walk); each
 * snapshot vector was declared with its record type, so its element size is
 * the size to copy. */
static int copy_rec(const struct gs_rec *rec, void *arg)
{
	struct rp_vec *vec = arg;
	void *p = rp_vec_push(vec);

	if (!p)
		return 1;
	memcpy(p, rec, vec->elem);
	return 0;
}

static int copy_mapping(const struct gs_rec *rec, void *arg)
{
	const struct gs_mapping_rec *m = GS_REC_AS(struct gs_mapping_rec, GS_KIND_MAPPING, rec);
	struct map_snap *s;

	if (m->owner != GS_OWNER_APP)
		return 0;
	s = rp_vec_push(arg);
	if (!s)
		return 1;
	s->m = *m;
	s->m.access = NULL;
	s->naccess = m->naccess < GS_MAX_DEVICES ? m->naccess : GS_MAX_DEVICES;
	memcpy(s->access, m->access, s->naccess * sizeof(*s->access));
	return 0;
}

static int copy_function(const struct gs_rec *rec, void *arg)
{
	const struct gs_function_rec *f = GS_REC_AS(struct gs_function_rec, GS_KIND_FUNCTION, rec);
	struct func_snap *s = rp_vec_push(arg);

	if (!s)
		return 1;
	s->f = *f;
	s->f.name = NULL;
	s->f.layout = NULL;
	s->name = strdup(f->name);
	if (!s->name) {
		((struct rp_vec *)arg)->oom = true;
		return 1;
	}
	return 0;
}

static int copy_kernel(const struct gs_rec *rec, void *arg)
{
	const struct gs_kernel_rec *k = GS_REC_AS(struct gs_kernel_rec, GS_KIND_KERNEL, rec);
	struct kernel_snap *s = rp_vec_push(arg);

	if (!s)
		return 1;
	s->app = rec->app;
	s->library = k->library;
	s->name = strdup(k->name);
	s->nsettings = k->nsettings;
	s->settings = k->nsettings ? malloc(k->nsettings * sizeof(*s->settings)) : NULL;
	if (!s->name || (k->nsettings && !s->settings)) {
		((struct rp_vec *)arg)->oom = true;
		return 1;
	}
	memcpy(s->settings, k->settings, k->nsettings * sizeof(*s->settings));
	return 0;
}

static int copy_module(const struct gs_rec *rec, void *arg)
{
	const struct gs_module_rec *m = GS_REC_AS(struct gs_module_rec, GS_KIND_MODULE, rec);
	struct module_snap *s = rp_vec_push(arg);

	if (!s)
		return 1;
	*s = (struct module_snap){ .app = rec->app, .ctx = m->ctx, .device = m->device,
				   .source = m->source, .library = m->library };
	return 0;
}

void rp_snaps_free(struct snaps *s)
{
	for (size_t i = 0; i < s->func.n; i++)
		free(RP_VEC_AT(s->func, struct func_snap, i)->name);
	for (size_t i = 0; i < s->kernel.n; i++) {
		free(RP_VEC_AT(s->kernel, struct kernel_snap, i)->name);
		free(RP_VEC_AT(s->kernel, struct kernel_snap, i)->settings);
	}
	free(s->ctx.v);
	free(s->stream.v);
	free(s->event.v);
	free(s->resv.v);
	free(s->phys.v);
	free(s->map.v);
	free(s->host.v);
	free(s->func.v);
	free(s->kernel.v);
	free(s->module.v);
	free(s->library.v);
}

static int copy_library(const struct gs_rec *rec, void *arg)
{
	uint64_t *p = rp_vec_push(arg);

	if (!p)
		return 1;
	*p = rec->app;
	return 0;
}

int rp_snaps_take(struct snaps *s)
{
	*s = (struct snaps){
		.ctx = RP_VEC(struct gs_ctx_rec), .stream = RP_VEC(struct gs_stream_rec),
		.event = RP_VEC(struct gs_event_rec), .resv = RP_VEC(struct gs_resv_rec),
		.phys = RP_VEC(struct gs_phys_rec), .map = RP_VEC(struct map_snap),
		.host = RP_VEC(struct gs_host_rec), .func = RP_VEC(struct func_snap),
		.kernel = RP_VEC(struct kernel_snap), .module = RP_VEC(struct module_snap),
		.library = RP_VEC(uint64_t),
	};
	gs_trk_foreach(GS_KIND_CTX, copy_rec, &s->ctx);
	gs_trk_foreach(GS_KIND_STREAM, copy_rec, &s->stream);
	gs_trk_foreach(GS_KIND_EVENT, copy_rec, &s->event);
	gs_trk_foreach(GS_KIND_RESERVATION, copy_rec, &s->resv);
	gs_trk_foreach(GS_KIND_PHYS, copy_rec, &s->phys);
	gs_trk_foreach(GS_KIND_MAPPING, copy_mapping, &s->map);
	gs_trk_foreach(GS_KIND_HOST, copy_rec, &s->host);
	gs_trk_foreach(GS_KIND_FUNCTION, copy_function, &s->func);
	gs_trk_foreach(GS_KIND_KERNEL, copy_kernel, &s->kernel);
	gs_trk_foreach(GS_KIND_MODULE, copy_module, &s->module);
	gs_trk_foreach(GS_KIND_LIBRARY, copy_library, &s->library);
	if (s->ctx.oom || s->stream.oom || s->event.oom || s->resv.oom || s->phys.oom ||
	    s->map.oom || s->host.oom || s->func.oom || s->kernel.oom || s->module.oom ||
	    s->library.oom)
		return -ENOMEM;
	return 0;
}

/* ---- 2. build ---------------------------------------------------------------------------- */

static unsigned primary_releases(const struct rp_saved *s, uint64_t ctx)
{
	for (size_t i = 0; i < s->nprimaries; i++)
		if (s->primaries[i].ctx == ctx)
			return s->primaries[i].releases;
	return 0;
}

static int ctx_settings(struct thaw *t, const struct gs_ctx_rec *c, CUcontext real)
{
	CUresult rc;

	gs_inside_begin();
	rc = rp_ctx_push((uintptr_t)real);
	if (rc != CUDA_SUCCESS) {
		gs_inside_end();
		return rp_fail(t->err, rp_cu_errno(rc), "cannot use the new context of %#llx: %s",
			       (unsigned long long)c->hdr.app, rp_cu_name(rc));
	}
	for (int l = 0; l < CU_LIMIT_MAX; l++) {
		if (!(c->limits_set & (1u << l)))
			continue;
		rc = RP_REAL(cuCtxSetLimit, (CUlimit)l, c->limits[l]);
		/* A limit the new GPU does not have (device-side sync depth
		 * from sm_90 on) cannot matter to code running there. */
		if (rc != CUDA_SUCCESS)
			rp_thaw_warn(t, "context %#llx: limit %d = %zu not set on GPU %d (%s)",
			     (unsigned long long)c->hdr.app, l, c->limits[l], rp_real_of(t, c->device),
			     rp_cu_name(rc));
	}
	if (c->cache_config_set && (rc = RP_REAL(cuCtxSetCacheConfig, c->cache_config)) !=
	    CUDA_SUCCESS)
		rp_thaw_warn(t, "context %#llx: cache configuration not set (%s)",
		     (unsigned long long)c->hdr.app, rp_cu_name(rc));
	if (c->shmem_config_set && (rc = RP_REAL(cuCtxSetSharedMemConfig, c->shmem_config)) !=
	    CUDA_SUCCESS)
		rp_thaw_warn(t, "context %#llx: shared memory configuration not set (%s)",
		     (unsigned long long)c->hdr.app, rp_cu_name(rc));
	rp_ctx_pop();
	gs_inside_end();
	return 0;
}

int rp_build_contexts(struct thaw *t, const struct snaps *sn)
{
	for (size_t i = 0; i < sn->ctx.n; i++) {
		const struct gs_ctx_rec *c = RP_VEC_AT(sn->ctx, struct gs_ctx_rec, i);
		int real = rp_real_of(t, c->device);
		CUcontext ctx = NULL;
		struct made *m;
		CUresult rc;
		int err;

		if (real < 0)
			return rp_fail(t->err, -ENODEV, "context %#llx: device %d has no target",
				       (unsigned long long)c->hdr.app, c->device);
		gs_inside_begin();
		if (c->primary) {
			struct gs_device_info info;
			unsigned retains = primary_releases(t->s, c->hdr.app);
			unsigned flags = c->flags;

			if (gs_trk_device_get(c->device, &info) == 0 && info.primary_flags_set)
				flags = info.primary_flags;
			rc = RP_REAL(cuDevicePrimaryCtxSetFlags_v2, real, flags);
			if (rc == CUDA_SUCCESS)
				rc = RP_REAL(cuDevicePrimaryCtxRetain, &ctx, real);
			if (rc == CUDA_SUCCESS) {
				m = rp_made_add(t, MADE_CTX_PRIMARY, GS_KIND_CTX, c->hdr.app,
					     (uintptr_t)ctx);
				if (!m) {
					RP_REAL(cuDevicePrimaryCtxRelease_v2, real);
					gs_inside_end();
					return rp_thaw_nomem(t);
				}
				m->device = real;
				m->count = 1;
				/* As many references as the release gave back. */
				for (unsigned k = 1; k < retains && rc == CUDA_SUCCESS; k++) {
					CUcontext again;
					rc = RP_REAL(cuDevicePrimaryCtxRetain, &again, real);
					if (rc == CUDA_SUCCESS)
						m->count++;
				}
			}
		} else {
			CUctxCreateParams params = { .execAffinityParams = c->affinity,
						     .numExecAffinityParams = c->naffinity };
			CUcontext popped;

			rc = RP_REAL(cuCtxCreate_v4, &ctx, c->naffinity ? &params : NULL, c->flags,
				     real);
			if (rc == CUDA_SUCCESS) {
				/* cuCtxCreate made it current here; this thread's
				 * stack must end as it began. */
				RP_REAL(cuCtxPopCurrent_v2, &popped);
				if (!rp_made_add(t, MADE_CTX_CREATED, GS_KIND_CTX, c->hdr.app,
					      (uintptr_t)ctx)) {
					RP_REAL(cuCtxDestroy_v2, ctx);
					gs_inside_end();
					return rp_thaw_nomem(t);
				}
			}
		}
		gs_inside_end();
		if (rc != CUDA_SUCCESS)
			return rp_fail(t->err, rp_cu_errno(rc), "creating context %#llx on GPU %d "
				       "failed: %s", (unsigned long long)c->hdr.app, real,
				       rp_cu_name(rc));
		err = ctx_settings(t, c, ctx);
		if (err)
			return err;
		if (!t->work[real] || c->primary)
			t->work[real] = ctx;
	}

	/* Peer access, now that every context exists. */
	for (size_t i = 0; i < sn->ctx.n; i++) {
		const struct gs_ctx_rec *c = RP_VEC_AT(sn->ctx, struct gs_ctx_rec, i);
		uint64_t self = rp_new_real(t, GS_KIND_CTX, c->hdr.app);

		for (int p = 0; p < t->ndev && p < 64; p++) {
			int peer_real = rp_real_of(t, p);
			CUresult rc;

			if (!(c->peers_enabled & (UINT64_C(1) << p)) || peer_real < 0 ||
			    !t->work[peer_real])
				continue;
			gs_inside_begin();
			rc = rp_ctx_push(self);
			if (rc == CUDA_SUCCESS) {
				rc = RP_REAL(cuCtxEnablePeerAccess, t->work[peer_real], 0);
				rp_ctx_pop();
			}
			gs_inside_end();
			if (rc != CUDA_SUCCESS && rc != CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED)
				return rp_fail(t->err, rp_cu_errno(rc), "context %#llx: enabling peer "
					       "access to GPU %d failed: %s",
					       (unsigned long long)c->hdr.app, peer_real, rp_cu_name(rc));
		}
	}
	return 0;
}

/* The arena chunks staged on the target: chunk address -> region. */
struct adopt_arena {
	const struct thaw *t;
	struct rp_index by_va;
	int real;
	uint64_t adopted;
};

static uint64_t adopt_chunk(void *arg, uint64_t va, uint64_t size)
{
	struct adopt_arena *aa = arg;
	uint64_t i;
	struct rp_region *g;
	uint64_t h;

	if (!rp_index_get(&aa->by_va, va, &i))
		return 0;
	g = &aa->t->s->regions[i];
	if (g->size != size)
		return 0;
	h = rp_stage_adopt(g, aa->real);
	if (h) {
		aa->adopted += size;
		g->adopted = true;
	}
	return h;
}

int rp_build_arenas(struct thaw *t, const struct snaps *sn)
{
	for (int d = 0; d < t->ndev && d < GS_MAX_DEVICES; d++) {
		struct gs_arena *a = gs_devmem_arena(d);
		int peers[GS_MAX_DEVICES * 2];
		unsigned npeers = 0;
		CUresult rc;

		if (!a)
			continue;
		/* Devices whose contexts enabled peer access to this one. */
		for (size_t i = 0; i < sn->ctx.n; i++) {
			const struct gs_ctx_rec *c = RP_VEC_AT(sn->ctx, struct gs_ctx_rec, i);
			int acc = rp_real_of(t, c->device);
			bool dup = false;

			if (!(c->peers_enabled & (UINT64_C(1) << d)) || acc < 0 || c->device == d)
				continue;
			for (unsigned k = 0; k < npeers; k++)
				dup |= peers[k] == acc;
			if (!dup)
				peers[npeers++] = acc;
		}
		/* And every device with a context that can be this one's peer,
		 * for copies (gs_devmem_device_used): a second grant when it
		 * also enabled peer access. */
		for (int c = 0; c < t->ndev && c < GS_MAX_DEVICES; c++) {
			int acc = rp_real_of(t, c), can = 0;

			if (c == d || acc < 0 || acc == rp_real_of(t, d) ||
			    !(gs_devmem_copy_devices() & (UINT64_C(1) << c)))
				continue;
			gs_inside_begin();
			rc = RP_REAL(cuDeviceCanAccessPeer, &can, acc, rp_real_of(t, d));
			gs_inside_end();
			if (rc == CUDA_SUCCESS && can && npeers < GS_MAX_DEVICES * 2)
				peers[npeers++] = acc;
		}
		struct adopt_arena aa = { .t = t, .real = rp_real_of(t, d) };

		for (size_t i = 0; i < t->s->nregions; i++) {
			const struct rp_region *g = &t->s->regions[i];

			if (g->kind == RP_REGION_ARENA && g->device == d &&
			    rp_region_staged_on(g, aa.real) && rp_index_put(&aa.by_va, g->va, i)) {
				rp_index_free(&aa.by_va);
				return rp_thaw_nomem(t);
			}
		}
		gs_inside_begin();
		rc = gs_arena_attach_adopt(a, aa.real, peers, npeers, adopt_chunk, &aa);
		gs_inside_end();
		rp_index_free(&aa.by_va);
		if (aa.adopted)
			gs_debug("device %d: %llu bytes of staged memory taken over", d,
				 (unsigned long long)aa.adopted);
		if (rc != CUDA_SUCCESS) {
			uint64_t base, size;

			gs_arena_window(a, &base, &size);
			return rp_fail(t->err, rp_cu_errno(rc), "putting device %d's memory back at "
				       "%#llx on GPU %d failed: %s%s", d, (unsigned long long)base,
				       rp_real_of(t, d), rp_cu_name(rc),
				       rc == CUDA_ERROR_ALREADY_MAPPED
					       ? " (the address range is taken)" : "");
		}
		struct made *m = rp_made_add(t, MADE_ARENA, GS_KIND_COUNT, 0, 0);
		if (!m) {
			gs_inside_begin();
			gs_arena_detach(a);
			gs_inside_end();
			return rp_thaw_nomem(t);
		}
		m->device = d;
	}
	return 0;
}

uint64_t rp_map_phys(const struct thaw *t, uint64_t app)
{
	return rp_new_real(t, GS_KIND_PHYS, app);
}

/* The staged memory of the application's allocation `app` on real GPU
 * `real`, with a reference for the thaw, or 0. */
static CUmemGenericAllocationHandle staged_phys(const struct thaw *t, uint64_t app, int real)
{
	for (size_t i = 0; i < t->s->nregions; i++) {
		struct rp_region *g = &t->s->regions[i];
		uint64_t h;

		if (g->kind != RP_REGION_PHYS || g->phys != app)
			continue;
		h = rp_stage_adopt(g, real);
		g->adopted = h != 0;
		return (CUmemGenericAllocationHandle)h;
	}
	return 0;
}

int rp_build_vmm(struct thaw *t, const struct snaps *sn)
{
	CUresult rc = CUDA_SUCCESS;
	const char *what = NULL;
	uint64_t where = 0;
	struct made *m;

	gs_inside_begin();
	for (size_t i = 0; i < sn->resv.n && rc == CUDA_SUCCESS; i++) {
		const struct gs_resv_rec *v = RP_VEC_AT(sn->resv, struct gs_resv_rec, i);
		CUdeviceptr p = 0;

		if (v->owner != GS_OWNER_APP)
			continue;
		what = "reserving";
		where = v->hdr.app;
		rc = RP_REAL(cuMemAddressReserve, &p, v->size, v->alignment, v->hdr.app, v->flags);
		if (rc != CUDA_SUCCESS)
			break;
		if (p != v->hdr.app) {
			/* The hint is only a hint: the range is taken. */
			RP_REAL(cuMemAddressFree, p, v->size);
			rc = CUDA_ERROR_ALREADY_MAPPED;
			break;
		}
		if (!(m = rp_made_add(t, MADE_RESERVATION, GS_KIND_RESERVATION, 0, p))) {
			RP_REAL(cuMemAddressFree, p, v->size);
			rc = CUDA_ERROR_OUT_OF_MEMORY;
			break;
		}
		m->va = p;
		m->size = v->size;
	}
	for (size_t i = 0; i < sn->phys.n && rc == CUDA_SUCCESS; i++) {
		const struct gs_phys_rec *p = RP_VEC_AT(sn->phys, struct gs_phys_rec, i);
		CUmemAllocationProp prop = p->prop;
		CUmemGenericAllocationHandle h = 0;

		if (p->owner != GS_OWNER_APP)
			continue;
		if (prop.location.type == CU_MEM_LOCATION_TYPE_DEVICE)
			prop.location.id = rp_real_of(t, prop.location.id);
		what = "creating physical memory";
		where = p->hdr.app;
		h = staged_phys(t, p->hdr.app, prop.location.id);
		if (!h)
			rc = RP_REAL(cuMemCreate, &h, p->size, &prop, p->flags);
		if (rc != CUDA_SUCCESS)
			break;
		if (!(m = rp_made_add(t, MADE_PHYS, GS_KIND_PHYS, p->hdr.app, h))) {
			RP_REAL(cuMemRelease, h);
			rc = CUDA_ERROR_OUT_OF_MEMORY;
			break;
		}
		m->count = 1;
		m->size = p->size;
	}
	for (size_t i = 0; i < sn->map.n && rc == CUDA_SUCCESS; i++) {
		const struct map_snap *s = RP_VEC_AT(sn->map, struct map_snap, i);
		CUmemAccessDesc desc[GS_MAX_DEVICES];
		uint64_t h = rp_map_phys(t, s->m.phys);

		what = "mapping";
		where = s->m.hdr.app;
		rc = h ? RP_REAL(cuMemMap, s->m.hdr.app, s->m.size, s->m.offset,
				 (CUmemGenericAllocationHandle)h, s->m.flags)
		       : CUDA_ERROR_INVALID_HANDLE;
		if (rc != CUDA_SUCCESS)
			break;
		if (!(m = rp_made_add(t, MADE_MAPPING, GS_KIND_MAPPING, 0, h))) {
			RP_REAL(cuMemUnmap, s->m.hdr.app, s->m.size);
			rc = CUDA_ERROR_OUT_OF_MEMORY;
			break;
		}
		m->va = s->m.hdr.app;
		m->size = s->m.size;
		for (unsigned k = 0; k < s->naccess; k++) {
			desc[k].location = s->access[k].location;
			desc[k].flags = s->access[k].flags;
			if (desc[k].location.type == CU_MEM_LOCATION_TYPE_DEVICE)
				desc[k].location.id = rp_real_of(t, desc[k].location.id);
		}
		what = "setting access to";
		if (s->naccess)
			rc = RP_REAL(cuMemSetAccess, s->m.hdr.app, s->m.size, desc, s->naccess);
	}
	/* References: one from cuMemCreate; the application holds
	 * handle_refs, and its mappings hold the memory on their own. */
	for (size_t i = 0; i < sn->phys.n && rc == CUDA_SUCCESS; i++) {
		const struct gs_phys_rec *p = RP_VEC_AT(sn->phys, struct gs_phys_rec, i);
		struct made *pm = NULL;
		uint64_t va = 0;

		if (p->owner != GS_OWNER_APP || p->handle_refs == 1)
			continue;
		pm = rp_made_find(t, GS_KIND_PHYS, p->hdr.app);
		if (!pm) {
			rc = CUDA_ERROR_INVALID_HANDLE;
			break;
		}
		for (size_t k = 0; k < sn->map.n && !va; k++)
			if (RP_VEC_AT(sn->map, struct map_snap, k)->m.phys == p->hdr.app)
				va = RP_VEC_AT(sn->map, struct map_snap, k)->m.hdr.app;
		what = "re-creating references to";
		where = p->hdr.app;
		if (p->handle_refs == 0) {
			/* Released by the application, alive through its
			 * mappings: only they hold it now. */
			if (!va)
				continue;
			rc = RP_REAL(cuMemRelease, (CUmemGenericAllocationHandle)pm->real);
			if (rc == CUDA_SUCCESS)
				pm->count = 0;
			continue;
		}
		for (unsigned k = 1; k < p->handle_refs && rc == CUDA_SUCCESS; k++) {
			CUmemGenericAllocationHandle again = 0;

			rc = va ? RP_REAL(cuMemRetainAllocationHandle, &again, (void *)(uintptr_t)va)
				: CUDA_ERROR_NOT_SUPPORTED;
			if (rc == CUDA_SUCCESS && again != pm->real) {
				RP_REAL(cuMemRelease, again);
				rc = CUDA_ERROR_NOT_SUPPORTED;
			}
			if (rc == CUDA_SUCCESS)
				pm->count++;
		}
	}
	gs_inside_end();
	if (rc != CUDA_SUCCESS)
		return rp_fail(t->err, rp_cu_errno(rc), "%s %#llx on the target failed: %s%s",
			       what ? what : "VMM", (unsigned long long)where, rp_cu_name(rc),
			       rc == CUDA_ERROR_ALREADY_MAPPED
				       ? " (the address range is taken on the target)" : "");
	return 0;
}

int rp_build_host(struct thaw *t, const struct snaps *sn)
{
	for (size_t i = 0; i < sn->host.n; i++) {
		const struct gs_host_rec *h = RP_VEC_AT(sn->host, struct gs_host_rec, i);
		uint64_t ctx = rp_new_real(t, GS_KIND_CTX, (uintptr_t)h->d.ctx);
		unsigned flags = h->d.kind == GS_HOST_ALLOC ? gs_hostmem_register_flags(h->d.flags)
							    : h->d.flags;
		CUdeviceptr devptr = 0;
		struct made *m;
		CUresult rc;

		if (!ctx) {
			/* Its context is gone (or was never known): any will
			 * do for a portable pinning. */
			for (size_t k = 0; k < t->nmade && !ctx; k++)
				if (t->made[k].kind == GS_KIND_CTX)
					ctx = t->made[k].real;
		}
		if (!ctx)
			return rp_fail(t->err, -ENOENT, "no context to pin host memory %p in",
				       h->d.ptr);
		gs_inside_begin();
		rc = rp_ctx_push(ctx);
		if (rc == CUDA_SUCCESS) {
			rc = RP_REAL(cuMemHostRegister_v2, h->d.ptr, h->d.size, flags);
			if (rc == CUDA_SUCCESS && (flags & CU_MEMHOSTREGISTER_DEVICEMAP) &&
			    RP_REAL(cuMemHostGetDevicePointer_v2, &devptr, h->d.ptr, 0) !=
				    CUDA_SUCCESS)
				devptr = 0;
			rp_ctx_pop();
		}
		gs_inside_end();
		if (rc != CUDA_SUCCESS)
			return rp_fail(t->err, rp_cu_errno(rc), "pinning host memory %p (%zu bytes) "
				       "again failed: %s", h->d.ptr, h->d.size, rp_cu_name(rc));
		if (!(m = rp_made_add(t, MADE_HOSTREG, GS_KIND_HOST, 0, 0))) {
			gs_inside_begin();
			if (rp_ctx_push(ctx) == CUDA_SUCCESS) {
				RP_REAL(cuMemHostUnregister, h->d.ptr);
				rp_ctx_pop();
			}
			gs_inside_end();
			return rp_thaw_nomem(t);
		}
		m->va = (uintptr_t)h->d.ptr;
		m->ctx = ctx;
		/* With unified addressing the device sees registered memory
		 * at its host address; where it does not, a pointer the
		 * application kept may be stale. */
		if (h->d.devptr && devptr && devptr != h->d.devptr)
			rp_thaw_warn(t, "pinned host memory %p is now mapped for the device at %#llx, no "
			     "longer at %#llx", h->d.ptr, (unsigned long long)devptr,
			     (unsigned long long)h->d.devptr);
	}
	return 0;
}

/* Loading code runs inside a tracker walk: the image copy is only valid
 * there (the driver call makes no tracker call). */
struct load {
	struct thaw *t;
	uint64_t ctx;     /* real context to load in (modules) */
	int real_device;
	CUresult rc;
	uint64_t handle;
};

static unsigned copied_options(const struct gs_optlist *l, int *opts, void **vals)
{
	unsigned n = 0;

	for (unsigned i = 0; i < l->n; i++) {
		if (l->opts[i].cls != GS_OPT_COPIED)
			continue;
		opts[n] = l->opts[i].option;
		vals[n] = (void *)(uintptr_t)l->opts[i].value;
		n++;
	}
	return n;
}

static int load_library_cb(const struct gs_rec *rec, void *arg)
{
	const struct gs_library_rec *l = GS_REC_AS(struct gs_library_rec, GS_KIND_LIBRARY, rec);
	struct load *ld = arg;
	int jopt[64], lopt[16];
	void *jval[64], *lval[16];
	unsigned nj = l->jit.n <= 64 ? copied_options(&l->jit, jopt, jval) : 0;
	unsigned nl = l->lib.n <= 16 ? copied_options(&l->lib, lopt, lval) : 0;
	CUlibrary lib = NULL;

	ld->rc = RP_REAL(cuLibraryLoadData, &lib, l->image.data, (CUjit_option *)jopt, jval, nj,
			 (CUlibraryOption *)lopt, lval, nl);
	ld->handle = (uintptr_t)lib;
	return 0;
}

static int load_module_cb(const struct gs_rec *rec, void *arg)
{
	const struct gs_module_rec *m = GS_REC_AS(struct gs_module_rec, GS_KIND_MODULE, rec);
	struct load *ld = arg;
	int opt[64];
	void *val[64];
	unsigned n = m->jit.n <= 64 ? copied_options(&m->jit, opt, val) : 0;
	CUmodule mod = NULL;

	ld->rc = rp_ctx_push(ld->ctx);
	if (ld->rc != CUDA_SUCCESS)
		return 0;
	/* The tracker's copy, not the file again: it may have changed. A
	 * fatbin picks the target's code here. */
	if (n)
		ld->rc = RP_REAL(cuModuleLoadDataEx, &mod, m->image.data, n, (CUjit_option *)opt,
				 val);
	else
		ld->rc = RP_REAL(cuModuleLoadData, &mod, m->image.data);
	rp_ctx_pop();
	ld->handle = (uintptr_t)mod;
	return 0;
}

static void kernel_settings(struct thaw *t, const struct kernel_snap *k, CUkernel real)
{
	for (unsigned i = 0; i < k->nsettings; i++) {
		const struct gs_kernel_setting *s = &k->settings[i];
		CUfunction as_func = (CUfunction)(void *)real;
		int dev = s->device >= 0 ? rp_real_of(t, s->device) : -1;
		CUresult rc;

		if (s->device >= 0 && dev < 0)
			continue;
		if (s->attr == GS_KERNEL_CACHE_CONFIG)
			rc = dev < 0 ? RP_REAL(cuFuncSetCacheConfig, as_func, (CUfunc_cache)s->value)
				     : RP_REAL(cuKernelSetCacheConfig, real, (CUfunc_cache)s->value,
					       dev);
		else if (s->attr == GS_KERNEL_SHMEM_CONFIG)
			rc = RP_REAL(cuFuncSetSharedMemConfig, as_func, (CUsharedconfig)s->value);
		else
			rc = dev < 0 ? RP_REAL(cuFuncSetAttribute, as_func,
					       (CUfunction_attribute)s->attr, s->value)
				     : RP_REAL(cuKernelSetAttribute, (CUfunction_attribute)s->attr,
					       s->value, real, dev);
		if (rc != CUDA_SUCCESS)
			rp_thaw_warn(t, "kernel %s: setting %d = %d not applied (%s)", k->name, s->attr,
			     s->value, rp_cu_name(rc));
	}
}

int rp_build_code(struct thaw *t, const struct snaps *sn)
{
	/* Libraries: context-independent, loaded once. */
	for (size_t i = 0; i < sn->library.n; i++) {
		uint64_t app = *RP_VEC_AT(sn->library, uint64_t, i);
		struct load ld = { .t = t };

		gs_inside_begin();
		gs_trk_with(GS_KIND_LIBRARY, app, load_library_cb, &ld);
		gs_inside_end();
		if (ld.rc != CUDA_SUCCESS)
			return rp_fail(t->err, rp_cu_errno(ld.rc), "loading library %#llx again "
				       "failed: %s", (unsigned long long)app, rp_cu_name(ld.rc));
		if (!rp_made_add(t, MADE_LIBRARY, GS_KIND_LIBRARY, app, ld.handle)) {
			gs_inside_begin();
			RP_REAL(cuLibraryUnload, (CUlibrary)(uintptr_t)ld.handle);
			gs_inside_end();
			return rp_thaw_nomem(t);
		}
	}
	for (size_t i = 0; i < sn->kernel.n; i++) {
		const struct kernel_snap *k = RP_VEC_AT(sn->kernel, struct kernel_snap, i);
		uint64_t lib = rp_new_real(t, GS_KIND_LIBRARY, k->library);
		CUkernel kern = NULL;
		CUresult rc;

		gs_inside_begin();
		rc = lib ? RP_REAL(cuLibraryGetKernel, &kern, (CUlibrary)(uintptr_t)lib, k->name)
			 : CUDA_ERROR_INVALID_HANDLE;
		if (rc == CUDA_SUCCESS)
			kernel_settings(t, k, kern);
		gs_inside_end();
		if (rc != CUDA_SUCCESS)
			return rp_fail(t->err, rp_cu_errno(rc), "kernel %s of library %#llx not "
				       "found again: %s", k->name, (unsigned long long)k->library,
				       rp_cu_name(rc));
		if (!rp_made_add(t, MADE_KERNEL, GS_KIND_KERNEL, k->app, (uintptr_t)kern))
			return rp_thaw_nomem(t);
	}

	/* Modules, in their contexts. */
	for (size_t i = 0; i < sn->module.n; i++) {
		const struct module_snap *m = RP_VEC_AT(sn->module, struct module_snap, i);
		struct load ld = { .t = t, .ctx = rp_new_real(t, GS_KIND_CTX, m->ctx),
				   .real_device = rp_real_of(t, m->device) };
		enum made_what what = MADE_MODULE;

		if (!ld.ctx)
			return rp_fail(t->err, -ENOENT, "module %#llx: its context %#llx was not "
				       "re-created", (unsigned long long)m->app,
				       (unsigned long long)m->ctx);
		gs_inside_begin();
		if (m->source == GS_MODSRC_LIBRARY) {
			uint64_t lib = rp_new_real(t, GS_KIND_LIBRARY, m->library);
			CUmodule mod = NULL;

			what = MADE_LIBMODULE;
			ld.rc = rp_ctx_push(ld.ctx);
			if (ld.rc == CUDA_SUCCESS) {
				ld.rc = lib ? RP_REAL(cuLibraryGetModule, &mod, (CUlibrary)(uintptr_t)lib)
					    : CUDA_ERROR_INVALID_HANDLE;
				rp_ctx_pop();
			}
			ld.handle = (uintptr_t)mod;
		} else {
			ld.rc = CUDA_ERROR_NOT_FOUND;
			gs_trk_with(GS_KIND_MODULE, m->app, load_module_cb, &ld);
		}
		gs_inside_end();
		if (ld.rc != CUDA_SUCCESS)
			return rp_fail(t->err, rp_cu_errno(ld.rc), "loading module %#llx on GPU %d "
				       "(sm_%u) failed: %s", (unsigned long long)m->app,
				       ld.real_device, m->device >= 0 ? t->tsm[m->device] : 0,
				       rp_cu_name(ld.rc));
		if (!rp_made_add(t, what, GS_KIND_MODULE, m->app, ld.handle)) {
			if (what == MADE_MODULE) {
				gs_inside_begin();
				RP_REAL(cuModuleUnload, (CUmodule)(uintptr_t)ld.handle);
				gs_inside_end();
			}
			return rp_thaw_nomem(t);
		}
	}

	/* Functions, and what the application set on them. */
	for (size_t i = 0; i < sn->func.n; i++) {
		const struct func_snap *fs = RP_VEC_AT(sn->func, struct func_snap, i);
		const struct gs_function_rec *f = &fs->f;
		CUfunction fn = NULL;
		CUresult rc;

		gs_inside_begin();
		if (f->module) {
			uint64_t mod = rp_new_real(t, GS_KIND_MODULE, f->module);
			rc = mod ? RP_REAL(cuModuleGetFunction, &fn, (CUmodule)(uintptr_t)mod, fs->name)
				 : CUDA_ERROR_INVALID_HANDLE;
		} else {
			uint64_t kern = rp_new_real(t, GS_KIND_KERNEL, f->kernel);
			uint64_t ctx = rp_new_real(t, GS_KIND_CTX, f->ctx);

			rc = kern && ctx ? rp_ctx_push(ctx) : CUDA_ERROR_INVALID_HANDLE;
			if (rc == CUDA_SUCCESS) {
				rc = RP_REAL(cuKernelGetFunction, &fn, (CUkernel)(uintptr_t)kern);
				rp_ctx_pop();
			}
		}
		for (int a = 0; a < GS_FUNC_ATTRS && rc == CUDA_SUCCESS; a++) {
			if (!(f->attrs_set & (1u << a)))
				continue;
			rc = RP_REAL(cuFuncSetAttribute, fn, (CUfunction_attribute)a, f->attrs[a]);
			if (rc != CUDA_SUCCESS) {
				gs_inside_end();
				return rp_fail(t->err, rp_cu_errno(rc), "function %s: attribute %d = %d "
					       "cannot be set on the target: %s", fs->name, a,
					       f->attrs[a], rp_cu_name(rc));
			}
		}
		if (rc == CUDA_SUCCESS) {
			CUresult hint = CUDA_SUCCESS;

			/* Hints (and deprecated ones): a GPU may ignore them. */
			if (f->cache_config_set)
				hint = RP_REAL(cuFuncSetCacheConfig, fn, f->cache_config);
			if (f->shmem_config_set && hint == CUDA_SUCCESS)
				hint = RP_REAL(cuFuncSetSharedMemConfig, fn, f->shmem_config);
			if (f->block_shape_set && hint == CUDA_SUCCESS)
				hint = RP_REAL(cuFuncSetBlockShape, fn, f->block_shape[0],
					       f->block_shape[1], f->block_shape[2]);
			if (f->shared_size_set && hint == CUDA_SUCCESS)
				hint = RP_REAL(cuFuncSetSharedSize, fn, f->shared_size);
			if (hint != CUDA_SUCCESS)
				rp_thaw_warn(t, "function %s: a configuration was not applied (%s)", fs->name,
				     rp_cu_name(hint));
		}
		gs_inside_end();
		if (rc != CUDA_SUCCESS)
			return rp_fail(t->err, rp_cu_errno(rc), "function %s not found again: %s",
				       fs->name, rp_cu_name(rc));
		if (!rp_made_add(t, MADE_FUNCTION, GS_KIND_FUNCTION, f->hdr.app, (uintptr_t)fn))
			return rp_thaw_nomem(t);
	}

	/* Variables at their new addresses. */
	for (size_t i = 0; i < t->s->nregions; i++) {
		struct rp_region *g = &t->s->regions[i];
		uint64_t owner = rp_new_real(t, g->owner_kind, g->owner);
		uint64_t ctx = rp_new_real(t, GS_KIND_CTX, g->ctx);
		CUdeviceptr addr = 0;
		size_t size = 0;
		CUresult rc;

		if (g->kind != RP_REGION_GLOBAL)
			continue;
		gs_inside_begin();
		rc = owner && ctx ? rp_ctx_push(ctx) : CUDA_ERROR_INVALID_HANDLE;
		if (rc == CUDA_SUCCESS) {
			rc = g->owner_kind == GS_KIND_MODULE
				     ? RP_REAL(cuModuleGetGlobal_v2, &addr, &size,
					       (CUmodule)(uintptr_t)owner, g->name)
				     : RP_REAL(cuLibraryGetGlobal, &addr, &size,
					       (CUlibrary)(uintptr_t)owner, g->name);
			rp_ctx_pop();
		}
		gs_inside_end();
		if (rc == CUDA_SUCCESS && size != g->size)
			rc = CUDA_ERROR_INVALID_IMAGE;
		if (rc != CUDA_SUCCESS)
			return rp_fail(t->err, rp_cu_errno(rc), "variable %s of %s %#llx: not found "
				       "again with its size (%zu bytes): %s", g->name,
				       gs_kind_name(g->owner_kind), (unsigned long long)g->owner,
				       (size_t)g->size, rp_cu_name(rc));
		g->dest = addr;
	}
	return 0;
}

int rp_build_streams_events(struct thaw *t, const struct snaps *sn)
{
	for (size_t i = 0; i < sn->stream.n; i++) {
		const struct gs_stream_rec *s = RP_VEC_AT(sn->stream, struct gs_stream_rec, i);
		uint64_t ctx = rp_new_real(t, GS_KIND_CTX, s->ctx);
		CUstream st = NULL;
		CUresult rc;

		gs_inside_begin();
		rc = ctx ? rp_ctx_push(ctx) : CUDA_ERROR_INVALID_CONTEXT;
		if (rc == CUDA_SUCCESS) {
			/* The driver clamps a priority outside the new GPU's
			 * range, as it did at creation. */
			rc = s->priority_set
				     ? RP_REAL(cuStreamCreateWithPriority, &st, s->flags, s->priority)
				     : RP_REAL(cuStreamCreate, &st, s->flags);
			rp_ctx_pop();
		}
		gs_inside_end();
		if (rc != CUDA_SUCCESS)
			return rp_fail(t->err, rp_cu_errno(rc), "creating stream %#llx again "
				       "failed: %s", (unsigned long long)s->hdr.app, rp_cu_name(rc));
		if (!rp_made_add(t, MADE_STREAM, GS_KIND_STREAM, s->hdr.app, (uintptr_t)st)) {
			gs_inside_begin();
			RP_REAL(cuStreamDestroy_v2, st);
			gs_inside_end();
			return rp_thaw_nomem(t);
		}
	}
	for (size_t i = 0; i < sn->event.n; i++) {
		const struct gs_event_rec *e = RP_VEC_AT(sn->event, struct gs_event_rec, i);
		uint64_t ctx = rp_new_real(t, GS_KIND_CTX, e->ctx);
		CUevent ev = NULL;
		CUresult rc;

		gs_inside_begin();
		rc = ctx ? rp_ctx_push(ctx) : CUDA_ERROR_INVALID_CONTEXT;
		if (rc == CUDA_SUCCESS) {
			/* Everything was complete at the freeze: a fresh event
			 * is complete too. */
			rc = RP_REAL(cuEventCreate, &ev, e->flags);
			rp_ctx_pop();
		}
		gs_inside_end();
		if (rc != CUDA_SUCCESS)
			return rp_fail(t->err, rp_cu_errno(rc), "creating event %#llx again failed: %s",
				       (unsigned long long)e->hdr.app, rp_cu_name(rc));
		if (!rp_made_add(t, MADE_EVENT, GS_KIND_EVENT, e->hdr.app, (uintptr_t)ev)) {
			gs_inside_begin();
			RP_REAL(cuEventDestroy_v2, ev);
			gs_inside_end();
			return rp_thaw_nomem(t);
		}
	}
	return 0;
}
