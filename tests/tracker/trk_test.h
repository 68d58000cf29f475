/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers shared by the tracker's Criterion tests. */
#ifndef TRK_TEST_H
#define TRK_TEST_H

#include <stddef.h>
#include <stdint.h>

#include "tracker.h"

/* Handle values as a driver would give them: 16-aligned, distinct. */
#define H(type, v) ((type)(uintptr_t)(v))
#define U(h) ((uint64_t)(uintptr_t)(h))

/* Every test starts from an empty tracker. */
void trk_test_setup(void);

/* Contents of a fixture built by meson ($TRK_FIXTURES/name); aborts the
 * test when missing. Free with free(). */
void *trk_fixture(const char *name, size_t *size);
/* Its path (static buffer). */
const char *trk_fixture_path(const char *name);

/* Whether a record of kind with that app handle/address exists. */
int trk_exists(enum gs_kind kind, uint64_t app);

/* Copy of the record of kind/app into buf (up to len bytes); 0 or -ENOENT. */
int trk_get(enum gs_kind kind, uint64_t app, void *buf, size_t len);

/* Problems gs_trk_check reports whose reason contains `what`. */
int trk_problems(const char *what);

#endif
