/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Internals shared by the arena allocator core's files; not part of the API
 * (callers include arena.h only):
 *
 *   arena_core.c         creating and destroying an arena, size classes,
 *                        slabs, allocating, freeing and looking up
 *   arena_core_span.c    free address space (extents), the page map, and
 *                        spans: backing, retiring, spares
 *   arena_core_access.c  peer access, detach and attach, and the walks and
 *                        statistics over every span
 *
 * Every function here is called with the arena's lock held.
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
#ifndef GS_ARENA_INTERNAL_H
#define GS_ARENA_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"

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

static inline void report(struct gs_arena *a, const char *what, uint64_t va, CUresult rc)
{
	if (a->ops.report)
		a->ops.report(a->opaque, what, va, rc);
}

static inline void list_push(struct span **head, struct span *s)
{
	s->lprev = NULL;
	s->lnext = *head;
	if (*head)
		(*head)->lprev = s;
	*head = s;
}

static inline void list_remove(struct span **head, struct span *s)
{
	if (s->lprev)
		s->lprev->lnext = s->lnext;
	else
		*head = s->lnext;
	if (s->lnext)
		s->lnext->lprev = s->lprev;
	s->lprev = s->lnext = NULL;
}

static inline struct span *pagemap_get(const struct gs_arena *a, uint64_t ptr)
{
	if (!gs_arena_in_window(a, ptr))
		return NULL;
	return a->pagemap[(ptr - a->base) >> a->gran_shift];
}

#pragma GCC visibility push(hidden)

/* arena_core_span.c */
bool arena_ext_make_room(struct gs_arena *a);
void arena_span_unback(struct gs_arena *a, struct span *s);
CUresult arena_span_back(struct gs_arena *a, struct span *s, gs_arena_adopt_fn *adopt,
			 void *arg);
void arena_span_destroy(struct gs_arena *a, struct span *s);
void arena_spare_drop_all(struct gs_arena *a);
void arena_span_retire(struct gs_arena *a, struct span *s);
CUresult arena_span_new(struct gs_arena *a, uint64_t ngran, enum span_kind kind,
			struct span **out);

/* arena_core.c */
void arena_fill_allocation(const struct gs_arena *a, const struct span *s, uint64_t va,
			   const struct slot *slot, struct gs_arena_allocation *out);

#pragma GCC visibility pop

#endif
