/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cuGetProcAddress (both ABIs): the variant picked for a CUDA version and
 * for the per-thread default stream flag, unknown names, versions too old,
 * and cuGetExportTable. Every answer is checked against dlsym of the exact
 * symbol the real driver would return.
 */
#include <cudaTypedefs.h>
#include <dlfcn.h>
#include <string.h>

#include "sim_test.h"

TestSuite(procaddr, .timeout = SIM_TEST_TIMEOUT);

/* The 4-argument CUDA 11.3 ABI, which cuda.h maps away. */
typedef CUresult (*get_proc_v1_fn)(const char *, void **, int, cuuint64_t);

static void *exported(const char *symbol)
{
	void *p = dlsym(RTLD_DEFAULT, symbol);

	cr_assert_not_null(p, "the driver does not export %s", symbol);
	return p;
}

/* cuGetProcAddress(name, version, flags) gives exactly `symbol`. */
static void expect(const char *name, int version, cuuint64_t flags, const char *symbol)
{
	void *pfn = NULL;
	CUdriverProcAddressQueryResult st = (CUdriverProcAddressQueryResult)-1;
	CUresult rc = cuGetProcAddress(name, &pfn, version, flags, &st);

	cr_assert_eq(rc, CUDA_SUCCESS, "%s @%d flags %llu: %s", name, version,
		     (unsigned long long)flags, st_err(rc));
	cr_assert_eq(st, CU_GET_PROC_ADDRESS_SUCCESS, "%s @%d: status %d", name, version, (int)st);
	cr_assert_eq(pfn, exported(symbol), "%s @%d flags %llu: not %s", name, version,
		     (unsigned long long)flags, symbol);
}

Test(procaddr, works_before_init)
{
	PFN_cuDriverGetVersion_v2020 get_version = NULL;
	int v = 0;

	/* cudart looks entry points up before it calls cuInit. */
	CU_OK(cuGetProcAddress("cuDriverGetVersion", (void **)&get_version, 13000, 0, NULL));
	cr_assert_not_null(get_version);
	CU_OK(get_version(&v));
	cr_assert_geq(v, 13000);
}

Test(procaddr, current_versions)
{
	CU_OK(cuInit(0));
	expect("cuInit", 13000, CU_GET_PROC_ADDRESS_DEFAULT, "cuInit");
	expect("cuMemAlloc", 13000, CU_GET_PROC_ADDRESS_DEFAULT, "cuMemAlloc_v2");
	expect("cuMemAlloc", 3020, CU_GET_PROC_ADDRESS_DEFAULT, "cuMemAlloc_v2");
	expect("cuCtxCreate", 13000, CU_GET_PROC_ADDRESS_DEFAULT, "cuCtxCreate_v4");
	expect("cuCtxDestroy", 13000, CU_GET_PROC_ADDRESS_DEFAULT, "cuCtxDestroy_v2");
	expect("cuStreamDestroy", 13000, CU_GET_PROC_ADDRESS_DEFAULT, "cuStreamDestroy_v2");
	expect("cuModuleGetGlobal", 13000, CU_GET_PROC_ADDRESS_DEFAULT, "cuModuleGetGlobal_v2");
	expect("cuDevicePrimaryCtxRelease", 13000, CU_GET_PROC_ADDRESS_DEFAULT,
	       "cuDevicePrimaryCtxRelease_v2");
	expect("cuMemHostRegister", 13000, CU_GET_PROC_ADDRESS_DEFAULT, "cuMemHostRegister_v2");
	expect("cuLibraryLoadData", 13000, CU_GET_PROC_ADDRESS_DEFAULT, "cuLibraryLoadData");
}

/* Older CUDA versions get the older ABI of the same function: what a
 * program built with an older toolkit (and its cudart) asks for. cuda.h
 * still declares these symbols (for the driver's own build) and the real
 * driver still exports them. */
Test(procaddr, older_ctx_create)
{
	CU_OK(cuInit(0));
	expect("cuCtxCreate", 12000, CU_GET_PROC_ADDRESS_DEFAULT, "cuCtxCreate_v3");
	expect("cuCtxCreate", 11000, CU_GET_PROC_ADDRESS_DEFAULT, "cuCtxCreate_v2");
}

Test(procaddr, older_event_elapsed_time)
{
	CU_OK(cuInit(0));
	expect("cuEventElapsedTime", 12080, CU_GET_PROC_ADDRESS_DEFAULT, "cuEventElapsedTime_v2");
	expect("cuEventElapsedTime", 12000, CU_GET_PROC_ADDRESS_DEFAULT, "cuEventElapsedTime");
}

Test(procaddr, older_stream_get_ctx)
{
	CU_OK(cuInit(0));
	expect("cuStreamGetCtx", 12050, CU_GET_PROC_ADDRESS_DEFAULT, "cuStreamGetCtx_v2");
	expect("cuStreamGetCtx", 12000, CU_GET_PROC_ADDRESS_DEFAULT, "cuStreamGetCtx");
	expect("cuStreamGetCtx", 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM,
	       "cuStreamGetCtx_ptsz");
}

Test(procaddr, per_thread_variants)
{
	const cuuint64_t ptds = CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM;

	CU_OK(cuInit(0));
	expect("cuMemcpyAsync", 13000, ptds, "cuMemcpyAsync_ptsz");
	expect("cuMemcpyAsync", 13000, CU_GET_PROC_ADDRESS_LEGACY_STREAM, "cuMemcpyAsync");
	expect("cuMemcpyAsync", 13000, CU_GET_PROC_ADDRESS_DEFAULT, "cuMemcpyAsync");
	expect("cuMemcpy", 13000, ptds, "cuMemcpy_ptds");
	expect("cuMemcpyHtoD", 13000, ptds, "cuMemcpyHtoD_v2_ptds");
	expect("cuMemcpyHtoD", 13000, CU_GET_PROC_ADDRESS_DEFAULT, "cuMemcpyHtoD_v2");
	expect("cuLaunchKernel", 13000, ptds, "cuLaunchKernel_ptsz");
	expect("cuLaunchKernel", 13000, CU_GET_PROC_ADDRESS_DEFAULT, "cuLaunchKernel");
	expect("cuStreamSynchronize", 13000, ptds, "cuStreamSynchronize_ptsz");
	expect("cuEventRecord", 13000, ptds, "cuEventRecord_ptsz");
	/* No per-thread variant: the ordinary function. */
	expect("cuMemAlloc", 13000, ptds, "cuMemAlloc_v2");
	expect("cuStreamCreate", 13000, ptds, "cuStreamCreate");
}

Test(procaddr, itself)
{
	expect("cuGetProcAddress", 13000, CU_GET_PROC_ADDRESS_DEFAULT, "cuGetProcAddress_v2");
}

/* CUDA 11.3-11.8 programs ask for the 4-argument ABI. */
Test(procaddr, itself_old_abi)
{
	expect("cuGetProcAddress", 11030, CU_GET_PROC_ADDRESS_DEFAULT, "cuGetProcAddress");
}

Test(procaddr, old_abi_entry_point)
{
	void *sym = exported("cuGetProcAddress");
	get_proc_v1_fn v1;
	void *pfn = NULL;

	/* dlsym returns an object pointer; POSIX guarantees the round trip. */
	memcpy(&v1, &sym, sizeof(v1));

	CU_OK(v1("cuMemFree", &pfn, 13000, 0));
	cr_assert_eq(pfn, exported("cuMemFree_v2"));
}

Test(procaddr, unknown_names)
{
	void *pfn = (void *)0x1;
	CUdriverProcAddressQueryResult st = CU_GET_PROC_ADDRESS_SUCCESS;

	CU_ERR(cuGetProcAddress("cuNoSuchFunction", &pfn, 13000, 0, &st), CUDA_ERROR_NOT_FOUND);
	cr_assert_null(pfn);
	cr_assert_eq(st, CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND);
	/* cudart's first look-up is an empty name. */
	pfn = (void *)0x1;
	CU_ERR(cuGetProcAddress("", &pfn, 13000, 0, &st), CUDA_ERROR_NOT_FOUND);
	cr_assert_null(pfn);
	/* Names are base names: a versioned symbol name is not one. */
	CU_ERR(cuGetProcAddress("cuMemAlloc_v2", &pfn, 13000, 0, &st), CUDA_ERROR_NOT_FOUND);
	CU_ERR(cuGetProcAddress("cumemalloc", &pfn, 13000, 0, &st), CUDA_ERROR_NOT_FOUND);
}

Test(procaddr, version_not_sufficient)
{
	void *pfn = (void *)0x1;
	CUdriverProcAddressQueryResult st = CU_GET_PROC_ADDRESS_SUCCESS;

	/* cuLibraryLoadData appeared in CUDA 12.0. */
	CU_ERR(cuGetProcAddress("cuLibraryLoadData", &pfn, 11080, 0, &st), CUDA_ERROR_NOT_FOUND);
	cr_assert_null(pfn);
	cr_assert_eq(st, CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT);
}

Test(procaddr, bad_arguments)
{
	void *pfn;

	CU_ERR(cuGetProcAddress("cuInit", NULL, 13000, 0, NULL), CUDA_ERROR_INVALID_VALUE);
	CU_ERR(cuGetProcAddress(NULL, &pfn, 13000, 0, NULL), CUDA_ERROR_INVALID_VALUE);
	CU_ERR(cuGetProcAddress("cuInit", &pfn, 13000, 0x100, NULL), CUDA_ERROR_INVALID_VALUE);
}

Test(procaddr, version_newer_than_driver)
{
	void *pfn;
	int driver = 0;

	/* Documented: a version newer than the driver's is invalid. */
	CU_OK(cuDriverGetVersion(&driver));
	CU_ERR(cuGetProcAddress("cuInit", &pfn, driver + 1000, 0, NULL), CUDA_ERROR_INVALID_VALUE);
}

Test(procaddr, export_table_not_supported)
{
	/* The cudart interface table (DESIGN.md §3). */
	static const CUuuid id = { { 0x6b, (char)0xd5, (char)0xfb, 0x6c, 0x5b, (char)0xf4,
				     (char)0xe7, 0x4a, (char)0x89, (char)0x87, (char)0xd9, 0x39,
				     0x12, (char)0xfd, (char)0x9d, (char)0xf9 } };
	const void *table = (const void *)0x1;

	CU_ERR(cuGetExportTable(&table, &id), CUDA_ERROR_NOT_SUPPORTED);
	cr_assert_null(table);
}

/* A function got through cuGetProcAddress is the real thing. */
Test(procaddr, returned_function_works)
{
	PFN_cuMemAlloc_v3020 alloc = NULL;
	PFN_cuMemFree_v3020 free_fn = NULL;
	CUdeviceptr p = 0;

	st_init(0);
	CU_OK(cuGetProcAddress("cuMemAlloc", (void **)&alloc, 13000, 0, NULL));
	CU_OK(cuGetProcAddress("cuMemFree", (void **)&free_fn, 13000, 0, NULL));
	CU_OK(alloc(&p, 4096));
	cr_assert_neq(p, 0);
	CU_OK(free_fn(p));
}
