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
 *  2. Build, recording every object made: contexts (primary contexts
 *     retained as often as the release released them), the arenas at their
 *     windows, the application's reservations at their addresses (the hint
 *     must be honoured), physical memory on the target, mappings at the
 *     same offsets, access for the mapped devices, pinned host memory
 *     registered again, libraries and modules loaded from the tracker's
 *     copies of their images, functions, kernels and variables resolved
 *     again, attributes, cache configurations and limits re-applied,
 *     streams and events re-created.
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
#include "rp_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arena.h"
#include "gate.h"
#include "hostmem.h"
#include "log.h"
#include "shim.h"
#include "thread.h"

/* ---- what was built --------------------------------------------------------------------- */

enum made_what {
	MADE_CTX_CREATED,
	MADE_CTX_PRIMARY,
	MADE_ARENA,
	MADE_RESERVATION,
	MADE_PHYS,
	MADE_MAPPING,
	MADE_HOSTREG,
	MADE_LIBRARY,
	MADE_KERNEL,
	MADE_MODULE,
	MADE_LIBMODULE,  /* a library's module: goes with the library */
	MADE_FUNCTION,
	MADE_STREAM,
	MADE_EVENT,
};

struct made {
	enum made_what what;
	enum gs_kind kind;   /* of the app handle, for the rebind */
	uint64_t app;        /* 0: nothing to rebind */
	uint64_t real;
	int device;          /* real ordinal (primary contexts), app ordinal (arena) */
	unsigned count;      /* primary: retains; phys: references held */
	uint64_t va;         /* reservation, mapping, host registration */
	size_t size;
	uint64_t ctx;        /* host registration: the real context */
};

/* A variable record: the address the application knows, and where the
 * variable was when the process was released. */
struct global_snap {
	uint64_t app;
	uint64_t real;
};

struct thaw {
	const int *map;               /* app ordinal -> real ordinal */
	int ndev;
	unsigned tsm[GS_MAX_DEVICES]; /* app ordinal -> target compute capability */
	struct rp_saved *s;
	struct made *made;
	size_t nmade, capmade;
	json_t *warnings;
	char **err;
	const struct gs_progress *progress;
	CUcontext work[GS_MAX_DEVICES]; /* by real ordinal */
	struct global_snap *globals;
	size_t nglobals;
	/* app handle -> index in made[], per kind (rebindable kinds only) */
	struct rp_index by_app[GS_KIND_COUNT];
	bool oom;
};

static void warn(struct thaw *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void warn(struct thaw *t, const char *fmt, ...)
{
	char *msg = NULL;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	gs_warn("%s", msg ? msg : fmt);
	if (t->warnings)
		json_array_append_new(t->warnings, json_string(msg ? msg : fmt));
	free(msg);
}

static struct made *made_add(struct thaw *t, enum made_what what, enum gs_kind kind,
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

static struct made *made_find(const struct thaw *t, enum gs_kind kind, uint64_t app)
{
	uint64_t i;

	if (kind >= GS_KIND_COUNT || !rp_index_get(&t->by_app[kind], app, &i))
		return NULL;
	return &t->made[i];
}

/* The new real handle of an app handle built in this thaw, or 0. */
static uint64_t new_real(const struct thaw *t, enum gs_kind kind, uint64_t app)
{
	const struct made *m = made_find(t, kind, app);

	return m ? m->real : 0;
}

static int real_of(const struct thaw *t, int app)
{
	return app >= 0 && app < t->ndev ? t->map[app] : -1;
}

static int nomem(struct thaw *t)
{
	return rp_fail(t->err, -ENOMEM, "out of memory");
}

/* Run a driver call list with a context current. */
static CUresult push(uint64_t ctx)
{
	return RP_REAL(cuCtxPushCurrent_v2, (CUcontext)(uintptr_t)ctx);
}

static void pop(void)
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
			rc = push(m->ctx);
			if (rc == CUDA_SUCCESS) {
				rc = RP_REAL(cuMemHostUnregister, (void *)(uintptr_t)m->va);
				pop();
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

/* ---- snapshots -------------------------------------------------------------------------- */

/* Records copied whole (their pointers are not used after the walk). */
static int copy_rec(const struct gs_rec *rec, void *arg, size_t size)
{
	void *p = rp_vec_push(arg);

	if (!p)
		return 1;
	memcpy(p, rec, size);
	return 0;
}

static int copy_ctx(const struct gs_rec *rec, void *arg)
{
	return copy_rec(rec, arg, sizeof(struct gs_ctx_rec));
}

static int copy_stream(const struct gs_rec *rec, void *arg)
{
	return copy_rec(rec, arg, sizeof(struct gs_stream_rec));
}

static int copy_event(const struct gs_rec *rec, void *arg)
{
	return copy_rec(rec, arg, sizeof(struct gs_event_rec));
}

static int copy_resv(const struct gs_rec *rec, void *arg)
{
	return copy_rec(rec, arg, sizeof(struct gs_resv_rec));
}

static int copy_phys(const struct gs_rec *rec, void *arg)
{
	return copy_rec(rec, arg, sizeof(struct gs_phys_rec));
}

static int copy_host(const struct gs_rec *rec, void *arg)
{
	return copy_rec(rec, arg, sizeof(struct gs_host_rec));
}

/* A mapping with its access list copied. */
struct map_snap {
	struct gs_mapping_rec m;
	struct gs_access access[GS_MAX_DEVICES];
	unsigned naccess;
};

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

/* Functions and kernels with their names copied. */
struct func_snap {
	struct gs_function_rec f;
	char *name;
};

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

struct kernel_snap {
	uint64_t app;
	uint64_t library;
	char *name;
	struct gs_kernel_setting *settings;
	unsigned nsettings;
};

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

struct module_snap {
	uint64_t app;
	uint64_t ctx;
	int device;
	enum gs_module_source source;
	uint64_t library;
};

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

struct snaps {
	struct rp_vec ctx, stream, event, resv, phys, map, host, func, kernel, module, library;
};

static void snaps_free(struct snaps *s)
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

static int snaps_take(struct snaps *s)
{
	*s = (struct snaps){
		.ctx = RP_VEC(struct gs_ctx_rec), .stream = RP_VEC(struct gs_stream_rec),
		.event = RP_VEC(struct gs_event_rec), .resv = RP_VEC(struct gs_resv_rec),
		.phys = RP_VEC(struct gs_phys_rec), .map = RP_VEC(struct map_snap),
		.host = RP_VEC(struct gs_host_rec), .func = RP_VEC(struct func_snap),
		.kernel = RP_VEC(struct kernel_snap), .module = RP_VEC(struct module_snap),
		.library = RP_VEC(uint64_t),
	};
	gs_trk_foreach(GS_KIND_CTX, copy_ctx, &s->ctx);
	gs_trk_foreach(GS_KIND_STREAM, copy_stream, &s->stream);
	gs_trk_foreach(GS_KIND_EVENT, copy_event, &s->event);
	gs_trk_foreach(GS_KIND_RESERVATION, copy_resv, &s->resv);
	gs_trk_foreach(GS_KIND_PHYS, copy_phys, &s->phys);
	gs_trk_foreach(GS_KIND_MAPPING, copy_mapping, &s->map);
	gs_trk_foreach(GS_KIND_HOST, copy_host, &s->host);
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
			real_of(c->t, m->device), sm, archs);
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
		int real = real_of(t, s->regions[i].device);

		if (real < 0 || real >= ndev)
			return rp_fail(t->err, -ENODEV, "memory of device %d has no target GPU",
				       s->regions[i].device);
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
			rc = RP_REAL(cuDeviceCanAccessPeer, &can, real_of(t, c->device),
				     real_of(t, p));
			gs_inside_end();
			if (rc != CUDA_SUCCESS || !can)
				return rp_fail(t->err, -EOPNOTSUPP, "context %#llx uses peer access "
					       "to device %d; GPUs %d and %d cannot be peers",
					       (unsigned long long)c->hdr.app, p, real_of(t, c->device),
					       real_of(t, p));
		}
	}
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
	rc = push((uintptr_t)real);
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
			warn(t, "context %#llx: limit %d = %zu not set on GPU %d (%s)",
			     (unsigned long long)c->hdr.app, l, c->limits[l], real_of(t, c->device),
			     rp_cu_name(rc));
	}
	if (c->cache_config_set && (rc = RP_REAL(cuCtxSetCacheConfig, c->cache_config)) !=
	    CUDA_SUCCESS)
		warn(t, "context %#llx: cache configuration not set (%s)",
		     (unsigned long long)c->hdr.app, rp_cu_name(rc));
	if (c->shmem_config_set && (rc = RP_REAL(cuCtxSetSharedMemConfig, c->shmem_config)) !=
	    CUDA_SUCCESS)
		warn(t, "context %#llx: shared memory configuration not set (%s)",
		     (unsigned long long)c->hdr.app, rp_cu_name(rc));
	pop();
	gs_inside_end();
	return 0;
}

static int build_contexts(struct thaw *t, const struct snaps *sn)
{
	for (size_t i = 0; i < sn->ctx.n; i++) {
		const struct gs_ctx_rec *c = RP_VEC_AT(sn->ctx, struct gs_ctx_rec, i);
		int real = real_of(t, c->device);
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
				m = made_add(t, MADE_CTX_PRIMARY, GS_KIND_CTX, c->hdr.app,
					     (uintptr_t)ctx);
				if (!m) {
					RP_REAL(cuDevicePrimaryCtxRelease_v2, real);
					gs_inside_end();
					return nomem(t);
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
				if (!made_add(t, MADE_CTX_CREATED, GS_KIND_CTX, c->hdr.app,
					      (uintptr_t)ctx)) {
					RP_REAL(cuCtxDestroy_v2, ctx);
					gs_inside_end();
					return nomem(t);
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
		uint64_t self = new_real(t, GS_KIND_CTX, c->hdr.app);

		for (int p = 0; p < t->ndev && p < 64; p++) {
			int peer_real = real_of(t, p);
			CUresult rc;

			if (!(c->peers_enabled & (UINT64_C(1) << p)) || peer_real < 0 ||
			    !t->work[peer_real])
				continue;
			gs_inside_begin();
			rc = push(self);
			if (rc == CUDA_SUCCESS) {
				rc = RP_REAL(cuCtxEnablePeerAccess, t->work[peer_real], 0);
				pop();
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

static int build_arenas(struct thaw *t, const struct snaps *sn)
{
	for (int d = 0; d < t->ndev && d < GS_MAX_DEVICES; d++) {
		struct gs_arena *a = gs_devmem_arena(d);
		int peers[GS_MAX_DEVICES];
		unsigned npeers = 0;
		CUresult rc;

		if (!a)
			continue;
		/* Devices whose contexts enabled peer access to this one. */
		for (size_t i = 0; i < sn->ctx.n; i++) {
			const struct gs_ctx_rec *c = RP_VEC_AT(sn->ctx, struct gs_ctx_rec, i);
			int acc = real_of(t, c->device);
			bool dup = false;

			if (!(c->peers_enabled & (UINT64_C(1) << d)) || acc < 0 || c->device == d)
				continue;
			for (unsigned k = 0; k < npeers; k++)
				dup |= peers[k] == acc;
			if (!dup)
				peers[npeers++] = acc;
		}
		gs_inside_begin();
		rc = gs_arena_attach(a, real_of(t, d), peers, npeers);
		gs_inside_end();
		if (rc != CUDA_SUCCESS) {
			uint64_t base, size;

			gs_arena_window(a, &base, &size);
			return rp_fail(t->err, rp_cu_errno(rc), "putting device %d's memory back at "
				       "%#llx on GPU %d failed: %s%s", d, (unsigned long long)base,
				       real_of(t, d), rp_cu_name(rc),
				       rc == CUDA_ERROR_ALREADY_MAPPED
					       ? " (the address range is taken)" : "");
		}
		struct made *m = made_add(t, MADE_ARENA, GS_KIND_COUNT, 0, 0);
		if (!m) {
			gs_inside_begin();
			gs_arena_detach(a);
			gs_inside_end();
			return nomem(t);
		}
		m->device = d;
	}
	return 0;
}

static uint64_t map_phys(const struct thaw *t, uint64_t app)
{
	return new_real(t, GS_KIND_PHYS, app);
}

static int build_vmm(struct thaw *t, const struct snaps *sn)
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
		if (!(m = made_add(t, MADE_RESERVATION, GS_KIND_RESERVATION, 0, p))) {
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
			prop.location.id = real_of(t, prop.location.id);
		what = "creating physical memory";
		where = p->hdr.app;
		rc = RP_REAL(cuMemCreate, &h, p->size, &prop, p->flags);
		if (rc != CUDA_SUCCESS)
			break;
		if (!(m = made_add(t, MADE_PHYS, GS_KIND_PHYS, p->hdr.app, h))) {
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
		uint64_t h = map_phys(t, s->m.phys);

		what = "mapping";
		where = s->m.hdr.app;
		rc = h ? RP_REAL(cuMemMap, s->m.hdr.app, s->m.size, s->m.offset,
				 (CUmemGenericAllocationHandle)h, s->m.flags)
		       : CUDA_ERROR_INVALID_HANDLE;
		if (rc != CUDA_SUCCESS)
			break;
		if (!(m = made_add(t, MADE_MAPPING, GS_KIND_MAPPING, 0, h))) {
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
				desc[k].location.id = real_of(t, desc[k].location.id);
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
		pm = made_find(t, GS_KIND_PHYS, p->hdr.app);
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

static int build_host(struct thaw *t, const struct snaps *sn)
{
	for (size_t i = 0; i < sn->host.n; i++) {
		const struct gs_host_rec *h = RP_VEC_AT(sn->host, struct gs_host_rec, i);
		uint64_t ctx = new_real(t, GS_KIND_CTX, (uintptr_t)h->d.ctx);
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
		rc = push(ctx);
		if (rc == CUDA_SUCCESS) {
			rc = RP_REAL(cuMemHostRegister_v2, h->d.ptr, h->d.size, flags);
			if (rc == CUDA_SUCCESS && (flags & CU_MEMHOSTREGISTER_DEVICEMAP) &&
			    RP_REAL(cuMemHostGetDevicePointer_v2, &devptr, h->d.ptr, 0) !=
				    CUDA_SUCCESS)
				devptr = 0;
			pop();
		}
		gs_inside_end();
		if (rc != CUDA_SUCCESS)
			return rp_fail(t->err, rp_cu_errno(rc), "pinning host memory %p (%zu bytes) "
				       "again failed: %s", h->d.ptr, h->d.size, rp_cu_name(rc));
		if (!(m = made_add(t, MADE_HOSTREG, GS_KIND_HOST, 0, 0))) {
			gs_inside_begin();
			if (push(ctx) == CUDA_SUCCESS) {
				RP_REAL(cuMemHostUnregister, h->d.ptr);
				pop();
			}
			gs_inside_end();
			return nomem(t);
		}
		m->va = (uintptr_t)h->d.ptr;
		m->ctx = ctx;
		/* With unified addressing the device sees registered memory
		 * at its host address; where it does not, a pointer the
		 * application kept may be stale. */
		if (h->d.devptr && devptr && devptr != h->d.devptr)
			warn(t, "pinned host memory %p is now mapped for the device at %#llx, no "
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

	ld->rc = push(ld->ctx);
	if (ld->rc != CUDA_SUCCESS)
		return 0;
	/* The tracker's copy, not the file again: it may have changed. A
	 * fatbin picks the target's code here. */
	if (n)
		ld->rc = RP_REAL(cuModuleLoadDataEx, &mod, m->image.data, n, (CUjit_option *)opt,
				 val);
	else
		ld->rc = RP_REAL(cuModuleLoadData, &mod, m->image.data);
	pop();
	ld->handle = (uintptr_t)mod;
	return 0;
}

static void kernel_settings(struct thaw *t, const struct kernel_snap *k, CUkernel real)
{
	for (unsigned i = 0; i < k->nsettings; i++) {
		const struct gs_kernel_setting *s = &k->settings[i];
		CUfunction as_func = (CUfunction)(void *)real;
		int dev = s->device >= 0 ? real_of(t, s->device) : -1;
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
			warn(t, "kernel %s: setting %d = %d not applied (%s)", k->name, s->attr,
			     s->value, rp_cu_name(rc));
	}
}

static int build_code(struct thaw *t, const struct snaps *sn)
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
		if (!made_add(t, MADE_LIBRARY, GS_KIND_LIBRARY, app, ld.handle)) {
			gs_inside_begin();
			RP_REAL(cuLibraryUnload, (CUlibrary)(uintptr_t)ld.handle);
			gs_inside_end();
			return nomem(t);
		}
	}
	for (size_t i = 0; i < sn->kernel.n; i++) {
		const struct kernel_snap *k = RP_VEC_AT(sn->kernel, struct kernel_snap, i);
		uint64_t lib = new_real(t, GS_KIND_LIBRARY, k->library);
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
		if (!made_add(t, MADE_KERNEL, GS_KIND_KERNEL, k->app, (uintptr_t)kern))
			return nomem(t);
	}

	/* Modules, in their contexts. */
	for (size_t i = 0; i < sn->module.n; i++) {
		const struct module_snap *m = RP_VEC_AT(sn->module, struct module_snap, i);
		struct load ld = { .t = t, .ctx = new_real(t, GS_KIND_CTX, m->ctx),
				   .real_device = real_of(t, m->device) };
		enum made_what what = MADE_MODULE;

		if (!ld.ctx)
			return rp_fail(t->err, -ENOENT, "module %#llx: its context %#llx was not "
				       "re-created", (unsigned long long)m->app,
				       (unsigned long long)m->ctx);
		gs_inside_begin();
		if (m->source == GS_MODSRC_LIBRARY) {
			uint64_t lib = new_real(t, GS_KIND_LIBRARY, m->library);
			CUmodule mod = NULL;

			what = MADE_LIBMODULE;
			ld.rc = push(ld.ctx);
			if (ld.rc == CUDA_SUCCESS) {
				ld.rc = lib ? RP_REAL(cuLibraryGetModule, &mod, (CUlibrary)(uintptr_t)lib)
					    : CUDA_ERROR_INVALID_HANDLE;
				pop();
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
		if (!made_add(t, what, GS_KIND_MODULE, m->app, ld.handle)) {
			if (what == MADE_MODULE) {
				gs_inside_begin();
				RP_REAL(cuModuleUnload, (CUmodule)(uintptr_t)ld.handle);
				gs_inside_end();
			}
			return nomem(t);
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
			uint64_t mod = new_real(t, GS_KIND_MODULE, f->module);
			rc = mod ? RP_REAL(cuModuleGetFunction, &fn, (CUmodule)(uintptr_t)mod, fs->name)
				 : CUDA_ERROR_INVALID_HANDLE;
		} else {
			uint64_t kern = new_real(t, GS_KIND_KERNEL, f->kernel);
			uint64_t ctx = new_real(t, GS_KIND_CTX, f->ctx);

			rc = kern && ctx ? push(ctx) : CUDA_ERROR_INVALID_HANDLE;
			if (rc == CUDA_SUCCESS) {
				rc = RP_REAL(cuKernelGetFunction, &fn, (CUkernel)(uintptr_t)kern);
				pop();
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
				warn(t, "function %s: a configuration was not applied (%s)", fs->name,
				     rp_cu_name(hint));
		}
		gs_inside_end();
		if (rc != CUDA_SUCCESS)
			return rp_fail(t->err, rp_cu_errno(rc), "function %s not found again: %s",
				       fs->name, rp_cu_name(rc));
		if (!made_add(t, MADE_FUNCTION, GS_KIND_FUNCTION, f->hdr.app, (uintptr_t)fn))
			return nomem(t);
	}

	/* Variables at their new addresses. */
	for (size_t i = 0; i < t->s->nregions; i++) {
		struct rp_region *g = &t->s->regions[i];
		uint64_t owner = new_real(t, g->owner_kind, g->owner);
		uint64_t ctx = new_real(t, GS_KIND_CTX, g->ctx);
		CUdeviceptr addr = 0;
		size_t size = 0;
		CUresult rc;

		if (g->kind != RP_REGION_GLOBAL)
			continue;
		gs_inside_begin();
		rc = owner && ctx ? push(ctx) : CUDA_ERROR_INVALID_HANDLE;
		if (rc == CUDA_SUCCESS) {
			rc = g->owner_kind == GS_KIND_MODULE
				     ? RP_REAL(cuModuleGetGlobal_v2, &addr, &size,
					       (CUmodule)(uintptr_t)owner, g->name)
				     : RP_REAL(cuLibraryGetGlobal, &addr, &size,
					       (CUlibrary)(uintptr_t)owner, g->name);
			pop();
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

static int build_streams_events(struct thaw *t, const struct snaps *sn)
{
	for (size_t i = 0; i < sn->stream.n; i++) {
		const struct gs_stream_rec *s = RP_VEC_AT(sn->stream, struct gs_stream_rec, i);
		uint64_t ctx = new_real(t, GS_KIND_CTX, s->ctx);
		CUstream st = NULL;
		CUresult rc;

		gs_inside_begin();
		rc = ctx ? push(ctx) : CUDA_ERROR_INVALID_CONTEXT;
		if (rc == CUDA_SUCCESS) {
			/* The driver clamps a priority outside the new GPU's
			 * range, as it did at creation. */
			rc = s->priority_set
				     ? RP_REAL(cuStreamCreateWithPriority, &st, s->flags, s->priority)
				     : RP_REAL(cuStreamCreate, &st, s->flags);
			pop();
		}
		gs_inside_end();
		if (rc != CUDA_SUCCESS)
			return rp_fail(t->err, rp_cu_errno(rc), "creating stream %#llx again "
				       "failed: %s", (unsigned long long)s->hdr.app, rp_cu_name(rc));
		if (!made_add(t, MADE_STREAM, GS_KIND_STREAM, s->hdr.app, (uintptr_t)st)) {
			gs_inside_begin();
			RP_REAL(cuStreamDestroy_v2, st);
			gs_inside_end();
			return nomem(t);
		}
	}
	for (size_t i = 0; i < sn->event.n; i++) {
		const struct gs_event_rec *e = RP_VEC_AT(sn->event, struct gs_event_rec, i);
		uint64_t ctx = new_real(t, GS_KIND_CTX, e->ctx);
		CUevent ev = NULL;
		CUresult rc;

		gs_inside_begin();
		rc = ctx ? push(ctx) : CUDA_ERROR_INVALID_CONTEXT;
		if (rc == CUDA_SUCCESS) {
			/* Everything was complete at the freeze: a fresh event
			 * is complete too. */
			rc = RP_REAL(cuEventCreate, &ev, e->flags);
			pop();
		}
		gs_inside_end();
		if (rc != CUDA_SUCCESS)
			return rp_fail(t->err, rp_cu_errno(rc), "creating event %#llx again failed: %s",
				       (unsigned long long)e->hdr.app, rp_cu_name(rc));
		if (!made_add(t, MADE_EVENT, GS_KIND_EVENT, e->hdr.app, (uintptr_t)ev)) {
			gs_inside_begin();
			RP_REAL(cuEventDestroy_v2, ev);
			gs_inside_end();
			return nomem(t);
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
		return nomem(t);
	}
	gs_inside_begin();
	for (size_t i = 0; i < s->nregions && !rc; i++) {
		struct rp_region *g = &s->regions[i];
		int real = real_of(t, g->device);

		copies[i] = (struct rp_copy){ .region = g, .va = g->va, .real_device = real };
		if (g->kind == RP_REGION_GLOBAL)
			copies[i].va = g->dest;
		if (g->kind == RP_REGION_PHYS) {
			uint64_t h = map_phys(t, g->phys);
			CUresult cr = h ? rp_tmpmap_make(&maps[nmaps], h, g->size, real)
					: CUDA_ERROR_INVALID_HANDLE;

			if (cr != CUDA_SUCCESS) {
				rc = rp_fail(t->err, rp_cu_errno(cr), "cannot map physical allocation "
					     "%#llx to restore it: %s", (unsigned long long)g->phys,
					     rp_cu_name(cr));
				break;
			}
			copies[i].va = maps[nmaps++].va;
		}
	}
	gs_inside_end();
	if (!rc)
		rc = rp_restore(copies, s->nregions, t->work, image_dir, t->progress, t->err);
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
	if (rp_moved_globals_publish())
		gs_error("out of memory: module variables moved by this migration cannot be "
			 "reached at the addresses the application knows");
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
	rc = snaps_take(&sn);
	if (!rc)
		rc = globals_take(&t);
	if (rc) {
		rc = rp_fail(err, rc, "out of memory listing the saved objects");
		goto out;
	}

	rp_progress(progress, "check", 0, 0);
	rc = check_target(&t, &sn);
	if (rc)
		goto out;

	rp_progress(progress, "build", 0, 0);
	rc = build_contexts(&t, &sn);
	if (!rc)
		rc = build_arenas(&t, &sn);
	if (!rc)
		rc = build_vmm(&t, &sn);
	if (!rc)
		rc = build_host(&t, &sn);
	if (!rc)
		rc = build_code(&t, &sn);
	if (!rc)
		rc = build_streams_events(&t, &sn);
	if (!rc)
		rc = restore_memory(&t, image_dir);
	if (!rc) {
		rp_progress(progress, "rebind", 0, 0);
		rc = commit(&t, &moved);
	}
	if (rc) {
		gs_info("thaw failed: undoing %zu steps; the process stays released", t.nmade);
		undo(&t);
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
	pthread_mutex_lock(&rp.lock);
	rp_saved_free(&rp.saved);
	rp.migrations++;
	pthread_mutex_unlock(&rp.lock);
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
	snaps_free(&sn);
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
	rc = rp_release(NULL, progress, rel, err);
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
