/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The image reader against mutated manifests (fixed seed, so a failure
 * reproduces). Byte-level mutations exercise the JSON parser and the error
 * paths; value-level mutations (a random member replaced by a random value)
 * reach the range checks and, when the image still opens, the reads that
 * trust what was checked. memory.img's header checksum is fixed after each
 * mutation so the manifest is really parsed. Built with ASan/UBSan: "no
 * crash" means no out-of-bounds access either.
 *
 *   fuzz_manifest [--iterations N] [--seed S] [--dir SCRATCH]
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <xxhash.h>

#include "image.h"

#define CHUNK (64u << 10)

static uint64_t rng_state;

static uint64_t rnd(void)
{
	uint64_t x = (rng_state += 0x9e3779b97f4a7c15ull);

	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static size_t rnd_below(size_t n)
{
	return n ? (size_t)(rnd() % n) : 0;
}

static void die(const char *what, const char *detail)
{
	fprintf(stderr, "fuzz_manifest: %s: %s\n", what, detail ? detail : "");
	exit(1);
}

static void write_base(const char *dir)
{
	struct gs_image_write_opts o = {.chunk_size = CHUNK, .zstd_level = 3};
	struct gs_image_device dev = {.ordinal = 0, .uuid = {1}, .name = "Fuzz GPU",
				      .cc_major = 9, .total_mem = 1 << 30};
	struct gs_image_source src = {.host = "fuzz", .driver_version = 13000, .ndevices = 1,
				      .devices = &dev};
	static const uint64_t sizes[] = {3 * CHUNK + 77, 2 * CHUNK, 1, CHUNK};
	struct gs_image_writer *w;
	unsigned char *buf;
	uint32_t id, mod;
	char *err = NULL;
	json_t *state;

	if (gs_image_writer_open(dir, &o, &w, &err) < 0)
		die("writer_open", err);
	if (posix_memalign((void **)&buf, 4096, CHUNK))
		die("memory", NULL);
	gs_image_set_source(w, &src);
	gs_image_add_module(w, "cubin bytes", 11, &mod);
	for (size_t x = 0; x < 4; x++) {
		if (gs_image_add_extent(w, 0x100000 * (x + 1), sizes[x], &id) < 0)
			die("add_extent", gs_image_writer_errmsg(w));
		for (uint64_t off = 0; off < sizes[x]; off += CHUNK) {
			size_t len = sizes[x] - off < CHUNK ? sizes[x] - off : CHUNK;

			for (size_t i = 0; i < len; i++)
				buf[i] = x == 1 && off ? 0 : x == 3 ? (unsigned char)"abc"[i % 3] :
					 (unsigned char)rnd();
			if (gs_image_write_chunk(w, id, off, buf, len, NULL, NULL) < 0 ||
			    gs_image_write_flush(w) < 0)
				die("write", gs_image_writer_errmsg(w));
		}
	}
	state = json_pack("{s:[{s:I, s:i}]}", "allocs", "va", (json_int_t)0x100000, "module", 0);
	if (gs_image_commit(w, state) < 0)
		die("commit", gs_image_writer_errmsg(w));
	json_decref(state);
	gs_image_writer_close(w);
	free(buf);
}

static void put_le64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void install_manifest(const char *dir, const char *text, size_t len)
{
	char path[4096];
	unsigned char h[64];
	int fd;

	snprintf(path, sizeof(path), "%s/manifest.json", dir);
	fd = open(path, O_WRONLY | O_TRUNC);
	if (fd < 0 || write(fd, text, len) != (ssize_t)len)
		die("write manifest", path);
	close(fd);
	snprintf(path, sizeof(path), "%s/memory.img", dir);
	fd = open(path, O_RDWR);
	if (fd < 0 || pread(fd, h, 64, 0) != 64)
		die("read header", path);
	put_le64(h + 40, len);
	put_le64(h + 48, XXH3_64bits(text, len));
	put_le64(h + 56, XXH3_64bits(h, 56));
	if (pwrite(fd, h, 64, 0) != 64)
		die("write header", path);
	close(fd);
}

static const char *const tokens[] = {
	"-1", "0", "1", "4096", "65536", "4294967296", "9223372036854775807",
	"-9223372036854775808", "99999999999999999999", "1e999", "0.5", "null", "true",
	"\"\"", "\"zstd\"", "\"raw\"", "\"zero\"", "\"../x\"", "{}", "[]", "[[[[", "}", "]",
	",", ":", "\"\\u0000\"", "\"\xff\"",
};

static char *mutate_bytes(const char *base, size_t len, size_t *out_len)
{
	size_t cap = len * 2 + 256, n = len;
	char *t = malloc(cap);
	int rounds = 1 + (int)rnd_below(4);

	memcpy(t, base, len);
	for (int r = 0; r < rounds; r++) {
		size_t at = rnd_below(n + 1), span = 1 + rnd_below(16);
		const char *tok;

		switch (rnd_below(5)) {
		case 0:
			if (n)
				t[rnd_below(n)] ^= (char)(1u << rnd_below(8));
			break;
		case 1:
			if (at + span > n)
				span = n - at;
			memmove(t + at, t + at + span, n - at - span);
			n -= span;
			break;
		case 2:
			tok = tokens[rnd_below(sizeof(tokens) / sizeof(tokens[0]))];
			if (n + strlen(tok) < cap) {
				memmove(t + at + strlen(tok), t + at, n - at);
				memcpy(t + at, tok, strlen(tok));
				n += strlen(tok);
			}
			break;
		case 3:
			/* Change one digit: numbers stay numbers, values move. */
			for (size_t tries = 0; tries < 64 && n; tries++) {
				size_t i = rnd_below(n);

				if (t[i] >= '0' && t[i] <= '9') {
					t[i] = (char)('0' + rnd_below(10));
					break;
				}
			}
			break;
		default:
			n = rnd_below(n + 1);
			break;
		}
	}
	*out_len = n;
	return t;
}

static json_t *random_value(void)
{
	switch (rnd_below(9)) {
	case 0: return json_integer((json_int_t)rnd());
	case 1: return json_integer(-(json_int_t)rnd_below(10));
	case 2: return json_integer((json_int_t)rnd_below(1 << 20) * 4096);
	case 3: return json_string("zstd");
	case 4: return json_real(0.5);
	case 5: return json_null();
	case 6: return json_array();
	case 7: return json_object();
	default: return json_integer((json_int_t)rnd_below(4));
	}
}

/* Pick the k-th node (depth-first) and replace or delete it. */
static bool mutate_node(json_t *v, size_t *k)
{
	const char *key;
	json_t *child;
	size_t i;

	if (json_is_object(v)) {
		json_object_foreach(v, key, child) {
			if ((*k)-- == 0) {
				if (rnd_below(4) == 0)
					json_object_del(v, key);
				else
					json_object_set_new(v, key, random_value());
				return true;
			}
			if (mutate_node(child, k))
				return true;
		}
	} else if (json_is_array(v)) {
		json_array_foreach(v, i, child) {
			if ((*k)-- == 0) {
				if (rnd_below(4) == 0)
					json_array_remove(v, i);
				else
					json_array_set_new(v, i, random_value());
				return true;
			}
			if (mutate_node(child, k))
				return true;
		}
	}
	return false;
}

static size_t count_nodes(json_t *v)
{
	const char *key;
	json_t *child;
	size_t i, n = 0;

	if (json_is_object(v))
		json_object_foreach(v, key, child) n += 1 + count_nodes(child);
	else if (json_is_array(v))
		json_array_foreach(v, i, child) n += 1 + count_nodes(child);
	return n;
}

static void on_read(void *arg, const struct gs_image_io *io)
{
	(*(unsigned *)arg)++;
}

/* Whatever opened must be safe to use. */
static void exercise(struct gs_image_reader *r)
{
	uint32_t chunk = gs_image_read_chunk_size(r);
	unsigned done = 0;
	void *buf, *mod;
	uint64_t bad;
	size_t size;

	if (posix_memalign(&buf, 4096, chunk))
		die("memory", NULL);
	for (uint32_t x = 0; x < gs_image_extent_count(r); x++) {
		struct gs_image_extent e;

		gs_image_extent_get(r, x, &e);
		for (uint64_t off = 0; off < e.size; off += chunk) {
			size_t len = e.size - off < chunk ? e.size - off : chunk;

			if (gs_image_read_chunk(r, x, off, buf, len, on_read, &done) == 0)
				gs_image_read_flush(r);
		}
	}
	for (uint32_t i = 0; i < gs_image_module_count(r); i++)
		if (gs_image_read_module(r, i, &mod, &size) == 0)
			free(mod);
	gs_image_verify(r, NULL, NULL, &bad);
	free(buf);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	remove(path);
	return 0;
}

int main(int argc, char **argv)
{
	unsigned long iterations = 2000, seed = 1, opened = 0, structural = 0;
	const char *base_dir = getenv("IMG_TEST_DIR");
	char scratch[4096], dir[4200], path[4300];
	char *base_text;
	size_t base_len;
	json_t *base;
	FILE *f;

	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--iterations") == 0)
			iterations = strtoul(argv[i + 1], NULL, 10);
		else if (strcmp(argv[i], "--seed") == 0)
			seed = strtoul(argv[i + 1], NULL, 10);
		else if (strcmp(argv[i], "--dir") == 0)
			base_dir = argv[i + 1];
	}
	rng_state = seed;
	snprintf(scratch, sizeof(scratch), "%s/fuzz-XXXXXX", base_dir ? base_dir : "/tmp");
	if (!mkdtemp(scratch))
		die("mkdtemp", strerror(errno));
	snprintf(dir, sizeof(dir), "%s/img", scratch);
	write_base(dir);
	snprintf(path, sizeof(path), "%s/manifest.json", dir);
	f = fopen(path, "r");
	if (!f)
		die("open", path);
	base_text = NULL;
	base_len = 0;
	if (getdelim(&base_text, &base_len, '\0', f) < 0)
		die("read", path);
	base_len = strlen(base_text);
	fclose(f);
	base = json_loads(base_text, 0, NULL);
	if (!base)
		die("base manifest does not parse", NULL);

	for (unsigned long it = 0; it < iterations; it++) {
		struct gs_image_reader *r = NULL;
		char *text, *err = NULL;
		size_t len;

		if (it % 2) {
			json_t *m = json_deep_copy(base);
			int edits = 1 + (int)rnd_below(3);

			for (int e = 0; e < edits; e++) {
				size_t k = rnd_below(count_nodes(m));

				mutate_node(m, &k);
			}
			text = json_dumps(m, JSON_INDENT(1));
			len = strlen(text);
			json_decref(m);
			structural++;
		} else {
			text = mutate_bytes(base_text, base_len, &len);
		}
		install_manifest(dir, text, len);
		if (gs_image_reader_open(dir, NULL, &r, &err) == 0) {
			opened++;
			exercise(r);
			gs_image_reader_close(r);
		} else if (!err || !*err) {
			die("an open failed without a message", text);
		}
		free(err);
		free(text);
	}
	/* The untouched manifest must still open: the harness itself works. */
	{
		struct gs_image_reader *r = NULL;
		char *err = NULL;

		install_manifest(dir, base_text, base_len);
		if (gs_image_reader_open(dir, NULL, &r, &err) < 0)
			die("the original manifest no longer opens", err);
		gs_image_reader_close(r);
	}
	printf("fuzz_manifest: seed %lu, %lu mutated manifests (%lu value-level), %lu opened, "
	       "none crashed\n", seed, iterations, structural, opened);
	json_decref(base);
	free(base_text);
	nftw(scratch, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}
