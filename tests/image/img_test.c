/* SPDX-License-Identifier: Apache-2.0 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "img_test.h"

const struct img_extent_spec img_std[] = {
	{0x10000000, (200u << 10) + 123, FILL_RANDOM, 1},   /* odd size: 4 chunks */
	{0x20000000, 256u << 10, FILL_HOLEY, 2},            /* chunk 1 a hole */
	{0x30000000, 128u << 10, FILL_ZERO, 3},             /* all holes */
	{0x30100000, 1, FILL_TEXT, 4},                      /* one byte */
	{0x40000000, 192u << 10, FILL_MIXED, 5},            /* chunk 0 compressible */
};
const unsigned img_std_n = sizeof(img_std) / sizeof(img_std[0]);

char *img_scratch(const char *where)
{
	char *tmpl, *out;
	const char *base;

	if (strcmp(where, "tmpfs") == 0) {
		struct stat st;

		if (stat("/dev/shm", &st) < 0 || !S_ISDIR(st.st_mode))
			return NULL;
		base = "/dev/shm";
	} else {
		base = getenv("IMG_TEST_DIR");
		if (!base)
			base = ".";
	}
	cr_assert(asprintf(&tmpl, "%s/imgtest-XXXXXX", base) > 0);
	cr_assert(mkdtemp(tmpl), "mkdtemp %s: %m", tmpl);
	cr_assert(asprintf(&out, "%s/img", tmpl) > 0);
	free(tmpl);
	return out;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	remove(path);
	return 0;
}

void img_rm_rf(const char *path)
{
	nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

void img_scratch_free(char *dir)
{
	char *slash = strrchr(dir, '/');
	char *tmp;

	cr_assert(asprintf(&tmp, "%s.tmp", dir) > 0);
	img_rm_rf(tmp);
	free(tmp);
	*slash = '\0';
	img_rm_rf(dir);
	free(dir);
}

static uint64_t splitmix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static unsigned char byte_at(const struct img_extent_spec *s, uint64_t off)
{
	static const char text[] = "gpuswap keeps every device address; ";
	enum img_fill f = s->fill;

	if (f == FILL_ZERO)
		return 0;
	if (f == FILL_HOLEY && off >= (64u << 10) && off < (128u << 10))
		return 0;
	if (f == FILL_TEXT || (f == FILL_MIXED && off < (64u << 10)))
		return (unsigned char)text[off % (sizeof(text) - 1)];
	return (unsigned char)(splitmix(((uint64_t)s->seed << 40) ^ (off / 8)) >> (8 * (off % 8)));
}

void img_fill(const struct img_extent_spec *spec, uint64_t offset, void *buf, size_t len)
{
	unsigned char *p = buf;

	for (size_t i = 0; i < len; i++)
		p[i] = byte_at(spec, offset + i);
}

struct staging {
	void *buf[4];
	bool busy[4];
	unsigned callbacks;
};

static void on_done(void *arg, const struct gs_image_io *io)
{
	struct staging *s = arg;

	cr_assert_eq(io->status, 0, "write status %d", io->status);
	for (int i = 0; i < 4; i++)
		if (s->buf[i] == io->buf)
			s->busy[i] = false;
	s->callbacks++;
}

static const char module_a[] = "module A: pretend this is a cubin";

void img_write(const char *dir, const struct gs_image_write_opts *opts,
	       const struct img_extent_spec *ext, unsigned n)
{
	struct gs_image_writer *w;
	struct staging s = {0};
	struct gs_image_device dev[2] = {
		{.ordinal = 0, .uuid = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		 .name = "Simulated H100", .cc_major = 9, .cc_minor = 0, .total_mem = 80ull << 30},
		{.ordinal = 1, .uuid = {0xde, 0xad, 0xbe, 0xef}, .name = "Simulated A100",
		 .cc_major = 8, .cc_minor = 0, .total_mem = 40ull << 30},
	};
	struct gs_image_source src = {.host = "testhost", .pid = 4242, .driver_version = 13000,
				      .ndevices = 2, .devices = dev};
	unsigned char *module_b;
	uint32_t chunk, idx_a, idx_b, idx_a2, expected_callbacks = 0;
	char *err = NULL;
	json_t *state;
	int ret;

	ret = gs_image_writer_open(dir, opts, &w, &err);
	cr_assert_eq(ret, 0, "writer_open %s: %s", dir, err);
	chunk = gs_image_write_chunk_size(w);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(posix_memalign(&s.buf[i], 4096, chunk), 0);
	cr_assert_eq(gs_image_set_source(w, &src), 0);
	module_b = malloc(5000);
	for (int i = 0; i < 5000; i++)
		module_b[i] = (unsigned char)(i * 7);
	cr_assert_eq(gs_image_add_module(w, module_a, sizeof(module_a), &idx_a), 0);
	cr_assert_eq(gs_image_add_module(w, module_b, 5000, &idx_b), 0);
	cr_assert_eq(gs_image_add_module(w, module_a, sizeof(module_a), &idx_a2), 0);
	cr_assert_eq(idx_a, 0);
	cr_assert_eq(idx_b, 1);
	cr_assert_eq(idx_a2, 0, "identical module bytes are stored once");
	free(module_b);
	for (unsigned x = 0; x < n; x++) {
		uint32_t id;

		ret = gs_image_add_extent(w, ext[x].va, ext[x].size, &id);
		cr_assert_eq(ret, 0, "add_extent: %s", gs_image_writer_errmsg(w));
		cr_assert_eq(id, x);
		/* Backwards, to show that chunk order is free. */
		for (uint64_t k = (ext[x].size + chunk - 1) / chunk; k-- > 0;) {
			uint64_t off = k * chunk;
			size_t len = ext[x].size - off < chunk ? ext[x].size - off : chunk;
			int b = -1;

			while (b < 0) {
				for (int i = 0; i < 4 && b < 0; i++)
					if (!s.busy[i])
						b = i;
				if (b < 0)
					cr_assert_geq(gs_image_write_reap(w, true), 0);
			}
			img_fill(&ext[x], off, s.buf[b], len);
			s.busy[b] = true;
			ret = gs_image_write_chunk(w, id, off, s.buf[b], len, on_done, &s);
			cr_assert_eq(ret, 0, "write_chunk: %s", gs_image_writer_errmsg(w));
			expected_callbacks++;
		}
	}
	cr_assert_eq(gs_image_write_flush(w), 0, "%s", gs_image_writer_errmsg(w));
	cr_assert_eq(s.callbacks, expected_callbacks);
	state = json_pack("{s:[{s:i, s:s}], s:[i,i]}", "contexts", "device", 0, "flags", "sched_auto",
			  "modules", idx_a, idx_b);
	ret = gs_image_commit(w, state);
	cr_assert_eq(ret, 0, "commit: %s", gs_image_writer_errmsg(w));
	json_decref(state);
	gs_image_writer_close(w);
	for (int i = 0; i < 4; i++)
		free(s.buf[i]);
}

struct check {
	const struct img_extent_spec *ext;
	unsigned char *expect;
	void *buf[4];
	bool busy[4];
	unsigned bad, zero;
};

static void on_read(void *arg, const struct gs_image_io *io)
{
	struct check *c = arg;

	cr_assert_eq(io->status, 0, "read status %d", io->status);
	img_fill(&c->ext[io->extent], io->offset, c->expect, io->len);
	if (memcmp(c->expect, io->buf, io->len) != 0)
		c->bad++;
	if (io->zero)
		c->zero++;
	for (int i = 0; i < 4; i++)
		if (c->buf[i] == io->buf)
			c->busy[i] = false;
}

void img_check(const char *dir, const struct gs_image_read_opts *opts,
	       const struct img_extent_spec *ext, unsigned n)
{
	struct gs_image_reader *r;
	struct check c = {.ext = ext};
	char *err = NULL;
	uint32_t chunk;
	void *bytes;
	size_t size;
	int ret;

	ret = gs_image_reader_open(dir, opts, &r, &err);
	cr_assert_eq(ret, 0, "reader_open: %s", err);
	chunk = gs_image_read_chunk_size(r);
	c.expect = malloc(chunk);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(posix_memalign(&c.buf[i], 4096, chunk), 0);
	cr_assert_eq(gs_image_extent_count(r), n);
	for (unsigned x = 0; x < n; x++) {
		struct gs_image_extent e;
		uint32_t found;

		cr_assert_eq(gs_image_extent_get(r, x, &e), 0);
		cr_assert_eq(e.va, ext[x].va);
		cr_assert_eq(e.size, ext[x].size);
		cr_assert_eq(e.file_offset % 4096, 0);
		cr_assert_eq(gs_image_extent_find(r, ext[x].va + ext[x].size - 1, &found), 0);
		cr_assert_eq(found, x);
		for (uint64_t off = 0; off < e.size; off += chunk) {
			size_t len = e.size - off < chunk ? e.size - off : chunk;
			int b = -1;

			while (b < 0) {
				for (int i = 0; i < 4 && b < 0; i++)
					if (!c.busy[i])
						b = i;
				if (b < 0)
					cr_assert_geq(gs_image_read_reap(r, true), 0);
			}
			c.busy[b] = true;
			memset(c.buf[b], 0xa5, len);
			ret = gs_image_read_chunk(r, x, off, c.buf[b], len, on_read, &c);
			cr_assert_eq(ret, 0, "read_chunk: %s", gs_image_reader_errmsg(r));
		}
	}
	cr_assert_eq(gs_image_read_flush(r), 0);
	cr_assert_eq(c.bad, 0, "%u chunks differ", c.bad);
	cr_assert_eq(gs_image_module_count(r), 2);
	cr_assert_eq(gs_image_read_module(r, 0, &bytes, &size), 0, "%s", gs_image_reader_errmsg(r));
	cr_assert_eq(size, sizeof(module_a));
	cr_assert_eq(memcmp(bytes, module_a, size), 0);
	free(bytes);
	cr_assert_eq(gs_image_read_module(r, 1, &bytes, &size), 0);
	cr_assert_eq(size, 5000);
	free(bytes);
	gs_image_reader_close(r);
	free(c.expect);
	for (int i = 0; i < 4; i++)
		free(c.buf[i]);
}

int img_open_err(const char *dir, char **msg)
{
	struct gs_image_reader *r = NULL;
	int ret = gs_image_reader_open(dir, NULL, &r, msg);

	if (ret == 0) {
		gs_image_reader_close(r);
		*msg = strdup("");
	}
	return ret;
}

static char *join(const char *dir, const char *name)
{
	char *p;

	cr_assert(asprintf(&p, "%s/%s", dir, name) > 0);
	return p;
}

void *img_read_file(const char *dir, const char *name, size_t *len)
{
	char *p = join(dir, name);
	FILE *f = fopen(p, "rb");
	char *buf;
	long n;

	cr_assert(f, "open %s: %m", p);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	buf = malloc((size_t)n + 1);
	cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	free(p);
	*len = (size_t)n;
	return buf;
}

void img_write_file(const char *dir, const char *name, const void *buf, size_t len)
{
	char *p = join(dir, name);
	FILE *f = fopen(p, "wb");

	cr_assert(f, "open %s: %m", p);
	cr_assert_eq(fwrite(buf, 1, len, f), len);
	fclose(f);
	free(p);
}

static void put_le64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

/* Header layout from docs/image-format.md: manifest size at 40, its XXH3
 * at 48, the header's own XXH3 (of bytes 0..55) at 56. */
void img_fix_manifest_sum(const char *dir)
{
	size_t len;
	char *text = img_read_file(dir, "manifest.json", &len);
	char *p = join(dir, "memory.img");
	unsigned char h[64];
	int fd = open(p, O_RDWR);

	cr_assert(fd >= 0);
	cr_assert_eq(pread(fd, h, 64, 0), 64);
	put_le64(h + 40, len);
	put_le64(h + 48, XXH3_64bits(text, len));
	put_le64(h + 56, XXH3_64bits(h, 56));
	cr_assert_eq(pwrite(fd, h, 64, 0), 64);
	close(fd);
	free(p);
	free(text);
}

void img_edit_manifest(const char *dir, void (*fn)(json_t *m, void *arg), void *arg)
{
	char *p = join(dir, "manifest.json");
	json_error_t jerr;
	json_t *m = json_load_file(p, 0, &jerr);
	char *text;

	cr_assert(m, "%s: %s", p, jerr.text);
	fn(m, arg);
	text = json_dumps(m, JSON_INDENT(1));
	img_write_file(dir, "manifest.json", text, strlen(text));
	free(text);
	json_decref(m);
	free(p);
	img_fix_manifest_sum(dir);
}

void img_flip_bit(const char *dir, const char *name, uint64_t offset, int bit)
{
	char *p = join(dir, name);
	int fd = open(p, O_RDWR);
	unsigned char b;

	cr_assert(fd >= 0, "open %s: %m", p);
	cr_assert_eq(pread(fd, &b, 1, (off_t)offset), 1);
	b ^= (unsigned char)(1u << bit);
	cr_assert_eq(pwrite(fd, &b, 1, (off_t)offset), 1);
	close(fd);
	free(p);
}

bool img_contains(const char *haystack, const char *needle)
{
	return haystack && strstr(haystack, needle) != NULL;
}
