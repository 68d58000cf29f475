/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Image writer: DIR.tmp, memory.img through the I/O engine, module files,
 * then the manifest and the commit (fsync everything, rename).
 *
 * This file opens a writer (DIR.tmp, its lock, a stale or replaced image),
 * takes the source and the module files, and closes or aborts it. The
 * memory.img data path is in image_write_data.c, the manifest and the
 * commit in image_write_commit.c; what they share is in image_internal.h.
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

int image_writer_header(struct gs_image_writer *w, uint64_t manifest_size,
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
	ret = image_writer_header(w, 0, 0);
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

int image_write_file(int dirfd, const char *name, const void *bytes, size_t size)
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
	ret = image_write_file(w->modules_fd, name, bytes, size);
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

void gs_image_write_stats(const struct gs_image_writer *w, struct gs_image_stats *st)
{
	*st = w->stats;
}

const char *gs_image_writer_errmsg(const struct gs_image_writer *w)
{
	return w->err.msg ? w->err.msg : "";
}

void gs_image_writer_close(struct gs_image_writer *w)
{
	if (!w)
		return;
	while (image_io_inflight(w->io) > 0)
		if (image_io_reap(w->io, true, image_writer_on_written, w) < 0)
			break;
	if (!w->committed) {
		image_io_close(w->io);
		w->io = NULL;
		remove_tmp(w);
	}
	writer_free(w);
}
