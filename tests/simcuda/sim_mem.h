/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The simulator's address-space book-keeping, shared by sim_mem.c (windows,
 * cuMemAlloc, host memory, pointer queries), sim_memcpy.c and sim_vmm.c.
 *
 * Every address the simulator hands out is recorded as a range in one table
 * sorted by address and guarded by one rwlock: device allocations, module
 * globals, pinned and registered host memory and VMM reservations (which hold
 * their mappings). Device memory lives in per-device VA windows reserved
 * PROT_NONE at cuInit; VMM reservations without a usable hint come from a
 * separate window. Only allocated bytes are ever readable or writable, so an
 * emulated kernel that strays faults instead of corrupting a neighbour.
 */
#ifndef SIM_MEM_H
#define SIM_MEM_H

#include "sim_internal.h"

#define SIM_PAGE ((size_t)4096)
/* cuMemGetAllocationGranularity, and the alignment of large cuMemAlloc. */
#define SIM_GRANULARITY ((size_t)2 << 20)
/* Fresh device memory is filled with this, never zero, so a test that
 * forgets to copy data in (or a restore that forgets to copy it back) sees
 * garbage as it would on a GPU, not a lucky zero. */
#define SIM_POISON 0xdb

enum sim_range_type {
	SIM_RANGE_ALLOC,      /* cuMemAlloc, cuMemAllocPitch */
	SIM_RANGE_INTERNAL,   /* sim_mem_alloc_internal: module globals */
	SIM_RANGE_HOST_ALLOC, /* cuMemHostAlloc, cuMemAllocHost */
	SIM_RANGE_HOST_REG,   /* cuMemHostRegister */
	SIM_RANGE_RESERVE,    /* cuMemAddressReserve */
};

struct sim_phys; /* a cuMemCreate allocation, sim_vmm.c */

/* One cuMemMap, with the access each device was granted per granule. */
struct sim_map {
	uintptr_t start;
	size_t size;
	struct sim_phys *phys;
	size_t offset;
	uint64_t *readable; /* per granule: bit d = device d may read */
	uint64_t *writable; /* per granule: bit d = device d may write */
};

struct sim_range {
	uintptr_t start;
	size_t size; /* the bytes the application owns */
	size_t span; /* VA kept from start, guard included (>= size) */
	enum sim_range_type type;
	int device;	     /* owning device; -1 for host memory and reservations */
	struct sim_ctx *ctx; /* owning context; NULL for reservations */
	unsigned flags;	     /* host alloc / register flags */
	unsigned long long id;
	bool in_window; /* inside a simulator window: freed by re-reserving */
	/* SIM_RANGE_RESERVE: mappings sorted by address */
	struct sim_map *maps;
	size_t map_count, map_cap;
};

/* sim_core.c calls these: the layout when reading the environment, the
 * reservation of the windows at cuInit. */
void sim_mem_layout(struct sim_device *devices, int count, const char *fn);
CUresult sim_mem_init(const char *fn);

void sim_mem_rdlock(void);
void sim_mem_wrlock(void);
void sim_mem_unlock(void);

/* All below: the lock held (write lock for changes). */
/* The range whose owned bytes contain p, or NULL. */
struct sim_range *sim_range_find(uintptr_t p);
/* Whether [p, p+n) overlaps any range's owned bytes. */
bool sim_range_overlaps(uintptr_t p, size_t n);
CUresult sim_range_insert(struct sim_range *r);
void sim_range_remove(struct sim_range *r);

/* Window of device d (0..count-1), or SIM_WINDOW_VMM. */
#define SIM_WINDOW_VMM (-1)
/* Whether [p, p+n) lies entirely inside one simulator window. */
bool sim_va_in_window(uintptr_t p, size_t n);
/* Whether [p, p+n) touches any simulator window. */
bool sim_va_touches_window(uintptr_t p, size_t n);
/* A free, aligned spot of `span` bytes in a window, or 0. */
uintptr_t sim_va_find(int window, size_t span, size_t align);

/* Device memory accounting (cuMemGetInfo). */
CUresult sim_mem_charge(int dev, size_t bytes);
void sim_mem_uncharge(int dev, size_t bytes);
unsigned long long sim_mem_next_id(void);

/* Reserve [p, p+n) PROT_NONE exactly there, or NULL if anything is in the
 * way (the kernel only honours a free hint). */
void *sim_va_claim(uintptr_t p, size_t n);
/* Make [p, p+n) (page-aligned) fresh read-write memory / return it to a
 * PROT_NONE reservation (or to the system when outside the windows). */
int sim_va_commit(uintptr_t p, size_t n);
void sim_va_release(uintptr_t p, size_t n, bool in_window);

/* sim_mem_access with the lock already held (read or write). */
CUresult sim_mem_access_locked(CUdeviceptr p, size_t n, int dev, bool write, const char *fn);

/* sim_vmm.c, lock held: access check of [p, p+n) inside reservation r, which
 * the caller has checked contains p; *end receives where r stops covering. */
CUresult sim_vmm_access_locked(struct sim_range *r, uintptr_t p, size_t n, int dev, bool write,
			       uintptr_t *end);
struct sim_map *sim_vmm_map_at(struct sim_range *r, uintptr_t p);
/* CU_MEM_ACCESS_FLAGS_PROT_* device dev has at p inside mapping m. */
unsigned sim_vmm_access_of(const struct sim_map *m, uintptr_t p, int dev);
int sim_vmm_phys_device(const struct sim_phys *phys);
unsigned long long sim_vmm_phys_id(const struct sim_phys *phys);
CUmemAllocationHandleType sim_vmm_phys_handle_types(const struct sim_phys *phys);

/* sim_ctx.c: the context's flags (CU_CTX_SYNC_MEMOPS). */
unsigned sim_ctx_flags(struct sim_ctx *c);

#endif
