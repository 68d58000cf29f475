/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tracker: the process's GPU state as a set of records, one per live driver
 * object (DESIGN.md §4, §5). It never calls the driver: the shim's hooks
 * report what the driver did, after it succeeded, and the tracker remembers
 * everything a later thaw needs to create the object again on another GPU.
 *
 * Handles. Every handle-backed record has an app-visible value (what the
 * application holds) and a real value (what the driver now underneath
 * knows). Until the first migration they are equal. Functions that record a
 * new object take the real handle the driver returned and give back, through
 * an out parameter, the value the application must see (gs_hmap_adopt: the
 * same value, or a synthetic one after a migration when it collides). Every
 * other function takes app-visible handles. Address-keyed records
 * (allocations, reservations, mappings, host memory, globals) are keyed by
 * address: addresses never change across a migration.
 *
 * Threads. Every function may be called from any thread. One mutex guards
 * the records; it is a leaf lock: nothing outside the tracker is called
 * while it is held, except the iteration callbacks (which must not call the
 * tracker). Handle translation (handlemap.h) is lock-free for readers.
 *
 * Errors. 0 or -errno: -EINVAL for a NULL/0 handle or malformed argument,
 * -ENOENT for an unknown handle, -EEXIST for a duplicate, -ENOMEM. A hook
 * that gets an error logs it; the application's call has already succeeded
 * and is never failed because of the tracker.
 *
 * Ownership of copied data: the tracker copies everything a record keeps
 * (names, image bytes, option arrays, paths); callers keep their buffers.
 */
#ifndef GS_TRACKER_H
#define GS_TRACKER_H

#include <cuda.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cuimage.h"
#include "handlemap.h"

/* ---- record kinds ---------------------------------------------------------- */

enum gs_kind {
	GS_KIND_CTX = 0,     /* CUcontext: created, primary, adopted, green */
	GS_KIND_STREAM,      /* CUstream */
	GS_KIND_EVENT,       /* CUevent */
	GS_KIND_MODULE,      /* CUmodule */
	GS_KIND_LIBRARY,     /* CUlibrary */
	GS_KIND_FUNCTION,    /* CUfunction */
	GS_KIND_KERNEL,      /* CUkernel */
	GS_KIND_GLOBAL,      /* __device__ variable of a module or library (by address) */
	GS_KIND_LINK,        /* CUlinkState in progress */
	GS_KIND_ALLOC,       /* device memory served by the shim (cuMemAlloc*) */
	GS_KIND_HOST,        /* pinned host memory: shim allocations and registrations */
	GS_KIND_RESERVATION, /* cuMemAddressReserve range */
	GS_KIND_PHYS,        /* CUmemGenericAllocationHandle (cuMemCreate) */
	GS_KIND_MAPPING,     /* cuMemMap of a physical handle into a reservation */
	GS_KIND_UNSUPPORTED, /* live objects a migration cannot carry yet */
	GS_KIND_COUNT
};

/* "ctx", "stream", ... */
const char *gs_kind_name(enum gs_kind kind);

/* What each GS_KIND_UNSUPPORTED record is. gpu-freeze refuses while any
 * exists, naming them (DESIGN.md §5). */
enum gs_unsup_kind {
	GS_UNSUP_MEMPOOL = 0,   /* cuMemPoolCreate / ImportFromShareableHandle */
	GS_UNSUP_ASYNC_ALLOC,   /* cuMemAllocAsync / AllocFromPoolAsync / PoolImportPointer */
	GS_UNSUP_ARRAY,         /* cuArrayCreate / cuArray3DCreate */
	GS_UNSUP_MIPMAPPED_ARRAY,
	GS_UNSUP_MANAGED,       /* cuMemAllocManaged, cuLibraryGetManaged */
	GS_UNSUP_IPC_MEM_EXPORT,  /* cuIpcGetMemHandle (key: the address) */
	GS_UNSUP_IPC_MEM_IMPORT,  /* cuIpcOpenMemHandle */
	GS_UNSUP_IPC_EVENT_EXPORT, /* cuIpcGetEventHandle (key: the event) */
	GS_UNSUP_IPC_EVENT_IMPORT, /* cuIpcOpenEventHandle (key: the event) */
	GS_UNSUP_SHAREABLE_EXPORT, /* cuMemExportToShareableHandle (key: the handle) */
	GS_UNSUP_SHAREABLE_IMPORT, /* cuMemImportFromShareableHandle (key: the handle) */
	GS_UNSUP_MULTICAST,     /* cuMulticastCreate */
	GS_UNSUP_GRAPH,         /* cuGraphCreate / Clone / EndCapture */
	GS_UNSUP_GRAPH_EXEC,    /* cuGraphInstantiate* */
	GS_UNSUP_STREAM_CAPTURE, /* a capture in progress (key: the stream) */
	GS_UNSUP_GREEN_CTX,     /* cuGreenCtxCreate */
	GS_UNSUP_COUNT
};

/* "mempool", "graph", ...: a short name (introspection keys). */
const char *gs_unsup_name(enum gs_unsup_kind what);
/* "memory pool", "CUDA graph", ...: for messages. */
const char *gs_unsup_describe(enum gs_unsup_kind what);

/* ---- records ---------------------------------------------------------------
 *
 * Every record starts with struct gs_rec. Records are read through
 * gs_trk_foreach (under the tracker lock); the pointers they hold (names,
 * images) stay valid only during the callback.
 */
struct gs_rec {
	enum gs_kind kind;
	uint64_t app;    /* app-visible handle, or the address */
	uint64_t real;   /* current real handle (== app until a migration) */
	uint64_t serial; /* creation order across all kinds: restore in this order */
	/* private to the tracker */
	struct gs_rec *prev, *next;
	uint64_t acct_bytes;      /* what it adds to gs_trk_stats.bytes */
	bool shim_owned;
};

/* Checked downcast for iteration callbacks: NULL when rec is of another kind. */
#define GS_REC_AS(type, kindval, rec) \
	((rec) && (rec)->kind == (kindval) ? (const type *)(const void *)(rec) : NULL)

/* Owner of a VMM record: the application's own VMM calls, or the shim's
 * arena reserving and backing its window. */
enum gs_owner {
	GS_OWNER_APP = 0,
	GS_OWNER_SHIM,
};

enum gs_ctx_origin {
	GS_CTX_CREATED = 0, /* cuCtxCreate */
	GS_CTX_PRIMARY,     /* cuDevicePrimaryCtxRetain */
	GS_CTX_ADOPTED,     /* first seen current (e.g. a primary context cudart got
			     * through its export table); primary when known */
	GS_CTX_GREEN,       /* cuCtxFromGreenCtx: not migratable yet */
};

struct gs_ctx_rec {
	struct gs_rec hdr;
	enum gs_ctx_origin origin;
	bool primary;             /* the device's primary context */
	int device;               /* app ordinal */
	unsigned flags;           /* creation flags, then cuCtxSetFlags */
	unsigned retains;         /* primary: retains not yet released */
	/* cuCtxCreate_v4 parameters */
	CUexecAffinityParam *affinity;
	int naffinity;
	bool cig;                 /* CUctxCigParam given: shares a graphics
				   * context, which cannot be carried over */
	uint64_t green;           /* GS_CTX_GREEN: its CUgreenCtx */
	uint32_t limits_set;      /* bit (1 << CUlimit) for each cuCtxSetLimit */
	size_t limits[CU_LIMIT_MAX];
	bool cache_config_set;
	CUfunc_cache cache_config;
	bool shmem_config_set;
	CUsharedconfig shmem_config;
	uint64_t peers_enabled;   /* bit per app ordinal: cuCtxEnablePeerAccess
				   * from this context to that device's memory */
};

struct gs_stream_rec {
	struct gs_rec hdr;
	uint64_t ctx;             /* app CUcontext */
	unsigned flags;
	int priority;
	bool priority_set;        /* created with cuStreamCreateWithPriority */
	uint64_t green;           /* created by cuGreenCtxStreamCreate: its green ctx */
	bool capturing;
	CUstreamCaptureMode capture_mode;
};

struct gs_event_rec {
	struct gs_rec hdr;
	uint64_t ctx;
	unsigned flags;
	bool ipc_imported;        /* from cuIpcOpenEventHandle */
};

/* A JIT or library option as the tracker kept it. Only options whose value
 * is a scalar carried in the value slot itself are copied: pointer values
 * (log buffers, symbol tables) would dangle once the call returns. */
enum gs_opt_class {
	GS_OPT_COPIED = 0, /* `value` holds the scalar */
	GS_OPT_OUTPUT,     /* an output or log option: nothing to replay */
	GS_OPT_POINTER,    /* pointer-valued input: not copied, so a reload
			    * cannot reproduce it (reported by gs_trk_check) */
	GS_OPT_UNKNOWN,    /* an option this build does not know: not copied */
};

struct gs_opt {
	int option;        /* CUjit_option or CUlibraryOption */
	enum gs_opt_class cls;
	uint64_t value;
};

struct gs_optlist {
	struct gs_opt *opts;
	unsigned n;
	unsigned lost;     /* GS_OPT_POINTER + GS_OPT_UNKNOWN entries */
};

/* The kernels and globals of an image's code for one architecture
 * (gs_image_select + gs_code_parse), parsed once and shared. */
struct gs_layouts {
	unsigned sm;
	int error;                  /* 0, or why there is no parse (-ENOENT:
				     * no code for sm, -EINVAL: malformed) */
	struct gs_code code;
	struct gs_code_info info;
	/* private */
	struct gs_layouts *next;
};

/* A private copy of a code image. */
struct gs_image_copy {
	enum gs_image_kind kind;    /* of `data` (a fatbin wrapper's fatbin is copied) */
	void *data;
	size_t size;
	int error;                  /* 0, or why there is no copy (-errno) */
	struct gs_layouts *layouts; /* parsed per architecture, lazily */
};

enum gs_module_source {
	GS_MODSRC_FILE = 0,   /* cuModuleLoad */
	GS_MODSRC_DATA,       /* cuModuleLoadData */
	GS_MODSRC_DATA_EX,    /* cuModuleLoadDataEx */
	GS_MODSRC_FATBINARY,  /* cuModuleLoadFatBinary */
	GS_MODSRC_LIBRARY,    /* cuLibraryGetModule: the library's module in a context */
};

struct gs_module_rec {
	struct gs_rec hdr;
	uint64_t ctx;
	int device;               /* app ordinal of ctx's device, -1 unknown */
	enum gs_module_source source;
	char *path;               /* GS_MODSRC_FILE */
	struct gs_image_copy image; /* empty for GS_MODSRC_LIBRARY */
	struct gs_optlist jit;
	uint64_t library;         /* GS_MODSRC_LIBRARY */
	bool from_link;           /* the image is a cuLinkComplete output */
	unsigned sm;              /* architecture of the layouts below, 0 unknown */
	const struct gs_layouts *layouts;
};

enum gs_library_source {
	GS_LIBSRC_DATA = 0,   /* cuLibraryLoadData */
	GS_LIBSRC_FILE,       /* cuLibraryLoadFromFile */
};

struct gs_library_rec {
	struct gs_rec hdr;
	enum gs_library_source source;
	char *path;
	struct gs_image_copy image;
	struct gs_optlist jit;
	struct gs_optlist lib;
	bool from_link;
};

#define GS_FUNC_ATTRS 32 /* > CU_FUNC_ATTRIBUTE_MAX, checked at build time */

struct gs_function_rec {
	struct gs_rec hdr;
	uint64_t module;          /* cuModuleGetFunction: its module */
	uint64_t kernel;          /* cuKernelGetFunction: its kernel */
	uint64_t ctx;             /* context it belongs to (0 unknown) */
	char *name;
	const struct gs_kernel_info *layout; /* NULL when not parsed */
	uint32_t attrs_set;       /* bit per CUfunction_attribute set */
	int attrs[GS_FUNC_ATTRS];
	bool cache_config_set;
	CUfunc_cache cache_config;
	bool shmem_config_set;
	CUsharedconfig shmem_config;
	bool block_shape_set;     /* legacy cuFuncSetBlockShape */
	int block_shape[3];
	bool shared_size_set;     /* legacy cuFuncSetSharedSize */
	unsigned shared_size;
};

/* A per-device kernel setting: cuKernelSetAttribute (attr >= 0),
 * cuKernelSetCacheConfig (attr == GS_KERNEL_CACHE_CONFIG), or
 * cuFuncSetSharedMemConfig on a kernel (GS_KERNEL_SHMEM_CONFIG). device -1:
 * every device (a CUkernel passed as a CUfunction). One entry per (device,
 * attr), in the order they were last set: replaying them in order gives the
 * driver's state. */
#define GS_KERNEL_CACHE_CONFIG (-1)
#define GS_KERNEL_SHMEM_CONFIG (-2)
struct gs_kernel_setting {
	int device;
	int attr;
	int value;
};

struct gs_kernel_rec {
	struct gs_rec hdr;
	uint64_t library;
	char *name;
	struct gs_kernel_setting *settings; /* in the order they were set */
	unsigned nsettings;
};

struct gs_global_rec {
	struct gs_rec hdr;        /* app = real = the device address */
	enum gs_kind owner_kind;  /* GS_KIND_MODULE or GS_KIND_LIBRARY */
	uint64_t owner;
	uint64_t ctx;
	char *name;
	size_t size;
};

/* A cuLinkAddData/AddFile input, copied so a later thaw onto another
 * architecture could link again. */
struct gs_link_input {
	CUjitInputType type;
	char *name;               /* AddData name, or the AddFile path */
	bool from_file;
	void *data;
	size_t size;
	int error;                /* AddFile: 0, or why the file could not be read */
	struct gs_optlist opts;
};

struct gs_link_rec {
	struct gs_rec hdr;
	struct gs_optlist opts;
	struct gs_link_input *inputs;
	unsigned ninputs;
	uint64_t output_addr;     /* cubinOut as the driver returned it, 0 until complete */
	void *output;             /* our copy */
	size_t output_size;
};

/* Flags of an arena allocation record (gs_alloc_desc.flags). */
#define GS_ALLOC_PITCH       0x1u /* cuMemAllocPitch */
#define GS_ALLOC_PASSTHROUGH 0x2u /* the real cuMemAlloc served it (no VMM) */

struct gs_alloc_desc {
	CUdeviceptr addr;
	size_t size;              /* what cuMemGetAddressRange reports */
	size_t footprint;         /* bytes of device memory it uses (>= size) */
	CUcontext ctx;            /* app handle of the allocating context */
	int device;               /* app ordinal */
	unsigned flags;           /* GS_ALLOC_* */
	size_t pitch;             /* GS_ALLOC_PITCH */
	uint64_t buffer_id;       /* CU_POINTER_ATTRIBUTE_BUFFER_ID the shim answers */
};

struct gs_alloc_rec {
	struct gs_rec hdr;        /* app = real = addr */
	struct gs_alloc_desc d;
};

enum gs_host_kind {
	GS_HOST_ALLOC = 0,        /* cuMemHostAlloc / cuMemAllocHost, served by the shim */
	GS_HOST_REGISTER,         /* cuMemHostRegister of application memory */
};

struct gs_host_desc {
	void *ptr;
	size_t size;
	enum gs_host_kind kind;
	unsigned flags;           /* CU_MEMHOSTALLOC_* or CU_MEMHOSTREGISTER_* */
	CUcontext ctx;            /* context current when it was made */
	CUdeviceptr devptr;       /* cuMemHostGetDevicePointer answer, 0 unknown */
};

struct gs_host_rec {
	struct gs_rec hdr;        /* app = real = ptr */
	struct gs_host_desc d;
};

struct gs_resv_rec {
	struct gs_rec hdr;        /* app = real = address */
	size_t size;
	size_t alignment;
	CUdeviceptr hint;         /* the addr argument */
	unsigned long long flags;
	enum gs_owner owner;
};

struct gs_phys_rec {
	struct gs_rec hdr;        /* app/real: the CUmemGenericAllocationHandle */
	size_t size;
	CUmemAllocationProp prop;
	unsigned long long flags;
	enum gs_owner owner;
	bool imported;            /* cuMemImportFromShareableHandle */
	uint64_t alias_of;        /* cuMemRetainAllocationHandle gave a value other
				   * than the original's: that original */
	unsigned handle_refs;     /* cuMemCreate/Retain minus cuMemRelease */
	unsigned maps;            /* live mappings of it; the memory lives
				   * while either count is non-zero */
};

struct gs_access {
	CUmemLocation location;
	CUmemAccess_flags flags;
};

struct gs_mapping_rec {
	struct gs_rec hdr;        /* app = real = va */
	size_t size;
	size_t offset;
	uint64_t phys;            /* app handle of the physical allocation */
	unsigned long long flags;
	enum gs_owner owner;
	struct gs_access *access; /* latest flags per location, from cuMemSetAccess */
	unsigned naccess;
	bool access_partial;      /* a cuMemSetAccess covered only part of it */
};

struct gs_unsup_rec {
	struct gs_rec hdr;        /* app/real: the handle, or the address */
	enum gs_unsup_kind what;
	size_t size;              /* bytes, where it has a size */
	uint64_t ctx;
	uint64_t parent;          /* e.g. the library of a managed global: it
				   * goes when its parent goes */
	const char *api;          /* the entry point that created it (static string) */
};

/* ---- lifecycle ---------------------------------------------------------- */

/* Set up the tracker (idempotent, thread-safe; every other function also
 * calls it). Does nothing that could call the driver. */
int gs_trk_init(void);

/* Drop every record and handle pair, and reset the device table and map
 * (teardown callbacks stay registered). For tests, and for a process that
 * tears down all GPU state: no other thread may use the tracker or its maps
 * meanwhile. */
void gs_trk_clear(void);

/* ---- handle and device maps -------------------------------------------- */

/* The handle map of a handle kind (ctx, stream, event, module, library,
 * function, kernel, link, phys); NULL for address-keyed kinds. */
struct gs_handlemap *gs_trk_handlemap(enum gs_kind kind);

/* The device-ordinal map (identity for every ordinal until the shim's
 * start-up narrows it to the device count with gs_devmap_reset). */
struct gs_devmap *gs_trk_devmap(void);

/* Thaw: the object behind app handle `app` now has real handle `real`.
 * Updates the record and the handle map. For GS_KIND_GLOBAL, `app` is the
 * address the application knows and `real` the variable's address in the
 * reloaded module (records only: globals have no handle map). */
int gs_trk_rebind(enum gs_kind kind, uint64_t app, uint64_t real);

/* ---- devices ------------------------------------------------------------ */

struct gs_device_info {
	int sm;                   /* major * 10 + minor, 0 unknown */
	bool primary_flags_set;   /* cuDevicePrimaryCtxSetFlags was called */
	unsigned primary_flags;
};

/* Remember a device's compute capability (hooks learn it from the driver). */
int gs_trk_device_set_sm(int device, int sm);
int gs_trk_device_get(int device, struct gs_device_info *out);

/* ---- contexts ----------------------------------------------------------- */

int gs_trk_ctx_created(CUcontext real, int device, unsigned flags,
		       const CUctxCreateParams *params, CUcontext *app);
/* cuDevicePrimaryCtxRetain returned `real`. The first retain creates the
 * record, later ones count. */
int gs_trk_primary_retained(int device, CUcontext real, CUcontext *app);
/* cuDevicePrimaryCtxRelease succeeded; `still_active` is what
 * cuDevicePrimaryCtxGetState said afterwards (the driver resets the context
 * at the last release, which may come from a retain the shim never saw). */
int gs_trk_primary_released(int device, bool still_active);
/* cuDevicePrimaryCtxReset: everything the primary context held is gone;
 * the record stays when the context is `still_active` (retained: the driver
 * keeps the handle usable, empty). */
int gs_trk_primary_reset(int device, bool still_active);
int gs_trk_primary_set_flags(int device, unsigned flags);
/* A context seen current but never seen created: record it. `primary` when
 * the hook established it is the device's primary context. Returns 1 when it
 * was already known. */
int gs_trk_ctx_adopt(CUcontext real, int device, bool primary, CUcontext *app);
int gs_trk_ctx_from_green(CUcontext real, CUgreenCtx green, int device, CUcontext *app);
/* cuCtxDestroy succeeded: the context and everything it held are gone,
 * allocation and host-memory records included. The primary-context
 * functions do the same when the driver resets it. */
int gs_trk_ctx_destroyed(CUcontext ctx);
/* The app handle of a device's primary context record, or NULL. */
CUcontext gs_trk_primary_ctx(int device);
/* The device of a known context: >= 0, or -ENOENT. */
int gs_trk_ctx_device(CUcontext ctx);
int gs_trk_ctx_set_flags(CUcontext ctx, unsigned flags);
int gs_trk_ctx_set_limit(CUcontext ctx, CUlimit limit, size_t value);
int gs_trk_ctx_set_cache_config(CUcontext ctx, CUfunc_cache config);
int gs_trk_ctx_set_shmem_config(CUcontext ctx, CUsharedconfig config);
int gs_trk_ctx_peer_access(CUcontext ctx, int peer_device, bool enabled);

/*
 * Context teardown callbacks: run, outside the tracker lock, when a
 * context's resources die (cuCtxDestroy, the last primary release, a primary
 * reset), before the tracker drops that context's records (allocations and
 * host memory included, as the driver frees them). The shim's memory layers
 * register here to free what they serve for the context; a callback may
 * call the tracker. At most 8 callbacks; -ENOSPC beyond.
 */
typedef void gs_trk_teardown_fn(CUcontext ctx, void *arg);
int gs_trk_on_ctx_teardown(gs_trk_teardown_fn *fn, void *arg);

/* ---- streams and events ------------------------------------------------- */

int gs_trk_stream_created(CUcontext ctx, CUstream real, unsigned flags, int priority,
			  bool priority_set, CUstream *app);
int gs_trk_stream_green_created(CUgreenCtx green, CUstream real, unsigned flags,
				int priority, CUstream *app);
int gs_trk_stream_destroyed(CUstream stream);
/* Capture on `stream` (a created stream or a default-stream value) began or
 * ended. A capture is an unsupported live state until it ends. */
int gs_trk_capture_begin(CUstream stream, CUcontext ctx, CUstreamCaptureMode mode);
int gs_trk_capture_end(CUstream stream);

int gs_trk_event_created(CUcontext ctx, CUevent real, unsigned flags, bool ipc_imported,
			 CUevent *app);
int gs_trk_event_destroyed(CUevent event);

/* ---- modules, libraries, functions, kernels, globals, link ------------- */

/* Everything a module load hook knows. The tracker copies the image: from
 * `image` (size from gs_image_probe, or `image_size` when non-zero, e.g. a
 * cuLinkComplete output), or by reading `path` when image is NULL. Option
 * arrays are filtered (struct gs_opt). `sm` selects the code whose kernel
 * layouts are parsed (0: unknown, no parse). */
struct gs_module_desc {
	CUcontext ctx;
	int device;
	unsigned sm;
	enum gs_module_source source;
	const char *path;
	const void *image;
	size_t image_size;
	unsigned nopts;
	const CUjit_option *opts;
	void *const *optvals;
};
int gs_trk_module_loaded(const struct gs_module_desc *d, CUmodule real, CUmodule *app);
/* cuLibraryGetModule: the library's module in context ctx. */
int gs_trk_library_module(CUlibrary lib, CUcontext ctx, int device, unsigned sm,
			  CUmodule real, CUmodule *app);
/* Unloading drops the module's functions and globals. */
int gs_trk_module_unloaded(CUmodule mod);

struct gs_library_desc {
	enum gs_library_source source;
	const char *path;
	const void *image;
	size_t image_size;
	unsigned njit;
	const CUjit_option *jit;
	void *const *jitvals;
	unsigned nlib;
	const CUlibraryOption *lib;
	void *const *libvals;
	unsigned sm;              /* parse layouts for this architecture now (0: later) */
};
int gs_trk_library_loaded(const struct gs_library_desc *d, CUlibrary real, CUlibrary *app);
/* Unloading drops its kernels, modules, functions and globals. */
int gs_trk_library_unloaded(CUlibrary lib);

/* cuModuleGetFunction / cuModuleEnumerateFunctions. Repeated look-ups of a
 * known handle return it (result 1). */
int gs_trk_function_found(CUmodule mod, const char *name, CUfunction real, CUfunction *app);
/* cuKernelGetFunction in context ctx (sm: its device's architecture). */
int gs_trk_kernel_function(CUkernel kernel, CUcontext ctx, unsigned sm, CUfunction real,
			   CUfunction *app);
int gs_trk_kernel_found(CUlibrary lib, const char *name, CUkernel real, CUkernel *app);

/* Function settings. A CUkernel cast to CUfunction (which the driver
 * accepts) is recorded on the kernel for every device. */
int gs_trk_func_set_attr(CUfunction f, CUfunction_attribute attr, int value);
int gs_trk_func_set_cache_config(CUfunction f, CUfunc_cache config);
int gs_trk_func_set_shmem_config(CUfunction f, CUsharedconfig config);
int gs_trk_func_set_block_shape(CUfunction f, int x, int y, int z);
int gs_trk_func_set_shared_size(CUfunction f, unsigned bytes);
/* device < 0: every device */
int gs_trk_kernel_set_attr(CUkernel k, CUfunction_attribute attr, int value, int device);
int gs_trk_kernel_set_cache_config(CUkernel k, CUfunc_cache config, int device);

/* cuModuleGetGlobal / cuLibraryGetGlobal. owner_kind GS_KIND_MODULE or
 * GS_KIND_LIBRARY; ctx NULL for a module's global means the module's
 * context. A repeated look-up returns 1. */
int gs_trk_global_found(enum gs_kind owner_kind, uint64_t owner, CUcontext ctx,
			const char *name, CUdeviceptr addr, size_t size);

int gs_trk_link_created(CUlinkState real, unsigned nopts, const CUjit_option *opts,
			void *const *optvals, CUlinkState *app);
/* data != NULL: copy `size` bytes; else read `path`. */
int gs_trk_link_input(CUlinkState link, CUjitInputType type, const void *data, size_t size,
		      const char *name_or_path, unsigned nopts, const CUjit_option *opts,
		      void *const *optvals);
int gs_trk_link_completed(CUlinkState link, const void *cubin, size_t size);
int gs_trk_link_destroyed(CUlinkState link);
/* The size of a live link output starting at `image`, or 0: a module loaded
 * from it is copied with the size the driver gave, not a probed one. */
size_t gs_trk_link_output_size(const void *image);

/*
 * Kernel parameter layouts (gs_code_parse of the code the driver selected):
 * copies up to `max` parameters into `out` and the buffer size into
 * *param_bytes; returns the parameter count (which may exceed max), or
 * -ENOENT (unknown handle or no such kernel in the code), or the parse error
 * of the image (-EINVAL malformed, -ENODATA no image copy). A library's
 * layouts are per architecture and parsed on first use for `sm`.
 */
int gs_trk_function_params(CUfunction f, struct gs_kparam *out, unsigned max,
			   size_t *param_bytes);
int gs_trk_kernel_params(CUkernel k, unsigned sm, struct gs_kparam *out, unsigned max,
			 size_t *param_bytes);

/* ---- device memory served by the shim (the arena) ----------------------- */
/*
 * The arena calls these, with app-visible context handles, as it serves
 * cuMemAlloc / cuMemAllocPitch / cuMemFree. Allocations may not overlap.
 * gs_trk_alloc_find answers "which allocation contains this address"
 * (cuMemGetAddressRange, cuPointerGetAttribute). Freeing also forgets any
 * IPC export of the address.
 */
int gs_trk_alloc_add(const struct gs_alloc_desc *d);
int gs_trk_alloc_remove(CUdeviceptr addr, struct gs_alloc_desc *out);
int gs_trk_alloc_find(CUdeviceptr addr, struct gs_alloc_desc *out);

/* ---- pinned host memory (hostmem) -------------------------------------- */
/* Same pattern for cuMemHostAlloc / cuMemAllocHost (served by the shim) and
 * cuMemHostRegister / cuMemHostUnregister. */
int gs_trk_host_add(const struct gs_host_desc *d);
int gs_trk_host_remove(void *ptr, struct gs_host_desc *out);
int gs_trk_host_find(const void *addr, struct gs_host_desc *out);

/* ---- VMM ------------------------------------------------------------------ */
/*
 * The application's VMM calls come through the hooks (owner GS_OWNER_APP);
 * the arena records its own window and chunks with GS_OWNER_SHIM so a
 * restore finds every range (counted apart in the statistics).
 */
int gs_trk_reserve_add(CUdeviceptr addr, size_t size, size_t alignment, CUdeviceptr hint,
		       unsigned long long flags, enum gs_owner owner);
/* cuMemAddressFree(addr, size): drops the reservations inside the range
 * (trimming any that straddle its ends). */
int gs_trk_reserve_free(CUdeviceptr addr, size_t size);

int gs_trk_phys_created(CUmemGenericAllocationHandle real, size_t size,
			const CUmemAllocationProp *prop, unsigned long long flags,
			enum gs_owner owner, bool imported, CUmemGenericAllocationHandle *app);
/* cuMemRelease. The record stays while mappings use the memory. */
int gs_trk_phys_released(CUmemGenericAllocationHandle h);
/* cuMemRetainAllocationHandle(addr) returned `real`: one more reference to
 * the physical allocation mapped at addr. */
int gs_trk_phys_retained(CUdeviceptr addr, CUmemGenericAllocationHandle real,
			 CUmemGenericAllocationHandle *app);

int gs_trk_map_add(CUdeviceptr va, size_t size, size_t offset, CUmemGenericAllocationHandle h,
		   unsigned long long flags, enum gs_owner owner);
/* cuMemUnmap(va, size): drops the mappings inside the range (trimming any
 * that straddle its ends, with their offset adjusted). */
int gs_trk_unmap(CUdeviceptr va, size_t size);
int gs_trk_set_access(CUdeviceptr va, size_t size, const CUmemAccessDesc *desc, size_t count);

/* ---- unsupported live objects --------------------------------------------- */

/* `api` must be a static string (the entry point's name). */
int gs_trk_unsup_add(enum gs_unsup_kind what, uint64_t key, size_t size, CUcontext ctx,
		     uint64_t parent, const char *api);
int gs_trk_unsup_remove(enum gs_unsup_kind what, uint64_t key);
/* cuMemFree of a pointer the arena did not serve: forgets a managed or
 * stream-ordered allocation at addr, and any IPC export of it. 0, or
 * -ENOENT when there was no such allocation. */
int gs_trk_foreign_free(CUdeviceptr addr);

/* ---- introspection -------------------------------------------------------- */

struct gs_trk_stats {
	size_t count[GS_KIND_COUNT];
	/* allocations, host memory, reservations, physical memory, mappings:
	 * bytes they cover; globals: their sizes; modules and libraries: image
	 * bytes copied; link: input and output bytes copied; unsupported:
	 * bytes where known; 0 for the other kinds. */
	uint64_t bytes[GS_KIND_COUNT];
	/* Of the above, VMM records owned by the shim itself. */
	size_t shim_count[GS_KIND_COUNT];
	uint64_t shim_bytes[GS_KIND_COUNT];
	size_t unsup_count[GS_UNSUP_COUNT];
	uint64_t unsup_bytes[GS_UNSUP_COUNT];
	/* Per app device: arena allocation bytes (footprint). */
	uint64_t device_bytes[GS_MAX_DEVICES];
};

/* A consistent snapshot of every count. */
void gs_trk_get_stats(struct gs_trk_stats *out);
size_t gs_trk_count(enum gs_kind kind);
uint64_t gs_trk_bytes(enum gs_kind kind);

/* Visit the records of one kind in creation order, under the tracker lock
 * (fn must not call the tracker: the lock is not recursive). Stops at and
 * returns the first non-zero return of fn. */
typedef int gs_trk_visit_fn(const struct gs_rec *rec, void *arg);
int gs_trk_foreach(enum gs_kind kind, gs_trk_visit_fn *fn, void *arg);

/* Visit a single record by app handle (or address for address kinds; for
 * GS_KIND_UNSUPPORTED the first kind of object with that key), under the
 * lock like gs_trk_foreach. fn's result, or -ENOENT. */
int gs_trk_with(enum gs_kind kind, uint64_t app, gs_trk_visit_fn *fn, void *arg);

/*
 * What stands in the way of a migration, for gpu-freeze --check: every
 * unsupported record, and supported records that a restore could not
 * reproduce faithfully (a module whose image could not be copied or whose
 * options were pointer-valued, a CIG or green context, a mapping with
 * partial access). fn gets the record and a short reason (a static string)
 * under the tracker lock; a non-zero return stops the walk. Returns the
 * number of problems reported.
 */
typedef int gs_trk_problem_fn(const struct gs_rec *rec, const char *why, void *arg);
int gs_trk_check(gs_trk_problem_fn *fn, void *arg);

#endif
