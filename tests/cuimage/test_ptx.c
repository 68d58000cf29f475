/* SPDX-License-Identifier: Apache-2.0 */
/* The PTX parser on hand-written text: declarations nvcc writes less
 * often, and the directives it must step over. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "cuimage_test.h"

static void parse_ok(const char *text, struct gs_code_info *info)
{
	cr_assert_eq(gs_ptx_parse(text, strlen(text) + 1, info), 0, "%s", text);
}

Test(ptx, params_alignment)
{
	static const char text[] =
		".version 8.0\n.target sm_80\n.address_size 64\n"
		"// .entry not_this(\n"
		"/* .entry nor_this( */\n"
		".visible .entry k(\n"
		"\t.param .u8 k_param_0,\n"
		"\t.param .align 16 .b8 k_param_1[32],\n"
		"\t.param .u16 k_param_2,\n"
		"\t.param .u64 .ptr .global .align 16 k_param_3,\n"
		"\t.param .f32 k_param_4,\n"
		"\t.param .align 4 .b8 k_param_5[6],\n"
		"\t.param .v2 .u32 k_param_6\n"
		")\n.maxntid 128, 1, 1\n{\n\tret;\n}\n";
	static const struct gs_kparam want[] = {
		{ 0, 1 }, { 16, 32 }, { 48, 2 }, { 56, 8 }, { 64, 4 }, { 68, 6 }, { 80, 8 },
	};
	struct gs_code_info info;
	const struct gs_kernel_info *k;

	parse_ok(text, &info);
	cr_assert_eq(info.nkernels, 1);
	k = fx_kernel(&info, "k");
	cr_assert_not_null(k);
	cr_assert_eq(k->nparams, 7);
	for (unsigned i = 0; i < 7; i++) {
		cr_assert_eq(k->params[i].offset, want[i].offset, "param %u", i);
		cr_assert_eq(k->params[i].size, want[i].size, "param %u", i);
	}
	cr_assert_eq(k->param_bytes, 88);
	gs_code_info_free(&info);
}

Test(ptx, entries_and_functions)
{
	static const char text[] =
		".version 8.0\n.target sm_80\n"
		".file 1 \"/src/a b.cu\", 1700000000, 123\n"
		".extern .func (.param .b32 r) ext_fn (.param .b32 x);\n"
		".func (.param .b32 r) dev_fn (.param .b32 x)\n{\n\t{ .reg .b32 t; }\n\tret;\n}\n"
		".extern .entry elsewhere(.param .u32 a);\n"
		".entry decl_only(.param .u32 a);\n"
		".weak .entry w()\n{\n\tret;\n}\n"
		".entry e2\n{\n\tret;\n}\n"
		".section .debug_abbrev\n{\n.b8 1\n.b8 17\n}\n"
		".visible .entry last(.param .b64 p)\n{\n\tret;\n}\n";
	struct gs_code_info info;

	parse_ok(text, &info);
	cr_assert_eq(info.nkernels, 3);
	cr_assert_not_null(fx_kernel(&info, "w"));
	cr_assert_not_null(fx_kernel(&info, "e2"));
	cr_assert_not_null(fx_kernel(&info, "last"));
	cr_assert_eq(fx_kernel(&info, "last")->param_bytes, 8);
	cr_assert_null(fx_kernel(&info, "dev_fn"));
	cr_assert_null(fx_kernel(&info, "elsewhere"));
	cr_assert_null(fx_kernel(&info, "decl_only"));
	gs_code_info_free(&info);
}

static const unsigned char *init_of(const struct gs_code_info *info, const char *name,
				    size_t size)
{
	const struct gs_global_info *g = fx_global(info, name);

	cr_assert_not_null(g, "no global %s", name);
	cr_assert_eq(g->size, size, "%s: size %zu", name, g->size);
	return g->init;
}

Test(ptx, globals_and_initialisers)
{
	static const char text[] =
		".version 8.0\n.target sm_80\n.address_size 64\n"
		".global .u32 a, b = 7;\n"
		".global .align 4 .b8 arr[] = {1, 2, 3};\n"
		".global .u32 m[2][2] = {{1, 2}, {3, 0x10}};\n"
		".global .s32 neg = -2;\n"
		".global .f32 f = 0f3F800000;\n"
		".global .f64 dd = 0d4004000000000000;\n"
		".global .f32 fi = 2;\n"
		".global .f32 fd[2] = {1.5, -2.5e1};\n"
		".global .v2 .u16 vec[2] = {1, 2, 3, 4};\n"
		".global .u64 ptr = generic(arr);\n"
		".global .u64 ptrs[2] = {arr, arr+4};\n"
		".const .align 8 .b8 cst[16] = {9};\n"
		".extern .global .u32 outside;\n"
		".global .texref tex;\n"
		".shared .u32 sh;\n"
		".global .attribute(.managed) .align 8 .u64 mg = 0x1122334455667788;\n"
		".global .u8 oct = 017, bin = 0b101;\n";
	struct gs_code_info info;
	const unsigned char *p;
	uint32_t u32;
	uint16_t u16;
	float fl;
	double db;

	parse_ok(text, &info);
	cr_assert_null(init_of(&info, "a", 4));
	p = init_of(&info, "b", 4);
	memcpy(&u32, p, 4);
	cr_assert_eq(u32, 7);
	p = init_of(&info, "arr", 3);
	cr_assert_eq(memcmp(p, "\1\2\3", 3), 0);
	p = init_of(&info, "m", 16);
	memcpy(&u32, p + 12, 4);
	cr_assert_eq(u32, 0x10);
	p = init_of(&info, "neg", 4);
	memcpy(&u32, p, 4);
	cr_assert_eq((int32_t)u32, -2);
	p = init_of(&info, "f", 4);
	memcpy(&fl, p, 4);
	cr_assert_float_eq(fl, 1.0f, 0.0);
	p = init_of(&info, "dd", 8);
	memcpy(&db, p, 8);
	cr_assert_float_eq(db, 2.5, 0.0);
	p = init_of(&info, "fi", 4);
	memcpy(&fl, p, 4);
	cr_assert_float_eq(fl, 2.0f, 0.0);
	p = init_of(&info, "fd", 8);
	memcpy(&fl, p + 4, 4);
	cr_assert_float_eq(fl, -25.0f, 0.0);
	p = init_of(&info, "vec", 8);
	memcpy(&u16, p + 6, 2);
	cr_assert_eq(u16, 4);
	/* Addresses are the loader's business: zeros, and said so. */
	init_of(&info, "ptr", 8);
	cr_assert(fx_global(&info, "ptr")->flags & GS_GLOBAL_INIT_PARTIAL);
	init_of(&info, "ptrs", 16);
	cr_assert(fx_global(&info, "ptrs")->flags & GS_GLOBAL_INIT_PARTIAL);
	p = init_of(&info, "cst", 16);
	cr_assert_eq(p[0], 9);
	cr_assert_eq(fx_global(&info, "cst")->flags, GS_GLOBAL_CONSTANT);
	p = init_of(&info, "mg", 8);
	cr_assert_eq(p[0], 0x88);
	cr_assert_eq(fx_global(&info, "mg")->flags, GS_GLOBAL_MANAGED);
	cr_assert_eq(*init_of(&info, "oct", 1), 15);
	cr_assert_eq(*init_of(&info, "bin", 1), 5);
	cr_assert_null(fx_global(&info, "outside"));
	cr_assert_null(fx_global(&info, "tex"));
	cr_assert_null(fx_global(&info, "sh"));
	cr_assert_eq(fx_global(&info, "a")->flags, 0);
	gs_code_info_free(&info);
}

Test(ptx, target)
{
	unsigned arch, flags;

	cr_assert_eq(gs_ptx_target(".version 8.0\n.target sm_86\n", 100, &arch, &flags), 0);
	cr_assert_eq(arch, 86);
	cr_assert_eq(flags, 0);
	cr_assert_eq(gs_ptx_target(".version 8.0\n.target sm_90a, debug\n", 100, &arch, &flags), 0);
	cr_assert_eq(arch, 90);
	cr_assert_eq(flags, GS_FATBIN_FLAG_ARCH_SPECIFIC);
	cr_assert_eq(gs_ptx_target(".target sm_100f\n", 100, &arch, &flags), 0);
	cr_assert_eq(arch, 100);
	cr_assert_eq(flags, GS_FATBIN_FLAG_FAMILY);
	cr_assert_eq(gs_ptx_target(".version 8.0\n", 100, &arch, &flags), -EINVAL);
	cr_assert_eq(gs_ptx_target(".target compute_80\n", 100, &arch, &flags), -EINVAL);
	cr_assert_eq(gs_ptx_target(".target sm_\n", 100, &arch, &flags), -EINVAL);
	cr_assert_eq(gs_ptx_target(".target sm_80x\n", 100, &arch, &flags), -EINVAL);
	/* The bound cuts the text before the digits. */
	cr_assert_eq(gs_ptx_target(".target sm_80\n", 10, &arch, &flags), -EINVAL);
}

Test(ptx, malformed)
{
	static const char *const bad[] = {
		".version 8.0\n.entry\n",
		".version 8.0\n.entry k(.param .u32)\n{\n}\n",
		".version 8.0\n.entry k(.param .u32 a b)\n{\n}\n",
		".version 8.0\n.entry k(.param .u32 a\n",
		".version 8.0\n.entry k(.param .qq32 a)\n{\n}\n",
		".version 8.0\n.entry k(.param .align 3 .b8 a[4])\n{\n}\n",
		".version 8.0\n.entry k(.param .b8 a[70000])\n{\n}\n",
		".version 8.0\n.global .u32 x = {1, 2};\n",
		".version 8.0\n.global .u32 x[1] = {1, 2};\n",
		".version 8.0\n.global .u32 x = 1 + 2;\n",
		".version 8.0\n.global .u32 x = 0fZZ;\n",
		".version 8.0\n.global .u32 x[] ;\n",
		".version 8.0\n.global .u32 x[99999999999999];\n",
		".version 8.0\n.global .u32 ;\n",
		".version 8.0\n.global .u32 x = {1, 2\n",
	};
	struct gs_code_info info;

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		int ret = gs_ptx_parse(bad[i], strlen(bad[i]) + 1, &info);

		cr_assert_eq(ret, -EINVAL, "accepted: %s", bad[i]);
		cr_assert_eq(info.nkernels, 0);
		cr_assert_eq(info.nglobals, 0);
	}
}
