/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Device addresses of moved __device__ globals (translate.h): the set of
 * moved ranges, built from the tracker's global records at thaw and
 * published lock-free to the readers, and the rewriting of kernel
 * parameters that hold such an address.
 *
 * Apart from the handle lookups of translate.c because it is a different
 * kind of map: address ranges searched by value rather than handles looked
 * up one by one, with its own publication and reclamation rules. Before any
 * global moved every reader stops at one load of gs_xlat_moved.
 */
#define GS_LOG_SUBSYS "shim"
#include "translate.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "track.h"

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
