/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The arena allocator core: address-space bookkeeping for one device window.
 * No driver calls except through gs_arena_ops (see arena.h).
 *
 * The window is cut in granules (the chunk size). A *span* is a run of
 * granules backed by one physical allocation and mapped as one piece:
 *
 *   large  one allocation bigger than half a granule; the span is the
 *          allocation rounded up to whole granules (granule-aligned, as the
 *          driver aligns big allocations).
 *   slab   one granule cut into equal slots of a size class; small
 *          allocations are packed there.
 *   spare  an empty backed granule kept for the next slab or one-granule
 *          allocation (gs_arena_config.max_spare).
 *
 * A page map (one pointer per granule, in lazily-touched anonymous memory)
 * finds the span of any pointer in O(1); a sorted array of free granule
 * extents hands out address space first-fit, lowest address first, so the
 * used part of the window stays compact.
 *
 * Locking: one mutex per arena guards everything but the window bounds,
 * which never change after creation. Driver calls are made under it; they
 * happen only when a span is created or retired, never for a slab slot.
 */
#include "arena.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define MAX_CLASSES 64

enum span_kind {
	SPAN_LARGE = 1,
	SPAN_SLAB,
	SPAN_SPARE,
};

/* One allocation. size 0 marks a free slab slot (allocations are never 0). */
struct slot {
	uint64_t size;
	CUcontext ctx;
	uint64_t buffer_id;
};

struct span {
	struct span *prev, *next;    /* every span of the arena */
	struct span *lprev, *lnext;  /* the class's partial slabs, or the spares */
	uint64_t va;
	uint64_t size;
	uint64_t handle;             /* 0 while detached */
	int device;
	enum span_kind kind;
	struct slot large;           /* SPAN_LARGE */
	unsigned cls;                /* SPAN_SLAB: class index */
	unsigned nslots, nused;
	unsigned scan;               /* first bitmap word that may have a free slot */
	uint64_t *used;              /* SPAN_SLAB: one bit per slot */
	struct slot *slots;
};

/* A free run of granules. */
struct extent {
	uint64_t start;
	uint64_t len;
};

struct peer {
	int device;
	unsigned grants;
};

struct gs_arena {
	pthread_mutex_t lock;
	struct gs_arena_ops ops;
	void *opaque;

	uint64_t base, size;      /* the window; immutable */
	uint64_t gran;
	unsigned gran_shift;
	uint64_t ngran;
	int device;
	bool attached;
	unsigned max_spare;

	struct span **pagemap;
	size_t pagemap_bytes;

	struct extent *ext;
	size_t next, ext_cap;

	struct span all;          /* list head of every span */
	size_t nspans;            /* spares included */
	struct span *partial[MAX_CLASSES];
	struct span *spare;
	unsigned nspare;

	uint64_t class_size[MAX_CLASSES];
	unsigned nclasses;

	struct peer *peers;
	unsigned npeers, peers_cap;
	int *access;              /* the owner, then every peer with grants */
	unsigned naccess;

	uint64_t nallocs, bytes_requested, bytes_backed;
};

/* Process-wide, never reused, shared by every arena (CU_POINTER_ATTRIBUTE_BUFFER_ID). */
static _Atomic uint64_t next_buffer_id = GS_ARENA_BUFFER_ID_BASE;

static void report(struct gs_arena *a, const char *what, uint64_t va, CUresult rc)
{
	if (a->ops.report)
		a->ops.report(a->opaque, what, va, rc);
}

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

/* ---- free address space ------------------------------------------------- */

/*
 * Free extents are the gaps between spans, so there are at most nspans + 1 of
 * them. Growing the array before a span is created (ext_make_room) means
 * returning address space (ext_give) never allocates and never fails: a free
 * cannot run out of memory.
 */
static bool ext_make_room(struct gs_arena *a)
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

/* ---- lists ---------------------------------------------------------------- */

static void list_push(struct span **head, struct span *s)
{
	s->lprev = NULL;
	s->lnext = *head;
	if (*head)
		(*head)->lprev = s;
	*head = s;
}

static void list_remove(struct span **head, struct span *s)
{
	if (s->lprev)
		s->lprev->lnext = s->lnext;
	else
		*head = s->lnext;
	if (s->lnext)
		s->lnext->lprev = s->lprev;
	s->lprev = s->lnext = NULL;
}

static void pagemap_set(struct gs_arena *a, struct span *s, struct span *value)
{
	uint64_t first = (s->va - a->base) >> a->gran_shift;
	uint64_t n = s->size >> a->gran_shift;

	for (uint64_t i = 0; i < n; i++)
		a->pagemap[first + i] = value;
}

static struct span *pagemap_get(const struct gs_arena *a, uint64_t ptr)
{
	if (!gs_arena_in_window(a, ptr))
		return NULL;
	return a->pagemap[(ptr - a->base) >> a->gran_shift];
}

/* ---- spans ---------------------------------------------------------------- */

/* Unmap and release the physical memory behind s (not the address space).
 * Errors are reported, not returned: the caller's operation (a free) has
 * already succeeded for the application. */
static void span_unback(struct gs_arena *a, struct span *s)
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
static CUresult span_back(struct gs_arena *a, struct span *s, gs_arena_adopt_fn *adopt, void *arg)
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
static void span_destroy(struct gs_arena *a, struct span *s)
{
	span_unback(a, s);
	pagemap_set(a, s, NULL);
	ext_give(a, (s->va - a->base) >> a->gran_shift, s->size >> a->gran_shift);
	s->prev->next = s->next;
	s->next->prev = s->prev;
	a->nspans--;
	free(s->used);
	free(s->slots);
	free(s);
}

static void spare_drop_all(struct gs_arena *a)
{
	while (a->spare) {
		struct span *s = a->spare;
		list_remove(&a->spare, s);
		a->nspare--;
		span_destroy(a, s);
	}
}

/*
 * An empty span: an emptied slab is kept as a spare if there is room, else
 * the span goes back to the driver. Only slabs: small allocations are what
 * programs allocate and free in loops, and the driver too keeps the pages it
 * packs them into, while a freed large allocation shows up at once in its
 * cuMemGetInfo. (A spare may still serve a one-granule allocation.)
 */
static void span_retire(struct gs_arena *a, struct span *s)
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
	span_destroy(a, s);
}

/* A backed span of `ngran` granules, a spare when one fits. */
static CUresult span_new(struct gs_arena *a, uint64_t ngran, enum span_kind kind,
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
	if (!ext_make_room(a))
		return CUDA_ERROR_OUT_OF_MEMORY;
	struct span *s = calloc(1, sizeof(*s));
	if (!s)
		return CUDA_ERROR_OUT_OF_MEMORY;

	uint64_t start;
	if (!ext_take(a, ngran, &start)) {
		/* Spares may be all that stands between two free runs. */
		if (!a->spare)
			goto oom;
		spare_drop_all(a);
		if (!ext_take(a, ngran, &start))
			goto oom;
	}
	s->va = a->base + (start << a->gran_shift);
	s->size = ngran << a->gran_shift;
	s->kind = kind;

	CUresult rc = span_back(a, s, NULL, NULL);
	if (rc == CUDA_ERROR_OUT_OF_MEMORY && a->spare) {
		/* The spares' physical memory may be exactly what is missing. */
		spare_drop_all(a);
		rc = span_back(a, s, NULL, NULL);
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
	rc = span_new(a, 1, SPAN_SLAB, &s);
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
		span_retire(a, s);
	}
}

static void large_free(struct gs_arena *a, struct span *s)
{
	alloc_unrecord(a, &s->large);
	span_retire(a, s);
}

static void fill_allocation(const struct gs_arena *a, const struct span *s, uint64_t va,
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

static void rebuild_access(struct gs_arena *a)
{
	unsigned n = 0;

	a->access[n++] = a->device;
	for (unsigned i = 0; i < a->npeers; i++)
		if (a->peers[i].grants && a->peers[i].device != a->device)
			a->access[n++] = a->peers[i].device;
	a->naccess = n;
}

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
	if (!a->access || !ext_make_room(a))
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
		span_destroy(a, a->all.next);
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
		fill_allocation(a, s, s->va + (uint64_t)idx * a->class_size[cls], &s->slots[idx],
				out);
		rc = CUDA_SUCCESS;
		goto out;
	}

	uint64_t ngran = (size + a->gran - 1) >> a->gran_shift;
	rc = span_new(a, ngran, SPAN_LARGE, &s);
	if (rc != CUDA_SUCCESS)
		goto out;
	alloc_record(a, &s->large, size, ctx);
	fill_allocation(a, s, s->va, &s->large, out);
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
		fill_allocation(a, s, va, slot, out);
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
	spare_drop_all(a);
	pthread_mutex_unlock(&a->lock);
}

/* Set `device`'s access on every backed span. On failure, spans already
 * changed are set back to `!readwrite`. */
static CUresult access_apply(struct gs_arena *a, int device, bool readwrite)
{
	struct span *s;
	CUresult rc = CUDA_SUCCESS;

	if (!a->attached)
		return CUDA_SUCCESS;
	for (s = a->all.next; s != &a->all; s = s->next) {
		rc = a->ops.set_access(a->opaque, s->va, s->size, &device, 1, readwrite);
		if (rc != CUDA_SUCCESS)
			break;
	}
	if (rc == CUDA_SUCCESS)
		return rc;
	for (struct span *t = a->all.next; t != s; t = t->next) {
		CUresult undo = a->ops.set_access(a->opaque, t->va, t->size, &device, 1, !readwrite);
		if (undo != CUDA_SUCCESS)
			report(a, "set_access", t->va, undo);
	}
	return rc;
}

CUresult gs_arena_peer_access(struct gs_arena *a, int device, bool readwrite)
{
	CUresult rc = CUDA_SUCCESS;
	struct peer *p = NULL;

	pthread_mutex_lock(&a->lock);
	if (device == a->device)
		goto out;
	for (unsigned i = 0; i < a->npeers; i++)
		if (a->peers[i].device == device)
			p = &a->peers[i];
	if (!readwrite) {
		if (!p || !p->grants) {
			rc = CUDA_ERROR_INVALID_VALUE;
			goto out;
		}
		if (--p->grants == 0) {
			rebuild_access(a);
			rc = access_apply(a, device, false);
			if (rc != CUDA_SUCCESS) {
				/* Access could not be taken back; keep
				 * granting it to new chunks too. */
				p->grants = 1;
				rebuild_access(a);
			}
		}
		goto out;
	}
	if (!p) {
		if (a->npeers == a->peers_cap) {
			unsigned cap = a->peers_cap ? a->peers_cap * 2 : 4;
			struct peer *np = realloc(a->peers, cap * sizeof(*np));
			int *acc = np ? realloc(a->access, (cap + 1) * sizeof(*acc)) : NULL;
			if (np)
				a->peers = np;
			if (!acc) {
				rc = CUDA_ERROR_OUT_OF_MEMORY;
				goto out;
			}
			a->access = acc;
			a->peers_cap = cap;
		}
		p = &a->peers[a->npeers++];
		*p = (struct peer){ .device = device };
	}
	if (p->grants == 0) {
		rc = access_apply(a, device, true);
		if (rc != CUDA_SUCCESS)
			goto out;
	}
	p->grants++;
	rebuild_access(a);
out:
	pthread_mutex_unlock(&a->lock);
	return rc;
}

int gs_arena_foreach_chunk(struct gs_arena *a,
			   int (*fn)(const struct gs_arena_chunk *c, void *arg), void *arg)
{
	int ret = 0;

	pthread_mutex_lock(&a->lock);
	for (struct span *s = a->all.next; s != &a->all && !ret; s = s->next) {
		if (s->kind == SPAN_SPARE)
			continue;
		struct gs_arena_chunk c = {
			.va = s->va, .size = s->size, .handle = s->handle, .device = s->device,
		};
		ret = fn(&c, arg);
	}
	pthread_mutex_unlock(&a->lock);
	return ret;
}

int gs_arena_foreach_allocation(struct gs_arena *a,
				int (*fn)(const struct gs_arena_allocation *al, void *arg),
				void *arg)
{
	struct gs_arena_allocation al;
	int ret = 0;

	pthread_mutex_lock(&a->lock);
	for (struct span *s = a->all.next; s != &a->all && !ret; s = s->next) {
		if (s->kind == SPAN_LARGE) {
			fill_allocation(a, s, s->va, &s->large, &al);
			ret = fn(&al, arg);
		} else if (s->kind == SPAN_SLAB) {
			uint64_t csize = a->class_size[s->cls];
			for (unsigned i = 0; i < s->nslots && !ret; i++) {
				if (!s->slots[i].size)
					continue;
				fill_allocation(a, s, s->va + i * csize, &s->slots[i], &al);
				ret = fn(&al, arg);
			}
		}
	}
	pthread_mutex_unlock(&a->lock);
	return ret;
}

void gs_arena_stats(struct gs_arena *a, struct gs_arena_stats *out)
{
	pthread_mutex_lock(&a->lock);
	out->allocations = a->nallocs;
	out->bytes_requested = a->bytes_requested;
	out->chunks = a->nspans - a->nspare;
	out->bytes_backed = a->bytes_backed;
	out->spare_chunks = a->nspare;
	out->window_free = 0;
	for (size_t i = 0; i < a->next; i++)
		out->window_free += a->ext[i].len << a->gran_shift;
	out->attached = a->attached;
	pthread_mutex_unlock(&a->lock);
}

CUresult gs_arena_detach(struct gs_arena *a)
{
	CUresult first = CUDA_SUCCESS;

	pthread_mutex_lock(&a->lock);
	if (!a->attached)
		goto out;
	spare_drop_all(a);
	for (struct span *s = a->all.next; s != &a->all; s = s->next) {
		CUresult rc = a->ops.unmap(a->opaque, s->va, s->size);
		if (rc == CUDA_SUCCESS)
			rc = a->ops.release(a->opaque, s->handle);
		if (rc != CUDA_SUCCESS) {
			report(a, "detach", s->va, rc);
			if (first == CUDA_SUCCESS)
				first = rc;
		}
		s->handle = 0;
		a->bytes_backed -= s->size;
	}
	CUresult rc = a->ops.unreserve(a->opaque, a->base, a->size);
	if (rc != CUDA_SUCCESS) {
		report(a, "unreserve", a->base, rc);
		if (first == CUDA_SUCCESS)
			first = rc;
	}
	/* Detached even after an error: the records are what a later attach
	 * needs, and the driver objects are gone or unusable either way. */
	a->attached = false;
out:
	pthread_mutex_unlock(&a->lock);
	return first;
}

CUresult gs_arena_attach(struct gs_arena *a, int device, const int *peers, unsigned npeers)
{
	return gs_arena_attach_adopt(a, device, peers, npeers, NULL, NULL);
}

CUresult gs_arena_attach_adopt(struct gs_arena *a, int device, const int *peers, unsigned npeers,
			       gs_arena_adopt_fn *fn, void *arg)
{
	CUresult rc = CUDA_SUCCESS;
	struct span *s;
	int old_device;

	pthread_mutex_lock(&a->lock);
	if (a->attached) {
		rc = CUDA_ERROR_INVALID_VALUE;
		goto out;
	}
	/* New peer list first (memory only), so failing later is cheap to undo. */
	struct peer *np = npeers ? calloc(npeers, sizeof(*np)) : NULL;
	int *acc = calloc(npeers + 1, sizeof(*acc));
	if ((npeers && !np) || !acc) {
		free(np);
		free(acc);
		rc = CUDA_ERROR_OUT_OF_MEMORY;
		goto out;
	}
	struct peer *old_peers = a->peers;
	int *old_access = a->access;
	unsigned old_npeers = a->npeers, old_cap = a->peers_cap, old_naccess = a->naccess;
	old_device = a->device;
	a->device = device;
	a->peers = np;
	a->peers_cap = npeers;
	a->npeers = 0;
	/* A device named n times holds n grants (peer access enabled, copy
	 * access), each of which a later revoke takes back separately. */
	for (unsigned i = 0; i < npeers; i++) {
		unsigned k = 0;

		while (k < a->npeers && np[k].device != peers[i])
			k++;
		if (k == a->npeers)
			np[a->npeers++] = (struct peer){ .device = peers[i] };
		np[k].grants++;
	}
	a->access = acc;
	rebuild_access(a);

	uint64_t va = 0;
	rc = a->ops.reserve(a->opaque, a->base, a->size, &va);
	if (rc == CUDA_SUCCESS && va != a->base) {
		rc = a->ops.unreserve(a->opaque, va, a->size);
		if (rc != CUDA_SUCCESS)
			report(a, "unreserve", va, rc);
		rc = CUDA_ERROR_ALREADY_MAPPED;
	}
	if (rc != CUDA_SUCCESS)
		goto undo_peers;
	for (s = a->all.next; s != &a->all; s = s->next) {
		rc = span_back(a, s, fn, arg);
		if (rc != CUDA_SUCCESS)
			break;
	}
	if (rc == CUDA_SUCCESS) {
		a->attached = true;
		free(old_peers);
		free(old_access);
		goto out;
	}
	for (struct span *t = a->all.next; t != s; t = t->next) {
		span_unback(a, t);
		t->device = old_device;
	}
	CUresult undo = a->ops.unreserve(a->opaque, a->base, a->size);
	if (undo != CUDA_SUCCESS)
		report(a, "unreserve", a->base, undo);
undo_peers:
	free(a->peers);
	free(a->access);
	a->peers = old_peers;
	a->access = old_access;
	a->npeers = old_npeers;
	a->peers_cap = old_cap;
	a->naccess = old_naccess;
	a->device = old_device;
out:
	pthread_mutex_unlock(&a->lock);
	return rc;
}
