/* SPDX-License-Identifier: Apache-2.0 */
/* Modules, libraries, functions, kernels, globals, attributes, link states
 * and their cascades (image contents: test_images.c). */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "trk_test.h"

TestSuite(code, .init = trk_test_setup);

static const char ptx[] = ".version 8.0\n.target sm_80\n.address_size 64\n";

static CUcontext ctx_a(void)
{
	cr_assert_eq(gs_trk_ctx_created(H(CUcontext, 0x1000), 0, 0, NULL, NULL), 0);
	return H(CUcontext, 0x1000);
}

static CUmodule load(CUcontext ctx, uint64_t h)
{
	struct gs_module_desc d = { .ctx = ctx, .source = GS_MODSRC_DATA, .image = ptx };
	CUmodule app;

	cr_assert_eq(gs_trk_module_loaded(&d, H(CUmodule, h), &app), 0);
	cr_assert_eq(U(app), h);
	return app;
}

static CUlibrary load_library(uint64_t h)
{
	struct gs_library_desc d = { .source = GS_LIBSRC_DATA, .image = ptx };
	CUlibrary app;

	cr_assert_eq(gs_trk_library_loaded(&d, H(CUlibrary, h), &app), 0);
	return app;
}

Test(code, module_functions_globals_and_unload)
{
	CUcontext ctx = ctx_a();
	CUmodule m = load(ctx, 0x2000), other = load(ctx, 0x3000);
	struct gs_function_rec f;
	struct gs_global_rec g;
	CUfunction fa;

	cr_assert_eq(gs_trk_function_found(m, "axpy", H(CUfunction, 0x2100), &fa), 0);
	cr_assert_eq(gs_trk_function_found(m, "axpy", H(CUfunction, 0x2100), &fa), 1,
		     "the driver hands out the same handle again");
	cr_assert_eq(U(fa), 0x2100);
	cr_assert_eq(gs_trk_function_found(other, "noop", H(CUfunction, 0x3100), NULL), 0);
	cr_assert_eq(gs_trk_function_found(H(CUmodule, 0x9999), "x", H(CUfunction, 0x9100), NULL),
		     -ENOENT);
	cr_assert_eq(trk_get(GS_KIND_FUNCTION, 0x2100, &f, sizeof(f)), 0);
	cr_assert_eq(f.module, 0x2000);
	cr_assert_eq(f.ctx, 0x1000, "a function belongs to its module's context");
	cr_assert_str_eq(f.name, "axpy");
	cr_assert_null(f.layout, "no layouts parsed without an architecture");

	cr_assert_eq(gs_trk_global_found(GS_KIND_MODULE, U(m), NULL, "gs_step", 0x600000100000,
					 8), 0);
	cr_assert_eq(gs_trk_global_found(GS_KIND_MODULE, U(m), NULL, "gs_step", 0x600000100000,
					 8), 1);
	cr_assert_eq(gs_trk_global_found(GS_KIND_MODULE, U(other), NULL, "gs_step",
					 0x600000200000, 8), 0);
	cr_assert_eq(trk_get(GS_KIND_GLOBAL, 0x600000100000, &g, sizeof(g)), 0);
	cr_assert_eq(g.owner_kind, GS_KIND_MODULE);
	cr_assert_eq(g.owner, 0x2000);
	cr_assert_eq(g.ctx, 0x1000);
	cr_assert_eq(g.size, 8);
	cr_assert_str_eq(g.name, "gs_step");
	cr_assert_eq(gs_trk_bytes(GS_KIND_GLOBAL), 16);
	cr_assert_eq(gs_trk_global_found(GS_KIND_CTX, U(m), NULL, "x", 0x600000300000, 8),
		     -EINVAL);

	cr_assert_eq(gs_trk_module_unloaded(m), 0);
	cr_assert_not(trk_exists(GS_KIND_FUNCTION, 0x2100));
	cr_assert_not(trk_exists(GS_KIND_GLOBAL, 0x600000100000));
	cr_assert(trk_exists(GS_KIND_FUNCTION, 0x3100), "the other module's stay");
	cr_assert(trk_exists(GS_KIND_GLOBAL, 0x600000200000));
	cr_assert_eq(gs_trk_module_unloaded(m), -ENOENT);

	/* Destroying the context unloads the rest. */
	cr_assert_eq(gs_trk_ctx_destroyed(ctx), 0);
	cr_assert_eq(gs_trk_count(GS_KIND_MODULE), 0);
	cr_assert_eq(gs_trk_count(GS_KIND_FUNCTION), 0);
	cr_assert_eq(gs_trk_count(GS_KIND_GLOBAL), 0);
}

Test(code, function_attributes)
{
	CUmodule m = load(ctx_a(), 0x2000);
	struct gs_function_rec f;
	CUfunction fn;

	cr_assert_eq(gs_trk_function_found(m, "k", H(CUfunction, 0x2100), &fn), 0);
	cr_assert_eq(gs_trk_func_set_attr(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
					  65536), 0);
	cr_assert_eq(gs_trk_func_set_attr(fn, CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT,
					  50), 0);
	cr_assert_eq(gs_trk_func_set_attr(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
					  98304), 0);
	cr_assert_eq(gs_trk_func_set_attr(fn, (CUfunction_attribute)GS_FUNC_ATTRS, 1), -EINVAL);
	cr_assert_eq(gs_trk_func_set_cache_config(fn, CU_FUNC_CACHE_PREFER_SHARED), 0);
	cr_assert_eq(gs_trk_func_set_shmem_config(fn, CU_SHARED_MEM_CONFIG_FOUR_BYTE_BANK_SIZE), 0);
	cr_assert_eq(gs_trk_func_set_block_shape(fn, 32, 4, 1), 0);
	cr_assert_eq(gs_trk_func_set_shared_size(fn, 1024), 0);
	cr_assert_eq(gs_trk_func_set_attr(H(CUfunction, 0x9999),
					  CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 1),
		     -ENOENT);
	cr_assert_eq(trk_get(GS_KIND_FUNCTION, 0x2100, &f, sizeof(f)), 0);
	cr_assert_eq(f.attrs[CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES], 98304);
	cr_assert_eq(f.attrs[CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT], 50);
	cr_assert(f.attrs_set & (1u << CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES));
	cr_assert_not(f.attrs_set & (1u << CU_FUNC_ATTRIBUTE_NUM_REGS));
	cr_assert(f.cache_config_set);
	cr_assert_eq(f.cache_config, CU_FUNC_CACHE_PREFER_SHARED);
	cr_assert(f.shmem_config_set);
	cr_assert(f.block_shape_set);
	cr_assert_eq(f.block_shape[1], 4);
	cr_assert(f.shared_size_set);
	cr_assert_eq(f.shared_size, 1024);
}

Test(code, library_kernels_and_cascades)
{
	CUcontext ctx = ctx_a();
	CUlibrary lib = load_library(0x4000);
	struct gs_kernel_rec k;
	struct gs_function_rec f;
	struct gs_module_rec m;
	CUkernel kern, again;
	CUfunction fn;
	CUmodule mod;

	cr_assert_eq(gs_trk_kernel_found(lib, "axpy", H(CUkernel, 0x4100), &kern), 0);
	cr_assert_eq(gs_trk_kernel_found(lib, "axpy", H(CUkernel, 0x4100), &again), 1);
	cr_assert_eq(again, kern);
	cr_assert_eq(gs_trk_kernel_found(H(CUlibrary, 0x9999), "x", H(CUkernel, 0x9100), NULL),
		     -ENOENT);

	/* The kernel in a context, and the library's module in it. */
	cr_assert_eq(gs_trk_kernel_function(kern, ctx, 0, H(CUfunction, 0x4200), &fn), 0);
	cr_assert_eq(trk_get(GS_KIND_FUNCTION, 0x4200, &f, sizeof(f)), 0);
	cr_assert_eq(f.kernel, 0x4100);
	cr_assert_eq(f.ctx, 0x1000);
	cr_assert_str_eq(f.name, "axpy");
	cr_assert_eq(gs_trk_library_module(lib, ctx, 0, 0, H(CUmodule, 0x4300), &mod), 0);
	cr_assert_eq(gs_trk_library_module(lib, ctx, 0, 0, H(CUmodule, 0x4300), &mod), 1);
	cr_assert_eq(trk_get(GS_KIND_MODULE, 0x4300, &m, sizeof(m)), 0);
	cr_assert_eq(m.source, GS_MODSRC_LIBRARY);
	cr_assert_eq(m.library, 0x4000);
	cr_assert_eq(gs_trk_function_found(mod, "axpy", H(CUfunction, 0x4400), NULL), 0);
	cr_assert_eq(gs_trk_global_found(GS_KIND_LIBRARY, U(lib), ctx, "g", 0x600000400000, 4), 0);
	cr_assert_eq(gs_trk_unsup_add(GS_UNSUP_MANAGED, 0x7000000, 64, NULL, U(lib),
				      "cuLibraryGetManaged"), 0);

	/* Kernel settings, per device, latest last. */
	cr_assert_eq(gs_trk_kernel_set_attr(kern, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
					    1000, 0), 0);
	cr_assert_eq(gs_trk_kernel_set_cache_config(kern, CU_FUNC_CACHE_PREFER_L1, 1), 0);
	cr_assert_eq(gs_trk_kernel_set_attr(kern, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
					    2000, 0), 0);
	/* A CUkernel passed as a CUfunction applies to every device. */
	cr_assert_eq(gs_trk_func_set_attr(H(CUfunction, U(kern)),
					  CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT, 25), 0);
	cr_assert_eq(gs_trk_func_set_block_shape(H(CUfunction, U(kern)), 1, 1, 1), -ENOENT);
	cr_assert_eq(trk_get(GS_KIND_KERNEL, 0x4100, &k, sizeof(k)), 0);
	cr_assert_str_eq(k.name, "axpy");
	cr_assert_eq(k.nsettings, 3);
	cr_assert_eq(k.settings[0].attr, GS_KERNEL_CACHE_CONFIG);
	cr_assert_eq(k.settings[0].device, 1);
	cr_assert_eq(k.settings[1].attr, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES);
	cr_assert_eq(k.settings[1].value, 2000);
	cr_assert_eq(k.settings[2].device, -1);

	/* Unloading the library takes kernels, their functions, its modules
	 * and their functions, its globals and managed variables. */
	cr_assert_eq(gs_trk_library_unloaded(lib), 0);
	cr_assert_eq(gs_trk_count(GS_KIND_KERNEL), 0);
	cr_assert_eq(gs_trk_count(GS_KIND_FUNCTION), 0);
	cr_assert_eq(gs_trk_count(GS_KIND_MODULE), 0);
	cr_assert_eq(gs_trk_count(GS_KIND_GLOBAL), 0);
	cr_assert_eq(gs_trk_count(GS_KIND_UNSUPPORTED), 0);
	cr_assert_eq(gs_trk_count(GS_KIND_LIBRARY), 0);
	cr_assert(trk_exists(GS_KIND_CTX, 0x1000));
}

/* Libraries are context-independent: destroying a context takes only the
 * library's objects in that context. */
Test(code, context_destroy_keeps_libraries)
{
	CUcontext ctx = ctx_a();
	CUlibrary lib = load_library(0x4000);
	CUkernel kern;

	cr_assert_eq(gs_trk_kernel_found(lib, "axpy", H(CUkernel, 0x4100), &kern), 0);
	cr_assert_eq(gs_trk_kernel_function(kern, ctx, 0, H(CUfunction, 0x4200), NULL), 0);
	cr_assert_eq(gs_trk_library_module(lib, ctx, 0, 0, H(CUmodule, 0x4300), NULL), 0);
	cr_assert_eq(gs_trk_global_found(GS_KIND_LIBRARY, U(lib), ctx, "g", 0x600000400000, 4), 0);
	cr_assert_eq(gs_trk_ctx_destroyed(ctx), 0);
	cr_assert(trk_exists(GS_KIND_LIBRARY, 0x4000));
	cr_assert(trk_exists(GS_KIND_KERNEL, 0x4100));
	cr_assert_not(trk_exists(GS_KIND_FUNCTION, 0x4200));
	cr_assert_not(trk_exists(GS_KIND_MODULE, 0x4300));
	cr_assert_not(trk_exists(GS_KIND_GLOBAL, 0x600000400000));
}

Test(code, link_states)
{
	static const char input[] = ".version 8.0\n.target sm_80\n";
	CUjit_option opts[] = { CU_JIT_MAX_REGISTERS, CU_JIT_ERROR_LOG_BUFFER };
	char log[64];
	void *vals[] = { (void *)(uintptr_t)64, log };
	unsigned char cubin[256];
	struct gs_link_rec k;
	CUlinkState link;

	memset(cubin, 0xab, sizeof(cubin));
	cr_assert_eq(gs_trk_link_created(H(CUlinkState, 0x5000), 2, opts, vals, &link), 0);
	cr_assert_eq(gs_trk_link_input(link, CU_JIT_INPUT_PTX, input, sizeof(input), "a.ptx", 0,
				       NULL, NULL), 0);
	cr_assert_eq(gs_trk_link_input(link, CU_JIT_INPUT_CUBIN, NULL, 0, "/nonexistent/b.cubin",
				       0, NULL, NULL), 0);
	cr_assert_eq(gs_trk_link_output_size(cubin), 0);
	cr_assert_eq(gs_trk_link_completed(link, cubin, sizeof(cubin)), 0);
	cr_assert_eq(gs_trk_link_output_size(cubin), sizeof(cubin));
	cr_assert_eq(trk_get(GS_KIND_LINK, 0x5000, &k, sizeof(k)), 0);
	cr_assert_eq(k.opts.n, 2);
	cr_assert_eq(k.opts.opts[0].cls, GS_OPT_COPIED);
	cr_assert_eq(k.opts.opts[0].value, 64);
	cr_assert_eq(k.opts.opts[1].cls, GS_OPT_OUTPUT);
	cr_assert_eq(k.opts.lost, 0, "a log buffer is nothing to replay");
	cr_assert_eq(k.ninputs, 2);
	cr_assert_eq(k.inputs[0].size, sizeof(input));
	cr_assert_eq(memcmp(k.inputs[0].data, input, sizeof(input)), 0);
	cr_assert_str_eq(k.inputs[0].name, "a.ptx");
	cr_assert(k.inputs[1].from_file);
	cr_assert_eq(k.inputs[1].error, -ENOENT);
	cr_assert_eq(k.output_size, sizeof(cubin));
	cr_assert_eq(memcmp(k.output, cubin, sizeof(cubin)), 0);
	cr_assert_eq(gs_trk_bytes(GS_KIND_LINK), sizeof(input) + sizeof(cubin));
	cr_assert_eq(gs_trk_link_destroyed(link), 0);
	cr_assert_eq(gs_trk_link_output_size(cubin), 0);
	cr_assert_eq(gs_trk_bytes(GS_KIND_LINK), 0);
	cr_assert_eq(gs_trk_link_destroyed(link), -ENOENT);
}
