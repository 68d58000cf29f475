/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The generated cuGetProcAddress table and gs_proc_lookup, without any
 * driver: which symbol each (name, version, flags) selects, per-thread
 * variants, legacy ABIs, unknown names and versions that are too old, and
 * the invariants the look-ups rely on (sorting, indices).
 */
#include <cuda.h>
#include <stdbool.h>
#include <string.h>

#include "proctable.h"
#include "shimtest.h"

#define PTDS CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM
#define LEGACY CU_GET_PROC_ADDRESS_LEGACY_STREAM

/* A legacy ABI: no symbol in cuda.h, exported by the driver as `driver`. */
static void expect_legacy(const char *name, int version, cuuint64_t flags, const char *driver)
{
	const struct gs_proc_entry *e = gs_proc_lookup(name, version, flags, NULL);

	CHECK(e && !e->symbol && e->driver_symbol && strcmp(e->driver_symbol, driver) == 0,
	      "%s@%d flags %llu: want legacy %s, got %s/%s", name, version,
	      (unsigned long long)flags, driver, e && e->symbol ? e->symbol : "-",
	      e && e->driver_symbol ? e->driver_symbol : "-");
}

/* Expect `symbol` (NULL: an entry with no symbol, a legacy ABI). */
static void expect(const char *name, int version, cuuint64_t flags, const char *symbol)
{
	CUdriverProcAddressQueryResult st = (CUdriverProcAddressQueryResult)-1;
	const struct gs_proc_entry *e = gs_proc_lookup(name, version, flags, &st);

	CHECK(e != NULL, "%s@%d flags %llu: no entry (status %d)", name, version,
	      (unsigned long long)flags, (int)st);
	if (!e)
		return;
	CHECK(st == CU_GET_PROC_ADDRESS_SUCCESS, "%s@%d: status %d", name, version, (int)st);
	if (symbol) {
		CHECK(e->symbol && strcmp(e->symbol, symbol) == 0, "%s@%d flags %llu: got %s, want %s",
		      name, version, (unsigned long long)flags, e->symbol ? e->symbol : "(legacy)",
		      symbol);
		CHECK(e->symbol_index >= 0 && strcmp(gs_api_symbols[e->symbol_index], symbol) == 0,
		      "%s: symbol_index %d is wrong", symbol, e->symbol_index);
	} else {
		/* A legacy entry: no cuda.h symbol, but the shim's legacy export
		 * of the driver's name for it (none for the legacy cuGetProcAddress,
		 * exported by hand). */
		bool by_hand = strcmp(e->driver_symbol, "cuGetProcAddress") == 0;

		CHECK(e->symbol == NULL &&
		      (by_hand ? e->symbol_index == -1
			       : e->symbol_index >= 0 &&
				 strcmp(gs_api_symbols[e->symbol_index], e->driver_symbol) == 0),
		      "%s@%d flags %llu: got %s (index %d), want a legacy entry", name, version,
		      (unsigned long long)flags, e->symbol, e->symbol_index);
	}
}

static void expect_missing(const char *name, int version, CUdriverProcAddressQueryResult want)
{
	CUdriverProcAddressQueryResult st = CU_GET_PROC_ADDRESS_SUCCESS;
	const struct gs_proc_entry *e = gs_proc_lookup(name, version, 0, &st);

	CHECK(e == NULL, "%s@%d: unexpected entry %s", name, version, e->symbol);
	CHECK(st == want, "%s@%d: status %d, want %d", name, version, (int)st, (int)want);
}

static void check_invariants(void)
{
	for (size_t i = 1; i < gs_api_symbols_len; i++)
		CHECK(strcmp(gs_api_symbols[i - 1], gs_api_symbols[i]) < 0,
		      "gs_api_symbols not sorted at %zu (%s, %s)", i, gs_api_symbols[i - 1],
		      gs_api_symbols[i]);
	for (size_t i = 0; i < gs_proc_table_len; i++) {
		const struct gs_proc_entry *e = &gs_proc_table[i];

		if (i > 0) {
			const struct gs_proc_entry *p = &gs_proc_table[i - 1];
			int c = strcmp(p->name, e->name);

			CHECK(c < 0 || (c == 0 && (p->ptds < e->ptds ||
						   (p->ptds == e->ptds && p->version < e->version))),
			      "gs_proc_table not sorted at %zu (%s@%d)", i, e->name, e->version);
		}
		CHECK(e->driver_symbol && strncmp(e->driver_symbol, e->name, strlen(e->name)) == 0,
		      "%s@%d: driver_symbol %s", e->name, e->version,
		      e->driver_symbol ? e->driver_symbol : "(null)");
		if (e->symbol) {
			CHECK(e->driver_symbol && strcmp(e->driver_symbol, e->symbol) == 0,
			      "%s@%d: driver_symbol %s differs from symbol %s", e->name, e->version,
			      e->driver_symbol, e->symbol);
			CHECK(e->symbol_index >= 0 && (size_t)e->symbol_index < gs_api_symbols_len &&
			      strcmp(gs_api_symbols[e->symbol_index], e->symbol) == 0,
			      "%s@%d: bad symbol_index", e->name, e->version);
			CHECK(gs_proc_symbol_index(e->symbol) == e->symbol_index,
			      "gs_proc_symbol_index(%s)", e->symbol);
		} else if (strcmp(e->driver_symbol, "cuGetProcAddress") == 0) {
			/* The legacy cuGetProcAddress is exported by hand. */
			CHECK(e->symbol_index == -1, "%s@%d: index without symbol", e->name,
			      e->version);
		} else {
			/* A legacy ABI: its export is the driver's name for it. */
			CHECK(e->symbol_index >= 0 && (size_t)e->symbol_index < gs_api_symbols_len &&
			      strcmp(gs_api_symbols[e->symbol_index], e->driver_symbol) == 0,
			      "%s@%d: legacy export %s has no symbol_index", e->name, e->version,
			      e->driver_symbol);
		}
	}
	CHECK(gs_proc_symbol_index("cuNoSuchSymbol") == -1, "unknown symbol has an index");
	CHECK(gs_proc_symbol_index(NULL) == -1, "NULL has an index");
}

int main(void)
{
	printf("%zu symbols, %zu ABIs\n", gs_api_symbols_len, gs_proc_table_len);
	check_invariants();

	/* Current ABIs. */
	expect("cuInit", 13000, 0, "cuInit");
	expect("cuMemAlloc", 13000, 0, "cuMemAlloc_v2");
	expect("cuMemAlloc", 3020, 0, "cuMemAlloc_v2");
	expect("cuCtxCreate", 13000, 0, "cuCtxCreate_v4");
	expect("cuCtxCreate", 12050, 0, "cuCtxCreate_v4");
	expect("cuGetProcAddress", 13000, 0, "cuGetProcAddress_v2");
	expect("cuGetProcAddress", 12000, 0, "cuGetProcAddress_v2");
	expect("cuStreamGetCaptureInfo", 13000, 0, "cuStreamGetCaptureInfo_v3");
	expect("cuStreamGetCaptureInfo", 12030, 0, "cuStreamGetCaptureInfo_v3");
	expect("cuDeviceGetUuid", 13000, 0, "cuDeviceGetUuid_v2");
	/* Two declared ABIs under one name, the base one the older. */
	expect("cuCtxGetDevice", 13000, 0, "cuCtxGetDevice_v2");
	expect("cuCtxGetDevice", 12090, 0, "cuCtxGetDevice");
	expect("cuStreamGetCtx", 13000, 0, "cuStreamGetCtx_v2");
	expect("cuStreamGetCtx", 12000, 0, "cuStreamGetCtx");
	expect("cuEventElapsedTime", 13000, 0, "cuEventElapsedTime_v2");

	/* Per-thread default stream. */
	expect("cuMemcpyAsync", 13000, PTDS, "cuMemcpyAsync_ptsz");
	expect("cuMemcpyAsync", 13000, LEGACY, "cuMemcpyAsync");
	expect("cuMemcpyAsync", 13000, 0, "cuMemcpyAsync");
	expect("cuMemcpyHtoD", 13000, PTDS, "cuMemcpyHtoD_v2_ptds");
	expect("cuMemcpyHtoD", 13000, 0, "cuMemcpyHtoD_v2");
	expect("cuStreamGetCaptureInfo", 13000, PTDS, "cuStreamGetCaptureInfo_v3_ptsz");
	expect("cuLaunchKernel", 13000, PTDS, "cuLaunchKernel_ptsz");
	expect("cuStreamGetCtx", 13000, PTDS, "cuStreamGetCtx_v2_ptsz");
	expect("cuStreamGetCtx", 12000, PTDS, "cuStreamGetCtx_ptsz");
	/* No per-thread variant: the default one. */
	expect("cuInit", 13000, PTDS, "cuInit");
	expect("cuMemAlloc", 13000, PTDS, "cuMemAlloc_v2");
	/* Asked for a version before the per-thread variant existed. */
	expect("cuMemcpyAsync", 4000, PTDS, "cuMemcpyAsync");

	/* Legacy ABIs: the driver has them, cuda.h no longer declares them. */
	expect("cuMemAlloc", 2000, 0, NULL);
	expect("cuMemAlloc", 3010, 0, NULL);
	expect("cuCtxCreate", 11040, 0, NULL);
	expect("cuGetProcAddress", 11030, 0, NULL);
	expect("cuStreamGetCaptureInfo", 11030, 0, NULL);
	expect("cuStreamGetCaptureInfo", 10010, PTDS, NULL);

	/* The names the driver exports legacy ABIs under. */
	expect_legacy("cuEventElapsedTime", 12000, 0, "cuEventElapsedTime");
	expect_legacy("cuMemAlloc", 3010, 0, "cuMemAlloc");
	expect_legacy("cuCtxCreate", 12000, 0, "cuCtxCreate_v3");
	expect_legacy("cuCtxCreate", 11000, 0, "cuCtxCreate_v2");
	expect_legacy("cuGetProcAddress", 11030, 0, "cuGetProcAddress");
	expect_legacy("cuStreamGetCaptureInfo", 11030, PTDS, "cuStreamGetCaptureInfo_v2_ptsz");
	expect_legacy("cuStreamBeginCapture", 10000, PTDS, "cuStreamBeginCapture_ptsz");
	expect_legacy("cuGraphInstantiate", 11000, 0, "cuGraphInstantiate_v2");

	/* Not there at all. */
	expect_missing("cuMemAlloc", 1000, CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT);
	expect_missing("cuNoSuchFunction", 13000, CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND);
	expect_missing("", 13000, CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND);
	expect_missing("cuMemAlloc_v2", 13000, CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND);

	return shimtest_result("proctable");
}
