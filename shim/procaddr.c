/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cuGetProcAddress (DESIGN.md §3). cudart, cuBLAS, PyTorch and friends get
 * nearly every driver entry point this way rather than through dlsym, so
 * every answer must be the shim's wrapper for exactly the ABI the real
 * driver would have returned — or, where the shim has none, the driver's own
 * function, recorded as an unknown entry point.
 *
 * The table (gs_proc_lookup) says which ABI a (name, version, flags) means.
 * The real driver is asked as well, and its answer wins where they differ:
 * an older driver may not have the newest ABI, and the application must
 * then see "not found" (cudart picks fallbacks from that), not a wrapper
 * that fails later.
 */
#define GS_LOG_SUBSYS "shim"
#include "shim.h"

#include <cudaTypedefs.h>
#include <pthread.h>
#include <string.h>

#include "introspect_internal.h"
#include "log.h"
#include "proctable.h"
#include "real.h"

/* cuda.h maps cuGetProcAddress to cuGetProcAddress_v2; the legacy four-
 * argument ABI (CUDA 11.3 to 11.8) is exported under the bare name. */
#undef cuGetProcAddress
GS_EXPORT CUresult cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion,
				    cuuint64_t flags);
_Static_assert(__builtin_types_compatible_p(PFN_cuGetProcAddress_v11030,
					    __typeof__(&cuGetProcAddress)),
	       "the legacy cuGetProcAddress export must match PFN_cuGetProcAddress_v11030");

static pthread_once_t legacy_once = PTHREAD_ONCE_INIT;
static PFN_cuGetProcAddress_v11030 real_legacy;

static void legacy_load(void)
{
	void *addr = gs_real_dlsym("cuGetProcAddress");

	memcpy(&real_legacy, &addr, sizeof(addr));
}

static void *fn_addr(gs_any_fn fn)
{
	void *p;

	memcpy(&p, &fn, sizeof(p));
	return p;
}

static void set_pfn(void **pfn, gs_any_fn fn)
{
	*pfn = fn_addr(fn);
}

/* Ask the real driver. *asked = false when it has no cuGetProcAddress. */
static CUresult ask_real(const char *symbol, void **out, int version, cuuint64_t flags,
			 CUdriverProcAddressQueryResult *status, bool *asked)
{
	CUresult rc;

	*out = NULL;
	*status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
	*asked = true;
	gs_inside_begin();
	if (gs_real.cuGetProcAddress_v2) {
		rc = gs_real.cuGetProcAddress_v2(symbol, out, version, flags, status);
	} else {
		pthread_once(&legacy_once, legacy_load);
		if (real_legacy) {
			rc = real_legacy(symbol, out, version, flags);
			*status = rc == CUDA_SUCCESS ? CU_GET_PROC_ADDRESS_SUCCESS
						     : CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
		} else {
			*asked = false;
			rc = CUDA_ERROR_NOT_FOUND;
		}
	}
	gs_inside_end();
	return rc;
}

/* The wrapper of the entry of `symbol` whose real function is `real`. */
static int entry_with_real(const char *symbol, void *real)
{
	const struct gs_proc_entry *e;
	size_t n = gs_proc_entries(symbol, &e);

	for (size_t i = 0; i < n; i++)
		if (e[i].symbol_index >= 0 && fn_addr(gs_real_fn(e[i].symbol_index)) == real)
			return e[i].symbol_index;
	return -1;
}

static CUresult resolve(const char *symbol, void **pfn, int version, cuuint64_t flags,
			CUdriverProcAddressQueryResult *status)
{
	const struct gs_proc_entry *e;
	CUdriverProcAddressQueryResult table_status, real_status;
	void *real = NULL;
	bool asked;
	CUresult rc;
	int sym = -1;

	rc = gs_init();
	if (rc != CUDA_SUCCESS) {
		*pfn = NULL;
		*status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
		return rc;
	}
	gs_stats_lookup(symbol, version, flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM);
	e = gs_proc_lookup(symbol, version, flags, &table_status);

	/* Whoever asks for cuGetProcAddress gets the shim's: a raw one would
	 * let every later look-up bypass the shim. */
	if (e && strcmp(symbol, "cuGetProcAddress") == 0) {
		if (e->symbol_index >= 0)
			set_pfn(pfn, gs_wrappers[e->symbol_index]);
		else
			set_pfn(pfn, (gs_any_fn)cuGetProcAddress);
		*status = CU_GET_PROC_ADDRESS_SUCCESS;
		return CUDA_SUCCESS;
	}

	rc = ask_real(symbol, &real, version, flags, &real_status, &asked);
	if (!asked) {
		/* A driver without cuGetProcAddress (before CUDA 11.3): the table
		 * alone decides, limited to what the driver exports. */
		if (e && e->symbol_index >= 0 && gs_real_fn(e->symbol_index)) {
			set_pfn(pfn, gs_wrappers[e->symbol_index]);
			*status = CU_GET_PROC_ADDRESS_SUCCESS;
			return CUDA_SUCCESS;
		}
		*pfn = NULL;
		*status = e ? CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND : table_status;
		return CUDA_ERROR_NOT_FOUND;
	}
	if (rc != CUDA_SUCCESS || real == NULL) {
		/* Whatever the table says, the driver does not have it. */
		*pfn = NULL;
		*status = real_status;
		gs_trace("cuGetProcAddress(\"%s\", %d, %#llx): driver says %d (status %d)",
			 symbol, version, (unsigned long long)flags, (int)rc, (int)real_status);
		return rc;
	}

	if (e && e->symbol_index >= 0 && fn_addr(gs_real_fn(e->symbol_index)) == real)
		sym = e->symbol_index;
	if (sym < 0)
		/* The driver chose another ABI of the name (an older driver). */
		sym = entry_with_real(symbol, real);
	if (sym < 0 && e && e->symbol_index >= 0 && gs_real_fn(e->symbol_index)) {
		/* The driver's pointer is none of its exports (drivers may hand
		 * out internal entry points); the typed table is right about
		 * the ABI, and the wrapper calls the same driver function by
		 * its exported name. */
		sym = e->symbol_index;
	}
	if (sym >= 0) {
		set_pfn(pfn, gs_wrappers[sym]);
		*status = CU_GET_PROC_ADDRESS_SUCCESS;
		gs_trace("cuGetProcAddress(\"%s\", %d, %#llx) -> %s", symbol, version,
			 (unsigned long long)flags, gs_api_symbols[sym]);
		return CUDA_SUCCESS;
	}

	/* No wrapper: a name the headers do not know (legacy ABIs cuda.h no
	 * longer declares have wrappers of their own: the entries' symbol is
	 * NULL but symbol_index names the legacy export). The application gets
	 * the driver's function. */
	gs_stats_unknown(symbol, version, flags);
	gs_debug("cuGetProcAddress(\"%s\", %d, %#llx): no wrapper, returning the driver's "
		 "own function (unknown entry point)", symbol, version, (unsigned long long)flags);
	*pfn = real;
	*status = real_status;
	return CUDA_SUCCESS;
}

/* A call the shim cannot or must not interpret: straight to the driver. */
static CUresult forward_raw(const char *symbol, void **pfn, int version, cuuint64_t flags,
			    CUdriverProcAddressQueryResult *status, bool legacy_api)
{
	CUresult rc;

	if (!gs_inside()) {
		rc = gs_init();
		if (rc != CUDA_SUCCESS)
			return rc;
	}
	pthread_once(&legacy_once, legacy_load);
	gs_inside_begin();
	if (legacy_api && real_legacy)
		rc = real_legacy(symbol, pfn, version, flags);
	else if (gs_real.cuGetProcAddress_v2)
		rc = gs_real.cuGetProcAddress_v2(symbol, pfn, version, flags, status);
	else if (real_legacy)
		rc = real_legacy(symbol, pfn, version, flags);
	else
		rc = gs_missing(GS_SYM_cuGetProcAddress_v2);
	gs_inside_end();
	return rc;
}

CUresult gs_custom_cuGetProcAddress_v2(bool ptds, const char *symbol, void **pfn,
				       int cudaVersion, cuuint64_t flags,
				       CUdriverProcAddressQueryResult *symbolStatus)
{
	CUdriverProcAddressQueryResult status;
	CUresult rc;

	(void)ptds; /* cuda.h has no per-thread variant of cuGetProcAddress */
	/* The shim's own look-ups want the driver's functions; a NULL symbol
	 * or pfn gets the driver's own error. */
	if (gs_inside() || symbol == NULL || pfn == NULL)
		return forward_raw(symbol, pfn, cudaVersion, flags, symbolStatus, false);
	rc = resolve(symbol, pfn, cudaVersion, flags, &status);
	if (symbolStatus)
		*symbolStatus = status;
	return rc;
}

static _Atomic uint64_t legacy_calls;

uint64_t gs_legacy_getproc_calls(void)
{
	return atomic_load_explicit(&legacy_calls, memory_order_relaxed);
}

GS_EXPORT CUresult cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion,
				    cuuint64_t flags)
{
	CUdriverProcAddressQueryResult status;

	if (gs_inside() || symbol == NULL || pfn == NULL)
		return forward_raw(symbol, pfn, cudaVersion, flags, NULL, true);
	atomic_fetch_add_explicit(&legacy_calls, 1, memory_order_relaxed);
	return resolve(symbol, pfn, cudaVersion, flags, &status);
}
