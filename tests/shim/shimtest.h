/* SPDX-License-Identifier: Apache-2.0 */
/* Minimal pass/fail/skip helpers for the shim's test programs: each program
 * exits 0 (pass), 1 (fail) or 77 (skip), as meson expects. */
#ifndef SHIMTEST_H
#define SHIMTEST_H

#include <stdio.h>
#include <stdlib.h>

#define SHIMTEST_SKIP 77

static int shimtest_failures;

#define CHECK(cond, ...)                                                        \
	do {                                                                    \
		if (!(cond)) {                                                  \
			fprintf(stderr, "%s:%d: FAIL (%s): ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__);                           \
			fputc('\n', stderr);                                    \
			shimtest_failures++;                                    \
		}                                                               \
	} while (0)

/* Stop now: the rest cannot run meaningfully. */
#define REQUIRE(cond, ...)                                                      \
	do {                                                                    \
		if (!(cond)) {                                                  \
			fprintf(stderr, "%s:%d: FATAL (%s): ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__);                           \
			fputc('\n', stderr);                                    \
			exit(1);                                                \
		}                                                               \
	} while (0)

#define SKIP(...)                                                               \
	do {                                                                    \
		fprintf(stderr, "SKIP: ");                                      \
		fprintf(stderr, __VA_ARGS__);                                   \
		fputc('\n', stderr);                                            \
		exit(SHIMTEST_SKIP);                                            \
	} while (0)

static inline int shimtest_result(const char *name)
{
	if (shimtest_failures) {
		fprintf(stderr, "%s: %d check(s) failed\n", name, shimtest_failures);
		return 1;
	}
	printf("%s: ok\n", name);
	return 0;
}

#endif
