/* SPDX-License-Identifier: Apache-2.0 */
/* Untrusted images: truncations, bit flips and edited headers must give
 * -EINVAL (or a still-valid answer), never a crash or a read out of
 * bounds. Run under ASan to mean anything. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "cuimage_test.h"

static const char *const tiny_files[] = {
	"tiny_zstd.fatbin", "tiny_lz4.fatbin", "tiny.cubin", "tiny.ptx",
};

static void put16(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
}

static void put32(unsigned char *p, uint32_t v)
{
	put16(p, (uint16_t)v);
	put16(p + 2, (uint16_t)(v >> 16));
}

static void put64(unsigned char *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}

static uint64_t get64(const unsigned char *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

Test(malformed, every_truncation)
{
	for (size_t i = 0; i < sizeof tiny_files / sizeof tiny_files[0]; i++) {
		struct fx f;

		fx_load(tiny_files[i], &f);
		for (size_t len = 0; len < f.size; len++) {
			unsigned char *p = fx_copy(f.data, len);

			cr_assert_eq(gs_image_probe(p, len, NULL, NULL, NULL), -EINVAL,
				     "%s accepted at %zu of %zu bytes", tiny_files[i], len,
				     f.size);
			fx_exercise(p, len);
			free(p);
		}
		fx_free(&f);
	}
}

/* A fatbin whose header agrees with the shorter length: the entries, not
 * the header, run past the end. */
Test(malformed, truncated_entries)
{
	static const char *const files[] = { "tiny_zstd.fatbin", "tiny_lz4.fatbin" };

	for (size_t i = 0; i < 2; i++) {
		struct fx f;

		struct gs_fatbin_entry e;
		size_t cursor = 0, first_end;

		fx_load(files[i], &f);
		cr_assert_eq(gs_fatbin_next(f.data, f.size, &cursor, &e), 1);
		first_end = cursor;
		for (size_t len = 16; len < f.size; len++) {
			unsigned char *p = fx_copy(f.data, len);
			struct gs_code code;
			int ret;

			put64(p + 8, len - 16);
			cr_assert_eq(gs_image_probe(p, len, NULL, NULL, NULL), 0);
			/* Cut right after the sm_80 cubin, the fatbin is whole,
			 * just shorter. */
			ret = gs_image_select(p, len, 80, &code);
			cr_assert_eq(ret, len == first_end ? 0 : len == 16 ? -ENOENT : -EINVAL,
				     "%s at %zu: %d", files[i], len, ret);
			gs_code_free(&code);
			fx_exercise(p, len);
			free(p);
		}
		fx_free(&f);
	}
}

/* PTX cut anywhere but still NUL-terminated: a prefix of real text. */
Test(malformed, ptx_prefixes)
{
	struct fx f;

	fx_load("tiny.ptx", &f);
	for (size_t len = 0; len < f.size; len++) {
		unsigned char *p = fx_copy(f.data, len + 1);

		p[len] = 0;
		fx_exercise(p, len + 1);
		free(p);
	}
	fx_free(&f);
}

/* Byte ranges worth more flips than the payload: headers and tables. */
struct range {
	size_t off, len;
};

static size_t hot_ranges(const struct fx *f, struct range *r, size_t max)
{
	struct gs_fatbin_entry e;
	enum gs_image_kind kind;
	size_t n = 0, cursor = 0, last = 16;

	r[n++] = (struct range){ 0, f->size < 64 ? f->size : 64 };
	if (gs_image_probe(f->data, f->size, &kind, NULL, NULL) != 0)
		return n;
	if (kind == GS_IMAGE_FATBIN) {
		while (n < max && gs_fatbin_next(f->data, f->size, &cursor, &e) == 1) {
			r[n++] = (struct range){ last, 0x80 };
			last = cursor;
		}
	} else if (kind == GS_IMAGE_CUBIN) {
		uint64_t shoff = get64(f->data + 40);

		if (shoff < f->size)
			r[n++] = (struct range){ shoff, f->size - shoff };
	}
	for (size_t i = 0; i < n; i++)
		if (r[i].off + r[i].len > f->size)
			r[i].len = f->size - r[i].off;
	return n;
}

/* CUIMAGE_FUZZ_SCALE=N runs N times the iterations (for a longer soak
 * than CI needs). */
static unsigned scaled(unsigned iterations)
{
	const char *s = getenv("CUIMAGE_FUZZ_SCALE");
	unsigned long k = s ? strtoul(s, NULL, 10) : 1;

	return iterations * (unsigned)(k ? k : 1);
}

static void flip_bits(const char *file, unsigned iterations, uint64_t seed)
{
	struct range hot[16];
	uint64_t rng = seed;
	size_t nhot;
	struct fx f;

	fx_load(file, &f);
	nhot = hot_ranges(&f, hot, 16);
	iterations = scaled(iterations);
	for (unsigned it = 0; it < iterations; it++) {
		unsigned char *p = fx_copy(f.data, f.size);
		unsigned flips = 1 + (unsigned)(fx_rand(&rng) % 4);

		for (unsigned k = 0; k < flips; k++) {
			size_t pos;

			if (fx_rand(&rng) & 1) {
				const struct range *r = &hot[fx_rand(&rng) % nhot];

				if (!r->len)
					continue;
				pos = r->off + fx_rand(&rng) % r->len;
			} else {
				pos = fx_rand(&rng) % f.size;
			}
			p[pos] ^= (unsigned char)(1u << (fx_rand(&rng) % 8));
		}
		fx_exercise(p, f.size);
		free(p);
	}
	fx_free(&f);
}

Test(malformed, bit_flips_fatbin_zstd, .timeout = 300)
{
	flip_bits("tiny_zstd.fatbin", 3000, 0x5eed0001);
}

Test(malformed, bit_flips_fatbin_lz4, .timeout = 300)
{
	flip_bits("tiny_lz4.fatbin", 3000, 0x5eed0002);
}

Test(malformed, bit_flips_cubin, .timeout = 300)
{
	flip_bits("tiny.cubin", 3000, 0x5eed0003);
}

Test(malformed, bit_flips_multi, .timeout = 300)
{
	flip_bits("multi.fatbin", 500, 0x5eed0004);
	flip_bits("sm90_rdc.cubin", 500, 0x5eed0005);
}

/* PTX with bytes replaced by the characters its grammar is made of. */
Test(malformed, ptx_mutations, .timeout = 300)
{
	static const char alphabet[] = "{}[](),;=.+-*/\"\n 0123456789abcfdxU_%$";
	static const char *const files[] = { "tiny.ptx", "fixtures.ptx" };
	uint64_t rng = 0x5eed0006;

	for (size_t i = 0; i < 2; i++) {
		struct fx f;

		fx_load(files[i], &f);
		for (unsigned it = 0; it < scaled(2000); it++) {
			unsigned char *p = fx_copy(f.data, f.size);
			unsigned n = 1 + (unsigned)(fx_rand(&rng) % 6);

			/* Keep the final NUL; a mutation may add an earlier one. */
			for (unsigned k = 0; k < n; k++)
				p[fx_rand(&rng) % (f.size - 1)] =
					(unsigned char)alphabet[fx_rand(&rng) % sizeof alphabet];
			fx_exercise(p, f.size);
			free(p);
		}
		fx_free(&f);
	}
}

/* multi.fatbin's first entry header starts right after the 16-byte fatbin
 * header. */
#define ENTRY0 16

Test(malformed, edited_fatbin_headers)
{
	struct gs_fatbin_entry e;
	struct gs_code code;
	size_t cursor;
	unsigned char *p;
	struct fx f;

	fx_load("multi.fatbin", &f);

	/* Both compression flags: no way to tell which. */
	p = fx_copy(f.data, f.size);
	put32(p + ENTRY0 + 0x28, 0x11 | GS_FATBIN_FLAG_COMPRESSED_LZ4 |
					  GS_FATBIN_FLAG_COMPRESSED_ZSTD);
	cr_assert_eq(gs_image_select(p, f.size, 80, &code), -EINVAL);
	free(p);

	/* An entry header too short for the fields it must hold. */
	p = fx_copy(f.data, f.size);
	put32(p + ENTRY0 + 4, 0x20);
	cursor = 0;
	cr_assert_eq(gs_fatbin_next(p, f.size, &cursor, &e), -EINVAL);
	cr_assert_eq(gs_image_select(p, f.size, 90, &code), -EINVAL);
	cr_assert_eq(gs_image_archs(p, f.size, NULL, 0), -EINVAL);
	free(p);

	/* A payload running past the fatbin. */
	p = fx_copy(f.data, f.size);
	put64(p + ENTRY0 + 8, f.size);
	cursor = 0;
	cr_assert_eq(gs_fatbin_next(p, f.size, &cursor, &e), -EINVAL);
	free(p);

	/* The fatbin claiming more than there is. */
	p = fx_copy(f.data, f.size);
	put64(p + 8, f.size);
	cr_assert_eq(gs_image_probe(p, f.size, NULL, NULL, NULL), -EINVAL);
	free(p);

	/* A kind the driver does not load (8 is LTO IR) is skipped. */
	p = fx_copy(f.data, f.size);
	cursor = 0;
	for (int i = 0; i < 2; i++)
		cr_assert_eq(gs_fatbin_next(p, f.size, &cursor, &e), 1);
	put16(p + cursor, GS_FATBIN_KIND_LTOIR);
	cr_assert_eq(gs_image_select(p, f.size, 100, &code), -ENOENT);
	cr_assert_eq(gs_image_select(p, f.size, 90, &code), 0);
	gs_code_free(&code);
	free(p);

	/* An uncompressed ELF entry that is not an ELF. */
	p = fx_copy(f.data, f.size);
	p[ENTRY0 + 0x40] = 'X';
	cr_assert_eq(gs_image_select(p, f.size, 80, &code), -EINVAL);
	free(p);
	fx_free(&f);
}

static void edit_uncompressed_size(const char *file, int64_t delta)
{
	struct gs_code code;
	unsigned char *p;
	struct fx f;

	fx_load(file, &f);
	p = fx_copy(f.data, f.size);
	put64(p + ENTRY0 + 0x38, get64(p + ENTRY0 + 0x38) + (uint64_t)delta);
	cr_assert_eq(gs_image_select(p, f.size, 80, &code), -EINVAL, "%s %+lld", file,
		     (long long)delta);
	/* The other entries are still fine. */
	cr_assert_eq(gs_image_select(p, f.size, 90, &code), 0);
	gs_code_free(&code);
	/* Absurd sizes are refused before any allocation. */
	put64(p + ENTRY0 + 0x38, UINT64_MAX / 2);
	cr_assert_eq(gs_image_select(p, f.size, 80, &code), -EINVAL);
	/* A compressed size larger than the stored payload. */
	memcpy(p, f.data, f.size);
	put32(p + ENTRY0 + 0x10, (uint32_t)get64(p + ENTRY0 + 8) + 1);
	cr_assert_eq(gs_image_select(p, f.size, 80, &code), -EINVAL);
	free(p);
	fx_free(&f);
}

Test(malformed, edited_uncompressed_size)
{
	edit_uncompressed_size("zstd.fatbin", 1);
	edit_uncompressed_size("zstd.fatbin", -1);
	edit_uncompressed_size("lz4.fatbin", 1);
	edit_uncompressed_size("lz4.fatbin", -1);
}

/* Finds the first EIATTR_KPARAM_INFO record (SVAL 0x04, attr 0x17, size
 * 12) in a cubin. */
static unsigned char *find_kparam(unsigned char *p, size_t n)
{
	static const unsigned char rec[] = { 0x04, 0x17, 0x0c, 0x00 };

	for (size_t i = 0; i + sizeof rec + 12 <= n; i++)
		if (memcmp(p + i, rec, sizeof rec) == 0)
			return p + i;
	return NULL;
}

Test(malformed, edited_cubin)
{
	struct gs_code_info info;
	unsigned char *p, *r;
	struct fx f;

	fx_load("tiny.cubin", &f);

	p = fx_copy(f.data, f.size);
	put16(p + 18, 62); /* EM_X86_64 */
	cr_assert_eq(gs_image_probe(p, f.size, NULL, NULL, NULL), -EINVAL);
	free(p);

	p = fx_copy(f.data, f.size);
	put16(p + 58, 40); /* e_shentsize */
	cr_assert_eq(gs_image_probe(p, f.size, NULL, NULL, NULL), -EINVAL);
	free(p);

	/* A section's data beyond the end of the image. */
	p = fx_copy(f.data, f.size);
	put64(p + get64(p + 40) + 64 + 24, f.size);
	cr_assert_eq(gs_image_probe(p, f.size, NULL, NULL, NULL), -EINVAL);
	cr_assert_eq(gs_cubin_parse(p, f.size, &info), -EINVAL);
	free(p);

	/* The kernel's parameter records. */
	p = fx_copy(f.data, f.size);
	r = find_kparam(p, f.size);
	cr_assert_not_null(r, "no KPARAM_INFO in tiny.cubin");
	cr_assert_eq(gs_cubin_parse(p, f.size, &info), 0);
	cr_assert_eq(fx_kernel(&info, "tiny")->nparams, 2);
	gs_code_info_free(&info);
	put16(r + 2, 0xffff); /* record longer than its section */
	cr_assert_eq(gs_cubin_parse(p, f.size, &info), -EINVAL);
	put16(r + 2, 12);
	put16(r + 8, 7); /* ordinal 7 of 2 */
	cr_assert_eq(gs_cubin_parse(p, f.size, &info), -EINVAL);
	put16(r + 8, 0);
	r[0] = 9; /* unknown record format */
	cr_assert_eq(gs_cubin_parse(p, f.size, &info), -EINVAL);
	free(p);
	fx_free(&f);
}
