/* SPDX-License-Identifier: Apache-2.0 */
#include "handlemap.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "u64tab.h"

/* Both directions grow together and are published as one pointer, so a
 * reader never pairs a new forward table with an old reverse one. */
struct gs_hmap_gen {
	struct gs_u64tab fwd; /* app -> real */
	struct gs_u64tab rev; /* real -> app */
	struct gs_hmap_gen *retired_next;
};

#define HMAP_INITIAL 64

static struct gs_hmap_gen *gen_new(size_t hint)
{
	struct gs_hmap_gen *g = calloc(1, sizeof(*g));

	if (!g)
		return NULL;
	if (gs_u64tab_init(&g->fwd, hint) || gs_u64tab_init(&g->rev, hint)) {
		gs_u64tab_free(&g->fwd);
		free(g);
		return NULL;
	}
	return g;
}

static void gen_free(struct gs_hmap_gen *g)
{
	gs_u64tab_free(&g->fwd);
	gs_u64tab_free(&g->rev);
	free(g);
}

int gs_hmap_init(struct gs_handlemap *m, const char *name)
{
	memset(m, 0, sizeof(*m));
	m->gen = gen_new(HMAP_INITIAL);
	if (!m->gen)
		return -ENOMEM;
	pthread_mutex_init(&m->lock, NULL);
	m->next_synthetic = GS_HMAP_SYNTHETIC_BASE;
	m->name = name;
	return 0;
}

void gs_hmap_destroy(struct gs_handlemap *m)
{
	if (!m->gen)
		return;
	gs_hmap_reclaim(m);
	gen_free(m->gen);
	m->gen = NULL;
	pthread_mutex_destroy(&m->lock);
}

/*
 * Sequence lock, written so that it needs no standalone fences (which
 * ThreadSanitizer cannot model): the writer makes the counter odd, then every
 * slot store is a release; a reader's slot loads are acquires. A reader that
 * observes any store of a write section therefore also observes the odd
 * counter (or a later value) when it re-reads it, and retries.
 */
static void write_begin(struct gs_handlemap *m)
{
	unsigned s = __atomic_load_n(&m->seq, __ATOMIC_RELAXED);

	__atomic_store_n(&m->seq, s + 1, __ATOMIC_RELAXED);
}

static void write_end(struct gs_handlemap *m)
{
	unsigned s = __atomic_load_n(&m->seq, __ATOMIC_RELAXED);

	__atomic_store_n(&m->seq, s + 1, __ATOMIC_RELEASE);
}

/* Make room for one more pair; called with the lock held, outside a write
 * section (building the new tables does not touch the published ones). */
static int ensure_room(struct gs_handlemap *m)
{
	struct gs_hmap_gen *old = m->gen, *g;

	if (gs_u64tab_has_room(&old->fwd) && gs_u64tab_has_room(&old->rev))
		return 0;
	g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	if (gs_u64tab_rehash(&old->fwd, &g->fwd)) {
		free(g);
		return -ENOMEM;
	}
	if (gs_u64tab_rehash(&old->rev, &g->rev)) {
		gs_u64tab_free(&g->fwd);
		free(g);
		return -ENOMEM;
	}
	__atomic_store_n(&m->gen, g, __ATOMIC_RELEASE);
	/* A lookup that loaded the old pointer may still be probing it. */
	old->retired_next = m->retired;
	m->retired = old;
	return 0;
}

int gs_hmap_insert(struct gs_handlemap *m, uint64_t app, uint64_t real)
{
	uint64_t dummy;
	int rc;

	if (app == 0 || real == 0)
		return -EINVAL;
	pthread_mutex_lock(&m->lock);
	if (gs_u64tab_get(&m->gen->fwd, app, &dummy) ||
	    gs_u64tab_get(&m->gen->rev, real, &dummy)) {
		rc = -EEXIST;
		goto out;
	}
	rc = ensure_room(m);
	if (rc)
		goto out;
	write_begin(m);
	gs_u64tab_put(&m->gen->fwd, app, real);
	gs_u64tab_put(&m->gen->rev, real, app);
	write_end(m);
out:
	pthread_mutex_unlock(&m->lock);
	return rc;
}

/* The next synthetic value that is not a live app handle. Called with the
 * lock held. The counter steps by 16 so values look like aligned pointers to
 * code that checks. */
static uint64_t synthetic_next(struct gs_handlemap *m)
{
	uint64_t v, dummy;

	do {
		v = m->next_synthetic;
		m->next_synthetic += 16;
		if (!gs_hmap_is_synthetic(m->next_synthetic))
			m->next_synthetic = GS_HMAP_SYNTHETIC_BASE + 16;
	} while (v == GS_HMAP_SYNTHETIC_BASE || gs_u64tab_get(&m->gen->fwd, v, &dummy));
	return v;
}

int gs_hmap_adopt(struct gs_handlemap *m, uint64_t real, uint64_t *app)
{
	uint64_t existing, v;
	int rc;

	if (real == 0)
		return -EINVAL;
	pthread_mutex_lock(&m->lock);
	if (gs_u64tab_get(&m->gen->rev, real, &existing)) {
		*app = existing;
		rc = 1;
		goto out;
	}
	rc = ensure_room(m);
	if (rc)
		goto out;
	v = gs_u64tab_get(&m->gen->fwd, real, &existing) ? synthetic_next(m) : real;
	write_begin(m);
	gs_u64tab_put(&m->gen->fwd, v, real);
	gs_u64tab_put(&m->gen->rev, real, v);
	write_end(m);
	*app = v;
out:
	pthread_mutex_unlock(&m->lock);
	return rc;
}

int gs_hmap_remove(struct gs_handlemap *m, uint64_t app)
{
	uint64_t real;
	int rc = 0;

	pthread_mutex_lock(&m->lock);
	if (app == 0 || !gs_u64tab_get(&m->gen->fwd, app, &real)) {
		rc = -ENOENT;
		goto out;
	}
	write_begin(m);
	gs_u64tab_del(&m->gen->fwd, app, NULL);
	gs_u64tab_del(&m->gen->rev, real, NULL);
	write_end(m);
out:
	pthread_mutex_unlock(&m->lock);
	return rc;
}

int gs_hmap_rebind(struct gs_handlemap *m, uint64_t app, uint64_t new_real)
{
	uint64_t old_real, owner;
	int rc = 0;

	if (app == 0 || new_real == 0)
		return -EINVAL;
	pthread_mutex_lock(&m->lock);
	if (!gs_u64tab_get(&m->gen->fwd, app, &old_real)) {
		rc = -ENOENT;
		goto out;
	}
	if (old_real == new_real)
		goto out;
	if (gs_u64tab_get(&m->gen->rev, new_real, &owner)) {
		rc = -EEXIST;
		goto out;
	}
	/* One reverse entry leaves as one arrives: no growth needed. */
	write_begin(m);
	gs_u64tab_del(&m->gen->rev, old_real, NULL);
	gs_u64tab_put(&m->gen->rev, new_real, app);
	gs_u64tab_put(&m->gen->fwd, app, new_real);
	write_end(m);
out:
	pthread_mutex_unlock(&m->lock);
	return rc;
}

static int lookup(struct gs_handlemap *m, bool forward, uint64_t key, uint64_t *out)
{
	unsigned spins = 0;

	if (key == 0)
		return -ENOENT;
	for (;;) {
		unsigned s1 = __atomic_load_n(&m->seq, __ATOMIC_ACQUIRE);
		const struct gs_hmap_gen *g;
		uint64_t v = 0;
		bool hit;

		if (s1 & 1) {
			/* A writer holds the tables for a few slot stores;
			 * yield only if it was preempted mid-write. */
			if (++spins % 128 == 0)
				sched_yield();
			continue;
		}
		g = __atomic_load_n(&m->gen, __ATOMIC_ACQUIRE);
		hit = gs_u64tab_get(forward ? &g->fwd : &g->rev, key, &v);
		if (__atomic_load_n(&m->seq, __ATOMIC_RELAXED) != s1)
			continue;
		if (!hit)
			return -ENOENT;
		*out = v;
		return 0;
	}
}

int gs_hmap_to_real(struct gs_handlemap *m, uint64_t app, uint64_t *real)
{
	return lookup(m, true, app, real);
}

int gs_hmap_to_app(struct gs_handlemap *m, uint64_t real, uint64_t *app)
{
	return lookup(m, false, real, app);
}

size_t gs_hmap_count(struct gs_handlemap *m)
{
	size_t n;

	pthread_mutex_lock(&m->lock);
	n = m->gen->fwd.count;
	pthread_mutex_unlock(&m->lock);
	return n;
}

int gs_hmap_foreach(struct gs_handlemap *m,
		    int (*fn)(uint64_t app, uint64_t real, void *arg), void *arg)
{
	int rc;

	pthread_mutex_lock(&m->lock);
	rc = gs_u64tab_foreach(&m->gen->fwd, fn, arg);
	pthread_mutex_unlock(&m->lock);
	return rc;
}

void gs_hmap_reclaim(struct gs_handlemap *m)
{
	struct gs_hmap_gen *g, *next;

	pthread_mutex_lock(&m->lock);
	g = m->retired;
	m->retired = NULL;
	pthread_mutex_unlock(&m->lock);
	for (; g; g = next) {
		next = g->retired_next;
		gen_free(g);
	}
}

/* ---- device ordinals ------------------------------------------------------ */

static void devmap_identity(struct gs_devmap *d, int count)
{
	for (int i = 0; i < GS_MAX_DEVICES; i++) {
		__atomic_store_n(&d->to_real[i], i < count ? i : -1, __ATOMIC_RELAXED);
		__atomic_store_n(&d->to_app[i], i < count ? i : -1, __ATOMIC_RELAXED);
	}
	__atomic_store_n(&d->count, count, __ATOMIC_RELEASE);
}

int gs_devmap_init(struct gs_devmap *d, int count)
{
	if (count < 0 || count > GS_MAX_DEVICES)
		return -EINVAL;
	pthread_mutex_init(&d->lock, NULL);
	devmap_identity(d, count);
	return 0;
}

int gs_devmap_reset(struct gs_devmap *d, int count)
{
	if (count < 0 || count > GS_MAX_DEVICES)
		return -EINVAL;
	pthread_mutex_lock(&d->lock);
	devmap_identity(d, count);
	pthread_mutex_unlock(&d->lock);
	return 0;
}

int gs_devmap_count(struct gs_devmap *d)
{
	return __atomic_load_n(&d->count, __ATOMIC_ACQUIRE);
}

int gs_devmap_to_real(struct gs_devmap *d, int app)
{
	int r;

	if (app < 0 || app >= gs_devmap_count(d))
		return -ENODEV;
	r = __atomic_load_n(&d->to_real[app], __ATOMIC_ACQUIRE);
	return r < 0 ? -ENODEV : r;
}

int gs_devmap_to_app(struct gs_devmap *d, int real)
{
	int a;

	if (real < 0 || real >= GS_MAX_DEVICES)
		return -ENODEV;
	a = __atomic_load_n(&d->to_app[real], __ATOMIC_ACQUIRE);
	return a < 0 ? -ENODEV : a;
}

int gs_devmap_set(struct gs_devmap *d, const int *real, int count)
{
	int to_app[GS_MAX_DEVICES];

	if (count != gs_devmap_count(d))
		return -EINVAL;
	for (int r = 0; r < GS_MAX_DEVICES; r++)
		to_app[r] = -1;
	for (int i = 0; i < count; i++) {
		if (real[i] < 0 || real[i] >= GS_MAX_DEVICES || to_app[real[i]] >= 0)
			return -EINVAL;
		to_app[real[i]] = i;
	}
	/* Each entry is stored once, with its final value: a concurrent
	 * reader sees the old or the new answer, never a transient hole. */
	pthread_mutex_lock(&d->lock);
	for (int r = 0; r < GS_MAX_DEVICES; r++)
		__atomic_store_n(&d->to_app[r], to_app[r], __ATOMIC_RELEASE);
	for (int i = 0; i < count; i++)
		__atomic_store_n(&d->to_real[i], real[i], __ATOMIC_RELEASE);
	pthread_mutex_unlock(&d->lock);
	return 0;
}
