/* SPDX-License-Identifier: Apache-2.0 */
/*
 * addrtree: an ordered set of address ranges keyed by start address, internal
 * to the tracker. The driver API asks "which allocation / mapping /
 * reservation contains this address" (cuMemGetAddressRange,
 * cuMemRetainAllocationHandle, cuMemUnmap of a sub-range), so address-keyed
 * records need ordered look-ups, not only exact ones.
 *
 * A treap whose priorities are a hash of the key: expected O(log n) per
 * operation with no rebalancing state, and deterministic shape for a given
 * set of keys (reproducible tests). Nodes are embedded in their records. Not
 * thread-safe: the tracker's lock covers it.
 */
#ifndef GS_ADDRTREE_H
#define GS_ADDRTREE_H

#include <stddef.h>
#include <stdint.h>

struct gs_addr_node {
	struct gs_addr_node *left, *right;
	uint64_t start;
	uint64_t size; /* ranges are [start, start + size) */
};

struct gs_addrtree {
	struct gs_addr_node *root;
	size_t count;
};

/* -EEXIST when a node with the same start is present. Overlap between ranges
 * is the caller's business (gs_addrtree_overlaps). */
int gs_addrtree_insert(struct gs_addrtree *t, struct gs_addr_node *n);
/* n must be in t. */
void gs_addrtree_remove(struct gs_addrtree *t, struct gs_addr_node *n);
/* The node with the greatest start <= addr, or NULL. */
struct gs_addr_node *gs_addrtree_floor(const struct gs_addrtree *t, uint64_t addr);
/* The node with the least start >= addr, or NULL. */
struct gs_addr_node *gs_addrtree_ceil(const struct gs_addrtree *t, uint64_t addr);
/* The node whose range contains addr, or NULL. */
struct gs_addr_node *gs_addrtree_find(const struct gs_addrtree *t, uint64_t addr);
/* The first node (lowest start) whose range intersects [start, start+size),
 * or NULL. Walk on with gs_addrtree_next while nodes still intersect. */
struct gs_addr_node *gs_addrtree_first_overlap(const struct gs_addrtree *t,
					       uint64_t start, uint64_t size);
/* The node after n in address order, or NULL. */
struct gs_addr_node *gs_addrtree_next(const struct gs_addrtree *t,
				      const struct gs_addr_node *n);

#endif
