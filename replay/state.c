/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The replay state machine, the saved state of a released process, error
 * messages, handle placeholders, gpu-ps's status, and how each application
 * thread gets its current context back after a migration.
 */
#define GS_LOG_SUBSYS "replay"
#include "rp_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "gate.h"
#include "log.h"
#include "shim.h"
#include "thread.h"

struct rp_state rp = {
	.op_lock = PTHREAD_MUTEX_INITIALIZER,
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.state = GS_STATE_RUNNING,
	.placeholder = RP_PLACEHOLDER_BASE,
};

/* ---- states ------------------------------------------------------------------------ */

const char *gs_proc_state_name(enum gs_proc_state s)
{
	switch (s) {
	case GS_STATE_RUNNING:
		return "running";
	case GS_STATE_FROZEN:
		return "frozen";
	case GS_STATE_RELEASED:
		return "released";
	}
	return "unknown";
}

enum gs_proc_state gs_replay_state(void)
{
	enum gs_proc_state s;

	pthread_mutex_lock(&rp.lock);
	s = rp.state;
	pthread_mutex_unlock(&rp.lock);
	return s;
}

void rp_set_state(enum gs_proc_state s)
{
	pthread_mutex_lock(&rp.lock);
	if (rp.state != s)
		gs_info("process state: %s -> %s", gs_proc_state_name(rp.state),
			gs_proc_state_name(s));
	rp.state = s;
	pthread_mutex_unlock(&rp.lock);
}

int rp_op_begin(char **err)
{
	/* The control thread serialises operations; a second caller (a test,
	 * a tool racing another) is told, not queued behind a long dump. */
	if (pthread_mutex_trylock(&rp.op_lock) != 0)
		return rp_fail(err, -EBUSY, "another gpuswap operation is in progress in this "
			       "process; wait for it to finish and try again");
	return 0;
}

void rp_op_end(void)
{
	pthread_mutex_unlock(&rp.op_lock);
}

/* ---- errors ---------------------------------------------------------------------------- */

int rp_fail(char **err, int rc, const char *fmt, ...)
{
	char *msg = NULL;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	gs_error("%s", msg ? msg : fmt);
	if (err && !*err)
		*err = msg ? msg : strdup(fmt);
	else
		free(msg);
	return rc;
}

const char *rp_cu_name(CUresult rc)
{
	const char *name = NULL;

	if (gs_real.cuGetErrorName && gs_real.cuGetErrorName(rc, &name) == CUDA_SUCCESS && name)
		return name;
	return "CUDA error";
}

int rp_cu_errno(CUresult rc)
{
	switch (rc) {
	case CUDA_SUCCESS:
		return 0;
	case CUDA_ERROR_OUT_OF_MEMORY:
		return -ENOMEM;
	case CUDA_ERROR_INVALID_VALUE:
	case CUDA_ERROR_INVALID_HANDLE:
		return -EINVAL;
	case CUDA_ERROR_NOT_SUPPORTED:
		return -EOPNOTSUPP;
	case CUDA_ERROR_NO_BINARY_FOR_GPU:
	case CUDA_ERROR_INVALID_PTX:
	case CUDA_ERROR_UNSUPPORTED_PTX_VERSION:
		return -ENOEXEC;
	case CUDA_ERROR_ALREADY_MAPPED:
		return -EADDRINUSE;
	case CUDA_ERROR_NO_DEVICE:
	case CUDA_ERROR_INVALID_DEVICE:
		return -ENODEV;
	case CUDA_ERROR_NOT_FOUND:
		return -ENOENT;
	default:
		return -EIO;
	}
}

/* ---- growing arrays ------------------------------------------------------------------------ */

void *rp_vec_push(struct rp_vec *v)
{
	if (v->n == v->cap) {
		size_t cap = v->cap ? 2 * v->cap : 32;
		void *nv = realloc(v->v, cap * v->elem);
		if (!nv) {
			v->oom = true;
			return NULL;
		}
		v->v = nv;
		v->cap = cap;
	}
	return memset((char *)v->v + v->n++ * v->elem, 0, v->elem);
}

/* ---- index ------------------------------------------------------------------------------- */

static size_t index_slot(uint64_t key, size_t cap)
{
	/* Handles and addresses are aligned: mix the high bits down. */
	key ^= key >> 33;
	key *= 0xff51afd7ed558ccdull;
	key ^= key >> 33;
	return (size_t)key & (cap - 1);
}

int rp_index_put(struct rp_index *x, uint64_t key, uint64_t val)
{
	size_t i;

	if (!key)
		return -EINVAL;
	if (2 * (x->n + 1) > x->cap) {
		struct rp_index big = { .cap = x->cap ? 2 * x->cap : 64 };

		big.keys = calloc(big.cap, sizeof(*big.keys));
		big.vals = calloc(big.cap, sizeof(*big.vals));
		if (!big.keys || !big.vals) {
			free(big.keys);
			free(big.vals);
			return -ENOMEM;
		}
		for (size_t k = 0; k < x->cap; k++)
			if (x->keys[k])
				rp_index_put(&big, x->keys[k], x->vals[k]);
		rp_index_free(x);
		*x = big;
	}
	for (i = index_slot(key, x->cap); x->keys[i] && x->keys[i] != key; i = (i + 1) & (x->cap - 1))
		;
	if (!x->keys[i])
		x->n++;
	x->keys[i] = key;
	x->vals[i] = val;
	return 0;
}

bool rp_index_get(const struct rp_index *x, uint64_t key, uint64_t *val)
{
	if (!x->cap || !key)
		return false;
	for (size_t i = index_slot(key, x->cap); x->keys[i]; i = (i + 1) & (x->cap - 1)) {
		if (x->keys[i] == key) {
			*val = x->vals[i];
			return true;
		}
	}
	return false;
}

void rp_index_free(struct rp_index *x)
{
	free(x->keys);
	free(x->vals);
	memset(x, 0, sizeof(*x));
}

/* ---- saved state ------------------------------------------------------------------------ */

int rp_region_add(struct rp_saved *s, const struct rp_region *r)
{
	if (s->nregions == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 64;
		struct rp_region *v = realloc(s->regions, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		s->regions = v;
		s->cap = cap;
	}
	s->regions[s->nregions++] = *r;
	s->bytes += r->size;
	return 0;
}

void rp_region_drop_host(struct rp_region *r)
{
	long page = sysconf(_SC_PAGESIZE);

	if (r->host) {
		munmap(r->host, (r->size + (uint64_t)page - 1) & ~((uint64_t)page - 1));
		r->host = NULL;
	}
}

void rp_saved_free(struct rp_saved *s)
{
	for (size_t i = 0; i < s->nregions; i++) {
		rp_region_drop_host(&s->regions[i]);
		rp_stage_drop(&s->regions[i]);
		free(s->regions[i].name);
	}
	free(s->regions);
	free(s->image_dir);
	free(s->primaries);
	memset(s, 0, sizeof(*s));
}

/* ---- handles ---------------------------------------------------------------------------- */

/* Contexts first: everything else lives in one. Libraries before their
 * kernels and modules, modules before their functions. */
const enum gs_kind rp_handle_kinds[] = {
	GS_KIND_CTX,    GS_KIND_LIBRARY, GS_KIND_KERNEL, GS_KIND_MODULE,
	GS_KIND_FUNCTION, GS_KIND_STREAM, GS_KIND_EVENT,  GS_KIND_PHYS,
};
const unsigned rp_nhandle_kinds = sizeof(rp_handle_kinds) / sizeof(rp_handle_kinds[0]);

bool rp_is_placeholder(uint64_t v)
{
	return (v & GS_HMAP_SYNTHETIC_MASK) == RP_PLACEHOLDER_BASE;
}

uint64_t rp_to_real(enum gs_kind kind, uint64_t app)
{
	struct gs_handlemap *m = gs_trk_handlemap(kind);
	uint64_t real;

	return m && gs_hmap_to_real(m, app, &real) == 0 ? real : app;
}

struct handle_list {
	uint64_t *v;
	size_t n, cap;
	bool oom;
};

static int list_push(struct handle_list *l, uint64_t v)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 64;
		uint64_t *nv = realloc(l->v, cap * sizeof(*nv));
		if (!nv) {
			l->oom = true;
			return 1;
		}
		l->v = nv;
		l->cap = cap;
	}
	l->v[l->n++] = v;
	return 0;
}

static int collect_app(const struct gs_rec *rec, void *arg)
{
	const struct gs_phys_rec *p = GS_REC_AS(struct gs_phys_rec, GS_KIND_PHYS, rec);

	/* The arena's chunks come and go with gs_arena_detach/attach. */
	if (p && p->owner == GS_OWNER_SHIM)
		return 0;
	return list_push(arg, rec->app);
}

int rp_rebind_placeholders(char **err)
{
	for (unsigned k = 0; k < rp_nhandle_kinds; k++) {
		enum gs_kind kind = rp_handle_kinds[k];
		struct handle_list l = { 0 };
		int rc = 0;

		gs_trk_foreach(kind, collect_app, &l);
		if (l.oom) {
			free(l.v);
			return rp_fail(err, -ENOMEM, "out of memory listing %s handles",
				       gs_kind_name(kind));
		}
		for (size_t i = 0; i < l.n && !rc; i++) {
			rc = gs_trk_rebind(kind, l.v[i], rp.placeholder++);
			if (rc)
				rp_fail(err, rc, "tracker: cannot rebind %s %#llx: %s",
					gs_kind_name(kind), (unsigned long long)l.v[i],
					strerror(-rc));
		}
		free(l.v);
		if (rc)
			return rc;
	}
	return 0;
}

/* ---- per-thread current contexts --------------------------------------------------------- */

/*
 * The driver keeps a stack of current contexts per thread, and a migration
 * destroys every context on it behind the thread's back. Only the thread
 * itself can change its stack, so each thread repairs its own at its first
 * gated call after a migration (the gate's epoch handler): it pops the dead
 * handles off, translates each through the table recorded for the epoch
 * they belong to (real handle then -> app handle), and pushes the contexts
 * that stand for them now, bottom first. The driver's stack is the truth
 * here, not a shadow kept by hooks: it also holds contexts made current
 * through paths the shim does not see (cudart's export tables).
 *
 * Generations are published lock-free (a thread may repair itself while
 * another migration's release records the next one) and kept for the life
 * of the process: a thread that slept through several migrations still
 * finds the table of its own epoch. One table per release, a few entries
 * each.
 */
struct rp_gen_pair {
	uint64_t real;
	uint64_t app;
};

struct rp_gen {
	unsigned epoch;
	size_t n;
	struct rp_gen_pair *pairs;
	struct rp_gen *next;
};

static _Atomic(struct rp_gen *) generations;

/* The deepest context stack a thread gets back. */
#define RP_MAX_STACK 64

static int collect_ctx_pair(const struct gs_rec *rec, void *arg)
{
	struct rp_gen *g = arg;

	g->pairs[g->n++] = (struct rp_gen_pair){ .real = rec->real, .app = rec->app };
	return 0;
}

int rp_generation_record(char **err)
{
	size_t count = gs_trk_count(GS_KIND_CTX);
	struct rp_gen *g = calloc(1, sizeof(*g));

	if (!g || !(g->pairs = calloc(count ? count : 1, sizeof(*g->pairs)))) {
		free(g);
		return rp_fail(err, -ENOMEM, "out of memory recording the contexts");
	}
	g->epoch = gs_gate_epoch();
	/* The gate is closed: no context can appear between count and walk. */
	gs_trk_foreach(GS_KIND_CTX, collect_ctx_pair, g);
	g->next = atomic_load_explicit(&generations, memory_order_relaxed);
	atomic_store_explicit(&generations, g, memory_order_release);
	return 0;
}

static bool gen_lookup(unsigned epoch, uint64_t real, uint64_t *app)
{
	/* The newest table of that epoch: a thaw that failed and a later
	 * release in the same epoch record it again. */
	for (struct rp_gen *g = atomic_load_explicit(&generations, memory_order_acquire); g;
	     g = g->next) {
		if (g->epoch != epoch)
			continue;
		for (size_t i = 0; i < g->n; i++) {
			if (g->pairs[i].real == real) {
				*app = g->pairs[i].app;
				return true;
			}
		}
		return false;
	}
	return false;
}

/*
 * The thread that runs a release destroys the contexts itself, and the
 * driver pops a context it destroys off the destroying thread's own stack
 * (only there). So before destroying anything, that thread's stack is
 * taken off and parked here, to be handed back by the epoch handler like
 * any other thread's. (The control thread has none; a program calling the
 * operations itself, as the tests do, has.)
 */
struct rp_parked {
	pid_t tid;
	unsigned epoch;
	unsigned n;
	CUcontext stack[RP_MAX_STACK]; /* top first */
	struct rp_parked *next;
};

static pthread_mutex_t parked_lock = PTHREAD_MUTEX_INITIALIZER;
static struct rp_parked *parked;

/* Pop this thread's whole context stack into stack[] (top first). Inside
 * the shim. */
static unsigned pop_all(CUcontext *stack)
{
	unsigned n = 0;

	while (n < RP_MAX_STACK) {
		CUcontext cur = NULL;
		CUresult rc = RP_REAL(cuCtxGetCurrent, &cur);

		/* A driver that will not name a destroyed context still has it
		 * on the stack: pop it all the same (an entry nothing stands
		 * for). */
		if (rc == CUDA_ERROR_CONTEXT_IS_DESTROYED)
			cur = NULL;
		else if (rc != CUDA_SUCCESS || !cur)
			break;
		/* cuCtxSetCurrent(NULL) pops without looking at the context,
		 * which may be dead; cuCtxPopCurrent may refuse a destroyed
		 * one. */
		if (RP_REAL(cuCtxSetCurrent, NULL) != CUDA_SUCCESS)
			break;
		stack[n++] = cur;
	}
	return n;
}

void rp_park_own_stack(void)
{
	struct rp_parked *p = calloc(1, sizeof(*p));

	if (!p) {
		gs_warn("out of memory: this thread's current contexts will not come back");
		return;
	}
	gs_inside_begin();
	p->n = pop_all(p->stack);
	gs_inside_end();
	if (!p->n) {
		free(p);
		return;
	}
	p->tid = gettid();
	/* The epoch the handles belong to: the thread's own, which lags the
	 * gate's when it made no call since an earlier migration. */
	p->epoch = gs_thread_self ? gs_thread_self->gate_epoch >> GS_GATE_EPOCH_SHIFT
				  : gs_gate_epoch();
	pthread_mutex_lock(&parked_lock);
	p->next = parked;
	parked = p;
	pthread_mutex_unlock(&parked_lock);
}

static struct rp_parked *unpark(pid_t tid, unsigned epoch)
{
	struct rp_parked **pp, *p = NULL;

	pthread_mutex_lock(&parked_lock);
	for (pp = &parked; *pp; pp = &(*pp)->next) {
		if ((*pp)->tid == tid && (*pp)->epoch == epoch) {
			p = *pp;
			*pp = p->next;
			break;
		}
	}
	pthread_mutex_unlock(&parked_lock);
	return p;
}

static void epoch_handler(struct gs_thread *t, unsigned old_epoch, unsigned new_epoch)
{
	CUcontext stack[2 * RP_MAX_STACK];
	unsigned n = 0, pushed = 0, lost = 0;
	struct rp_parked *p = unpark(t->tid, old_epoch);
	bool first = true;

	gs_inside_begin();
	n = pop_all(stack);
	/* A parked stack lies below whatever the thread pushed since. */
	if (p) {
		memcpy(stack + n, p->stack, p->n * sizeof(*stack));
		n += p->n;
		free(p);
	}
	for (unsigned i = n; i-- > 0;) {
		uint64_t app, real;
		CUresult rc;

		if (!stack[i] || !gen_lookup(old_epoch, (uintptr_t)stack[i], &app)) {
			/* Destroyed by the application before the migration
			 * (still current here, as the driver leaves it), or a
			 * context the shim never saw: nothing stands for it. */
			lost++;
			continue;
		}
		real = rp_to_real(GS_KIND_CTX, app);
		if (rp_is_placeholder(real)) {
			lost++;
			continue;
		}
		rc = first ? RP_REAL(cuCtxSetCurrent, (CUcontext)(uintptr_t)real)
			   : RP_REAL(cuCtxPushCurrent_v2, (CUcontext)(uintptr_t)real);
		if (rc != CUDA_SUCCESS) {
			gs_warn("thread %d: making context %#llx current again failed (%s)",
				(int)t->tid, (unsigned long long)app, rp_cu_name(rc));
			lost++;
			continue;
		}
		first = false;
		pushed++;
	}
	gs_inside_end();
	if (n || lost)
		gs_debug("thread %d: epoch %u -> %u: %u current context(s) restored, %u dropped",
			 (int)t->tid, old_epoch, new_epoch, pushed, lost);
}

void rp_epoch_handler_install(void)
{
	gs_gate_set_epoch_handler(epoch_handler);
}

/* ---- status ---------------------------------------------------------------------------------- */

int gs_replay_status(json_t **report)
{
	struct gs_trk_stats st;
	struct gs_devmap *dm = gs_trk_devmap();
	json_t *o, *devs, *counts;
	enum gs_proc_state state;
	uint64_t migrations, saved_bytes = 0, used, tracked = 0;
	char *image = NULL;

	if (!report)
		return -EINVAL;
	gs_trk_get_stats(&st);
	used = rp_used_devices();
	pthread_mutex_lock(&rp.lock);
	state = rp.state;
	migrations = rp.migrations;
	if (state == GS_STATE_RELEASED) {
		saved_bytes = rp.saved.bytes;
		if (rp.saved.image_dir)
			image = strdup(rp.saved.image_dir);
	}
	pthread_mutex_unlock(&rp.lock);

	o = json_object();
	devs = json_array();
	counts = json_object();
	if (!o || !devs || !counts) {
		json_decref(o);
		json_decref(devs);
		json_decref(counts);
		free(image);
		return -ENOMEM;
	}
	json_object_set_new(o, "state", json_string(gs_proc_state_name(state)));
	json_object_set_new(o, "pid", json_integer(getpid()));
	json_object_set_new(o, "migrated", json_boolean(gs_migrated_load()));
	json_object_set_new(o, "migrations", json_integer((json_int_t)migrations));
	for (int d = 0; d < GS_MAX_DEVICES; d++) {
		json_t *dev;
		int real;

		if (!(used & (UINT64_C(1) << d)))
			continue;
		real = gs_devmap_to_real(dm, d);
		dev = json_object();
		json_object_set_new(dev, "device", json_integer(d));
		/* While released no GPU holds anything of the process. */
		json_object_set_new(dev, "gpu", state == GS_STATE_RELEASED || real < 0
						       ? json_null() : json_integer(real));
		json_object_set_new(dev, "alloc_bytes", json_integer((json_int_t)st.device_bytes[d]));
		json_array_append_new(devs, dev);
	}
	json_object_set_new(o, "devices", devs);
	for (int k = 0; k < GS_KIND_COUNT; k++) {
		json_object_set_new(counts, gs_kind_name(k), json_integer((json_int_t)st.count[k]));
		switch (k) {
		case GS_KIND_ALLOC:
		case GS_KIND_GLOBAL:
			tracked += st.bytes[k];
			break;
		case GS_KIND_PHYS:
			/* The arena's chunks back the allocations counted above. */
			tracked += st.bytes[k] - st.shim_bytes[k];
			break;
		default:
			break;
		}
	}
	json_object_set_new(o, "objects", counts);
	json_object_set_new(o, "bytes_tracked", json_integer((json_int_t)tracked));
	json_object_set_new(o, "host_bytes", json_integer((json_int_t)st.bytes[GS_KIND_HOST]));
	if (state == GS_STATE_RELEASED) {
		json_object_set_new(o, "saved_bytes", json_integer((json_int_t)saved_bytes));
		json_object_set_new(o, "image", image ? json_string(image) : json_null());
	}
	free(image);
	*report = o;
	return 0;
}

void rp_warn(json_t *warnings, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	rp_warnv(warnings, fmt, ap);
	va_end(ap);
}

void rp_warnv(json_t *warnings, const char *fmt, va_list ap)
{
	char *msg = NULL;

	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	gs_warn("%s", msg ? msg : fmt);
	if (warnings)
		json_array_append_new(warnings, json_string(msg ? msg : fmt));
	free(msg);
}
