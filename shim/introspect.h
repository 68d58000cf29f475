/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gpuswap introspection: a read-only C API exported by libgpuswap.so, for
 * tests and tools (gpu-ps). A program running under the shim finds these
 * with dlsym(RTLD_DEFAULT, "gs_introspect_...") — absent means the shim is
 * not loaded. With GPUSWAP_STATS_FILE=PATH set, the shim also writes
 * gs_introspect_dump() to PATH when the process exits ("%p" in PATH is
 * replaced by the process id), for programs that cannot call C.
 *
 * Every list function fills at most `cap` entries of `out` (out may be
 * NULL with cap 0) and returns how many entries exist, so a caller can size
 * its buffer and call again. Strings stay valid for the life of the process.
 * Self-contained: needs neither cuda.h nor any other gpuswap header.
 */
#ifndef GS_INTROSPECT_H
#define GS_INTROSPECT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GS_INTROSPECT_VERSION 1

/* GS_INTROSPECT_VERSION of the loaded shim. */
int gs_introspect_version(void);

/* Driver calls the application made, per exported symbol, for the symbols
 * called at least once, in symbol order. Calls the shim makes itself are
 * not counted. */
struct gs_introspect_call {
	const char *symbol;
	uint64_t count;
};
size_t gs_introspect_calls(struct gs_introspect_call *out, size_t cap);
/* Calls of one symbol; 0 for a name the shim does not export. */
uint64_t gs_introspect_call_count(const char *symbol);

/* cuGetProcAddress / cuGetProcAddress_v2 look-ups per (name, version), in
 * the order first seen. ptds_count: how many of them asked for the
 * per-thread-default-stream variant. */
struct gs_introspect_lookup {
	const char *name;
	int version;
	uint64_t count;
	uint64_t ptds_count;
};
size_t gs_introspect_lookups(struct gs_introspect_lookup *out, size_t cap);

/* Unknown entry points: look-ups answered with the real driver's own
 * function because the shim has no wrapper for that ABI. The application
 * holds these raw pointers; calls through them bypass the shim, so they
 * make a migration unsafe (gpu-freeze --check). */
struct gs_introspect_unknown {
	const char *name;
	int version;
	uint64_t flags;
	uint64_t count;
};
size_t gs_introspect_unknown_entries(struct gs_introspect_unknown *out, size_t cap);

/* cuGetExportTable requests per table UUID (bytes in memory order), in the
 * order first seen. name: the table's name if the shim knows it, else
 * NULL. hooked: the shim returned its own wrapper of the table. */
struct gs_introspect_export_table {
	unsigned char uuid[16];
	const char *name;
	int hooked;
	uint64_t count;
};
size_t gs_introspect_export_tables(struct gs_introspect_export_table *out, size_t cap);

/* Look-ups not recorded because the tables were full (a program asking
 * for unboundedly many distinct names). */
uint64_t gs_introspect_dropped(void);

/* Write everything above as one JSON object to fd. 0 or -errno. */
int gs_introspect_dump(int fd);

#ifdef __cplusplus
}
#endif
#endif
