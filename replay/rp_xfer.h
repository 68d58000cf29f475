/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The transfer engine of dump.c and restore.c: per device, a context made
 * current, a dedicated non-blocking stream, and a block of staging buffers
 * pinned for it, each with an event that says when its copy is done. The
 * copies of one device are a "group"; the buffers are pinned at the start
 * of a group and unpinned at its end, so nothing outlives the contexts a
 * release is about to destroy.
 */
#ifndef GS_RP_XFER_H
#define GS_RP_XFER_H

#include "rp_internal.h"

/* Host memory: a few large buffers (fewer, larger copies). */
#define RP_HOST_CHUNK (8u << 20)
#define RP_HOST_SLOTS 4u
/* An image: its chunk size, with enough buffers to keep the writes (or
 * reads) in flight while the copy engine works. */
#define RP_IMAGE_SLOTS 8u
#define RP_XFER_MAX_SLOTS 16u

enum rp_slot_state {
	RP_SLOT_FREE = 0,
	RP_SLOT_COPYING, /* a device copy in flight; its event says when done */
	RP_SLOT_WRITING, /* dump: queued to the image writer */
	RP_SLOT_READING, /* restore: queued to the image reader */
	RP_SLOT_FILLED,  /* restore: holds the bytes, copy not issued yet */
};

struct rp_xfer;

struct rp_slot {
	void *buf;
	CUevent ev;
	enum rp_slot_state st;
	uint64_t seq;            /* issue order of copies */
	struct rp_copy *copy;
	uint64_t off;
	size_t len;
	int status;              /* restore: the image read's result */
	bool zero;               /* restore: the chunk is all zeros */
	struct rp_xfer *x;
};

struct rp_xfer {
	void *block;
	size_t block_len;
	size_t chunk;
	unsigned nslots;
	struct rp_slot slots[RP_XFER_MAX_SLOTS];
	uint64_t seq;
	/* the current group */
	CUcontext ctx;
	int real_device;
	bool retained, pushed, registered;
	CUstream stream;
	/* sinks and sources */
	struct gs_image_writer *writer;
	struct gs_image_reader *reader;
	int io_error;
	bool leak_block;         /* I/O may still target the buffers */
	/* progress and errors */
	const struct gs_progress *progress;
	const char *phase;
	uint64_t done, total;
	char **err;
};

int rp_xfer_init(struct rp_xfer *x, size_t chunk, unsigned nslots,
		 const struct gs_progress *progress, const char *phase, uint64_t total,
		 char **err);
void rp_xfer_fini(struct rp_xfer *x);
/* Copies grouped by device: begin, run, end (or abort) per group. */
int rp_xfer_groups(struct rp_xfer *x, struct rp_copy *copies, size_t n, CUcontext const *work,
		   int (*run)(struct rp_xfer *x, struct rp_copy *copies, size_t n));
int rp_xfer_group_begin(struct rp_xfer *x, CUcontext work, int real_device);
int rp_xfer_group_end(struct rp_xfer *x);
void rp_xfer_group_abort(struct rp_xfer *x);
/* The slot in state st issued first, or NULL. */
struct rp_slot *rp_xfer_oldest(struct rp_xfer *x, enum rp_slot_state st);
/* The first free slot, or NULL. */
struct rp_slot *rp_xfer_free_slot(struct rp_xfer *x);
/* Whether any slot is in state st. */
bool rp_xfer_any(const struct rp_xfer *x, enum rp_slot_state st);
/* Cut every copy into chunks of x->chunk bytes and start each in a slot:
 * free_slot waits until one is free, start (s->copy, off and len set)
 * issues its copy. Stops at the first error. */
int rp_xfer_chunks(struct rp_xfer *x, struct rp_copy *copies, size_t n,
		   int (*free_slot)(struct rp_xfer *x, struct rp_slot **out),
		   int (*start)(struct rp_xfer *x, struct rp_slot *s));
/* Record s's event after issuing its copy (rc: the issue's result). */
int rp_xfer_issue(struct rp_xfer *x, struct rp_slot *s, CUresult rc, const char *what);
/* Wait for s's copy. */
int rp_xfer_wait(struct rp_xfer *x, struct rp_slot *s);
/* Wait for s's copy, then count its bytes done and free s even if the copy
 * failed (draining goes on to the other slots); the wait's result. */
int rp_xfer_retire(struct rp_xfer *x, struct rp_slot *s);
void rp_xfer_advance(struct rp_xfer *x, uint64_t bytes);

#endif
