/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What release.c (saving, destroying) and collect.c (what there is to
 * save) share.
 */
#ifndef GS_RP_RELEASE_H
#define GS_RP_RELEASE_H

#include "rp_internal.h"

struct release {
	struct rp_saved *s;
	json_t *warnings;
	char **err;
	const struct gs_progress *progress;
	CUcontext work[GS_MAX_DEVICES]; /* by real ordinal */
};

/* Log a warning and add it to the operation's report. */
void rp_release_warn(struct release *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The real ordinal an app device was on at the release, or -1. */
int rp_src_real(const struct rp_saved *s, int app);

/* Snapshots of records (tracker walk callbacks, arg: a struct rp_vec). */
struct ctx_snap {
	uint64_t app, real;
	int device;
	bool primary;
};

struct code_snap {
	enum gs_kind kind;    /* module or library */
	uint64_t app, real;
	uint64_t ctx;         /* module: its context */
	int device;
	unsigned sm;
	bool from_library;    /* a library's module in a context */
};

struct phys_snap {
	uint64_t app, real;
	size_t size;
	int device;
};

int rp_snap_ctx(const struct gs_rec *rec, void *arg);
int rp_snap_module(const struct gs_rec *rec, void *arg);
int rp_snap_library(const struct gs_rec *rec, void *arg);
/* The real handle of app context `app` in a snapshot, or 0. */
uint64_t rp_snap_ctx_real(const struct rp_vec *ctxs, uint64_t app);

/* Regions to save: the arenas' chunks and the application's physical
 * allocations (snapshots into `phys`, in the order of their regions). */
int rp_collect_memory(struct release *r, struct rp_vec *phys);
/* Regions to save: every module variable, and every library variable in
 * the contexts the library is known to be loaded in. */
int rp_collect_globals(struct release *r, const struct rp_vec *ctxs, const struct rp_vec *code);

#endif
