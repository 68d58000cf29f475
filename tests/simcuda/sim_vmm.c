/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Virtual memory management: reservations, physical allocations, mappings and
 * per-device access, done for real on the host so that what the API promises
 * can be observed:
 *
 *  - a physical allocation (cuMemCreate) is a memfd of its size, charged to
 *    its device, filled with garbage as fresh GPU memory is;
 *  - cuMemMap is mmap(MAP_FIXED | MAP_SHARED) of that memfd inside the
 *    reservation, so one allocation mapped at two addresses shows the same
 *    bytes at both, and a restore that re-maps it elsewhere sees its data;
 *  - a mapping starts inaccessible and stays PROT_NONE until cuMemSetAccess
 *    grants some device access, so a kernel emulation touching it faults,
 *    and sim_mem_access answers CUDA_ERROR_ILLEGAL_ADDRESS per device;
 *  - memory is given back when its handle is released and it is unmapped
 *    everywhere, in either order.
 *
 * VMM objects belong to no context (cuCtxDestroy leaves them alone) and need
 * no current context, as with the driver. All state is under the memory lock.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "sim_mem.h"

struct sim_phys {
	struct sim_obj hdr; /* SIM_KIND_MEMHANDLE; the handle is its address */
	int fd;
	size_t size;
	int device;
	CUmemAllocationProp prop;
	unsigned refs; /* cuMemCreate and cuMemRetainAllocationHandle, less cuMemRelease */
	unsigned maps; /* live mappings */
	unsigned long long id;
};

int sim_vmm_phys_device(const struct sim_phys *phys)
{
	return phys->device;
}

unsigned long long sim_vmm_phys_id(const struct sim_phys *phys)
{
	return phys->id;
}

CUmemAllocationHandleType sim_vmm_phys_handle_types(const struct sim_phys *phys)
{
	return phys->prop.requestedHandleTypes;
}

static bool aligned(uintptr_t v)
{
	return v % SIM_GRANULARITY == 0;
}

static bool any_vmm_device(void)
{
	for (int i = 0; i < sim_device_count(); i++)
		if (sim_device(i)->vmm)
			return true;
	return false;
}

/* Lock held. The physical allocation behind a handle the caller still owns. */
static struct sim_phys *phys_get(CUmemGenericAllocationHandle h, const char *fn)
{
	struct sim_phys *phys = sim_handle_get(SIM_KIND_MEMHANDLE, (void *)(uintptr_t)h, fn);
	if (phys->refs == 0)
		sim_abort(fn, "CUmemGenericAllocationHandle 0x%llx was released (its memory is "
			  "still mapped)", (unsigned long long)h);
	return phys;
}

/* Lock held: frees the allocation once nothing refers to it any more. */
static void phys_put(struct sim_phys *phys)
{
	if (phys->refs || phys->maps)
		return;
	close(phys->fd);
	phys->fd = -1;
	sim_mem_uncharge(phys->device, phys->size);
	sim_handle_destroy(phys);
}

/* Checks a CUmemLocation naming a device; the ordinal on success. */
static CUresult location_device(const CUmemLocation *loc, int *dev)
{
	if (loc->type == CU_MEM_LOCATION_TYPE_HOST || loc->type == CU_MEM_LOCATION_TYPE_HOST_NUMA ||
	    loc->type == CU_MEM_LOCATION_TYPE_HOST_NUMA_CURRENT)
		return CUDA_ERROR_NOT_SUPPORTED; /* host VMM allocations are not simulated */
	if (loc->type != CU_MEM_LOCATION_TYPE_DEVICE)
		return CUDA_ERROR_INVALID_VALUE;
	if (!sim_device(loc->id))
		return CUDA_ERROR_INVALID_DEVICE;
	*dev = loc->id;
	return CUDA_SUCCESS;
}

/* ---- physical allocations ------------------------------------------------------------- */

SIM_EXPORT CUresult cuMemGetAllocationGranularity(size_t *granularity, const CUmemAllocationProp *prop,
						  CUmemAllocationGranularity_flags option)
{
	SIM_ENTER("cuMemGetAllocationGranularity");
	if (!granularity || !prop)
		return CUDA_ERROR_INVALID_VALUE;
	if (option != CU_MEM_ALLOC_GRANULARITY_MINIMUM && option != CU_MEM_ALLOC_GRANULARITY_RECOMMENDED)
		return CUDA_ERROR_INVALID_VALUE;
	int dev;
	CUresult rc = location_device(&prop->location, &dev);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!sim_device(dev)->vmm)
		return CUDA_ERROR_NOT_SUPPORTED;
	*granularity = SIM_GRANULARITY;
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size,
				const CUmemAllocationProp *prop, unsigned long long flags)
{
	SIM_ENTER("cuMemCreate");
	if (!handle || !prop || flags != 0)
		return CUDA_ERROR_INVALID_VALUE;
	if (prop->type != CU_MEM_ALLOCATION_TYPE_PINNED)
		return CUDA_ERROR_INVALID_VALUE;
	int dev;
	CUresult rc = location_device(&prop->location, &dev);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!sim_device(dev)->vmm)
		return CUDA_ERROR_NOT_SUPPORTED;
	/* A memfd is a POSIX file descriptor already; other kinds of
	 * shareable handle do not exist here. */
	if (prop->requestedHandleTypes & ~(unsigned)CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)
		return CUDA_ERROR_NOT_SUPPORTED;
	if (prop->allocFlags.compressionType != 0)
		return CUDA_ERROR_NOT_SUPPORTED;
	if (size == 0 || !aligned(size))
		return CUDA_ERROR_INVALID_VALUE;

	sim_mem_wrlock();
	rc = sim_mem_charge(dev, size);
	sim_mem_unlock();
	if (rc != CUDA_SUCCESS)
		return rc;
	int fd = memfd_create("simcuda-vmm", MFD_CLOEXEC);
	void *fill = MAP_FAILED;
	if (fd >= 0 && ftruncate(fd, (off_t)size) == 0)
		fill = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (fill == MAP_FAILED) {
		if (fd >= 0)
			close(fd);
		sim_mem_wrlock();
		sim_mem_uncharge(dev, size);
		sim_mem_unlock();
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	memset(fill, SIM_POISON, size);
	munmap(fill, size);

	struct sim_phys *phys = sim_handle_new(SIM_KIND_MEMHANDLE, sizeof(*phys));
	phys->fd = fd;
	phys->size = size;
	phys->device = dev;
	phys->prop = *prop;
	phys->id = sim_mem_next_id();
	sim_mem_wrlock();
	phys->refs = 1;
	sim_mem_unlock();
	*handle = (CUmemGenericAllocationHandle)(uintptr_t)phys;
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuMemRelease(CUmemGenericAllocationHandle handle)
{
	SIM_ENTER("cuMemRelease");
	sim_mem_wrlock();
	struct sim_phys *phys = phys_get(handle, "cuMemRelease");
	phys->refs--;
	phys_put(phys);
	sim_mem_unlock();
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuMemRetainAllocationHandle(CUmemGenericAllocationHandle *handle, void *addr)
{
	SIM_ENTER("cuMemRetainAllocationHandle");
	if (!handle)
		return CUDA_ERROR_INVALID_VALUE;
	sim_mem_wrlock();
	struct sim_range *r = sim_range_find((uintptr_t)addr);
	struct sim_map *m = r && r->type == SIM_RANGE_RESERVE ? sim_vmm_map_at(r, (uintptr_t)addr)
							     : NULL;
	if (m) {
		/* The same value that was mapped, even after its last release. */
		m->phys->refs++;
		*handle = (CUmemGenericAllocationHandle)(uintptr_t)m->phys;
	}
	sim_mem_unlock();
	return m ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

SIM_EXPORT CUresult cuMemGetAllocationPropertiesFromHandle(CUmemAllocationProp *prop,
							   CUmemGenericAllocationHandle handle)
{
	SIM_ENTER("cuMemGetAllocationPropertiesFromHandle");
	if (!prop)
		return CUDA_ERROR_INVALID_VALUE;
	sim_mem_rdlock();
	*prop = phys_get(handle, "cuMemGetAllocationPropertiesFromHandle")->prop;
	sim_mem_unlock();
	return CUDA_SUCCESS;
}

/* ---- reservations ------------------------------------------------------------------------ */

/* Lock held: whether [p, p+n) can become a reservation, claiming the VA when
 * it lies outside the simulator's windows. */
static bool claim_hint(uintptr_t p, size_t n, bool *in_window)
{
	if (p + n < p || sim_range_overlaps(p, n))
		return false;
	if (sim_va_in_window(p, n)) {
		*in_window = true;
		return true;
	}
	if (sim_va_touches_window(p, n))
		return false;
	/* Anything else mapped there (a library, the heap, a sanitizer's
	 * shadow) makes the hint unusable, as the address being in use on a
	 * GPU would. A plain hint rather than MAP_FIXED_NOREPLACE: TSan moves
	 * a hint outside the memory it tracks instead of failing the call. */
	void *m = sim_va_claim(p, n);
	if (!m)
		return false;
	*in_window = false;
	return true;
}

SIM_EXPORT CUresult cuMemAddressReserve(CUdeviceptr *ptr, size_t size, size_t alignment,
					CUdeviceptr addr, unsigned long long flags)
{
	SIM_ENTER("cuMemAddressReserve");
	if (!ptr || size == 0 || flags != 0 || size % SIM_PAGE || addr % SIM_PAGE)
		return CUDA_ERROR_INVALID_VALUE;
	if (alignment & (alignment - 1))
		return CUDA_ERROR_INVALID_VALUE;
	if (!any_vmm_device())
		return CUDA_ERROR_NOT_SUPPORTED;
	size_t align = alignment > SIM_GRANULARITY ? alignment : SIM_GRANULARITY;
	struct sim_range *r = calloc(1, sizeof(*r));
	if (!r)
		return CUDA_ERROR_OUT_OF_MEMORY;
	r->size = size;
	r->type = SIM_RANGE_RESERVE;
	r->device = -1;
	r->id = sim_mem_next_id();

	sim_mem_wrlock();
	/* The hint is honoured exactly when it is free (and suitably
	 * aligned); otherwise it is only a hint and the range goes elsewhere. */
	if (addr && addr % align == 0 && claim_hint((uintptr_t)addr, size, &r->in_window)) {
		r->start = (uintptr_t)addr;
	} else {
		r->start = sim_va_find(SIM_WINDOW_VMM, size, align);
		r->in_window = true;
	}
	CUresult rc = r->start ? sim_range_insert(r) : CUDA_ERROR_OUT_OF_MEMORY;
	if (rc != CUDA_SUCCESS && r->start && !r->in_window)
		sim_va_release(r->start, size, false);
	sim_mem_unlock();
	if (rc != CUDA_SUCCESS) {
		free(r);
		return rc;
	}
	*ptr = (CUdeviceptr)r->start;
	return CUDA_SUCCESS;
}

/* Lock held: removes mapping i of r, leaving its VA an inaccessible part of
 * the reservation again. */
static void unmap_one(struct sim_range *r, size_t i)
{
	struct sim_map *m = &r->maps[i];
	sim_va_release(m->start, m->size, true);
	struct sim_phys *phys = m->phys;
	free(m->readable);
	free(m->writable);
	memmove(m, m + 1, (r->map_count - i - 1) * sizeof(*m));
	r->map_count--;
	phys->maps--;
	phys_put(phys);
}

/* Freeing a reservation that still has mappings unmaps them, as the driver
 * does. */
SIM_EXPORT CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size)
{
	SIM_ENTER("cuMemAddressFree");
	sim_mem_wrlock();
	struct sim_range *r = sim_range_find((uintptr_t)ptr);
	if (!r || r->type != SIM_RANGE_RESERVE || r->start != (uintptr_t)ptr) {
		sim_mem_unlock();
		sim_abort("cuMemAddressFree", "0x%llx is not the start of a VMM reservation",
			  (unsigned long long)ptr);
	}
	if (size != r->size) {
		sim_mem_unlock();
		return CUDA_ERROR_INVALID_VALUE;
	}
	while (r->map_count)
		unmap_one(r, r->map_count - 1);
	sim_va_release(r->start, r->size, r->in_window);
	sim_range_remove(r);
	sim_mem_unlock();
	free(r->maps);
	free(r);
	return CUDA_SUCCESS;
}

/* ---- mappings ------------------------------------------------------------------------------ */

/* Index of the first mapping of r ending above p. */
static size_t map_index(const struct sim_range *r, uintptr_t p)
{
	size_t lo = 0, hi = r->map_count;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (r->maps[mid].start + r->maps[mid].size <= p)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

struct sim_map *sim_vmm_map_at(struct sim_range *r, uintptr_t p)
{
	size_t i = map_index(r, p);
	return i < r->map_count && r->maps[i].start <= p ? &r->maps[i] : NULL;
}

unsigned sim_vmm_access_of(const struct sim_map *m, uintptr_t p, int dev)
{
	size_t g = (p - m->start) / SIM_GRANULARITY;
	if (m->writable[g] & (1ULL << dev))
		return CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
	if (m->readable[g] & (1ULL << dev))
		return CU_MEM_ACCESS_FLAGS_PROT_READ;
	return CU_MEM_ACCESS_FLAGS_PROT_NONE;
}

/* Lock held: the reservation holding all of [p, p+n), aborting when p is in
 * none; NULL when the range runs past the reservation's end. */
static struct sim_range *reservation_of(uintptr_t p, size_t n, const char *fn)
{
	struct sim_range *r = sim_range_find(p);
	if (!r || r->type != SIM_RANGE_RESERVE) {
		sim_mem_unlock();
		sim_abort(fn, "0x%" PRIxPTR " is not inside a VMM reservation", p);
	}
	return n <= r->size - (p - r->start) ? r : NULL;
}

SIM_EXPORT CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset,
			     CUmemGenericAllocationHandle handle, unsigned long long flags)
{
	SIM_ENTER("cuMemMap");
	if (flags != 0 || size == 0 || !aligned(ptr) || !aligned(size) || !aligned(offset))
		return CUDA_ERROR_INVALID_VALUE;
	uintptr_t p = (uintptr_t)ptr;
	size_t granules = size / SIM_GRANULARITY;
	uint64_t *readable = calloc(granules, sizeof(uint64_t));
	uint64_t *writable = calloc(granules, sizeof(uint64_t));
	CUresult rc = CUDA_SUCCESS;

	sim_mem_wrlock();
	struct sim_phys *phys = phys_get(handle, "cuMemMap");
	struct sim_range *r = reservation_of(p, size, "cuMemMap");
	size_t i = r ? map_index(r, p) : 0;
	if (!readable || !writable)
		rc = CUDA_ERROR_OUT_OF_MEMORY;
	else if (!r || offset > phys->size || size > phys->size - offset)
		rc = CUDA_ERROR_INVALID_VALUE;
	else if (i < r->map_count && r->maps[i].start < p + size)
		rc = CUDA_ERROR_INVALID_VALUE; /* only unmapped VA can be mapped */
	if (rc == CUDA_SUCCESS && r->map_count == r->map_cap) {
		size_t cap = r->map_cap ? 2 * r->map_cap : 4;
		struct sim_map *grown = realloc(r->maps, cap * sizeof(*grown));
		if (grown) {
			r->maps = grown;
			r->map_cap = cap;
		} else {
			rc = CUDA_ERROR_OUT_OF_MEMORY;
		}
	}
	/* No access until cuMemSetAccess: PROT_NONE. */
	if (rc == CUDA_SUCCESS &&
	    mmap((void *)p, size, PROT_NONE, MAP_SHARED | MAP_FIXED, phys->fd, (off_t)offset) == MAP_FAILED)
		rc = CUDA_ERROR_OUT_OF_MEMORY;
	if (rc == CUDA_SUCCESS) {
		memmove(&r->maps[i + 1], &r->maps[i], (r->map_count - i) * sizeof(*r->maps));
		r->maps[i] = (struct sim_map){ p, size, phys, offset, readable, writable };
		r->map_count++;
		phys->maps++;
	}
	sim_mem_unlock();
	if (rc != CUDA_SUCCESS) {
		free(readable);
		free(writable);
	}
	return rc;
}

/* Unmaps whole mappings only; several adjoining ones may go at once. */
SIM_EXPORT CUresult cuMemUnmap(CUdeviceptr ptr, size_t size)
{
	SIM_ENTER("cuMemUnmap");
	if (size == 0)
		return CUDA_ERROR_INVALID_VALUE;
	uintptr_t p = (uintptr_t)ptr;
	sim_mem_wrlock();
	struct sim_range *r = reservation_of(p, size, "cuMemUnmap");
	size_t first = r ? map_index(r, p) : 0, last = first;
	uintptr_t at = p;
	while (r && last < r->map_count && r->maps[last].start == at && at < p + size)
		at += r->maps[last++].size;
	if (!r || at != p + size) {
		sim_mem_unlock();
		return CUDA_ERROR_INVALID_VALUE;
	}
	while (last > first)
		unmap_one(r, --last);
	sim_mem_unlock();
	return CUDA_SUCCESS;
}

/* Lock held: whether every granule of [p, p+n) in r is mapped. */
static bool fully_mapped(struct sim_range *r, uintptr_t p, size_t n)
{
	for (uintptr_t g = p; g < p + n; g += SIM_GRANULARITY)
		if (!sim_vmm_map_at(r, g))
			return false;
	return true;
}

SIM_EXPORT CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc,
				   size_t count)
{
	SIM_ENTER("cuMemSetAccess");
	if (!desc || count == 0 || size == 0 || !aligned(ptr) || !aligned(size))
		return CUDA_ERROR_INVALID_VALUE;
	for (size_t i = 0; i < count; i++) {
		int dev;
		CUresult rc = location_device(&desc[i].location, &dev);
		if (rc != CUDA_SUCCESS)
			return rc;
		if (desc[i].flags != CU_MEM_ACCESS_FLAGS_PROT_NONE &&
		    desc[i].flags != CU_MEM_ACCESS_FLAGS_PROT_READ &&
		    desc[i].flags != CU_MEM_ACCESS_FLAGS_PROT_READWRITE)
			return CUDA_ERROR_INVALID_VALUE;
	}
	uintptr_t p = (uintptr_t)ptr;
	sim_mem_wrlock();
	struct sim_range *r = reservation_of(p, size, "cuMemSetAccess");
	if (!r || !fully_mapped(r, p, size)) {
		sim_mem_unlock();
		return CUDA_ERROR_INVALID_VALUE;
	}
	/* A device reaches another's memory only over a peer link. */
	for (uintptr_t g = p; g < p + size; g += SIM_GRANULARITY) {
		int home = sim_vmm_map_at(r, g)->phys->device;
		for (size_t i = 0; i < count; i++)
			if (desc[i].flags != CU_MEM_ACCESS_FLAGS_PROT_NONE && desc[i].location.id != home &&
			    !sim_device_can_peer(sim_device(home), sim_device(desc[i].location.id))) {
				sim_mem_unlock();
				return CUDA_ERROR_INVALID_DEVICE;
			}
	}
	for (uintptr_t g = p; g < p + size; g += SIM_GRANULARITY) {
		struct sim_map *m = sim_vmm_map_at(r, g);
		size_t k = (g - m->start) / SIM_GRANULARITY;
		for (size_t i = 0; i < count; i++) {
			uint64_t bit = 1ULL << desc[i].location.id;
			m->readable[k] &= ~bit;
			m->writable[k] &= ~bit;
			if (desc[i].flags & CU_MEM_ACCESS_FLAGS_PROT_READ)
				m->readable[k] |= bit;
			if (desc[i].flags == CU_MEM_ACCESS_FLAGS_PROT_READWRITE)
				m->writable[k] |= bit;
		}
		/* The host view is the union of what devices may do: kernel
		 * emulations run on the host, and no access must fault. */
		int prot = m->writable[k] ? PROT_READ | PROT_WRITE : m->readable[k] ? PROT_READ : PROT_NONE;
		if (mprotect((void *)g, SIM_GRANULARITY, prot) != 0)
			sim_abort("cuMemSetAccess", "mprotect 0x%" PRIxPTR ": %s", g, strerror(errno));
	}
	sim_mem_unlock();
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuMemGetAccess(unsigned long long *flags, const CUmemLocation *location,
				   CUdeviceptr ptr)
{
	SIM_ENTER("cuMemGetAccess");
	if (!flags || !location)
		return CUDA_ERROR_INVALID_VALUE;
	int dev;
	CUresult rc = location_device(location, &dev);
	if (rc != CUDA_SUCCESS)
		return rc;
	sim_mem_rdlock();
	struct sim_range *r = sim_range_find((uintptr_t)ptr);
	struct sim_map *m = r && r->type == SIM_RANGE_RESERVE ? sim_vmm_map_at(r, (uintptr_t)ptr) : NULL;
	if (m)
		*flags = sim_vmm_access_of(m, (uintptr_t)ptr, dev);
	sim_mem_unlock();
	return m ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

/* ---- the access check ------------------------------------------------------------------------ */

CUresult sim_vmm_access_locked(struct sim_range *r, uintptr_t p, size_t n, int dev, bool write,
			       uintptr_t *end)
{
	uintptr_t stop = r->start + r->size;
	uintptr_t last = p + n < stop ? p + n : stop;
	*end = stop;
	for (uintptr_t a = p; a < last;) {
		struct sim_map *m = sim_vmm_map_at(r, a);
		if (!m)
			return CUDA_ERROR_ILLEGAL_ADDRESS;
		size_t k = (a - m->start) / SIM_GRANULARITY;
		uint64_t mask = write ? m->writable[k] : m->readable[k];
		if (dev < 0 ? mask == 0 : !(mask & (1ULL << dev)))
			return CUDA_ERROR_ILLEGAL_ADDRESS;
		a = m->start + (k + 1) * SIM_GRANULARITY;
	}
	return CUDA_SUCCESS;
}
