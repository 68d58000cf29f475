/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Image reader, the manifest's validation: every field is type- and
 * range-checked, with its path in the message, and checked against
 * memory.img's header and the files before the reader uses any of it
 * (extents inside the file and apart from each other, totals that add up,
 * module files of the recorded size, names only ever from the table).
 *
 * Apart from image_read.c because this is the parser of untrusted input,
 * the part the manifest fuzz test aims at, and reads best on its own.
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

#include "image_internal.h"

static const char *hint_damaged = IMAGE_HINT_DAMAGED;

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

int image_manifest_check(struct gs_image_reader *r)
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
