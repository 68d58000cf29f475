/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The arena's address space and spans (arena_internal.h): the free granule
 * extents of the window, the page map, and the life of a span from backing
 * to retiring, spares included.
 *
 * Apart from the allocator of arena_core.c because this is where every
 * driver call of the steady state is made (a span created or retired) and
 * where address space is handed out and given back; the allocator above it
 * only cuts spans into allocations.
 */
#include "arena_internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- free address space ------------------------------------------------- */

/*
 * Free extents are the gaps between spans, so there are at most nspans + 1 of
 * them. Growing the array before a span is created (arena_ext_make_room)
 * means returning address space (ext_give) never allocates and never fails:
 * a free cannot run out of memory.
 */
bool arena_ext_make_room(struct gs_arena *a)
{
	size_t want = a->nspans + 2;

	if (a->ext_cap >= want)
		return true;
	size_t cap = a->ext_cap ? a->ext_cap * 2 : 16;
	while (cap < want)
		cap *= 2;
	struct extent *e = realloc(a->ext, cap * sizeof(*e));
	if (!e)
		return false;
	a->ext = e;
	a->ext_cap = cap;
	return true;
}

static bool ext_take(struct gs_arena *a, uint64_t len, uint64_t *start)
{
	for (size_t i = 0; i < a->next; i++) {
		struct extent *e = &a->ext[i];

		if (e->len < len)
			continue;
		*start = e->start;
		e->start += len;
		e->len -= len;
		if (e->len == 0) {
			memmove(e, e + 1, (a->next - i - 1) * sizeof(*e));
			a->next--;
		}
		return true;
	}
	return false;
}

static void ext_give(struct gs_arena *a, uint64_t start, uint64_t len)
{
	size_t lo = 0, hi = a->next;

	/* First extent starting after `start`. */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (a->ext[mid].start < start)
			lo = mid + 1;
		else
			hi = mid;
	}
	bool join_prev = lo > 0 && a->ext[lo - 1].start + a->ext[lo - 1].len == start;
	bool join_next = lo < a->next && start + len == a->ext[lo].start;

	if (join_prev && join_next) {
		a->ext[lo - 1].len += len + a->ext[lo].len;
		memmove(&a->ext[lo], &a->ext[lo + 1], (a->next - lo - 1) * sizeof(*a->ext));
		a->next--;
	} else if (join_prev) {
		a->ext[lo - 1].len += len;
	} else if (join_next) {
		a->ext[lo].start = start;
		a->ext[lo].len += len;
	} else {
		memmove(&a->ext[lo + 1], &a->ext[lo], (a->next - lo) * sizeof(*a->ext));
		a->ext[lo] = (struct extent){ .start = start, .len = len };
		a->next++;
	}
}

/* ---- page map ------------------------------------------------------------- */

static void pagemap_set(struct gs_arena *a, struct span *s, struct span *value)
{
	uint64_t first = (s->va - a->base) >> a->gran_shift;
	uint64_t n = s->size >> a->gran_shift;

	for (uint64_t i = 0; i < n; i++)
		a->pagemap[first + i] = value;
}

/* ---- spans ---------------------------------------------------------------- */

/* Unmap and release the physical memory behind s (not the address space).
 * Errors are reported, not returned: the caller's operation (a free) has
 * already succeeded for the application. */
void arena_span_unback(struct gs_arena *a, struct span *s)
{
	if (!s->handle)
		return;
	CUresult rc = a->ops.unmap(a->opaque, s->va, s->size);
	if (rc != CUDA_SUCCESS)
		report(a, "unmap", s->va, rc);
	rc = a->ops.release(a->opaque, s->handle);
	if (rc != CUDA_SUCCESS)
		report(a, "release", s->va, rc);
	s->handle = 0;
	a->bytes_backed -= s->size;
}

/* Back s (va, size set) with new physical memory on a->device (or memory
 * `adopt` hands over), mapped and accessible to a->access. On failure
 * nothing is left behind. */
CUresult arena_span_back(struct gs_arena *a, struct span *s, gs_arena_adopt_fn *adopt, void *arg)
{
	uint64_t handle = 0, real = adopt && a->ops.adopt ? adopt(arg, s->va, s->size) : 0;
	CUresult rc, undo;

	if (real) {
		a->ops.adopt(a->opaque, a->device, s->size, real, &handle);
	} else {
		rc = a->ops.create(a->opaque, a->device, s->size, &handle);
		if (rc != CUDA_SUCCESS)
			return rc;
	}
	rc = a->ops.map(a->opaque, s->va, s->size, handle);
	if (rc != CUDA_SUCCESS)
		goto release;
	rc = a->ops.set_access(a->opaque, s->va, s->size, a->access, a->naccess, true);
	if (rc != CUDA_SUCCESS)
		goto unmap;
	s->handle = handle;
	s->device = a->device;
	a->bytes_backed += s->size;
	return CUDA_SUCCESS;

unmap:
	undo = a->ops.unmap(a->opaque, s->va, s->size);
	if (undo != CUDA_SUCCESS)
		report(a, "unmap", s->va, undo);
release:
	undo = a->ops.release(a->opaque, handle);
	if (undo != CUDA_SUCCESS)
		report(a, "release", s->va, undo);
	return rc;
}

/* Free the span's address space and record. */
void arena_span_destroy(struct gs_arena *a, struct span *s)
{
	arena_span_unback(a, s);
	pagemap_set(a, s, NULL);
	ext_give(a, (s->va - a->base) >> a->gran_shift, s->size >> a->gran_shift);
	s->prev->next = s->next;
	s->next->prev = s->prev;
	a->nspans--;
	free(s->used);
	free(s->slots);
	free(s);
}

void arena_spare_drop_all(struct gs_arena *a)
{
	while (a->spare) {
		struct span *s = a->spare;
		list_remove(&a->spare, s);
		a->nspare--;
		arena_span_destroy(a, s);
	}
}

/*
 * An empty span: an emptied slab is kept as a spare if there is room, else
 * the span goes back to the driver. Only slabs: small allocations are what
 * programs allocate and free in loops, and the driver too keeps the pages it
 * packs them into, while a freed large allocation shows up at once in its
 * cuMemGetInfo. (A spare may still serve a one-granule allocation.)
 */
void arena_span_retire(struct gs_arena *a, struct span *s)
{
	bool keep = s->kind == SPAN_SLAB && a->nspare < a->max_spare && s->handle;

	free(s->used);
	free(s->slots);
	s->used = NULL;
	s->slots = NULL;
	if (keep) {
		s->kind = SPAN_SPARE;
		list_push(&a->spare, s);
		a->nspare++;
		return;
	}
	arena_span_destroy(a, s);
}

/* A backed span of `ngran` granules, a spare when one fits. */
CUresult arena_span_new(struct gs_arena *a, uint64_t ngran, enum span_kind kind,
			struct span **out)
{
	if (ngran == 1 && a->spare) {
		struct span *s = a->spare;
		list_remove(&a->spare, s);
		a->nspare--;
		s->kind = kind;
		*out = s;
		return CUDA_SUCCESS;
	}
	if (!arena_ext_make_room(a))
		return CUDA_ERROR_OUT_OF_MEMORY;
	struct span *s = calloc(1, sizeof(*s));
	if (!s)
		return CUDA_ERROR_OUT_OF_MEMORY;

	uint64_t start;
	if (!ext_take(a, ngran, &start)) {
		/* Spares may be all that stands between two free runs. */
		if (!a->spare)
			goto oom;
		arena_spare_drop_all(a);
		if (!ext_take(a, ngran, &start))
			goto oom;
	}
	s->va = a->base + (start << a->gran_shift);
	s->size = ngran << a->gran_shift;
	s->kind = kind;

	CUresult rc = arena_span_back(a, s, NULL, NULL);
	if (rc == CUDA_ERROR_OUT_OF_MEMORY && a->spare) {
		/* The spares' physical memory may be exactly what is missing. */
		arena_spare_drop_all(a);
		rc = arena_span_back(a, s, NULL, NULL);
	}
	if (rc != CUDA_SUCCESS) {
		ext_give(a, start, ngran);
		free(s);
		return rc;
	}
	s->prev = a->all.prev;
	s->next = &a->all;
	a->all.prev->next = s;
	a->all.prev = s;
	a->nspans++;
	pagemap_set(a, s, s);
	*out = s;
	return CUDA_SUCCESS;

oom:
	free(s);
	return CUDA_ERROR_OUT_OF_MEMORY;
}
