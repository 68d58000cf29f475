/* SPDX-License-Identifier: Apache-2.0 */
/* What the cubin and PTX parsers (cuimage_elf.c, cuimage_ptx.c) share. */
#ifndef GS_CUIMAGE_INTERNAL_H
#define GS_CUIMAGE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "cuimage.h"

/* The array `base` of *cap entries of `elem` bytes, grown (doubling, from
 * 16) so that index n fits; *cap is updated. NULL when out of memory or the
 * size would overflow: base is then still valid and still the caller's. */
static inline void *cuimage_grow(void *base, size_t *cap, size_t n, size_t elem)
{
	size_t ncap;
	void *p;

	if (n < *cap)
		return base;
	ncap = *cap ? *cap * 2 : 16;
	if (ncap > SIZE_MAX / elem)
		return NULL;
	p = realloc(base, ncap * elem);
	if (p)
		*cap = ncap;
	return p;
}

#endif
