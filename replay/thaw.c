/* SPDX-License-Identifier: Apache-2.0 */
/*
 * thaw (DESIGN.md §7): from RELEASED, rebuild the process's GPU state on
 * the target GPUs, at the same addresses, and resume it.
 *
 *  1. Check, touching nothing: every device holding state has a target;
 *     every module and library has code the target can run (a fatbin with
 *     an sm_90 cubin moves to sm_90, a cubin-only sm_90 module cannot go to
 *     sm_80); the target supports VMM where the state needs it, has room
 *     for the memory, and can be a peer where contexts enabled peer access.
 *  2. Build every object again on the target (rebuild.c), recording each:
 *     the reservations must come back at their addresses (a hint the
 *     driver does not honour fails the thaw cleanly).
 *  3. Copy the saved contents back (arena chunks, physical allocations
 *     through temporary mappings, variables at their new addresses).
 *  4. Commit: every app handle is rebound to its new real handle, the
 *     device-ordinal map switched, a new gate epoch started (each thread
 *     repairs its context stack at its next call), and the gate reopened.
 * A failure anywhere before the commit destroys what was built, in reverse,
 * and leaves the process RELEASED with its saved state: another thaw (onto
 * another GPU) can follow.
 */
#define GS_LOG_SUBSYS "replay"
#include "rp_thaw.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arena.h"
#include "gate.h"
#include "log.h"
#include "shim.h"
#include "thread.h"
#include "translate.h"

/* ---- what was built --------------------------------------------------------------------- */

void rp_thaw_warn(struct thaw *t, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	rp_warnv(t->warnings, fmt, ap);
	va_end(ap);
}

struct made *rp_made_add(struct thaw *t, enum made_what what, enum gs_kind kind,
			     uint64_t app, uint64_t real)
{
	struct made *m;

	if (t->nmade == t->capmade) {
		size_t cap = t->capmade ? 2 * t->capmade : 64;
		struct made *v = realloc(t->made, cap * sizeof(*v));
		if (!v)
			return NULL;
		t->made = v;
		t->capmade = cap;
	}
	if (app && kind < GS_KIND_COUNT && rp_index_put(&t->by_app[kind], app, t->nmade) != 0)
		return NULL;
	m = &t->made[t->nmade++];
	*m = (struct made){ .what = what, .kind = kind, .app = app, .real = real };
	return m;
}

struct made *rp_made_find(const struct thaw *t, enum gs_kind kind, uint64_t app)
{
	uint64_t i;

	if (kind >= GS_KIND_COUNT || !rp_index_get(&t->by_app[kind], app, &i))
		return NULL;
	return &t->made[i];
}

/* The new real handle of an app handle built in this thaw, or 0. */
uint64_t rp_new_real(const struct thaw *t, enum gs_kind kind, uint64_t app)
{
	const struct made *m = rp_made_find(t, kind, app);

	return m ? m->real : 0;
}

int rp_real_of(const struct thaw *t, int app)
{
	return app >= 0 && app < t->ndev ? t->map[app] : -1;
}

int rp_thaw_nomem(struct thaw *t)
{
	return rp_fail(t->err, -ENOMEM, "out of memory");
}

/* Run a driver call list with a context current. */
CUresult rp_ctx_push(uint64_t ctx)
{
	return RP_REAL(cuCtxPushCurrent_v2, (CUcontext)(uintptr_t)ctx);
}

void rp_ctx_pop(void)
{
	CUcontext popped;

	RP_REAL(cuCtxPopCurrent_v2, &popped);
}

/* ---- undo ------------------------------------------------------------------------------ */

static void undo(struct thaw *t)
{
	for (size_t i = t->nmade; i-- > 0;) {
		struct made *m = &t->made[i];
		CUresult rc = CUDA_SUCCESS;

		gs_inside_begin();
		switch (m->what) {
		case MADE_EVENT:
			rc = RP_REAL(cuEventDestroy_v2, (CUevent)(uintptr_t)m->real);
			break;
		case MADE_STREAM:
			rc = RP_REAL(cuStreamDestroy_v2, (CUstream)(uintptr_t)m->real);
			break;
		case MADE_MODULE:
			rc = RP_REAL(cuModuleUnload, (CUmodule)(uintptr_t)m->real);
			break;
		case MADE_LIBRARY:
			rc = RP_REAL(cuLibraryUnload, (CUlibrary)(uintptr_t)m->real);
			break;
		case MADE_HOSTREG:
			rc = rp_ctx_push(m->ctx);
			if (rc == CUDA_SUCCESS) {
				rc = RP_REAL(cuMemHostUnregister, (void *)(uintptr_t)m->va);
				rp_ctx_pop();
			}
			break;
		case MADE_MAPPING:
			rc = RP_REAL(cuMemUnmap, m->va, m->size);
			break;
		case MADE_PHYS:
			for (unsigned k = 0; k < m->count && rc == CUDA_SUCCESS; k++)
				rc = RP_REAL(cuMemRelease, (CUmemGenericAllocationHandle)m->real);
			break;
		case MADE_RESERVATION:
			rc = RP_REAL(cuMemAddressFree, m->va, m->size);
			break;
		case MADE_ARENA:
			rc = gs_arena_detach(gs_devmem_arena(m->device));
			break;
		case MADE_CTX_CREATED:
			rc = RP_REAL(cuCtxDestroy_v2, (CUcontext)(uintptr_t)m->real);
			break;
		case MADE_CTX_PRIMARY:
			for (unsigned k = 0; k < m->count && rc == CUDA_SUCCESS; k++)
				rc = RP_REAL(cuDevicePrimaryCtxRelease_v2, m->device);
			break;
		case MADE_KERNEL:
		case MADE_LIBMODULE:
		case MADE_FUNCTION:
			break;
		}
		gs_inside_end();
		if (rc != CUDA_SUCCESS)
			gs_warn("undoing the thaw: destroying %s %#llx failed (%s)",
				gs_kind_name(m->kind), (unsigned long long)m->real, rp_cu_name(rc));
	}
	t->nmade = 0;
	for (int k = 0; k < GS_KIND_COUNT; k++)
		rp_index_free(&t->by_app[k]);
}

/* ---- 1. checks ---------------------------------------------------------------------------- */

static void archs_text(const void *image, size_t size, char *buf, size_t len)
{
	struct gs_fatbin_entry e[32];
	int n = gs_image_archs(image, size, e, 32);
	size_t off = 0;

	buf[0] = '\0';
	for (int i = 0; i < n && off < len; i++) {
		const char *what = e[i].kind == GS_FATBIN_KIND_PTX ? "PTX compute" :
				   e[i].kind == GS_FATBIN_KIND_ELF ? "cubin sm" : "LTO IR sm";
		off += (size_t)snprintf(buf + off, len - off, "%s%s_%u", off ? ", " : "", what,
					e[i].arch);
	}
	if (n <= 0)
		snprintf(buf, len, "nothing usable");
}

struct code_check {
	struct thaw *t;
	const struct rp_saved *s;
	int rc;
};

static int check_module_cb(const struct gs_rec *rec, void *arg)
{
	const struct gs_module_rec *m = GS_REC_AS(struct gs_module_rec, GS_KIND_MODULE, rec);
	struct code_check *c = arg;
	unsigned sm;
	char archs[256];

	if (m->source == GS_MODSRC_LIBRARY || m->device < 0 || m->device >= c->t->ndev)
		return 0;
	sm = c->t->tsm[m->device];
	if (gs_image_supports(m->image.data, m->image.size, sm) == 0)
		return 0;
	archs_text(m->image.data, m->image.size, archs, sizeof(archs));
	c->rc = rp_fail(c->t->err, -ENOEXEC, "module %#llx%s%s has no code for GPU %d (sm_%u); "
			"it holds %s. Thaw onto a GPU of a supported architecture",
			(unsigned long long)rec->app, m->path ? " from " : "", m->path ? m->path : "",
			rp_real_of(c->t, m->device), sm, archs);
	return 1;
}

static int check_library_cb(const struct gs_rec *rec, void *arg)
{
	const struct gs_library_rec *l = GS_REC_AS(struct gs_library_rec, GS_KIND_LIBRARY, rec);
	struct code_check *c = arg;
	char archs[256];

	/* Where the library could run before, it must run after. */
	for (int d = 0; d < c->t->ndev; d++) {
		if (!(c->s->used_devices & (UINT64_C(1) << d)))
			continue;
		if (gs_image_supports(l->image.data, l->image.size, c->s->src_sm[d]) != 0 ||
		    gs_image_supports(l->image.data, l->image.size, c->t->tsm[d]) == 0)
			continue;
		archs_text(l->image.data, l->image.size, archs, sizeof(archs));
		c->rc = rp_fail(c->t->err, -ENOEXEC, "library %#llx has no code for GPU %d "
				"(sm_%u); it holds %s. Thaw onto a GPU of a supported architecture",
				(unsigned long long)rec->app, c->t->map[d], c->t->tsm[d], archs);
		return 1;
	}
	return 0;
}

static CUresult mem_info(void *arg)
{
	size_t *v = arg;

	return RP_REAL(cuMemGetInfo_v2, &v[0], &v[1]);
}

static int check_target(struct thaw *t, const struct snaps *sn)
{
	const struct rp_saved *s = t->s;
	uint64_t need[GS_MAX_DEVICES] = { 0 };
	bool vmm[GS_MAX_DEVICES] = { false };
	struct code_check cc = { .t = t, .s = s };
	int ndev = rp_real_device_count();

	if (ndev < 0)
		return rp_fail(t->err, ndev, "cannot count the GPUs: %s", strerror(-ndev));
	for (int d = 0; d < t->ndev; d++) {
		int real = t->map[d];

		if (!(s->used_devices & (UINT64_C(1) << d)) && !gs_devmem_arena(d))
			continue;
		if (real < 0 || real >= ndev)
			return rp_fail(t->err, -ENODEV, "device %d would go to GPU %d, which does not "
				       "exist (this machine has %d)", d, real, ndev);
		t->tsm[d] = rp_real_sm(real);
		if (!t->tsm[d])
			return rp_fail(t->err, -ENODEV, "cannot read the compute capability of "
				       "GPU %d", real);
		if (gs_devmem_arena(d))
			vmm[real] = true;
	}
	for (size_t i = 0; i < s->nregions; i++) {
		int real = rp_real_of(t, s->regions[i].device);

		if (real < 0 || real >= ndev)
			return rp_fail(t->err, -ENODEV, "memory of device %d has no target GPU",
				       s->regions[i].device);
		/* Staged memory is on the target already. */
		if (!rp_region_staged_on(&s->regions[i], real))
			need[real] += s->regions[i].size;
		if (s->regions[i].kind != RP_REGION_GLOBAL)
			vmm[real] = true;
	}

	gs_trk_foreach(GS_KIND_MODULE, check_module_cb, &cc);
	if (!cc.rc)
		gs_trk_foreach(GS_KIND_LIBRARY, check_library_cb, &cc);
	if (cc.rc)
		return cc.rc;

	for (int real = 0; real < ndev; real++) {
		int supported = 0;
		size_t info[2] = { 0, 0 };
		CUcontext ctx = NULL;
		CUresult rc;

		if (vmm[real]) {
			gs_inside_begin();
			rc = RP_REAL(cuDeviceGetAttribute, &supported,
				     CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, real);
			gs_inside_end();
			if (rc != CUDA_SUCCESS || !supported)
				return rp_fail(t->err, -EOPNOTSUPP, "GPU %d does not support virtual "
					       "memory management, which putting the memory back at "
					       "its addresses needs", real);
		}
		if (!need[real])
			continue;
		/* Free memory needs a context: the primary one, borrowed for
		 * the question and given back (nothing of the process is on
		 * this GPU yet). */
		gs_inside_begin();
		rc = RP_REAL(cuDevicePrimaryCtxRetain, &ctx, real);
		if (rc == CUDA_SUCCESS) {
			rc = rp_in_ctx(ctx, mem_info, info);
			RP_REAL(cuDevicePrimaryCtxRelease_v2, real);
		}
		gs_inside_end();
		if (rc != CUDA_SUCCESS)
			return rp_fail(t->err, rp_cu_errno(rc), "cannot query the free memory of "
				       "GPU %d: %s", real, rp_cu_name(rc));
		if (info[0] < need[real])
			return rp_fail(t->err, -ENOMEM, "GPU %d has %llu MiB free; the process "
				       "needs %llu MiB there. Free memory on it or choose another GPU",
				       real, (unsigned long long)(info[0] >> 20),
				       (unsigned long long)((need[real] + (1 << 20) - 1) >> 20));
	}

	/* Peer access the application enabled must still be possible. */
	for (size_t i = 0; i < sn->ctx.n; i++) {
		const struct gs_ctx_rec *c = RP_VEC_AT(sn->ctx, struct gs_ctx_rec, i);

		for (int p = 0; p < t->ndev && p < 64; p++) {
			int can = 0;
			CUresult rc;

			if (!(c->peers_enabled & (UINT64_C(1) << p)))
				continue;
			gs_inside_begin();
			rc = RP_REAL(cuDeviceCanAccessPeer, &can, rp_real_of(t, c->device),
				     rp_real_of(t, p));
			gs_inside_end();
			if (rc != CUDA_SUCCESS || !can)
				return rp_fail(t->err, -EOPNOTSUPP, "context %#llx uses peer access "
					       "to device %d; GPUs %d and %d cannot be peers",
					       (unsigned long long)c->hdr.app, p, rp_real_of(t, c->device),
					       rp_real_of(t, p));
		}
	}
	return 0;
}

/* ---- 3. contents -------------------------------------------------------------------------- */

static int restore_memory(struct thaw *t, const char *image_dir)
{
	struct rp_saved *s = t->s;
	struct rp_copy *copies = calloc(s->nregions ? s->nregions : 1, sizeof(*copies));
	struct rp_tmpmap *maps = calloc(s->nregions ? s->nregions : 1, sizeof(*maps));
	size_t nmaps = 0;
	int rc = 0;

	if (!copies || !maps) {
		free(copies);
		free(maps);
		return rp_thaw_nomem(t);
	}
	/* From the front: what comes from host memory or the image; from the
	 * back: staged memory the thaw could not adopt, copied from its
	 * staging within the GPU. Adopted memory has its contents. */
	size_t n = 0, nst = 0;

	gs_inside_begin();
	for (size_t i = 0; i < s->nregions && !rc; i++) {
		struct rp_region *g = &s->regions[i];
		int real = rp_real_of(t, g->device);
		bool staged = rp_region_staged_on(g, real);
		struct rp_copy *c = staged ? &copies[s->nregions - 1 - nst] : &copies[n];

		if (staged && g->adopted)
			continue;
		*c = (struct rp_copy){ .region = g, .va = g->va, .real_device = real };
		if (g->kind == RP_REGION_GLOBAL)
			c->va = g->dest;
		if (g->kind == RP_REGION_PHYS) {
			uint64_t h = rp_map_phys(t, g->phys);
			CUresult cr = h ? rp_tmpmap_make(&maps[nmaps], h, g->size, real)
					: CUDA_ERROR_INVALID_HANDLE;

			if (cr != CUDA_SUCCESS) {
				rc = rp_fail(t->err, rp_cu_errno(cr), "cannot map physical allocation "
					     "%#llx to restore it: %s", (unsigned long long)g->phys,
					     rp_cu_name(cr));
				break;
			}
			c->va = maps[nmaps++].va;
		}
		if (staged)
			nst++;
		else
			n++;
	}
	gs_inside_end();
	if (!rc)
		rc = rp_restore(copies, n, t->work, image_dir, t->progress, t->err);
	if (!rc && nst) {
		gs_warn("thaw: %zu staged regions could not be taken over; copying them", nst);
		rc = rp_stage_restore(copies + s->nregions - nst, nst, t->work, t->progress,
				      t->err);
	}
	gs_inside_begin();
	for (size_t i = 0; i < nmaps; i++)
		rp_tmpmap_drop(&maps[i]);
	gs_inside_end();
	free(copies);
	free(maps);
	return rc;
}

/* ---- 4. commit ------------------------------------------------------------------------------ */

static int commit(struct thaw *t, uint64_t *moved)
{
	struct gs_devmap *dm = gs_trk_devmap();
	struct rp_index by_va = { 0 };
	int ndev = rp_real_device_count();
	int rc;

	for (size_t i = 0; i < t->nmade; i++) {
		const struct made *m = &t->made[i];

		if (!m->app)
			continue;
		rc = gs_trk_rebind(m->kind, m->app, m->real);
		if (rc) {
			/* Only a tracker bug gets here: put every handle back on
			 * a placeholder so an undo leaves the maps consistent. */
			rp_fail(t->err, rc, "tracker: rebinding %s %#llx to %#llx failed: %s",
				gs_kind_name(m->kind), (unsigned long long)m->app,
				(unsigned long long)m->real, strerror(-rc));
			rp_rebind_placeholders(NULL);
			return rc;
		}
	}
	/* Every record of a variable follows it: the application may know it
	 * by several addresses (looked up again after an earlier migration).
	 * Records keep the address the application knows. */
	*moved = 0;
	for (size_t j = 0; j < t->s->nregions; j++)
		if (t->s->regions[j].kind == RP_REGION_GLOBAL &&
		    rp_index_put(&by_va, t->s->regions[j].va, j) != 0)
			t->oom = true;
	for (size_t i = 0; i < t->nglobals; i++) {
		const struct global_snap *k = &t->globals[i];
		const struct rp_region *g;
		uint64_t j;

		/* Records hold the addresses cuModuleGetGlobal gave: starts. */
		if (!rp_index_get(&by_va, k->real, &j))
			continue;
		g = &t->s->regions[j];
		if (gs_trk_rebind(GS_KIND_GLOBAL, k->app, g->dest) == 0 && k->app != g->dest)
			(*moved)++;
	}
	rp_index_free(&by_va);
	if (t->oom)
		gs_error("out of memory: some module variables' records keep their old address");
	/* The translation layer maps the addresses the application knows to
	 * the variables' new storage from now on. */
	rc = gs_xlat_refresh_moved_globals();
	if (rc < 0)
		gs_error("module variables moved by this migration cannot be reached at the "
			 "addresses the application knows (%s)", strerror(-rc));
	rc = gs_devmap_set(dm, t->map, t->ndev);
	if (rc)
		gs_error("the device-ordinal map could not be switched (%d)", rc);
	for (int d = 0; d < t->ndev; d++)
		if (t->map[d] >= 0 && t->map[d] < ndev)
			gs_trk_device_set_sm(d, (int)rp_real_sm(t->map[d]));
	gs_set_migrated(true);
	return 0;
}

/* ---- the operation ------------------------------------------------------------------------ */

struct global_walk {
	struct thaw *t;
	size_t cap;
};

/* Under the tracker lock: no tracker call here. */
static int copy_global(const struct gs_rec *rec, void *arg)
{
	struct global_walk *w = arg;

	if (w->t->nglobals == w->cap)
		return 1;
	w->t->globals[w->t->nglobals++] = (struct global_snap){ .app = rec->app,
								.real = rec->real };
	return 0;
}

static int globals_take(struct thaw *t)
{
	/* The gate is closed: the count cannot change before the walk. */
	struct global_walk w = { .t = t, .cap = gs_trk_count(GS_KIND_GLOBAL) };

	t->globals = calloc(w.cap ? w.cap : 1, sizeof(*t->globals));
	if (!t->globals)
		return -ENOMEM;
	gs_trk_foreach(GS_KIND_GLOBAL, copy_global, &w);
	return 0;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int rp_thaw(const int *map, const char *image_dir, const struct gs_progress *progress,
	    json_t *report, char **err)
{
	struct thaw t = { .map = map, .err = err, .progress = progress };
	struct snaps sn;
	uint64_t moved = 0;
	int64_t t0 = now_ms();
	unsigned epoch = 0;
	int rc;

	t.s = &rp.saved;
	t.ndev = rp.saved.ndev;
	t.warnings = json_array();
	if (!image_dir)
		image_dir = rp.saved.image_dir;
	rc = rp_snaps_take(&sn);
	if (!rc)
		rc = globals_take(&t);
	if (rc) {
		rc = rp_fail(err, rc, "out of memory listing the saved objects");
		goto out;
	}

	/* Memory staged on a GPU this thaw does not put it on comes to host
	 * memory first (a swap moving back after its target failed). */
	rc = rp_unstage(&rp.saved, map, progress, err);
	if (rc)
		goto out;
	rp_progress(progress, "check", 0, 0);
	rc = check_target(&t, &sn);
	if (rc)
		goto out;

	rp_progress(progress, "build", 0, 0);
	rc = rp_build_contexts(&t, &sn);
	if (!rc)
		rc = rp_build_arenas(&t, &sn);
	if (!rc)
		rc = rp_build_vmm(&t, &sn);
	if (!rc)
		rc = rp_build_host(&t, &sn);
	if (!rc)
		rc = rp_build_code(&t, &sn);
	if (!rc)
		rc = rp_build_streams_events(&t, &sn);
	if (!rc)
		rc = restore_memory(&t, image_dir);
	if (!rc) {
		rp_progress(progress, "rebind", 0, 0);
		rc = commit(&t, &moved);
	}
	if (rc) {
		gs_info("thaw failed: undoing %zu steps; the process stays released", t.nmade);
		undo(&t);
		/* The undo released the thaw's references: staged memory is
		 * the staging's alone again. */
		for (size_t i = 0; i < rp.saved.nregions; i++)
			rp.saved.regions[i].adopted = false;
		goto out;
	}

	/* Past the point of no return. */
	for (int k = 0; k < GS_KIND_COUNT; k++) {
		struct gs_handlemap *m = gs_trk_handlemap(k);
		if (m)
			gs_hmap_reclaim(m);
	}
	if (report) {
		json_t *devs = json_object();
		char key[16];

		for (int d = 0; d < t.ndev; d++) {
			if (!(rp.saved.used_devices & (UINT64_C(1) << d)))
				continue;
			snprintf(key, sizeof(key), "%d", d);
			json_object_set_new(devs, key, json_integer(map[d]));
		}
		json_object_set_new(report, "state", json_string("running"));
		json_object_set_new(report, "devices", devs);
		json_object_set_new(report, "bytes", json_integer((json_int_t)rp.saved.bytes));
		json_object_set_new(report, "globals_moved", json_integer((json_int_t)moved));
		json_object_set_new(report, "thaw_ms", json_integer(now_ms() - t0));
		json_object_set(report, "warnings", t.warnings);
	}
	/* Freed outside the lock: dropping staged memory makes driver calls,
	 * which status readers need not wait for. */
	struct rp_saved done = { 0 };

	pthread_mutex_lock(&rp.lock);
	done = rp.saved;
	memset(&rp.saved, 0, sizeof(rp.saved));
	rp.migrations++;
	pthread_mutex_unlock(&rp.lock);
	rp_saved_free(&done);
	/* Threads repair their context stacks at their next call, then the
	 * calls waiting at the gate go on. */
	rp_epoch_handler_install();
	if (gs_gate_next_epoch(&epoch))
		gs_error("thaw: the gate was open before the thaw finished");
	rp_set_state(GS_STATE_RUNNING);
	gs_gate_open();
	gs_info("thawed in %lld ms (epoch %u)", (long long)(now_ms() - t0), epoch);
out:
	for (int k = 0; k < GS_KIND_COUNT; k++)
		rp_index_free(&t.by_app[k]);
	free(t.made);
	free(t.globals);
	rp_snaps_free(&sn);
	json_decref(t.warnings);
	return rc;
}

/* A frozen process asked to move: save it to host memory first. */
static int thaw_frozen(const int *map, const int *cur, int ndev, const char *image_dir,
		       const struct gs_progress *progress, json_t *report, char **err)
{
	json_t *rel = report ? json_object() : NULL;
	int rc;

	if (!memcmp(map, cur, (size_t)ndev * sizeof(*map)) && !image_dir) {
		json_decref(rel);
		rc = rp_unfreeze(err);
		if (!rc && report)
			json_object_set_new(report, "state", json_string("running"));
		return rc;
	}
	/* Contents read from an image must not be staged from the device. */
	rc = rp_release(NULL, image_dir ? NULL : map, progress, rel, err);
	if (report && rel)
		json_object_set_new(report, "release", rel);
	else
		json_decref(rel);
	if (rc)
		return rc;
	return rp_thaw(map, image_dir, progress, report, err);
}

int gs_replay_thaw(const char *device_spec, const char *image_dir,
		   const struct gs_progress *progress, json_t **report, char **err)
{
	struct gs_devmap *dm = gs_trk_devmap();
	json_t *o = report ? json_object() : NULL;
	int cur[GS_MAX_DEVICES], map[GS_MAX_DEVICES];
	enum gs_proc_state state;
	int ndev, rc = rp_op_begin(err);

	if (rc) {
		json_decref(o);
		return rc;
	}
	state = gs_replay_state();
	if (state == GS_STATE_RUNNING) {
		rc = rp_fail(err, -EINVAL, "the process is not frozen");
		goto out;
	}
	if (state == GS_STATE_RELEASED) {
		ndev = rp.saved.ndev;
		memcpy(cur, rp.saved.src_real, sizeof(cur));
	} else {
		ndev = gs_devmap_count(dm);
		for (int d = 0; d < ndev; d++)
			cur[d] = gs_devmap_to_real(dm, d);
	}
	rc = rp_devspec_parse(device_spec,
			      state == GS_STATE_RELEASED ? rp.saved.used_devices : rp_used_devices(),
			      cur, ndev, map, err);
	if (rc)
		goto out;
	if (state == GS_STATE_FROZEN)
		rc = thaw_frozen(map, cur, ndev, image_dir, progress, o, err);
	else
		rc = rp_thaw(map, image_dir, progress, o, err);
out:
	rp_op_end();
	if (report)
		*report = o;
	return rc;
}
