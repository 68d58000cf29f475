/* SPDX-License-Identifier: Apache-2.0 */
/* Concurrent use of the handle maps and the records (stress.c); the same
 * code runs under ThreadSanitizer as test_tracker_tsan. */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "stress.h"
#include "trk_test.h"

TestSuite(concurrency, .init = trk_test_setup, .timeout = 240);

Test(concurrency, handlemap_readers_and_writers)
{
	char err[512] = "";

	cr_assert_eq(trk_stress_handlemap(8, 4, 200000, err, sizeof(err)), 0, "%s", err);
}

Test(concurrency, devmap_readers_during_remaps)
{
	char err[512] = "";

	cr_assert_eq(trk_stress_devmap(4, 20000, err, sizeof(err)), 0, "%s", err);
}

/* One thread, the whole tracker compared with the model as it goes. */
Test(concurrency, records_single_thread_exact)
{
	char err[512] = "";

	for (unsigned seed = 1; seed <= 4; seed++)
		cr_assert_eq(trk_stress_records(1, 20000, 97, seed, err, sizeof(err)), 0,
			     "seed %u: %s", seed, err);
}

Test(concurrency, records_many_threads)
{
	char err[512] = "";

	cr_assert_eq(trk_stress_records(8, 20000, 0, 7, err, sizeof(err)), 0, "%s", err);
}

Test(concurrency, library_layouts_while_unloading)
{
	char err[512] = "";
	size_t size;
	void *fatbin = trk_fixture("trk.fatbin", &size);

	cr_assert_eq(trk_stress_library(fatbin, size, 4, 200, err, sizeof(err)), 0, "%s", err);
	free(fatbin);
}
