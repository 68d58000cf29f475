/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The hand-written translation of the entry points whose parameter types do
 * not say what to map (annotations.txt: xlat-hook): launch configurations,
 * stream callbacks, range attributes, batched copies and graph node
 * parameters (translate.h).
 *
 * Apart from the lookups of translate.c because each hook knows one entry
 * point's structures: they copy what they must rewrite (the application's
 * own structures are never written, except where the driver returns
 * something in them) and call the lookups on the members that hold
 * handles, ordinals or device addresses.
 */
#define GS_LOG_SUBSYS "shim"
#include "translate.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "track.h"

/* ---- copies ------------------------------------------------------------------------ */

/* The arrays a hook copies live on the stack when they are this small:
 * a few launch attributes or batch operations. */
#define COPY_STACK_BYTES 512

struct copy {
	void *p;
	/* Aligned for any of the driver's structures. */
	_Alignas(max_align_t) unsigned char stack[COPY_STACK_BYTES];
};

/* n elements of size bytes from src into c (c->p), or NULL with n == 0. */
static CUresult copy_in(struct copy *c, const void *src, size_t n, size_t size)
{
	c->p = NULL;
	if (!src || n == 0)
		return CUDA_SUCCESS;
	if (n > SIZE_MAX / size)
		return CUDA_ERROR_INVALID_VALUE;
	c->p = n * size <= sizeof(c->stack) ? c->stack : malloc(n * size);
	if (!c->p)
		return CUDA_ERROR_OUT_OF_MEMORY;
	memcpy(c->p, src, n * size);
	return CUDA_SUCCESS;
}

static void copy_free(struct copy *c)
{
	if (c->p != c->stack)
		free(c->p);
}

/* ---- hand-written translations (annotations.txt: xlat-hook) ------------------------- */

CUresult gs_xlat_hook_cuDeviceGetCount(gs_fn_cuDeviceGetCount *fn, bool ptds, int *count)
{
	CUresult rc = fn(count);
	int n = gs_devmap_count(gs_trk_devmap());

	(void)ptds;
	/* Once thaw has narrowed the map to the devices the application
	 * enumerated, that is what it keeps seeing, whatever the new machine
	 * has; an unnarrowed map says nothing. */
	if (rc == CUDA_SUCCESS && count && n < GS_MAX_DEVICES)
		*count = n;
	return rc;
}

/* A launch configuration with its stream and event attributes mapped; the
 * attribute array copied into *attrs when it has any. */
static CUresult launch_config_to_real(const CUlaunchConfig *in, CUlaunchConfig *out,
				      struct copy *attrs)
{
	CUresult rc;

	*out = *in;
	out->hStream = gs_xlat_stream(in->hStream);
	rc = copy_in(attrs, in->attrs, in->numAttrs, sizeof(*in->attrs));
	if (rc != CUDA_SUCCESS || !attrs->p)
		return rc;
	out->attrs = attrs->p;
	for (unsigned i = 0; i < in->numAttrs; i++) {
		CUlaunchAttribute *a = &out->attrs[i];

		if (a->id == CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_EVENT)
			a->value.programmaticEvent.event =
				gs_xlat_event(a->value.programmaticEvent.event);
		else if (a->id == CU_LAUNCH_ATTRIBUTE_LAUNCH_COMPLETION_EVENT)
			a->value.launchCompletionEvent.event =
				gs_xlat_event(a->value.launchCompletionEvent.event);
	}
	return CUDA_SUCCESS;
}

CUresult gs_xlat_hook_cuLaunchKernelEx(gs_fn_cuLaunchKernelEx *fn, bool ptds,
				       const CUlaunchConfig *config, CUfunction f,
				       void **kernelParams, void **extra)
{
	struct copy attrs = { 0 };
	struct gs_kparams_copy kp;
	CUlaunchConfig cfg;
	CUresult rc;

	(void)ptds;
	/* The layout is looked up by the app handle, before f is mapped. */
	rc = gs_xlat_kernel_params_begin(&kp, f, &kernelParams, &extra);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (config) {
		rc = launch_config_to_real(config, &cfg, &attrs);
		if (rc != CUDA_SUCCESS)
			goto out;
		config = &cfg;
	}
	rc = fn(config, gs_xlat_function(f), kernelParams, extra);
	copy_free(&attrs);
out:
	gs_xlat_kernel_params_end(&kp);
	return rc;
}

/* The occupancy queries take a launch configuration too. */
#define OCCUPANCY_HOOK(name)                                                          \
	CUresult gs_xlat_hook_##name(gs_fn_##name *fn, bool ptds, int *out, CUfunction func, \
				     const CUlaunchConfig *config)                    \
	{                                                                             \
		struct copy attrs = { 0 };                                            \
		CUlaunchConfig cfg;                                                   \
		CUresult rc;                                                          \
                                                                                      \
		(void)ptds;                                                           \
		if (config) {                                                         \
			rc = launch_config_to_real(config, &cfg, &attrs);             \
			if (rc != CUDA_SUCCESS)                                       \
				return rc;                                            \
			config = &cfg;                                                \
		}                                                                     \
		rc = fn(out, gs_xlat_function(func), config);                         \
		copy_free(&attrs);                                                    \
		return rc;                                                            \
	}
OCCUPANCY_HOOK(cuOccupancyMaxActiveClusters)
OCCUPANCY_HOOK(cuOccupancyMaxPotentialClusterSize)

/* The driver calls a stream callback with its own stream handle: the
 * application's callback gets the app handle. */
struct stream_callback {
	CUstreamCallback fn;
	void *user;
};

static void CUDA_CB stream_callback_tramp(CUstream real, CUresult status, void *arg)
{
	struct stream_callback cb = *(struct stream_callback *)arg;

	free(arg);
	cb.fn(gs_xlat_stream_app(real), status, cb.user);
}

CUresult gs_xlat_hook_cuStreamAddCallback(gs_fn_cuStreamAddCallback *fn, bool ptds,
					  CUstream hStream, CUstreamCallback callback,
					  void *userData, unsigned int flags)
{
	struct stream_callback *cb;
	CUresult rc;

	(void)ptds;
	if (!callback) /* the driver's own error */
		return fn(gs_xlat_stream(hStream), callback, userData, flags);
	cb = malloc(sizeof(*cb));
	if (!cb)
		return CUDA_ERROR_OUT_OF_MEMORY;
	cb->fn = callback;
	cb->user = userData;
	rc = fn(gs_xlat_stream(hStream), stream_callback_tramp, cb, flags);
	if (rc != CUDA_SUCCESS)
		free(cb);
	return rc;
}

/* Range attributes holding device ordinals (CU_DEVICE_CPU and
 * CU_DEVICE_INVALID stay as they are). type_of: the attribute's location
 * type for the *_ID attributes, fetched from the driver. */
static void range_attr_to_app(void *data, size_t size, CUmem_range_attribute attr,
			      CUdeviceptr ptr, size_t count)
{
	int *v = data;
	int type = -1;

	if (!data || size < sizeof(int))
		return;
	switch (attr) {
	case CU_MEM_RANGE_ATTRIBUTE_PREFERRED_LOCATION:
	case CU_MEM_RANGE_ATTRIBUTE_LAST_PREFETCH_LOCATION:
		*v = gs_xlat_device_to_app(*v);
		break;
	case CU_MEM_RANGE_ATTRIBUTE_ACCESSED_BY:
		for (size_t i = 0; i < size / sizeof(int); i++)
			v[i] = gs_xlat_device_to_app(v[i]);
		break;
	case CU_MEM_RANGE_ATTRIBUTE_PREFERRED_LOCATION_ID:
	case CU_MEM_RANGE_ATTRIBUTE_LAST_PREFETCH_LOCATION_ID:
		/* An id is an ordinal only for a device location. */
		if (gs_real.cuMemRangeGetAttribute &&
		    gs_real.cuMemRangeGetAttribute(
			    &type, sizeof(type),
			    attr == CU_MEM_RANGE_ATTRIBUTE_PREFERRED_LOCATION_ID
				    ? CU_MEM_RANGE_ATTRIBUTE_PREFERRED_LOCATION_TYPE
				    : CU_MEM_RANGE_ATTRIBUTE_LAST_PREFETCH_LOCATION_TYPE,
			    ptr, count) == CUDA_SUCCESS &&
		    type == CU_MEM_LOCATION_TYPE_DEVICE)
			*v = gs_xlat_device_to_app(*v);
		break;
	default:
		break;
	}
}

CUresult gs_xlat_hook_cuMemRangeGetAttribute(gs_fn_cuMemRangeGetAttribute *fn, bool ptds,
					     void *data, size_t dataSize,
					     CUmem_range_attribute attribute, CUdeviceptr devPtr,
					     size_t count)
{
	CUresult rc;

	(void)ptds;
	devPtr = gs_xlat_devptr(devPtr);
	rc = fn(data, dataSize, attribute, devPtr, count);
	if (rc == CUDA_SUCCESS)
		range_attr_to_app(data, dataSize, attribute, devPtr, count);
	return rc;
}

CUresult gs_xlat_hook_cuMemRangeGetAttributes(gs_fn_cuMemRangeGetAttributes *fn, bool ptds,
					      void **data, size_t *dataSizes,
					      CUmem_range_attribute *attributes,
					      size_t numAttributes, CUdeviceptr devPtr, size_t count)
{
	CUresult rc;

	(void)ptds;
	devPtr = gs_xlat_devptr(devPtr);
	rc = fn(data, dataSizes, attributes, numAttributes, devPtr, count);
	if (rc != CUDA_SUCCESS || !data || !dataSizes || !attributes)
		return rc;
	for (size_t i = 0; i < numAttributes; i++)
		range_attr_to_app(data[i], dataSizes[i], attributes[i], devPtr, count);
	return rc;
}

CUresult gs_xlat_hook_cuMemcpy3DBatchAsync_v2(gs_fn_cuMemcpy3DBatchAsync_v2 *fn, bool ptds,
					      size_t numOps, CUDA_MEMCPY3D_BATCH_OP *opList,
					      unsigned long long flags, CUstream hStream)
{
	struct copy ops;
	CUDA_MEMCPY3D_BATCH_OP *op;
	CUresult rc;

	(void)ptds;
	rc = copy_in(&ops, opList, numOps, sizeof(*opList));
	if (rc != CUDA_SUCCESS)
		return rc;
	op = ops.p ? ops.p : opList;
	for (size_t i = 0; ops.p && i < numOps; i++) {
		if (op[i].src.type == CU_MEMCPY_OPERAND_TYPE_POINTER) {
			gs_xlat_memloc_to_real(&op[i].src.op.ptr.locHint);
			op[i].src.op.ptr.ptr = gs_xlat_devptr(op[i].src.op.ptr.ptr);
		}
		if (op[i].dst.type == CU_MEMCPY_OPERAND_TYPE_POINTER) {
			gs_xlat_memloc_to_real(&op[i].dst.op.ptr.locHint);
			op[i].dst.op.ptr.ptr = gs_xlat_devptr(op[i].dst.op.ptr.ptr);
		}
	}
	rc = fn(numOps, op, flags, gs_xlat_stream(hStream));
	copy_free(&ops);
	return rc;
}

/* An allocation node's pool location and access descriptors (the same
 * members in both versions of its parameters), mapped in place; the
 * descriptor array is copied into descs. */
static CUresult mem_alloc_to_real(CUmemLocation *pool, const CUmemAccessDesc **access,
				  size_t count, struct copy *descs)
{
	CUmemAccessDesc *d;
	CUresult rc;

	gs_xlat_memloc_to_real(pool);
	rc = copy_in(descs, *access, count, sizeof(**access));
	if (rc != CUDA_SUCCESS || !descs->p)
		return rc;
	d = descs->p;
	for (size_t i = 0; i < count; i++)
		gs_xlat_memloc_to_real(&d[i].location);
	*access = d;
	return CUDA_SUCCESS;
}

CUresult gs_xlat_hook_cuGraphAddMemAllocNode(gs_fn_cuGraphAddMemAllocNode *fn, bool ptds,
					     CUgraphNode *phGraphNode, CUgraph hGraph,
					     const CUgraphNode *dependencies, size_t numDependencies,
					     CUDA_MEM_ALLOC_NODE_PARAMS *nodeParams)
{
	struct copy descs = { 0 };
	CUDA_MEM_ALLOC_NODE_PARAMS p;
	CUresult rc;

	(void)ptds;
	if (!nodeParams)
		return fn(phGraphNode, hGraph, dependencies, numDependencies, nodeParams);
	p = *nodeParams;
	rc = mem_alloc_to_real(&p.poolProps.location, &p.accessDescs, p.accessDescCount, &descs);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = fn(phGraphNode, hGraph, dependencies, numDependencies, &p);
	/* dptr is the one output; addresses need no translation. */
	if (rc == CUDA_SUCCESS)
		nodeParams->dptr = p.dptr;
	copy_free(&descs);
	return rc;
}

CUresult gs_xlat_hook_cuGraphMemAllocNodeGetParams(gs_fn_cuGraphMemAllocNodeGetParams *fn,
						   bool ptds, CUgraphNode hNode,
						   CUDA_MEM_ALLOC_NODE_PARAMS *params_out)
{
	CUresult rc = fn(hNode, params_out);

	(void)ptds;
	if (rc != CUDA_SUCCESS || !params_out)
		return rc;
	gs_xlat_memloc_to_app(&params_out->poolProps.location);
	/* The descriptors are the driver's memory: left as they are, which is
	 * only wrong where a device location's ordinal changed. */
	for (size_t i = 0; params_out->accessDescs && i < params_out->accessDescCount; i++) {
		const CUmemLocation *loc = &params_out->accessDescs[i].location;

		if (loc->type == CU_MEM_LOCATION_TYPE_DEVICE &&
		    gs_xlat_device_to_app(loc->id) != loc->id) {
			gs_xlat_unsupported(GS_SYM_cuGraphMemAllocNodeGetParams);
			break;
		}
	}
	return rc;
}

/* Generic node parameters, copied from *app into *p with the member of the
 * union the type selects mapped (descs: a copied descriptor array). */
static CUresult node_params_to_real(const CUgraphNodeParams *app, CUgraphNodeParams *p,
				    struct copy *descs)
{
	*p = *app;
	descs->p = NULL;
	switch (p->type) {
	case CU_GRAPH_NODE_TYPE_KERNEL:
		p->kernel.func = gs_xlat_function(p->kernel.func);
		p->kernel.kern = gs_xlat_kernel(p->kernel.kern);
		p->kernel.ctx = gs_xlat_ctx(p->kernel.ctx);
		break;
	case CU_GRAPH_NODE_TYPE_MEMCPY:
		p->memcpy.copyCtx = gs_xlat_ctx(p->memcpy.copyCtx);
		p->memcpy.copyParams.srcDevice = gs_xlat_devptr(p->memcpy.copyParams.srcDevice);
		p->memcpy.copyParams.dstDevice = gs_xlat_devptr(p->memcpy.copyParams.dstDevice);
		break;
	case CU_GRAPH_NODE_TYPE_MEMSET:
		p->memset.ctx = gs_xlat_ctx(p->memset.ctx);
		p->memset.dst = gs_xlat_devptr(p->memset.dst);
		break;
	case CU_GRAPH_NODE_TYPE_WAIT_EVENT:
		p->eventWait.event = gs_xlat_event(p->eventWait.event);
		break;
	case CU_GRAPH_NODE_TYPE_EVENT_RECORD:
		p->eventRecord.event = gs_xlat_event(p->eventRecord.event);
		break;
	case CU_GRAPH_NODE_TYPE_MEM_ALLOC:
		return mem_alloc_to_real(&p->alloc.poolProps.location, &p->alloc.accessDescs,
					 p->alloc.accessDescCount, descs);
	case CU_GRAPH_NODE_TYPE_BATCH_MEM_OP:
		p->memOp.ctx = gs_xlat_ctx(p->memOp.ctx);
		break;
	case CU_GRAPH_NODE_TYPE_CONDITIONAL:
		p->conditional.ctx = gs_xlat_ctx(p->conditional.ctx);
		break;
	default:
		/* host, child graph, empty, external semaphores, free: no
		 * handle the shim maps */
		break;
	}
	return CUDA_SUCCESS;
}

/* After the call: what the driver wrote into the parameters (an
 * allocation node's address) goes back to the application's copy. */
static void node_params_done(CUgraphNodeParams *app, const CUgraphNodeParams *p,
			     struct copy *descs, CUresult rc)
{
	if (rc == CUDA_SUCCESS && p->type == CU_GRAPH_NODE_TYPE_MEM_ALLOC)
		app->alloc.dptr = p->alloc.dptr;
	copy_free(descs);
}

CUresult gs_xlat_hook_cuGraphAddNode_v2(gs_fn_cuGraphAddNode_v2 *fn, bool ptds,
					CUgraphNode *phGraphNode, CUgraph hGraph,
					const CUgraphNode *dependencies,
					const CUgraphEdgeData *dependencyData,
					size_t numDependencies, CUgraphNodeParams *nodeParams)
{
	struct copy descs;
	CUgraphNodeParams p;
	CUresult rc;

	(void)ptds;
	if (!nodeParams)
		return fn(phGraphNode, hGraph, dependencies, dependencyData, numDependencies,
			  nodeParams);
	rc = node_params_to_real(nodeParams, &p, &descs);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = fn(phGraphNode, hGraph, dependencies, dependencyData, numDependencies, &p);
	node_params_done(nodeParams, &p, &descs, rc);
	return rc;
}

CUresult gs_xlat_hook_cuGraphNodeSetParams(gs_fn_cuGraphNodeSetParams *fn, bool ptds,
					   CUgraphNode hNode, CUgraphNodeParams *nodeParams)
{
	struct copy descs;
	CUgraphNodeParams p;
	CUresult rc;

	(void)ptds;
	if (!nodeParams)
		return fn(hNode, nodeParams);
	rc = node_params_to_real(nodeParams, &p, &descs);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = fn(hNode, &p);
	node_params_done(nodeParams, &p, &descs, rc);
	return rc;
}

CUresult gs_xlat_hook_cuGraphExecNodeSetParams(gs_fn_cuGraphExecNodeSetParams *fn, bool ptds,
					       CUgraphExec hGraphExec, CUgraphNode hNode,
					       CUgraphNodeParams *nodeParams)
{
	struct copy descs;
	CUgraphNodeParams p;
	CUresult rc;

	(void)ptds;
	if (!nodeParams)
		return fn(hGraphExec, hNode, nodeParams);
	rc = node_params_to_real(nodeParams, &p, &descs);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = fn(hGraphExec, hNode, &p);
	node_params_done(nodeParams, &p, &descs, rc);
	return rc;
}
