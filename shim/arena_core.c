/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The arena allocator core: address-space bookkeeping for one device window.
 * No driver calls except through gs_arena_ops (see arena.h). What spans,
 * slabs and spares are, and the locking: arena_internal.h.
 *
 * This file creates and destroys an arena and serves allocations: size
 * classes, slabs, allocating, freeing and looking up. The spans it cuts
 * them from are made and retired in arena_core_span.c; peer access,
 * detach/attach and the walks are in arena_core_access.c.
 */
#include "arena_internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Process-wide, never reused, shared by every arena (CU_POINTER_ATTRIBUTE_BUFFER_ID). */
static _Atomic uint64_t next_buffer_id = GS_ARENA_BUFFER_ID_BASE;

unsigned gs_arena_size_classes(uint64_t granularity, uint64_t *sizes, unsigned max)
{
	unsigned n = 0;

	/* Powers of two and the midpoints between them: internal waste stays
	 * under a third. Every class is a multiple of GS_ARENA_MIN_ALIGN, so
	 * every slot of a granule-aligned slab is aligned to at least that
	 * (768 would not be, hence the midpoints start at 1536). Classes stop
	 * at half a granule: beyond it a slab holds a single slot and the
	 * large path does the same with less bookkeeping. */
	for (uint64_t p = GS_ARENA_MIN_ALIGN; p <= granularity / 2; p *= 2) {
		if (n < max)
			sizes[n] = p;
		n++;
		if (p >= 2 * GS_ARENA_MIN_ALIGN && p + p / 2 <= granularity / 2) {
			if (n < max)
				sizes[n] = p + p / 2;
			n++;
		}
	}
	return n < max ? n : max;
}

/* ---- slabs ----------------------------------------------------------------- */

static unsigned class_of(const struct gs_arena *a, uint64_t size)
{
	for (unsigned i = 0; i < a->nclasses; i++)
		if (size <= a->class_size[i])
			return i;
	return a->nclasses;
}

static CUresult slab_new(struct gs_arena *a, unsigned cls, struct span **out)
{
	unsigned nslots = (unsigned)(a->gran / a->class_size[cls]);
	unsigned nwords = (nslots + 63) / 64;
	/* The records first: failing here costs no driver call. */
	uint64_t *used = calloc(nwords, sizeof(*used));
	struct slot *slots = calloc(nslots, sizeof(*slots));
	struct span *s;
	CUresult rc;

	if (!used || !slots) {
		rc = CUDA_ERROR_OUT_OF_MEMORY;
		goto fail;
	}
	rc = arena_span_new(a, 1, SPAN_SLAB, &s);
	if (rc != CUDA_SUCCESS)
		goto fail;
	s->cls = cls;
	s->nslots = nslots;
	s->nused = 0;
	s->scan = 0;
	s->used = used;
	s->slots = slots;
	list_push(&a->partial[cls], s);
	*out = s;
	return CUDA_SUCCESS;

fail:
	free(used);
	free(slots);
	return rc;
}

static unsigned slab_take_slot(struct span *s)
{
	unsigned nwords = (s->nslots + 63) / 64;

	for (unsigned w = s->scan; w < nwords; w++) {
		if (s->used[w] == UINT64_MAX)
			continue;
		unsigned bit = (unsigned)__builtin_ctzll(~s->used[w]);
		unsigned idx = w * 64 + bit;
		if (idx >= s->nslots)
			break;
		s->used[w] |= UINT64_C(1) << bit;
		s->scan = w;
		return idx;
	}
	/* Only reached with a corrupt nused: callers take slots from partial
	 * slabs only. */
	abort();
}

static void alloc_record(struct gs_arena *a, struct slot *slot, uint64_t size, CUcontext ctx)
{
	slot->size = size;
	slot->ctx = ctx;
	slot->buffer_id = atomic_fetch_add_explicit(&next_buffer_id, 1, memory_order_relaxed);
	a->nallocs++;
	a->bytes_requested += size;
}

static void alloc_unrecord(struct gs_arena *a, struct slot *slot)
{
	a->nallocs--;
	a->bytes_requested -= slot->size;
	memset(slot, 0, sizeof(*slot));
}

static void slab_free_slot(struct gs_arena *a, struct span *s, unsigned idx)
{
	alloc_unrecord(a, &s->slots[idx]);
	s->used[idx / 64] &= ~(UINT64_C(1) << (idx % 64));
	if (idx / 64 < s->scan)
		s->scan = idx / 64;
	if (s->nused-- == s->nslots)
		list_push(&a->partial[s->cls], s);
	if (s->nused == 0) {
		list_remove(&a->partial[s->cls], s);
		arena_span_retire(a, s);
	}
}

static void large_free(struct gs_arena *a, struct span *s)
{
	alloc_unrecord(a, &s->large);
	arena_span_retire(a, s);
}

void arena_fill_allocation(const struct gs_arena *a, const struct span *s, uint64_t va,
			   const struct slot *slot, struct gs_arena_allocation *out)
{
	out->va = va;
	out->size = slot->size;
	out->ctx = slot->ctx;
	out->buffer_id = slot->buffer_id;
	out->footprint = s->kind == SPAN_SLAB ? a->class_size[s->cls] : s->size;
	out->chunk_va = s->va;
	out->chunk_size = s->size;
}

/* ---- public ---------------------------------------------------------------- */

CUresult gs_arena_create(const struct gs_arena_config *cfg, struct gs_arena **out)
{
	const struct gs_arena_ops *ops = cfg->ops;

	if (!ops || !ops->reserve || !ops->unreserve || !ops->create || !ops->release ||
	    !ops->map || !ops->unmap || !ops->set_access)
		return CUDA_ERROR_INVALID_VALUE;
	if (cfg->granularity < 2 * GS_ARENA_MIN_ALIGN ||
	    (cfg->granularity & (cfg->granularity - 1)) ||
	    cfg->size == 0 || cfg->size % cfg->granularity || cfg->base % cfg->granularity ||
	    cfg->base > UINT64_MAX - cfg->size)
		return CUDA_ERROR_INVALID_VALUE;

	struct gs_arena *a = calloc(1, sizeof(*a));
	if (!a)
		return CUDA_ERROR_OUT_OF_MEMORY;
	a->ops = *ops;
	a->opaque = cfg->opaque;
	a->gran = cfg->granularity;
	a->gran_shift = (unsigned)__builtin_ctzll(cfg->granularity);
	a->size = cfg->size;
	a->ngran = cfg->size >> a->gran_shift;
	a->device = cfg->device;
	a->max_spare = cfg->max_spare;
	a->all.prev = a->all.next = &a->all;
	a->nclasses = gs_arena_size_classes(a->gran, a->class_size, MAX_CLASSES);
	pthread_mutex_init(&a->lock, NULL);

	CUresult rc = CUDA_ERROR_OUT_OF_MEMORY;
	a->access = malloc(sizeof(*a->access));
	if (!a->access || !arena_ext_make_room(a))
		goto fail;
	a->access[0] = a->device;
	a->naccess = 1;

	/* One pointer per granule; pages are only touched where spans live. */
	a->pagemap_bytes = a->ngran * sizeof(*a->pagemap);
	a->pagemap = mmap(NULL, a->pagemap_bytes, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (a->pagemap == MAP_FAILED) {
		a->pagemap = NULL;
		goto fail;
	}

	uint64_t va = 0;
	rc = ops->reserve(cfg->opaque, cfg->base, cfg->size, &va);
	if (rc != CUDA_SUCCESS)
		goto fail;
	if (va % a->gran || (cfg->exact_base && va != cfg->base)) {
		rc = ops->unreserve(cfg->opaque, va, cfg->size);
		if (rc != CUDA_SUCCESS)
			report(a, "unreserve", va, rc);
		rc = CUDA_ERROR_ALREADY_MAPPED;
		goto fail;
	}
	a->base = va;
	a->ext[0] = (struct extent){ .start = 0, .len = a->ngran };
	a->next = 1;
	a->attached = true;
	*out = a;
	return CUDA_SUCCESS;

fail:
	if (a->pagemap)
		munmap(a->pagemap, a->pagemap_bytes);
	free(a->access);
	free(a->ext);
	pthread_mutex_destroy(&a->lock);
	free(a);
	return rc;
}

void gs_arena_destroy(struct gs_arena *a)
{
	if (!a)
		return;
	pthread_mutex_lock(&a->lock);
	while (a->all.next != &a->all)
		arena_span_destroy(a, a->all.next);
	if (a->attached) {
		CUresult rc = a->ops.unreserve(a->opaque, a->base, a->size);
		if (rc != CUDA_SUCCESS)
			report(a, "unreserve", a->base, rc);
	}
	pthread_mutex_unlock(&a->lock);
	pthread_mutex_destroy(&a->lock);
	munmap(a->pagemap, a->pagemap_bytes);
	free(a->ext);
	free(a->peers);
	free(a->access);
	free(a);
}

void gs_arena_window(const struct gs_arena *a, uint64_t *base, uint64_t *size)
{
	*base = a->base;
	*size = a->size;
}

bool gs_arena_in_window(const struct gs_arena *a, uint64_t ptr)
{
	return ptr >= a->base && ptr - a->base < a->size;
}

CUresult gs_arena_alloc(struct gs_arena *a, uint64_t size, CUcontext ctx,
			struct gs_arena_allocation *out)
{
	struct span *s;
	CUresult rc;

	if (size == 0)
		return CUDA_ERROR_INVALID_VALUE;
	/* Larger than the window can never fit; also keeps the round-up
	 * below from overflowing. */
	if (size > a->size)
		return CUDA_ERROR_OUT_OF_MEMORY;

	pthread_mutex_lock(&a->lock);
	if (!a->attached) {
		/* Between a detach and an attach the gate keeps the
		 * application out; only a bug gets here. */
		rc = CUDA_ERROR_NOT_PERMITTED;
		goto out;
	}
	unsigned cls = class_of(a, size);
	if (cls < a->nclasses) {
		s = a->partial[cls];
		if (!s) {
			rc = slab_new(a, cls, &s);
			if (rc != CUDA_SUCCESS)
				goto out;
		}
		unsigned idx = slab_take_slot(s);
		if (++s->nused == s->nslots)
			list_remove(&a->partial[cls], s);
		alloc_record(a, &s->slots[idx], size, ctx);
		arena_fill_allocation(a, s, s->va + (uint64_t)idx * a->class_size[cls],
				      &s->slots[idx], out);
		rc = CUDA_SUCCESS;
		goto out;
	}

	uint64_t ngran = (size + a->gran - 1) >> a->gran_shift;
	rc = arena_span_new(a, ngran, SPAN_LARGE, &s);
	if (rc != CUDA_SUCCESS)
		goto out;
	alloc_record(a, &s->large, size, ctx);
	arena_fill_allocation(a, s, s->va, &s->large, out);
out:
	pthread_mutex_unlock(&a->lock);
	return rc;
}

CUresult gs_arena_free(struct gs_arena *a, uint64_t va)
{
	CUresult rc = CUDA_ERROR_INVALID_VALUE;

	pthread_mutex_lock(&a->lock);
	struct span *s = pagemap_get(a, va);
	if (!s)
		goto out;
	if (s->kind == SPAN_LARGE) {
		if (va == s->va) {
			large_free(a, s);
			rc = CUDA_SUCCESS;
		}
	} else if (s->kind == SPAN_SLAB) {
		uint64_t off = va - s->va;
		uint64_t csize = a->class_size[s->cls];
		uint64_t idx = off / csize;
		if (off % csize == 0 && idx < s->nslots && s->slots[idx].size) {
			slab_free_slot(a, s, (unsigned)idx);
			rc = CUDA_SUCCESS;
		}
	}
out:
	pthread_mutex_unlock(&a->lock);
	return rc;
}

/* The allocation of s containing ptr, with its start in *va. */
static const struct slot *span_find(const struct gs_arena *a, const struct span *s,
				    uint64_t ptr, uint64_t *va)
{
	if (s->kind == SPAN_LARGE) {
		*va = s->va;
		return ptr - s->va < s->large.size ? &s->large : NULL;
	}
	if (s->kind != SPAN_SLAB)
		return NULL;
	uint64_t csize = a->class_size[s->cls];
	uint64_t idx = (ptr - s->va) / csize;
	if (idx >= s->nslots)
		return NULL;
	const struct slot *slot = &s->slots[idx];
	*va = s->va + idx * csize;
	/* Past the requested size is slot padding: no allocation there, as
	 * cuMemGetAddressRange reports only the size asked for. */
	return slot->size && ptr - *va < slot->size ? slot : NULL;
}

bool gs_arena_lookup(struct gs_arena *a, uint64_t ptr, struct gs_arena_allocation *out)
{
	bool found = false;

	if (!gs_arena_in_window(a, ptr))
		return false;
	pthread_mutex_lock(&a->lock);
	struct span *s = pagemap_get(a, ptr);
	uint64_t va;
	const struct slot *slot = s ? span_find(a, s, ptr, &va) : NULL;
	if (slot) {
		arena_fill_allocation(a, s, va, slot, out);
		found = true;
	}
	pthread_mutex_unlock(&a->lock);
	return found;
}

size_t gs_arena_free_ctx(struct gs_arena *a, CUcontext ctx)
{
	size_t n = 0;

	pthread_mutex_lock(&a->lock);
	struct span *s = a->all.next;
	while (s != &a->all) {
		/* Freeing may retire s: step first. */
		struct span *next = s->next;

		if (s->kind == SPAN_LARGE && s->large.ctx == ctx) {
			large_free(a, s);
			n++;
		} else if (s->kind == SPAN_SLAB) {
			/* The last slot freed retires the slab: stop then. */
			unsigned left = s->nused;
			for (unsigned i = 0; left && i < s->nslots; i++) {
				if (!s->slots[i].size)
					continue;
				left--;
				if (s->slots[i].ctx == ctx) {
					slab_free_slot(a, s, i);
					n++;
				}
			}
		}
		s = next;
	}
	pthread_mutex_unlock(&a->lock);
	return n;
}

void gs_arena_trim(struct gs_arena *a)
{
	pthread_mutex_lock(&a->lock);
	arena_spare_drop_all(a);
	pthread_mutex_unlock(&a->lock);
}
