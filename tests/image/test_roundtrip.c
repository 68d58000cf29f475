/* SPDX-License-Identifier: Apache-2.0 */
/* Images written and read back: odd sizes, holes, compression, every I/O
 * path (O_DIRECT on a disk, buffered on tmpfs, without io_uring). */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "img_test.h"

static const struct gs_image_write_opts std_opts = {.chunk_size = IMG_STD_CHUNK};

static json_t *manifest_of(const char *dir)
{
	size_t len;
	char *text = img_read_file(dir, "manifest.json", &len);
	json_t *m = json_loads(text, 0, NULL);

	free(text);
	cr_assert(m);
	return m;
}

static const char *memory_io(json_t *m)
{
	return json_string_value(json_object_get(json_object_get(m, "memory"), "io"));
}

/* Probe next to the image, as the writer would. */
static bool fs_has_odirect(const char *dir)
{
	char *probe;
	int fd;

	cr_assert(asprintf(&probe, "%s.probe", dir) > 0);
	fd = open(probe, O_WRONLY | O_CREAT | O_DIRECT, 0600);
	if (fd >= 0)
		close(fd);
	unlink(probe);
	free(probe);
	if (fd < 0)
		cr_log_warn("%s: no O_DIRECT here, the buffered path is tested instead", dir);
	return fd >= 0;
}

Test(roundtrip, disk)
{
	char *dir = img_scratch("disk");
	struct gs_image_reader *r;
	struct gs_image_stats st;
	struct stat sb;
	char *err, *mem;
	json_t *m;

	img_write(dir, &std_opts, img_std, img_std_n);
	img_check(dir, NULL, img_std, img_std_n);
	cr_assert_eq(gs_image_reader_open(dir, NULL, &r, &err), 0, "%s", err);
	gs_image_read_stats(r, &st);
	cr_assert_eq(st.extents, 5);
	cr_assert_eq(st.chunks, 4 + 4 + 2 + 1 + 3);
	cr_assert_eq(st.bytes_zero, (64u << 10) + (128u << 10), "zero %llu",
		     (unsigned long long)st.bytes_zero);
	cr_assert_eq(st.bytes_total, img_std[0].size + img_std[1].size + img_std[2].size + 1 +
		     img_std[4].size);
	cr_assert_eq(st.bytes_stored + st.bytes_zero, st.bytes_total);
	cr_assert_eq(st.modules, 2);
	gs_image_reader_close(r);

	/* Zero chunks are holes: the file takes less room than its size (up
	 * to a few blocks of filesystem metadata, like ext4's extent tree). */
	cr_assert(asprintf(&mem, "%s/memory.img", dir) > 0);
	cr_assert_eq(stat(mem, &sb), 0);
	cr_assert_leq((uint64_t)sb.st_blocks * 512,
		      (uint64_t)sb.st_size - (192u << 10) + (16u << 10),
		      "memory.img allocates %lld of %lld bytes", (long long)sb.st_blocks * 512,
		      (long long)sb.st_size);
	m = manifest_of(dir);
	/* O_DIRECT is taken wherever the filesystem offers it. */
	cr_assert_str_eq(memory_io(m), fs_has_odirect(dir) ? "direct" : "buffered");
	json_decref(m);
	free(mem);
	img_scratch_free(dir);
}

Test(roundtrip, compressed)
{
	struct gs_image_write_opts o = std_opts;
	char *dir = img_scratch("disk");
	struct gs_image_reader *r;
	struct gs_image_chunk c;
	struct gs_image_stats st;
	char *err;

	o.zstd_level = 3;
	img_write(dir, &o, img_std, img_std_n);
	img_check(dir, NULL, img_std, img_std_n);
	cr_assert_eq(gs_image_reader_open(dir, NULL, &r, &err), 0, "%s", err);
	cr_assert_eq(gs_image_chunk_get(r, 4, 0, &c), 0);
	cr_assert_eq(c.kind, GS_IMAGE_CHUNK_ZSTD, "compressible chunk stored as %d", c.kind);
	cr_assert_lt(c.stored, c.len / 4);
	cr_assert_eq(gs_image_chunk_get(r, 4, 1, &c), 0);
	cr_assert_eq(c.kind, GS_IMAGE_CHUNK_RAW, "random data is stored raw");
	cr_assert_eq(gs_image_chunk_get(r, 1, 1, &c), 0);
	cr_assert_eq(c.kind, GS_IMAGE_CHUNK_ZERO);
	cr_assert_eq(gs_image_chunk_get(r, 3, 0, &c), 0);
	cr_assert_eq(c.kind, GS_IMAGE_CHUNK_RAW, "one byte cannot save a block");
	gs_image_read_stats(r, &st);
	cr_assert_eq(st.bytes_compressed_in, 64u << 10);
	cr_assert_gt(st.bytes_compressed_out, 0);
	cr_assert_eq(st.bytes_stored, st.bytes_raw + st.bytes_compressed_out);
	gs_image_reader_close(r);
	img_scratch_free(dir);
}

/* tmpfs had no O_DIRECT before Linux 6.6; the fault point gives every
 * kernel that EINVAL, so the fallback is what runs here. */
Test(roundtrip, tmpfs_without_odirect)
{
	char *dir = img_scratch("tmpfs");
	struct gs_image_read_opts ro = {0};
	json_t *m;

	if (!dir)
		cr_skip_test("no /dev/shm");
	setenv("GPUSWAP_FAULT", "image-no-direct", 1);
	img_write(dir, &std_opts, img_std, img_std_n);
	img_check(dir, &ro, img_std, img_std_n);
	m = manifest_of(dir);
	cr_assert_str_eq(memory_io(m), "buffered");
	json_decref(m);
	img_scratch_free(dir);
}

Test(roundtrip, tmpfs)
{
	char *dir = img_scratch("tmpfs");

	if (!dir)
		cr_skip_test("no /dev/shm");
	img_write(dir, &std_opts, img_std, img_std_n);
	img_check(dir, NULL, img_std, img_std_n);
	img_scratch_free(dir);
}

Test(roundtrip, buffered_option)
{
	struct gs_image_write_opts o = std_opts;
	struct gs_image_read_opts ro = {.buffered = true};
	char *dir = img_scratch("disk");
	json_t *m;

	o.buffered = true;
	img_write(dir, &o, img_std, img_std_n);
	img_check(dir, &ro, img_std, img_std_n);
	m = manifest_of(dir);
	cr_assert_str_eq(memory_io(m), "buffered");
	json_decref(m);
	img_scratch_free(dir);
}

/* io_uring can be off (sysctl kernel.io_uring_disabled, container seccomp). */
Test(roundtrip, without_io_uring)
{
	struct gs_image_write_opts o = std_opts;
	char *dir = img_scratch("disk");
	json_t *m;

	setenv("GPUSWAP_FAULT", "image-no-uring", 1);
	o.zstd_level = 1;
	img_write(dir, &o, img_std, img_std_n);
	img_check(dir, NULL, img_std, img_std_n);
	m = manifest_of(dir);
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(m, "memory"),
							   "io_engine")), "pwrite");
	json_decref(m);
	img_scratch_free(dir);
}

/* Default 2 MiB chunks, one write in flight: the writer must reap to make
 * room, and the callback order still holds. */
Test(roundtrip, default_chunks_depth_one)
{
	static const struct img_extent_spec ext[] = {
		{0x7f0000000000, (5u << 20) + 1, FILL_RANDOM, 9},
		{0x7f0000800000, 4u << 20, FILL_ZERO, 10},
		{0x7f0001000000, 3u << 20, FILL_HOLEY, 11},
	};
	struct gs_image_write_opts o = {.queue_depth = 1};
	struct gs_image_read_opts ro = {.queue_depth = 1};
	char *dir = img_scratch("disk");

	img_write(dir, &o, ext, 3);
	img_check(dir, &ro, ext, 3);
	img_scratch_free(dir);
}

Test(roundtrip, source_and_state)
{
	char *dir = img_scratch("disk");
	const struct gs_image_source *src;
	struct gs_image_reader *r;
	char *err, uuid[41];
	json_t *state;

	img_write(dir, &std_opts, img_std, 1);
	cr_assert_eq(gs_image_reader_open(dir, NULL, &r, &err), 0, "%s", err);
	src = gs_image_source(r);
	cr_assert_str_eq(src->host, "testhost");
	cr_assert_eq(src->pid, 4242);
	cr_assert_eq(src->driver_version, 13000);
	cr_assert_eq(src->ndevices, 2);
	cr_assert_str_eq(src->devices[0].name, "Simulated H100");
	cr_assert_eq(src->devices[0].cc_major, 9);
	cr_assert_eq(src->devices[1].cc_major, 8);
	cr_assert_eq(src->devices[0].total_mem, 80ull << 30);
	gs_image_uuid_format(src->devices[0].uuid, uuid);
	cr_assert_str_eq(uuid, "GPU-01020304-0506-0708-090a-0b0c0d0e0f10");
	state = json_pack("{s:[{s:i, s:s}], s:[i,i]}", "contexts", "device", 0, "flags",
			  "sched_auto", "modules", 0, 1);
	cr_assert(json_equal(gs_image_state(r), state), "state differs");
	json_decref(state);
	gs_image_reader_close(r);
	img_scratch_free(dir);
}

/* A single non-zero byte anywhere keeps a chunk from becoming a hole (the
 * zero check looks at the ends and the middle first, then scans). */
Test(roundtrip, zero_detection)
{
	static const size_t where[] = {0, 7, 8, 255, 256, 4095, 12345, 32767, 32768,
				       65535 - 8, 65535};
	char *dir = img_scratch("disk");
	struct gs_image_write_opts o = std_opts;
	struct gs_image_writer *w;
	struct gs_image_reader *r;
	unsigned char *buf;
	char *err;

	cr_assert_eq(gs_image_writer_open(dir, &o, &w, &err), 0, "%s", err);
	cr_assert_eq(posix_memalign((void **)&buf, 4096, IMG_STD_CHUNK), 0);
	for (size_t i = 0; i < sizeof(where) / sizeof(where[0]); i++) {
		uint32_t id;

		memset(buf, 0, IMG_STD_CHUNK);
		buf[where[i]] = 0x40;
		cr_assert_eq(gs_image_add_extent(w, 0x1000000 * (i + 1), IMG_STD_CHUNK, &id), 0);
		cr_assert_eq(gs_image_write_chunk(w, id, 0, buf, IMG_STD_CHUNK, NULL, NULL), 0);
		cr_assert_eq(gs_image_write_flush(w), 0);
	}
	cr_assert_eq(gs_image_commit(w, NULL), 0, "%s", gs_image_writer_errmsg(w));
	gs_image_writer_close(w);
	cr_assert_eq(gs_image_reader_open(dir, NULL, &r, &err), 0, "%s", err);
	for (size_t i = 0; i < sizeof(where) / sizeof(where[0]); i++) {
		struct gs_image_chunk c;

		cr_assert_eq(gs_image_chunk_get(r, (uint32_t)i, 0, &c), 0);
		cr_assert_eq(c.kind, GS_IMAGE_CHUNK_RAW, "byte at %zu missed", where[i]);
	}
	gs_image_reader_close(r);
	free(buf);
	img_scratch_free(dir);
}
