/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Image writer, the data path: extents of memory.img, and each chunk from
 * the caller's buffer to the file, zero chunks as holes, others raw or
 * zstd-compressed, through the I/O engine's queue (image_io.c), with the
 * caller told when its buffer is free again.
 *
 * Apart from image_write.c because this is the hot path of a dump, with
 * its own state (slots, bounce buffers) and its own error rules (the first
 * failed write sticks).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zstd.h>

#include "image_internal.h"

/* ---- memory ------------------------------------------------------------------- */

int gs_image_add_extent(struct gs_image_writer *w, uint64_t va, uint64_t size,
			uint32_t *extent)
{
	struct wr_extent *e;
	uint32_t lo = 0, hi = w->nextents;

	if (w->committed)
		return image_fail(&w->err, -EINVAL, "image %s: already committed", w->dir);
	/* The manifest holds signed 64-bit integers; device addresses are far
	 * below 2^63 on every GPU. */
	if (size == 0 || size > IMAGE_EXTENT_MAX_SIZE || va > (uint64_t)INT64_MAX - size ||
	    (size + w->chunk_size - 1) / w->chunk_size > UINT32_MAX)
		return image_fail(&w->err, -EINVAL, "image %s: extent at va 0x%llx: size %llu "
				  "out of range", w->dir, (unsigned long long)va,
				  (unsigned long long)size);
	if (w->file_end + image_align_up(size) > (uint64_t)INT64_MAX)
		return image_fail(&w->err, -EFBIG, "image %s: memory.img would exceed 2^63 bytes",
				  w->dir);
	if (w->nextents == UINT32_MAX)
		return image_fail(&w->err, -E2BIG, "image %s: too many extents", w->dir);
	/* The first range ending after va must start at or after va + size. */
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (w->ranges[mid].end <= va)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < w->nextents && w->ranges[lo].va < va + size)
		return image_fail(&w->err, -EINVAL, "image %s: extent [0x%llx, 0x%llx) overlaps "
				  "extent %u [0x%llx, 0x%llx): each byte of device memory "
				  "belongs to one extent", w->dir, (unsigned long long)va,
				  (unsigned long long)(va + size), w->ranges[lo].extent,
				  (unsigned long long)w->ranges[lo].va,
				  (unsigned long long)w->ranges[lo].end);
	if (w->nextents == w->extents_cap) {
		uint32_t cap = w->extents_cap ? 2 * w->extents_cap : 64;
		struct wr_extent *ne = realloc(w->extents, cap * sizeof(*ne));
		struct wr_range *nr;

		if (!ne)
			return image_fail(&w->err, -ENOMEM, "image %s: out of memory", w->dir);
		w->extents = ne;
		nr = realloc(w->ranges, cap * sizeof(*nr));
		if (!nr)
			return image_fail(&w->err, -ENOMEM, "image %s: out of memory", w->dir);
		w->ranges = nr;
		w->extents_cap = cap;
	}
	e = &w->extents[w->nextents];
	*e = (struct wr_extent){.va = va, .size = size, .offset = w->file_end,
				.nchunks = (uint32_t)((size + w->chunk_size - 1) / w->chunk_size)};
	e->chunks = calloc(e->nchunks, sizeof(*e->chunks));
	if (!e->chunks)
		return image_fail(&w->err, -ENOMEM, "image %s: out of memory", w->dir);
	memmove(&w->ranges[lo + 1], &w->ranges[lo], (w->nextents - lo) * sizeof(*w->ranges));
	w->ranges[lo] = (struct wr_range){.va = va, .end = va + size, .extent = w->nextents};
	w->file_end += image_align_up(size);
	*extent = w->nextents++;
	w->stats.extents = w->nextents;
	w->stats.chunks += e->nchunks;
	w->stats.bytes_total += size;
	return 0;
}

uint32_t gs_image_write_chunk_size(const struct gs_image_writer *w)
{
	return w->chunk_size;
}

static void finish_slot(struct gs_image_writer *w, struct wr_slot *s, int status)
{
	gs_image_done_fn done = s->done;

	s->busy = false;
	s->done = NULL;
	if (done) {
		s->io.status = status;
		done(s->arg, &s->io);
	}
}

void image_writer_on_written(void *arg, struct image_io_req *req)
{
	struct gs_image_writer *w = arg;
	struct wr_slot *s = image_container_of(req, struct wr_slot, req);
	struct wr_extent *e = &w->extents[s->extent];
	struct wr_chunk *c = &e->chunks[s->index];
	int status = req->res < 0 ? req->res : (uint32_t)req->res == req->len ? 0 : -EIO;

	if (image_fault("image-write-enospc"))
		status = -ENOSPC;
	if (status < 0) {
		if (!w->failed)
			image_fail(&w->err, status, "image %s: writing %s (extent %u chunk %u, "
				   "%u bytes at offset %llu): %s; the image cannot be completed: "
				   "%s, then dump again", w->dir,
				   image_file_names[IMAGE_FILE_MEMORY], s->extent, s->index,
				   req->len, (unsigned long long)req->off, strerror(-status),
				   status == -ENOSPC || status == -EDQUOT ?
				   "free space or choose a directory on another filesystem" :
				   "check the filesystem (dmesg)");
		w->failed = status;
		c->state = CHUNK_EMPTY;
	} else {
		c->state = CHUNK_DONE;
		e->ndone++;
		if (c->kind == GS_IMAGE_CHUNK_ZSTD) {
			w->stats.bytes_compressed_in += s->io.len;
			w->stats.bytes_compressed_out += c->stored;
		} else {
			w->stats.bytes_raw += c->stored;
		}
		w->stats.bytes_stored += c->stored;
	}
	w->stats.direct_io = image_io_direct(w->io);
	finish_slot(w, s, status);
}

int gs_image_write_reap(struct gs_image_writer *w, bool wait)
{
	int n = image_io_reap(w->io, wait, image_writer_on_written, w);

	if (n < 0)
		return image_fail(&w->err, n, "image %s: waiting for writes: %s", w->dir,
				  strerror(-n));
	return w->failed ? w->failed : n;
}

int gs_image_write_flush(struct gs_image_writer *w)
{
	while (image_io_inflight(w->io) > 0) {
		int n = image_io_reap(w->io, true, image_writer_on_written, w);

		if (n < 0)
			return image_fail(&w->err, n, "image %s: waiting for writes: %s", w->dir,
					  strerror(-n));
	}
	return w->failed;
}

static struct wr_slot *free_slot(struct gs_image_writer *w, int *ret)
{
	for (;;) {
		for (unsigned i = 0; i < w->depth; i++)
			if (!w->slots[i].busy)
				return &w->slots[i];
		*ret = image_io_reap(w->io, true, image_writer_on_written, w);
		if (*ret < 0) {
			image_fail(&w->err, *ret, "image %s: waiting for writes: %s", w->dir,
				   strerror(-*ret));
			return NULL;
		}
		if (w->failed) {
			*ret = w->failed;
			return NULL;
		}
	}
}

/* Compress into the slot's bounce buffer; the stored size, or 0 when it
 * does not save at least one 4 KiB block (then the chunk is stored raw). */
static uint32_t compress_chunk(struct gs_image_writer *w, struct wr_slot *s, const void *buf,
			       size_t len)
{
	uint64_t cap = image_align_up(len) - GS_IMAGE_ALIGN;
	size_t n;

	if (cap == 0)
		return 0;
	if (!s->bounce && posix_memalign(&s->bounce, GS_IMAGE_ALIGN, w->chunk_size))
		s->bounce = NULL;
	if (!s->bounce)
		return 0;
	/* A destination one block smaller than the raw slot: zstd gives up as
	 * soon as the output cannot fit, so incompressible data costs little. */
	n = ZSTD_compress2(w->cctx, s->bounce, cap, buf, len);
	if (ZSTD_isError(n) || n == 0)
		return 0;
	memset((char *)s->bounce + n, 0, image_align_up(n) - n);
	return (uint32_t)n;
}

int gs_image_write_chunk(struct gs_image_writer *w, uint32_t extent, uint64_t offset,
			 void *buf, size_t len, gs_image_done_fn done, void *arg)
{
	struct wr_extent *e;
	struct wr_chunk *c;
	struct wr_slot *s;
	uint32_t index, stored;
	int ret;

	if (w->failed)
		return w->failed;
	if (w->committed)
		return image_fail(&w->err, -EINVAL, "image %s: already committed", w->dir);
	if (extent >= w->nextents)
		return image_fail(&w->err, -EINVAL, "image %s: no extent %u (%u added)", w->dir,
				  extent, w->nextents);
	e = &w->extents[extent];
	if (offset % w->chunk_size || offset >= e->size)
		return image_fail(&w->err, -EINVAL, "image %s: extent %u: offset %llu is not a "
				  "chunk start (chunk size %u, extent size %llu)", w->dir, extent,
				  (unsigned long long)offset, w->chunk_size,
				  (unsigned long long)e->size);
	index = (uint32_t)(offset / w->chunk_size);
	if (len != (e->size - offset < w->chunk_size ? e->size - offset : w->chunk_size))
		return image_fail(&w->err, -EINVAL, "image %s: extent %u chunk %u: length %zu, "
				  "expected %llu", w->dir, extent, index, len,
				  (unsigned long long)(e->size - offset < w->chunk_size ?
						       e->size - offset : w->chunk_size));
	if ((uintptr_t)buf % GS_IMAGE_ALIGN)
		return image_fail(&w->err, -EINVAL, "image %s: extent %u chunk %u: buffer %p "
				  "is not 4 KiB-aligned", w->dir, extent, index, buf);
	c = &e->chunks[index];
	if (c->state != CHUNK_EMPTY)
		return image_fail(&w->err, -EEXIST, "image %s: extent %u chunk %u written twice",
				  w->dir, extent, index);

	if (image_is_zero(buf, len)) {
		struct gs_image_io io = {.extent = extent, .offset = offset, .buf = buf,
					 .len = len, .zero = true};

		/* A hole: nothing to write, and the reader knows from the
		 * manifest. */
		*c = (struct wr_chunk){.state = CHUNK_DONE, .kind = GS_IMAGE_CHUNK_ZERO};
		e->ndone++;
		w->stats.bytes_zero += len;
		if (done)
			done(arg, &io);
		return 0;
	}
	s = free_slot(w, &ret);
	if (!s)
		return ret;
	if (len % GS_IMAGE_ALIGN)
		memset((char *)buf + len, 0, image_align_up(len) - len);
	c->hash = image_hash(buf, len);
	c->kind = GS_IMAGE_CHUNK_RAW;
	c->stored = (uint32_t)len;
	s->io = (struct gs_image_io){.extent = extent, .offset = offset, .buf = buf, .len = len};
	s->extent = extent;
	s->index = index;
	s->done = done;
	s->arg = arg;
	s->req = (struct image_io_req){.buf = buf, .len = (uint32_t)image_align_up(len),
				       .off = e->offset + offset, .write = true};
	if (w->cctx && (stored = compress_chunk(w, s, buf, len)) > 0) {
		c->kind = GS_IMAGE_CHUNK_ZSTD;
		c->stored = stored;
		s->req.buf = s->bounce;
		s->req.len = (uint32_t)image_align_up(stored);
	}
	/* Writes stay inside the file's size: extending writes serialise on
	 * the inode in several filesystems (ext4 among them). */
	if (s->req.off + s->req.len > w->file_size_set) {
		if (ftruncate(image_io_fd(w->io), (off_t)w->file_end) < 0)
			return image_fail(&w->err, -errno, "image %s: extending %s to %llu bytes: "
					  "%s", w->dir, image_file_names[IMAGE_FILE_MEMORY],
					  (unsigned long long)w->file_end, strerror(errno));
		w->file_size_set = w->file_end;
	}
	c->state = CHUNK_QUEUED;
	s->busy = true;
	ret = image_io_submit(w->io, &s->req);
	if (ret < 0) {
		s->busy = false;
		s->done = NULL;
		c->state = CHUNK_EMPTY;
		w->failed = ret;
		return image_fail(&w->err, ret, "image %s: queueing a write of %s: %s", w->dir,
				  image_file_names[IMAGE_FILE_MEMORY], strerror(-ret));
	}
	/* The caller's buffer is free as soon as it has been compressed. */
	if (c->kind == GS_IMAGE_CHUNK_ZSTD && done) {
		s->done = NULL;
		s->io.status = 0;
		done(arg, &s->io);
	}
	return 0;
}
