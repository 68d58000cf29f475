/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the benchmark programs share: a monotonic clock, order statistics of
 * the rounds, and the one table format every program prints its rows in.
 *
 * Every figure is a comparison made inside one run: a baseline and the
 * thing measured are timed in alternating rounds of the same process, so
 * that what a shared, noisy machine does to one it does to the other. The
 * programs print, they never assert: a timing threshold in a test fails at
 * random on a loaded machine.
 */
#ifndef GS_BENCH_H
#define GS_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

int64_t bench_now_ns(void);

/* Order statistics of n samples (n >= 1); the samples are left as they were. */
struct bench_stats {
	double min;
	double p25;
	double median;
	double p75;
	double max;
};

int bench_stats_of(const double *samples, size_t n, struct bench_stats *out);

/*
 * One table row. base[i] and with[i] are the ns per call of round i, timed
 * back to back; the added time and the ratio are the medians of the
 * per-round differences and ratios, which cancel drift between rounds
 * better than a difference or ratio of two medians.
 */
int bench_print_row(const char *what, const double *base, const double *with, size_t rounds);

/* The column headings. */
void bench_print_header(void);

/* Parse a positive integer option value; false (with a message) if it is not. */
bool bench_parse_count(const char *opt, const char *text, long *out);

#endif
