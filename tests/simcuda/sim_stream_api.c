/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Stream entry points beyond creating, destroying and synchronising streams:
 * cross-stream waits, properties, host functions and callbacks.
 */
#include <stdlib.h>

#include <cudaTypedefs.h>

#include "sim_exec.h"

SIM_EXPORT CUresult cuStreamWaitEvent_ptsz(CUstream hStream, CUevent hEvent, unsigned int Flags);
SIM_EXPORT CUresult cuStreamGetPriority_ptsz(CUstream hStream, int *priority);
SIM_EXPORT CUresult cuStreamGetFlags_ptsz(CUstream hStream, unsigned int *flags);
SIM_EXPORT CUresult cuStreamGetId_ptsz(CUstream hStream, unsigned long long *streamId);
SIM_EXPORT CUresult cuStreamGetCtx_ptsz(CUstream hStream, CUcontext *pctx);
SIM_EXPORT CUresult cuStreamGetCtx_v2_ptsz(CUstream hStream, CUcontext *pCtx, CUgreenCtx *pGreenCtx);
SIM_EXPORT CUresult cuStreamGetDevice_ptsz(CUstream hStream, CUdevice *device);
SIM_EXPORT CUresult cuStreamAddCallback_ptsz(CUstream hStream, CUstreamCallback callback,
					     void *userData, unsigned int flags);
SIM_EXPORT CUresult cuLaunchHostFunc_ptsz(CUstream hStream, CUhostFn fn, void *userData);
SIM_EXPORT CUresult cuStreamIsCapturing_ptsz(CUstream hStream, CUstreamCaptureStatus *captureStatus);
SIM_EXPORT CUresult cuStreamGetCaptureInfo_v3_ptsz(CUstream hStream,
						   CUstreamCaptureStatus *captureStatus_out,
						   cuuint64_t *id_out, CUgraph *graph_out,
						   const CUgraphNode **dependencies_out,
						   const CUgraphEdgeData **edgeData_out,
						   size_t *numDependencies_out);
SIM_EXPORT CUresult cuStreamGetAttribute_ptsz(CUstream hStream, CUstreamAttrID attr,
					      CUstreamAttrValue *value_out);
SIM_EXPORT CUresult cuStreamSetAttribute_ptsz(CUstream hStream, CUstreamAttrID attr,
					      const CUstreamAttrValue *value);
SIM_EXPORT CUresult cuStreamCopyAttributes_ptsz(CUstream dst, CUstream src);
SIM_CHECK_ABI(cuStreamGetAttribute_ptsz, PFN_cuStreamGetAttribute_v11000_ptsz);
SIM_CHECK_ABI(cuStreamSetAttribute_ptsz, PFN_cuStreamSetAttribute_v11000_ptsz);
SIM_CHECK_ABI(cuStreamCopyAttributes_ptsz, PFN_cuStreamCopyAttributes_v11000_ptsz);
SIM_CHECK_ABI(cuStreamWaitEvent_ptsz, PFN_cuStreamWaitEvent_v7000_ptsz);
SIM_CHECK_ABI(cuStreamGetPriority_ptsz, PFN_cuStreamGetPriority_v7000_ptsz);
SIM_CHECK_ABI(cuStreamGetFlags_ptsz, PFN_cuStreamGetFlags_v7000_ptsz);
SIM_CHECK_ABI(cuStreamGetId_ptsz, PFN_cuStreamGetId_v12000_ptsz);
SIM_CHECK_ABI(cuStreamGetCtx_ptsz, PFN_cuStreamGetCtx_v9020_ptsz);
SIM_CHECK_ABI(cuStreamGetCtx_v2_ptsz, PFN_cuStreamGetCtx_v12050_ptsz);
SIM_CHECK_ABI(cuStreamGetDevice_ptsz, PFN_cuStreamGetDevice_v12080_ptsz);
SIM_CHECK_ABI(cuStreamAddCallback_ptsz, PFN_cuStreamAddCallback_v7000_ptsz);
SIM_CHECK_ABI(cuLaunchHostFunc_ptsz, PFN_cuLaunchHostFunc_v10000_ptsz);
SIM_CHECK_ABI(cuStreamIsCapturing_ptsz, PFN_cuStreamIsCapturing_v10000_ptsz);
SIM_CHECK_ABI(cuStreamGetCaptureInfo_v3_ptsz, PFN_cuStreamGetCaptureInfo_v12030_ptsz);

/* ---- waiting for events ------------------------------------------------------ */

static CUresult stream_wait_event(CUstream hStream, CUevent hEvent, unsigned flags,
				  bool ptds, const char *fn)
{
	struct sim_stream *s;
	CUresult rc = sim_stream_lookup(hStream, ptds, fn, &s);

	if (rc != CUDA_SUCCESS)
		return rc;
	/* The event may belong to another context, even another device: that
	 * is how the driver orders work across GPUs. */
	struct sim_dep dep;
	sim_event_position(hEvent, fn, &dep);
	if (flags & ~(unsigned)CU_EVENT_WAIT_EXTERNAL)
		return CUDA_ERROR_INVALID_VALUE;
	/* CU_EVENT_WAIT_EXTERNAL only changes what stream capture records,
	 * and the simulator never captures: the wait is an ordinary one. */
	if (!dep.seq)
		return sim_ctx_sticky(s->ctx);
	return sim_stream_enqueue(s, NULL, NULL, NULL, 0, &dep, NULL);
}

SIM_EXPORT CUresult cuStreamWaitEvent(CUstream hStream, CUevent hEvent, unsigned int Flags)
{
	SIM_ENTER("cuStreamWaitEvent");
	return stream_wait_event(hStream, hEvent, Flags, false, "cuStreamWaitEvent");
}

SIM_EXPORT CUresult cuStreamWaitEvent_ptsz(CUstream hStream, CUevent hEvent, unsigned int Flags)
{
	SIM_ENTER("cuStreamWaitEvent_ptsz");
	return stream_wait_event(hStream, hEvent, Flags, true, "cuStreamWaitEvent_ptsz");
}

/* ---- properties ---------------------------------------------------------------- */

static CUresult stream_get_priority(CUstream hStream, int *priority, bool ptds, const char *fn)
{
	struct sim_stream *s;
	CUresult rc = sim_stream_lookup(hStream, ptds, fn, &s);

	if (rc != CUDA_SUCCESS)
		return rc;
	if (!priority)
		return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&s->lock);
	*priority = s->priority;
	pthread_mutex_unlock(&s->lock);
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuStreamGetPriority(CUstream hStream, int *priority)
{
	SIM_ENTER("cuStreamGetPriority");
	return stream_get_priority(hStream, priority, false, "cuStreamGetPriority");
}

SIM_EXPORT CUresult cuStreamGetPriority_ptsz(CUstream hStream, int *priority)
{
	SIM_ENTER("cuStreamGetPriority_ptsz");
	return stream_get_priority(hStream, priority, true, "cuStreamGetPriority_ptsz");
}

static CUresult stream_get_flags(CUstream hStream, unsigned *flags, bool ptds, const char *fn)
{
	struct sim_stream *s;
	CUresult rc = sim_stream_lookup(hStream, ptds, fn, &s);

	if (rc != CUDA_SUCCESS)
		return rc;
	if (!flags)
		return CUDA_ERROR_INVALID_VALUE;
	*flags = s->flags;
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuStreamGetFlags(CUstream hStream, unsigned int *flags)
{
	SIM_ENTER("cuStreamGetFlags");
	return stream_get_flags(hStream, flags, false, "cuStreamGetFlags");
}

SIM_EXPORT CUresult cuStreamGetFlags_ptsz(CUstream hStream, unsigned int *flags)
{
	SIM_ENTER("cuStreamGetFlags_ptsz");
	return stream_get_flags(hStream, flags, true, "cuStreamGetFlags_ptsz");
}

static CUresult stream_get_id(CUstream hStream, unsigned long long *id, bool ptds, const char *fn)
{
	struct sim_stream *s;
	CUresult rc = sim_stream_lookup(hStream, ptds, fn, &s);

	if (rc != CUDA_SUCCESS)
		return rc;
	if (!id)
		return CUDA_ERROR_INVALID_VALUE;
	*id = s->id;
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuStreamGetId(CUstream hStream, unsigned long long *streamId)
{
	SIM_ENTER("cuStreamGetId");
	return stream_get_id(hStream, streamId, false, "cuStreamGetId");
}

SIM_EXPORT CUresult cuStreamGetId_ptsz(CUstream hStream, unsigned long long *streamId)
{
	SIM_ENTER("cuStreamGetId_ptsz");
	return stream_get_id(hStream, streamId, true, "cuStreamGetId_ptsz");
}

static CUresult stream_get_ctx(CUstream hStream, CUcontext *pctx, CUgreenCtx *green, bool v2,
			       bool ptds, const char *fn)
{
	struct sim_stream *s;
	CUresult rc = sim_stream_lookup(hStream, ptds, fn, &s);

	if (rc != CUDA_SUCCESS)
		return rc;
	if (!pctx || (v2 && !green))
		return CUDA_ERROR_INVALID_VALUE;
	*pctx = (CUcontext)s->ctx;
	if (v2)
		*green = NULL; /* the simulator has no green contexts */
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuStreamGetCtx(CUstream hStream, CUcontext *pctx)
{
	SIM_ENTER("cuStreamGetCtx");
	return stream_get_ctx(hStream, pctx, NULL, false, false, "cuStreamGetCtx");
}

SIM_EXPORT CUresult cuStreamGetCtx_ptsz(CUstream hStream, CUcontext *pctx)
{
	SIM_ENTER("cuStreamGetCtx_ptsz");
	return stream_get_ctx(hStream, pctx, NULL, false, true, "cuStreamGetCtx_ptsz");
}

SIM_EXPORT CUresult cuStreamGetCtx_v2(CUstream hStream, CUcontext *pCtx, CUgreenCtx *pGreenCtx)
{
	SIM_ENTER("cuStreamGetCtx_v2");
	return stream_get_ctx(hStream, pCtx, pGreenCtx, true, false, "cuStreamGetCtx_v2");
}

SIM_EXPORT CUresult cuStreamGetCtx_v2_ptsz(CUstream hStream, CUcontext *pCtx, CUgreenCtx *pGreenCtx)
{
	SIM_ENTER("cuStreamGetCtx_v2_ptsz");
	return stream_get_ctx(hStream, pCtx, pGreenCtx, true, true, "cuStreamGetCtx_v2_ptsz");
}

static CUresult stream_get_device(CUstream hStream, CUdevice *device, bool ptds, const char *fn)
{
	struct sim_stream *s;
	CUresult rc = sim_stream_lookup(hStream, ptds, fn, &s);

	if (rc != CUDA_SUCCESS)
		return rc;
	if (!device)
		return CUDA_ERROR_INVALID_VALUE;
	*device = s->ctx->device;
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuStreamGetDevice(CUstream hStream, CUdevice *device)
{
	SIM_ENTER("cuStreamGetDevice");
	return stream_get_device(hStream, device, false, "cuStreamGetDevice");
}

SIM_EXPORT CUresult cuStreamGetDevice_ptsz(CUstream hStream, CUdevice *device)
{
	SIM_ENTER("cuStreamGetDevice_ptsz");
	return stream_get_device(hStream, device, true, "cuStreamGetDevice_ptsz");
}

/* ---- stream attributes ------------------------------------------------------- */

/* They steer the hardware (L2 persistence, how a host waits, memory
 * synchronisation domains, scheduling priority) and change nothing a kernel
 * computes; the simulator keeps and checks them so that they can be read back
 * and carried over like on a GPU. */
static CUresult attr_get(struct sim_stream *s, CUstreamAttrID attr, CUstreamAttrValue *v)
{
	CUresult rc = CUDA_SUCCESS;

	pthread_mutex_lock(&s->lock);
	switch (attr) {
	case CU_STREAM_ATTRIBUTE_ACCESS_POLICY_WINDOW: v->accessPolicyWindow = s->access_policy; break;
	case CU_STREAM_ATTRIBUTE_SYNCHRONIZATION_POLICY: v->syncPolicy = s->sync_policy; break;
	case CU_STREAM_ATTRIBUTE_PRIORITY: v->priority = s->priority; break;
	case CU_STREAM_ATTRIBUTE_MEM_SYNC_DOMAIN_MAP: v->memSyncDomainMap = s->domain_map; break;
	case CU_STREAM_ATTRIBUTE_MEM_SYNC_DOMAIN: v->memSyncDomain = s->domain; break;
	default: rc = CUDA_ERROR_INVALID_VALUE; break;
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

static CUresult attr_set(struct sim_stream *s, CUstreamAttrID attr, const CUstreamAttrValue *v)
{
	switch (attr) {
	case CU_STREAM_ATTRIBUTE_ACCESS_POLICY_WINDOW: {
		const CUaccessPolicyWindow *w = &v->accessPolicyWindow;
		if (!(w->hitRatio >= 0.0f && w->hitRatio <= 1.0f) ||
		    (unsigned)w->hitProp > CU_ACCESS_PROPERTY_PERSISTING ||
		    (w->missProp != CU_ACCESS_PROPERTY_NORMAL &&
		     w->missProp != CU_ACCESS_PROPERTY_STREAMING))
			return CUDA_ERROR_INVALID_VALUE;
		break;
	}
	case CU_STREAM_ATTRIBUTE_SYNCHRONIZATION_POLICY:
		if (v->syncPolicy < CU_SYNC_POLICY_AUTO || v->syncPolicy > CU_SYNC_POLICY_BLOCKING_SYNC)
			return CUDA_ERROR_INVALID_VALUE;
		break;
	case CU_STREAM_ATTRIBUTE_PRIORITY:
	case CU_STREAM_ATTRIBUTE_MEM_SYNC_DOMAIN_MAP:
		break;
	case CU_STREAM_ATTRIBUTE_MEM_SYNC_DOMAIN:
		if (v->memSyncDomain != CU_LAUNCH_MEM_SYNC_DOMAIN_DEFAULT &&
		    v->memSyncDomain != CU_LAUNCH_MEM_SYNC_DOMAIN_REMOTE)
			return CUDA_ERROR_INVALID_VALUE;
		break;
	default:
		return CUDA_ERROR_INVALID_VALUE;
	}
	pthread_mutex_lock(&s->lock);
	switch (attr) {
	case CU_STREAM_ATTRIBUTE_ACCESS_POLICY_WINDOW: s->access_policy = v->accessPolicyWindow; break;
	case CU_STREAM_ATTRIBUTE_SYNCHRONIZATION_POLICY: s->sync_policy = v->syncPolicy; break;
	case CU_STREAM_ATTRIBUTE_PRIORITY: s->priority = sim_stream_priority_clamp(v->priority); break;
	case CU_STREAM_ATTRIBUTE_MEM_SYNC_DOMAIN_MAP: s->domain_map = v->memSyncDomainMap; break;
	default: s->domain = v->memSyncDomain; break;
	}
	pthread_mutex_unlock(&s->lock);
	return CUDA_SUCCESS;
}

static CUresult stream_get_attribute(CUstream hStream, CUstreamAttrID attr, CUstreamAttrValue *value,
				     bool ptds, const char *fn)
{
	struct sim_stream *s;
	CUresult rc = sim_stream_lookup(hStream, ptds, fn, &s);

	if (rc != CUDA_SUCCESS)
		return rc;
	if (!value)
		return CUDA_ERROR_INVALID_VALUE;
	return attr_get(s, attr, value);
}

SIM_EXPORT CUresult cuStreamGetAttribute(CUstream hStream, CUstreamAttrID attr,
					 CUstreamAttrValue *value_out)
{
	SIM_ENTER("cuStreamGetAttribute");
	return stream_get_attribute(hStream, attr, value_out, false, "cuStreamGetAttribute");
}

SIM_EXPORT CUresult cuStreamGetAttribute_ptsz(CUstream hStream, CUstreamAttrID attr,
					      CUstreamAttrValue *value_out)
{
	SIM_ENTER("cuStreamGetAttribute_ptsz");
	return stream_get_attribute(hStream, attr, value_out, true, "cuStreamGetAttribute_ptsz");
}

static CUresult stream_set_attribute(CUstream hStream, CUstreamAttrID attr,
				     const CUstreamAttrValue *value, bool ptds, const char *fn)
{
	struct sim_stream *s;
	CUresult rc = sim_stream_lookup(hStream, ptds, fn, &s);

	if (rc != CUDA_SUCCESS)
		return rc;
	if (!value)
		return CUDA_ERROR_INVALID_VALUE;
	return attr_set(s, attr, value);
}

SIM_EXPORT CUresult cuStreamSetAttribute(CUstream hStream, CUstreamAttrID attr,
					 const CUstreamAttrValue *value)
{
	SIM_ENTER("cuStreamSetAttribute");
	return stream_set_attribute(hStream, attr, value, false, "cuStreamSetAttribute");
}

SIM_EXPORT CUresult cuStreamSetAttribute_ptsz(CUstream hStream, CUstreamAttrID attr,
					      const CUstreamAttrValue *value)
{
	SIM_ENTER("cuStreamSetAttribute_ptsz");
	return stream_set_attribute(hStream, attr, value, true, "cuStreamSetAttribute_ptsz");
}

static CUresult stream_copy_attributes(CUstream dst, CUstream src, bool ptds, const char *fn)
{
	static const CUstreamAttrID attrs[] = {
		CU_STREAM_ATTRIBUTE_ACCESS_POLICY_WINDOW, CU_STREAM_ATTRIBUTE_SYNCHRONIZATION_POLICY,
		CU_STREAM_ATTRIBUTE_PRIORITY,             CU_STREAM_ATTRIBUTE_MEM_SYNC_DOMAIN_MAP,
		CU_STREAM_ATTRIBUTE_MEM_SYNC_DOMAIN,
	};
	struct sim_stream *d, *s;
	CUresult rc = sim_stream_lookup(dst, ptds, fn, &d);

	if (rc == CUDA_SUCCESS)
		rc = sim_stream_lookup(src, ptds, fn, &s);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (d->ctx != s->ctx)
		sim_abort(fn, "streams %p and %p belong to different contexts", (void *)dst,
			  (void *)src);
	for (size_t i = 0; i < sizeof(attrs) / sizeof(attrs[0]); i++) {
		CUstreamAttrValue v;
		attr_get(s, attrs[i], &v);
		attr_set(d, attrs[i], &v);
	}
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuStreamCopyAttributes(CUstream dst, CUstream src)
{
	SIM_ENTER("cuStreamCopyAttributes");
	return stream_copy_attributes(dst, src, false, "cuStreamCopyAttributes");
}

SIM_EXPORT CUresult cuStreamCopyAttributes_ptsz(CUstream dst, CUstream src)
{
	SIM_ENTER("cuStreamCopyAttributes_ptsz");
	return stream_copy_attributes(dst, src, true, "cuStreamCopyAttributes_ptsz");
}

/* The simulator has no green contexts, so no stream belongs to one. */
SIM_EXPORT CUresult cuStreamGetGreenCtx(CUstream hStream, CUgreenCtx *phCtx)
{
	SIM_ENTER("cuStreamGetGreenCtx");
	struct sim_stream *s;
	CUresult rc = sim_stream_lookup(hStream, false, "cuStreamGetGreenCtx", &s);

	if (rc != CUDA_SUCCESS)
		return rc;
	if (!phCtx)
		return CUDA_ERROR_INVALID_VALUE;
	*phCtx = NULL;
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuCtxGetStreamPriorityRange(int *leastPriority, int *greatestPriority)
{
	SIM_ENTER("cuCtxGetStreamPriorityRange");
	struct sim_ctx *ctx;
	CUresult rc = sim_ctx_require("cuCtxGetStreamPriorityRange", &ctx);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (leastPriority)
		*leastPriority = SIM_STREAM_PRIORITY_LEAST;
	if (greatestPriority)
		*greatestPriority = SIM_STREAM_PRIORITY_GREATEST;
	return CUDA_SUCCESS;
}

/* Stream capture is not simulated; these answer as for a stream that is not
 * capturing, which is what libraries ask before allocating. */
static CUresult stream_is_capturing(CUstream hStream, CUstreamCaptureStatus *status, bool ptds,
				    const char *fn)
{
	struct sim_stream *s;
	CUresult rc = sim_stream_lookup(hStream, ptds, fn, &s);

	if (rc != CUDA_SUCCESS)
		return rc;
	if (!status)
		return CUDA_ERROR_INVALID_VALUE;
	*status = CU_STREAM_CAPTURE_STATUS_NONE;
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuStreamIsCapturing(CUstream hStream, CUstreamCaptureStatus *captureStatus)
{
	SIM_ENTER("cuStreamIsCapturing");
	return stream_is_capturing(hStream, captureStatus, false, "cuStreamIsCapturing");
}

SIM_EXPORT CUresult cuStreamIsCapturing_ptsz(CUstream hStream, CUstreamCaptureStatus *captureStatus)
{
	SIM_ENTER("cuStreamIsCapturing_ptsz");
	return stream_is_capturing(hStream, captureStatus, true, "cuStreamIsCapturing_ptsz");
}

static CUresult stream_capture_info(CUstream hStream, CUstreamCaptureStatus *status,
				    cuuint64_t *id, CUgraph *graph, const CUgraphNode **deps,
				    const CUgraphEdgeData **edges, size_t *ndeps, bool ptds,
				    const char *fn)
{
	CUresult rc = stream_is_capturing(hStream, status, ptds, fn);

	if (rc != CUDA_SUCCESS)
		return rc;
	/* The outputs besides the status are only written while capturing. */
	(void)id, (void)graph, (void)deps, (void)edges, (void)ndeps;
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuStreamGetCaptureInfo_v3(CUstream hStream, CUstreamCaptureStatus *captureStatus_out,
					      cuuint64_t *id_out, CUgraph *graph_out,
					      const CUgraphNode **dependencies_out,
					      const CUgraphEdgeData **edgeData_out,
					      size_t *numDependencies_out)
{
	SIM_ENTER("cuStreamGetCaptureInfo_v3");
	return stream_capture_info(hStream, captureStatus_out, id_out, graph_out, dependencies_out,
				   edgeData_out, numDependencies_out, false,
				   "cuStreamGetCaptureInfo_v3");
}

SIM_EXPORT CUresult cuStreamGetCaptureInfo_v3_ptsz(CUstream hStream,
						   CUstreamCaptureStatus *captureStatus_out,
						   cuuint64_t *id_out, CUgraph *graph_out,
						   const CUgraphNode **dependencies_out,
						   const CUgraphEdgeData **edgeData_out,
						   size_t *numDependencies_out)
{
	SIM_ENTER("cuStreamGetCaptureInfo_v3_ptsz");
	return stream_capture_info(hStream, captureStatus_out, id_out, graph_out, dependencies_out,
				   edgeData_out, numDependencies_out, true,
				   "cuStreamGetCaptureInfo_v3_ptsz");
}

/* ---- host functions ------------------------------------------------------------ */

struct host_call {
	CUstream handle; /* as the application passed it */
	struct sim_ctx *ctx;
	CUhostFn host_fn;
	CUstreamCallback callback;
	void *user_data;
};

static CUresult run_host_fn(void *arg)
{
	struct host_call *call = arg;

	call->host_fn(call->user_data);
	return CUDA_SUCCESS;
}

static CUresult run_callback(void *arg)
{
	struct host_call *call = arg;

	/* Callbacks still run after a fault and are told about it. */
	call->callback(call->handle, sim_ctx_sticky(call->ctx), call->user_data);
	return CUDA_SUCCESS;
}

static CUresult host_call_submit(CUstream hStream, bool ptds, const char *fn,
				 CUhostFn host_fn, CUstreamCallback callback, void *user_data)
{
	struct sim_stream *s;
	CUresult rc = sim_stream_lookup(hStream, ptds, fn, &s);

	if (rc != CUDA_SUCCESS)
		return rc;
	struct host_call *call = malloc(sizeof(*call));
	if (!call)
		return CUDA_ERROR_OUT_OF_MEMORY;
	*call = (struct host_call){ hStream, s->ctx, host_fn, callback, user_data };
	unsigned flags = SIM_WORK_APP_CODE | (callback ? SIM_WORK_ALWAYS : 0);
	rc = sim_stream_enqueue(s, callback ? run_callback : run_host_fn, call, free, flags,
				NULL, NULL);
	if (rc != CUDA_SUCCESS)
		free(call);
	return rc;
}

SIM_EXPORT CUresult cuLaunchHostFunc(CUstream hStream, CUhostFn fn, void *userData)
{
	SIM_ENTER("cuLaunchHostFunc");
	if (!fn)
		return CUDA_ERROR_INVALID_VALUE;
	return host_call_submit(hStream, false, "cuLaunchHostFunc", fn, NULL, userData);
}

SIM_EXPORT CUresult cuLaunchHostFunc_ptsz(CUstream hStream, CUhostFn fn, void *userData)
{
	SIM_ENTER("cuLaunchHostFunc_ptsz");
	if (!fn)
		return CUDA_ERROR_INVALID_VALUE;
	return host_call_submit(hStream, true, "cuLaunchHostFunc_ptsz", fn, NULL, userData);
}

SIM_EXPORT CUresult cuStreamAddCallback(CUstream hStream, CUstreamCallback callback,
					void *userData, unsigned int flags)
{
	SIM_ENTER("cuStreamAddCallback");
	if (!callback || flags)
		return CUDA_ERROR_INVALID_VALUE;
	return host_call_submit(hStream, false, "cuStreamAddCallback", NULL, callback, userData);
}

SIM_EXPORT CUresult cuStreamAddCallback_ptsz(CUstream hStream, CUstreamCallback callback,
					     void *userData, unsigned int flags)
{
	SIM_ENTER("cuStreamAddCallback_ptsz");
	if (!callback || flags)
		return CUDA_ERROR_INVALID_VALUE;
	return host_call_submit(hStream, true, "cuStreamAddCallback_ptsz", NULL, callback, userData);
}
