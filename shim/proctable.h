/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The cuGetProcAddress table, generated from cudaTypedefs.h + cuda.h into
 * g_proctable.c (never edited by hand). Shared by the shim and the
 * simulated driver so both answer look-ups the way the real driver does.
 */
#ifndef GS_PROCTABLE_H
#define GS_PROCTABLE_H

#include <cuda.h>
#include <stddef.h>

struct gs_proc_entry {
	const char *name;   /* base name asked for, e.g. "cuMemAlloc" */
	int version;        /* ABI version from PFN_<name>_v<version>, e.g. 3020 */
	unsigned char ptds; /* 1: the per-thread-default-stream variant */
	/* Exported symbol implementing this ABI, e.g. "cuMemAlloc_v2"; NULL
	 * when cuda.h declares none (a legacy ABI only the real driver has). */
	const char *symbol;
	/* Index in gs_api_symbols of the shim's export for this ABI: symbol's,
	 * or with symbol NULL the legacy export named driver_symbol; -1 where
	 * the shim has none (the hand-written legacy cuGetProcAddress). */
	int symbol_index;
	/* The name the driver exports this ABI under, declared by cuda.h or
	 * not: symbol when there is one, else the legacy name by the driver's
	 * numbering (<name> for the first ABI, <name>_v<N> for the N-th, plus
	 * _ptsz/_ptds), e.g. "cuEventElapsedTime", "cuCtxCreate_v3". For a
	 * driver (the simulator) that implements legacy ABIs too. */
	const char *driver_symbol;
};

/* Sorted by name (strcmp), then ptds, then version ascending. */
extern const struct gs_proc_entry gs_proc_table[];
extern const size_t gs_proc_table_len;

/* Every symbol the shim's generator exports, sorted: those cuda.h declares
 * in either default-stream mode, the profiler's, and the legacy exports. */
extern const char *const gs_api_symbols[];
extern const size_t gs_api_symbols_len;

/*
 * What the real driver returns for cuGetProcAddress(name, cudaVersion, flags):
 * among the entries for `name` with the requested stream mode, the highest
 * version <= cudaVersion. The per-thread entries are searched when flags has
 * CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM; when none of them is old
 * enough (or the name has none: cuInit has no per-thread variant) the
 * default ones are, as the driver does. CU_GET_PROC_ADDRESS_LEGACY_STREAM
 * and CU_GET_PROC_ADDRESS_DEFAULT both select the default ones.
 * Returns the entry (whose symbol may be NULL: a legacy ABI cuda.h no longer
 * declares), or NULL with *status set to CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND
 * or CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT. status may be NULL.
 */
const struct gs_proc_entry *gs_proc_lookup(const char *name, int cuda_version,
					   cuuint64_t flags,
					   CUdriverProcAddressQueryResult *status);

/* Every entry for `name` (all versions, both stream modes): *first and the
 * count, or 0 for an unknown name. */
size_t gs_proc_entries(const char *name, const struct gs_proc_entry **first);

/* Index of `symbol` in gs_api_symbols, or -1. */
int gs_proc_symbol_index(const char *symbol);

#endif
