/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Handle and device-ordinal translation after a migration (translate.h,
 * DESIGN.md §4): the lookups the generated wrappers call, the record of
 * calls left untranslated, and the wrapped export tables that carry
 * contexts. The addresses of moved __device__ globals are in
 * translate_moved.c, the hand-written translation of the entry points whose
 * parameter types do not say what to map (annotations.txt: xlat-hook) in
 * translate_hook.c: both build on the lookups here, which need neither.
 *
 * None of this runs before the first migration: the wrappers reach it only
 * through their migrated branch, and the helpers return at once while
 * gs_migrated is false.
 */
#define GS_LOG_SUBSYS "shim"
#include "translate.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "exporttable.h"
#include "introspect.h"
#include "log.h"
#include "proctable.h"
#include "track.h"

/* ---- handles --------------------------------------------------------------------- */

static bool is_special(enum gs_kind kind, uint64_t v)
{
	return v == 0 || (kind == GS_KIND_STREAM && (v == (uintptr_t)CU_STREAM_LEGACY ||
						      v == (uintptr_t)CU_STREAM_PER_THREAD));
}

uint64_t gs_xlat_to_real(enum gs_kind kind, uint64_t app)
{
	struct gs_handlemap *m;
	uint64_t real;

	if (!gs_migrated_load() || is_special(kind, app))
		return app;
	m = gs_trk_handlemap(kind);
	if (m && gs_hmap_to_real(m, app, &real) == 0)
		return real;
	if (kind == GS_KIND_FUNCTION) {
		m = gs_trk_handlemap(GS_KIND_KERNEL);
		if (m && gs_hmap_to_real(m, app, &real) == 0)
			return real;
	}
	/* The driver gives an unknown handle the answer it always would. */
	gs_debug("%s %#llx is unknown: passed to the driver unchanged", gs_kind_name(kind),
		 (unsigned long long)app);
	return app;
}

uint64_t gs_xlat_to_app(enum gs_kind kind, uint64_t real)
{
	struct gs_handlemap *m;
	uint64_t app;

	if (!gs_migrated_load() || is_special(kind, real))
		return real;
	m = gs_trk_handlemap(kind);
	if (m && gs_hmap_to_app(m, real, &app) == 0)
		return app;
	if (kind == GS_KIND_FUNCTION) {
		m = gs_trk_handlemap(GS_KIND_KERNEL);
		if (m && gs_hmap_to_app(m, real, &app) == 0)
			return app;
	}
	/* An object made through a path the shim does not see: registering
	 * it here, with no record behind it, would keep the tracker from
	 * recording it properly later, so its value is handed out as is. */
	gs_debug("the driver returned %s %#llx, which the shim does not know", gs_kind_name(kind),
		 (unsigned long long)real);
	return real;
}

uint64_t gs_xlat_adopt(enum gs_kind kind, uint64_t real)
{
	struct gs_handlemap *m;
	uint64_t app;
	int rc;

	if (!gs_migrated_load() || is_special(kind, real))
		return real;
	m = gs_trk_handlemap(kind);
	if (!m)
		return real;
	if (gs_hmap_to_app(m, real, &app) == 0)
		return app;
	rc = gs_hmap_adopt(m, real, &app);
	if (rc < 0) {
		gs_log_at(GS_LOG_WARN, -rc, "%s %#llx: not registered", gs_kind_name(kind),
			  (unsigned long long)real);
		return real;
	}
	return app;
}

/* ---- device ordinals -------------------------------------------------------------- */

int gs_xlat_device_to_real(int app)
{
	int real;

	/* Negative values are CU_DEVICE_CPU and CU_DEVICE_INVALID. */
	if (!gs_migrated_load() || app < 0)
		return app;
	real = gs_devmap_to_real(gs_trk_devmap(), app);
	if (real < 0) {
		gs_debug("device %d is not one the application has: passed unchanged", app);
		return app;
	}
	return real;
}

int gs_xlat_device_to_app(int real)
{
	int app;

	if (!gs_migrated_load() || real < 0)
		return real;
	app = gs_devmap_to_app(gs_trk_devmap(), real);
	if (app < 0) {
		gs_debug("the driver named device %d, which the application does not see", real);
		return real;
	}
	return app;
}

void gs_xlat_memloc_to_real(CUmemLocation *loc)
{
	if (loc && loc->type == CU_MEM_LOCATION_TYPE_DEVICE)
		loc->id = gs_xlat_device_to_real(loc->id);
}

void gs_xlat_memloc_to_app(CUmemLocation *loc)
{
	if (loc && loc->type == CU_MEM_LOCATION_TYPE_DEVICE)
		loc->id = gs_xlat_device_to_app(loc->id);
}

void gs_xlat_pointer_attr_to_app(CUpointer_attribute attr, void *data)
{
	CUdeviceptr va;
	CUcontext ctx;
	int dev;

	if (!gs_migrated_load() || !data)
		return;
	/* The value buffers are the caller's, with no alignment promised. */
	switch (attr) {
	case CU_POINTER_ATTRIBUTE_CONTEXT:
		memcpy(&ctx, data, sizeof(ctx));
		ctx = gs_xlat_ctx_app(ctx);
		memcpy(data, &ctx, sizeof(ctx));
		break;
	case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL:
		memcpy(&dev, data, sizeof(dev));
		dev = gs_xlat_device_to_app(dev);
		memcpy(data, &dev, sizeof(dev));
		break;
	case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR:
		/* The start of a moved global's storage: its old address. */
		memcpy(&va, data, sizeof(va));
		va = gs_xlat_devptr_app(va);
		memcpy(data, &va, sizeof(va));
		break;
	default:
		break;
	}
}

/* ---- what is not translated ------------------------------------------------------- */

static _Atomic unsigned char unsupported_seen[GS_API_COUNT];

/* Parts of hand-written hooks that stay untranslated (the generated table
 * gs_xlat_untranslated lists whole parameters). */
static const char *untranslated_params(int sym)
{
	switch (sym) {
	case GS_SYM_cuGraphMemAllocNodeGetParams:
		/* The driver's own array: the shim cannot rewrite it. */
		return "params_out->accessDescs";
	default:
		return gs_xlat_untranslated[sym];
	}
}

void gs_xlat_unsupported(int sym)
{
	if (sym < 0 || sym >= GS_API_COUNT)
		return;
	if (!atomic_exchange_explicit(&unsupported_seen[sym], 1, memory_order_relaxed))
		gs_warn("%s called after a migration: the shim does not translate its %s; the "
			"driver gets (or the application sees) handles or device ordinals of "
			"the other side", gs_api_symbols[sym],
			untranslated_params(sym) ? untranslated_params(sym) : "arguments");
}

size_t gs_xlat_unsupported_seen(int *syms, size_t cap)
{
	size_t n = 0;

	for (int s = 0; s < GS_API_COUNT; s++) {
		if (!atomic_load_explicit(&unsupported_seen[s], memory_order_relaxed))
			continue;
		if (syms && n < cap)
			syms[n] = s;
		n++;
	}
	return n;
}

int gs_xlat_check(gs_xlat_problem_fn *fn, void *arg)
{
	int n = 0;

	for (int s = 0; s < GS_API_COUNT; s++) {
		const char *params = untranslated_params(s);
		uint64_t calls;

		if (!params)
			continue;
		calls = gs_introspect_call_count(gs_api_symbols[s]);
		if (!calls && !atomic_load_explicit(&unsupported_seen[s], memory_order_relaxed))
			continue;
		n++;
		if (fn && fn(gs_api_symbols[s], params, calls, arg))
			break;
	}
	return n;
}

size_t gs_introspect_untranslated(const char **symbols, size_t cap)
{
	size_t n = 0;

	for (int s = 0; s < GS_API_COUNT; s++) {
		if (!atomic_load_explicit(&unsupported_seen[s], memory_order_relaxed))
			continue;
		if (symbols && n < cap)
			symbols[n] = gs_api_symbols[s];
		n++;
	}
	return n;
}

/* ---- export tables ------------------------------------------------------------------- */

/*
 * What is known of the two tables is what DESIGN.md §3 records from cudart
 * against a logging driver; their layouts are not public. Assumed, and to
 * be confirmed on a GPU (tests/gpu):
 *   - slot 0 of a table holds its size in bytes, slot 0 included; entries
 *     are pointer-sized slots after it ("entry N" is slot N);
 *   - cudart interface, entry 2: CUresult (CUcontext *pctx, CUdevice dev),
 *     the device's primary context (as cudart was seen calling it);
 *   - context-local storage, entries 1..3: set (ctx, key, value, dtor),
 *     remove (ctx, key), get (void **value, ctx, key), keyed by context.
 * The storage entries are forwarded with four pointer-sized arguments
 * whatever their real arity: passed in registers on x86-64 and AArch64,
 * extra ones are ignored by a callee that takes fewer, so a wrong guess of
 * the arity costs nothing before a migration. The context a storage
 * destructor receives from the driver stays the real one.
 */
#define TABLE_MAX_BYTES 4096

typedef CUresult primary_ctx_fn(CUcontext *pctx, CUdevice dev);
typedef CUresult cls_fn(uintptr_t a0, uintptr_t a1, uintptr_t a2, uintptr_t a3);

/* The driver's entries, kept untyped as the tables hold them and called
 * through the type assumed above. */
static _Atomic(gs_any_fn) cudart_primary_ctx_real;
static _Atomic(gs_any_fn) cls_real[4];

static CUresult cudart_primary_ctx(CUcontext *pctx, CUdevice dev)
{
	primary_ctx_fn *real = (primary_ctx_fn *)atomic_load_explicit(&cudart_primary_ctx_real,
								       memory_order_acquire);
	CUresult rc;

	if (!gs_migrated_load())
		return real(pctx, dev);
	rc = real(pctx, gs_xlat_device(dev));
	if (rc == CUDA_SUCCESS && pctx)
		*pctx = gs_xlat_ctx_app(*pctx);
	return rc;
}

static cls_fn *cls_entry(int slot)
{
	return (cls_fn *)atomic_load_explicit(&cls_real[slot], memory_order_acquire);
}

static uintptr_t ctx_arg(uintptr_t v)
{
	/* Not a context after all (a wrong guess of the layout): unknown
	 * values pass through unchanged. */
	return (uintptr_t)gs_xlat_ctx((CUcontext)v);
}

static CUresult cls_set(uintptr_t ctx, uintptr_t key, uintptr_t value, uintptr_t dtor)
{
	return cls_entry(1)(ctx_arg(ctx), key, value, dtor);
}

static CUresult cls_remove(uintptr_t ctx, uintptr_t key, uintptr_t a2, uintptr_t a3)
{
	return cls_entry(2)(ctx_arg(ctx), key, a2, a3);
}

static CUresult cls_get(uintptr_t value, uintptr_t ctx, uintptr_t key, uintptr_t a3)
{
	return cls_entry(3)(value, ctx_arg(ctx), key, a3);
}

struct table_patch {
	unsigned slot;
	gs_any_fn shim;
	_Atomic(gs_any_fn) *real;
};

struct wrapped_table {
	const char *name;
	unsigned char uuid[16];
	unsigned min_slots;
	struct table_patch patches[3];
	unsigned npatches;
	/* the driver's table and our copy of it, under tables_lock */
	const void *real;
	void *copy;
};

static pthread_mutex_t tables_lock = PTHREAD_MUTEX_INITIALIZER;

static struct wrapped_table tables[] = {
	{
		.name = "cudart interface",
		.uuid = { 0x6B, 0xD5, 0xFB, 0x6C, 0x5B, 0xF4, 0xE7, 0x4A, 0x89, 0x87, 0xD9, 0x39,
			  0x12, 0xFD, 0x9D, 0xF9 },
		.min_slots = 3,
		.patches = { { 2, (gs_any_fn)cudart_primary_ctx, &cudart_primary_ctx_real } },
		.npatches = 1,
	},
	{
		.name = "context-local storage",
		.uuid = { 0xC6, 0x93, 0x33, 0x6E, 0x11, 0x21, 0xDF, 0x11, 0xA8, 0xC3, 0x68, 0xF3,
			  0x55, 0xD8, 0x95, 0x93 },
		.min_slots = 4,
		.patches = { { 1, (gs_any_fn)cls_set, &cls_real[1] },
			     { 2, (gs_any_fn)cls_remove, &cls_real[2] },
			     { 3, (gs_any_fn)cls_get, &cls_real[3] } },
		.npatches = 3,
	},
};

static struct wrapped_table *table_for(const CUuuid *id)
{
	for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++)
		if (memcmp(tables[i].uuid, id->bytes, 16) == 0)
			return &tables[i];
	return NULL;
}

/* Copy `real` as t describes, with t's entries replaced. Called with
 * tables_lock held. */
static int table_build(struct wrapped_table *t, const void *real, void **out)
{
	size_t size;
	unsigned char *copy;

	memcpy(&size, real, sizeof(size));
	if (size % sizeof(void *) || size < t->min_slots * sizeof(void *) ||
	    size > TABLE_MAX_BYTES) {
		gs_warn("export table %s: size field %zu is not what the shim expects; "
			"handing out the driver's table, untranslated", t->name, size);
		return -EPROTO;
	}
	for (unsigned i = 0; i < t->npatches; i++) {
		gs_any_fn fn;

		memcpy(&fn, (const unsigned char *)real + t->patches[i].slot * sizeof(void *),
		       sizeof(fn));
		if (!fn) {
			gs_warn("export table %s: entry %u is empty; handing out the driver's "
				"table, untranslated", t->name, t->patches[i].slot);
			return -EPROTO;
		}
	}
	/* Never freed: the application keeps the pointer for good. */
	copy = malloc(size);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, real, size);
	for (unsigned i = 0; i < t->npatches; i++) {
		unsigned char *slot = copy + t->patches[i].slot * sizeof(void *);
		gs_any_fn fn;

		memcpy(&fn, slot, sizeof(fn));
		atomic_store_explicit(t->patches[i].real, fn, memory_order_release);
		memcpy(slot, &t->patches[i].shim, sizeof(gs_any_fn));
	}
	*out = copy;
	return 0;
}

int gs_xlat_wrap_export_table(const CUuuid *id, const void *real_table, const void **app_table)
{
	struct wrapped_table *t = id ? table_for(id) : NULL;
	int rc = 0;

	if (!t || !real_table)
		return -EINVAL;
	/* Before a migration the driver's own table: a job that is never
	 * migrated runs exactly as without the shim. */
	if (!gs_migrated_load()) {
		*app_table = real_table;
		return 0;
	}
	pthread_mutex_lock(&tables_lock);
	if (t->real && t->real != real_table) {
		/* The driver hands out one table per UUID, and the forwarders
		 * call the entries of the first: a second table is passed on
		 * untranslated rather than redirected to the first's. */
		gs_warn("export table %s: the driver returned a second table; handing it out "
			"untranslated", t->name);
		rc = -EEXIST;
	} else if (!t->real) {
		void *copy;

		rc = table_build(t, real_table, &copy);
		if (rc == 0) {
			t->real = real_table;
			t->copy = copy;
			gs_debug("export table %s: handing out a translating copy", t->name);
		}
	}
	if (rc == 0)
		*app_table = t->copy;
	pthread_mutex_unlock(&tables_lock);
	return rc;
}
