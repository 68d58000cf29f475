/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the gate tests (test_gate.c, test_gate_wake.c) share: whether they
 * run under ThreadSanitizer (which slows them, and the stress loops adapt),
 * and the barrier mode named by argv[1].
 */
#ifndef GS_GATETEST_H
#define GS_GATETEST_H

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "gate.h"
#include "shimtest.h"

#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif
#ifndef UNDER_TSAN
#define UNDER_TSAN 0
#endif

/* Set the gate up in the mode argv[1] names: "fence", or "membarrier" (the
 * default; the test is skipped where the kernel lacks it). */
static inline void gatetest_setup(int argc, char **argv, const char *what)
{
	const char *mode = argc > 1 ? argv[1] : "membarrier";
	int rc;

	if (strcmp(mode, "fence") == 0) {
		rc = gs_gate_setup(GS_GATE_BARRIER_FENCE);
	} else {
		rc = gs_gate_setup(GS_GATE_BARRIER_MEMBARRIER);
		if (rc == -ENOSYS)
			SKIP("membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) is not available");
	}
	REQUIRE(rc == 0, "gs_gate_setup: %d", rc);
	printf("%s, %s mode%s\n", what, mode, UNDER_TSAN ? ", ThreadSanitizer" : "");
}

#endif
