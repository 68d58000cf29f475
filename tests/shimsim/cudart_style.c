/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A cudart-style program is fully tracked.
 *
 * Like libcudart (and cuBLAS, PyTorch, ...), this program does not link
 * against libcuda: it dlopen()s "libcuda.so.1", takes cuGetProcAddress_v2
 * with dlsym, and gets every other entry point from it, the way CUDA 13's
 * cudart was seen doing it (DESIGN.md §3): a first look-up with an empty
 * name, cuGetExportTable for the three tables cudart asks for (which the
 * simulator answers with CUDA_ERROR_NOT_SUPPORTED), cuModuleGetLoadingMode
 * first, then per-thread-default-stream variants next to the default ones.
 *
 * It then does ordinary work (primary context, memory, a stream, an event,
 * a module from memory, a kernel launch, a global) and checks through the
 * shim's introspection that:
 *   - every pointer it was handed is the shim's export of the expected ABI;
 *   - every call it made was counted by the shim under exactly that symbol,
 *     and nothing else was (so no call bypassed the shim);
 *   - there are no unknown entry points, and the look-ups and export-table
 *     requests are recorded as made;
 *   - every object is recorded by the tracker, and is gone again after the
 *     clean-up.
 */
#include <cuda.h>
#include <cudaTypedefs.h>
#include <dlfcn.h>
#include <string.h>

#include "shimsim.h"

#define PTDS CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM
#define VERSION 13000
#define WORDS 4096

/* The entry points used, as cudart keeps them: typed pointers. */
static struct {
	PFN_cuInit_v2000 init;
	PFN_cuDriverGetVersion_v2020 driver_version;
	PFN_cuModuleGetLoadingMode_v11070 loading_mode;
	PFN_cuGetExportTable_v3000 export_table;
	PFN_cuDeviceGetCount_v2000 device_count;
	PFN_cuDeviceGet_v2000 device_get;
	PFN_cuDeviceGetAttribute_v2000 device_attr;
	PFN_cuDevicePrimaryCtxRetain_v7000 primary_retain;
	PFN_cuDevicePrimaryCtxRelease_v11000 primary_release;
	PFN_cuCtxSetCurrent_v4000 ctx_set;
	PFN_cuCtxGetCurrent_v4000 ctx_get;
	PFN_cuMemAlloc_v3020 mem_alloc;
	PFN_cuMemFree_v3020 mem_free;
	PFN_cuMemcpyHtoD_v3020 htod;
	PFN_cuMemcpyDtoH_v3020 dtoh;
	PFN_cuMemcpyDtoH_v7000_ptds dtoh_ptds;
	PFN_cuStreamCreate_v2000 stream_create;
	PFN_cuStreamDestroy_v4000 stream_destroy;
	PFN_cuStreamSynchronize_v7000_ptsz stream_sync_ptsz;
	PFN_cuEventCreate_v2000 event_create;
	PFN_cuEventDestroy_v4000 event_destroy;
	PFN_cuEventRecord_v7000_ptsz event_record_ptsz;
	PFN_cuEventSynchronize_v2000 event_sync;
	PFN_cuModuleLoadData_v2000 module_load_data;
	PFN_cuModuleUnload_v2000 module_unload;
	PFN_cuModuleGetFunction_v2000 module_get_function;
	PFN_cuModuleGetGlobal_v3020 module_get_global;
	PFN_cuFuncGetAttribute_v2020 func_attr;
	PFN_cuLaunchKernel_v4000 launch;
	PFN_cuLaunchKernel_v7000_ptsz launch_ptsz;
	PFN_cuMemsetD32Async_v7000_ptsz memset_ptsz;
} drv;

/* What was looked up and called, to compare with the shim's counts. */
struct entry {
	const char *name;
	cuuint64_t flags;
	const char *symbol; /* the export the shim must hand out */
	void *fn;
	uint64_t calls;
	void **slot;        /* where drv keeps it, NULL for look-up only */
};

#define E(field, name, flags, symbol) { name, flags, symbol, NULL, 0, (void **)&drv.field }
#define LOOKUP_ONLY(name, flags, symbol) { name, flags, symbol, NULL, 0, NULL }
static struct entry entries[] = {
	E(loading_mode, "cuModuleGetLoadingMode", 0, "cuModuleGetLoadingMode"),
	E(export_table, "cuGetExportTable", 0, "cuGetExportTable"),
	E(init, "cuInit", 0, "cuInit"),
	E(driver_version, "cuDriverGetVersion", 0, "cuDriverGetVersion"),
	E(device_count, "cuDeviceGetCount", 0, "cuDeviceGetCount"),
	E(device_get, "cuDeviceGet", 0, "cuDeviceGet"),
	E(device_attr, "cuDeviceGetAttribute", 0, "cuDeviceGetAttribute"),
	E(primary_retain, "cuDevicePrimaryCtxRetain", 0, "cuDevicePrimaryCtxRetain"),
	E(primary_release, "cuDevicePrimaryCtxRelease", 0, "cuDevicePrimaryCtxRelease_v2"),
	E(ctx_set, "cuCtxSetCurrent", 0, "cuCtxSetCurrent"),
	E(ctx_get, "cuCtxGetCurrent", 0, "cuCtxGetCurrent"),
	E(mem_alloc, "cuMemAlloc", 0, "cuMemAlloc_v2"),
	E(mem_free, "cuMemFree", 0, "cuMemFree_v2"),
	E(htod, "cuMemcpyHtoD", 0, "cuMemcpyHtoD_v2"),
	E(dtoh, "cuMemcpyDtoH", 0, "cuMemcpyDtoH_v2"),
	E(dtoh_ptds, "cuMemcpyDtoH", PTDS, "cuMemcpyDtoH_v2_ptds"),
	E(stream_create, "cuStreamCreate", 0, "cuStreamCreate"),
	E(stream_destroy, "cuStreamDestroy", 0, "cuStreamDestroy_v2"),
	E(stream_sync_ptsz, "cuStreamSynchronize", PTDS, "cuStreamSynchronize_ptsz"),
	E(event_create, "cuEventCreate", 0, "cuEventCreate"),
	E(event_destroy, "cuEventDestroy", 0, "cuEventDestroy_v2"),
	E(event_record_ptsz, "cuEventRecord", PTDS, "cuEventRecord_ptsz"),
	E(event_sync, "cuEventSynchronize", 0, "cuEventSynchronize"),
	E(module_load_data, "cuModuleLoadData", 0, "cuModuleLoadData"),
	E(module_unload, "cuModuleUnload", 0, "cuModuleUnload"),
	E(module_get_function, "cuModuleGetFunction", 0, "cuModuleGetFunction"),
	E(module_get_global, "cuModuleGetGlobal", 0, "cuModuleGetGlobal_v2"),
	E(func_attr, "cuFuncGetAttribute", 0, "cuFuncGetAttribute"),
	E(launch, "cuLaunchKernel", 0, "cuLaunchKernel"),
	E(launch_ptsz, "cuLaunchKernel", PTDS, "cuLaunchKernel_ptsz"),
	E(memset_ptsz, "cuMemsetD32Async", PTDS, "cuMemsetD32Async_ptsz"),
	/* Looked up and kept, never called: cudart resolves hundreds. */
	LOOKUP_ONLY("cuMemcpyAsync", 0, "cuMemcpyAsync"),
	LOOKUP_ONLY("cuMemcpyAsync", PTDS, "cuMemcpyAsync_ptsz"),
	LOOKUP_ONLY("cuStreamWaitEvent", PTDS, "cuStreamWaitEvent_ptsz"),
	LOOKUP_ONLY("cuMemGetInfo", 0, "cuMemGetInfo_v2"),
	LOOKUP_ONLY("cuCtxGetDevice", 0, "cuCtxGetDevice_v2"),
	LOOKUP_ONLY("cuMemAllocHost", 0, "cuMemAllocHost_v2"),
	LOOKUP_ONLY("cuLibraryLoadData", 0, "cuLibraryLoadData"),
	LOOKUP_ONLY("cuGetProcAddress", 0, "cuGetProcAddress_v2"),
};
#define NENTRIES (sizeof(entries) / sizeof(entries[0]))

/* Count a call of entry `field` and make it. */
#define CALL(field, ...) (count_call((void **)&drv.field), drv.field(__VA_ARGS__))

static void count_call(void **slot)
{
	for (size_t i = 0; i < NENTRIES; i++)
		if (entries[i].slot == slot) {
			entries[i].calls++;
			return;
		}
	REQUIRE(0, "call of an entry point that was not looked up");
}

#define OK(call)                                                                       \
	do {                                                                           \
		CUresult ok_rc_ = (call);                                              \
		REQUIRE(ok_rc_ == CUDA_SUCCESS, "%s: %s", #call, ss_err(ok_rc_));      \
	} while (0)

static void *shim;
static PFN_cuGetProcAddress_v12000 get_proc;
static unsigned lookups_made, ptds_lookups_made, empty_lookups;

static void resolve_all(void)
{
	for (size_t i = 0; i < NENTRIES; i++) {
		struct entry *e = &entries[i];
		CUdriverProcAddressQueryResult st = (CUdriverProcAddressQueryResult)-1;
		CUresult rc = get_proc(e->name, &e->fn, VERSION, e->flags, &st);
		void *want = dlsym(shim, e->symbol);

		lookups_made++;
		ptds_lookups_made += (e->flags & PTDS) != 0;
		REQUIRE(rc == CUDA_SUCCESS && st == CU_GET_PROC_ADDRESS_SUCCESS,
			"cuGetProcAddress(%s): %s, status %d", e->name, ss_err(rc), (int)st);
		CHECK(want && e->fn == want, "cuGetProcAddress(%s, flags %llu) = %p, expected the "
		      "shim's %s (%p)", e->name, (unsigned long long)e->flags, e->fn, e->symbol,
		      want);
		if (e->slot)
			memcpy(e->slot, &e->fn, sizeof(e->fn));
	}
}

/* The three tables CUDA 13's cudart asks for at start-up (DESIGN.md §3). */
static const CUuuid tables[] = {
	{ { (char)0xF8, (char)0xCF, (char)0xF9, (char)0x51, 0x21, 0x46, (char)0x8B, 0x4E,
	    (char)0xB9, (char)0xE2, (char)0xFB, 0x46, (char)0x9E, 0x7C, 0x0D, (char)0xD9 } },
	{ { 0x6B, (char)0xD5, (char)0xFB, 0x6C, 0x5B, (char)0xF4, (char)0xE7, 0x4A, (char)0x89,
	    (char)0x87, (char)0xD9, 0x39, 0x12, (char)0xFD, (char)0x9D, (char)0xF9 } },
	{ { (char)0xA0, (char)0x94, 0x79, (char)0x8C, 0x2E, 0x74, 0x2E, 0x74, (char)0x93,
	    (char)0xF2, 0x08, 0x00, 0x20, 0x0C, 0x0A, 0x66 } },
};
#define NTABLES (sizeof(tables) / sizeof(tables[0]))

static void start_up(void)
{
	CUmoduleLoadingMode mode;
	void *p = (void *)1;
	CUresult rc;

	/* cudart's first look-up: an empty name. */
	rc = get_proc("", &p, VERSION, 0, NULL);
	lookups_made++;
	empty_lookups++;
	CHECK(rc == CUDA_ERROR_NOT_FOUND && p == NULL, "cuGetProcAddress(\"\"): %s, %p",
	      ss_err(rc), p);
	resolve_all();
	for (size_t i = 0; i < NTABLES; i++) {
		const void *table = (const void *)1;

		rc = CALL(export_table, &table, &tables[i]);
		CHECK(rc == CUDA_ERROR_NOT_SUPPORTED && table == NULL,
		      "cuGetExportTable(table %zu): %s, %p (the simulator has none)", i, ss_err(rc),
		      table);
	}
	rc = CALL(loading_mode, &mode);
	CHECK(rc == CUDA_SUCCESS || rc == CUDA_ERROR_NOT_SUPPORTED,
	      "cuModuleGetLoadingMode: %s", ss_err(rc));
}

static void expect_records(const char *when, const uint64_t want[SS_NKINDS])
{
	struct ss_counts got;

	ss_counts_get(&got);
	for (int k = 0; k < SS_NKINDS; k++) {
		/* The arena's window and chunks are the shim's own VMM records. */
		if (k == SS_RESERVATION || k == SS_PHYS || k == SS_MAPPING)
			continue;
		CHECK(got.count[k] == want[k], "%s: %llu %s records, expected %llu", when,
		      (unsigned long long)got.count[k], ss_kind_names[k],
		      (unsigned long long)want[k]);
	}
}

static void check_calls(void)
{
	size_t n = ss_gs.calls(NULL, 0);
	struct ss_call *calls = calloc(n + 1, sizeof(*calls));
	uint64_t get_proc_calls = 0;

	REQUIRE(calls, "out of memory");
	n = ss_gs.calls(calls, n);
	/* Every symbol the shim counted is one this program called, as often. */
	for (size_t i = 0; i < n; i++) {
		uint64_t want = 0;

		if (!strcmp(calls[i].symbol, "cuGetProcAddress_v2")) {
			get_proc_calls = calls[i].count;
			continue;
		}
		for (size_t j = 0; j < NENTRIES; j++)
			if (!strcmp(entries[j].symbol, calls[i].symbol))
				want += entries[j].calls;
		CHECK(calls[i].count == want, "the shim counted %llu calls of %s, the program "
		      "made %llu", (unsigned long long)calls[i].count, calls[i].symbol,
		      (unsigned long long)want);
	}
	/* And every call this program made reached the shim's wrapper. */
	for (size_t j = 0; j < NENTRIES; j++)
		CHECK(ss_gs.call_count(entries[j].symbol) >= entries[j].calls,
		      "%s: %llu calls made, the shim counted %llu", entries[j].symbol,
		      (unsigned long long)entries[j].calls,
		      (unsigned long long)ss_gs.call_count(entries[j].symbol));
	CHECK(get_proc_calls == lookups_made, "cuGetProcAddress_v2: %llu calls counted, %u made",
	      (unsigned long long)get_proc_calls, lookups_made);
	free(calls);
}

static void check_lookups_and_tables(void)
{
	struct ss_lookup lk[128];
	struct ss_export_table tb[16];
	size_t nl = ss_gs.lookups(lk, 128), nt = ss_gs.export_tables(tb, 16);
	uint64_t total = 0, ptds = 0, empty = 0;

	CHECK(ss_gs.unknown_entries(NULL, 0) == 0, "%zu unknown entry points",
	      ss_gs.unknown_entries(NULL, 0));
	REQUIRE(nl <= 128 && nt <= 16, "more look-ups / tables than made");
	for (size_t i = 0; i < nl; i++) {
		CHECK(lk[i].version == VERSION, "look-up of %s at %d", lk[i].name, lk[i].version);
		total += lk[i].count;
		ptds += lk[i].ptds_count;
		if (!strcmp(lk[i].name, ""))
			empty += lk[i].count;
	}
	CHECK(total == lookups_made && ptds == ptds_lookups_made && empty == empty_lookups,
	      "look-ups recorded: %llu (%llu per-thread, %llu empty), made %u (%u, %u)",
	      (unsigned long long)total, (unsigned long long)ptds, (unsigned long long)empty,
	      lookups_made, ptds_lookups_made, empty_lookups);
	total = 0;
	/* Matched by UUID, not by position: the shim lists the tables it knows
	 * by name before the others, whatever order they were requested in. */
	for (size_t i = 0; i < nt; i++) {
		const unsigned char *u = tb[i].uuid;
		uint64_t want = 0;

		for (size_t j = 0; j < NTABLES; j++)
			if (memcmp(u, tables[j].bytes, 16) == 0)
				want = 1;
		CHECK(tb[i].count == want, "export table %02x%02x%02x%02x-... (%s): %llu requests "
		      "recorded, %llu made", u[0], u[1], u[2], u[3],
		      tb[i].name ? tb[i].name : "unnamed", (unsigned long long)tb[i].count,
		      (unsigned long long)want);
		total += want;
	}
	CHECK(total == NTABLES, "%llu of the %zu export tables requested are recorded",
	      (unsigned long long)total, NTABLES);
}

int main(void)
{
	uint64_t want[SS_NKINDS] = { 0 };
	CUcontext ctx = NULL, current = NULL;
	CUdevice dev;
	CUstream s;
	CUevent ev;
	CUmodule mod;
	CUfunction fill;
	CUdeviceptr a, b, global;
	size_t global_size = 0, image_size;
	unsigned host[WORDS];
	int ndev = 0, version = 0, cc = 0, nregs = -1;
	char *path;
	void *image;

	/* Not linked against libcuda: the preloaded shim answers the dlopen. */
	shim = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
	REQUIRE(shim, "dlopen(libcuda.so.1): %s", dlerror());
	REQUIRE(dlsym(shim, "gs_introspect_version"),
		"libcuda.so.1 is not the shim: run with LD_PRELOAD=libgpuswap.so");
	ss_introspect_load(shim);
	SS_LOAD(get_proc, dlsym(shim, "cuGetProcAddress_v2"));
	REQUIRE(get_proc, "no cuGetProcAddress_v2");

	start_up();
	OK(CALL(init, 0));
	OK(CALL(driver_version, &version));
	OK(CALL(device_count, &ndev));
	REQUIRE(ndev > 0, "no device");
	OK(CALL(device_get, &dev, 0));
	OK(CALL(device_attr, &cc, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev));
	OK(CALL(primary_retain, &ctx, dev));
	OK(CALL(ctx_set, ctx));
	OK(CALL(ctx_get, &current));
	CHECK(current == ctx, "current context %p, retained %p", (void *)current, (void *)ctx);
	want[SS_CTX] = 1;

	OK(CALL(mem_alloc, &a, sizeof(host)));
	OK(CALL(mem_alloc, &b, sizeof(host) * 2));
	want[SS_ALLOC] = 2;
	for (unsigned i = 0; i < WORDS; i++)
		host[i] = i ^ 0x5a5a;
	OK(CALL(htod, a, host, sizeof(host)));
	OK(CALL(stream_create, &s, CU_STREAM_NON_BLOCKING));
	want[SS_STREAM] = 1;
	OK(CALL(event_create, &ev, CU_EVENT_DISABLE_TIMING));
	want[SS_EVENT] = 1;

	/* A module from memory, as cudart registers fatbins. */
	path = ss_kernel_path("gs_kernels.fatbin");
	image = ss_read_file(path, &image_size);
	free(path);
	OK(CALL(module_load_data, &mod, image));
	want[SS_MODULE] = 1;
	OK(CALL(module_get_function, &fill, mod, "fill_u32"));
	want[SS_FUNCTION] = 1;
	OK(CALL(func_attr, &nregs, CU_FUNC_ATTRIBUTE_NUM_REGS, fill));
	OK(CALL(module_get_global, &global, &global_size, mod, "gs_magic"));
	want[SS_GLOBAL] = 1;
	expect_records("after set-up", want);
	{
		uint64_t bytes = 0;

		CHECK(ss_gs.tracker_count("module", NULL, &bytes) == 0 && bytes == image_size,
		      "module image copy of %llu bytes, the fatbin has %zu",
		      (unsigned long long)bytes, image_size);
		CHECK(ss_gs.tracker_count("alloc", NULL, &bytes) == 0 && bytes == 3 * sizeof(host),
		      "allocation bytes %llu, allocated %zu", (unsigned long long)bytes,
		      3 * sizeof(host));
	}

	/* Work on the stream and on the per-thread default stream. */
	{
		CUdeviceptr out = b + sizeof(host);
		unsigned value = 0xc0ffee, n = WORDS;
		void *params[] = { &out, &value, &n };
		unsigned check[2 * WORDS];
		int bad = 0;

		OK(CALL(memset_ptsz, b, 7, WORDS, 0));
		OK(CALL(stream_sync_ptsz, 0));
		OK(CALL(launch, fill, WORDS / 256, 1, 1, 256, 1, 1, 0, s, params, NULL));
		OK(CALL(event_record_ptsz, ev, s));
		OK(CALL(event_sync, ev));
		out = b;
		value = 0xbeef;
		OK(CALL(launch_ptsz, fill, 1, 1, 1, 64, 1, 1, 0, 0, params, NULL));
		OK(CALL(stream_sync_ptsz, 0));
		OK(CALL(dtoh_ptds, check, b, sizeof(check)));
		OK(CALL(dtoh, host, a, sizeof(host)));
		for (unsigned i = 0; i < WORDS; i++)
			bad += check[i] != 0xbeef || check[WORDS + i] != 0xc0ffee ||
			       host[i] != (i ^ 0x5a5a);
		CHECK(bad == 0, "%d words wrong after the kernels", bad);
	}

	/* Clean-up: every record goes with its object. */
	OK(CALL(module_unload, mod));
	OK(CALL(event_destroy, ev));
	OK(CALL(stream_destroy, s));
	OK(CALL(mem_free, a));
	OK(CALL(mem_free, b));
	memset(want, 0, sizeof(want));
	want[SS_CTX] = 1;
	expect_records("after clean-up", want);
	OK(CALL(primary_release, dev));
	want[SS_CTX] = 0;
	expect_records("after the primary context's release", want);

	check_calls();
	check_lookups_and_tables();
	free(image);
	return ss_result("cudart-style program through cuGetProcAddress");
}
