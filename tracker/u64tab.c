/* SPDX-License-Identifier: Apache-2.0 */
#include "u64tab.h"

#include <errno.h>
#include <stdlib.h>

#define U64TAB_MIN_CAPACITY 16

/* Handles are heap addresses (aligned, clustered) and device addresses
 * (aligned to large powers of two): mix every bit into the low ones. */
static inline size_t u64tab_hash(uint64_t key)
{
	key ^= key >> 33;
	key *= 0xff51afd7ed558ccdull;
	key ^= key >> 33;
	key *= 0xc4ceb9fe1a85ec53ull;
	key ^= key >> 33;
	return (size_t)key;
}

static inline uint64_t slot_key(const struct gs_u64slot *s)
{
	return __atomic_load_n(&s->key, __ATOMIC_ACQUIRE);
}

static inline uint64_t slot_val(const struct gs_u64slot *s)
{
	return __atomic_load_n(&s->val, __ATOMIC_ACQUIRE);
}

/* Value first, then key, both release: a reader that sees the new key also
 * sees its value, and a reader that sees either word synchronises with the
 * writer (which is what the handlemap's sequence check relies on). */
static inline void slot_store(struct gs_u64slot *s, uint64_t key, uint64_t val)
{
	__atomic_store_n(&s->val, val, __ATOMIC_RELEASE);
	__atomic_store_n(&s->key, key, __ATOMIC_RELEASE);
}

int gs_u64tab_init(struct gs_u64tab *t, size_t hint)
{
	size_t cap = U64TAB_MIN_CAPACITY;

	while (cap / 2 < hint) {
		if (cap > SIZE_MAX / 4)
			return -ENOMEM;
		cap *= 2;
	}
	t->slots = calloc(cap, sizeof(*t->slots));
	if (!t->slots)
		return -ENOMEM;
	t->mask = cap - 1;
	t->count = 0;
	return 0;
}

void gs_u64tab_free(struct gs_u64tab *t)
{
	free(t->slots);
	t->slots = NULL;
	t->mask = 0;
	t->count = 0;
}

bool gs_u64tab_get(const struct gs_u64tab *t, uint64_t key, uint64_t *val)
{
	size_t i = u64tab_hash(key) & t->mask;

	if (key == 0)
		return false;
	/* Bounded by the capacity: a reader racing a writer (whose result the
	 * caller discards) must still terminate. */
	for (size_t n = 0; n <= t->mask; n++, i = (i + 1) & t->mask) {
		uint64_t k = slot_key(&t->slots[i]);

		if (k == 0)
			return false;
		if (k == key) {
			*val = slot_val(&t->slots[i]);
			return true;
		}
	}
	return false;
}

bool gs_u64tab_has_room(const struct gs_u64tab *t)
{
	/* Load factor at most 1/2: linear probing stays short. */
	return (t->count + 1) * 2 <= t->mask + 1;
}

bool gs_u64tab_put(struct gs_u64tab *t, uint64_t key, uint64_t val)
{
	size_t i = u64tab_hash(key) & t->mask;

	for (;;) {
		uint64_t k = t->slots[i].key;

		if (k == key) {
			__atomic_store_n(&t->slots[i].val, val, __ATOMIC_RELEASE);
			return false;
		}
		if (k == 0) {
			slot_store(&t->slots[i], key, val);
			t->count++;
			return true;
		}
		i = (i + 1) & t->mask;
	}
}

/* Whether home slot h lies cyclically in (lo, hi]. */
static inline bool cyclic_between(size_t lo, size_t h, size_t hi)
{
	return lo <= hi ? (lo < h && h <= hi) : (lo < h || h <= hi);
}

bool gs_u64tab_del(struct gs_u64tab *t, uint64_t key, uint64_t *val)
{
	size_t i = u64tab_hash(key) & t->mask;
	size_t j;

	if (key == 0)
		return false;
	for (;;) {
		uint64_t k = t->slots[i].key;

		if (k == 0)
			return false;
		if (k == key)
			break;
		i = (i + 1) & t->mask;
	}
	if (val)
		*val = t->slots[i].val;

	/* Backward shift: pull later members of the cluster into the hole
	 * unless their home slot lies after the hole. */
	j = i;
	for (;;) {
		uint64_t k;

		j = (j + 1) & t->mask;
		k = t->slots[j].key;
		if (k == 0)
			break;
		if (cyclic_between(i, u64tab_hash(k) & t->mask, j))
			continue;
		slot_store(&t->slots[i], k, t->slots[j].val);
		i = j;
	}
	__atomic_store_n(&t->slots[i].key, 0, __ATOMIC_RELEASE);
	__atomic_store_n(&t->slots[i].val, 0, __ATOMIC_RELEASE);
	t->count--;
	return true;
}

int gs_u64tab_rehash(const struct gs_u64tab *from, struct gs_u64tab *to)
{
	int rc = gs_u64tab_init(to, (from->mask + 1));

	if (rc)
		return rc;
	for (size_t i = 0; i <= from->mask; i++) {
		uint64_t k = from->slots[i].key;

		if (k)
			gs_u64tab_put(to, k, from->slots[i].val);
	}
	return 0;
}

int gs_u64tab_foreach(const struct gs_u64tab *t,
		      int (*fn)(uint64_t key, uint64_t val, void *arg), void *arg)
{
	for (size_t i = 0; t->slots && i <= t->mask; i++) {
		uint64_t k = t->slots[i].key;
		int rc;

		if (!k)
			continue;
		rc = fn(k, t->slots[i].val, arg);
		if (rc)
			return rc;
	}
	return 0;
}
