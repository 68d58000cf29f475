/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Internals shared by the tracker's source files:
 *   tracker.c   state, record lists and indexes, devices, streams, events,
 *               unsupported objects, statistics, iteration, check
 *   trk_ctx.c   contexts
 *   trk_image.c image copies, option filtering, kernel layouts
 *   trk_code.c  modules, libraries, functions, kernels, globals
 *   trk_link.c  JIT link states
 *   trk_mem.c   arena allocations, host memory, reservations, physical
 *               handles, mappings, access
 */
#ifndef GS_TRK_INTERNAL_H
#define GS_TRK_INTERNAL_H

#include <pthread.h>
#include <stddef.h>

#include "addrtree.h"
#include "tracker.h"
#include "u64tab.h"

struct trk_kind {
	struct gs_rec *head, *tail;  /* creation order */
	size_t count;
	uint64_t bytes;
	size_t shim_count;
	uint64_t shim_bytes;
	struct gs_u64tab index;      /* app handle or address -> record */
};

#define TRK_MAX_TEARDOWN 8

struct trk_state {
	pthread_mutex_t lock;
	uint64_t serial;
	struct trk_kind kinds[GS_KIND_COUNT];
	/* Unsupported records are keyed per kind of object: one address may
	 * be both a managed allocation and exported over IPC. */
	struct gs_u64tab unsup_index[GS_UNSUP_COUNT];
	size_t unsup_count[GS_UNSUP_COUNT];
	uint64_t unsup_bytes[GS_UNSUP_COUNT];
	struct gs_addrtree alloc_tree, host_tree, resv_tree, map_tree;
	struct gs_handlemap maps[GS_KIND_COUNT];
	struct gs_devmap devmap;
	struct gs_device_info dev[GS_MAX_DEVICES];
	uint64_t primary[GS_MAX_DEVICES];   /* app handle of its primary ctx record */
	uint64_t device_bytes[GS_MAX_DEVICES];
	struct {
		gs_trk_teardown_fn *fn;
		void *arg;
	} teardown[TRK_MAX_TEARDOWN];
	unsigned nteardown;
};

extern struct trk_state gs_trk;

/* Ensure init and take the lock. */
void trk_lock(void);
void trk_unlock(void);

/* Whether kind has a handle map. */
bool trk_has_handles(enum gs_kind kind);

/* The record of a kind by app key, or NULL. Lock held. */
struct gs_rec *trk_find(enum gs_kind kind, uint64_t app);

/* Choose the app value for a new real handle (kinds with handle maps) and
 * link the record: serial, list, index, accounting. For address kinds app ==
 * real == the address. Returns 0, or -errno with nothing linked. Lock held. */
int trk_link(struct gs_rec *r, enum gs_kind kind, uint64_t real, uint64_t bytes, bool shim);
/* The record whose real handle is `real`, or NULL. Lock held. */
struct gs_rec *trk_find_real(enum gs_kind kind, uint64_t real);
/* Drop a record still holding a real handle the driver just handed out for
 * a new object: the driver reuses a value only once the old object is gone,
 * so that record is stale (its destruction took a path the hooks did not
 * see). Lock held. */
void trk_drop_stale(enum gs_kind kind, uint64_t real);
/* Unlink (list, index, handle map, accounting) and free the record with the
 * kind's destructor. Lock held. */
void trk_drop(struct gs_rec *r);
/* Take the lock, drop the record of kind with that app key: 0 or -ENOENT. */
int trk_drop_by_app(enum gs_kind kind, uint64_t app);
/* The offset of the uint64_t member by which a record names the record it
 * depends on (its context, module, library...), for trk_drop_where. A
 * member of another type does not compile. */
#define TRK_PARENT_FIELD(type, member) \
	_Generic(((type *)0)->member, uint64_t: offsetof(type, member))
/* Drop every record of kind whose member at `field` (TRK_PARENT_FIELD) is
 * key, with its own dependents. Lock held. */
void trk_drop_where(enum gs_kind kind, size_t field, uint64_t key);
/* Change the accounted bytes of a linked record. Lock held. */
void trk_account(struct gs_rec *r, uint64_t bytes);
/* Re-key a linked address record whose address changed. Lock held. */
int trk_rekey(struct gs_rec *r, uint64_t new_app);

/* Per-kind destructors (free what the record owns, then the record). */
void trk_free_code_rec(struct gs_rec *r);  /* module, library, function, kernel,
					    * global, link */
void trk_free_mem_rec(struct gs_rec *r);   /* alloc, host, resv, phys, mapping */

bool trk_device_ok(int device);
/* A context that is gone, with everything it held. Lock held. */
void trk_ctx_drop_all(struct gs_ctx_rec *c);

/* The size of a live link output starting at image, or 0. Lock held. */
size_t trk_link_output_size_locked(const void *image);

/* Cascades, lock held. */
void trk_code_drop_dependents(struct gs_rec *r); /* of a module, library, kernel */
void trk_code_drop_ctx(uint64_t ctx);        /* modules, functions, globals of ctx */
void trk_mem_drop_ctx(uint64_t ctx);         /* allocations and host memory of ctx */
void trk_unsup_drop_key(enum gs_unsup_kind what, uint64_t key);
void trk_unsup_drop_parent(uint64_t parent);
/* Report one problem to a gs_trk_check callback unless it asked to stop;
 * returns 1 when reported. */
int trk_report(gs_trk_problem_fn *fn, void *arg, const struct gs_rec *r, const char *why,
	       bool *stop);
/* Problems of code and memory records for gs_trk_check; lock held.
 * Returns the count, and *stop when fn asked to stop. */
int trk_code_check(gs_trk_problem_fn *fn, void *arg, bool *stop);
int trk_mem_check(gs_trk_problem_fn *fn, void *arg, bool *stop);
void trk_mem_clear(void);

char *trk_strdup(const char *s);

/* trk_image.c. Option lists keep only what a reload can replay. */
int trk_jit_copy(struct gs_optlist *l, unsigned n, const CUjit_option *opts,
		 void *const *vals);
int trk_libopts_copy(struct gs_optlist *l, unsigned n, const CUlibraryOption *opts,
		     void *const *vals);
void trk_optlist_free(struct gs_optlist *l);
int trk_read_file(const char *path, void **data, size_t *size);
/* Copy an image the driver accepted: from memory (`known` its size, or 0 to
 * probe it) or from a file. Failures are recorded in img->error. */
void trk_image_copy_mem(struct gs_image_copy *img, const void *image, size_t known);
void trk_image_copy_file(struct gs_image_copy *img, const char *path);
void trk_image_free(struct gs_image_copy *img);
/* Select and parse the code for sm; never NULL unless out of memory, a
 * failure is in ->error. The image must not change meanwhile. */
struct gs_layouts *trk_layouts_parse(const struct gs_image_copy *img, unsigned sm);
const struct gs_layouts *trk_layouts_find(const struct gs_image_copy *img, unsigned sm);
void trk_layouts_free(struct gs_layouts *l);
const struct gs_kernel_info *trk_layout_kernel(const struct gs_layouts *l, const char *name);

#endif
