/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The arena's devices and its walks (arena_internal.h): which devices may
 * access the arena's memory (peer grants), moving the whole arena off a
 * device and back (detach, attach), and the walks and statistics over every
 * span.
 *
 * Apart from the allocator of arena_core.c because none of it is on an
 * allocation's path: these run when the application changes peer access,
 * when the process is frozen, thawed or inspected, and they act on every
 * span at once.
 */
#include "arena_internal.h"

#include <pthread.h>
#include <stdlib.h>

static void rebuild_access(struct gs_arena *a)
{
	unsigned n = 0;

	a->access[n++] = a->device;
	for (unsigned i = 0; i < a->npeers; i++)
		if (a->peers[i].grants && a->peers[i].device != a->device)
			a->access[n++] = a->peers[i].device;
	a->naccess = n;
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
			arena_fill_allocation(a, s, s->va, &s->large, &al);
			ret = fn(&al, arg);
		} else if (s->kind == SPAN_SLAB) {
			uint64_t csize = a->class_size[s->cls];
			for (unsigned i = 0; i < s->nslots && !ret; i++) {
				if (!s->slots[i].size)
					continue;
				arena_fill_allocation(a, s, s->va + i * csize, &s->slots[i], &al);
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
	arena_spare_drop_all(a);
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
		rc = arena_span_back(a, s, fn, arg);
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
		arena_span_unback(a, t);
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
