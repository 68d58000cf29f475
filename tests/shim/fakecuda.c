/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fakecuda: a deliberately small stand-in for the real driver, loaded by the
 * shim through GPUSWAP_REAL_LIBCUDA in the shim's own tests. Unlike the
 * simulator it is complete for what it claims and fully predictable, so the
 * shim's mechanics (look-up resolution, legacy and unknown entry points,
 * export tables, the gate around a blocked call) can be tested exactly.
 *
 *   - Device memory is host memory; one device, one primary context.
 *   - cuGetProcAddress answers from the same generated table as the shim,
 *     returning its own export where it has one. An ABI it does not export
 *     is "not found" (like an older driver); a legacy ABI (no symbol in
 *     cuda.h) gets fake_legacy_entry; "cuFakeDriverOnly" exists only here.
 *   - FAKECUDA_INTERNAL_POINTERS=1: look-ups return functions other than
 *     the exports (as a driver handing out internal entry points may).
 *   - FAKECUDA_VERSION=N: behave like a driver of CUDA version N.
 *   - cuStreamSynchronize blocks while fakecuda_block(1) is in force.
 *   - cuGetExportTable knows one table, the cudart interface UUID.
 */
#include <cuda.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proctable.h"

#define EXPORT __attribute__((visibility("default")))

#define FAKE_CTX ((CUcontext)(uintptr_t)0xfac7c0de)
#define FAKE_ALLOCS 64

struct fake_alloc {
	void *host;
	size_t size;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t unblocked = PTHREAD_COND_INITIALIZER;
static struct fake_alloc allocs[FAKE_ALLOCS];
static bool initialised;
static bool blocking;
static unsigned blocked_now;
static _Thread_local CUcontext current;

/* Functions exported by name, declared here because cuda.h maps them away
 * or does not declare them. */
EXPORT void fakecuda_block(int on);
EXPORT unsigned fakecuda_blocked(void);
EXPORT CUresult fake_legacy_entry(void);
EXPORT CUresult cuFakeDriverOnly(void);
EXPORT CUresult fake_internal_entry(void);

static int driver_version(void)
{
	const char *v = getenv("FAKECUDA_VERSION");

	return v && *v ? atoi(v) : 13000;
}

EXPORT void fakecuda_block(int on)
{
	pthread_mutex_lock(&lock);
	blocking = on != 0;
	pthread_cond_broadcast(&unblocked);
	pthread_mutex_unlock(&lock);
}

EXPORT unsigned fakecuda_blocked(void)
{
	unsigned n;

	pthread_mutex_lock(&lock);
	n = blocked_now;
	pthread_mutex_unlock(&lock);
	return n;
}

EXPORT CUresult fake_legacy_entry(void)
{
	return CUDA_SUCCESS;
}

EXPORT CUresult cuFakeDriverOnly(void)
{
	return CUDA_SUCCESS;
}

EXPORT CUresult fake_internal_entry(void)
{
	return CUDA_SUCCESS;
}

EXPORT CUresult cuInit(unsigned int flags)
{
	if (flags != 0)
		return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&lock);
	initialised = true;
	pthread_mutex_unlock(&lock);
	return CUDA_SUCCESS;
}

static bool ready(void)
{
	bool r;

	pthread_mutex_lock(&lock);
	r = initialised;
	pthread_mutex_unlock(&lock);
	return r;
}

EXPORT CUresult cuDriverGetVersion(int *version)
{
	if (!version)
		return CUDA_ERROR_INVALID_VALUE;
	*version = driver_version();
	return CUDA_SUCCESS;
}

EXPORT CUresult cuGetErrorName(CUresult error, const char **name)
{
	switch (error) {
	case CUDA_SUCCESS:
		*name = "CUDA_SUCCESS";
		return CUDA_SUCCESS;
	case CUDA_ERROR_INVALID_VALUE:
		*name = "CUDA_ERROR_INVALID_VALUE";
		return CUDA_SUCCESS;
	case CUDA_ERROR_NOT_FOUND:
		*name = "CUDA_ERROR_NOT_FOUND";
		return CUDA_SUCCESS;
	default:
		*name = NULL;
		return CUDA_ERROR_INVALID_VALUE;
	}
}

EXPORT CUresult cuGetErrorString(CUresult error, const char **str)
{
	return cuGetErrorName(error, str);
}

EXPORT CUresult cuDeviceGetCount(int *count)
{
	if (!ready())
		return CUDA_ERROR_NOT_INITIALIZED;
	*count = 1;
	return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGet(CUdevice *dev, int ordinal)
{
	if (!ready())
		return CUDA_ERROR_NOT_INITIALIZED;
	if (ordinal != 0)
		return CUDA_ERROR_INVALID_DEVICE;
	*dev = 0;
	return CUDA_SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice dev)
{
	if (!ready())
		return CUDA_ERROR_NOT_INITIALIZED;
	if (dev != 0)
		return CUDA_ERROR_INVALID_DEVICE;
	*ctx = FAKE_CTX;
	return CUDA_SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev)
{
	return dev == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE;
}

EXPORT CUresult cuCtxSetCurrent(CUcontext ctx)
{
	if (ctx != NULL && ctx != FAKE_CTX)
		return CUDA_ERROR_INVALID_CONTEXT;
	current = ctx;
	return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxGetCurrent(CUcontext *ctx)
{
	*ctx = current;
	return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxGetDevice(CUdevice *dev)
{
	if (!current)
		return CUDA_ERROR_INVALID_CONTEXT;
	*dev = 0;
	return CUDA_SUCCESS;
}

EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize)
{
	if (!current)
		return CUDA_ERROR_INVALID_CONTEXT;
	if (!dptr || bytesize == 0)
		return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&lock);
	for (int i = 0; i < FAKE_ALLOCS; i++) {
		if (allocs[i].host)
			continue;
		allocs[i].host = calloc(1, bytesize);
		if (!allocs[i].host) {
			pthread_mutex_unlock(&lock);
			return CUDA_ERROR_OUT_OF_MEMORY;
		}
		allocs[i].size = bytesize;
		*dptr = (CUdeviceptr)(uintptr_t)allocs[i].host;
		pthread_mutex_unlock(&lock);
		return CUDA_SUCCESS;
	}
	pthread_mutex_unlock(&lock);
	return CUDA_ERROR_OUT_OF_MEMORY;
}

/* The allocation containing the byte at p and the rest of [p, p + n), or
 * NULL. (The byte at p: an address one past an allocation may well be the
 * start of the next one.) Called with lock held. */
static struct fake_alloc *find(CUdeviceptr p, size_t n)
{
	for (int i = 0; i < FAKE_ALLOCS; i++) {
		uintptr_t base = (uintptr_t)allocs[i].host;

		if (base && p >= base && p - base < allocs[i].size &&
		    n <= allocs[i].size - (p - base))
			return &allocs[i];
	}
	return NULL;
}

EXPORT CUresult cuMemFree_v2(CUdeviceptr p)
{
	struct fake_alloc *a;

	pthread_mutex_lock(&lock);
	a = find(p, 0);
	if (!a || (uintptr_t)a->host != p) {
		pthread_mutex_unlock(&lock);
		return CUDA_ERROR_INVALID_VALUE;
	}
	free(a->host);
	a->host = NULL;
	a->size = 0;
	pthread_mutex_unlock(&lock);
	return CUDA_SUCCESS;
}

EXPORT CUresult cuMemGetAddressRange_v2(CUdeviceptr *base, size_t *size, CUdeviceptr p)
{
	struct fake_alloc *a;

	pthread_mutex_lock(&lock);
	a = find(p, 0);
	if (a) {
		if (base)
			*base = (CUdeviceptr)(uintptr_t)a->host;
		if (size)
			*size = a->size;
	}
	pthread_mutex_unlock(&lock);
	return a ? CUDA_SUCCESS : CUDA_ERROR_NOT_FOUND;
}

EXPORT CUresult cuMemsetD32_v2(CUdeviceptr dst, unsigned int value, size_t count)
{
	struct fake_alloc *a;

	pthread_mutex_lock(&lock);
	a = find(dst, count * 4);
	if (a)
		for (size_t i = 0; i < count; i++)
			memcpy((char *)(uintptr_t)dst + 4 * i, &value, 4);
	pthread_mutex_unlock(&lock);
	return a ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

EXPORT CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n)
{
	struct fake_alloc *a;

	pthread_mutex_lock(&lock);
	a = find(src, n);
	if (a)
		memcpy(dst, (const void *)(uintptr_t)src, n);
	pthread_mutex_unlock(&lock);
	return a ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

EXPORT CUresult cuStreamSynchronize(CUstream stream)
{
	(void)stream;
	pthread_mutex_lock(&lock);
	blocked_now++;
	while (blocking)
		pthread_cond_wait(&unblocked, &lock);
	blocked_now--;
	pthread_mutex_unlock(&lock);
	return CUDA_SUCCESS;
}

/* Exported so look-ups have something to find in both stream modes. */
EXPORT CUresult cuMemcpyAsync(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s)
{
	(void)dst, (void)src, (void)n, (void)s;
	return CUDA_SUCCESS;
}

EXPORT CUresult cuMemcpyAsync_ptsz(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s);
EXPORT CUresult cuMemcpyAsync_ptsz(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s)
{
	(void)dst, (void)src, (void)n, (void)s;
	return CUDA_SUCCESS;
}

EXPORT CUresult cuStreamGetCaptureInfo_v3(CUstream s, CUstreamCaptureStatus *st, cuuint64_t *id,
					  CUgraph *g, const CUgraphNode **deps,
					  const CUgraphEdgeData **edges, size_t *n)
{
	(void)s, (void)st, (void)id, (void)g, (void)deps, (void)edges, (void)n;
	return CUDA_SUCCESS;
}

/* Like a driver's: the table decides the ABI, the driver's own export (or
 * a legacy function) is the answer. */
static pthread_once_t self_once = PTHREAD_ONCE_INIT;
static void *self_handle;

static void self_open(void)
{
	Dl_info info;

	if (dladdr((void *)&allocs, &info) && info.dli_fname)
		self_handle = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD);
}

static void *own_symbol(const char *name)
{
	pthread_once(&self_once, self_open);
	return self_handle ? dlsym(self_handle, name) : NULL;
}

static CUresult get_proc(const char *symbol, void **pfn, int version, cuuint64_t flags,
			 CUdriverProcAddressQueryResult *status)
{
	const struct gs_proc_entry *e;
	CUdriverProcAddressQueryResult st;
	void *p = NULL;

	if (!symbol || !pfn)
		return CUDA_ERROR_INVALID_VALUE;
	*pfn = NULL;
	if (version > driver_version())
		version = driver_version();
	if (strcmp(symbol, "cuFakeDriverOnly") == 0) {
		p = own_symbol("cuFakeDriverOnly");
		st = CU_GET_PROC_ADDRESS_SUCCESS;
	} else {
		e = gs_proc_lookup(symbol, version, flags, &st);
		if (e && e->symbol)
			p = own_symbol(e->symbol);
		else if (e)
			p = own_symbol("fake_legacy_entry");
		if (e && !p)
			st = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
		if (p && e && e->symbol && getenv("FAKECUDA_INTERNAL_POINTERS"))
			p = own_symbol("fake_internal_entry");
	}
	if (status)
		*status = st;
	*pfn = p;
	return p ? CUDA_SUCCESS : CUDA_ERROR_NOT_FOUND;
}

EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int version,
				    cuuint64_t flags, CUdriverProcAddressQueryResult *status)
{
	return get_proc(symbol, pfn, version, flags, status);
}

#undef cuGetProcAddress
EXPORT CUresult cuGetProcAddress(const char *symbol, void **pfn, int version, cuuint64_t flags);
EXPORT CUresult cuGetProcAddress(const char *symbol, void **pfn, int version, cuuint64_t flags)
{
	return get_proc(symbol, pfn, version, flags, NULL);
}

/* The cudart interface table's UUID, and a table standing in for it. */
static const unsigned char cudart_interface_uuid[16] = {
	0x6B, 0xD5, 0xFB, 0x6C, 0x5B, 0xF4, 0xE7, 0x4A,
	0x89, 0x87, 0xD9, 0x39, 0x12, 0xFD, 0x9D, 0xF9,
};
EXPORT const uintptr_t fakecuda_export_table[4] = { sizeof(fakecuda_export_table), 1, 2, 3 };

EXPORT CUresult cuGetExportTable(const void **table, const CUuuid *id)
{
	if (!table || !id)
		return CUDA_ERROR_INVALID_VALUE;
	if (memcmp(id->bytes, cudart_interface_uuid, 16) != 0)
		return CUDA_ERROR_NOT_SUPPORTED;
	*table = fakecuda_export_table;
	return CUDA_SUCCESS;
}
