/* SPDX-License-Identifier: Apache-2.0 */
/*
 * u64tab: an open-addressing hash table from non-zero 64-bit keys to 64-bit
 * values, internal to the tracker. It is the storage under both the
 * handlemap (handle translation, read lock-free on the call path) and the
 * tracker's own record indexes.
 *
 * Writers must be serialised by the caller. Readers may run concurrently
 * with a writer only under a protocol that detects overlap (the handlemap's
 * sequence counter): every slot word is accessed atomically, values are
 * stored before their key and with release order, so a reader that observes
 * any word a writer stored also observes that the writer had started.
 *
 * Linear probing with backward-shift deletion: no tombstones, so a table that
 * sees endless create/destroy churn never needs rebuilding, only growing.
 */
#ifndef GS_U64TAB_H
#define GS_U64TAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gs_u64slot {
	uint64_t key; /* 0: empty; accessed only with __atomic builtins */
	uint64_t val;
};

struct gs_u64tab {
	struct gs_u64slot *slots;
	size_t mask;  /* capacity - 1; capacity is a power of two */
	size_t count;
};

/* An empty table with room for at least `hint` keys. */
int gs_u64tab_init(struct gs_u64tab *t, size_t hint);
void gs_u64tab_free(struct gs_u64tab *t);

/* Lookup; safe for concurrent readers (see above). Returns true and *val
 * when key is present. */
bool gs_u64tab_get(const struct gs_u64tab *t, uint64_t key, uint64_t *val);

/* Whether inserting one more key keeps the load factor within bounds; when
 * it does not, the caller builds a larger table with gs_u64tab_rehash. */
bool gs_u64tab_has_room(const struct gs_u64tab *t);

/* Insert or overwrite. The table must have room (gs_u64tab_has_room) when
 * key is new. Returns true when key was new. */
bool gs_u64tab_put(struct gs_u64tab *t, uint64_t key, uint64_t val);

/* Remove; returns true and *val (may be NULL) when key was present. */
bool gs_u64tab_del(struct gs_u64tab *t, uint64_t key, uint64_t *val);

/* A new table twice as large holding every entry of `from`; `from` is left
 * untouched (a concurrent reader may still be inside it). */
int gs_u64tab_rehash(const struct gs_u64tab *from, struct gs_u64tab *to);

/* Visit every entry in slot order; stops at and returns the first non-zero
 * return of fn. The table must not change during the walk. */
int gs_u64tab_foreach(const struct gs_u64tab *t,
		      int (*fn)(uint64_t key, uint64_t val, void *arg), void *arg);

#endif
