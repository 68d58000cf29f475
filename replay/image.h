/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The on-disk image of a frozen process (DESIGN.md §8; the format itself is
 * described field by field in docs/image-format.md, version 1).
 *
 *   DIR/manifest.json    metadata: source host/driver/devices, the caller's
 *                        state records (embedded verbatim under "state"),
 *                        every memory extent and chunk, every module file
 *   DIR/memory.img       a 4 KiB header block, then allocation contents
 *   DIR/modules/<n>.bin  module images, byte for byte
 *
 * Writing goes to DIR.tmp; gs_image_commit() fsyncs everything and renames
 * it to DIR, so a crash never leaves a half image under the final name.
 *
 * Memory model. The caller describes each allocation or mapping as an
 * *extent* (va, size). An extent is cut into *chunks* of the image's chunk
 * size (the last one may be shorter); chunk i of an extent always lives at
 * extent.offset + i * chunk_size in memory.img, whatever it holds:
 *   raw   the bytes, padded with zeros to 4 KiB;
 *   zero  nothing written: the file has a hole there;
 *   zstd  the compressed bytes at the start of the slot, the rest a hole.
 * Fixed slots let chunks be written and read in any order, several at once,
 * and keep memory.img sparse: it takes disk space only for what is stored.
 * Every non-zero chunk has an XXH3-64 checksum of its uncompressed bytes.
 *
 * I/O model. The caller owns the staging buffers (pinned host memory in the
 * shim): 4 KiB-aligned, at least chunk_size bytes each. gs_image_write_chunk
 * queues the write of one chunk straight from the caller's buffer (io_uring,
 * O_DIRECT where the filesystem allows) and returns at once, so the caller
 * can start its next device->host copy into another buffer; `done` is called
 * when the buffer may be reused. Reading is the mirror image: `done` is
 * called once the buffer holds the chunk's bytes, decompressed, checksum
 * verified. Typical dump loop, with K staging buffers:
 *
 *	for each extent: gs_image_add_extent(w, va, size, &ext);
 *	    for (off = 0; off < size; off += chunk):
 *		buf = a free staging buffer (none free: gs_image_write_reap(w, true))
 *		copy device va+off -> buf, wait for that copy only
 *		gs_image_write_chunk(w, ext, off, buf, len, on_written, buf)
 *	gs_image_write_flush(w);
 *	gs_image_commit(w, state);
 *	gs_image_writer_close(w);
 *
 * Threads: a writer or reader belongs to one thread at a time; it starts no
 * threads of its own. Callbacks run on the caller's thread, from inside
 * gs_image_write_chunk/_reap/_flush (resp. the read ones) of that handle;
 * they must not call into the same handle (mark the buffer free, that's all).
 *
 * Errors: functions return 0 or -errno. Open functions put a malloc'd message
 * in *err (when err is non-NULL; the caller frees it). Every other function
 * leaves its message in the handle (gs_image_writer_errmsg /
 * gs_image_reader_errmsg: valid until the next call on that handle) and
 * passes it to the log callback of the options, if any. Messages name the
 * file and the field or extent/chunk, and say what to do. The library logs
 * nothing by itself and does not depend on the shim.
 *
 * The reader trusts nothing in the image: every field is type- and
 * range-checked before use, and a bad image gives an error, never a crash.
 */
#ifndef GS_IMAGE_H
#define GS_IMAGE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GS_IMAGE_FORMAT_VERSION 1
/* Offsets, buffer addresses and stored lengths are multiples of this. */
#define GS_IMAGE_ALIGN 4096u
#define GS_IMAGE_DEFAULT_CHUNK (2u << 20)
#define GS_IMAGE_MIN_CHUNK (64u << 10)
#define GS_IMAGE_MAX_CHUNK (64u << 20)
#define GS_IMAGE_DEFAULT_DEPTH 8u

/* ---- common ----------------------------------------------------------- */

enum gs_image_log_level {
	GS_IMAGE_LOG_ERROR,
	GS_IMAGE_LOG_WARN,
	GS_IMAGE_LOG_INFO,
	GS_IMAGE_LOG_DEBUG,
};

/* Optional sink for messages (the shim maps it onto its log). */
struct gs_image_log {
	void (*fn)(void *arg, enum gs_image_log_level level, const char *msg);
	void *arg;
};

/* One GPU of the source process, as the driver described it. */
struct gs_image_device {
	int ordinal;                 /* the application's CUdevice ordinal */
	unsigned char uuid[16];      /* CUuuid bytes; written "GPU-xxxxxxxx-..." */
	char name[256];              /* cuDeviceGetName */
	int cc_major, cc_minor;      /* compute capability */
	uint64_t total_mem;          /* cuDeviceTotalMem, bytes (0: unknown) */
};

/* Where the state comes from. */
struct gs_image_source {
	const char *host;            /* NULL: gethostname() */
	int pid;                     /* 0: unknown */
	int driver_version;          /* cuDriverGetVersion, e.g. 13000 */
	unsigned ndevices;
	const struct gs_image_device *devices;
};

/* Totals over memory.img and modules. "stored" counts bytes written to
 * memory.img for chunk contents (compressed sizes for zstd chunks, before
 * 4 KiB padding); total = zero bytes + raw bytes + compressed_in. */
struct gs_image_stats {
	uint32_t extents;
	uint64_t chunks;
	uint64_t bytes_total;        /* sum of extent sizes */
	uint64_t bytes_zero;         /* in all-zero chunks (holes) */
	uint64_t bytes_raw;          /* in chunks stored as they are */
	uint64_t bytes_compressed_in;  /* uncompressed size of zstd chunks */
	uint64_t bytes_compressed_out; /* their compressed size */
	uint64_t bytes_stored;       /* bytes_raw + bytes_compressed_out */
	uint32_t modules;
	uint64_t module_bytes;
	bool direct_io;              /* memory.img written/read with O_DIRECT */
	bool uring;                  /* through io_uring (else pread/pwrite) */
};

/* One chunk transfer, as handed to its completion callback. */
struct gs_image_io {
	uint32_t extent;
	uint64_t offset;             /* bytes into the extent; multiple of chunk size */
	void *buf;
	size_t len;
	int status;                  /* 0, or -errno: -EBADMSG checksum/decompression,
	                              * -EIO/-ENOSPC/... from the file system */
	bool zero;                   /* read: the chunk is all zeros (buf was
	                              * memset); write: it was stored as a hole */
};
typedef void (*gs_image_done_fn)(void *arg, const struct gs_image_io *io);

/* "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (nvidia-smi's spelling) into
 * out[41]; parse the same back (0 or -EINVAL). */
void gs_image_uuid_format(const unsigned char uuid[16], char out[41]);
int gs_image_uuid_parse(const char *s, unsigned char uuid[16]);

/* ---- writing ---------------------------------------------------------- */

struct gs_image_write_opts {
	bool replace;                /* DIR exists (and is an image): replace it
	                              * atomically at commit instead of refusing */
	uint32_t chunk_size;         /* 0: GS_IMAGE_DEFAULT_CHUNK; else a power of
	                              * two in [GS_IMAGE_MIN_CHUNK, GS_IMAGE_MAX_CHUNK] */
	int zstd_level;              /* 0: no compression; 1..19: zstd level
	                              * (negative: zstd's fast levels) */
	unsigned queue_depth;        /* writes in flight; 0: GS_IMAGE_DEFAULT_DEPTH */
	bool buffered;               /* never try O_DIRECT */
	struct gs_image_log log;
};

struct gs_image_writer;

/* Start an image at `dir`: creates dir.tmp (a stale dir.tmp left by a crashed
 * writer is cleared; one held by a live writer is refused) and memory.img's
 * header. Refuses with -EEXIST when `dir` exists and !opts->replace. `opts`
 * may be NULL (defaults). */
int gs_image_writer_open(const char *dir, const struct gs_image_write_opts *opts,
			 struct gs_image_writer **out, char **err);

/* Source description for the manifest; may be called any time before
 * commit (the last call wins). Strings and arrays are copied. */
int gs_image_set_source(struct gs_image_writer *w, const struct gs_image_source *src);

/* Store one module image as modules/<index>.bin (written now, synchronously;
 * size + XXH3 go to the manifest). Identical bytes added again return the
 * index already stored. Refer to modules by index in the state records. */
int gs_image_add_module(struct gs_image_writer *w, const void *bytes, size_t size,
			uint32_t *index);

/* Declare the memory range [va, va + size) and reserve its slot in
 * memory.img. Extents are numbered 0, 1, 2... in the order added (*extent);
 * their va ranges must not overlap; size > 0. */
int gs_image_add_extent(struct gs_image_writer *w, uint64_t va, uint64_t size,
			uint32_t *extent);

/* Chunk size of this image (what the staging buffers must hold). */
uint32_t gs_image_write_chunk_size(const struct gs_image_writer *w);

/* Queue one chunk: `offset` a multiple of the chunk size inside the extent,
 * len == min(chunk size, extent size - offset), buf 4 KiB-aligned with room
 * for len rounded up to 4 KiB (the bytes past len are overwritten with zeros
 * when len is not a multiple of 4 KiB). Zero detection, checksum and
 * compression happen here, before queueing; the write itself is
 * asynchronous. May block reaping earlier completions when the queue is
 * full. `done` (may be NULL) is called exactly once when buf is free again,
 * possibly before this returns (zero or compressed chunks). Each chunk is
 * written once. After an I/O error the writer refuses further work: the
 * image cannot be completed. */
int gs_image_write_chunk(struct gs_image_writer *w, uint32_t extent, uint64_t offset,
			 void *buf, size_t len, gs_image_done_fn done, void *arg);

/* Handle completed writes (callbacks); with `wait`, block until at least
 * one completes if any are in flight. Returns the number handled or -errno. */
int gs_image_write_reap(struct gs_image_writer *w, bool wait);

/* Wait for every queued write. */
int gs_image_write_flush(struct gs_image_writer *w);

/* Finish: flush, check every chunk of every extent was written, write the
 * manifest with `state` (borrowed; embedded verbatim under "state"; NULL
 * gives {}), fsync files and directories, rename dir.tmp to dir (replace:
 * exchange atomically, then delete the old image). On failure nothing is
 * at `dir` that was not there before. */
int gs_image_commit(struct gs_image_writer *w, json_t *state);

/* Totals so far (complete after commit). */
void gs_image_write_stats(const struct gs_image_writer *w, struct gs_image_stats *st);

const char *gs_image_writer_errmsg(const struct gs_image_writer *w);

/* Free the writer. Waits for queued writes first (their callbacks run), so
 * free the staging buffers after this. Without a successful commit it
 * removes dir.tmp: an aborted dump leaves nothing behind. NULL is a no-op. */
void gs_image_writer_close(struct gs_image_writer *w);

/* ---- reading ---------------------------------------------------------- */

struct gs_image_read_opts {
	unsigned queue_depth;        /* reads in flight; 0: GS_IMAGE_DEFAULT_DEPTH */
	bool buffered;               /* never try O_DIRECT */
	struct gs_image_log log;
};

struct gs_image_reader;

/* Open and validate an image: manifest.json (checked against the checksum
 * in memory.img's header, then every field), memory.img's header and size,
 * the presence and size of every module file. Data is not read yet. */
int gs_image_reader_open(const char *dir, const struct gs_image_read_opts *opts,
			 struct gs_image_reader **out, char **err);

/* Borrowed, valid until close: the caller's records, and the whole manifest
 * (for tools that print it). */
json_t *gs_image_state(const struct gs_image_reader *r);
json_t *gs_image_manifest(const struct gs_image_reader *r);

/* Borrowed, valid until close; host is never NULL. */
const struct gs_image_source *gs_image_source(const struct gs_image_reader *r);

void gs_image_read_stats(const struct gs_image_reader *r, struct gs_image_stats *st);

struct gs_image_extent {
	uint32_t id;
	uint64_t va;
	uint64_t size;
	uint64_t file_offset;        /* of its slot in memory.img */
	uint32_t chunks;
	uint64_t bytes_zero;         /* in all-zero chunks */
};

uint32_t gs_image_extent_count(const struct gs_image_reader *r);
int gs_image_extent_get(const struct gs_image_reader *r, uint32_t id,
			struct gs_image_extent *out);
/* The extent whose range contains va (-ENOENT: none). */
int gs_image_extent_find(const struct gs_image_reader *r, uint64_t va, uint32_t *id);

enum gs_image_chunk_kind {
	GS_IMAGE_CHUNK_RAW,
	GS_IMAGE_CHUNK_ZERO,
	GS_IMAGE_CHUNK_ZSTD,
};

struct gs_image_chunk {
	enum gs_image_chunk_kind kind;
	uint64_t offset;             /* bytes into the extent */
	uint32_t len;                /* uncompressed */
	uint32_t stored;             /* bytes in memory.img (0 for zero) */
	uint64_t file_offset;
	uint64_t xxh3;               /* of the uncompressed bytes (0 for zero) */
};

/* Lets a restore skip zero chunks (memset the device instead). */
int gs_image_chunk_get(const struct gs_image_reader *r, uint32_t extent, uint32_t index,
		       struct gs_image_chunk *out);

uint32_t gs_image_read_chunk_size(const struct gs_image_reader *r);

/* Queue the read of one chunk into buf (same rules as gs_image_write_chunk:
 * offset a multiple of the chunk size, len the chunk's length, buf
 * 4 KiB-aligned with room for len rounded up to 4 KiB). `done` gets
 * status 0 once buf holds the verified, decompressed bytes, or -EBADMSG
 * (checksum mismatch, bad compressed data; the message names extent and
 * chunk), -EIO/-ENODATA (memory.img short or unreadable). Zero chunks are
 * memset and completed at once. A failed chunk does not stop the others. */
int gs_image_read_chunk(struct gs_image_reader *r, uint32_t extent, uint64_t offset,
			void *buf, size_t len, gs_image_done_fn done, void *arg);

int gs_image_read_reap(struct gs_image_reader *r, bool wait);
int gs_image_read_flush(struct gs_image_reader *r);

/* Number of modules, and one module's bytes (malloc'd, caller frees), its
 * size and XXH3 checked against the manifest (-EBADMSG on mismatch). */
uint32_t gs_image_module_count(const struct gs_image_reader *r);
int gs_image_read_module(struct gs_image_reader *r, uint32_t index, void **bytes,
			 size_t *size);

/* Read and check every chunk and every module file. Each problem is
 * reported through the log callback (error level) and counted in *bad;
 * `progress` (may be NULL) gets bytes verified so far and the total.
 * Returns 0 when everything matched, -EBADMSG when something did not,
 * another -errno when the image could not be read at all. */
int gs_image_verify(struct gs_image_reader *r,
		    void (*progress)(void *arg, uint64_t done, uint64_t total),
		    void *progress_arg, uint64_t *bad);

const char *gs_image_reader_errmsg(const struct gs_image_reader *r);

void gs_image_reader_close(struct gs_image_reader *r);

#endif
