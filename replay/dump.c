/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Copying device memory out (DESIGN.md §7, dump), and the transfer engine
 * restore.c shares: a dedicated stream per device, pinned staging buffers,
 * several copies in flight.
 *
 * Why staging buffers rather than pinning the destination: the destination
 * is as large as the GPU's memory, and pinning that much host memory (and
 * unpinning it again) costs more than the copy, may exceed RLIMIT_MEMLOCK,
 * and is not possible for an image at all. A few pinned buffers, reused in
 * turn, let the copy engine run at full speed while the CPU drains the
 * previous buffer into host memory or hands it to the image writer.
 */
#define GS_LOG_SUBSYS "replay"
#include "rp_xfer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "image.h"
#include "log.h"
#include "thread.h"

CUresult rp_in_ctx(CUcontext ctx, CUresult (*fn)(void *arg), void *arg)
{
	CUcontext popped;
	CUresult rc = RP_REAL(cuCtxPushCurrent_v2, ctx);

	if (rc != CUDA_SUCCESS)
		return rc;
	rc = fn(arg);
	RP_REAL(cuCtxPopCurrent_v2, &popped);
	return rc;
}

/* ---- temporary mappings of physical allocations ------------------------------------ */

CUresult rp_tmpmap_make(struct rp_tmpmap *m, CUmemGenericAllocationHandle real, size_t size,
			int real_device)
{
	CUmemAccessDesc access = {
		.location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = real_device },
		.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE,
	};
	CUresult rc;

	memset(m, 0, sizeof(*m));
	rc = RP_REAL(cuMemAddressReserve, &m->va, size, 0, 0, 0);
	if (rc != CUDA_SUCCESS)
		return rc;
	m->size = size;
	rc = RP_REAL(cuMemMap, m->va, size, 0, real, 0);
	if (rc == CUDA_SUCCESS) {
		m->mapped = true;
		rc = RP_REAL(cuMemSetAccess, m->va, size, &access, 1);
	}
	if (rc != CUDA_SUCCESS)
		rp_tmpmap_drop(m);
	return rc;
}

void rp_tmpmap_drop(struct rp_tmpmap *m)
{
	CUresult rc;

	if (!m->va)
		return;
	if (m->mapped && (rc = RP_REAL(cuMemUnmap, m->va, m->size)) != CUDA_SUCCESS)
		gs_warn("unmapping the temporary mapping %#llx failed (%s)",
			(unsigned long long)m->va, rp_cu_name(rc));
	if ((rc = RP_REAL(cuMemAddressFree, m->va, m->size)) != CUDA_SUCCESS)
		gs_warn("freeing the temporary range %#llx failed (%s)", (unsigned long long)m->va,
			rp_cu_name(rc));
	memset(m, 0, sizeof(*m));
}

/* ---- the engine ------------------------------------------------------------------------ */

int rp_xfer_init(struct rp_xfer *x, size_t chunk, unsigned nslots,
		 const struct gs_progress *progress, const char *phase, uint64_t total, char **err)
{
	long page = sysconf(_SC_PAGESIZE);

	memset(x, 0, sizeof(*x));
	if (nslots > RP_XFER_MAX_SLOTS)
		nslots = RP_XFER_MAX_SLOTS;
	x->chunk = (chunk + (size_t)page - 1) & ~((size_t)page - 1);
	x->nslots = nslots;
	x->block_len = x->chunk * nslots;
	x->block = mmap(NULL, x->block_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			-1, 0);
	if (x->block == MAP_FAILED) {
		x->block = NULL;
		return rp_fail(err, -ENOMEM, "cannot map %zu bytes of staging buffers",
			       x->block_len);
	}
	for (unsigned i = 0; i < nslots; i++) {
		x->slots[i].buf = (char *)x->block + (size_t)i * x->chunk;
		x->slots[i].x = x;
	}
	x->progress = progress;
	x->phase = phase;
	x->total = total;
	x->err = err;
	return 0;
}

void rp_xfer_fini(struct rp_xfer *x)
{
	if (x->block && !x->leak_block)
		munmap(x->block, x->block_len);
	x->block = NULL;
}

/* With the group's context current. */
static void group_cleanup(struct rp_xfer *x)
{
	CUcontext popped;

	for (unsigned i = 0; i < x->nslots; i++) {
		if (x->slots[i].ev)
			RP_REAL(cuEventDestroy_v2, x->slots[i].ev);
		x->slots[i].ev = NULL;
		x->slots[i].st = RP_SLOT_FREE;
	}
	if (x->stream)
		RP_REAL(cuStreamDestroy_v2, x->stream);
	x->stream = NULL;
	if (x->registered)
		RP_REAL(cuMemHostUnregister, x->block);
	x->registered = false;
	if (x->pushed)
		RP_REAL(cuCtxPopCurrent_v2, &popped);
	x->pushed = false;
	if (x->retained)
		RP_REAL(cuDevicePrimaryCtxRelease_v2, x->real_device);
	x->retained = false;
	x->ctx = NULL;
}

int rp_xfer_group_begin(struct rp_xfer *x, CUcontext work, int real_device)
{
	CUresult rc;

	x->real_device = real_device;
	x->ctx = work;
	if (!x->ctx) {
		/* Memory on a device the process has no context on (its VMM
		 * allocations need none): borrow the primary context. */
		rc = RP_REAL(cuDevicePrimaryCtxRetain, &x->ctx, real_device);
		if (rc != CUDA_SUCCESS)
			return rp_fail(x->err, rp_cu_errno(rc), "cannot get a context on GPU %d to "
				       "copy in: %s", real_device, rp_cu_name(rc));
		x->retained = true;
	}
	rc = RP_REAL(cuCtxPushCurrent_v2, x->ctx);
	if (rc != CUDA_SUCCESS)
		goto fail;
	x->pushed = true;
	rc = RP_REAL(cuMemHostRegister_v2, x->block, x->block_len, 0);
	if (rc != CUDA_SUCCESS)
		goto fail;
	x->registered = true;
	rc = RP_REAL(cuStreamCreate, &x->stream, CU_STREAM_NON_BLOCKING);
	if (rc != CUDA_SUCCESS)
		goto fail;
	for (unsigned i = 0; i < x->nslots && rc == CUDA_SUCCESS; i++)
		rc = RP_REAL(cuEventCreate, &x->slots[i].ev, CU_EVENT_DISABLE_TIMING);
	if (rc != CUDA_SUCCESS)
		goto fail;
	return 0;
fail:
	group_cleanup(x);
	return rp_fail(x->err, rp_cu_errno(rc), "setting up copies on GPU %d failed: %s",
		       real_device, rp_cu_name(rc));
}

int rp_xfer_group_end(struct rp_xfer *x)
{
	CUresult rc = CUDA_SUCCESS;

	if (x->stream)
		rc = RP_REAL(cuStreamSynchronize, x->stream);
	group_cleanup(x);
	if (rc != CUDA_SUCCESS)
		return rp_fail(x->err, rp_cu_errno(rc), "copies on GPU %d failed: %s",
			       x->real_device, rp_cu_name(rc));
	return 0;
}

void rp_xfer_group_abort(struct rp_xfer *x)
{
	if (x->stream)
		RP_REAL(cuStreamSynchronize, x->stream);
	group_cleanup(x);
}

struct rp_slot *rp_xfer_oldest(struct rp_xfer *x, enum rp_slot_state st)
{
	struct rp_slot *best = NULL;

	for (unsigned i = 0; i < x->nslots; i++) {
		struct rp_slot *s = &x->slots[i];
		if (s->st == st && (!best || s->seq < best->seq))
			best = s;
	}
	return best;
}

struct rp_slot *rp_xfer_free_slot(struct rp_xfer *x)
{
	for (unsigned i = 0; i < x->nslots; i++)
		if (x->slots[i].st == RP_SLOT_FREE)
			return &x->slots[i];
	return NULL;
}

bool rp_xfer_any(const struct rp_xfer *x, enum rp_slot_state st)
{
	for (unsigned i = 0; i < x->nslots; i++)
		if (x->slots[i].st == st)
			return true;
	return false;
}

int rp_xfer_chunks(struct rp_xfer *x, struct rp_copy *copies, size_t n,
		   int (*free_slot)(struct rp_xfer *x, struct rp_slot **out),
		   int (*start)(struct rp_xfer *x, struct rp_slot *s))
{
	int rc = 0;

	for (size_t i = 0; i < n && !rc; i++) {
		struct rp_copy *c = &copies[i];

		for (uint64_t off = 0; off < c->region->size && !rc; off += x->chunk) {
			struct rp_slot *s = NULL;

			rc = free_slot(x, &s);
			if (rc)
				break;
			s->copy = c;
			s->off = off;
			s->len = c->region->size - off < x->chunk ? c->region->size - off : x->chunk;
			rc = start(x, s);
		}
	}
	return rc;
}

void rp_xfer_advance(struct rp_xfer *x, uint64_t bytes)
{
	x->done += bytes;
	rp_progress(x->progress, x->phase, x->done, x->total);
}

int rp_xfer_issue(struct rp_xfer *x, struct rp_slot *s, CUresult rc, const char *what)
{
	if (rc == CUDA_SUCCESS)
		rc = RP_REAL(cuEventRecord, s->ev, x->stream);
	if (rc != CUDA_SUCCESS)
		return rp_fail(x->err, rp_cu_errno(rc), "%s of %zu bytes at %#llx on GPU %d failed: %s",
			       what, s->len, (unsigned long long)(s->copy->va + s->off),
			       x->real_device, rp_cu_name(rc));
	s->st = RP_SLOT_COPYING;
	s->seq = x->seq++;
	return 0;
}

int rp_xfer_wait(struct rp_xfer *x, struct rp_slot *s)
{
	CUresult rc = RP_REAL(cuEventSynchronize, s->ev);

	if (rc != CUDA_SUCCESS)
		return rp_fail(x->err, rp_cu_errno(rc), "a copy at %#llx on GPU %d failed: %s",
			       (unsigned long long)(s->copy->va + s->off), x->real_device,
			       rp_cu_name(rc));
	return 0;
}

int rp_xfer_retire(struct rp_xfer *x, struct rp_slot *s)
{
	int rc = rp_xfer_wait(x, s);

	rp_xfer_advance(x, s->len);
	s->st = RP_SLOT_FREE;
	return rc;
}

/* ---- dump ------------------------------------------------------------------------------ */

static void on_written(void *arg, const struct gs_image_io *io)
{
	struct rp_slot *s = arg;

	if (io->status < 0 && s->x->io_error == 0)
		s->x->io_error = io->status;
	s->st = RP_SLOT_FREE;
}

/* The copy into slot s is complete: hand the bytes on. */
static int dump_drain(struct rp_xfer *x, struct rp_slot *s)
{
	int rc = rp_xfer_wait(x, s);

	if (rc)
		return rc;
	rp_xfer_advance(x, s->len);
	if (!x->writer) {
		memcpy((char *)s->copy->region->host + s->off, s->buf, s->len);
		s->st = RP_SLOT_FREE;
		return 0;
	}
	s->st = RP_SLOT_WRITING;
	rc = gs_image_write_chunk(x->writer, s->copy->region->extent, s->off, s->buf, s->len,
				  on_written, s);
	if (rc) {
		s->st = RP_SLOT_FREE;
		return rp_fail(x->err, rc, "writing the image failed: %s",
			       gs_image_writer_errmsg(x->writer));
	}
	return 0;
}

static int dump_free_slot(struct rp_xfer *x, struct rp_slot **out)
{
	for (;;) {
		struct rp_slot *s = NULL;
		int rc;

		if (x->io_error)
			return rp_fail(x->err, x->io_error, "writing the image failed: %s",
				       gs_image_writer_errmsg(x->writer));
		s = rp_xfer_free_slot(x);
		if (s) {
			*out = s;
			return 0;
		}
		s = rp_xfer_oldest(x, RP_SLOT_COPYING);
		if (s) {
			rc = dump_drain(x, s);
			if (rc)
				return rc;
			continue;
		}
		/* Every buffer waits for the file system. */
		rc = gs_image_write_reap(x->writer, true);
		if (rc < 0)
			return rp_fail(x->err, rc, "writing the image failed: %s",
				       gs_image_writer_errmsg(x->writer));
	}
}

static int dump_start(struct rp_xfer *x, struct rp_slot *s)
{
	return rp_xfer_issue(x, s,
			     RP_REAL(cuMemcpyDtoHAsync_v2, s->buf, s->copy->va + s->off, s->len,
				     x->stream),
			     "copying to host");
}

static int dump_group(struct rp_xfer *x, struct rp_copy *copies, size_t n)
{
	int rc = rp_xfer_chunks(x, copies, n, dump_free_slot, dump_start);

	for (struct rp_slot *s; !rc && (s = rp_xfer_oldest(x, RP_SLOT_COPYING));)
		rc = dump_drain(x, s);
	/* The buffers are unpinned at the end of the group: every write of
	 * them must be done. */
	if (!rc && x->writer && (rc = gs_image_write_flush(x->writer)) < 0)
		rp_fail(x->err, rc, "writing the image failed: %s",
			gs_image_writer_errmsg(x->writer));
	if (!rc && x->io_error)
		rc = rp_fail(x->err, x->io_error, "writing the image failed: %s",
			     gs_image_writer_errmsg(x->writer));
	/* After an error, writes may still read from buffers about to be
	 * unpinned and unmapped. */
	if (rc && x->writer)
		gs_image_write_flush(x->writer);
	return rc < 0 ? rc : 0;
}

static int by_device(const void *a, const void *b)
{
	const struct rp_copy *x = a, *y = b;

	if (x->real_device != y->real_device)
		return x->real_device < y->real_device ? -1 : 1;
	return x->va < y->va ? -1 : x->va > y->va;
}

int rp_xfer_groups(struct rp_xfer *x, struct rp_copy *copies, size_t n, CUcontext const *work,
		   int (*run)(struct rp_xfer *x, struct rp_copy *copies, size_t n))
{
	int rc = 0;

	qsort(copies, n, sizeof(*copies), by_device);
	for (size_t i = 0; i < n && !rc;) {
		size_t j = i;
		int dev = copies[i].real_device;

		while (j < n && copies[j].real_device == dev)
			j++;
		rc = rp_xfer_group_begin(x, work[dev], dev);
		if (rc)
			break;
		rc = run(x, copies + i, j - i);
		if (rc)
			rp_xfer_group_abort(x);
		else
			rc = rp_xfer_group_end(x);
		i = j;
	}
	return rc;
}

int rp_dump(struct rp_copy *copies, size_t n, CUcontext const *work,
	    struct gs_image_writer *w, const struct gs_progress *progress, char **err)
{
	long page = sysconf(_SC_PAGESIZE);
	struct rp_xfer x;
	uint64_t total = 0;
	int rc;

	for (size_t i = 0; i < n; i++) {
		struct rp_region *r = copies[i].region;

		total += r->size;
		if (w) {
			rc = gs_image_add_extent(w, r->va, r->size, &r->extent);
			if (rc)
				return rp_fail(err, rc, "image: %s", gs_image_writer_errmsg(w));
			continue;
		}
		r->host = mmap(NULL, (r->size + (uint64_t)page - 1) & ~((uint64_t)page - 1),
			       PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			       -1, 0);
		if (r->host == MAP_FAILED) {
			r->host = NULL;
			return rp_fail(err, -ENOMEM, "cannot map %llu bytes of host memory to save "
				       "device memory in; free host memory or save to an image "
				       "(--image DIR)", (unsigned long long)r->size);
		}
	}
	rc = rp_xfer_init(&x, w ? gs_image_write_chunk_size(w) : RP_HOST_CHUNK,
			  w ? RP_IMAGE_SLOTS : RP_HOST_SLOTS, progress, "dump", total, err);
	if (rc)
		return rc;
	x.writer = w;
	gs_inside_begin();
	rc = rp_xfer_groups(&x, copies, n, work, dump_group);
	gs_inside_end();
	rp_xfer_fini(&x);
	return rc;
}
