/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Streams: one worker thread per stream runs its work in submission order, so
 * work really is asynchronous to the submitting thread, as on a GPU.
 *
 * Ordering between streams is expressed as dependencies on stream positions
 * (stream, sequence number), resolved by the worker before it runs an item.
 * That covers cuStreamWaitEvent and the legacy default stream's implicit
 * synchronisation:
 *   - work on the legacy stream waits for all work already submitted to the
 *     context's blocking streams (created without CU_STREAM_NON_BLOCKING, and
 *     per-thread default streams);
 *   - work on a blocking stream waits for all work already submitted to the
 *     legacy stream.
 * Both snapshots are taken under the context's exec lock together with the
 * enqueue, so two submissions racing on the legacy stream and a blocking
 * stream can never wait for each other.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cudaTypedefs.h>

#include "sim_exec.h"

struct sim_work {
	struct sim_work *next;
	uint64_t seq;
	CUresult (*fn)(void *arg);
	void *arg;
	void (*done)(void *arg);
	unsigned flags;
	size_t ndeps;
	struct sim_dep deps[];
};

static unsigned long long next_stream_id = 1;
static uint64_t next_thread_key = 1;
static __thread uint64_t thread_key;
/* Set while a worker runs application code (host functions, callbacks,
 * kernel emulations), which must not call the driver. */
static __thread bool in_user_code;

bool sim_exec_in_user_code(void)
{
	return in_user_code;
}

static uint64_t current_thread_key(void)
{
	if (!thread_key)
		thread_key = __atomic_fetch_add(&next_thread_key, 1, __ATOMIC_RELAXED);
	return thread_key;
}

/* ---- per-context state ------------------------------------------------------ */

struct sim_exec *sim_exec_of(struct sim_ctx *ctx)
{
	struct sim_exec *exec = __atomic_load_n(&ctx->exec, __ATOMIC_ACQUIRE);

	if (exec)
		return exec;
	exec = calloc(1, sizeof(*exec));
	if (!exec)
		sim_abort("simcuda", "out of memory for a context's execution state");
	exec->ctx = ctx;
	pthread_mutex_init(&exec->lock, NULL);
	sim_list_init(&exec->streams);
	sim_list_init(&exec->events);
	sim_list_init(&exec->modules);
	struct sim_exec *expected = NULL;
	if (!__atomic_compare_exchange_n(&ctx->exec, &expected, exec, false,
					 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		pthread_mutex_destroy(&exec->lock);
		free(exec);
		exec = expected;
	}
	return exec;
}

/* ---- dependencies ------------------------------------------------------------ */

bool sim_dep_reached(const struct sim_dep *dep)
{
	struct sim_stream *s = dep->stream;

	pthread_mutex_lock(&s->lock);
	bool reached = s->completed >= dep->seq;
	pthread_mutex_unlock(&s->lock);
	return reached;
}

void sim_dep_wait(const struct sim_dep *dep)
{
	struct sim_stream *s = dep->stream;

	pthread_mutex_lock(&s->lock);
	while (s->completed < dep->seq)
		pthread_cond_wait(&s->done_cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
}

/* Position of the last work submitted to s, or seq 0 when all of it ran. */
static struct sim_dep stream_tail(struct sim_stream *s)
{
	struct sim_dep dep = { s, 0 };

	pthread_mutex_lock(&s->lock);
	if (s->completed < s->submitted)
		dep.seq = s->submitted;
	pthread_mutex_unlock(&s->lock);
	return dep;
}

static bool stream_is_blocking(const struct sim_stream *s)
{
	return s->role != SIM_STREAM_LEGACY && !(s->flags & CU_STREAM_NON_BLOCKING);
}

/* What a new operation on s must wait for besides s itself, given the legacy
 * stream rules. Caller holds exec->lock. Returns a malloc'd array (or NULL
 * with *n 0). */
static struct sim_dep *implicit_deps(struct sim_stream *s, size_t *n)
{
	struct sim_exec *exec = s->exec;
	struct sim_dep *deps = NULL;
	size_t count = 0, cap = 0;

	*n = 0;
	if (s->role == SIM_STREAM_LEGACY) {
		sim_list_for_each(pos, &exec->streams) {
			struct sim_stream *t = sim_container_of(pos, struct sim_stream, exec_link);
			if (!stream_is_blocking(t))
				continue;
			struct sim_dep dep = stream_tail(t);
			if (!dep.seq)
				continue;
			if (count == cap) {
				cap = cap ? 2 * cap : 8;
				struct sim_dep *grown = realloc(deps, cap * sizeof(*deps));
				if (!grown)
					sim_abort("simcuda", "out of memory for stream dependencies");
				deps = grown;
			}
			deps[count++] = dep;
		}
	} else if (stream_is_blocking(s) && exec->legacy) {
		struct sim_dep dep = stream_tail(exec->legacy);
		if (dep.seq) {
			deps = malloc(sizeof(*deps));
			if (!deps)
				sim_abort("simcuda", "out of memory for stream dependencies");
			deps[count++] = dep;
		}
	}
	*n = count;
	return deps;
}

/* ---- workers ----------------------------------------------------------------- */

static void run_work(struct sim_stream *s, struct sim_work *w)
{
	for (size_t i = 0; i < w->ndeps; i++)
		sim_dep_wait(&w->deps[i]);
	/* After a fault the GPU runs no more of the context's work, but events
	 * and callbacks still fire so that waiters learn about the error. */
	if (w->fn && (sim_ctx_sticky(s->ctx) == CUDA_SUCCESS || (w->flags & SIM_WORK_ALWAYS))) {
		in_user_code = (w->flags & SIM_WORK_APP_CODE) != 0;
		CUresult rc = w->fn(w->arg);
		in_user_code = false;
		if (rc != CUDA_SUCCESS)
			sim_ctx_set_sticky(s->ctx, rc);
	}
	if (w->done)
		w->done(w->arg);
}

static void *stream_worker(void *arg)
{
	struct sim_stream *s = arg;

	for (;;) {
		pthread_mutex_lock(&s->lock);
		while (!s->head && !s->closing)
			pthread_cond_wait(&s->work_cond, &s->lock);
		struct sim_work *w = s->head;
		if (!w) {
			s->exited = true;
			pthread_cond_broadcast(&s->done_cond);
			pthread_mutex_unlock(&s->lock);
			return NULL;
		}
		pthread_mutex_unlock(&s->lock);

		run_work(s, w);

		pthread_mutex_lock(&s->lock);
		s->head = w->next;
		if (!s->head)
			s->tail = NULL;
		s->completed = w->seq;
		pthread_cond_broadcast(&s->done_cond);
		pthread_mutex_unlock(&s->lock);
		free(w);
	}
}

/* Creates a stream of exec's context and starts its worker; caller holds
 * exec->lock. Returns NULL when no thread can be started. */
static struct sim_stream *stream_new(struct sim_exec *exec, enum sim_stream_role role,
				     unsigned flags, int priority)
{
	if (exec->tearing_down)
		sim_abort("simcuda", "stream created in context %p while it is destroyed",
			  (void *)exec->ctx);
	struct sim_stream *s = sim_handle_new(SIM_KIND_STREAM, sizeof(*s));

	s->ctx = exec->ctx;
	s->exec = exec;
	s->role = role;
	s->flags = flags;
	s->priority = priority;
	s->sync_policy = CU_SYNC_POLICY_AUTO;
	s->domain_map.remote = 1;
	s->id = __atomic_fetch_add(&next_stream_id, 1, __ATOMIC_RELAXED);
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->work_cond, NULL);
	pthread_cond_init(&s->done_cond, NULL);
	sim_list_init(&s->exec_link);

	int err = pthread_create(&s->worker, NULL, stream_worker, s);
	if (err) {
		fprintf(stderr, "simcuda: cannot start a stream worker: %s\n", strerror(err));
		sim_handle_destroy(s);
		return NULL;
	}
	char name[16];
	snprintf(name, sizeof(name), "simcuda-s%llu", s->id);
	pthread_setname_np(s->worker, name);
	if (role != SIM_STREAM_LEGACY)
		sim_list_add_tail(&exec->streams, &s->exec_link);
	return s;
}

/* Joins the workers of streams the application destroyed once they drained;
 * caller holds exec->lock. */
static void reap_streams(struct sim_exec *exec)
{
	if (exec->tearing_down)
		return;
	for (struct sim_link *pos = exec->streams.next, *next; pos != &exec->streams; pos = next) {
		next = pos->next;
		struct sim_stream *s = sim_container_of(pos, struct sim_stream, exec_link);
		pthread_mutex_lock(&s->lock);
		bool gone = s->closing && s->exited;
		pthread_mutex_unlock(&s->lock);
		if (!gone)
			continue;
		sim_list_del(&s->exec_link);
		pthread_join(s->worker, NULL);
	}
}

/* Stops accepting work; the worker finishes what is queued and leaves.
 * Returns false when the stream was already closing. */
static bool stream_close(struct sim_stream *s)
{
	pthread_mutex_lock(&s->lock);
	bool was_closing = s->closing;
	s->closing = true;
	pthread_cond_signal(&s->work_cond);
	pthread_mutex_unlock(&s->lock);
	return !was_closing;
}

/* ---- per-thread default streams ------------------------------------------------ */

/* The per-thread default streams a thread used, one per context, closed when
 * the thread exits: the stream cannot be named any more, but its queued work
 * still runs, and the legacy stream still waits for it. */
struct owned_streams {
	size_t count, cap;
	struct sim_stream **streams;
};

static pthread_key_t owned_key;
static pthread_once_t owned_once = PTHREAD_ONCE_INIT;

static void owned_release(void *arg)
{
	struct owned_streams *o = arg;

	for (size_t i = 0; i < o->count; i++) {
		struct sim_stream *s = o->streams[i];
		/* Under the exec lock, like sim_exec_destroy_ctx, so that the
		 * handle dies exactly once when both race. */
		pthread_mutex_lock(&s->exec->lock);
		if (stream_close(s))
			sim_handle_destroy(s);
		pthread_mutex_unlock(&s->exec->lock);
	}
	free(o->streams);
	free(o);
}

static void owned_init(void)
{
	if (pthread_key_create(&owned_key, owned_release))
		sim_abort("simcuda", "no thread-specific key for per-thread streams");
}

static void owned_add(struct sim_stream *s)
{
	pthread_once(&owned_once, owned_init);
	struct owned_streams *o = pthread_getspecific(owned_key);
	if (!o) {
		o = calloc(1, sizeof(*o));
		if (!o || pthread_setspecific(owned_key, o))
			sim_abort("simcuda", "out of memory for per-thread streams");
	}
	if (o->count == o->cap) {
		size_t cap = o->cap ? 2 * o->cap : 4;
		struct sim_stream **grown = realloc(o->streams, cap * sizeof(*grown));
		if (!grown)
			sim_abort("simcuda", "out of memory for per-thread streams");
		o->streams = grown;
		o->cap = cap;
	}
	o->streams[o->count++] = s;
}

/* ---- resolving CUstream arguments -------------------------------------------- */

static struct sim_stream *special_stream(struct sim_ctx *ctx, bool per_thread, const char *fn)
{
	struct sim_exec *exec = sim_exec_of(ctx);
	struct sim_stream *s = NULL;

	pthread_mutex_lock(&exec->lock);
	if (!per_thread) {
		if (!exec->legacy)
			exec->legacy = stream_new(exec, SIM_STREAM_LEGACY, 0, 0);
		s = exec->legacy;
	} else {
		/* One per thread and context, until the thread exits or the
		 * context is destroyed. */
		uint64_t key = current_thread_key();
		sim_list_for_each(pos, &exec->streams) {
			struct sim_stream *t = sim_container_of(pos, struct sim_stream, exec_link);
			if (t->role == SIM_STREAM_PER_THREAD && t->owner_thread == key) {
				s = t;
				break;
			}
		}
		if (!s) {
			s = stream_new(exec, SIM_STREAM_PER_THREAD, 0, 0);
			if (s) {
				s->owner_thread = key;
				owned_add(s);
			}
		}
	}
	pthread_mutex_unlock(&exec->lock);
	if (!s)
		sim_abort(fn, "cannot start the worker of a default stream");
	return s;
}

static bool is_special(CUstream s)
{
	return s == NULL || s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD;
}

static struct sim_stream *resolve_special(CUstream s, bool ptds, struct sim_ctx *ctx,
					  const char *fn)
{
	bool per_thread = s == CU_STREAM_PER_THREAD || (s == NULL && ptds);

	return special_stream(ctx, per_thread, fn);
}

struct sim_stream *sim_stream_resolve(CUstream s, bool ptds, struct sim_ctx *ctx,
				      const char *fn)
{
	if (is_special(s)) {
		if (!ctx)
			sim_abort(fn, "default stream %p used without a context", (void *)s);
		return resolve_special(s, ptds, ctx, fn);
	}
	struct sim_stream *st = sim_handle_get(SIM_KIND_STREAM, s, fn);
	if (ctx && st->ctx != ctx)
		sim_abort(fn, "stream %p belongs to context %p, not to context %p",
			  (void *)s, (void *)st->ctx, (void *)ctx);
	return st;
}

CUresult sim_stream_lookup(CUstream s, bool ptds, const char *fn, struct sim_stream **out)
{
	if (is_special(s)) {
		struct sim_ctx *ctx;
		CUresult rc = sim_ctx_require(fn, &ctx);
		if (rc != CUDA_SUCCESS)
			return rc;
		*out = resolve_special(s, ptds, ctx, fn);
		return CUDA_SUCCESS;
	}
	*out = sim_handle_get(SIM_KIND_STREAM, s, fn);
	return CUDA_SUCCESS;
}

/* ---- submitting and waiting ------------------------------------------------- */

static CUresult enqueue(struct sim_stream *s, CUresult (*fn)(void *arg), void *arg,
			void (*done)(void *arg), unsigned flags, const struct sim_dep *dep,
			uint64_t *seq)
{
	struct sim_exec *exec = s->exec;
	bool legacy_rules = s->role == SIM_STREAM_LEGACY || stream_is_blocking(s);
	struct sim_dep *implicit = NULL;
	size_t nimplicit = 0;

	if (legacy_rules) {
		pthread_mutex_lock(&exec->lock);
		implicit = implicit_deps(s, &nimplicit);
	}
	size_t ndeps = nimplicit + (dep && dep->seq ? 1 : 0);
	struct sim_work *w = malloc(sizeof(*w) + ndeps * sizeof(w->deps[0]));
	if (!w) {
		if (legacy_rules)
			pthread_mutex_unlock(&exec->lock);
		free(implicit);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	w->next = NULL;
	w->fn = fn;
	w->arg = arg;
	w->done = done;
	w->flags = flags;
	w->ndeps = ndeps;
	if (nimplicit)
		memcpy(w->deps, implicit, nimplicit * sizeof(w->deps[0]));
	if (ndeps > nimplicit)
		w->deps[nimplicit] = *dep;
	free(implicit);

	pthread_mutex_lock(&s->lock);
	if (s->closing) {
		pthread_mutex_unlock(&s->lock);
		if (legacy_rules)
			pthread_mutex_unlock(&exec->lock);
		free(w);
		/* Only reachable when another thread destroyed the stream after
		 * this call looked its handle up. */
		sim_abort("simcuda", "work submitted to stream %p while it was destroyed", (void *)s);
	}
	w->seq = ++s->submitted;
	if (s->tail)
		s->tail->next = w;
	else
		s->head = w;
	s->tail = w;
	pthread_cond_signal(&s->work_cond);
	pthread_mutex_unlock(&s->lock);
	if (legacy_rules)
		pthread_mutex_unlock(&exec->lock);
	if (seq)
		*seq = w->seq;
	return CUDA_SUCCESS;
}

CUresult sim_stream_enqueue(struct sim_stream *s, CUresult (*work)(void *arg), void *arg,
			    void (*done)(void *arg), unsigned flags,
			    const struct sim_dep *dep, uint64_t *seq)
{
	CUresult rc = sim_ctx_sticky(s->ctx);

	if (rc != CUDA_SUCCESS)
		return rc;
	return enqueue(s, work, arg, done, flags, dep, seq);
}

CUresult sim_stream_submit(struct sim_stream *s, CUresult (*work)(void *arg), void *arg,
			   void (*done)(void *arg))
{
	return sim_stream_enqueue(s, work, arg, done, 0, NULL, NULL);
}

/* Everything an operation on s issued now would wait for: the legacy stream
 * also covers prior work of the blocking streams. */
static struct sim_dep *pending_positions(struct sim_stream *s, size_t *n)
{
	struct sim_dep own = stream_tail(s);
	struct sim_dep *deps = NULL;
	size_t count = 0;

	if (s->role == SIM_STREAM_LEGACY) {
		pthread_mutex_lock(&s->exec->lock);
		deps = implicit_deps(s, &count);
		pthread_mutex_unlock(&s->exec->lock);
	}
	if (own.seq) {
		struct sim_dep *grown = realloc(deps, (count + 1) * sizeof(*deps));
		if (!grown)
			sim_abort("simcuda", "out of memory for stream dependencies");
		deps = grown;
		deps[count++] = own;
	}
	*n = count;
	return deps;
}

CUresult sim_stream_wait(struct sim_stream *s)
{
	size_t n;
	struct sim_dep *deps = pending_positions(s, &n);

	for (size_t i = 0; i < n; i++)
		sim_dep_wait(&deps[i]);
	free(deps);
	return sim_ctx_sticky(s->ctx);
}

static CUresult stream_query(struct sim_stream *s)
{
	size_t n;
	struct sim_dep *deps = pending_positions(s, &n);
	bool ready = true;

	for (size_t i = 0; i < n && ready; i++)
		ready = sim_dep_reached(&deps[i]);
	free(deps);
	CUresult rc = sim_ctx_sticky(s->ctx);
	if (rc != CUDA_SUCCESS)
		return rc;
	return ready ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
}

static void add_position(struct sim_dep **deps, size_t *n, size_t *cap, struct sim_stream *s)
{
	if (*n == *cap) {
		*cap = *cap ? 2 * *cap : 8;
		struct sim_dep *grown = realloc(*deps, *cap * sizeof(**deps));
		if (!grown)
			sim_abort("simcuda", "out of memory for stream dependencies");
		*deps = grown;
	}
	(*deps)[(*n)++] = stream_tail(s);
}

void sim_exec_drain(struct sim_exec *exec)
{
	struct sim_dep *deps = NULL;
	size_t n = 0, cap = 0;

	pthread_mutex_lock(&exec->lock);
	reap_streams(exec);
	sim_list_for_each(pos, &exec->streams)
		add_position(&deps, &n, &cap, sim_container_of(pos, struct sim_stream, exec_link));
	if (exec->legacy)
		add_position(&deps, &n, &cap, exec->legacy);
	pthread_mutex_unlock(&exec->lock);
	for (size_t i = 0; i < n; i++)
		if (deps[i].seq)
			sim_dep_wait(&deps[i]);
	free(deps);
}

CUresult sim_exec_sync_ctx(struct sim_ctx *ctx)
{
	struct sim_exec *exec = __atomic_load_n(&ctx->exec, __ATOMIC_ACQUIRE);

	if (exec)
		sim_exec_drain(exec);
	return sim_ctx_sticky(ctx);
}

void sim_exec_destroy_ctx(struct sim_ctx *ctx)
{
	struct sim_exec *exec = __atomic_load_n(&ctx->exec, __ATOMIC_ACQUIRE);
	struct sim_link events, gone;

	if (!exec)
		return;
	/* As on a GPU, destroying a context lets its queued work finish first;
	 * every stream handle is dead from here on. The streams stay listed
	 * until their workers are joined, so that a module unloaded by another
	 * thread meanwhile (cuLibraryUnload) still waits for the kernels. */
	pthread_mutex_lock(&exec->lock);
	exec->tearing_down = true;
	sim_list_for_each(pos, &exec->streams) {
		struct sim_stream *s = sim_container_of(pos, struct sim_stream, exec_link);
		if (stream_close(s))
			sim_handle_destroy(s);
	}
	if (exec->legacy && stream_close(exec->legacy))
		sim_handle_destroy(exec->legacy);
	sim_list_splice(&exec->events, &events);
	pthread_mutex_unlock(&exec->lock);

	/* Nobody adds or reaps streams while tearing_down is set. */
	sim_list_for_each(pos, &exec->streams)
		pthread_join(sim_container_of(pos, struct sim_stream, exec_link)->worker, NULL);
	if (exec->legacy)
		pthread_join(exec->legacy->worker, NULL);

	pthread_mutex_lock(&exec->lock);
	sim_list_splice(&exec->streams, &gone);
	exec->legacy = NULL;
	exec->tearing_down = false;
	pthread_mutex_unlock(&exec->lock);
	sim_event_destroy_all(&events);
	sim_module_destroy_ctx(exec);
}

/* ---- entry points ------------------------------------------------------------- */

SIM_EXPORT CUresult cuStreamQuery_ptsz(CUstream hStream);
SIM_EXPORT CUresult cuStreamSynchronize_ptsz(CUstream hStream);
SIM_CHECK_ABI(cuStreamQuery_ptsz, PFN_cuStreamQuery_v7000_ptsz);
SIM_CHECK_ABI(cuStreamSynchronize_ptsz, PFN_cuStreamSynchronize_v7000_ptsz);

static CUresult stream_create(const char *fn, CUstream *phStream, unsigned flags, int priority)
{
	struct sim_ctx *ctx;
	CUresult rc = sim_ctx_require(fn, &ctx);

	if (rc != CUDA_SUCCESS)
		return rc;
	if (!phStream || (flags & ~(unsigned)CU_STREAM_NON_BLOCKING))
		return CUDA_ERROR_INVALID_VALUE;
	priority = sim_stream_priority_clamp(priority);

	struct sim_exec *exec = sim_exec_of(ctx);
	pthread_mutex_lock(&exec->lock);
	reap_streams(exec);
	struct sim_stream *s = stream_new(exec, SIM_STREAM_CREATED, flags, priority);
	pthread_mutex_unlock(&exec->lock);
	if (!s)
		return CUDA_ERROR_OUT_OF_MEMORY;
	*phStream = (CUstream)s;
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuStreamCreate(CUstream *phStream, unsigned int Flags)
{
	SIM_ENTER("cuStreamCreate");
	return stream_create("cuStreamCreate", phStream, Flags, 0);
}

SIM_EXPORT CUresult cuStreamCreateWithPriority(CUstream *phStream, unsigned int flags, int priority)
{
	SIM_ENTER("cuStreamCreateWithPriority");
	return stream_create("cuStreamCreateWithPriority", phStream, flags, priority);
}

SIM_EXPORT CUresult cuStreamDestroy_v2(CUstream hStream)
{
	SIM_ENTER("cuStreamDestroy_v2");
	if (is_special(hStream))
		return CUDA_ERROR_INVALID_HANDLE;
	struct sim_stream *s = sim_handle_get(SIM_KIND_STREAM, hStream, "cuStreamDestroy_v2");
	if (s->role != SIM_STREAM_CREATED)
		sim_abort("cuStreamDestroy_v2", "stream %p is a default stream", (void *)hStream);
	struct sim_exec *exec = s->exec;
	pthread_mutex_lock(&exec->lock);
	bool first = stream_close(s);
	/* The stream stays on the context's list until its worker has drained
	 * it: queued work still completes, and the legacy stream still waits
	 * for it. */
	reap_streams(exec);
	pthread_mutex_unlock(&exec->lock);
	if (!first)
		sim_abort("cuStreamDestroy_v2", "stream %p destroyed twice concurrently", (void *)hStream);
	sim_handle_destroy(s);
	return CUDA_SUCCESS;
}

static CUresult stream_query_entry(CUstream hStream, bool ptds, const char *fn)
{
	struct sim_stream *s;
	CUresult rc = sim_stream_lookup(hStream, ptds, fn, &s);

	return rc != CUDA_SUCCESS ? rc : stream_query(s);
}

SIM_EXPORT CUresult cuStreamQuery(CUstream hStream)
{
	SIM_ENTER("cuStreamQuery");
	return stream_query_entry(hStream, false, "cuStreamQuery");
}

SIM_EXPORT CUresult cuStreamQuery_ptsz(CUstream hStream)
{
	SIM_ENTER("cuStreamQuery_ptsz");
	return stream_query_entry(hStream, true, "cuStreamQuery_ptsz");
}

static CUresult stream_sync_entry(CUstream hStream, bool ptds, const char *fn)
{
	struct sim_stream *s;
	CUresult rc = sim_stream_lookup(hStream, ptds, fn, &s);

	return rc != CUDA_SUCCESS ? rc : sim_stream_wait(s);
}

SIM_EXPORT CUresult cuStreamSynchronize(CUstream hStream)
{
	SIM_ENTER("cuStreamSynchronize");
	return stream_sync_entry(hStream, false, "cuStreamSynchronize");
}

SIM_EXPORT CUresult cuStreamSynchronize_ptsz(CUstream hStream)
{
	SIM_ENTER("cuStreamSynchronize_ptsz");
	return stream_sync_entry(hStream, true, "cuStreamSynchronize_ptsz");
}

