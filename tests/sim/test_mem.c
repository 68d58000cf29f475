/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Device memory: allocation, pitch, address ranges, pointer attributes; every
 * memcpy / memset form (1-D, 2-D, 3-D, asynchronous, peer); page-locked host
 * memory (cuMemHostAlloc, cuMemAllocHost, cuMemHostRegister).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sim_test.h"

TestSuite(mem, .timeout = SIM_TEST_TIMEOUT);

static void fill_pattern(unsigned char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)(seed + i * 7 + (i >> 8));
}

static void assert_bytes(const unsigned char *p, unsigned char v, size_t from, size_t to)
{
	for (size_t i = from; i < to; i++)
		cr_assert_eq(p[i], v, "byte %zu is %#x, expected %#x", i, p[i], v);
}

Test(mem, alloc_zero_bytes_fails)
{
	CUdeviceptr p = 0;

	st_init(0);
	CU_ERR(cuMemAlloc(&p, 0), CUDA_ERROR_INVALID_VALUE);
	CU_ERR(cuMemAlloc(NULL, 16), CUDA_ERROR_INVALID_VALUE);
}

Test(mem, allocations_aligned_and_disjoint)
{
	static const size_t sizes[] = { 1, 3, 255, 256, 257, 4096, 100000, 1 << 20 };
	enum { N = sizeof(sizes) / sizeof(sizes[0]) };
	CUdeviceptr p[N];

	st_init(0);
	for (int i = 0; i < N; i++) {
		CU_OK(cuMemAlloc(&p[i], sizes[i]));
		/* cudaMalloc guarantees at least 256-byte alignment. */
		cr_assert_eq(p[i] % 256, 0, "allocation %#llx not 256-aligned",
			     (unsigned long long)p[i]);
	}
	for (int i = 0; i < N; i++)
		for (int j = 0; j < N; j++)
			if (i != j)
				cr_assert(p[i] + sizes[i] <= p[j] || p[j] + sizes[j] <= p[i],
					  "allocations %d and %d overlap", i, j);
	for (int i = 0; i < N; i++)
		CU_OK(cuMemFree(p[i]));
}

Test(mem, address_range)
{
	CUdeviceptr p, base = 0;
	size_t size = 0;

	st_init(0);
	CU_OK(cuMemAlloc(&p, 1000));
	CU_OK(cuMemGetAddressRange(&base, &size, p + 999));
	cr_assert_eq(base, p);
	cr_assert_eq(size, 1000);
	CU_OK(cuMemGetAddressRange(&base, NULL, p + 10));
	cr_assert_eq(base, p);
	CU_OK(cuMemGetAddressRange(NULL, &size, p));
	cr_assert_eq(size, 1000);
	CU_OK(cuMemFree(p));
}

Test(mem, pitch)
{
	CUdeviceptr p, base;
	size_t pitch = 0, size = 0;
	int align = 0;

	st_init(0);
	CU_OK(cuDeviceGetAttribute(&align, CU_DEVICE_ATTRIBUTE_TEXTURE_PITCH_ALIGNMENT,
				   st_device(0)));
	CU_OK(cuMemAllocPitch(&p, &pitch, 100, 7, 4));
	cr_assert_geq(pitch, 100);
	cr_assert_eq(pitch % (size_t)align, 0, "pitch %zu not a multiple of %d", pitch, align);
	CU_OK(cuMemGetAddressRange(&base, &size, p + 6 * pitch + 99));
	cr_assert_eq(base, p);
	cr_assert_geq(size, 6 * pitch + 100);
	CU_OK(cuMemFree(p));
}

Test(mem, pointer_attributes_device)
{
	CUcontext ctx;
	CUdeviceptr p, q;
	unsigned type = 0, managed = 7;
	CUcontext owner = NULL;
	CUdeviceptr dptr = 0, start = 0;
	size_t range = 0;
	int ordinal = -1;
	unsigned long long id_p = 0, id_q = 0;

	ctx = st_init(1);
	CU_OK(cuMemAlloc(&p, 3000));
	CU_OK(cuMemAlloc(&q, 64));
	CU_OK(cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, p + 5));
	cr_assert_eq(type, CU_MEMORYTYPE_DEVICE);
	CU_OK(cuPointerGetAttribute(&owner, CU_POINTER_ATTRIBUTE_CONTEXT, p + 5));
	cr_assert_eq(owner, ctx);
	CU_OK(cuPointerGetAttribute(&dptr, CU_POINTER_ATTRIBUTE_DEVICE_POINTER, p + 5));
	cr_assert_eq(dptr, p + 5);
	CU_OK(cuPointerGetAttribute(&ordinal, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, p));
	cr_assert_eq(ordinal, 1);
	CU_OK(cuPointerGetAttribute(&managed, CU_POINTER_ATTRIBUTE_IS_MANAGED, p));
	cr_assert_eq(managed, 0);
	CU_OK(cuPointerGetAttribute(&start, CU_POINTER_ATTRIBUTE_RANGE_START_ADDR, p + 2999));
	cr_assert_eq(start, p);
	CU_OK(cuPointerGetAttribute(&range, CU_POINTER_ATTRIBUTE_RANGE_SIZE, p + 2999));
	cr_assert_eq(range, 3000);
	CU_OK(cuPointerGetAttribute(&id_p, CU_POINTER_ATTRIBUTE_BUFFER_ID, p));
	CU_OK(cuPointerGetAttribute(&id_q, CU_POINTER_ATTRIBUTE_BUFFER_ID, q));
	cr_assert_neq(id_p, id_q, "two allocations share a buffer id");

	/* The bulk query answers the same. */
	CUpointer_attribute attrs[] = { CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
					CU_POINTER_ATTRIBUTE_CONTEXT,
					CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL };
	unsigned type2 = 0;
	CUcontext owner2 = NULL;
	int ordinal2 = -1;
	void *data[] = { &type2, &owner2, &ordinal2 };
	CU_OK(cuPointerGetAttributes(3, attrs, data, p + 1));
	cr_assert_eq(type2, CU_MEMORYTYPE_DEVICE);
	cr_assert_eq(owner2, ctx);
	cr_assert_eq(ordinal2, 1);
}

Test(mem, pointer_attributes_unknown)
{
	int local = 0;
	unsigned type = 99;
	CUpointer_attribute a = CU_POINTER_ATTRIBUTE_MEMORY_TYPE;
	void *data[] = { &type };

	st_init(0);
	/* Ordinary host memory is no CUDA pointer: the single query fails... */
	CU_ERR(cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
				     (CUdeviceptr)(uintptr_t)&local),
	       CUDA_ERROR_INVALID_VALUE);
	/* ...while the bulk one succeeds and answers "no type" (documented). */
	CU_OK(cuPointerGetAttributes(1, &a, data, (CUdeviceptr)(uintptr_t)&local));
	cr_assert_eq(type, 0);
}

Test(mem, memcpy_sync_forms)
{
	enum { N = 5000 };
	static unsigned char src[N], out[N];
	CUdeviceptr a, b;
	void *pinned;

	st_init(0);
	fill_pattern(src, N, 3);
	CU_OK(cuMemAlloc(&a, N));
	CU_OK(cuMemAlloc(&b, N));
	CU_OK(cuMemcpyHtoD(a, src, N));
	CU_OK(cuMemcpyDtoD(b, a, N));
	memset(out, 0, N);
	CU_OK(cuMemcpyDtoH(out, b, N));
	cr_assert_arr_eq(out, src, N);

	/* Sub-ranges at odd offsets. */
	CU_OK(cuMemsetD8(b, 0, N));
	CU_OK(cuMemcpyDtoD(b + 17, a + 101, 333));
	CU_OK(cuMemcpyDtoH(out, b, N));
	assert_bytes(out, 0, 0, 17);
	cr_assert_arr_eq(out + 17, src + 101, 333);
	assert_bytes(out, 0, 17 + 333, N);

	/* cuMemcpy infers directions from unified addresses. */
	CU_OK(cuMemHostAlloc(&pinned, N, 0));
	memset(pinned, 0, N);
	CU_OK(cuMemcpy((CUdeviceptr)(uintptr_t)pinned, a, N));
	cr_assert_arr_eq(pinned, src, N);
	CU_OK(cuMemsetD8(b, 0x5a, N));
	CU_OK(cuMemcpy(b, (CUdeviceptr)(uintptr_t)pinned, N / 2));
	CU_OK(cuMemcpyDtoH(out, b, N));
	cr_assert_arr_eq(out, src, N / 2);
	assert_bytes(out, 0x5a, N / 2, N);
	CU_OK(cuMemFreeHost(pinned));
}

Test(mem, memset_1d_forms)
{
	enum { N = 1024 };
	static unsigned char out[N];
	CUdeviceptr p;
	uint16_t h;
	uint32_t w;

	st_init(0);
	CU_OK(cuMemAlloc(&p, N));
	CU_OK(cuMemsetD8(p, 0x11, N));
	CU_OK(cuMemsetD8(p + 3, 0xab, 5));
	CU_OK(cuMemsetD16(p + 64, 0xbeef, 10));
	CU_OK(cuMemsetD32(p + 128, 0xdeadbeef, 20));
	CU_OK(cuMemcpyDtoH(out, p, N));
	assert_bytes(out, 0x11, 0, 3);
	assert_bytes(out, 0xab, 3, 8);
	assert_bytes(out, 0x11, 8, 64);
	for (int i = 0; i < 10; i++) {
		memcpy(&h, out + 64 + 2 * i, 2);
		cr_assert_eq(h, 0xbeef);
	}
	assert_bytes(out, 0x11, 84, 128);
	for (int i = 0; i < 20; i++) {
		memcpy(&w, out + 128 + 4 * i, 4);
		cr_assert_eq(w, 0xdeadbeef);
	}
	assert_bytes(out, 0x11, 208, N);
	/* D16 / D32 need 2- / 4-byte aligned destinations. */
	CU_FAILS(cuMemsetD16(p + 1, 0, 4));
	CU_FAILS(cuMemsetD32(p + 2, 0, 4));
}

Test(mem, memset_2d_forms)
{
	CUdeviceptr p;
	size_t pitch;
	unsigned char *out;
	const size_t width = 40, height = 6; /* bytes, rows */

	st_init(0);
	CU_OK(cuMemAllocPitch(&p, &pitch, width, height, 4));
	out = malloc(pitch * height);
	cr_assert(out);

	CU_OK(cuMemsetD8(p, 0, pitch * height));
	CU_OK(cuMemsetD2D8(p, pitch, 0x77, width, height));
	CU_OK(cuMemcpyDtoH(out, p, pitch * height));
	for (size_t r = 0; r < height; r++) {
		assert_bytes(out + r * pitch, 0x77, 0, width);
		assert_bytes(out + r * pitch, 0, width, pitch);
	}

	CU_OK(cuMemsetD8(p, 0, pitch * height));
	CU_OK(cuMemsetD2D16(p + 2, pitch, 0x1234, 5, 3)); /* 10 bytes x 3 rows */
	CU_OK(cuMemcpyDtoH(out, p, pitch * height));
	for (size_t r = 0; r < height; r++) {
		for (size_t c = 0; c < pitch; c += 2) {
			uint16_t v;
			memcpy(&v, out + r * pitch + c, 2);
			bool inside = r < 3 && c >= 2 && c < 12;
			cr_assert_eq(v, inside ? 0x1234 : 0, "row %zu byte %zu: %#x", r, c, v);
		}
	}

	CU_OK(cuMemsetD8(p, 0, pitch * height));
	CU_OK(cuMemsetD2D32(p + pitch, pitch, 0xcafef00d, 10, 2)); /* rows 1-2 */
	CU_OK(cuMemcpyDtoH(out, p, pitch * height));
	for (size_t r = 0; r < height; r++) {
		for (size_t c = 0; c < pitch; c += 4) {
			uint32_t v;
			memcpy(&v, out + r * pitch + c, 4);
			bool inside = (r == 1 || r == 2) && c < 40;
			cr_assert_eq(v, inside ? 0xcafef00du : 0, "row %zu byte %zu: %#x", r, c, v);
		}
	}
	free(out);
}

Test(mem, memcpy_2d)
{
	enum { SP = 64, SH = 8 };
	static unsigned char host[SP * SH], back[SP * SH];
	CUdeviceptr p;
	size_t pitch;
	unsigned char *dev_image;

	st_init(0);
	fill_pattern(host, sizeof(host), 9);
	CU_OK(cuMemAllocPitch(&p, &pitch, 100, 10, 4));
	CU_OK(cuMemsetD8(p, 0, pitch * 10));

	/* 40 x 5 bytes from (8, 1) of the host image to (16, 2) on the device. */
	CUDA_MEMCPY2D c = {
		.srcXInBytes = 8, .srcY = 1, .srcMemoryType = CU_MEMORYTYPE_HOST,
		.srcHost = host, .srcPitch = SP,
		.dstXInBytes = 16, .dstY = 2, .dstMemoryType = CU_MEMORYTYPE_DEVICE,
		.dstDevice = p, .dstPitch = pitch,
		.WidthInBytes = 40, .Height = 5,
	};
	CU_OK(cuMemcpy2D(&c));
	dev_image = malloc(pitch * 10);
	cr_assert(dev_image);
	CU_OK(cuMemcpyDtoH(dev_image, p, pitch * 10));
	for (size_t r = 0; r < 10; r++) {
		for (size_t x = 0; x < pitch; x++) {
			unsigned char want = 0;
			if (r >= 2 && r < 7 && x >= 16 && x < 56)
				want = host[(r - 2 + 1) * SP + (x - 16 + 8)];
			cr_assert_eq(dev_image[r * pitch + x], want, "row %zu x %zu", r, x);
		}
	}

	/* And back with the unaligned variant, device to host. */
	memset(back, 0, sizeof(back));
	CUDA_MEMCPY2D d = {
		.srcXInBytes = 16, .srcY = 2, .srcMemoryType = CU_MEMORYTYPE_DEVICE,
		.srcDevice = p, .srcPitch = pitch,
		.dstXInBytes = 8, .dstY = 1, .dstMemoryType = CU_MEMORYTYPE_HOST,
		.dstHost = back, .dstPitch = SP,
		.WidthInBytes = 40, .Height = 5,
	};
	CU_OK(cuMemcpy2DUnaligned(&d));
	for (size_t r = 1; r < 6; r++)
		cr_assert_arr_eq(back + r * SP + 8, host + r * SP + 8, 40, "row %zu", r);
	assert_bytes(back, 0, 0, SP + 8);

	free(dev_image);
}

Test(mem, memcpy_3d)
{
	enum { PITCH = 32, ROWS = 5, SLICES = 3 };
	static unsigned char host[PITCH * ROWS * SLICES], out[16 * 4 * 2];
	CUdeviceptr p, q;

	st_init(0);
	fill_pattern(host, sizeof(host), 13);
	CU_OK(cuMemAlloc(&p, sizeof(host)));
	CU_OK(cuMemAlloc(&q, sizeof(out)));
	CU_OK(cuMemcpyHtoD(p, host, sizeof(host)));
	CU_OK(cuMemsetD8(q, 0, sizeof(out)));
	/* 16 x 4 x 2 bytes from (x 8, y 1, z 1) of a 32 x 5 x 3 volume into a
	 * packed 16 x 4 x 2 one. */
	CUDA_MEMCPY3D t = {
		.srcXInBytes = 8, .srcY = 1, .srcZ = 1,
		.srcMemoryType = CU_MEMORYTYPE_DEVICE, .srcDevice = p, .srcPitch = PITCH,
		.srcHeight = ROWS,
		.dstMemoryType = CU_MEMORYTYPE_DEVICE, .dstDevice = q, .dstPitch = 16,
		.dstHeight = 4,
		.WidthInBytes = 16, .Height = 4, .Depth = 2,
	};
	CU_OK(cuMemcpy3D(&t));
	CU_OK(cuMemcpyDtoH(out, q, sizeof(out)));
	for (size_t z = 0; z < 2; z++)
		for (size_t y = 0; y < 4; y++)
			cr_assert_arr_eq(out + (z * 4 + y) * 16,
					 host + ((z + 1) * ROWS + y + 1) * PITCH + 8, 16,
					 "slice %zu row %zu", z, y);

	/* The asynchronous form, back to the host (into pinned memory). */
	unsigned char *pinned;
	CUstream s;
	CU_OK(cuStreamCreate(&s, 0));
	CU_OK(cuMemAllocHost((void **)&pinned, sizeof(out)));
	memset(pinned, 0, sizeof(out));
	CUDA_MEMCPY3D back = {
		.srcMemoryType = CU_MEMORYTYPE_DEVICE, .srcDevice = q, .srcPitch = 16,
		.srcHeight = 4,
		.dstMemoryType = CU_MEMORYTYPE_HOST, .dstHost = pinned, .dstPitch = 16,
		.dstHeight = 4,
		.WidthInBytes = 16, .Height = 4, .Depth = 2,
	};
	CU_OK(cuMemcpy3DAsync(&back, s));
	CU_OK(cuStreamSynchronize(s));
	cr_assert_arr_eq(pinned, out, sizeof(out));
}

Test(mem, memcpy_3d_peer)
{
	enum { N = 16 * 4 * 2 };
	unsigned char src[N], out[N];
	CUcontext c0, c1;
	CUdeviceptr p0, p1;

	st_setenv("SIMCUDA_DEVICES", "2");
	c0 = st_init(0);
	fill_pattern(src, N, 31);
	CU_OK(cuMemAlloc(&p0, N));
	CU_OK(cuMemcpyHtoD(p0, src, N));
	CU_OK(cuDevicePrimaryCtxRetain(&c1, st_device(1)));
	CU_OK(cuCtxSetCurrent(c1));
	CU_OK(cuMemAlloc(&p1, N));
	CUDA_MEMCPY3D_PEER t = {
		.srcMemoryType = CU_MEMORYTYPE_DEVICE, .srcDevice = p0, .srcContext = c0,
		.srcPitch = 16, .srcHeight = 4,
		.dstMemoryType = CU_MEMORYTYPE_DEVICE, .dstDevice = p1, .dstContext = c1,
		.dstPitch = 16, .dstHeight = 4,
		.WidthInBytes = 16, .Height = 4, .Depth = 2,
	};
	CU_OK(cuMemcpy3DPeer(&t));
	CU_OK(cuMemcpyDtoH(out, p1, N));
	cr_assert_arr_eq(out, src, N);
}

Test(mem, async_forms)
{
	enum { N = 4096 };
	unsigned char *h_src, *h_dst;
	CUdeviceptr a, b;
	CUstream s;

	st_init(0);
	CU_OK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
	CU_OK(cuMemAllocHost((void **)&h_src, N));
	CU_OK(cuMemHostAlloc((void **)&h_dst, N, CU_MEMHOSTALLOC_PORTABLE));
	fill_pattern(h_src, N, 21);
	memset(h_dst, 0, N);
	CU_OK(cuMemAlloc(&a, N));
	CU_OK(cuMemAlloc(&b, N));

	CU_OK(cuMemcpyHtoDAsync(a, h_src, N, s));
	CU_OK(cuMemcpyDtoDAsync(b, a, N, s));
	CU_OK(cuMemsetD8Async(b, 0x42, 10, s));
	CU_OK(cuMemsetD16Async(b + 10, 0x4343, 5, s));
	CU_OK(cuMemsetD32Async(b + 20, 0x44444444, 5, s));
	CU_OK(cuMemcpyDtoHAsync(h_dst, b, N, s));
	CU_OK(cuStreamSynchronize(s));
	assert_bytes(h_dst, 0x42, 0, 10);
	assert_bytes(h_dst, 0x43, 10, 20);
	assert_bytes(h_dst, 0x44, 20, 40);
	cr_assert_arr_eq(h_dst + 40, h_src + 40, N - 40);

	memset(h_dst, 0, N);
	CU_OK(cuMemcpyAsync((CUdeviceptr)(uintptr_t)h_dst, a, N, s));
	CU_OK(cuStreamSynchronize(s));
	cr_assert_arr_eq(h_dst, h_src, N);

	/* 2-D asynchronous forms. */
	CU_OK(cuMemsetD2D32Async(a, 64, 0x01020304, 4, 8, s)); /* 16 of each 64 bytes */
	CUDA_MEMCPY2D c = {
		.srcMemoryType = CU_MEMORYTYPE_DEVICE, .srcDevice = a, .srcPitch = 64,
		.dstMemoryType = CU_MEMORYTYPE_HOST, .dstHost = h_dst, .dstPitch = 16,
		.WidthInBytes = 16, .Height = 8,
	};
	memset(h_dst, 0, N);
	CU_OK(cuMemcpy2DAsync(&c, s));
	CU_OK(cuStreamSynchronize(s));
	for (int i = 0; i < 16 * 8; i += 4) {
		uint32_t v;
		memcpy(&v, h_dst + i, 4);
		cr_assert_eq(v, 0x01020304u, "word at %d: %#x", i, v);
	}
	assert_bytes(h_dst, 0, 16 * 8, N);

	CU_OK(cuMemsetD8Async(a, 0, 64 * 4, s));
	CU_OK(cuMemsetD2D8Async(a, 64, 0x9a, 3, 2, s));
	CU_OK(cuMemsetD2D16Async(a + 128, 64, 0x7b7b, 2, 2, s));
	CU_OK(cuMemcpyDtoHAsync(h_dst, a, 64 * 4, s));
	CU_OK(cuStreamSynchronize(s));
	for (int r = 0; r < 4; r++) {
		for (int x = 0; x < 64; x++) {
			unsigned char want = 0;
			if (r < 2 && x < 3)
				want = 0x9a;
			if (r >= 2 && x < 4)
				want = 0x7b;
			cr_assert_eq(h_dst[r * 64 + x], want, "row %d byte %d", r, x);
		}
	}
	CU_OK(cuStreamDestroy(s));
	CU_OK(cuMemFreeHost(h_src));
	CU_OK(cuMemFreeHost(h_dst));
}

Test(mem, peer_copies)
{
	enum { N = 10000 };
	static unsigned char src[N], out[N];
	CUcontext c0, c1;
	CUdeviceptr p0, p1, q1;
	CUstream s1;

	st_setenv("SIMCUDA_DEVICES", "2");
	c0 = st_init(0);
	CU_OK(cuMemAlloc(&p0, N));
	fill_pattern(src, N, 77);
	CU_OK(cuMemcpyHtoD(p0, src, N));
	CU_OK(cuDevicePrimaryCtxRetain(&c1, st_device(1)));
	CU_OK(cuCtxSetCurrent(c1));
	CU_OK(cuMemAlloc(&p1, N));
	CU_OK(cuMemAlloc(&q1, N));
	CU_OK(cuStreamCreate(&s1, 0));

	CU_OK(cuMemcpyPeer(p1, c1, p0, c0, N));
	CU_OK(cuMemcpyDtoH(out, p1, N));
	cr_assert_arr_eq(out, src, N);

	CU_OK(cuMemsetD8(q1, 0, N));
	CU_OK(cuMemcpyPeerAsync(q1 + 1, c1, p0 + 2, c0, N - 2, s1));
	CU_OK(cuStreamSynchronize(s1));
	CU_OK(cuMemcpyDtoH(out, q1, N));
	cr_assert_eq(out[0], 0);
	cr_assert_arr_eq(out + 1, src + 2, N - 2);

	/* With unified addressing a plain device-to-device copy crosses
	 * devices too. */
	CU_OK(cuMemsetD8(q1, 0, N));
	CU_OK(cuMemcpyDtoD(q1, p0, N));
	CU_OK(cuMemcpyDtoH(out, q1, N));
	cr_assert_arr_eq(out, src, N);
}

Test(mem, host_alloc)
{
	unsigned *h;
	CUdeviceptr d = 0;
	unsigned flags = 0, type = 0;
	void *hp = NULL;
	unsigned back[64];
	CUcontext ctx, owner = NULL;

	ctx = st_init(0);
	CU_OK(cuMemHostAlloc((void **)&h, 64 * sizeof(unsigned),
			     CU_MEMHOSTALLOC_DEVICEMAP | CU_MEMHOSTALLOC_PORTABLE));
	CU_OK(cuMemHostGetFlags(&flags, h));
	cr_assert_eq(flags & (CU_MEMHOSTALLOC_DEVICEMAP | CU_MEMHOSTALLOC_PORTABLE),
		     CU_MEMHOSTALLOC_DEVICEMAP | CU_MEMHOSTALLOC_PORTABLE, "flags %#x", flags);
	CU_OK(cuMemHostGetDevicePointer(&d, h, 0));
	cr_assert_neq(d, 0);
	CU_OK(cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
				    (CUdeviceptr)(uintptr_t)h));
	cr_assert_eq(type, CU_MEMORYTYPE_HOST);
	CU_OK(cuPointerGetAttribute(&hp, CU_POINTER_ATTRIBUTE_HOST_POINTER, d));
	cr_assert_eq(hp, (void *)h);
	CU_OK(cuPointerGetAttribute(&owner, CU_POINTER_ATTRIBUTE_CONTEXT, d));
	cr_assert_eq(owner, ctx);

	/* Host writes are what the device sees through the mapping, and the
	 * other way round. */
	for (int i = 0; i < 64; i++)
		h[i] = 1000u + (unsigned)i;
	CU_OK(cuMemcpyDtoH(back, d, sizeof(back)));
	for (int i = 0; i < 64; i++)
		cr_assert_eq(back[i], 1000u + (unsigned)i);
	CU_OK(cuMemsetD32(d + 8, 7, 4));
	cr_assert_eq(h[2], 7);
	cr_assert_eq(h[5], 7);
	cr_assert_eq(h[6], 1006);
	CU_OK(cuMemFreeHost(h));

	void *h2;
	CU_OK(cuMemAllocHost(&h2, 100));
	CU_OK(cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
				    (CUdeviceptr)(uintptr_t)h2));
	cr_assert_eq(type, CU_MEMORYTYPE_HOST);
	CU_OK(cuMemFreeHost(h2));
}

Test(mem, host_register)
{
	enum { N = 3 * 4096 };
	unsigned char *buf = aligned_alloc(4096, N), out[256];
	CUdeviceptr d = 0, dev;
	unsigned type = 0;
	CUstream s;

	cr_assert(buf);
	st_init(0);
	fill_pattern(buf, N, 5);
	CU_OK(cuMemHostRegister(buf, N, CU_MEMHOSTREGISTER_DEVICEMAP));
	CU_ERR(cuMemHostRegister(buf, N, 0), CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED);
	CU_OK(cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
				    (CUdeviceptr)(uintptr_t)(buf + 100)));
	cr_assert_eq(type, CU_MEMORYTYPE_HOST);
	CU_OK(cuMemHostGetDevicePointer(&d, buf + 4096, 0));

	/* Registered memory works in asynchronous copies like pinned memory. */
	CU_OK(cuStreamCreate(&s, 0));
	CU_OK(cuMemAlloc(&dev, N));
	CU_OK(cuMemcpyHtoDAsync(dev, buf, N, s));
	CU_OK(cuMemsetD8Async(d, 0xee, 16, s)); /* through the mapping, page 1 */
	CU_OK(cuStreamSynchronize(s));
	assert_bytes(buf, 0xee, 4096, 4096 + 16);
	CU_OK(cuMemcpyDtoH(out, dev + 4096 - 128, sizeof(out)));
	/* Page 1 was overwritten only after the host-to-device copy. */
	for (int i = 0; i < 256; i++) {
		size_t at = 4096 - 128 + (size_t)i;
		unsigned char v = (unsigned char)(5 + at * 7 + (at >> 8));
		cr_assert_eq(out[i], v, "byte %zu", at);
	}

	CU_OK(cuMemHostUnregister(buf));
	CU_ERR(cuMemHostUnregister(buf), CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED);
	CU_ERR(cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
				     (CUdeviceptr)(uintptr_t)buf),
	       CUDA_ERROR_INVALID_VALUE);
	free(buf);
}

Test(mem, free_and_reuse)
{
	CUdeviceptr p, q;
	size_t free0;

	st_init(0);
	free0 = st_mem_free();
	for (int i = 0; i < 200; i++) {
		CU_OK(cuMemAlloc(&p, (size_t)(i + 1) * 4096));
		CU_OK(cuMemAlloc(&q, 512));
		CU_OK(cuMemFree(p));
		CU_OK(cuMemFree(q));
	}
	cr_assert_eq(st_mem_free(), free0, "memory leaked over alloc/free cycles");
}
