/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Lazy initialisation (DESIGN.md §3): nothing happens at load time. The
 * first intercepted call runs gs_init_slow() under pthread_once, whichever
 * thread and whatever context it comes from (another library's
 * constructor included). The shim has no constructor at all: one that
 * loaded the driver or took locks could deadlock a host application that
 * is itself still being initialised by the dynamic loader.
 */
#define GS_LOG_SUBSYS "shim"
#include "shim.h"

#include <pthread.h>
#include <stdlib.h>

#include "introspect_internal.h"
#include "log.h"
#include "proctable.h"
#include "real.h"

_Atomic int gs_init_state;
_Atomic bool gs_migrated;

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static _Atomic unsigned char missing_logged[GS_API_COUNT];
static _Atomic unsigned char translation_logged[GS_API_COUNT];

static void init_run(void)
{
	int rc;

	/* Anything the driver's own initialisation calls back into (on this
	 * thread) goes straight through instead of re-entering pthread_once. */
	gs_inside_begin();
	gs_log_setup();
	gs_gate_setup(GS_GATE_BARRIER_AUTO);
	gs_thread_setup();
	rc = gs_real_load();
	gs_introspect_setup();
	atomic_store_explicit(&gs_init_state, rc == 0 ? GS_INIT_READY : GS_INIT_NO_DRIVER,
			      memory_order_release);
	gs_inside_end();
}

CUresult gs_init_slow(void)
{
	pthread_once(&init_once, init_run);
	switch (atomic_load_explicit(&gs_init_state, memory_order_acquire)) {
	case GS_INIT_READY:
		return CUDA_SUCCESS;
	case GS_INIT_NO_DRIVER:
		return CUDA_ERROR_NO_DEVICE;
	default:
		/* Only reachable by a call re-entering from inside init_run(). */
		return CUDA_ERROR_NOT_INITIALIZED;
	}
}

void gs_count_call(int sym)
{
	struct gs_thread *t = gs_thread_get();

	if (t)
		gs_thread_count(t, sym);
}

CUresult gs_missing(int sym)
{
	switch (atomic_load_explicit(&gs_init_state, memory_order_acquire)) {
	case GS_INIT_NONE:
		return CUDA_ERROR_NOT_INITIALIZED;
	case GS_INIT_NO_DRIVER:
		return CUDA_ERROR_NO_DEVICE;
	default:
		break;
	}
	if (!atomic_exchange_explicit(&missing_logged[sym], 1, memory_order_relaxed))
		gs_warn("the driver %s has no %s: returning CUDA_ERROR_NOT_FOUND",
			gs_real_path(), gs_api_symbols[sym]);
	return CUDA_ERROR_NOT_FOUND;
}

void gs_set_migrated(bool migrated)
{
	atomic_store_explicit(&gs_migrated, migrated, memory_order_release);
}

void gs_translation_pending(int sym)
{
	if (!atomic_exchange_explicit(&translation_logged[sym], 1, memory_order_relaxed))
		gs_error("%s: handle translation after a migration is not implemented; "
			 "passing the application's handles through unchanged",
			 gs_api_symbols[sym]);
}
