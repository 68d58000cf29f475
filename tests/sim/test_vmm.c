/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Virtual memory management: granularity, reservations (the address hint is
 * what gpuswap's restore relies on), physical allocations, mapping (one
 * chunk at two addresses), access control, and accounting.
 */
#include <stdint.h>
#include <string.h>

#include "sim_test.h"

TestSuite(vmm, .timeout = SIM_TEST_TIMEOUT);

static CUmemAllocationProp prop_on(int dev)
{
	CUmemAllocationProp prop = {
		.type = CU_MEM_ALLOCATION_TYPE_PINNED,
		.location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = dev },
	};
	return prop;
}

static size_t granularity(int dev)
{
	CUmemAllocationProp prop = prop_on(dev);
	size_t g = 0;

	CU_OK(cuMemGetAllocationGranularity(&g, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
	return g;
}

static CUmemGenericAllocationHandle create(int dev, size_t size)
{
	CUmemAllocationProp prop = prop_on(dev);
	CUmemGenericAllocationHandle h = 0;

	CU_OK(cuMemCreate(&h, size, &prop, 0));
	return h;
}

static void set_access(CUdeviceptr p, size_t size, int dev, CUmemAccess_flags flags)
{
	CUmemAccessDesc d = {
		.location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = dev },
		.flags = flags,
	};

	CU_OK(cuMemSetAccess(p, size, &d, 1));
}

Test(vmm, granularity)
{
	CUmemAllocationProp prop = prop_on(0);
	size_t min = 0, rec = 0;

	st_init(0);
	CU_OK(cuMemGetAllocationGranularity(&min, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
	CU_OK(cuMemGetAllocationGranularity(&rec, &prop, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED));
	cr_assert_gt(min, 0);
	cr_assert_eq(min & (min - 1), 0, "granularity %zu not a power of two", min);
	cr_assert_geq(rec, min);
	cr_assert_eq(rec % min, 0);
}

Test(vmm, reserve_hint_honoured)
{
	size_t g, size;
	CUdeviceptr a = 0, b = 0, c = 0;

	st_init(0);
	g = granularity(0);
	size = 4 * g;
	CU_OK(cuMemAddressReserve(&a, size, 0, 0, 0));
	cr_assert_neq(a, 0);
	cr_assert_eq(a % g, 0);
	CU_OK(cuMemAddressFree(a, size));
	/* The range is free again: asking for it by hint gives exactly it. */
	CU_OK(cuMemAddressReserve(&b, size, 0, a, 0));
	cr_assert_eq(b, a, "hint %#llx ignored, got %#llx", (unsigned long long)a,
		     (unsigned long long)b);
	/* A free hint right after it, too. */
	CU_OK(cuMemAddressReserve(&c, size, 0, a + size, 0));
	cr_assert_eq(c, a + size, "hint %#llx ignored, got %#llx",
		     (unsigned long long)(a + size), (unsigned long long)c);
	CU_OK(cuMemAddressFree(b, size));
	CU_OK(cuMemAddressFree(c, size));
}

Test(vmm, reserve_overlap_refused)
{
	size_t g, size;
	CUdeviceptr a = 0, b = 0;
	CUresult rc;

	st_init(0);
	g = granularity(0);
	size = 4 * g;
	CU_OK(cuMemAddressReserve(&a, size, 0, 0, 0));
	/* A hint inside a reservation cannot be honoured: the driver either
	 * fails or picks another range, never one that overlaps. */
	rc = cuMemAddressReserve(&b, size, 0, a + g, 0);
	if (rc == CUDA_SUCCESS) {
		cr_assert(b + size <= a || a + size <= b, "reservation %#llx overlaps %#llx",
			  (unsigned long long)b, (unsigned long long)a);
		CU_OK(cuMemAddressFree(b, size));
	}
	/* Nor does a cuMemAlloc land in a reservation. */
	CUdeviceptr p;
	CU_OK(cuMemAlloc(&p, g));
	cr_assert(p + g <= a || a + size <= p, "cuMemAlloc inside a reservation");
}

Test(vmm, map_write_read)
{
	size_t g = 0;
	CUdeviceptr va;
	CUmemGenericAllocationHandle h;
	unsigned char out[64];

	st_init(0);
	g = granularity(0);
	CU_OK(cuMemAddressReserve(&va, 2 * g, 0, 0, 0));
	h = create(0, 2 * g);
	CU_OK(cuMemMap(va, 2 * g, 0, h, 0));
	set_access(va, 2 * g, 0, CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
	CU_OK(cuMemsetD8(va, 0x3c, 2 * g));
	CU_OK(cuMemsetD32(va + g - 8, 0x01020304, 4)); /* across the chunk's middle */
	CU_OK(cuMemcpyDtoH(out, va + g - 32, sizeof(out)));
	for (int i = 0; i < 24; i++)
		cr_assert_eq(out[i], 0x3c);
	for (int i = 24; i < 40; i += 4) {
		uint32_t v;
		memcpy(&v, out + i, 4);
		cr_assert_eq(v, 0x01020304u);
	}
	CU_OK(cuMemUnmap(va, 2 * g));
	CU_OK(cuMemRelease(h));
	CU_OK(cuMemAddressFree(va, 2 * g));
}

Test(vmm, one_chunk_at_two_addresses)
{
	size_t g;
	CUdeviceptr a, b;
	CUmemGenericAllocationHandle h;
	uint32_t v = 0;

	st_init(0);
	g = granularity(0);
	CU_OK(cuMemAddressReserve(&a, g, 0, 0, 0));
	CU_OK(cuMemAddressReserve(&b, g, 0, 0, 0));
	cr_assert_neq(a, b);
	h = create(0, g);
	CU_OK(cuMemMap(a, g, 0, h, 0));
	CU_OK(cuMemMap(b, g, 0, h, 0));
	set_access(a, g, 0, CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
	set_access(b, g, 0, CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
	CU_OK(cuMemsetD32(a + 64, 0xfeedface, 1));
	CU_OK(cuMemcpyDtoH(&v, b + 64, 4));
	cr_assert_eq(v, 0xfeedfaceu, "a write through one mapping not seen through the other");
	CU_OK(cuMemsetD32(b + g - 4, 0x600df00d, 1));
	CU_OK(cuMemcpyDtoH(&v, a + g - 4, 4));
	cr_assert_eq(v, 0x600df00du);
	/* Unmapping one address leaves the other working. */
	CU_OK(cuMemUnmap(a, g));
	CU_OK(cuMemcpyDtoH(&v, b + 64, 4));
	cr_assert_eq(v, 0xfeedfaceu);
}

Test(vmm, release_while_mapped_keeps_memory)
{
	size_t g, free_mapped;
	CUdeviceptr va;
	CUmemGenericAllocationHandle h;
	uint32_t v = 0;

	st_init(0);
	g = granularity(0);
	CU_OK(cuMemAddressReserve(&va, g, 0, 0, 0));
	size_t free0 = st_mem_free();
	h = create(0, g);
	cr_assert_leq(st_mem_free(), free0 - g, "cuMemCreate not counted in cuMemGetInfo");
	CU_OK(cuMemMap(va, g, 0, h, 0));
	set_access(va, g, 0, CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
	CU_OK(cuMemsetD32(va, 0x12345678, 1));
	free_mapped = st_mem_free();
	/* Documented: memory is freed when the handle is released and every
	 * mapping of it is gone, whichever comes last. */
	CU_OK(cuMemRelease(h));
	cr_assert_eq(st_mem_free(), free_mapped);
	CU_OK(cuMemcpyDtoH(&v, va, 4));
	cr_assert_eq(v, 0x12345678u);
	CU_OK(cuMemUnmap(va, g));
	cr_assert_eq(st_mem_free(), free0);
}

Test(vmm, map_over_mapped_refused)
{
	size_t g;
	CUdeviceptr va;
	CUmemGenericAllocationHandle h1, h2;

	st_init(0);
	g = granularity(0);
	CU_OK(cuMemAddressReserve(&va, 2 * g, 0, 0, 0));
	h1 = create(0, 2 * g);
	h2 = create(0, g);
	CU_OK(cuMemMap(va, 2 * g, 0, h1, 0));
	CU_FAILS(cuMemMap(va + g, g, 0, h2, 0));
	/* Nor may a mapping be partly unmapped. */
	CU_FAILS(cuMemUnmap(va, g));
	CU_OK(cuMemUnmap(va, 2 * g));
	CU_OK(cuMemMap(va + g, g, 0, h2, 0));
}

Test(vmm, bad_sizes_refused)
{
	size_t g;
	CUdeviceptr va;
	CUmemAllocationProp prop = prop_on(0);
	CUmemGenericAllocationHandle h = 0;

	st_init(0);
	g = granularity(0);
	CU_ERR(cuMemCreate(&h, g + 1, &prop, 0), CUDA_ERROR_INVALID_VALUE);
	CU_ERR(cuMemCreate(&h, 0, &prop, 0), CUDA_ERROR_INVALID_VALUE);
	CU_OK(cuMemAddressReserve(&va, 2 * g, 0, 0, 0));
	h = create(0, g);
	/* A mapping larger than the physical allocation. */
	CU_FAILS(cuMemMap(va, 2 * g, 0, h, 0));
	/* (An address outside any reservation aborts: test_strict.c.) */
}

Test(vmm, access_is_enforced)
{
	size_t g;
	CUdeviceptr va;
	CUmemGenericAllocationHandle h;
	unsigned char buf[256] = { 0 };

	st_init(0);
	g = granularity(0);
	CU_OK(cuMemAddressReserve(&va, 3 * g, 0, 0, 0));
	h = create(0, g);
	CU_OK(cuMemMap(va, g, 0, h, 0));

	/* Mapped but no access granted yet. */
	CU_FAILS(cuMemcpyHtoD(va, buf, sizeof(buf)));
	CU_FAILS(cuMemsetD8(va, 0, 16));

	set_access(va, g, 0, CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
	CU_OK(cuMemcpyHtoD(va, buf, sizeof(buf)));

	/* Reserved but unmapped: the second granule, and a copy straddling. */
	CU_FAILS(cuMemcpyHtoD(va + g, buf, sizeof(buf)));
	CU_FAILS(cuMemcpyHtoD(va + g - 128, buf, sizeof(buf)));
	CU_FAILS(cuMemcpyDtoH(buf, va + 2 * g, 16));
}

Test(vmm, read_only_access)
{
	size_t g;
	CUdeviceptr va;
	CUmemGenericAllocationHandle h;
	unsigned long long flags = 99;
	CUmemLocation loc = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = 0 };
	uint32_t v = 1;

	st_init(0);
	g = granularity(0);
	CU_OK(cuMemAddressReserve(&va, g, 0, 0, 0));
	h = create(0, g);
	CU_OK(cuMemMap(va, g, 0, h, 0));
	set_access(va, g, 0, CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
	CU_OK(cuMemsetD32(va, 0xabcdef01, 1));
	/* A memset to device memory may still be queued when it returns:
	 * let it run before its destination becomes read-only. */
	CU_OK(cuCtxSynchronize());
	set_access(va, g, 0, CU_MEM_ACCESS_FLAGS_PROT_READ);
	CU_OK(cuMemGetAccess(&flags, &loc, va));
	cr_assert_eq(flags, CU_MEM_ACCESS_FLAGS_PROT_READ);
	CU_OK(cuMemcpyDtoH(&v, va, 4));
	cr_assert_eq(v, 0xabcdef01u);
	CU_FAILS(cuMemsetD32(va, 0, 1));
	CU_FAILS(cuMemcpyHtoD(va, &v, 4));
}

Test(vmm, handle_queries)
{
	size_t g;
	CUdeviceptr va;
	CUmemGenericAllocationHandle h, again = 0;
	CUmemAllocationProp got;

	st_setenv("SIMCUDA_DEVICES", "2");
	st_init(0);
	g = granularity(1);
	h = create(1, g);
	memset(&got, 0xff, sizeof(got));
	CU_OK(cuMemGetAllocationPropertiesFromHandle(&got, h));
	cr_assert_eq(got.type, CU_MEM_ALLOCATION_TYPE_PINNED);
	cr_assert_eq(got.location.type, CU_MEM_LOCATION_TYPE_DEVICE);
	cr_assert_eq(got.location.id, 1);

	CU_OK(cuMemAddressReserve(&va, g, 0, 0, 0));
	CU_OK(cuMemMap(va, g, 0, h, 0));
	/* Documented: the same handle value that was mapped, with a reference
	 * the caller must release. */
	CU_OK(cuMemRetainAllocationHandle(&again, (void *)(uintptr_t)(va + 100)));
	cr_assert_eq(again, h);
	CU_OK(cuMemRelease(again));
	CU_OK(cuMemUnmap(va, g));
	CU_OK(cuMemRelease(h));
}

/* Physical memory of device 1 mapped and accessed from device 0's context. */
Test(vmm, other_device_memory)
{
	size_t g;
	CUdeviceptr va;
	CUmemGenericAllocationHandle h;
	uint32_t v = 0;
	int ordinal = -1;

	st_setenv("SIMCUDA_DEVICES", "2");
	st_init(0);
	g = granularity(1);
	CU_OK(cuMemAddressReserve(&va, g, 0, 0, 0));
	h = create(1, g);
	CU_OK(cuMemMap(va, g, 0, h, 0));
	set_access(va, g, 1, CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
	set_access(va, g, 0, CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
	CU_OK(cuMemsetD32(va, 0x0d0d0d0d, 1));
	CU_OK(cuMemcpyDtoH(&v, va, 4));
	cr_assert_eq(v, 0x0d0d0d0du);
	CU_OK(cuPointerGetAttribute(&ordinal, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, va));
	cr_assert_eq(ordinal, 1);
}

Test(vmm, unsupported_device)
{
	CUmemAllocationProp prop = prop_on(1);
	CUmemGenericAllocationHandle h;

	st_setenv("SIMCUDA_DEVICES", "2");
	st_setenv("SIMCUDA_VMM", "1,0");
	st_init(1);
	CU_ERR(cuMemCreate(&h, 2 << 20, &prop, 0), CUDA_ERROR_NOT_SUPPORTED);
}

Test(vmm, create_out_of_memory)
{
	CUmemAllocationProp prop = prop_on(0);
	CUmemGenericAllocationHandle h;
	size_t g;

	st_setenv("SIMCUDA_MEM_MB", "64");
	st_init(0);
	g = granularity(0);
	CU_ERR(cuMemCreate(&h, (64 << 20) + g, &prop, 0), CUDA_ERROR_OUT_OF_MEMORY);
}
