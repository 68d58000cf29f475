/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the tracking hooks (track_*.c) share. The hooks run after the real
 * call succeeded, inside the gate, with the caller's arguments: input
 * handles are app-visible values, and out parameters hold what the driver
 * wrote (real handles), which a hook replaces with the app-visible value the
 * tracker chose (the same value until a migration).
 *
 * The few driver calls the hooks make themselves (which context is current,
 * a device's compute capability) go straight to the real driver through
 * gs_real: they are neither gated again nor tracked.
 */
#ifndef GS_TRACK_H
#define GS_TRACK_H

#include <stdint.h>

#include "shim.h"
#include "tracker.h"

/*
 * The app-visible handle of the calling thread's current context, or NULL
 * when there is none. A context the tracker never saw created (cudart gets
 * its primary context through an export table) is recorded on the way.
 * *device (may be NULL) gets its app ordinal, or -1.
 */
CUcontext gs_hook_current_ctx(int *device);

/* The app ordinal of a context's device (-1 unknown), recording the
 * context if needed, like gs_hook_current_ctx. */
int gs_hook_ctx_device(CUcontext ctx);

/* Compute capability of an app device as major * 10 + minor; 0 when the
 * driver cannot tell. Cached by the tracker. */
unsigned gs_hook_device_sm(int device);

/* The real handle behind an app-visible one, for the hooks' own driver
 * calls, and back (the value itself until a migration, or when unknown). */
uint64_t gs_hook_to_real(enum gs_kind kind, uint64_t app);
uint64_t gs_hook_to_app(enum gs_kind kind, uint64_t real);

/* A tracker call made by the hook of `call` failed with -errno `err`. The
 * application's call has succeeded and stays so; the log says what the
 * tracker now misses. */
void gs_hook_failed(const char *call, int err);

#endif
