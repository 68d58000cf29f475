/* SPDX-License-Identifier: Apache-2.0 */
#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int compare_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Linear interpolation between the two nearest ranks (q in [0, 1]). */
static double quantile(const double *sorted, size_t n, double q)
{
	double pos = q * (double)(n - 1);
	size_t lo = (size_t)pos;
	double frac = pos - (double)lo;

	if (lo + 1 >= n)
		return sorted[n - 1];
	return sorted[lo] + frac * (sorted[lo + 1] - sorted[lo]);
}

int bench_stats_of(const double *samples, size_t n, struct bench_stats *out)
{
	double *sorted;

	if (n == 0)
		return -EINVAL;
	sorted = malloc(n * sizeof(*sorted));
	if (!sorted)
		return -ENOMEM;
	memcpy(sorted, samples, n * sizeof(*sorted));
	qsort(sorted, n, sizeof(*sorted), compare_double);
	out->min = sorted[0];
	out->p25 = quantile(sorted, n, 0.25);
	out->median = quantile(sorted, n, 0.5);
	out->p75 = quantile(sorted, n, 0.75);
	out->max = sorted[n - 1];
	free(sorted);
	return 0;
}

#define WHAT_WIDTH 46

void bench_print_header(void)
{
	printf("%-*s %16s %16s %24s %7s\n", WHAT_WIDTH, "what",
	       "baseline ns/call", "shim ns/call", "added ns/call", "ratio");
	printf("%-*s %8s %7s %8s %7s %8s %15s %7s\n", WHAT_WIDTH, "",
	       "median", "min", "median", "min", "median", "p25..p75", "");
}

int bench_print_row(const char *what, const double *base, const double *with, size_t rounds)
{
	struct bench_stats b, w, d, q;
	double *diff = malloc(rounds * sizeof(*diff));
	double *ratio = malloc(rounds * sizeof(*ratio));
	char spread[32];
	int rc = -ENOMEM;

	if (!diff || !ratio)
		goto out;
	/* Paired, like the difference: a ratio of the two medians can land
	 * anywhere when the rounds are bimodal (the simulator's are). */
	for (size_t i = 0; i < rounds; i++) {
		diff[i] = with[i] - base[i];
		ratio[i] = base[i] > 0 ? with[i] / base[i] : 0.0;
	}
	rc = bench_stats_of(base, rounds, &b);
	if (rc == 0)
		rc = bench_stats_of(with, rounds, &w);
	if (rc == 0)
		rc = bench_stats_of(diff, rounds, &d);
	if (rc == 0)
		rc = bench_stats_of(ratio, rounds, &q);
	if (rc != 0)
		goto out;
	snprintf(spread, sizeof(spread), "%.1f..%.1f", d.p25, d.p75);
	printf("%-*s %8.1f %7.1f %8.1f %7.1f %8.1f %15s %6.2fx\n", WHAT_WIDTH, what,
	       b.median, b.min, w.median, w.min, d.median, spread, q.median);
	fflush(stdout);
out:
	free(diff);
	free(ratio);
	return rc;
}

bool bench_parse_count(const char *opt, const char *text, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(text, &end, 10);
	if (errno != 0 || end == text || *end != '\0' || v <= 0) {
		fprintf(stderr, "%s: expected a positive integer, got '%s'\n", opt, text);
		return false;
	}
	*out = v;
	return true;
}
