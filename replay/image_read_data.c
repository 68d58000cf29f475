/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Image reader, the data path: each memory chunk from memory.img into the
 * caller's buffer through the I/O engine's queue (image_io.c), zero chunks
 * without I/O, zstd chunks through a bounce buffer, every chunk's checksum
 * checked before the caller is told; and gs_image_verify, which reads the
 * whole image that way.
 *
 * Apart from image_read.c because this is the hot path of a restore, with
 * its own state (slots, bounce buffers).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "image_internal.h"

static const char *hint_damaged = IMAGE_HINT_DAMAGED;

/* ---- reading memory ---------------------------------------------------------------------- */

static void finish_read(struct gs_image_reader *r, struct rd_slot *s, int status)
{
	gs_image_done_fn done = s->done;

	s->busy = false;
	s->done = NULL;
	s->io.status = status;
	if (done)
		done(s->arg, &s->io);
}

static void on_read(void *arg, struct image_io_req *req)
{
	struct gs_image_reader *r = arg;
	struct rd_slot *s = image_container_of(req, struct rd_slot, req);
	const struct rd_extent *e = &r->extents[s->extent];
	const struct rd_chunk *c = &e->chunks[s->index];
	const char *mem = image_file_names[IMAGE_FILE_MEMORY];
	uint64_t h;

	if (req->res < 0) {
		image_fail(&r->err, req->res, "image %s: reading %s (extent %u chunk %u, %u bytes "
			   "at offset %llu): %s", r->dir, mem, s->extent, s->index, req->len,
			   (unsigned long long)req->off, strerror(-req->res));
		finish_read(r, s, req->res);
		return;
	}
	if ((uint32_t)req->res != req->len) {
		image_fail(&r->err, -ENODATA, "image %s: %s ends inside extent %u chunk %u (read "
			   "%d of %u bytes at offset %llu): the file is truncated; use another "
			   "copy", r->dir, mem, s->extent, s->index, req->res, req->len,
			   (unsigned long long)req->off);
		finish_read(r, s, -ENODATA);
		return;
	}
	if (c->kind == GS_IMAGE_CHUNK_ZSTD) {
		size_t n = ZSTD_decompressDCtx(r->dctx, s->io.buf, s->io.len, s->bounce, c->stored);

		if (ZSTD_isError(n) || n != s->io.len) {
			image_fail(&r->err, -EBADMSG, "image %s: %s: extent %u (va 0x%llx) chunk %u: "
				   "compressed data is damaged (%s); %s", r->dir, mem, s->extent,
				   (unsigned long long)e->va, s->index,
				   ZSTD_isError(n) ? ZSTD_getErrorName(n) : "wrong length",
				   hint_damaged);
			finish_read(r, s, -EBADMSG);
			return;
		}
	}
	h = image_hash(s->io.buf, s->io.len);
	if (h != c->hash) {
		char want[17], got[17];

		image_hash_format(c->hash, want);
		image_hash_format(h, got);
		image_fail(&r->err, -EBADMSG, "image %s: %s: extent %u (va 0x%llx) chunk %u (file "
			   "offset %llu): checksum mismatch (manifest xxh3 %s, data %s); %s",
			   r->dir, mem, s->extent, (unsigned long long)e->va, s->index,
			   (unsigned long long)(e->offset + s->io.offset), want, got, hint_damaged);
		finish_read(r, s, -EBADMSG);
		return;
	}
	finish_read(r, s, 0);
}

int gs_image_read_reap(struct gs_image_reader *r, bool wait)
{
	int n = image_io_reap(r->io, wait, on_read, r);

	if (n < 0)
		return image_fail(&r->err, n, "image %s: waiting for reads: %s", r->dir,
				  strerror(-n));
	return n;
}

int gs_image_read_flush(struct gs_image_reader *r)
{
	while (image_io_inflight(r->io) > 0) {
		int n = gs_image_read_reap(r, true);

		if (n < 0)
			return n;
	}
	return 0;
}

int gs_image_read_chunk(struct gs_image_reader *r, uint32_t extent, uint64_t offset, void *buf,
			size_t len, gs_image_done_fn done, void *arg)
{
	const struct rd_extent *e;
	const struct rd_chunk *c;
	struct rd_slot *s = NULL;
	uint64_t want;
	uint32_t index;
	int ret;

	if (extent >= r->nextents)
		return image_fail(&r->err, -EINVAL, "image %s: no extent %u (the image has %u)",
				  r->dir, extent, r->nextents);
	e = &r->extents[extent];
	if (offset % r->chunk_size || offset >= e->size)
		return image_fail(&r->err, -EINVAL, "image %s: extent %u: offset %llu is not a "
				  "chunk start (chunk size %u, extent size %llu)", r->dir, extent,
				  (unsigned long long)offset, r->chunk_size,
				  (unsigned long long)e->size);
	index = (uint32_t)(offset / r->chunk_size);
	want = e->size - offset < r->chunk_size ? e->size - offset : r->chunk_size;
	if (len != want)
		return image_fail(&r->err, -EINVAL, "image %s: extent %u chunk %u: length %zu, "
				  "expected %llu", r->dir, extent, index, len,
				  (unsigned long long)want);
	if ((uintptr_t)buf % GS_IMAGE_ALIGN)
		return image_fail(&r->err, -EINVAL, "image %s: extent %u chunk %u: buffer %p is "
				  "not 4 KiB-aligned", r->dir, extent, index, buf);
	c = &e->chunks[index];
	if (c->kind == GS_IMAGE_CHUNK_ZERO) {
		struct gs_image_io io = {.extent = extent, .offset = offset, .buf = buf, .len = len,
					 .zero = true};

		memset(buf, 0, len);
		if (done)
			done(arg, &io);
		return 0;
	}
	while (!s) {
		for (unsigned i = 0; i < r->depth; i++)
			if (!r->slots[i].busy) {
				s = &r->slots[i];
				break;
			}
		if (!s && (ret = gs_image_read_reap(r, true)) < 0)
			return ret;
	}
	s->extent = extent;
	s->index = index;
	s->done = done;
	s->arg = arg;
	s->io = (struct gs_image_io){.extent = extent, .offset = offset, .buf = buf, .len = len};
	s->req = (struct image_io_req){.buf = buf, .len = (uint32_t)image_align_up(len),
				       .off = e->offset + offset};
	if (c->kind == GS_IMAGE_CHUNK_ZSTD) {
		if (!s->bounce && posix_memalign(&s->bounce, GS_IMAGE_ALIGN, r->chunk_size)) {
			s->bounce = NULL;
			return image_fail(&r->err, -ENOMEM, "image %s: out of memory", r->dir);
		}
		s->req.buf = s->bounce;
		s->req.len = (uint32_t)image_align_up(c->stored);
	}
	s->busy = true;
	ret = image_io_submit(r->io, &s->req);
	if (ret < 0) {
		s->busy = false;
		return image_fail(&r->err, ret, "image %s: queueing a read of %s: %s", r->dir,
				  image_file_names[IMAGE_FILE_MEMORY], strerror(-ret));
	}
	return 0;
}

/* ---- verify -------------------------------------------------------------------------------- */

struct verify_ctx {
	void **free_bufs;
	unsigned nfree;
	uint64_t bad;
	uint64_t done;
};

static void on_verified(void *arg, const struct gs_image_io *io)
{
	struct verify_ctx *v = arg;

	if (io->status < 0)
		v->bad++;
	v->done += io->len;
	v->free_bufs[v->nfree++] = io->buf;
}

int gs_image_verify(struct gs_image_reader *r,
		    void (*progress)(void *arg, uint64_t done, uint64_t total),
		    void *progress_arg, uint64_t *bad)
{
	uint64_t total = r->stats.bytes_total + r->stats.module_bytes;
	struct verify_ctx v = {0};
	void **all;
	int ret = 0;

	*bad = 0;
	all = calloc(r->depth, sizeof(*all));
	v.free_bufs = calloc(r->depth, sizeof(*v.free_bufs));
	if (!all || !v.free_bufs) {
		free(all);
		free(v.free_bufs);
		return image_fail(&r->err, -ENOMEM, "image %s: out of memory", r->dir);
	}
	for (unsigned i = 0; i < r->depth; i++) {
		if (posix_memalign(&all[i], GS_IMAGE_ALIGN, r->chunk_size)) {
			all[i] = NULL;
			ret = image_fail(&r->err, -ENOMEM, "image %s: out of memory", r->dir);
			goto out;
		}
		v.free_bufs[v.nfree++] = all[i];
	}
	for (uint32_t x = 0; x < r->nextents; x++) {
		const struct rd_extent *e = &r->extents[x];

		for (uint32_t k = 0; k < e->nchunks; k++) {
			uint64_t off = (uint64_t)k * r->chunk_size;
			size_t len = (size_t)(e->size - off < r->chunk_size ? e->size - off :
					      r->chunk_size);

			if (e->chunks[k].kind == GS_IMAGE_CHUNK_ZERO) {
				v.done += len;
				continue;
			}
			while (v.nfree == 0)
				if ((ret = gs_image_read_reap(r, true)) < 0)
					goto out;
			ret = gs_image_read_chunk(r, x, off, v.free_bufs[--v.nfree], len,
						  on_verified, &v);
			if (ret < 0)
				goto out;
			if (progress)
				progress(progress_arg, v.done, total);
		}
	}
	if ((ret = gs_image_read_flush(r)) < 0)
		goto out;
	for (uint32_t i = 0; i < r->nmodules; i++) {
		void *bytes;
		size_t size;

		if (gs_image_read_module(r, i, &bytes, &size) < 0) {
			v.bad++;
		} else {
			free(bytes);
		}
		v.done += r->modules[i].size;
		if (progress)
			progress(progress_arg, v.done, total);
	}
out:
	if (gs_image_read_flush(r) < 0) {
		/* Reads may still be in flight into the buffers: leaking them
		 * is safe, freeing them is not. */
		if (ret >= 0)
			ret = -EIO;
	} else {
		for (unsigned i = 0; i < r->depth; i++)
			free(all[i]);
		free(all);
	}
	free(v.free_bufs);
	*bad = v.bad;
	if (ret < 0)
		return ret;
	return v.bad ? -EBADMSG : 0;
}
