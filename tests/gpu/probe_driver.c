/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gs-probe-driver: asks the real CUDA driver the questions gpuswap's design
 * rests on (DESIGN.md §4-§5), on a GPU machine, without the shim. It links
 * the driver directly (-lcuda against the toolkit's stub), so everything it
 * reports is the driver's own behaviour.
 *
 *   gs-probe-driver facts                  driver, devices, VMM support, where
 *                                          the driver places memory
 *   gs-probe-driver behaviour [--image FATBIN] [--hint ADDR]...
 *                                          address hints, reservations, libraries
 *                                          and host registrations across the
 *                                          destruction of every context
 *   gs-probe-driver bandwidth [--mib N] [--reps N]
 *                                          pinned host<->device copy bandwidth
 *
 * Output: one JSON object per line, {"part": NAME, ...}. In `behaviour`, each
 * part carries "answer" (true, false, or null when a call failed) and
 * "expect": true or false where the design assumes that answer, null where
 * the question is open and the answer is only recorded. Exit status: 0 when
 * the probe ran to its end (whatever the answers), 1 when a call it cannot do
 * without failed, 2 on a usage error.
 */
#include <cuda.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "simcuda.h"

/* ---- one JSON object per line ------------------------------------------- */

struct jline {
	char buf[8192];
	size_t len;
	bool first;
};

static void jl_raw(struct jline *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void jl_raw(struct jline *j, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (j->len + 1 >= sizeof(j->buf))
		return;
	va_start(ap, fmt);
	n = vsnprintf(j->buf + j->len, sizeof(j->buf) - j->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		j->len += (size_t)n;
	if (j->len >= sizeof(j->buf))
		j->len = sizeof(j->buf) - 1;
}

static void jl_key(struct jline *j, const char *key)
{
	jl_raw(j, "%s\"%s\":", j->first ? "" : ",", key);
	j->first = false;
}

static void jl_str(struct jline *j, const char *key, const char *val)
{
	jl_key(j, key);
	if (!val) {
		jl_raw(j, "null");
		return;
	}
	jl_raw(j, "\"");
	for (const unsigned char *s = (const unsigned char *)val; *s; s++) {
		if (*s == '"' || *s == '\\')
			jl_raw(j, "\\%c", *s);
		else if (*s < 0x20)
			jl_raw(j, "\\u%04x", *s);
		else
			jl_raw(j, "%c", *s);
	}
	jl_raw(j, "\"");
}

static void jl_int(struct jline *j, const char *key, long long val)
{
	jl_key(j, key);
	jl_raw(j, "%lld", val);
}

/* Addresses as strings: JSON numbers lose precision above 2^53. */
static void jl_addr(struct jline *j, const char *key, unsigned long long val)
{
	jl_key(j, key);
	jl_raw(j, "\"0x%llx\"", val);
}

static void jl_dbl(struct jline *j, const char *key, double val)
{
	jl_key(j, key);
	jl_raw(j, "%.6g", val);
}

/* -1: null (unknown). */
static void jl_tri(struct jline *j, const char *key, int val)
{
	jl_key(j, key);
	jl_raw(j, "%s", val < 0 ? "null" : val ? "true" : "false");
}

static void jl_begin(struct jline *j, const char *part)
{
	j->len = 0;
	j->first = true;
	jl_raw(j, "{");
	jl_str(j, "part", part);
}

static void jl_end(struct jline *j)
{
	jl_raw(j, "}");
	puts(j->buf);
	fflush(stdout);
}

/* ---- driver helpers ------------------------------------------------------ */

static const char *err_name(CUresult rc)
{
	const char *s = NULL;

	if (cuGetErrorName(rc, &s) != CUDA_SUCCESS || !s)
		return "CUDA_ERROR_UNKNOWN_CODE";
	return s;
}

/* Reports a failed call as its own line; returns whether rc is success. */
static bool ok(CUresult rc, const char *what)
{
	struct jline j;

	if (rc == CUDA_SUCCESS)
		return true;
	jl_begin(&j, "error");
	jl_str(&j, "call", what);
	jl_str(&j, "result", err_name(rc));
	jl_end(&j);
	return false;
}

#define OK(call) ok((call), #call)

static CUdevice g_dev;
static size_t g_gran; /* cuMemCreate granularity (minimum) */

/* The primary context, as cudart uses it: one retain per ctx_up. */
static bool ctx_up(void)
{
	CUcontext ctx;

	return OK(cuDevicePrimaryCtxRetain(&ctx, g_dev)) && OK(cuCtxSetCurrent(ctx));
}

/*
 * Leaves the device with no context at all: the state gpu-freeze --release
 * puts a process in. Returns whether the primary context reports inactive.
 */
static bool ctx_down_all(void)
{
	unsigned int flags = 0;
	int active = 1;

	cuCtxSetCurrent(NULL);
	cuDevicePrimaryCtxRelease(g_dev);
	/* Reset as well, in case something kept a reference. */
	cuDevicePrimaryCtxReset(g_dev);
	if (cuDevicePrimaryCtxGetState(g_dev, &flags, &active) != CUDA_SUCCESS)
		return false;
	return !active;
}

static CUmemAllocationProp device_prop(void)
{
	CUmemAllocationProp prop;

	memset(&prop, 0, sizeof(prop));
	prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
	prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	prop.location.id = g_dev;
	return prop;
}

/* Backs [va, va+size) with fresh physical memory, read-write for the device. */
static CUresult vmm_map_new(CUdeviceptr va, size_t size, CUmemGenericAllocationHandle *handle)
{
	CUmemAllocationProp prop = device_prop();
	CUmemAccessDesc access;
	CUresult rc;

	rc = cuMemCreate(handle, size, &prop, 0);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = cuMemMap(va, size, 0, *handle, 0);
	if (rc != CUDA_SUCCESS) {
		cuMemRelease(*handle);
		return rc;
	}
	memset(&access, 0, sizeof(access));
	access.location = prop.location;
	access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
	rc = cuMemSetAccess(va, size, &access, 1);
	if (rc != CUDA_SUCCESS) {
		cuMemUnmap(va, size);
		cuMemRelease(*handle);
	}
	return rc;
}

static void vmm_unmap(CUdeviceptr va, size_t size, CUmemGenericAllocationHandle handle)
{
	cuMemUnmap(va, size);
	cuMemRelease(handle);
}

/*
 * Fills the range with a 32-bit pattern and reads both ends back: proves the
 * range is really usable, not only that the calls returned success.
 */
static CUresult rw_check(CUdeviceptr va, size_t size, uint32_t pattern, bool *good)
{
	enum { PROBE_BYTES = 4096 };
	static uint32_t host[PROBE_BYTES / 4];
	CUresult rc;

	*good = false;
	rc = cuMemsetD32(va, pattern, size / 4);
	if (rc == CUDA_SUCCESS)
		rc = cuCtxSynchronize();
	for (int end = 0; end < 2 && rc == CUDA_SUCCESS; end++) {
		CUdeviceptr at = end ? va + size - PROBE_BYTES : va;

		memset(host, 0, sizeof(host));
		rc = cuMemcpyDtoH(host, at, PROBE_BYTES);
		for (size_t i = 0; rc == CUDA_SUCCESS && i < PROBE_BYTES / 4; i++)
			if (host[i] != pattern)
				return CUDA_SUCCESS; /* *good stays false */
	}
	*good = rc == CUDA_SUCCESS;
	return rc;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The path the dynamic loader gave libcuda.so.1, from our own mappings. */
static void libcuda_path(char *out, size_t outlen)
{
	char line[4096];
	FILE *maps = fopen("/proc/self/maps", "r");

	snprintf(out, outlen, "unknown");
	if (!maps)
		return;
	while (fgets(line, sizeof(line), maps)) {
		char *path = strchr(line, '/');

		if (path && strstr(path, "/libcuda.so")) {
			path[strcspn(path, "\n")] = '\0';
			snprintf(out, outlen, "%s", path);
			break;
		}
	}
	fclose(maps);
}

static bool init_device(void)
{
	if (!OK(cuInit(0)) || !OK(cuDeviceGet(&g_dev, 0)))
		return false;
	return true;
}

static bool init_granularity(void)
{
	CUmemAllocationProp prop = device_prop();

	return OK(cuMemGetAllocationGranularity(&g_gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
}

static int attr(CUdevice_attribute which, CUdevice dev)
{
	int v = -1;

	if (cuDeviceGetAttribute(&v, which, dev) != CUDA_SUCCESS)
		return -1;
	return v;
}

/* ---- facts ----------------------------------------------------------------- */

static int cmd_facts(void)
{
	struct jline j;
	char path[1024];
	int version = 0, count = 0;
	const char *loading = getenv("CUDA_MODULE_LOADING");

	if (!OK(cuInit(0)))
		return 1;
	OK(cuDriverGetVersion(&version));
	OK(cuDeviceGetCount(&count));
	libcuda_path(path, sizeof(path));
	jl_begin(&j, "driver");
	jl_int(&j, "cuda_driver_version", version);
	jl_str(&j, "libcuda", path);
	jl_int(&j, "device_count", count);
	jl_str(&j, "cuda_module_loading", loading ? loading : "(unset)");
	jl_end(&j);

	for (int i = 0; i < count; i++) {
		CUdevice dev;
		CUuuid uuid;
		CUcontext ctx;
		char name[256] = "", bus[64] = "", uuid_text[64];
		size_t total = 0, free_b = 0, gmin = 0, grec = 0;
		CUdeviceptr plain = 0, reserved = 0;
		const unsigned char *u = (const unsigned char *)uuid.bytes;

		if (!OK(cuDeviceGet(&dev, i)))
			continue;
		cuDeviceGetName(name, sizeof(name), dev);
		cuDeviceGetPCIBusId(bus, sizeof(bus), dev);
		cuDeviceTotalMem(&total, dev);
		memset(&uuid, 0, sizeof(uuid));
		cuDeviceGetUuid(&uuid, dev);
		snprintf(uuid_text, sizeof(uuid_text),
			 "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
			 u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11],
			 u[12], u[13], u[14], u[15]);

		jl_begin(&j, "device");
		jl_int(&j, "ordinal", i);
		jl_str(&j, "name", name);
		jl_str(&j, "uuid", uuid_text);
		jl_str(&j, "pci_bus_id", bus);
		jl_int(&j, "cc_major", attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev));
		jl_int(&j, "cc_minor", attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev));
		jl_int(&j, "sm_count", attr(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev));
		jl_int(&j, "total_mem", (long long)total);
		jl_tri(&j, "vmm", attr(CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, dev));
		jl_tri(&j, "unified_addressing", attr(CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING, dev));
		jl_tri(&j, "host_register", attr(CU_DEVICE_ATTRIBUTE_HOST_REGISTER_SUPPORTED, dev));
		jl_tri(&j, "host_ptr_for_registered",
		       attr(CU_DEVICE_ATTRIBUTE_CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM, dev));
		jl_tri(&j, "memory_pools", attr(CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED, dev));
		jl_tri(&j, "posix_fd_handles",
		       attr(CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED, dev));
		jl_int(&j, "compute_mode", attr(CU_DEVICE_ATTRIBUTE_COMPUTE_MODE, dev));

		/* Where the driver puts memory tells where a fixed arena can go. */
		if (cuDevicePrimaryCtxRetain(&ctx, dev) == CUDA_SUCCESS &&
		    cuCtxSetCurrent(ctx) == CUDA_SUCCESS) {
			CUmemAllocationProp prop;

			memset(&prop, 0, sizeof(prop));
			prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
			prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
			prop.location.id = dev;
			cuMemGetAllocationGranularity(&gmin, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM);
			cuMemGetAllocationGranularity(&grec, &prop, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED);
			cuMemGetInfo(&free_b, &total);
			if (cuMemAlloc(&plain, 2u << 20) == CUDA_SUCCESS)
				cuMemFree(plain);
			if (gmin && cuMemAddressReserve(&reserved, gmin * 4, 0, 0, 0) == CUDA_SUCCESS)
				cuMemAddressFree(reserved, gmin * 4);
			cuCtxSetCurrent(NULL);
			cuDevicePrimaryCtxRelease(dev);
		}
		jl_int(&j, "granularity_min", (long long)gmin);
		jl_int(&j, "granularity_recommended", (long long)grec);
		jl_int(&j, "free_mem", (long long)free_b);
		jl_addr(&j, "driver_alloc_addr", plain);
		jl_addr(&j, "driver_reserve_addr", reserved);
		jl_end(&j);
	}
	return count > 0 ? 0 : 1;
}

/* ---- behaviour ------------------------------------------------------------- */

/* Starts a behaviour part; expect: 1 / 0 what the design assumes, -1 open. */
static void part_begin(struct jline *j, const char *name, const char *question, int expect)
{
	jl_begin(j, name);
	jl_str(j, "question", question);
	jl_tri(j, "expect", expect);
}

static void part_end(struct jline *j, int answer, const char *detail)
{
	jl_tri(j, "answer", answer);
	jl_str(j, "detail", detail);
	jl_end(j);
}

static CUdeviceptr g_fresh; /* an address the driver chose, then freed */
static CUdeviceptr g_far;   /* a far hint that was honoured, if any */

static void probe_placement(size_t size)
{
	struct jline j;
	CUdeviceptr va = 0;
	CUresult rc = cuMemAddressReserve(&va, size, 0, 0, 0);

	part_begin(&j, "driver_placement", "where does the driver place a reservation without a hint", -1);
	jl_str(&j, "result", err_name(rc));
	jl_addr(&j, "addr", va);
	if (rc == CUDA_SUCCESS) {
		g_fresh = va;
		cuMemAddressFree(va, size);
	}
	part_end(&j, rc == CUDA_SUCCESS, NULL);
}

static void probe_hint_fresh(size_t size)
{
	struct jline j;
	CUdeviceptr va = 0;
	CUresult rc = g_fresh ? cuMemAddressReserve(&va, size, 0, g_fresh, 0) : CUDA_ERROR_INVALID_VALUE;

	part_begin(&j, "hint_fresh", "is a hint honoured at an address the driver just freed", 1);
	jl_addr(&j, "hint", g_fresh);
	jl_addr(&j, "got", va);
	jl_str(&j, "result", err_name(rc));
	if (rc == CUDA_SUCCESS)
		cuMemAddressFree(va, size);
	part_end(&j, rc == CUDA_SUCCESS ? va == g_fresh : -1, NULL);
}

/* A hint far from the driver's own placement: where a fixed arena would go. */
static bool probe_hint_far(CUdeviceptr hint, size_t size)
{
	struct jline j;
	CUdeviceptr va = 0;
	CUmemGenericAllocationHandle h;
	bool usable = false;
	CUresult rc = cuMemAddressReserve(&va, size, 0, hint, 0), map_rc = CUDA_ERROR_NOT_MAPPED;

	if (rc == CUDA_SUCCESS && va == hint) {
		map_rc = vmm_map_new(va, size, &h);
		if (map_rc == CUDA_SUCCESS) {
			rw_check(va, size, 0x5eed0001u, &usable);
			vmm_unmap(va, size, h);
		}
	}
	part_begin(&j, "hint_far", "is a hint honoured far from the driver's own placement", -1);
	jl_addr(&j, "hint", hint);
	jl_addr(&j, "got", va);
	jl_str(&j, "result", err_name(rc));
	jl_str(&j, "map_result", err_name(map_rc));
	jl_tri(&j, "usable", usable);
	if (rc == CUDA_SUCCESS)
		cuMemAddressFree(va, size);
	part_end(&j, rc == CUDA_SUCCESS ? va == hint && usable : -1, NULL);
	return rc == CUDA_SUCCESS && va == hint && usable;
}

static void probe_hint_occupied(size_t size)
{
	struct jline j;
	CUdeviceptr first = 0, second = 0;
	CUresult rc1 = cuMemAddressReserve(&first, size, 0, 0, 0);
	CUresult rc2 = rc1 == CUDA_SUCCESS ? cuMemAddressReserve(&second, size, 0, first, 0)
					    : CUDA_ERROR_INVALID_VALUE;
	const char *what = rc2 != CUDA_SUCCESS ? "an error" : second == first ? "the same, occupied address"
									       : "another address";

	/* The design checks every result because a hint may be ignored: it
	 * must never be honoured twice. */
	part_begin(&j, "hint_occupied", "what does a hint at an occupied address return", -1);
	jl_addr(&j, "hint", first);
	jl_addr(&j, "got", second);
	jl_str(&j, "result", err_name(rc2));
	jl_str(&j, "returns", what);
	if (rc2 == CUDA_SUCCESS)
		cuMemAddressFree(second, size);
	if (rc1 == CUDA_SUCCESS)
		cuMemAddressFree(first, size);
	part_end(&j, rc1 == CUDA_SUCCESS ? rc2 != CUDA_SUCCESS || second != first : -1, what);
}

/* Thaw re-reserves every range at its address in a process that has
 * destroyed all its contexts: the hint must still be honoured then. */
static void probe_hint_after_destroy(size_t size)
{
	struct jline j;
	CUdeviceptr hint = g_far ? g_far : g_fresh, va = 0, again = 0;
	CUmemGenericAllocationHandle h;
	bool usable = false, destroyed;
	CUresult rc, map_rc = CUDA_ERROR_NOT_MAPPED;

	rc = cuMemAddressReserve(&va, size, 0, hint, 0);
	if (rc == CUDA_SUCCESS) {
		if (vmm_map_new(va, size, &h) == CUDA_SUCCESS) {
			rw_check(va, size, 0x5eed0002u, &usable);
			vmm_unmap(va, size, h);
		}
		cuMemAddressFree(va, size);
	}
	destroyed = ctx_down_all();
	if (!ctx_up()) {
		part_begin(&j, "hint_after_all_contexts_destroyed",
			   "is a hint honoured after every context was destroyed", 1);
		part_end(&j, -1, "could not create a context again");
		return;
	}
	rc = cuMemAddressReserve(&again, size, 0, va ? va : hint, 0);
	usable = false;
	if (rc == CUDA_SUCCESS && again == (va ? va : hint)) {
		map_rc = vmm_map_new(again, size, &h);
		if (map_rc == CUDA_SUCCESS) {
			rw_check(again, size, 0x5eed0003u, &usable);
			vmm_unmap(again, size, h);
		}
	}
	part_begin(&j, "hint_after_all_contexts_destroyed",
		   "is a hint honoured after every context was destroyed", 1);
	jl_addr(&j, "hint", va ? va : hint);
	jl_addr(&j, "got", again);
	jl_tri(&j, "primary_context_destroyed", destroyed);
	jl_str(&j, "result", err_name(rc));
	jl_str(&j, "map_result", err_name(map_rc));
	if (rc == CUDA_SUCCESS)
		cuMemAddressFree(again, size);
	part_end(&j, rc == CUDA_SUCCESS ? again == (va ? va : hint) && usable : -1, NULL);
}

/* While released, the shim has no context at all. */
static void probe_reserve_without_context(size_t size)
{
	struct jline j;
	CUdeviceptr hint = g_far ? g_far : g_fresh, va = 0;
	bool destroyed = ctx_down_all();
	CUresult rc = cuMemAddressReserve(&va, size, 0, hint, 0);

	part_begin(&j, "reserve_without_context",
		   "can a range be reserved (at its hint) while no context exists", -1);
	jl_tri(&j, "primary_context_destroyed", destroyed);
	jl_addr(&j, "hint", hint);
	jl_addr(&j, "got", va);
	jl_str(&j, "result", err_name(rc));
	if (rc == CUDA_SUCCESS)
		cuMemAddressFree(va, size);
	part_end(&j, rc == CUDA_SUCCESS && va == hint, NULL);
	ctx_up();
}

/* If reservations outlive the last context, release could keep them and
 * thaw would only re-map; if not, thaw re-reserves at the same hints. */
static void probe_reservation_survives(size_t size)
{
	struct jline j;
	CUdeviceptr va = 0, other = 0;
	CUmemGenericAllocationHandle h;
	bool usable = false, destroyed;
	CUresult rc, map_rc = CUDA_ERROR_NOT_MAPPED, free_rc, rehint_rc = CUDA_ERROR_NOT_MAPPED;

	rc = cuMemAddressReserve(&va, size, 0, 0, 0);
	if (rc == CUDA_SUCCESS && vmm_map_new(va, size, &h) == CUDA_SUCCESS) {
		rw_check(va, size, 0x5eed0004u, &usable);
		vmm_unmap(va, size, h);
	}
	destroyed = ctx_down_all();
	if (rc != CUDA_SUCCESS || !ctx_up()) {
		part_begin(&j, "reservation_survives_last_context",
			   "does a VA reservation survive the destruction of the last context", -1);
		jl_str(&j, "result", err_name(rc));
		part_end(&j, -1, "setup failed");
		return;
	}
	usable = false;
	map_rc = vmm_map_new(va, size, &h);
	if (map_rc == CUDA_SUCCESS) {
		rw_check(va, size, 0x5eed0005u, &usable);
		vmm_unmap(va, size, h);
	} else {
		/* Is the range free again? Then a hint at it is honoured. */
		rehint_rc = cuMemAddressReserve(&other, size, 0, va, 0);
		if (rehint_rc == CUDA_SUCCESS && other != va) {
			cuMemAddressFree(other, size);
			other = 0;
		}
	}
	free_rc = cuMemAddressFree(va, size);
	part_begin(&j, "reservation_survives_last_context",
		   "does a VA reservation survive the destruction of the last context", -1);
	jl_addr(&j, "addr", va);
	jl_tri(&j, "primary_context_destroyed", destroyed);
	jl_str(&j, "map_after_result", err_name(map_rc));
	jl_tri(&j, "usable_after", usable);
	jl_str(&j, "free_after_result", err_name(free_rc));
	if (map_rc != CUDA_SUCCESS) {
		jl_str(&j, "rehint_result", err_name(rehint_rc));
		jl_addr(&j, "rehint_got", other);
	}
	part_end(&j, map_rc == CUDA_SUCCESS && usable, NULL);
}

/* CUlibrary/CUkernel are context-independent on paper; if they survive the
 * destruction of every context, thaw need not translate them. */
static CUlibrary g_lib;
static CUkernel g_kernel;

static CUresult launch_add_one(CUdeviceptr buf, unsigned int n)
{
	void *args[] = { &buf, &n };
	CUresult rc = cuLaunchKernel((CUfunction)g_kernel, (n + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, args,
				     NULL);

	return rc == CUDA_SUCCESS ? cuCtxSynchronize() : rc;
}

/* memset to `start`, add one on the device, expect start + 1 everywhere. */
static CUresult kernel_works(unsigned int start, bool *good)
{
	enum { N = 1u << 16 };
	static uint32_t host[N];
	CUdeviceptr buf = 0;
	CUresult rc;

	*good = false;
	rc = cuMemAlloc(&buf, N * sizeof(uint32_t));
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = cuMemsetD32(buf, start, N);
	if (rc == CUDA_SUCCESS)
		rc = launch_add_one(buf, N);
	if (rc == CUDA_SUCCESS)
		rc = cuMemcpyDtoH(host, buf, sizeof(host));
	if (rc == CUDA_SUCCESS) {
		*good = true;
		for (unsigned int i = 0; i < N; i++)
			if (host[i] != start + 1)
				*good = false;
	}
	cuMemFree(buf);
	return rc;
}

static void *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	void *data = NULL;
	long size;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0) {
		data = malloc((size_t)size);
		if (data && fread(data, 1, (size_t)size, f) != (size_t)size) {
			free(data);
			data = NULL;
		}
		*len = (size_t)size;
	}
	fclose(f);
	return data;
}

static void probe_library(const void *image)
{
	struct jline j;
	CUkernel again = NULL;
	CUfunction f1 = NULL, f2 = NULL;
	CUmodule m1 = NULL, m2 = NULL;
	CUlibrary late = NULL;
	CUkernel late_kernel = NULL;
	bool before = false, after = false, late_good = false, destroyed;
	CUresult rc, get_rc, func_rc, launch_rc = CUDA_ERROR_NOT_READY, late_rc, late_launch_rc = CUDA_ERROR_NOT_READY;

	rc = cuLibraryLoadData(&g_lib, image, NULL, NULL, 0, NULL, NULL, 0);
	if (rc == CUDA_SUCCESS)
		rc = cuLibraryGetKernel(&g_kernel, g_lib, "gs_add_one");
	if (rc == CUDA_SUCCESS) {
		cuKernelGetFunction(&f1, g_kernel);
		cuLibraryGetModule(&m1, g_lib);
		rc = kernel_works(1, &before);
	}
	if (rc != CUDA_SUCCESS || !before) {
		part_begin(&j, "library_kernel_survive_contexts",
			   "do CUlibrary/CUkernel handles stay valid across context destruction", -1);
		jl_str(&j, "result", err_name(rc));
		part_end(&j, -1, "could not load and run the probe kernel in the first context");
		g_kernel = NULL;
		return;
	}
	destroyed = ctx_down_all();
	/* cudart loads fatbins at start-up, before it creates any context. */
	late_rc = cuLibraryLoadData(&late, image, NULL, NULL, 0, NULL, NULL, 0);
	if (!ctx_up()) {
		part_begin(&j, "library_kernel_survive_contexts",
			   "do CUlibrary/CUkernel handles stay valid across context destruction", -1);
		part_end(&j, -1, "could not create a context again");
		g_kernel = NULL;
		return;
	}
	get_rc = cuLibraryGetKernel(&again, g_lib, "gs_add_one");
	func_rc = cuKernelGetFunction(&f2, g_kernel);
	cuLibraryGetModule(&m2, g_lib);
	if (func_rc == CUDA_SUCCESS)
		launch_rc = kernel_works(41, &after);
	if (late_rc == CUDA_SUCCESS && cuLibraryGetKernel(&late_kernel, late, "gs_add_one") == CUDA_SUCCESS) {
		CUkernel keep = g_kernel;

		g_kernel = late_kernel;
		late_launch_rc = kernel_works(7, &late_good);
		g_kernel = keep;
		cuLibraryUnload(late);
	}

	part_begin(&j, "library_kernel_survive_contexts",
		   "do CUlibrary/CUkernel handles stay valid across context destruction", -1);
	jl_tri(&j, "primary_context_destroyed", destroyed);
	jl_str(&j, "get_kernel_after_result", err_name(get_rc));
	jl_tri(&j, "same_kernel_handle", get_rc == CUDA_SUCCESS ? again == g_kernel : -1);
	jl_str(&j, "kernel_get_function_after_result", err_name(func_rc));
	jl_tri(&j, "same_function_handle", func_rc == CUDA_SUCCESS ? f1 == f2 : -1);
	jl_tri(&j, "same_module_handle", m1 && m2 ? m1 == m2 : -1);
	jl_str(&j, "launch_after_result", err_name(launch_rc));
	jl_str(&j, "load_without_context_result", err_name(late_rc));
	jl_str(&j, "launch_of_library_loaded_without_context", err_name(late_launch_rc));
	jl_tri(&j, "library_loaded_without_context_works", late_good);
	part_end(&j, func_rc == CUDA_SUCCESS && launch_rc == CUDA_SUCCESS && after, NULL);
}

/* The shim re-registers pinned host memory after a migration; the app keeps
 * using the host pointer as a device pointer, so they must be equal. */
static void *g_registered;
static const size_t REGISTERED_BYTES = 8u << 20;

static void probe_host_register(void)
{
	struct jline j;
	CUdeviceptr dptr = 0, alloc_dptr = 0;
	void *alloc_host = NULL;
	bool through_device = false;
	CUresult rc, get_rc = CUDA_ERROR_NOT_READY, launch_rc = CUDA_ERROR_NOT_READY, alloc_rc;

	g_registered = mmap(NULL, REGISTERED_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (g_registered == MAP_FAILED) {
		g_registered = NULL;
		part_begin(&j, "host_register_devptr_equals_hostptr",
			   "does cuMemHostRegister's device pointer equal the host pointer", 1);
		part_end(&j, -1, "mmap failed");
		return;
	}
	memset(g_registered, 0, REGISTERED_BYTES);
	rc = cuMemHostRegister(g_registered, REGISTERED_BYTES, CU_MEMHOSTREGISTER_DEVICEMAP);
	if (rc == CUDA_SUCCESS)
		get_rc = cuMemHostGetDevicePointer(&dptr, g_registered, 0);
	if (get_rc == CUDA_SUCCESS && g_kernel) {
		uint32_t *words = g_registered;

		for (size_t i = 0; i < 1024; i++)
			words[i] = 100;
		/* Through the host pointer itself, as an app that relies on
		 * the equality would. */
		launch_rc = launch_add_one((CUdeviceptr)(uintptr_t)g_registered, 1024);
		through_device = launch_rc == CUDA_SUCCESS;
		for (size_t i = 0; through_device && i < 1024; i++)
			if (words[i] != 101)
				through_device = false;
	}
	alloc_rc = cuMemHostAlloc(&alloc_host, 1u << 20, CU_MEMHOSTALLOC_DEVICEMAP);
	if (alloc_rc == CUDA_SUCCESS) {
		if (cuMemHostGetDevicePointer(&alloc_dptr, alloc_host, 0) != CUDA_SUCCESS)
			alloc_dptr = 0;
		cuMemFreeHost(alloc_host);
	}

	part_begin(&j, "host_register_devptr_equals_hostptr",
		   "does cuMemHostRegister's device pointer equal the host pointer", 1);
	jl_str(&j, "register_result", err_name(rc));
	jl_str(&j, "get_device_pointer_result", err_name(get_rc));
	jl_addr(&j, "host", (uintptr_t)g_registered);
	jl_addr(&j, "device", dptr);
	jl_str(&j, "kernel_through_host_pointer_result", err_name(launch_rc));
	jl_tri(&j, "kernel_through_host_pointer_works", g_kernel ? through_device : -1);
	jl_tri(&j, "host_alloc_devptr_equals_hostptr",
	       alloc_rc == CUDA_SUCCESS && alloc_dptr ? (uintptr_t)alloc_host == alloc_dptr : -1);
	part_end(&j, get_rc == CUDA_SUCCESS ? (uintptr_t)g_registered == dptr : -1, NULL);
	if (rc != CUDA_SUCCESS) {
		munmap(g_registered, REGISTERED_BYTES);
		g_registered = NULL;
	}
}

/* DESIGN §5 assumes pinned host memory dies with its context: does a
 * registration made in a context outlive it? */
static void probe_host_register_survives(void)
{
	struct jline j;
	CUdeviceptr dptr = 0;
	bool destroyed;
	CUresult get_rc, again_rc;
	int answer = -1;

	if (!g_registered)
		return;
	destroyed = ctx_down_all();
	if (!ctx_up())
		return;
	get_rc = cuMemHostGetDevicePointer(&dptr, g_registered, 0);
	again_rc = cuMemHostRegister(g_registered, REGISTERED_BYTES, CU_MEMHOSTREGISTER_DEVICEMAP);
	if (again_rc == CUDA_SUCCESS)
		answer = 0;
	else if (again_rc == CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED)
		answer = 1;
	part_begin(&j, "host_register_survives_contexts",
		   "does a host registration survive the destruction of its context", -1);
	jl_tri(&j, "primary_context_destroyed", destroyed);
	jl_str(&j, "get_device_pointer_after_result", err_name(get_rc));
	jl_str(&j, "register_again_result", err_name(again_rc));
	part_end(&j, answer, NULL);
	cuMemHostUnregister(g_registered);
	munmap(g_registered, REGISTERED_BYTES);
	g_registered = NULL;
}

/* Last, because it leaves physical memory mapped while every context goes:
 * does VMM memory (and its contents) outlive the contexts? */
static void probe_mapping_survives(size_t size)
{
	struct jline j;
	CUdeviceptr va = 0;
	CUmemGenericAllocationHandle h;
	bool before = false, destroyed;
	uint32_t word = 0;
	CUresult rc, read_rc = CUDA_ERROR_NOT_READY;

	rc = cuMemAddressReserve(&va, size, 0, 0, 0);
	if (rc == CUDA_SUCCESS)
		rc = vmm_map_new(va, size, &h);
	if (rc == CUDA_SUCCESS)
		rw_check(va, size, 0x5eed0006u, &before);
	if (rc != CUDA_SUCCESS || !before) {
		part_begin(&j, "mapping_survives_last_context",
			   "do mapped VMM contents survive the destruction of the last context", -1);
		jl_str(&j, "result", err_name(rc));
		part_end(&j, -1, "setup failed");
		return;
	}
	destroyed = ctx_down_all();
	if (ctx_up())
		read_rc = cuMemcpyDtoH(&word, va + size / 2, sizeof(word));
	part_begin(&j, "mapping_survives_last_context",
		   "do mapped VMM contents survive the destruction of the last context", -1);
	jl_tri(&j, "primary_context_destroyed", destroyed);
	jl_str(&j, "read_after_result", err_name(read_rc));
	jl_addr(&j, "word_after", word);
	part_end(&j, read_rc == CUDA_SUCCESS ? word == 0x5eed0006u : 0, NULL);
	cuMemUnmap(va, size);
	cuMemRelease(h);
	cuMemAddressFree(va, size);
}

static int cmd_behaviour(int argc, char **argv)
{
	static const CUdeviceptr far_defaults[] = {
		0x100000000000ull, 0x200000000000ull, 0x400000000000ull, 0x600000000000ull,
	};
	CUdeviceptr hints[16];
	int nhints = 0;
	const char *image_path = NULL;
	void *image = NULL;
	size_t image_len = 0, size;
	struct jline j;

	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--image") && i + 1 < argc)
			image_path = argv[++i];
		else if (!strcmp(argv[i], "--hint") && i + 1 < argc && nhints < 8)
			hints[nhints++] = strtoull(argv[++i], NULL, 0);
		else {
			fprintf(stderr, "gs-probe-driver behaviour: unknown argument %s\n", argv[i]);
			return 2;
		}
	}
	for (size_t i = 0; i < sizeof(far_defaults) / sizeof(far_defaults[0]); i++)
		hints[nhints++] = far_defaults[i];

	if (!init_device() || !ctx_up() || !init_granularity())
		return 1;
	size = 32 * g_gran;
	jl_begin(&j, "setup");
	jl_int(&j, "granularity", (long long)g_gran);
	jl_int(&j, "probe_bytes", (long long)size);
	jl_str(&j, "cuda_module_loading", getenv("CUDA_MODULE_LOADING") ? getenv("CUDA_MODULE_LOADING") : "(unset)");
	jl_end(&j);

	probe_placement(size);
	probe_hint_fresh(size);
	for (int i = 0; i < nhints; i++)
		if (probe_hint_far(hints[i], size) && !g_far)
			g_far = hints[i];
	jl_begin(&j, "hint_far_any");
	jl_str(&j, "question", "is at least one far hint honoured (where a fixed arena can go)");
	jl_tri(&j, "expect", 1);
	jl_addr(&j, "first_honoured", g_far);
	part_end(&j, g_far != 0, NULL);
	probe_hint_occupied(size);
	probe_hint_after_destroy(size);
	probe_reserve_without_context(size);
	probe_reservation_survives(size);

	if (image_path && (image = read_file(image_path, &image_len)) != NULL)
		probe_library(image);
	else {
		jl_begin(&j, "library_kernel_survive_contexts");
		jl_tri(&j, "expect", -1);
		part_end(&j, -1, image_path ? "cannot read the probe kernel image" : "no --image given");
	}
	probe_host_register();
	probe_host_register_survives();
	probe_mapping_survives(size);
	if (g_lib)
		cuLibraryUnload(g_lib);
	free(image);
	jl_begin(&j, "done");
	jl_end(&j);
	return 0;
}

/*
 * The simulated driver (tests/simcuda) runs kernel NAME as the host function
 * simcuda_kernel_NAME, found with dlsym: this lets the test suite run the
 * probe against it. A real driver never calls it.
 */
void simcuda_kernel_gs_add_one(const simcuda_launch *launch, void **params);
__attribute__((visibility("default"))) void simcuda_kernel_gs_add_one(const simcuda_launch *launch,
								      void **params)
{
	unsigned int *p = *(unsigned int **)params[0];
	unsigned int n = *(unsigned int *)params[1];
	unsigned long long threads = (unsigned long long)launch->grid[0] * launch->block[0];

	for (unsigned long long i = 0; i < n && i < threads; i++)
		p[i] += 1;
}

/* ---- bandwidth ------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

enum copy_kind { H2D, D2H, D2D };

static bool time_copies(enum copy_kind kind, void *host, CUdeviceptr dev, CUdeviceptr dev2, size_t bytes,
			int reps, CUstream stream, double *best_gbps, double *median_gbps)
{
	CUevent start, stop;
	double gbps[64];
	bool good = true;

	if (reps > 64)
		reps = 64;
	if (!OK(cuEventCreate(&start, CU_EVENT_DEFAULT)) || !OK(cuEventCreate(&stop, CU_EVENT_DEFAULT)))
		return false;
	/* One unmeasured copy first: the first touch pays for mappings. */
	for (int r = -1; r < reps && good; r++) {
		float ms = 0;
		CUresult rc;

		cuEventRecord(start, stream);
		if (kind == H2D)
			rc = cuMemcpyHtoDAsync(dev, host, bytes, stream);
		else if (kind == D2H)
			rc = cuMemcpyDtoHAsync(host, dev, bytes, stream);
		else
			rc = cuMemcpyDtoDAsync(dev2, dev, bytes, stream);
		good = OK(rc) && OK(cuEventRecord(stop, stream)) && OK(cuEventSynchronize(stop)) &&
		       OK(cuEventElapsedTime(&ms, start, stop));
		if (good && r >= 0)
			gbps[r] = ms > 0 ? (double)bytes / ((double)ms * 1e-3) / 1e9 : 0;
	}
	cuEventDestroy(start);
	cuEventDestroy(stop);
	if (!good)
		return false;
	qsort(gbps, (size_t)reps, sizeof(gbps[0]), cmp_double);
	*best_gbps = gbps[reps - 1];
	*median_gbps = gbps[reps / 2];
	return true;
}

static int cmd_bandwidth(int argc, char **argv)
{
	size_t mib = 1024;
	int reps = 5;
	void *host = NULL;
	CUdeviceptr dev = 0, dev2 = 0;
	CUstream stream;
	double best[3] = { 0 }, median[3] = { 0 };
	struct jline j;
	bool good;
	double t0;

	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--mib") && i + 1 < argc)
			mib = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
			reps = atoi(argv[++i]);
		else {
			fprintf(stderr, "gs-probe-driver bandwidth: unknown argument %s\n", argv[i]);
			return 2;
		}
	}
	if (reps < 1 || mib < 1)
		return 2;
	if (!init_device() || !ctx_up())
		return 1;
	t0 = now_s();
	if (!OK(cuMemHostAlloc(&host, mib << 20, 0)))
		return 1;
	memset(host, 0x5a, mib << 20);
	if (!OK(cuMemAlloc(&dev, mib << 20)) || !OK(cuMemAlloc(&dev2, mib << 20)) ||
	    !OK(cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING)))
		return 1;
	good = time_copies(H2D, host, dev, 0, mib << 20, reps, stream, &best[H2D], &median[H2D]) &&
	       time_copies(D2H, host, dev, 0, mib << 20, reps, stream, &best[D2H], &median[D2H]) &&
	       time_copies(D2D, NULL, dev, dev2, mib << 20, reps, stream, &best[D2D], &median[D2D]);
	jl_begin(&j, "bandwidth");
	jl_int(&j, "bytes", (long long)(mib << 20));
	jl_int(&j, "reps", reps);
	jl_dbl(&j, "h2d_gbps_best", best[H2D]);
	jl_dbl(&j, "h2d_gbps_median", median[H2D]);
	jl_dbl(&j, "d2h_gbps_best", best[D2H]);
	jl_dbl(&j, "d2h_gbps_median", median[D2H]);
	jl_dbl(&j, "d2d_gbps_best", best[D2D]);
	jl_dbl(&j, "d2d_gbps_median", median[D2D]);
	jl_dbl(&j, "seconds", now_s() - t0);
	jl_tri(&j, "ok", good);
	jl_end(&j);
	cuMemFreeHost(host);
	cuMemFree(dev);
	cuMemFree(dev2);
	return good ? 0 : 1;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "facts"))
		return cmd_facts();
	if (argc >= 2 && !strcmp(argv[1], "behaviour"))
		return cmd_behaviour(argc - 2, argv + 2);
	if (argc >= 2 && !strcmp(argv[1], "bandwidth"))
		return cmd_bandwidth(argc - 2, argv + 2);
	fprintf(stderr,
		"usage: gs-probe-driver facts\n"
		"       gs-probe-driver behaviour [--image FATBIN] [--hint ADDR]...\n"
		"       gs-probe-driver bandwidth [--mib N] [--reps N]\n");
	return 2;
}
