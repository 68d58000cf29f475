/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Internals shared by image.c, image_io.c, the writer (image_write.c,
 * image_write_data.c, image_write_commit.c) and the reader (image_read.c,
 * image_read_manifest.c, image_read_data.c).
 * Not part of the API: callers include image.h only.
 */
#ifndef GS_IMAGE_INTERNAL_H
#define GS_IMAGE_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>
#include <xxhash.h>
#include <zstd.h>

#include "image.h"

/* The manifest's "magic" value, and memory.img's first 8 bytes. */
#define IMAGE_MANIFEST_MAGIC "gpuswap-image"
#define IMAGE_MEMORY_MAGIC "GSWPMEM1"
#define IMAGE_MEMORY_MAGIC_LEN 8
#define IMAGE_HEADER_SIZE 4096u
/* A manifest larger than this is refused unread (an 80 GB state at 2 MiB
 * chunks gives ~3 MB). */
#define IMAGE_MANIFEST_MAX (256u << 20)
#define IMAGE_MODULE_MAX (1ull << 32)
#define IMAGE_EXTENT_MAX_SIZE (1ull << 56)

/* File names: this table is the only place they are spelled. */
enum image_file {
	IMAGE_FILE_MANIFEST,
	IMAGE_FILE_MEMORY,
	IMAGE_FILE_MODULES,          /* the directory */
	IMAGE_FILE_COUNT,
};
extern const char *const image_file_names[IMAGE_FILE_COUNT];
/* "modules/<index>.bin" (relative to the image), or "<index>.bin" when
 * `in_dir` (relative to modules/). */
void image_module_name(uint32_t index, bool in_dir, char out[32]);
/* Is `name` (inside modules/) one the table could have produced? */
bool image_module_name_valid(const char *name);

static inline uint64_t image_align_up(uint64_t v)
{
	return (v + GS_IMAGE_ALIGN - 1) & ~(uint64_t)(GS_IMAGE_ALIGN - 1);
}

/* ---- errors and messages ------------------------------------------------ */

/* A handle's error state: the last message, and where messages go. */
struct image_err {
	char *msg;
	struct gs_image_log log;
};

/* Format the message, keep it as the last error, pass it to the log at
 * error level. Returns `ret` so callers can `return image_fail(...)`. */
int image_fail(struct image_err *e, int ret, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void image_logf(const struct image_err *e, enum gs_image_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Hand the last message to an open function's `err` (a copy). */
void image_err_export(const struct image_err *e, char **err);
void image_err_free(struct image_err *e);

/* GPUSWAP_FAULT=name[,name...]: fault points for tests (CRIU's habit of
 * building fault injection into the product). Points used here:
 *   image-no-direct    O_DIRECT open fails with EINVAL (tmpfs-like)
 *   image-no-uring     io_uring set-up fails (pread/pwrite engine)
 *   image-commit       commit stops after fsync, before the rename
 *   image-no-renameat2 renameat2 fails with EINVAL (filesystems without
 *                      RENAME_NOREPLACE / RENAME_EXCHANGE)
 *   image-write-enospc every memory.img chunk write fails with ENOSPC */
bool image_fault(const char *name);

/* ---- data ------------------------------------------------------------------ */

/* All bytes zero? Word-wise, stops at the first non-zero byte. */
bool image_is_zero(const void *buf, size_t len);
uint64_t image_hash(const void *buf, size_t len);
void image_hash_format(uint64_t h, char out[17]);
/* Exactly 16 lower- or upper-case hex digits. */
int image_hash_parse(const char *s, uint64_t *h);
void image_hex_format(const unsigned char *bytes, size_t n, char *out);
int image_hex_parse(const char *s, unsigned char *bytes, size_t n);

/* ---- memory.img header ------------------------------------------------------ */

/* Little-endian, in the first IMAGE_HEADER_SIZE bytes:
 *    0  8  magic "GSWPMEM1"
 *    8  4  format version
 *   12  4  header size (4096: where data may start)
 *   16  4  chunk size
 *   20  4  flags (0)
 *   24 16  image id (= manifest "image_id")
 *   40  8  manifest.json size
 *   48  8  manifest.json XXH3-64
 *   56  8  XXH3-64 of bytes 0..55
 *   64     zeros up to 4096 */
struct image_header {
	uint32_t version;
	uint32_t header_size;
	uint32_t chunk_size;
	uint32_t flags;
	unsigned char image_id[16];
	uint64_t manifest_size;
	uint64_t manifest_hash;
};
void image_header_encode(const struct image_header *h, unsigned char block[IMAGE_HEADER_SIZE]);
/* 0, or -EBADMSG / -EPROTO (version) with the reason in why. */
int image_header_decode(const unsigned char *block, size_t n, struct image_header *h,
			char *why, size_t why_len);

/* ---- directories -------------------------------------------------------------- */

/* Remove the files an image consists of from the directory `fd` (manifest,
 * memory.img, modules/<n>.bin, modules/), nothing else. Returns 0 when the
 * directory is empty afterwards, -ENOTEMPTY (with the first foreign name in
 * `foreign`) when something else is in it, or -errno. */
int image_clear_dir(int fd, char *foreign, size_t foreign_len);
/* Does the directory look like an image (memory.img starts with the magic,
 * or manifest.json carries it)? */
bool image_dir_is_image(int fd);

/* ---- I/O engine (image_io.c) ------------------------------------------------- */

/* One transfer. The engine resubmits short transfers itself; `res` is the
 * total transferred, or -errno. */
struct image_io_req {
	void *buf;
	uint32_t len;
	uint64_t off;
	bool write;
	uint32_t done;
	int res;
	struct image_io_req *next;   /* engine-private */
};

struct image_io;

/* Open dirfd/name for the engine. try_direct: O_DIRECT first, buffered when
 * the filesystem refuses it (EINVAL). io_uring when the kernel allows it,
 * else pread/pwrite (io_uring may be disabled by sysctl or seccomp). */
int image_io_open(int dirfd, const char *name, int oflags, mode_t mode, bool try_direct,
		  unsigned depth, struct image_io **out, char *why, size_t why_len);
/* Queue a transfer; at most `depth` may be in flight (-EBUSY beyond). */
int image_io_submit(struct image_io *io, struct image_io_req *req);
/* Collect finished transfers, calling cb for each; with `wait`, block for
 * at least one when any is in flight. Returns how many, or -errno. */
int image_io_reap(struct image_io *io, bool wait,
		  void (*cb)(void *arg, struct image_io_req *req), void *arg);
unsigned image_io_inflight(const struct image_io *io);
/* The descriptor for whole-file operations (ftruncate, fsync, fstat). */
int image_io_fd(const struct image_io *io);
bool image_io_direct(const struct image_io *io);
bool image_io_uring(const struct image_io *io);
/* Synchronous, for the header block (buf 4 KiB-aligned). */
int image_io_pwrite_all(struct image_io *io, const void *buf, size_t len, uint64_t off);
int image_io_pread_all(struct image_io *io, void *buf, size_t len, uint64_t off);
/* Waits for everything in flight (results dropped), then closes. */
void image_io_close(struct image_io *io);

#define image_container_of(ptr, type, member) \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* ---- writer (image_write*.c) ------------------------------------------------- */

/* A chunk's state in the writer. */
enum {
	CHUNK_EMPTY,
	CHUNK_QUEUED,
	CHUNK_DONE,
};

struct wr_chunk {
	uint8_t state;
	uint8_t kind;                /* enum gs_image_chunk_kind */
	uint32_t stored;
	uint64_t hash;
};

struct wr_extent {
	uint64_t va, size, offset;
	uint32_t nchunks, ndone;
	struct wr_chunk *chunks;
};

struct wr_range {
	uint64_t va, end;
	uint32_t extent;
};

struct wr_module {
	uint64_t size;
	uint64_t hash;
	XXH128_hash_t dedup;
};

/* One write in flight, with its bounce buffer for compressed data. */
struct wr_slot {
	struct image_io_req req;
	bool busy;
	void *bounce;
	uint32_t extent, index;
	struct gs_image_io io;       /* what the caller's callback gets */
	gs_image_done_fn done;       /* NULL once called */
	void *arg;
};

struct gs_image_writer {
	struct image_err err;
	struct gs_image_write_opts opts;
	char *dir;                   /* as given, for messages */
	int parent_fd;
	char *base, *tmp_base;
	int tmp_fd;                  /* DIR.tmp, flock'd while we write it */
	int modules_fd;
	bool replace_existing;
	bool own_tmp;                /* DIR.tmp is ours to remove on abort */
	struct image_io *io;
	unsigned char image_id[16];
	uint32_t chunk_size;
	uint64_t file_end;           /* end of the last extent's slot */
	uint64_t file_size_set;      /* what memory.img was last ftruncate'd to */
	struct wr_extent *extents;
	uint32_t nextents, extents_cap;
	struct wr_range *ranges;     /* sorted by va, for the overlap check */
	struct wr_module *modules;
	uint32_t nmodules, modules_cap;
	struct wr_slot *slots;
	unsigned depth;
	ZSTD_CCtx *cctx;
	json_t *source;
	int failed;                  /* sticky: the first write error */
	bool committed;
	struct gs_image_stats stats;
};

/* image_write.c: memory.img's header block, with the manifest's size and
 * checksum (zeros until the commit). 0 or -errno. */
int image_writer_header(struct gs_image_writer *w, uint64_t manifest_size,
			uint64_t manifest_hash);
/* image_write.c: a new file dirfd/name holding bytes (not synced). 0 or
 * -errno. */
int image_write_file(int dirfd, const char *name, const void *bytes, size_t size);
/* image_write_data.c: the I/O engine's callback for a finished chunk write
 * (arg: the writer). */
void image_writer_on_written(void *arg, struct image_io_req *req);

/* ---- reader (image_read*.c) -------------------------------------------------- */

struct rd_chunk {
	uint8_t kind;
	uint32_t stored;
	uint64_t hash;
};

struct rd_extent {
	uint64_t va, size, offset, zero;
	uint32_t nchunks;
	struct rd_chunk *chunks;
};

struct rd_module {
	uint64_t size, hash;
};

struct rd_slot {
	struct image_io_req req;
	bool busy;
	void *bounce;
	uint32_t extent, index;
	struct gs_image_io io;
	gs_image_done_fn done;
	void *arg;
};

struct gs_image_reader {
	struct image_err err;
	struct gs_image_read_opts opts;
	char *dir;
	int dir_fd, modules_fd;
	json_t *manifest;
	json_t *state;
	struct image_header header;
	struct gs_image_source source;
	struct gs_image_device *devices;
	uint32_t chunk_size;
	uint64_t file_size;
	bool compressed;
	struct rd_extent *extents;
	uint32_t nextents;
	uint32_t *by_va;             /* extent ids sorted by va */
	struct rd_module *modules;
	uint32_t nmodules;
	struct image_io *io;
	struct rd_slot *slots;
	unsigned depth;
	ZSTD_DCtx *dctx;
	struct gs_image_stats stats;
};

/* The end of most messages about a bad image: what to do about it. */
#define IMAGE_HINT_DAMAGED "the image is damaged or was not written by gpuswap; " \
			   "use another copy, or freeze the process again"

/* image_read_manifest.c: validate the parsed manifest against memory.img's
 * header and the files, filling the reader's tables. 0, or -errno with the
 * message (naming the field) in the reader. */
int image_manifest_check(struct gs_image_reader *r);

#endif
