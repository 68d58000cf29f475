/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Contexts: one primary context per device plus created ones, the per-thread
 * context stack, limits, cache configuration and peer access.
 *
 * A primary context is one object per device for the life of the process, as
 * in the real driver: retaining it after a reset hands back the same CUcontext
 * value (with a new cuCtxGetId). While nobody retains it, it is inactive; a
 * thread that still has it current gets CUDA_ERROR_CONTEXT_IS_DESTROYED, like
 * a thread whose created context another thread destroyed.
 *
 * Locks: ctx_lock guards primary state, ids and the peer list, and is only
 * ever held briefly (stream workers take it through sim_ctx_peer_access).
 * primary_lock[dev] serialises the life cycle of one primary context across
 * its teardown, which waits for stream workers and so must not hold ctx_lock.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "sim_internal.h"
#include "sim_mem.h"

/* Not declared by CUDA 13's cuda.h outside the driver's own build; kept for
 * callers that resolve the older ABIs by name. */
SIM_EXPORT CUresult cuCtxCreate_v2(CUcontext *pctx, unsigned int flags, CUdevice dev);
SIM_EXPORT CUresult cuCtxCreate_v3(CUcontext *pctx, CUexecAffinityParam *paramsArray,
				   int numParams, unsigned int flags, CUdevice dev);

struct ctx_full {
	struct sim_ctx c;
	bool active;	       /* primary: retained; created: until destroyed */
	unsigned primary_refs; /* primary only */
	unsigned long long id;
	unsigned api_version;
};

static pthread_mutex_t ctx_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t primary_lock[SIM_MAX_DEVICES];
static pthread_once_t primary_lock_once = PTHREAD_ONCE_INIT;
static struct ctx_full *primary[SIM_MAX_DEVICES];
static unsigned long long next_ctx_id = 1;

/* Enabled peer access, as (from, to) context pairs. */
static struct peer {
	struct sim_ctx *from, *to;
} *peers;
static size_t peer_count, peer_cap;

static struct ctx_full *full(struct sim_ctx *c)
{
	return (struct ctx_full *)c;
}

static void primary_locks_init(void)
{
	for (int i = 0; i < SIM_MAX_DEVICES; i++)
		pthread_mutex_init(&primary_lock[i], NULL);
}

/* ---- per-thread stack ----------------------------------------------------------- */

static __thread struct {
	struct sim_ctx **v;
	size_t n, cap;
} stack;
static pthread_key_t stack_key;
static pthread_once_t stack_key_once = PTHREAD_ONCE_INIT;

static void stack_free(void *v)
{
	free(v);
}

static void stack_key_init(void)
{
	pthread_key_create(&stack_key, stack_free);
}

static CUresult stack_push(struct sim_ctx *c)
{
	if (stack.n == stack.cap) {
		size_t cap = stack.cap ? 2 * stack.cap : 8;
		struct sim_ctx **v = realloc(stack.v, cap * sizeof(*v));
		if (!v)
			return CUDA_ERROR_OUT_OF_MEMORY;
		pthread_once(&stack_key_once, stack_key_init);
		/* The key only frees the array when the thread exits. */
		pthread_setspecific(stack_key, v);
		stack.v = v;
		stack.cap = cap;
	}
	stack.v[stack.n++] = c;
	return CUDA_SUCCESS;
}

struct sim_ctx *sim_ctx_current(void)
{
	return stack.n ? stack.v[stack.n - 1] : NULL;
}

/* Read on every entry point that needs a context, hence atomic rather than
 * under ctx_lock; written under ctx_lock. */
static bool ctx_active(struct sim_ctx *c)
{
	return __atomic_load_n(&full(c)->active, __ATOMIC_ACQUIRE);
}

static void set_active(struct ctx_full *f, bool a)
{
	__atomic_store_n(&f->active, a, __ATOMIC_RELEASE);
}

CUresult sim_ctx_require(const char *fn, struct sim_ctx **out)
{
	struct sim_ctx *c = sim_ctx_current();
	*out = NULL;
	if (!c)
		return CUDA_ERROR_INVALID_CONTEXT;
	if (!sim_handle_is_live(SIM_KIND_CTX, c) || !ctx_active(c))
		return CUDA_ERROR_CONTEXT_IS_DESTROYED;
	/* After a fault the context is unusable: every call in it fails with
	 * the fault, until it is destroyed or reset. */
	CUresult rc = sim_ctx_sticky(c);
	if (rc != CUDA_SUCCESS)
		return rc;
	*out = c;
	return CUDA_SUCCESS;
}

struct sim_ctx *sim_ctx_from_handle(CUcontext c, const char *fn)
{
	if (!c)
		return sim_ctx_current();
	return sim_handle_get(SIM_KIND_CTX, c, fn);
}

/* A CUcontext argument that must name a usable context: NULL means the
 * current one (CUDA_ERROR_INVALID_CONTEXT when there is none). */
static CUresult ctx_arg(CUcontext h, const char *fn, struct sim_ctx **out)
{
	if (!h)
		return sim_ctx_require(fn, out);
	struct sim_ctx *c = sim_handle_get(SIM_KIND_CTX, h, fn);
	if (!ctx_active(c))
		return CUDA_ERROR_CONTEXT_IS_DESTROYED;
	*out = c;
	return CUDA_SUCCESS;
}

CUresult sim_ctx_sticky(struct sim_ctx *ctx)
{
	pthread_mutex_lock(&ctx->lock);
	CUresult rc = ctx->sticky_error;
	pthread_mutex_unlock(&ctx->lock);
	return rc;
}

void sim_ctx_set_sticky(struct sim_ctx *ctx, CUresult rc)
{
	pthread_mutex_lock(&ctx->lock);
	if (ctx->sticky_error == CUDA_SUCCESS)
		ctx->sticky_error = rc;
	pthread_mutex_unlock(&ctx->lock);
}

/* ---- state -------------------------------------------------------------------------- */

static CUresult check_flags(unsigned flags)
{
	if (flags & ~(unsigned)CU_CTX_FLAGS_MASK)
		return CUDA_ERROR_INVALID_VALUE;
	switch (flags & CU_CTX_SCHED_MASK) {
	case CU_CTX_SCHED_AUTO:
	case CU_CTX_SCHED_SPIN:
	case CU_CTX_SCHED_YIELD:
	case CU_CTX_SCHED_BLOCKING_SYNC:
		return CUDA_SUCCESS;
	default:
		return CUDA_ERROR_INVALID_VALUE; /* more than one scheduling policy */
	}
}

/* Fresh-context state; called with ctx_lock held. */
static void ctx_fresh(struct ctx_full *f)
{
	static const size_t defaults[CU_LIMIT_MAX] = {
		[CU_LIMIT_STACK_SIZE] = 1024,
		[CU_LIMIT_PRINTF_FIFO_SIZE] = 1 << 20,
		[CU_LIMIT_MALLOC_HEAP_SIZE] = 8 << 20,
		[CU_LIMIT_DEV_RUNTIME_SYNC_DEPTH] = 2,
		[CU_LIMIT_DEV_RUNTIME_PENDING_LAUNCH_COUNT] = 2048,
		[CU_LIMIT_MAX_L2_FETCH_GRANULARITY] = 64,
		[CU_LIMIT_PERSISTING_L2_CACHE_SIZE] = 0,
	};
	memcpy(f->c.limits, defaults, sizeof(defaults));
	f->c.cache_config = CU_FUNC_CACHE_PREFER_NONE;
	pthread_mutex_lock(&f->c.lock);
	f->c.sticky_error = CUDA_SUCCESS;
	pthread_mutex_unlock(&f->c.lock);
	f->id = next_ctx_id++;
	set_active(f, true);
}

static struct ctx_full *ctx_new(int device, unsigned flags, bool is_primary, unsigned api)
{
	struct ctx_full *f = sim_handle_new(SIM_KIND_CTX, sizeof(*f));
	pthread_mutex_init(&f->c.lock, NULL);
	f->c.device = device;
	f->c.flags = flags;
	f->c.primary = is_primary;
	f->api_version = api;
	pthread_mutex_lock(&ctx_lock);
	ctx_fresh(f);
	pthread_mutex_unlock(&ctx_lock);
	return f;
}

/* Drop every peer pair involving c: the driver tears peer mappings down with
 * either side. */
static void peer_drop(struct sim_ctx *c)
{
	pthread_mutex_lock(&ctx_lock);
	size_t j = 0;
	for (size_t i = 0; i < peer_count; i++)
		if (peers[i].from != c && peers[i].to != c)
			peers[j++] = peers[i];
	peer_count = j;
	pthread_mutex_unlock(&ctx_lock);
}

/* Free everything the context owns. Streams first: their pending work may
 * still touch the memory freed next. */
static void ctx_teardown(struct sim_ctx *c)
{
	sim_exec_destroy_ctx(c);
	sim_mem_destroy_ctx(c);
	peer_drop(c);
}

bool sim_ctx_peer_access(int from, int to)
{
	if (from == to)
		return true;
	bool ok = false;
	pthread_mutex_lock(&ctx_lock);
	for (size_t i = 0; i < peer_count && !ok; i++)
		ok = peers[i].from->device == from && peers[i].to->device == to;
	pthread_mutex_unlock(&ctx_lock);
	return ok;
}

/* ---- primary contexts ------------------------------------------------------------------ */

static struct ctx_full *primary_of(int dev)
{
	pthread_once(&primary_lock_once, primary_locks_init);
	pthread_mutex_lock(&ctx_lock);
	struct ctx_full *f = primary[dev];
	pthread_mutex_unlock(&ctx_lock);
	if (f)
		return f;
	/* Created inactive, so the handle exists before the first retain
	 * (cuDevicePrimaryCtxGetState, SetFlags). */
	struct ctx_full *n = ctx_new(dev, 0, true, 3020);
	pthread_mutex_lock(&ctx_lock);
	set_active(n, false);
	if (!primary[dev])
		primary[dev] = n;
	else
		sim_handle_destroy(n); /* lost a race; never handed out */
	f = primary[dev];
	pthread_mutex_unlock(&ctx_lock);
	return f;
}

SIM_EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev)
{
	SIM_ENTER("cuDevicePrimaryCtxRetain");
	sim_device_get(dev, "cuDevicePrimaryCtxRetain");
	if (!pctx)
		return CUDA_ERROR_INVALID_VALUE;
	struct ctx_full *f = primary_of(dev);
	pthread_mutex_lock(&primary_lock[dev]);
	pthread_mutex_lock(&ctx_lock);
	if (f->primary_refs++ == 0 && !ctx_active(&f->c))
		ctx_fresh(f);
	pthread_mutex_unlock(&ctx_lock);
	pthread_mutex_unlock(&primary_lock[dev]);
	*pctx = (CUcontext)&f->c;
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev)
{
	SIM_ENTER("cuDevicePrimaryCtxRelease_v2");
	sim_device_get(dev, "cuDevicePrimaryCtxRelease_v2");
	struct ctx_full *f = primary_of(dev);
	pthread_mutex_lock(&primary_lock[dev]);
	pthread_mutex_lock(&ctx_lock);
	if (f->primary_refs == 0) {
		pthread_mutex_unlock(&ctx_lock);
		pthread_mutex_unlock(&primary_lock[dev]);
		return CUDA_ERROR_INVALID_CONTEXT;
	}
	bool last = --f->primary_refs == 0;
	pthread_mutex_unlock(&ctx_lock);
	if (last) {
		ctx_teardown(&f->c);
		pthread_mutex_lock(&ctx_lock);
		set_active(f, false);
		pthread_mutex_unlock(&ctx_lock);
	}
	pthread_mutex_unlock(&primary_lock[dev]);
	return CUDA_SUCCESS;
}

/* Destroys everything in the primary context but keeps it retained: the
 * handle stays usable, empty, for those who hold a reference. */
SIM_EXPORT CUresult cuDevicePrimaryCtxReset_v2(CUdevice dev)
{
	SIM_ENTER("cuDevicePrimaryCtxReset_v2");
	sim_device_get(dev, "cuDevicePrimaryCtxReset_v2");
	struct ctx_full *f = primary_of(dev);
	pthread_mutex_lock(&primary_lock[dev]);
	if (ctx_active(&f->c)) {
		ctx_teardown(&f->c);
		pthread_mutex_lock(&ctx_lock);
		if (f->primary_refs)
			ctx_fresh(f);
		else
			set_active(f, false);
		pthread_mutex_unlock(&ctx_lock);
	}
	pthread_mutex_unlock(&primary_lock[dev]);
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuDevicePrimaryCtxGetState(CUdevice dev, unsigned int *flags, int *active)
{
	SIM_ENTER("cuDevicePrimaryCtxGetState");
	sim_device_get(dev, "cuDevicePrimaryCtxGetState");
	if (!flags || !active)
		return CUDA_ERROR_INVALID_VALUE;
	struct ctx_full *f = primary_of(dev);
	pthread_mutex_lock(&ctx_lock);
	*flags = f->c.flags;
	*active = ctx_active(&f->c);
	pthread_mutex_unlock(&ctx_lock);
	return CUDA_SUCCESS;
}

/* The _v2 ABI (CUDA 11+) may change the flags of an active primary context. */
SIM_EXPORT CUresult cuDevicePrimaryCtxSetFlags_v2(CUdevice dev, unsigned int flags)
{
	SIM_ENTER("cuDevicePrimaryCtxSetFlags_v2");
	sim_device_get(dev, "cuDevicePrimaryCtxSetFlags_v2");
	CUresult rc = check_flags(flags);
	if (rc != CUDA_SUCCESS)
		return rc;
	struct ctx_full *f = primary_of(dev);
	pthread_mutex_lock(&ctx_lock);
	f->c.flags = flags;
	pthread_mutex_unlock(&ctx_lock);
	return CUDA_SUCCESS;
}

/* ---- created contexts ------------------------------------------------------------------- */

static CUresult ctx_create(const char *fn, CUcontext *pctx, unsigned flags, CUdevice dev,
			   unsigned api)
{
	sim_device_get(dev, fn);
	if (!pctx)
		return CUDA_ERROR_INVALID_VALUE;
	CUresult rc = check_flags(flags);
	if (rc != CUDA_SUCCESS)
		return rc;
	struct ctx_full *f = ctx_new(dev, flags, false, api);
	rc = stack_push(&f->c);
	if (rc != CUDA_SUCCESS) {
		sim_handle_destroy(f);
		return rc;
	}
	*pctx = (CUcontext)&f->c;
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuCtxCreate_v2(CUcontext *pctx, unsigned int flags, CUdevice dev)
{
	SIM_ENTER("cuCtxCreate_v2");
	return ctx_create("cuCtxCreate_v2", pctx, flags, dev, 3020);
}

/* Execution affinity (SM partitioning) and CIG are not simulated: refused
 * the way a GPU without the feature refuses them. */
SIM_EXPORT CUresult cuCtxCreate_v3(CUcontext *pctx, CUexecAffinityParam *paramsArray,
				   int numParams, unsigned int flags, CUdevice dev)
{
	SIM_ENTER("cuCtxCreate_v3");
	if (numParams < 0 || (numParams > 0 && !paramsArray))
		return CUDA_ERROR_INVALID_VALUE;
	if (numParams > 0)
		return CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY;
	return ctx_create("cuCtxCreate_v3", pctx, flags, dev, 3020);
}

SIM_EXPORT CUresult cuCtxCreate_v4(CUcontext *pctx, CUctxCreateParams *ctxCreateParams,
				   unsigned int flags, CUdevice dev)
{
	SIM_ENTER("cuCtxCreate_v4");
	if (ctxCreateParams) {
		if (ctxCreateParams->execAffinityParams && ctxCreateParams->cigParams)
			return CUDA_ERROR_INVALID_VALUE;
		if (ctxCreateParams->numExecAffinityParams < 0)
			return CUDA_ERROR_INVALID_VALUE;
		if (ctxCreateParams->execAffinityParams && ctxCreateParams->numExecAffinityParams)
			return CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY;
		if (ctxCreateParams->cigParams)
			return CUDA_ERROR_NOT_SUPPORTED;
	}
	return ctx_create("cuCtxCreate_v4", pctx, flags, dev, 3020);
}

SIM_EXPORT CUresult cuCtxDestroy_v2(CUcontext ctx)
{
	SIM_ENTER("cuCtxDestroy_v2");
	if (!ctx)
		return CUDA_ERROR_INVALID_VALUE;
	struct sim_ctx *c = sim_handle_get(SIM_KIND_CTX, ctx, "cuCtxDestroy_v2");
	/* Primary contexts are released, never destroyed. */
	if (c->primary)
		return CUDA_ERROR_INVALID_CONTEXT;
	ctx_teardown(c);
	pthread_mutex_lock(&ctx_lock);
	set_active(full(c), false);
	pthread_mutex_unlock(&ctx_lock);
	sim_handle_destroy(c);
	/* Only the caller's own stack is popped; other threads keep the
	 * tombstone current and get CUDA_ERROR_CONTEXT_IS_DESTROYED. */
	if (sim_ctx_current() == c)
		stack.n--;
	return CUDA_SUCCESS;
}

/* ---- current context -------------------------------------------------------------------- */

SIM_EXPORT CUresult cuCtxPushCurrent_v2(CUcontext ctx)
{
	SIM_ENTER("cuCtxPushCurrent_v2");
	if (!ctx)
		return CUDA_ERROR_INVALID_CONTEXT;
	struct sim_ctx *c = sim_handle_get(SIM_KIND_CTX, ctx, "cuCtxPushCurrent_v2");
	return stack_push(c);
}

SIM_EXPORT CUresult cuCtxPopCurrent_v2(CUcontext *pctx)
{
	SIM_ENTER("cuCtxPopCurrent_v2");
	if (!stack.n)
		return CUDA_ERROR_INVALID_CONTEXT;
	struct sim_ctx *c = stack.v[--stack.n];
	if (pctx)
		*pctx = (CUcontext)c;
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuCtxSetCurrent(CUcontext ctx)
{
	SIM_ENTER("cuCtxSetCurrent");
	if (!ctx) {
		if (stack.n)
			stack.n--;
		return CUDA_SUCCESS;
	}
	struct sim_ctx *c = sim_handle_get(SIM_KIND_CTX, ctx, "cuCtxSetCurrent");
	if (stack.n) {
		stack.v[stack.n - 1] = c;
		return CUDA_SUCCESS;
	}
	return stack_push(c);
}

SIM_EXPORT CUresult cuCtxGetCurrent(CUcontext *pctx)
{
	SIM_ENTER("cuCtxGetCurrent");
	if (!pctx)
		return CUDA_ERROR_INVALID_VALUE;
	*pctx = (CUcontext)sim_ctx_current();
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuCtxGetDevice(CUdevice *device)
{
	SIM_ENTER("cuCtxGetDevice");
	struct sim_ctx *c;
	CUresult rc = sim_ctx_require("cuCtxGetDevice", &c);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!device)
		return CUDA_ERROR_INVALID_VALUE;
	*device = c->device;
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuCtxGetDevice_v2(CUdevice *device, CUcontext ctx)
{
	SIM_ENTER("cuCtxGetDevice_v2");
	struct sim_ctx *c;
	CUresult rc = ctx_arg(ctx, "cuCtxGetDevice_v2", &c);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!device)
		return CUDA_ERROR_INVALID_VALUE;
	*device = c->device;
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuCtxGetFlags(unsigned int *flags)
{
	SIM_ENTER("cuCtxGetFlags");
	struct sim_ctx *c;
	CUresult rc = sim_ctx_require("cuCtxGetFlags", &c);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!flags)
		return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&ctx_lock);
	*flags = c->flags;
	pthread_mutex_unlock(&ctx_lock);
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuCtxSetFlags(unsigned int flags)
{
	SIM_ENTER("cuCtxSetFlags");
	struct sim_ctx *c;
	CUresult rc = sim_ctx_require("cuCtxSetFlags", &c);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = check_flags(flags);
	if (rc != CUDA_SUCCESS)
		return rc;
	pthread_mutex_lock(&ctx_lock);
	c->flags = flags;
	pthread_mutex_unlock(&ctx_lock);
	return CUDA_SUCCESS;
}

unsigned sim_ctx_flags(struct sim_ctx *c)
{
	pthread_mutex_lock(&ctx_lock);
	unsigned f = c->flags;
	pthread_mutex_unlock(&ctx_lock);
	return f;
}

SIM_EXPORT CUresult cuCtxSynchronize(void)
{
	SIM_ENTER("cuCtxSynchronize");
	struct sim_ctx *c;
	CUresult rc = sim_ctx_require("cuCtxSynchronize", &c);
	if (rc != CUDA_SUCCESS)
		return rc;
	return sim_exec_sync_ctx(c);
}

SIM_EXPORT CUresult cuCtxSynchronize_v2(CUcontext ctx)
{
	SIM_ENTER("cuCtxSynchronize_v2");
	struct sim_ctx *c;
	CUresult rc = ctx_arg(ctx, "cuCtxSynchronize_v2", &c);
	if (rc != CUDA_SUCCESS)
		return rc;
	return sim_exec_sync_ctx(c);
}

/* ---- limits, cache configuration, identity ---------------------------------------------------- */

static bool limit_settable(CUlimit limit)
{
	return limit <= CU_LIMIT_PERSISTING_L2_CACHE_SIZE;
}

SIM_EXPORT CUresult cuCtxGetLimit(size_t *pvalue, CUlimit limit)
{
	SIM_ENTER("cuCtxGetLimit");
	struct sim_ctx *c;
	CUresult rc = sim_ctx_require("cuCtxGetLimit", &c);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!pvalue || (unsigned)limit >= CU_LIMIT_MAX)
		return CUDA_ERROR_INVALID_VALUE;
	/* The CIG limits only exist in contexts created with CIG parameters. */
	if (!limit_settable(limit))
		return CUDA_ERROR_UNSUPPORTED_LIMIT;
	pthread_mutex_lock(&ctx_lock);
	*pvalue = c->limits[limit];
	pthread_mutex_unlock(&ctx_lock);
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuCtxSetLimit(CUlimit limit, size_t value)
{
	SIM_ENTER("cuCtxSetLimit");
	struct sim_ctx *c;
	CUresult rc = sim_ctx_require("cuCtxSetLimit", &c);
	if (rc != CUDA_SUCCESS)
		return rc;
	if ((unsigned)limit >= CU_LIMIT_MAX)
		return CUDA_ERROR_INVALID_VALUE;
	if (!limit_settable(limit))
		return CUDA_ERROR_UNSUPPORTED_LIMIT;
	int cc = sim_device(c->device)->sm_major * 10 + sim_device(c->device)->sm_minor;
	switch (limit) {
	case CU_LIMIT_STACK_SIZE:
		/* The driver rounds the per-thread stack up to 16 bytes. */
		value = (value + 15) & ~(size_t)15;
		break;
	case CU_LIMIT_DEV_RUNTIME_SYNC_DEPTH:
		/* Device-side synchronisation is gone from sm_90 on. */
		if (cc >= 90)
			return CUDA_ERROR_UNSUPPORTED_LIMIT;
		break;
	case CU_LIMIT_MAX_L2_FETCH_GRANULARITY:
		if (value > 128)
			return CUDA_ERROR_INVALID_VALUE;
		break;
	case CU_LIMIT_PERSISTING_L2_CACHE_SIZE: {
		int max = 0;
		sim_device_attribute(sim_device(c->device),
				     CU_DEVICE_ATTRIBUTE_MAX_PERSISTING_L2_CACHE_SIZE, &max);
		if (value > (size_t)max)
			return CUDA_ERROR_INVALID_VALUE;
		break;
	}
	default:
		break;
	}
	pthread_mutex_lock(&ctx_lock);
	c->limits[limit] = value;
	pthread_mutex_unlock(&ctx_lock);
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuCtxGetCacheConfig(CUfunc_cache *pconfig)
{
	SIM_ENTER("cuCtxGetCacheConfig");
	struct sim_ctx *c;
	CUresult rc = sim_ctx_require("cuCtxGetCacheConfig", &c);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!pconfig)
		return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&ctx_lock);
	*pconfig = c->cache_config;
	pthread_mutex_unlock(&ctx_lock);
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuCtxSetCacheConfig(CUfunc_cache config)
{
	SIM_ENTER("cuCtxSetCacheConfig");
	struct sim_ctx *c;
	CUresult rc = sim_ctx_require("cuCtxSetCacheConfig", &c);
	if (rc != CUDA_SUCCESS)
		return rc;
	if ((unsigned)config > CU_FUNC_CACHE_PREFER_EQUAL)
		return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&ctx_lock);
	c->cache_config = config;
	pthread_mutex_unlock(&ctx_lock);
	return CUDA_SUCCESS;
}

/* Every context reports the 3020 API (64-bit device pointers), what the
 * driver reports for contexts made through the current entry points. */
SIM_EXPORT CUresult cuCtxGetApiVersion(CUcontext ctx, unsigned int *version)
{
	SIM_ENTER("cuCtxGetApiVersion");
	struct sim_ctx *c;
	CUresult rc = ctx_arg(ctx, "cuCtxGetApiVersion", &c);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!version)
		return CUDA_ERROR_INVALID_VALUE;
	*version = full(c)->api_version;
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuCtxGetId(CUcontext ctx, unsigned long long *ctxId)
{
	SIM_ENTER("cuCtxGetId");
	struct sim_ctx *c;
	CUresult rc = ctx_arg(ctx, "cuCtxGetId", &c);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!ctxId)
		return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&ctx_lock);
	*ctxId = full(c)->id;
	pthread_mutex_unlock(&ctx_lock);
	return CUDA_SUCCESS;
}

/* ---- peer access ----------------------------------------------------------------------------- */

SIM_EXPORT CUresult cuCtxEnablePeerAccess(CUcontext peerContext, unsigned int Flags)
{
	SIM_ENTER("cuCtxEnablePeerAccess");
	struct sim_ctx *c;
	CUresult rc = sim_ctx_require("cuCtxEnablePeerAccess", &c);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!peerContext)
		return CUDA_ERROR_INVALID_VALUE;
	struct sim_ctx *p = sim_handle_get(SIM_KIND_CTX, peerContext, "cuCtxEnablePeerAccess");
	if (!ctx_active(p))
		return CUDA_ERROR_INVALID_CONTEXT;
	if (Flags != 0)
		return CUDA_ERROR_INVALID_VALUE;
	if (p->device == c->device)
		return CUDA_ERROR_INVALID_DEVICE;
	if (!sim_device_can_peer(sim_device(c->device), sim_device(p->device)))
		return CUDA_ERROR_PEER_ACCESS_UNSUPPORTED;
	pthread_mutex_lock(&ctx_lock);
	for (size_t i = 0; i < peer_count; i++)
		if (peers[i].from == c && peers[i].to == p) {
			pthread_mutex_unlock(&ctx_lock);
			return CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED;
		}
	if (peer_count == peer_cap) {
		size_t cap = peer_cap ? 2 * peer_cap : 16;
		struct peer *v = realloc(peers, cap * sizeof(*v));
		if (!v) {
			pthread_mutex_unlock(&ctx_lock);
			return CUDA_ERROR_OUT_OF_MEMORY;
		}
		peers = v;
		peer_cap = cap;
	}
	peers[peer_count++] = (struct peer){ c, p };
	pthread_mutex_unlock(&ctx_lock);
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuCtxDisablePeerAccess(CUcontext peerContext)
{
	SIM_ENTER("cuCtxDisablePeerAccess");
	struct sim_ctx *c;
	CUresult rc = sim_ctx_require("cuCtxDisablePeerAccess", &c);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!peerContext)
		return CUDA_ERROR_INVALID_VALUE;
	struct sim_ctx *p = sim_handle_get(SIM_KIND_CTX, peerContext, "cuCtxDisablePeerAccess");
	pthread_mutex_lock(&ctx_lock);
	for (size_t i = 0; i < peer_count; i++)
		if (peers[i].from == c && peers[i].to == p) {
			peers[i] = peers[--peer_count];
			pthread_mutex_unlock(&ctx_lock);
			return CUDA_SUCCESS;
		}
	pthread_mutex_unlock(&ctx_lock);
	return CUDA_ERROR_PEER_ACCESS_NOT_ENABLED;
}
