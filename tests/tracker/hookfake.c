/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A scripted stand-in for the driver, for the tracking hooks' tests
 * (test_hooks.c): just the entry points those tests call, each answering
 * what the test set up through the hookfake_* controls. It covers what the
 * simulated driver does not model (stream capture, graphs, pools, arrays,
 * managed memory, IPC, green contexts, the JIT linker) and lets a test
 * script driver behaviour (a handle value reused after a migration, a
 * capture invalidated, a context first seen current).
 */
#include <cuda.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))

/* cuda.h declares these only in per-thread-default-stream mode. */
EXPORT CUresult cuStreamBeginCapture_v2_ptsz(CUstream hStream, CUstreamCaptureMode mode);
EXPORT CUresult cuStreamEndCapture_ptsz(CUstream hStream, CUgraph *phGraph);
EXPORT CUresult cuStreamIsCapturing_ptsz(CUstream hStream, CUstreamCaptureStatus *status);
EXPORT CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t bytesize, CUstream hStream);
EXPORT CUresult cuStreamGetCtx_ptsz(CUstream hStream, CUcontext *pctx);

/* ---- controls ------------------------------------------------------------------ */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t counter;
static uint64_t forced_handle;
static CUcontext current = (CUcontext)(uintptr_t)0xc0000;
static int primary_active = 1;
static CUresult end_capture_rc = CUDA_SUCCESS;
static CUstreamCaptureStatus capture_status = CU_STREAM_CAPTURE_STATUS_NONE;
static unsigned char link_output[512];

EXPORT void hookfake_force_handle(uint64_t h);
EXPORT void hookfake_set_current(CUcontext ctx);
EXPORT void hookfake_set_primary_active(int active);
EXPORT void hookfake_set_end_capture(CUresult rc, CUstreamCaptureStatus status_after);
EXPORT void *hookfake_link_output(size_t *size);

void hookfake_force_handle(uint64_t h)
{
	pthread_mutex_lock(&lock);
	forced_handle = h;
	pthread_mutex_unlock(&lock);
}

void hookfake_set_current(CUcontext ctx)
{
	pthread_mutex_lock(&lock);
	current = ctx;
	pthread_mutex_unlock(&lock);
}

void hookfake_set_primary_active(int active)
{
	pthread_mutex_lock(&lock);
	primary_active = active;
	pthread_mutex_unlock(&lock);
}

void hookfake_set_end_capture(CUresult rc, CUstreamCaptureStatus status_after)
{
	pthread_mutex_lock(&lock);
	end_capture_rc = rc;
	capture_status = status_after;
	pthread_mutex_unlock(&lock);
}

/* What cuLinkComplete hands out: 500 bytes no header describes. */
void *hookfake_link_output(size_t *size)
{
	*size = 500;
	return link_output;
}

/* A fresh handle (16-aligned like a heap pointer), or the forced one. */
static uint64_t handle(void)
{
	uint64_t h;

	pthread_mutex_lock(&lock);
	if (forced_handle) {
		h = forced_handle;
		forced_handle = 0;
	} else {
		h = 0x5000000 + ++counter * 16;
	}
	pthread_mutex_unlock(&lock);
	return h;
}

#define NEW(type, out)                                          \
	do {                                                    \
		if (!(out))                                     \
			return CUDA_ERROR_INVALID_VALUE;        \
		*(out) = (type)(uintptr_t)handle();             \
		return CUDA_SUCCESS;                            \
	} while (0)

/* ---- devices and contexts -------------------------------------------------------- */

EXPORT CUresult cuInit(unsigned int flags)
{
	(void)flags;
	return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetAttribute(int *pi, CUdevice_attribute attrib, CUdevice dev)
{
	(void)dev;
	*pi = attrib == CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR ? 8 : 0;
	return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxGetCurrent(CUcontext *pctx)
{
	pthread_mutex_lock(&lock);
	*pctx = current;
	pthread_mutex_unlock(&lock);
	return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxGetDevice_v2(CUdevice *device, CUcontext ctx)
{
	(void)ctx;
	*device = 0;
	return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxCreate(CUcontext *pctx, CUctxCreateParams *params, unsigned int flags,
			    CUdevice dev)
{
	(void)params;
	(void)flags;
	(void)dev;
	NEW(CUcontext, pctx);
}

EXPORT CUresult cuCtxDestroy(CUcontext ctx)
{
	(void)ctx;
	return CUDA_SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev)
{
	(void)dev;
	*pctx = (CUcontext)(uintptr_t)0xc0000;
	return CUDA_SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxRelease(CUdevice dev)
{
	(void)dev;
	return CUDA_SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxGetState(CUdevice dev, unsigned int *flags, int *active)
{
	(void)dev;
	*flags = 0;
	pthread_mutex_lock(&lock);
	*active = primary_active;
	pthread_mutex_unlock(&lock);
	return CUDA_SUCCESS;
}

EXPORT CUresult cuGreenCtxCreate(CUgreenCtx *phCtx, CUdevResourceDesc desc, CUdevice dev,
				 unsigned int flags)
{
	(void)desc;
	(void)dev;
	(void)flags;
	NEW(CUgreenCtx, phCtx);
}

EXPORT CUresult cuGreenCtxDestroy(CUgreenCtx hCtx)
{
	(void)hCtx;
	return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxFromGreenCtx(CUcontext *pContext, CUgreenCtx hCtx)
{
	(void)hCtx;
	NEW(CUcontext, pContext);
}

EXPORT CUresult cuGreenCtxStreamCreate(CUstream *phStream, CUgreenCtx greenCtx,
				       unsigned int flags, int priority)
{
	(void)greenCtx;
	(void)flags;
	(void)priority;
	NEW(CUstream, phStream);
}

/* ---- streams, events, capture, graphs ---------------------------------------------- */

EXPORT CUresult cuStreamCreate(CUstream *phStream, unsigned int flags)
{
	(void)flags;
	NEW(CUstream, phStream);
}

EXPORT CUresult cuStreamDestroy(CUstream hStream)
{
	(void)hStream;
	return CUDA_SUCCESS;
}

EXPORT CUresult cuStreamGetCtx(CUstream hStream, CUcontext *pctx)
{
	(void)hStream;
	return cuCtxGetCurrent(pctx);
}

CUresult cuStreamGetCtx_ptsz(CUstream hStream, CUcontext *pctx)
{
	return cuStreamGetCtx(hStream, pctx);
}

EXPORT CUresult cuEventCreate(CUevent *phEvent, unsigned int flags)
{
	(void)flags;
	NEW(CUevent, phEvent);
}

EXPORT CUresult cuEventDestroy(CUevent hEvent)
{
	(void)hEvent;
	return CUDA_SUCCESS;
}

EXPORT CUresult cuIpcGetEventHandle(CUipcEventHandle *pHandle, CUevent event)
{
	(void)event;
	memset(pHandle, 0, sizeof(*pHandle));
	return CUDA_SUCCESS;
}

EXPORT CUresult cuIpcOpenEventHandle(CUevent *phEvent, CUipcEventHandle h)
{
	(void)h;
	NEW(CUevent, phEvent);
}

EXPORT CUresult cuStreamBeginCapture(CUstream hStream, CUstreamCaptureMode mode)
{
	(void)hStream;
	(void)mode;
	pthread_mutex_lock(&lock);
	capture_status = CU_STREAM_CAPTURE_STATUS_ACTIVE;
	pthread_mutex_unlock(&lock);
	return CUDA_SUCCESS;
}

CUresult cuStreamBeginCapture_v2_ptsz(CUstream hStream, CUstreamCaptureMode mode)
{
	return cuStreamBeginCapture(hStream, mode);
}

/* Ends as scripted: success gives a graph; an error leaves the capture in
 * the scripted state. */
EXPORT CUresult cuStreamEndCapture(CUstream hStream, CUgraph *phGraph)
{
	CUresult rc;

	(void)hStream;
	pthread_mutex_lock(&lock);
	rc = end_capture_rc;
	end_capture_rc = CUDA_SUCCESS;
	if (rc == CUDA_SUCCESS)
		capture_status = CU_STREAM_CAPTURE_STATUS_NONE;
	pthread_mutex_unlock(&lock);
	if (rc == CUDA_SUCCESS)
		*phGraph = (CUgraph)(uintptr_t)handle();
	return rc;
}

CUresult cuStreamEndCapture_ptsz(CUstream hStream, CUgraph *phGraph)
{
	return cuStreamEndCapture(hStream, phGraph);
}

EXPORT CUresult cuStreamIsCapturing(CUstream hStream, CUstreamCaptureStatus *status)
{
	(void)hStream;
	pthread_mutex_lock(&lock);
	*status = capture_status;
	pthread_mutex_unlock(&lock);
	return CUDA_SUCCESS;
}

CUresult cuStreamIsCapturing_ptsz(CUstream hStream, CUstreamCaptureStatus *status)
{
	return cuStreamIsCapturing(hStream, status);
}

EXPORT CUresult cuGraphCreate(CUgraph *phGraph, unsigned int flags)
{
	(void)flags;
	NEW(CUgraph, phGraph);
}

EXPORT CUresult cuGraphClone(CUgraph *phGraphClone, CUgraph original)
{
	(void)original;
	NEW(CUgraph, phGraphClone);
}

EXPORT CUresult cuGraphDestroy(CUgraph hGraph)
{
	(void)hGraph;
	return CUDA_SUCCESS;
}

EXPORT CUresult cuGraphInstantiateWithFlags(CUgraphExec *phGraphExec, CUgraph hGraph,
					    unsigned long long flags)
{
	(void)hGraph;
	(void)flags;
	NEW(CUgraphExec, phGraphExec);
}

EXPORT CUresult cuGraphExecDestroy(CUgraphExec hGraphExec)
{
	(void)hGraphExec;
	return CUDA_SUCCESS;
}

/* ---- memory -------------------------------------------------------------------------- */

EXPORT CUresult cuMemPoolCreate(CUmemoryPool *pool, const CUmemPoolProps *props)
{
	(void)props;
	NEW(CUmemoryPool, pool);
}

EXPORT CUresult cuMemPoolDestroy(CUmemoryPool pool)
{
	(void)pool;
	return CUDA_SUCCESS;
}

EXPORT CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t bytesize, CUstream hStream)
{
	(void)bytesize;
	(void)hStream;
	NEW(CUdeviceptr, dptr);
}

CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t bytesize, CUstream hStream)
{
	return cuMemAllocAsync(dptr, bytesize, hStream);
}

EXPORT CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream hStream)
{
	(void)dptr;
	(void)hStream;
	return CUDA_SUCCESS;
}

EXPORT CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t bytesize, unsigned int flags)
{
	(void)bytesize;
	(void)flags;
	NEW(CUdeviceptr, dptr);
}

EXPORT CUresult cuArrayCreate(CUarray *pHandle, const CUDA_ARRAY_DESCRIPTOR *desc)
{
	(void)desc;
	NEW(CUarray, pHandle);
}

EXPORT CUresult cuArrayDestroy(CUarray hArray)
{
	(void)hArray;
	return CUDA_SUCCESS;
}

EXPORT CUresult cuIpcGetMemHandle(CUipcMemHandle *pHandle, CUdeviceptr dptr)
{
	(void)dptr;
	memset(pHandle, 0, sizeof(*pHandle));
	return CUDA_SUCCESS;
}

EXPORT CUresult cuIpcOpenMemHandle(CUdeviceptr *pdptr, CUipcMemHandle h, unsigned int flags)
{
	(void)h;
	(void)flags;
	NEW(CUdeviceptr, pdptr);
}

EXPORT CUresult cuIpcCloseMemHandle(CUdeviceptr dptr)
{
	(void)dptr;
	return CUDA_SUCCESS;
}

EXPORT CUresult cuMemCreate(CUmemGenericAllocationHandle *h, size_t size,
			    const CUmemAllocationProp *prop, unsigned long long flags)
{
	(void)size;
	(void)prop;
	(void)flags;
	NEW(CUmemGenericAllocationHandle, h);
}

EXPORT CUresult cuMemRelease(CUmemGenericAllocationHandle h)
{
	(void)h;
	return CUDA_SUCCESS;
}

EXPORT CUresult cuMulticastCreate(CUmemGenericAllocationHandle *h,
				  const CUmulticastObjectProp *prop)
{
	(void)prop;
	NEW(CUmemGenericAllocationHandle, h);
}

/* ---- code ------------------------------------------------------------------------------ */

EXPORT CUresult cuModuleLoadData(CUmodule *module, const void *image)
{
	(void)image;
	NEW(CUmodule, module);
}

EXPORT CUresult cuModuleLoadDataEx(CUmodule *module, const void *image, unsigned int n,
				   CUjit_option *options, void **values)
{
	(void)n;
	(void)options;
	/* The driver writes back in/out options: a log size, a wall time. */
	for (unsigned i = 0; i < n; i++)
		if (options[i] == CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES)
			values[i] = (void *)(uintptr_t)0;
	return cuModuleLoadData(module, image);
}

EXPORT CUresult cuModuleUnload(CUmodule hmod)
{
	(void)hmod;
	return CUDA_SUCCESS;
}

/* Every global is 64 bytes at an address derived from the module. */
EXPORT CUresult cuModuleGetGlobal(CUdeviceptr *dptr, size_t *bytes, CUmodule hmod,
				  const char *name)
{
	(void)name;
	if (dptr)
		*dptr = 0x70000000 + (uintptr_t)hmod;
	if (bytes)
		*bytes = 64;
	return CUDA_SUCCESS;
}

EXPORT CUresult cuLinkCreate(unsigned int n, CUjit_option *options, void **values,
			     CUlinkState *stateOut)
{
	(void)n;
	(void)options;
	(void)values;
	NEW(CUlinkState, stateOut);
}

EXPORT CUresult cuLinkAddData(CUlinkState state, CUjitInputType type, void *data, size_t size,
			      const char *name, unsigned int n, CUjit_option *options,
			      void **values)
{
	(void)state;
	(void)type;
	(void)data;
	(void)size;
	(void)name;
	(void)n;
	(void)options;
	(void)values;
	return CUDA_SUCCESS;
}

EXPORT CUresult cuLinkComplete(CUlinkState state, void **cubinOut, size_t *sizeOut)
{
	(void)state;
	memset(link_output, 0x42, sizeof(link_output));
	*cubinOut = link_output;
	*sizeOut = 500;
	return CUDA_SUCCESS;
}

EXPORT CUresult cuLinkDestroy(CUlinkState state)
{
	(void)state;
	return CUDA_SUCCESS;
}
