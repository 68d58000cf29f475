/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Concurrency stress for the handle maps and the tracker's records, shared
 * by the Criterion suite and the ThreadSanitizer program (tsan_main.c).
 * Each function returns 0, or -1 with a message in err.
 */
#ifndef TRK_STRESS_H
#define TRK_STRESS_H

#include <stddef.h>

/* Readers look up stable pairs (must always hit, with the right value) and
 * pairs that writers insert, rebind and remove (must hit a value the writer
 * could have put there, or miss), while the writers make the tables grow. */
int trk_stress_handlemap(unsigned readers, unsigned writers, unsigned iterations, char *err,
			 size_t errlen);

/* Readers of the device map while a writer swaps between permutations:
 * every answer is a valid ordinal and the two directions agree for the
 * permutations written. */
int trk_stress_devmap(unsigned readers, unsigned iterations, char *err, size_t errlen);

/* Threads create and destroy records of every kind at random, each in its
 * own handle and address range, and check every result against a
 * reference model of its own; at the end the tracker must hold exactly the
 * union of the models. With one thread, the whole tracker is compared with
 * the model every `verify_every` operations. */
int trk_stress_records(unsigned threads, unsigned operations, unsigned verify_every,
		       unsigned seed, char *err, size_t errlen);

/* Threads ask for a library's kernel layouts on several architectures
 * (parsed lazily, outside the tracker lock) while the library is unloaded
 * and loaded again under them: every answer is the layout or -ENOENT.
 * `image` is a fatbin holding trk_kernel (fixtures.cu). */
int trk_stress_library(const void *image, size_t size, unsigned threads, unsigned rounds,
		       char *err, size_t errlen);

#endif
