/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tracking hooks for contexts (created and primary), their settings and
 * peer access, green contexts; the helpers every hook shares (track.h); and
 * the tracker's counts for introspection.
 */
#define GS_LOG_SUBSYS "tracker"

#include <errno.h>
#include <string.h>

#include "arena.h"
#include "log.h"
#include "track.h"

/* ---- shared helpers ------------------------------------------------------------ */

uint64_t gs_hook_to_real(enum gs_kind kind, uint64_t app)
{
	struct gs_handlemap *m;
	uint64_t real;

	/* Identity until the first migration. */
	if (!gs_migrated_load())
		return app;
	m = gs_trk_handlemap(kind);
	return m && gs_hmap_to_real(m, app, &real) == 0 ? real : app;
}

uint64_t gs_hook_to_app(enum gs_kind kind, uint64_t real)
{
	struct gs_handlemap *m;
	uint64_t app;

	if (!gs_migrated_load())
		return real;
	m = gs_trk_handlemap(kind);
	return m && gs_hmap_to_app(m, real, &app) == 0 ? app : real;
}

static int real_device(int app_device)
{
	return gs_devmap_to_real(gs_trk_devmap(), app_device);
}

void gs_hook_failed(const char *call, int err)
{
	/* An unknown handle is what a call through an entry point the shim
	 * does not wrap leaves behind: worth a debug line, not a warning. */
	if (err == -ENOENT)
		gs_debug("%s: handle unknown to the tracker", call);
	else
		gs_warn("%s: not recorded: %s", call, strerror(-err));
}

unsigned gs_hook_device_sm(int device)
{
	struct gs_device_info info;
	int major = 0, minor = 0, rdev;

	if (gs_trk_device_get(device, &info) == 0 && info.sm > 0)
		return (unsigned)info.sm;
	rdev = real_device(device);
	if (rdev < 0 || !gs_real.cuDeviceGetAttribute)
		return 0;
	if (gs_real.cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
					 rdev) != CUDA_SUCCESS ||
	    gs_real.cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
					 rdev) != CUDA_SUCCESS)
		return 0;
	gs_trk_device_set_sm(device, major * 10 + minor);
	return (unsigned)(major * 10 + minor);
}

/* The real device of a real context: cuCtxGetDevice_v2 where the driver has
 * it (CUDA 12.8+), else cuCtxGetDevice when the context is current. */
static bool real_ctx_device(CUcontext real, CUdevice *rdev)
{
	CUcontext cur = NULL;

	if (gs_real.cuCtxGetDevice_v2)
		return gs_real.cuCtxGetDevice_v2(rdev, real) == CUDA_SUCCESS;
	return gs_real.cuCtxGetCurrent && gs_real.cuCtxGetDevice &&
	       gs_real.cuCtxGetCurrent(&cur) == CUDA_SUCCESS && cur == real &&
	       gs_real.cuCtxGetDevice(rdev) == CUDA_SUCCESS;
}

/*
 * Record a context the tracker never saw created. Every entry point that
 * creates one is tracked, so such a context came through a path the shim
 * does not wrap; in practice it is the primary context cudart obtains
 * through its export table. It is taken for the device's primary context
 * when that is active. (Retaining the primary context to compare handles
 * would be exact, but a retain/release pair racing the application's own
 * last release would move the context's destruction to a moment the hooks
 * do not see.)
 */
static int adopt(CUcontext app)
{
	CUdevice rdev;
	unsigned flags;
	int active = 0, dev;
	CUcontext real = (CUcontext)(uintptr_t)gs_hook_to_real(GS_KIND_CTX, (uintptr_t)app);

	if (!real_ctx_device(real, &rdev))
		return -1;
	dev = gs_devmap_to_app(gs_trk_devmap(), rdev);
	if (dev < 0)
		return -1;
	if (gs_real.cuDevicePrimaryCtxGetState &&
	    gs_real.cuDevicePrimaryCtxGetState(rdev, &flags, &active) != CUDA_SUCCESS)
		active = 0;
	if (gs_trk_ctx_adopt(real, dev, active != 0, NULL) < 0)
		return -1;
	gs_debug("adopted context %p of device %d%s", (void *)app, dev,
		 active ? " as its primary context" : "");
	gs_devmem_device_used(dev);
	return dev;
}

int gs_hook_ctx_device(CUcontext ctx)
{
	int dev;

	if (!ctx)
		return -1;
	dev = gs_trk_ctx_device(ctx);
	return dev >= 0 ? dev : adopt(ctx);
}

CUcontext gs_hook_current_ctx(int *device)
{
	CUcontext real = NULL, app;

	if (device)
		*device = -1;
	if (!gs_real.cuCtxGetCurrent || gs_real.cuCtxGetCurrent(&real) != CUDA_SUCCESS || !real)
		return NULL;
	app = (CUcontext)(uintptr_t)gs_hook_to_app(GS_KIND_CTX, (uintptr_t)real);
	if (device)
		*device = gs_hook_ctx_device(app);
	else
		gs_hook_ctx_device(app);
	return app;
}

/* ---- contexts ---------------------------------------------------------------------- */

void gs_track_cuCtxCreate_v4(bool ptds, CUcontext *pctx, CUctxCreateParams *ctxCreateParams,
			     unsigned int flags, CUdevice dev)
{
	CUcontext app;
	int rc;

	(void)ptds;
	rc = gs_trk_ctx_created(*pctx, dev, flags, ctxCreateParams, &app);
	if (rc) {
		gs_hook_failed("cuCtxCreate", rc);
		return;
	}
	*pctx = app;
	gs_hook_device_sm(dev);
	gs_devmem_device_used(dev);
}

void gs_track_cuCtxDestroy_v2(bool ptds, CUcontext ctx)
{
	int rc;

	(void)ptds;
	/* The memory layers free what they serve for the context from the
	 * tracker's teardown callbacks. */
	rc = gs_trk_ctx_destroyed(ctx);
	if (rc)
		gs_hook_failed("cuCtxDestroy", rc);
}

void gs_track_cuDevicePrimaryCtxRetain(bool ptds, CUcontext *pctx, CUdevice dev)
{
	CUcontext app;
	int rc;

	(void)ptds;
	rc = gs_trk_primary_retained(dev, *pctx, &app);
	if (rc) {
		gs_hook_failed("cuDevicePrimaryCtxRetain", rc);
		return;
	}
	*pctx = app;
	gs_hook_device_sm(dev);
	gs_devmem_device_used(dev);
}

/* Whether the device's primary context is still active after a release or
 * reset. The driver resets it at the last release, which may balance a
 * retain the shim never saw (cudart's), so only the driver can tell. When it
 * cannot, the records are kept: a stale record is reported by freeze
 * --check, a missing one is lost state. */
static bool primary_active(CUdevice dev)
{
	unsigned flags;
	int active, rdev = real_device(dev);

	if (rdev < 0 || !gs_real.cuDevicePrimaryCtxGetState ||
	    gs_real.cuDevicePrimaryCtxGetState(rdev, &flags, &active) != CUDA_SUCCESS)
		return true;
	return active != 0;
}

void gs_track_cuDevicePrimaryCtxRelease_v2(bool ptds, CUdevice dev)
{
	int rc;

	(void)ptds;
	rc = gs_trk_primary_released(dev, primary_active(dev));
	if (rc)
		gs_hook_failed("cuDevicePrimaryCtxRelease", rc);
}

void gs_track_cuDevicePrimaryCtxReset_v2(bool ptds, CUdevice dev)
{
	int rc;

	(void)ptds;
	rc = gs_trk_primary_reset(dev, primary_active(dev));
	/* -ENOENT: never retained through the shim, nothing recorded. */
	if (rc && rc != -ENOENT)
		gs_hook_failed("cuDevicePrimaryCtxReset", rc);
}

void gs_track_cuDevicePrimaryCtxSetFlags_v2(bool ptds, CUdevice dev, unsigned int flags)
{
	int rc;

	(void)ptds;
	rc = gs_trk_primary_set_flags(dev, flags);
	if (rc)
		gs_hook_failed("cuDevicePrimaryCtxSetFlags", rc);
}

/* The settings below apply to the calling thread's current context. */

void gs_track_cuCtxSetFlags(bool ptds, unsigned int flags)
{
	CUcontext ctx = gs_hook_current_ctx(NULL);
	int rc;

	(void)ptds;
	rc = ctx ? gs_trk_ctx_set_flags(ctx, flags) : -ENOENT;
	if (rc)
		gs_hook_failed("cuCtxSetFlags", rc);
}

void gs_track_cuCtxSetLimit(bool ptds, CUlimit limit, size_t value)
{
	CUcontext ctx = gs_hook_current_ctx(NULL);
	int rc;

	(void)ptds;
	rc = ctx ? gs_trk_ctx_set_limit(ctx, limit, value) : -ENOENT;
	if (rc)
		gs_hook_failed("cuCtxSetLimit", rc);
}

void gs_track_cuCtxSetCacheConfig(bool ptds, CUfunc_cache config)
{
	CUcontext ctx = gs_hook_current_ctx(NULL);
	int rc;

	(void)ptds;
	rc = ctx ? gs_trk_ctx_set_cache_config(ctx, config) : -ENOENT;
	if (rc)
		gs_hook_failed("cuCtxSetCacheConfig", rc);
}

void gs_track_cuCtxSetSharedMemConfig(bool ptds, CUsharedconfig config)
{
	CUcontext ctx = gs_hook_current_ctx(NULL);
	int rc;

	(void)ptds;
	rc = ctx ? gs_trk_ctx_set_shmem_config(ctx, config) : -ENOENT;
	if (rc)
		gs_hook_failed("cuCtxSetSharedMemConfig", rc);
}

/* The current context's device (the accessor) may now (no longer) reach
 * memory of peerContext's device (the owner). */
static void peer_access(const char *call, CUcontext peer, bool enabled)
{
	int accessor, owner, rc;
	CUcontext ctx = gs_hook_current_ctx(&accessor);

	owner = gs_hook_ctx_device(peer);
	if (!ctx || accessor < 0 || owner < 0) {
		gs_hook_failed(call, -ENOENT);
		return;
	}
	gs_arena_peer_access_changed(owner, accessor, enabled);
	rc = gs_trk_ctx_peer_access(ctx, owner, enabled);
	if (rc)
		gs_hook_failed(call, rc);
}

void gs_track_cuCtxEnablePeerAccess(bool ptds, CUcontext peerContext, unsigned int Flags)
{
	(void)ptds;
	(void)Flags;
	peer_access("cuCtxEnablePeerAccess", peerContext, true);
}

void gs_track_cuCtxDisablePeerAccess(bool ptds, CUcontext peerContext)
{
	(void)ptds;
	peer_access("cuCtxDisablePeerAccess", peerContext, false);
}

/* ---- green contexts (not migratable yet: recorded so freeze refuses) --------------------- */

void gs_track_cuGreenCtxCreate(bool ptds, CUgreenCtx *phCtx, CUdevResourceDesc desc,
			       CUdevice dev, unsigned int flags)
{
	int rc;

	(void)ptds;
	(void)desc;
	(void)flags;
	(void)dev;
	rc = gs_trk_unsup_add(GS_UNSUP_GREEN_CTX, (uintptr_t)*phCtx, 0, NULL, 0,
			      "cuGreenCtxCreate");
	if (rc)
		gs_hook_failed("cuGreenCtxCreate", rc);
}

void gs_track_cuGreenCtxDestroy(bool ptds, CUgreenCtx hCtx)
{
	int rc;

	(void)ptds;
	rc = gs_trk_unsup_remove(GS_UNSUP_GREEN_CTX, (uintptr_t)hCtx);
	if (rc)
		gs_hook_failed("cuGreenCtxDestroy", rc);
}

void gs_track_cuCtxFromGreenCtx(bool ptds, CUcontext *pContext, CUgreenCtx hCtx)
{
	CUdevice rdev;
	CUcontext app;
	int dev = -1, rc;

	(void)ptds;
	if (real_ctx_device(*pContext, &rdev))
		dev = gs_devmap_to_app(gs_trk_devmap(), rdev);
	rc = dev < 0 ? -ENODEV : gs_trk_ctx_from_green(*pContext, hCtx, dev, &app);
	if (rc < 0) {
		gs_hook_failed("cuCtxFromGreenCtx", rc);
		return;
	}
	*pContext = app;
	gs_devmem_device_used(dev);
}

/* ---- introspection ---------------------------------------------------------------------- */

/*
 * Exported for tests and tools, found with dlsym(RTLD_DEFAULT, ...) like the
 * rest of gs_introspect_*: the tracker's count and bytes for a record kind
 * named as gs_kind_name() spells it ("stream", "alloc", ...), or for an
 * unsupported object kind as "unsupported:" + gs_unsup_name()
 * ("unsupported:graph"). 0, or -EINVAL for an unknown name. Bytes are what
 * gs_trk_stats.bytes documents.
 */
GS_EXPORT int gs_introspect_tracker_count(const char *kind, uint64_t *count, uint64_t *bytes);

int gs_introspect_tracker_count(const char *kind, uint64_t *count, uint64_t *bytes)
{
	static const char unsup_prefix[] = "unsupported:";
	struct gs_trk_stats st;

	if (!kind)
		return -EINVAL;
	gs_trk_get_stats(&st);
	for (int k = 0; k < GS_KIND_COUNT; k++) {
		if (strcmp(kind, gs_kind_name(k)))
			continue;
		if (count)
			*count = st.count[k];
		if (bytes)
			*bytes = st.bytes[k];
		return 0;
	}
	if (strncmp(kind, unsup_prefix, sizeof(unsup_prefix) - 1))
		return -EINVAL;
	kind += sizeof(unsup_prefix) - 1;
	for (int w = 0; w < GS_UNSUP_COUNT; w++) {
		if (strcmp(kind, gs_unsup_name(w)))
			continue;
		if (count)
			*count = st.unsup_count[w];
		if (bytes)
			*bytes = st.unsup_bytes[w];
		return 0;
	}
	return -EINVAL;
}
