/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Context records: created, primary (retained per device), adopted (first
 * seen current) and green contexts, their settings, and the teardown that
 * takes everything a context held when it dies.
 */
#include "trk_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- contexts ------------------------------------------------------------------ */

static struct gs_ctx_rec *ctx_find(uint64_t app)
{
	return (struct gs_ctx_rec *)trk_find(GS_KIND_CTX, app);
}

static int ctx_new(uint64_t real, int device, enum gs_ctx_origin origin, bool primary,
		   unsigned flags, struct gs_ctx_rec **out)
{
	struct gs_ctx_rec *c = calloc(1, sizeof(*c));
	int rc;

	if (!c)
		return -ENOMEM;
	c->origin = origin;
	c->primary = primary;
	c->device = device;
	c->flags = flags;
	rc = trk_link(&c->hdr, GS_KIND_CTX, real, 0, false);
	if (rc) {
		free(c);
		return rc;
	}
	if (primary)
		gs_trk.primary[device] = c->hdr.app;
	*out = c;
	return 0;
}

int gs_trk_ctx_created(CUcontext real, int device, unsigned flags,
		       const CUctxCreateParams *params, CUcontext *app)
{
	CUexecAffinityParam *affinity = NULL;
	int naffinity = 0, rc;
	struct gs_ctx_rec *c;

	if (!real || !trk_device_ok(device))
		return -EINVAL;
	if (params && params->execAffinityParams && params->numExecAffinityParams > 0) {
		naffinity = params->numExecAffinityParams;
		affinity = malloc((size_t)naffinity * sizeof(*affinity));
		if (!affinity)
			return -ENOMEM;
		memcpy(affinity, params->execAffinityParams, (size_t)naffinity * sizeof(*affinity));
	}
	trk_lock();
	trk_drop_stale(GS_KIND_CTX, (uintptr_t)real);
	rc = ctx_new((uintptr_t)real, device, GS_CTX_CREATED, false, flags, &c);
	if (!rc) {
		c->affinity = affinity;
		c->naffinity = naffinity;
		affinity = NULL;
		/* The graphics context a CIG context shares cannot be carried
		 * to another GPU: only its presence is kept. */
		c->cig = params && params->cigParams;
		if (app)
			*app = (CUcontext)(uintptr_t)c->hdr.app;
	}
	trk_unlock();
	free(affinity);
	return rc;
}

int gs_trk_primary_retained(int device, CUcontext real, CUcontext *app)
{
	struct gs_ctx_rec *c;
	int rc = 0;

	if (!real || !trk_device_ok(device))
		return -EINVAL;
	trk_lock();
	c = (struct gs_ctx_rec *)trk_find_real(GS_KIND_CTX, (uintptr_t)real);
	if (c && (c->device != device || c->origin == GS_CTX_CREATED ||
		  c->origin == GS_CTX_GREEN)) {
		/* The driver gave this value to the primary context: whatever
		 * held it before is gone. */
		trk_ctx_drop_all(c);
		c = NULL;
	}
	if (!c) {
		rc = ctx_new((uintptr_t)real, device, GS_CTX_PRIMARY, true,
			     gs_trk.dev[device].primary_flags, &c);
		if (rc)
			goto out;
	}
	/* An adopted context turns out to be the primary one: from now on
	 * it is retained like one. */
	c->primary = true;
	gs_trk.primary[device] = c->hdr.app;
	c->retains++;
	if (app)
		*app = (CUcontext)(uintptr_t)c->hdr.app;
out:
	trk_unlock();
	return rc;
}

/* A context made outside the tracker's sight: its record, made now with
 * `origin` unless it is known already (then 1). */
static int ctx_found(CUcontext real, int device, enum gs_ctx_origin origin, bool primary,
		     CUgreenCtx green, CUcontext *app)
{
	struct gs_ctx_rec *c;
	int rc = 0;

	if (!real || !trk_device_ok(device))
		return -EINVAL;
	trk_lock();
	c = (struct gs_ctx_rec *)trk_find_real(GS_KIND_CTX, (uintptr_t)real);
	if (c) {
		rc = 1;
	} else {
		/* The device's primary context is already known by another
		 * handle: this one is something else. */
		if (primary && gs_trk.primary[device] && ctx_find(gs_trk.primary[device]))
			primary = false;
		rc = ctx_new((uintptr_t)real, device, origin, primary,
			     primary ? gs_trk.dev[device].primary_flags : 0, &c);
		if (rc)
			goto out;
		c->green = (uintptr_t)green;
	}
	if (app)
		*app = (CUcontext)(uintptr_t)c->hdr.app;
out:
	trk_unlock();
	return rc;
}

int gs_trk_ctx_adopt(CUcontext real, int device, bool primary, CUcontext *app)
{
	return ctx_found(real, device, GS_CTX_ADOPTED, primary, NULL, app);
}

int gs_trk_ctx_from_green(CUcontext real, CUgreenCtx green, int device, CUcontext *app)
{
	return ctx_found(real, device, GS_CTX_GREEN, false, green, app);
}

/* Unsupported objects that die with their context. */
static bool unsup_ctx_bound(enum gs_unsup_kind w)
{
	switch (w) {
	case GS_UNSUP_ASYNC_ALLOC:
	case GS_UNSUP_ARRAY:
	case GS_UNSUP_MIPMAPPED_ARRAY:
	case GS_UNSUP_MANAGED:
	case GS_UNSUP_IPC_MEM_IMPORT:
	case GS_UNSUP_GRAPH_EXEC:
	case GS_UNSUP_STREAM_CAPTURE:
		return true;
	default:
		return false;
	}
}

/* Everything the context held, lock held; the context record stays. */
static void drop_ctx_children(uint64_t ctx)
{
	struct gs_rec *r, *next;

	trk_drop_where(GS_KIND_STREAM, TRK_PARENT_FIELD(struct gs_stream_rec, ctx), ctx);
	trk_drop_where(GS_KIND_EVENT, TRK_PARENT_FIELD(struct gs_event_rec, ctx), ctx);
	trk_code_drop_ctx(ctx);
	trk_mem_drop_ctx(ctx);
	for (r = gs_trk.kinds[GS_KIND_UNSUPPORTED].head; r; r = next) {
		struct gs_unsup_rec *u = (struct gs_unsup_rec *)r;

		next = r->next;
		if (u->ctx == ctx && unsup_ctx_bound(u->what))
			trk_drop(r);
	}
}

/* Let the memory layers free what they serve for ctx. Called without the
 * lock: they call back into the tracker. */
static void run_teardown(uint64_t ctx)
{
	struct {
		gs_trk_teardown_fn *fn;
		void *arg;
	} cbs[TRK_MAX_TEARDOWN];
	unsigned n;

	trk_lock();
	n = gs_trk.nteardown;
	memcpy(cbs, gs_trk.teardown, n * sizeof(cbs[0]));
	trk_unlock();
	for (unsigned i = 0; i < n; i++)
		cbs[i].fn((CUcontext)(uintptr_t)ctx, cbs[i].arg);
}

int gs_trk_on_ctx_teardown(gs_trk_teardown_fn *fn, void *arg)
{
	int rc = 0;

	if (!fn)
		return -EINVAL;
	trk_lock();
	if (gs_trk.nteardown == TRK_MAX_TEARDOWN) {
		rc = -ENOSPC;
	} else {
		gs_trk.teardown[gs_trk.nteardown].fn = fn;
		gs_trk.teardown[gs_trk.nteardown].arg = arg;
		gs_trk.nteardown++;
	}
	trk_unlock();
	return rc;
}

void trk_ctx_drop_all(struct gs_ctx_rec *c)
{
	drop_ctx_children(c->hdr.app);
	if (c->primary && gs_trk.primary[c->device] == c->hdr.app)
		gs_trk.primary[c->device] = 0;
	trk_drop(&c->hdr);
}

static void ctx_reset_settings(struct gs_ctx_rec *c)
{
	c->limits_set = 0;
	memset(c->limits, 0, sizeof(c->limits));
	c->cache_config_set = false;
	c->shmem_config_set = false;
	c->peers_enabled = 0;
}

int gs_trk_ctx_destroyed(CUcontext ctx)
{
	struct gs_ctx_rec *c;
	int rc = 0;

	if (!ctx)
		return -EINVAL;
	run_teardown((uintptr_t)ctx);
	trk_lock();
	c = ctx_find((uintptr_t)ctx);
	if (c) {
		trk_ctx_drop_all(c);
	} else {
		/* Unknown to the tracker, but whatever was recorded as its
		 * children is gone all the same. */
		drop_ctx_children((uintptr_t)ctx);
		rc = -ENOENT;
	}
	trk_unlock();
	return rc;
}

static struct gs_ctx_rec *primary_of(int device)
{
	return gs_trk.primary[device] ? ctx_find(gs_trk.primary[device]) : NULL;
}

CUcontext gs_trk_primary_ctx(int device)
{
	struct gs_ctx_rec *c;
	CUcontext ctx;

	if (!trk_device_ok(device))
		return NULL;
	trk_lock();
	c = primary_of(device);
	ctx = c ? (CUcontext)(uintptr_t)c->hdr.app : NULL;
	trk_unlock();
	return ctx;
}

/* After a release or reset, lock held: the primary context record, or NULL
 * (-ENOENT in *rc). When the context is gone or emptied, the teardown
 * callbacks run first, with the lock dropped. */
static struct gs_ctx_rec *primary_teardown(int device, bool gone_or_empty, int *rc)
{
	struct gs_ctx_rec *c;
	uint64_t app;

	trk_lock();
	c = primary_of(device);
	if (!c || !gone_or_empty) {
		*rc = c ? 0 : -ENOENT;
		return c;
	}
	app = c->hdr.app;
	trk_unlock();
	run_teardown(app);
	trk_lock();
	c = ctx_find(app);
	*rc = c ? 0 : -ENOENT;
	return c;
}

int gs_trk_primary_released(int device, bool still_active)
{
	struct gs_ctx_rec *c;
	int rc;

	if (!trk_device_ok(device))
		return -EINVAL;
	c = primary_teardown(device, !still_active, &rc);
	if (c && still_active) {
		if (c->retains)
			c->retains--;
	} else if (c) {
		/* The driver reset the context at its last release. */
		trk_ctx_drop_all(c);
	}
	trk_unlock();
	return rc;
}

int gs_trk_primary_reset(int device, bool still_active)
{
	struct gs_ctx_rec *c;
	int rc;

	if (!trk_device_ok(device))
		return -EINVAL;
	c = primary_teardown(device, true, &rc);
	if (c && still_active) {
		/* Retained: the handle stays valid, the context empty. */
		drop_ctx_children(c->hdr.app);
		ctx_reset_settings(c);
	} else if (c) {
		trk_ctx_drop_all(c);
	}
	trk_unlock();
	return rc;
}

int gs_trk_primary_set_flags(int device, unsigned flags)
{
	struct gs_ctx_rec *c;

	if (!trk_device_ok(device))
		return -EINVAL;
	trk_lock();
	gs_trk.dev[device].primary_flags = flags;
	gs_trk.dev[device].primary_flags_set = true;
	c = primary_of(device);
	if (c)
		c->flags = flags;
	trk_unlock();
	return 0;
}

int gs_trk_ctx_device(CUcontext ctx)
{
	struct gs_ctx_rec *c;
	int rc;

	trk_lock();
	c = ctx_find((uintptr_t)ctx);
	rc = c ? c->device : -ENOENT;
	trk_unlock();
	return rc;
}

/* The context record with the lock held, or NULL (lock released). */
static struct gs_ctx_rec *ctx_lock(CUcontext ctx)
{
	struct gs_ctx_rec *c;

	trk_lock();
	c = ctx_find((uintptr_t)ctx);
	if (!c)
		trk_unlock();
	return c;
}

int gs_trk_ctx_set_flags(CUcontext ctx, unsigned flags)
{
	struct gs_ctx_rec *c = ctx_lock(ctx);

	if (!c)
		return -ENOENT;
	c->flags = flags;
	trk_unlock();
	return 0;
}

int gs_trk_ctx_set_limit(CUcontext ctx, CUlimit limit, size_t value)
{
	struct gs_ctx_rec *c;

	if ((unsigned)limit >= CU_LIMIT_MAX)
		return -EINVAL;
	c = ctx_lock(ctx);
	if (!c)
		return -ENOENT;
	c->limits[limit] = value;
	c->limits_set |= 1u << limit;
	trk_unlock();
	return 0;
}

int gs_trk_ctx_set_cache_config(CUcontext ctx, CUfunc_cache config)
{
	struct gs_ctx_rec *c = ctx_lock(ctx);

	if (!c)
		return -ENOENT;
	c->cache_config = config;
	c->cache_config_set = true;
	trk_unlock();
	return 0;
}

int gs_trk_ctx_set_shmem_config(CUcontext ctx, CUsharedconfig config)
{
	struct gs_ctx_rec *c = ctx_lock(ctx);

	if (!c)
		return -ENOENT;
	c->shmem_config = config;
	c->shmem_config_set = true;
	trk_unlock();
	return 0;
}

int gs_trk_ctx_peer_access(CUcontext ctx, int peer_device, bool enabled)
{
	struct gs_ctx_rec *c;

	if (peer_device < 0 || peer_device >= 64)
		return -EINVAL;
	c = ctx_lock(ctx);
	if (!c)
		return -ENOENT;
	if (enabled)
		c->peers_enabled |= 1ull << peer_device;
	else
		c->peers_enabled &= ~(1ull << peer_device);
	trk_unlock();
	return 0;
}
