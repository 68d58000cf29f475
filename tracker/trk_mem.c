/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Memory records: allocations the shim's arena serves, pinned host memory,
 * and VMM reservations, physical handles, mappings and access. All but the
 * physical handles are keyed by address and kept in address order too, for
 * "which range contains this address" and for calls that cover a range.
 */
#include "trk_internal.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define container_of(p, type, member) ((type *)(void *)((char *)(p) - offsetof(type, member)))

/* Address records carry their tree node after the public record. */
struct alloc_box {
	struct gs_alloc_rec rec;
	struct gs_addr_node node;
};

struct host_box {
	struct gs_host_rec rec;
	struct gs_addr_node node;
};

struct resv_box {
	struct gs_resv_rec rec;
	struct gs_addr_node node;
};

struct map_box {
	struct gs_mapping_rec rec;
	struct gs_addr_node node;
};

static struct gs_addrtree *tree_of(enum gs_kind kind)
{
	switch (kind) {
	case GS_KIND_ALLOC:
		return &gs_trk.alloc_tree;
	case GS_KIND_HOST:
		return &gs_trk.host_tree;
	case GS_KIND_RESERVATION:
		return &gs_trk.resv_tree;
	case GS_KIND_MAPPING:
		return &gs_trk.map_tree;
	default:
		return NULL;
	}
}

static struct gs_addr_node *node_of(struct gs_rec *r)
{
	switch (r->kind) {
	case GS_KIND_ALLOC:
		return &((struct alloc_box *)r)->node;
	case GS_KIND_HOST:
		return &((struct host_box *)r)->node;
	case GS_KIND_RESERVATION:
		return &((struct resv_box *)r)->node;
	case GS_KIND_MAPPING:
		return &((struct map_box *)r)->node;
	default:
		return NULL;
	}
}

static struct gs_rec *rec_of(enum gs_kind kind, struct gs_addr_node *n)
{
	switch (kind) {
	case GS_KIND_ALLOC:
		return &container_of(n, struct alloc_box, node)->rec.hdr;
	case GS_KIND_HOST:
		return &container_of(n, struct host_box, node)->rec.hdr;
	case GS_KIND_RESERVATION:
		return &container_of(n, struct resv_box, node)->rec.hdr;
	case GS_KIND_MAPPING:
		return &container_of(n, struct map_box, node)->rec.hdr;
	default:
		return NULL;
	}
}

/* Link an address record and put it in its tree. Ranges of one kind never
 * overlap (the driver would have refused the call). Lock held. */
static int addr_link(struct gs_rec *r, enum gs_kind kind, uint64_t addr, uint64_t size,
		     uint64_t bytes, bool shim)
{
	struct gs_addrtree *t = tree_of(kind);
	struct gs_addr_node *n;
	int rc;

	if (!addr || !size)
		return -EINVAL;
	if (gs_addrtree_first_overlap(t, addr, size))
		return -EEXIST;
	rc = trk_link(r, kind, addr, bytes, shim);
	if (rc)
		return rc;
	n = node_of(r);
	n->start = addr;
	n->size = size;
	gs_addrtree_insert(t, n);
	return 0;
}

static struct gs_phys_rec *phys_find(uint64_t app)
{
	return (struct gs_phys_rec *)trk_find(GS_KIND_PHYS, app);
}

/* A physical allocation lives while the application holds a handle or a
 * mapping uses it. Lock held. */
static void phys_maybe_drop(struct gs_phys_rec *p)
{
	if (p && p->handle_refs == 0 && p->maps == 0)
		trk_drop(&p->hdr);
}

void trk_free_mem_rec(struct gs_rec *r)
{
	struct gs_addrtree *t = tree_of(r->kind);

	if (t)
		gs_addrtree_remove(t, node_of(r));
	switch (r->kind) {
	case GS_KIND_ALLOC: {
		const struct gs_alloc_desc *d = &((struct gs_alloc_rec *)r)->d;

		gs_trk.device_bytes[d->device] -= d->footprint;
		break;
	}
	case GS_KIND_MAPPING:
		free(((struct gs_mapping_rec *)r)->access);
		break;
	default:
		break;
	}
	free(r);
}

void trk_mem_clear(void)
{
	memset(&gs_trk.alloc_tree, 0, sizeof(gs_trk.alloc_tree));
	memset(&gs_trk.host_tree, 0, sizeof(gs_trk.host_tree));
	memset(&gs_trk.resv_tree, 0, sizeof(gs_trk.resv_tree));
	memset(&gs_trk.map_tree, 0, sizeof(gs_trk.map_tree));
}

/* The descriptor an allocation or host-memory record was added with. */
static void desc_copy(const struct gs_rec *r, void *out)
{
	if (r->kind == GS_KIND_ALLOC)
		*(struct gs_alloc_desc *)out = ((const struct gs_alloc_rec *)r)->d;
	else
		*(struct gs_host_desc *)out = ((const struct gs_host_rec *)r)->d;
}

/* Copy out (out may be NULL) the descriptor of the record starting at addr,
 * then drop it; or, with `containing`, of the one containing addr, kept. */
static int desc_lookup(enum gs_kind kind, uint64_t addr, bool containing, void *out)
{
	struct gs_addr_node *n;
	struct gs_rec *r;

	trk_lock();
	if (containing) {
		n = gs_addrtree_find(tree_of(kind), addr);
		r = n ? rec_of(kind, n) : NULL;
	} else {
		r = trk_find(kind, addr);
	}
	if (r && out)
		desc_copy(r, out);
	if (r && !containing)
		trk_drop(r);
	trk_unlock();
	return r ? 0 : -ENOENT;
}

/* ---- arena allocations --------------------------------------------------------- */

int gs_trk_alloc_add(const struct gs_alloc_desc *d)
{
	struct alloc_box *b;
	int rc;

	if (!d || !d->addr || !d->size || d->device < 0 || d->device >= GS_MAX_DEVICES)
		return -EINVAL;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->rec.d = *d;
	if (b->rec.d.footprint < d->size)
		b->rec.d.footprint = d->size;
	trk_lock();
	rc = addr_link(&b->rec.hdr, GS_KIND_ALLOC, d->addr, d->size, d->size, false);
	if (!rc)
		gs_trk.device_bytes[d->device] += b->rec.d.footprint;
	trk_unlock();
	if (rc)
		free(b);
	return rc;
}

int gs_trk_alloc_remove(CUdeviceptr addr, struct gs_alloc_desc *out)
{
	return desc_lookup(GS_KIND_ALLOC, addr, false, out);
}

int gs_trk_alloc_find(CUdeviceptr addr, struct gs_alloc_desc *out)
{
	return desc_lookup(GS_KIND_ALLOC, addr, true, out);
}

/* ---- host memory ---------------------------------------------------------------- */

int gs_trk_host_add(const struct gs_host_desc *d)
{
	struct host_box *b;
	int rc;

	if (!d || !d->ptr || !d->size)
		return -EINVAL;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->rec.d = *d;
	trk_lock();
	rc = addr_link(&b->rec.hdr, GS_KIND_HOST, (uintptr_t)d->ptr, d->size, d->size, false);
	trk_unlock();
	if (rc)
		free(b);
	return rc;
}

int gs_trk_host_remove(void *ptr, struct gs_host_desc *out)
{
	return desc_lookup(GS_KIND_HOST, (uintptr_t)ptr, false, out);
}

int gs_trk_host_find(const void *addr, struct gs_host_desc *out)
{
	return desc_lookup(GS_KIND_HOST, (uintptr_t)addr, true, out);
}

/* ---- carving ranges -------------------------------------------------------------- */

/*
 * cuMemUnmap and cuMemAddressFree name a range, which may cover several
 * records and cut the ones at its ends. A cut record keeps the part(s)
 * outside the range; a mapping's offset follows its start. Lock held.
 */
static int carve_clone(const struct gs_rec *r, uint64_t start, uint64_t size)
{
	if (r->kind == GS_KIND_RESERVATION) {
		struct resv_box *b = calloc(1, sizeof(*b));
		int rc;

		if (!b)
			return -ENOMEM;
		b->rec = *(const struct gs_resv_rec *)r;
		b->rec.size = size;
		rc = addr_link(&b->rec.hdr, GS_KIND_RESERVATION, start, size, size, r->shim_owned);
		if (rc)
			free(b);
		return rc;
	} else {
		const struct gs_mapping_rec *m = (const struct gs_mapping_rec *)r;
		struct map_box *b = calloc(1, sizeof(*b));
		struct gs_phys_rec *p;
		int rc;

		if (!b)
			return -ENOMEM;
		b->rec = *m;
		b->rec.size = size;
		b->rec.offset = m->offset + (start - r->app);
		b->rec.access = NULL;
		if (m->naccess) {
			b->rec.access = malloc(m->naccess * sizeof(*m->access));
			if (!b->rec.access) {
				free(b);
				return -ENOMEM;
			}
			memcpy(b->rec.access, m->access, m->naccess * sizeof(*m->access));
		}
		rc = addr_link(&b->rec.hdr, GS_KIND_MAPPING, start, size, size, r->shim_owned);
		if (rc) {
			free(b->rec.access);
			free(b);
			return rc;
		}
		p = phys_find(m->phys);
		if (p)
			p->maps++;
		return 0;
	}
}

/* Move/shrink a linked address record to [start, start + size). */
static int carve_resize(struct gs_rec *r, uint64_t start, uint64_t size)
{
	struct gs_addrtree *t = tree_of(r->kind);
	struct gs_addr_node *n = node_of(r);
	uint64_t old = r->app;
	int rc;

	if (start != old) {
		rc = trk_rekey(r, start);
		if (rc)
			return rc;
		gs_addrtree_remove(t, n);
		n->start = start;
		n->size = size;
		gs_addrtree_insert(t, n);
		if (r->kind == GS_KIND_MAPPING)
			((struct gs_mapping_rec *)r)->offset += start - old;
	} else {
		n->size = size;
	}
	if (r->kind == GS_KIND_RESERVATION)
		((struct gs_resv_rec *)r)->size = size;
	else
		((struct gs_mapping_rec *)r)->size = size;
	trk_account(r, size);
	return 0;
}

static void carve_drop(struct gs_rec *r)
{
	if (r->kind == GS_KIND_MAPPING) {
		struct gs_phys_rec *p = phys_find(((struct gs_mapping_rec *)r)->phys);

		trk_drop(r);
		if (p && p->maps)
			p->maps--;
		phys_maybe_drop(p);
	} else {
		trk_drop(r);
	}
}

static int carve(enum gs_kind kind, uint64_t addr, uint64_t size)
{
	struct gs_addrtree *t = tree_of(kind);
	uint64_t end = addr + size;
	uint64_t cursor = addr;
	struct gs_addr_node *n;
	int rc = 0, found = 0;

	if (!size || end < addr)
		return -EINVAL;
	while (cursor < end && (n = gs_addrtree_first_overlap(t, cursor, end - cursor))) {
		struct gs_rec *r = rec_of(kind, n);
		uint64_t s = n->start, e = n->start + n->size;

		found++;
		if (s < addr && e > end) {
			/* The range is inside: keep both ends (shrink first,
			 * so the right end does not overlap its original). */
			rc = carve_resize(r, s, addr - s);
			if (!rc)
				rc = carve_clone(r, end, e - end);
		} else if (s < addr) {
			rc = carve_resize(r, s, addr - s);
		} else if (e > end) {
			rc = carve_resize(r, end, e - end);
		} else {
			carve_drop(r);
		}
		if (rc || e >= end)
			break;
		cursor = e;
	}
	return rc ? rc : found ? 0 : -ENOENT;
}

/* carve() for the public entry points, which do not hold the lock. */
static int lock_and_carve(enum gs_kind kind, uint64_t addr, uint64_t size)
{
	int rc;

	trk_lock();
	rc = carve(kind, addr, size);
	trk_unlock();
	return rc;
}

/* ---- reservations ------------------------------------------------------------------ */

int gs_trk_reserve_add(CUdeviceptr addr, size_t size, size_t alignment, CUdeviceptr hint,
		       unsigned long long flags, enum gs_owner owner)
{
	struct resv_box *b = calloc(1, sizeof(*b));
	int rc;

	if (!b)
		return -ENOMEM;
	b->rec.size = size;
	b->rec.alignment = alignment;
	b->rec.hint = hint;
	b->rec.flags = flags;
	b->rec.owner = owner;
	trk_lock();
	rc = addr_link(&b->rec.hdr, GS_KIND_RESERVATION, addr, size, size,
		       owner == GS_OWNER_SHIM);
	trk_unlock();
	if (rc)
		free(b);
	return rc;
}

int gs_trk_reserve_free(CUdeviceptr addr, size_t size)
{
	return lock_and_carve(GS_KIND_RESERVATION, addr, size);
}

/* ---- physical handles ----------------------------------------------------------------- */

static int phys_new(uint64_t real, size_t size, const CUmemAllocationProp *prop,
		    unsigned long long flags, enum gs_owner owner, bool imported,
		    uint64_t alias_of, uint64_t *app)
{
	struct gs_phys_rec *p = calloc(1, sizeof(*p));
	int rc;

	if (!p)
		return -ENOMEM;
	p->size = size;
	if (prop)
		p->prop = *prop;
	p->flags = flags;
	p->owner = owner;
	p->imported = imported;
	p->alias_of = alias_of;
	p->handle_refs = 1;
	trk_drop_stale(GS_KIND_PHYS, real);
	rc = trk_link(&p->hdr, GS_KIND_PHYS, real, size, owner == GS_OWNER_SHIM);
	if (rc) {
		free(p);
		return rc;
	}
	if (app)
		*app = p->hdr.app;
	return 0;
}

int gs_trk_phys_created(CUmemGenericAllocationHandle real, size_t size,
			const CUmemAllocationProp *prop, unsigned long long flags,
			enum gs_owner owner, bool imported, CUmemGenericAllocationHandle *app)
{
	uint64_t a;
	int rc;

	if (!real)
		return -EINVAL;
	trk_lock();
	rc = phys_new(real, size, prop, flags, owner, imported, 0, &a);
	trk_unlock();
	if (!rc && app)
		*app = a;
	return rc;
}

int gs_trk_phys_released(CUmemGenericAllocationHandle h)
{
	struct gs_phys_rec *p;
	int rc = 0;

	trk_lock();
	p = phys_find(h);
	if (!p) {
		rc = -ENOENT;
	} else {
		if (p->handle_refs)
			p->handle_refs--;
		phys_maybe_drop(p);
	}
	trk_unlock();
	return rc;
}

int gs_trk_phys_retained(CUdeviceptr addr, CUmemGenericAllocationHandle real,
			 CUmemGenericAllocationHandle *app)
{
	const struct gs_mapping_rec *m;
	struct gs_phys_rec *p;
	struct gs_addr_node *n;
	uint64_t a = 0;
	int rc = 0;

	if (!real)
		return -EINVAL;
	trk_lock();
	p = (struct gs_phys_rec *)trk_find_real(GS_KIND_PHYS, real);
	if (p) {
		/* The usual case: the driver hands back the handle it made. */
		p->handle_refs++;
		a = p->hdr.app;
		goto out;
	}
	n = gs_addrtree_find(&gs_trk.map_tree, addr);
	if (!n) {
		rc = -ENOENT;
		goto out;
	}
	m = (const struct gs_mapping_rec *)rec_of(GS_KIND_MAPPING, n);
	p = phys_find(m->phys);
	/* Another value for memory we know: an alias a restore retains from
	 * the mapping rather than creates. */
	rc = phys_new(real, p ? p->size : m->size, p ? &p->prop : NULL, p ? p->flags : 0,
		      m->owner, false, m->phys, &a);
out:
	trk_unlock();
	if (!rc && app)
		*app = a;
	return rc;
}

/* ---- mappings and access ------------------------------------------------------------------ */

int gs_trk_map_add(CUdeviceptr va, size_t size, size_t offset, CUmemGenericAllocationHandle h,
		   unsigned long long flags, enum gs_owner owner)
{
	struct map_box *b = calloc(1, sizeof(*b));
	struct gs_phys_rec *p;
	int rc;

	if (!b)
		return -ENOMEM;
	b->rec.size = size;
	b->rec.offset = offset;
	b->rec.phys = h;
	b->rec.flags = flags;
	b->rec.owner = owner;
	trk_lock();
	rc = addr_link(&b->rec.hdr, GS_KIND_MAPPING, va, size, size, owner == GS_OWNER_SHIM);
	if (!rc) {
		p = phys_find(h);
		if (p)
			p->maps++;
	}
	trk_unlock();
	if (rc)
		free(b);
	return rc;
}

int gs_trk_unmap(CUdeviceptr va, size_t size)
{
	return lock_and_carve(GS_KIND_MAPPING, va, size);
}

static bool same_location(const CUmemLocation *a, const CUmemLocation *b)
{
	return a->type == b->type && a->id == b->id;
}

/* Latest flags per location. Lock held. */
static int access_merge(struct gs_mapping_rec *m, const CUmemAccessDesc *desc, size_t count)
{
	for (size_t i = 0; i < count; i++) {
		struct gs_access *grown;
		unsigned j;

		for (j = 0; j < m->naccess; j++)
			if (same_location(&m->access[j].location, &desc[i].location))
				break;
		if (j == m->naccess) {
			grown = realloc(m->access, (m->naccess + 1) * sizeof(*grown));
			if (!grown)
				return -ENOMEM;
			m->access = grown;
			m->access[m->naccess++].location = desc[i].location;
		}
		m->access[j].flags = desc[i].flags;
	}
	return 0;
}

int gs_trk_set_access(CUdeviceptr va, size_t size, const CUmemAccessDesc *desc, size_t count)
{
	uint64_t end = va + size, cursor = va;
	struct gs_addr_node *n;
	int rc = 0, found = 0;

	if (!size || end < va || (count && !desc))
		return -EINVAL;
	trk_lock();
	while (cursor < end &&
	       (n = gs_addrtree_first_overlap(&gs_trk.map_tree, cursor, end - cursor))) {
		struct gs_mapping_rec *m = (struct gs_mapping_rec *)rec_of(GS_KIND_MAPPING, n);

		found++;
		if (n->start < va || n->start + n->size > end)
			m->access_partial = true;
		rc = access_merge(m, desc, count);
		if (rc || n->start + n->size >= end)
			break;
		cursor = n->start + n->size;
	}
	trk_unlock();
	return rc ? rc : found ? 0 : -ENOENT;
}

/* ---- cascades and checks ------------------------------------------------------------------ */

void trk_mem_drop_ctx(uint64_t ctx)
{
	struct gs_rec *r, *next;

	for (r = gs_trk.kinds[GS_KIND_ALLOC].head; r; r = next) {
		next = r->next;
		if ((uintptr_t)((struct gs_alloc_rec *)r)->d.ctx == ctx)
			trk_drop(r);
	}
	for (r = gs_trk.kinds[GS_KIND_HOST].head; r; r = next) {
		next = r->next;
		if ((uintptr_t)((struct gs_host_rec *)r)->d.ctx == ctx)
			trk_drop(r);
	}
}

int trk_mem_check(gs_trk_problem_fn *fn, void *arg, bool *stop)
{
	const struct gs_rec *r;
	int n = 0;

	for (r = gs_trk.kinds[GS_KIND_MAPPING].head; r && !*stop; r = r->next)
		if (((const struct gs_mapping_rec *)r)->access_partial)
			n += trk_report(fn, arg, r, "mapping with access set on part of it", stop);
	for (r = gs_trk.kinds[GS_KIND_HOST].head; r && !*stop; r = r->next) {
		const struct gs_host_rec *h = (const struct gs_host_rec *)r;

		if (h->d.kind == GS_HOST_REGISTER && (h->d.flags & CU_MEMHOSTREGISTER_IOMEMORY))
			n += trk_report(fn, arg, r, "registered I/O memory", stop);
	}
	return n;
}
