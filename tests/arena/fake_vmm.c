/* SPDX-License-Identifier: Apache-2.0 */
#include "fake_vmm.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static _Noreturn void violation(const char *op, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static _Noreturn void violation(const char *op, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "fake_vmm: %s: ", op);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

static void *grow(void *p, unsigned *cap, unsigned n, size_t elem)
{
	if (n < *cap)
		return p;
	*cap = *cap ? *cap * 2 : 16;
	p = realloc(p, *cap * elem);
	if (!p)
		abort();
	return p;
}

/* Counts the call; true when it is the one to fail. */
static bool should_fail(struct fake_vmm *f, enum fake_op op)
{
	f->calls[op]++;
	if (f->fail_nth && f->fail_op == op && --f->fail_nth == 0)
		return true;
	return false;
}

static bool overlaps(uint64_t a, uint64_t an, uint64_t b, uint64_t bn)
{
	return a < b + bn && b < a + an;
}

static CUresult fake_reserve(void *opaque, uint64_t hint, uint64_t size, uint64_t *va)
{
	struct fake_vmm *f = opaque;
	CUresult rc = CUDA_SUCCESS;

	pthread_mutex_lock(&f->lock);
	if (should_fail(f, FAKE_RESERVE)) {
		rc = f->fail_rc;
		goto out;
	}
	uint64_t want = hint + f->misplace;
	for (unsigned i = 0; i < f->nres; i++)
		if (overlaps(want, size, f->res[i].va, f->res[i].size))
			want = f->res[i].va + f->res[i].size; /* the driver picks elsewhere */
	if (f->host_memory) {
		/* Like the driver: the hint is honoured only when free. */
		void *p = mmap((void *)want, size, PROT_NONE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (p == MAP_FAILED) {
			rc = CUDA_ERROR_OUT_OF_MEMORY;
			goto out;
		}
		want = (uint64_t)p;
	}
	f->res = grow(f->res, &f->res_cap, f->nres, sizeof(*f->res));
	f->res[f->nres++] = (struct fake_reservation){ want, size };
	*va = want;
out:
	pthread_mutex_unlock(&f->lock);
	return rc;
}

static CUresult fake_unreserve(void *opaque, uint64_t va, uint64_t size)
{
	struct fake_vmm *f = opaque;

	pthread_mutex_lock(&f->lock);
	if (should_fail(f, FAKE_UNRESERVE)) {
		pthread_mutex_unlock(&f->lock);
		return f->fail_rc;
	}
	for (unsigned i = 0; i < f->nres; i++) {
		if (f->res[i].va != va)
			continue;
		if (f->res[i].size != size)
			violation("unreserve", "size %#lx, reserved %#lx", size, f->res[i].size);
		for (unsigned m = 0; m < f->nmaps; m++)
			if (overlaps(f->maps[m].va, f->maps[m].size, va, size))
				violation("unreserve", "range %#lx still has mapping %#lx",
					  va, f->maps[m].va);
		if (f->host_memory)
			munmap((void *)va, size);
		f->res[i] = f->res[--f->nres];
		pthread_mutex_unlock(&f->lock);
		return CUDA_SUCCESS;
	}
	violation("unreserve", "%#lx is not a reservation", va);
}

static struct fake_handle *find_handle(struct fake_vmm *f, uint64_t id)
{
	for (unsigned i = 0; i < f->nhandles; i++)
		if (f->handles[i].id == id)
			return &f->handles[i];
	return NULL;
}

static CUresult fake_create(void *opaque, int device, uint64_t size, uint64_t *handle)
{
	struct fake_vmm *f = opaque;
	CUresult rc = CUDA_SUCCESS;

	pthread_mutex_lock(&f->lock);
	if (device < 0 || device >= FAKE_MAX_DEVICES)
		violation("create", "device %d", device);
	if (size == 0)
		violation("create", "size 0");
	if (should_fail(f, FAKE_CREATE)) {
		rc = f->fail_rc;
		goto out;
	}
	if (f->capacity[device] && f->used[device] + size > f->capacity[device]) {
		rc = CUDA_ERROR_OUT_OF_MEMORY;
		goto out;
	}
	f->used[device] += size;
	f->handles = grow(f->handles, &f->handles_cap, f->nhandles, sizeof(*f->handles));
	f->handles[f->nhandles++] = (struct fake_handle){
		.id = ++f->next_handle, .size = size, .device = device,
	};
	*handle = f->next_handle;
out:
	pthread_mutex_unlock(&f->lock);
	return rc;
}

static CUresult fake_release(void *opaque, uint64_t handle)
{
	struct fake_vmm *f = opaque;

	pthread_mutex_lock(&f->lock);
	struct fake_handle *h = find_handle(f, handle);
	if (!h)
		violation("release", "handle %lu is not live", handle);
	if (should_fail(f, FAKE_RELEASE)) {
		pthread_mutex_unlock(&f->lock);
		return f->fail_rc;
	}
	/* The driver would accept it and free at unmap; the arena always
	 * unmaps first, so anything else is a bug. */
	if (h->mapped)
		violation("release", "handle %lu is still mapped", handle);
	f->used[h->device] -= h->size;
	*h = f->handles[--f->nhandles];
	pthread_mutex_unlock(&f->lock);
	return CUDA_SUCCESS;
}

static CUresult fake_map(void *opaque, uint64_t va, uint64_t size, uint64_t handle)
{
	struct fake_vmm *f = opaque;
	bool inside = false;

	pthread_mutex_lock(&f->lock);
	struct fake_handle *h = find_handle(f, handle);
	if (!h)
		violation("map", "handle %lu is not live", handle);
	if (h->size != size)
		violation("map", "size %#lx of handle sized %#lx", size, h->size);
	for (unsigned i = 0; i < f->nres; i++)
		if (va >= f->res[i].va && va + size <= f->res[i].va + f->res[i].size)
			inside = true;
	if (!inside)
		violation("map", "[%#lx, +%#lx) is outside every reservation", va, size);
	for (unsigned m = 0; m < f->nmaps; m++)
		if (overlaps(f->maps[m].va, f->maps[m].size, va, size))
			violation("map", "%#lx overlaps mapping %#lx", va, f->maps[m].va);
	if (should_fail(f, FAKE_MAP)) {
		pthread_mutex_unlock(&f->lock);
		return f->fail_rc;
	}
	if (f->host_memory &&
	    mmap((void *)va, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
		 -1, 0) == MAP_FAILED)
		violation("map", "host mmap failed");
	h->mapped++;
	f->maps = grow(f->maps, &f->maps_cap, f->nmaps, sizeof(*f->maps));
	f->maps[f->nmaps++] = (struct fake_mapping){ .va = va, .size = size, .handle = handle };
	pthread_mutex_unlock(&f->lock);
	return CUDA_SUCCESS;
}

static struct fake_mapping *find_mapping(struct fake_vmm *f, const char *op, uint64_t va,
					 uint64_t size)
{
	for (unsigned m = 0; m < f->nmaps; m++) {
		if (f->maps[m].va != va)
			continue;
		if (f->maps[m].size != size)
			violation(op, "size %#lx of mapping sized %#lx", size, f->maps[m].size);
		return &f->maps[m];
	}
	violation(op, "%#lx is not a mapping", va);
}

static CUresult fake_unmap(void *opaque, uint64_t va, uint64_t size)
{
	struct fake_vmm *f = opaque;

	pthread_mutex_lock(&f->lock);
	struct fake_mapping *m = find_mapping(f, "unmap", va, size);
	if (should_fail(f, FAKE_UNMAP)) {
		pthread_mutex_unlock(&f->lock);
		return f->fail_rc;
	}
	if (f->host_memory &&
	    mmap((void *)va, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
		 -1, 0) == MAP_FAILED)
		violation("unmap", "host mmap failed");
	find_handle(f, m->handle)->mapped--;
	*m = f->maps[--f->nmaps];
	pthread_mutex_unlock(&f->lock);
	return CUDA_SUCCESS;
}

static CUresult fake_set_access(void *opaque, uint64_t va, uint64_t size, const int *devices,
				unsigned ndevices, bool readwrite)
{
	struct fake_vmm *f = opaque;

	pthread_mutex_lock(&f->lock);
	struct fake_mapping *m = find_mapping(f, "set_access", va, size);
	if (ndevices == 0)
		violation("set_access", "no device");
	if (should_fail(f, FAKE_SET_ACCESS)) {
		pthread_mutex_unlock(&f->lock);
		return f->fail_rc;
	}
	for (unsigned i = 0; i < ndevices; i++) {
		if (devices[i] < 0 || devices[i] >= FAKE_MAX_DEVICES)
			violation("set_access", "device %d", devices[i]);
		if (readwrite)
			m->access |= 1u << devices[i];
		else
			m->access &= ~(1u << devices[i]);
	}
	if (f->host_memory &&
	    mprotect((void *)va, size, m->access ? PROT_READ | PROT_WRITE : PROT_NONE))
		violation("set_access", "mprotect failed");
	pthread_mutex_unlock(&f->lock);
	return CUDA_SUCCESS;
}

static void fake_report(void *opaque, const char *what, uint64_t va, CUresult rc)
{
	struct fake_vmm *f = opaque;

	pthread_mutex_lock(&f->lock);
	f->reports++;
	pthread_mutex_unlock(&f->lock);
	(void)what;
	(void)va;
	(void)rc;
}

/* Memory made by someone else (the test, with fake_vmm_ops.create): it must
 * exist, unmapped, on the device and of the size the arena expects. */
static void fake_adopt(void *opaque, int device, uint64_t size, uint64_t real, uint64_t *handle)
{
	struct fake_vmm *f = opaque;
	struct fake_handle *h;

	pthread_mutex_lock(&f->lock);
	h = find_handle(f, real);
	if (!h)
		violation("adopt", "handle %#lx does not exist", real);
	if (h->device != device || h->size != size)
		violation("adopt", "handle %#lx is %lu bytes on device %d, not %lu on %d", real,
			  h->size, h->device, size, device);
	f->calls[FAKE_ADOPT]++;
	pthread_mutex_unlock(&f->lock);
	*handle = real;
}

const struct gs_arena_ops fake_vmm_ops = {
	.reserve = fake_reserve,
	.unreserve = fake_unreserve,
	.create = fake_create,
	.adopt = fake_adopt,
	.release = fake_release,
	.map = fake_map,
	.unmap = fake_unmap,
	.set_access = fake_set_access,
	.report = fake_report,
};

void fake_vmm_init(struct fake_vmm *f, bool host_memory)
{
	memset(f, 0, sizeof(*f));
	pthread_mutex_init(&f->lock, NULL);
	f->host_memory = host_memory;
}

void fake_vmm_fini(struct fake_vmm *f)
{
	if (f->host_memory)
		for (unsigned i = 0; i < f->nres; i++)
			munmap((void *)f->res[i].va, f->res[i].size);
	free(f->res);
	free(f->handles);
	free(f->maps);
	pthread_mutex_destroy(&f->lock);
}

void fake_vmm_fail(struct fake_vmm *f, enum fake_op op, unsigned nth, CUresult rc)
{
	pthread_mutex_lock(&f->lock);
	f->fail_op = op;
	f->fail_nth = nth;
	f->fail_rc = rc;
	pthread_mutex_unlock(&f->lock);
}

#define COUNTER(name, field)                              \
	unsigned name(struct fake_vmm *f)                 \
	{                                                 \
		pthread_mutex_lock(&f->lock);             \
		unsigned n = f->field;                    \
		pthread_mutex_unlock(&f->lock);           \
		return n;                                 \
	}
COUNTER(fake_vmm_reservations, nres)
COUNTER(fake_vmm_handles, nhandles)
COUNTER(fake_vmm_mappings, nmaps)

uint64_t fake_vmm_bytes_mapped(struct fake_vmm *f)
{
	uint64_t n = 0;

	pthread_mutex_lock(&f->lock);
	for (unsigned m = 0; m < f->nmaps; m++)
		n += f->maps[m].size;
	pthread_mutex_unlock(&f->lock);
	return n;
}

bool fake_vmm_accessible(struct fake_vmm *f, uint64_t va, uint64_t size, int device)
{
	uint64_t end = va + size;
	bool progress = true;

	pthread_mutex_lock(&f->lock);
	/* Mappings are unordered: advance va through whichever covers it. */
	while (va < end && progress) {
		progress = false;
		for (unsigned m = 0; m < f->nmaps; m++) {
			struct fake_mapping *mp = &f->maps[m];
			if (va >= mp->va && va < mp->va + mp->size &&
			    (mp->access & (1u << device))) {
				va = mp->va + mp->size;
				progress = true;
			}
		}
	}
	pthread_mutex_unlock(&f->lock);
	return va >= end;
}

int fake_vmm_device_at(struct fake_vmm *f, uint64_t va)
{
	int dev = -1;

	pthread_mutex_lock(&f->lock);
	for (unsigned m = 0; m < f->nmaps; m++)
		if (va >= f->maps[m].va && va < f->maps[m].va + f->maps[m].size)
			dev = find_handle(f, f->maps[m].handle)->device;
	pthread_mutex_unlock(&f->lock);
	return dev;
}

struct gs_arena_config fake_vmm_config(struct fake_vmm *f, uint64_t base, uint64_t size,
				       uint64_t granularity, int device, unsigned max_spare)
{
	return (struct gs_arena_config){
		.ops = &fake_vmm_ops,
		.opaque = f,
		.base = base,
		.size = size,
		.granularity = granularity,
		.device = device,
		.max_spare = max_spare,
		.exact_base = true,
	};
}
