/* SPDX-License-Identifier: Apache-2.0 */
/* Memory records: arena allocations, host memory, and VMM reservations,
 * physical handles, mappings and access. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "trk_test.h"

TestSuite(memory, .init = trk_test_setup);

#define MiB (1ull << 20)
#define BASE 0x600000000000ull

static CUmemAllocationProp dev_prop(int dev)
{
	CUmemAllocationProp p = { .type = CU_MEM_ALLOCATION_TYPE_PINNED };

	p.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	p.location.id = dev;
	return p;
}

static CUmemGenericAllocationHandle create(uint64_t h, size_t size)
{
	CUmemAllocationProp p = dev_prop(0);
	CUmemGenericAllocationHandle app = 0;

	cr_assert_eq(gs_trk_phys_created(h, size, &p, 0, GS_OWNER_APP, false, &app), 0);
	cr_assert_eq(app, h);
	return app;
}

Test(memory, allocations_by_address)
{
	struct gs_alloc_desc a = { .addr = BASE, .size = 1000, .footprint = 1024, .device = 1,
				   .ctx = H(CUcontext, 0x1000), .buffer_id = 7 };
	struct gs_alloc_desc b = { .addr = BASE + 4096, .size = 5000, .device = 1 };
	struct gs_alloc_desc got;
	struct gs_trk_stats st;

	cr_assert_eq(gs_trk_alloc_add(&a), 0);
	cr_assert_eq(gs_trk_alloc_add(&b), 0);
	cr_assert_eq(gs_trk_alloc_find(BASE, &got), 0);
	cr_assert_eq(got.buffer_id, 7);
	cr_assert_eq(gs_trk_alloc_find(BASE + 999, &got), 0);
	cr_assert_eq(got.addr, BASE);
	cr_assert_eq(gs_trk_alloc_find(BASE + 1000, &got), -ENOENT, "past its size");
	cr_assert_eq(gs_trk_alloc_find(BASE + 4096 + 4999, &got), 0);
	cr_assert_eq(got.addr, BASE + 4096);
	cr_assert_eq(gs_trk_alloc_find(BASE - 1, &got), -ENOENT);

	/* Overlaps and bad descriptions are refused. */
	struct gs_alloc_desc over = { .addr = BASE + 512, .size = 16, .device = 1 };
	struct gs_alloc_desc zero = { .addr = BASE + 65536, .size = 0 };
	struct gs_alloc_desc baddev = { .addr = BASE + 65536, .size = 1, .device = -1 };

	cr_assert_eq(gs_trk_alloc_add(&over), -EEXIST);
	cr_assert_eq(gs_trk_alloc_add(&zero), -EINVAL);
	cr_assert_eq(gs_trk_alloc_add(&baddev), -EINVAL);

	gs_trk_get_stats(&st);
	cr_assert_eq(st.count[GS_KIND_ALLOC], 2);
	cr_assert_eq(st.bytes[GS_KIND_ALLOC], 6000);
	cr_assert_eq(st.device_bytes[1], 1024 + 5000, "footprints, at least the size");

	cr_assert_eq(gs_trk_alloc_remove(BASE + 1, &got), -ENOENT, "only by its start");
	cr_assert_eq(gs_trk_alloc_remove(BASE, &got), 0);
	cr_assert_eq(got.size, 1000);
	cr_assert_eq(gs_trk_alloc_remove(BASE, &got), -ENOENT);
	gs_trk_get_stats(&st);
	cr_assert_eq(st.device_bytes[1], 5000);
}

/* An IPC export of an allocation ends with the allocation. */
Test(memory, free_forgets_exports)
{
	struct gs_alloc_desc a = { .addr = BASE, .size = 4096 };

	cr_assert_eq(gs_trk_alloc_add(&a), 0);
	cr_assert_eq(gs_trk_unsup_add(GS_UNSUP_IPC_MEM_EXPORT, BASE, 0, NULL, 0,
				      "cuIpcGetMemHandle"), 0);
	cr_assert_eq(gs_trk_alloc_remove(BASE, NULL), 0);
	cr_assert_eq(gs_trk_count(GS_KIND_UNSUPPORTED), 0);

	/* Memory the arena did not serve, freed through cuMemFree. */
	cr_assert_eq(gs_trk_unsup_add(GS_UNSUP_MANAGED, BASE, 1 << 20, NULL, 0,
				      "cuMemAllocManaged"), 0);
	cr_assert_eq(gs_trk_unsup_add(GS_UNSUP_IPC_MEM_EXPORT, BASE, 0, NULL, 0,
				      "cuIpcGetMemHandle"), 0);
	cr_assert_eq(gs_trk_foreign_free(BASE), 0);
	cr_assert_eq(gs_trk_count(GS_KIND_UNSUPPORTED), 0);
	cr_assert_eq(gs_trk_foreign_free(BASE), -ENOENT);
}

Test(memory, host_memory)
{
	static char buf[8192];
	struct gs_host_desc h = { .ptr = buf, .size = 4096, .kind = GS_HOST_ALLOC,
				  .flags = CU_MEMHOSTALLOC_PORTABLE };
	struct gs_host_desc r = { .ptr = buf + 4096, .size = 4096, .kind = GS_HOST_REGISTER,
				  .flags = CU_MEMHOSTREGISTER_IOMEMORY };
	struct gs_host_desc got;

	cr_assert_eq(gs_trk_host_add(&h), 0);
	cr_assert_eq(gs_trk_host_add(&r), 0);
	cr_assert_eq(gs_trk_host_add(&h), -EEXIST);
	cr_assert_eq(gs_trk_host_find(buf + 100, &got), 0);
	cr_assert_eq(got.kind, GS_HOST_ALLOC);
	cr_assert_eq(got.flags, CU_MEMHOSTALLOC_PORTABLE);
	cr_assert_eq(gs_trk_host_find(buf + 5000, &got), 0);
	cr_assert_eq(got.kind, GS_HOST_REGISTER);
	cr_assert_eq(gs_trk_bytes(GS_KIND_HOST), 8192);
	cr_assert_eq(trk_problems("I/O memory"), 1);
	cr_assert_eq(gs_trk_host_remove(buf, &got), 0);
	cr_assert_eq(gs_trk_host_find(buf + 100, &got), -ENOENT);
	cr_assert_eq(gs_trk_host_remove(buf, NULL), -ENOENT);
}

/* The expandable-segments pattern: reserve a big range, map chunks into
 * it as they are needed, release the handles at once (the mappings keep
 * the memory), unmap piece by piece, free the range. */
Test(memory, vmm_lifecycle)
{
	CUmemAccessDesc rw = { .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
	CUmemGenericAllocationHandle h1, h2;
	struct gs_phys_rec p;
	struct gs_mapping_rec m;
	struct gs_trk_stats st;

	rw.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	rw.location.id = 0;
	cr_assert_eq(gs_trk_reserve_add(BASE, 64 * MiB, 2 * MiB, 0, 0, GS_OWNER_APP), 0);
	cr_assert_eq(gs_trk_reserve_add(BASE + 32 * MiB, 2 * MiB, 0, 0, 0, GS_OWNER_APP), -EEXIST);
	h1 = create(0x100, 2 * MiB);
	h2 = create(0x200, 4 * MiB);
	cr_assert_eq(gs_trk_map_add(BASE, 2 * MiB, 0, h1, 0, GS_OWNER_APP), 0);
	cr_assert_eq(gs_trk_map_add(BASE + 2 * MiB, 4 * MiB, 0, h2, 0, GS_OWNER_APP), 0);
	cr_assert_eq(gs_trk_map_add(BASE + MiB, 2 * MiB, 0, h2, 0, GS_OWNER_APP), -EEXIST);
	cr_assert_eq(gs_trk_set_access(BASE, 6 * MiB, &rw, 1), 0);
	cr_assert_eq(trk_get(GS_KIND_MAPPING, BASE + 2 * MiB, &m, sizeof(m)), 0);
	cr_assert_eq(m.naccess, 1);
	cr_assert_eq(m.access[0].flags, CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
	cr_assert_not(m.access_partial);
	cr_assert_eq(m.phys, 0x200);

	/* Handles released: the memory lives on in its mappings. */
	cr_assert_eq(gs_trk_phys_released(h1), 0);
	cr_assert_eq(gs_trk_phys_released(h2), 0);
	cr_assert_eq(trk_get(GS_KIND_PHYS, 0x100, &p, sizeof(p)), 0);
	cr_assert_eq(p.handle_refs, 0);
	cr_assert_eq(p.maps, 1);
	gs_trk_get_stats(&st);
	cr_assert_eq(st.count[GS_KIND_PHYS], 2);
	cr_assert_eq(st.bytes[GS_KIND_PHYS], 6 * MiB);
	cr_assert_eq(st.bytes[GS_KIND_MAPPING], 6 * MiB);
	cr_assert_eq(st.bytes[GS_KIND_RESERVATION], 64 * MiB);

	/* Retaining the handle of a mapped address gives the same value. */
	CUmemGenericAllocationHandle back = 0;

	cr_assert_eq(gs_trk_phys_retained(BASE + 3 * MiB, 0x200, &back), 0);
	cr_assert_eq(back, 0x200);
	cr_assert_eq(trk_get(GS_KIND_PHYS, 0x200, &p, sizeof(p)), 0);
	cr_assert_eq(p.handle_refs, 1);

	/* Unmapping the first: its memory goes. */
	cr_assert_eq(gs_trk_unmap(BASE, 2 * MiB), 0);
	cr_assert_not(trk_exists(GS_KIND_PHYS, 0x100));
	/* The second is still held by the retained handle. */
	cr_assert_eq(gs_trk_unmap(BASE + 2 * MiB, 4 * MiB), 0);
	cr_assert(trk_exists(GS_KIND_PHYS, 0x200));
	cr_assert_eq(gs_trk_phys_released(back), 0);
	cr_assert_not(trk_exists(GS_KIND_PHYS, 0x200));
	cr_assert_eq(gs_trk_unmap(BASE, 2 * MiB), -ENOENT);

	cr_assert_eq(gs_trk_reserve_free(BASE, 64 * MiB), 0);
	gs_trk_get_stats(&st);
	for (int k = GS_KIND_RESERVATION; k <= GS_KIND_MAPPING; k++) {
		cr_assert_eq(st.count[k], 0, "%s", gs_kind_name(k));
		cr_assert_eq(st.bytes[k], 0, "%s", gs_kind_name(k));
	}
}

/* One unmap may cover several mappings and cut the ones at its ends; the
 * pieces left keep their physical memory at the right offset. */
Test(memory, unmap_carves)
{
	CUmemGenericAllocationHandle h = create(0x100, 8 * MiB), g = create(0x200, 2 * MiB);
	struct gs_mapping_rec m;
	struct gs_phys_rec p;

	cr_assert_eq(gs_trk_map_add(BASE, 8 * MiB, 0, h, 0, GS_OWNER_APP), 0);
	cr_assert_eq(gs_trk_map_add(BASE + 8 * MiB, 2 * MiB, 0, g, 0, GS_OWNER_APP), 0);
	/* Out of the middle of the first: two pieces. */
	cr_assert_eq(gs_trk_unmap(BASE + 2 * MiB, 2 * MiB), 0);
	cr_assert_eq(gs_trk_count(GS_KIND_MAPPING), 3);
	cr_assert_eq(trk_get(GS_KIND_MAPPING, BASE, &m, sizeof(m)), 0);
	cr_assert_eq(m.size, 2 * MiB);
	cr_assert_eq(m.offset, 0);
	cr_assert_eq(trk_get(GS_KIND_MAPPING, BASE + 4 * MiB, &m, sizeof(m)), 0);
	cr_assert_eq(m.size, 4 * MiB);
	cr_assert_eq(m.offset, 4 * MiB);
	cr_assert_eq(trk_get(GS_KIND_PHYS, 0x100, &p, sizeof(p)), 0);
	cr_assert_eq(p.maps, 2);
	/* Across the end of the first piece and into the second mapping. */
	cr_assert_eq(gs_trk_unmap(BASE + 6 * MiB, 3 * MiB), 0);
	cr_assert_eq(trk_get(GS_KIND_MAPPING, BASE + 4 * MiB, &m, sizeof(m)), 0);
	cr_assert_eq(m.size, 2 * MiB);
	cr_assert_eq(trk_get(GS_KIND_MAPPING, BASE + 9 * MiB, &m, sizeof(m)), 0);
	cr_assert_eq(m.size, 1 * MiB);
	cr_assert_eq(m.offset, 1 * MiB);
	cr_assert_eq(m.phys, 0x200);
	cr_assert_eq(gs_trk_bytes(GS_KIND_MAPPING), 5 * MiB);
	/* Everything. */
	cr_assert_eq(gs_trk_unmap(BASE, 16 * MiB), 0);
	cr_assert_eq(gs_trk_count(GS_KIND_MAPPING), 0);
	cr_assert_eq(trk_get(GS_KIND_PHYS, 0x100, &p, sizeof(p)), 0);
	cr_assert_eq(p.maps, 0);
	cr_assert_eq(p.handle_refs, 1, "the handle was never released");
}

Test(memory, reservation_free_trims)
{
	struct gs_resv_rec r;

	cr_assert_eq(gs_trk_reserve_add(BASE, 8 * MiB, 0, BASE, 0, GS_OWNER_APP), 0);
	cr_assert_eq(gs_trk_reserve_free(BASE, 2 * MiB), 0);
	cr_assert_eq(trk_get(GS_KIND_RESERVATION, BASE + 2 * MiB, &r, sizeof(r)), 0);
	cr_assert_eq(r.size, 6 * MiB);
	cr_assert_eq(r.hint, BASE);
	cr_assert_not(trk_exists(GS_KIND_RESERVATION, BASE));
	cr_assert_eq(gs_trk_bytes(GS_KIND_RESERVATION), 6 * MiB);
	cr_assert_eq(gs_trk_reserve_free(BASE + 2 * MiB, 6 * MiB), 0);
	cr_assert_eq(gs_trk_count(GS_KIND_RESERVATION), 0);
	cr_assert_eq(gs_trk_reserve_free(BASE, 2 * MiB), -ENOENT);
	cr_assert_eq(gs_trk_reserve_free(UINT64_MAX - 10, 100), -EINVAL, "wraps around");
}

Test(memory, access_merge_and_partial)
{
	CUmemGenericAllocationHandle h = create(0x100, 4 * MiB);
	CUmemAccessDesc d[2] = { 0 };
	struct gs_mapping_rec m;

	d[0].location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	d[0].location.id = 0;
	d[0].flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
	d[1].location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	d[1].location.id = 1;
	d[1].flags = CU_MEM_ACCESS_FLAGS_PROT_READ;
	cr_assert_eq(gs_trk_map_add(BASE, 4 * MiB, 0, h, 0, GS_OWNER_APP), 0);
	cr_assert_eq(gs_trk_set_access(BASE, 4 * MiB, d, 2), 0);
	d[1].flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
	cr_assert_eq(gs_trk_set_access(BASE, 4 * MiB, &d[1], 1), 0);
	cr_assert_eq(trk_get(GS_KIND_MAPPING, BASE, &m, sizeof(m)), 0);
	cr_assert_eq(m.naccess, 2, "one entry per location");
	cr_assert_eq(m.access[1].flags, CU_MEM_ACCESS_FLAGS_PROT_READWRITE, "the latest");
	cr_assert_not(m.access_partial);
	cr_assert_eq(trk_problems("part of it"), 0);
	cr_assert_eq(gs_trk_set_access(BASE + MiB, MiB, d, 1), 0);
	cr_assert_eq(trk_problems("part of it"), 1);
	cr_assert_eq(gs_trk_set_access(BASE + 8 * MiB, MiB, d, 1), -ENOENT);
	cr_assert_eq(gs_trk_set_access(BASE, MiB, NULL, 1), -EINVAL);
}

/* The arena's own window and chunks are recorded apart from the
 * application's VMM. */
Test(memory, shim_owned_records)
{
	CUmemAllocationProp p = dev_prop(0);
	CUmemGenericAllocationHandle h;
	struct gs_trk_stats st;

	cr_assert_eq(gs_trk_reserve_add(BASE, 1ull << 40, 0, BASE, 0, GS_OWNER_SHIM), 0);
	cr_assert_eq(gs_trk_phys_created(0x100, 2 * MiB, &p, 0, GS_OWNER_SHIM, false, &h), 0);
	cr_assert_eq(gs_trk_map_add(BASE, 2 * MiB, 0, h, 0, GS_OWNER_SHIM), 0);
	cr_assert_eq(gs_trk_reserve_add(BASE + (1ull << 41), 2 * MiB, 0, 0, 0, GS_OWNER_APP), 0);
	gs_trk_get_stats(&st);
	cr_assert_eq(st.count[GS_KIND_RESERVATION], 2);
	cr_assert_eq(st.shim_count[GS_KIND_RESERVATION], 1);
	cr_assert_eq(st.shim_bytes[GS_KIND_RESERVATION], 1ull << 40);
	cr_assert_eq(st.shim_count[GS_KIND_PHYS], 1);
	cr_assert_eq(st.shim_bytes[GS_KIND_MAPPING], 2 * MiB);
	/* A cut keeps the owner. */
	cr_assert_eq(gs_trk_reserve_free(BASE, 2 * MiB), 0);
	gs_trk_get_stats(&st);
	cr_assert_eq(st.shim_count[GS_KIND_RESERVATION], 1);
	cr_assert_eq(st.shim_bytes[GS_KIND_RESERVATION], (1ull << 40) - 2 * MiB);
}

/* A retain that returns a value other than the original (a driver free to
 * do so) is recorded as an alias of the same memory. */
Test(memory, retain_alias)
{
	CUmemGenericAllocationHandle h = create(0x100, 2 * MiB), alias = 0;
	struct gs_phys_rec p;

	cr_assert_eq(gs_trk_map_add(BASE, 2 * MiB, 0, h, 0, GS_OWNER_APP), 0);
	cr_assert_eq(gs_trk_phys_retained(BASE + 4096, 0x900, &alias), 0);
	cr_assert_eq(alias, 0x900);
	cr_assert_eq(trk_get(GS_KIND_PHYS, 0x900, &p, sizeof(p)), 0);
	cr_assert_eq(p.alias_of, 0x100);
	cr_assert_eq(p.size, 2 * MiB);
	cr_assert_eq(p.prop.location.type, CU_MEM_LOCATION_TYPE_DEVICE);
	cr_assert_eq(gs_trk_phys_retained(BASE + 8 * MiB, 0x901, &alias), -ENOENT);
	cr_assert_eq(gs_trk_phys_released(0x900), 0);
	cr_assert_not(trk_exists(GS_KIND_PHYS, 0x900));
	cr_assert_eq(gs_trk_phys_released(0x4242), -ENOENT);
}

Test(memory, imported_and_exported_handles)
{
	CUmemAllocationProp p = dev_prop(0);
	CUmemGenericAllocationHandle h;

	cr_assert_eq(gs_trk_phys_created(0x100, 0, &p, 0, GS_OWNER_APP, true, &h), 0);
	cr_assert_eq(gs_trk_unsup_add(GS_UNSUP_SHAREABLE_IMPORT, h, 0, NULL, 0, "import"), 0);
	cr_assert_eq(gs_trk_unsup_add(GS_UNSUP_SHAREABLE_EXPORT, h, 0, NULL, 0, "export"), 0);
	cr_assert_eq(trk_problems("allocation handle"), 2);
	/* Releasing the handle ends both. */
	cr_assert_eq(gs_trk_phys_released(h), 0);
	cr_assert_eq(gs_trk_count(GS_KIND_UNSUPPORTED), 0);
}
