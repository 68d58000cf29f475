/* SPDX-License-Identifier: Apache-2.0 */
#define GS_LOG_SUBSYS "shim"
#include "thread.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "gate.h"
#include "log.h"

__thread struct gs_thread *gs_thread_self GS_TLS;
__thread unsigned gs_inside_depth GS_TLS;

/* Statically initialised: the registry works before (and without) the
 * shim's initialisation, e.g. for a call made from a library constructor. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct gs_thread *registry_head;
static unsigned registry_live;
/* Counts of threads that have exited. Updated under registry_lock. */
static _Atomic uint64_t retired_calls[GS_API_COUNT];

static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static pthread_key_t exit_key;
static bool exit_key_ok;

static void thread_detach(void *arg);

static void key_create(void)
{
	exit_key_ok = pthread_key_create(&exit_key, thread_detach) == 0;
	if (!exit_key_ok)
		gs_warn("pthread_key_create failed: per-thread call records of exiting "
			"threads will not be freed");
}

static void registry_unlink(struct gs_thread *t)
{
	if (t->prev)
		t->prev->next = t->next;
	else
		registry_head = t->next;
	if (t->next)
		t->next->prev = t->prev;
	t->next = t->prev = NULL;
	registry_live--;
}

/* pthread key destructor: the thread is exiting. */
static void thread_detach(void *arg)
{
	struct gs_thread *t = arg;

	pthread_mutex_lock(&registry_lock);
	for (int i = 0; i < GS_API_COUNT; i++) {
		uint64_t n = atomic_load_explicit(&t->calls[i], memory_order_relaxed);

		if (n)
			atomic_fetch_add_explicit(&retired_calls[i], n, memory_order_relaxed);
	}
	registry_unlink(t);
	pthread_mutex_unlock(&registry_lock);
	/* A thread leaving in the middle of a call (pthread_exit from a
	 * callback) must not keep a closer waiting for it. */
	if (atomic_load_explicit(&t->gate_depth, memory_order_relaxed) != 0)
		gs_gate_thread_gone();
	gs_thread_self = NULL;
	free(t);
}

struct gs_thread *gs_thread_attach(void)
{
	struct gs_thread *t;

	pthread_once(&key_once, key_create);
	t = calloc(1, sizeof(*t));
	if (t == NULL)
		return NULL;
	t->tid = gettid();
	atomic_init(&t->gate_symbol, -1);
	/* A new thread's driver state cannot predate the current epoch. */
	t->gate_epoch = atomic_load_explicit(&gs_gate_word, memory_order_relaxed) & ~GS_GATE_FLAGS;

	pthread_mutex_lock(&registry_lock);
	t->next = registry_head;
	if (registry_head)
		registry_head->prev = t;
	registry_head = t;
	registry_live++;
	pthread_mutex_unlock(&registry_lock);

	if (exit_key_ok)
		pthread_setspecific(exit_key, t);
	gs_thread_self = t;
	return t;
}

int gs_thread_foreach(int (*fn)(struct gs_thread *t, void *arg), void *arg)
{
	int rc = 0;

	pthread_mutex_lock(&registry_lock);
	for (struct gs_thread *t = registry_head; t && rc == 0; t = t->next)
		rc = fn(t, arg);
	pthread_mutex_unlock(&registry_lock);
	return rc;
}

uint64_t gs_thread_calls(int sym)
{
	uint64_t n;

	if (sym < 0 || sym >= GS_API_COUNT)
		return 0;
	pthread_mutex_lock(&registry_lock);
	n = atomic_load_explicit(&retired_calls[sym], memory_order_relaxed);
	for (struct gs_thread *t = registry_head; t; t = t->next)
		n += atomic_load_explicit(&t->calls[sym], memory_order_relaxed);
	pthread_mutex_unlock(&registry_lock);
	return n;
}

void gs_thread_calls_all(uint64_t *totals)
{
	pthread_mutex_lock(&registry_lock);
	for (int i = 0; i < GS_API_COUNT; i++)
		totals[i] = atomic_load_explicit(&retired_calls[i], memory_order_relaxed);
	for (struct gs_thread *t = registry_head; t; t = t->next)
		for (int i = 0; i < GS_API_COUNT; i++)
			totals[i] += atomic_load_explicit(&t->calls[i], memory_order_relaxed);
	pthread_mutex_unlock(&registry_lock);
}

unsigned gs_thread_live_count(void)
{
	unsigned n;

	pthread_mutex_lock(&registry_lock);
	n = registry_live;
	pthread_mutex_unlock(&registry_lock);
	return n;
}

/*
 * fork(): the child has only the forking thread. Records of the others
 * would look in flight forever to a gate closed in the child, so they are
 * dropped (their counts kept). The lock is held across fork so the child
 * never inherits it locked by a thread that no longer exists.
 */
static void atfork_prepare(void)
{
	pthread_mutex_lock(&registry_lock);
}

static void atfork_parent(void)
{
	pthread_mutex_unlock(&registry_lock);
}

static void atfork_child(void)
{
	struct gs_thread *self = gs_thread_self;
	struct gs_thread *t = registry_head;

	while (t) {
		struct gs_thread *next = t->next;

		if (t != self) {
			for (int i = 0; i < GS_API_COUNT; i++)
				atomic_fetch_add_explicit(&retired_calls[i],
							  atomic_load_explicit(&t->calls[i],
									       memory_order_relaxed),
							  memory_order_relaxed);
			registry_unlink(t);
			free(t);
		}
		t = next;
	}
	if (self)
		self->tid = gettid();
	pthread_mutex_init(&registry_lock, NULL);
	gs_gate_reset_after_fork();
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void install_atfork(void)
{
	if (pthread_atfork(atfork_prepare, atfork_parent, atfork_child) != 0)
		gs_warn("pthread_atfork failed: a fork child may see stale in-flight calls");
}

void gs_thread_setup(void)
{
	pthread_once(&atfork_once, install_atfork);
}
