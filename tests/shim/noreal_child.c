/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Run by shim_harness.py under the shim with no usable real driver: every
 * entry point, cuInit and the look-ups included, must fail with
 * CUDA_ERROR_NO_DEVICE, and nothing may crash. Exit 0 when they all do.
 */
#include <cuda.h>
#include <dlfcn.h>
#include <string.h>

#include "shimtest.h"

#define LOAD(fp, addr)                                   \
	do {                                             \
		void *addr_ = (addr);                    \
		memcpy(&(fp), &addr_, sizeof(addr_));    \
	} while (0)

int main(void)
{
	void *h = dlopen("libcuda.so.1", RTLD_NOW);
	CUresult (*init)(unsigned);
	CUresult (*count)(int *);
	CUresult (*version)(int *);
	CUresult (*error_string)(CUresult, const char **);
	CUresult (*get_proc)(const char *, void **, int, cuuint64_t,
			     CUdriverProcAddressQueryResult *);
	CUresult (*get_proc_legacy)(const char *, void **, int, cuuint64_t);
	CUresult (*export_table)(const void **, const CUuuid *);
	CUresult (*mem_alloc)(CUdeviceptr *, size_t);
	CUuuid id = { { 0 } };
	const void *table = NULL;
	const char *s = NULL;
	void *p = (void *)&id;
	CUdeviceptr dp;
	int n = -1;

	REQUIRE(h && dlsym(h, "gs_introspect_version"), "not running under the shim");
	LOAD(init, dlsym(h, "cuInit"));
	LOAD(count, dlsym(h, "cuDeviceGetCount"));
	LOAD(version, dlsym(h, "cuDriverGetVersion"));
	LOAD(error_string, dlsym(h, "cuGetErrorString"));
	LOAD(get_proc, dlsym(h, "cuGetProcAddress_v2"));
	LOAD(get_proc_legacy, dlsym(h, "cuGetProcAddress"));
	LOAD(export_table, dlsym(h, "cuGetExportTable"));
	LOAD(mem_alloc, dlsym(h, "cuMemAlloc_v2"));
	REQUIRE(init && count && version && error_string && get_proc && get_proc_legacy &&
		export_table && mem_alloc, "missing exports");

	CHECK(init(0) == CUDA_ERROR_NO_DEVICE, "cuInit");
	CHECK(init(0) == CUDA_ERROR_NO_DEVICE, "cuInit, again");
	CHECK(count(&n) == CUDA_ERROR_NO_DEVICE, "cuDeviceGetCount");
	CHECK(version(&n) == CUDA_ERROR_NO_DEVICE, "cuDriverGetVersion");
	CHECK(error_string(CUDA_SUCCESS, &s) == CUDA_ERROR_NO_DEVICE, "cuGetErrorString");
	CHECK(mem_alloc(&dp, 16) == CUDA_ERROR_NO_DEVICE, "cuMemAlloc");
	CHECK(get_proc("cuInit", &p, 13000, 0, NULL) == CUDA_ERROR_NO_DEVICE && p == NULL,
	      "cuGetProcAddress_v2");
	p = (void *)&id;
	CHECK(get_proc_legacy("cuInit", &p, 13000, 0) == CUDA_ERROR_NO_DEVICE && p == NULL,
	      "legacy cuGetProcAddress");
	CHECK(export_table(&table, &id) == CUDA_ERROR_NO_DEVICE, "cuGetExportTable");
	return shimtest_result("no real driver");
}
