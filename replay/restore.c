/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Copying saved contents back to the device (DESIGN.md §7, thaw), from host
 * memory or from an image: the mirror of dump.c on the same engine. From an
 * image, reads (io_uring, several in flight) fill staging buffers while the
 * copy engine empties earlier ones; all-zero chunks become a device memset
 * and never touch a buffer.
 */
#define GS_LOG_SUBSYS "replay"
#include "rp_xfer.h"

#include <errno.h>
#include <string.h>

#include "image.h"
#include "log.h"
#include "thread.h"

/* ---- from host memory ----------------------------------------------------------------- */

static int host_free_slot(struct rp_xfer *x, struct rp_slot **out)
{
	for (;;) {
		struct rp_slot *s = rp_xfer_free_slot(x);
		int rc;

		if (s) {
			*out = s;
			return 0;
		}
		s = rp_xfer_oldest(x, RP_SLOT_COPYING);
		rc = rp_xfer_wait(x, s);
		if (rc)
			return rc;
		rp_xfer_advance(x, s->len);
		s->st = RP_SLOT_FREE;
	}
}

static int host_start(struct rp_xfer *x, struct rp_slot *s)
{
	memcpy(s->buf, (const char *)s->copy->region->host + s->off, s->len);
	return rp_xfer_issue(x, s,
			     RP_REAL(cuMemcpyHtoDAsync_v2, s->copy->va + s->off, s->buf, s->len,
				     x->stream),
			     "copying to the device");
}

static int restore_host_group(struct rp_xfer *x, struct rp_copy *copies, size_t n)
{
	int rc = rp_xfer_chunks(x, copies, n, host_free_slot, host_start);

	for (struct rp_slot *s; !rc && (s = rp_xfer_oldest(x, RP_SLOT_COPYING));)
		rc = rp_xfer_retire(x, s);
	return rc;
}

/* ---- from an image ----------------------------------------------------------------------- */

static void on_read(void *arg, const struct gs_image_io *io)
{
	struct rp_slot *s = arg;

	s->status = io->status;
	s->zero = io->zero;
	s->st = RP_SLOT_FILLED;
}

/* Issue the device copies of the buffers the reader has filled. */
static int issue_filled(struct rp_xfer *x)
{
	for (unsigned i = 0; i < x->nslots; i++) {
		struct rp_slot *s = &x->slots[i];
		int rc;

		if (s->st != RP_SLOT_FILLED)
			continue;
		if (s->status < 0) {
			s->st = RP_SLOT_FREE;
			return rp_fail(x->err, s->status, "reading the image failed: %s",
				       gs_image_reader_errmsg(x->reader));
		}
		rc = rp_xfer_issue(x, s,
				   RP_REAL(cuMemcpyHtoDAsync_v2, s->copy->va + s->off, s->buf, s->len,
					   x->stream),
				   "copying to the device");
		if (rc)
			return rc;
	}
	return 0;
}

static int image_free_slot(struct rp_xfer *x, struct rp_slot **out)
{
	for (;;) {
		struct rp_slot *s = rp_xfer_free_slot(x);
		int rc;

		if (s) {
			*out = s;
			return 0;
		}
		rc = issue_filled(x);
		if (rc)
			return rc;
		s = rp_xfer_oldest(x, RP_SLOT_COPYING);
		if (s) {
			rc = rp_xfer_wait(x, s);
			if (rc)
				return rc;
			rp_xfer_advance(x, s->len);
			s->st = RP_SLOT_FREE;
			continue;
		}
		if (!rp_xfer_any(x, RP_SLOT_READING))
			return rp_fail(x->err, -EIO, "restore: no staging buffer can be freed");
		rc = gs_image_read_reap(x->reader, true);
		if (rc < 0)
			return rp_fail(x->err, rc, "reading the image failed: %s",
				       gs_image_reader_errmsg(x->reader));
	}
}

static int restore_image_group(struct rp_xfer *x, struct rp_copy *copies, size_t n)
{
	int rc = 0;

	for (size_t i = 0; i < n && !rc; i++) {
		struct rp_copy *c = &copies[i];
		uint32_t index = 0;

		for (uint64_t off = 0; off < c->region->size && !rc; off += x->chunk, index++) {
			size_t len = c->region->size - off < x->chunk ? c->region->size - off : x->chunk;
			struct gs_image_chunk ch;
			struct rp_slot *s = NULL;

			rc = gs_image_chunk_get(x->reader, c->region->extent, index, &ch);
			if (rc) {
				rc = rp_fail(x->err, rc, "image: %s", gs_image_reader_errmsg(x->reader));
				break;
			}
			if (ch.kind == GS_IMAGE_CHUNK_ZERO) {
				CUresult cr = RP_REAL(cuMemsetD8Async, c->va + off, 0, len, x->stream);
				if (cr != CUDA_SUCCESS)
					rc = rp_fail(x->err, rp_cu_errno(cr), "clearing %zu bytes at "
						     "%#llx failed: %s", len,
						     (unsigned long long)(c->va + off), rp_cu_name(cr));
				rp_xfer_advance(x, len);
				continue;
			}
			rc = image_free_slot(x, &s);
			if (rc)
				break;
			s->copy = c;
			s->off = off;
			s->len = len;
			s->status = 0;
			s->st = RP_SLOT_READING;
			rc = gs_image_read_chunk(x->reader, c->region->extent, off, s->buf, len,
						 on_read, s);
			if (rc) {
				s->st = RP_SLOT_FREE;
				rc = rp_fail(x->err, rc, "reading the image failed: %s",
					     gs_image_reader_errmsg(x->reader));
				break;
			}
			rc = issue_filled(x);
		}
	}
	/* Drain: reads first (their copies follow), then the copies. */
	while (rp_xfer_any(x, RP_SLOT_READING)) {
		int r = gs_image_read_reap(x->reader, true);
		if (r < 0 && !rc)
			rc = rp_fail(x->err, r, "reading the image failed: %s",
				     gs_image_reader_errmsg(x->reader));
		if (r < 0) {
			/* Reads may still land in the staging buffers: keep
			 * them mapped (leaked) rather than free them. */
			x->leak_block = true;
			break;
		}
		if (!rc)
			rc = issue_filled(x);
	}
	if (!rc)
		rc = issue_filled(x);
	for (struct rp_slot *s; (s = rp_xfer_oldest(x, RP_SLOT_COPYING));) {
		int r = rp_xfer_retire(x, s);

		if (r && !rc)
			rc = r;
	}
	return rc;
}

/* Find each region's extent in the image, by address, and check it is the
 * region's: an image from another run, or tampered with, must not be
 * poured into device memory. */
static int match_extents(struct gs_image_reader *r, struct rp_copy *copies, size_t n,
			 const char *dir, char **err)
{
	for (size_t i = 0; i < n; i++) {
		struct rp_region *reg = copies[i].region;
		struct gs_image_extent ext;
		uint32_t id;

		if (gs_image_extent_find(r, reg->va, &id) != 0 ||
		    gs_image_extent_get(r, id, &ext) != 0 || ext.va != reg->va ||
		    ext.size != reg->size)
			return rp_fail(err, -EINVAL, "image %s holds no memory for %#llx (%llu bytes): "
				       "it is not the image this process was released to", dir,
				       (unsigned long long)reg->va, (unsigned long long)reg->size);
		reg->extent = id;
	}
	return 0;
}

int rp_restore(struct rp_copy *copies, size_t n, CUcontext const *work, const char *image_dir,
	       const struct gs_progress *progress, char **err)
{
	struct gs_image_reader *reader = NULL;
	struct rp_xfer x;
	uint64_t total = 0;
	int rc;

	for (size_t i = 0; i < n; i++) {
		total += copies[i].region->size;
		if (!image_dir && !copies[i].region->host)
			return rp_fail(err, -ENODATA, "the contents of %#llx were not saved in host "
				       "memory: thaw from the image it was released to (--image)",
				       (unsigned long long)copies[i].region->va);
	}
	if (image_dir) {
		rc = gs_image_reader_open(image_dir, NULL, &reader, err);
		if (rc) {
			gs_error("opening image %s failed", image_dir);
			return rc;
		}
		rc = match_extents(reader, copies, n, image_dir, err);
		if (rc) {
			gs_image_reader_close(reader);
			return rc;
		}
	}
	rc = rp_xfer_init(&x, reader ? gs_image_read_chunk_size(reader) : RP_HOST_CHUNK,
			  reader ? RP_IMAGE_SLOTS : RP_HOST_SLOTS, progress, "restore", total, err);
	if (rc) {
		gs_image_reader_close(reader);
		return rc;
	}
	x.reader = reader;
	gs_inside_begin();
	rc = rp_xfer_groups(&x, copies, n, work, reader ? restore_image_group : restore_host_group);
	gs_inside_end();
	rp_xfer_fini(&x);
	gs_image_reader_close(reader);
	return rc;
}
