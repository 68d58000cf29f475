/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Image writer: DIR.tmp, memory.img through the I/O engine, module files,
 * then the manifest and the commit (fsync everything, rename).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <xxhash.h>
#include <zstd.h>

#include "image_internal.h"

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

/* ---- opening -------------------------------------------------------------- */

/* Split "a/b/c/" into the parent "a/b" and the name "c". */
static int split_path(const char *path, char **parent, char **base)
{
	size_t len = strlen(path);
	const char *slash;
	char *p;

	while (len > 1 && path[len - 1] == '/')
		len--;
	p = strndup(path, len);
	if (!p)
		return -ENOMEM;
	slash = strrchr(p, '/');
	if (!slash) {
		*parent = strdup(".");
		*base = p;
	} else {
		*base = strdup(slash + 1);
		*parent = slash == p ? strdup("/") : strndup(p, (size_t)(slash - p));
		free(p);
	}
	if (!*parent || !*base) {
		free(*parent);
		free(*base);
		*parent = *base = NULL;
		return -ENOMEM;
	}
	if (**base == '\0' || strcmp(*base, ".") == 0 || strcmp(*base, "..") == 0) {
		free(*parent);
		free(*base);
		*parent = *base = NULL;
		return -EINVAL;
	}
	return 0;
}

static json_t *default_source(void)
{
	char host[HOST_NAME_MAX + 1] = "";

	gethostname(host, sizeof(host) - 1);
	return json_pack("{s:s, s:i, s:i, s:[]}", "host", host, "pid", (int)getpid(),
			 "driver_version", 0, "devices");
}

/* A DIR.tmp is there already. A live writer holds its lock: refuse. One
 * nobody holds was left by a crash: it never was a whole image, clear it. */
static int take_stale_tmp(struct gs_image_writer *w)
{
	char foreign[PATH_MAX];
	int ret;

	w->tmp_fd = openat(w->parent_fd, w->tmp_base,
			   O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (w->tmp_fd < 0)
		return image_fail(&w->err, -errno, "image %s: %s.tmp exists and is not a "
				  "directory: %s; remove it", w->dir, w->dir, strerror(errno));
	if (flock(w->tmp_fd, LOCK_EX | LOCK_NB) < 0)
		return image_fail(&w->err, errno == EWOULDBLOCK ? -EBUSY : -errno,
				  "image %s: another process is writing this image (%s.tmp is "
				  "locked); wait for it or choose another directory", w->dir, w->dir);
	ret = image_clear_dir(w->tmp_fd, foreign, sizeof(foreign));
	if (ret == -ENOTEMPTY)
		return image_fail(&w->err, ret, "image %s: %s.tmp, left by an interrupted dump, "
				  "holds \"%s\", which is not part of an image; remove %s.tmp "
				  "by hand", w->dir, w->dir, foreign, w->dir);
	if (ret < 0)
		return image_fail(&w->err, ret, "image %s: cannot clear %s.tmp left by an "
				  "interrupted dump: %s", w->dir, w->dir, strerror(-ret));
	image_logf(&w->err, GS_IMAGE_LOG_WARN, "image %s: cleared %s.tmp left by an "
		   "interrupted dump", w->dir, w->dir);
	return 0;
}

static int check_existing(struct gs_image_writer *w)
{
	struct stat st;
	int fd;
	bool is_image;

	if (fstatat(w->parent_fd, w->base, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT)
			return 0;
		return image_fail(&w->err, -errno, "image %s: %s", w->dir, strerror(errno));
	}
	if (!w->opts.replace)
		return image_fail(&w->err, -EEXIST, "image %s already exists: choose another "
				  "directory, remove it, or ask to replace it", w->dir);
	if (!S_ISDIR(st.st_mode))
		return image_fail(&w->err, -EEXIST, "image %s exists and is not a directory; "
				  "refusing to replace it", w->dir);
	fd = openat(w->parent_fd, w->base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return image_fail(&w->err, -errno, "image %s: %s", w->dir, strerror(errno));
	is_image = image_dir_is_image(fd);
	close(fd);
	/* Replacing deletes the old directory's contents: only ever an image. */
	if (!is_image)
		return image_fail(&w->err, -EEXIST, "image %s exists and is not a gpuswap "
				  "image; refusing to replace it", w->dir);
	w->replace_existing = true;
	return 0;
}

static int write_header(struct gs_image_writer *w, uint64_t manifest_size,
			uint64_t manifest_hash)
{
	struct image_header h = {
		.version = GS_IMAGE_FORMAT_VERSION,
		.header_size = IMAGE_HEADER_SIZE,
		.chunk_size = w->chunk_size,
		.manifest_size = manifest_size,
		.manifest_hash = manifest_hash,
	};
	void *block;
	int ret;

	if (posix_memalign(&block, GS_IMAGE_ALIGN, IMAGE_HEADER_SIZE))
		return -ENOMEM;
	memcpy(h.image_id, w->image_id, sizeof(h.image_id));
	image_header_encode(&h, block);
	ret = image_io_pwrite_all(w->io, block, IMAGE_HEADER_SIZE, 0);
	free(block);
	return ret;
}

static void make_image_id(unsigned char id[16])
{
	struct timespec ts;
	uint64_t a, b;

	if (getrandom(id, 16, GRND_NONBLOCK) == 16)
		return;
	/* No entropy yet (early boot): the id only has to differ between
	 * images, time and pid do that. */
	clock_gettime(CLOCK_REALTIME, &ts);
	a = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	b = ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)id;
	memcpy(id, &a, 8);
	memcpy(id + 8, &b, 8);
}

static int writer_setup(struct gs_image_writer *w, const char *dir)
{
	char *parent = NULL, why[256];
	int ret;

	ret = split_path(dir, &parent, &w->base);
	if (ret < 0)
		return image_fail(&w->err, ret, "image \"%s\": not a usable directory name", dir);
	if (asprintf(&w->tmp_base, "%s.tmp", w->base) < 0) {
		w->tmp_base = NULL;
		free(parent);
		return -ENOMEM;
	}
	w->parent_fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (w->parent_fd < 0) {
		ret = image_fail(&w->err, -errno, "image %s: cannot open its parent directory "
				 "%s: %s; create it first", dir, parent, strerror(errno));
		free(parent);
		return ret;
	}
	free(parent);
	ret = check_existing(w);
	if (ret < 0)
		return ret;
	if (mkdirat(w->parent_fd, w->tmp_base, 0700) == 0) {
		w->own_tmp = true;
		w->tmp_fd = openat(w->parent_fd, w->tmp_base,
				   O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (w->tmp_fd < 0 || flock(w->tmp_fd, LOCK_EX | LOCK_NB) < 0)
			return image_fail(&w->err, -errno, "image %s: %s.tmp: %s", dir, dir,
					  strerror(errno));
	} else if (errno == EEXIST) {
		ret = take_stale_tmp(w);
		if (ret < 0)
			return ret;
		w->own_tmp = true;
	} else {
		return image_fail(&w->err, -errno, "image %s: cannot create %s.tmp: %s", dir,
				  dir, strerror(errno));
	}
	if (mkdirat(w->tmp_fd, image_file_names[IMAGE_FILE_MODULES], 0700) < 0 ||
	    (w->modules_fd = openat(w->tmp_fd, image_file_names[IMAGE_FILE_MODULES],
				    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
		return image_fail(&w->err, -errno, "image %s: cannot create %s.tmp/%s: %s", dir,
				  dir, image_file_names[IMAGE_FILE_MODULES], strerror(errno));
	ret = image_io_open(w->tmp_fd, image_file_names[IMAGE_FILE_MEMORY],
			    O_WRONLY | O_CREAT | O_EXCL, 0600, !w->opts.buffered, w->depth, &w->io,
			    why, sizeof(why));
	if (ret < 0)
		return image_fail(&w->err, ret, "image %s: cannot create %s: %s", dir,
				  image_file_names[IMAGE_FILE_MEMORY], why);
	make_image_id(w->image_id);
	ret = write_header(w, 0, 0);
	if (ret < 0)
		return image_fail(&w->err, ret, "image %s: writing the header of %s: %s", dir,
				  image_file_names[IMAGE_FILE_MEMORY], strerror(-ret));
	w->file_end = IMAGE_HEADER_SIZE;
	w->file_size_set = IMAGE_HEADER_SIZE;
	w->slots = calloc(w->depth, sizeof(*w->slots));
	w->source = default_source();
	if (!w->slots || !w->source)
		return image_fail(&w->err, -ENOMEM, "image %s: out of memory", dir);
	if (w->opts.zstd_level != 0) {
		w->cctx = ZSTD_createCCtx();
		if (!w->cctx || ZSTD_isError(ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_compressionLevel,
								    w->opts.zstd_level)))
			return image_fail(&w->err, -EINVAL, "image %s: zstd level %d refused",
					  dir, w->opts.zstd_level);
	}
	return 0;
}

static void writer_free(struct gs_image_writer *w)
{
	image_io_close(w->io);
	if (w->slots)
		for (unsigned i = 0; i < w->depth; i++)
			free(w->slots[i].bounce);
	free(w->slots);
	for (uint32_t i = 0; i < w->nextents; i++)
		free(w->extents[i].chunks);
	free(w->extents);
	free(w->ranges);
	free(w->modules);
	ZSTD_freeCCtx(w->cctx);
	json_decref(w->source);
	if (w->modules_fd >= 0)
		close(w->modules_fd);
	if (w->tmp_fd >= 0)
		close(w->tmp_fd);
	if (w->parent_fd >= 0)
		close(w->parent_fd);
	free(w->dir);
	free(w->base);
	free(w->tmp_base);
	image_err_free(&w->err);
	free(w);
}

static void remove_tmp(struct gs_image_writer *w)
{
	char foreign[PATH_MAX];

	if (!w->own_tmp)
		return;
	if ((w->tmp_fd >= 0 && image_clear_dir(w->tmp_fd, foreign, sizeof(foreign)) < 0) ||
	    unlinkat(w->parent_fd, w->tmp_base, AT_REMOVEDIR) < 0)
		image_logf(&w->err, GS_IMAGE_LOG_WARN, "image %s: could not remove %s.tmp of "
			   "the aborted dump; remove it by hand", w->dir, w->dir);
}

int gs_image_writer_open(const char *dir, const struct gs_image_write_opts *opts,
			 struct gs_image_writer **out, char **err)
{
	struct gs_image_writer *w = calloc(1, sizeof(*w));
	int ret;

	if (err)
		*err = NULL;
	if (!w || !(w->dir = strdup(dir))) {
		free(w);
		if (err)
			*err = strdup("image: out of memory");
		return -ENOMEM;
	}
	w->parent_fd = w->tmp_fd = w->modules_fd = -1;
	if (opts)
		w->opts = *opts;
	w->err.log = w->opts.log;
	w->chunk_size = w->opts.chunk_size ? w->opts.chunk_size : GS_IMAGE_DEFAULT_CHUNK;
	w->depth = w->opts.queue_depth ? w->opts.queue_depth : GS_IMAGE_DEFAULT_DEPTH;
	if (w->chunk_size < GS_IMAGE_MIN_CHUNK || w->chunk_size > GS_IMAGE_MAX_CHUNK ||
	    (w->chunk_size & (w->chunk_size - 1))) {
		ret = image_fail(&w->err, -EINVAL, "image %s: chunk size %u is not a power of "
				 "two between %u and %u", dir, w->chunk_size, GS_IMAGE_MIN_CHUNK,
				 GS_IMAGE_MAX_CHUNK);
		goto fail;
	}
	if (w->depth > 1024) {
		ret = image_fail(&w->err, -EINVAL, "image %s: queue depth %u is over 1024",
				 dir, w->depth);
		goto fail;
	}
	ret = writer_setup(w, dir);
	if (ret < 0)
		goto fail;
	w->stats.direct_io = image_io_direct(w->io);
	w->stats.uring = image_io_uring(w->io);
	*out = w;
	return 0;
fail:
	image_err_export(&w->err, err);
	/* Only remove a DIR.tmp this writer made (or cleared) itself. */
	if (w->own_tmp) {
		image_io_close(w->io);
		w->io = NULL;
		remove_tmp(w);
	}
	writer_free(w);
	return ret;
}

/* ---- source and modules ------------------------------------------------------ */

int gs_image_set_source(struct gs_image_writer *w, const struct gs_image_source *src)
{
	char host[HOST_NAME_MAX + 1] = "";
	json_t *s, *devs;

	if (src->ndevices && !src->devices)
		return image_fail(&w->err, -EINVAL, "image %s: %u devices but no array",
				  w->dir, src->ndevices);
	if (!src->host)
		gethostname(host, sizeof(host) - 1);
	s = json_pack("{s:s, s:i, s:i, s:[]}", "host", src->host ? src->host : host,
		      "pid", src->pid, "driver_version", src->driver_version, "devices");
	if (!s)
		return image_fail(&w->err, -EINVAL, "image %s: source host is not valid UTF-8",
				  w->dir);
	devs = json_object_get(s, "devices");
	for (unsigned i = 0; i < src->ndevices; i++) {
		const struct gs_image_device *d = &src->devices[i];
		char uuid[41], name[sizeof(d->name) + 1];
		json_t *dev;

		gs_image_uuid_format(d->uuid, uuid);
		memcpy(name, d->name, sizeof(d->name));
		name[sizeof(d->name)] = '\0';
		dev = json_pack("{s:i, s:s, s:s, s:[i,i], s:I}", "ordinal", d->ordinal,
				"uuid", uuid, "name", name, "compute_capability",
				d->cc_major, d->cc_minor, "total_mem", (json_int_t)d->total_mem);
		if (!dev || json_array_append_new(devs, dev) < 0) {
			json_decref(s);
			return image_fail(&w->err, -EINVAL, "image %s: device %u: name is not "
					  "valid UTF-8", w->dir, i);
		}
	}
	json_decref(w->source);
	w->source = s;
	return 0;
}

static int write_file(int dirfd, const char *name, const void *bytes, size_t size)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	const char *p = bytes;
	int ret = 0;

	if (fd < 0)
		return -errno;
	while (size > 0) {
		ssize_t n = write(fd, p, size);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			break;
		}
		p += n;
		size -= (size_t)n;
	}
	if (close(fd) < 0 && ret == 0)
		ret = -errno;
	return ret;
}

int gs_image_add_module(struct gs_image_writer *w, const void *bytes, size_t size,
			uint32_t *index)
{
	XXH128_hash_t h;
	char name[32];
	int ret;

	if (w->committed)
		return image_fail(&w->err, -EINVAL, "image %s: already committed", w->dir);
	if (!bytes || size == 0 || size > IMAGE_MODULE_MAX)
		return image_fail(&w->err, -EINVAL, "image %s: module of %zu bytes: size must "
				  "be 1..%llu", w->dir, size, IMAGE_MODULE_MAX);
	h = XXH3_128bits(bytes, size);
	/* Every context that loads a library gets its own module with the
	 * same bytes; one file serves them all. */
	for (uint32_t i = 0; i < w->nmodules; i++)
		if (w->modules[i].size == size && XXH128_isEqual(w->modules[i].dedup, h)) {
			*index = i;
			return 0;
		}
	if (w->nmodules == w->modules_cap) {
		uint32_t cap = w->modules_cap ? 2 * w->modules_cap : 16;
		struct wr_module *m = realloc(w->modules, cap * sizeof(*m));

		if (!m)
			return image_fail(&w->err, -ENOMEM, "image %s: out of memory", w->dir);
		w->modules = m;
		w->modules_cap = cap;
	}
	image_module_name(w->nmodules, true, name);
	ret = write_file(w->modules_fd, name, bytes, size);
	if (ret < 0)
		return image_fail(&w->err, ret, "image %s: writing %s.tmp/%s/%s: %s", w->dir,
				  w->dir, image_file_names[IMAGE_FILE_MODULES], name, strerror(-ret));
	w->modules[w->nmodules] = (struct wr_module){.size = size,
						     .hash = XXH3_64bits(bytes, size),
						     .dedup = h};
	*index = w->nmodules++;
	w->stats.modules = w->nmodules;
	w->stats.module_bytes += size;
	return 0;
}

/* ---- memory ------------------------------------------------------------------- */

int gs_image_add_extent(struct gs_image_writer *w, uint64_t va, uint64_t size,
			uint32_t *extent)
{
	struct wr_extent *e;
	uint32_t lo = 0, hi = w->nextents;

	if (w->committed)
		return image_fail(&w->err, -EINVAL, "image %s: already committed", w->dir);
	/* The manifest holds signed 64-bit integers; device addresses are far
	 * below 2^63 on every GPU. */
	if (size == 0 || size > IMAGE_EXTENT_MAX_SIZE || va > (uint64_t)INT64_MAX - size ||
	    (size + w->chunk_size - 1) / w->chunk_size > UINT32_MAX)
		return image_fail(&w->err, -EINVAL, "image %s: extent at va 0x%llx: size %llu "
				  "out of range", w->dir, (unsigned long long)va,
				  (unsigned long long)size);
	if (w->file_end + image_align_up(size) > (uint64_t)INT64_MAX)
		return image_fail(&w->err, -EFBIG, "image %s: memory.img would exceed 2^63 bytes",
				  w->dir);
	if (w->nextents == UINT32_MAX)
		return image_fail(&w->err, -E2BIG, "image %s: too many extents", w->dir);
	/* The first range ending after va must start at or after va + size. */
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (w->ranges[mid].end <= va)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < w->nextents && w->ranges[lo].va < va + size)
		return image_fail(&w->err, -EINVAL, "image %s: extent [0x%llx, 0x%llx) overlaps "
				  "extent %u [0x%llx, 0x%llx): each byte of device memory "
				  "belongs to one extent", w->dir, (unsigned long long)va,
				  (unsigned long long)(va + size), w->ranges[lo].extent,
				  (unsigned long long)w->ranges[lo].va,
				  (unsigned long long)w->ranges[lo].end);
	if (w->nextents == w->extents_cap) {
		uint32_t cap = w->extents_cap ? 2 * w->extents_cap : 64;
		struct wr_extent *ne = realloc(w->extents, cap * sizeof(*ne));
		struct wr_range *nr;

		if (!ne)
			return image_fail(&w->err, -ENOMEM, "image %s: out of memory", w->dir);
		w->extents = ne;
		nr = realloc(w->ranges, cap * sizeof(*nr));
		if (!nr)
			return image_fail(&w->err, -ENOMEM, "image %s: out of memory", w->dir);
		w->ranges = nr;
		w->extents_cap = cap;
	}
	e = &w->extents[w->nextents];
	*e = (struct wr_extent){.va = va, .size = size, .offset = w->file_end,
				.nchunks = (uint32_t)((size + w->chunk_size - 1) / w->chunk_size)};
	e->chunks = calloc(e->nchunks, sizeof(*e->chunks));
	if (!e->chunks)
		return image_fail(&w->err, -ENOMEM, "image %s: out of memory", w->dir);
	memmove(&w->ranges[lo + 1], &w->ranges[lo], (w->nextents - lo) * sizeof(*w->ranges));
	w->ranges[lo] = (struct wr_range){.va = va, .end = va + size, .extent = w->nextents};
	w->file_end += image_align_up(size);
	*extent = w->nextents++;
	w->stats.extents = w->nextents;
	w->stats.chunks += e->nchunks;
	w->stats.bytes_total += size;
	return 0;
}

uint32_t gs_image_write_chunk_size(const struct gs_image_writer *w)
{
	return w->chunk_size;
}

static void finish_slot(struct gs_image_writer *w, struct wr_slot *s, int status)
{
	gs_image_done_fn done = s->done;

	s->busy = false;
	s->done = NULL;
	if (done) {
		s->io.status = status;
		done(s->arg, &s->io);
	}
}

static void on_written(void *arg, struct image_io_req *req)
{
	struct gs_image_writer *w = arg;
	struct wr_slot *s = image_container_of(req, struct wr_slot, req);
	struct wr_extent *e = &w->extents[s->extent];
	struct wr_chunk *c = &e->chunks[s->index];
	int status = req->res < 0 ? req->res : (uint32_t)req->res == req->len ? 0 : -EIO;

	if (image_fault("image-write-enospc"))
		status = -ENOSPC;
	if (status < 0) {
		if (!w->failed)
			image_fail(&w->err, status, "image %s: writing %s (extent %u chunk %u, "
				   "%u bytes at offset %llu): %s; the image cannot be completed: "
				   "%s, then dump again", w->dir,
				   image_file_names[IMAGE_FILE_MEMORY], s->extent, s->index,
				   req->len, (unsigned long long)req->off, strerror(-status),
				   status == -ENOSPC || status == -EDQUOT ?
				   "free space or choose a directory on another filesystem" :
				   "check the filesystem (dmesg)");
		w->failed = status;
		c->state = CHUNK_EMPTY;
	} else {
		c->state = CHUNK_DONE;
		e->ndone++;
		if (c->kind == GS_IMAGE_CHUNK_ZSTD) {
			w->stats.bytes_compressed_in += s->io.len;
			w->stats.bytes_compressed_out += c->stored;
		} else {
			w->stats.bytes_raw += c->stored;
		}
		w->stats.bytes_stored += c->stored;
	}
	w->stats.direct_io = image_io_direct(w->io);
	finish_slot(w, s, status);
}

int gs_image_write_reap(struct gs_image_writer *w, bool wait)
{
	int n = image_io_reap(w->io, wait, on_written, w);

	if (n < 0)
		return image_fail(&w->err, n, "image %s: waiting for writes: %s", w->dir,
				  strerror(-n));
	return w->failed ? w->failed : n;
}

int gs_image_write_flush(struct gs_image_writer *w)
{
	while (image_io_inflight(w->io) > 0) {
		int n = image_io_reap(w->io, true, on_written, w);

		if (n < 0)
			return image_fail(&w->err, n, "image %s: waiting for writes: %s", w->dir,
					  strerror(-n));
	}
	return w->failed;
}

static struct wr_slot *free_slot(struct gs_image_writer *w, int *ret)
{
	for (;;) {
		for (unsigned i = 0; i < w->depth; i++)
			if (!w->slots[i].busy)
				return &w->slots[i];
		*ret = image_io_reap(w->io, true, on_written, w);
		if (*ret < 0) {
			image_fail(&w->err, *ret, "image %s: waiting for writes: %s", w->dir,
				   strerror(-*ret));
			return NULL;
		}
		if (w->failed) {
			*ret = w->failed;
			return NULL;
		}
	}
}

/* Compress into the slot's bounce buffer; the stored size, or 0 when it
 * does not save at least one 4 KiB block (then the chunk is stored raw). */
static uint32_t compress_chunk(struct gs_image_writer *w, struct wr_slot *s, const void *buf,
			       size_t len)
{
	uint64_t cap = image_align_up(len) - GS_IMAGE_ALIGN;
	size_t n;

	if (cap == 0)
		return 0;
	if (!s->bounce && posix_memalign(&s->bounce, GS_IMAGE_ALIGN, w->chunk_size))
		s->bounce = NULL;
	if (!s->bounce)
		return 0;
	/* A destination one block smaller than the raw slot: zstd gives up as
	 * soon as the output cannot fit, so incompressible data costs little. */
	n = ZSTD_compress2(w->cctx, s->bounce, cap, buf, len);
	if (ZSTD_isError(n) || n == 0)
		return 0;
	memset((char *)s->bounce + n, 0, image_align_up(n) - n);
	return (uint32_t)n;
}

int gs_image_write_chunk(struct gs_image_writer *w, uint32_t extent, uint64_t offset,
			 void *buf, size_t len, gs_image_done_fn done, void *arg)
{
	struct wr_extent *e;
	struct wr_chunk *c;
	struct wr_slot *s;
	uint32_t index, stored;
	int ret;

	if (w->failed)
		return w->failed;
	if (w->committed)
		return image_fail(&w->err, -EINVAL, "image %s: already committed", w->dir);
	if (extent >= w->nextents)
		return image_fail(&w->err, -EINVAL, "image %s: no extent %u (%u added)", w->dir,
				  extent, w->nextents);
	e = &w->extents[extent];
	if (offset % w->chunk_size || offset >= e->size)
		return image_fail(&w->err, -EINVAL, "image %s: extent %u: offset %llu is not a "
				  "chunk start (chunk size %u, extent size %llu)", w->dir, extent,
				  (unsigned long long)offset, w->chunk_size,
				  (unsigned long long)e->size);
	index = (uint32_t)(offset / w->chunk_size);
	if (len != (e->size - offset < w->chunk_size ? e->size - offset : w->chunk_size))
		return image_fail(&w->err, -EINVAL, "image %s: extent %u chunk %u: length %zu, "
				  "expected %llu", w->dir, extent, index, len,
				  (unsigned long long)(e->size - offset < w->chunk_size ?
						       e->size - offset : w->chunk_size));
	if ((uintptr_t)buf % GS_IMAGE_ALIGN)
		return image_fail(&w->err, -EINVAL, "image %s: extent %u chunk %u: buffer %p "
				  "is not 4 KiB-aligned", w->dir, extent, index, buf);
	c = &e->chunks[index];
	if (c->state != CHUNK_EMPTY)
		return image_fail(&w->err, -EEXIST, "image %s: extent %u chunk %u written twice",
				  w->dir, extent, index);

	if (image_is_zero(buf, len)) {
		struct gs_image_io io = {.extent = extent, .offset = offset, .buf = buf,
					 .len = len, .zero = true};

		/* A hole: nothing to write, and the reader knows from the
		 * manifest. */
		*c = (struct wr_chunk){.state = CHUNK_DONE, .kind = GS_IMAGE_CHUNK_ZERO};
		e->ndone++;
		w->stats.bytes_zero += len;
		if (done)
			done(arg, &io);
		return 0;
	}
	s = free_slot(w, &ret);
	if (!s)
		return ret;
	if (len % GS_IMAGE_ALIGN)
		memset((char *)buf + len, 0, image_align_up(len) - len);
	c->hash = image_hash(buf, len);
	c->kind = GS_IMAGE_CHUNK_RAW;
	c->stored = (uint32_t)len;
	s->io = (struct gs_image_io){.extent = extent, .offset = offset, .buf = buf, .len = len};
	s->extent = extent;
	s->index = index;
	s->done = done;
	s->arg = arg;
	s->req = (struct image_io_req){.buf = buf, .len = (uint32_t)image_align_up(len),
				       .off = e->offset + offset, .write = true};
	if (w->cctx && (stored = compress_chunk(w, s, buf, len)) > 0) {
		c->kind = GS_IMAGE_CHUNK_ZSTD;
		c->stored = stored;
		s->req.buf = s->bounce;
		s->req.len = (uint32_t)image_align_up(stored);
	}
	/* Writes stay inside the file's size: extending writes serialise on
	 * the inode in several filesystems (ext4 among them). */
	if (s->req.off + s->req.len > w->file_size_set) {
		if (ftruncate(image_io_fd(w->io), (off_t)w->file_end) < 0)
			return image_fail(&w->err, -errno, "image %s: extending %s to %llu bytes: "
					  "%s", w->dir, image_file_names[IMAGE_FILE_MEMORY],
					  (unsigned long long)w->file_end, strerror(errno));
		w->file_size_set = w->file_end;
	}
	c->state = CHUNK_QUEUED;
	s->busy = true;
	ret = image_io_submit(w->io, &s->req);
	if (ret < 0) {
		s->busy = false;
		s->done = NULL;
		c->state = CHUNK_EMPTY;
		w->failed = ret;
		return image_fail(&w->err, ret, "image %s: queueing a write of %s: %s", w->dir,
				  image_file_names[IMAGE_FILE_MEMORY], strerror(-ret));
	}
	/* The caller's buffer is free as soon as it has been compressed. */
	if (c->kind == GS_IMAGE_CHUNK_ZSTD && done) {
		s->done = NULL;
		s->io.status = 0;
		done(arg, &s->io);
	}
	return 0;
}

void gs_image_write_stats(const struct gs_image_writer *w, struct gs_image_stats *st)
{
	*st = w->stats;
}

const char *gs_image_writer_errmsg(const struct gs_image_writer *w)
{
	return w->err.msg ? w->err.msg : "";
}

/* ---- commit -------------------------------------------------------------------- */

static json_t *chunk_json(const struct wr_chunk *c)
{
	char hex[17];

	if (c->kind == GS_IMAGE_CHUNK_ZERO)
		return json_pack("{s:s}", "kind", "zero");
	image_hash_format(c->hash, hex);
	return json_pack("{s:s, s:I, s:s}", "kind", c->kind == GS_IMAGE_CHUNK_ZSTD ? "zstd" : "raw",
			 "stored", (json_int_t)c->stored, "xxh3", hex);
}

static json_t *build_manifest(struct gs_image_writer *w, json_t *state)
{
	char id[33], hex[17], when[32], name[32];
	json_t *m, *mem, *extents, *modules;
	struct tm tm;
	time_t now = time(NULL);

	image_hex_format(w->image_id, 16, id);
	gmtime_r(&now, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	extents = json_array();
	modules = json_array();
	mem = json_pack("{s:s, s:I, s:I, s:I, s:s, s:s, s:s, s:i, s:{s:I, s:I, s:I, s:I, s:I, "
			"s:I, s:I}, s:o}",
			"file", image_file_names[IMAGE_FILE_MEMORY],
			"header_size", (json_int_t)IMAGE_HEADER_SIZE,
			"chunk_size", (json_int_t)w->chunk_size,
			"file_size", (json_int_t)w->file_end,
			"io", w->stats.direct_io ? "direct" : "buffered",
			"io_engine", w->stats.uring ? "io_uring" : "pwrite",
			"compression", w->cctx ? "zstd" : "none",
			"zstd_level", w->cctx ? w->opts.zstd_level : 0,
			"totals",
			"bytes", (json_int_t)w->stats.bytes_total,
			"zero", (json_int_t)w->stats.bytes_zero,
			"raw", (json_int_t)w->stats.bytes_raw,
			"compressed_in", (json_int_t)w->stats.bytes_compressed_in,
			"compressed_out", (json_int_t)w->stats.bytes_compressed_out,
			"stored", (json_int_t)w->stats.bytes_stored,
			"chunks", (json_int_t)w->stats.chunks,
			"extents", extents);
	m = json_pack("{s:s, s:i, s:s, s:s, s:O, s:o, s:o, s:o}",
		      "magic", IMAGE_MANIFEST_MAGIC,
		      "format_version", GS_IMAGE_FORMAT_VERSION,
		      "image_id", id,
		      "created", when,
		      "source", w->source,
		      "memory", mem,
		      "modules", modules,
		      "state", state ? json_incref(state) : json_object());
	if (!m)
		return NULL;
	for (uint32_t i = 0; i < w->nextents; i++) {
		const struct wr_extent *e = &w->extents[i];
		json_t *chunks = json_array(), *ej;

		for (uint32_t k = 0; chunks && k < e->nchunks; k++)
			if (json_array_append_new(chunks, chunk_json(&e->chunks[k])) < 0) {
				json_decref(chunks);
				chunks = NULL;
			}
		ej = json_pack("{s:I, s:I, s:I, s:I, s:o}", "id", (json_int_t)i,
			       "va", (json_int_t)e->va, "size", (json_int_t)e->size,
			       "offset", (json_int_t)e->offset, "chunks", chunks);
		if (!ej || json_array_append_new(extents, ej) < 0)
			goto fail;
	}
	for (uint32_t i = 0; i < w->nmodules; i++) {
		json_t *mj;

		image_hash_format(w->modules[i].hash, hex);
		image_module_name(i, false, name);
		mj = json_pack("{s:I, s:s, s:I, s:s}", "index", (json_int_t)i, "file", name,
			       "size", (json_int_t)w->modules[i].size, "xxh3", hex);
		if (!mj || json_array_append_new(modules, mj) < 0)
			goto fail;
	}
	return m;
fail:
	json_decref(m);
	return NULL;
}

static int fsync_at(int dirfd, const char *name)
{
	int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	int ret = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

/* Everything under DIR.tmp reaches the disk before the rename makes it an
 * image: files, then the directories that name them. */
static int sync_tmp(struct gs_image_writer *w)
{
	char name[32];
	int ret;

	if (fsync(image_io_fd(w->io)) < 0)
		return image_fail(&w->err, -errno, "image %s: fsync %s: %s", w->dir,
				  image_file_names[IMAGE_FILE_MEMORY], strerror(errno));
	for (uint32_t i = 0; i < w->nmodules; i++) {
		image_module_name(i, true, name);
		ret = fsync_at(w->modules_fd, name);
		if (ret < 0)
			return image_fail(&w->err, ret, "image %s: fsync %s/%s: %s", w->dir,
					  image_file_names[IMAGE_FILE_MODULES], name,
					  strerror(-ret));
	}
	if (fsync(w->modules_fd) < 0 || fsync(w->tmp_fd) < 0)
		return image_fail(&w->err, -errno, "image %s: fsync %s.tmp: %s", w->dir, w->dir,
				  strerror(errno));
	return 0;
}

static int write_manifest(struct gs_image_writer *w, json_t *state)
{
	json_t *m = build_manifest(w, state);
	char *text;
	size_t len;
	int ret;

	if (!m)
		return image_fail(&w->err, -ENOMEM, "image %s: building the manifest failed "
				  "(out of memory, or a state string that is not UTF-8)", w->dir);
	/* One line per value: readable with a pager, still a few MB at most. */
	text = json_dumps(m, JSON_INDENT(1) | JSON_ENSURE_ASCII);
	json_decref(m);
	if (!text)
		return image_fail(&w->err, -ENOMEM, "image %s: serialising the manifest failed "
				  "(out of memory, or a state value JSON cannot hold, like NaN)",
				  w->dir);
	len = strlen(text);
	if (len > IMAGE_MANIFEST_MAX) {
		free(text);
		return image_fail(&w->err, -EFBIG, "image %s: manifest of %zu bytes is over the "
				  "%u-byte limit readers accept; use a larger chunk size", w->dir,
				  len, IMAGE_MANIFEST_MAX);
	}
	ret = write_file(w->tmp_fd, image_file_names[IMAGE_FILE_MANIFEST], text, len);
	if (ret == 0)
		ret = fsync_at(w->tmp_fd, image_file_names[IMAGE_FILE_MANIFEST]);
	if (ret < 0) {
		free(text);
		return image_fail(&w->err, ret, "image %s: writing %s: %s", w->dir,
				  image_file_names[IMAGE_FILE_MANIFEST], strerror(-ret));
	}
	/* The header carries the manifest's checksum: a damaged manifest (a
	 * flipped digit in an address) is caught before anything trusts it. */
	ret = write_header(w, len, image_hash(text, len));
	free(text);
	if (ret < 0)
		return image_fail(&w->err, ret, "image %s: writing the header of %s: %s", w->dir,
				  image_file_names[IMAGE_FILE_MEMORY], strerror(-ret));
	return 0;
}

static void remove_old(struct gs_image_writer *w, const char *name)
{
	char foreign[PATH_MAX];
	int fd = openat(w->parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	int ret = fd < 0 ? -errno : image_clear_dir(fd, foreign, sizeof(foreign));

	if (fd >= 0)
		close(fd);
	if (ret == 0 && unlinkat(w->parent_fd, name, AT_REMOVEDIR) < 0)
		ret = -errno;
	if (ret < 0)
		image_logf(&w->err, GS_IMAGE_LOG_WARN, "image %s: the replaced image is left in "
			   "%s (%s); remove it by hand", w->dir, name,
			   ret == -ENOTEMPTY ? "it holds other files" : strerror(-ret));
}

static int rename2(struct gs_image_writer *w, const char *from, const char *to,
		   unsigned flags)
{
	if (image_fault("image-no-renameat2")) {
		errno = EINVAL;
		return -1;
	}
	return renameat2(w->parent_fd, from, w->parent_fd, to, flags);
}

static int rename_into_place(struct gs_image_writer *w)
{
	char *old = NULL;
	int ret;

	if (!w->replace_existing) {
		/* NOREPLACE: a directory that appeared at DIR meanwhile is never
		 * overwritten (plain rename(2) would replace an empty one). */
		if (rename2(w, w->tmp_base, w->base, RENAME_NOREPLACE) == 0)
			return 0;
		if (errno != EINVAL && errno != ENOSYS)
			goto fail;
		if (faccessat(w->parent_fd, w->base, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
			errno = EEXIST;
			goto fail;
		}
		if (renameat(w->parent_fd, w->tmp_base, w->parent_fd, w->base) == 0)
			return 0;
		goto fail;
	}
	/* One step: readers see the old image or the new one, never none. */
	if (rename2(w, w->tmp_base, w->base, RENAME_EXCHANGE) == 0) {
		remove_old(w, w->tmp_base);
		return 0;
	}
	if (errno == ENOENT) {
		w->replace_existing = false;
		return rename_into_place(w);
	}
	if (errno != EINVAL && errno != ENOSYS)
		goto fail;
	/* No exchange here (some network and FUSE filesystems): move the old
	 * image aside first. A crash in between leaves it at DIR.old. */
	if (asprintf(&old, "%s.old", w->base) < 0)
		return image_fail(&w->err, -ENOMEM, "image %s: out of memory", w->dir);
	if (renameat(w->parent_fd, w->base, w->parent_fd, old) < 0) {
		ret = image_fail(&w->err, -errno, "image %s: moving the old image aside to %s: "
				 "%s", w->dir, old, strerror(errno));
		free(old);
		return ret;
	}
	if (renameat(w->parent_fd, w->tmp_base, w->parent_fd, w->base) < 0) {
		ret = -errno;
		renameat(w->parent_fd, old, w->parent_fd, w->base);
		free(old);
		errno = -ret;
		goto fail;
	}
	remove_old(w, old);
	free(old);
	return 0;
fail:
	return image_fail(&w->err, -errno, "image %s: renaming %s.tmp to %s: %s", w->dir,
			  w->dir, w->dir, errno == EEXIST ? "it exists now (another writer?)" :
			  strerror(errno));
}

int gs_image_commit(struct gs_image_writer *w, json_t *state)
{
	int ret;

	if (w->committed)
		return image_fail(&w->err, -EINVAL, "image %s: already committed", w->dir);
	if (w->failed)
		return w->failed;
	ret = gs_image_write_flush(w);
	if (ret < 0)
		return ret;
	for (uint32_t i = 0; i < w->nextents; i++) {
		const struct wr_extent *e = &w->extents[i];

		if (e->ndone == e->nchunks)
			continue;
		for (uint32_t k = 0; k < e->nchunks; k++)
			if (e->chunks[k].state != CHUNK_DONE)
				return image_fail(&w->err, -EINVAL, "image %s: extent %u (va 0x%llx, "
						  "%llu bytes): chunk %u of %u was never written; "
						  "every chunk must be written before the commit",
						  w->dir, i, (unsigned long long)e->va,
						  (unsigned long long)e->size, k, e->nchunks);
	}
	if (w->file_end != w->file_size_set &&
	    ftruncate(image_io_fd(w->io), (off_t)w->file_end) < 0)
		return image_fail(&w->err, -errno, "image %s: setting the size of %s: %s", w->dir,
				  image_file_names[IMAGE_FILE_MEMORY], strerror(errno));
	w->file_size_set = w->file_end;
	ret = write_manifest(w, state);
	if (ret < 0)
		return ret;
	ret = sync_tmp(w);
	if (ret < 0)
		return ret;
	if (image_fault("image-commit"))
		return image_fail(&w->err, -ECANCELED, "image %s: fault injected before the "
				  "rename (GPUSWAP_FAULT=image-commit)", w->dir);
	ret = rename_into_place(w);
	if (ret < 0)
		return ret;
	w->committed = true;
	/* The rename itself is durable only once the parent is synced. */
	if (fsync(w->parent_fd) < 0)
		image_logf(&w->err, GS_IMAGE_LOG_WARN, "image %s: fsync of the parent directory: "
			   "%s", w->dir, strerror(errno));
	return 0;
}

void gs_image_writer_close(struct gs_image_writer *w)
{
	if (!w)
		return;
	while (image_io_inflight(w->io) > 0)
		if (image_io_reap(w->io, true, on_written, w) < 0)
			break;
	if (!w->committed) {
		image_io_close(w->io);
		w->io = NULL;
		remove_tmp(w);
	}
	writer_free(w);
}
