/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What thaw.c (check, undo, restore, commit) and rebuild.c (re-creating
 * every object on the target) share: the record of what a thaw built.
 */
#ifndef GS_RP_THAW_H
#define GS_RP_THAW_H

#include "rp_internal.h"

enum made_what {
	MADE_CTX_CREATED,
	MADE_CTX_PRIMARY,
	MADE_ARENA,
	MADE_RESERVATION,
	MADE_PHYS,
	MADE_MAPPING,
	MADE_HOSTREG,
	MADE_LIBRARY,
	MADE_KERNEL,
	MADE_MODULE,
	MADE_LIBMODULE,  /* a library's module: goes with the library */
	MADE_FUNCTION,
	MADE_STREAM,
	MADE_EVENT,
};

struct made {
	enum made_what what;
	enum gs_kind kind;   /* of the app handle, for the rebind */
	uint64_t app;        /* 0: nothing to rebind */
	uint64_t real;
	int device;          /* real ordinal (primary contexts), app ordinal (arena) */
	unsigned count;      /* primary: retains; phys: references held */
	uint64_t va;         /* reservation, mapping, host registration */
	size_t size;
	uint64_t ctx;        /* host registration: the real context */
};

/* A variable record: the address the application knows, and where the
 * variable was when the process was released. */
struct global_snap {
	uint64_t app;
	uint64_t real;
};

struct thaw {
	const int *map;               /* app ordinal -> real ordinal */
	int ndev;
	unsigned tsm[GS_MAX_DEVICES]; /* app ordinal -> target compute capability */
	struct rp_saved *s;
	struct made *made;
	size_t nmade, capmade;
	json_t *warnings;
	char **err;
	const struct gs_progress *progress;
	CUcontext work[GS_MAX_DEVICES]; /* by real ordinal */
	struct global_snap *globals;
	size_t nglobals;
	/* app handle -> index in made[], per kind (rebindable kinds only) */
	struct rp_index by_app[GS_KIND_COUNT];
	bool oom;
};

/* A mapping with its access list copied. */
struct map_snap {
	struct gs_mapping_rec m;
	struct gs_access access[GS_MAX_DEVICES];
	unsigned naccess;
};

/* Functions and kernels with their names copied. */
struct func_snap {
	struct gs_function_rec f;
	char *name;
};

struct kernel_snap {
	uint64_t app;
	uint64_t library;
	char *name;
	struct gs_kernel_setting *settings;
	unsigned nsettings;
};

struct module_snap {
	uint64_t app;
	uint64_t ctx;
	int device;
	enum gs_module_source source;
	uint64_t library;
};

struct snaps {
	struct rp_vec ctx, stream, event, resv, phys, map, host, func, kernel, module, library;
};

/* Log a warning and add it to the operation's report. */
void rp_thaw_warn(struct thaw *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Record an object built (app: the handle it stands for, 0 if none, then
 * kind is ignored); NULL when out of memory (the caller destroys it). */
struct made *rp_made_add(struct thaw *t, enum made_what what, enum gs_kind kind, uint64_t app,
			 uint64_t real);
struct made *rp_made_find(const struct thaw *t, enum gs_kind kind, uint64_t app);
/* The new real handle of an app handle built in this thaw, or 0. */
uint64_t rp_new_real(const struct thaw *t, enum gs_kind kind, uint64_t app);
/* The target of an app device ordinal, or -1. */
int rp_real_of(const struct thaw *t, int app);
int rp_thaw_nomem(struct thaw *t);
/* A real context pushed on / popped off this thread's stack. */
CUresult rp_ctx_push(uint64_t ctx);
void rp_ctx_pop(void);

/* rebuild.c */
int rp_snaps_take(struct snaps *s);
void rp_snaps_free(struct snaps *s);
uint64_t rp_map_phys(const struct thaw *t, uint64_t app);
int rp_build_contexts(struct thaw *t, const struct snaps *sn);
int rp_build_arenas(struct thaw *t, const struct snaps *sn);
int rp_build_vmm(struct thaw *t, const struct snaps *sn);
int rp_build_host(struct thaw *t, const struct snaps *sn);
int rp_build_code(struct thaw *t, const struct snaps *sn);
int rp_build_streams_events(struct thaw *t, const struct snaps *sn);

#endif
