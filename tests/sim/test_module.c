/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Modules and libraries: which code the driver picks from an image for a
 * device (fatbin arch selection, PTX JIT, bare cubins), compressed fatbins,
 * loading by file, functions and their attributes, parameter layouts,
 * __device__ globals, cuLibrary* / cuKernel*.
 *
 * The images come from tests/kernels (GS_KERNELS_DIR): gs_kernels.fatbin
 * holds cubins for GS_ARCH_LOW and GS_ARCH_HIGH plus GS_ARCH_HIGH PTX; the
 * PTX text and gs_kernels_ptx.fatbin hold GS_ARCH_LOW PTX only;
 * $GS_KERNELS_CUBIN is a cubin for GS_ARCH_HIGH only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gs_kernels.h"
#include "sim_test.h"

TestSuite(module, .timeout = SIM_TEST_TIMEOUT);

#define KERNEL_COUNT 16
static const char *const kernel_names[KERNEL_COUNT] = {
	"axpy",        "sgd_update",   "linear_residual", "linear_grad",
	"loss_reduce", "list_walk",    "step_tick",       "global_read",
	"global_write", "params_mixed", "params_pad",     "report_launch",
	"fill_u32",    "seq_append",   "noop",            "unemulated",
};

/* "sm_80" -> 80 */
static int sm_of(const char *arch)
{
	return atoi(arch + 3);
}

/* One device of the given arch, current. */
static void init_arch(const char *arch)
{
	st_setenv("SIMCUDA_DEVICES", "1");
	st_setenv("SIMCUDA_ARCH", arch);
	st_init(0);
}

static CUresult load(const char *file, CUmodule *mod)
{
	void *image = st_read_kernel(file, NULL);
	CUresult rc = cuModuleLoadData(mod, image);

	free(image);
	return rc;
}

static int func_attr(CUfunction f, CUfunction_attribute a)
{
	int v = -12345;

	CU_OK(cuFuncGetAttribute(&v, a, f));
	return v;
}

/* The loaded code really runs: axpy on 1000 floats. */
static void check_axpy_runs(CUmodule mod)
{
	enum { N = 1000 };
	float x[N], y[N];
	CUdeviceptr dx, dy;
	float a = 2.0f;
	int n = N;

	for (int i = 0; i < N; i++) {
		x[i] = (float)i;
		y[i] = 1.0f;
	}
	CU_OK(cuMemAlloc(&dx, sizeof(x)));
	CU_OK(cuMemAlloc(&dy, sizeof(y)));
	CU_OK(cuMemcpyHtoD(dx, x, sizeof(x)));
	CU_OK(cuMemcpyHtoD(dy, y, sizeof(y)));
	st_launch(st_function(mod, "axpy"), 4, 128, 0, NULL, (void *[]){ &a, &dx, &dy, &n });
	CU_OK(cuMemcpyDtoH(y, dy, sizeof(y)));
	for (int i = 0; i < N; i++)
		cr_assert_eq(y[i], 1.0f + 2.0f * (float)i, "y[%d] = %f", i, (double)y[i]);
	CU_OK(cuMemFree(dx));
	CU_OK(cuMemFree(dy));
}

/* ---- code selection ------------------------------------------------------- */

static void check_fatbin_picks_cubin(const char *arch)
{
	CUmodule mod;
	CUfunction f;

	init_arch(arch);
	CU_OK(load("gs_kernels.fatbin", &mod));
	f = st_function(mod, "axpy");
	cr_assert_eq(func_attr(f, CU_FUNC_ATTRIBUTE_BINARY_VERSION), sm_of(arch),
		     "%s: not the matching cubin", arch);
	cr_assert_eq(func_attr(f, CU_FUNC_ATTRIBUTE_PTX_VERSION), sm_of(arch));
	check_axpy_runs(mod);
	CU_OK(cuModuleUnload(mod));
}

Test(module, fatbin_low_arch_picks_its_cubin)
{
	check_fatbin_picks_cubin(st_arch_env("GS_ARCH_LOW"));
}

Test(module, fatbin_high_arch_picks_its_cubin)
{
	check_fatbin_picks_cubin(st_arch_env("GS_ARCH_HIGH"));
}

/* A newer minor of the same major runs the older cubin (sm_86 runs sm_80). */
Test(module, fatbin_same_major_newer_minor)
{
	char arch[16];
	int low = sm_of(st_arch_env("GS_ARCH_LOW"));
	CUmodule mod;

	/* sm_80 -> sm_86; any newer minor of the same major will do. */
	cr_assert_lt(low % 10, 9);
	snprintf(arch, sizeof(arch), "sm_%d", low % 10 <= 3 ? low + 6 : low + 1);
	init_arch(arch);
	CU_OK(load("gs_kernels.fatbin", &mod));
	cr_assert_eq(func_attr(st_function(mod, "axpy"), CU_FUNC_ATTRIBUTE_BINARY_VERSION), low);
	check_axpy_runs(mod);
}

/* A newer major than any cubin: the embedded PTX is JIT-compiled. */
Test(module, fatbin_newer_major_jits_ptx)
{
	int high = sm_of(st_arch_env("GS_ARCH_HIGH"));
	char arch[16];
	CUmodule mod;
	CUfunction f;

	snprintf(arch, sizeof(arch), "sm_%d", (high / 10 + 1) * 10);
	init_arch(arch);
	CU_OK(load("gs_kernels.fatbin", &mod));
	f = st_function(mod, "axpy");
	cr_assert_eq(func_attr(f, CU_FUNC_ATTRIBUTE_BINARY_VERSION), (high / 10 + 1) * 10);
	cr_assert_eq(func_attr(f, CU_FUNC_ATTRIBUTE_PTX_VERSION), high);
	check_axpy_runs(mod);
}

Test(module, ptx_text_jits_on_newer_arch)
{
	const char *high = st_arch_env("GS_ARCH_HIGH");
	CUmodule mod;
	CUfunction f;

	init_arch(high);
	CU_OK(load("gs_kernels.ptx", &mod));
	f = st_function(mod, "axpy");
	cr_assert_eq(func_attr(f, CU_FUNC_ATTRIBUTE_BINARY_VERSION), sm_of(high));
	cr_assert_eq(func_attr(f, CU_FUNC_ATTRIBUTE_PTX_VERSION),
		     sm_of(st_arch_env("GS_ARCH_LOW")));
	check_axpy_runs(mod);
}

Test(module, ptx_text_on_its_own_arch)
{
	const char *low = st_arch_env("GS_ARCH_LOW");
	CUmodule mod;

	init_arch(low);
	CU_OK(load("gs_kernels.ptx", &mod));
	check_axpy_runs(mod);
}

Test(module, ptx_only_fatbin)
{
	CUmodule mod;

	init_arch(st_arch_env("GS_ARCH_HIGH"));
	CU_OK(load("gs_kernels_ptx.fatbin", &mod));
	check_axpy_runs(mod);
}

/* PTX cannot run on an architecture older than its target. */
Test(module, ptx_only_fatbin_on_older_arch)
{
	char arch[16];
	CUmodule mod;

	snprintf(arch, sizeof(arch), "sm_%d", sm_of(st_arch_env("GS_ARCH_LOW")) - 5);
	init_arch(arch);
	CU_ERR(load("gs_kernels_ptx.fatbin", &mod), CUDA_ERROR_NO_BINARY_FOR_GPU);
}

Test(module, cubin_on_other_arch_has_no_binary)
{
	CUmodule mod;

	init_arch(st_arch_env("GS_ARCH_LOW"));
	CU_ERR(load(st_arch_env("GS_KERNELS_CUBIN"), &mod), CUDA_ERROR_NO_BINARY_FOR_GPU);
}

Test(module, cubin_on_newer_major_has_no_binary)
{
	int high = sm_of(st_arch_env("GS_ARCH_HIGH"));
	char arch[16];
	CUmodule mod;

	snprintf(arch, sizeof(arch), "sm_%d", (high / 10 + 1) * 10);
	init_arch(arch);
	CU_ERR(load(st_arch_env("GS_KERNELS_CUBIN"), &mod), CUDA_ERROR_NO_BINARY_FOR_GPU);
}

Test(module, cubin_on_its_arch)
{
	CUmodule mod;

	init_arch(st_arch_env("GS_ARCH_HIGH"));
	CU_OK(load(st_arch_env("GS_KERNELS_CUBIN"), &mod));
	check_axpy_runs(mod);
}

/* Each device of a mixed machine gets its own cubin from one image. */
Test(module, same_image_two_archs)
{
	char archs[64];
	CUcontext c1;
	CUmodule m0, m1;

	snprintf(archs, sizeof(archs), "%s,%s", st_arch_env("GS_ARCH_LOW"),
		 st_arch_env("GS_ARCH_HIGH"));
	st_setenv("SIMCUDA_DEVICES", "2");
	st_setenv("SIMCUDA_ARCH", archs);
	st_init(0);
	CU_OK(load("gs_kernels.fatbin", &m0));
	CU_OK(cuDevicePrimaryCtxRetain(&c1, st_device(1)));
	CU_OK(cuCtxSetCurrent(c1));
	CU_OK(load("gs_kernels.fatbin", &m1));
	cr_assert_eq(func_attr(st_function(m1, "axpy"), CU_FUNC_ATTRIBUTE_BINARY_VERSION),
		     sm_of(st_arch_env("GS_ARCH_HIGH")));
	check_axpy_runs(m1);
}

Test(module, compressed_fatbin_zstd)
{
	CUmodule mod;

	st_init(0);
	CU_OK(load("gs_kernels_zstd.fatbin", &mod));
	check_axpy_runs(mod);
	int p[GS_PARAMS_MIXED_COUNT] = GS_PARAMS_MIXED_OFFSETS;
	size_t off, size;
	CU_OK(cuFuncGetParamInfo(st_function(mod, "params_mixed"), 4, &off, &size));
	cr_assert_eq(off, (size_t)p[4]);
}

Test(module, compressed_fatbin_lz4)
{
	CUmodule mod;

	st_init(0);
	CU_OK(load("gs_kernels_lz4.fatbin", &mod));
	check_axpy_runs(mod);
}

/* ---- loading forms ---------------------------------------------------------- */

Test(module, load_from_file)
{
	char *path;
	CUmodule mod;

	st_init(0);
	path = st_kernel_path("gs_kernels.fatbin");
	CU_OK(cuModuleLoad(&mod, path));
	check_axpy_runs(mod);
	free(path);
	path = st_kernel_path("gs_kernels.ptx");
	CU_OK(cuModuleLoad(&mod, path));
	check_axpy_runs(mod);
	free(path);
	path = st_kernel_path("no-such-file.fatbin");
	CU_ERR(cuModuleLoad(&mod, path), CUDA_ERROR_FILE_NOT_FOUND);
	free(path);
}

Test(module, load_data_ex_and_fat_binary)
{
	void *image = NULL;
	CUmodule mod;
	char log[256] = "";
	CUjit_option opts[] = { CU_JIT_INFO_LOG_BUFFER, CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES };
	void *vals[] = { log, (void *)(size_t)sizeof(log) };

	st_init(0);
	image = st_read_kernel("gs_kernels.fatbin", NULL);
	CU_OK(cuModuleLoadFatBinary(&mod, image));
	check_axpy_runs(mod);
	CU_OK(cuModuleLoadDataEx(&mod, image, 2, opts, vals));
	check_axpy_runs(mod);
	free(image);
	image = st_read_kernel("gs_kernels.ptx", NULL);
	CU_OK(cuModuleLoadDataEx(&mod, image, 2, opts, vals));
	check_axpy_runs(mod);
	free(image);
}

/* The driver keeps its own copy of the image. */
Test(module, image_copied_at_load)
{
	size_t size;
	unsigned char *image;
	CUmodule mod;

	st_init(0);
	image = st_read_kernel("gs_kernels.fatbin", &size);
	CU_OK(cuModuleLoadData(&mod, image));
	memset(image, 0, size);
	free(image);
	check_axpy_runs(mod);
}

Test(module, garbage_image_refused)
{
	static const char text[] = "this is not a module";
	unsigned char junk[256];
	CUmodule mod;

	st_init(0);
	CU_FAILS(cuModuleLoadData(&mod, text));
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (unsigned char)(i * 37 + 11);
	junk[sizeof(junk) - 1] = 0;
	CU_FAILS(cuModuleLoadData(&mod, junk));
}

/* ---- functions ------------------------------------------------------------------ */

Test(module, functions)
{
	CUmodule mod, owner = NULL;
	CUfunction f, fns[KERNEL_COUNT + 4];
	unsigned count = 0;
	const char *name = NULL;

	st_init(0);
	CU_OK(load("gs_kernels.fatbin", &mod));
	CU_ERR(cuModuleGetFunction(&f, mod, "no_such_kernel"), CUDA_ERROR_NOT_FOUND);
	/* Kernels are found by their (extern "C") symbol name only. */
	CU_ERR(cuModuleGetFunction(&f, mod, "gs_step"), CUDA_ERROR_NOT_FOUND);

	f = st_function(mod, "params_pad");
	CU_OK(cuFuncGetName(&name, f));
	cr_assert_str_eq(name, "params_pad");
	CU_OK(cuFuncGetModule(&owner, f));
	cr_assert_eq(owner, mod);
	CUfunction again;
	CU_OK(cuModuleGetFunction(&again, mod, "params_pad"));
	cr_assert_eq(again, f, "the same kernel gave two handles");

	CU_OK(cuModuleGetFunctionCount(&count, mod));
	cr_assert_eq(count, KERNEL_COUNT);
	CU_OK(cuModuleEnumerateFunctions(fns, count, mod));
	for (int k = 0; k < KERNEL_COUNT; k++) {
		bool found = false;
		for (unsigned i = 0; i < count && !found; i++) {
			CU_OK(cuFuncGetName(&name, fns[i]));
			found = !strcmp(name, kernel_names[k]);
		}
		cr_assert(found, "kernel %s not enumerated", kernel_names[k]);
	}
}

Test(module, function_attributes)
{
	CUmodule mod;
	CUfunction f;
	int optin = 0;

	st_init(0);
	CU_OK(load("gs_kernels.fatbin", &mod));
	f = st_function(mod, "loss_reduce");
	cr_assert_gt(func_attr(f, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK), 0);
	cr_assert_leq(func_attr(f, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK), 1024);
	cr_assert_geq(func_attr(f, CU_FUNC_ATTRIBUTE_NUM_REGS), 0);
	cr_assert_eq(func_attr(f, CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES), 0,
		     "loss_reduce has only dynamic shared memory");
	cr_assert_eq(func_attr(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES), 48 * 1024);

	CU_OK(cuDeviceGetAttribute(&optin, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
				   st_device(0)));
	CU_OK(cuFuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, optin));
	cr_assert_eq(func_attr(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES), optin);
	CU_ERR(cuFuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, optin + 1),
	       CUDA_ERROR_INVALID_VALUE);
	/* Attributes are per function. */
	cr_assert_eq(func_attr(st_function(mod, "axpy"),
			       CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES),
		     48 * 1024);

	CU_OK(cuFuncSetCacheConfig(f, CU_FUNC_CACHE_PREFER_L1));
	CU_OK(cuFuncSetAttribute(f, CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT, 50));
	cr_assert_eq(func_attr(f, CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT), 50);
	CU_FAILS(cuFuncGetAttribute(&optin, CU_FUNC_ATTRIBUTE_MAX, f));
}

static void check_param_info(CUmodule mod)
{
	static const int mixed_off[] = GS_PARAMS_MIXED_OFFSETS, mixed_size[] = GS_PARAMS_MIXED_SIZES;
	static const int pad_off[] = GS_PARAMS_PAD_OFFSETS, pad_size[] = GS_PARAMS_PAD_SIZES;
	CUfunction mixed = st_function(mod, "params_mixed");
	CUfunction pad = st_function(mod, "params_pad");
	size_t off, size;

	for (int i = 0; i < GS_PARAMS_MIXED_COUNT; i++) {
		CU_OK(cuFuncGetParamInfo(mixed, (size_t)i, &off, &size));
		cr_assert_eq(off, (size_t)mixed_off[i], "params_mixed #%d offset %zu", i, off);
		cr_assert_eq(size, (size_t)mixed_size[i], "params_mixed #%d size %zu", i, size);
	}
	CU_ERR(cuFuncGetParamInfo(mixed, GS_PARAMS_MIXED_COUNT, &off, &size),
	       CUDA_ERROR_INVALID_VALUE);
	for (int i = 0; i < GS_PARAMS_PAD_COUNT; i++) {
		CU_OK(cuFuncGetParamInfo(pad, (size_t)i, &off, &size));
		cr_assert_eq(off, (size_t)pad_off[i], "params_pad #%d offset %zu", i, off);
		cr_assert_eq(size, (size_t)pad_size[i], "params_pad #%d size %zu", i, size);
	}
	CU_ERR(cuFuncGetParamInfo(st_function(mod, "noop"), 0, &off, &size),
	       CUDA_ERROR_INVALID_VALUE);
	/* axpy(float, pointer, pointer, int): the int follows two pointers. */
	CU_OK(cuFuncGetParamInfo(st_function(mod, "axpy"), 3, &off, &size));
	cr_assert_eq(off, 24);
	cr_assert_eq(size, 4);
}

Test(module, param_info_cubin)
{
	CUmodule mod;

	init_arch(st_arch_env("GS_ARCH_LOW"));
	CU_OK(load("gs_kernels.fatbin", &mod));
	check_param_info(mod);
}

Test(module, param_info_ptx)
{
	CUmodule mod;

	init_arch(st_arch_env("GS_ARCH_HIGH"));
	CU_OK(load("gs_kernels.ptx", &mod));
	check_param_info(mod);
}

/* ---- __device__ globals ------------------------------------------------------ */

static void check_globals(CUmodule mod)
{
	CUdeviceptr p;
	size_t size = 0;
	unsigned long long step = 99;
	int magic = 0;
	float table[GS_TABLE_LEN];

	CU_OK(cuModuleGetGlobal(&p, &size, mod, "gs_step"));
	cr_assert_eq(size, sizeof(step));
	CU_OK(cuMemcpyDtoH(&step, p, sizeof(step)));
	cr_assert_eq(step, 0, "gs_step not zero-initialised");

	CU_OK(cuModuleGetGlobal(&p, &size, mod, "gs_magic"));
	cr_assert_eq(size, sizeof(int));
	CU_OK(cuMemcpyDtoH(&magic, p, sizeof(magic)));
	cr_assert_eq(magic, GS_MAGIC_INIT, "gs_magic is %#x", magic);

	CU_OK(cuModuleGetGlobal(&p, &size, mod, "gs_table"));
	cr_assert_eq(size, sizeof(table));
	memset(table, 0xff, sizeof(table));
	CU_OK(cuMemcpyDtoH(table, p, sizeof(table)));
	for (int i = 0; i < GS_TABLE_LEN; i++)
		cr_assert_eq(table[i], 0.0f);

	/* Either output may be NULL. */
	CU_OK(cuModuleGetGlobal(&p, NULL, mod, "gs_table"));
	CU_OK(cuModuleGetGlobal(NULL, &size, mod, "gs_table"));
	CU_ERR(cuModuleGetGlobal(&p, &size, mod, "no_such_global"), CUDA_ERROR_NOT_FOUND);
	CU_ERR(cuModuleGetGlobal(&p, &size, mod, "axpy"), CUDA_ERROR_NOT_FOUND);
}

Test(module, globals_cubin)
{
	CUmodule mod;

	st_init(0);
	CU_OK(load("gs_kernels.fatbin", &mod));
	check_globals(mod);
}

Test(module, globals_ptx)
{
	CUmodule mod;

	init_arch(st_arch_env("GS_ARCH_HIGH"));
	CU_OK(load("gs_kernels.ptx", &mod));
	check_globals(mod);
}

Test(module, globals_are_device_memory)
{
	CUmodule mod;
	CUdeviceptr p, base;
	size_t size, range;
	unsigned type = 0;
	int magic = 0x1badcafe;

	st_init(0);
	CU_OK(load("gs_kernels.fatbin", &mod));
	CU_OK(cuModuleGetGlobal(&p, &size, mod, "gs_magic"));
	CU_OK(cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, p));
	cr_assert_eq(type, CU_MEMORYTYPE_DEVICE);
	CU_OK(cuMemGetAddressRange(&base, &range, p));
	cr_assert_leq(base, p);
	cr_assert_geq(base + range, p + size);
	CU_OK(cuMemcpyHtoD(p, &magic, sizeof(magic)));
	magic = 0;
	CU_OK(cuMemcpyDtoH(&magic, p, sizeof(magic)));
	cr_assert_eq(magic, 0x1badcafe);
}

/* Each loaded module has its own storage for its globals. */
Test(module, globals_per_module)
{
	CUmodule a, b;
	CUdeviceptr pa, pb;
	int magic = 7;

	st_init(0);
	CU_OK(load("gs_kernels.fatbin", &a));
	CU_OK(load("gs_kernels.fatbin", &b));
	CU_OK(cuModuleGetGlobal(&pa, NULL, a, "gs_magic"));
	CU_OK(cuModuleGetGlobal(&pb, NULL, b, "gs_magic"));
	cr_assert_neq(pa, pb);
	CU_OK(cuMemcpyHtoD(pa, &magic, sizeof(magic)));
	CU_OK(cuMemcpyDtoH(&magic, pb, sizeof(magic)));
	cr_assert_eq(magic, GS_MAGIC_INIT, "a write to one module's global showed in another");
}

/* Unloading frees the globals' memory. */
Test(module, unload_frees_globals)
{
	CUmodule mod;
	size_t free0;

	st_init(0);
	free0 = st_mem_free();
	for (int i = 0; i < 20; i++) {
		CU_OK(load("gs_kernels.fatbin", &mod));
		CU_OK(cuModuleUnload(mod));
	}
	cr_assert_eq(st_mem_free(), free0);
}

/* ---- libraries ------------------------------------------------------------------ */

Test(module, library_kernels)
{
	CUlibrary lib, owner = NULL;
	CUkernel k, ks[KERNEL_COUNT];
	CUfunction f;
	CUmodule mod;
	unsigned count = 0;
	const char *name = NULL;
	void *image;
	int v = 0;

	/* Libraries are context-independent: loading needs no context. */
	CU_OK(cuInit(0));
	image = st_read_kernel("gs_kernels.fatbin", NULL);
	CU_OK(cuLibraryLoadData(&lib, image, NULL, NULL, 0, NULL, NULL, 0));
	free(image);
	CU_OK(cuLibraryGetKernel(&k, lib, "axpy"));
	CU_ERR(cuLibraryGetKernel(&k, lib, "no_such_kernel"), CUDA_ERROR_NOT_FOUND);
	CU_OK(cuLibraryGetKernel(&k, lib, "axpy"));
	CU_OK(cuKernelGetName(&name, k));
	cr_assert_str_eq(name, "axpy");
	CU_OK(cuKernelGetLibrary(&owner, k));
	cr_assert_eq(owner, lib);
	CU_OK(cuLibraryGetKernelCount(&count, lib));
	cr_assert_eq(count, KERNEL_COUNT);
	CU_OK(cuLibraryEnumerateKernels(ks, count, lib));

	st_init(0);
	CU_OK(cuKernelGetAttribute(&v, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, k, st_device(0)));
	cr_assert_gt(v, 0);
	CU_OK(cuKernelGetFunction(&f, k));
	CU_OK(cuFuncGetName(&name, f));
	cr_assert_str_eq(name, "axpy");
	CU_OK(cuLibraryGetModule(&mod, lib));
	check_axpy_runs(mod);
	CU_OK(cuLibraryUnload(lib));
}

Test(module, library_from_file_and_globals)
{
	CUlibrary lib;
	CUdeviceptr p;
	size_t size = 0;
	int magic = 0;
	char *path;

	st_init(0);
	path = st_kernel_path("gs_kernels.fatbin");
	CU_OK(cuLibraryLoadFromFile(&lib, path, NULL, NULL, 0, NULL, NULL, 0));
	free(path);
	CU_OK(cuLibraryGetGlobal(&p, &size, lib, "gs_magic"));
	cr_assert_eq(size, sizeof(int));
	CU_OK(cuMemcpyDtoH(&magic, p, sizeof(magic)));
	cr_assert_eq(magic, GS_MAGIC_INIT);
	CU_ERR(cuLibraryGetGlobal(&p, &size, lib, "nothing"), CUDA_ERROR_NOT_FOUND);
	CU_OK(cuLibraryUnload(lib));
}

/* One library, two contexts: each gets its own function and globals. */
Test(module, library_per_context)
{
	CUlibrary lib;
	CUkernel k;
	CUfunction f0, f1;
	CUdeviceptr g0, g1;
	CUcontext c0, c1;
	void *image;

	st_setenv("SIMCUDA_DEVICES", "2");
	c0 = st_init(0);
	image = st_read_kernel("gs_kernels.fatbin", NULL);
	CU_OK(cuLibraryLoadData(&lib, image, NULL, NULL, 0, NULL, NULL, 0));
	free(image);
	CU_OK(cuLibraryGetKernel(&k, lib, "axpy"));
	CU_OK(cuKernelGetFunction(&f0, k));
	CU_OK(cuLibraryGetGlobal(&g0, NULL, lib, "gs_magic"));
	CU_OK(cuDevicePrimaryCtxRetain(&c1, st_device(1)));
	CU_OK(cuCtxSetCurrent(c1));
	CU_OK(cuKernelGetFunction(&f1, k));
	CU_OK(cuLibraryGetGlobal(&g1, NULL, lib, "gs_magic"));
	cr_assert_neq(f0, f1);
	cr_assert_neq(g0, g1);
	int ordinal = -1;
	CU_OK(cuPointerGetAttribute(&ordinal, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, g1));
	cr_assert_eq(ordinal, 1);
	CU_OK(cuCtxSetCurrent(c0));
}
