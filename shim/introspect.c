/* SPDX-License-Identifier: Apache-2.0 */
#define GS_LOG_SUBSYS "shim"
#include "introspect_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "g_api.h"
#include "log.h"
#include "proctable.h"
#include "real.h"
#include "shim.h"

#define GS_EXPORT_API __attribute__((visibility("default")))

/*
 * Look-up statistics: entries kept in first-seen order in a growing array,
 * found through an open-addressing index of positions. Look-ups are rare
 * (a few hundred at start-up), so one mutex is enough; the cap bounds the
 * memory a program asking for endless distinct names can make us keep.
 */
#define STAT_TABLE_MAX 8192

struct stat_entry {
	char *name;
	int version;
	uint64_t flags;
	uint64_t count;
	uint64_t ptds_count;
};

struct stat_table {
	struct stat_entry *entries;
	size_t len, cap;
	uint32_t *index; /* position + 1; 0 = empty */
	size_t index_cap;
};

static pthread_mutex_t stats_lock = PTHREAD_MUTEX_INITIALIZER;
static struct stat_table lookups;
static struct stat_table unknowns;
static uint64_t dropped;

static uint64_t key_hash(const char *name, int version, uint64_t flags)
{
	/* FNV-1a over the name, then the numbers. */
	uint64_t h = 1469598103934665603ull;

	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 1099511628211ull;
	h = (h ^ (uint32_t)version) * 1099511628211ull;
	h = (h ^ flags) * 1099511628211ull;
	return h ^ (h >> 29);
}

static int index_rebuild(struct stat_table *t, size_t cap)
{
	uint32_t *idx = calloc(cap, sizeof(*idx));

	if (!idx)
		return -ENOMEM;
	for (size_t i = 0; i < t->len; i++) {
		struct stat_entry *e = &t->entries[i];
		size_t j = key_hash(e->name, e->version, e->flags) & (cap - 1);

		while (idx[j])
			j = (j + 1) & (cap - 1);
		idx[j] = (uint32_t)i + 1;
	}
	free(t->index);
	t->index = idx;
	t->index_cap = cap;
	return 0;
}

/* Find or add (name, version, flags). Called with stats_lock held. */
static struct stat_entry *stat_get(struct stat_table *t, const char *name, int version,
				   uint64_t flags)
{
	size_t j;
	struct stat_entry *e;

	if (t->index_cap == 0 && index_rebuild(t, 64) != 0)
		return NULL;
	j = key_hash(name, version, flags) & (t->index_cap - 1);
	while (t->index[j]) {
		e = &t->entries[t->index[j] - 1];
		if (e->version == version && e->flags == flags && strcmp(e->name, name) == 0)
			return e;
		j = (j + 1) & (t->index_cap - 1);
	}
	if (t->len >= STAT_TABLE_MAX)
		return NULL;
	if (t->len == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 64;
		struct stat_entry *grown = realloc(t->entries, cap * sizeof(*grown));

		if (!grown)
			return NULL;
		t->entries = grown;
		t->cap = cap;
	}
	e = &t->entries[t->len];
	e->name = strdup(name);
	if (!e->name)
		return NULL;
	e->version = version;
	e->flags = flags;
	e->count = 0;
	e->ptds_count = 0;
	t->index[j] = (uint32_t)++t->len;
	/* Keep the index at most half full. */
	if (t->len * 2 > t->index_cap && index_rebuild(t, t->index_cap * 2) != 0) {
		/* The old index still holds every entry; it just gets fuller. */
	}
	return e;
}

void gs_stats_lookup(const char *name, int version, bool ptds)
{
	struct stat_entry *e;

	pthread_mutex_lock(&stats_lock);
	e = stat_get(&lookups, name, version, 0);
	if (e) {
		e->count++;
		e->ptds_count += ptds;
	} else {
		dropped++;
	}
	pthread_mutex_unlock(&stats_lock);
}

void gs_stats_unknown(const char *name, int version, cuuint64_t flags)
{
	struct stat_entry *e;

	pthread_mutex_lock(&stats_lock);
	e = stat_get(&unknowns, name, version, flags);
	if (e)
		e->count++;
	else
		dropped++;
	pthread_mutex_unlock(&stats_lock);
}

/* ---- the public API --------------------------------------------------------- */

/* The one export outside cuda.h's symbols (procaddr.c). */
#define LEGACY_GETPROC "cuGetProcAddress"

GS_EXPORT_API int gs_introspect_version(void)
{
	return GS_INTROSPECT_VERSION;
}

GS_EXPORT_API size_t gs_introspect_calls(struct gs_introspect_call *out, size_t cap)
{
	uint64_t totals[GS_API_COUNT];
	uint64_t legacy;
	size_t n = 0;

	gs_thread_calls_all(totals);
	for (int i = 0; i < GS_API_COUNT; i++) {
		if (!totals[i])
			continue;
		if (out && n < cap) {
			out[n].symbol = gs_api_symbols[i];
			out[n].count = totals[i];
		}
		n++;
	}
	legacy = gs_legacy_getproc_calls();
	if (legacy) {
		if (out && n < cap) {
			out[n].symbol = LEGACY_GETPROC;
			out[n].count = legacy;
		}
		n++;
	}
	return n;
}

GS_EXPORT_API uint64_t gs_introspect_call_count(const char *symbol)
{
	int sym = symbol ? gs_proc_symbol_index(symbol) : -1;

	if (symbol && strcmp(symbol, LEGACY_GETPROC) == 0)
		return gs_legacy_getproc_calls();
	return sym < 0 ? 0 : gs_thread_calls(sym);
}

GS_EXPORT_API size_t gs_introspect_lookups(struct gs_introspect_lookup *out, size_t cap)
{
	size_t n;

	pthread_mutex_lock(&stats_lock);
	n = lookups.len;
	for (size_t i = 0; out && i < n && i < cap; i++) {
		out[i].name = lookups.entries[i].name;
		out[i].version = lookups.entries[i].version;
		out[i].count = lookups.entries[i].count;
		out[i].ptds_count = lookups.entries[i].ptds_count;
	}
	pthread_mutex_unlock(&stats_lock);
	return n;
}

GS_EXPORT_API size_t gs_introspect_unknown_entries(struct gs_introspect_unknown *out, size_t cap)
{
	size_t n;

	pthread_mutex_lock(&stats_lock);
	n = unknowns.len;
	for (size_t i = 0; out && i < n && i < cap; i++) {
		out[i].name = unknowns.entries[i].name;
		out[i].version = unknowns.entries[i].version;
		out[i].flags = unknowns.entries[i].flags;
		out[i].count = unknowns.entries[i].count;
	}
	pthread_mutex_unlock(&stats_lock);
	return n;
}

GS_EXPORT_API size_t gs_introspect_export_tables(struct gs_introspect_export_table *out,
						  size_t cap)
{
	return gs_export_table_stats(out, cap);
}

GS_EXPORT_API uint64_t gs_introspect_dropped(void)
{
	uint64_t n;

	pthread_mutex_lock(&stats_lock);
	n = dropped;
	pthread_mutex_unlock(&stats_lock);
	return n;
}

/* ---- JSON dump ---------------------------------------------------------------- */

struct out {
	int fd;
	int err;
	size_t len;
	char buf[4096];
};

static void out_flush(struct out *o)
{
	size_t off = 0;

	while (off < o->len && !o->err) {
		ssize_t n = write(o->fd, o->buf + off, o->len - off);

		if (n < 0) {
			if (errno != EINTR)
				o->err = errno;
			continue;
		}
		off += (size_t)n;
	}
	o->len = 0;
}

static void out_raw(struct out *o, const char *s, size_t n)
{
	while (n) {
		size_t room = sizeof(o->buf) - o->len;
		size_t k = n < room ? n : room;

		memcpy(o->buf + o->len, s, k);
		o->len += k;
		s += k;
		n -= k;
		if (o->len == sizeof(o->buf))
			out_flush(o);
	}
}

/* A string literal, without its terminating NUL. */
#define out_lit(o, lit) out_raw((o), (lit), sizeof(lit) - 1)

static void out_fmt(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_fmt(struct out *o, const char *fmt, ...)
{
	char tmp[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n > 0)
		out_raw(o, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* A JSON string; names come from the application and may hold anything. */
static void out_str(struct out *o, const char *s)
{
	out_lit(o, "\"");
	for (const unsigned char *p = (const unsigned char *)s; p && *p; p++) {
		if (*p == '"' || *p == '\\') {
			char esc[2] = { '\\', (char)*p };

			out_raw(o, esc, 2);
		} else if (*p < 0x20 || *p >= 0x7f) {
			out_fmt(o, "\\u%04x", *p);
		} else {
			out_raw(o, (const char *)p, 1);
		}
	}
	out_lit(o, "\"");
}

GS_EXPORT_API int gs_introspect_dump(int fd)
{
	struct out *o = calloc(1, sizeof(*o));
	struct gs_introspect_call *calls = NULL;
	struct gs_introspect_export_table *tables = NULL;
	size_t ncalls, ntables;
	const char *driver;
	int err;

	if (!o)
		return -ENOMEM;
	o->fd = fd;
	ncalls = gs_introspect_calls(NULL, 0);
	calls = calloc(ncalls + 1, sizeof(*calls));
	ntables = gs_introspect_export_tables(NULL, 0);
	tables = calloc(ntables + 1, sizeof(*tables));
	if (!calls || !tables) {
		free(calls);
		free(tables);
		free(o);
		return -ENOMEM;
	}
	ncalls = gs_introspect_calls(calls, ncalls);
	ntables = gs_introspect_export_tables(tables, ntables);

	driver = gs_real_path();
	out_fmt(o, "{\"version\":%d,\"pid\":%d,\"driver\":", GS_INTROSPECT_VERSION, (int)getpid());
	if (driver)
		out_str(o, driver);
	else
		out_lit(o, "null");

	out_lit(o, ",\"calls\":{");
	for (size_t i = 0; i < ncalls; i++) {
		if (i)
			out_lit(o, ",");
		out_str(o, calls[i].symbol);
		out_fmt(o, ":%llu", (unsigned long long)calls[i].count);
	}

	pthread_mutex_lock(&stats_lock);
	out_lit(o, "},\"lookups\":[");
	for (size_t i = 0; i < lookups.len; i++) {
		const struct stat_entry *e = &lookups.entries[i];

		if (i)
			out_lit(o, ",");
		out_lit(o, "{\"name\":");
		out_str(o, e->name);
		out_fmt(o, ",\"version\":%d,\"count\":%llu,\"ptds_count\":%llu}", e->version,
			(unsigned long long)e->count, (unsigned long long)e->ptds_count);
	}
	out_lit(o, "],\"unknown_entry_points\":[");
	for (size_t i = 0; i < unknowns.len; i++) {
		const struct stat_entry *e = &unknowns.entries[i];

		if (i)
			out_lit(o, ",");
		out_lit(o, "{\"name\":");
		out_str(o, e->name);
		out_fmt(o, ",\"version\":%d,\"flags\":%llu,\"count\":%llu}", e->version,
			(unsigned long long)e->flags, (unsigned long long)e->count);
	}
	out_fmt(o, "],\"dropped\":%llu", (unsigned long long)dropped);
	pthread_mutex_unlock(&stats_lock);

	out_lit(o, ",\"export_tables\":[");
	for (size_t i = 0; i < ntables; i++) {
		const unsigned char *u = tables[i].uuid;

		out_fmt(o, "%s{\"uuid\":\"%02X%02X%02X%02X-%02X%02X-%02X%02X-%02X%02X-"
			"%02X%02X%02X%02X%02X%02X\",\"name\":", i ? "," : "",
			u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11],
			u[12], u[13], u[14], u[15]);
		if (tables[i].name)
			out_str(o, tables[i].name);
		else
			out_lit(o, "null");
		out_fmt(o, ",\"hooked\":%s,\"count\":%llu}", tables[i].hooked ? "true" : "false",
			(unsigned long long)tables[i].count);
	}
	out_lit(o, "]}\n");
	out_flush(o);

	err = o->err;
	free(calls);
	free(tables);
	free(o);
	return -err;
}

/* ---- GPUSWAP_STATS_FILE ------------------------------------------------------- */

static char stats_path[4096];

static void stats_at_exit(void)
{
	char path[sizeof(stats_path) + 16];
	size_t o = 0;
	int fd;

	/* Expand %p to the pid: forked workers each get their own file. */
	for (const char *p = stats_path; *p && o < sizeof(path) - 12; p++) {
		if (p[0] == '%' && p[1] == 'p') {
			o += (size_t)snprintf(path + o, sizeof(path) - o, "%d", (int)getpid());
			p++;
		} else {
			path[o++] = *p;
		}
	}
	path[o] = '\0';
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		gs_perror("GPUSWAP_STATS_FILE: cannot create %s", path);
		return;
	}
	if (gs_introspect_dump(fd) != 0)
		gs_warn("GPUSWAP_STATS_FILE: writing %s failed", path);
	close(fd);
}

void gs_introspect_setup(void)
{
	const char *path = getenv("GPUSWAP_STATS_FILE");

	if (!path || !*path)
		return;
	if (strlen(path) >= sizeof(stats_path)) {
		gs_warn("GPUSWAP_STATS_FILE is too long; no statistics will be written");
		return;
	}
	memcpy(stats_path, path, strlen(path) + 1);
	if (atexit(stats_at_exit) != 0)
		gs_warn("GPUSWAP_STATS_FILE: atexit failed; no statistics will be written");
}
