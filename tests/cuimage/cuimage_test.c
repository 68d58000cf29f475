/* SPDX-License-Identifier: Apache-2.0 */
#include "cuimage_test.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

void fx_load(const char *name, struct fx *f)
{
	const char *dir = getenv("CUIMAGE_FIXTURES");
	char path[4096];
	size_t n, len;
	bool ptx;
	FILE *fp;
	long end;

	cr_assert_not_null(dir, "CUIMAGE_FIXTURES is not set (run through meson test)");
	snprintf(path, sizeof path, "%s/%s", dir, name);
	fp = fopen(path, "rb");
	cr_assert_not_null(fp, "cannot open fixture %s", path);
	cr_assert_eq(fseek(fp, 0, SEEK_END), 0);
	end = ftell(fp);
	cr_assert_gt(end, 0);
	rewind(fp);
	len = strlen(name);
	ptx = len > 4 && strcmp(name + len - 4, ".ptx") == 0;
	f->size = (size_t)end + (ptx ? 1 : 0);
	f->data = malloc(f->size);
	cr_assert_not_null(f->data);
	n = fread(f->data, 1, (size_t)end, fp);
	fclose(fp);
	cr_assert_eq(n, (size_t)end, "short read on %s", path);
	if (ptx)
		f->data[end] = 0;
}

void fx_free(struct fx *f)
{
	free(f->data);
	f->data = NULL;
	f->size = 0;
}

unsigned char *fx_copy(const void *data, size_t len)
{
	/* Exactly len bytes, so ASan catches a read at data[len]; malloc(0)
	 * may answer NULL, which the parsers would take as no image at all. */
	unsigned char *p = malloc(len ? len : 1);

	cr_assert_not_null(p);
	if (len)
		memcpy(p, data, len);
	return p;
}

const struct gs_kernel_info *fx_kernel(const struct gs_code_info *info, const char *name)
{
	for (size_t i = 0; i < info->nkernels; i++)
		if (strcmp(info->kernels[i].name, name) == 0)
			return &info->kernels[i];
	return NULL;
}

const struct gs_global_info *fx_global(const struct gs_code_info *info, const char *name)
{
	for (size_t i = 0; i < info->nglobals; i++)
		if (strcmp(info->globals[i].name, name) == 0)
			return &info->globals[i];
	return NULL;
}

uint64_t fx_rand(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545F4914F6CDD1DULL;
}

static void check_info(const struct gs_code *code, const struct gs_code_info *info)
{
	for (size_t i = 0; i < info->nkernels; i++) {
		const struct gs_kernel_info *k = &info->kernels[i];

		cr_assert_not_null(k->name);
		for (unsigned p = 0; p < k->nparams; p++)
			cr_assert_leq((size_t)k->params[p].offset + k->params[p].size,
				      k->param_bytes);
	}
	for (size_t i = 0; i < info->nglobals; i++) {
		const struct gs_global_info *g = &info->globals[i];

		cr_assert_not_null(g->name);
		cr_assert_leq(g->init_size, g->size);
		if (g->init && code && code->kind == GS_IMAGE_CUBIN) {
			const unsigned char *b = code->data, *p = g->init;

			cr_assert(p >= b && p + g->init_size <= b + code->size,
				  "global %s init outside the code", g->name);
		}
		/* Touch every init byte: ASan checks they are ours. */
		if (g->init) {
			volatile unsigned char sum = 0;

			for (size_t j = 0; j < g->init_size; j++)
				sum += ((const unsigned char *)g->init)[j];
			(void)sum;
		}
	}
}

static void check_ret(int ret, const char *what)
{
	cr_assert(ret == 0 || ret == -EINVAL || ret == -ENOENT,
		  "%s returned %d", what, ret);
}

void fx_exercise(const void *image, size_t size)
{
	static const unsigned sms[] = { 75, 80, 86, 90, 100, 120 };
	struct gs_fatbin_entry ents[8], e;
	struct gs_code_info info;
	enum gs_image_kind kind;
	const void *inner;
	size_t sz, cursor = 0;
	unsigned arch, flags;
	int ret, n;

	ret = gs_image_probe(image, size, &kind, &sz, &inner);
	cr_assert(ret == 0 || ret == -EINVAL);
	if (ret == 0)
		cr_assert_leq(sz, kind == GS_IMAGE_FATBIN_WRAPPER ? SIZE_MAX : size);

	for (int i = 0; i < 10000; i++) {
		ret = gs_fatbin_next(image, size, &cursor, &e);
		cr_assert(ret == 0 || ret == 1 || ret == -EINVAL);
		if (ret != 1)
			break;
		cr_assert_leq((const unsigned char *)e.payload + e.payload_size,
			      (const unsigned char *)image + size);
	}

	for (size_t i = 0; i < sizeof sms / sizeof sms[0]; i++) {
		struct gs_code code;

		ret = gs_image_select(image, size, sms[i], &code);
		check_ret(ret, "gs_image_select");
		/* select can also fail on a payload that does not decompress,
		 * which supports does not look at. */
		if (ret == 0 || ret == -ENOENT)
			cr_assert_eq(gs_image_supports(image, size, sms[i]), ret,
				     "supports and select disagree at sm_%u", sms[i]);
		if (ret != 0)
			continue;
		cr_assert(code.kind == GS_IMAGE_CUBIN || code.kind == GS_IMAGE_PTX);
		ret = gs_code_parse(&code, &info);
		check_ret(ret, "gs_code_parse");
		if (ret == 0)
			check_info(&code, &info);
		gs_code_info_free(&info);
		gs_code_free(&code);
	}

	n = gs_image_archs(image, size, NULL, 0);
	cr_assert(n >= 0 || n == -EINVAL);
	n = gs_image_archs(image, size, ents, 8);
	cr_assert(n == -EINVAL || (n >= 0 && n <= 8));

	ret = gs_cubin_arch(image, size, &arch);
	cr_assert(ret == 0 || ret == -EINVAL);
	ret = gs_ptx_target(image, size, &arch, &flags);
	cr_assert(ret == 0 || ret == -EINVAL);
	ret = gs_cubin_parse(image, size, &info);
	check_ret(ret, "gs_cubin_parse");
	if (ret == 0)
		check_info(NULL, &info);
	gs_code_info_free(&info);
	ret = gs_ptx_parse(image, size, &info);
	check_ret(ret, "gs_ptx_parse");
	if (ret == 0)
		check_info(NULL, &info);
	gs_code_info_free(&info);
}
