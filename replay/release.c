/* SPDX-License-Identifier: Apache-2.0 */
/*
 * release (DESIGN.md §7): from FROZEN, save every byte of device state the
 * process owns, then destroy every driver object so the GPU holds nothing
 * of it. The tracker's records stay: they are what a thaw rebuilds from.
 *
 * What is saved:
 *  - the cuMemAlloc arena, chunk by chunk, at its addresses;
 *  - every physical allocation the application made with cuMemCreate,
 *    whole, through a temporary mapping of our own (its mappings may cover
 *    only part of it, or grant the device no access);
 *  - every __device__/__constant__ variable of every module, and of every
 *    library in the contexts it is known to be loaded in: the driver keeps
 *    them in memory of its own, which a reload on another GPU puts
 *    elsewhere, fresh.
 * If saving fails nothing has been destroyed and the process stays FROZEN.
 *
 * Destruction goes through the real driver, not the hooks, so the tracker
 * does not see it: pinned host memory is unregistered (the shim's own stays
 * mapped for the application), events, streams, modules, libraries, the
 * application's mappings, physical memory and reservations go, the arenas
 * detach, created contexts are destroyed and primary contexts released
 * until the driver reports them inactive. A failure there is logged and
 * reported but does not stop the release: the state is saved, and an
 * object the driver refused to destroy only costs memory on a GPU the
 * process no longer uses.
 *
 * Reservations are freed, not kept: whether a VMM reservation survives the
 * destruction of every context is not something the driver documents (the
 * simulator keeps them; a GPU may not), so a thaw re-reserves each range at
 * its address and fails cleanly if the address is not given back.
 */
#define GS_LOG_SUBSYS "replay"
#include "rp_release.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arena.h"
#include "gate.h"
#include "image.h"
#include "log.h"
#include "shim.h"
#include "thread.h"

void rp_release_warn(struct release *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	rp_warnv(r->warnings, fmt, ap);
	va_end(ap);
}

int rp_src_real(const struct rp_saved *s, int app)
{
	return app >= 0 && app < s->ndev ? s->src_real[app] : -1;
}

/* ---- the image ------------------------------------------------------------------------- */

static void image_log(void *arg, enum gs_image_log_level level, const char *msg)
{
	(void)arg;
	if (level == GS_IMAGE_LOG_ERROR)
		gs_error("image: %s", msg);
	else if (level == GS_IMAGE_LOG_WARN)
		gs_warn("image: %s", msg);
	else
		gs_debug("image: %s", msg);
}

static int image_source(struct release *r, struct gs_image_writer *w)
{
	struct gs_image_device devs[GS_MAX_DEVICES];
	struct gs_image_source src = { .pid = getpid(), .devices = devs };
	int version = 0;

	gs_inside_begin();
	RP_REAL(cuDriverGetVersion, &version);
	for (int d = 0; d < r->s->ndev; d++) {
		struct gs_image_device *dev = &devs[src.ndevices];
		int real = r->s->src_real[d];
		CUuuid u;
		size_t total = 0;

		if (!(r->s->used_devices & (UINT64_C(1) << d)))
			continue;
		memset(dev, 0, sizeof(*dev));
		dev->ordinal = d;
		if (RP_REAL(cuDeviceGetUuid_v2, &u, real) == CUDA_SUCCESS)
			memcpy(dev->uuid, u.bytes, sizeof(dev->uuid));
		if (RP_REAL(cuDeviceGetName, dev->name, sizeof(dev->name), real) != CUDA_SUCCESS)
			dev->name[0] = '\0';
		dev->cc_major = (int)(r->s->src_sm[d] / 10);
		dev->cc_minor = (int)(r->s->src_sm[d] % 10);
		if (RP_REAL(cuDeviceTotalMem_v2, &total, real) == CUDA_SUCCESS)
			dev->total_mem = total;
		src.ndevices++;
	}
	gs_inside_end();
	src.driver_version = version;
	return gs_image_set_source(w, &src);
}

struct module_store {
	struct gs_image_writer *w;
	uint32_t index;
	int rc;
};

static int store_code_cb(const struct gs_rec *rec, void *arg)
{
	const struct gs_module_rec *m = GS_REC_AS(struct gs_module_rec, GS_KIND_MODULE, rec);
	const struct gs_library_rec *l = GS_REC_AS(struct gs_library_rec, GS_KIND_LIBRARY, rec);
	const struct gs_image_copy *img = m ? &m->image : &l->image;
	struct module_store *ms = arg;

	if (!img->data) {
		ms->rc = -ENODATA;
		return 0;
	}
	/* Writes the file: no tracker call, no driver call. */
	ms->rc = gs_image_add_module(ms->w, img->data, img->size, &ms->index);
	return 0;
}

/* The records a reader of the image needs to make sense of memory.img
 * (gpu-inspect); a thaw in this process rebuilds from the tracker. */
static json_t *image_state(struct release *r, const struct rp_vec *ctxs, const struct rp_vec *code,
			   struct gs_image_writer *w)
{
	json_t *st = json_object(), *regions = json_array(), *mods = json_array(),
	       *cx = json_array(), *map = json_object();

	for (size_t i = 0; i < r->s->nregions; i++) {
		const struct rp_region *g = &r->s->regions[i];
		static const char *const kinds[] = { "arena", "vmm", "global" };
		json_t *o = json_object();

		json_object_set_new(o, "kind", json_string(kinds[g->kind]));
		json_object_set_new(o, "device", json_integer(g->device));
		json_object_set_new(o, "va", json_integer((json_int_t)g->va));
		json_object_set_new(o, "size", json_integer((json_int_t)g->size));
		json_object_set_new(o, "extent", json_integer(g->extent));
		if (g->kind == RP_REGION_PHYS)
			json_object_set_new(o, "handle", json_integer((json_int_t)g->phys));
		if (g->kind == RP_REGION_GLOBAL) {
			json_object_set_new(o, "owner", json_integer((json_int_t)g->owner));
			json_object_set_new(o, "owner_kind", json_string(gs_kind_name(g->owner_kind)));
			json_object_set_new(o, "ctx", json_integer((json_int_t)g->ctx));
			json_object_set_new(o, "name", json_string(g->name));
			if (g->tracked)
				json_object_set_new(o, "app_va", json_integer((json_int_t)g->app_va));
		}
		json_array_append_new(regions, o);
	}
	for (size_t i = 0; i < code->n; i++) {
		const struct code_snap *c = (const struct code_snap *)code->v + i;
		struct module_store ms = { .w = w };
		json_t *o;

		if (c->from_library)
			continue;
		gs_trk_with(c->kind, c->app, store_code_cb, &ms);
		o = json_object();
		json_object_set_new(o, "kind", json_string(gs_kind_name(c->kind)));
		json_object_set_new(o, "handle", json_integer((json_int_t)c->app));
		if (c->kind == GS_KIND_MODULE) {
			json_object_set_new(o, "ctx", json_integer((json_int_t)c->ctx));
			json_object_set_new(o, "device", json_integer(c->device));
		}
		json_object_set_new(o, "image", ms.rc ? json_null() : json_integer(ms.index));
		json_array_append_new(mods, o);
	}
	for (size_t i = 0; i < ctxs->n; i++) {
		const struct ctx_snap *c = (const struct ctx_snap *)ctxs->v + i;
		json_t *o = json_object();

		json_object_set_new(o, "handle", json_integer((json_int_t)c->app));
		json_object_set_new(o, "device", json_integer(c->device));
		json_object_set_new(o, "primary", json_boolean(c->primary));
		json_array_append_new(cx, o);
	}
	for (int d = 0; d < r->s->ndev; d++) {
		char key[16];

		if (!(r->s->used_devices & (UINT64_C(1) << d)))
			continue;
		snprintf(key, sizeof(key), "%d", d);
		json_object_set_new(map, key, json_integer(r->s->src_real[d]));
	}
	json_object_set_new(st, "producer", json_string("gpuswap replay"));
	json_object_set_new(st, "regions", regions);
	json_object_set_new(st, "modules", mods);
	json_object_set_new(st, "contexts", cx);
	json_object_set_new(st, "gpus", map);
	return st;
}

/* ---- saving ------------------------------------------------------------------------------- */

static int work_contexts(struct release *r, const struct rp_vec *ctxs)
{
	/* One context per GPU to copy in: a primary context where there is
	 * one (it is what cudart uses), else any. */
	for (size_t i = 0; i < ctxs->n; i++) {
		const struct ctx_snap *c = (const struct ctx_snap *)ctxs->v + i;
		int real = rp_src_real(r->s, c->device);

		if (real < 0 || real >= GS_MAX_DEVICES)
			continue;
		if (!r->work[real] || c->primary)
			r->work[real] = (CUcontext)(uintptr_t)c->real;
	}
	return 0;
}

static int save(struct release *r, const struct rp_vec *ctxs, const struct rp_vec *phys,
		const char *image_dir, const int *stage_map, const struct rp_vec *code,
		json_t *report)
{
	struct rp_saved *s = r->s;
	struct rp_copy *copies = calloc(s->nregions ? s->nregions : 1, sizeof(*copies));
	uint64_t staged = 0;
	size_t ncopies = s->nregions;
	struct rp_tmpmap *maps = calloc(phys->n ? phys->n : 1, sizeof(*maps));
	struct gs_image_writer *w = NULL;
	size_t np = 0;
	int rc = 0;

	if (!copies || !maps) {
		rc = rp_fail(r->err, -ENOMEM, "out of memory");
		goto out;
	}
	gs_inside_begin();
	for (size_t i = 0; i < s->nregions && !rc; i++) {
		struct rp_region *g = &s->regions[i];
		int real = rp_src_real(s, g->device);

		copies[i] = (struct rp_copy){ .region = g, .va = g->va, .real_device = real };
		if (real < 0) {
			rc = rp_fail(r->err, -ENODEV, "memory at %#llx is on device %d, which is "
				     "not mapped to a GPU", (unsigned long long)g->va, g->device);
			break;
		}
		if (g->kind == RP_REGION_PHYS) {
			const struct phys_snap *p = (const struct phys_snap *)phys->v + np;
			CUresult cr = rp_tmpmap_make(&maps[np], p->real, p->size, real);

			if (cr != CUDA_SUCCESS) {
				rc = rp_fail(r->err, rp_cu_errno(cr), "cannot map physical allocation "
					     "%#llx to save it: %s", (unsigned long long)p->app,
					     rp_cu_name(cr));
				break;
			}
			copies[i].va = maps[np++].va;
		}
	}
	gs_inside_end();
	if (rc)
		goto out;

	if (image_dir) {
		struct gs_image_write_opts opts = { .log = { .fn = image_log } };

		rc = gs_image_writer_open(image_dir, &opts, &w, r->err);
		if (rc)
			goto out;
		rc = image_source(r, w);
		if (rc) {
			rp_fail(r->err, rc, "image: %s", gs_image_writer_errmsg(w));
			goto out;
		}
	}
	if (stage_map && !image_dir) {
		rc = rp_stage(s, copies, s->nregions, r->work, stage_map, r->progress, r->warnings,
			      &staged);
		if (rc)
			goto out;
		/* The rest goes to host memory. */
		ncopies = 0;
		for (size_t i = 0; i < s->nregions; i++)
			if (!copies[i].region->stage_handle)
				copies[ncopies++] = copies[i];
		if (report)
			json_object_set_new(report, "bytes_device", json_integer((json_int_t)staged));
	}
	rc = rp_dump(copies, ncopies, r->work, w, r->progress, r->err);
	if (rc)
		goto out;
	if (w) {
		json_t *state = image_state(r, ctxs, code, w);
		struct gs_image_stats st;

		rc = gs_image_commit(w, state);
		json_decref(state);
		if (rc) {
			rp_fail(r->err, rc, "image: %s", gs_image_writer_errmsg(w));
			goto out;
		}
		gs_image_write_stats(w, &st);
		if (report) {
			json_object_set_new(report, "image_bytes_stored",
					    json_integer((json_int_t)st.bytes_stored));
			json_object_set_new(report, "image_bytes_zero",
					    json_integer((json_int_t)st.bytes_zero));
		}
		s->image_dir = strdup(image_dir);
		if (!s->image_dir)
			rc = rp_fail(r->err, -ENOMEM, "out of memory");
	}
out:
	gs_inside_begin();
	for (size_t i = 0; i < np; i++)
		rp_tmpmap_drop(&maps[i]);
	gs_inside_end();
	gs_image_writer_close(w);
	free(copies);
	free(maps);
	return rc;
}

/* ---- destruction --------------------------------------------------------------------- */

struct destroy_walk {
	struct release *r;
	const struct rp_vec *ctxs;
};

static CUresult unregister_host(void *arg)
{
	return RP_REAL(cuMemHostUnregister, arg);
}

static int destroy_host(const struct gs_rec *rec, void *arg)
{
	const struct gs_host_rec *h = GS_REC_AS(struct gs_host_rec, GS_KIND_HOST, rec);
	struct destroy_walk *w = arg;
	CUcontext ctx = (CUcontext)(uintptr_t)rp_snap_ctx_real(w->ctxs, (uintptr_t)h->d.ctx);
	CUresult rc;

	/* A registration that is not PORTABLE belongs to its context: undo it
	 * there. The shim's own allocations stay mapped: the application
	 * keeps using them, unpinned, until the thaw pins them again. */
	if (!ctx && w->ctxs->n)
		ctx = (CUcontext)(uintptr_t)((const struct ctx_snap *)w->ctxs->v)->real;
	rc = ctx ? rp_in_ctx(ctx, unregister_host, h->d.ptr) : CUDA_ERROR_INVALID_CONTEXT;
	if (rc != CUDA_SUCCESS && rc != CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED)
		rp_release_warn(w->r, "unpinning host memory %p failed (%s)", h->d.ptr, rp_cu_name(rc));
	return 0;
}

static int destroy_handle(const struct gs_rec *rec, void *arg)
{
	struct destroy_walk *w = arg;
	CUresult rc = CUDA_SUCCESS;

	switch (rec->kind) {
	case GS_KIND_EVENT:
		rc = RP_REAL(cuEventDestroy_v2, (CUevent)(uintptr_t)rec->real);
		break;
	case GS_KIND_STREAM:
		rc = RP_REAL(cuStreamDestroy_v2, (CUstream)(uintptr_t)rec->real);
		break;
	case GS_KIND_MODULE:
		/* A library's module goes with the library. */
		if (((const struct gs_module_rec *)rec)->source != GS_MODSRC_LIBRARY)
			rc = RP_REAL(cuModuleUnload, (CUmodule)(uintptr_t)rec->real);
		break;
	case GS_KIND_LIBRARY:
		rc = RP_REAL(cuLibraryUnload, (CUlibrary)(uintptr_t)rec->real);
		break;
	default:
		break;
	}
	if (rc != CUDA_SUCCESS)
		rp_release_warn(w->r, "destroying %s %#llx failed (%s)", gs_kind_name(rec->kind),
		     (unsigned long long)rec->app, rp_cu_name(rc));
	return 0;
}

static int destroy_mapping(const struct gs_rec *rec, void *arg)
{
	const struct gs_mapping_rec *m = GS_REC_AS(struct gs_mapping_rec, GS_KIND_MAPPING, rec);
	CUresult rc;

	if (m->owner != GS_OWNER_APP)
		return 0;
	rc = RP_REAL(cuMemUnmap, rec->app, m->size);
	if (rc != CUDA_SUCCESS)
		rp_release_warn(((struct destroy_walk *)arg)->r, "unmapping %#llx failed (%s)",
		     (unsigned long long)rec->app, rp_cu_name(rc));
	return 0;
}

static int destroy_phys(const struct gs_rec *rec, void *arg)
{
	const struct gs_phys_rec *p = GS_REC_AS(struct gs_phys_rec, GS_KIND_PHYS, rec);
	CUresult rc = CUDA_SUCCESS;

	if (p->owner != GS_OWNER_APP)
		return 0;
	/* Every reference the application holds; its mappings are gone. */
	for (unsigned i = 0; i < p->handle_refs && rc == CUDA_SUCCESS; i++)
		rc = RP_REAL(cuMemRelease, (CUmemGenericAllocationHandle)rec->real);
	if (rc != CUDA_SUCCESS)
		rp_release_warn(((struct destroy_walk *)arg)->r, "releasing physical allocation %#llx failed "
		     "(%s)", (unsigned long long)rec->app, rp_cu_name(rc));
	return 0;
}

static int destroy_reservation(const struct gs_rec *rec, void *arg)
{
	const struct gs_resv_rec *v = GS_REC_AS(struct gs_resv_rec, GS_KIND_RESERVATION, rec);
	CUresult rc;

	if (v->owner != GS_OWNER_APP)
		return 0;
	rc = RP_REAL(cuMemAddressFree, rec->app, v->size);
	if (rc != CUDA_SUCCESS)
		rp_release_warn(((struct destroy_walk *)arg)->r, "freeing the reservation %#llx failed (%s)",
		     (unsigned long long)rec->app, rp_cu_name(rc));
	return 0;
}

static int destroy_contexts(struct release *r, const struct rp_vec *ctxs)
{
	struct rp_saved *s = r->s;

	for (size_t i = ctxs->n; i-- > 0;) {
		const struct ctx_snap *c = (const struct ctx_snap *)ctxs->v + i;
		int real = rp_src_real(s, c->device);
		struct rp_primary *p;
		unsigned flags = 0;
		int active = 1;
		CUresult rc;

		if (!c->primary) {
			rc = RP_REAL(cuCtxDestroy_v2, (CUcontext)(uintptr_t)c->real);
			if (rc != CUDA_SUCCESS)
				rp_release_warn(r, "destroying context %#llx failed (%s)",
				     (unsigned long long)c->app, rp_cu_name(rc));
			continue;
		}
		/* Released until the driver says it is gone: cudart holds
		 * retains the shim never saw. The thaw retains as often. */
		p = &s->primaries[s->nprimaries++];
		*p = (struct rp_primary){ .ctx = c->app, .device = c->device };
		while (p->releases < 4096) {
			rc = RP_REAL(cuDevicePrimaryCtxGetState, real, &flags, &active);
			if (rc != CUDA_SUCCESS || !active)
				break;
			rc = RP_REAL(cuDevicePrimaryCtxRelease_v2, real);
			if (rc != CUDA_SUCCESS) {
				rp_release_warn(r, "releasing the primary context of GPU %d failed (%s)", real,
				     rp_cu_name(rc));
				break;
			}
			p->releases++;
		}
		if (active && p->releases == 4096)
			rp_release_warn(r, "the primary context of GPU %d stays active", real);
	}
	return 0;
}

static void destroy_all(struct release *r, const struct rp_vec *ctxs)
{
	struct destroy_walk w = { .r = r, .ctxs = ctxs };

	gs_inside_begin();
	gs_trk_foreach(GS_KIND_HOST, destroy_host, &w);
	gs_trk_foreach(GS_KIND_EVENT, destroy_handle, &w);
	gs_trk_foreach(GS_KIND_STREAM, destroy_handle, &w);
	gs_trk_foreach(GS_KIND_MODULE, destroy_handle, &w);
	gs_trk_foreach(GS_KIND_LIBRARY, destroy_handle, &w);
	gs_trk_foreach(GS_KIND_MAPPING, destroy_mapping, &w);
	gs_trk_foreach(GS_KIND_PHYS, destroy_phys, &w);
	gs_trk_foreach(GS_KIND_RESERVATION, destroy_reservation, &w);
	gs_inside_end();
	/* The arena's chunks and window: its records stay for the thaw. The
	 * arena calls the tracker (its VMM records), so not inside a walk. */
	for (int d = 0; d < GS_MAX_DEVICES; d++) {
		struct gs_arena *a = gs_devmem_arena(d);
		CUresult rc;

		if (!a)
			continue;
		gs_inside_begin();
		rc = gs_arena_detach(a);
		gs_inside_end();
		if (rc != CUDA_SUCCESS)
			rp_release_warn(r, "detaching the memory of device %d failed (%s)", d, rp_cu_name(rc));
	}
	gs_inside_begin();
	destroy_contexts(r, ctxs);
	gs_inside_end();
}

/* ---- the operation --------------------------------------------------------------------- */

int rp_release(const char *image_dir, const int *stage_map, const struct gs_progress *progress,
	       json_t *report, char **err)
{
	struct gs_devmap *dm = gs_trk_devmap();
	struct rp_saved saved = { 0 };
	struct release r = { .s = &saved, .err = err, .progress = progress };
	struct rp_vec ctxs = { .elem = sizeof(struct ctx_snap) };
	struct rp_vec code = { .elem = sizeof(struct code_snap) };
	struct rp_vec phys = { .elem = sizeof(struct phys_snap) };
	json_t *blockers = json_array();
	int rc = 0, n;

	r.warnings = json_array();
	if (!blockers || !r.warnings) {
		rc = rp_fail(err, -ENOMEM, "out of memory");
		goto out;
	}
	n = rp_blockers(blockers);
	if (n > 0) {
		const char *first = json_string_value(json_array_get(blockers, 0));

		if (report)
			json_object_set(report, "blockers", blockers);
		rc = rp_fail(err, -EOPNOTSUPP, "the process cannot be released: %d object(s) "
			     "cannot be carried over, e.g. %s (gpu-freeze --check lists them all); "
			     "it stays frozen", n, first ? first : "?");
		goto out;
	}

	saved.ndev = gs_devmap_count(dm);
	for (int d = 0; d < saved.ndev; d++)
		saved.src_real[d] = gs_devmap_to_real(dm, d);
	saved.used_devices = rp_used_devices();
	for (int d = 0; d < saved.ndev; d++)
		if (saved.used_devices & (UINT64_C(1) << d))
			saved.src_sm[d] = rp_real_sm(saved.src_real[d]);

	gs_trk_foreach(GS_KIND_CTX, rp_snap_ctx, &ctxs);
	gs_trk_foreach(GS_KIND_MODULE, rp_snap_module, &code);
	gs_trk_foreach(GS_KIND_LIBRARY, rp_snap_library, &code);
	saved.primaries = calloc(ctxs.n ? ctxs.n : 1, sizeof(*saved.primaries));
	if (ctxs.oom || code.oom || !saved.primaries) {
		rc = rp_fail(err, -ENOMEM, "out of memory");
		goto out;
	}

	rp_progress(progress, "collect", 0, 0);
	rc = rp_collect_memory(&r, &phys);
	if (!rc)
		rc = rp_collect_globals(&r, &ctxs, &code);
	if (!rc)
		rc = work_contexts(&r, &ctxs);
	if (rc)
		goto out;

	rc = save(&r, &ctxs, &phys, image_dir, stage_map, &code, report);
	if (rc)
		goto out;

	/* Past this point the release goes through: the state is saved. */
	rc = rp_generation_record(err);
	if (rc)
		goto out;
	rp_epoch_handler_install();
	rp_progress(progress, "release", 0, 0);
	rp_park_own_stack();
	destroy_all(&r, &ctxs);
	rc = rp_rebind_placeholders(err);
	if (rc) {
		/* Nothing can be rebuilt without the handle maps. */
		gs_error("release: the process cannot be thawed any more");
		goto out;
	}
	/* From now on every handle the shim uses must be translated: the
	 * arena's chunks may get synthetic app values on the next GPU. */
	gs_set_migrated(true);

	pthread_mutex_lock(&rp.lock);
	/* Whatever was there before is freed at `out`, outside the lock. */
	struct rp_saved old = rp.saved;
	rp.saved = saved;
	saved = old;
	pthread_mutex_unlock(&rp.lock);
	rp_set_state(GS_STATE_RELEASED);
	if (report) {
		json_object_set_new(report, "state", json_string("released"));
		json_object_set_new(report, "bytes", json_integer((json_int_t)rp.saved.bytes));
		json_object_set_new(report, "regions", json_integer((json_int_t)rp.saved.nregions));
		json_object_set_new(report, "image", image_dir ? json_string(image_dir) : json_null());
		json_object_set(report, "warnings", r.warnings);
	}
	/* The bytes staged on the target GPUs were logged by the staging. */
	gs_info("released: %llu bytes in %zu regions saved to %s",
		(unsigned long long)rp.saved.bytes, rp.saved.nregions,
		image_dir ? image_dir : "host memory");
out:
	rp_saved_free(&saved);
	free(ctxs.v);
	free(code.v);
	free(phys.v);
	json_decref(blockers);
	json_decref(r.warnings);
	return rc;
}

/*
 * A process already released to host memory, asked to release to an image
 * (gpu-freeze --release --image DIR after a release without): write what
 * host memory holds into the image and let the host copies go. The staging
 * step is not needed: the host copies are page-aligned buffers of their own.
 */
static int save_to_image(const char *image_dir, const struct gs_progress *progress,
			 json_t *report, char **err)
{
	struct rp_saved *s = &rp.saved;
	struct release r = { .s = s, .err = err, .progress = progress };
	struct rp_vec ctxs = { .elem = sizeof(struct ctx_snap) };
	struct rp_vec code = { .elem = sizeof(struct code_snap) };
	struct gs_image_write_opts opts = { .log = { .fn = image_log } };
	struct gs_image_writer *w = NULL;
	uint64_t done = 0;
	json_t *state = NULL;
	char *dir = NULL;
	int rc;

	if (s->image_dir)
		return rp_fail(err, -EALREADY, "the process is released to image %s already",
			       s->image_dir);
	/* Contents still waiting on a GPU (a swap that could not finish)
	 * come to host memory first. */
	rc = rp_unstage(s, NULL, progress, err);
	if (rc)
		return rc;
	gs_trk_foreach(GS_KIND_CTX, rp_snap_ctx, &ctxs);
	gs_trk_foreach(GS_KIND_MODULE, rp_snap_module, &code);
	gs_trk_foreach(GS_KIND_LIBRARY, rp_snap_library, &code);
	if (ctxs.oom || code.oom || !(dir = strdup(image_dir))) {
		rc = rp_fail(err, -ENOMEM, "out of memory");
		goto out;
	}
	rc = gs_image_writer_open(image_dir, &opts, &w, err);
	if (rc)
		goto out;
	rc = image_source(&r, w);
	for (size_t i = 0; i < s->nregions && !rc; i++) {
		struct rp_region *g = &s->regions[i];
		uint32_t chunk = gs_image_write_chunk_size(w);

		rc = gs_image_add_extent(w, g->va, g->size, &g->extent);
		for (uint64_t off = 0; off < g->size && !rc; off += chunk) {
			size_t len = g->size - off < chunk ? g->size - off : chunk;

			rc = gs_image_write_chunk(w, g->extent, off, (char *)g->host + off, len,
						  NULL, NULL);
			done += len;
			rp_progress(progress, "dump", done, s->bytes);
		}
	}
	if (!rc)
		rc = gs_image_write_flush(w);
	if (!rc) {
		state = image_state(&r, &ctxs, &code, w);
		rc = gs_image_commit(w, state);
	}
	if (rc) {
		rp_fail(err, rc, "image: %s", gs_image_writer_errmsg(w));
		goto out;
	}
	pthread_mutex_lock(&rp.lock);
	s->image_dir = dir;
	dir = NULL;
	for (size_t i = 0; i < s->nregions; i++)
		rp_region_drop_host(&s->regions[i]);
	pthread_mutex_unlock(&rp.lock);
	if (report) {
		json_object_set_new(report, "state", json_string("released"));
		json_object_set_new(report, "bytes", json_integer((json_int_t)s->bytes));
		json_object_set_new(report, "image", json_string(image_dir));
	}
	gs_info("released state written to image %s", image_dir);
out:
	gs_image_writer_close(w);
	json_decref(state);
	free(dir);
	free(ctxs.v);
	free(code.v);
	return rc;
}

int gs_replay_release(const char *image_dir, const struct gs_progress *progress,
		      json_t **report, char **err)
{
	json_t *o = report ? json_object() : NULL;
	int rc = rp_op_begin(err);

	if (rc) {
		json_decref(o);
		return rc;
	}
	switch (gs_replay_state()) {
	case GS_STATE_RUNNING:
		rc = rp_fail(err, -EINVAL, "the process is running: freeze it first");
		break;
	case GS_STATE_RELEASED:
		if (image_dir)
			rc = save_to_image(image_dir, progress, o, err);
		else
			rc = rp_fail(err, -EALREADY, "the process is already released");
		break;
	case GS_STATE_FROZEN:
		rc = rp_release(image_dir, NULL, progress, o, err);
		break;
	}
	rp_op_end();
	if (report)
		*report = o;
	return rc;
}
