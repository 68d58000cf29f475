/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Legacy exports (gen_api.py): ABIs cuda.h no longer declares, which a
 * program linked against an older cuda.h calls by name. The generated
 * wrappers forward them to the driver's same-named function; this file
 * holds what they need beyond that (annotations.txt, legacy section):
 *
 *   - track hooks that adapt a legacy ABI's parameters to the hook of its
 *     current ABI, so what it creates is recorded exactly as if the
 *     program had called the current one (contexts, captures, graph execs);
 *   - gs_legacy_untracked(): legacy ABIs whose objects the shim cannot
 *     record (32-bit device pointers the 64-bit arena cannot serve, host
 *     memory and arrays through old descriptors). They are forwarded
 *     untracked; the first call of each is logged and reported as an
 *     unknown entry point, which gpu-freeze --check treats as unsafe to
 *     migrate, since nothing of what they made would be carried over.
 *
 * Legacy ABIs with the parameters of their current ABI (destroy calls,
 * primary-context release/reset/flags, link, host-register, IPC open) share
 * its hook directly (legacy-track); see annotations.txt for the list, and
 * for the ones forwarded untracked.
 */
#define GS_LOG_SUBSYS "shim"
#include "shim.h"

#include <stdatomic.h>

#include "introspect_internal.h"
#include "log.h"
#include "proctable.h"
#include "track.h"

/* ---- contexts: cuCtxCreate (2.0), _v2 (3.2), _v3 (11.4) ---------------------------- */

/* Recorded as cuCtxCreate_v4 records them: the older ABIs are the same call
 * without creation parameters (v1, v2) or with execution affinity only (v3). */
void gs_track_cuCtxCreate(bool ptds, CUcontext *pctx, unsigned int flags, CUdevice_v1 dev)
{
	gs_track_cuCtxCreate_v4(ptds, pctx, NULL, flags, dev);
}

void gs_track_cuCtxCreate_v2(bool ptds, CUcontext *pctx, unsigned int flags, CUdevice_v1 dev)
{
	gs_track_cuCtxCreate_v4(ptds, pctx, NULL, flags, dev);
}

void gs_track_cuCtxCreate_v3(bool ptds, CUcontext *pctx, CUexecAffinityParam *paramsArray,
			     int numParams, unsigned int flags, CUdevice_v1 dev)
{
	CUctxCreateParams params = {
		.execAffinityParams = paramsArray,
		.numExecAffinityParams = numParams,
		.cigParams = NULL,
	};

	gs_track_cuCtxCreate_v4(ptds, pctx, paramsArray ? &params : NULL, flags, dev);
}

/* ---- capture and graphs ------------------------------------------------------------ */

/* The capture mode cuStreamBeginCapture_v2 made explicit; before, every
 * capture was global. */
void gs_track_cuStreamBeginCapture(bool ptds, CUstream hStream)
{
	gs_track_cuStreamBeginCapture_v2(ptds, hStream, CU_STREAM_CAPTURE_MODE_GLOBAL);
}

/* The old instantiation reports errors through a node and a log buffer
 * instead of flags; what is recorded (the new executable graph) is the same. */
void gs_track_cuGraphInstantiate(bool ptds, CUgraphExec *phGraphExec, CUgraph hGraph,
				 CUgraphNode *phErrorNode, char *logBuffer, size_t bufferSize)
{
	(void)phErrorNode;
	(void)logBuffer;
	(void)bufferSize;
	gs_track_cuGraphInstantiateWithFlags(ptds, phGraphExec, hGraph, 0);
}

void gs_track_cuGraphInstantiate_v2(bool ptds, CUgraphExec *phGraphExec, CUgraph hGraph,
				    CUgraphNode *phErrorNode, char *logBuffer, size_t bufferSize)
{
	gs_track_cuGraphInstantiate(ptds, phGraphExec, hGraph, phErrorNode, logBuffer,
				    bufferSize);
}

/* ---- forwarded untracked ----------------------------------------------------------- */

static _Atomic unsigned char untracked_seen[GS_API_COUNT];

void gs_legacy_untracked(int sym, int version)
{
	if (sym < 0 || sym >= GS_API_COUNT ||
	    atomic_exchange_explicit(&untracked_seen[sym], 1, memory_order_relaxed))
		return;
	gs_warn("%s (a legacy ABI of CUDA %d.%d) makes objects the shim cannot track: "
		"forwarded untracked; a migration is unsafe from now on",
		gs_api_symbols[sym], version / 1000, version % 1000 / 10);
	gs_stats_unknown(gs_api_symbols[sym], version, 0);
}
