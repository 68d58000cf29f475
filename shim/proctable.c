/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Look-ups in the generated tables (g_proctable.c). Compiled into both the
 * shim and the simulated driver, so the two answer cuGetProcAddress alike.
 */
#include "proctable.h"

#include <string.h>

size_t gs_proc_entries(const char *name, const struct gs_proc_entry **first)
{
	size_t lo = 0, hi = gs_proc_table_len, end;

	if (!name)
		return 0;
	/* Lower bound of name in the table sorted by strcmp. */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (strcmp(gs_proc_table[mid].name, name) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (end = lo; end < gs_proc_table_len && strcmp(gs_proc_table[end].name, name) == 0; end++)
		;
	if (first)
		*first = &gs_proc_table[lo];
	return end - lo;
}

/* Newest entry of the stream mode `ptds` with version <= cuda_version. */
static const struct gs_proc_entry *newest(const struct gs_proc_entry *e, size_t n, int ptds,
					  int cuda_version)
{
	const struct gs_proc_entry *best = NULL;

	for (size_t i = 0; i < n; i++) {
		if (e[i].ptds != ptds)
			continue;
		if (e[i].version <= cuda_version)
			best = &e[i]; /* sorted by version within a mode */
	}
	return best;
}

const struct gs_proc_entry *gs_proc_lookup(const char *name, int cuda_version,
					   cuuint64_t flags,
					   CUdriverProcAddressQueryResult *status)
{
	const struct gs_proc_entry *first, *best = NULL;
	size_t n = gs_proc_entries(name, &first);

	if (n == 0) {
		if (status)
			*status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
		return NULL;
	}
	if (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM)
		best = newest(first, n, 1, cuda_version);
	if (!best)
		best = newest(first, n, 0, cuda_version);
	if (status)
		*status = best ? CU_GET_PROC_ADDRESS_SUCCESS
			       : CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT;
	return best;
}

int gs_proc_symbol_index(const char *symbol)
{
	size_t lo = 0, hi = gs_api_symbols_len;

	if (!symbol)
		return -1;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(gs_api_symbols[mid], symbol);

		if (c == 0)
			return (int)mid;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}
