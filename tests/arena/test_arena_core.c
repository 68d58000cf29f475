/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the arena allocator core against the fake VMM: alignment,
 * packing, chunk release, fragmentation, failure rollback, contexts, peer
 * access, detach/attach, and a randomised run against a reference model.
 */
#include "arena.h"
#include "fake_vmm.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#define MiB (UINT64_C(1) << 20)
#define GRAN (2 * MiB)
#define BASE UINT64_C(0x600000000000)

static struct fake_vmm f;
static struct gs_arena *a;
static const CUcontext CTX1 = (CUcontext)0x1000;
static const CUcontext CTX2 = (CUcontext)0x2000;

static void setup_with(uint64_t window, uint64_t gran, unsigned max_spare)
{
	fake_vmm_init(&f, false);
	struct gs_arena_config cfg = fake_vmm_config(&f, BASE, window, gran, 0, max_spare);
	cr_assert_eq(gs_arena_create(&cfg, &a), CUDA_SUCCESS);
}

static void setup(void)
{
	setup_with(1024 * GRAN, GRAN, 0);
}

static void setup_small(void)
{
	setup_with(64 * GRAN, GRAN, 0);
}

static void setup_small_spare(void)
{
	setup_with(64 * GRAN, GRAN, 1);
}

static void setup_random(void)
{
	setup_with(512 * GRAN, GRAN, 1);
}

static void teardown(void)
{
	gs_arena_destroy(a);
	a = NULL;
	cr_expect_eq(fake_vmm_reservations(&f), 0, "destroy leaves no reservation");
	cr_expect_eq(fake_vmm_handles(&f), 0, "destroy leaves no physical memory");
	cr_expect_eq(fake_vmm_mappings(&f), 0, "destroy leaves no mapping");
	fake_vmm_fini(&f);
}

/* gs_arena_alloc keeping only the address. */
static CUresult alloc_va(struct gs_arena *ar, uint64_t size, CUcontext ctx, uint64_t *va)
{
	struct gs_arena_allocation al;
	CUresult rc = gs_arena_alloc(ar, size, ctx, &al);

	if (rc == CUDA_SUCCESS)
		*va = al.va;
	return rc;
}

static uint64_t alloc_ok(uint64_t size, CUcontext ctx)
{
	uint64_t va = 0;
	CUresult rc = alloc_va(a, size, ctx, &va);
	cr_assert_eq(rc, CUDA_SUCCESS, "alloc %lu: %d", size, rc);
	return va;
}

static struct gs_arena_stats stats(void)
{
	struct gs_arena_stats s;
	gs_arena_stats(a, &s);
	return s;
}

static bool stats_eq(const struct gs_arena_stats *x, const struct gs_arena_stats *y)
{
	return x->allocations == y->allocations && x->bytes_requested == y->bytes_requested &&
	       x->chunks == y->chunks && x->bytes_backed == y->bytes_backed &&
	       x->spare_chunks == y->spare_chunks && x->window_free == y->window_free &&
	       x->attached == y->attached;
}

/* The arena's own view of physical memory must equal the driver's. */
static void expect_backing_consistent(void)
{
	struct gs_arena_stats s = stats();
	cr_expect_eq(s.bytes_backed, fake_vmm_bytes_mapped(&f));
	cr_expect_eq(s.chunks + s.spare_chunks, fake_vmm_handles(&f));
	cr_expect_eq(fake_vmm_handles(&f), fake_vmm_mappings(&f));
}

TestSuite(arena_core, .init = setup, .fini = teardown);
/* Tests with their own window (Criterion runs a suite's init and then a
 * test's, so these get a suite without one). */
TestSuite(arena_sized, .fini = teardown);

Test(arena_core, size_classes)
{
	uint64_t c[64];
	unsigned n = gs_arena_size_classes(GRAN, c, 64);

	cr_assert_eq(n, 22);
	cr_expect_eq(c[0], 512);
	cr_expect_eq(c[n - 1], GRAN / 2);
	for (unsigned i = 0; i < n; i++) {
		cr_expect_eq(c[i] % GS_ARENA_MIN_ALIGN, 0, "class %lu", c[i]);
		if (i)
			cr_expect_gt(c[i], c[i - 1]);
		/* at most a third of an allocation is padding */
		if (i)
			cr_expect_leq(c[i], c[i - 1] * 2);
	}
	cr_expect_eq(gs_arena_size_classes(512, c, 64), 0, "granule too small for slabs");
	cr_expect_eq(gs_arena_size_classes(GRAN, c, 3), 3);
}

Test(arena_core, bad_config)
{
	struct gs_arena *b;
	struct gs_arena_config cfg = fake_vmm_config(&f, BASE, 16 * GRAN, GRAN, 0, 0);

	cfg.granularity = 3 * MiB;
	cr_expect_eq(gs_arena_create(&cfg, &b), CUDA_ERROR_INVALID_VALUE);
	cfg.granularity = GRAN;
	cfg.size = GRAN + 4096;
	cr_expect_eq(gs_arena_create(&cfg, &b), CUDA_ERROR_INVALID_VALUE);
	cfg.size = 16 * GRAN;
	cfg.base = BASE + 4096;
	cr_expect_eq(gs_arena_create(&cfg, &b), CUDA_ERROR_INVALID_VALUE);
	cr_expect_eq(fake_vmm_reservations(&f), 1, "only the fixture's window");
}

Test(arena_core, window_at_base)
{
	uint64_t base, size;

	gs_arena_window(a, &base, &size);
	cr_expect_eq(base, BASE);
	cr_expect_eq(size, 1024 * GRAN);
	cr_expect(gs_arena_in_window(a, BASE));
	cr_expect(gs_arena_in_window(a, BASE + size - 1));
	cr_expect_not(gs_arena_in_window(a, BASE + size));
	cr_expect_not(gs_arena_in_window(a, BASE - 1));
	cr_expect_eq(fake_vmm_handles(&f), 0, "nothing backed before the first allocation");
}

Test(arena_core, hint_not_honoured)
{
	struct gs_arena *b;
	struct gs_arena_config cfg = fake_vmm_config(&f, BASE + (UINT64_C(1) << 40), 16 * GRAN,
						     GRAN, 1, 0);

	f.misplace = UINT64_C(1) << 30;
	cr_expect_eq(gs_arena_create(&cfg, &b), CUDA_ERROR_ALREADY_MAPPED);
	cr_expect_eq(fake_vmm_reservations(&f), 1, "the misplaced window was given back");

	cfg.exact_base = false;
	cr_assert_eq(gs_arena_create(&cfg, &b), CUDA_SUCCESS);
	uint64_t base, size;
	gs_arena_window(b, &base, &size);
	cr_expect_eq(base, cfg.base + f.misplace);
	uint64_t va = 0;
	cr_expect_eq(alloc_va(b, 100, CTX1, &va), CUDA_SUCCESS);
	cr_expect(gs_arena_in_window(b, va));
	gs_arena_destroy(b);
}

Test(arena_core, zero_and_huge)
{
	uint64_t va = 0xdead;

	cr_expect_eq(alloc_va(a, 0, CTX1, &va), CUDA_ERROR_INVALID_VALUE);
	cr_expect_eq(alloc_va(a, 1025 * GRAN, CTX1, &va), CUDA_ERROR_OUT_OF_MEMORY);
	cr_expect_eq(alloc_va(a, UINT64_MAX, CTX1, &va), CUDA_ERROR_OUT_OF_MEMORY);
	cr_expect_eq(va, 0xdead, "output untouched on failure");
	cr_expect_eq(f.calls[FAKE_CREATE], 0);
}

Test(arena_core, alignment)
{
	static const uint64_t sizes[] = {
		1, 7, 255, 256, 511, 512, 513, 1000, 1024, 1025, 1536, 1537, 4095,
		65536, 100000, 777777, GRAN / 2, GRAN / 2 + 1, GRAN - 1, GRAN,
		GRAN + 1, 5 * MiB, 37 * MiB + 3,
	};
	for (unsigned i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uint64_t va = alloc_ok(sizes[i], CTX1);
		cr_expect_eq(va % GS_ARENA_MIN_ALIGN, 0, "size %lu at %#lx", sizes[i], va);
		if (sizes[i] > GRAN / 2)
			cr_expect_eq(va % GRAN, 0, "large allocations are granule-aligned");
		cr_expect(gs_arena_in_window(a, va));
		cr_expect(fake_vmm_accessible(&f, va, sizes[i], 0),
			  "size %lu at %#lx is mapped and accessible", sizes[i], va);
	}
	expect_backing_consistent();
}

Test(arena_core, small_allocations_share_a_chunk)
{
	uint64_t va[1000];

	for (int i = 0; i < 1000; i++) {
		va[i] = alloc_ok(1000, CTX1);
		for (int j = 0; j < i; j++)
			cr_assert_neq(va[i], va[j]);
	}
	/* 1000 slots of the 1 KiB class take 1000 KiB: one granule. */
	cr_expect_eq(stats().chunks, 1);
	cr_expect_eq(f.calls[FAKE_CREATE], 1);
	cr_expect_eq(stats().allocations, 1000);
	cr_expect_eq(stats().bytes_requested, 1000 * 1000);
	/* Different classes use different slabs. */
	alloc_ok(3000, CTX1);
	cr_expect_eq(stats().chunks, 2);
	/* A full slab starts another. */
	for (int i = 0; i < 2048; i++)
		alloc_ok(1024, CTX1);
	cr_expect_eq(stats().chunks, 3);
	expect_backing_consistent();
}

Test(arena_core, empty_chunks_are_released)
{
	uint64_t small = alloc_ok(4000, CTX1);
	uint64_t large = alloc_ok(5 * MiB, CTX1);

	cr_expect_eq(fake_vmm_handles(&f), 2);
	cr_expect_eq(fake_vmm_bytes_mapped(&f), GRAN + 6 * MiB, "5 MiB rounds up to 3 granules");
	cr_expect_eq(gs_arena_free(a, small), CUDA_SUCCESS);
	cr_expect_eq(fake_vmm_handles(&f), 1, "the empty slab went back to the driver");
	cr_expect_eq(gs_arena_free(a, large), CUDA_SUCCESS);
	cr_expect_eq(fake_vmm_handles(&f), 0);
	cr_expect_eq(fake_vmm_mappings(&f), 0);
	struct gs_arena_stats s = stats();
	cr_expect_eq(s.allocations, 0);
	cr_expect_eq(s.bytes_backed, 0);
	cr_expect_eq(s.window_free, 1024 * GRAN, "all address space back and coalesced");
	/* A slab with a live slot stays. */
	uint64_t x = alloc_ok(100, CTX1), y = alloc_ok(100, CTX1);
	cr_expect_eq(gs_arena_free(a, x), CUDA_SUCCESS);
	cr_expect_eq(fake_vmm_handles(&f), 1);
	cr_expect_eq(gs_arena_free(a, y), CUDA_SUCCESS);
	cr_expect_eq(fake_vmm_handles(&f), 0);
}

Test(arena_sized, spare_chunk_is_reused_and_trimmed, .init = setup_small_spare)
{
	uint64_t x = alloc_ok(100, CTX1);
	cr_expect_eq(gs_arena_free(a, x), CUDA_SUCCESS);
	cr_expect_eq(stats().spare_chunks, 1);
	cr_expect_eq(fake_vmm_handles(&f), 1, "one empty chunk kept");
	/* Alloc/free in a loop costs no driver call; the spare also serves a
	 * one-granule allocation. */
	unsigned creates = f.calls[FAKE_CREATE];
	for (int i = 0; i < 100; i++) {
		x = alloc_ok(100 + 1000 * i, CTX1);
		cr_expect_eq(gs_arena_free(a, x), CUDA_SUCCESS);
	}
	x = alloc_ok(GRAN, CTX1);
	cr_expect_eq(f.calls[FAKE_CREATE], creates);
	cr_expect_eq(stats().spare_chunks, 0);
	/* A freed large allocation goes back to the driver at once. */
	cr_expect_eq(gs_arena_free(a, x), CUDA_SUCCESS);
	cr_expect_eq(fake_vmm_handles(&f), 0);
	x = alloc_ok(100, CTX1);
	cr_expect_eq(gs_arena_free(a, x), CUDA_SUCCESS);
	/* Only one spare, whatever empties. */
	uint64_t p = alloc_ok(100, CTX1), q = alloc_ok(10000, CTX1);
	gs_arena_free(a, p);
	gs_arena_free(a, q);
	cr_expect_eq(stats().spare_chunks, 1);
	cr_expect_eq(fake_vmm_handles(&f), 1);
	/* Spares are not chunks of the records. */
	cr_expect_eq(stats().chunks, 0);
	gs_arena_trim(a);
	cr_expect_eq(fake_vmm_handles(&f), 0);
	cr_expect_eq(stats().window_free, 64 * GRAN);
	expect_backing_consistent();
}

Test(arena_sized, spare_gives_way_when_memory_runs_out, .init = setup_small_spare)
{
	f.capacity[0] = 4 * GRAN;
	uint64_t x = alloc_ok(100, CTX1);
	gs_arena_free(a, x);
	cr_expect_eq(stats().spare_chunks, 1);
	/* 4 granules need the spare's memory too. */
	uint64_t big = alloc_ok(4 * GRAN, CTX1);
	cr_expect_eq(stats().spare_chunks, 0);
	cr_expect_eq(gs_arena_free(a, big), CUDA_SUCCESS);
	expect_backing_consistent();
}

Test(arena_core, bad_frees)
{
	uint64_t s = alloc_ok(1000, CTX1);
	uint64_t l = alloc_ok(3 * MiB, CTX1);
	struct gs_arena_stats before = stats();

	cr_expect_eq(gs_arena_free(a, s + 512), CUDA_ERROR_INVALID_VALUE, "interior, slot-aligned");
	cr_expect_eq(gs_arena_free(a, s + 8), CUDA_ERROR_INVALID_VALUE, "interior");
	cr_expect_eq(gs_arena_free(a, s + 1024), CUDA_ERROR_INVALID_VALUE, "next, unused slot");
	cr_expect_eq(gs_arena_free(a, l + 4096), CUDA_ERROR_INVALID_VALUE);
	cr_expect_eq(gs_arena_free(a, l + GRAN), CUDA_ERROR_INVALID_VALUE, "second granule");
	cr_expect_eq(gs_arena_free(a, BASE + 100 * GRAN), CUDA_ERROR_INVALID_VALUE, "unbacked");
	cr_expect_eq(gs_arena_free(a, BASE - GRAN), CUDA_ERROR_INVALID_VALUE, "outside");
	cr_expect_eq(gs_arena_free(a, 0), CUDA_ERROR_INVALID_VALUE);
	struct gs_arena_stats after = stats();
	cr_expect(stats_eq(&before, &after), "bad frees change nothing");

	cr_expect_eq(gs_arena_free(a, s), CUDA_SUCCESS);
	cr_expect_eq(gs_arena_free(a, s), CUDA_ERROR_INVALID_VALUE, "double free (slab)");
	cr_expect_eq(gs_arena_free(a, l), CUDA_SUCCESS);
	cr_expect_eq(gs_arena_free(a, l), CUDA_ERROR_INVALID_VALUE, "double free (large)");
}

Test(arena_core, lookup)
{
	struct gs_arena_allocation al;
	uint64_t s = alloc_ok(1000, CTX1);
	uint64_t s2 = alloc_ok(1000, CTX2);
	uint64_t l = alloc_ok(3 * MiB + 5, CTX2);

	cr_assert(gs_arena_lookup(a, s, &al));
	cr_expect_eq(al.va, s);
	cr_expect_eq(al.size, 1000, "the requested size");
	cr_expect_eq(al.ctx, CTX1);
	cr_expect_eq(al.chunk_size, GRAN);
	cr_expect_eq(al.chunk_va % GRAN, 0);
	cr_assert(gs_arena_lookup(a, s + 999, &al));
	cr_expect_eq(al.va, s);
	cr_expect_not(gs_arena_lookup(a, s + 1000, &al), "slot padding is no allocation");
	cr_assert(gs_arena_lookup(a, s2 + 10, &al));
	cr_expect_eq(al.va, s2);
	cr_expect_eq(al.ctx, CTX2);

	cr_assert(gs_arena_lookup(a, l + 3 * MiB + 4, &al));
	cr_expect_eq(al.va, l);
	cr_expect_eq(al.size, 3 * MiB + 5);
	cr_expect_eq(al.chunk_va, l);
	cr_expect_eq(al.chunk_size, 2 * GRAN);
	cr_expect_not(gs_arena_lookup(a, l + 3 * MiB + 5, &al));
	cr_expect_not(gs_arena_lookup(a, BASE + 500 * GRAN, &al));
	cr_expect_not(gs_arena_lookup(a, BASE - 1, &al));

	gs_arena_free(a, s);
	cr_expect_not(gs_arena_lookup(a, s, &al), "freed");
	cr_expect(gs_arena_lookup(a, s2, &al), "its neighbour is not");
}

Test(arena_core, allocation_record)
{
	struct gs_arena_allocation al, found;

	cr_assert_eq(gs_arena_alloc(a, 1000, CTX2, &al), CUDA_SUCCESS);
	cr_expect_eq(al.size, 1000);
	cr_expect_eq(al.ctx, CTX2);
	cr_expect_eq(al.footprint, 1024, "the 1 KiB slot");
	cr_expect_eq(al.chunk_size, GRAN);
	cr_assert(gs_arena_lookup(a, al.va, &found));
	cr_expect_eq(found.buffer_id, al.buffer_id);
	cr_expect_eq(found.footprint, al.footprint);
	cr_assert_eq(gs_arena_alloc(a, 5 * MiB, CTX2, &al), CUDA_SUCCESS);
	cr_expect_eq(al.footprint, 6 * MiB, "whole granules");
	cr_expect_eq(al.chunk_va, al.va);
	cr_assert_eq(gs_arena_alloc(a, 1537, CTX2, &al), CUDA_SUCCESS);
	cr_expect_eq(al.footprint, 2048);
}

Test(arena_core, buffer_ids_unique_and_not_reused)
{
	struct gs_arena_allocation al;
	uint64_t prev = 0;

	for (int i = 0; i < 50; i++) {
		uint64_t va = alloc_ok(i % 3 ? 600 : 3 * MiB, CTX1);
		cr_assert(gs_arena_lookup(a, va, &al));
		cr_expect_geq(al.buffer_id, GS_ARENA_BUFFER_ID_BASE);
		cr_expect_gt(al.buffer_id, prev);
		prev = al.buffer_id;
		if (i % 2)
			gs_arena_free(a, va); /* same address comes back, new id */
	}
}

Test(arena_core, freed_address_space_is_reused_lowest_first)
{
	uint64_t x = alloc_ok(4 * GRAN, CTX1);
	uint64_t y = alloc_ok(4 * GRAN, CTX1);
	uint64_t z = alloc_ok(4 * GRAN, CTX1);

	cr_expect_eq(y, x + 4 * GRAN);
	cr_expect_eq(z, y + 4 * GRAN);
	gs_arena_free(a, y);
	cr_expect_eq(alloc_ok(2 * GRAN, CTX1), y, "first fit takes the hole");
	cr_expect_eq(alloc_ok(3 * GRAN, CTX1), z + 4 * GRAN, "too big for what is left of it");
	cr_expect_eq(alloc_ok(2 * GRAN, CTX1), y + 2 * GRAN, "the rest of the hole");
}

Test(arena_sized, fragmentation_coalesces, .init = setup_small)
{
	uint64_t va[32];

	/* Fill the window with 2-granule allocations. */
	for (int i = 0; i < 32; i++)
		va[i] = alloc_ok(2 * GRAN, CTX1);
	uint64_t x;
	cr_expect_eq(alloc_va(a, 100, CTX1, &x), CUDA_ERROR_OUT_OF_MEMORY,
		     "no address space left");
	/* Free every other one: 32 granules free, but in 2-granule holes. */
	for (int i = 0; i < 32; i += 2)
		gs_arena_free(a, va[i]);
	cr_expect_eq(stats().window_free, 32 * GRAN);
	cr_expect_eq(alloc_va(a, 3 * GRAN, CTX1, &x), CUDA_ERROR_OUT_OF_MEMORY,
		     "fragmented");
	/* Freeing the rest coalesces everything into one run. */
	for (int i = 1; i < 32; i += 2)
		gs_arena_free(a, va[i]);
	cr_expect_eq(alloc_ok(64 * GRAN, CTX1), BASE, "the whole window in one piece");
	expect_backing_consistent();
}

Test(arena_core, out_of_memory_leaves_nothing)
{
	f.capacity[0] = 8 * GRAN;
	uint64_t keep = alloc_ok(100, CTX1);
	uint64_t big = alloc_ok(6 * GRAN, CTX1);
	struct gs_arena_stats before = stats();
	unsigned handles = fake_vmm_handles(&f);
	uint64_t va = 0;

	cr_expect_eq(alloc_va(a, 2 * GRAN, CTX1, &va), CUDA_ERROR_OUT_OF_MEMORY);
	cr_expect_eq(va, 0);
	struct gs_arena_stats after = stats();
	cr_expect(stats_eq(&before, &after));
	cr_expect_eq(fake_vmm_handles(&f), handles);
	/* One granule is left: a new slab class still fits, then none. */
	alloc_ok(5000, CTX1);
	cr_expect_eq(alloc_va(a, 20000, CTX1, &va), CUDA_ERROR_OUT_OF_MEMORY);
	cr_expect_eq(gs_arena_free(a, big), CUDA_SUCCESS);
	alloc_ok(20000, CTX1);
	gs_arena_free(a, keep);
	expect_backing_consistent();
}

/* A failure at any driver step, for slab and large allocations and for
 * several error codes, leaves arena and driver exactly as before, and the
 * next allocation works. */
Test(arena_core, failure_at_every_step_rolls_back)
{
	static const enum fake_op ops[] = { FAKE_CREATE, FAKE_MAP, FAKE_SET_ACCESS };
	static const CUresult rcs[] = { CUDA_ERROR_OUT_OF_MEMORY, CUDA_ERROR_INVALID_VALUE };
	static const uint64_t sizes[] = { 700, 5 * MiB };

	alloc_ok(100, CTX1);
	for (unsigned o = 0; o < 3; o++) {
		for (unsigned r = 0; r < 2; r++) {
			for (unsigned s = 0; s < 2; s++) {
				struct gs_arena_stats before = stats();
				unsigned h = fake_vmm_handles(&f), m = fake_vmm_mappings(&f);
				uint64_t va = 0;

				fake_vmm_fail(&f, ops[o], 1, rcs[r]);
				cr_expect_eq(alloc_va(a, sizes[s], CTX1, &va), rcs[r],
					     "op %u rc %d size %lu", o, rcs[r], sizes[s]);
				struct gs_arena_stats after = stats();
				cr_expect(stats_eq(&before, &after));
				cr_expect_eq(fake_vmm_handles(&f), h);
				cr_expect_eq(fake_vmm_mappings(&f), m);
				va = alloc_ok(sizes[s], CTX1);
				cr_expect_eq(gs_arena_free(a, va), CUDA_SUCCESS);
			}
		}
	}
	cr_expect_eq(f.reports, 0, "no clean-up step failed");
	expect_backing_consistent();
}

Test(arena_core, cleanup_failures_are_reported_not_returned)
{
	uint64_t x = alloc_ok(3 * MiB, CTX1);

	fake_vmm_fail(&f, FAKE_RELEASE, 1, CUDA_ERROR_UNKNOWN);
	cr_expect_eq(gs_arena_free(a, x), CUDA_SUCCESS, "the application's free succeeded");
	cr_expect_eq(f.reports, 1);
	struct gs_arena_allocation al;
	cr_expect_not(gs_arena_lookup(a, x, &al));
	/* The fake still holds the leaked handle; release it so teardown is clean. */
	cr_expect_eq(fake_vmm_handles(&f), 1);
	cr_expect_eq(fake_vmm_ops.release(&f, f.handles[0].id), CUDA_SUCCESS);
}

Test(arena_core, context_destruction_frees_its_allocations)
{
	uint64_t keep[10], gone[10];

	for (int i = 0; i < 10; i++) {
		keep[i] = alloc_ok(i % 2 ? 800 : 3 * MiB, CTX1);
		gone[i] = alloc_ok(i % 2 ? 800 : 3 * MiB, CTX2);
	}
	/* A slab of CTX2 only: released whole. */
	for (int i = 0; i < 5; i++)
		alloc_ok(100000, CTX2);
	cr_expect_eq(gs_arena_free_ctx(a, CTX2), 15);
	struct gs_arena_allocation al;
	for (int i = 0; i < 10; i++) {
		cr_expect(gs_arena_lookup(a, keep[i], &al));
		cr_expect_not(gs_arena_lookup(a, gone[i], &al));
	}
	cr_expect_eq(stats().allocations, 10);
	cr_expect_eq(gs_arena_free_ctx(a, CTX2), 0);
	cr_expect_eq(gs_arena_free_ctx(a, CTX1), 10);
	cr_expect_eq(fake_vmm_handles(&f), 0);
	expect_backing_consistent();
}

Test(arena_core, peer_access)
{
	uint64_t x = alloc_ok(3 * MiB, CTX1);
	uint64_t y = alloc_ok(100, CTX1);

	cr_expect_not(fake_vmm_accessible(&f, x, 3 * MiB, 1));
	cr_expect_eq(gs_arena_peer_access(a, 1, true), CUDA_SUCCESS);
	cr_expect(fake_vmm_accessible(&f, x, 3 * MiB, 1));
	cr_expect(fake_vmm_accessible(&f, y, 100, 1));
	uint64_t z = alloc_ok(9 * MiB, CTX1);
	cr_expect(fake_vmm_accessible(&f, z, 9 * MiB, 1), "chunks created later too");
	cr_expect_eq(gs_arena_peer_access(a, 1, true), CUDA_SUCCESS, "a second context");
	cr_expect_eq(gs_arena_peer_access(a, 1, false), CUDA_SUCCESS);
	cr_expect(fake_vmm_accessible(&f, x, 3 * MiB, 1), "one grant left");
	cr_expect_eq(gs_arena_peer_access(a, 1, false), CUDA_SUCCESS);
	cr_expect_not(fake_vmm_accessible(&f, x, 1, 1));
	cr_expect_not(fake_vmm_accessible(&f, z, 1, 1));
	cr_expect(fake_vmm_accessible(&f, z, 9 * MiB, 0), "the owner keeps access");
	cr_expect_eq(gs_arena_peer_access(a, 1, false), CUDA_ERROR_INVALID_VALUE);
	cr_expect_eq(gs_arena_peer_access(a, 0, true), CUDA_SUCCESS, "the owner: nothing to do");

	/* A failed grant changes nothing. */
	fake_vmm_fail(&f, FAKE_SET_ACCESS, 2, CUDA_ERROR_INVALID_DEVICE);
	cr_expect_eq(gs_arena_peer_access(a, 2, true), CUDA_ERROR_INVALID_DEVICE);
	cr_expect_not(fake_vmm_accessible(&f, x, 1, 2));
	cr_expect_not(fake_vmm_accessible(&f, y, 1, 2));
	cr_expect_not(fake_vmm_accessible(&f, z, 1, 2));
	uint64_t w = alloc_ok(100000, CTX1);
	cr_expect_not(fake_vmm_accessible(&f, w, 1, 2));
}

struct walk {
	unsigned n;
	uint64_t bytes;
};

static int count_alloc(const struct gs_arena_allocation *al, void *arg)
{
	struct walk *w = arg;
	w->n++;
	w->bytes += al->size;
	return 0;
}

static int count_chunk(const struct gs_arena_chunk *c, void *arg)
{
	struct walk *w = arg;
	w->n++;
	w->bytes += c->size;
	return 0;
}

static int stop_at_second(const struct gs_arena_allocation *al, void *arg)
{
	(void)al;
	return ++*(int *)arg == 2 ? 42 : 0;
}

Test(arena_core, walks)
{
	struct walk w = { 0 };

	for (int i = 0; i < 20; i++)
		alloc_ok(i % 4 ? 1000u + i : 3 * MiB + i, CTX1);
	cr_expect_eq(gs_arena_foreach_allocation(a, count_alloc, &w), 0);
	cr_expect_eq(w.n, 20);
	cr_expect_eq(w.bytes, stats().bytes_requested);
	w = (struct walk){ 0 };
	cr_expect_eq(gs_arena_foreach_chunk(a, count_chunk, &w), 0);
	cr_expect_eq(w.n, stats().chunks);
	cr_expect_eq(w.bytes, stats().bytes_backed);
	int k = 0;
	cr_expect_eq(gs_arena_foreach_allocation(a, stop_at_second, &k), 42);
	cr_expect_eq(k, 2);
}

struct chunk_list {
	unsigned n;
	struct gs_arena_chunk c[64];
};

static int save_chunk(const struct gs_arena_chunk *c, void *arg)
{
	struct chunk_list *l = arg;
	l->c[l->n++] = *c;
	return 0;
}

/* Memory made for chunks before the attach (a swap's staging), by address. */
struct staged {
	unsigned n, taken;
	uint64_t va[64], handle[64], size[64];
};

static uint64_t take_staged(void *arg, uint64_t va, uint64_t size)
{
	struct staged *st = arg;

	for (unsigned i = 0; i < st->n; i++) {
		if (st->va[i] == va && st->size[i] == size && st->handle[i]) {
			uint64_t h = st->handle[i];

			st->handle[i] = 0; /* the arena owns it now */
			st->taken++;
			return h;
		}
	}
	return 0;
}

Test(arena_core, attach_adopts_staged_memory)
{
	uint64_t va[6];
	struct staged st = { 0 };
	struct chunk_list before = { 0 };
	int peers[] = { 0, 2, 2 };

	for (int i = 0; i < 6; i++)
		va[i] = alloc_ok(i % 2 ? 3000 : 3 * MiB, CTX1);
	gs_arena_foreach_chunk(a, save_chunk, &before);
	cr_assert_eq(gs_arena_detach(a), CUDA_SUCCESS);
	/* Every other chunk is staged on device 1. */
	for (unsigned i = 0; i < before.n; i += 2) {
		st.va[st.n] = before.c[i].va;
		st.size[st.n] = before.c[i].size;
		cr_assert_eq(fake_vmm_ops.create(&f, 1, before.c[i].size, &st.handle[st.n]),
			     CUDA_SUCCESS);
		st.n++;
	}
	uint64_t staged_handles[64];
	memcpy(staged_handles, st.handle, sizeof(staged_handles));

	/* A failed attach releases what it adopted. */
	unsigned held = fake_vmm_handles(&f);
	fake_vmm_fail(&f, FAKE_MAP, before.n, CUDA_ERROR_OUT_OF_MEMORY);
	cr_expect_eq(gs_arena_attach_adopt(a, 1, peers, 3, take_staged, &st),
		     CUDA_ERROR_OUT_OF_MEMORY);
	cr_expect_not(stats().attached);
	cr_expect_eq(fake_vmm_handles(&f), held - st.taken, "adopted memory released");
	cr_expect_eq(fake_vmm_mappings(&f), 0);

	/* Stage again what went, and attach for real. */
	for (unsigned i = 0; i < st.n; i++)
		if (!st.handle[i])
			cr_assert_eq(fake_vmm_ops.create(&f, 1, st.size[i], &st.handle[i]),
				     CUDA_SUCCESS);
	memcpy(staged_handles, st.handle, sizeof(staged_handles));
	st.taken = 0;
	unsigned creates = f.calls[FAKE_CREATE];
	cr_assert_eq(gs_arena_attach_adopt(a, 1, peers, 3, take_staged, &st), CUDA_SUCCESS);
	cr_expect_eq(st.taken, st.n, "every staged chunk adopted");
	cr_expect_eq(f.calls[FAKE_CREATE] - creates, before.n - st.n, "the rest created");
	struct chunk_list after = { 0 };
	gs_arena_foreach_chunk(a, save_chunk, &after);
	cr_assert_eq(after.n, before.n);
	for (unsigned i = 0; i < after.n; i++) {
		cr_expect_eq(after.c[i].va, before.c[i].va);
		cr_expect_eq(fake_vmm_device_at(&f, after.c[i].va), 1);
		cr_expect(fake_vmm_accessible(&f, after.c[i].va, after.c[i].size, 2));
		if (i % 2 == 0)
			cr_expect_eq(after.c[i].handle, staged_handles[i / 2], "chunk %u adopted", i);
	}
	/* Device 2 was named twice: it keeps access until its second revoke. */
	cr_assert_eq(gs_arena_peer_access(a, 2, false), CUDA_SUCCESS);
	cr_expect(fake_vmm_accessible(&f, after.c[0].va, after.c[0].size, 2));
	cr_assert_eq(gs_arena_peer_access(a, 2, false), CUDA_SUCCESS);
	cr_expect_not(fake_vmm_accessible(&f, after.c[0].va, 1, 2));
	for (int i = 0; i < 6; i++)
		cr_expect_eq(gs_arena_free(a, va[i]), CUDA_SUCCESS);
	expect_backing_consistent();
}

Test(arena_core, detach_and_attach_on_another_device)
{
	uint64_t va[12];
	struct gs_arena_allocation al;

	cr_assert_eq(gs_arena_peer_access(a, 3, true), CUDA_SUCCESS);
	for (int i = 0; i < 12; i++)
		va[i] = alloc_ok(i % 3 ? 2000 : 5 * MiB, i % 2 ? CTX1 : CTX2);
	struct chunk_list before = { 0 };
	gs_arena_foreach_chunk(a, save_chunk, &before);
	struct gs_arena_stats sb = stats();

	cr_assert_eq(gs_arena_detach(a), CUDA_SUCCESS);
	cr_expect_eq(fake_vmm_reservations(&f), 0, "window freed");
	cr_expect_eq(fake_vmm_handles(&f), 0, "physical memory freed");
	cr_expect_eq(fake_vmm_mappings(&f), 0);
	cr_expect_not(stats().attached);
	cr_expect_eq(stats().allocations, 12, "records kept");
	cr_expect(gs_arena_lookup(a, va[4], &al));
	uint64_t x;
	cr_expect_eq(alloc_va(a, 100, CTX1, &x), CUDA_ERROR_NOT_PERMITTED);

	/* Attach fails half-way: back to detached, nothing left in the driver. */
	fake_vmm_fail(&f, FAKE_MAP, 3, CUDA_ERROR_OUT_OF_MEMORY);
	int peers[] = { 0 };
	cr_expect_eq(gs_arena_attach(a, 1, peers, 1), CUDA_ERROR_OUT_OF_MEMORY);
	cr_expect_eq(fake_vmm_reservations(&f), 0);
	cr_expect_eq(fake_vmm_handles(&f), 0);
	cr_expect_not(stats().attached);

	/* Something else took the window: refused, nothing kept. */
	f.misplace = GRAN;
	cr_expect_eq(gs_arena_attach(a, 1, peers, 1), CUDA_ERROR_ALREADY_MAPPED);
	cr_expect_eq(fake_vmm_reservations(&f), 0);
	f.misplace = 0;

	cr_assert_eq(gs_arena_attach(a, 1, peers, 1), CUDA_SUCCESS);
	struct chunk_list after = { 0 };
	gs_arena_foreach_chunk(a, save_chunk, &after);
	cr_assert_eq(after.n, before.n);
	for (unsigned i = 0; i < after.n; i++) {
		cr_expect_eq(after.c[i].va, before.c[i].va, "same address");
		cr_expect_eq(after.c[i].size, before.c[i].size);
		cr_expect_eq(after.c[i].device, 1);
		cr_expect_eq(fake_vmm_device_at(&f, after.c[i].va), 1);
		cr_expect(fake_vmm_accessible(&f, after.c[i].va, after.c[i].size, 1));
		cr_expect(fake_vmm_accessible(&f, after.c[i].va, after.c[i].size, 0), "new peer");
		cr_expect_not(fake_vmm_accessible(&f, after.c[i].va, 1, 3), "old peer gone");
	}
	struct gs_arena_stats sa = stats();
	cr_expect_eq(sa.allocations, sb.allocations);
	cr_expect_eq(sa.bytes_backed, sb.bytes_backed);
	cr_expect_eq(sa.window_free, sb.window_free);
	for (int i = 0; i < 12; i++) {
		cr_assert(gs_arena_lookup(a, va[i], &al));
		cr_expect_eq(al.ctx, i % 2 ? CTX1 : CTX2);
	}
	/* Later chunks go to the new device. */
	x = alloc_ok(20 * MiB, CTX1);
	cr_expect_eq(fake_vmm_device_at(&f, x), 1);
	cr_expect(fake_vmm_accessible(&f, x, 20 * MiB, 0));
	for (int i = 0; i < 12; i++)
		cr_expect_eq(gs_arena_free(a, va[i]), CUDA_SUCCESS);
	expect_backing_consistent();
}

/* ---- randomised against a reference model ----------------------------- */

struct model_alloc {
	uint64_t va, size;
	CUcontext ctx;
};

static uint64_t rnd_size(unsigned *seed)
{
	switch (rand_r(seed) % 8) {
	case 0: return 1 + rand_r(seed) % 512;
	case 1: case 2: return 1 + rand_r(seed) % 8192;
	case 3: case 4: return 1 + rand_r(seed) % (256 * 1024);
	case 5: return GRAN / 2 + 1 + rand_r(seed) % GRAN;
	case 6: return 1 + (uint64_t)rand_r(seed) % (12 * MiB);
	default: return 1 + rand_r(seed) % (GRAN / 2);
	}
}

static const struct model_alloc *model_find(const struct model_alloc *m, unsigned n, uint64_t p)
{
	for (unsigned i = 0; i < n; i++)
		if (p >= m[i].va && p < m[i].va + m[i].size)
			return &m[i];
	return NULL;
}

Test(arena_sized, random_against_model, .init = setup_random, .timeout = 120)
{
	enum { MAXLIVE = 600, STEPS = 20000 };
	static struct model_alloc m[MAXLIVE];
	unsigned n = 0, seed = 12345;
	const CUcontext ctxs[] = { CTX1, CTX2 };

	f.capacity[0] = 300 * GRAN;
	for (unsigned step = 0; step < STEPS; step++) {
		unsigned op = rand_r(&seed) % 100;

		if (op < 50 && n < MAXLIVE) {
			uint64_t size = rnd_size(&seed), va;
			CUcontext ctx = ctxs[rand_r(&seed) % 2];
			CUresult rc = alloc_va(a, size, ctx, &va);
			if (rc == CUDA_ERROR_OUT_OF_MEMORY)
				continue;
			cr_assert_eq(rc, CUDA_SUCCESS);
			cr_assert_eq(va % GS_ARENA_MIN_ALIGN, 0);
			for (unsigned i = 0; i < n; i++)
				cr_assert(va + size <= m[i].va || m[i].va + m[i].size <= va,
					  "step %u: [%#lx,+%lu) overlaps [%#lx,+%lu)", step, va,
					  size, m[i].va, m[i].size);
			m[n++] = (struct model_alloc){ va, size, ctx };
		} else if (op < 90 && n) {
			unsigned i = rand_r(&seed) % n;
			cr_assert_eq(gs_arena_free(a, m[i].va), CUDA_SUCCESS);
			m[i] = m[--n];
		} else if (op < 92) {
			/* context destroyed */
			CUcontext ctx = ctxs[rand_r(&seed) % 2];
			unsigned expect = 0;
			for (unsigned i = 0; i < n;) {
				if (m[i].ctx == ctx) {
					m[i] = m[--n];
					expect++;
				} else {
					i++;
				}
			}
			cr_assert_eq(gs_arena_free_ctx(a, ctx), expect);
		} else {
			/* A pointer near a live allocation, or anywhere in the window. */
			uint64_t p;
			if (n && op < 98) {
				const struct model_alloc *t = &m[rand_r(&seed) % n];
				p = t->va + rand_r(&seed) % (t->size + 1024);
			} else {
				p = BASE + (uint64_t)rand_r(&seed) % (512 * GRAN);
			}
			const struct model_alloc *want = model_find(m, n, p);
			struct gs_arena_allocation al;
			bool found = gs_arena_lookup(a, p, &al);
			cr_assert_eq(found, want != NULL, "step %u lookup %#lx", step, p);
			if (found) {
				cr_assert_eq(al.va, want->va);
				cr_assert_eq(al.size, want->size);
				cr_assert_eq(al.ctx, want->ctx);
			}
			if (!want || p != want->va)
				cr_assert_eq(gs_arena_free(a, p), CUDA_ERROR_INVALID_VALUE);
		}
		if (step % 1000 == 0) {
			struct gs_arena_stats s = stats();
			uint64_t bytes = 0;
			for (unsigned i = 0; i < n; i++)
				bytes += m[i].size;
			cr_assert_eq(s.allocations, n);
			cr_assert_eq(s.bytes_requested, bytes);
			expect_backing_consistent();
		}
	}
	while (n)
		cr_assert_eq(gs_arena_free(a, m[--n].va), CUDA_SUCCESS);
	gs_arena_trim(a);
	cr_expect_eq(fake_vmm_handles(&f), 0);
	cr_expect_eq(stats().window_free, 512 * GRAN);
}
