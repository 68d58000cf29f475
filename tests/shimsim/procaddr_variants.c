/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cuGetProcAddress through the shim returns the right variant for each
 * (name, version, flags), and _ptsz variants end up on per-thread default
 * streams.
 *
 * "table": every name of the generated look-up table (shim/proctable.h),
 * at every ABI version the table knows for it, just below each, at CUDA 12.0,
 * 12.8 and the driver's own version, with each stream flag; and a few names
 * the table does not have. Each answer is compared with the real driver's
 * (the simulator, asked directly): when the driver has no function, neither
 * has the shim (same result, same status); when it has one, the shim hands out
 * its own export of exactly the symbol the driver's function is exported as
 * (named by dladdr), or, for an ABI the shim has no export of, the driver's
 * function itself, counted as an unknown entry point. The driver's answer is
 * checked too, against the table read independently of its look-up code,
 * so the oracle cannot be wrong in the same way as the shim.
 *
 * "ptsz": cuMemcpyAsync and cuLaunchKernel obtained with
 * CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, called with stream 0 from
 * two threads, run on each thread's per-thread default stream: they do not
 * wait for a blocked blocking stream, nor for the other thread's blocked
 * per-thread stream; the same calls through the pointers obtained without
 * the flag go to the legacy default stream and wait for both (CUDA's
 * default-stream rules, which the simulator models).
 */
#include <cuda.h>
#include <dlfcn.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proctable.h"
#include "shimsim.h"

#define PTDS CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM

typedef CUresult get_proc_fn(const char *, void **, int, cuuint64_t,
			     CUdriverProcAddressQueryResult *);

static void *shim, *real;
static get_proc_fn *shim_gpa, *real_gpa;
static int driver_version;

static void open_both(void)
{
	CUresult (*get_version)(int *) = NULL;

	/* The preloaded shim answers to the driver's SONAME. */
	shim = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
	REQUIRE(shim && dlsym(shim, "gs_introspect_version"),
		"libcuda.so.1 is not the shim: run with LD_PRELOAD=libgpuswap.so");
	ss_introspect_load(shim);
	SS_LOAD(get_version, dlsym(shim, "cuDriverGetVersion"));
	REQUIRE(get_version && get_version(&driver_version) == CUDA_SUCCESS,
		"cuDriverGetVersion through the shim");
	/* Now loaded by the shim: the same library, asked directly. */
	REQUIRE(getenv("GPUSWAP_REAL_LIBCUDA"), "GPUSWAP_REAL_LIBCUDA is not set");
	real = dlopen(getenv("GPUSWAP_REAL_LIBCUDA"), RTLD_NOW | RTLD_NOLOAD);
	REQUIRE(real, "the shim has not loaded %s", getenv("GPUSWAP_REAL_LIBCUDA"));
	SS_LOAD(shim_gpa, dlsym(shim, "cuGetProcAddress_v2"));
	SS_LOAD(real_gpa, dlsym(real, "cuGetProcAddress_v2"));
	REQUIRE(shim_gpa && real_gpa, "cuGetProcAddress_v2 missing");
}

/* ---- the table -------------------------------------------------------------------- */

/* The entry the driver is documented to pick, from the table's data alone:
 * among the entries of the requested stream mode, the newest not newer than
 * `version`; a per-thread request falls back to the default entries. */
static const struct gs_proc_entry *expected_entry(const struct gs_proc_entry *e, size_t n,
						  int version, cuuint64_t flags)
{
	for (int mode = (flags & PTDS) ? 1 : 0; mode >= 0; mode--) {
		const struct gs_proc_entry *best = NULL;

		for (size_t i = 0; i < n; i++)
			if (e[i].ptds == mode && e[i].version <= version &&
			    (!best || e[i].version > best->version))
				best = &e[i];
		if (best)
			return best;
	}
	return NULL;
}

struct tally {
	unsigned asked, driver_has, wrapped, raw;
	unsigned names_implemented;
};

/* Where a function pointer lives: its exported name and its library. */
static const char *symbol_at(void *p, const char **lib)
{
	Dl_info info;

	if (!p || !dladdr(p, &info) || info.dli_saddr != p) {
		*lib = "?";
		return NULL;
	}
	*lib = info.dli_fname;
	return info.dli_sname;
}

static bool same_object(void *handle, void *p)
{
	Dl_info a, b;
	void *any = dlsym(handle, "cuInit");

	return any && dladdr(any, &a) && dladdr(p, &b) && a.dli_fbase == b.dli_fbase;
}

static void check_one(const char *name, const struct gs_proc_entry *e, size_t n, int version,
		      cuuint64_t flags, struct tally *t, bool *implemented)
{
	CUdriverProcAddressQueryResult rst = (CUdriverProcAddressQueryResult)-1;
	CUdriverProcAddressQueryResult sst = (CUdriverProcAddressQueryResult)-1;
	void *rp = NULL, *sp = (void *)1;
	CUresult rr = real_gpa(name, &rp, version, flags, &rst);
	CUresult sr = shim_gpa(name, &sp, version, flags, &sst);
	const struct gs_proc_entry *want = expected_entry(e, n, version, flags);
	const char *rlib, *slib, *rsym, *ssym;
	char what[160];

	snprintf(what, sizeof(what), "\"%s\" @%d flags %llu", name, version,
		 (unsigned long long)flags);
	t->asked++;
	if (rr != CUDA_SUCCESS) {
		/* A status the driver left unwritten (an invalid request) is
		 * not compared: the shim may fill it in. */
		if (rst == (CUdriverProcAddressQueryResult)-1)
			sst = rst;
		CHECK(sr == rr && sst == rst && sp == NULL,
		      "%s: the driver says %s / status %d, the shim %s / status %d / %p", what,
		      ss_err(rr), (int)rst, ss_err(sr), (int)sst, sp);
		/* The table has no ABI that old, or the name: the driver must
		 * not have made one up. */
		if (!want)
			CHECK(rr == CUDA_ERROR_NOT_FOUND || version > driver_version,
			      "%s: the driver answered %s for nothing in the table", what,
			      ss_err(rr));
		return;
	}
	t->driver_has++;
	*implemented = true;
	rsym = symbol_at(rp, &rlib);
	REQUIRE(rsym, "%s: the driver's function %p is no symbol of %s", what, rp, rlib);
	/* The oracle itself: the driver picked what the table says. */
	CHECK(want && want->driver_symbol && strcmp(rsym, want->driver_symbol) == 0,
	      "%s: the driver returned %s, the table says %s", what, rsym,
	      want && want->driver_symbol ? want->driver_symbol : "nothing");
	CHECK(sr == CUDA_SUCCESS && sst == CU_GET_PROC_ADDRESS_SUCCESS,
	      "%s: the driver has %s, the shim says %s / status %d", what, rsym, ss_err(sr),
	      (int)sst);
	if (sr != CUDA_SUCCESS)
		return;

	void *own = dlsym(shim, rsym);

	if (own && same_object(shim, own)) {
		/* The shim's own export of exactly that ABI. */
		ssym = symbol_at(sp, &slib);
		CHECK(sp == own, "%s: expected the shim's %s (%p), got %p (%s in %s)", what, rsym,
		      own, sp, ssym ? ssym : "?", slib);
		t->wrapped += sp == own;
	} else {
		/* A legacy ABI the shim exports nothing for: the driver's own
		 * function (recorded as unknown, checked at the end). */
		CHECK(sp == rp, "%s: the shim has no %s; expected the driver's %p, got %p", what,
		      rsym, rp, sp);
		t->raw++;
	}
}

/* Versions worth asking for a name: each ABI's own, one just below each
 * (the older ABI or nothing), and the releases applications are built for. */
static int versions_of(const struct gs_proc_entry *e, size_t n, int *out, int cap)
{
	int fixed[] = { 2000, 12000, 12080, driver_version };
	int k = 0;

	for (size_t i = 0; i < n && k + 2 <= cap; i++) {
		out[k++] = e[i].version;
		out[k++] = e[i].version - 10;
	}
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]) && k < cap; i++)
		out[k++] = fixed[i];
	/* Sort and drop repeats, so each look-up is asked once. */
	for (int i = 1; i < k; i++)
		for (int j = i; j > 0 && out[j - 1] > out[j]; j--) {
			int tmp = out[j];

			out[j] = out[j - 1];
			out[j - 1] = tmp;
		}
	int m = 0;

	for (int i = 0; i < k; i++)
		if (m == 0 || out[m - 1] != out[i])
			out[m++] = out[i];
	return m;
}

static int run_table(void)
{
	static const cuuint64_t flag_sets[] = { CU_GET_PROC_ADDRESS_DEFAULT,
						CU_GET_PROC_ADDRESS_LEGACY_STREAM, PTDS };
	/* Not names of the table: cudart's first look-up, a symbol name that
	 * is not a base name, a name nobody has, different case. */
	static const char *const strangers[] = { "", "cuMemAlloc_v2", "cuNoSuchFunction",
						 "cumemalloc", "cuMemcpyAsync_ptsz" };
	struct tally t = { 0 };
	size_t nunk;

	open_both();
	for (size_t i = 0; i < gs_proc_table_len;) {
		const struct gs_proc_entry *e;
		size_t n = gs_proc_entries(gs_proc_table[i].name, &e);
		int versions[64];
		int nv = versions_of(e, n, versions, 60);
		bool implemented = false;

		REQUIRE(n > 0 && e == &gs_proc_table[i], "table not sorted at %s",
			gs_proc_table[i].name);
		for (int v = 0; v < nv; v++)
			for (size_t f = 0; f < sizeof(flag_sets) / sizeof(flag_sets[0]); f++)
				check_one(e->name, e, n, versions[v], flag_sets[f], &t,
					  &implemented);
		t.names_implemented += implemented;
		i += n;
	}
	for (size_t i = 0; i < sizeof(strangers) / sizeof(strangers[0]); i++) {
		bool implemented = false;

		check_one(strangers[i], NULL, 0, 13000, 0, &t, &implemented);
		CHECK(!implemented, "the driver answers \"%s\"", strangers[i]);
	}
	/* Newer than the driver: invalid, whoever answers. */
	{
		bool implemented = false;

		check_one("cuInit", NULL, 0, driver_version + 1000, 0, &t, &implemented);
	}

	/* Every raw answer is on the list of unknown entry points (each
	 * look-up above was a distinct name, version and flags), and nothing
	 * else is: each entry, asked again, is answered raw. */
	nunk = ss_gs.unknown_entries(NULL, 0);
	struct ss_unknown *unk = calloc(nunk + 1, sizeof(*unk));

	REQUIRE(unk, "out of memory");
	nunk = ss_gs.unknown_entries(unk, nunk);
	CHECK(nunk == t.raw, "%zu unknown entry points recorded, %u raw answers given", nunk,
	      t.raw);
	for (size_t i = 0; i < nunk; i++) {
		void *rp = NULL, *sp = NULL;

		CHECK(real_gpa(unk[i].name, &rp, unk[i].version, unk[i].flags, NULL) ==
			      CUDA_SUCCESS && shim_gpa(unk[i].name, &sp, unk[i].version,
						       unk[i].flags, NULL) == CUDA_SUCCESS &&
			      sp == rp && !same_object(shim, sp),
		      "unknown entry point %s @%d flags %llu was not a raw answer", unk[i].name,
		      unk[i].version, (unsigned long long)unk[i].flags);
	}
	free(unk);
	CHECK(ss_gs.dropped() == 0, "%llu look-ups were not recorded",
	      (unsigned long long)ss_gs.dropped());
	/* The walk was not vacuous: the simulator implements some 230 entry
	 * points, most of them under several names and versions. */
	CHECK(t.names_implemented >= 150 && t.wrapped >= 1000,
	      "only %u names / %u answers had a driver function", t.names_implemented, t.wrapped);
	printf("%u look-ups of %zu table entries: %u with a driver function (%u names), %u of "
	       "them the shim's wrappers, %u raw (legacy ABIs the shim does not export)\n",
	       t.asked, gs_proc_table_len, t.driver_has, t.names_implemented, t.wrapped, t.raw);
	return ss_result("cuGetProcAddress variants through the shim");
}

/* ---- per-thread default streams ------------------------------------------------- */

#define WORDS 1024
#define QUIET_MS 150      /* long enough for queued work to have run, were it free to */
#define DEADLINE_MS 10000 /* work that is free to run has run by then, even under TSan */

typedef CUresult memcpy_async_fn(CUdeviceptr, CUdeviceptr, size_t, CUstream);
typedef CUresult launch_fn(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
			   unsigned, unsigned, CUstream, void **, void **);
typedef CUresult host_func_fn(CUstream, CUhostFn, void *);
typedef CUresult stream_fn(CUstream);

static struct {
	memcpy_async_fn *memcpy_async;
	launch_fn *launch;
	host_func_fn *host_func;
	stream_fn *query, *sync;
} ptsz, legacy;

static CUcontext ctx;
static CUfunction fill;
static CUdeviceptr src;

struct gate {
	sem_t sem;
};

static void CUDA_CB gate_wait(void *arg)
{
	struct gate *g = arg;

	while (sem_wait(&g->sem) != 0)
		;
}

/* Look a name up through the shim and check it is the shim's export of
 * `symbol`. */
static void *resolve(const char *name, cuuint64_t flags, const char *symbol)
{
	void *p = NULL;
	CUresult rc = shim_gpa(name, &p, 13000, flags, NULL);
	const char *lib, *sym;

	REQUIRE(rc == CUDA_SUCCESS && p, "cuGetProcAddress(%s): %s", name, ss_err(rc));
	sym = symbol_at(p, &lib);
	CHECK(sym && !strcmp(sym, symbol) && same_object(shim, p),
	      "cuGetProcAddress(%s, flags %llu) gave %s in %s, expected the shim's %s", name,
	      (unsigned long long)flags, sym ? sym : "?", lib, symbol);
	return p;
}

/* Poll a stream through `query` until its work is done or ms pass. */
static bool drains_within(stream_fn *query, CUstream s, unsigned ms)
{
	uint64_t end = ss_now_ms() + ms;
	CUresult rc;

	do {
		rc = query(s);
		if (rc == CUDA_SUCCESS)
			return true;
		REQUIRE(rc == CUDA_ERROR_NOT_READY, "cuStreamQuery: %s", ss_err(rc));
		ss_sleep_ms(2);
	} while (ss_now_ms() < end);
	return false;
}

/* A copy and a kernel, both on stream 0 through the given entry points. */
static void submit(bool per_thread, CUdeviceptr dst, unsigned value)
{
	CUdeviceptr out = dst + WORDS * sizeof(unsigned);
	unsigned n = WORDS;
	void *params[] = { &out, &value, &n };

	if (per_thread) {
		CU_CHECK(ptsz.memcpy_async(dst, src, WORDS * sizeof(unsigned), 0));
		CU_CHECK(ptsz.launch(fill, 4, 1, 1, 256, 1, 1, 0, 0, params, NULL));
	} else {
		CU_CHECK(legacy.memcpy_async(dst, src, WORDS * sizeof(unsigned), 0));
		CU_CHECK(legacy.launch(fill, 4, 1, 1, 256, 1, 1, 0, 0, params, NULL));
	}
}

static void check_result(CUdeviceptr dst, unsigned value, const char *who)
{
	static unsigned host[2 * WORDS];
	int bad = 0;

	CU_CHECK(cuMemcpyDtoH(host, dst, sizeof(host)));
	for (unsigned i = 0; i < WORDS; i++)
		bad += host[i] != i * 3 + 1 || host[WORDS + i] != value;
	CHECK(bad == 0, "%s: %d words wrong", who, bad);
}

struct ptsz_thread {
	int id;
	CUdeviceptr dst;
	struct gate *own_gate; /* when set: block this thread's per-thread stream first */
	sem_t *blocked, *go;   /* own_gate: tell main it is blocked; wait for main */
	bool drained;
};

static void *ptsz_worker(void *arg)
{
	struct ptsz_thread *t = arg;

	CU_CHECK(cuCtxSetCurrent(ctx));
	if (t->own_gate) {
		/* This thread's per-thread stream stays blocked until main
		 * opens the gate: the other thread's must not care. */
		CU_CHECK(ptsz.host_func(0, gate_wait, t->own_gate));
		sem_post(t->blocked);
		while (sem_wait(t->go) != 0)
			;
		return NULL;
	}
	submit(true, t->dst, 100u + (unsigned)t->id);
	t->drained = drains_within(ptsz.query, 0, DEADLINE_MS);
	if (t->drained)
		CU_CHECK(ptsz.sync(0));
	return NULL;
}

static int run_ptsz(void)
{
	struct gate stream_gate, thread_gate;
	sem_t blocked, go;
	CUmodule mod;
	CUstream blocking;
	CUdeviceptr dst[3];
	unsigned host[WORDS];
	pthread_t th[2];
	struct ptsz_thread t[2];
	char *path;

	open_both();
	SS_LOAD(ptsz.memcpy_async, resolve("cuMemcpyAsync", PTDS, "cuMemcpyAsync_ptsz"));
	SS_LOAD(ptsz.launch, resolve("cuLaunchKernel", PTDS, "cuLaunchKernel_ptsz"));
	SS_LOAD(ptsz.host_func, resolve("cuLaunchHostFunc", PTDS, "cuLaunchHostFunc_ptsz"));
	SS_LOAD(ptsz.query, resolve("cuStreamQuery", PTDS, "cuStreamQuery_ptsz"));
	SS_LOAD(ptsz.sync, resolve("cuStreamSynchronize", PTDS, "cuStreamSynchronize_ptsz"));
	SS_LOAD(legacy.memcpy_async, resolve("cuMemcpyAsync", 0, "cuMemcpyAsync"));
	SS_LOAD(legacy.launch, resolve("cuLaunchKernel", 0, "cuLaunchKernel"));
	SS_LOAD(legacy.query, resolve("cuStreamQuery", 0, "cuStreamQuery"));

	CU_REQUIRE(cuInit(0));
	CU_REQUIRE(cuDevicePrimaryCtxRetain(&ctx, 0));
	CU_REQUIRE(cuCtxSetCurrent(ctx));
	path = ss_kernel_path("gs_kernels.fatbin");
	CU_REQUIRE(cuModuleLoad(&mod, path));
	free(path);
	CU_REQUIRE(cuModuleGetFunction(&fill, mod, "fill_u32"));
	CU_REQUIRE(cuMemAlloc(&src, sizeof(host)));
	for (unsigned i = 0; i < WORDS; i++)
		host[i] = i * 3 + 1;
	CU_REQUIRE(cuMemcpyHtoD(src, host, sizeof(host)));
	for (int i = 0; i < 3; i++) {
		CU_REQUIRE(cuMemAlloc(&dst[i], 2 * sizeof(host)));
		CU_REQUIRE(cuMemsetD8(dst[i], 0, 2 * sizeof(host)));
	}
	uint64_t copies0 = ss_gs.call_count("cuMemcpyAsync_ptsz");
	uint64_t launches0 = ss_gs.call_count("cuLaunchKernel_ptsz");

	/* A blocking stream held up by a host function: the legacy stream
	 * waits for it, per-thread streams do not. */
	REQUIRE(sem_init(&stream_gate.sem, 0, 0) == 0 && sem_init(&thread_gate.sem, 0, 0) == 0 &&
		sem_init(&blocked, 0, 0) == 0 && sem_init(&go, 0, 0) == 0, "sem_init");
	CU_REQUIRE(cuStreamCreate(&blocking, CU_STREAM_DEFAULT));
	CU_REQUIRE(cuLaunchHostFunc(blocking, gate_wait, &stream_gate));

	/* Thread 0 blocks its own per-thread stream and waits; thread 1 then
	 * works on its per-thread stream, which must drain. */
	t[0] = (struct ptsz_thread){ .id = 0, .own_gate = &thread_gate, .blocked = &blocked,
				     .go = &go };
	t[1] = (struct ptsz_thread){ .id = 1, .dst = dst[1] };
	REQUIRE(pthread_create(&th[0], NULL, ptsz_worker, &t[0]) == 0, "pthread_create");
	while (sem_wait(&blocked) != 0)
		;
	REQUIRE(pthread_create(&th[1], NULL, ptsz_worker, &t[1]) == 0, "pthread_create");
	pthread_join(th[1], NULL);
	CHECK(t[1].drained, "work on thread 1's per-thread stream waited for a blocked blocking "
	      "stream or for thread 0's per-thread stream");

	/* The main thread, per-thread pointers: its own per-thread stream. */
	submit(true, dst[0], 200);
	CHECK(drains_within(ptsz.query, 0, DEADLINE_MS),
	      "main thread's per-thread stream waited for the blocked streams");

	/* The same calls through the default-flag pointers: the legacy
	 * stream, which waits for every blocking stream (both blocked). */
	submit(false, dst[2], 300);
	CHECK(!drains_within(legacy.query, 0, QUIET_MS),
	      "work on the legacy stream did not wait for the blocked streams");
	sem_post(&stream_gate.sem);
	CHECK(!drains_within(legacy.query, 0, QUIET_MS),
	      "the legacy stream did not wait for thread 0's per-thread stream");
	sem_post(&thread_gate.sem);
	sem_post(&go);
	pthread_join(th[0], NULL);
	CHECK(drains_within(legacy.query, 0, DEADLINE_MS), "the legacy stream never drained");
	CU_CHECK(cuCtxSynchronize());
	check_result(dst[0], 200, "main, per-thread");
	check_result(dst[1], 101, "thread 1, per-thread");
	check_result(dst[2], 300, "main, legacy");

	/* The calls went through the shim's _ptsz wrappers. */
	CHECK(ss_gs.call_count("cuMemcpyAsync_ptsz") - copies0 == 2 &&
	      ss_gs.call_count("cuLaunchKernel_ptsz") - launches0 == 2,
	      "_ptsz wrapper calls: %llu copies, %llu launches, expected 2 each",
	      (unsigned long long)(ss_gs.call_count("cuMemcpyAsync_ptsz") - copies0),
	      (unsigned long long)(ss_gs.call_count("cuLaunchKernel_ptsz") - launches0));

	CU_CHECK(cuStreamDestroy(blocking));
	for (int i = 0; i < 3; i++)
		CU_CHECK(cuMemFree(dst[i]));
	CU_CHECK(cuMemFree(src));
	CU_CHECK(cuModuleUnload(mod));
	CU_CHECK(cuDevicePrimaryCtxRelease(0));
	return ss_result("per-thread default streams through cuGetProcAddress");
}

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "table"))
		return run_table();
	if (argc == 2 && !strcmp(argv[1], "ptsz"))
		return run_ptsz();
	fprintf(stderr, "usage: %s table|ptsz\n", argv[0]);
	return 2;
}
