/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers shared by the image tests: scratch directories, known contents,
 * images written from a short description, and manifest surgery. */
#ifndef IMG_TEST_H
#define IMG_TEST_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "image.h"

enum img_fill {
	FILL_RANDOM,                 /* incompressible */
	FILL_ZERO,                   /* every chunk a hole */
	FILL_HOLEY,                  /* random, with chunk 1 all zeros */
	FILL_TEXT,                   /* compressible */
	FILL_MIXED,                  /* chunk 0 compressible, the rest random */
};

struct img_extent_spec {
	uint64_t va;
	uint64_t size;
	enum img_fill fill;
	uint32_t seed;
};

/* A fresh scratch directory: on the build directory's disk ("disk"), or on
 * tmpfs ("tmpfs": /dev/shm; NULL if there is none). Returns "<scratch>/img",
 * not yet existing. */
char *img_scratch(const char *where);
void img_rm_rf(const char *path);
/* Remove the whole scratch directory of img_scratch() and free dir. */
void img_scratch_free(char *dir);

/* The expected contents of extent `spec` at offset..offset+len. */
void img_fill(const struct img_extent_spec *spec, uint64_t offset, void *buf, size_t len);

/* Write an image of these extents (and two modules, one given twice), with
 * `state` as its state. Asserts success. */
void img_write(const char *dir, const struct gs_image_write_opts *opts,
	       const struct img_extent_spec *ext, unsigned n);
/* Read every chunk back and compare with img_fill. Asserts. */
void img_check(const char *dir, const struct gs_image_read_opts *opts,
	       const struct img_extent_spec *ext, unsigned n);

/* Standard small image used by the damage tests. */
extern const struct img_extent_spec img_std[];
extern const unsigned img_std_n;
#define IMG_STD_CHUNK (64u << 10)

/* Open; returns the error and keeps the message in *msg (freed by caller). */
int img_open_err(const char *dir, char **msg);

/* Manifest surgery: load, let fn change it, save, fix memory.img's header
 * checksum so the reader gets as far as the field checks. */
void img_edit_manifest(const char *dir, void (*fn)(json_t *m, void *arg), void *arg);
void img_fix_manifest_sum(const char *dir);
void img_write_file(const char *dir, const char *name, const void *buf, size_t len);
void *img_read_file(const char *dir, const char *name, size_t *len);
void img_flip_bit(const char *dir, const char *name, uint64_t offset, int bit);

bool img_contains(const char *haystack, const char *needle);

#endif
