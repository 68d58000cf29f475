/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Handle and device-ordinal translation after a migration (translate.h,
 * DESIGN.md §4): the lookups the generated wrappers call, the hand-written
 * translation of the entry points whose parameter types do not say what to
 * map (annotations.txt: xlat-hook), the record of calls left untranslated,
 * and the wrapped export tables that carry contexts.
 *
 * None of this runs before the first migration: the wrappers reach it only
 * through their migrated branch, and the helpers return at once while
 * gs_migrated is false.
 */
#define GS_LOG_SUBSYS "shim"
#include "translate.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stddef.h>
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

/* ---- device addresses of moved __device__ globals ------------------------------------ */

struct gs_moved_set {
	size_t n;
	struct gs_moved_range *by_old; /* sorted by old_va */
	struct gs_moved_range *by_new; /* the same ranges sorted by new_va */
	struct gs_moved_set *retired_next;
	struct gs_moved_range storage[];
};

_Atomic(const struct gs_moved_set *) gs_xlat_moved;

/* Writers only: publication, and the arrays retired while the gate was
 * open (see translate.h). */
static pthread_mutex_t moved_lock = PTHREAD_MUTEX_INITIALIZER;
static struct gs_moved_set *moved_retired;

static size_t range_len(const struct gs_moved_range *r)
{
	return r->size ? r->size : 1;
}

/* The range of sorted array r[n] whose [base, base + size) holds a, or NULL. */
static const struct gs_moved_range *range_find(const struct gs_moved_range *r, size_t n,
					       CUdeviceptr a, bool by_old)
{
	size_t lo = 0, hi = n;

	/* The last range starting at or below a. */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if ((by_old ? r[mid].old_va : r[mid].new_va) <= a)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return NULL;
	r += lo - 1;
	return a - (by_old ? r->old_va : r->new_va) < range_len(r) ? r : NULL;
}

CUdeviceptr gs_xlat_moved_to_real(const struct gs_moved_set *s, CUdeviceptr app)
{
	const struct gs_moved_range *r = range_find(s->by_old, s->n, app, true);

	return r ? r->new_va + (app - r->old_va) : app;
}

CUdeviceptr gs_xlat_moved_to_app(const struct gs_moved_set *s, CUdeviceptr real)
{
	const struct gs_moved_range *r = range_find(s->by_new, s->n, real, false);

	if (r)
		return r->old_va + (real - r->new_va);
	/* The driver placed something new where a moved global used to be:
	 * the application would get an address the shim sends elsewhere. */
	if (range_find(s->by_old, s->n, real, true))
		gs_warn("the driver returned device address %#llx, inside the old range of "
			"a global that moved; calls with it reach that global instead",
			(unsigned long long)real);
	return real;
}

static int cmp_old(const void *a, const void *b)
{
	const struct gs_moved_range *x = a, *y = b;

	return x->old_va < y->old_va ? -1 : x->old_va > y->old_va;
}

static int cmp_new(const void *a, const void *b)
{
	const struct gs_moved_range *x = a, *y = b;

	return x->new_va < y->new_va ? -1 : x->new_va > y->new_va;
}

/* Sorted copies of ranges (those that moved), or NULL for none; -EINVAL
 * for overlaps. */
static int moved_build(const struct gs_moved_range *ranges, size_t n, struct gs_moved_set **out)
{
	struct gs_moved_set *s;
	size_t k = 0;

	*out = NULL;
	if (n && !ranges)
		return -EINVAL;
	if (n > (SIZE_MAX - sizeof(*s)) / (2 * sizeof(*ranges)))
		return -ENOMEM;
	s = malloc(sizeof(*s) + 2 * n * sizeof(*ranges));
	if (!s)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (ranges[i].old_va == ranges[i].new_va)
			continue;
		if (ranges[i].old_va + range_len(&ranges[i]) < ranges[i].old_va ||
		    ranges[i].new_va + range_len(&ranges[i]) < ranges[i].new_va) {
			free(s);
			return -EINVAL;
		}
		s->storage[k++] = ranges[i];
	}
	if (k == 0) {
		free(s);
		return 0;
	}
	s->n = k;
	s->by_old = s->storage;
	s->by_new = s->storage + k;
	s->retired_next = NULL;
	memcpy(s->by_new, s->by_old, k * sizeof(*ranges));
	qsort(s->by_old, k, sizeof(*ranges), cmp_old);
	qsort(s->by_new, k, sizeof(*ranges), cmp_new);
	for (size_t i = 1; i < k; i++) {
		if (s->by_old[i].old_va - s->by_old[i - 1].old_va < range_len(&s->by_old[i - 1]) ||
		    s->by_new[i].new_va - s->by_new[i - 1].new_va < range_len(&s->by_new[i - 1])) {
			free(s);
			return -EINVAL;
		}
	}
	*out = s;
	return 0;
}

/* gate_closed: no reader can hold the array being replaced, nor any
 * retired one. */
static void moved_publish(struct gs_moved_set *s, bool gate_closed)
{
	struct gs_moved_set *old;

	pthread_mutex_lock(&moved_lock);
	old = (struct gs_moved_set *)atomic_exchange_explicit(&gs_xlat_moved, s,
							       memory_order_acq_rel);
	if (gate_closed) {
		while (moved_retired) {
			struct gs_moved_set *r = moved_retired;

			moved_retired = r->retired_next;
			free(r);
		}
	}
	/* The array just replaced waits one more publication even so: a call
	 * let through the closed gate (nested in one in flight) may still
	 * be reading it. */
	if (old) {
		old->retired_next = moved_retired;
		moved_retired = old;
	}
	pthread_mutex_unlock(&moved_lock);
}

int gs_xlat_set_moved_globals(const struct gs_moved_range *ranges, size_t n)
{
	struct gs_moved_set *s;
	int rc = moved_build(ranges, n, &s);

	if (rc < 0)
		return rc;
	moved_publish(s, true);
	return 0;
}

struct moved_collect {
	struct gs_moved_range *r;
	size_t n, cap;
	int error;
};

static int collect_global(const struct gs_rec *rec, void *arg)
{
	const struct gs_global_rec *g = GS_REC_AS(struct gs_global_rec, GS_KIND_GLOBAL, rec);
	struct moved_collect *c = arg;

	if (!g || g->hdr.app == g->hdr.real)
		return 0;
	if (c->n == c->cap) {
		size_t cap = c->cap ? 2 * c->cap : 64;
		struct gs_moved_range *r = realloc(c->r, cap * sizeof(*r));

		if (!r) {
			c->error = -ENOMEM;
			return 1;
		}
		c->r = r;
		c->cap = cap;
	}
	c->r[c->n++] = (struct gs_moved_range){
		.old_va = g->hdr.app, .new_va = g->hdr.real, .size = g->size,
	};
	return 0;
}

static int moved_from_tracker(struct gs_moved_set **out, size_t *count)
{
	struct moved_collect c = { 0 };
	int rc;

	gs_trk_foreach(GS_KIND_GLOBAL, collect_global, &c);
	rc = c.error ? c.error : moved_build(c.r, c.n, out);
	*count = c.n;
	free(c.r);
	return rc;
}

int gs_xlat_refresh_moved_globals(void)
{
	struct gs_moved_set *s;
	size_t n;
	int rc = moved_from_tracker(&s, &n);

	if (rc < 0) {
		gs_log_at(GS_LOG_WARN, -rc, "moved __device__ globals: the set is unchanged");
		return rc;
	}
	moved_publish(s, true);
	if (n)
		gs_info("%zu __device__ globals moved: their old addresses are translated", n);
	return (int)(n > INT_MAX ? INT_MAX : n);
}

void gs_xlat_moved_globals_unloaded(void)
{
	struct gs_moved_set *s;
	size_t n;
	int rc;

	if (!atomic_load_explicit(&gs_xlat_moved, memory_order_acquire))
		return;
	rc = moved_from_tracker(&s, &n);
	if (rc < 0) {
		/* Stale ranges translate only addresses the application can no
		 * longer use rightly anyway. */
		gs_log_at(GS_LOG_WARN, -rc, "moved __device__ globals: ranges of unloaded code "
			  "stay in the set");
		return;
	}
	moved_publish(s, false);
}

size_t gs_xlat_moved_count(void)
{
	const struct gs_moved_set *s = atomic_load_explicit(&gs_xlat_moved, memory_order_acquire);

	return s ? s->n : 0;
}

/* ---- kernel parameters holding moved addresses ------------------------------------------ */

/* The parameter layout of the launched function: from its function record,
 * or, for a CUkernel passed as a CUfunction, its library's code for the
 * current device. Count as gs_trk_function_params, or -errno. */
static int launch_layout(CUfunction f, struct gs_kparam *kp, unsigned max, size_t *bytes)
{
	int rc = gs_trk_function_params(f, kp, max, bytes);
	int dev;

	if (rc != -ENOENT)
		return rc;
	(void)gs_hook_current_ctx(&dev);
	if (dev < 0)
		return -ENOENT;
	return gs_trk_kernel_params((CUkernel)(void *)f, gs_hook_device_sm(dev), kp, max, bytes);
}

static uint64_t load_u64(const void *p)
{
	uint64_t v;

	/* Parameter values are the caller's, with no alignment promised. */
	memcpy(&v, p, sizeof(v));
	return v;
}

static bool moved_value(const void *p, uint64_t *real)
{
	uint64_t v = load_u64(p);

	*real = gs_xlat_devptr(v);
	return *real != v;
}

static CUresult params_copy(struct gs_kparams_copy *c, void **kernel_params,
			    const struct gs_kparam *kp, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		uint64_t real;

		if (kp[i].size != sizeof(uint64_t) || !kernel_params[i] ||
		    !moved_value(kernel_params[i], &real))
			continue;
		if (!c->params) {
			if (n <= GS_KPARAMS_STACK) {
				c->params = c->params_stack;
				c->values = c->values_stack;
			} else {
				c->params = malloc(n * sizeof(*c->params));
				c->values = malloc(n * sizeof(*c->values));
				if (!c->params || !c->values)
					return CUDA_ERROR_OUT_OF_MEMORY;
			}
			memcpy(c->params, kernel_params, n * sizeof(*c->params));
		}
		c->values[i] = real;
		c->params[i] = &c->values[i];
	}
	return CUDA_SUCCESS;
}

/* The `extra` form: a packed buffer whose size the array gives. */
static CUresult extra_copy(struct gs_kparams_copy *c, void **extra, const struct gs_kparam *kp,
			   unsigned n)
{
	unsigned char *buf = NULL;
	size_t size = 0, len = 0, buf_at = 0;

	for (len = 0; extra[len] != CU_LAUNCH_PARAM_END; len += 2) {
		if (extra[len] == CU_LAUNCH_PARAM_BUFFER_POINTER) {
			buf = extra[len + 1];
			buf_at = len + 1;
		} else if (extra[len] == CU_LAUNCH_PARAM_BUFFER_SIZE && extra[len + 1]) {
			memcpy(&size, extra[len + 1], sizeof(size));
		} else if (extra[len] != CU_LAUNCH_PARAM_BUFFER_SIZE) {
			/* A key this code does not know: its value may not be
			 * one pointer, so the layout of the array is unknown. */
			return CUDA_SUCCESS;
		}
	}
	len++;
	if (!buf)
		return CUDA_SUCCESS;
	for (unsigned i = 0; i < n; i++) {
		uint64_t real;

		if (kp[i].size != sizeof(uint64_t) || kp[i].offset + sizeof(uint64_t) > size ||
		    !moved_value(buf + kp[i].offset, &real))
			continue;
		if (!c->buffer) {
			c->buffer = size <= sizeof(c->buffer_stack) ? c->buffer_stack : malloc(size);
			c->extra = len <= sizeof(c->extra_stack) / sizeof(c->extra_stack[0])
					   ? c->extra_stack
					   : malloc(len * sizeof(*c->extra));
			if (!c->buffer || !c->extra)
				return CUDA_ERROR_OUT_OF_MEMORY;
			memcpy(c->buffer, buf, size);
			memcpy(c->extra, extra, len * sizeof(*c->extra));
			c->extra[buf_at] = c->buffer;
		}
		memcpy(c->buffer + kp[i].offset, &real, sizeof(real));
	}
	return CUDA_SUCCESS;
}

CUresult gs_xlat_kernel_params_begin(struct gs_kparams_copy *c, CUfunction f,
				     void ***kernel_params, void ***extra)
{
	struct gs_kparam stack[GS_KPARAMS_STACK], *kp = stack;
	size_t bytes = 0;
	CUresult rc = CUDA_SUCCESS;
	int n;

	c->params = NULL;
	c->values = NULL;
	c->extra = NULL;
	c->buffer = NULL;
	if (!atomic_load_explicit(&gs_xlat_moved, memory_order_acquire) ||
	    ((!kernel_params || !*kernel_params) && (!extra || !*extra)))
		return CUDA_SUCCESS;
	n = launch_layout(f, kp, GS_KPARAMS_STACK, &bytes);
	if (n > GS_KPARAMS_STACK) {
		kp = malloc((size_t)n * sizeof(*kp));
		if (!kp)
			return CUDA_ERROR_OUT_OF_MEMORY;
		n = launch_layout(f, kp, (unsigned)n, &bytes);
	}
	if (n < 0) {
		/* Without a layout nothing says which values are addresses. */
		gs_debug("launch of %p: no parameter layout (%s); parameters passed as they are",
			 (void *)f, strerror(-n));
		n = 0;
	}
	if (n > 0 && kernel_params && *kernel_params)
		rc = params_copy(c, *kernel_params, kp, (unsigned)n);
	if (rc == CUDA_SUCCESS && n > 0 && extra && *extra)
		rc = extra_copy(c, *extra, kp, (unsigned)n);
	if (kp != stack)
		free(kp);
	if (rc != CUDA_SUCCESS) {
		gs_xlat_kernel_params_end(c);
		return rc;
	}
	if (c->params)
		*kernel_params = c->params;
	if (c->extra)
		*extra = c->extra;
	return CUDA_SUCCESS;
}

void gs_xlat_kernel_params_end(struct gs_kparams_copy *c)
{
	if (c->params != c->params_stack)
		free(c->params);
	if (c->values != c->values_stack)
		free(c->values);
	if (c->extra != c->extra_stack)
		free(c->extra);
	if (c->buffer != c->buffer_stack)
		free(c->buffer);
	c->params = NULL;
	c->values = NULL;
	c->extra = NULL;
	c->buffer = NULL;
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

/* ---- copies ------------------------------------------------------------------------ */

/* The arrays a hook copies live on the stack when they are this small:
 * a few launch attributes or batch operations. */
#define COPY_STACK_BYTES 512

struct copy {
	void *p;
	/* Aligned for any of the driver's structures. */
	_Alignas(max_align_t) unsigned char stack[COPY_STACK_BYTES];
};

/* n elements of size bytes from src into c (c->p), or NULL with n == 0. */
static CUresult copy_in(struct copy *c, const void *src, size_t n, size_t size)
{
	c->p = NULL;
	if (!src || n == 0)
		return CUDA_SUCCESS;
	if (n > SIZE_MAX / size)
		return CUDA_ERROR_INVALID_VALUE;
	c->p = n * size <= sizeof(c->stack) ? c->stack : malloc(n * size);
	if (!c->p)
		return CUDA_ERROR_OUT_OF_MEMORY;
	memcpy(c->p, src, n * size);
	return CUDA_SUCCESS;
}

static void copy_free(struct copy *c)
{
	if (c->p != c->stack)
		free(c->p);
}

/* ---- hand-written translations (annotations.txt: xlat-hook) ------------------------- */

CUresult gs_xlat_hook_cuDeviceGetCount(gs_fn_cuDeviceGetCount *fn, bool ptds, int *count)
{
	CUresult rc = fn(count);
	int n = gs_devmap_count(gs_trk_devmap());

	(void)ptds;
	/* Once thaw has narrowed the map to the devices the application
	 * enumerated, that is what it keeps seeing, whatever the new machine
	 * has; an unnarrowed map says nothing. */
	if (rc == CUDA_SUCCESS && count && n < GS_MAX_DEVICES)
		*count = n;
	return rc;
}

/* A launch configuration with its stream and event attributes mapped; the
 * attribute array copied into *attrs when it has any. */
static CUresult launch_config_to_real(const CUlaunchConfig *in, CUlaunchConfig *out,
				      struct copy *attrs)
{
	CUresult rc;

	*out = *in;
	out->hStream = gs_xlat_stream(in->hStream);
	rc = copy_in(attrs, in->attrs, in->numAttrs, sizeof(*in->attrs));
	if (rc != CUDA_SUCCESS || !attrs->p)
		return rc;
	out->attrs = attrs->p;
	for (unsigned i = 0; i < in->numAttrs; i++) {
		CUlaunchAttribute *a = &out->attrs[i];

		if (a->id == CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_EVENT)
			a->value.programmaticEvent.event =
				gs_xlat_event(a->value.programmaticEvent.event);
		else if (a->id == CU_LAUNCH_ATTRIBUTE_LAUNCH_COMPLETION_EVENT)
			a->value.launchCompletionEvent.event =
				gs_xlat_event(a->value.launchCompletionEvent.event);
	}
	return CUDA_SUCCESS;
}

CUresult gs_xlat_hook_cuLaunchKernelEx(gs_fn_cuLaunchKernelEx *fn, bool ptds,
				       const CUlaunchConfig *config, CUfunction f,
				       void **kernelParams, void **extra)
{
	struct copy attrs = { 0 };
	struct gs_kparams_copy kp;
	CUlaunchConfig cfg;
	CUresult rc;

	(void)ptds;
	/* The layout is looked up by the app handle, before f is mapped. */
	rc = gs_xlat_kernel_params_begin(&kp, f, &kernelParams, &extra);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (config) {
		rc = launch_config_to_real(config, &cfg, &attrs);
		if (rc != CUDA_SUCCESS)
			goto out;
		config = &cfg;
	}
	rc = fn(config, gs_xlat_function(f), kernelParams, extra);
	copy_free(&attrs);
out:
	gs_xlat_kernel_params_end(&kp);
	return rc;
}

/* The occupancy queries take a launch configuration too. */
#define OCCUPANCY_HOOK(name)                                                          \
	CUresult gs_xlat_hook_##name(gs_fn_##name *fn, bool ptds, int *out, CUfunction func, \
				     const CUlaunchConfig *config)                    \
	{                                                                             \
		struct copy attrs = { 0 };                                            \
		CUlaunchConfig cfg;                                                   \
		CUresult rc;                                                          \
                                                                                      \
		(void)ptds;                                                           \
		if (config) {                                                         \
			rc = launch_config_to_real(config, &cfg, &attrs);             \
			if (rc != CUDA_SUCCESS)                                       \
				return rc;                                            \
			config = &cfg;                                                \
		}                                                                     \
		rc = fn(out, gs_xlat_function(func), config);                         \
		copy_free(&attrs);                                                    \
		return rc;                                                            \
	}
OCCUPANCY_HOOK(cuOccupancyMaxActiveClusters)
OCCUPANCY_HOOK(cuOccupancyMaxPotentialClusterSize)

/* The driver calls a stream callback with its own stream handle: the
 * application's callback gets the app handle. */
struct stream_callback {
	CUstreamCallback fn;
	void *user;
};

static void CUDA_CB stream_callback_tramp(CUstream real, CUresult status, void *arg)
{
	struct stream_callback cb = *(struct stream_callback *)arg;

	free(arg);
	cb.fn(gs_xlat_stream_app(real), status, cb.user);
}

CUresult gs_xlat_hook_cuStreamAddCallback(gs_fn_cuStreamAddCallback *fn, bool ptds,
					  CUstream hStream, CUstreamCallback callback,
					  void *userData, unsigned int flags)
{
	struct stream_callback *cb;
	CUresult rc;

	(void)ptds;
	if (!callback) /* the driver's own error */
		return fn(gs_xlat_stream(hStream), callback, userData, flags);
	cb = malloc(sizeof(*cb));
	if (!cb)
		return CUDA_ERROR_OUT_OF_MEMORY;
	cb->fn = callback;
	cb->user = userData;
	rc = fn(gs_xlat_stream(hStream), stream_callback_tramp, cb, flags);
	if (rc != CUDA_SUCCESS)
		free(cb);
	return rc;
}

/* Range attributes holding device ordinals (CU_DEVICE_CPU and
 * CU_DEVICE_INVALID stay as they are). type_of: the attribute's location
 * type for the *_ID attributes, fetched from the driver. */
static void range_attr_to_app(void *data, size_t size, CUmem_range_attribute attr,
			      CUdeviceptr ptr, size_t count)
{
	int *v = data;
	int type = -1;

	if (!data || size < sizeof(int))
		return;
	switch (attr) {
	case CU_MEM_RANGE_ATTRIBUTE_PREFERRED_LOCATION:
	case CU_MEM_RANGE_ATTRIBUTE_LAST_PREFETCH_LOCATION:
		*v = gs_xlat_device_to_app(*v);
		break;
	case CU_MEM_RANGE_ATTRIBUTE_ACCESSED_BY:
		for (size_t i = 0; i < size / sizeof(int); i++)
			v[i] = gs_xlat_device_to_app(v[i]);
		break;
	case CU_MEM_RANGE_ATTRIBUTE_PREFERRED_LOCATION_ID:
	case CU_MEM_RANGE_ATTRIBUTE_LAST_PREFETCH_LOCATION_ID:
		/* An id is an ordinal only for a device location. */
		if (gs_real.cuMemRangeGetAttribute &&
		    gs_real.cuMemRangeGetAttribute(
			    &type, sizeof(type),
			    attr == CU_MEM_RANGE_ATTRIBUTE_PREFERRED_LOCATION_ID
				    ? CU_MEM_RANGE_ATTRIBUTE_PREFERRED_LOCATION_TYPE
				    : CU_MEM_RANGE_ATTRIBUTE_LAST_PREFETCH_LOCATION_TYPE,
			    ptr, count) == CUDA_SUCCESS &&
		    type == CU_MEM_LOCATION_TYPE_DEVICE)
			*v = gs_xlat_device_to_app(*v);
		break;
	default:
		break;
	}
}

CUresult gs_xlat_hook_cuMemRangeGetAttribute(gs_fn_cuMemRangeGetAttribute *fn, bool ptds,
					     void *data, size_t dataSize,
					     CUmem_range_attribute attribute, CUdeviceptr devPtr,
					     size_t count)
{
	CUresult rc;

	(void)ptds;
	devPtr = gs_xlat_devptr(devPtr);
	rc = fn(data, dataSize, attribute, devPtr, count);
	if (rc == CUDA_SUCCESS)
		range_attr_to_app(data, dataSize, attribute, devPtr, count);
	return rc;
}

CUresult gs_xlat_hook_cuMemRangeGetAttributes(gs_fn_cuMemRangeGetAttributes *fn, bool ptds,
					      void **data, size_t *dataSizes,
					      CUmem_range_attribute *attributes,
					      size_t numAttributes, CUdeviceptr devPtr, size_t count)
{
	CUresult rc;

	(void)ptds;
	devPtr = gs_xlat_devptr(devPtr);
	rc = fn(data, dataSizes, attributes, numAttributes, devPtr, count);
	if (rc != CUDA_SUCCESS || !data || !dataSizes || !attributes)
		return rc;
	for (size_t i = 0; i < numAttributes; i++)
		range_attr_to_app(data[i], dataSizes[i], attributes[i], devPtr, count);
	return rc;
}

CUresult gs_xlat_hook_cuMemcpy3DBatchAsync_v2(gs_fn_cuMemcpy3DBatchAsync_v2 *fn, bool ptds,
					      size_t numOps, CUDA_MEMCPY3D_BATCH_OP *opList,
					      unsigned long long flags, CUstream hStream)
{
	struct copy ops;
	CUDA_MEMCPY3D_BATCH_OP *op;
	CUresult rc;

	(void)ptds;
	rc = copy_in(&ops, opList, numOps, sizeof(*opList));
	if (rc != CUDA_SUCCESS)
		return rc;
	op = ops.p ? ops.p : opList;
	for (size_t i = 0; ops.p && i < numOps; i++) {
		if (op[i].src.type == CU_MEMCPY_OPERAND_TYPE_POINTER) {
			gs_xlat_memloc_to_real(&op[i].src.op.ptr.locHint);
			op[i].src.op.ptr.ptr = gs_xlat_devptr(op[i].src.op.ptr.ptr);
		}
		if (op[i].dst.type == CU_MEMCPY_OPERAND_TYPE_POINTER) {
			gs_xlat_memloc_to_real(&op[i].dst.op.ptr.locHint);
			op[i].dst.op.ptr.ptr = gs_xlat_devptr(op[i].dst.op.ptr.ptr);
		}
	}
	rc = fn(numOps, op, flags, gs_xlat_stream(hStream));
	copy_free(&ops);
	return rc;
}

/* An allocation node's pool location and access descriptors (the same
 * members in both versions of its parameters), mapped in place; the
 * descriptor array is copied into descs. */
static CUresult mem_alloc_to_real(CUmemLocation *pool, const CUmemAccessDesc **access,
				  size_t count, struct copy *descs)
{
	CUmemAccessDesc *d;
	CUresult rc;

	gs_xlat_memloc_to_real(pool);
	rc = copy_in(descs, *access, count, sizeof(**access));
	if (rc != CUDA_SUCCESS || !descs->p)
		return rc;
	d = descs->p;
	for (size_t i = 0; i < count; i++)
		gs_xlat_memloc_to_real(&d[i].location);
	*access = d;
	return CUDA_SUCCESS;
}

CUresult gs_xlat_hook_cuGraphAddMemAllocNode(gs_fn_cuGraphAddMemAllocNode *fn, bool ptds,
					     CUgraphNode *phGraphNode, CUgraph hGraph,
					     const CUgraphNode *dependencies, size_t numDependencies,
					     CUDA_MEM_ALLOC_NODE_PARAMS *nodeParams)
{
	struct copy descs = { 0 };
	CUDA_MEM_ALLOC_NODE_PARAMS p;
	CUresult rc;

	(void)ptds;
	if (!nodeParams)
		return fn(phGraphNode, hGraph, dependencies, numDependencies, nodeParams);
	p = *nodeParams;
	rc = mem_alloc_to_real(&p.poolProps.location, &p.accessDescs, p.accessDescCount, &descs);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = fn(phGraphNode, hGraph, dependencies, numDependencies, &p);
	/* dptr is the one output; addresses need no translation. */
	if (rc == CUDA_SUCCESS)
		nodeParams->dptr = p.dptr;
	copy_free(&descs);
	return rc;
}

CUresult gs_xlat_hook_cuGraphMemAllocNodeGetParams(gs_fn_cuGraphMemAllocNodeGetParams *fn,
						   bool ptds, CUgraphNode hNode,
						   CUDA_MEM_ALLOC_NODE_PARAMS *params_out)
{
	CUresult rc = fn(hNode, params_out);

	(void)ptds;
	if (rc != CUDA_SUCCESS || !params_out)
		return rc;
	gs_xlat_memloc_to_app(&params_out->poolProps.location);
	/* The descriptors are the driver's memory: left as they are, which is
	 * only wrong where a device location's ordinal changed. */
	for (size_t i = 0; params_out->accessDescs && i < params_out->accessDescCount; i++) {
		const CUmemLocation *loc = &params_out->accessDescs[i].location;

		if (loc->type == CU_MEM_LOCATION_TYPE_DEVICE &&
		    gs_xlat_device_to_app(loc->id) != loc->id) {
			gs_xlat_unsupported(GS_SYM_cuGraphMemAllocNodeGetParams);
			break;
		}
	}
	return rc;
}

/* Generic node parameters, copied from *app into *p with the member of the
 * union the type selects mapped (descs: a copied descriptor array). */
static CUresult node_params_to_real(const CUgraphNodeParams *app, CUgraphNodeParams *p,
				    struct copy *descs)
{
	*p = *app;
	descs->p = NULL;
	switch (p->type) {
	case CU_GRAPH_NODE_TYPE_KERNEL:
		p->kernel.func = gs_xlat_function(p->kernel.func);
		p->kernel.kern = gs_xlat_kernel(p->kernel.kern);
		p->kernel.ctx = gs_xlat_ctx(p->kernel.ctx);
		break;
	case CU_GRAPH_NODE_TYPE_MEMCPY:
		p->memcpy.copyCtx = gs_xlat_ctx(p->memcpy.copyCtx);
		p->memcpy.copyParams.srcDevice = gs_xlat_devptr(p->memcpy.copyParams.srcDevice);
		p->memcpy.copyParams.dstDevice = gs_xlat_devptr(p->memcpy.copyParams.dstDevice);
		break;
	case CU_GRAPH_NODE_TYPE_MEMSET:
		p->memset.ctx = gs_xlat_ctx(p->memset.ctx);
		p->memset.dst = gs_xlat_devptr(p->memset.dst);
		break;
	case CU_GRAPH_NODE_TYPE_WAIT_EVENT:
		p->eventWait.event = gs_xlat_event(p->eventWait.event);
		break;
	case CU_GRAPH_NODE_TYPE_EVENT_RECORD:
		p->eventRecord.event = gs_xlat_event(p->eventRecord.event);
		break;
	case CU_GRAPH_NODE_TYPE_MEM_ALLOC:
		return mem_alloc_to_real(&p->alloc.poolProps.location, &p->alloc.accessDescs,
					 p->alloc.accessDescCount, descs);
	case CU_GRAPH_NODE_TYPE_BATCH_MEM_OP:
		p->memOp.ctx = gs_xlat_ctx(p->memOp.ctx);
		break;
	case CU_GRAPH_NODE_TYPE_CONDITIONAL:
		p->conditional.ctx = gs_xlat_ctx(p->conditional.ctx);
		break;
	default:
		/* host, child graph, empty, external semaphores, free: no
		 * handle the shim maps */
		break;
	}
	return CUDA_SUCCESS;
}

/* After the call: what the driver wrote into the parameters (an
 * allocation node's address) goes back to the application's copy. */
static void node_params_done(CUgraphNodeParams *app, const CUgraphNodeParams *p,
			     struct copy *descs, CUresult rc)
{
	if (rc == CUDA_SUCCESS && p->type == CU_GRAPH_NODE_TYPE_MEM_ALLOC)
		app->alloc.dptr = p->alloc.dptr;
	copy_free(descs);
}

CUresult gs_xlat_hook_cuGraphAddNode_v2(gs_fn_cuGraphAddNode_v2 *fn, bool ptds,
					CUgraphNode *phGraphNode, CUgraph hGraph,
					const CUgraphNode *dependencies,
					const CUgraphEdgeData *dependencyData,
					size_t numDependencies, CUgraphNodeParams *nodeParams)
{
	struct copy descs;
	CUgraphNodeParams p;
	CUresult rc;

	(void)ptds;
	if (!nodeParams)
		return fn(phGraphNode, hGraph, dependencies, dependencyData, numDependencies,
			  nodeParams);
	rc = node_params_to_real(nodeParams, &p, &descs);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = fn(phGraphNode, hGraph, dependencies, dependencyData, numDependencies, &p);
	node_params_done(nodeParams, &p, &descs, rc);
	return rc;
}

CUresult gs_xlat_hook_cuGraphNodeSetParams(gs_fn_cuGraphNodeSetParams *fn, bool ptds,
					   CUgraphNode hNode, CUgraphNodeParams *nodeParams)
{
	struct copy descs;
	CUgraphNodeParams p;
	CUresult rc;

	(void)ptds;
	if (!nodeParams)
		return fn(hNode, nodeParams);
	rc = node_params_to_real(nodeParams, &p, &descs);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = fn(hNode, &p);
	node_params_done(nodeParams, &p, &descs, rc);
	return rc;
}

CUresult gs_xlat_hook_cuGraphExecNodeSetParams(gs_fn_cuGraphExecNodeSetParams *fn, bool ptds,
					       CUgraphExec hGraphExec, CUgraphNode hNode,
					       CUgraphNodeParams *nodeParams)
{
	struct copy descs;
	CUgraphNodeParams p;
	CUresult rc;

	(void)ptds;
	if (!nodeParams)
		return fn(hGraphExec, hNode, nodeParams);
	rc = node_params_to_real(nodeParams, &p, &descs);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = fn(hGraphExec, hNode, &p);
	node_params_done(nodeParams, &p, &descs, rc);
	return rc;
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
