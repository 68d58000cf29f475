/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Image writer, the commit: the manifest (written last, its checksum in
 * memory.img's header), fsync of everything under DIR.tmp, and the rename
 * to DIR, replacing an older image in one step where the filesystem can.
 *
 * Apart from image_write.c because this is the part that makes an image
 * whole, or leaves none: its ordering is what a crash depends on.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "image_internal.h"

/* ---- commit -------------------------------------------------------------------- */

static json_t *chunk_json(const struct wr_chunk *c)
{
	char hex[17];

	if (c->kind == GS_IMAGE_CHUNK_ZERO)
		return json_pack("{s:s}", "kind", "zero");
	image_hash_format(c->hash, hex);
	return json_pack("{s:s, s:I, s:s}", "kind", c->kind == GS_IMAGE_CHUNK_ZSTD ? "zstd" : "raw",
			 "stored", (json_int_t)c->stored, "xxh3", hex);
}

static json_t *build_manifest(struct gs_image_writer *w, json_t *state)
{
	char id[33], hex[17], when[32], name[32];
	json_t *m, *mem, *extents, *modules;
	struct tm tm;
	time_t now = time(NULL);

	image_hex_format(w->image_id, 16, id);
	gmtime_r(&now, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	extents = json_array();
	modules = json_array();
	mem = json_pack("{s:s, s:I, s:I, s:I, s:s, s:s, s:s, s:i, s:{s:I, s:I, s:I, s:I, s:I, "
			"s:I, s:I}, s:o}",
			"file", image_file_names[IMAGE_FILE_MEMORY],
			"header_size", (json_int_t)IMAGE_HEADER_SIZE,
			"chunk_size", (json_int_t)w->chunk_size,
			"file_size", (json_int_t)w->file_end,
			"io", w->stats.direct_io ? "direct" : "buffered",
			"io_engine", w->stats.uring ? "io_uring" : "pwrite",
			"compression", w->cctx ? "zstd" : "none",
			"zstd_level", w->cctx ? w->opts.zstd_level : 0,
			"totals",
			"bytes", (json_int_t)w->stats.bytes_total,
			"zero", (json_int_t)w->stats.bytes_zero,
			"raw", (json_int_t)w->stats.bytes_raw,
			"compressed_in", (json_int_t)w->stats.bytes_compressed_in,
			"compressed_out", (json_int_t)w->stats.bytes_compressed_out,
			"stored", (json_int_t)w->stats.bytes_stored,
			"chunks", (json_int_t)w->stats.chunks,
			"extents", extents);
	m = json_pack("{s:s, s:i, s:s, s:s, s:O, s:o, s:o, s:o}",
		      "magic", IMAGE_MANIFEST_MAGIC,
		      "format_version", GS_IMAGE_FORMAT_VERSION,
		      "image_id", id,
		      "created", when,
		      "source", w->source,
		      "memory", mem,
		      "modules", modules,
		      "state", state ? json_incref(state) : json_object());
	if (!m)
		return NULL;
	for (uint32_t i = 0; i < w->nextents; i++) {
		const struct wr_extent *e = &w->extents[i];
		json_t *chunks = json_array(), *ej;

		for (uint32_t k = 0; chunks && k < e->nchunks; k++)
			if (json_array_append_new(chunks, chunk_json(&e->chunks[k])) < 0) {
				json_decref(chunks);
				chunks = NULL;
			}
		ej = json_pack("{s:I, s:I, s:I, s:I, s:o}", "id", (json_int_t)i,
			       "va", (json_int_t)e->va, "size", (json_int_t)e->size,
			       "offset", (json_int_t)e->offset, "chunks", chunks);
		if (!ej || json_array_append_new(extents, ej) < 0)
			goto fail;
	}
	for (uint32_t i = 0; i < w->nmodules; i++) {
		json_t *mj;

		image_hash_format(w->modules[i].hash, hex);
		image_module_name(i, false, name);
		mj = json_pack("{s:I, s:s, s:I, s:s}", "index", (json_int_t)i, "file", name,
			       "size", (json_int_t)w->modules[i].size, "xxh3", hex);
		if (!mj || json_array_append_new(modules, mj) < 0)
			goto fail;
	}
	return m;
fail:
	json_decref(m);
	return NULL;
}

static int fsync_at(int dirfd, const char *name)
{
	int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	int ret = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

/* Everything under DIR.tmp reaches the disk before the rename makes it an
 * image: files, then the directories that name them. */
static int sync_tmp(struct gs_image_writer *w)
{
	char name[32];
	int ret;

	if (fsync(image_io_fd(w->io)) < 0)
		return image_fail(&w->err, -errno, "image %s: fsync %s: %s", w->dir,
				  image_file_names[IMAGE_FILE_MEMORY], strerror(errno));
	for (uint32_t i = 0; i < w->nmodules; i++) {
		image_module_name(i, true, name);
		ret = fsync_at(w->modules_fd, name);
		if (ret < 0)
			return image_fail(&w->err, ret, "image %s: fsync %s/%s: %s", w->dir,
					  image_file_names[IMAGE_FILE_MODULES], name,
					  strerror(-ret));
	}
	if (fsync(w->modules_fd) < 0 || fsync(w->tmp_fd) < 0)
		return image_fail(&w->err, -errno, "image %s: fsync %s.tmp: %s", w->dir, w->dir,
				  strerror(errno));
	return 0;
}

static int write_manifest(struct gs_image_writer *w, json_t *state)
{
	json_t *m = build_manifest(w, state);
	char *text;
	size_t len;
	int ret;

	if (!m)
		return image_fail(&w->err, -ENOMEM, "image %s: building the manifest failed "
				  "(out of memory, or a state string that is not UTF-8)", w->dir);
	/* One line per value: readable with a pager, still a few MB at most. */
	text = json_dumps(m, JSON_INDENT(1) | JSON_ENSURE_ASCII);
	json_decref(m);
	if (!text)
		return image_fail(&w->err, -ENOMEM, "image %s: serialising the manifest failed "
				  "(out of memory, or a state value JSON cannot hold, like NaN)",
				  w->dir);
	len = strlen(text);
	if (len > IMAGE_MANIFEST_MAX) {
		free(text);
		return image_fail(&w->err, -EFBIG, "image %s: manifest of %zu bytes is over the "
				  "%u-byte limit readers accept; use a larger chunk size", w->dir,
				  len, IMAGE_MANIFEST_MAX);
	}
	ret = image_write_file(w->tmp_fd, image_file_names[IMAGE_FILE_MANIFEST], text, len);
	if (ret == 0)
		ret = fsync_at(w->tmp_fd, image_file_names[IMAGE_FILE_MANIFEST]);
	if (ret < 0) {
		free(text);
		return image_fail(&w->err, ret, "image %s: writing %s: %s", w->dir,
				  image_file_names[IMAGE_FILE_MANIFEST], strerror(-ret));
	}
	/* The header carries the manifest's checksum: a damaged manifest (a
	 * flipped digit in an address) is caught before anything trusts it. */
	ret = image_writer_header(w, len, image_hash(text, len));
	free(text);
	if (ret < 0)
		return image_fail(&w->err, ret, "image %s: writing the header of %s: %s", w->dir,
				  image_file_names[IMAGE_FILE_MEMORY], strerror(-ret));
	return 0;
}

static void remove_old(struct gs_image_writer *w, const char *name)
{
	char foreign[PATH_MAX];
	int fd = openat(w->parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	int ret = fd < 0 ? -errno : image_clear_dir(fd, foreign, sizeof(foreign));

	if (fd >= 0)
		close(fd);
	if (ret == 0 && unlinkat(w->parent_fd, name, AT_REMOVEDIR) < 0)
		ret = -errno;
	if (ret < 0)
		image_logf(&w->err, GS_IMAGE_LOG_WARN, "image %s: the replaced image is left in "
			   "%s (%s); remove it by hand", w->dir, name,
			   ret == -ENOTEMPTY ? "it holds other files" : strerror(-ret));
}

static int rename2(struct gs_image_writer *w, const char *from, const char *to,
		   unsigned flags)
{
	if (image_fault("image-no-renameat2")) {
		errno = EINVAL;
		return -1;
	}
	return renameat2(w->parent_fd, from, w->parent_fd, to, flags);
}

static int rename_into_place(struct gs_image_writer *w)
{
	char *old = NULL;
	int ret;

	if (!w->replace_existing) {
		/* NOREPLACE: a directory that appeared at DIR meanwhile is never
		 * overwritten (plain rename(2) would replace an empty one). */
		if (rename2(w, w->tmp_base, w->base, RENAME_NOREPLACE) == 0)
			return 0;
		if (errno != EINVAL && errno != ENOSYS)
			goto fail;
		if (faccessat(w->parent_fd, w->base, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
			errno = EEXIST;
			goto fail;
		}
		if (renameat(w->parent_fd, w->tmp_base, w->parent_fd, w->base) == 0)
			return 0;
		goto fail;
	}
	/* One step: readers see the old image or the new one, never none. */
	if (rename2(w, w->tmp_base, w->base, RENAME_EXCHANGE) == 0) {
		remove_old(w, w->tmp_base);
		return 0;
	}
	if (errno == ENOENT) {
		w->replace_existing = false;
		return rename_into_place(w);
	}
	if (errno != EINVAL && errno != ENOSYS)
		goto fail;
	/* No exchange here (some network and FUSE filesystems): move the old
	 * image aside first. A crash in between leaves it at DIR.old. */
	if (asprintf(&old, "%s.old", w->base) < 0)
		return image_fail(&w->err, -ENOMEM, "image %s: out of memory", w->dir);
	if (renameat(w->parent_fd, w->base, w->parent_fd, old) < 0) {
		ret = image_fail(&w->err, -errno, "image %s: moving the old image aside to %s: "
				 "%s", w->dir, old, strerror(errno));
		free(old);
		return ret;
	}
	if (renameat(w->parent_fd, w->tmp_base, w->parent_fd, w->base) < 0) {
		ret = -errno;
		if (renameat(w->parent_fd, old, w->parent_fd, w->base) < 0) {
			/* Say where the old image is: nothing may be lost. */
			ret = image_fail(&w->err, ret, "image %s: renaming %s.tmp to %s: %s; the "
					 "previous image could not be put back and is at %s.old",
					 w->dir, w->dir, w->dir, strerror(-ret), w->dir);
			free(old);
			return ret;
		}
		free(old);
		errno = -ret;
		goto fail;
	}
	remove_old(w, old);
	free(old);
	return 0;
fail:
	return image_fail(&w->err, -errno, "image %s: renaming %s.tmp to %s: %s", w->dir,
			  w->dir, w->dir, errno == EEXIST ? "it exists now (another writer?)" :
			  strerror(errno));
}

int gs_image_commit(struct gs_image_writer *w, json_t *state)
{
	int ret;

	if (w->committed)
		return image_fail(&w->err, -EINVAL, "image %s: already committed", w->dir);
	if (w->failed)
		return w->failed;
	ret = gs_image_write_flush(w);
	if (ret < 0)
		return ret;
	for (uint32_t i = 0; i < w->nextents; i++) {
		const struct wr_extent *e = &w->extents[i];

		if (e->ndone == e->nchunks)
			continue;
		for (uint32_t k = 0; k < e->nchunks; k++)
			if (e->chunks[k].state != CHUNK_DONE)
				return image_fail(&w->err, -EINVAL, "image %s: extent %u (va 0x%llx, "
						  "%llu bytes): chunk %u of %u was never written; "
						  "every chunk must be written before the commit",
						  w->dir, i, (unsigned long long)e->va,
						  (unsigned long long)e->size, k, e->nchunks);
	}
	if (w->file_end != w->file_size_set &&
	    ftruncate(image_io_fd(w->io), (off_t)w->file_end) < 0)
		return image_fail(&w->err, -errno, "image %s: setting the size of %s: %s", w->dir,
				  image_file_names[IMAGE_FILE_MEMORY], strerror(errno));
	w->file_size_set = w->file_end;
	ret = write_manifest(w, state);
	if (ret < 0)
		return ret;
	ret = sync_tmp(w);
	if (ret < 0)
		return ret;
	if (image_fault("image-commit"))
		return image_fail(&w->err, -ECANCELED, "image %s: fault injected before the "
				  "rename (GPUSWAP_FAULT=image-commit)", w->dir);
	ret = rename_into_place(w);
	if (ret < 0)
		return ret;
	w->committed = true;
	/* The rename itself is durable only once the parent is synced. */
	if (fsync(w->parent_fd) < 0)
		image_logf(&w->err, GS_IMAGE_LOG_WARN, "image %s: fsync of the parent directory: "
			   "%s", w->dir, strerror(errno));
	return 0;
}
