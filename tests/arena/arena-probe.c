/* SPDX-License-Identifier: Apache-2.0 */
/*
 * arena-probe: what an application sees of device and pinned host memory,
 * written against cuda.h only and linked like an application.
 *
 *   arena-probe compare   prints every answer the driver API gives about the
 *                         memory it allocates, normalised (addresses relative
 *                         to their allocation, buffer ids as "the
 *                         allocation's own"), then "done". Run once on the
 *                         simulator and once under the shim, the two outputs
 *                         must be identical (compare-runs.sh).
 *   arena-probe compare-ipc
 *                         the same plus CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE,
 *                         which the arena answers 0 by design: compared
 *                         only against GPUSWAP_ALLOC=passthrough.
 *   arena-probe arena     checks what only the arena guarantees (pointers in
 *                         the window at GPUSWAP_ARENA_BASE, interior and
 *                         double frees refused, packing, threads); exits 0
 *                         or 1.
 *   arena-probe oom       with SIMCUDA_FAIL set: a failed allocation leaves
 *                         nothing behind.
 */
#include <cuda.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define MiB ((size_t)1 << 20)

static bool with_ipc;
static CUcontext ctx0, ctx1;

static const char *rcname(CUresult rc)
{
	const char *s = NULL;

	if (cuGetErrorName(rc, &s) != CUDA_SUCCESS || !s)
		return "?";
	return s;
}

static _Noreturn void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static _Noreturn void die(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "arena-probe: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

#define MUST(call)                                                               \
	do {                                                                     \
		CUresult must_rc_ = (call);                                      \
		if (must_rc_ != CUDA_SUCCESS)                                    \
			die("%s:%d: %s: %s", __FILE__, __LINE__, #call,          \
			    rcname(must_rc_));                                   \
	} while (0)

static const char *ctxname(CUcontext c)
{
	if (!c)
		return "null";
	if (c == ctx0)
		return "ctx0";
	if (c == ctx1)
		return "ctx1";
	return "other";
}

/* An address as the application can compare it: relative to `base`. */
static void rel(char *buf, size_t n, uint64_t v, uint64_t base)
{
	if (v == 0)
		snprintf(buf, n, "0");
	else if (v >= base && v - base < (UINT64_C(1) << 40))
		snprintf(buf, n, "base+%" PRIu64, v - base);
	else
		snprintf(buf, n, "elsewhere");
}

static const CUpointer_attribute all_attrs[] = {
	CU_POINTER_ATTRIBUTE_CONTEXT,
	CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
	CU_POINTER_ATTRIBUTE_DEVICE_POINTER,
	CU_POINTER_ATTRIBUTE_HOST_POINTER,
	CU_POINTER_ATTRIBUTE_P2P_TOKENS,
	CU_POINTER_ATTRIBUTE_SYNC_MEMOPS,
	CU_POINTER_ATTRIBUTE_BUFFER_ID,
	CU_POINTER_ATTRIBUTE_IS_MANAGED,
	CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
	CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE,
	CU_POINTER_ATTRIBUTE_RANGE_START_ADDR,
	CU_POINTER_ATTRIBUTE_RANGE_SIZE,
	CU_POINTER_ATTRIBUTE_MAPPED,
	CU_POINTER_ATTRIBUTE_ALLOWED_HANDLE_TYPES,
	CU_POINTER_ATTRIBUTE_IS_GPU_DIRECT_RDMA_CAPABLE,
	CU_POINTER_ATTRIBUTE_ACCESS_FLAGS,
	CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE,
	CU_POINTER_ATTRIBUTE_MAPPING_SIZE,
	CU_POINTER_ATTRIBUTE_MAPPING_BASE_ADDR,
	CU_POINTER_ATTRIBUTE_MEMORY_BLOCK_ID,
	CU_POINTER_ATTRIBUTE_IS_HW_DECOMPRESS_CAPABLE,
};
#define NATTRS (sizeof(all_attrs) / sizeof(all_attrs[0]))

/* The ones cuPointerGetAttributes takes. */
static bool multi_ok(CUpointer_attribute a)
{
	return a != CU_POINTER_ATTRIBUTE_P2P_TOKENS && a != CU_POINTER_ATTRIBUTE_MAPPING_SIZE &&
	       a != CU_POINTER_ATTRIBUTE_MAPPING_BASE_ADDR &&
	       a != CU_POINTER_ATTRIBUTE_MEMORY_BLOCK_ID &&
	       a != CU_POINTER_ATTRIBUTE_IS_GPU_DIRECT_RDMA_CAPABLE;
}

union attr_value {
	CUcontext ctx;
	unsigned u;
	int i;
	unsigned long long ull;
	CUdeviceptr dp;
	void *p;
	size_t z;
	CUDA_POINTER_ATTRIBUTE_P2P_TOKENS tokens;
	CUmemoryPool pool;
	unsigned char raw[32];
};

/* One attribute's value, normalised. `id` is the allocation's buffer id
 * (0: not known yet). */
/* The size of an attribute's value, as the driver API documents it. */
static size_t attr_size(CUpointer_attribute a)
{
	switch (a) {
	case CU_POINTER_ATTRIBUTE_CONTEXT: return sizeof(CUcontext);
	case CU_POINTER_ATTRIBUTE_DEVICE_POINTER:
	case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR: return sizeof(CUdeviceptr);
	case CU_POINTER_ATTRIBUTE_HOST_POINTER:
	case CU_POINTER_ATTRIBUTE_MAPPING_BASE_ADDR: return sizeof(void *);
	case CU_POINTER_ATTRIBUTE_BUFFER_ID:
	case CU_POINTER_ATTRIBUTE_MEMORY_BLOCK_ID:
	case CU_POINTER_ATTRIBUTE_ALLOWED_HANDLE_TYPES: return sizeof(unsigned long long);
	case CU_POINTER_ATTRIBUTE_RANGE_SIZE:
	case CU_POINTER_ATTRIBUTE_MAPPING_SIZE: return sizeof(size_t);
	case CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE: return sizeof(CUmemoryPool);
	case CU_POINTER_ATTRIBUTE_P2P_TOKENS: return sizeof(CUDA_POINTER_ATTRIBUTE_P2P_TOKENS);
	default: return sizeof(unsigned); /* booleans, ordinals, types, flags */
	}
}

static void show_value(CUpointer_attribute a, const union attr_value *v, uint64_t ptr,
		       uint64_t base, unsigned long long id, char *out, size_t n)
{
	char r[64];

	switch (a) {
	case CU_POINTER_ATTRIBUTE_CONTEXT:
		snprintf(out, n, "%s", ctxname(v->ctx));
		break;
	case CU_POINTER_ATTRIBUTE_DEVICE_POINTER:
	case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR:
		rel(r, sizeof(r), v->dp, base);
		snprintf(out, n, "%s%s", r, v->dp == ptr ? " (=ptr)" : "");
		break;
	case CU_POINTER_ATTRIBUTE_HOST_POINTER:
	case CU_POINTER_ATTRIBUTE_MAPPING_BASE_ADDR:
		rel(r, sizeof(r), (uintptr_t)v->p, base);
		snprintf(out, n, "%s", r);
		break;
	case CU_POINTER_ATTRIBUTE_BUFFER_ID:
	case CU_POINTER_ATTRIBUTE_MEMORY_BLOCK_ID:
		snprintf(out, n, "%s", v->ull == 0 ? "0" : v->ull == id ? "own" : "other");
		break;
	case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL:
		snprintf(out, n, "%d", v->i);
		break;
	case CU_POINTER_ATTRIBUTE_RANGE_SIZE:
	case CU_POINTER_ATTRIBUTE_MAPPING_SIZE:
		snprintf(out, n, "%zu", v->z);
		break;
	case CU_POINTER_ATTRIBUTE_ALLOWED_HANDLE_TYPES:
		snprintf(out, n, "%llu", v->ull);
		break;
	case CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE:
		snprintf(out, n, "%s", v->pool ? "pool" : "null");
		break;
	case CU_POINTER_ATTRIBUTE_P2P_TOKENS:
		snprintf(out, n, "tokens");
		break;
	default:
		snprintf(out, n, "%u", v->u);
		break;
	}
}

static unsigned long long buffer_id(CUdeviceptr p)
{
	unsigned long long id = 0;

	MUST(cuPointerGetAttribute(&id, CU_POINTER_ATTRIBUTE_BUFFER_ID, p));
	return id;
}

/* Every attribute of ptr, one query each, then all at once. */
static void show_attrs(const char *label, uint64_t ptr, uint64_t base, unsigned long long id)
{
	CUpointer_attribute multi[NATTRS];
	union attr_value vals[NATTRS];
	void *data[NATTRS];
	unsigned nmulti = 0;
	char out[128];

	printf("%s attrs:", label);
	for (unsigned i = 0; i < NATTRS; i++) {
		union attr_value v;
		CUresult rc;

		if (all_attrs[i] == CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE && !with_ipc)
			continue;
		memset(&v, 0, sizeof(v));
		rc = cuPointerGetAttribute(&v, all_attrs[i], ptr);
		if (rc == CUDA_SUCCESS) {
			show_value(all_attrs[i], &v, ptr, base, id, out, sizeof(out));
			printf(" %d=%s", all_attrs[i], out);
		} else {
			printf(" %d:%s", all_attrs[i], rcname(rc));
		}
		if (multi_ok(all_attrs[i]))
			multi[nmulti++] = all_attrs[i];
	}
	printf("\n%s multi:", label);
	for (unsigned i = 0; i < nmulti; i++) {
		memset(&vals[i], 0x5a, sizeof(vals[i]));
		data[i] = &vals[i];
	}
	CUresult rc = cuPointerGetAttributes(nmulti, multi, data, ptr);
	if (rc != CUDA_SUCCESS) {
		printf(" %s\n", rcname(rc));
		return;
	}
	for (unsigned i = 0; i < nmulti; i++) {
		show_value(multi[i], &vals[i], ptr, base, id, out, sizeof(out));
		printf(" %d=%s", multi[i], out);
		/* Bytes past the value's own size must stay as they were: an
		 * answer written in the wrong size shows up here. */
		for (size_t b = attr_size(multi[i]); b < sizeof(vals[i].raw); b++)
			if (vals[i].raw[b] != 0x5a) {
				printf("(wrote past its %zu bytes)", attr_size(multi[i]));
				break;
			}
	}
	printf("\n");
}

static void show_range(const char *label, CUdeviceptr p, uint64_t base)
{
	CUdeviceptr b = 0;
	size_t s = 0;
	char r[64];
	CUresult rc = cuMemGetAddressRange(&b, &s, p);

	if (rc != CUDA_SUCCESS) {
		printf("%s range: %s\n", label, rcname(rc));
		return;
	}
	rel(r, sizeof(r), b, base);
	printf("%s range: %s size %zu\n", label, r, s);
}

static size_t mem_free(void)
{
	size_t free_b, total;

	MUST(cuMemGetInfo(&free_b, &total));
	return free_b;
}

/* ---- compare ------------------------------------------------------------------------ */

static void device_allocations(void)
{
	static const size_t sizes[] = { 1, 100, 512, 1000, 4096, 100000, 777777, 3 * MiB,
					5 * MiB + 7 };
	CUdeviceptr p[sizeof(sizes) / sizeof(sizes[0])];
	unsigned long long id[sizeof(sizes) / sizeof(sizes[0])];
	unsigned n = sizeof(sizes) / sizeof(sizes[0]);
	CUdeviceptr x = 0;
	char label[64];

	printf("alloc 0: %s\n", rcname(cuMemAlloc(&x, 0)));
	printf("alloc NULL: %s\n", rcname(cuMemAlloc(NULL, 100)));
	printf("alloc huge: %s\n", rcname(cuMemAlloc(&x, (size_t)1 << 50)));
	for (unsigned i = 0; i < n; i++) {
		MUST(cuMemAlloc(&p[i], sizes[i]));
		id[i] = buffer_id(p[i]);
		printf("alloc %zu: aligned512 %d aligned2M %d\n", sizes[i], p[i] % 512 == 0,
		       sizes[i] >= 2 * MiB ? p[i] % (2 * MiB) == 0 : -1);
		for (unsigned j = 0; j < i; j++)
			if (id[j] == id[i] || p[j] == p[i])
				die("allocations %u and %u share an id or address", j, i);
	}
	/* Contents: through copies and memset, as a kernel-less program sees. */
	for (unsigned i = 0; i < n; i++) {
		unsigned char *h = malloc(sizes[i]), *back = malloc(sizes[i]);
		for (size_t k = 0; k < sizes[i]; k++)
			h[k] = (unsigned char)(k * 7 + i);
		MUST(cuMemcpyHtoD(p[i], h, sizes[i]));
		if (i)
			MUST(cuMemcpyDtoD(p[i - 1], p[i], sizes[i - 1] < sizes[i] ? sizes[i - 1]
										 : sizes[i]));
		MUST(cuMemcpyDtoH(back, p[i], sizes[i]));
		printf("contents %zu: %s\n", sizes[i], memcmp(h, back, sizes[i]) ? "differ" : "same");
		MUST(cuMemsetD8(p[i], 0x3c, sizes[i]));
		MUST(cuMemcpyDtoH(back, p[i], sizes[i]));
		bool set = true;
		for (size_t k = 0; k < sizes[i]; k++)
			set = set && back[k] == 0x3c;
		printf("memset %zu: %s\n", sizes[i], set ? "ok" : "wrong");
		free(h);
		free(back);
	}
	for (unsigned i = 0; i < n; i++) {
		snprintf(label, sizeof(label), "alloc %zu base", sizes[i]);
		show_range(label, p[i], p[i]);
		show_attrs(label, p[i], p[i], id[i]);
		snprintf(label, sizeof(label), "alloc %zu last", sizes[i]);
		show_range(label, p[i] + sizes[i] - 1, p[i]);
		show_attrs(label, p[i] + sizes[i] - 1, p[i], id[i]);
	}
	printf("range no outputs: %s\n", rcname(cuMemGetAddressRange(NULL, NULL, p[0])));
	{
		size_t s = 0;
		CUdeviceptr b = 0;
		printf("range size only: %s %zu\n", rcname(cuMemGetAddressRange(NULL, &s, p[3] + 5)),
		       s);
		printf("range base only: %s %d\n", rcname(cuMemGetAddressRange(&b, NULL, p[3] + 5)),
		       b == p[3]);
	}
	for (unsigned i = 0; i < n; i++) {
		printf("free %zu: %s\n", sizes[i], rcname(cuMemFree(p[i])));
		snprintf(label, sizeof(label), "freed %zu", sizes[i]);
		show_range(label, p[i], p[i]);
		show_attrs(label, p[i], p[i], id[i]);
	}
	/* A new allocation never reuses a buffer id. */
	MUST(cuMemAlloc(&x, 1000));
	bool fresh = true;
	for (unsigned i = 0; i < n; i++)
		fresh = fresh && buffer_id(x) != id[i];
	printf("new id fresh: %d\n", fresh);
	MUST(cuMemFree(x));
	printf("free NULL: %s\n", rcname(cuMemFree(0)));
}

static void pitched(void)
{
	static const size_t widths[] = { 1, 100, 512, 513, 4096, 70000 };
	CUdeviceptr p;
	size_t pitch;

	for (unsigned i = 0; i < sizeof(widths) / sizeof(widths[0]); i++) {
		for (unsigned es = 4; es <= 16; es *= 2) {
			CUresult rc = cuMemAllocPitch(&p, &pitch, widths[i], 3, es);
			printf("pitch %zu x 3 (%u): %s", widths[i], es, rcname(rc));
			if (rc != CUDA_SUCCESS) {
				printf("\n");
				continue;
			}
			printf(" pitch %zu aligned512 %d\n", pitch, p % 512 == 0);
			show_range("pitch", p + pitch * 2 + widths[i] - 1, p);
			show_attrs("pitch", p, p, buffer_id(p));
			MUST(cuMemFree(p));
		}
	}
	printf("pitch es 3: %s\n", rcname(cuMemAllocPitch(&p, &pitch, 100, 3, 3)));
	printf("pitch h 0: %s\n", rcname(cuMemAllocPitch(&p, &pitch, 100, 0, 4)));
	printf("pitch w 0: %s\n", rcname(cuMemAllocPitch(&p, &pitch, 0, 4, 4)));
	printf("pitch NULL: %s\n", rcname(cuMemAllocPitch(&p, NULL, 100, 4, 4)));
}

static void memory_info(void)
{
	CUdeviceptr p;
	size_t before, during, after;

	/* Large allocations: whole chunks, given back at once. */
	before = mem_free();
	MUST(cuMemAlloc(&p, 64 * MiB));
	during = mem_free();
	MUST(cuMemFree(p));
	after = mem_free();
	printf("meminfo: dropped >= 64 MiB %d, dropped < 66 MiB %d, restored %d\n",
	       before - during >= 64 * MiB, before - during < 66 * MiB, after == before);
	/* Well beyond what is free: how much a driver keeps cached for small
	 * allocations (the arena: one spare chunk) is its own business. */
	printf("oom: %s\n", rcname(cuMemAlloc(&p, before + 64 * MiB)));
	/* Nothing leaked (a driver may give cached memory back trying). */
	printf("oom restored %d\n", mem_free() >= before);
}

static void no_context(void)
{
	CUdeviceptr p = 0;
	CUcontext saved;

	MUST(cuCtxPopCurrent(&saved));
	printf("no ctx alloc: %s\n", rcname(cuMemAlloc(&p, 100)));
	printf("no ctx pitch: %s\n", rcname(cuMemAllocPitch(&p, &(size_t){ 0 }, 100, 2, 4)));
	MUST(cuCtxPushCurrent(saved));
	MUST(cuMemAlloc(&p, 100));
	MUST(cuCtxPopCurrent(&saved));
	show_attrs("no ctx", p, p, buffer_id(p));
	show_range("no ctx", p + 50, p);
	printf("no ctx free: %s\n", rcname(cuMemFree(p)));
	MUST(cuCtxPushCurrent(saved));
	MUST(cuMemFree(p));
}

static void context_destruction(CUdevice dev)
{
	CUcontext c;
	CUdeviceptr small, large;
	size_t before;

	before = mem_free();
	MUST(cuCtxCreate(&c, NULL, 0, dev));
	MUST(cuMemAlloc(&small, 1000));
	MUST(cuMemAlloc(&large, 9 * MiB));
	MUST(cuCtxDestroy(c));
	MUST(cuCtxSetCurrent(ctx0));
	show_range("destroyed ctx small", small, small);
	show_range("destroyed ctx large", large, large);
	show_attrs("destroyed ctx large", large, large, 0);
	printf("destroyed ctx: memory back %d\n", mem_free() >= before);
}

static void peer_access(void)
{
	CUdeviceptr p;
	unsigned flags = 99;
	int can = 0;

	if (!ctx1) {
		printf("peer: one device\n");
		return;
	}
	MUST(cuCtxSetCurrent(ctx0));
	MUST(cuMemAlloc(&p, 3 * MiB));
	MUST(cuCtxSetCurrent(ctx1));
	MUST(cuDeviceCanAccessPeer(&can, 1, 0));
	printf("peer: can %d\n", can);
	printf("peer before: %s", rcname(cuPointerGetAttribute(&flags,
			CU_POINTER_ATTRIBUTE_ACCESS_FLAGS, p)));
	printf(" %u\n", flags);
	printf("peer enable: %s\n", rcname(cuCtxEnablePeerAccess(ctx0, 0)));
	printf("peer during: %s", rcname(cuPointerGetAttribute(&flags,
			CU_POINTER_ATTRIBUTE_ACCESS_FLAGS, p)));
	printf(" %u\n", flags);
	/* Chunks made while access is on are accessible too. */
	CUdeviceptr q;
	MUST(cuCtxSetCurrent(ctx0));
	MUST(cuMemAlloc(&q, 7 * MiB));
	MUST(cuCtxSetCurrent(ctx1));
	printf("peer later: %s", rcname(cuPointerGetAttribute(&flags,
			CU_POINTER_ATTRIBUTE_ACCESS_FLAGS, q)));
	printf(" %u\n", flags);
	printf("peer disable: %s\n", rcname(cuCtxDisablePeerAccess(ctx0)));
	printf("peer after: %s", rcname(cuPointerGetAttribute(&flags,
			CU_POINTER_ATTRIBUTE_ACCESS_FLAGS, p)));
	printf(" %u\n", flags);
	/* Device 1's own memory. */
	CUdeviceptr r;
	MUST(cuMemAlloc(&r, 1000));
	show_attrs("dev1", r, r, buffer_id(r));
	MUST(cuMemFree(r));
	MUST(cuCtxSetCurrent(ctx0));
	MUST(cuMemFree(p));
	MUST(cuMemFree(q));
}

static void host_memory(void)
{
	static const unsigned flags[] = {
		0, CU_MEMHOSTALLOC_PORTABLE, CU_MEMHOSTALLOC_DEVICEMAP,
		CU_MEMHOSTALLOC_WRITECOMBINED,
		CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP | CU_MEMHOSTALLOC_WRITECOMBINED,
	};
	const size_t size = 3 * MiB + 123;
	void *p = NULL;
	unsigned f = 0;
	char label[64];

	printf("host alloc 0: %s\n", rcname(cuMemHostAlloc(&p, 0, 0)));
	printf("host alloc bad flags: %s\n", rcname(cuMemHostAlloc(&p, 100, 0x80)));
	printf("host alloc NULL: %s\n", rcname(cuMemAllocHost(NULL, 100)));
	for (unsigned i = 0; i <= sizeof(flags) / sizeof(flags[0]); i++) {
		bool legacy = i == sizeof(flags) / sizeof(flags[0]);
		unsigned fl = legacy ? 0 : flags[i];
		CUresult rc = legacy ? cuMemAllocHost(&p, size) : cuMemHostAlloc(&p, size, fl);
		snprintf(label, sizeof(label), "host %s%#x", legacy ? "legacy " : "", fl);
		printf("%s: %s\n", label, rcname(rc));
		if (rc != CUDA_SUCCESS)
			continue;
		uintptr_t base = (uintptr_t)p;
		memset(p, 0x11, size);
		printf("%s flags: %s", label, rcname(cuMemHostGetFlags(&f, p)));
		printf(" %#x", f);
		printf(" interior %s", rcname(cuMemHostGetFlags(&f, (char *)p + 4096)));
		printf(" %#x\n", f);
		CUdeviceptr dp = 0;
		rc = cuMemHostGetDevicePointer(&dp, (char *)p + 10, 0);
		printf("%s devptr: %s %s\n", label, rcname(rc), dp == base + 10 ? "=host" : "other");
		printf("%s devptr flags 1: %s\n", label,
		       rcname(cuMemHostGetDevicePointer(&dp, p, 1)));
		show_range(label, base + 77, base);
		show_attrs(label, base + 77, base, buffer_id(base));
		printf("%s unregister: %s\n", label, rcname(cuMemHostUnregister(p)));
		printf("%s register again: %s\n", label, rcname(cuMemHostRegister(p, 4096, 0)));
		printf("%s free: %s\n", label, rcname(cuMemFreeHost(p)));
		show_range("freed host", base, base);
	}
	printf("host free NULL: %s\n", rcname(cuMemFreeHost(NULL)));

	/* Async copies through pinned buffers, the reason they exist. */
	const size_t n = 8 * MiB;
	unsigned char *src, *dst;
	CUdeviceptr d;
	CUstream s;
	MUST(cuMemHostAlloc((void **)&src, n, CU_MEMHOSTALLOC_PORTABLE));
	MUST(cuMemAllocHost((void **)&dst, n));
	MUST(cuMemAlloc(&d, n));
	MUST(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
	for (size_t k = 0; k < n; k++)
		src[k] = (unsigned char)(k * 13 + 5);
	memset(dst, 0, n);
	MUST(cuMemcpyHtoDAsync(d, src, n, s));
	MUST(cuMemsetD8Async(d + n / 2, 0xee, 16, s));
	MUST(cuMemcpyDtoHAsync(dst, d, n, s));
	MUST(cuStreamSynchronize(s));
	bool ok = dst[n / 2] == 0xee && dst[n / 2 + 15] == 0xee;
	for (size_t k = 0; k < n && ok; k++)
		if ((k < n / 2 || k >= n / 2 + 16) && dst[k] != src[k])
			ok = false;
	printf("async copies: %s\n", ok ? "ok" : "wrong");
	/* The free waits for queued work on the buffer. */
	MUST(cuMemcpyHtoDAsync(d, src, n, s));
	MUST(cuMemFreeHost(src));
	MUST(cuStreamSynchronize(s));
	MUST(cuStreamDestroy(s));
	MUST(cuMemFreeHost(dst));
	MUST(cuMemFree(d));

	/* The application's own registrations. */
	void *mine = aligned_alloc(4096, 64 * 1024);
	memset(mine, 0, 64 * 1024);
	printf("register: %s\n", rcname(cuMemHostRegister(mine, 64 * 1024,
							   CU_MEMHOSTREGISTER_PORTABLE)));
	printf("register flags: %s", rcname(cuMemHostGetFlags(&f, mine)));
	printf(" %#x\n", f);
	show_attrs("registered", (uintptr_t)mine + 8, (uintptr_t)mine, buffer_id((uintptr_t)mine));
	printf("register twice: %s\n", rcname(cuMemHostRegister(mine, 4096, 0)));
	printf("unregister interior: %s\n", rcname(cuMemHostUnregister((char *)mine + 4096)));
	printf("unregister: %s\n", rcname(cuMemHostUnregister(mine)));
	printf("unregister again: %s\n", rcname(cuMemHostUnregister(mine)));
	free(mine);

	/* Host memory dies with its context, as device memory does. */
	CUcontext c;
	CUdevice dev;
	MUST(cuCtxGetDevice(&dev));
	MUST(cuCtxCreate(&c, NULL, 0, dev));
	MUST(cuMemHostAlloc(&p, 5000, 0));
	MUST(cuCtxDestroy(c));
	MUST(cuCtxSetCurrent(ctx0));
	show_range("host of destroyed ctx", (uintptr_t)p, (uintptr_t)p);
}

static int run_compare(void)
{
	CUdevice dev0, dev1;
	int count = 0;

	MUST(cuInit(0));
	MUST(cuDeviceGetCount(&count));
	MUST(cuDeviceGet(&dev0, 0));
	MUST(cuDevicePrimaryCtxRetain(&ctx0, dev0));
	if (count > 1) {
		MUST(cuDeviceGet(&dev1, 1));
		MUST(cuDevicePrimaryCtxRetain(&ctx1, dev1));
	}
	MUST(cuCtxSetCurrent(ctx0));
	device_allocations();
	pitched();
	memory_info();
	no_context();
	context_destruction(dev0);
	peer_access();
	host_memory();
	MUST(cuCtxSetCurrent(NULL));
	MUST(cuDevicePrimaryCtxRelease(dev0));
	if (ctx1)
		MUST(cuDevicePrimaryCtxRelease(dev1));
	printf("done\n");
	return 0;
}

/* ---- arena ------------------------------------------------------------------------------ */

static int failures;

#define EXPECT(cond, ...)                                                        \
	do {                                                                     \
		if (!(cond)) {                                                   \
			printf("FAIL line %d: %s: ", __LINE__, #cond);           \
			printf(__VA_ARGS__);                                     \
			printf("\n");                                            \
			failures++;                                              \
		}                                                                \
	} while (0)

struct thread_arg {
	CUcontext ctx;
	unsigned seed;
	int errors;
};

static void *thread_main(void *argp)
{
	struct thread_arg *t = argp;
	CUdeviceptr live[16] = { 0 };
	size_t sizes[16] = { 0 };
	unsigned char fill[16] = { 0 };
	unsigned char buf[256];

	if (cuCtxSetCurrent(t->ctx) != CUDA_SUCCESS) {
		t->errors++;
		return NULL;
	}
	for (int step = 0; step < 400; step++) {
		unsigned i = (unsigned)rand_r(&t->seed) % 16;
		if (live[i]) {
			/* The last bytes: an overlap with another allocation
			 * shows there as well as at the start. */
			size_t n = sizes[i] < sizeof(buf) ? sizes[i] : sizeof(buf);
			if (cuMemcpyDtoH(buf, live[i] + sizes[i] - n, n) != CUDA_SUCCESS)
				t->errors++;
			for (size_t k = 0; k < n; k++)
				if (buf[k] != fill[i])
					t->errors++;
			if (cuMemFree(live[i]) != CUDA_SUCCESS)
				t->errors++;
			live[i] = 0;
			continue;
		}
		sizes[i] = 1 + (size_t)rand_r(&t->seed) % (rand_r(&t->seed) % 4 ? 20000 : 3 * MiB);
		if (cuMemAlloc(&live[i], sizes[i]) != CUDA_SUCCESS) {
			t->errors++;
			live[i] = 0;
			continue;
		}
		fill[i] = (unsigned char)rand_r(&t->seed);
		if (cuMemsetD8(live[i], fill[i], sizes[i]) != CUDA_SUCCESS)
			t->errors++;
	}
	for (unsigned i = 0; i < 16; i++)
		if (live[i] && cuMemFree(live[i]) != CUDA_SUCCESS)
			t->errors++;
	return NULL;
}

static int run_arena(void)
{
	const char *env = getenv("GPUSWAP_ARENA_BASE");
	uint64_t base = env ? strtoull(env, NULL, 0) : UINT64_C(0x400000000000);
	const uint64_t stride = UINT64_C(1) << 40;
	CUdevice dev0, dev1;
	CUdeviceptr p, q, r;
	int count = 0;
	CUresult rc;


	MUST(cuInit(0));
	MUST(cuDeviceGetCount(&count));
	MUST(cuDeviceGet(&dev0, 0));
	MUST(cuDevicePrimaryCtxRetain(&ctx0, dev0));
	MUST(cuCtxSetCurrent(ctx0));

	/* In the window of device 0. */
	MUST(cuMemAlloc(&p, 1000));
	MUST(cuMemAlloc(&q, 5 * MiB));
	EXPECT(p >= base && p < base + stride, "small allocation at %#llx", (unsigned long long)p);
	EXPECT(q >= base && q < base + stride, "large allocation at %#llx", (unsigned long long)q);
	EXPECT(q % (2 * MiB) == 0, "large allocation at %#llx", (unsigned long long)q);

	/* Refusals the simulator would abort on. */
	rc = cuMemFree(p + 512);
	EXPECT(rc == CUDA_ERROR_INVALID_VALUE, "interior free: %s", rcname(rc));
	rc = cuMemFree(q + 4096);
	EXPECT(rc == CUDA_ERROR_INVALID_VALUE, "interior free: %s", rcname(rc));
	rc = cuMemFree(base + (UINT64_C(1) << 30));
	EXPECT(rc == CUDA_ERROR_INVALID_VALUE, "free of unused arena space: %s", rcname(rc));
	MUST(cuMemFree(p));
	rc = cuMemFree(p);
	EXPECT(rc == CUDA_ERROR_INVALID_VALUE, "double free: %s", rcname(rc));

	/* Legacy IPC: VMM memory cannot be exported that way, and says so. */
	unsigned ipc = 7;
	MUST(cuPointerGetAttribute(&ipc, CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE, q));
	EXPECT(ipc == 0, "IS_LEGACY_CUDA_IPC_CAPABLE %u", ipc);
	unsigned long long id = buffer_id(q);
	EXPECT(id >= (UINT64_C(1) << 48), "buffer id %llu", id);

	/* Small allocations share chunks: 100 of them cost one 2 MiB chunk. */
	size_t before = mem_free();
	CUdeviceptr many[100];
	for (int i = 0; i < 100; i++)
		MUST(cuMemAlloc(&many[i], 1000));
	size_t used = before - mem_free();
	EXPECT(used <= 2 * MiB, "100 small allocations use %zu bytes", used);
	for (int i = 0; i < 100; i++)
		MUST(cuMemFree(many[i]));

	/* Pinned host memory of a destroyed context is unmapped, as the
	 * driver unmaps its own. */
	CUcontext c;
	void *h;
	MUST(cuCtxCreate(&c, NULL, 0, dev0));
	MUST(cuMemHostAlloc(&h, 5000, 0));
	MUST(cuCtxDestroy(c));
	MUST(cuCtxSetCurrent(ctx0));
	EXPECT(msync(h, 4096, MS_ASYNC) != 0, "host memory of a destroyed context still mapped");

	/* Device 1 has its own window, one stride up. */
	if (count > 1) {
		MUST(cuDeviceGet(&dev1, 1));
		MUST(cuDevicePrimaryCtxRetain(&ctx1, dev1));
		MUST(cuCtxSetCurrent(ctx1));
		MUST(cuMemAlloc(&r, 100));
		EXPECT(r >= base + stride && r < base + 2 * stride, "device 1 allocation at %#llx",
		       (unsigned long long)r);
		int ord = -1;
		MUST(cuPointerGetAttribute(&ord, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, r));
		EXPECT(ord == 1, "ordinal %d", ord);
		MUST(cuMemFree(r));
		MUST(cuCtxSetCurrent(ctx0));
	}

	/* Many threads allocating and freeing at once. */
	pthread_t th[8];
	struct thread_arg args[8];
	for (int i = 0; i < 8; i++) {
		args[i] = (struct thread_arg){ .ctx = ctx0, .seed = 77 + (unsigned)i };
		pthread_create(&th[i], NULL, thread_main, &args[i]);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(th[i], NULL);
		EXPECT(args[i].errors == 0, "thread %d: %d errors", i, args[i].errors);
	}
	MUST(cuMemFree(q));
	if (failures)
		printf("arena: %d failures\n", failures);
	else
		printf("arena: ok\n");
	return failures ? 1 : 0;
}

/*
 * Run with SIMCUDA_FAIL making the second cuMemCreate, cuMemMap or
 * cuMemSetAccess fail: the first serves a small allocation, the second a
 * large one, which must fail with the driver's error and leave device memory
 * as it was; the next allocation works.
 */
static int run_oom(void)
{
	CUdevice dev;
	CUdeviceptr small, large;
	size_t before;
	CUresult rc;

	MUST(cuInit(0));
	MUST(cuDeviceGet(&dev, 0));
	MUST(cuDevicePrimaryCtxRetain(&ctx0, dev));
	MUST(cuCtxSetCurrent(ctx0));
	MUST(cuMemAlloc(&small, 1000));
	before = mem_free();
	rc = cuMemAlloc(&large, 6 * MiB);
	EXPECT(rc != CUDA_SUCCESS, "the injected failure did not happen");
	EXPECT(mem_free() == before, "memory leaked: %zu -> %zu", before, mem_free());
	MUST(cuMemAlloc(&large, 6 * MiB));
	MUST(cuMemFree(large));
	EXPECT(mem_free() == before, "after a good alloc and free: %zu -> %zu", before, mem_free());
	MUST(cuMemFree(small));
	if (failures)
		printf("oom: %d failures (injected: %s)\n", failures, rcname(rc));
	else
		printf("oom: ok (injected: %s)\n", rcname(rc));
	return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "compare") == 0)
		return run_compare();
	if (argc == 2 && strcmp(argv[1], "compare-ipc") == 0) {
		with_ipc = true;
		return run_compare();
	}
	if (argc == 2 && strcmp(argv[1], "arena") == 0)
		return run_arena();
	if (argc == 2 && strcmp(argv[1], "oom") == 0)
		return run_oom();
	fprintf(stderr, "usage: %s compare|compare-ipc|arena|oom\n", argv[0]);
	return 2;
}
