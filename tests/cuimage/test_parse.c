/* SPDX-License-Identifier: Apache-2.0 */
/* gs_code_parse on nvcc output: the kernels, parameter layouts and
 * variables fixtures.cu declares, from cubins and from PTX. */
#include <errno.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "cuimage_test.h"
#include "fixtures.h"

/* The parameter buffer is laid out like a struct of the parameters. */
struct mixed_args {
	int a;
	float *p;
	double d;
	struct s24 s;
	fx_float4 v;
};
struct cpp_kernel_args {
	char c;
	short sh;
	long long ll;
	const int *q;
};
struct bigparams_args {
	char c;
	struct big5000 b;
	float *out;
};

struct param_want {
	size_t offset, size;
};

#define PARAM(type, m) { offsetof(type, m), sizeof(((type *)0)->m) }
#define END(type, m) (offsetof(type, m) + sizeof(((type *)0)->m))

static const struct param_want mixed_want[] = {
	PARAM(struct mixed_args, a), PARAM(struct mixed_args, p), PARAM(struct mixed_args, d),
	PARAM(struct mixed_args, s), PARAM(struct mixed_args, v),
};
static const struct param_want cpp_want[] = {
	PARAM(struct cpp_kernel_args, c), PARAM(struct cpp_kernel_args, sh),
	PARAM(struct cpp_kernel_args, ll), PARAM(struct cpp_kernel_args, q),
};
static const struct param_want big_want[] = {
	PARAM(struct bigparams_args, c), PARAM(struct bigparams_args, b),
	PARAM(struct bigparams_args, out),
};

static void check_kernel(const struct gs_code_info *info, const char *name,
			 const struct param_want *w, unsigned n, size_t bytes, const char *what)
{
	const struct gs_kernel_info *k = fx_kernel(info, name);

	cr_assert_not_null(k, "%s: no kernel %s", what, name);
	cr_assert_eq(k->nparams, n, "%s %s: %u params", what, name, k->nparams);
	for (unsigned i = 0; i < n; i++) {
		cr_assert_eq(k->params[i].offset, w[i].offset, "%s %s param %u offset %u",
			     what, name, i, k->params[i].offset);
		cr_assert_eq(k->params[i].size, w[i].size, "%s %s param %u size %u", what,
			     name, i, k->params[i].size);
	}
	cr_assert_eq(k->param_bytes, bytes, "%s %s: %zu bytes", what, name, k->param_bytes);
}

static void check_init_floats(const struct gs_global_info *g, const float *want, size_t n,
			      const char *what)
{
	float v;

	cr_assert_not_null(g->init, "%s %s: no initial value", what, g->name);
	cr_assert_eq(g->init_size, g->size);
	for (size_t i = 0; i < g->size / sizeof v; i++) {
		memcpy(&v, (const char *)g->init + i * sizeof v, sizeof v);
		cr_assert_float_eq(v, i < n ? want[i] : 0.0f, 0.0, "%s %s[%zu]", what,
				   g->name, i);
	}
}

/* Everything fixtures.cu declares; `ptx` where PTX text was parsed. */
static void check_fixture_info(const struct gs_code_info *info, const char *what)
{
	static const float table[] = { 1.0f, 2.0f };
	static const float coef[] = { 0.5f, -1.0f, 3.0f };
	const struct gs_global_info *g;
	double d;
	int i;

	cr_assert_eq(info->nkernels, 4, "%s: %zu kernels", what, info->nkernels);
	check_kernel(info, "mixed", mixed_want, 5, END(struct mixed_args, v), what);
	check_kernel(info, "_Z10cpp_kernelcsxPKi", cpp_want, 4,
		     END(struct cpp_kernel_args, q), what);
	check_kernel(info, "noparams", NULL, 0, 0, what);
	check_kernel(info, "bigparams", big_want, 3, END(struct bigparams_args, out), what);
	cr_assert_null(fx_kernel(info, "_Z6helperf"), "%s: a device function listed", what);

	g = fx_global(info, "g_counter");
	cr_assert_not_null(g, "%s: g_counter", what);
	cr_assert_eq(g->size, sizeof(int));
	cr_assert_null(g->init);
	cr_assert_eq(g->flags, 0);

	g = fx_global(info, "g_table");
	cr_assert_not_null(g, "%s: g_table", what);
	cr_assert_eq(g->size, FX_TABLE_LEN * sizeof(float));
	check_init_floats(g, table, 2, what);

	g = fx_global(info, "g_scalar");
	cr_assert_not_null(g, "%s: g_scalar", what);
	cr_assert_eq(g->size, sizeof(double));
	cr_assert_not_null(g->init);
	memcpy(&d, g->init, sizeof d);
	cr_assert_float_eq(d, FX_SCALAR, 0.0);

	g = fx_global(info, "c_coef");
	cr_assert_not_null(g, "%s: c_coef", what);
	cr_assert_eq(g->size, FX_COEF_LEN * sizeof(float));
	cr_assert_eq(g->flags & GS_GLOBAL_CONSTANT, GS_GLOBAL_CONSTANT);
	check_init_floats(g, coef, 3, what);

	g = fx_global(info, "m_val");
	cr_assert_not_null(g, "%s: m_val", what);
	cr_assert_eq(g->size, sizeof(int));
	cr_assert_eq(g->flags & GS_GLOBAL_MANAGED, GS_GLOBAL_MANAGED, "%s: flags %#x", what,
		     g->flags);
	cr_assert_not_null(g->init);
	memcpy(&i, g->init, sizeof i);
	cr_assert_eq(i, FX_MANAGED);

	for (size_t k = 0; k < info->nglobals; k++)
		cr_assert_eq(info->globals[k].flags & GS_GLOBAL_INIT_PARTIAL, 0);
}

static void check_selected(const char *file, unsigned sm, enum gs_image_kind kind)
{
	struct gs_code_info info;
	struct gs_code code;
	char what[64];
	struct fx f;

	snprintf(what, sizeof what, "%s@sm_%u", file, sm);
	fx_load(file, &f);
	cr_assert_eq(gs_image_select(f.data, f.size, sm, &code), 0, "%s", what);
	cr_assert_eq(code.kind, kind, "%s", what);
	cr_assert_eq(gs_code_parse(&code, &info), 0, "%s", what);
	check_fixture_info(&info, what);
	gs_code_info_free(&info);
	cr_assert_eq(info.nkernels, 0);
	gs_code_free(&code);
	fx_free(&f);
}

Test(parse, cubin_sm80)
{
	check_selected("multi.fatbin", 80, GS_IMAGE_CUBIN);
}

Test(parse, cubin_sm90)
{
	check_selected("multi.fatbin", 90, GS_IMAGE_CUBIN);
}

Test(parse, cubin_zstd)
{
	check_selected("zstd.fatbin", 90, GS_IMAGE_CUBIN);
}

Test(parse, cubin_lz4)
{
	check_selected("lz4.fatbin", 80, GS_IMAGE_CUBIN);
}

Test(parse, bare_cubin)
{
	check_selected("sm80.cubin", 80, GS_IMAGE_CUBIN);
}

/* -rdc: relocatable ELF, variables typed STT_LOPROC, device functions with
 * their own .text sections. */
Test(parse, relocatable_cubin)
{
	check_selected("sm90_rdc.cubin", 90, GS_IMAGE_CUBIN);
}

Test(parse, ptx_from_fatbin)
{
	check_selected("multi.fatbin", 100, GS_IMAGE_PTX);
	check_selected("lz4.fatbin", 120, GS_IMAGE_PTX);
}

Test(parse, ptx_text)
{
	check_selected("fixtures.ptx", 80, GS_IMAGE_PTX);
}

/* The cubin's initial values point into the code they came from. */
Test(parse, cubin_init_points_into_code)
{
	struct gs_code_info info;
	const struct gs_global_info *g;
	struct fx f;

	fx_load("sm80.cubin", &f);
	cr_assert_eq(gs_cubin_parse(f.data, f.size, &info), 0);
	g = fx_global(&info, "g_table");
	cr_assert_not_null(g);
	cr_assert((const unsigned char *)g->init > f.data &&
		  (const unsigned char *)g->init + g->size <= f.data + f.size);
	gs_code_info_free(&info);
	fx_free(&f);
}

Test(parse, bad_arguments)
{
	struct gs_code_info info;
	struct gs_code code = { .kind = GS_IMAGE_FATBIN, .data = "x", .size = 2 };

	cr_assert_eq(gs_code_parse(&code, &info), -EINVAL);
	cr_assert_eq(gs_code_parse(NULL, &info), -EINVAL);
	cr_assert_eq(gs_code_parse(&code, NULL), -EINVAL);
	code.kind = GS_IMAGE_CUBIN;
	cr_assert_eq(gs_code_parse(&code, &info), -EINVAL);
	cr_assert_eq(info.nkernels, 0);
	gs_code_info_free(&info);
	gs_code_info_free(NULL);
}
