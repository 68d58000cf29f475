/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Internals shared by image.c, image_io.c, image_write.c, image_read.c.
 * Not part of the API: callers include image.h only.
 */
#ifndef GS_IMAGE_INTERNAL_H
#define GS_IMAGE_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

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

#endif
