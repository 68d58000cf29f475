/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Image reader. The image is untrusted input (it may be truncated, damaged,
 * hand-edited, or not ours at all): everything is validated at open, before
 * any of it is used, and every read is checked again against the manifest.
 *
 * This file opens a reader (directory, memory.img's header, the manifest's
 * bytes and checksum), answers the accessors, and reads module files. The
 * manifest's validation is in image_read_manifest.c, reading and verifying
 * memory chunks in image_read_data.c; what they share is in
 * image_internal.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <zstd.h>

#include "image_internal.h"

static const char *hint_damaged = IMAGE_HINT_DAMAGED;

/* ---- opening ---------------------------------------------------------------------- */

static int read_header(struct gs_image_reader *r)
{
	char why[256];
	void *block;
	struct stat st;
	int ret;

	ret = image_io_open(r->dir_fd, image_file_names[IMAGE_FILE_MEMORY], O_RDONLY, 0,
			    !r->opts.buffered, r->depth, &r->io, why, sizeof(why));
	if (ret < 0)
		return image_fail(&r->err, ret, "image %s: %s: %s; %s", r->dir,
				  image_file_names[IMAGE_FILE_MEMORY], why, ret == -ENOENT ?
				  "the image is incomplete; use a complete copy" : hint_damaged);
	if (fstat(image_io_fd(r->io), &st) < 0)
		return image_fail(&r->err, -errno, "image %s: %s: %s", r->dir,
				  image_file_names[IMAGE_FILE_MEMORY], strerror(errno));
	if (!S_ISREG(st.st_mode))
		return image_fail(&r->err, -EBADMSG, "image %s: %s is not a regular file; %s",
				  r->dir, image_file_names[IMAGE_FILE_MEMORY], hint_damaged);
	r->file_size = (uint64_t)st.st_size;
	if (r->file_size < IMAGE_HEADER_SIZE)
		return image_fail(&r->err, -ENODATA, "image %s: %s is %llu bytes, shorter than "
				  "its %u-byte header: the file is truncated; use another copy",
				  r->dir, image_file_names[IMAGE_FILE_MEMORY],
				  (unsigned long long)r->file_size, IMAGE_HEADER_SIZE);
	if (posix_memalign(&block, GS_IMAGE_ALIGN, IMAGE_HEADER_SIZE))
		return image_fail(&r->err, -ENOMEM, "image %s: out of memory", r->dir);
	ret = image_io_pread_all(r->io, block, IMAGE_HEADER_SIZE, 0);
	if (ret == 0)
		ret = image_header_decode(block, IMAGE_HEADER_SIZE, &r->header, why, sizeof(why));
	else
		snprintf(why, sizeof(why), "reading the header: %s", strerror(-ret));
	free(block);
	if (ret < 0)
		return image_fail(&r->err, ret, "image %s: %s: %s%s%s", r->dir,
				  image_file_names[IMAGE_FILE_MEMORY], why,
				  ret == -EPROTO ? "" : "; ", ret == -EPROTO ? "" : hint_damaged);
	return 0;
}

/* Read all `len` bytes of file `name` from fd into buf, then close fd.
 * 0, or -errno (-ENODATA: the file ended early) with the message set. */
static int read_whole(struct gs_image_reader *r, int fd, const char *name, char *buf,
		      size_t len)
{
	size_t got = 0;
	int ret = 0;

	while (got < len) {
		ssize_t n = read(fd, buf + got, len - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			ret = n < 0 ? -errno : -ENODATA;
			break;
		}
		got += (size_t)n;
	}
	close(fd);
	if (ret < 0)
		return image_fail(&r->err, ret, "image %s: reading %s: %s", r->dir, name,
				  strerror(-ret));
	return 0;
}

static int read_manifest(struct gs_image_reader *r)
{
	const char *name = image_file_names[IMAGE_FILE_MANIFEST];
	json_error_t jerr;
	struct stat st;
	char *text;
	size_t len;
	int fd, ret;

	fd = openat(r->dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return image_fail(&r->err, -errno, "image %s: %s: %s; %s", r->dir, name,
				  strerror(errno), errno == ENOENT ?
				  "the image is incomplete; use a complete copy" : hint_damaged);
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return image_fail(&r->err, -EBADMSG, "image %s: %s is not a regular file", r->dir,
				  name);
	}
	if ((uint64_t)st.st_size != r->header.manifest_size ||
	    r->header.manifest_size > IMAGE_MANIFEST_MAX) {
		close(fd);
		return image_fail(&r->err, -EBADMSG, "image %s: %s is %llu bytes, %s's header "
				  "records %llu: the manifest was damaged or replaced; %s", r->dir,
				  name, (unsigned long long)st.st_size,
				  image_file_names[IMAGE_FILE_MEMORY],
				  (unsigned long long)r->header.manifest_size, hint_damaged);
	}
	text = malloc(r->header.manifest_size + 1);
	if (!text) {
		close(fd);
		return image_fail(&r->err, -ENOMEM, "image %s: out of memory", r->dir);
	}
	len = (size_t)r->header.manifest_size;
	ret = read_whole(r, fd, name, text, len);
	if (ret < 0) {
		free(text);
		return ret;
	}
	if (image_hash(text, len) != r->header.manifest_hash) {
		free(text);
		return image_fail(&r->err, -EBADMSG, "image %s: %s does not match the checksum "
				  "in %s's header: %s", r->dir, name,
				  image_file_names[IMAGE_FILE_MEMORY], hint_damaged);
	}
	r->manifest = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	free(text);
	if (!r->manifest)
		return image_fail(&r->err, -EBADMSG, "image %s: %s: line %d column %d: %s; %s",
				  r->dir, name, jerr.line, jerr.column, jerr.text, hint_damaged);
	return 0;
}

static void reader_free(struct gs_image_reader *r)
{
	image_io_close(r->io);
	if (r->slots)
		for (unsigned i = 0; i < r->depth; i++)
			free(r->slots[i].bounce);
	free(r->slots);
	for (uint32_t i = 0; r->extents && i < r->nextents; i++)
		free(r->extents[i].chunks);
	free(r->extents);
	free(r->by_va);
	free(r->modules);
	free(r->devices);
	ZSTD_freeDCtx(r->dctx);
	json_decref(r->manifest);
	if (r->modules_fd >= 0)
		close(r->modules_fd);
	if (r->dir_fd >= 0)
		close(r->dir_fd);
	free(r->dir);
	image_err_free(&r->err);
	free(r);
}

static int open_dir(struct gs_image_reader *r, const char *dir)
{
	char *tmp;
	struct stat st;

	r->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (r->dir_fd >= 0) {
		r->modules_fd = openat(r->dir_fd, image_file_names[IMAGE_FILE_MODULES],
				       O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		return 0;
	}
	if (errno != ENOENT)
		return image_fail(&r->err, -errno, "image %s: %s", dir, strerror(errno));
	/* Say why there is no image when a dump was interrupted. */
	if (asprintf(&tmp, "%s.tmp", dir) >= 0) {
		bool interrupted = stat(tmp, &st) == 0;

		free(tmp);
		if (interrupted)
			return image_fail(&r->err, -ENOENT, "image %s does not exist; %s.tmp is "
					  "what an interrupted dump left, not an image: freeze "
					  "the process again", dir, dir);
	}
	return image_fail(&r->err, -ENOENT, "image %s does not exist", dir);
}

int gs_image_reader_open(const char *dir, const struct gs_image_read_opts *opts,
			 struct gs_image_reader **out, char **err)
{
	struct gs_image_reader *r = calloc(1, sizeof(*r));
	int ret;

	if (err)
		*err = NULL;
	if (!r || !(r->dir = strdup(dir))) {
		free(r);
		if (err)
			*err = strdup("image: out of memory");
		return -ENOMEM;
	}
	r->dir_fd = r->modules_fd = -1;
	if (opts)
		r->opts = *opts;
	r->err.log = r->opts.log;
	r->depth = r->opts.queue_depth ? r->opts.queue_depth : GS_IMAGE_DEFAULT_DEPTH;
	if (r->depth > 1024) {
		ret = image_fail(&r->err, -EINVAL, "image %s: queue depth %u is over 1024", dir,
				 r->depth);
		goto fail;
	}
	if ((ret = open_dir(r, dir)) < 0 ||
	    (ret = read_header(r)) < 0 ||
	    (ret = read_manifest(r)) < 0 ||
	    (ret = image_manifest_check(r)) < 0)
		goto fail;
	r->slots = calloc(r->depth, sizeof(*r->slots));
	r->dctx = ZSTD_createDCtx();
	if (!r->slots || !r->dctx) {
		ret = image_fail(&r->err, -ENOMEM, "image %s: out of memory", dir);
		goto fail;
	}
	r->stats.direct_io = image_io_direct(r->io);
	r->stats.uring = image_io_uring(r->io);
	*out = r;
	return 0;
fail:
	image_err_export(&r->err, err);
	reader_free(r);
	return ret;
}

void gs_image_reader_close(struct gs_image_reader *r)
{
	if (!r)
		return;
	while (image_io_inflight(r->io) > 0)
		if (gs_image_read_reap(r, true) < 0)
			break;
	reader_free(r);
}

/* ---- accessors ------------------------------------------------------------------------ */

json_t *gs_image_state(const struct gs_image_reader *r)
{
	return r->state;
}

json_t *gs_image_manifest(const struct gs_image_reader *r)
{
	return r->manifest;
}

const struct gs_image_source *gs_image_source(const struct gs_image_reader *r)
{
	return &r->source;
}

void gs_image_read_stats(const struct gs_image_reader *r, struct gs_image_stats *st)
{
	*st = r->stats;
	st->direct_io = image_io_direct(r->io);
}

uint32_t gs_image_extent_count(const struct gs_image_reader *r)
{
	return r->nextents;
}

int gs_image_extent_get(const struct gs_image_reader *r, uint32_t id, struct gs_image_extent *out)
{
	const struct rd_extent *e;

	if (id >= r->nextents)
		return -ENOENT;
	e = &r->extents[id];
	*out = (struct gs_image_extent){.id = id, .va = e->va, .size = e->size,
					.file_offset = e->offset, .chunks = e->nchunks,
					.bytes_zero = e->zero};
	return 0;
}

int gs_image_extent_find(const struct gs_image_reader *r, uint64_t va, uint32_t *id)
{
	uint32_t lo = 0, hi = r->nextents;

	/* The first extent (by va) that ends after va. */
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		const struct rd_extent *e = &r->extents[r->by_va[mid]];

		if (e->va + e->size <= va)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == r->nextents || r->extents[r->by_va[lo]].va > va)
		return -ENOENT;
	*id = r->by_va[lo];
	return 0;
}

uint32_t gs_image_read_chunk_size(const struct gs_image_reader *r)
{
	return r->chunk_size;
}

int gs_image_chunk_get(const struct gs_image_reader *r, uint32_t extent, uint32_t index,
		       struct gs_image_chunk *out)
{
	const struct rd_extent *e;
	const struct rd_chunk *c;
	uint64_t off;

	if (extent >= r->nextents || index >= r->extents[extent].nchunks)
		return -ENOENT;
	e = &r->extents[extent];
	c = &e->chunks[index];
	off = (uint64_t)index * r->chunk_size;
	*out = (struct gs_image_chunk){
		.kind = c->kind,
		.offset = off,
		.len = (uint32_t)(e->size - off < r->chunk_size ? e->size - off : r->chunk_size),
		.stored = c->kind == GS_IMAGE_CHUNK_ZERO ? 0 : c->stored,
		.file_offset = e->offset + off,
		.xxh3 = c->kind == GS_IMAGE_CHUNK_ZERO ? 0 : c->hash,
	};
	return 0;
}

uint32_t gs_image_module_count(const struct gs_image_reader *r)
{
	return r->nmodules;
}

const char *gs_image_reader_errmsg(const struct gs_image_reader *r)
{
	return r->err.msg ? r->err.msg : "";
}

/* ---- modules ---------------------------------------------------------------------------- */

int gs_image_read_module(struct gs_image_reader *r, uint32_t index, void **bytes, size_t *size)
{
	const struct rd_module *mod;
	char name[32], short_name[32];
	struct stat st;
	char *buf;
	int fd, ret;

	if (index >= r->nmodules)
		return image_fail(&r->err, -ENOENT, "image %s: no module %u (the image has %u)",
				  r->dir, index, r->nmodules);
	mod = &r->modules[index];
	image_module_name(index, false, name);
	image_module_name(index, true, short_name);
	fd = openat(r->modules_fd, short_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return image_fail(&r->err, -errno, "image %s: %s: %s", r->dir, name,
				  strerror(errno));
	/* Checked at open, checked again: the file may have changed since. */
	if (fstat(fd, &st) < 0 || (uint64_t)st.st_size != mod->size) {
		close(fd);
		return image_fail(&r->err, -EBADMSG, "image %s: %s is no longer %llu bytes; %s",
				  r->dir, name, (unsigned long long)mod->size, hint_damaged);
	}
	buf = malloc(mod->size);
	if (!buf) {
		close(fd);
		return image_fail(&r->err, -ENOMEM, "image %s: out of memory for %s (%llu bytes)",
				  r->dir, name, (unsigned long long)mod->size);
	}
	ret = read_whole(r, fd, name, buf, mod->size);
	if (ret < 0) {
		free(buf);
		return ret;
	}
	if (image_hash(buf, mod->size) != mod->hash) {
		free(buf);
		return image_fail(&r->err, -EBADMSG, "image %s: %s: checksum mismatch; %s", r->dir,
				  name, hint_damaged);
	}
	*bytes = buf;
	*size = mod->size;
	return 0;
}
