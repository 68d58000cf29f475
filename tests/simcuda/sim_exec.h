/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The execution half of simcuda, shared between its own files only:
 *   sim_stream.c      per-context execution state, streams and their workers
 *   sim_stream_api.c  stream waits, properties, host functions, callbacks
 *   sim_memop.c       stream memory operations (wait / write value)
 *   sim_event.c       events
 *   sim_module.c      modules, functions, __device__ globals
 *   sim_library.c     libraries and kernels (context-independent code)
 *   sim_funcattr.c    function attributes and the resources code records
 *   sim_launch.c      kernel launches
 * What the rest of simcuda may call is declared in sim_internal.h.
 */
#ifndef SIM_EXEC_H
#define SIM_EXEC_H

#include "sim_internal.h"

#include "cuimage.h"

/* cuda.h declares the _ptsz entry points only when compiled for per-thread
 * default streams; the files that define them declare them by hand and check
 * each against the typedef of cudaTypedefs.h, so a signature slip fails the
 * build. */
#define SIM_CHECK_ABI(name, pfn)                                                \
	_Static_assert(__builtin_types_compatible_p(__typeof__(&name), pfn), \
		       #name " does not match " #pfn)

/* ---- intrusive doubly linked lists ----------------------------------------- */

struct sim_link {
	struct sim_link *prev, *next;
};

static inline void sim_list_init(struct sim_link *head)
{
	head->prev = head->next = head;
}

static inline bool sim_list_empty(const struct sim_link *head)
{
	return head->next == head;
}

static inline void sim_list_add_tail(struct sim_link *head, struct sim_link *l)
{
	l->prev = head->prev;
	l->next = head;
	head->prev->next = l;
	head->prev = l;
}

static inline void sim_list_del(struct sim_link *l)
{
	l->prev->next = l->next;
	l->next->prev = l->prev;
	l->prev = l->next = l;
}

/* Moves every element of `from` to the empty list `to`. */
static inline void sim_list_splice(struct sim_link *from, struct sim_link *to)
{
	sim_list_init(to);
	if (sim_list_empty(from))
		return;
	to->next = from->next;
	to->prev = from->prev;
	to->next->prev = to;
	to->prev->next = to;
	sim_list_init(from);
}

#define sim_container_of(ptr, type, member) \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))

#define sim_list_for_each(pos, head) \
	for (struct sim_link *pos = (head)->next; pos != (head); pos = pos->next)

/* ---- per-context execution state -------------------------------------------- */

/* Hangs off sim_ctx.exec; created on first use and kept for the life of the
 * process, because a sim_ctx is never freed either and threads racing with a
 * cuCtxDestroy may still hold it. */
struct sim_exec {
	struct sim_ctx *ctx;
	/* Taken after an event's lock and sim_module_lock, before any
	 * stream's; guards the lists but `modules`, and `legacy`. */
	pthread_mutex_t lock;
	struct sim_stream *legacy;      /* created on first use */
	struct sim_link streams;        /* created and per-thread, incl. dying */
	struct sim_link events;
	struct sim_link modules;        /* incl. a library's; under sim_module_lock */
	bool tearing_down;              /* sim_exec_destroy_ctx is joining workers */
};

struct sim_exec *sim_exec_of(struct sim_ctx *ctx);

/* ---- streams ------------------------------------------------------------------ */

enum sim_stream_role {
	SIM_STREAM_CREATED,
	SIM_STREAM_LEGACY,
	SIM_STREAM_PER_THREAD,
};

struct sim_work;

/* Streams are handle objects even when the application never sees them
 * (legacy, per-thread), and like every handle object they are never freed:
 * work on other streams and events may refer to one after it is destroyed,
 * and its counters and condition variable must stay valid for them. */
struct sim_stream {
	struct sim_obj hdr;
	struct sim_ctx *ctx;
	struct sim_exec *exec;
	enum sim_stream_role role;
	unsigned flags;
	int priority;
	unsigned long long id;
	uint64_t owner_thread; /* SIM_STREAM_PER_THREAD */
	struct sim_link exec_link;

	pthread_mutex_t lock;
	pthread_cond_t work_cond;  /* worker: work queued or closing */
	pthread_cond_t done_cond;  /* waiters: `completed` advanced */
	struct sim_work *head, *tail;
	uint64_t submitted; /* sequence number of the last work queued */
	uint64_t completed; /* ... and of the last work finished */
	bool closing;       /* no more work; the worker drains and leaves */
	bool exited;
	pthread_t worker;
	/* cuStreamSetAttribute state, under `lock` (priority too). */
	CUaccessPolicyWindow access_policy;
	CUsynchronizationPolicy sync_policy;
	CUlaunchMemSyncDomainMap domain_map;
	CUlaunchMemSyncDomain domain;
};

/* Stream priorities, as current GPUs report them. */
#define SIM_STREAM_PRIORITY_LEAST 0
#define SIM_STREAM_PRIORITY_GREATEST (-5)

/* The driver clamps rather than rejects priorities out of range. */
static inline int sim_stream_priority_clamp(int priority)
{
	if (priority > SIM_STREAM_PRIORITY_LEAST)
		return SIM_STREAM_PRIORITY_LEAST;
	if (priority < SIM_STREAM_PRIORITY_GREATEST)
		return SIM_STREAM_PRIORITY_GREATEST;
	return priority;
}

/* Like sim_stream_resolve, but a created stream of any context is accepted
 * (queries, synchronisation and cuStreamWaitEvent work on any context's
 * stream). Special streams need a context: returns CUDA_ERROR_INVALID_CONTEXT
 * when there is none. */
CUresult sim_stream_lookup(CUstream s, bool ptds, const char *fn,
			   struct sim_stream **out);

/* A position in a stream's order: done once stream->completed >= seq. */
struct sim_dep {
	struct sim_stream *stream;
	uint64_t seq;
};

/* Flags of sim_stream_enqueue. */
enum {
	/* Runs even after the context has a sticky error (event records and
	 * stream callbacks: the GPU still signals them). */
	SIM_WORK_ALWAYS = 1u << 0,
	/* Runs application code (a host function, callback or kernel
	 * emulation): driver calls from it are refused with
	 * CUDA_ERROR_NOT_PERMITTED, as the driver refuses them. */
	SIM_WORK_APP_CODE = 1u << 1,
};

/* sim_stream_submit with flags and an extra dependency (dep may be NULL);
 * returns the sequence number of the work in *seq (may be NULL). */
CUresult sim_stream_enqueue(struct sim_stream *s, CUresult (*work)(void *arg),
			    void *arg, void (*done)(void *arg), unsigned flags,
			    const struct sim_dep *dep, uint64_t *seq);

/* Blocks until the stream position is reached. */
void sim_dep_wait(const struct sim_dep *dep);
bool sim_dep_reached(const struct sim_dep *dep);

/* Waits for every stream of exec without looking at sticky errors. */
void sim_exec_drain(struct sim_exec *exec);

/* ---- events --------------------------------------------------------------- */

/* Destroys every event of a context (cuCtxDestroy). */
void sim_event_destroy_all(struct sim_link *events);
/* Records an event from inside the simulator (launch completion events). */
CUresult sim_event_record_internal(CUevent ev, struct sim_stream *s,
				   const char *fn);
/* The stream position of the event's last record (seq 0: never recorded). */
void sim_event_position(CUevent ev, const char *fn, struct sim_dep *dep);
bool sim_event_timing_disabled(CUevent ev, const char *fn);

/* ---- modules -------------------------------------------------------------- */

/* Guards every module and library list (exec->modules, library->modules) and
 * the claim of a module for unloading; taken before any exec lock. Never
 * held while waiting for streams. */
extern pthread_mutex_t sim_module_lock;

/* Unloads the modules of a context whose streams are gone (cuCtxDestroy). */
void sim_module_destroy_ctx(struct sim_exec *exec);

/* Static resource use of a kernel, from its code. */
struct sim_kres {
	int regs;
	int static_shared;
	int local_bytes;
	int const_bytes;
	int max_threads;   /* per block, after __launch_bounds__ and registers */
	int ptx_version;   /* CU_FUNC_ATTRIBUTE_PTX_VERSION */
	int binary_version;
};
void sim_kernel_resources(const struct gs_code *code, const struct gs_code_info *info,
			  size_t kernel, const struct sim_device *dev, struct sim_kres *res);

/* The attributes cuFuncSetAttribute / cuKernelSetAttribute may change. */
struct sim_fattrs {
	int max_dynamic_shared;
	int carveout;
	int cluster_dim[3];
	int non_portable_cluster;
	int cluster_policy;
	CUfunc_cache cache_config;
};
/* Bits of the attributes set explicitly, by CUfunction_attribute. */
#define SIM_FATTR_BIT(a) (1u << (a))
#define SIM_FATTR_CACHE_BIT (1u << 31)

/* Defaults, checks and stores shared by CUfunction and CUkernel. */
void sim_fattrs_default(struct sim_fattrs *a, const struct sim_kres *res);
CUresult sim_fattr_get(const struct sim_fattrs *a, const struct sim_kres *res,
		       CUfunction_attribute attrib, int *value);
CUresult sim_fattr_set(struct sim_fattrs *a, const struct sim_kres *res,
		       const struct sim_device *dev, CUfunction_attribute attrib, int value);
void sim_fattrs_copy(struct sim_fattrs *to, const struct sim_fattrs *from, unsigned mask);

struct sim_module;
struct sim_library;
struct sim_kernel;

/* A kernel of a loaded module. */
struct sim_function {
	struct sim_obj hdr;
	struct sim_module *module;
	size_t index; /* in module->info.kernels */
	const struct gs_kernel_info *info;
	struct sim_kernel *kernel; /* when the module came from a library */
	struct sim_kres res;
	pthread_mutex_t lock; /* attrs, emulation, legacy block shape */
	struct sim_fattrs attrs;
	simcuda_kernel_fn *emulation; /* cached after the first launch */
	int block_shape[3];
	unsigned shared_size;
};

struct sim_module {
	struct sim_obj hdr;
	struct sim_ctx *ctx;
	struct sim_library *library; /* NULL for cuModuleLoad* modules */
	struct sim_link exec_link;   /* under sim_module_lock */
	struct sim_link library_link;
	struct sim_link todo_link;
	bool unloading;              /* claimed for teardown, under sim_module_lock */
	struct gs_code code;
	struct gs_code_info info;
	struct sim_function **functions; /* info.nkernels */
	CUdeviceptr *globals;            /* info.nglobals */
	void **global_host;
};

/* Loads code selected from an image into ctx and links the module to its
 * context (and library). Caller holds sim_module_lock. */
CUresult sim_module_create(struct sim_ctx *ctx, struct sim_library *lib, const void *image,
			   size_t size, const char *fn, struct sim_module **out);
/* Unlinks a module from its context and library and marks it unloading;
 * caller holds sim_module_lock. Then sim_module_teardown, without it. */
void sim_module_claim(struct sim_module *m);
void sim_module_teardown(struct sim_module *m);
/* The function of a module by name, or NULL. */
struct sim_function *sim_module_function(struct sim_module *m, const char *name);
CUresult sim_module_global(struct sim_module *m, const char *name, CUdeviceptr *dptr,
			   size_t *bytes);
/* A whole file, NUL-terminated so PTX text is a string (size counts it). */
CUresult sim_read_file(const char *path, void **data, size_t *size);
/* CUresult for a cuimage error while selecting or parsing code. */
CUresult sim_image_error(int err, enum gs_image_kind kind);

/* JIT options of cuModuleLoadDataEx / cuLibraryLoadData: checked, and the
 * outputs written as after a compilation that logged nothing. */
CUresult sim_jit_options(unsigned n, const CUjit_option *options, void **values);

/* ---- libraries ------------------------------------------------------------ */

/* Context-independent code: each context gets its own module of it on first
 * use. Like every handle object, never freed. */
struct sim_library {
	struct sim_obj hdr;
	void *image; /* a copy: the application may free its buffer */
	size_t size;
	struct sim_link modules; /* per context, under sim_module_lock */
	bool unloading;          /* under sim_module_lock */
	/* Per device: the code the driver would load there (err: why none),
	 * for attribute queries that name a device rather than a context. */
	struct sim_library_dev {
		int err;
		struct gs_code code;
		struct gs_code_info info;
	} *devices;
	int ndevices;
	/* Kernel names come from the first device that has code (every arch
	 * of one build defines the same kernels). */
	const struct gs_code_info *names;
	struct sim_kernel **kernels; /* names->nkernels */
};

struct sim_kernel {
	struct sim_obj hdr;
	struct sim_library *library;
	size_t index; /* in library->names->kernels */
	/* Per device, under sim_module_lock: attributes set on the kernel. */
	unsigned *set_mask;
	struct sim_fattrs *attrs;
};

/* The function a CUkernel stands for in ctx, loading the library there on
 * first use. */
CUresult sim_kernel_function(struct sim_kernel *k, struct sim_ctx *ctx, const char *fn,
			     struct sim_function **out);
/* Ties the functions of a library's new module to their kernels and gives
 * them the attributes set on the kernels for the module's device. Caller
 * holds sim_module_lock. */
void sim_library_bind_module(struct sim_library *lib, struct sim_module *m);

/* ---- launches -------------------------------------------------------------- */

/* The function a CUfunction or CUkernel handle names for launching in ctx,
 * aborting on anything else. */
CUresult sim_function_for_launch(CUfunction f, struct sim_ctx *ctx, const char *fn,
				 struct sim_function **out);

/* Device limits (sim_device.c's table) a launch is checked against. */
int sim_device_limit(const struct sim_device *dev, CUdevice_attribute attrib);

#endif
