/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Many threads allocating, writing, looking up and freeing concurrently in
 * one arena backed by real host memory (the fake VMM maps chunks as host
 * pages, PROT_NONE until access is granted). A slot handed to two threads,
 * memory unmapped under a live allocation or a lookup racing a free shows up
 * as a corrupted pattern, a fault, or (built with -Db_sanitize=thread) a
 * data race report.
 *
 * A plain program rather than a Criterion test: Criterion's runner cannot
 * start under ThreadSanitizer, and this is the test that build is for.
 */
#include "arena.h"
#include "fake_vmm.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MiB (UINT64_C(1) << 20)
#define GRAN (2 * MiB)
#define WINDOW (512 * GRAN)
#define NTHREADS 8
#define STEPS 20000
#define LIVE 48

/* CHECK(cond) or CHECK(cond, fmt, args...) */
#define CHECK(cond, ...)                                                     \
	do {                                                                 \
		if (!(cond))                                                 \
			fail(__LINE__, #cond, " " __VA_ARGS__);              \
	} while (0)

static _Noreturn void fail(int line, const char *cond, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static _Noreturn void fail(int line, const char *cond, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "FAIL line %d: %s:", line, cond);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static struct fake_vmm f;
static struct gs_arena *a;
static atomic_bool stop;

struct live {
	uint64_t va, size, tag;
};

/* Stamp both ends and the middle: enough to catch an overlap between any
 * two allocations without touching every byte of the big ones. */
static void stamp(const struct live *l)
{
	uint64_t *p = (uint64_t *)l->va;
	size_t words = l->size / 8;

	if (words < 3) {
		memset((void *)l->va, (int)(l->tag & 0xff), l->size);
		return;
	}
	p[0] = l->tag;
	p[words / 2] = l->tag ^ 0x5555;
	p[words - 1] = ~l->tag;
}

static bool stamped(const struct live *l)
{
	const uint64_t *p = (const uint64_t *)l->va;
	size_t words = l->size / 8;

	if (words < 3) {
		for (size_t i = 0; i < l->size; i++)
			if (((const unsigned char *)l->va)[i] != (l->tag & 0xff))
				return false;
		return true;
	}
	return p[0] == l->tag && p[words / 2] == (l->tag ^ 0x5555) && p[words - 1] == ~l->tag;
}

static uint64_t pick_size(unsigned *seed)
{
	switch (rand_r(seed) % 10) {
	case 0: return 1 + rand_r(seed) % 64;
	case 1: case 2: case 3: return 1 + rand_r(seed) % 4096;
	case 4: case 5: return 1 + rand_r(seed) % (128 * 1024);
	case 6: return 1 + rand_r(seed) % (GRAN / 2);
	case 7: return GRAN / 2 + rand_r(seed) % GRAN;
	case 8: return 1 + rand_r(seed) % (6 * MiB);
	default: return 512 * (1 + rand_r(seed) % 8);
	}
}

static void *worker(void *arg)
{
	unsigned id = (unsigned)(uintptr_t)arg;
	unsigned seed = 1000 + id;
	struct live live[LIVE];
	unsigned n = 0;
	CUcontext ctx = (CUcontext)(uintptr_t)(0x1000 * (id + 1));

	for (unsigned step = 0; step < STEPS; step++) {
		unsigned op = rand_r(&seed) % 10;
		if (op < 5 && n < LIVE) {
			struct live l = { .size = pick_size(&seed),
					  .tag = ((uint64_t)id << 32) | step };
			struct gs_arena_allocation al;
			CUresult rc = gs_arena_alloc(a, l.size, ctx, &al);
			if (rc == CUDA_ERROR_OUT_OF_MEMORY)
				continue;
			l.va = al.va;
			CHECK(rc == CUDA_SUCCESS, "alloc %lu: %d", l.size, rc);
			CHECK(l.va % GS_ARENA_MIN_ALIGN == 0);
			stamp(&l);
			live[n++] = l;
		} else if (op < 9 && n) {
			unsigned i = rand_r(&seed) % n;
			CHECK(stamped(&live[i]), "thread %u: allocation %#lx overwritten", id,
			      live[i].va);
			CHECK(gs_arena_free(a, live[i].va) == CUDA_SUCCESS);
			live[i] = live[--n];
		} else if (n) {
			struct live *l = &live[rand_r(&seed) % n];
			struct gs_arena_allocation al;
			CHECK(gs_arena_lookup(a, l->va + l->size - 1, &al));
			CHECK(al.va == l->va);
			CHECK(al.size == l->size);
			CHECK(al.ctx == ctx);
			CHECK(stamped(l));
		}
	}
	while (n) {
		CHECK(stamped(&live[n - 1]));
		CHECK(gs_arena_free(a, live[--n].va) == CUDA_SUCCESS);
	}
	return NULL;
}

static int count(const struct gs_arena_allocation *al, void *arg)
{
	(void)al;
	++*(unsigned *)arg;
	return 0;
}

/* Readers of the whole state (dump, gpu-ps) run alongside. */
static void *observer(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop)) {
		struct gs_arena_stats s;
		unsigned n = 0;
		gs_arena_stats(a, &s);
		CHECK(s.bytes_requested <= s.bytes_backed);
		gs_arena_foreach_allocation(a, count, &n);
	}
	return NULL;
}

static void run(unsigned max_spare)
{
	pthread_t t[NTHREADS], obs;

	fake_vmm_init(&f, true);
	struct gs_arena_config cfg = fake_vmm_config(&f, UINT64_C(0x300000000000), WINDOW, GRAN,
						     0, max_spare);
	cfg.exact_base = false;
	CHECK(gs_arena_create(&cfg, &a) == CUDA_SUCCESS);
	atomic_store(&stop, false);
	pthread_create(&obs, NULL, observer, NULL);
	for (unsigned i = 0; i < NTHREADS; i++)
		pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)i);
	for (unsigned i = 0; i < NTHREADS; i++)
		pthread_join(t[i], NULL);
	atomic_store(&stop, true);
	pthread_join(obs, NULL);

	struct gs_arena_stats s;
	gs_arena_stats(a, &s);
	CHECK(s.allocations == 0);
	CHECK(s.chunks == 0);
	CHECK(s.spare_chunks <= max_spare);
	CHECK(s.bytes_backed == s.spare_chunks * GRAN);
	CHECK(fake_vmm_handles(&f) == s.spare_chunks);
	gs_arena_destroy(a);
	CHECK(fake_vmm_reservations(&f) == 0);
	CHECK(fake_vmm_handles(&f) == 0);
	fake_vmm_fini(&f);
}

int main(void)
{
	run(0);
	printf("ok: %d threads x %d steps, no spare\n", NTHREADS, STEPS);
	run(1);
	printf("ok: %d threads x %d steps, one spare\n", NTHREADS, STEPS);
	return 0;
}
