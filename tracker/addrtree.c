/* SPDX-License-Identifier: Apache-2.0 */
#include "addrtree.h"

#include <errno.h>
#include <stdbool.h>

static uint64_t node_prio(const struct gs_addr_node *n)
{
	uint64_t x = n->start;

	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

/* Split t into keys < key (*lo) and keys >= key (*hi). */
static void split(struct gs_addr_node *t, uint64_t key, struct gs_addr_node **lo,
		  struct gs_addr_node **hi)
{
	if (!t) {
		*lo = *hi = NULL;
	} else if (t->start < key) {
		split(t->right, key, &t->right, hi);
		*lo = t;
	} else {
		split(t->left, key, lo, &t->left);
		*hi = t;
	}
}

/* Every key of a is below every key of b. */
static struct gs_addr_node *merge(struct gs_addr_node *a, struct gs_addr_node *b)
{
	if (!a)
		return b;
	if (!b)
		return a;
	if (node_prio(a) > node_prio(b)) {
		a->right = merge(a->right, b);
		return a;
	}
	b->left = merge(a, b->left);
	return b;
}

static struct gs_addr_node *insert(struct gs_addr_node *t, struct gs_addr_node *n)
{
	if (!t)
		return n;
	if (node_prio(n) > node_prio(t)) {
		split(t, n->start, &n->left, &n->right);
		return n;
	}
	if (n->start < t->start)
		t->left = insert(t->left, n);
	else
		t->right = insert(t->right, n);
	return t;
}

static bool contains_start(const struct gs_addrtree *t, uint64_t start)
{
	const struct gs_addr_node *n = t->root;

	while (n) {
		if (start == n->start)
			return true;
		n = start < n->start ? n->left : n->right;
	}
	return false;
}

int gs_addrtree_insert(struct gs_addrtree *t, struct gs_addr_node *n)
{
	if (contains_start(t, n->start))
		return -EEXIST;
	n->left = n->right = NULL;
	t->root = insert(t->root, n);
	t->count++;
	return 0;
}

void gs_addrtree_remove(struct gs_addrtree *t, struct gs_addr_node *n)
{
	struct gs_addr_node **link = &t->root;

	while (*link && *link != n)
		link = n->start < (*link)->start ? &(*link)->left : &(*link)->right;
	if (!*link)
		return;
	*link = merge(n->left, n->right);
	n->left = n->right = NULL;
	t->count--;
}

struct gs_addr_node *gs_addrtree_floor(const struct gs_addrtree *t, uint64_t addr)
{
	struct gs_addr_node *n = t->root, *best = NULL;

	while (n) {
		if (n->start <= addr) {
			best = n;
			n = n->right;
		} else {
			n = n->left;
		}
	}
	return best;
}

struct gs_addr_node *gs_addrtree_ceil(const struct gs_addrtree *t, uint64_t addr)
{
	struct gs_addr_node *n = t->root, *best = NULL;

	while (n) {
		if (n->start >= addr) {
			best = n;
			n = n->left;
		} else {
			n = n->right;
		}
	}
	return best;
}

/* Written as differences so that ranges ending at the top of the address
 * space do not overflow. */
struct gs_addr_node *gs_addrtree_find(const struct gs_addrtree *t, uint64_t addr)
{
	struct gs_addr_node *n = gs_addrtree_floor(t, addr);

	return n && addr - n->start < n->size ? n : NULL;
}

struct gs_addr_node *gs_addrtree_first_overlap(const struct gs_addrtree *t,
					       uint64_t start, uint64_t size)
{
	struct gs_addr_node *n;

	if (size == 0)
		return NULL;
	n = gs_addrtree_find(t, start);
	if (n)
		return n;
	n = gs_addrtree_ceil(t, start);
	return n && n->start - start < size ? n : NULL;
}

struct gs_addr_node *gs_addrtree_next(const struct gs_addrtree *t,
				      const struct gs_addr_node *n)
{
	return n->start == UINT64_MAX ? NULL : gs_addrtree_ceil(t, n->start + 1);
}
