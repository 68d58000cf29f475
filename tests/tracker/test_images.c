/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Module and library image copies, for every kind of image the driver
 * accepts (fixtures.cu built by nvcc into a fatbin, a compressed fatbin, a
 * cubin and PTX), JIT and library option filtering, and the kernel
 * parameter layouts parsed from the code selected for an architecture.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "trk_test.h"

TestSuite(images, .init = trk_test_setup);

/* trk_kernel(int a, double *p, char c, unsigned long long u) */
static const struct gs_kparam trk_kernel_params[] = { { 0, 4 }, { 8, 8 }, { 16, 1 }, { 24, 8 } };
#define TRK_KERNEL_BYTES 32

static CUcontext ctx(void)
{
	cr_assert_eq(gs_trk_ctx_created(H(CUcontext, 0x1000), 0, 0, NULL, NULL), 0);
	return H(CUcontext, 0x1000);
}

/* Load `image` as a module of the given source kind for sm, and return a
 * copy of its record. */
static void load(const struct gs_module_desc *d, uint64_t h, struct gs_module_rec *out)
{
	CUmodule app;

	cr_assert_eq(gs_trk_module_loaded(d, H(CUmodule, h), &app), 0);
	cr_assert_eq(U(app), h);
	cr_assert_eq(trk_get(GS_KIND_MODULE, h, out, sizeof(*out)), 0);
}

static void check_layout(CUfunction f)
{
	struct gs_kparam p[8];
	size_t bytes = 0;
	int n = gs_trk_function_params(f, p, 8, &bytes);

	cr_assert_eq(n, 4, "trk_kernel has 4 parameters, got %d", n);
	cr_assert_eq(bytes, TRK_KERNEL_BYTES);
	for (int i = 0; i < 4; i++) {
		cr_assert_eq(p[i].offset, trk_kernel_params[i].offset, "param %d", i);
		cr_assert_eq(p[i].size, trk_kernel_params[i].size, "param %d", i);
	}
	/* A short buffer gets a prefix and the full count. */
	cr_assert_eq(gs_trk_function_params(f, p, 1, NULL), 4);
}

/* Copy, kind, size and layouts of one fixture loaded from memory. */
static void data_image(const char *fixture, enum gs_image_kind kind, unsigned sm, bool nul)
{
	size_t size;
	unsigned char *file = trk_fixture(fixture, &size);
	unsigned char *buf = malloc(size + 1);
	struct gs_module_desc d = { .ctx = ctx(), .sm = sm, .source = GS_MODSRC_DATA };
	struct gs_module_rec m;
	CUfunction f;

	memcpy(buf, file, size);
	buf[size] = 0; /* PTX handed to the driver is NUL-terminated */
	d.image = buf;
	load(&d, 0x2000, &m);
	cr_assert_eq(m.image.error, 0);
	cr_assert_eq(m.image.kind, kind);
	cr_assert_eq(m.image.size, size + (nul ? 1 : 0), "%s: copied %zu of %zu bytes", fixture,
		     m.image.size, size);
	cr_assert_neq(m.image.data, buf, "a private copy");
	cr_assert_eq(memcmp(m.image.data, file, size), 0);
	cr_assert_eq(gs_trk_bytes(GS_KIND_MODULE), m.image.size);
	cr_assert_eq(m.sm, sm);
	cr_assert_not_null(m.layouts);
	cr_assert_eq(m.layouts->error, 0, "%s for sm_%u: %d", fixture, sm, m.layouts->error);

	/* The application may free or reuse its buffer at once. */
	memset(buf, 0, size);
	free(buf);
	cr_assert_eq(gs_trk_function_found(H(CUmodule, 0x2000), "trk_kernel",
					   H(CUfunction, 0x2100), &f), 0);
	check_layout(f);
	cr_assert_eq(gs_trk_function_found(H(CUmodule, 0x2000), "no_such", H(CUfunction, 0x2200),
					   &f), 0);
	cr_assert_eq(gs_trk_function_params(f, NULL, 0, NULL), -ENOENT);
	cr_assert_eq(trk_problems("image"), 0);
	free(file);
}

Test(images, fatbin_sm80_cubin)
{
	data_image("trk.fatbin", GS_IMAGE_FATBIN, 80, false);
}

/* No sm_90 cubin in it: the driver JITs the compute_80 PTX, and the
 * layouts come from the PTX. */
Test(images, fatbin_sm90_ptx)
{
	data_image("trk.fatbin", GS_IMAGE_FATBIN, 90, false);
}

Test(images, compressed_fatbin)
{
	data_image("trk_zstd.fatbin", GS_IMAGE_FATBIN, 80, false);
}

Test(images, cubin)
{
	data_image("trk.cubin", GS_IMAGE_CUBIN, 80, false);
}

Test(images, ptx_text)
{
	data_image("trk.ptx", GS_IMAGE_PTX, 86, true);
}

/* What cudart registers: {magic, version, fatbin pointer, ...}. The copy is
 * of the fatbin it points to. */
Test(images, fatbin_wrapper)
{
	size_t size;
	void *fatbin = trk_fixture("trk.fatbin", &size);
	struct {
		int magic;
		int version;
		const void *data;
		void *filename_or_fatbins;
	} wrapper = { (int)GS_FATBIN_WRAPPER_MAGIC, 1, fatbin, NULL };
	struct gs_module_desc d = { .ctx = ctx(), .sm = 80, .source = GS_MODSRC_FATBINARY,
				    .image = &wrapper };
	struct gs_module_rec m;

	load(&d, 0x2000, &m);
	cr_assert_eq(m.source, GS_MODSRC_FATBINARY);
	cr_assert_eq(m.image.kind, GS_IMAGE_FATBIN);
	cr_assert_eq(m.image.size, size);
	cr_assert_eq(memcmp(m.image.data, fatbin, size), 0);
	cr_assert_eq(m.layouts->error, 0);
	free(fatbin);
}

/* cuModuleLoad: the tracker reads the file the driver read. */
Test(images, from_file)
{
	size_t size;
	void *cubin = trk_fixture("trk.cubin", &size);
	struct gs_module_desc d = { .ctx = ctx(), .sm = 80, .source = GS_MODSRC_FILE,
				    .path = trk_fixture_path("trk.cubin") };
	struct gs_module_rec m;
	CUfunction f;

	load(&d, 0x2000, &m);
	cr_assert_str_eq(m.path, trk_fixture_path("trk.cubin"));
	cr_assert_eq(m.image.kind, GS_IMAGE_CUBIN);
	cr_assert_eq(m.image.size, size);
	cr_assert_eq(memcmp(m.image.data, cubin, size), 0);
	cr_assert_eq(gs_trk_function_found(H(CUmodule, 0x2000), "trk_kernel",
					   H(CUfunction, 0x2100), &f), 0);
	check_layout(f);
	free(cubin);
}

/* A module whose image cannot be copied is still recorded (the driver
 * loaded it), and freeze --check says it cannot be reloaded. */
Test(images, uncopyable_images_are_reported)
{
	static const char garbage[] = "not an image at all";
	struct gs_module_desc file = { .ctx = ctx(), .sm = 80, .source = GS_MODSRC_FILE,
				       .path = "/nonexistent/trk.cubin" };
	struct gs_module_desc data = { .ctx = ctx(), .sm = 80, .source = GS_MODSRC_DATA,
				       .image = garbage };
	struct gs_module_rec m;
	CUfunction f;

	load(&file, 0x2000, &m);
	cr_assert_eq(m.image.error, -ENOENT);
	cr_assert_null(m.image.data);
	load(&data, 0x3000, &m);
	cr_assert_eq(m.image.error, -EINVAL);
	cr_assert_eq(gs_trk_count(GS_KIND_MODULE), 2);
	cr_assert_eq(trk_problems("image could not be copied"), 2);
	cr_assert_eq(gs_trk_function_found(H(CUmodule, 0x2000), "trk_kernel",
					   H(CUfunction, 0x2100), &f), 0);
	cr_assert_eq(gs_trk_function_params(f, NULL, 0, NULL), -ENOENT);
}

/* cuModuleLoadDataEx: scalar options are copied, log buffers dropped,
 * pointer-valued and unknown options recorded as lost. */
Test(images, jit_options)
{
	size_t size;
	void *cubin = trk_fixture("trk.cubin", &size);
	char log[128];
	const char *names[] = { "sym" };
	CUjit_option opts[] = {
		CU_JIT_MAX_REGISTERS, CU_JIT_INFO_LOG_BUFFER, CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES,
		CU_JIT_OPTIMIZATION_LEVEL, CU_JIT_GLOBAL_SYMBOL_NAMES, (CUjit_option)999,
	};
	void *vals[] = { (void *)(uintptr_t)32, log, (void *)(uintptr_t)sizeof(log),
			 (void *)(uintptr_t)3, names, NULL };
	struct gs_module_desc d = { .ctx = ctx(), .source = GS_MODSRC_DATA_EX, .image = cubin,
				    .nopts = 6, .opts = opts, .optvals = vals };
	struct gs_module_rec m;

	load(&d, 0x2000, &m);
	cr_assert_eq(m.jit.n, 6);
	cr_assert_eq(m.jit.opts[0].cls, GS_OPT_COPIED);
	cr_assert_eq(m.jit.opts[0].value, 32);
	cr_assert_eq(m.jit.opts[1].cls, GS_OPT_OUTPUT);
	cr_assert_eq(m.jit.opts[2].cls, GS_OPT_OUTPUT);
	cr_assert_eq(m.jit.opts[3].value, 3);
	cr_assert_eq(m.jit.opts[4].cls, GS_OPT_POINTER);
	cr_assert_eq(m.jit.opts[4].value, 0, "pointers are not kept");
	cr_assert_eq(m.jit.opts[5].cls, GS_OPT_UNKNOWN);
	cr_assert_eq(m.jit.opts[5].option, 999);
	cr_assert_eq(m.jit.lost, 2);
	cr_assert_eq(trk_problems("pointer values"), 1);
	cr_assert_null(m.layouts, "no architecture given, nothing parsed");
	free(cubin);
}

/* A module loaded from a cuLinkComplete output is copied with the size the
 * driver returned, which the image's headers do not tell. */
Test(images, link_output_size_wins)
{
	size_t size;
	void *cubin = trk_fixture("trk.cubin", &size);
	unsigned char *out = calloc(1, size + 64);
	struct gs_module_desc d = { .ctx = ctx(), .sm = 80, .source = GS_MODSRC_DATA };
	struct gs_module_rec m;
	CUlinkState link;

	memcpy(out, cubin, size);
	memset(out + size, 0x5a, 64);
	cr_assert_eq(gs_trk_link_created(H(CUlinkState, 0x7000), 0, NULL, NULL, &link), 0);
	cr_assert_eq(gs_trk_link_completed(link, out, size + 64), 0);
	d.image = out;
	load(&d, 0x2000, &m);
	cr_assert(m.from_link);
	cr_assert_eq(m.image.size, size + 64);
	cr_assert_eq(memcmp(m.image.data, out, size + 64), 0);
	cr_assert_eq(m.image.kind, GS_IMAGE_CUBIN);
	cr_assert_eq(m.layouts->error, 0);
	cr_assert_eq(gs_trk_link_destroyed(link), 0);
	cr_assert(trk_exists(GS_KIND_MODULE, 0x2000), "the module outlives the link state");
	free(out);
	free(cubin);
}

/* Libraries: the image and options are copied; layouts are per
 * architecture, parsed on first use. */
Test(images, library_layouts_per_arch)
{
	size_t size;
	void *fatbin = trk_fixture("trk.fatbin", &size);
	CUlibraryOption lopts[] = { CU_LIBRARY_BINARY_IS_PRESERVED,
				    CU_LIBRARY_HOST_UNIVERSAL_FUNCTION_AND_DATA_TABLE };
	void *lvals[] = { (void *)(uintptr_t)1, fatbin };
	struct gs_library_desc d = { .source = GS_LIBSRC_DATA, .image = fatbin, .nlib = 2,
				     .lib = lopts, .libvals = lvals, .sm = 80 };
	struct gs_library_rec l;
	struct gs_kparam p[4];
	size_t bytes;
	CUlibrary lib;
	CUkernel k, empty;
	CUfunction f;

	cr_assert_eq(gs_trk_library_loaded(&d, H(CUlibrary, 0x4000), &lib), 0);
	cr_assert_eq(trk_get(GS_KIND_LIBRARY, 0x4000, &l, sizeof(l)), 0);
	cr_assert_eq(l.image.size, size);
	cr_assert_eq(l.image.kind, GS_IMAGE_FATBIN);
	cr_assert_eq(l.lib.n, 2);
	cr_assert_eq(l.lib.opts[0].cls, GS_OPT_COPIED);
	cr_assert_eq(l.lib.opts[0].value, 1);
	cr_assert_eq(l.lib.opts[1].cls, GS_OPT_POINTER);
	cr_assert_eq(l.lib.lost, 1);
	cr_assert_eq(trk_problems("library options"), 1);
	cr_assert_eq(gs_trk_bytes(GS_KIND_LIBRARY), size);
	free(fatbin); /* the library keeps its own copy */

	cr_assert_eq(gs_trk_kernel_found(lib, "trk_kernel", H(CUkernel, 0x4100), &k), 0);
	cr_assert_eq(gs_trk_kernel_found(lib, "trk_empty", H(CUkernel, 0x4200), &empty), 0);
	for (unsigned sm = 80; sm <= 90; sm += 10) {
		memset(p, 0, sizeof(p));
		cr_assert_eq(gs_trk_kernel_params(k, sm, p, 4, &bytes), 4, "sm_%u", sm);
		cr_assert_eq(bytes, TRK_KERNEL_BYTES);
		cr_assert_eq(p[2].offset, 16);
		cr_assert_eq(p[2].size, 1);
		cr_assert_eq(gs_trk_kernel_params(empty, sm, p, 4, &bytes), 0);
	}
	cr_assert_eq(gs_trk_kernel_params(k, 70, p, 4, &bytes), -ENOENT,
		     "no code an sm_70 device could run");
	cr_assert_eq(gs_trk_kernel_params(k, 0, p, 4, &bytes), -EINVAL);

	/* The kernel as a function in an sm_90 context. */
	cr_assert_eq(gs_trk_kernel_function(k, ctx(), 90, H(CUfunction, 0x4300), &f), 0);
	check_layout(f);
	/* The library's module in an sm_80 context. */
	CUmodule mod;

	cr_assert_eq(gs_trk_library_module(lib, H(CUcontext, 0x1000), 0, 80, H(CUmodule, 0x4400),
					   &mod), 0);
	cr_assert_eq(gs_trk_function_found(mod, "trk_kernel", H(CUfunction, 0x4500), &f), 0);
	check_layout(f);
}

Test(images, library_from_file)
{
	size_t size;
	void *ptx = trk_fixture("trk.ptx", &size);
	struct gs_library_desc d = { .source = GS_LIBSRC_FILE,
				     .path = trk_fixture_path("trk.ptx") };
	struct gs_library_rec l;
	CUlibrary lib;
	CUkernel k;

	cr_assert_eq(gs_trk_library_loaded(&d, H(CUlibrary, 0x4000), &lib), 0);
	cr_assert_eq(trk_get(GS_KIND_LIBRARY, 0x4000, &l, sizeof(l)), 0);
	cr_assert_eq(l.source, GS_LIBSRC_FILE);
	cr_assert_eq(l.image.kind, GS_IMAGE_PTX);
	cr_assert_eq(l.image.size, size + 1, "the file's text and a NUL, as loaded from memory");
	cr_assert_eq(memcmp(l.image.data, ptx, size), 0);
	cr_assert_eq(((const char *)l.image.data)[size], 0);
	cr_assert_eq(gs_trk_kernel_found(lib, "trk_kernel", H(CUkernel, 0x4100), &k), 0);
	cr_assert_eq(gs_trk_kernel_params(k, 80, NULL, 0, NULL), 4);
	free(ptx);
}
