/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The shim as applications meet it: preloaded, found through
 * dlopen("libcuda.so.1") the way cudart finds the driver, and asked for entry
 * points with cuGetProcAddress. Runs against the fake driver ("fake": every
 * expectation is exact) or the simulator ("sim": an ABI the simulator does
 * not implement must be "not found" through the shim too).
 *
 * Oracle for each look-up, asking the real driver directly as well:
 *   - the driver says not found -> the shim says so, with the same status;
 *   - else, with an expected symbol S -> the shim's own export S;
 *   - else (a legacy ABI, a name only the driver knows) -> the driver's
 *     function itself, recorded as an unknown entry point.
 */
#include <cuda.h>
#include <dlfcn.h>
#include <stdbool.h>
#include <string.h>

#include "introspect.h"
#include "shimtest.h"

#define PTDS CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM
#define LEGACY CU_GET_PROC_ADDRESS_LEGACY_STREAM
#define RAW "(raw)"       /* expect the driver's own function */
#define NOT_FOUND "(none)" /* expect no function */
/* "legacy:NAME": a legacy ABI cuda.h no longer declares, which the driver
 * exports as NAME. Expect the shim's legacy export NAME where the driver
 * exports that name; a driver that answers the look-up without exporting
 * it (the fake) gets its own function back, as an unknown entry point. */
#define LEGACY_PREFIX "legacy:"

typedef CUresult get_proc_v2_fn(const char *, void **, int, cuuint64_t,
				CUdriverProcAddressQueryResult *);
typedef CUresult get_proc_v1_fn(const char *, void **, int, cuuint64_t);
typedef CUresult get_export_table_fn(const void **, const CUuuid *);

static bool fake_mode;
static void *shim;   /* what dlopen("libcuda.so.1") gave */
static void *real;   /* the driver the shim loaded */
static get_proc_v2_fn *shim_get_proc, *real_get_proc;

static void *fn_sym(void *handle, const char *name)
{
	return dlsym(handle, name);
}

/* A function pointer from an address (which ISO C cannot cast directly). */
#define LOAD(fp, addr)                                   \
	do {                                             \
		void *addr_ = (addr);                    \
		memcpy(&(fp), &addr_, sizeof(addr_));    \
	} while (0)

struct lookup_case {
	const char *name;
	int version;
	cuuint64_t flags;
	const char *expect;  /* symbol, RAW or NOT_FOUND */
	bool fake_has;       /* the fake driver answers it (fake mode checks) */
};

/* What a case expects once the driver is known: a legacy case resolves to
 * its export's name, or to RAW where the driver does not export it. */
static const char *expected(const struct lookup_case *c)
{
	const char *name;

	if (strncmp(c->expect, LEGACY_PREFIX, strlen(LEGACY_PREFIX)) != 0)
		return c->expect;
	name = c->expect + strlen(LEGACY_PREFIX);
	return fn_sym(real, name) ? name : RAW;
}

static const struct lookup_case cases[] = {
	{ "cuInit", 13000, 0, "cuInit", true },
	{ "cuInit", 13000, PTDS, "cuInit", true },
	{ "cuDriverGetVersion", 13000, 0, "cuDriverGetVersion", true },
	{ "cuMemAlloc", 13000, 0, "cuMemAlloc_v2", true },
	{ "cuMemAlloc", 3020, 0, "cuMemAlloc_v2", true },
	{ "cuMemAlloc", 2000, 0, LEGACY_PREFIX "cuMemAlloc", true },
	{ "cuMemAlloc", 1000, 0, NOT_FOUND, false },
	{ "cuMemcpyAsync", 13000, PTDS, "cuMemcpyAsync_ptsz", true },
	{ "cuMemcpyAsync", 13000, LEGACY, "cuMemcpyAsync", true },
	{ "cuMemcpyAsync", 13000, 0, "cuMemcpyAsync", true },
	{ "cuMemcpyAsync", 4000, PTDS, "cuMemcpyAsync", true },
	{ "cuStreamGetCaptureInfo", 13000, 0, "cuStreamGetCaptureInfo_v3", true },
	{ "cuStreamGetCaptureInfo", 12030, 0, "cuStreamGetCaptureInfo_v3", true },
	{ "cuStreamGetCaptureInfo", 11030, 0, LEGACY_PREFIX "cuStreamGetCaptureInfo_v2", true },
	{ "cuStreamGetCaptureInfo", 10010, PTDS, LEGACY_PREFIX "cuStreamGetCaptureInfo_ptsz",
	  true },
	{ "cuCtxGetDevice", 12000, 0, "cuCtxGetDevice", true },
	/* The fake, like a driver older than its headers, lacks _v2. */
	{ "cuCtxGetDevice", 13000, 0, "cuCtxGetDevice_v2", false },
	{ "cuCtxCreate", 13000, 0, "cuCtxCreate_v4", false },
	{ "cuCtxCreate", 12000, 0, LEGACY_PREFIX "cuCtxCreate_v3", true },
	{ "cuFakeDriverOnly", 13000, 0, RAW, true },
	{ "cuNoSuchFunction", 13000, 0, NOT_FOUND, false },
	/* cudart's first look-up. */
	{ "", 13000, 0, NOT_FOUND, false },
};

/* The shim answers a look-up for itself with itself. */
static void check_self_lookup(void)
{
	void *p = NULL, *legacy = fn_sym(shim, "cuGetProcAddress");
	CUdriverProcAddressQueryResult st;
	CUresult rc;

	rc = shim_get_proc("cuGetProcAddress", &p, 13000, 0, &st);
	CHECK(rc == CUDA_SUCCESS && p == (void *)fn_sym(shim, "cuGetProcAddress_v2"),
	      "cuGetProcAddress@13000 did not return the shim's cuGetProcAddress_v2 (rc %d)",
	      (int)rc);
	CHECK(legacy != NULL, "the shim does not export the legacy cuGetProcAddress");
	rc = shim_get_proc("cuGetProcAddress", &p, 11030, 0, &st);
	CHECK(rc == CUDA_SUCCESS && p == legacy,
	      "cuGetProcAddress@11030 did not return the shim's legacy cuGetProcAddress");
	rc = shim_get_proc("cuGetProcAddress", &p, 13000, PTDS, &st);
	CHECK(rc == CUDA_SUCCESS && p == (void *)fn_sym(shim, "cuGetProcAddress_v2"),
	      "cuGetProcAddress with the per-thread flag");

	/* The legacy ABI resolves through the shim as well. */
	if (legacy) {
		get_proc_v1_fn *v1;

		memcpy(&v1, &legacy, sizeof(legacy));
		p = NULL;
		rc = v1("cuMemAlloc", &p, 13000, 0);
		if (rc == CUDA_SUCCESS)
			CHECK(p == fn_sym(shim, "cuMemAlloc_v2"),
			      "legacy cuGetProcAddress(cuMemAlloc) is not the shim's cuMemAlloc_v2");
		else
			CHECK(!fake_mode, "legacy cuGetProcAddress(cuMemAlloc): %d", (int)rc);
	}
}

static void check_case(const struct lookup_case *c)
{
	CUdriverProcAddressQueryResult sst = (CUdriverProcAddressQueryResult)-1;
	CUdriverProcAddressQueryResult rst = (CUdriverProcAddressQueryResult)-1;
	void *sp = (void *)1, *rp = NULL;
	CUresult src = shim_get_proc(c->name, &sp, c->version, c->flags, &sst);
	CUresult rrc = real_get_proc(c->name, &rp, c->version, c->flags, &rst);
	char what[128];

	snprintf(what, sizeof(what), "\"%s\"@%d flags %llu", c->name, c->version,
		 (unsigned long long)c->flags);
	if (fake_mode)
		CHECK((rrc == CUDA_SUCCESS) == c->fake_has, "%s: the fake driver answered %d", what,
		      (int)rrc);
	if (rrc != CUDA_SUCCESS || !rp) {
		CHECK(src == rrc && sp == NULL && sst == rst,
		      "%s: driver says %d/status %d, shim says %d/status %d/%p", what, (int)rrc,
		      (int)rst, (int)src, (int)sst, sp);
		if (!fake_mode && strcmp(c->expect, NOT_FOUND) != 0)
			printf("note: the driver does not implement %s\n", what);
		return;
	}
	CHECK(strcmp(c->expect, NOT_FOUND) != 0, "%s: the driver has it, expected none", what);
	CHECK(src == CUDA_SUCCESS && sst == CU_GET_PROC_ADDRESS_SUCCESS,
	      "%s: shim says %d/status %d", what, (int)src, (int)sst);
	if (strcmp(expected(c), RAW) == 0) {
		CHECK(sp == rp, "%s: expected the driver's own function %p, got %p", what, rp, sp);
	} else if (strcmp(c->expect, NOT_FOUND) != 0) {
		void *want = fn_sym(shim, expected(c));

		CHECK(want != NULL, "the shim does not export %s", expected(c));
		CHECK(sp == want, "%s: expected the shim's %s (%p), got %p", what, expected(c), want,
		      sp);
	}
}

static bool has_unknown(const struct gs_introspect_unknown *u, size_t n, const char *name,
			int version)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(u[i].name, name) == 0 && u[i].version == version && u[i].count > 0)
			return true;
	return false;
}

static void check_introspection(void)
{
	size_t (*lookups)(struct gs_introspect_lookup *, size_t);
	size_t (*unknowns)(struct gs_introspect_unknown *, size_t);
	uint64_t (*calls)(const char *);
	struct gs_introspect_lookup l[256];
	struct gs_introspect_unknown u[64];
	size_t nl, nu;
	bool found = false;

	LOAD(lookups, fn_sym(shim, "gs_introspect_lookups"));
	LOAD(unknowns, fn_sym(shim, "gs_introspect_unknown_entries"));
	LOAD(calls, fn_sym(shim, "gs_introspect_call_count"));
	REQUIRE(lookups && unknowns && calls, "introspection API missing");
	nl = lookups(l, 256);
	for (size_t i = 0; i < nl && i < 256; i++)
		if (strcmp(l[i].name, "cuMemcpyAsync") == 0 && l[i].version == 13000) {
			found = true;
			CHECK(l[i].count >= 3 && l[i].ptds_count >= 1,
			      "cuMemcpyAsync@13000: count %llu, ptds %llu",
			      (unsigned long long)l[i].count, (unsigned long long)l[i].ptds_count);
		}
	CHECK(found, "no look-up statistics for cuMemcpyAsync@13000");
	CHECK(nl >= 15, "only %zu distinct look-ups recorded", nl);

	nu = unknowns(u, 64);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct lookup_case *c = &cases[i];
		void *rp = NULL;

		if (strcmp(expected(c), RAW) != 0 ||
		    real_get_proc(c->name, &rp, c->version, c->flags, NULL) != CUDA_SUCCESS)
			continue;
		CHECK(has_unknown(u, nu, c->name, c->version),
		      "\"%s\"@%d was handed out raw but is not an unknown entry point", c->name,
		      c->version);
	}
	CHECK(!has_unknown(u, nu, "", 13000), "a failed look-up was recorded as unknown");
	CHECK(calls("cuGetProcAddress_v2") >= sizeof(cases) / sizeof(cases[0]),
	      "cuGetProcAddress_v2 calls not counted");
	CHECK(calls("cuGetProcAddress") >= 1, "legacy cuGetProcAddress calls not counted");
}

static void check_export_tables(void)
{
	static const CUuuid cudart_interface = { {
		(char)0x6B, (char)0xD5, (char)0xFB, (char)0x6C, (char)0x5B, (char)0xF4, (char)0xE7,
		(char)0x4A, (char)0x89, (char)0x87, (char)0xD9, (char)0x39, (char)0x12, (char)0xFD,
		(char)0x9D, (char)0xF9 } };
	static const CUuuid made_up = { { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 } };
	get_export_table_fn *shim_get, *real_get;
	size_t (*tables)(struct gs_introspect_export_table *, size_t);
	struct gs_introspect_export_table t[16];
	const void *st = NULL, *rt = NULL;
	CUresult src, rrc;
	size_t n;
	int seen = 0;

	LOAD(tables, fn_sym(shim, "gs_introspect_export_tables"));
	LOAD(shim_get, fn_sym(shim, "cuGetExportTable"));
	LOAD(real_get, fn_sym(real, "cuGetExportTable"));
	REQUIRE(shim_get && tables, "cuGetExportTable / gs_introspect_export_tables missing");
	if (!real_get) {
		printf("note: the driver has no cuGetExportTable\n");
		return;
	}
	for (int i = 0; i < 2; i++) {
		const CUuuid *id = i ? &made_up : &cudart_interface;

		st = rt = NULL;
		src = shim_get(&st, id);
		rrc = real_get(&rt, id);
		CHECK(src == rrc && st == rt, "export table %d: shim %d/%p, driver %d/%p", i,
		      (int)src, st, (int)rrc, rt);
	}
	n = tables(t, 16);
	for (size_t i = 0; i < n && i < 16; i++) {
		if (memcmp(t[i].uuid, cudart_interface.bytes, 16) == 0) {
			seen |= 1;
			CHECK(t[i].name && strcmp(t[i].name, "cudart interface") == 0,
			      "known table not named");
			CHECK(t[i].count >= 1 && !t[i].hooked, "cudart interface: count/hooked");
		} else if (memcmp(t[i].uuid, made_up.bytes, 16) == 0) {
			seen |= 2;
			CHECK(t[i].name == NULL, "made-up table has a name");
		}
	}
	CHECK(seen == 3, "requested export tables not recorded (%d)", seen);
}

/* A wrapper handed out by cuGetProcAddress works: a real call through it. */
static void check_calls_through(void)
{
	CUresult (*init)(unsigned) = NULL;
	CUresult (*version)(int *) = NULL;
	void *p = NULL;
	int v = 0;

	CHECK(shim_get_proc("cuInit", &p, 13000, 0, NULL) == CUDA_SUCCESS && p, "cuInit look-up");
	LOAD(init, p);
	p = NULL;
	CHECK(shim_get_proc("cuDriverGetVersion", &p, 13000, 0, NULL) == CUDA_SUCCESS && p,
	      "cuDriverGetVersion look-up");
	LOAD(version, p);
	if (init)
		CHECK(init(0) == CUDA_SUCCESS, "cuInit through the looked-up wrapper");
	if (version) {
		CHECK(version(&v) == CUDA_SUCCESS && v >= 12000, "cuDriverGetVersion: %d", v);
	}
}

int main(int argc, char **argv)
{
	const char *real_path = getenv("GPUSWAP_REAL_LIBCUDA");
	Dl_info a, b;

	fake_mode = argc > 1 && strcmp(argv[1], "fake") == 0;
	REQUIRE(real_path && *real_path, "run with GPUSWAP_REAL_LIBCUDA set");
	shim = dlopen("libcuda.so.1", RTLD_NOW);
	REQUIRE(shim, "dlopen(libcuda.so.1): %s", dlerror());
	REQUIRE(fn_sym(shim, "gs_introspect_version"),
		"dlopen(\"libcuda.so.1\") is not the shim: run with LD_PRELOAD=libgpuswap.so");
	LOAD(shim_get_proc, fn_sym(shim, "cuGetProcAddress_v2"));
	REQUIRE(shim_get_proc, "no cuGetProcAddress_v2");
	REQUIRE(dladdr(fn_sym(shim, "gs_introspect_version"), &a) &&
		dladdr(fn_sym(shim, "cuGetProcAddress_v2"), &b) &&
		strcmp(a.dli_fname, b.dli_fname) == 0,
		"cuGetProcAddress_v2 does not resolve to the shim");

	/* Make the shim load the driver, then find the same one. */
	{
		CUresult (*driver_version)(int *);
		int v;

		LOAD(driver_version, fn_sym(shim, "cuDriverGetVersion"));
		REQUIRE(driver_version, "cuDriverGetVersion missing");
		driver_version(&v);
	}
	real = dlopen(real_path, RTLD_NOW | RTLD_NOLOAD);
	REQUIRE(real, "the shim did not load %s", real_path);
	LOAD(real_get_proc, fn_sym(real, "cuGetProcAddress_v2"));
	if (!real_get_proc)
		SKIP("%s has no cuGetProcAddress_v2 yet", real_path);

	check_self_lookup();
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		check_case(&cases[i]);
	check_calls_through();
	check_introspection();
	check_export_tables();
	return shimtest_result(fake_mode ? "preload (fake driver)" : "preload (simulator)");
}
