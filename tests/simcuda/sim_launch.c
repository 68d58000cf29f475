/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Kernel launches. A launch is checked the way the driver checks it, its
 * parameter values are copied (the caller may reuse its buffers as soon as
 * cuLaunchKernel returns), and the stream's worker later calls the host
 * emulation simcuda_kernel_NAME (simcuda.h) with them.
 */
#include <dlfcn.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cudaTypedefs.h>

#include "sim_exec.h"

/* What the worker needs; `pub` first, so that the simcuda_launch an
 * emulation passes back to launch->global() leads to its module. */
struct kernel_launch {
	simcuda_launch pub;
	struct sim_module *module;
	simcuda_kernel_fn *emulation;
	void **params;
};

static void *launch_global(const simcuda_launch *launch, const char *name)
{
	const struct kernel_launch *l = (const struct kernel_launch *)launch;
	const struct sim_module *m = l->module;

	if (!name)
		return NULL;
	for (size_t i = 0; i < m->info.nglobals; i++)
		if (strcmp(m->info.globals[i].name, name) == 0)
			return m->global_host[i];
	return NULL;
}

static CUresult run_kernel(void *arg)
{
	struct kernel_launch *l = arg;

	l->emulation(&l->pub, l->params);
	return CUDA_SUCCESS;
}

CUresult sim_function_for_launch(CUfunction f, struct sim_ctx *ctx, const char *fn,
				 struct sim_function **out)
{
	if (sim_handle_is_live(SIM_KIND_KERNEL, f))
		return sim_kernel_function((struct sim_kernel *)f, ctx, fn, out);
	struct sim_function *func = sim_handle_get(SIM_KIND_FUNCTION, f, fn);
	if (func->module->ctx != ctx)
		sim_abort(fn, "function %p belongs to context %p, but the launch is in context %p",
			  (void *)f, (void *)func->module->ctx, (void *)ctx);
	*out = func;
	return CUDA_SUCCESS;
}

static simcuda_kernel_fn *find_emulation(struct sim_function *f)
{
	pthread_mutex_lock(&f->lock);
	simcuda_kernel_fn *emu = f->emulation;
	pthread_mutex_unlock(&f->lock);
	if (emu)
		return emu;

	char *symbol;
	if (asprintf(&symbol, "simcuda_kernel_%s", f->info->name) < 0)
		return NULL;
	void *p = dlsym(RTLD_DEFAULT, symbol);
	free(symbol);
	if (!p)
		return NULL;
	memcpy(&emu, &p, sizeof(emu));
	pthread_mutex_lock(&f->lock);
	f->emulation = emu;
	pthread_mutex_unlock(&f->lock);
	return emu;
}

/* ---- checks ----------------------------------------------------------------- */

struct launch_config {
	unsigned grid[3], block[3];
	unsigned shared;
	bool cooperative;
	bool cluster_set;
	unsigned cluster[3];
	CUevent events[2]; /* recorded once the kernel ran */
	unsigned nevents;
};

static CUresult check_dims(const struct launch_config *c, const struct sim_function *f)
{
	for (int i = 0; i < 3; i++)
		if (!c->grid[i] || !c->block[i])
			return CUDA_ERROR_INVALID_VALUE;
	if (c->grid[0] > 0x7fffffffu || c->grid[1] > 65535 || c->grid[2] > 65535)
		return CUDA_ERROR_INVALID_VALUE;
	if (c->block[0] > 1024 || c->block[1] > 1024 || c->block[2] > 64)
		return CUDA_ERROR_INVALID_VALUE;
	unsigned long long threads = (unsigned long long)c->block[0] * c->block[1] * c->block[2];
	if (threads > 1024)
		return CUDA_ERROR_INVALID_VALUE;
	/* Within the device's limit but more than the kernel's registers or
	 * __launch_bounds__ allow: the driver's "too many resources". */
	if (threads > (unsigned long long)f->res.max_threads)
		return CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES;
	return CUDA_SUCCESS;
}

/* How many blocks of this launch fit on the device at once: the bound of a
 * cooperative grid. */
static unsigned long long resident_blocks(const struct launch_config *c,
					  const struct sim_function *f,
					  const struct sim_device *dev)
{
	unsigned threads = c->block[0] * c->block[1] * c->block[2];
	unsigned warps = (threads + 31) / 32;
	unsigned long long per_sm = (unsigned long long)sim_device_limit(
		dev, CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR);
	unsigned long long by_threads =
		(unsigned long long)sim_device_limit(dev, CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR) /
		(warps * 32);
	if (by_threads < per_sm)
		per_sm = by_threads;
	if (f->res.regs > 0) {
		unsigned per_warp = ((unsigned)f->res.regs * 32 + 255) / 256 * 256;
		unsigned long long by_regs = 65536 / ((unsigned long long)per_warp * warps);
		if (by_regs < per_sm)
			per_sm = by_regs;
	}
	unsigned shared = (unsigned)f->res.static_shared + c->shared;
	if (shared) {
		/* The SM's shared memory is the opt-in block limit plus the 1 KiB
		 * the system reserves per block. */
		unsigned long long sm_shared = (unsigned long long)sim_device_limit(
			dev, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN) + 1024;
		unsigned long long by_shared = sm_shared / (shared + 1024);
		if (by_shared < per_sm)
			per_sm = by_shared;
	}
	return per_sm * (unsigned long long)sim_device_limit(dev, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
}

static CUresult check_cluster(struct launch_config *c, const struct sim_function *f,
			      const struct sim_device *dev)
{
	const int *required = f->attrs.cluster_dim;
	bool fixed = required[0] || required[1] || required[2];

	if (fixed) {
		if (c->cluster_set && (c->cluster[0] != (unsigned)required[0] ||
				       c->cluster[1] != (unsigned)required[1] ||
				       c->cluster[2] != (unsigned)required[2]))
			return CUDA_ERROR_INVALID_CLUSTER_SIZE;
		for (int i = 0; i < 3; i++)
			c->cluster[i] = required[i] ? (unsigned)required[i] : 1;
		c->cluster_set = true;
	}
	if (!c->cluster_set)
		return CUDA_SUCCESS;
	if (!sim_device_limit(dev, CU_DEVICE_ATTRIBUTE_CLUSTER_LAUNCH))
		return CUDA_ERROR_NOT_SUPPORTED;
	unsigned long long size = 1;
	for (int i = 0; i < 3; i++) {
		if (!c->cluster[i] || c->grid[i] % c->cluster[i])
			return CUDA_ERROR_INVALID_CLUSTER_SIZE;
		size *= c->cluster[i];
	}
	/* 8 blocks is the portable cluster size; 16 the most any GPU has. */
	if (size > (f->attrs.non_portable_cluster ? 16u : 8u))
		return CUDA_ERROR_INVALID_CLUSTER_SIZE;
	return CUDA_SUCCESS;
}

static CUresult launch_attributes(struct launch_config *c, const CUlaunchAttribute *attrs,
				  unsigned n, const char *fn)
{
	if (n && !attrs)
		return CUDA_ERROR_INVALID_VALUE;
	for (unsigned i = 0; i < n; i++) {
		const CUlaunchAttributeValue *v = &attrs[i].value;
		switch (attrs[i].id) {
		case CU_LAUNCH_ATTRIBUTE_IGNORE:
			break;
		case CU_LAUNCH_ATTRIBUTE_COOPERATIVE:
			c->cooperative = v->cooperative != 0;
			break;
		case CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION:
			c->cluster_set = true;
			c->cluster[0] = v->clusterDim.x;
			c->cluster[1] = v->clusterDim.y;
			c->cluster[2] = v->clusterDim.z;
			break;
		case CU_LAUNCH_ATTRIBUTE_CLUSTER_SCHEDULING_POLICY_PREFERENCE:
			if (v->clusterSchedulingPolicyPreference > CU_CLUSTER_SCHEDULING_POLICY_LOAD_BALANCING)
				return CUDA_ERROR_INVALID_VALUE;
			break;
		case CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_EVENT:
		case CU_LAUNCH_ATTRIBUTE_LAUNCH_COMPLETION_EVENT: {
			CUevent ev = attrs[i].id == CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_EVENT
					     ? v->programmaticEvent.event
					     : v->launchCompletionEvent.event;
			int flags = attrs[i].id == CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_EVENT
					    ? v->programmaticEvent.flags
					    : v->launchCompletionEvent.flags;
			/* Such events only order device work: the driver wants
			 * timing disabled and takes no external records. */
			if (!sim_event_timing_disabled(ev, fn) || flags)
				return CUDA_ERROR_INVALID_VALUE;
			if (c->nevents == 2)
				return CUDA_ERROR_INVALID_VALUE;
			c->events[c->nevents++] = ev;
			break;
		}
		case CU_LAUNCH_ATTRIBUTE_DEVICE_UPDATABLE_KERNEL_NODE:
			/* Only meaningful while capturing into a graph. */
			return CUDA_ERROR_INVALID_VALUE;
		case CU_LAUNCH_ATTRIBUTE_ACCESS_POLICY_WINDOW:
		case CU_LAUNCH_ATTRIBUTE_SYNCHRONIZATION_POLICY:
		case CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION:
		case CU_LAUNCH_ATTRIBUTE_PRIORITY:
		case CU_LAUNCH_ATTRIBUTE_MEM_SYNC_DOMAIN_MAP:
		case CU_LAUNCH_ATTRIBUTE_MEM_SYNC_DOMAIN:
		case CU_LAUNCH_ATTRIBUTE_PREFERRED_CLUSTER_DIMENSION:
		case CU_LAUNCH_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT:
		case CU_LAUNCH_ATTRIBUTE_NVLINK_UTIL_CENTRIC_SCHEDULING:
			/* Scheduling hints: no effect on what a kernel computes. */
			break;
		default:
			return CUDA_ERROR_INVALID_VALUE;
		}
	}
	return CUDA_SUCCESS;
}

/* ---- parameters ---------------------------------------------------------------- */

/* The parameter buffer of the `extra` form, found in its key/value list. */
static CUresult extra_buffer(void **extra, const void **buffer, size_t *size)
{
	const void *ptr = NULL;
	const size_t *sizep = NULL;

	/* A list that never ends is garbage, not a long list: there are only
	 * two keys. */
	for (unsigned i = 0; i < 64; i += 2) {
		void *key = extra[i];
		if (key == CU_LAUNCH_PARAM_END) {
			if (sizep && *sizep && !ptr)
				return CUDA_ERROR_INVALID_VALUE;
			*buffer = sizep ? ptr : NULL;
			*size = sizep && ptr ? *sizep : 0;
			return CUDA_SUCCESS;
		}
		if (key == CU_LAUNCH_PARAM_BUFFER_POINTER)
			ptr = extra[i + 1];
		else if (key == CU_LAUNCH_PARAM_BUFFER_SIZE)
			sizep = extra[i + 1];
		else
			return CUDA_ERROR_INVALID_VALUE;
	}
	return CUDA_ERROR_INVALID_VALUE;
}

/* A launch record with the parameter values copied into it, laid out as in
 * the device's parameter buffer. */
static CUresult copy_params(const struct sim_function *f, void **kernelParams, void **extra,
			    const char *fn, struct kernel_launch **out)
{
	const struct gs_kernel_info *info = f->info;
	size_t head = sizeof(struct kernel_launch) + info->nparams * sizeof(void *);
	size_t offset = (head + 63) / 64 * 64;

	if (kernelParams && extra)
		return CUDA_ERROR_INVALID_VALUE;
	const void *buffer = NULL;
	size_t buffer_size = 0;
	if (extra) {
		CUresult rc = extra_buffer(extra, &buffer, &buffer_size);
		if (rc != CUDA_SUCCESS)
			return rc;
		if (info->nparams && (!buffer || buffer_size < info->param_bytes))
			return CUDA_ERROR_INVALID_VALUE;
	} else if (info->nparams && !kernelParams) {
		return CUDA_ERROR_INVALID_VALUE;
	}

	struct kernel_launch *l = calloc(1, offset + info->param_bytes + 1);
	if (!l)
		return CUDA_ERROR_OUT_OF_MEMORY;
	unsigned char *values = (unsigned char *)l + offset;
	l->params = (void **)(l + 1);
	if (extra && info->param_bytes)
		memcpy(values, buffer, info->param_bytes);
	for (unsigned i = 0; i < info->nparams; i++) {
		const struct gs_kparam *p = &info->params[i];
		if (!extra) {
			if (!kernelParams[i])
				sim_abort(fn, "kernelParams[%u] of %s is NULL", i, info->name);
			memcpy(values + p->offset, kernelParams[i], p->size);
		}
		l->params[i] = values + p->offset;
	}
	*out = l;
	return CUDA_SUCCESS;
}

/* ---- launching ----------------------------------------------------------------- */

static CUresult launch(const char *fn, CUfunction f, struct launch_config *c, CUstream hStream,
		       bool ptds, void **kernelParams, void **extra)
{
	struct sim_stream *s;
	CUresult rc = sim_stream_lookup(hStream, ptds, fn, &s);

	if (rc != CUDA_SUCCESS)
		return rc;
	struct sim_function *func;
	rc = sim_function_for_launch(f, s->ctx, fn, &func);
	if (rc != CUDA_SUCCESS)
		return rc;
	const struct sim_device *dev = sim_device_get(s->ctx->device, fn);

	rc = check_dims(c, func);
	if (rc != CUDA_SUCCESS)
		return rc;
	pthread_mutex_lock(&func->lock);
	unsigned max_dynamic = (unsigned)func->attrs.max_dynamic_shared;
	rc = check_cluster(c, func, dev);
	pthread_mutex_unlock(&func->lock);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (c->shared > max_dynamic)
		return CUDA_ERROR_INVALID_VALUE;
	if (c->cooperative) {
		unsigned long long blocks = (unsigned long long)c->grid[0] * c->grid[1] * c->grid[2];
		if (blocks > resident_blocks(c, func, dev))
			return CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE;
	}

	struct kernel_launch *l;
	rc = copy_params(func, kernelParams, extra, fn, &l);
	if (rc != CUDA_SUCCESS)
		return rc;
	l->emulation = find_emulation(func);
	if (!l->emulation) {
		free(l);
		return CUDA_ERROR_NOT_FOUND;
	}
	memcpy(l->pub.grid, c->grid, sizeof(l->pub.grid));
	memcpy(l->pub.block, c->block, sizeof(l->pub.block));
	l->pub.shared_bytes = c->shared;
	l->pub.device = s->ctx->device;
	l->pub.global = launch_global;
	l->module = func->module;

	rc = sim_stream_enqueue(s, run_kernel, l, free, SIM_WORK_APP_CODE, NULL, NULL);
	if (rc != CUDA_SUCCESS) {
		free(l);
		return rc;
	}
	for (unsigned i = 0; i < c->nevents && rc == CUDA_SUCCESS; i++)
		rc = sim_event_record_internal(c->events[i], s, fn);
	return rc;
}

static CUresult launch_kernel(const char *fn, CUfunction f, unsigned gx, unsigned gy, unsigned gz,
			      unsigned bx, unsigned by, unsigned bz, unsigned shared,
			      CUstream hStream, bool ptds, bool cooperative, void **kernelParams,
			      void **extra)
{
	struct launch_config c = {
		.grid = { gx, gy, gz },
		.block = { bx, by, bz },
		.shared = shared,
		.cooperative = cooperative,
	};

	return launch(fn, f, &c, hStream, ptds, kernelParams, extra);
}

static CUresult launch_kernel_ex(const char *fn, const CUlaunchConfig *config, CUfunction f,
				 bool ptds, void **kernelParams, void **extra)
{
	if (!config)
		return CUDA_ERROR_INVALID_VALUE;
	struct launch_config c = {
		.grid = { config->gridDimX, config->gridDimY, config->gridDimZ },
		.block = { config->blockDimX, config->blockDimY, config->blockDimZ },
		.shared = config->sharedMemBytes,
	};
	CUresult rc = launch_attributes(&c, config->attrs, config->numAttrs, fn);
	if (rc != CUDA_SUCCESS)
		return rc;
	return launch(fn, f, &c, config->hStream, ptds, kernelParams, extra);
}

SIM_EXPORT CUresult cuLaunchKernel_ptsz(CUfunction f, unsigned int gridDimX, unsigned int gridDimY,
					unsigned int gridDimZ, unsigned int blockDimX,
					unsigned int blockDimY, unsigned int blockDimZ,
					unsigned int sharedMemBytes, CUstream hStream,
					void **kernelParams, void **extra);
SIM_EXPORT CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *config, CUfunction f,
					  void **kernelParams, void **extra);
SIM_EXPORT CUresult cuLaunchCooperativeKernel_ptsz(CUfunction f, unsigned int gridDimX,
						   unsigned int gridDimY, unsigned int gridDimZ,
						   unsigned int blockDimX, unsigned int blockDimY,
						   unsigned int blockDimZ, unsigned int sharedMemBytes,
						   CUstream hStream, void **kernelParams);
SIM_CHECK_ABI(cuLaunchKernel_ptsz, PFN_cuLaunchKernel_v7000_ptsz);
SIM_CHECK_ABI(cuLaunchKernelEx_ptsz, PFN_cuLaunchKernelEx_v11060_ptsz);
SIM_CHECK_ABI(cuLaunchCooperativeKernel_ptsz, PFN_cuLaunchCooperativeKernel_v9000_ptsz);

SIM_EXPORT CUresult cuLaunchKernel(CUfunction f, unsigned int gridDimX, unsigned int gridDimY,
				   unsigned int gridDimZ, unsigned int blockDimX, unsigned int blockDimY,
				   unsigned int blockDimZ, unsigned int sharedMemBytes, CUstream hStream,
				   void **kernelParams, void **extra)
{
	SIM_ENTER("cuLaunchKernel");
	return launch_kernel("cuLaunchKernel", f, gridDimX, gridDimY, gridDimZ, blockDimX,
			     blockDimY, blockDimZ, sharedMemBytes, hStream, false, false,
			     kernelParams, extra);
}

SIM_EXPORT CUresult cuLaunchKernel_ptsz(CUfunction f, unsigned int gridDimX, unsigned int gridDimY,
					unsigned int gridDimZ, unsigned int blockDimX,
					unsigned int blockDimY, unsigned int blockDimZ,
					unsigned int sharedMemBytes, CUstream hStream,
					void **kernelParams, void **extra)
{
	SIM_ENTER("cuLaunchKernel_ptsz");
	return launch_kernel("cuLaunchKernel_ptsz", f, gridDimX, gridDimY, gridDimZ, blockDimX,
			     blockDimY, blockDimZ, sharedMemBytes, hStream, true, false,
			     kernelParams, extra);
}

SIM_EXPORT CUresult cuLaunchKernelEx(const CUlaunchConfig *config, CUfunction f,
				     void **kernelParams, void **extra)
{
	SIM_ENTER("cuLaunchKernelEx");
	return launch_kernel_ex("cuLaunchKernelEx", config, f, false, kernelParams, extra);
}

SIM_EXPORT CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *config, CUfunction f,
					  void **kernelParams, void **extra)
{
	SIM_ENTER("cuLaunchKernelEx_ptsz");
	return launch_kernel_ex("cuLaunchKernelEx_ptsz", config, f, true, kernelParams, extra);
}

SIM_EXPORT CUresult cuLaunchCooperativeKernel(CUfunction f, unsigned int gridDimX,
					      unsigned int gridDimY, unsigned int gridDimZ,
					      unsigned int blockDimX, unsigned int blockDimY,
					      unsigned int blockDimZ, unsigned int sharedMemBytes,
					      CUstream hStream, void **kernelParams)
{
	SIM_ENTER("cuLaunchCooperativeKernel");
	return launch_kernel("cuLaunchCooperativeKernel", f, gridDimX, gridDimY, gridDimZ,
			     blockDimX, blockDimY, blockDimZ, sharedMemBytes, hStream, false, true,
			     kernelParams, NULL);
}

SIM_EXPORT CUresult cuLaunchCooperativeKernel_ptsz(CUfunction f, unsigned int gridDimX,
						   unsigned int gridDimY, unsigned int gridDimZ,
						   unsigned int blockDimX, unsigned int blockDimY,
						   unsigned int blockDimZ, unsigned int sharedMemBytes,
						   CUstream hStream, void **kernelParams)
{
	SIM_ENTER("cuLaunchCooperativeKernel_ptsz");
	return launch_kernel("cuLaunchCooperativeKernel_ptsz", f, gridDimX, gridDimY, gridDimZ,
			     blockDimX, blockDimY, blockDimZ, sharedMemBytes, hStream, true, true,
			     kernelParams, NULL);
}

/* The devices report CU_DEVICE_ATTRIBUTE_COOPERATIVE_MULTI_DEVICE_LAUNCH as
 * 0, and CUDA 12 removed the feature from every GPU. */
SIM_EXPORT CUresult cuLaunchCooperativeKernelMultiDevice(CUDA_LAUNCH_PARAMS *launchParamsList,
							 unsigned int numDevices, unsigned int flags)
{
	SIM_ENTER("cuLaunchCooperativeKernelMultiDevice");
	if (!launchParamsList || !numDevices)
		return CUDA_ERROR_INVALID_VALUE;
	(void)flags;
	return CUDA_ERROR_NOT_SUPPORTED;
}
