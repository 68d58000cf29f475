/* SPDX-License-Identifier: Apache-2.0 */
/* gs_image_probe, gs_fatbin_next, gs_image_archs on nvcc's own output. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "cuimage_test.h"

static const struct {
	const char *file;
	enum gs_image_kind kind;
} probe_cases[] = {
	{ "multi.fatbin", GS_IMAGE_FATBIN },     { "default.fatbin", GS_IMAGE_FATBIN },
	{ "zstd.fatbin", GS_IMAGE_FATBIN },      { "lz4.fatbin", GS_IMAGE_FATBIN },
	{ "ptxonly.fatbin", GS_IMAGE_FATBIN },   { "archspec.fatbin", GS_IMAGE_FATBIN },
	{ "archs.fatbin", GS_IMAGE_FATBIN },     { "tiny_zstd.fatbin", GS_IMAGE_FATBIN },
	{ "tiny_lz4.fatbin", GS_IMAGE_FATBIN },  { "sm80.cubin", GS_IMAGE_CUBIN },
	{ "sm90_rdc.cubin", GS_IMAGE_CUBIN },    { "tiny.cubin", GS_IMAGE_CUBIN },
	{ "fixtures.ptx", GS_IMAGE_PTX },        { "tiny.ptx", GS_IMAGE_PTX },
};

Test(probe, size_is_file_size)
{
	for (size_t i = 0; i < sizeof probe_cases / sizeof probe_cases[0]; i++) {
		enum gs_image_kind kind;
		const void *inner;
		struct fx f;
		size_t size;

		fx_load(probe_cases[i].file, &f);
		cr_assert_eq(gs_image_probe(f.data, f.size, &kind, &size, &inner), 0,
			     "%s", probe_cases[i].file);
		cr_assert_eq(kind, probe_cases[i].kind, "%s", probe_cases[i].file);
		/* For PTX the size counts the NUL fx_load appended. */
		cr_assert_eq(size, f.size, "%s: probe %zu, file %zu", probe_cases[i].file,
			     size, f.size);
		cr_assert_eq(inner, f.data);
		fx_free(&f);
	}
}

/* cuModuleLoadData gives no length: the image's own headers must bound it,
 * whatever follows it in memory. */
Test(probe, size_without_bound)
{
	for (size_t i = 0; i < sizeof probe_cases / sizeof probe_cases[0]; i++) {
		unsigned char *big;
		struct fx f;
		size_t size;

		fx_load(probe_cases[i].file, &f);
		big = malloc(f.size + 4096);
		cr_assert_not_null(big);
		memcpy(big, f.data, f.size);
		memset(big + f.size, 0x5a, 4096);
		cr_assert_eq(gs_image_probe(big, f.size + 4096, NULL, &size, NULL), 0);
		cr_assert_eq(size, f.size, "%s", probe_cases[i].file);
		cr_assert_eq(gs_image_probe(big, SIZE_MAX, NULL, &size, NULL), 0);
		cr_assert_eq(size, f.size, "%s", probe_cases[i].file);
		free(big);
		fx_free(&f);
	}
}

/* The relocatable cubin's .nv.global has a size but no bytes in the file. */
Test(probe, rdc_cubin_nobits)
{
	struct fx f;
	size_t size;

	fx_load("sm90_rdc.cubin", &f);
	cr_assert_eq(gs_image_probe(f.data, f.size, NULL, &size, NULL), 0);
	cr_assert_eq(size, f.size);
	fx_free(&f);
}

struct wrapper {
	int magic;
	int version;
	const void *data;
	void *filename_or_fatbins;
};

Test(probe, fatbin_wrapper)
{
	struct wrapper w = { (int)GS_FATBIN_WRAPPER_MAGIC, 1, NULL, NULL };
	enum gs_image_kind kind;
	struct gs_code code;
	const void *inner;
	struct fx f, c;
	size_t size;

	fx_load("multi.fatbin", &f);
	w.data = f.data;
	cr_assert_eq(gs_image_probe(&w, sizeof w, &kind, &size, &inner), 0);
	cr_assert_eq(kind, GS_IMAGE_FATBIN_WRAPPER);
	cr_assert_eq(size, f.size);
	cr_assert_eq(inner, f.data);
	cr_assert_eq(gs_image_probe(&w, SIZE_MAX, &kind, &size, &inner), 0);

	cr_assert_eq(gs_image_select(&w, sizeof w, 80, &code), 0);
	cr_assert_eq(code.kind, GS_IMAGE_CUBIN);
	cr_assert_eq(code.arch, 80);
	gs_code_free(&code);
	cr_assert_eq(gs_image_archs(&w, sizeof w, NULL, 0), 3);

	/* Version 2 (-rdc prelinked) still points at a fatbin. */
	w.version = 2;
	cr_assert_eq(gs_image_probe(&w, sizeof w, &kind, &size, &inner), 0);
	w.version = 3;
	cr_assert_eq(gs_image_probe(&w, sizeof w, &kind, &size, &inner), -EINVAL);
	cr_assert_eq(kind, GS_IMAGE_UNKNOWN);
	w.version = 1;
	cr_assert_eq(gs_image_probe(&w, 12, &kind, &size, &inner), -EINVAL);
	w.data = NULL;
	cr_assert_eq(gs_image_probe(&w, sizeof w, &kind, &size, &inner), -EINVAL);

	/* A wrapper must point at a fatbin, not a cubin. */
	fx_load("tiny.cubin", &c);
	w.data = c.data;
	cr_assert_eq(gs_image_probe(&w, sizeof w, &kind, &size, &inner), -EINVAL);
	fx_free(&c);
	fx_free(&f);
}

Test(probe, ptx_text)
{
	static const char ok1[] = "\n\t// a comment\n/* another\n */ .version 8.0\n.target sm_80\n";
	static const char ok2[] = ".target sm_75\n";
	static const char no1[] = "hello world";
	static const char no2[] = "/* unterminated .version 8.0";
	static const char no3[] = ".versionX 8.0";
	enum gs_image_kind kind;
	size_t size;

	cr_assert_eq(gs_image_probe(ok1, sizeof ok1, &kind, &size, NULL), 0);
	cr_assert_eq(kind, GS_IMAGE_PTX);
	cr_assert_eq(size, sizeof ok1);
	cr_assert_eq(gs_image_probe(ok2, SIZE_MAX, &kind, &size, NULL), 0);
	cr_assert_eq(size, sizeof ok2);
	cr_assert_eq(gs_image_probe(no1, sizeof no1, &kind, &size, NULL), -EINVAL);
	cr_assert_eq(gs_image_probe(no2, sizeof no2, &kind, &size, NULL), -EINVAL);
	cr_assert_eq(gs_image_probe(no3, sizeof no3, &kind, &size, NULL), -EINVAL);
	/* No NUL within the bound. */
	cr_assert_eq(gs_image_probe(ok1, sizeof ok1 - 1, &kind, &size, NULL), -EINVAL);
	cr_assert_eq(gs_image_probe(NULL, 100, &kind, &size, NULL), -EINVAL);
	cr_assert_eq(gs_image_probe(ok1, 0, &kind, &size, NULL), -EINVAL);
}

struct expect_entry {
	int kind;
	unsigned arch;
};

static void check_walk(const char *file, unsigned comp_elf, unsigned comp_ptx)
{
	static const struct expect_entry want[] = { { 2, 80 }, { 2, 90 }, { 1, 90 } };
	struct gs_fatbin_entry e;
	size_t cursor = 0, n = 0;
	struct fx f;
	int ret;

	fx_load(file, &f);
	while ((ret = gs_fatbin_next(f.data, f.size, &cursor, &e)) == 1) {
		unsigned comp = e.kind == 1 ? comp_ptx : comp_elf;

		cr_assert_lt(n, 3, "%s: too many entries", file);
		cr_assert_eq(e.kind, want[n].kind, "%s entry %zu", file, n);
		cr_assert_eq(e.arch, want[n].arch, "%s entry %zu", file, n);
		cr_assert_eq(e.flags & (GS_FATBIN_FLAG_COMPRESSED_LZ4 |
					GS_FATBIN_FLAG_COMPRESSED_ZSTD), comp,
			     "%s entry %zu flags %#x", file, n, e.flags);
		cr_assert(e.flags & GS_FATBIN_FLAG_64BIT);
		if (comp) {
			cr_assert_lt(e.payload_size, e.uncompressed_size);
		} else {
			cr_assert_eq(e.payload_size, e.uncompressed_size);
			if (e.kind == 2)
				cr_assert_eq(memcmp(e.payload, "\177ELF", 4), 0);
		}
		if (e.kind == 1) {
			/* CUDA 13.0 writes PTX ISA 9.0. */
			cr_assert_geq(e.code_major, 9);
		}
		n++;
	}
	cr_assert_eq(ret, 0, "%s", file);
	cr_assert_eq(n, 3, "%s", file);
	cr_assert_eq(cursor, f.size);
	fx_free(&f);
}

Test(fatbin, walk_uncompressed)
{
	check_walk("multi.fatbin", 0, 0);
}

Test(fatbin, walk_default_compresses_ptx)
{
	check_walk("default.fatbin", 0, GS_FATBIN_FLAG_COMPRESSED_ZSTD);
}

Test(fatbin, walk_zstd)
{
	check_walk("zstd.fatbin", GS_FATBIN_FLAG_COMPRESSED_ZSTD, GS_FATBIN_FLAG_COMPRESSED_ZSTD);
}

Test(fatbin, walk_lz4)
{
	check_walk("lz4.fatbin", GS_FATBIN_FLAG_COMPRESSED_LZ4, GS_FATBIN_FLAG_COMPRESSED_LZ4);
}

Test(fatbin, walk_arch_specific)
{
	struct gs_fatbin_entry e[4];
	struct fx f;

	fx_load("archspec.fatbin", &f);
	cr_assert_eq(gs_image_archs(f.data, f.size, e, 4), 2);
	for (int i = 0; i < 2; i++) {
		cr_assert_eq(e[i].arch, 90);
		cr_assert(e[i].flags & GS_FATBIN_FLAG_ARCH_SPECIFIC);
	}
	fx_free(&f);
}

Test(archs, counts_and_limits)
{
	struct gs_fatbin_entry e[4];
	struct fx f;

	fx_load("multi.fatbin", &f);
	cr_assert_eq(gs_image_archs(f.data, f.size, NULL, 0), 3);
	cr_assert_eq(gs_image_archs(f.data, f.size, e, 4), 3);
	cr_assert_eq(e[0].arch, 80);
	cr_assert_eq(e[2].kind, GS_FATBIN_KIND_PTX);
	memset(e, 0, sizeof e);
	cr_assert_eq(gs_image_archs(f.data, f.size, e, 1), 1);
	cr_assert_eq(e[0].arch, 80);
	cr_assert_eq(e[1].arch, 0, "wrote past max");
	cr_assert_eq(gs_image_archs(f.data, f.size, NULL, 2), -EINVAL);
	fx_free(&f);

	fx_load("sm80.cubin", &f);
	cr_assert_eq(gs_image_archs(f.data, f.size, e, 4), 1);
	cr_assert_eq(e[0].kind, GS_FATBIN_KIND_ELF);
	cr_assert_eq(e[0].arch, 80);
	fx_free(&f);

	fx_load("fixtures.ptx", &f);
	cr_assert_eq(gs_image_archs(f.data, f.size, e, 4), 1);
	cr_assert_eq(e[0].kind, GS_FATBIN_KIND_PTX);
	cr_assert_eq(e[0].arch, 80);
	fx_free(&f);
}

/* The fatbin built for the test_archs option holds a cubin for each. */
Test(archs, configured_archs)
{
	const char *list = getenv("CUIMAGE_TEST_ARCHS");
	struct gs_fatbin_entry e[32];
	char *copy, *tok, *save = NULL;
	unsigned high = 0;
	struct fx f;
	int n;

	cr_assert_not_null(list);
	fx_load("archs.fatbin", &f);
	n = gs_image_archs(f.data, f.size, e, 32);
	cr_assert_gt(n, 0);
	copy = strdup(list);
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		unsigned sm = (unsigned)strtoul(strstr(tok, "sm_") + 3, NULL, 10);
		struct gs_code code;
		bool found = false;

		for (int i = 0; i < n; i++)
			found |= e[i].kind == GS_FATBIN_KIND_ELF && e[i].arch == sm;
		cr_assert(found, "no cubin for sm_%u", sm);
		cr_assert_eq(gs_image_select(f.data, f.size, sm, &code), 0);
		cr_assert_eq(code.kind, GS_IMAGE_CUBIN);
		cr_assert_eq(code.arch, sm);
		gs_code_free(&code);
		if (sm > high)
			high = sm;
	}
	free(copy);
	/* nvcc orders entries as it likes: find the PTX anywhere. */
	bool ptx = false;

	for (int i = 0; i < n; i++)
		ptx |= e[i].kind == GS_FATBIN_KIND_PTX && e[i].arch == high;
	cr_assert(ptx, "no PTX for sm_%u", high);
	fx_free(&f);
}
