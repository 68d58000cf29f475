/* SPDX-License-Identifier: Apache-2.0 */
/* gs_image_select: the code the driver would load, decompressed. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "cuimage_test.h"

struct want {
	unsigned sm;
	int ret;
	enum gs_image_kind kind;
	unsigned arch;
};

/* Fatbins with sm_80 and sm_90 cubins and compute_90 PTX. */
static const struct want multi_wants[] = {
	{ 75, -ENOENT, 0, 0 },
	{ 80, 0, GS_IMAGE_CUBIN, 80 },
	{ 86, 0, GS_IMAGE_CUBIN, 80 },
	{ 89, 0, GS_IMAGE_CUBIN, 80 },
	{ 90, 0, GS_IMAGE_CUBIN, 90 },
	{ 100, 0, GS_IMAGE_PTX, 90 }, /* no sm_10x cubin: JIT the PTX */
	{ 120, 0, GS_IMAGE_PTX, 90 },
};

static void check_wants(const char *file, const struct want *w, size_t n)
{
	struct fx f;

	fx_load(file, &f);
	for (size_t i = 0; i < n; i++) {
		struct gs_code code;
		int ret = gs_image_select(f.data, f.size, w[i].sm, &code);

		cr_assert_eq(ret, w[i].ret, "%s sm_%u: %d", file, w[i].sm, ret);
		cr_assert_eq(gs_image_supports(f.data, f.size, w[i].sm), w[i].ret);
		if (ret == 0) {
			enum gs_image_kind kind;
			size_t size;

			cr_assert_eq(code.kind, w[i].kind, "%s sm_%u", file, w[i].sm);
			cr_assert_eq(code.arch, w[i].arch, "%s sm_%u", file, w[i].sm);
			/* What comes out is itself a valid image of that size. */
			cr_assert_eq(gs_image_probe(code.data, code.size, &kind, &size, NULL), 0);
			cr_assert_eq(kind, code.kind);
			cr_assert_eq(size, code.size);
		} else {
			cr_assert_null(code.data);
		}
		gs_code_free(&code);
	}
	fx_free(&f);
}

#define CHECK_WANTS(file, w) check_wants(file, w, sizeof w / sizeof w[0])

Test(select, multi_uncompressed)
{
	CHECK_WANTS("multi.fatbin", multi_wants);
}

Test(select, multi_default)
{
	CHECK_WANTS("default.fatbin", multi_wants);
}

Test(select, multi_zstd)
{
	CHECK_WANTS("zstd.fatbin", multi_wants);
}

Test(select, multi_lz4)
{
	CHECK_WANTS("lz4.fatbin", multi_wants);
}

Test(select, ptx_only_fatbin)
{
	static const struct want w[] = {
		{ 75, -ENOENT, 0, 0 },
		{ 80, 0, GS_IMAGE_PTX, 80 },
		{ 86, 0, GS_IMAGE_PTX, 80 },
		{ 90, 0, GS_IMAGE_PTX, 80 },
		{ 120, 0, GS_IMAGE_PTX, 80 },
	};
	CHECK_WANTS("ptxonly.fatbin", w);
}

Test(select, bare_cubin)
{
	static const struct want w[] = {
		{ 75, -ENOENT, 0, 0 },
		{ 80, 0, GS_IMAGE_CUBIN, 80 },
		{ 86, 0, GS_IMAGE_CUBIN, 80 },
		{ 90, -ENOENT, 0, 0 },
	};
	CHECK_WANTS("sm80.cubin", w);
}

Test(select, bare_ptx)
{
	static const struct want w[] = {
		{ 75, -ENOENT, 0, 0 },
		{ 80, 0, GS_IMAGE_PTX, 80 },
		{ 90, 0, GS_IMAGE_PTX, 80 },
	};
	CHECK_WANTS("fixtures.ptx", w);
}

/* sm_90a code runs on sm_90 only, and its PTX cannot be JIT-compiled for
 * anything else either. */
Test(select, arch_specific)
{
	static const struct want w[] = {
		{ 80, -ENOENT, 0, 0 },
		{ 90, 0, GS_IMAGE_CUBIN, 90 },
		{ 100, -ENOENT, 0, 0 },
	};
	struct gs_code code;
	struct fx f;

	CHECK_WANTS("archspec.fatbin", w);
	fx_load("archspec.fatbin", &f);
	cr_assert_eq(gs_image_select(f.data, f.size, 90, &code), 0);
	cr_assert(code.flags & GS_FATBIN_FLAG_ARCH_SPECIFIC);
	gs_code_free(&code);
	fx_free(&f);
}

static void select_bytes(const char *file, unsigned sm, struct gs_code *code)
{
	struct fx f;

	fx_load(file, &f);
	cr_assert_eq(gs_image_select(f.data, f.size, sm, code), 0, "%s", file);
	fx_free(&f);
}

/* Decompressed cubins are byte for byte what nvcc -cubin writes. */
Test(select, decompressed_cubin_is_nvcc_cubin)
{
	static const char *const files[] = { "multi.fatbin", "default.fatbin",
					     "zstd.fatbin", "lz4.fatbin" };
	struct fx cubin;

	fx_load("sm80.cubin", &cubin);
	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
		struct gs_code code;

		select_bytes(files[i], 80, &code);
		cr_assert_eq(code.size, cubin.size, "%s", files[i]);
		cr_assert_eq(memcmp(code.data, cubin.data, cubin.size), 0, "%s", files[i]);
		gs_code_free(&code);
	}
	fx_free(&cubin);
}

/* Every compression of the PTX gives the same NUL-terminated text. */
Test(select, decompressed_ptx_is_the_same_text)
{
	static const char *const files[] = { "default.fatbin", "zstd.fatbin", "lz4.fatbin" };
	struct gs_code ref;

	select_bytes("multi.fatbin", 100, &ref);
	cr_assert_eq(ref.kind, GS_IMAGE_PTX);
	cr_assert_eq(strlen(ref.data) + 1, ref.size);
	cr_assert_not_null(strstr(ref.data, ".entry mixed("));
	cr_assert_not_null(strstr(ref.data, ".target sm_90"));
	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
		struct gs_code code;

		select_bytes(files[i], 100, &code);
		cr_assert_eq(code.size, ref.size, "%s", files[i]);
		cr_assert_eq(memcmp(code.data, ref.data, ref.size), 0, "%s", files[i]);
		gs_code_free(&code);
	}
	gs_code_free(&ref);
}

Test(select, runs_on_rules)
{
	const unsigned elf = GS_FATBIN_KIND_ELF, ptx = GS_FATBIN_KIND_PTX;

	cr_assert(gs_code_runs_on(elf, 80, 0, 80));
	cr_assert(gs_code_runs_on(elf, 80, 0, 86));
	cr_assert_not(gs_code_runs_on(elf, 86, 0, 80));
	cr_assert_not(gs_code_runs_on(elf, 80, 0, 90));
	cr_assert(gs_code_runs_on(elf, 100, 0, 103));
	cr_assert_not(gs_code_runs_on(elf, 90, GS_FATBIN_FLAG_ARCH_SPECIFIC, 91));
	cr_assert(gs_code_runs_on(ptx, 80, 0, 120));
	cr_assert_not(gs_code_runs_on(ptx, 90, 0, 89));
	cr_assert(gs_code_runs_on(ptx, 100, GS_FATBIN_FLAG_FAMILY, 103));
	cr_assert_not(gs_code_runs_on(ptx, 100, GS_FATBIN_FLAG_FAMILY, 120));
	cr_assert_not(gs_code_runs_on(ptx, 90, GS_FATBIN_FLAG_ARCH_SPECIFIC, 100));
	cr_assert_not(gs_code_runs_on(GS_FATBIN_KIND_LTOIR, 90, 0, 90));
	cr_assert_not(gs_code_runs_on(elf, 0, 0, 0));
}

Test(select, bad_arguments)
{
	struct gs_code code;
	struct fx f;

	fx_load("multi.fatbin", &f);
	cr_assert_eq(gs_image_select(NULL, 100, 80, &code), -EINVAL);
	cr_assert_eq(gs_image_select(f.data, f.size, 80, NULL), -EINVAL);
	cr_assert_eq(gs_image_select(f.data, 0, 80, &code), -EINVAL);
	cr_assert_eq(gs_image_select(f.data, f.size, 0, &code), -ENOENT);
	gs_code_free(&code);
	gs_code_free(NULL);
	fx_free(&f);
}
