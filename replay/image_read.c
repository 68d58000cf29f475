/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Image reader. The image is untrusted input (it may be truncated, damaged,
 * hand-edited, or not ours at all): everything is validated at open, before
 * any of it is used, and every read is checked again against the manifest.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <zstd.h>

#include "image_internal.h"

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

static const char *hint_damaged = "the image is damaged or was not written by gpuswap; "
				  "use another copy, or freeze the process again";

/* ---- manifest field access, with the field's path in every message ----------- */

static const char *json_type_name(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "an object";
	case JSON_ARRAY: return "an array";
	case JSON_STRING: return "a string";
	case JSON_INTEGER: return "an integer";
	case JSON_REAL: return "a real number";
	case JSON_TRUE:
	case JSON_FALSE: return "a boolean";
	case JSON_NULL: return "null";
	}
	return "something else";
}

static int bad(struct gs_image_reader *r, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int bad(struct gs_image_reader *r, const char *path, const char *fmt, ...)
{
	char what[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	return image_fail(&r->err, -EBADMSG, "image %s: %s: %s: %s; %s", r->dir,
			  image_file_names[IMAGE_FILE_MANIFEST], path, what, hint_damaged);
}

/* Look `key` up in `obj` (whose path is `path`); *v is the member. */
static int member(struct gs_image_reader *r, json_t *obj, const char *path, const char *key,
		  json_type type, json_t **v)
{
	char full[160];

	snprintf(full, sizeof(full), "%s%s%s", path, *path ? "." : "", key);
	*v = json_object_get(obj, key);
	if (!*v)
		return bad(r, full, "missing");
	if (json_typeof(*v) != type && !(type == JSON_TRUE && json_is_boolean(*v))) {
		const char *want = type == JSON_OBJECT ? "an object" : type == JSON_ARRAY ?
				   "an array" : type == JSON_STRING ? "a string" :
				   type == JSON_INTEGER ? "an integer" : "a boolean";

		return bad(r, full, "expected %s, found %s", want, json_type_name(*v));
	}
	return 0;
}

static int get_int(struct gs_image_reader *r, json_t *obj, const char *path, const char *key,
		   int64_t min, int64_t max, int64_t *out)
{
	char full[160];
	json_t *v;
	int ret = member(r, obj, path, key, JSON_INTEGER, &v);

	if (ret < 0)
		return ret;
	*out = json_integer_value(v);
	if (*out < min || *out > max) {
		snprintf(full, sizeof(full), "%s%s%s", path, *path ? "." : "", key);
		return bad(r, full, "%lld is out of range [%lld, %lld]", (long long)*out,
			   (long long)min, (long long)max);
	}
	return 0;
}

static int get_u64(struct gs_image_reader *r, json_t *obj, const char *path, const char *key,
		   uint64_t min, uint64_t max, uint64_t *out)
{
	int64_t v;
	int ret = get_int(r, obj, path, key, (int64_t)min,
			  max > INT64_MAX ? INT64_MAX : (int64_t)max, &v);

	*out = (uint64_t)v;
	return ret;
}

static int get_str(struct gs_image_reader *r, json_t *obj, const char *path, const char *key,
		   const char **out)
{
	json_t *v;
	int ret = member(r, obj, path, key, JSON_STRING, &v);

	*out = ret == 0 ? json_string_value(v) : "";
	return ret;
}

static int get_hash(struct gs_image_reader *r, json_t *obj, const char *path, const char *key,
		    uint64_t *out)
{
	char full[160];
	const char *s;
	int ret = get_str(r, obj, path, key, &s);

	if (ret < 0)
		return ret;
	if (image_hash_parse(s, out) < 0) {
		snprintf(full, sizeof(full), "%s.%s", path, key);
		return bad(r, full, "\"%.40s\" is not 16 hex digits", s);
	}
	return 0;
}

/* ---- validation ---------------------------------------------------------------- */

static int check_source(struct gs_image_reader *r, json_t *m)
{
	json_t *src, *devs, *dev;
	int64_t v;
	size_t i;
	int ret;

	if ((ret = member(r, m, "", "source", JSON_OBJECT, &src)) < 0 ||
	    (ret = get_str(r, src, "source", "host", &r->source.host)) < 0 ||
	    (ret = get_int(r, src, "source", "pid", 0, INT32_MAX, &v)) < 0)
		return ret;
	r->source.pid = (int)v;
	if ((ret = get_int(r, src, "source", "driver_version", 0, INT32_MAX, &v)) < 0)
		return ret;
	r->source.driver_version = (int)v;
	if ((ret = member(r, src, "source", "devices", JSON_ARRAY, &devs)) < 0)
		return ret;
	if (json_array_size(devs) > 4096)
		return bad(r, "source.devices", "%zu devices", json_array_size(devs));
	r->devices = calloc(json_array_size(devs) + 1, sizeof(*r->devices));
	if (!r->devices)
		return image_fail(&r->err, -ENOMEM, "image %s: out of memory", r->dir);
	json_array_foreach(devs, i, dev) {
		struct gs_image_device *d = &r->devices[i];
		char path[64];
		const char *s;
		json_t *cc;

		snprintf(path, sizeof(path), "source.devices[%zu]", i);
		if (!json_is_object(dev))
			return bad(r, path, "expected an object, found %s", json_type_name(dev));
		if ((ret = get_int(r, dev, path, "ordinal", 0, INT32_MAX, &v)) < 0)
			return ret;
		d->ordinal = (int)v;
		if ((ret = get_str(r, dev, path, "uuid", &s)) < 0)
			return ret;
		if (gs_image_uuid_parse(s, d->uuid) < 0)
			return bad(r, path, "uuid \"%.60s\" is not GPU-xxxxxxxx-xxxx-xxxx-xxxx-"
				   "xxxxxxxxxxxx", s);
		if ((ret = get_str(r, dev, path, "name", &s)) < 0)
			return ret;
		if (strlen(s) >= sizeof(d->name))
			return bad(r, path, "name is over %zu bytes", sizeof(d->name) - 1);
		strcpy(d->name, s);
		if ((ret = member(r, dev, path, "compute_capability", JSON_ARRAY, &cc)) < 0)
			return ret;
		if (json_array_size(cc) != 2 || !json_is_integer(json_array_get(cc, 0)) ||
		    !json_is_integer(json_array_get(cc, 1)) ||
		    json_integer_value(json_array_get(cc, 0)) < 0 ||
		    json_integer_value(json_array_get(cc, 0)) > 99 ||
		    json_integer_value(json_array_get(cc, 1)) < 0 ||
		    json_integer_value(json_array_get(cc, 1)) > 99)
			return bad(r, path, "compute_capability is not [major, minor] (0..99)");
		d->cc_major = (int)json_integer_value(json_array_get(cc, 0));
		d->cc_minor = (int)json_integer_value(json_array_get(cc, 1));
		if ((ret = get_u64(r, dev, path, "total_mem", 0, INT64_MAX, &d->total_mem)) < 0)
			return ret;
	}
	r->source.ndevices = (unsigned)json_array_size(devs);
	r->source.devices = r->devices;
	return 0;
}

static int check_chunk(struct gs_image_reader *r, json_t *cj, const char *epath, uint32_t k,
		       uint64_t len, struct rd_chunk *c)
{
	char path[128];
	const char *kind;
	uint64_t stored;
	int ret;

	snprintf(path, sizeof(path), "%s.chunks[%u]", epath, k);
	if (!json_is_object(cj))
		return bad(r, path, "expected an object, found %s", json_type_name(cj));
	if ((ret = get_str(r, cj, path, "kind", &kind)) < 0)
		return ret;
	if (strcmp(kind, "zero") == 0) {
		c->kind = GS_IMAGE_CHUNK_ZERO;
		return 0;
	}
	if (strcmp(kind, "raw") == 0) {
		c->kind = GS_IMAGE_CHUNK_RAW;
		if ((ret = get_u64(r, cj, path, "stored", 0, UINT32_MAX, &stored)) < 0)
			return ret;
		if (stored != len)
			return bad(r, path, "raw chunk stores %llu bytes, its length is %llu",
				   (unsigned long long)stored, (unsigned long long)len);
	} else if (strcmp(kind, "zstd") == 0) {
		if (!r->compressed)
			return bad(r, path, "zstd chunk in an image with memory.compression "
				   "\"none\"");
		c->kind = GS_IMAGE_CHUNK_ZSTD;
		/* The writer compresses only when it saves a 4 KiB block. */
		if ((ret = get_u64(r, cj, path, "stored", 1,
				   image_align_up(len) - GS_IMAGE_ALIGN, &stored)) < 0)
			return ret;
	} else {
		return bad(r, path, "kind \"%.20s\" is not raw, zero or zstd", kind);
	}
	c->stored = (uint32_t)stored;
	return get_hash(r, cj, path, "xxh3", &c->hash);
}

static int check_extent(struct gs_image_reader *r, json_t *ej, uint32_t id)
{
	struct rd_extent *e = &r->extents[id];
	char path[64];
	json_t *chunks, *cj;
	uint64_t v, count;
	size_t k;
	int ret;

	snprintf(path, sizeof(path), "memory.extents[%u]", id);
	if (!json_is_object(ej))
		return bad(r, path, "expected an object, found %s", json_type_name(ej));
	if ((ret = get_u64(r, ej, path, "id", id, id, &v)) < 0 ||
	    (ret = get_u64(r, ej, path, "va", 0, INT64_MAX, &e->va)) < 0 ||
	    (ret = get_u64(r, ej, path, "size", 1, IMAGE_EXTENT_MAX_SIZE, &e->size)) < 0 ||
	    (ret = get_u64(r, ej, path, "offset", IMAGE_HEADER_SIZE, INT64_MAX, &e->offset)) < 0)
		return ret;
	if (e->offset % GS_IMAGE_ALIGN)
		return bad(r, path, "offset %llu is not a multiple of 4096",
			   (unsigned long long)e->offset);
	if (e->va + e->size < e->va || e->va + e->size > (uint64_t)INT64_MAX)
		return bad(r, path, "va + size overflows");
	if (e->offset + image_align_up(e->size) > r->file_size)
		return bad(r, path, "data [%llu, %llu) lies beyond the end of %s (%llu bytes)",
			   (unsigned long long)e->offset,
			   (unsigned long long)(e->offset + image_align_up(e->size)),
			   image_file_names[IMAGE_FILE_MEMORY], (unsigned long long)r->file_size);
	if ((ret = member(r, ej, path, "chunks", JSON_ARRAY, &chunks)) < 0)
		return ret;
	count = (e->size + r->chunk_size - 1) / r->chunk_size;
	if (json_array_size(chunks) != count)
		return bad(r, path, "%zu chunks, a size of %llu needs %llu", json_array_size(chunks),
			   (unsigned long long)e->size, (unsigned long long)count);
	/* count <= array size, which the parser already held in memory. */
	e->chunks = calloc(count, sizeof(*e->chunks));
	if (!e->chunks)
		return image_fail(&r->err, -ENOMEM, "image %s: out of memory", r->dir);
	e->nchunks = (uint32_t)count;
	json_array_foreach(chunks, k, cj) {
		uint64_t off = (uint64_t)k * r->chunk_size;
		uint64_t len = e->size - off < r->chunk_size ? e->size - off : r->chunk_size;
		struct rd_chunk *c = &e->chunks[k];

		ret = check_chunk(r, cj, path, (uint32_t)k, len, c);
		if (ret < 0)
			return ret;
		switch (c->kind) {
		case GS_IMAGE_CHUNK_ZERO:
			e->zero += len;
			r->stats.bytes_zero += len;
			break;
		case GS_IMAGE_CHUNK_RAW:
			r->stats.bytes_raw += len;
			r->stats.bytes_stored += len;
			break;
		default:
			r->stats.bytes_compressed_in += len;
			r->stats.bytes_compressed_out += c->stored;
			r->stats.bytes_stored += c->stored;
			break;
		}
	}
	r->stats.chunks += count;
	r->stats.bytes_total += e->size;
	return 0;
}

static int by_offset(const void *a, const void *b, void *arg)
{
	const struct rd_extent *ext = arg;
	uint64_t x = ext[*(const uint32_t *)a].offset, y = ext[*(const uint32_t *)b].offset;

	return x < y ? -1 : x > y;
}

static int by_va(const void *a, const void *b, void *arg)
{
	const struct rd_extent *ext = arg;
	uint64_t x = ext[*(const uint32_t *)a].va, y = ext[*(const uint32_t *)b].va;

	return x < y ? -1 : x > y;
}

/* Two extents sharing file space would let one chunk's write become another
 * extent's data; two sharing addresses would make a restore map over itself. */
static int check_overlaps(struct gs_image_reader *r)
{
	char path[64];

	r->by_va = malloc((r->nextents + 1) * sizeof(*r->by_va));
	if (!r->by_va)
		return image_fail(&r->err, -ENOMEM, "image %s: out of memory", r->dir);
	for (uint32_t i = 0; i < r->nextents; i++)
		r->by_va[i] = i;
	qsort_r(r->by_va, r->nextents, sizeof(*r->by_va), by_offset, r->extents);
	for (uint32_t i = 1; i < r->nextents; i++) {
		const struct rd_extent *a = &r->extents[r->by_va[i - 1]];
		const struct rd_extent *b = &r->extents[r->by_va[i]];

		if (a->offset + image_align_up(a->size) > b->offset) {
			snprintf(path, sizeof(path), "memory.extents[%u]", r->by_va[i]);
			return bad(r, path, "data at offset %llu overlaps extent %u's [%llu, %llu)",
				   (unsigned long long)b->offset, r->by_va[i - 1],
				   (unsigned long long)a->offset,
				   (unsigned long long)(a->offset + image_align_up(a->size)));
		}
	}
	qsort_r(r->by_va, r->nextents, sizeof(*r->by_va), by_va, r->extents);
	for (uint32_t i = 1; i < r->nextents; i++) {
		const struct rd_extent *a = &r->extents[r->by_va[i - 1]];
		const struct rd_extent *b = &r->extents[r->by_va[i]];

		if (a->va + a->size > b->va) {
			snprintf(path, sizeof(path), "memory.extents[%u]", r->by_va[i]);
			return bad(r, path, "va range [0x%llx, 0x%llx) overlaps extent %u's "
				   "[0x%llx, 0x%llx)", (unsigned long long)b->va,
				   (unsigned long long)(b->va + b->size), r->by_va[i - 1],
				   (unsigned long long)a->va, (unsigned long long)(a->va + a->size));
		}
	}
	return 0;
}

static int check_totals(struct gs_image_reader *r, json_t *mem)
{
	struct {
		const char *key;
		uint64_t want;
	} t[] = {
		{"bytes", r->stats.bytes_total},
		{"zero", r->stats.bytes_zero},
		{"raw", r->stats.bytes_raw},
		{"compressed_in", r->stats.bytes_compressed_in},
		{"compressed_out", r->stats.bytes_compressed_out},
		{"stored", r->stats.bytes_stored},
		{"chunks", r->stats.chunks},
	};
	json_t *tot;
	uint64_t v;
	int ret = member(r, mem, "memory", "totals", JSON_OBJECT, &tot);

	for (size_t i = 0; ret == 0 && i < sizeof(t) / sizeof(t[0]); i++) {
		ret = get_u64(r, tot, "memory.totals", t[i].key, 0, INT64_MAX, &v);
		if (ret == 0 && v != t[i].want) {
			char path[64];

			snprintf(path, sizeof(path), "memory.totals.%s", t[i].key);
			return bad(r, path, "%llu, the extents add up to %llu",
				   (unsigned long long)v, (unsigned long long)t[i].want);
		}
	}
	return ret;
}

static int check_memory(struct gs_image_reader *r, json_t *m)
{
	json_t *mem, *extents, *ej;
	const char *s;
	uint64_t v;
	size_t i;
	int ret;

	if ((ret = member(r, m, "", "memory", JSON_OBJECT, &mem)) < 0 ||
	    (ret = get_str(r, mem, "memory", "file", &s)) < 0)
		return ret;
	if (strcmp(s, image_file_names[IMAGE_FILE_MEMORY]) != 0)
		return bad(r, "memory.file", "\"%.60s\", expected \"%s\"", s,
			   image_file_names[IMAGE_FILE_MEMORY]);
	if ((ret = get_u64(r, mem, "memory", "header_size", IMAGE_HEADER_SIZE, IMAGE_HEADER_SIZE,
			   &v)) < 0 ||
	    (ret = get_u64(r, mem, "memory", "chunk_size", GS_IMAGE_MIN_CHUNK, GS_IMAGE_MAX_CHUNK,
			   &v)) < 0)
		return ret;
	if (v & (v - 1))
		return bad(r, "memory.chunk_size", "%llu is not a power of two",
			   (unsigned long long)v);
	if (v != r->header.chunk_size)
		return bad(r, "memory.chunk_size", "%llu, but %s's header says %u",
			   (unsigned long long)v, image_file_names[IMAGE_FILE_MEMORY],
			   r->header.chunk_size);
	r->chunk_size = (uint32_t)v;
	if ((ret = get_u64(r, mem, "memory", "file_size", IMAGE_HEADER_SIZE, INT64_MAX, &v)) < 0)
		return ret;
	if (v % GS_IMAGE_ALIGN)
		return bad(r, "memory.file_size", "%llu is not a multiple of 4096",
			   (unsigned long long)v);
	if (v != r->file_size)
		return image_fail(&r->err, v > r->file_size ? -ENODATA : -EBADMSG,
				  "image %s: %s is %llu bytes, the manifest says %llu: %s", r->dir,
				  image_file_names[IMAGE_FILE_MEMORY],
				  (unsigned long long)r->file_size, (unsigned long long)v,
				  v > r->file_size ? "the file is truncated (copied or written "
				  "incompletely); use another copy, or freeze the process again" :
				  hint_damaged);
	if ((ret = get_str(r, mem, "memory", "compression", &s)) < 0)
		return ret;
	if (strcmp(s, "zstd") == 0)
		r->compressed = true;
	else if (strcmp(s, "none") != 0)
		return bad(r, "memory.compression", "\"%.20s\" is not \"none\" or \"zstd\"", s);
	if ((ret = get_str(r, mem, "memory", "io", &s)) < 0 ||
	    (ret = member(r, mem, "memory", "extents", JSON_ARRAY, &extents)) < 0)
		return ret;
	if (json_array_size(extents) >= UINT32_MAX)
		return bad(r, "memory.extents", "too many extents");
	r->extents = calloc(json_array_size(extents) + 1, sizeof(*r->extents));
	if (!r->extents)
		return image_fail(&r->err, -ENOMEM, "image %s: out of memory", r->dir);
	json_array_foreach(extents, i, ej) {
		ret = check_extent(r, ej, (uint32_t)i);
		r->nextents = (uint32_t)i + 1;
		if (ret < 0)
			return ret;
	}
	r->stats.extents = r->nextents;
	if ((ret = check_overlaps(r)) < 0)
		return ret;
	return check_totals(r, mem);
}

static int check_modules(struct gs_image_reader *r, json_t *m)
{
	json_t *mods, *mj;
	size_t i;
	int ret;

	if ((ret = member(r, m, "", "modules", JSON_ARRAY, &mods)) < 0)
		return ret;
	if (json_array_size(mods) >= UINT32_MAX)
		return bad(r, "modules", "too many modules");
	r->modules = calloc(json_array_size(mods) + 1, sizeof(*r->modules));
	if (!r->modules)
		return image_fail(&r->err, -ENOMEM, "image %s: out of memory", r->dir);
	if (json_array_size(mods) > 0 && r->modules_fd < 0)
		return image_fail(&r->err, -ENOENT, "image %s: the %s directory is missing: %s",
				  r->dir, image_file_names[IMAGE_FILE_MODULES], hint_damaged);
	json_array_foreach(mods, i, mj) {
		struct rd_module *mod = &r->modules[i];
		char path[64], name[32], short_name[32];
		const char *file;
		struct stat st;
		uint64_t v;

		snprintf(path, sizeof(path), "modules[%zu]", i);
		if (!json_is_object(mj))
			return bad(r, path, "expected an object, found %s", json_type_name(mj));
		if ((ret = get_u64(r, mj, path, "index", i, i, &v)) < 0 ||
		    (ret = get_str(r, mj, path, "file", &file)) < 0)
			return ret;
		/* The name comes from the table, never from the manifest: a
		 * hostile "../../etc/shadow" must not be opened. */
		image_module_name((uint32_t)i, false, name);
		image_module_name((uint32_t)i, true, short_name);
		if (strcmp(file, name) != 0)
			return bad(r, path, "file \"%.60s\", expected \"%s\"", file, name);
		if ((ret = get_u64(r, mj, path, "size", 1, IMAGE_MODULE_MAX, &mod->size)) < 0 ||
		    (ret = get_hash(r, mj, path, "xxh3", &mod->hash)) < 0)
			return ret;
		if (fstatat(r->modules_fd, short_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			return image_fail(&r->err, -errno, "image %s: %s: %s; %s", r->dir, name,
					  strerror(errno), hint_damaged);
		if (!S_ISREG(st.st_mode))
			return image_fail(&r->err, -EBADMSG, "image %s: %s is not a regular file; "
					  "%s", r->dir, name, hint_damaged);
		if ((uint64_t)st.st_size != mod->size)
			return image_fail(&r->err, -EBADMSG, "image %s: %s is %llu bytes, the "
					  "manifest says %llu; %s", r->dir, name,
					  (unsigned long long)st.st_size,
					  (unsigned long long)mod->size, hint_damaged);
		r->nmodules = (uint32_t)i + 1;
		r->stats.module_bytes += mod->size;
	}
	r->stats.modules = r->nmodules;
	return 0;
}

static int check_manifest(struct gs_image_reader *r)
{
	json_t *m = r->manifest;
	unsigned char id[16];
	const char *s;
	int64_t version;
	int ret;

	if (!json_is_object(m))
		return bad(r, "(top level)", "expected an object, found %s", json_type_name(m));
	if ((ret = get_str(r, m, "", "magic", &s)) < 0)
		return ret;
	if (strcmp(s, IMAGE_MANIFEST_MAGIC) != 0)
		return bad(r, "magic", "\"%.40s\", expected \"%s\"", s, IMAGE_MANIFEST_MAGIC);
	if ((ret = get_int(r, m, "", "format_version", 1, INT32_MAX, &version)) < 0)
		return ret;
	if (version != GS_IMAGE_FORMAT_VERSION)
		return image_fail(&r->err, -EPROTO, "image %s: %s: format version %lld, this "
				  "gpuswap reads version %d: read it with the gpuswap that wrote it",
				  r->dir, image_file_names[IMAGE_FILE_MANIFEST], (long long)version,
				  GS_IMAGE_FORMAT_VERSION);
	if ((ret = get_str(r, m, "", "image_id", &s)) < 0)
		return ret;
	if (image_hex_parse(s, id, 16) < 0)
		return bad(r, "image_id", "\"%.40s\" is not 32 hex digits", s);
	if (memcmp(id, r->header.image_id, 16) != 0)
		return image_fail(&r->err, -EBADMSG, "image %s: %s belongs to another image "
				  "(image_id differs from %s's header): files of two images were "
				  "mixed; use a complete copy of one image", r->dir,
				  image_file_names[IMAGE_FILE_MEMORY],
				  image_file_names[IMAGE_FILE_MANIFEST]);
	if ((ret = get_str(r, m, "", "created", &s)) < 0 ||
	    (ret = check_source(r, m)) < 0 ||
	    (ret = check_memory(r, m)) < 0 ||
	    (ret = check_modules(r, m)) < 0)
		return ret;
	r->state = json_object_get(m, "state");
	if (!r->state)
		return bad(r, "state", "missing");
	return 0;
}

/* ---- opening ---------------------------------------------------------------------- */

static int read_header(struct gs_image_reader *r)
{
	char why[256];
	void *block;
	struct stat st;
	int ret;

	ret = image_io_open(r->dir_fd, image_file_names[IMAGE_FILE_MEMORY], O_RDONLY, 0,
			    !r->opts.buffered, r->depth, &r->io, why, sizeof(why));
	if (ret < 0)
		return image_fail(&r->err, ret, "image %s: %s: %s; %s", r->dir,
				  image_file_names[IMAGE_FILE_MEMORY], why, ret == -ENOENT ?
				  "the image is incomplete; use a complete copy" : hint_damaged);
	if (fstat(image_io_fd(r->io), &st) < 0)
		return image_fail(&r->err, -errno, "image %s: %s: %s", r->dir,
				  image_file_names[IMAGE_FILE_MEMORY], strerror(errno));
	if (!S_ISREG(st.st_mode))
		return image_fail(&r->err, -EBADMSG, "image %s: %s is not a regular file; %s",
				  r->dir, image_file_names[IMAGE_FILE_MEMORY], hint_damaged);
	r->file_size = (uint64_t)st.st_size;
	if (r->file_size < IMAGE_HEADER_SIZE)
		return image_fail(&r->err, -ENODATA, "image %s: %s is %llu bytes, shorter than "
				  "its %u-byte header: the file is truncated; use another copy",
				  r->dir, image_file_names[IMAGE_FILE_MEMORY],
				  (unsigned long long)r->file_size, IMAGE_HEADER_SIZE);
	if (posix_memalign(&block, GS_IMAGE_ALIGN, IMAGE_HEADER_SIZE))
		return image_fail(&r->err, -ENOMEM, "image %s: out of memory", r->dir);
	ret = image_io_pread_all(r->io, block, IMAGE_HEADER_SIZE, 0);
	if (ret == 0)
		ret = image_header_decode(block, IMAGE_HEADER_SIZE, &r->header, why, sizeof(why));
	else
		snprintf(why, sizeof(why), "reading the header: %s", strerror(-ret));
	free(block);
	if (ret < 0)
		return image_fail(&r->err, ret, "image %s: %s: %s%s%s", r->dir,
				  image_file_names[IMAGE_FILE_MEMORY], why,
				  ret == -EPROTO ? "" : "; ", ret == -EPROTO ? "" : hint_damaged);
	return 0;
}

static int read_manifest(struct gs_image_reader *r)
{
	const char *name = image_file_names[IMAGE_FILE_MANIFEST];
	json_error_t jerr;
	struct stat st;
	char *text;
	size_t got = 0;
	int fd, ret = 0;

	fd = openat(r->dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return image_fail(&r->err, -errno, "image %s: %s: %s; %s", r->dir, name,
				  strerror(errno), errno == ENOENT ?
				  "the image is incomplete; use a complete copy" : hint_damaged);
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return image_fail(&r->err, -EBADMSG, "image %s: %s is not a regular file", r->dir,
				  name);
	}
	if ((uint64_t)st.st_size != r->header.manifest_size ||
	    r->header.manifest_size > IMAGE_MANIFEST_MAX) {
		close(fd);
		return image_fail(&r->err, -EBADMSG, "image %s: %s is %llu bytes, %s's header "
				  "records %llu: the manifest was damaged or replaced; %s", r->dir,
				  name, (unsigned long long)st.st_size,
				  image_file_names[IMAGE_FILE_MEMORY],
				  (unsigned long long)r->header.manifest_size, hint_damaged);
	}
	text = malloc(r->header.manifest_size + 1);
	if (!text) {
		close(fd);
		return image_fail(&r->err, -ENOMEM, "image %s: out of memory", r->dir);
	}
	while (got < r->header.manifest_size) {
		ssize_t n = read(fd, text + got, r->header.manifest_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			ret = n < 0 ? -errno : -ENODATA;
			break;
		}
		got += (size_t)n;
	}
	close(fd);
	if (ret < 0) {
		free(text);
		return image_fail(&r->err, ret, "image %s: reading %s: %s", r->dir, name,
				  strerror(-ret));
	}
	if (image_hash(text, got) != r->header.manifest_hash) {
		free(text);
		return image_fail(&r->err, -EBADMSG, "image %s: %s does not match the checksum "
				  "in %s's header: %s", r->dir, name,
				  image_file_names[IMAGE_FILE_MEMORY], hint_damaged);
	}
	r->manifest = json_loadb(text, got, JSON_REJECT_DUPLICATES, &jerr);
	free(text);
	if (!r->manifest)
		return image_fail(&r->err, -EBADMSG, "image %s: %s: line %d column %d: %s; %s",
				  r->dir, name, jerr.line, jerr.column, jerr.text, hint_damaged);
	return 0;
}

static void reader_free(struct gs_image_reader *r)
{
	image_io_close(r->io);
	if (r->slots)
		for (unsigned i = 0; i < r->depth; i++)
			free(r->slots[i].bounce);
	free(r->slots);
	for (uint32_t i = 0; r->extents && i < r->nextents; i++)
		free(r->extents[i].chunks);
	free(r->extents);
	free(r->by_va);
	free(r->modules);
	free(r->devices);
	ZSTD_freeDCtx(r->dctx);
	json_decref(r->manifest);
	if (r->modules_fd >= 0)
		close(r->modules_fd);
	if (r->dir_fd >= 0)
		close(r->dir_fd);
	free(r->dir);
	image_err_free(&r->err);
	free(r);
}

static int open_dir(struct gs_image_reader *r, const char *dir)
{
	char *tmp;
	struct stat st;

	r->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (r->dir_fd >= 0) {
		r->modules_fd = openat(r->dir_fd, image_file_names[IMAGE_FILE_MODULES],
				       O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		return 0;
	}
	if (errno != ENOENT)
		return image_fail(&r->err, -errno, "image %s: %s", dir, strerror(errno));
	/* Say why there is no image when a dump was interrupted. */
	if (asprintf(&tmp, "%s.tmp", dir) >= 0) {
		bool interrupted = stat(tmp, &st) == 0;

		free(tmp);
		if (interrupted)
			return image_fail(&r->err, -ENOENT, "image %s does not exist; %s.tmp is "
					  "what an interrupted dump left, not an image: freeze "
					  "the process again", dir, dir);
	}
	return image_fail(&r->err, -ENOENT, "image %s does not exist", dir);
}

int gs_image_reader_open(const char *dir, const struct gs_image_read_opts *opts,
			 struct gs_image_reader **out, char **err)
{
	struct gs_image_reader *r = calloc(1, sizeof(*r));
	int ret;

	if (err)
		*err = NULL;
	if (!r || !(r->dir = strdup(dir))) {
		free(r);
		if (err)
			*err = strdup("image: out of memory");
		return -ENOMEM;
	}
	r->dir_fd = r->modules_fd = -1;
	if (opts)
		r->opts = *opts;
	r->err.log = r->opts.log;
	r->depth = r->opts.queue_depth ? r->opts.queue_depth : GS_IMAGE_DEFAULT_DEPTH;
	if (r->depth > 1024) {
		ret = image_fail(&r->err, -EINVAL, "image %s: queue depth %u is over 1024", dir,
				 r->depth);
		goto fail;
	}
	if ((ret = open_dir(r, dir)) < 0 ||
	    (ret = read_header(r)) < 0 ||
	    (ret = read_manifest(r)) < 0 ||
	    (ret = check_manifest(r)) < 0)
		goto fail;
	r->slots = calloc(r->depth, sizeof(*r->slots));
	r->dctx = ZSTD_createDCtx();
	if (!r->slots || !r->dctx) {
		ret = image_fail(&r->err, -ENOMEM, "image %s: out of memory", dir);
		goto fail;
	}
	r->stats.direct_io = image_io_direct(r->io);
	r->stats.uring = image_io_uring(r->io);
	*out = r;
	return 0;
fail:
	image_err_export(&r->err, err);
	reader_free(r);
	return ret;
}

void gs_image_reader_close(struct gs_image_reader *r)
{
	if (!r)
		return;
	while (image_io_inflight(r->io) > 0)
		if (gs_image_read_reap(r, true) < 0)
			break;
	reader_free(r);
}

/* ---- accessors ------------------------------------------------------------------------ */

json_t *gs_image_state(const struct gs_image_reader *r)
{
	return r->state;
}

json_t *gs_image_manifest(const struct gs_image_reader *r)
{
	return r->manifest;
}

const struct gs_image_source *gs_image_source(const struct gs_image_reader *r)
{
	return &r->source;
}

void gs_image_read_stats(const struct gs_image_reader *r, struct gs_image_stats *st)
{
	*st = r->stats;
	st->direct_io = image_io_direct(r->io);
}

uint32_t gs_image_extent_count(const struct gs_image_reader *r)
{
	return r->nextents;
}

int gs_image_extent_get(const struct gs_image_reader *r, uint32_t id, struct gs_image_extent *out)
{
	const struct rd_extent *e;

	if (id >= r->nextents)
		return -ENOENT;
	e = &r->extents[id];
	*out = (struct gs_image_extent){.id = id, .va = e->va, .size = e->size,
					.file_offset = e->offset, .chunks = e->nchunks,
					.bytes_zero = e->zero};
	return 0;
}

int gs_image_extent_find(const struct gs_image_reader *r, uint64_t va, uint32_t *id)
{
	uint32_t lo = 0, hi = r->nextents;

	/* The first extent (by va) that ends after va. */
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		const struct rd_extent *e = &r->extents[r->by_va[mid]];

		if (e->va + e->size <= va)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == r->nextents || r->extents[r->by_va[lo]].va > va)
		return -ENOENT;
	*id = r->by_va[lo];
	return 0;
}

uint32_t gs_image_read_chunk_size(const struct gs_image_reader *r)
{
	return r->chunk_size;
}

int gs_image_chunk_get(const struct gs_image_reader *r, uint32_t extent, uint32_t index,
		       struct gs_image_chunk *out)
{
	const struct rd_extent *e;
	const struct rd_chunk *c;
	uint64_t off;

	if (extent >= r->nextents || index >= r->extents[extent].nchunks)
		return -ENOENT;
	e = &r->extents[extent];
	c = &e->chunks[index];
	off = (uint64_t)index * r->chunk_size;
	*out = (struct gs_image_chunk){
		.kind = c->kind,
		.offset = off,
		.len = (uint32_t)(e->size - off < r->chunk_size ? e->size - off : r->chunk_size),
		.stored = c->kind == GS_IMAGE_CHUNK_ZERO ? 0 : c->stored,
		.file_offset = e->offset + off,
		.xxh3 = c->kind == GS_IMAGE_CHUNK_ZERO ? 0 : c->hash,
	};
	return 0;
}

uint32_t gs_image_module_count(const struct gs_image_reader *r)
{
	return r->nmodules;
}

const char *gs_image_reader_errmsg(const struct gs_image_reader *r)
{
	return r->err.msg ? r->err.msg : "";
}

/* ---- reading memory ---------------------------------------------------------------------- */

static void finish_read(struct gs_image_reader *r, struct rd_slot *s, int status)
{
	gs_image_done_fn done = s->done;

	s->busy = false;
	s->done = NULL;
	s->io.status = status;
	if (done)
		done(s->arg, &s->io);
}

static void on_read(void *arg, struct image_io_req *req)
{
	struct gs_image_reader *r = arg;
	struct rd_slot *s = image_container_of(req, struct rd_slot, req);
	const struct rd_extent *e = &r->extents[s->extent];
	const struct rd_chunk *c = &e->chunks[s->index];
	const char *mem = image_file_names[IMAGE_FILE_MEMORY];
	uint64_t h;

	if (req->res < 0) {
		image_fail(&r->err, req->res, "image %s: reading %s (extent %u chunk %u, %u bytes "
			   "at offset %llu): %s", r->dir, mem, s->extent, s->index, req->len,
			   (unsigned long long)req->off, strerror(-req->res));
		finish_read(r, s, req->res);
		return;
	}
	if ((uint32_t)req->res != req->len) {
		image_fail(&r->err, -ENODATA, "image %s: %s ends inside extent %u chunk %u (read "
			   "%d of %u bytes at offset %llu): the file is truncated; use another "
			   "copy", r->dir, mem, s->extent, s->index, req->res, req->len,
			   (unsigned long long)req->off);
		finish_read(r, s, -ENODATA);
		return;
	}
	if (c->kind == GS_IMAGE_CHUNK_ZSTD) {
		size_t n = ZSTD_decompressDCtx(r->dctx, s->io.buf, s->io.len, s->bounce, c->stored);

		if (ZSTD_isError(n) || n != s->io.len) {
			image_fail(&r->err, -EBADMSG, "image %s: %s: extent %u (va 0x%llx) chunk %u: "
				   "compressed data is damaged (%s); %s", r->dir, mem, s->extent,
				   (unsigned long long)e->va, s->index,
				   ZSTD_isError(n) ? ZSTD_getErrorName(n) : "wrong length",
				   hint_damaged);
			finish_read(r, s, -EBADMSG);
			return;
		}
	}
	h = image_hash(s->io.buf, s->io.len);
	if (h != c->hash) {
		char want[17], got[17];

		image_hash_format(c->hash, want);
		image_hash_format(h, got);
		image_fail(&r->err, -EBADMSG, "image %s: %s: extent %u (va 0x%llx) chunk %u (file "
			   "offset %llu): checksum mismatch (manifest xxh3 %s, data %s); %s",
			   r->dir, mem, s->extent, (unsigned long long)e->va, s->index,
			   (unsigned long long)(e->offset + s->io.offset), want, got, hint_damaged);
		finish_read(r, s, -EBADMSG);
		return;
	}
	finish_read(r, s, 0);
}

int gs_image_read_reap(struct gs_image_reader *r, bool wait)
{
	int n = image_io_reap(r->io, wait, on_read, r);

	if (n < 0)
		return image_fail(&r->err, n, "image %s: waiting for reads: %s", r->dir,
				  strerror(-n));
	return n;
}

int gs_image_read_flush(struct gs_image_reader *r)
{
	while (image_io_inflight(r->io) > 0) {
		int n = gs_image_read_reap(r, true);

		if (n < 0)
			return n;
	}
	return 0;
}

int gs_image_read_chunk(struct gs_image_reader *r, uint32_t extent, uint64_t offset, void *buf,
			size_t len, gs_image_done_fn done, void *arg)
{
	const struct rd_extent *e;
	const struct rd_chunk *c;
	struct rd_slot *s = NULL;
	uint64_t want;
	uint32_t index;
	int ret;

	if (extent >= r->nextents)
		return image_fail(&r->err, -EINVAL, "image %s: no extent %u (the image has %u)",
				  r->dir, extent, r->nextents);
	e = &r->extents[extent];
	if (offset % r->chunk_size || offset >= e->size)
		return image_fail(&r->err, -EINVAL, "image %s: extent %u: offset %llu is not a "
				  "chunk start (chunk size %u, extent size %llu)", r->dir, extent,
				  (unsigned long long)offset, r->chunk_size,
				  (unsigned long long)e->size);
	index = (uint32_t)(offset / r->chunk_size);
	want = e->size - offset < r->chunk_size ? e->size - offset : r->chunk_size;
	if (len != want)
		return image_fail(&r->err, -EINVAL, "image %s: extent %u chunk %u: length %zu, "
				  "expected %llu", r->dir, extent, index, len,
				  (unsigned long long)want);
	if ((uintptr_t)buf % GS_IMAGE_ALIGN)
		return image_fail(&r->err, -EINVAL, "image %s: extent %u chunk %u: buffer %p is "
				  "not 4 KiB-aligned", r->dir, extent, index, buf);
	c = &e->chunks[index];
	if (c->kind == GS_IMAGE_CHUNK_ZERO) {
		struct gs_image_io io = {.extent = extent, .offset = offset, .buf = buf, .len = len,
					 .zero = true};

		memset(buf, 0, len);
		if (done)
			done(arg, &io);
		return 0;
	}
	while (!s) {
		for (unsigned i = 0; i < r->depth; i++)
			if (!r->slots[i].busy) {
				s = &r->slots[i];
				break;
			}
		if (!s && (ret = gs_image_read_reap(r, true)) < 0)
			return ret;
	}
	s->extent = extent;
	s->index = index;
	s->done = done;
	s->arg = arg;
	s->io = (struct gs_image_io){.extent = extent, .offset = offset, .buf = buf, .len = len};
	s->req = (struct image_io_req){.buf = buf, .len = (uint32_t)image_align_up(len),
				       .off = e->offset + offset};
	if (c->kind == GS_IMAGE_CHUNK_ZSTD) {
		if (!s->bounce && posix_memalign(&s->bounce, GS_IMAGE_ALIGN, r->chunk_size)) {
			s->bounce = NULL;
			return image_fail(&r->err, -ENOMEM, "image %s: out of memory", r->dir);
		}
		s->req.buf = s->bounce;
		s->req.len = (uint32_t)image_align_up(c->stored);
	}
	s->busy = true;
	ret = image_io_submit(r->io, &s->req);
	if (ret < 0) {
		s->busy = false;
		return image_fail(&r->err, ret, "image %s: queueing a read of %s: %s", r->dir,
				  image_file_names[IMAGE_FILE_MEMORY], strerror(-ret));
	}
	return 0;
}

/* ---- modules ---------------------------------------------------------------------------- */

int gs_image_read_module(struct gs_image_reader *r, uint32_t index, void **bytes, size_t *size)
{
	const struct rd_module *mod;
	char name[32], short_name[32];
	struct stat st;
	size_t got = 0;
	char *buf;
	int fd, ret = 0;

	if (index >= r->nmodules)
		return image_fail(&r->err, -ENOENT, "image %s: no module %u (the image has %u)",
				  r->dir, index, r->nmodules);
	mod = &r->modules[index];
	image_module_name(index, false, name);
	image_module_name(index, true, short_name);
	fd = openat(r->modules_fd, short_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return image_fail(&r->err, -errno, "image %s: %s: %s", r->dir, name,
				  strerror(errno));
	/* Checked at open, checked again: the file may have changed since. */
	if (fstat(fd, &st) < 0 || (uint64_t)st.st_size != mod->size) {
		close(fd);
		return image_fail(&r->err, -EBADMSG, "image %s: %s is no longer %llu bytes; %s",
				  r->dir, name, (unsigned long long)mod->size, hint_damaged);
	}
	buf = malloc(mod->size);
	if (!buf) {
		close(fd);
		return image_fail(&r->err, -ENOMEM, "image %s: out of memory for %s (%llu bytes)",
				  r->dir, name, (unsigned long long)mod->size);
	}
	while (got < mod->size) {
		ssize_t n = read(fd, buf + got, mod->size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			ret = n < 0 ? -errno : -ENODATA;
			break;
		}
		got += (size_t)n;
	}
	close(fd);
	if (ret < 0) {
		free(buf);
		return image_fail(&r->err, ret, "image %s: reading %s: %s", r->dir, name,
				  strerror(-ret));
	}
	if (image_hash(buf, got) != mod->hash) {
		free(buf);
		return image_fail(&r->err, -EBADMSG, "image %s: %s: checksum mismatch; %s", r->dir,
				  name, hint_damaged);
	}
	*bytes = buf;
	*size = got;
	return 0;
}

/* ---- verify -------------------------------------------------------------------------------- */

struct verify_ctx {
	void **free_bufs;
	unsigned nfree;
	uint64_t bad;
	uint64_t done;
};

static void on_verified(void *arg, const struct gs_image_io *io)
{
	struct verify_ctx *v = arg;

	if (io->status < 0)
		v->bad++;
	v->done += io->len;
	v->free_bufs[v->nfree++] = io->buf;
}

int gs_image_verify(struct gs_image_reader *r,
		    void (*progress)(void *arg, uint64_t done, uint64_t total),
		    void *progress_arg, uint64_t *bad)
{
	uint64_t total = r->stats.bytes_total + r->stats.module_bytes;
	struct verify_ctx v = {0};
	void **all;
	int ret = 0;

	*bad = 0;
	all = calloc(r->depth, sizeof(*all));
	v.free_bufs = calloc(r->depth, sizeof(*v.free_bufs));
	if (!all || !v.free_bufs) {
		free(all);
		free(v.free_bufs);
		return image_fail(&r->err, -ENOMEM, "image %s: out of memory", r->dir);
	}
	for (unsigned i = 0; i < r->depth; i++) {
		if (posix_memalign(&all[i], GS_IMAGE_ALIGN, r->chunk_size)) {
			all[i] = NULL;
			ret = image_fail(&r->err, -ENOMEM, "image %s: out of memory", r->dir);
			goto out;
		}
		v.free_bufs[v.nfree++] = all[i];
	}
	for (uint32_t x = 0; x < r->nextents; x++) {
		const struct rd_extent *e = &r->extents[x];

		for (uint32_t k = 0; k < e->nchunks; k++) {
			uint64_t off = (uint64_t)k * r->chunk_size;
			size_t len = (size_t)(e->size - off < r->chunk_size ? e->size - off :
					      r->chunk_size);

			if (e->chunks[k].kind == GS_IMAGE_CHUNK_ZERO) {
				v.done += len;
				continue;
			}
			while (v.nfree == 0)
				if ((ret = gs_image_read_reap(r, true)) < 0)
					goto out;
			ret = gs_image_read_chunk(r, x, off, v.free_bufs[--v.nfree], len,
						  on_verified, &v);
			if (ret < 0)
				goto out;
			if (progress)
				progress(progress_arg, v.done, total);
		}
	}
	if ((ret = gs_image_read_flush(r)) < 0)
		goto out;
	for (uint32_t i = 0; i < r->nmodules; i++) {
		void *bytes;
		size_t size;

		if (gs_image_read_module(r, i, &bytes, &size) < 0) {
			v.bad++;
		} else {
			free(bytes);
		}
		v.done += r->modules[i].size;
		if (progress)
			progress(progress_arg, v.done, total);
	}
out:
	gs_image_read_flush(r);
	for (unsigned i = 0; i < r->depth; i++)
		free(all[i]);
	free(all);
	free(v.free_bufs);
	*bad = v.bad;
	if (ret < 0)
		return ret;
	return v.bad ? -EBADMSG : 0;
}
