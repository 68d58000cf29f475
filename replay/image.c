/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the image writer and reader share: file names, messages, fault
 * points, zero detection, checksums, memory.img's header, directory
 * clean-up.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <xxhash.h>

#include "image_internal.h"

const char *const image_file_names[IMAGE_FILE_COUNT] = {
	[IMAGE_FILE_MANIFEST] = "manifest.json",
	[IMAGE_FILE_MEMORY] = "memory.img",
	[IMAGE_FILE_MODULES] = "modules",
};

void image_module_name(uint32_t index, bool in_dir, char out[32])
{
	if (in_dir)
		snprintf(out, 32, "%u.bin", index);
	else
		snprintf(out, 32, "%s/%u.bin", image_file_names[IMAGE_FILE_MODULES], index);
}

bool image_module_name_valid(const char *name)
{
	const char *p = name;

	/* Decimal without leading zeros, as image_module_name writes it. */
	if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] != '.'))
		return false;
	while (*p >= '0' && *p <= '9')
		p++;
	return p - name <= 10 && strcmp(p, ".bin") == 0;
}

/* ---- messages ------------------------------------------------------------ */

int image_fail(struct image_err *e, int ret, const char *fmt, ...)
{
	va_list ap;
	char *msg = NULL;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	free(e->msg);
	e->msg = msg;
	if (msg && e->log.fn)
		e->log.fn(e->log.arg, GS_IMAGE_LOG_ERROR, msg);
	return ret;
}

void image_logf(const struct image_err *e, enum gs_image_log_level level, const char *fmt, ...)
{
	va_list ap;
	char *msg = NULL;

	if (!e->log.fn)
		return;
	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	if (msg)
		e->log.fn(e->log.arg, level, msg);
	free(msg);
}

void image_err_export(const struct image_err *e, char **err)
{
	if (!err)
		return;
	*err = strdup(e->msg ? e->msg : "image: out of memory");
}

void image_err_free(struct image_err *e)
{
	free(e->msg);
	e->msg = NULL;
}

bool image_fault(const char *name)
{
	const char *list = getenv("GPUSWAP_FAULT");
	size_t n = strlen(name);

	while (list && *list) {
		const char *end = strchrnul(list, ',');

		if ((size_t)(end - list) == n && memcmp(list, name, n) == 0)
			return true;
		list = *end ? end + 1 : end;
	}
	return false;
}

/* ---- data ------------------------------------------------------------------ */

typedef uint64_t __attribute__((may_alias, aligned(1))) image_word;

bool image_is_zero(const void *buf, size_t len)
{
	const unsigned char *p = buf;
	const unsigned char *end = p + len;

	/* Dense memory almost always fails on the first words: look at the
	 * start, the end and the middle before scanning. */
	if (len >= 8 && (*(const image_word *)p | *(const image_word *)(end - 8) |
			 *(const image_word *)(p + (len / 2 & ~(size_t)7))))
		return false;
	/* 256 bytes per step: the OR tree vectorises, and the test per step
	 * keeps the early exit cheap; zero memory runs at memory bandwidth. */
	while (end - p >= 256) {
		const image_word *w = (const image_word *)p;
		uint64_t acc = 0;

		for (int i = 0; i < 32; i++)
			acc |= w[i];
		if (acc)
			return false;
		p += 256;
	}
	while (end - p >= 8) {
		if (*(const image_word *)p)
			return false;
		p += 8;
	}
	while (p < end)
		if (*p++)
			return false;
	return true;
}

uint64_t image_hash(const void *buf, size_t len)
{
	return XXH3_64bits(buf, len);
}

void image_hex_format(const unsigned char *bytes, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[bytes[i] >> 4];
		out[2 * i + 1] = digits[bytes[i] & 15];
	}
	out[2 * n] = '\0';
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int image_hex_parse(const char *s, unsigned char *bytes, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int hi = hex_digit(s[2 * i]), lo;

		if (hi < 0)
			return -EINVAL;
		lo = hex_digit(s[2 * i + 1]);
		if (lo < 0)
			return -EINVAL;
		bytes[i] = (unsigned char)(hi << 4 | lo);
	}
	return s[2 * n] == '\0' ? 0 : -EINVAL;
}

void image_hash_format(uint64_t h, char out[17])
{
	unsigned char b[8];

	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(h >> (56 - 8 * i));
	image_hex_format(b, 8, out);
}

int image_hash_parse(const char *s, uint64_t *h)
{
	unsigned char b[8];
	uint64_t v = 0;

	if (image_hex_parse(s, b, 8) < 0)
		return -EINVAL;
	for (int i = 0; i < 8; i++)
		v = v << 8 | b[i];
	*h = v;
	return 0;
}

void gs_image_uuid_format(const unsigned char uuid[16], char out[41])
{
	char hex[33];

	image_hex_format(uuid, 16, hex);
	snprintf(out, 41, "GPU-%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16,
		 hex + 20);
}

int gs_image_uuid_parse(const char *s, unsigned char uuid[16])
{
	static const unsigned groups[] = {4, 2, 2, 2, 6};
	unsigned char out[16];
	size_t at = 0;

	if (strncmp(s, "GPU-", 4) != 0)
		return -EINVAL;
	s += 4;
	for (size_t g = 0; g < 5; g++) {
		for (unsigned i = 0; i < groups[g]; i++) {
			int hi = hex_digit(s[0]), lo = hi < 0 ? -1 : hex_digit(s[1]);

			if (lo < 0)
				return -EINVAL;
			out[at++] = (unsigned char)(hi << 4 | lo);
			s += 2;
		}
		if (*s != (g == 4 ? '\0' : '-'))
			return -EINVAL;
		s++;
	}
	memcpy(uuid, out, 16);
	return 0;
}

/* ---- memory.img header ------------------------------------------------------ */

static void put_le(unsigned char *p, uint64_t v, int bytes)
{
	for (int i = 0; i < bytes; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, int bytes)
{
	uint64_t v = 0;

	for (int i = bytes - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

void image_header_encode(const struct image_header *h, unsigned char block[IMAGE_HEADER_SIZE])
{
	memset(block, 0, IMAGE_HEADER_SIZE);
	memcpy(block, IMAGE_MEMORY_MAGIC, IMAGE_MEMORY_MAGIC_LEN);
	put_le(block + 8, h->version, 4);
	put_le(block + 12, h->header_size, 4);
	put_le(block + 16, h->chunk_size, 4);
	put_le(block + 20, h->flags, 4);
	memcpy(block + 24, h->image_id, 16);
	put_le(block + 40, h->manifest_size, 8);
	put_le(block + 48, h->manifest_hash, 8);
	put_le(block + 56, image_hash(block, 56), 8);
}

int image_header_decode(const unsigned char *block, size_t n, struct image_header *h,
			char *why, size_t why_len)
{
	if (n < 64 || memcmp(block, IMAGE_MEMORY_MAGIC, IMAGE_MEMORY_MAGIC_LEN) != 0) {
		snprintf(why, why_len, "does not start with the memory image magic \"%s\" "
			 "(not a gpuswap memory image, or overwritten)", IMAGE_MEMORY_MAGIC);
		return -EBADMSG;
	}
	h->version = (uint32_t)get_le(block + 8, 4);
	/* The version is checked before the header checksum: a newer format
	 * may lay the header out differently, and "too new" is the useful
	 * message then. */
	if (h->version != GS_IMAGE_FORMAT_VERSION) {
		snprintf(why, why_len, "format version %u, this gpuswap reads version %u%s",
			 h->version, GS_IMAGE_FORMAT_VERSION,
			 h->version > GS_IMAGE_FORMAT_VERSION ?
			 " (written by a newer gpuswap: read it with that version)" :
			 " (damaged header)");
		return -EPROTO;
	}
	if (get_le(block + 56, 8) != image_hash(block, 56)) {
		snprintf(why, why_len, "header checksum mismatch (damaged header)");
		return -EBADMSG;
	}
	h->header_size = (uint32_t)get_le(block + 12, 4);
	h->chunk_size = (uint32_t)get_le(block + 16, 4);
	h->flags = (uint32_t)get_le(block + 20, 4);
	memcpy(h->image_id, block + 24, 16);
	h->manifest_size = get_le(block + 40, 8);
	h->manifest_hash = get_le(block + 48, 8);
	if (h->header_size != IMAGE_HEADER_SIZE) {
		snprintf(why, why_len, "header size %u, expected %u", h->header_size,
			 IMAGE_HEADER_SIZE);
		return -EBADMSG;
	}
	if (h->flags != 0) {
		snprintf(why, why_len, "unknown header flags 0x%x", h->flags);
		return -EBADMSG;
	}
	return 0;
}

/* ---- directories ------------------------------------------------------------ */

/* Visit every entry but . and ..; stop at the first callback returning
 * non-zero. */
static int dir_each(int fd, int (*fn)(int fd, const char *name, unsigned char type, void *arg),
		    void *arg)
{
	int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	DIR *d;
	struct dirent *de;
	int ret = 0;

	if (dup_fd < 0)
		return -errno;
	d = fdopendir(dup_fd);
	if (!d) {
		ret = -errno;
		close(dup_fd);
		return ret;
	}
	rewinddir(d);
	while ((errno = 0, de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		ret = fn(fd, de->d_name, de->d_type, arg);
		if (ret)
			break;
	}
	if (!de && errno)
		ret = -errno;
	closedir(d);
	return ret;
}

struct clear_ctx {
	bool remove;
	char *foreign;
	size_t foreign_len;
	const char *prefix;
};

static int note_foreign(struct clear_ctx *c, const char *name)
{
	snprintf(c->foreign, c->foreign_len, "%s%s", c->prefix, name);
	return -ENOTEMPTY;
}

static int clear_module(int fd, const char *name, unsigned char type, void *arg)
{
	struct clear_ctx *c = arg;

	if (!image_module_name_valid(name) || (type != DT_REG && type != DT_UNKNOWN))
		return note_foreign(c, name);
	if (c->remove && unlinkat(fd, name, 0) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

static int clear_entry(int fd, const char *name, unsigned char type, void *arg)
{
	struct clear_ctx *c = arg;

	if (strcmp(name, image_file_names[IMAGE_FILE_MANIFEST]) == 0 ||
	    strcmp(name, image_file_names[IMAGE_FILE_MEMORY]) == 0) {
		if (type != DT_REG && type != DT_UNKNOWN)
			return note_foreign(c, name);
		if (c->remove && unlinkat(fd, name, 0) < 0 && errno != ENOENT)
			return -errno;
		return 0;
	}
	if (strcmp(name, image_file_names[IMAGE_FILE_MODULES]) == 0) {
		int mfd = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		struct clear_ctx mc = *c;
		int ret;

		if (mfd < 0)
			return note_foreign(c, name);
		mc.prefix = "modules/";
		ret = dir_each(mfd, clear_module, &mc);
		close(mfd);
		if (ret)
			return ret;
		if (c->remove && unlinkat(fd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
			return -errno;
		return 0;
	}
	return note_foreign(c, name);
}

int image_clear_dir(int fd, char *foreign, size_t foreign_len)
{
	struct clear_ctx c = {.remove = false, .foreign = foreign,
			      .foreign_len = foreign_len, .prefix = ""};
	int ret;

	/* Look first, remove after: a directory holding anything else is not
	 * ours to empty, not even partly. */
	ret = dir_each(fd, clear_entry, &c);
	if (ret)
		return ret;
	c.remove = true;
	return dir_each(fd, clear_entry, &c);
}

bool image_dir_is_image(int fd)
{
	unsigned char magic[IMAGE_MEMORY_MAGIC_LEN];
	int f = openat(fd, image_file_names[IMAGE_FILE_MEMORY], O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	json_t *m, *v;
	bool ok;

	if (f >= 0) {
		ok = pread(f, magic, sizeof(magic), 0) == (ssize_t)sizeof(magic) &&
		     memcmp(magic, IMAGE_MEMORY_MAGIC, sizeof(magic)) == 0;
		close(f);
		if (ok)
			return true;
	}
	f = openat(fd, image_file_names[IMAGE_FILE_MANIFEST], O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (f < 0)
		return false;
	m = json_loadfd(f, 0, NULL);
	close(f);
	v = json_object_get(m, "magic");
	ok = json_is_string(v) && strcmp(json_string_value(v), IMAGE_MANIFEST_MAGIC) == 0;
	json_decref(m);
	return ok;
}
