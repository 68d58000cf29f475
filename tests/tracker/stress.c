/* SPDX-License-Identifier: Apache-2.0 */
#include "stress.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handlemap.h"
#include "tracker.h"

/* The first failure of any thread, kept. */
struct failure {
	pthread_mutex_t lock;
	bool failed;
	char *msg;
	size_t len;
};

static void fail(struct failure *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fail(struct failure *f, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&f->lock);
	if (!f->failed) {
		f->failed = true;
		va_start(ap, fmt);
		vsnprintf(f->msg, f->len, fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&f->lock);
}

static bool failed(struct failure *f)
{
	bool v;

	pthread_mutex_lock(&f->lock);
	v = f->failed;
	pthread_mutex_unlock(&f->lock);
	return v;
}

/* xorshift64*: each thread its own deterministic stream. */
static uint64_t rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dull;
}

/* ---- handle map ---------------------------------------------------------------- */

#define STABLE 2000
#define CHURN_LIVE 3000

static uint64_t stable_app(unsigned i)
{
	return 0x10000000ull + (uint64_t)i * 16;
}

static uint64_t stable_real(unsigned i)
{
	return 0x7f0000000000ull + (uint64_t)i * 16;
}

/* Writer w's pairs: app values in their own range; the real side is the
 * app value tagged 0x8 (as inserted) or 0xc (after a rebind). */
static uint64_t churn_app(unsigned w, unsigned k)
{
	return ((uint64_t)(w + 1) << 40) + ((uint64_t)k << 4);
}

struct hm_ctx {
	struct gs_handlemap map;
	struct failure f;
	unsigned writers;
	unsigned iterations;
	unsigned live[64]; /* per writer, after the run */
	unsigned done_writers;
	pthread_mutex_t lock;
};

struct hm_arg {
	struct hm_ctx *c;
	unsigned id;
};

static void *hm_writer(void *p)
{
	struct hm_arg *a = p;
	struct hm_ctx *c = a->c;
	uint64_t seed = 0x9e3779b97f4a7c15ull * (a->id + 1);
	unsigned char *state = calloc(CHURN_LIVE, 1); /* 0 absent, 1 |8, 2 |0xc */
	unsigned live = 0;

	for (unsigned it = 0; it < c->iterations && !failed(&c->f); it++) {
		unsigned k = (unsigned)(rnd(&seed) % CHURN_LIVE);
		uint64_t app = churn_app(a->id, k);
		int rc;

		switch (state[k]) {
		case 0:
			rc = gs_hmap_insert(&c->map, app, app | 8);
			if (rc) {
				fail(&c->f, "insert %#llx: %d", (unsigned long long)app, rc);
				break;
			}
			state[k] = 1;
			live++;
			break;
		case 1:
			if (rnd(&seed) & 1) {
				rc = gs_hmap_rebind(&c->map, app, app | 0xc);
				if (rc)
					fail(&c->f, "rebind %#llx: %d", (unsigned long long)app, rc);
				state[k] = 2;
				break;
			}
			/* fall through */
		case 2:
			rc = gs_hmap_remove(&c->map, app);
			if (rc)
				fail(&c->f, "remove %#llx: %d", (unsigned long long)app, rc);
			state[k] = 0;
			live--;
			break;
		}
	}
	/* The writer's own view must match the map once it stops. */
	for (unsigned k = 0; k < CHURN_LIVE && !failed(&c->f); k++) {
		uint64_t app = churn_app(a->id, k), real = 0, back = 0;
		int rc = gs_hmap_to_real(&c->map, app, &real);

		if (state[k] == 0 && rc != -ENOENT)
			fail(&c->f, "removed %#llx still maps", (unsigned long long)app);
		if (state[k] && (rc || real != (app | (state[k] == 1 ? 8u : 0xcu))))
			fail(&c->f, "%#llx maps to %#llx (rc %d)", (unsigned long long)app,
			     (unsigned long long)real, rc);
		if (state[k] && (gs_hmap_to_app(&c->map, real, &back) || back != app))
			fail(&c->f, "reverse of %#llx wrong", (unsigned long long)real);
	}
	pthread_mutex_lock(&c->lock);
	c->live[a->id] = live;
	c->done_writers++;
	pthread_mutex_unlock(&c->lock);
	free(state);
	return NULL;
}

static bool writers_done(struct hm_ctx *c)
{
	bool d;

	pthread_mutex_lock(&c->lock);
	d = c->done_writers == c->writers;
	pthread_mutex_unlock(&c->lock);
	return d;
}

static void *hm_reader(void *p)
{
	struct hm_arg *a = p;
	struct hm_ctx *c = a->c;
	uint64_t seed = 0xd1b54a32d192ed03ull * (a->id + 7);

	while (!writers_done(c) && !failed(&c->f)) {
		for (unsigned n = 0; n < 256; n++) {
			unsigned i = (unsigned)(rnd(&seed) % STABLE);
			unsigned w = (unsigned)(rnd(&seed) % c->writers);
			unsigned k = (unsigned)(rnd(&seed) % CHURN_LIVE);
			uint64_t v = 0, app = churn_app(w, k);
			int rc;

			if (gs_hmap_to_real(&c->map, stable_app(i), &v) || v != stable_real(i))
				fail(&c->f, "stable %u: got %#llx", i, (unsigned long long)v);
			if (gs_hmap_to_app(&c->map, stable_real(i), &v) || v != stable_app(i))
				fail(&c->f, "stable reverse %u: got %#llx", i, (unsigned long long)v);
			rc = gs_hmap_to_real(&c->map, app, &v);
			if (rc == 0 && v != (app | 8) && v != (app | 0xc))
				fail(&c->f, "churn %#llx: got %#llx", (unsigned long long)app,
				     (unsigned long long)v);
			else if (rc && rc != -ENOENT)
				fail(&c->f, "churn lookup: %d", rc);
			rc = gs_hmap_to_app(&c->map, app | 8, &v);
			if (rc == 0 && v != app)
				fail(&c->f, "churn reverse %#llx: got %#llx",
				     (unsigned long long)(app | 8), (unsigned long long)v);
		}
	}
	return NULL;
}

int trk_stress_handlemap(unsigned readers, unsigned writers, unsigned iterations, char *err,
			 size_t errlen)
{
	struct hm_ctx *c = calloc(1, sizeof(*c));
	pthread_t th[128];
	struct hm_arg args[128];
	unsigned n = 0, expect = STABLE;
	int ret = 0;

	if (!c || readers + writers > 128 || writers > 64 || writers == 0) {
		snprintf(err, errlen, "bad arguments");
		free(c);
		return -1;
	}
	pthread_mutex_init(&c->f.lock, NULL);
	pthread_mutex_init(&c->lock, NULL);
	c->f.msg = err;
	c->f.len = errlen;
	c->writers = writers;
	c->iterations = iterations;
	gs_hmap_init(&c->map, "stress");
	for (unsigned i = 0; i < STABLE; i++)
		if (gs_hmap_insert(&c->map, stable_app(i), stable_real(i)))
			fail(&c->f, "stable insert %u", i);
	for (unsigned i = 0; i < writers + readers; i++) {
		args[i].c = c;
		args[i].id = i < writers ? i : i - writers;
		if (pthread_create(&th[i], NULL, i < writers ? hm_writer : hm_reader, &args[i]))
			break;
		n++;
	}
	for (unsigned i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	if (n != writers + readers)
		fail(&c->f, "could not start the threads");
	for (unsigned w = 0; w < writers; w++)
		expect += c->live[w];
	if (!failed(&c->f) && gs_hmap_count(&c->map) != expect)
		fail(&c->f, "count %zu, expected %u", gs_hmap_count(&c->map), expect);
	ret = failed(&c->f) ? -1 : 0;
	gs_hmap_reclaim(&c->map);
	gs_hmap_destroy(&c->map);
	free(c);
	return ret;
}

/* ---- device map -------------------------------------------------------------------- */

#define DEVS 8

struct dm_ctx {
	struct gs_devmap map;
	struct failure f;
	unsigned iterations;
	bool stop;
	pthread_mutex_t lock;
};

static bool dm_stopped(struct dm_ctx *c)
{
	bool s;

	pthread_mutex_lock(&c->lock);
	s = c->stop;
	pthread_mutex_unlock(&c->lock);
	return s;
}

static void *dm_reader(void *p)
{
	struct dm_ctx *c = p;

	while (!dm_stopped(c) && !failed(&c->f)) {
		for (int app = 0; app < DEVS; app++) {
			int real = gs_devmap_to_real(&c->map, app);

			if (real < 0 || real >= DEVS)
				fail(&c->f, "app %d -> %d", app, real);
			if (gs_devmap_to_app(&c->map, real) < 0)
				fail(&c->f, "real %d has no app ordinal", real);
		}
	}
	return NULL;
}

int trk_stress_devmap(unsigned readers, unsigned iterations, char *err, size_t errlen)
{
	struct dm_ctx c = { .iterations = iterations };
	static const int perms[3][DEVS] = {
		{ 0, 1, 2, 3, 4, 5, 6, 7 },
		{ 7, 6, 5, 4, 3, 2, 1, 0 },
		{ 1, 0, 3, 2, 5, 4, 7, 6 },
	};
	pthread_t th[64];
	unsigned n = 0;

	pthread_mutex_init(&c.f.lock, NULL);
	pthread_mutex_init(&c.lock, NULL);
	c.f.msg = err;
	c.f.len = errlen;
	gs_devmap_init(&c.map, DEVS);
	for (unsigned i = 0; i < readers && i < 64; i++, n++)
		if (pthread_create(&th[i], NULL, dm_reader, &c))
			break;
	for (unsigned it = 0; it < iterations && !failed(&c.f); it++)
		if (gs_devmap_set(&c.map, perms[it % 3], DEVS))
			fail(&c.f, "set failed");
	pthread_mutex_lock(&c.lock);
	c.stop = true;
	pthread_mutex_unlock(&c.lock);
	for (unsigned i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	/* The last permutation, exactly. */
	for (int app = 0; app < DEVS && iterations; app++) {
		int want = perms[(iterations - 1) % 3][app];

		if (gs_devmap_to_real(&c.map, app) != want || gs_devmap_to_app(&c.map, want) != app)
			fail(&c.f, "final map wrong at %d", app);
	}
	return failed(&c.f) ? -1 : 0;
}

/* ---- records against a reference model --------------------------------------------- */

#define M_CTX 4
#define M_STREAM 64
#define M_EVENT 64
#define M_MODULE 8
#define M_FUNC 64
#define M_ALLOC 64
#define M_RESV 16
#define M_UNSUP 32

/* A minimal PTX text: a module whose image copies but that holds no code. */
static const char tiny_ptx[] = ".version 8.0\n.target sm_80\n.address_size 64\n";

struct pair {
	uint64_t h;
	uint64_t parent;
	uint64_t size;
};

struct model {
	unsigned id;
	uint64_t seed;
	uint64_t counter;
	uint64_t ctx[M_CTX];
	unsigned nctx;
	struct pair stream[M_STREAM], event[M_EVENT], module[M_MODULE], func[M_FUNC];
	struct pair alloc[M_ALLOC], resv[M_RESV], unsup[M_UNSUP];
	unsigned nstream, nevent, nmodule, nfunc, nalloc, nresv, nunsup;
	uint64_t alloc_bytes;
};

struct rec_ctx {
	struct failure f;
	unsigned threads;
	unsigned operations;
	unsigned verify_every;
	struct model *models;
};

/* Thread t's handles and addresses: its own 2^40 range, 16-aligned like
 * heap pointers, never reused. */
static uint64_t next_handle(struct model *m)
{
	return ((uint64_t)(m->id + 1) << 44) | (++m->counter << 4);
}

static uint64_t next_addr(struct model *m, uint64_t span)
{
	return ((uint64_t)(m->id + 1) << 40) + (++m->counter) * span;
}

static void pair_del(struct pair *v, unsigned *n, unsigned i)
{
	v[i] = v[--*n];
}

/* Drop the model's entries whose parent is `parent`, calling back for each
 * (cascades of their own). */
static void drop_children(struct pair *v, unsigned *n, uint64_t parent,
			  void (*each)(struct model *, const struct pair *), struct model *m)
{
	for (unsigned i = 0; i < *n;) {
		if (v[i].parent == parent) {
			if (each)
				each(m, &v[i]);
			pair_del(v, n, i);
		} else {
			i++;
		}
	}
}

static void module_gone(struct model *m, const struct pair *mod)
{
	drop_children(m->func, &m->nfunc, mod->h, NULL, NULL);
}

static void alloc_gone(struct model *m, const struct pair *a)
{
	m->alloc_bytes -= a->size;
}

static int visit_exists(const struct gs_rec *r, void *arg)
{
	(void)r;
	(void)arg;
	return 1;
}

static bool exists(enum gs_kind kind, uint64_t app)
{
	return gs_trk_with(kind, app, visit_exists, NULL) == 1;
}

static void op(struct rec_ctx *c, struct model *m)
{
	unsigned what = (unsigned)(rnd(&m->seed) % 20);
	uint64_t h, app;
	int rc;

	switch (what) {
	case 0: /* context create */
		if (m->nctx == M_CTX)
			break;
		h = next_handle(m);
		rc = gs_trk_ctx_created((CUcontext)(uintptr_t)h, (int)(m->id % 4), 0, NULL,
					(CUcontext *)&app);
		if (rc || app != h)
			fail(&c->f, "ctx create: %d", rc);
		m->ctx[m->nctx++] = h;
		break;
	case 1: { /* context destroy, with everything in it */
		if (m->nctx == 0 || rnd(&m->seed) % 4)
			break;
		unsigned i = (unsigned)(rnd(&m->seed) % m->nctx);

		h = m->ctx[i];
		rc = gs_trk_ctx_destroyed((CUcontext)(uintptr_t)h);
		if (rc)
			fail(&c->f, "ctx destroy: %d", rc);
		m->ctx[i] = m->ctx[--m->nctx];
		drop_children(m->stream, &m->nstream, h, NULL, NULL);
		drop_children(m->event, &m->nevent, h, NULL, NULL);
		drop_children(m->module, &m->nmodule, h, module_gone, m);
		drop_children(m->alloc, &m->nalloc, h, alloc_gone, m);
		if (exists(GS_KIND_CTX, h))
			fail(&c->f, "destroyed ctx still recorded");
		break;
	}
	case 2:
	case 3: /* stream create */
		if (m->nctx == 0 || m->nstream == M_STREAM)
			break;
		h = next_handle(m);
		m->stream[m->nstream].parent = m->ctx[rnd(&m->seed) % m->nctx];
		rc = gs_trk_stream_created((CUcontext)(uintptr_t)m->stream[m->nstream].parent,
					   (CUstream)(uintptr_t)h, 0, -1, true, (CUstream *)&app);
		if (rc || app != h)
			fail(&c->f, "stream create: %d", rc);
		m->stream[m->nstream++].h = h;
		break;
	case 4: /* stream destroy */
		if (m->nstream == 0)
			break;
		{
			unsigned i = (unsigned)(rnd(&m->seed) % m->nstream);

			rc = gs_trk_stream_destroyed((CUstream)(uintptr_t)m->stream[i].h);
			if (rc)
				fail(&c->f, "stream destroy: %d", rc);
			pair_del(m->stream, &m->nstream, i);
		}
		break;
	case 5: /* event create */
		if (m->nctx == 0 || m->nevent == M_EVENT)
			break;
		h = next_handle(m);
		m->event[m->nevent].parent = m->ctx[rnd(&m->seed) % m->nctx];
		rc = gs_trk_event_created((CUcontext)(uintptr_t)m->event[m->nevent].parent,
					  (CUevent)(uintptr_t)h, CU_EVENT_DISABLE_TIMING, false,
					  (CUevent *)&app);
		if (rc || app != h)
			fail(&c->f, "event create: %d", rc);
		m->event[m->nevent++].h = h;
		break;
	case 6: /* event destroy */
		if (m->nevent == 0)
			break;
		{
			unsigned i = (unsigned)(rnd(&m->seed) % m->nevent);

			rc = gs_trk_event_destroyed((CUevent)(uintptr_t)m->event[i].h);
			if (rc)
				fail(&c->f, "event destroy: %d", rc);
			pair_del(m->event, &m->nevent, i);
		}
		break;
	case 7: { /* module load */
		struct gs_module_desc d = {
			.device = (int)(m->id % 4),
			.source = GS_MODSRC_DATA,
			.image = tiny_ptx,
		};

		if (m->nctx == 0 || m->nmodule == M_MODULE)
			break;
		h = next_handle(m);
		m->module[m->nmodule].parent = m->ctx[rnd(&m->seed) % m->nctx];
		d.ctx = (CUcontext)(uintptr_t)m->module[m->nmodule].parent;
		rc = gs_trk_module_loaded(&d, (CUmodule)(uintptr_t)h, (CUmodule *)&app);
		if (rc || app != h)
			fail(&c->f, "module load: %d", rc);
		m->module[m->nmodule++].h = h;
		break;
	}
	case 8: /* module unload */
		if (m->nmodule == 0 || rnd(&m->seed) % 3)
			break;
		{
			unsigned i = (unsigned)(rnd(&m->seed) % m->nmodule);

			rc = gs_trk_module_unloaded((CUmodule)(uintptr_t)m->module[i].h);
			if (rc)
				fail(&c->f, "module unload: %d", rc);
			module_gone(m, &m->module[i]);
			pair_del(m->module, &m->nmodule, i);
		}
		break;
	case 9:
	case 10: /* function: a new one, or a repeated look-up */
		if (m->nmodule == 0)
			break;
		if (m->nfunc && rnd(&m->seed) % 3 == 0) {
			const struct pair *f = &m->func[rnd(&m->seed) % m->nfunc];

			rc = gs_trk_function_found((CUmodule)(uintptr_t)f->parent, "k",
						   (CUfunction)(uintptr_t)f->h, (CUfunction *)&app);
			if (rc != 1 || app != f->h)
				fail(&c->f, "repeated function look-up: %d", rc);
			break;
		}
		if (m->nfunc == M_FUNC)
			break;
		h = next_handle(m);
		m->func[m->nfunc].parent = m->module[rnd(&m->seed) % m->nmodule].h;
		rc = gs_trk_function_found((CUmodule)(uintptr_t)m->func[m->nfunc].parent, "k",
					   (CUfunction)(uintptr_t)h, (CUfunction *)&app);
		if (rc || app != h)
			fail(&c->f, "function: %d", rc);
		m->func[m->nfunc++].h = h;
		break;
	case 11:
	case 12: { /* allocation */
		struct gs_alloc_desc d = { 0 }, got;

		if (m->nctx == 0 || m->nalloc == M_ALLOC)
			break;
		d.addr = next_addr(m, 1 << 20);
		d.size = 512 + rnd(&m->seed) % (1 << 19);
		d.ctx = (CUcontext)(uintptr_t)m->ctx[rnd(&m->seed) % m->nctx];
		d.device = (int)(m->id % 4);
		rc = gs_trk_alloc_add(&d);
		if (rc)
			fail(&c->f, "alloc add: %d", rc);
		if (gs_trk_alloc_find(d.addr + d.size - 1, &got) || got.addr != d.addr)
			fail(&c->f, "alloc find");
		if (gs_trk_alloc_find(d.addr + d.size, &got) == 0 && got.addr == d.addr)
			fail(&c->f, "alloc find past the end");
		m->alloc[m->nalloc++] = (struct pair){ d.addr, (uintptr_t)d.ctx, d.size };
		m->alloc_bytes += d.size;
		break;
	}
	case 13: /* free */
		if (m->nalloc == 0)
			break;
		{
			unsigned i = (unsigned)(rnd(&m->seed) % m->nalloc);
			struct gs_alloc_desc got;

			rc = gs_trk_alloc_remove(m->alloc[i].h, &got);
			if (rc || got.size != m->alloc[i].size)
				fail(&c->f, "alloc remove: %d", rc);
			alloc_gone(m, &m->alloc[i]);
			pair_del(m->alloc, &m->nalloc, i);
		}
		break;
	case 14: /* reservation */
		if (m->nresv == M_RESV)
			break;
		h = next_addr(m, 64 << 20);
		rc = gs_trk_reserve_add(h, 32 << 20, 0, 0, 0, GS_OWNER_APP);
		if (rc)
			fail(&c->f, "reserve: %d", rc);
		m->resv[m->nresv++] = (struct pair){ h, 0, 32 << 20 };
		break;
	case 15:
		if (m->nresv == 0)
			break;
		{
			unsigned i = (unsigned)(rnd(&m->seed) % m->nresv);

			rc = gs_trk_reserve_free(m->resv[i].h, m->resv[i].size);
			if (rc)
				fail(&c->f, "reserve free: %d", rc);
			pair_del(m->resv, &m->nresv, i);
		}
		break;
	case 16:
	case 17: /* an unsupported object */
		if (m->nunsup == M_UNSUP)
			break;
		h = next_handle(m);
		rc = gs_trk_unsup_add(GS_UNSUP_GRAPH, h, 0, NULL, 0, "stress");
		if (rc)
			fail(&c->f, "unsupported add: %d", rc);
		m->unsup[m->nunsup++].h = h;
		break;
	default:
		if (m->nunsup == 0)
			break;
		{
			unsigned i = (unsigned)(rnd(&m->seed) % m->nunsup);

			rc = gs_trk_unsup_remove(GS_UNSUP_GRAPH, m->unsup[i].h);
			if (rc)
				fail(&c->f, "unsupported remove: %d", rc);
			pair_del(m->unsup, &m->nunsup, i);
		}
		break;
	}
}

/* Everything thread m made is recorded, with app == real. */
static void check_model(struct rec_ctx *c, const struct model *m)
{
	static const struct {
		enum gs_kind kind;
		size_t off, count;
	} sets[] = {
		{ GS_KIND_STREAM, offsetof(struct model, stream), offsetof(struct model, nstream) },
		{ GS_KIND_EVENT, offsetof(struct model, event), offsetof(struct model, nevent) },
		{ GS_KIND_MODULE, offsetof(struct model, module), offsetof(struct model, nmodule) },
		{ GS_KIND_FUNCTION, offsetof(struct model, func), offsetof(struct model, nfunc) },
		{ GS_KIND_ALLOC, offsetof(struct model, alloc), offsetof(struct model, nalloc) },
		{ GS_KIND_RESERVATION, offsetof(struct model, resv), offsetof(struct model, nresv) },
		{ GS_KIND_UNSUPPORTED, offsetof(struct model, unsup), offsetof(struct model, nunsup) },
	};

	for (unsigned i = 0; i < m->nctx; i++)
		if (!exists(GS_KIND_CTX, m->ctx[i]))
			fail(&c->f, "thread %u: ctx %#llx missing", m->id,
			     (unsigned long long)m->ctx[i]);
	for (size_t s = 0; s < sizeof(sets) / sizeof(sets[0]); s++) {
		const struct pair *v = (const void *)((const char *)m + sets[s].off);
		unsigned n = *(const unsigned *)(const void *)((const char *)m + sets[s].count);

		for (unsigned i = 0; i < n; i++)
			if (!exists(sets[s].kind, v[i].h))
				fail(&c->f, "thread %u: %s %#llx missing", m->id,
				     gs_kind_name(sets[s].kind), (unsigned long long)v[i].h);
	}
}

/* The tracker holds exactly the union of the models. */
static void check_totals(struct rec_ctx *c)
{
	struct gs_trk_stats st;
	size_t want[GS_KIND_COUNT] = { 0 };
	uint64_t bytes = 0;

	for (unsigned t = 0; t < c->threads; t++) {
		const struct model *m = &c->models[t];

		want[GS_KIND_CTX] += m->nctx;
		want[GS_KIND_STREAM] += m->nstream;
		want[GS_KIND_EVENT] += m->nevent;
		want[GS_KIND_MODULE] += m->nmodule;
		want[GS_KIND_FUNCTION] += m->nfunc;
		want[GS_KIND_ALLOC] += m->nalloc;
		want[GS_KIND_RESERVATION] += m->nresv;
		want[GS_KIND_UNSUPPORTED] += m->nunsup;
		bytes += m->alloc_bytes;
		check_model(c, m);
	}
	gs_trk_get_stats(&st);
	for (int k = 0; k < GS_KIND_COUNT; k++)
		if (st.count[k] != want[k])
			fail(&c->f, "%s: %zu recorded, %zu live", gs_kind_name(k), st.count[k],
			     want[k]);
	if (st.bytes[GS_KIND_ALLOC] != bytes)
		fail(&c->f, "allocation bytes %llu, expected %llu",
		     (unsigned long long)st.bytes[GS_KIND_ALLOC], (unsigned long long)bytes);
	if (st.unsup_count[GS_UNSUP_GRAPH] != want[GS_KIND_UNSUPPORTED])
		fail(&c->f, "graph count");
}

struct rec_arg {
	struct rec_ctx *c;
	struct model *m;
};

static void *rec_thread(void *p)
{
	struct rec_arg *a = p;

	for (unsigned i = 0; i < a->c->operations && !failed(&a->c->f); i++) {
		op(a->c, a->m);
		if (a->c->threads == 1 && a->c->verify_every && i % a->c->verify_every == 0)
			check_totals(a->c);
		else if (i % 512 == 0)
			check_model(a->c, a->m);
	}
	return NULL;
}

int trk_stress_records(unsigned threads, unsigned operations, unsigned verify_every,
		       unsigned seed, char *err, size_t errlen)
{
	struct rec_ctx c = { .threads = threads, .operations = operations,
			     .verify_every = verify_every };
	struct rec_arg args[64];
	pthread_t th[64];
	unsigned n = 0;

	if (threads == 0 || threads > 64) {
		snprintf(err, errlen, "bad thread count");
		return -1;
	}
	pthread_mutex_init(&c.f.lock, NULL);
	c.f.msg = err;
	c.f.len = errlen;
	c.models = calloc(threads, sizeof(*c.models));
	if (!c.models) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	gs_trk_clear();
	for (unsigned t = 0; t < threads; t++) {
		c.models[t].id = t;
		c.models[t].seed = 0x853c49e6748fea9bull ^ ((uint64_t)seed << 32) ^ (t + 1);
		args[t] = (struct rec_arg){ &c, &c.models[t] };
		if (pthread_create(&th[t], NULL, rec_thread, &args[t]))
			break;
		n++;
	}
	for (unsigned t = 0; t < n; t++)
		pthread_join(th[t], NULL);
	if (n != threads)
		fail(&c.f, "could not start the threads");
	if (!failed(&c.f))
		check_totals(&c);
	free(c.models);
	gs_trk_clear();
	return failed(&c.f) ? -1 : 0;
}

/* ---- library layouts parsed while the library comes and goes ----------------------- */

struct lib_ctx {
	struct failure f;
	pthread_mutex_t lock;
	bool stop;
};

static bool lib_stopped(struct lib_ctx *c)
{
	bool s;

	pthread_mutex_lock(&c->lock);
	s = c->stop;
	pthread_mutex_unlock(&c->lock);
	return s;
}

#define LIB_HANDLE 0x4000
#define LIB_KERNEL 0x4100

static void *lib_reader(void *p)
{
	static const unsigned sms[] = { 80, 86, 89, 90, 100 };
	struct lib_ctx *c = p;
	unsigned i = 0;

	while (!lib_stopped(c) && !failed(&c->f)) {
		struct gs_kparam params[4];
		size_t bytes = 0;
		unsigned sm = sms[i++ % 5];
		int n = gs_trk_kernel_params((CUkernel)(uintptr_t)LIB_KERNEL, sm, params, 4, &bytes);

		if (n == 4 && (bytes != 32 || params[2].offset != 16))
			fail(&c->f, "sm_%u: wrong layout", sm);
		else if (n != 4 && n != -ENOENT)
			fail(&c->f, "sm_%u: %d", sm, n);
	}
	return NULL;
}

int trk_stress_library(const void *image, size_t size, unsigned threads, unsigned rounds,
		       char *err, size_t errlen)
{
	struct lib_ctx c = { 0 };
	struct gs_library_desc d = { .source = GS_LIBSRC_DATA, .image = image,
				     .image_size = size };
	pthread_t th[32];
	unsigned n = 0;

	pthread_mutex_init(&c.f.lock, NULL);
	pthread_mutex_init(&c.lock, NULL);
	c.f.msg = err;
	c.f.len = errlen;
	gs_trk_clear();
	for (unsigned t = 0; t < threads && t < 32; t++, n++)
		if (pthread_create(&th[t], NULL, lib_reader, &c))
			break;
	for (unsigned r = 0; r < rounds && !failed(&c.f); r++) {
		CUlibrary lib;
		CUkernel k;

		/* A fresh load each round: no layout parsed yet, so readers
		 * race the parse with the unload below. */
		if (gs_trk_library_loaded(&d, (CUlibrary)(uintptr_t)LIB_HANDLE, &lib) ||
		    gs_trk_kernel_found(lib, "trk_kernel", (CUkernel)(uintptr_t)LIB_KERNEL, &k) < 0)
			fail(&c.f, "round %u: load", r);
		for (volatile unsigned spin = 0; spin < 20000; spin++)
			;
		if (gs_trk_library_unloaded(lib))
			fail(&c.f, "round %u: unload", r);
	}
	pthread_mutex_lock(&c.lock);
	c.stop = true;
	pthread_mutex_unlock(&c.lock);
	for (unsigned t = 0; t < n; t++)
		pthread_join(th[t], NULL);
	if (!failed(&c.f) && (gs_trk_count(GS_KIND_LIBRARY) || gs_trk_count(GS_KIND_KERNEL)))
		fail(&c.f, "records left behind");
	gs_trk_clear();
	return failed(&c.f) ? -1 : 0;
}
