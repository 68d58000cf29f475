/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A program built against an older cuda.h runs under the shim.
 *
 * cuda.h maps each name to the newest ABI of the release it comes from:
 * CUDA 12's maps cuCtxCreate to cuCtxCreate_v2, and before 12.8
 * cuEventElapsedTime was the symbol itself. Such a program is linked against
 * those symbols, and the driver keeps exporting them. The shim takes the
 * driver's SONAME, so the dynamic linker binds the program to the shim: a
 * legacy ABI the shim does not export is an unresolved symbol there, and the
 * program dies at its first call ("symbol lookup error").
 *
 * Checked: every legacy ABI of the generated table (an entry cuda.h no
 * longer declares) that the real driver exports is exported by the shim as
 * well; and those the simulator implements, called the way the old program
 * calls them (resolved like the dynamic linker does, in the global scope),
 * work and are tracked like their current ABI.
 */
#include <cuda.h>
#include <dlfcn.h>
#include <string.h>

#include "proctable.h"
#include "shimsim.h"

static void *shim, *real;

static bool in_shim(void *p)
{
	Dl_info a, b;

	return p && dladdr(dlsym(shim, "gs_introspect_version"), &a) && dladdr(p, &b) &&
	       a.dli_fbase == b.dli_fbase;
}

/* What a program linked against `symbol` calls. */
static void *bound(const char *symbol)
{
	return dlsym(RTLD_DEFAULT, symbol);
}

static uint64_t ctx_records(void)
{
	uint64_t n = 0;

	REQUIRE(ss_gs.tracker_count("ctx", &n, NULL) == 0, "tracker count");
	return n;
}

/* The old ABIs the simulator implements, through the shim. */
static void call_them(CUcontext primary)
{
	CUresult (*ctx_create_v2)(CUcontext *, unsigned, CUdevice) = NULL;
	CUresult (*ctx_create_v3)(CUcontext *, CUexecAffinityParam *, int, unsigned,
				  CUdevice) = NULL;
	CUresult (*elapsed_v1)(float *, CUevent, CUevent) = NULL;
	CUresult (*uuid_v1)(CUuuid *, CUdevice) = NULL;
	CUcontext c = NULL;
	uint64_t before;

	SS_LOAD(ctx_create_v2, bound("cuCtxCreate_v2"));
	SS_LOAD(ctx_create_v3, bound("cuCtxCreate_v3"));
	SS_LOAD(elapsed_v1, bound("cuEventElapsedTime"));
	SS_LOAD(uuid_v1, bound("cuDeviceGetUuid"));
	/* What the dynamic linker cannot bind kills such a program at the
	 * call; here it is skipped, and reported. */
	static const char *const called[] = { "cuCtxCreate_v2", "cuCtxCreate_v3",
					      "cuEventElapsedTime", "cuDeviceGetUuid" };
	for (size_t i = 0; i < sizeof(called) / sizeof(called[0]); i++)
		CHECK(!dlsym(real, called[i]) || bound(called[i]),
		      "%s: symbol lookup error in a program built against an older cuda.h",
		      called[i]);

	if (ctx_create_v2) {
		before = ctx_records();
		CU_CHECK(ctx_create_v2(&c, 0, 0));
		CHECK(ctx_records() == before + 1, "a context made with cuCtxCreate_v2 is not "
		      "tracked");
		CU_CHECK(cuCtxDestroy(c));
	}
	if (ctx_create_v3) {
		before = ctx_records();
		CU_CHECK(ctx_create_v3(&c, NULL, 0, 0, 0));
		CHECK(ctx_records() == before + 1, "a context made with cuCtxCreate_v3 is not "
		      "tracked");
		CU_CHECK(cuCtxDestroy(c));
	}
	CU_CHECK(cuCtxSetCurrent(primary));
	if (elapsed_v1) {
		CUevent a, b;
		float ms = -1;

		CU_CHECK(cuEventCreate(&a, 0));
		CU_CHECK(cuEventCreate(&b, 0));
		CU_CHECK(cuEventRecord(a, 0));
		CU_CHECK(cuEventRecord(b, 0));
		CU_CHECK(cuEventSynchronize(b));
		CU_CHECK(elapsed_v1(&ms, a, b));
		CHECK(ms >= 0, "cuEventElapsedTime: %f ms", (double)ms);
		CU_CHECK(cuEventDestroy(a));
		CU_CHECK(cuEventDestroy(b));
	}
	if (uuid_v1) {
		CUuuid u1, u2;

		CU_CHECK(uuid_v1(&u1, 0));
		CU_CHECK(cuDeviceGetUuid(&u2, 0));
		CHECK(memcmp(&u1, &u2, sizeof(u1)) == 0, "the two cuDeviceGetUuid ABIs differ");
	}
}

int main(void)
{
	const char *real_path = getenv("GPUSWAP_REAL_LIBCUDA");
	unsigned legacy = 0, driver_has = 0, missing = 0;
	CUcontext primary;

	shim = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
	REQUIRE(shim && dlsym(shim, "gs_introspect_version"),
		"libcuda.so.1 is not the shim: run with LD_PRELOAD=libgpuswap.so");
	ss_introspect_load(shim);
	CU_REQUIRE(cuInit(0));
	REQUIRE(real_path, "GPUSWAP_REAL_LIBCUDA is not set");
	real = dlopen(real_path, RTLD_NOW | RTLD_NOLOAD);
	REQUIRE(real, "the shim has not loaded %s", real_path);

	for (size_t i = 0; i < gs_proc_table_len; i++) {
		const struct gs_proc_entry *e = &gs_proc_table[i];

		if (e->symbol || !e->driver_symbol)
			continue;
		legacy++;
		if (!dlsym(real, e->driver_symbol))
			continue;
		driver_has++;
		if (!in_shim(bound(e->driver_symbol))) {
			CHECK(0, "the driver exports %s (the %s ABI of CUDA %d.%d), the shim does "
			      "not: a program built against a cuda.h of that ABI cannot run under "
			      "the shim", e->driver_symbol, e->name, e->version / 1000,
			      e->version % 1000 / 10);
			missing++;
		}
	}
	CHECK(driver_has > 0, "the simulator exports none of the %u legacy ABIs: nothing tested",
	      legacy);
	printf("%u legacy ABIs in the table, %u exported by the driver, %u of them not by the "
	       "shim\n", legacy, driver_has, missing);

	CU_REQUIRE(cuDevicePrimaryCtxRetain(&primary, 0));
	CU_REQUIRE(cuCtxSetCurrent(primary));
	call_them(primary);
	CU_CHECK(cuDevicePrimaryCtxRelease(0));
	return ss_result("legacy driver ABIs under the shim");
}
