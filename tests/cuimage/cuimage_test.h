/* SPDX-License-Identifier: Apache-2.0 */
#ifndef CUIMAGE_TEST_H
#define CUIMAGE_TEST_H

#include <stddef.h>
#include <stdint.h>

#include "cuimage.h"

/* A fixture's bytes, in a buffer of exactly that size (so ASan sees any
 * read past the end). */
struct fx {
	unsigned char *data;
	size_t size;
};

/* Loads a fixture built by nvcc (directory in $CUIMAGE_FIXTURES). PTX files
 * get the NUL that cuModuleLoadData needs appended. */
void fx_load(const char *name, struct fx *f);
void fx_free(struct fx *f);
/* A copy of the first len bytes (plus nothing) in its own allocation. */
unsigned char *fx_copy(const void *data, size_t len);

const struct gs_kernel_info *fx_kernel(const struct gs_code_info *info, const char *name);
const struct gs_global_info *fx_global(const struct gs_code_info *info, const char *name);

/* Calls every entry point of cuimage.h on the bytes and checks only that
 * the answers are in range and self-consistent: for malformed input. */
void fx_exercise(const void *image, size_t size);

/* Deterministic pseudo-random numbers (xorshift64*). */
uint64_t fx_rand(uint64_t *state);

#endif
