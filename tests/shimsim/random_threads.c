/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The tracker's view matches reality after randomised create/destroy
 * sequences from several threads.
 *
 * Four threads (argv[2]) each run a seeded random sequence of driver calls:
 * streams, events, cuMemAlloc of 1 B to 8 MiB, pinned host memory, PTX
 * modules and their functions, contexts created, pushed, popped and
 * destroyed (taking their objects with them), and the application's own VMM
 * (reserve, create, map, set access, unmap, release, free). Every few
 * hundred calls all threads stop at a barrier and the main thread compares
 * three views of the process:
 *
 *   - what the program knows it holds (its own bookkeeping below);
 *   - the tracker's counts and bytes per record kind (introspection);
 *   - the simulator's own bookkeeping: cuMemGetInfo of every device, and the
 *     strict simulator itself, which aborts on any handle it does not hold
 *     live (each thread queries every object it holds at each stop).
 *
 * The arena serves cuMemAlloc from chunks the program cannot see, so device
 * memory is checked as identities rather than exact counts: the physical
 * memory the tracker records equals what the simulator says is in use; the
 * shim's share of it (tracker minus the application's own cuMemCreate bytes)
 * equals the shim's share of the mapped bytes (each arena chunk is mapped
 * once) and covers every live allocation.
 *
 * argv[1]: seed (default fixed, so a failure can be replayed; the seed and
 * each thread's last operations are printed on failure). Thread interleaving
 * still varies from run to run: that is the point of running several.
 */
#include <cuda.h>
#include <dlfcn.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shimsim.h"

#define MAX_THREADS 8
#define MAX_DEVICES 2
#define CAP 48          /* of each kind of object, per thread */
#define RESV_SLOTS 4    /* granules per reservation */
#define MAX_ALLOC (8u << 20)
#define HISTORY 16      /* last operations kept per thread, for failure messages */

static int nthreads = 4;
static int rounds = 6;
static int ops_per_round = 120;

/* Two small PTX modules without __device__ variables: the simulator keeps a
 * module's globals in device memory, which would blur the comparison of
 * device memory with the tracker's physical allocations. */
static const char ptx_one[] =
	".version 8.0\n.target sm_80\n.address_size 64\n"
	".visible .entry shimsim_a()\n{\n\tret;\n}\n";
static const char ptx_two[] =
	".version 8.0\n.target sm_80\n.address_size 64\n"
	".visible .entry shimsim_b()\n{\n\tret;\n}\n"
	".visible .entry shimsim_c(.param .u64 p)\n{\n\tret;\n}\n";

struct owned { /* an object and the context it belongs to */
	uint64_t h;
	CUcontext ctx;
};

struct alloc_obj {
	CUdeviceptr p;
	size_t size;
	CUcontext ctx;
};

struct host_obj {
	void *p;
	size_t size;
	CUcontext ctx;
};

struct module_obj {
	CUmodule m;
	CUcontext ctx;
	size_t image_bytes;
	unsigned functions; /* distinct functions looked up */
};

struct ctx_obj {
	CUcontext c;
	int dev;
};

struct resv_obj {
	CUdeviceptr va;
	unsigned used; /* bit per granule slot mapped */
};

struct phys_obj {
	CUmemGenericAllocationHandle h;
	size_t size;
	int dev;
	bool released;
	int maps;
};

struct map_obj {
	CUdeviceptr va;
	size_t size;
	int resv, slot;
	CUmemGenericAllocationHandle h; /* which phys */
};

struct worker {
	int id;
	uint64_t rng;
	pthread_t thread;
	CUcontext primary;   /* bottom of the context stack */
	int primary_dev;
	int pushed;          /* index in ctxs of the pushed context, or -1 */
	struct owned streams[CAP], events[CAP];
	int nstreams, nevents;
	struct alloc_obj allocs[CAP];
	int nallocs;
	struct host_obj hosts[CAP];
	int nhosts;
	struct module_obj modules[CAP];
	int nmodules;
	struct ctx_obj ctxs[CAP / 8];
	int nctxs;
	struct resv_obj resvs[CAP / 4];
	int nresvs;
	struct phys_obj phys[CAP];
	int nphys;
	struct map_obj maps[CAP];
	int nmaps;
	const char *history[HISTORY];
	unsigned nhistory;
	unsigned long ops;
};

static struct worker workers[MAX_THREADS];
static pthread_barrier_t stop_barrier, go_barrier;
static int ndev;
static CUcontext primaries[MAX_DEVICES];
static size_t gran;
static size_t used0[MAX_DEVICES];
static struct ss_counts base;
/* Devices on which cuMemAlloc was called: each got an arena window, one
 * shim-owned reservation that stays for the life of the process. */
static atomic_bool arena_dev[MAX_DEVICES];
static uint64_t seed = 0x5eed5eed;

static unsigned pick(struct worker *w, unsigned n)
{
	return (unsigned)(ss_rand(&w->rng) % n);
}

static void note(struct worker *w, const char *op)
{
	w->history[w->nhistory++ % HISTORY] = op;
	w->ops++;
}

/* The context that is current on the worker's thread now. */
static CUcontext current_ctx(struct worker *w)
{
	return w->pushed >= 0 ? w->ctxs[w->pushed].c : w->primary;
}

static int current_dev(struct worker *w)
{
	return w->pushed >= 0 ? w->ctxs[w->pushed].dev : w->primary_dev;
}

/* Remove element i of an array of n by moving the last one into its place. */
#define DROP(arr, n, i) ((arr)[i] = (arr)[--(n)])

/* ---- operations ---------------------------------------------------------------- */

static void op_stream(struct worker *w)
{
	if (w->nstreams > 0 && (w->nstreams == CAP || pick(w, 2))) {
		unsigned i = pick(w, (unsigned)w->nstreams);

		note(w, "cuStreamDestroy");
		CU_CHECK(cuStreamDestroy((CUstream)w->streams[i].h));
		DROP(w->streams, w->nstreams, i);
		return;
	}
	CUstream s = NULL;
	CUresult rc;

	if (pick(w, 3) == 0) {
		int lo, hi;

		note(w, "cuStreamCreateWithPriority");
		CU_CHECK(cuCtxGetStreamPriorityRange(&lo, &hi));
		rc = cuStreamCreateWithPriority(&s, CU_STREAM_NON_BLOCKING, hi);
	} else {
		note(w, "cuStreamCreate");
		rc = cuStreamCreate(&s, pick(w, 2) ? CU_STREAM_NON_BLOCKING : CU_STREAM_DEFAULT);
	}
	CHECK(rc == CUDA_SUCCESS, "thread %d: creating a stream: %s", w->id, ss_err(rc));
	if (rc == CUDA_SUCCESS)
		w->streams[w->nstreams++] = (struct owned){ (uintptr_t)s, current_ctx(w) };
}

static void op_event(struct worker *w)
{
	if (w->nevents > 0 && (w->nevents == CAP || pick(w, 2))) {
		unsigned i = pick(w, (unsigned)w->nevents);

		note(w, "cuEventDestroy");
		CU_CHECK(cuEventDestroy((CUevent)w->events[i].h));
		DROP(w->events, w->nevents, i);
		return;
	}
	static const unsigned flags[] = { CU_EVENT_DEFAULT, CU_EVENT_DISABLE_TIMING,
					  CU_EVENT_BLOCKING_SYNC };
	CUevent e = NULL;
	CUresult rc;

	note(w, "cuEventCreate");
	rc = cuEventCreate(&e, flags[pick(w, 3)]);
	CHECK(rc == CUDA_SUCCESS, "thread %d: cuEventCreate: %s", w->id, ss_err(rc));
	if (rc != CUDA_SUCCESS)
		return;
	w->events[w->nevents++] = (struct owned){ (uintptr_t)e, current_ctx(w) };
	/* Used once, on a stream of the same context when there is one. */
	for (int i = 0; i < w->nstreams; i++) {
		if (w->streams[i].ctx == current_ctx(w)) {
			CU_CHECK(cuEventRecord(e, (CUstream)w->streams[i].h));
			break;
		}
	}
}

/* 1 B to 8 MiB, spread evenly over the powers of two: the arena's size
 * classes, whole chunks and multi-chunk spans all get used. */
static size_t random_size(struct worker *w)
{
	unsigned bits = pick(w, 23);
	size_t size = ((size_t)1 << bits) + (ss_rand(&w->rng) & (((size_t)1 << bits) - 1));

	return size > MAX_ALLOC ? MAX_ALLOC : size;
}

static void op_alloc(struct worker *w)
{
	if (w->nallocs > 0 && (w->nallocs == CAP || pick(w, 2))) {
		unsigned i = pick(w, (unsigned)w->nallocs);

		note(w, "cuMemFree");
		CU_CHECK(cuMemFree(w->allocs[i].p));
		DROP(w->allocs, w->nallocs, i);
		return;
	}
	size_t size = random_size(w), got = 0;
	CUdeviceptr p = 0, start = 0;
	CUresult rc;

	note(w, "cuMemAlloc");
	atomic_store(&arena_dev[current_dev(w)], true);
	rc = cuMemAlloc(&p, size);
	CHECK(rc == CUDA_SUCCESS, "thread %d: cuMemAlloc(%zu): %s", w->id, size, ss_err(rc));
	if (rc != CUDA_SUCCESS)
		return;
	w->allocs[w->nallocs++] = (struct alloc_obj){ p, size, current_ctx(w) };
	/* The memory is there (the simulator aborts on an access outside
	 * live memory), and the shim describes it as a cuMemAlloc pointer. */
	CU_CHECK(cuMemsetD8(p, (unsigned char)w->id, size < 256 ? size : 256));
	CU_CHECK(cuMemsetD8(p + size - 1, 0xa5, 1));
	CU_CHECK(cuMemGetAddressRange(&start, &got, p + size - 1));
	CHECK(start == p && got == size, "thread %d: cuMemGetAddressRange(%#llx + %zu - 1) = "
	      "%#llx, %zu", w->id, (unsigned long long)p, size, (unsigned long long)start, got);
}

/* Pinned host memory, which the shim serves itself (mmap + registration)
 * and which dies with its context like device memory. */
static void op_host(struct worker *w)
{
	if (w->nhosts > 0 && (w->nhosts == CAP || pick(w, 2))) {
		unsigned i = pick(w, (unsigned)w->nhosts);

		note(w, "cuMemFreeHost");
		CU_CHECK(cuMemFreeHost(w->hosts[i].p));
		DROP(w->hosts, w->nhosts, i);
		return;
	}
	size_t size = 1 + (size_t)pick(w, 256 << 10);
	void *p = NULL;
	CUresult rc;

	note(w, "cuMemHostAlloc");
	rc = pick(w, 2) ? cuMemHostAlloc(&p, size, CU_MEMHOSTALLOC_DEVICEMAP)
			: cuMemAllocHost(&p, size);
	CHECK(rc == CUDA_SUCCESS, "thread %d: allocating %zu bytes of pinned host memory: %s",
	      w->id, size, ss_err(rc));
	if (rc != CUDA_SUCCESS)
		return;
	w->hosts[w->nhosts++] = (struct host_obj){ p, size, current_ctx(w) };
	/* Host memory: the program touches it directly. */
	memset(p, w->id, size);
}

static void op_module(struct worker *w)
{
	if (w->nmodules > 0 && (w->nmodules == CAP || pick(w, 2))) {
		unsigned i = pick(w, (unsigned)w->nmodules);

		note(w, "cuModuleUnload");
		CU_CHECK(cuModuleUnload(w->modules[i].m));
		DROP(w->modules, w->nmodules, i);
		return;
	}
	bool two = pick(w, 2);
	const char *image = two ? ptx_two : ptx_one;
	CUmodule m = NULL;
	CUfunction f = NULL, again = NULL;
	CUresult rc;

	note(w, "cuModuleLoadData");
	rc = cuModuleLoadData(&m, image);
	CHECK(rc == CUDA_SUCCESS, "thread %d: cuModuleLoadData: %s", w->id, ss_err(rc));
	if (rc != CUDA_SUCCESS)
		return;
	struct module_obj *mo = &w->modules[w->nmodules++];

	*mo = (struct module_obj){ m, current_ctx(w), strlen(image) + 1, 0 };
	/* A function looked up twice is one record. */
	CU_CHECK(cuModuleGetFunction(&f, m, two ? "shimsim_b" : "shimsim_a"));
	CU_CHECK(cuModuleGetFunction(&again, m, two ? "shimsim_b" : "shimsim_a"));
	CHECK(f == again, "thread %d: two look-ups of one function differ", w->id);
	mo->functions = 1;
	if (two && pick(w, 2)) {
		CU_CHECK(cuModuleGetFunction(&f, m, "shimsim_c"));
		mo->functions = 2;
	}
}

/* A context is gone: so is everything made in it. */
static void forget_ctx_objects(struct worker *w, CUcontext c)
{
	for (int i = w->nstreams - 1; i >= 0; i--)
		if (w->streams[i].ctx == c)
			DROP(w->streams, w->nstreams, i);
	for (int i = w->nevents - 1; i >= 0; i--)
		if (w->events[i].ctx == c)
			DROP(w->events, w->nevents, i);
	for (int i = w->nallocs - 1; i >= 0; i--)
		if (w->allocs[i].ctx == c)
			DROP(w->allocs, w->nallocs, i);
	for (int i = w->nhosts - 1; i >= 0; i--)
		if (w->hosts[i].ctx == c)
			DROP(w->hosts, w->nhosts, i);
	for (int i = w->nmodules - 1; i >= 0; i--)
		if (w->modules[i].ctx == c)
			DROP(w->modules, w->nmodules, i);
}

static void destroy_ctx(struct worker *w, int i)
{
	CUcontext c = w->ctxs[i].c;

	note(w, "cuCtxDestroy");
	CU_CHECK(cuCtxDestroy(c));
	/* Destroying the current context pops it. */
	if (w->pushed == i)
		w->pushed = -1;
	forget_ctx_objects(w, c);
	DROP(w->ctxs, w->nctxs, i);
	if (w->pushed == w->nctxs) /* the last one moved into slot i */
		w->pushed = i;
}

static void op_ctx(struct worker *w)
{
	unsigned what = pick(w, 4);

	if (w->pushed >= 0 && what < 2) {
		CUcontext popped = NULL;

		note(w, "cuCtxPopCurrent");
		CU_CHECK(cuCtxPopCurrent(&popped));
		CHECK(popped == w->ctxs[w->pushed].c, "thread %d: popped %p, expected %p", w->id,
		      (void *)popped, (void *)w->ctxs[w->pushed].c);
		w->pushed = -1;
	} else if (w->pushed < 0 && what == 0 && w->nctxs > 0) {
		int i = (int)pick(w, (unsigned)w->nctxs);

		note(w, "cuCtxPushCurrent");
		CU_CHECK(cuCtxPushCurrent(w->ctxs[i].c));
		w->pushed = i;
	} else if (what == 2 && w->nctxs > 0) {
		destroy_ctx(w, (int)pick(w, (unsigned)w->nctxs));
	} else if (w->pushed < 0 && w->nctxs < CAP / 8) {
		int dev = (int)pick(w, (unsigned)ndev);
		CUcontext c = NULL;
		CUresult rc;

		note(w, "cuCtxCreate");
		rc = cuCtxCreate(&c, NULL, pick(w, 2) ? CU_CTX_SCHED_BLOCKING_SYNC : 0, dev);
		CHECK(rc == CUDA_SUCCESS, "thread %d: cuCtxCreate: %s", w->id, ss_err(rc));
		if (rc != CUDA_SUCCESS)
			return;
		/* cuCtxCreate pushes the new context. */
		w->ctxs[w->nctxs] = (struct ctx_obj){ c, dev };
		w->pushed = w->nctxs++;
	}
}

static CUmemAllocationProp device_prop(int dev)
{
	CUmemAllocationProp prop = {
		.type = CU_MEM_ALLOCATION_TYPE_PINNED,
		.location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = dev },
	};
	return prop;
}

static int phys_index(struct worker *w, CUmemGenericAllocationHandle h)
{
	for (int i = 0; i < w->nphys; i++)
		if (w->phys[i].h == h)
			return i;
	return -1;
}

/* A physical allocation is gone once released and unmapped everywhere. */
static void phys_maybe_gone(struct worker *w, int i)
{
	if (w->phys[i].released && w->phys[i].maps == 0)
		DROP(w->phys, w->nphys, i);
}

static void vmm_unmap(struct worker *w, int i)
{
	struct map_obj *m = &w->maps[i];
	int p = phys_index(w, m->h);

	note(w, "cuMemUnmap");
	CU_CHECK(cuMemUnmap(m->va, m->size));
	for (size_t s = 0; s < m->size / gran; s++)
		w->resvs[m->resv].used &= ~(1u << (m->slot + (int)s));
	DROP(w->maps, w->nmaps, i);
	if (p >= 0) {
		w->phys[p].maps--;
		phys_maybe_gone(w, p);
	}
}

/* Where a mapping of `granules` fits: a reservation and its first slot. */
static bool find_slot(struct worker *w, unsigned granules, int *resv, int *slot)
{
	unsigned mask = (1u << granules) - 1;

	for (int r = 0; r < w->nresvs; r++)
		for (int s = 0; s + (int)granules <= RESV_SLOTS; s++)
			if (!(w->resvs[r].used & (mask << s))) {
				*resv = r;
				*slot = s;
				return true;
			}
	return false;
}

static void op_vmm(struct worker *w)
{
	switch (pick(w, 6)) {
	case 0: /* reserve */
		if (w->nresvs < CAP / 4) {
			CUdeviceptr va = 0;

			note(w, "cuMemAddressReserve");
			CU_CHECK(cuMemAddressReserve(&va, RESV_SLOTS * gran, 0, 0, 0));
			if (va)
				w->resvs[w->nresvs++] = (struct resv_obj){ va, 0 };
		}
		break;
	case 1: /* free a reservation nothing is mapped into */
		for (int r = 0; r < w->nresvs; r++) {
			if (w->resvs[r].used)
				continue;
			note(w, "cuMemAddressFree");
			CU_CHECK(cuMemAddressFree(w->resvs[r].va, RESV_SLOTS * gran));
			/* The mappings refer to reservations by index. */
			for (int m = 0; m < w->nmaps; m++)
				if (w->maps[m].resv == w->nresvs - 1)
					w->maps[m].resv = r;
			DROP(w->resvs, w->nresvs, r);
			break;
		}
		break;
	case 2: /* create */
		if (w->nphys < CAP) {
			int dev = (int)pick(w, (unsigned)ndev);
			CUmemAllocationProp prop = device_prop(dev);
			size_t size = gran * (1 + pick(w, 2));
			CUmemGenericAllocationHandle h = 0;
			CUresult rc;

			note(w, "cuMemCreate");
			rc = cuMemCreate(&h, size, &prop, 0);
			CHECK(rc == CUDA_SUCCESS, "thread %d: cuMemCreate: %s", w->id, ss_err(rc));
			if (rc == CUDA_SUCCESS)
				w->phys[w->nphys++] = (struct phys_obj){ h, size, dev, false, 0 };
		}
		break;
	case 3: { /* map a live handle, and give its device access */
		int r, s;

		if (w->nphys == 0 || w->nmaps == CAP)
			break;
		int p = (int)pick(w, (unsigned)w->nphys);
		struct phys_obj *ph = &w->phys[p];

		if (ph->released || !find_slot(w, (unsigned)(ph->size / gran), &r, &s))
			break;
		CUdeviceptr va = w->resvs[r].va + (CUdeviceptr)s * gran;
		CUmemAccessDesc access = {
			.location = { .type = CU_MEM_LOCATION_TYPE_DEVICE, .id = ph->dev },
			.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE,
		};

		note(w, "cuMemMap");
		CU_CHECK(cuMemMap(va, ph->size, 0, ph->h, 0));
		CU_CHECK(cuMemSetAccess(va, ph->size, &access, 1));
		for (size_t k = 0; k < ph->size / gran; k++)
			w->resvs[r].used |= 1u << (s + (int)k);
		w->maps[w->nmaps++] = (struct map_obj){ va, ph->size, r, s, ph->h };
		ph->maps++;
		break;
	}
	case 4:
		if (w->nmaps > 0)
			vmm_unmap(w, (int)pick(w, (unsigned)w->nmaps));
		break;
	case 5: /* release a handle; its mappings keep the memory */
		for (int p = 0; p < w->nphys; p++) {
			if (w->phys[p].released)
				continue;
			note(w, "cuMemRelease");
			CU_CHECK(cuMemRelease(w->phys[p].h));
			w->phys[p].released = true;
			phys_maybe_gone(w, p);
			break;
		}
		break;
	}
}

static void one_op(struct worker *w)
{
	switch (pick(w, 13)) {
	case 0: case 1: op_stream(w); break;
	case 2: case 3: op_event(w); break;
	case 4: case 5: case 6: op_alloc(w); break;
	case 7: case 8: op_module(w); break;
	case 9: op_ctx(w); break;
	case 10: op_host(w); break;
	default: op_vmm(w); break;
	}
}

/* Ask the simulator about every object held: the strict simulator aborts
 * (failing the test) on any handle it does not hold live. */
static void query_all(struct worker *w)
{
	for (int i = 0; i < w->nstreams; i++) {
		CUresult rc = cuStreamQuery((CUstream)w->streams[i].h);

		CHECK(rc == CUDA_SUCCESS || rc == CUDA_ERROR_NOT_READY, "cuStreamQuery: %s",
		      ss_err(rc));
	}
	for (int i = 0; i < w->nevents; i++) {
		CUresult rc = cuEventQuery((CUevent)w->events[i].h);

		CHECK(rc == CUDA_SUCCESS || rc == CUDA_ERROR_NOT_READY, "cuEventQuery: %s",
		      ss_err(rc));
	}
	for (int i = 0; i < w->nallocs; i++) {
		CUcontext owner = NULL;

		CU_CHECK(cuPointerGetAttribute(&owner, CU_POINTER_ATTRIBUTE_CONTEXT,
					       w->allocs[i].p));
		CHECK(owner == w->allocs[i].ctx, "thread %d: allocation %#llx belongs to %p, "
		      "expected %p", w->id, (unsigned long long)w->allocs[i].p, (void *)owner,
		      (void *)w->allocs[i].ctx);
	}
	for (int i = 0; i < w->nhosts; i++) {
		unsigned flags = 0;

		/* The shim answers for its own pinned memory. */
		CU_CHECK(cuMemHostGetFlags(&flags, w->hosts[i].p));
	}
	for (int i = 0; i < w->nmodules; i++) {
		CUfunction f;

		CU_CHECK(cuModuleGetFunction(&f, w->modules[i].m,
					     w->modules[i].image_bytes == sizeof(ptx_one)
						     ? "shimsim_a" : "shimsim_b"));
	}
	for (int i = 0; i < w->nmaps; i++) {
		CUmemGenericAllocationHandle h = 0;

		/* A retain adds a reference the release below takes back. */
		CU_CHECK(cuMemRetainAllocationHandle(&h, (void *)(uintptr_t)w->maps[i].va));
		CU_CHECK(cuMemRelease(h));
	}
}

static void cleanup(struct worker *w)
{
	while (w->nctxs > 0)
		destroy_ctx(w, w->nctxs - 1);
	for (int i = 0; i < w->nstreams; i++)
		CU_CHECK(cuStreamDestroy((CUstream)w->streams[i].h));
	for (int i = 0; i < w->nevents; i++)
		CU_CHECK(cuEventDestroy((CUevent)w->events[i].h));
	for (int i = 0; i < w->nallocs; i++)
		CU_CHECK(cuMemFree(w->allocs[i].p));
	for (int i = 0; i < w->nhosts; i++)
		CU_CHECK(cuMemFreeHost(w->hosts[i].p));
	for (int i = 0; i < w->nmodules; i++)
		CU_CHECK(cuModuleUnload(w->modules[i].m));
	w->nstreams = w->nevents = w->nallocs = w->nhosts = w->nmodules = 0;
	while (w->nmaps > 0)
		vmm_unmap(w, w->nmaps - 1);
	while (w->nphys > 0) {
		CU_CHECK(cuMemRelease(w->phys[0].h));
		w->phys[0].released = true;
		phys_maybe_gone(w, 0);
	}
	for (int r = 0; r < w->nresvs; r++)
		CU_CHECK(cuMemAddressFree(w->resvs[r].va, RESV_SLOTS * gran));
	w->nresvs = 0;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	CU_CHECK(cuCtxSetCurrent(w->primary));
	for (int r = 0; r <= rounds; r++) {
		if (r == rounds) {
			cleanup(w);
		} else {
			for (int i = 0; i < ops_per_round; i++)
				one_op(w);
			query_all(w);
		}
		pthread_barrier_wait(&stop_barrier); /* the main thread checks */
		pthread_barrier_wait(&go_barrier);
	}
	return NULL;
}

/* ---- the comparison ------------------------------------------------------------ */

static size_t device_used(int dev)
{
	size_t free_b = 0, total = 0;

	CU_REQUIRE(cuCtxSetCurrent(primaries[dev]));
	CU_REQUIRE(cuMemGetInfo(&free_b, &total));
	return total - free_b;
}

static void print_history(void)
{
	for (int t = 0; t < nthreads; t++) {
		struct worker *w = &workers[t];
		unsigned n = w->nhistory < HISTORY ? w->nhistory : HISTORY;

		fprintf(stderr, "thread %d, %lu operations, the last:", t, w->ops);
		for (unsigned i = 0; i < n; i++)
			fprintf(stderr, " %s", w->history[(w->nhistory - n + i) % HISTORY]);
		fputc('\n', stderr);
	}
}

static bool compare(const char *when)
{
	struct ss_counts want = base, got;
	uint64_t app_phys = 0, app_map = 0, windows = 0;
	int64_t used = 0;
	int failed = 0;

	ss_counts_get(&got);
	for (int t = 0; t < nthreads; t++) {
		struct worker *w = &workers[t];

		want.count[SS_CTX] += (uint64_t)w->nctxs;
		want.count[SS_STREAM] += (uint64_t)w->nstreams;
		want.count[SS_EVENT] += (uint64_t)w->nevents;
		want.count[SS_MODULE] += (uint64_t)w->nmodules;
		want.count[SS_ALLOC] += (uint64_t)w->nallocs;
		for (int i = 0; i < w->nallocs; i++)
			want.bytes[SS_ALLOC] += w->allocs[i].size;
		want.count[SS_HOST] += (uint64_t)w->nhosts;
		for (int i = 0; i < w->nhosts; i++)
			want.bytes[SS_HOST] += w->hosts[i].size;
		for (int i = 0; i < w->nmodules; i++) {
			want.bytes[SS_MODULE] += w->modules[i].image_bytes;
			want.count[SS_FUNCTION] += w->modules[i].functions;
		}
		want.count[SS_RESERVATION] += (uint64_t)w->nresvs;
		want.bytes[SS_RESERVATION] += (uint64_t)w->nresvs * RESV_SLOTS * gran;
		for (int i = 0; i < w->nphys; i++)
			app_phys += w->phys[i].size;
		want.count[SS_PHYS] += (uint64_t)w->nphys;
		for (int i = 0; i < w->nmaps; i++)
			app_map += w->maps[i].size;
		want.count[SS_MAPPING] += (uint64_t)w->nmaps;
	}
	for (int d = 0; d < ndev; d++) {
		used += (int64_t)device_used(d) - (int64_t)used0[d];
		windows += atomic_load(&arena_dev[d]);
	}

	/* Device memory: the identities of the header comment. */
	uint64_t phys_delta = got.bytes[SS_PHYS] - base.bytes[SS_PHYS];
	uint64_t shim_phys = phys_delta - app_phys;
	uint64_t shim_map = got.bytes[SS_MAPPING] - base.bytes[SS_MAPPING] - app_map;

	if ((int64_t)phys_delta != used) {
		fprintf(stderr, "%s: the simulator has %lld bytes more in use than at the start, "
			"the tracker's physical allocations %llu more\n", when, (long long)used,
			(unsigned long long)phys_delta);
		failed++;
	}
	if (got.bytes[SS_PHYS] < base.bytes[SS_PHYS] + app_phys || shim_phys != shim_map) {
		fprintf(stderr, "%s: shim-owned physical bytes %lld (tracker %llu - application "
			"%llu) but shim-owned mapped bytes %lld\n", when, (long long)shim_phys,
			(unsigned long long)phys_delta, (unsigned long long)app_phys,
			(long long)shim_map);
		failed++;
	}
	if (shim_phys < want.bytes[SS_ALLOC] - base.bytes[SS_ALLOC]) {
		fprintf(stderr, "%s: %llu bytes allocated but the arena's chunks hold %llu\n", when,
			(unsigned long long)(want.bytes[SS_ALLOC] - base.bytes[SS_ALLOC]),
			(unsigned long long)shim_phys);
		failed++;
	}
	/* Counts the program cannot know exactly (the arena's chunks and
	 * window sizes) are compared as bounds, then taken from the tracker so
	 * the exact comparison below covers everything else. */
	if (got.count[SS_PHYS] < want.count[SS_PHYS] ||
	    got.count[SS_MAPPING] < want.count[SS_MAPPING] ||
	    (shim_phys > 0 && got.count[SS_PHYS] == want.count[SS_PHYS])) {
		fprintf(stderr, "%s: physical allocations / mappings: tracker %llu / %llu, the "
			"application's alone %llu / %llu\n", when,
			(unsigned long long)got.count[SS_PHYS],
			(unsigned long long)got.count[SS_MAPPING],
			(unsigned long long)want.count[SS_PHYS],
			(unsigned long long)want.count[SS_MAPPING]);
		failed++;
	}
	want.count[SS_PHYS] = got.count[SS_PHYS];
	want.count[SS_MAPPING] = got.count[SS_MAPPING];
	want.bytes[SS_PHYS] = base.bytes[SS_PHYS] + (uint64_t)used;
	want.bytes[SS_MAPPING] = got.bytes[SS_MAPPING];
	/* Arena windows: one more reservation per device that has one (made
	 * at its first cuMemAlloc), of a size the shim picks. */
	want.count[SS_RESERVATION] += windows;
	if (got.bytes[SS_RESERVATION] <= want.bytes[SS_RESERVATION] && windows > 0) {
		fprintf(stderr, "%s: reservation bytes %llu do not cover the arena windows\n", when,
			(unsigned long long)got.bytes[SS_RESERVATION]);
		failed++;
	}
	want.bytes[SS_RESERVATION] = got.bytes[SS_RESERVATION];

	failed += ss_counts_diff(when, &want, &got);
	if (failed) {
		fprintf(stderr, "%s: seed %#llx, %d threads\n", when, (unsigned long long)seed,
			nthreads);
		print_history();
		atomic_fetch_add(&ss_failures, failed);
	}
	return failed == 0;
}

int main(int argc, char **argv)
{
	const char *ops = getenv("SHIMSIM_OPS");
	CUmemAllocationProp prop = device_prop(0);

	if (argc > 1)
		seed = strtoull(argv[1], NULL, 0);
	if (argc > 2)
		nthreads = atoi(argv[2]);
	if (ops)
		ops_per_round = atoi(ops);
	REQUIRE(nthreads >= 1 && nthreads <= MAX_THREADS, "1 to %d threads", MAX_THREADS);
	ss_introspect_load(RTLD_DEFAULT);

	CU_REQUIRE(cuInit(0));
	CU_REQUIRE(cuDeviceGetCount(&ndev));
	if (ndev > MAX_DEVICES)
		ndev = MAX_DEVICES;
	REQUIRE(ndev >= 1, "no device");
	for (int d = 0; d < ndev; d++)
		CU_REQUIRE(cuDevicePrimaryCtxRetain(&primaries[d], d));
	CU_REQUIRE(cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
	for (int d = 0; d < ndev; d++)
		used0[d] = device_used(d);
	ss_counts_get(&base);
	CHECK(base.count[SS_CTX] == (uint64_t)ndev, "%llu context records after retaining %d "
	      "primary contexts", (unsigned long long)base.count[SS_CTX], ndev);

	REQUIRE(pthread_barrier_init(&stop_barrier, NULL, (unsigned)nthreads + 1) == 0, "barrier");
	REQUIRE(pthread_barrier_init(&go_barrier, NULL, (unsigned)nthreads + 1) == 0, "barrier");
	for (int t = 0; t < nthreads; t++) {
		struct worker *w = &workers[t];

		w->id = t;
		w->rng = seed * 0x9E3779B97F4A7C15ull + (uint64_t)t + 1;
		w->pushed = -1;
		w->primary_dev = t % ndev;
		w->primary = primaries[w->primary_dev];
		REQUIRE(pthread_create(&w->thread, NULL, worker_main, w) == 0, "pthread_create");
	}
	for (int r = 0; r <= rounds; r++) {
		char when[64];

		pthread_barrier_wait(&stop_barrier);
		snprintf(when, sizeof(when), r == rounds ? "after clean-up" : "round %d", r + 1);
		compare(when);
		pthread_barrier_wait(&go_barrier);
	}
	for (int t = 0; t < nthreads; t++)
		pthread_join(workers[t].thread, NULL);

	/* What stays: the arena windows, and at most a spare chunk per arena. */
	struct ss_counts end;
	uint64_t windows = 0;

	ss_counts_get(&end);
	for (int d = 0; d < ndev; d++)
		windows += atomic_load(&arena_dev[d]);
	CHECK(end.bytes[SS_PHYS] - base.bytes[SS_PHYS] <= windows * gran,
	      "%llu bytes of physical memory left after everything was freed",
	      (unsigned long long)(end.bytes[SS_PHYS] - base.bytes[SS_PHYS]));
	for (int d = 0; d < ndev; d++)
		CU_CHECK(cuDevicePrimaryCtxRelease(d));
	printf("seed %#llx, %d threads, %d rounds of %d operations\n", (unsigned long long)seed,
	       nthreads, rounds, ops_per_round);
	return ss_result("random create/destroy from several threads");
}
