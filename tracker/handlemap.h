/* SPDX-License-Identifier: Apache-2.0 */
/*
 * handlemap: translation between the handles the application sees and the
 * handles of the driver the process currently runs on (DESIGN.md §4).
 *
 * Until the first migration every handle is its own translation; the tracker
 * still records each pair here as objects come and go, so that a thaw only
 * has to rebind the real side and switch translation on.
 *
 * One map per handle kind, both directions (app -> real for arguments,
 * real -> app for handles the driver returns). Lookups are on the call path
 * after a migration, so they take no lock and write no shared memory: a
 * sequence counter tells a reader that a writer overlapped it, and it
 * retries. Writers (object creation and destruction) serialise on a mutex.
 *
 * Handle value 0 (NULL) is never mapped: lookups of 0 miss, inserts of 0 are
 * rejected.
 */
#ifndef GS_HANDLEMAP_H
#define GS_HANDLEMAP_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gs_hmap_gen;

/* Fields are private; the struct is public so maps can live in static
 * storage. */
struct gs_handlemap {
	struct gs_hmap_gen *gen;  /* current tables (atomic pointer) */
	unsigned seq;             /* odd while a writer is changing the tables */
	pthread_mutex_t lock;     /* serialises writers */
	struct gs_hmap_gen *retired; /* outgrown tables readers may still use */
	uint64_t next_synthetic;
	const char *name;
};

int gs_hmap_init(struct gs_handlemap *m, const char *name);
/* Frees everything; no reader or writer may use the map any more. */
void gs_hmap_destroy(struct gs_handlemap *m);

/* Record app <-> real. -EINVAL for 0, -EEXIST when app or real is already
 * mapped (the map is left unchanged), -ENOMEM. */
int gs_hmap_insert(struct gs_handlemap *m, uint64_t app, uint64_t real);

/*
 * A handle the driver just created: choose the value the application will
 * see and record the pair. The value is `real` itself unless `real` is a
 * live app-visible handle (possible after a migration: the new driver may
 * hand out a value the old one gave another, still live, object), in which
 * case it is a fresh synthetic value (gs_hmap_is_synthetic).
 *
 * When `real` is already mapped (drivers return the same handle for repeated
 * look-ups, e.g. cuModuleGetFunction), *app is its existing app value and
 * the result is 1; a new pair gives 0. -EINVAL for 0, -ENOMEM.
 */
int gs_hmap_adopt(struct gs_handlemap *m, uint64_t real, uint64_t *app);

/* Forget the pair whose app side is `app`. Returns 0, or -ENOENT. */
int gs_hmap_remove(struct gs_handlemap *m, uint64_t app);

/* Point an app handle at a new real handle (thaw re-created the object).
 * -ENOENT when app is not mapped, -EEXIST when new_real already belongs to
 * another app handle, -EINVAL for 0. */
int gs_hmap_rebind(struct gs_handlemap *m, uint64_t app, uint64_t new_real);

/* Lock-free lookups. 0 with the translation, or -ENOENT (the caller passes
 * unknown values through untouched: special handles such as
 * CU_STREAM_LEGACY are never mapped). */
int gs_hmap_to_real(struct gs_handlemap *m, uint64_t app, uint64_t *real);
int gs_hmap_to_app(struct gs_handlemap *m, uint64_t real, uint64_t *app);

size_t gs_hmap_count(struct gs_handlemap *m);

/* Visit every pair under the writer lock (fn must not modify this map).
 * Stops at and returns the first non-zero return of fn. */
int gs_hmap_foreach(struct gs_handlemap *m,
		    int (*fn)(uint64_t app, uint64_t real, void *arg), void *arg);

/* Free tables that growth retired. Lookups that started earlier may still be
 * reading them, so call this only when no lookup can be in flight (the gate
 * closed); until then retired memory is bounded by the current table size,
 * since tables only ever double. */
void gs_hmap_reclaim(struct gs_handlemap *m);

/* Synthetic app values are non-canonical x86-64/AArch64 addresses (bits 63..48
 * neither all zero nor all one), so no driver that returns heap pointers as
 * handles can ever produce one. */
#define GS_HMAP_SYNTHETIC_BASE 0x5ee1000000000000ull
#define GS_HMAP_SYNTHETIC_MASK 0xffff000000000000ull
static inline bool gs_hmap_is_synthetic(uint64_t v)
{
	return (v & GS_HMAP_SYNTHETIC_MASK) == GS_HMAP_SYNTHETIC_BASE;
}

/*
 * The device-ordinal map: CUdevice values the application sees (app
 * ordinals, 0..count-1, as it enumerated them at start) -> ordinals of the
 * driver now underneath. Identity at start. Lookups are single atomic loads;
 * changes happen only while the process is frozen.
 */
#define GS_MAX_DEVICES 64

struct gs_devmap {
	int count;                      /* app-visible device count */
	int to_real[GS_MAX_DEVICES];    /* -1: unmapped */
	int to_app[GS_MAX_DEVICES];     /* indexed by real ordinal; -1: none */
	pthread_mutex_t lock;
};

/* Identity map of `count` devices (0 <= count <= GS_MAX_DEVICES). */
int gs_devmap_init(struct gs_devmap *d, int count);
/* Back to identity with a new device count (an initialised map). */
int gs_devmap_reset(struct gs_devmap *d, int count);
int gs_devmap_count(struct gs_devmap *d);
/* Real ordinal of app ordinal `app`, or -ENODEV. */
int gs_devmap_to_real(struct gs_devmap *d, int app);
/* App ordinal of real ordinal `real`, or -ENODEV (a device the application
 * does not see). */
int gs_devmap_to_app(struct gs_devmap *d, int real);
/* Replace the whole map: app ordinal i -> real[i] for i < d->count. Rejects
 * (-EINVAL) out-of-range ordinals and two app devices on one real device,
 * leaving the map unchanged. */
int gs_devmap_set(struct gs_devmap *d, const int *real, int count);

#endif
