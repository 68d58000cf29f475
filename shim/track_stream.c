/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tracking hooks for streams, events, stream capture and graphs. Graphs and
 * captures cannot be migrated yet; they are recorded so that a freeze
 * refuses while any is live (DESIGN.md §5).
 */
#define GS_LOG_SUBSYS "tracker"

#include <errno.h>

#include "log.h"
#include "track.h"
#include "translate.h"

/* ---- streams ------------------------------------------------------------------ */

static void stream_created(const char *call, CUstream *ph, unsigned flags, int priority,
			   bool priority_set)
{
	CUcontext ctx = gs_hook_current_ctx(NULL);
	CUstream app;
	int rc;

	rc = gs_trk_stream_created(ctx, *ph, flags, priority, priority_set, &app);
	if (rc) {
		gs_hook_failed(call, rc);
		return;
	}
	*ph = app;
}

void gs_track_cuStreamCreate(bool ptds, CUstream *phStream, unsigned int Flags)
{
	(void)ptds;
	stream_created("cuStreamCreate", phStream, Flags, 0, false);
}

/* The priority is recorded as asked: the driver clamps it to the device's
 * range, and will clamp it the same way when the stream is made again. */
void gs_track_cuStreamCreateWithPriority(bool ptds, CUstream *phStream, unsigned int flags,
					 int priority)
{
	(void)ptds;
	stream_created("cuStreamCreateWithPriority", phStream, flags, priority, true);
}

void gs_track_cuGreenCtxStreamCreate(bool ptds, CUstream *phStream, CUgreenCtx greenCtx,
				     unsigned int flags, int priority)
{
	CUstream app;
	int rc;

	(void)ptds;
	rc = gs_trk_stream_green_created(greenCtx, *phStream, flags, priority, &app);
	if (rc) {
		gs_hook_failed("cuGreenCtxStreamCreate", rc);
		return;
	}
	*phStream = app;
}

void gs_track_cuStreamDestroy_v2(bool ptds, CUstream hStream)
{
	int rc;

	(void)ptds;
	rc = gs_trk_stream_destroyed(hStream);
	if (rc)
		gs_hook_failed("cuStreamDestroy", rc);
}

/* ---- events -------------------------------------------------------------------- */

void gs_track_cuEventCreate(bool ptds, CUevent *phEvent, unsigned int Flags)
{
	CUcontext ctx = gs_hook_current_ctx(NULL);
	CUevent app;
	int rc;

	(void)ptds;
	rc = gs_trk_event_created(ctx, *phEvent, Flags, false, &app);
	if (rc) {
		gs_hook_failed("cuEventCreate", rc);
		return;
	}
	*phEvent = app;
}

void gs_track_cuEventDestroy_v2(bool ptds, CUevent hEvent)
{
	int rc;

	(void)ptds;
	rc = gs_trk_event_destroyed(hEvent);
	if (rc)
		gs_hook_failed("cuEventDestroy", rc);
}

void gs_track_cuIpcGetEventHandle(bool ptds, CUipcEventHandle *pHandle, CUevent event)
{
	int rc;

	(void)ptds;
	(void)pHandle;
	rc = gs_trk_unsup_add(GS_UNSUP_IPC_EVENT_EXPORT, (uintptr_t)event, 0,
			      gs_hook_current_ctx(NULL), 0, "cuIpcGetEventHandle");
	/* Exporting the same event twice is one export. */
	if (rc && rc != -EEXIST)
		gs_hook_failed("cuIpcGetEventHandle", rc);
}

/* An event another process created: an event here (cuEventDestroy closes
 * it), which no other GPU can share. */
void gs_track_cuIpcOpenEventHandle(bool ptds, CUevent *phEvent, CUipcEventHandle handle)
{
	CUcontext ctx = gs_hook_current_ctx(NULL);
	CUevent app;
	int rc;

	(void)ptds;
	(void)handle;
	rc = gs_trk_event_created(ctx, *phEvent, CU_EVENT_INTERPROCESS | CU_EVENT_DISABLE_TIMING,
				  true, &app);
	if (rc) {
		gs_hook_failed("cuIpcOpenEventHandle", rc);
		return;
	}
	*phEvent = app;
	rc = gs_trk_unsup_add(GS_UNSUP_IPC_EVENT_IMPORT, (uintptr_t)app, 0, ctx, 0,
			      "cuIpcOpenEventHandle");
	if (rc)
		gs_hook_failed("cuIpcOpenEventHandle", rc);
}

/* ---- stream capture -------------------------------------------------------------- */

/* The stream a capture call names: NULL means the legacy default stream,
 * or this thread's per-thread stream for a _ptsz/_ptds call. */
static CUstream capture_stream(bool ptds, CUstream s)
{
	return s ? s : ptds ? CU_STREAM_PER_THREAD : CU_STREAM_LEGACY;
}

static void capture_begun(const char *call, bool ptds, CUstream hStream,
			  CUstreamCaptureMode mode)
{
	int rc = gs_trk_capture_begin(capture_stream(ptds, hStream), gs_hook_current_ctx(NULL),
				      mode);

	if (rc)
		gs_hook_failed(call, rc);
}

void gs_track_cuStreamBeginCapture_v2(bool ptds, CUstream hStream, CUstreamCaptureMode mode)
{
	capture_begun("cuStreamBeginCapture", ptds, hStream, mode);
}

void gs_track_cuStreamBeginCaptureToGraph(bool ptds, CUstream hStream, CUgraph hGraph,
					  const CUgraphNode *dependencies,
					  const CUgraphEdgeData *dependencyData,
					  size_t numDependencies, CUstreamCaptureMode mode)
{
	(void)hGraph;
	(void)dependencies;
	(void)dependencyData;
	(void)numDependencies;
	capture_begun("cuStreamBeginCaptureToGraph", ptds, hStream, mode);
}

/*
 * cuStreamEndCapture is custom, not track: a capture the driver invalidated
 * ends with an error (CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, ...), and a
 * track hook, which runs only on success, would leave the capture recorded
 * as in progress for ever. Whether it ended is asked of the driver instead.
 */
CUresult gs_custom_cuStreamEndCapture(bool ptds, CUstream hStream, CUgraph *phGraph)
{
	gs_fn_cuStreamEndCapture *fn = ptds ? gs_real.cuStreamEndCapture_ptsz
					    : gs_real.cuStreamEndCapture;
	int sym = ptds ? GS_SYM_cuStreamEndCapture_ptsz : GS_SYM_cuStreamEndCapture;
	gs_fn_cuStreamIsCapturing *is_capturing = ptds ? gs_real.cuStreamIsCapturing_ptsz
						       : gs_real.cuStreamIsCapturing;
	CUstreamCaptureStatus status = CU_STREAM_CAPTURE_STATUS_NONE;
	struct gs_thread *self;
	CUresult rc;
	int err;

	if (gs_inside())
		return fn ? fn(hStream, phGraph) : gs_missing(sym);
	/* The generated export has counted the call already. */
	rc = gs_init();
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!fn)
		return gs_missing(sym);
	self = gs_thread_get();
	if (!self)
		return CUDA_ERROR_OUT_OF_MEMORY;
	gs_gate_enter(self, sym);
	/* The graph it returns has no map (graphs never outlive a migration). */
	rc = fn(gs_xlat_stream(hStream), phGraph);
	if (rc != CUDA_SUCCESS && is_capturing &&
	    is_capturing((CUstream)(uintptr_t)gs_hook_to_real(GS_KIND_STREAM, (uintptr_t)hStream),
			 &status) == CUDA_SUCCESS &&
	    status == CU_STREAM_CAPTURE_STATUS_ACTIVE) {
		/* Still capturing (e.g. ended from the wrong thread). */
		gs_gate_exit(self);
		return rc;
	}
	err = gs_trk_capture_end(capture_stream(ptds, hStream));
	if (err)
		gs_hook_failed("cuStreamEndCapture", err);
	if (rc == CUDA_SUCCESS && phGraph && *phGraph) {
		err = gs_trk_unsup_add(GS_UNSUP_GRAPH, (uintptr_t)*phGraph, 0,
				       gs_hook_current_ctx(NULL), 0, "cuStreamEndCapture");
		if (err)
			gs_hook_failed("cuStreamEndCapture", err);
	}
	gs_gate_exit(self);
	return rc;
}

/* ---- graphs ------------------------------------------------------------------------ */

static void graph_added(const char *call, enum gs_unsup_kind what, uint64_t handle)
{
	int rc = gs_trk_unsup_add(what, handle, 0, gs_hook_current_ctx(NULL), 0, call);

	if (rc)
		gs_hook_failed(call, rc);
}

static void graph_removed(const char *call, enum gs_unsup_kind what, uint64_t handle)
{
	int rc = gs_trk_unsup_remove(what, handle);

	if (rc)
		gs_hook_failed(call, rc);
}

void gs_track_cuGraphCreate(bool ptds, CUgraph *phGraph, unsigned int flags)
{
	(void)ptds;
	(void)flags;
	graph_added("cuGraphCreate", GS_UNSUP_GRAPH, (uintptr_t)*phGraph);
}

void gs_track_cuGraphClone(bool ptds, CUgraph *phGraphClone, CUgraph originalGraph)
{
	(void)ptds;
	(void)originalGraph;
	graph_added("cuGraphClone", GS_UNSUP_GRAPH, (uintptr_t)*phGraphClone);
}

void gs_track_cuGraphDestroy(bool ptds, CUgraph hGraph)
{
	(void)ptds;
	graph_removed("cuGraphDestroy", GS_UNSUP_GRAPH, (uintptr_t)hGraph);
}

void gs_track_cuGraphInstantiateWithFlags(bool ptds, CUgraphExec *phGraphExec, CUgraph hGraph,
					  unsigned long long flags)
{
	(void)ptds;
	(void)hGraph;
	(void)flags;
	graph_added("cuGraphInstantiateWithFlags", GS_UNSUP_GRAPH_EXEC, (uintptr_t)*phGraphExec);
}

void gs_track_cuGraphInstantiateWithParams(bool ptds, CUgraphExec *phGraphExec, CUgraph hGraph,
					   CUDA_GRAPH_INSTANTIATE_PARAMS *instantiateParams)
{
	(void)ptds;
	(void)hGraph;
	(void)instantiateParams;
	graph_added("cuGraphInstantiateWithParams", GS_UNSUP_GRAPH_EXEC,
		    (uintptr_t)*phGraphExec);
}

void gs_track_cuGraphExecDestroy(bool ptds, CUgraphExec hGraphExec)
{
	(void)ptds;
	graph_removed("cuGraphExecDestroy", GS_UNSUP_GRAPH_EXEC, (uintptr_t)hGraphExec);
}
