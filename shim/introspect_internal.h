/* SPDX-License-Identifier: Apache-2.0 */
/* How the rest of the shim feeds introspection (introspect.h). */
#ifndef GS_INTROSPECT_INTERNAL_H
#define GS_INTROSPECT_INTERNAL_H

#include <cuda.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "introspect.h"

/* Register the GPUSWAP_STATS_FILE exit dump, if asked for. From init. */
void gs_introspect_setup(void);

/* A cuGetProcAddress look-up of (name, version); ptds: with
 * CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM. */
void gs_stats_lookup(const char *name, int version, bool ptds);

/* A raw driver function handed to the application. */
void gs_stats_unknown(const char *name, int version, cuuint64_t flags);

/* procaddr.c: calls of the legacy cuGetProcAddress export, which is not
 * one of cuda.h's symbols and so has no slot in the per-thread counters. */
uint64_t gs_legacy_getproc_calls(void);

/* exporttable.c: the export-table list (same contract as the public API). */
size_t gs_export_table_stats(struct gs_introspect_export_table *out, size_t cap);

#endif
