/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What a release saves (DESIGN.md §7, dump): the cuMemAlloc arena chunk by
 * chunk, the application's physical allocations whole, and the module and
 * library variables that live in the driver's own memory, found by name
 * from the code images the tracker keeps.
 */
#define GS_LOG_SUBSYS "replay"
#include "rp_release.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "log.h"

/* Keys of physical allocations in images: non-canonical addresses (no
 * device or host address ever is one), so they never overlap arena chunks
 * or globals, and below 2^63 as the image's manifest requires. */
#define RP_PHYS_KEY_BASE UINT64_C(0x7f00000000000000)

/* ---- snapshots of records ---------------------------------------------------------- */

int rp_snap_ctx(const struct gs_rec *rec, void *arg)
{
	const struct gs_ctx_rec *c = GS_REC_AS(struct gs_ctx_rec, GS_KIND_CTX, rec);
	struct ctx_snap *s = rp_vec_push(arg);

	if (!s)
		return 1;
	*s = (struct ctx_snap){ .app = rec->app, .real = rec->real, .device = c->device,
				.primary = c->primary };
	return 0;
}

/* A global to save: where its name comes from. */
struct global_src {
	enum gs_kind owner_kind;
	uint64_t owner;       /* app handle */
	uint64_t owner_real;
	uint64_t ctx;         /* app handle */
	int device;           /* app ordinal */
	char *name;
	size_t size;
	uint64_t addr;        /* known address (tracker record), else 0 */
};

int rp_snap_module(const struct gs_rec *rec, void *arg)
{
	const struct gs_module_rec *m = GS_REC_AS(struct gs_module_rec, GS_KIND_MODULE, rec);
	struct code_snap *s = rp_vec_push(arg);

	if (!s)
		return 1;
	*s = (struct code_snap){ .kind = GS_KIND_MODULE, .app = rec->app, .real = rec->real,
				 .ctx = m->ctx, .device = m->device, .sm = m->sm,
				 .from_library = m->source == GS_MODSRC_LIBRARY };
	return 0;
}

int rp_snap_library(const struct gs_rec *rec, void *arg)
{
	struct code_snap *s = rp_vec_push(arg);

	if (!s)
		return 1;
	*s = (struct code_snap){ .kind = GS_KIND_LIBRARY, .app = rec->app, .real = rec->real };
	return 0;
}

/* The names and sizes of an image's variables for architecture sm (managed
 * ones excluded: a freeze refuses them). */
struct name_list {
	struct rp_vec v; /* struct global_src, partly filled */
	const struct global_src *tmpl;
};

static int add_code_globals(const void *image, size_t size, unsigned sm, struct name_list *out)
{
	struct gs_code code;
	struct gs_code_info info;
	int rc = gs_image_select(image, size, sm, &code);

	if (rc)
		return rc;
	rc = gs_code_parse(&code, &info);
	if (rc) {
		gs_code_free(&code);
		return rc;
	}
	for (size_t i = 0; i < info.nglobals && !rc; i++) {
		const struct gs_global_info *g = &info.globals[i];
		struct global_src *s;

		if (g->flags & GS_GLOBAL_MANAGED)
			continue;
		s = rp_vec_push(&out->v);
		if (!s || !(s->name = strdup(g->name))) {
			rc = -ENOMEM;
			break;
		}
		char *name = s->name;
		*s = *out->tmpl;
		s->name = name;
		s->size = g->size;
	}
	gs_code_info_free(&info);
	gs_code_free(&code);
	return rc;
}

struct image_walk {
	unsigned sm;
	struct name_list *out;
	int rc;
};

/* Under the tracker lock: parses the record's image copy, or uses the
 * layouts the tracker already parsed for that architecture. */
static int module_globals_cb(const struct gs_rec *rec, void *arg)
{
	const struct gs_module_rec *m = GS_REC_AS(struct gs_module_rec, GS_KIND_MODULE, rec);
	struct image_walk *w = arg;

	if (m->layouts && m->layouts->error == 0 && m->layouts->sm == w->sm) {
		const struct gs_code_info *info = &m->layouts->info;

		for (size_t i = 0; i < info->nglobals; i++) {
			struct global_src *s;

			if (info->globals[i].flags & GS_GLOBAL_MANAGED)
				continue;
			s = rp_vec_push(&w->out->v);
			if (!s) {
				w->rc = -ENOMEM;
				return 1;
			}
			*s = *w->out->tmpl;
			s->size = info->globals[i].size;
			if (!(s->name = strdup(info->globals[i].name))) {
				w->rc = -ENOMEM;
				return 1;
			}
		}
		return 0;
	}
	if (!m->image.data) {
		w->rc = -ENODATA;
		return 1;
	}
	w->rc = add_code_globals(m->image.data, m->image.size, w->sm, w->out);
	return w->rc != 0;
}

static int library_globals_cb(const struct gs_rec *rec, void *arg)
{
	const struct gs_library_rec *l = GS_REC_AS(struct gs_library_rec, GS_KIND_LIBRARY, rec);
	struct image_walk *w = arg;

	if (!l->image.data) {
		w->rc = -ENODATA;
		return 1;
	}
	w->rc = add_code_globals(l->image.data, l->image.size, w->sm, w->out);
	return w->rc != 0;
}

/* Library-in-context pairs the tracker has evidence of: the library's code
 * is loaded there, so its variables may hold state. (Asking the driver
 * about any other pair would load the library there.) A function of a
 * kernel names the kernel, whose library is looked up afterwards, outside
 * the walk. */
struct lib_ctx {
	uint64_t owner;   /* a library, or a kernel when `kernel` */
	uint64_t ctx;
	bool kernel;
};

static void evidence_add(struct rp_vec *v, uint64_t owner, uint64_t ctx, bool kernel)
{
	struct lib_ctx *p;

	if (!owner || !ctx)
		return;
	p = rp_vec_push(v);
	if (p)
		*p = (struct lib_ctx){ .owner = owner, .ctx = ctx, .kernel = kernel };
}

static int evidence_module(const struct gs_rec *rec, void *arg)
{
	const struct gs_module_rec *m = GS_REC_AS(struct gs_module_rec, GS_KIND_MODULE, rec);

	if (m->source == GS_MODSRC_LIBRARY)
		evidence_add(arg, m->library, m->ctx, false);
	return 0;
}

static int evidence_function(const struct gs_rec *rec, void *arg)
{
	const struct gs_function_rec *f = GS_REC_AS(struct gs_function_rec, GS_KIND_FUNCTION, rec);

	if (f->kernel)
		evidence_add(arg, f->kernel, f->ctx, true);
	return 0;
}

static int evidence_global(const struct gs_rec *rec, void *arg)
{
	const struct gs_global_rec *g = GS_REC_AS(struct gs_global_rec, GS_KIND_GLOBAL, rec);

	if (g->owner_kind == GS_KIND_LIBRARY)
		evidence_add(arg, g->owner, g->ctx, false);
	return 0;
}

static int kernel_library_cb(const struct gs_rec *rec, void *arg)
{
	*(uint64_t *)arg = GS_REC_AS(struct gs_kernel_rec, GS_KIND_KERNEL, rec)->library;
	return 0;
}

struct known_global {
	uint64_t app;         /* the address the application knows */
	uint64_t addr;        /* where the variable is now */
	enum gs_kind owner_kind;
	uint64_t owner;
	uint64_t ctx;
	char *name;
};

static int snap_global(const struct gs_rec *rec, void *arg)
{
	const struct gs_global_rec *g = GS_REC_AS(struct gs_global_rec, GS_KIND_GLOBAL, rec);
	struct known_global *k = rp_vec_push(arg);

	if (!k)
		return 1;
	*k = (struct known_global){ .app = rec->app, .addr = rec->real,
				    .owner_kind = g->owner_kind,
				    .owner = g->owner, .ctx = g->ctx, .name = strdup(g->name) };
	if (!k->name) {
		((struct rp_vec *)arg)->oom = true;
		return 1;
	}
	return 0;
}

static int ctx_device(const struct rp_vec *ctxs, uint64_t app)
{
	for (size_t i = 0; i < ctxs->n; i++) {
		const struct ctx_snap *c = (const struct ctx_snap *)ctxs->v + i;
		if (c->app == app)
			return c->device;
	}
	return -1;
}

uint64_t rp_snap_ctx_real(const struct rp_vec *ctxs, uint64_t app)
{
	for (size_t i = 0; i < ctxs->n; i++) {
		const struct ctx_snap *c = (const struct ctx_snap *)ctxs->v + i;
		if (c->app == app)
			return c->real;
	}
	return 0;
}

static uint64_t code_real(const struct rp_vec *code, enum gs_kind kind, uint64_t app)
{
	for (size_t i = 0; i < code->n; i++) {
		const struct code_snap *c = (const struct code_snap *)code->v + i;
		if (c->kind == kind && c->app == app)
			return c->real;
	}
	return 0;
}

struct lookup_args {
	enum gs_kind kind;
	uint64_t owner_real;
	const char *name;
	CUdeviceptr addr;
	size_t size;
};

static CUresult lookup_global(void *arg)
{
	struct lookup_args *a = arg;

	if (a->kind == GS_KIND_MODULE)
		return RP_REAL(cuModuleGetGlobal_v2, &a->addr, &a->size,
			       (CUmodule)(uintptr_t)a->owner_real, a->name);
	return RP_REAL(cuLibraryGetGlobal, &a->addr, &a->size,
		       (CUlibrary)(uintptr_t)a->owner_real, a->name);
}

/* Every variable to save, as GLOBAL regions with their current address. */
int rp_collect_globals(struct release *r, const struct rp_vec *ctxs, const struct rp_vec *code)
{
	struct rp_saved *s = r->s;
	struct name_list names = { .v = { .elem = sizeof(struct global_src) } };
	struct rp_vec ev = { .elem = sizeof(struct lib_ctx) };
	struct rp_vec known = { .elem = sizeof(struct known_global) };
	struct rp_index seen = { 0 }, app_of = { 0 };
	int rc = 0;

	/* Modules: every variable of the code loaded for the context's device. */
	for (size_t i = 0; i < code->n && !rc; i++) {
		const struct code_snap *c = (const struct code_snap *)code->v + i;
		struct global_src tmpl = { .owner_kind = GS_KIND_MODULE, .owner = c->app,
					   .owner_real = c->real, .ctx = c->ctx,
					   .device = c->device };
		struct image_walk w = { .out = &names };

		/* A library's module shares the library's variables in that
		 * context: saved with the library below. */
		if (c->kind != GS_KIND_MODULE || c->from_library)
			continue;
		w.sm = c->sm ? c->sm : s->src_sm[c->device >= 0 ? c->device : 0];
		names.tmpl = &tmpl;
		gs_trk_with(GS_KIND_MODULE, c->app, module_globals_cb, &w);
		if (w.rc == -ENODATA || w.rc == -ENOENT)
			rp_release_warn(r, "module %#llx: its variables cannot be listed (%s); their contents "
			     "are not saved", (unsigned long long)c->app, strerror(-w.rc));
		else
			rc = w.rc;
	}

	/* Libraries: in the contexts they are known to be loaded in. */
	gs_trk_foreach(GS_KIND_MODULE, evidence_module, &ev);
	gs_trk_foreach(GS_KIND_FUNCTION, evidence_function, &ev);
	gs_trk_foreach(GS_KIND_GLOBAL, evidence_global, &ev);
	for (size_t i = 0; i < ev.n; i++) {
		struct lib_ctx *p = (struct lib_ctx *)ev.v + i;
		uint64_t lib = 0;

		if (!p->kernel)
			continue;
		gs_trk_with(GS_KIND_KERNEL, p->owner, kernel_library_cb, &lib);
		p->owner = lib;
		p->kernel = false;
	}
	for (size_t i = 0; i < ev.n && !rc; i++) {
		const struct lib_ctx *p = (const struct lib_ctx *)ev.v + i;
		bool dup = false;
		int dev = ctx_device(ctxs, p->ctx);
		struct global_src tmpl = { .owner_kind = GS_KIND_LIBRARY, .owner = p->owner,
					   .owner_real = code_real(code, GS_KIND_LIBRARY, p->owner),
					   .ctx = p->ctx, .device = dev };
		struct image_walk w = { .out = &names };

		for (size_t j = 0; j < i && !dup; j++) {
			const struct lib_ctx *q = (const struct lib_ctx *)ev.v + j;
			dup = q->owner == p->owner && q->ctx == p->ctx;
		}
		if (dup || !p->owner || dev < 0 || !tmpl.owner_real)
			continue;
		w.sm = s->src_sm[dev];
		names.tmpl = &tmpl;
		gs_trk_with(GS_KIND_LIBRARY, p->owner, library_globals_cb, &w);
		if (w.rc == -ENODATA || w.rc == -ENOENT)
			rp_release_warn(r, "library %#llx: its variables cannot be listed (%s); their "
			     "contents are not saved", (unsigned long long)p->owner, strerror(-w.rc));
		else
			rc = w.rc;
	}
	if (!rc && (names.v.oom || ev.oom))
		rc = -ENOMEM;

	/* Addresses, from the driver; the tracker's records say which ones
	 * the application knows. */
	gs_trk_foreach(GS_KIND_GLOBAL, snap_global, &known);
	if (!rc && known.oom)
		rc = -ENOMEM;
	/* Where each known variable is now -> the first address the
	 * application knows it by. */
	for (size_t j = 0; j < known.n && !rc; j++) {
		const struct known_global *k = (const struct known_global *)known.v + j;
		uint64_t first;

		if (!rp_index_get(&app_of, k->addr, &first))
			rc = rp_index_put(&app_of, k->addr, k->app);
	}
	for (size_t i = 0; i < names.v.n && !rc; i++) {
		struct global_src *g = (struct global_src *)names.v.v + i;
		struct lookup_args a = { .kind = g->owner_kind, .owner_real = g->owner_real,
					 .name = g->name };
		CUcontext ctx = (CUcontext)(uintptr_t)rp_snap_ctx_real(ctxs, g->ctx);
		struct rp_region reg;
		uint64_t app_va;
		CUresult cr;

		cr = ctx ? rp_in_ctx(ctx, lookup_global, &a) : CUDA_ERROR_INVALID_CONTEXT;
		if (cr != CUDA_SUCCESS || !a.addr || !a.size) {
			rp_release_warn(r, "variable %s of %s %#llx: its address cannot be found (%s); its "
			     "contents are not saved", g->name, gs_kind_name(g->owner_kind),
			     (unsigned long long)g->owner, rp_cu_name(cr));
			continue;
		}
		/* Found through the module and through the library both. */
		if (rp_index_get(&seen, a.addr, &app_va))
			continue;
		rc = rp_index_put(&seen, a.addr, 1);
		if (rc)
			break;
		reg = (struct rp_region){ .kind = RP_REGION_GLOBAL, .device = g->device,
					  .va = a.addr, .size = a.size, .owner_kind = g->owner_kind,
					  .owner = g->owner, .ctx = g->ctx, .name = g->name };
		if (rp_index_get(&app_of, a.addr, &app_va)) {
			reg.tracked = true;
			reg.app_va = app_va;
		}
		rc = rp_region_add(s, &reg);
		if (!rc)
			g->name = NULL; /* owned by the region now */
	}
	for (size_t i = 0; i < names.v.n; i++)
		free(((struct global_src *)names.v.v + i)->name);
	for (size_t i = 0; i < known.n; i++)
		free(((struct known_global *)known.v + i)->name);
	free(names.v.v);
	free(ev.v);
	free(known.v);
	rp_index_free(&seen);
	rp_index_free(&app_of);
	if (rc)
		return rp_fail(r->err, rc, "listing module variables failed: %s", strerror(-rc));
	return 0;
}

/* ---- memory regions ------------------------------------------------------------------ */

struct chunk_walk {
	struct rp_saved *s;
	int device;
	int rc;
};

static int chunk_cb(const struct gs_arena_chunk *c, void *arg)
{
	struct chunk_walk *w = arg;
	struct rp_region reg = { .kind = RP_REGION_ARENA, .device = w->device, .va = c->va,
				 .size = c->size };

	w->rc = rp_region_add(w->s, &reg);
	return w->rc != 0;
}

static int snap_phys(const struct gs_rec *rec, void *arg)
{
	const struct gs_phys_rec *p = GS_REC_AS(struct gs_phys_rec, GS_KIND_PHYS, rec);
	struct phys_snap *s;

	if (p->owner != GS_OWNER_APP)
		return 0;
	s = rp_vec_push(arg);
	if (!s)
		return 1;
	*s = (struct phys_snap){ .app = rec->app, .real = rec->real, .size = p->size,
				 .device = p->prop.location.id };
	return 0;
}

int rp_collect_memory(struct release *r, struct rp_vec *phys)
{
	struct rp_saved *s = r->s;
	uint64_t key = RP_PHYS_KEY_BASE;

	for (int d = 0; d < GS_MAX_DEVICES; d++) {
		struct gs_arena *a = gs_devmem_arena(d);
		struct chunk_walk w = { .s = s, .device = d };

		if (!a)
			continue;
		gs_arena_foreach_chunk(a, chunk_cb, &w);
		if (w.rc)
			return rp_fail(r->err, w.rc, "out of memory listing the arena's chunks");
	}
	gs_trk_foreach(GS_KIND_PHYS, snap_phys, phys);
	if (phys->oom)
		return rp_fail(r->err, -ENOMEM, "out of memory listing physical allocations");
	for (size_t i = 0; i < phys->n; i++) {
		const struct phys_snap *p = (const struct phys_snap *)phys->v + i;
		struct rp_region reg = { .kind = RP_REGION_PHYS, .device = p->device, .va = key,
					 .size = p->size, .phys = p->app };
		int rc = rp_region_add(s, &reg);

		if (rc)
			return rp_fail(r->err, rc, "out of memory");
		key += (p->size + 0xfffff) & ~UINT64_C(0xfffff);
	}
	return 0;
}
