/* SPDX-License-Identifier: Apache-2.0 */
/* Damaged, truncated, mixed-up and hostile images: each gives an error that
 * names the file and the field (or extent and chunk), never a crash. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "img_test.h"

/* img_std, compressed (extent 4 chunk 0 is zstd). */
static char *fixture(void)
{
	struct gs_image_write_opts o = {.chunk_size = IMG_STD_CHUNK, .zstd_level = 3};
	char *dir = img_scratch("disk");

	img_write(dir, &o, img_std, img_std_n);
	return dir;
}

static uint64_t extent_offset(const char *dir, uint32_t id)
{
	struct gs_image_reader *r;
	struct gs_image_extent e;
	char *err;

	cr_assert_eq(gs_image_reader_open(dir, NULL, &r, &err), 0, "%s", err);
	cr_assert_eq(gs_image_extent_get(r, id, &e), 0);
	gs_image_reader_close(r);
	return e.file_offset;
}

static void expect_open_error(const char *dir, int want, const char *needle)
{
	char *msg = NULL;
	int ret = img_open_err(dir, &msg);

	cr_assert_eq(ret, want, "open gave %d (%s), expected %d: %s", ret, strerror(-ret), want,
		     msg);
	cr_assert(img_contains(msg, needle), "message \"%s\" lacks \"%s\"", msg, needle);
	free(msg);
}

static void truncate_file(const char *dir, const char *name, off_t size)
{
	char *p;

	cr_assert(asprintf(&p, "%s/%s", dir, name) > 0);
	cr_assert_eq(truncate(p, size), 0);
	free(p);
}

static void remove_file(const char *dir, const char *name)
{
	char *p;

	cr_assert(asprintf(&p, "%s/%s", dir, name) > 0);
	cr_assert_eq(unlink(p), 0);
	free(p);
}

Test(bad, truncated_memory)
{
	char *dir = fixture();
	struct stat st;
	char *p;

	cr_assert(asprintf(&p, "%s/memory.img", dir) > 0);
	cr_assert_eq(stat(p, &st), 0);
	truncate_file(dir, "memory.img", st.st_size - 8192);
	expect_open_error(dir, -ENODATA, "memory.img is");
	expect_open_error(dir, -ENODATA, "the file is truncated");
	truncate_file(dir, "memory.img", 100);
	expect_open_error(dir, -ENODATA, "shorter than its 4096-byte header");
	free(p);
	img_scratch_free(dir);
}

struct reads {
	int status[16];
	unsigned n;
};

static void on_read(void *arg, const struct gs_image_io *io)
{
	struct reads *r = arg;

	r->status[r->n++] = io->status;
}

/* Read one chunk; returns its completion status. */
static int read_one(struct gs_image_reader *r, uint32_t extent, uint32_t index)
{
	struct gs_image_chunk c;
	struct reads got = {0};
	void *buf;

	cr_assert_eq(gs_image_chunk_get(r, extent, index, &c), 0);
	cr_assert_eq(posix_memalign(&buf, 4096, IMG_STD_CHUNK), 0);
	cr_assert_eq(gs_image_read_chunk(r, extent, c.offset, buf, c.len, on_read, &got), 0);
	cr_assert_eq(gs_image_read_flush(r), 0);
	free(buf);
	cr_assert_eq(got.n, 1);
	return got.status[0];
}

Test(bad, flipped_bit_raw_chunk)
{
	char *dir = fixture(), *err;
	struct gs_image_reader *r;
	uint64_t bad;

	img_flip_bit(dir, "memory.img", extent_offset(dir, 0) + 2 * IMG_STD_CHUNK + 100, 3);
	cr_assert_eq(gs_image_reader_open(dir, NULL, &r, &err), 0, "%s", err);
	cr_assert_eq(read_one(r, 0, 1), 0, "a sound chunk still reads");
	cr_assert_eq(read_one(r, 0, 2), -EBADMSG);
	cr_assert(img_contains(gs_image_reader_errmsg(r), "extent 0 (va 0x10000000) chunk 2"),
		  "%s", gs_image_reader_errmsg(r));
	cr_assert(img_contains(gs_image_reader_errmsg(r), "checksum mismatch"));
	cr_assert_eq(gs_image_verify(r, NULL, NULL, &bad), -EBADMSG);
	cr_assert_eq(bad, 1);
	gs_image_reader_close(r);
	img_scratch_free(dir);
}

Test(bad, flipped_bit_compressed_chunk)
{
	char *dir = fixture(), *err;
	struct gs_image_reader *r;
	struct gs_image_chunk c;

	cr_assert_eq(gs_image_reader_open(dir, NULL, &r, &err), 0, "%s", err);
	cr_assert_eq(gs_image_chunk_get(r, 4, 0, &c), 0);
	cr_assert_eq(c.kind, GS_IMAGE_CHUNK_ZSTD);
	gs_image_reader_close(r);
	img_flip_bit(dir, "memory.img", c.file_offset + c.stored / 2, 5);
	cr_assert_eq(gs_image_reader_open(dir, NULL, &r, &err), 0, "%s", err);
	cr_assert_eq(read_one(r, 4, 0), -EBADMSG);
	cr_assert(img_contains(gs_image_reader_errmsg(r), "extent 4 (va 0x40000000) chunk 0"),
		  "%s", gs_image_reader_errmsg(r));
	gs_image_reader_close(r);
	img_scratch_free(dir);
}

Test(bad, memory_magic)
{
	char *dir = fixture();

	img_flip_bit(dir, "memory.img", 2, 0);
	expect_open_error(dir, -EBADMSG, "memory.img: does not start with the memory image magic");
	img_scratch_free(dir);
}

Test(bad, memory_header_damaged)
{
	char *dir = fixture();

	img_flip_bit(dir, "memory.img", 17, 0);   /* chunk size */
	expect_open_error(dir, -EBADMSG, "header checksum mismatch");
	img_scratch_free(dir);
}

Test(bad, memory_version)
{
	char *dir = fixture();

	img_flip_bit(dir, "memory.img", 8, 1);    /* version 1 -> 3 */
	expect_open_error(dir, -EPROTO, "format version 3, this gpuswap reads version 1");
	expect_open_error(dir, -EPROTO, "newer gpuswap");
	img_scratch_free(dir);
}

static void set_top(json_t *m, void *arg)
{
	json_t *kv = arg;

	json_object_set(m, json_string_value(json_array_get(kv, 0)), json_array_get(kv, 1));
}

Test(bad, manifest_magic_and_version)
{
	char *dir = fixture();
	json_t *kv = json_pack("[s, s]", "magic", "criu-image");

	img_edit_manifest(dir, set_top, kv);
	expect_open_error(dir, -EBADMSG, "manifest.json: magic: \"criu-image\", expected");
	json_decref(kv);
	img_scratch_free(dir);

	dir = fixture();
	kv = json_pack("[s, i]", "format_version", 2);
	img_edit_manifest(dir, set_top, kv);
	expect_open_error(dir, -EPROTO, "manifest.json: format version 2");
	json_decref(kv);
	img_scratch_free(dir);
}

Test(bad, missing_files)
{
	char *dir = fixture();

	remove_file(dir, "manifest.json");
	expect_open_error(dir, -ENOENT, "manifest.json: No such file");
	img_scratch_free(dir);

	dir = fixture();
	remove_file(dir, "memory.img");
	expect_open_error(dir, -ENOENT, "memory.img: No such file");
	img_scratch_free(dir);

	dir = fixture();
	remove_file(dir, "modules/1.bin");
	expect_open_error(dir, -ENOENT, "modules/1.bin: No such file");
	img_scratch_free(dir);

	dir = img_scratch("disk");
	expect_open_error(dir, -ENOENT, "does not exist");
	img_scratch_free(dir);
}

Test(bad, manifest_checksum)
{
	char *dir = fixture();
	size_t len;
	char *text = img_read_file(dir, "manifest.json", &len);
	char *p = strstr(text, "\"va\": ");

	/* One digit of an address: valid JSON, wrong state. */
	cr_assert(p);
	p[6] = p[6] == '1' ? '2' : '1';
	img_write_file(dir, "manifest.json", text, len);
	expect_open_error(dir, -EBADMSG, "manifest.json does not match the checksum");
	free(text);
	img_scratch_free(dir);
}

Test(bad, manifest_not_json)
{
	char *dir = fixture();

	img_write_file(dir, "manifest.json", "{\"magic\": ", 10);
	img_fix_manifest_sum(dir);
	expect_open_error(dir, -EBADMSG, "manifest.json: line 1 column");
	img_scratch_free(dir);
}

Test(bad, module_wrong_size)
{
	char *dir = fixture();
	size_t len;
	char *bytes = img_read_file(dir, "modules/0.bin", &len);

	img_write_file(dir, "modules/0.bin", bytes, len - 1);
	expect_open_error(dir, -EBADMSG, "modules/0.bin is 33 bytes, the manifest says 34");
	free(bytes);
	img_scratch_free(dir);
}

Test(bad, module_damaged)
{
	char *dir = fixture(), *err;
	struct gs_image_reader *r;
	void *bytes;
	size_t size;
	uint64_t bad;

	img_flip_bit(dir, "modules/1.bin", 4000, 7);
	cr_assert_eq(gs_image_reader_open(dir, NULL, &r, &err), 0, "%s", err);
	cr_assert_eq(gs_image_read_module(r, 1, &bytes, &size), -EBADMSG);
	cr_assert(img_contains(gs_image_reader_errmsg(r), "modules/1.bin: checksum mismatch"));
	cr_assert_eq(gs_image_verify(r, NULL, NULL, &bad), -EBADMSG);
	cr_assert_eq(bad, 1);
	gs_image_reader_close(r);
	img_scratch_free(dir);
}

/* ---- field checks ------------------------------------------------------------ */

/* "memory.extents.0.offset": object keys and array indexes. */
static json_t *jget(json_t *m, const char *path)
{
	char *copy = strdup(path), *save, *tok;
	json_t *v = m;

	for (tok = strtok_r(copy, ".", &save); tok && v; tok = strtok_r(NULL, ".", &save))
		v = json_is_array(v) ? json_array_get(v, strtoul(tok, NULL, 10)) :
				       json_object_get(v, tok);
	free(copy);
	cr_assert(v, "no %s in the manifest", path);
	return v;
}

/* Set (steals v) or, with v NULL, delete the member at path. */
static void jset(json_t *m, const char *path, json_t *v)
{
	char *copy = strdup(path), *dot = strrchr(copy, '.');
	json_t *parent = m;
	const char *key = copy;

	if (dot) {
		*dot = '\0';
		parent = jget(m, copy);
		key = dot + 1;
	}
	if (json_is_array(parent)) {
		size_t i = strtoul(key, NULL, 10);

		if (v)
			json_array_set_new(parent, i, v);
		else
			json_array_remove(parent, i);
	} else if (v) {
		json_object_set_new(parent, key, v);
	} else {
		json_object_del(parent, key);
	}
	free(copy);
}

static json_int_t jint(json_t *m, const char *path)
{
	return json_integer_value(jget(m, path));
}

struct field_case {
	const char *what;
	int err;
	const char *needle;
};

static const struct field_case field_cases[] = {
	{"offset past the end", -EBADMSG, "memory.extents[0]: data ["},
	{"overlapping data", -EBADMSG, "overlaps extent"},
	{"negative size", -EBADMSG, "memory.extents[0].size: -5 is out of range"},
	{"size of the wrong type", -EBADMSG, "memory.extents[0].size: expected an integer, "
					     "found a string"},
	{"overlapping addresses", -EBADMSG, "va range [0x10000010"},
	{"unaligned offset", -EBADMSG, "memory.extents[0]: offset 12289 is not a multiple of 4096"},
	{"chunk missing", -EBADMSG, "memory.extents[0]: 3 chunks, a size of 204923 needs 4"},
	{"unknown chunk kind", -EBADMSG, "memory.extents[0].chunks[1]: kind \"lz4\""},
	{"checksum not hex", -EBADMSG, "memory.extents[0].chunks[0].xxh3: \"xyz\" is not 16"},
	{"raw chunk size", -EBADMSG, "raw chunk stores 65535 bytes, its length is 65536"},
	{"module path escape", -EBADMSG, "modules[0]: file \"../../etc/passwd\", expected "
					 "\"modules/0.bin\""},
	{"module size", -EBADMSG, "modules/1.bin is 5000 bytes, the manifest says 4999"},
	{"chunk size out of range", -EBADMSG, "memory.chunk_size: 1234 is out of range"},
	{"chunk size vs header", -EBADMSG, "memory.chunk_size: 131072, but memory.img's header"},
	{"totals", -EBADMSG, "memory.totals.zero: 1, the extents add up to 196608"},
	{"no state", -EBADMSG, "manifest.json: state: missing"},
	{"device uuid", -EBADMSG, "source.devices[0]: uuid \"GPU-xyz\""},
	{"extents not an array", -EBADMSG, "memory.extents: expected an array, found an object"},
	{"file size", -ENODATA, "the file is truncated"},
	{"image id", -EBADMSG, "belongs to another image"},
	{"top level array", -EBADMSG, "(top level): expected an object, found an array"},
	{"extent id", -EBADMSG, "memory.extents[1].id: 3 is out of range [1, 1]"},
	{"zstd chunk too big", -EBADMSG, "memory.extents[4].chunks[0].stored: 65536 is out of "
					 "range [1, 61440]"},
	{"zstd without compression", -EBADMSG, "zstd chunk in an image with memory.compression"},
	{"huge size", -EBADMSG, "memory.extents[2].size: 9223372036854775807 is out of range"},
	{"real number", -EBADMSG, "memory.extents[0].va: expected an integer, found a real"},
	{"null device name", -EBADMSG, "source.devices[1].name: expected a string, found null"},
};

static void apply_case(json_t *m, void *arg)
{
	const struct field_case *c = arg;
	size_t i = (size_t)(c - field_cases);

	switch (i) {
	case 0:
		jset(m, "memory.extents.0.offset",
		     json_integer(jint(m, "memory.file_size") + 4096));
		break;
	case 1:
		jset(m, "memory.extents.1.offset", json_integer(jint(m, "memory.extents.0.offset")));
		break;
	case 2: jset(m, "memory.extents.0.size", json_integer(-5)); break;
	case 3: jset(m, "memory.extents.0.size", json_string("big")); break;
	case 4: jset(m, "memory.extents.1.va", json_integer(0x10000010)); break;
	case 5: jset(m, "memory.extents.0.offset", json_integer(12289)); break;
	case 6: jset(m, "memory.extents.0.chunks.3", NULL); break;
	case 7: jset(m, "memory.extents.0.chunks.1.kind", json_string("lz4")); break;
	case 8: jset(m, "memory.extents.0.chunks.0.xxh3", json_string("xyz")); break;
	case 9: jset(m, "memory.extents.0.chunks.0.stored", json_integer(65535)); break;
	case 10: jset(m, "modules.0.file", json_string("../../etc/passwd")); break;
	case 11: jset(m, "modules.1.size", json_integer(4999)); break;
	case 12: jset(m, "memory.chunk_size", json_integer(1234)); break;
	case 13: jset(m, "memory.chunk_size", json_integer(131072)); break;
	case 14: jset(m, "memory.totals.zero", json_integer(1)); break;
	case 15: jset(m, "state", NULL); break;
	case 16: jset(m, "source.devices.0.uuid", json_string("GPU-xyz")); break;
	case 17: jset(m, "memory.extents", json_object()); break;
	case 18:
		jset(m, "memory.file_size", json_integer(jint(m, "memory.file_size") + 4096));
		break;
	case 19: jset(m, "image_id", json_string("00000000000000000000000000000000")); break;
	case 20: json_object_clear(m); break;   /* replaced below */
	case 21: jset(m, "memory.extents.1.id", json_integer(3)); break;
	case 22: jset(m, "memory.extents.4.chunks.0.stored", json_integer(65536)); break;
	case 23: jset(m, "memory.compression", json_string("none")); break;
	case 24: jset(m, "memory.extents.2.size", json_integer(INT64_MAX)); break;
	case 25: jset(m, "memory.extents.0.va", json_real(268435456.0)); break;
	case 26: jset(m, "source.devices.1.name", json_null()); break;
	}
}

Test(bad, manifest_fields)
{
	for (size_t i = 0; i < sizeof(field_cases) / sizeof(field_cases[0]); i++) {
		const struct field_case *c = &field_cases[i];
		char *dir = fixture();

		if (i == 20) {
			/* The whole manifest an array. */
			img_write_file(dir, "manifest.json", "[1, 2]", 6);
			img_fix_manifest_sum(dir);
		} else {
			img_edit_manifest(dir, apply_case, (void *)c);
		}
		cr_log_info("case %zu: %s", i, c->what);
		expect_open_error(dir, c->err, c->needle);
		img_scratch_free(dir);
	}
}
