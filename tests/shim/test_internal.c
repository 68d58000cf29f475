/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The shim's internals, linked straight into this program (which therefore
 * defines every cu* export itself) and run against the fake driver:
 *   - generated wrappers: call counting, the "inside the shim" bypass, a
 *     symbol the driver lacks, the migrated branch;
 *   - the gate around real wrappers: a close that times out names the call
 *     in flight, callers sleep at a closed gate, nogate symbols do not;
 *   - cuGetExportTable's hook registry.
 */
#include <cuda.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "exporttable.h"
#include "introspect.h"
#include "shim.h"
#include "shimtest.h"

static void sleep_ms(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

static void (*fake_block)(int);
static unsigned (*fake_blocked)(void);

static void load_fake_controls(void)
{
	void *fake = dlopen(getenv("GPUSWAP_REAL_LIBCUDA"), RTLD_NOW | RTLD_NOLOAD);
	void *a, *b;

	REQUIRE(fake, "the fake driver is not loaded");
	a = dlsym(fake, "fakecuda_block");
	b = dlsym(fake, "fakecuda_blocked");
	REQUIRE(a && b, "not the fake driver");
	memcpy(&fake_block, &a, sizeof(a));
	memcpy(&fake_blocked, &b, sizeof(b));
}

static void test_wrappers(void)
{
	uint64_t before;
	int n = 0;
	CUresult rc;

	REQUIRE(cuInit(0) == CUDA_SUCCESS, "cuInit");
	CHECK(gs_real.cuInit != NULL, "real table not loaded");

	before = gs_introspect_call_count("cuDeviceGetCount");
	CHECK(cuDeviceGetCount(&n) == CUDA_SUCCESS && n == 1, "cuDeviceGetCount");
	CHECK(gs_introspect_call_count("cuDeviceGetCount") == before + 1, "call not counted");

	/* The shim's own calls bypass counting (and the gate). */
	gs_inside_begin();
	CHECK(cuDeviceGetCount(&n) == CUDA_SUCCESS, "inside call");
	gs_inside_end();
	CHECK(gs_introspect_call_count("cuDeviceGetCount") == before + 1,
	      "a call from inside the shim was counted");

	/* The fake has no cuMemcpyHtoD_v2: an error, not a call through NULL. */
	rc = cuMemcpyHtoD(0, &n, sizeof(n));
	CHECK(rc == CUDA_ERROR_NOT_FOUND, "missing symbol: %d", (int)rc);
	rc = cuMemcpyHtoD(0, &n, sizeof(n));
	CHECK(rc == CUDA_ERROR_NOT_FOUND, "missing symbol, twice: %d", (int)rc);

	/* The migrated branch is taken and the call still goes through. */
	gs_set_migrated(true);
	CHECK(cuDeviceGetCount(&n) == CUDA_SUCCESS, "call while migrated");
	gs_set_migrated(false);
}

static void *sync_thread(void *arg)
{
	_Atomic int *done = arg;

	cuStreamSynchronize(NULL);
	atomic_store(done, 1);
	return NULL;
}

struct nogate {
	_Atomic int done;
};

static void *nogate_thread(void *arg)
{
	struct nogate *ng = arg;
	const char *s = NULL;

	cuGetErrorString(CUDA_SUCCESS, &s);
	atomic_store(&ng->done, 1);
	return NULL;
}

static void test_gate_with_wrappers(void)
{
	struct gs_gate_report rep;
	_Atomic int done = 0, done2 = 0;
	struct nogate ng = { 0 };
	pthread_t a, b, c;
	int rc;

	load_fake_controls();

	/* A call blocked inside the driver holds the gate open. */
	fake_block(1);
	REQUIRE(pthread_create(&a, NULL, sync_thread, &done) == 0, "create");
	while (fake_blocked() == 0)
		sleep_ms(1);
	memset(&rep, 0, sizeof(rep));
	rc = gs_gate_close(100, &rep);
	CHECK(rc == -ETIMEDOUT, "close with a call in flight returned %d", rc);
	CHECK(rep.in_flight == 1 && rep.calls[0].name &&
	      strcmp(rep.calls[0].name, "cuStreamSynchronize") == 0,
	      "report: %u in flight, first %s", rep.in_flight,
	      rep.calls[0].name ? rep.calls[0].name : "(null)");
	fake_block(0);
	pthread_join(a, NULL);

	/* Closed: a gated call waits, a nogate one does not. */
	CHECK(gs_gate_close(1000, NULL) == 0, "close");
	REQUIRE(pthread_create(&b, NULL, sync_thread, &done2) == 0, "create");
	REQUIRE(pthread_create(&c, NULL, nogate_thread, &ng) == 0, "create");
	sleep_ms(100);
	CHECK(atomic_load(&done2) == 0, "cuStreamSynchronize passed a closed gate");
	CHECK(atomic_load(&ng.done) == 1, "cuGetErrorString (nogate) waited at the gate");
	CHECK(gs_gate_open() == 0, "open");
	pthread_join(b, NULL);
	pthread_join(c, NULL);
	CHECK(atomic_load(&done2) == 1, "the waiting call did not complete after reopening");
}

static const CUuuid cudart_interface = { {
	(char)0x6B, (char)0xD5, (char)0xFB, (char)0x6C, (char)0x5B, (char)0xF4, (char)0xE7,
	(char)0x4A, (char)0x89, (char)0x87, (char)0xD9, (char)0x39, (char)0x12, (char)0xFD,
	(char)0x9D, (char)0xF9 } };
static const uintptr_t wrapped_table[4] = { sizeof(wrapped_table), 7, 8, 9 };
static const void *seen_real_table;

static int wrap_ok(const CUuuid *id, const void *real_table, const void **app_table)
{
	(void)id;
	seen_real_table = real_table;
	*app_table = wrapped_table;
	return 0;
}

static int wrap_fail(const CUuuid *id, const void *real_table, const void **app_table)
{
	(void)id, (void)real_table, (void)app_table;
	return -ENOTSUP;
}

static void test_export_table_hooks(void)
{
	struct gs_introspect_export_table t[16];
	const void *table = NULL, *plain;
	size_t n;
	bool hooked = false;

	CHECK(cuGetExportTable(&plain, &cudart_interface) == CUDA_SUCCESS && plain,
	      "pass-through cuGetExportTable");

	CHECK(gs_export_table_set_hook(&cudart_interface, NULL, wrap_ok) == 0, "set hook");
	CHECK(cuGetExportTable(&table, &cudart_interface) == CUDA_SUCCESS, "hooked request");
	CHECK(table == wrapped_table, "the hook's table was not handed out");
	CHECK(seen_real_table == plain, "the hook did not get the driver's table");

	CHECK(gs_export_table_set_hook(&cudart_interface, NULL, wrap_fail) == 0, "set hook");
	CHECK(cuGetExportTable(&table, &cudart_interface) == CUDA_SUCCESS && table == plain,
	      "a failing hook must leave the driver's table");

	CHECK(gs_export_table_set_hook(&cudart_interface, NULL, NULL) == 0, "clear hook");
	CHECK(cuGetExportTable(&table, &cudart_interface) == CUDA_SUCCESS && table == plain,
	      "cleared hook");

	n = gs_introspect_export_tables(t, 16);
	for (size_t i = 0; i < n && i < 16; i++)
		if (memcmp(t[i].uuid, cudart_interface.bytes, 16) == 0)
			hooked = t[i].hooked && t[i].count == 4;
	CHECK(hooked, "introspection does not show the hooked table with 4 requests");
}

static void test_dump(void)
{
	char path[] = "/tmp/gs-test-dump-XXXXXX";
	char buf[65536];
	int fd = mkstemp(path);
	ssize_t len;

	REQUIRE(fd >= 0, "mkstemp");
	CHECK(gs_introspect_dump(fd) == 0, "dump");
	len = pread(fd, buf, sizeof(buf) - 1, 0);
	close(fd);
	unlink(path);
	REQUIRE(len > 0, "empty dump");
	buf[len] = '\0';
	CHECK(strstr(buf, "\"cuDeviceGetCount\":") != NULL, "dump lacks call counts:\n%s", buf);
	CHECK(strstr(buf, "\"name\":\"cudart interface\"") != NULL, "dump lacks export tables");
	CHECK(buf[0] == '{' && buf[len - 2] == '}' && buf[len - 1] == '\n', "not one JSON line");
}

static double ns_per_call(CUresult (*fn)(CUcontext *), long n)
{
	struct timespec a, b;
	CUcontext c;

	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++)
		fn(&c);
	clock_gettime(CLOCK_MONOTONIC, &b);
	return ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / (double)n;
}

/* Informational: what a wrapper adds to a trivial driver call. */
static void measure_wrapper(void)
{
	const long n = 5 * 1000 * 1000;
	double direct = ns_per_call(gs_real.cuCtxGetCurrent, n);
	double wrapped = ns_per_call(cuCtxGetCurrent, n);

	printf("cuCtxGetCurrent: %.2f ns direct, %.2f ns through the wrapper (+%.2f ns)\n",
	       direct, wrapped, wrapped - direct);
}

int main(void)
{
	if (!getenv("GPUSWAP_REAL_LIBCUDA"))
		SKIP("run with GPUSWAP_REAL_LIBCUDA pointing at the fake driver");
	test_wrappers();
	test_gate_with_wrappers();
	test_export_table_hooks();
	test_dump();
	measure_wrapper();
	return shimtest_result("internal");
}
