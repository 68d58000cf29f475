/* SPDX-License-Identifier: Apache-2.0 */
/* The handle maps and the device-ordinal map (tracker/handlemap.h). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>

#include "handlemap.h"

static struct gs_handlemap map;

static void setup(void)
{
	cr_assert_eq(gs_hmap_init(&map, "test"), 0);
}

static void teardown(void)
{
	gs_hmap_destroy(&map);
}

TestSuite(handlemap, .init = setup, .fini = teardown);

static uint64_t real_of(uint64_t app)
{
	uint64_t v = 0;

	cr_assert_eq(gs_hmap_to_real(&map, app, &v), 0, "no real handle for %#llx",
		     (unsigned long long)app);
	return v;
}

static uint64_t app_of(uint64_t real)
{
	uint64_t v = 0;

	cr_assert_eq(gs_hmap_to_app(&map, real, &v), 0, "no app handle for %#llx",
		     (unsigned long long)real);
	return v;
}

Test(handlemap, identity_both_directions)
{
	uint64_t v;

	cr_assert_eq(gs_hmap_insert(&map, 0x1000, 0x1000), 0);
	cr_assert_eq(real_of(0x1000), 0x1000);
	cr_assert_eq(app_of(0x1000), 0x1000);
	cr_assert_eq(gs_hmap_to_real(&map, 0x2000, &v), -ENOENT);
	cr_assert_eq(gs_hmap_to_app(&map, 0x2000, &v), -ENOENT);
	cr_assert_eq(gs_hmap_count(&map), 1);
}

Test(handlemap, zero_is_never_mapped)
{
	uint64_t v;

	cr_assert_eq(gs_hmap_insert(&map, 0, 5), -EINVAL);
	cr_assert_eq(gs_hmap_insert(&map, 5, 0), -EINVAL);
	cr_assert_eq(gs_hmap_adopt(&map, 0, &v), -EINVAL);
	cr_assert_eq(gs_hmap_to_real(&map, 0, &v), -ENOENT);
	cr_assert_eq(gs_hmap_to_app(&map, 0, &v), -ENOENT);
	cr_assert_eq(gs_hmap_rebind(&map, 5, 0), -EINVAL);
}

Test(handlemap, duplicates_rejected)
{
	cr_assert_eq(gs_hmap_insert(&map, 0x10, 0x20), 0);
	cr_assert_eq(gs_hmap_insert(&map, 0x10, 0x30), -EEXIST, "app side taken");
	cr_assert_eq(gs_hmap_insert(&map, 0x40, 0x20), -EEXIST, "real side taken");
	cr_assert_eq(real_of(0x10), 0x20, "map unchanged by a rejected insert");
	cr_assert_eq(gs_hmap_count(&map), 1);
}

Test(handlemap, adopt_is_identity_before_migration)
{
	uint64_t app = 0;

	cr_assert_eq(gs_hmap_adopt(&map, 0xabc0, &app), 0);
	cr_assert_eq(app, 0xabc0);
	cr_assert(!gs_hmap_is_synthetic(app));
	/* A repeated look-up of the same real handle (cuModuleGetFunction). */
	app = 0;
	cr_assert_eq(gs_hmap_adopt(&map, 0xabc0, &app), 1);
	cr_assert_eq(app, 0xabc0);
	cr_assert_eq(gs_hmap_count(&map), 1);
}

/* After a migration the new driver hands out a value that is still the
 * app-visible handle of another live object: the new object gets a fresh
 * synthetic value, and both translate correctly. */
Test(handlemap, collision_gets_synthetic_value)
{
	uint64_t app = 0;

	cr_assert_eq(gs_hmap_insert(&map, 0x5000, 0x5000), 0);
	/* Thaw re-created it: the app keeps 0x5000, the driver knows 0x9000. */
	cr_assert_eq(gs_hmap_rebind(&map, 0x5000, 0x9000), 0);
	cr_assert_eq(gs_hmap_adopt(&map, 0x5000, &app), 0);
	cr_assert(gs_hmap_is_synthetic(app), "got %#llx", (unsigned long long)app);
	cr_assert_neq(app, 0x5000);
	cr_assert_eq(real_of(app), 0x5000);
	cr_assert_eq(app_of(0x5000), app);
	cr_assert_eq(real_of(0x5000), 0x9000, "the old object still translates");
	cr_assert_eq(app_of(0x9000), 0x5000);
	/* Synthetic values look like aligned pointers. */
	cr_assert_eq(app % 16, 0);
}

Test(handlemap, synthetic_values_are_distinct)
{
	uint64_t seen[64];

	/* 64 live app handles 0x100..; their objects moved to 0x7000.. */
	for (unsigned i = 0; i < 64; i++) {
		cr_assert_eq(gs_hmap_insert(&map, 0x100 + i * 16, 0x100 + i * 16), 0);
		cr_assert_eq(gs_hmap_rebind(&map, 0x100 + i * 16, 0x70000 + i * 16), 0);
	}
	/* The new driver returns exactly the old values for new objects. */
	for (unsigned i = 0; i < 64; i++) {
		cr_assert_eq(gs_hmap_adopt(&map, 0x100 + i * 16, &seen[i]), 0);
		cr_assert(gs_hmap_is_synthetic(seen[i]));
		for (unsigned j = 0; j < i; j++)
			cr_assert_neq(seen[i], seen[j]);
	}
	cr_assert_eq(gs_hmap_count(&map), 128);
}

Test(handlemap, no_collision_no_synthetic_after_migration)
{
	uint64_t app;

	cr_assert_eq(gs_hmap_insert(&map, 0x5000, 0x5000), 0);
	cr_assert_eq(gs_hmap_rebind(&map, 0x5000, 0x9000), 0);
	/* A value no live app handle has keeps its real value. */
	cr_assert_eq(gs_hmap_adopt(&map, 0x6000, &app), 0);
	cr_assert_eq(app, 0x6000);
	/* Once the colliding object is gone, its value is free again. */
	cr_assert_eq(gs_hmap_remove(&map, 0x5000), 0);
	cr_assert_eq(gs_hmap_adopt(&map, 0x5000, &app), 0);
	cr_assert_eq(app, 0x5000);
}

Test(handlemap, remove_forgets_both_directions)
{
	uint64_t v;

	cr_assert_eq(gs_hmap_insert(&map, 0x10, 0x20), 0);
	cr_assert_eq(gs_hmap_remove(&map, 0x10), 0);
	cr_assert_eq(gs_hmap_to_real(&map, 0x10, &v), -ENOENT);
	cr_assert_eq(gs_hmap_to_app(&map, 0x20, &v), -ENOENT);
	cr_assert_eq(gs_hmap_remove(&map, 0x10), -ENOENT);
	cr_assert_eq(gs_hmap_remove(&map, 0), -ENOENT);
	cr_assert_eq(gs_hmap_count(&map), 0);
}

Test(handlemap, rebind_rules)
{
	uint64_t v;

	cr_assert_eq(gs_hmap_insert(&map, 0x10, 0x10), 0);
	cr_assert_eq(gs_hmap_insert(&map, 0x20, 0x20), 0);
	cr_assert_eq(gs_hmap_rebind(&map, 0x30, 0x40), -ENOENT);
	cr_assert_eq(gs_hmap_rebind(&map, 0x10, 0x20), -EEXIST, "0x20 is another's");
	cr_assert_eq(gs_hmap_rebind(&map, 0x10, 0x10), 0, "same value: nothing to do");
	cr_assert_eq(gs_hmap_rebind(&map, 0x10, 0x99), 0);
	cr_assert_eq(real_of(0x10), 0x99);
	cr_assert_eq(app_of(0x99), 0x10);
	cr_assert_eq(gs_hmap_to_app(&map, 0x10, &v), -ENOENT, "old real forgotten");
	/* Swapping two objects' real handles takes a detour. */
	cr_assert_eq(gs_hmap_rebind(&map, 0x20, 0x21), 0);
	cr_assert_eq(gs_hmap_rebind(&map, 0x10, 0x20), 0);
	cr_assert_eq(gs_hmap_rebind(&map, 0x20, 0x99), 0);
	cr_assert_eq(real_of(0x10), 0x20);
	cr_assert_eq(real_of(0x20), 0x99);
}

static int count_pairs(uint64_t app, uint64_t real, void *arg)
{
	cr_assert_eq(real, app ^ 0x8);
	(*(unsigned *)arg)++;
	return 0;
}

static int stop_at_first(uint64_t app, uint64_t real, void *arg)
{
	(void)app;
	(void)real;
	(void)arg;
	return 42;
}

/* Many pairs: the tables grow several times; every pair stays reachable,
 * removals in the middle of probe clusters keep the others findable. */
Test(handlemap, growth_and_churn)
{
	const unsigned n = 100000;
	unsigned visited = 0;

	for (unsigned i = 1; i <= n; i++)
		cr_assert_eq(gs_hmap_insert(&map, (uint64_t)i << 4, ((uint64_t)i << 4) ^ 8), 0);
	cr_assert_eq(gs_hmap_count(&map), n);
	for (unsigned i = 1; i <= n; i += 2)
		cr_assert_eq(gs_hmap_remove(&map, (uint64_t)i << 4), 0);
	for (unsigned i = 1; i <= n; i++) {
		uint64_t v;
		int rc = gs_hmap_to_real(&map, (uint64_t)i << 4, &v);

		if (i % 2) {
			cr_assert_eq(rc, -ENOENT, "pair %u removed", i);
		} else {
			cr_assert_eq(rc, 0, "pair %u lost", i);
			cr_assert_eq(v, ((uint64_t)i << 4) ^ 8);
			cr_assert_eq(app_of(v), (uint64_t)i << 4);
		}
	}
	cr_assert_eq(gs_hmap_foreach(&map, count_pairs, &visited), 0);
	cr_assert_eq(visited, n / 2);
	cr_assert_eq(gs_hmap_foreach(&map, stop_at_first, NULL), 42);
	gs_hmap_reclaim(&map);
	cr_assert_eq(real_of(2 << 4), (2 << 4) ^ 8, "lookups work after reclaiming");
}

/* Keys that all hash near each other still work (linear probing with
 * backward-shift deletion, no tombstones). */
Test(handlemap, delete_in_clusters)
{
	uint64_t keys[512];

	for (unsigned i = 0; i < 512; i++) {
		keys[i] = 0x600000000000ull + ((uint64_t)i << 21); /* 2 MiB apart */
		cr_assert_eq(gs_hmap_insert(&map, keys[i], keys[i] + 1), 0);
	}
	for (unsigned round = 0; round < 4; round++) {
		for (unsigned i = round; i < 512; i += 4)
			cr_assert_eq(gs_hmap_remove(&map, keys[i]), 0);
		for (unsigned i = 0; i < 512; i++) {
			uint64_t v;
			bool gone = i % 4 <= round;

			cr_assert_eq(gs_hmap_to_real(&map, keys[i], &v), gone ? -ENOENT : 0);
		}
	}
	cr_assert_eq(gs_hmap_count(&map), 0);
}

/* ---- device map ------------------------------------------------------------------ */

Test(devmap, identity_then_permutation)
{
	struct gs_devmap d;
	int perm[4] = { 2, 0, 3, 1 };
	int bad_dup[4] = { 0, 0, 1, 2 };
	int bad_range[4] = { 0, 1, 2, GS_MAX_DEVICES };

	cr_assert_eq(gs_devmap_init(&d, 4), 0);
	cr_assert_eq(gs_devmap_count(&d), 4);
	for (int i = 0; i < 4; i++) {
		cr_assert_eq(gs_devmap_to_real(&d, i), i);
		cr_assert_eq(gs_devmap_to_app(&d, i), i);
	}
	cr_assert_eq(gs_devmap_to_real(&d, 4), -ENODEV);
	cr_assert_eq(gs_devmap_to_real(&d, -1), -ENODEV);
	cr_assert_eq(gs_devmap_to_app(&d, 4), -ENODEV);

	cr_assert_eq(gs_devmap_set(&d, perm, 4), 0);
	for (int i = 0; i < 4; i++) {
		cr_assert_eq(gs_devmap_to_real(&d, i), perm[i]);
		cr_assert_eq(gs_devmap_to_app(&d, perm[i]), i);
	}
	cr_assert_eq(gs_devmap_set(&d, bad_dup, 4), -EINVAL);
	cr_assert_eq(gs_devmap_set(&d, bad_range, 4), -EINVAL);
	cr_assert_eq(gs_devmap_set(&d, perm, 3), -EINVAL, "count must match");
	cr_assert_eq(gs_devmap_to_real(&d, 0), 2, "rejected sets change nothing");

	/* Two app devices onto one GPU's worth of others: the real ordinals
	 * need not be the app ones. */
	int moved[4] = { 5, 6, 7, 4 };

	cr_assert_eq(gs_devmap_set(&d, moved, 4), 0);
	cr_assert_eq(gs_devmap_to_app(&d, 0), -ENODEV, "real 0 no longer used");
	cr_assert_eq(gs_devmap_to_app(&d, 7), 2);
	cr_assert_eq(gs_devmap_reset(&d, 2), 0);
	cr_assert_eq(gs_devmap_count(&d), 2);
	cr_assert_eq(gs_devmap_to_real(&d, 1), 1);
	cr_assert_eq(gs_devmap_to_real(&d, 2), -ENODEV);
	cr_assert_eq(gs_devmap_init(&d, GS_MAX_DEVICES + 1), -EINVAL);
}
