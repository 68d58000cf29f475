/* SPDX-License-Identifier: Apache-2.0 */
#include "shimsim.h"

#include <dlfcn.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

atomic_int ss_failures;
struct ss_introspect ss_gs;

const char *const ss_kind_names[SS_NKINDS] = {
	[SS_CTX] = "ctx",
	[SS_STREAM] = "stream",
	[SS_EVENT] = "event",
	[SS_MODULE] = "module",
	[SS_LIBRARY] = "library",
	[SS_FUNCTION] = "function",
	[SS_KERNEL] = "kernel",
	[SS_GLOBAL] = "global",
	[SS_LINK] = "link",
	[SS_ALLOC] = "alloc",
	[SS_HOST] = "host",
	[SS_RESERVATION] = "reservation",
	[SS_PHYS] = "phys",
	[SS_MAPPING] = "mapping",
	[SS_UNSUPPORTED] = "unsupported",
};

void ss_report(const char *kind, const char *file, int line, const char *cond, const char *fmt,
	       ...)
{
	char msg[1024];
	va_list ap;
	int n;

	n = snprintf(msg, sizeof(msg), "%s:%d: %s%s%s%s: ", file, line, kind, *cond ? " (" : "",
		     cond, *cond ? ")" : "");
	if (n < 0 || (size_t)n >= sizeof(msg))
		n = 0;
	va_start(ap, fmt);
	vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
	va_end(ap);
	/* One fprintf: stdio locks the stream for the call, so lines of
	 * several threads do not interleave. */
	fprintf(stderr, "%s\n", msg);
}

const char *ss_err(CUresult rc)
{
	static _Thread_local char buf[96];
	CUresult (*name_of)(CUresult, const char **) = NULL;
	const char *name = NULL;

	/* Through whatever libcuda.so.1 the process has (the shim): programs
	 * that only dlopen the driver have no link-time reference to it. */
	SS_LOAD(name_of, dlsym(RTLD_DEFAULT, "cuGetErrorName"));
	if (!name_of || name_of(rc, &name) != CUDA_SUCCESS || !name)
		name = "unknown CUresult";
	snprintf(buf, sizeof(buf), "%s (%d)", name, (int)rc);
	return buf;
}

int ss_result(const char *name)
{
	int failures = atomic_load(&ss_failures);

	if (failures) {
		fprintf(stderr, "%s: %d check(s) failed\n", name, failures);
		return 1;
	}
	printf("%s: ok\n", name);
	return 0;
}

/* ---- introspection --------------------------------------------------------------- */

#define LOAD_API(field, symbol)                                                       \
	do {                                                                          \
		SS_LOAD(ss_gs.field, dlsym(handle, symbol));                          \
		REQUIRE(ss_gs.field != NULL, "%s not found: run with the shim preloaded " \
			"(LD_PRELOAD=libgpuswap.so), as meson test does", symbol);    \
	} while (0)

void ss_introspect_load(void *handle)
{
	LOAD_API(version, "gs_introspect_version");
	LOAD_API(call_count, "gs_introspect_call_count");
	LOAD_API(calls, "gs_introspect_calls");
	LOAD_API(lookups, "gs_introspect_lookups");
	LOAD_API(unknown_entries, "gs_introspect_unknown_entries");
	LOAD_API(export_tables, "gs_introspect_export_tables");
	LOAD_API(dropped, "gs_introspect_dropped");
	LOAD_API(tracker_count, "gs_introspect_tracker_count");
	REQUIRE(ss_gs.version() == 1, "introspection version %d, these tests know 1",
		ss_gs.version());
}

void ss_counts_get(struct ss_counts *out)
{
	memset(out, 0, sizeof(*out));
	for (int k = 0; k < SS_NKINDS; k++) {
		int rc = ss_gs.tracker_count(ss_kind_names[k], &out->count[k], &out->bytes[k]);

		REQUIRE(rc == 0, "gs_introspect_tracker_count(\"%s\") = %d", ss_kind_names[k], rc);
	}
}

int ss_counts_diff(const char *what, const struct ss_counts *want, const struct ss_counts *got)
{
	int n = 0;

	for (int k = 0; k < SS_NKINDS; k++) {
		if (want->count[k] == got->count[k] && want->bytes[k] == got->bytes[k])
			continue;
		fprintf(stderr,
			"%s: %s: expected %llu records / %llu bytes, tracker has %llu / %llu\n",
			what, ss_kind_names[k], (unsigned long long)want->count[k],
			(unsigned long long)want->bytes[k], (unsigned long long)got->count[k],
			(unsigned long long)got->bytes[k]);
		n++;
	}
	return n;
}

/* ---- environment ----------------------------------------------------------------- */

char *ss_kernel_path(const char *file)
{
	const char *dir = getenv("GS_KERNELS_DIR");
	char *path = NULL;

	REQUIRE(dir && *dir, "GS_KERNELS_DIR is not set (run through meson test)");
	REQUIRE(asprintf(&path, "%s/%s", dir, file) > 0, "out of memory");
	return path;
}

void *ss_read_file(const char *path, size_t *size)
{
	FILE *f = fopen(path, "rb");
	struct stat st;
	char *buf;

	REQUIRE(f != NULL, "cannot open %s", path);
	REQUIRE(fstat(fileno(f), &st) == 0, "cannot stat %s", path);
	buf = malloc((size_t)st.st_size + 1);
	REQUIRE(buf != NULL, "out of memory");
	REQUIRE(fread(buf, 1, (size_t)st.st_size, f) == (size_t)st.st_size, "short read of %s",
		path);
	buf[st.st_size] = 0;
	fclose(f);
	if (size)
		*size = (size_t)st.st_size;
	return buf;
}

uint64_t ss_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void ss_sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) != 0)
		;
}
