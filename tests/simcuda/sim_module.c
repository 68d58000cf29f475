/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Modules: code loaded into one context. The image goes through cuimage the
 * way the driver treats it (a cubin for the device's arch, else PTX it can
 * JIT, else CUDA_ERROR_NO_BINARY_FOR_GPU); every kernel gets a CUfunction and
 * every __device__ / __constant__ variable real device memory of the
 * context's device, so its address works in memcpy and kernel parameters.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim_exec.h"

pthread_mutex_t sim_module_lock = PTHREAD_MUTEX_INITIALIZER;

CUresult sim_image_error(int err, enum gs_image_kind kind)
{
	if (err == -ENOMEM)
		return CUDA_ERROR_OUT_OF_MEMORY;
	/* PTX that fits no device is a JIT failure for the driver; a fatbin
	 * or cubin without code for the device is "no binary". */
	if (kind == GS_IMAGE_PTX)
		return CUDA_ERROR_INVALID_PTX;
	if (err == -ENOENT)
		return CUDA_ERROR_NO_BINARY_FOR_GPU;
	return CUDA_ERROR_INVALID_IMAGE;
}

static void functions_free(struct sim_module *m, size_t n)
{
	for (size_t i = 0; i < n; i++)
		sim_handle_destroy(m->functions[i]);
	free(m->functions);
	m->functions = NULL;
}

static void globals_free(struct sim_module *m, size_t n)
{
	for (size_t i = 0; i < n; i++)
		sim_mem_free_internal(m->globals[i]);
	free(m->globals);
	free(m->global_host);
	m->globals = NULL;
	m->global_host = NULL;
}

static CUresult functions_create(struct sim_module *m, const struct sim_device *dev)
{
	size_t n = m->info.nkernels;

	m->functions = calloc(n ? n : 1, sizeof(*m->functions));
	if (!m->functions)
		return CUDA_ERROR_OUT_OF_MEMORY;
	for (size_t i = 0; i < n; i++) {
		struct sim_function *f = sim_handle_new(SIM_KIND_FUNCTION, sizeof(*f));
		f->module = m;
		f->index = i;
		f->info = &m->info.kernels[i];
		pthread_mutex_init(&f->lock, NULL);
		sim_kernel_resources(&m->code, &m->info, i, dev, &f->res);
		sim_fattrs_default(&f->attrs, &f->res);
		m->functions[i] = f;
	}
	return CUDA_SUCCESS;
}

static CUresult globals_create(struct sim_module *m, const char *fn)
{
	size_t n = m->info.nglobals;

	m->globals = calloc(n ? n : 1, sizeof(*m->globals));
	m->global_host = calloc(n ? n : 1, sizeof(*m->global_host));
	if (!m->globals || !m->global_host) {
		globals_free(m, 0);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	for (size_t i = 0; i < n; i++) {
		const struct gs_global_info *g = &m->info.globals[i];
		size_t size = g->size ? g->size : 1;
		CUresult rc = sim_mem_alloc_internal(m->ctx->device, size, &m->globals[i]);
		if (rc == CUDA_SUCCESS)
			rc = sim_mem_access(m->globals[i], size, m->ctx->device, true, fn,
					    &m->global_host[i]);
		if (rc != CUDA_SUCCESS) {
			if (m->globals[i])
				sim_mem_free_internal(m->globals[i]);
			globals_free(m, i);
			return rc;
		}
		/* Fresh internal memory is zero: that is the initial value of
		 * every byte the image gives no other. */
		if (g->init && g->init_size)
			memcpy(m->global_host[i], g->init,
			       g->init_size < g->size ? g->init_size : g->size);
	}
	return CUDA_SUCCESS;
}

CUresult sim_module_create(struct sim_ctx *ctx, struct sim_library *lib, const void *image,
			   size_t size, const char *fn, struct sim_module **out)
{
	const struct sim_device *dev = sim_device_get(ctx->device, fn);
	unsigned sm = (unsigned)(dev->sm_major * 10 + dev->sm_minor);
	enum gs_image_kind kind;
	size_t image_size;
	const void *inner;

	if (gs_image_probe(image, size, &kind, &image_size, &inner) != 0)
		return CUDA_ERROR_INVALID_IMAGE;

	struct gs_code code;
	int err = gs_image_select(image, size, sm, &code);
	if (err)
		return sim_image_error(err, kind);
	struct gs_code_info info;
	err = gs_code_parse(&code, &info);
	if (err) {
		gs_code_free(&code);
		return sim_image_error(err == -ENOMEM ? err : -EINVAL, code.kind);
	}
	/* The simulator offers no managed memory (the device attribute says
	 * so), which is when the driver refuses code with __managed__. */
	for (size_t i = 0; i < info.nglobals; i++) {
		if (info.globals[i].flags & GS_GLOBAL_MANAGED) {
			gs_code_info_free(&info);
			gs_code_free(&code);
			return CUDA_ERROR_NOT_SUPPORTED;
		}
	}

	struct sim_module *m = sim_handle_new(SIM_KIND_MODULE, sizeof(*m));
	m->ctx = ctx;
	m->library = lib;
	m->code = code;
	m->info = info;
	sim_list_init(&m->exec_link);
	sim_list_init(&m->library_link);
	sim_list_init(&m->todo_link);
	CUresult rc = functions_create(m, dev);
	if (rc == CUDA_SUCCESS) {
		rc = globals_create(m, fn);
		if (rc != CUDA_SUCCESS)
			functions_free(m, m->info.nkernels);
	}
	if (rc != CUDA_SUCCESS) {
		gs_code_info_free(&m->info);
		gs_code_free(&m->code);
		sim_handle_destroy(m);
		return rc;
	}
	sim_list_add_tail(&sim_exec_of(ctx)->modules, &m->exec_link);
	if (lib) {
		sim_list_add_tail(&lib->modules, &m->library_link);
		sim_library_bind_module(lib, m);
	}
	*out = m;
	return CUDA_SUCCESS;
}

void sim_module_claim(struct sim_module *m)
{
	sim_list_del(&m->exec_link);
	sim_list_del(&m->library_link);
	m->unloading = true;
}

void sim_module_teardown(struct sim_module *m)
{
	/* Function handles die with the module: a later launch or query of
	 * one aborts, as a stale function pointer would fault on a GPU. */
	functions_free(m, m->info.nkernels);
	globals_free(m, m->info.nglobals);
	gs_code_info_free(&m->info);
	gs_code_free(&m->code);
	sim_handle_destroy(m);
}

void sim_module_destroy_ctx(struct sim_exec *exec)
{
	struct sim_link todo;

	sim_list_init(&todo);
	pthread_mutex_lock(&sim_module_lock);
	while (!sim_list_empty(&exec->modules)) {
		struct sim_module *m = sim_container_of(exec->modules.next, struct sim_module,
							exec_link);
		sim_module_claim(m);
		sim_list_add_tail(&todo, &m->todo_link);
	}
	pthread_mutex_unlock(&sim_module_lock);
	while (!sim_list_empty(&todo)) {
		struct sim_module *m = sim_container_of(todo.next, struct sim_module, todo_link);
		sim_list_del(&m->todo_link);
		sim_module_teardown(m);
	}
}

struct sim_function *sim_module_function(struct sim_module *m, const char *name)
{
	for (size_t i = 0; i < m->info.nkernels; i++)
		if (strcmp(m->info.kernels[i].name, name) == 0)
			return m->functions[i];
	return NULL;
}

CUresult sim_module_global(struct sim_module *m, const char *name, CUdeviceptr *dptr,
			   size_t *bytes)
{
	for (size_t i = 0; i < m->info.nglobals; i++) {
		if (strcmp(m->info.globals[i].name, name) != 0)
			continue;
		if (dptr)
			*dptr = m->globals[i];
		if (bytes)
			*bytes = m->info.globals[i].size;
		return CUDA_SUCCESS;
	}
	return CUDA_ERROR_NOT_FOUND;
}

CUresult sim_jit_options(unsigned n, const CUjit_option *options, void **values)
{
	if (n && (!options || !values))
		return CUDA_ERROR_INVALID_VALUE;
	for (unsigned i = 0; i < n; i++)
		if ((unsigned)options[i] >= CU_JIT_NUM_OPTIONS)
			return CUDA_ERROR_INVALID_VALUE;
	for (unsigned i = 0; i < n; i++) {
		CUjit_option size_option;
		switch (options[i]) {
		case CU_JIT_WALL_TIME: {
			/* A float returned in the option's pointer-sized slot. */
			float ms = 0.0f;
			values[i] = NULL;
			memcpy(&values[i], &ms, sizeof(ms));
			continue;
		}
		case CU_JIT_INFO_LOG_BUFFER:
			size_option = CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES;
			break;
		case CU_JIT_ERROR_LOG_BUFFER:
			size_option = CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES;
			break;
		default:
			continue;
		}
		/* The size option says how big the buffer is, and on return how
		 * much of it the log filled. */
		for (unsigned j = 0; j < n; j++) {
			if (options[j] != size_option)
				continue;
			if ((uintptr_t)values[j] && values[i])
				*(char *)values[i] = '\0';
			values[j] = (void *)(uintptr_t)0;
		}
	}
	return CUDA_SUCCESS;
}

/* ---- entry points ------------------------------------------------------------ */

static CUresult module_load(const char *fn, CUmodule *module, const void *image, size_t size)
{
	struct sim_ctx *ctx;
	CUresult rc = sim_ctx_require(fn, &ctx);

	if (rc != CUDA_SUCCESS)
		return rc;
	if (!module || !image)
		return CUDA_ERROR_INVALID_VALUE;
	struct sim_module *m;
	pthread_mutex_lock(&sim_module_lock);
	rc = sim_module_create(ctx, NULL, image, size, fn, &m);
	pthread_mutex_unlock(&sim_module_lock);
	if (rc == CUDA_SUCCESS)
		*module = (CUmodule)m;
	return rc;
}

/* The whole file, NUL-terminated so PTX text is a string. */
CUresult sim_read_file(const char *path, void **data, size_t *size)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return CUDA_ERROR_FILE_NOT_FOUND;
	char *buf = NULL;
	size_t len = 0, cap = 0;
	for (;;) {
		if (cap - len < 4096) {
			cap = cap ? 2 * cap : 65536;
			char *grown = realloc(buf, cap + 1);
			if (!grown) {
				free(buf);
				fclose(f);
				return CUDA_ERROR_OUT_OF_MEMORY;
			}
			buf = grown;
		}
		size_t got = fread(buf + len, 1, cap - len, f);
		len += got;
		if (got == 0)
			break;
	}
	bool failed = ferror(f);
	fclose(f);
	if (failed) {
		free(buf);
		return CUDA_ERROR_FILE_NOT_FOUND;
	}
	buf[len] = '\0';
	*data = buf;
	*size = len + 1;
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuModuleLoad(CUmodule *module, const char *fname)
{
	SIM_ENTER("cuModuleLoad");
	struct sim_ctx *ctx;
	CUresult rc = sim_ctx_require("cuModuleLoad", &ctx);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!module || !fname)
		return CUDA_ERROR_INVALID_VALUE;
	void *data;
	size_t size;
	rc = sim_read_file(fname, &data, &size);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = module_load("cuModuleLoad", module, data, size);
	free(data);
	return rc;
}

SIM_EXPORT CUresult cuModuleLoadData(CUmodule *module, const void *image)
{
	SIM_ENTER("cuModuleLoadData");
	return module_load("cuModuleLoadData", module, image, SIZE_MAX);
}

SIM_EXPORT CUresult cuModuleLoadDataEx(CUmodule *module, const void *image, unsigned int numOptions,
				       CUjit_option *options, void **optionValues)
{
	SIM_ENTER("cuModuleLoadDataEx");
	CUresult rc = sim_jit_options(numOptions, options, optionValues);
	if (rc != CUDA_SUCCESS)
		return rc;
	return module_load("cuModuleLoadDataEx", module, image, SIZE_MAX);
}

SIM_EXPORT CUresult cuModuleLoadFatBinary(CUmodule *module, const void *fatCubin)
{
	SIM_ENTER("cuModuleLoadFatBinary");
	return module_load("cuModuleLoadFatBinary", module, fatCubin, SIZE_MAX);
}

SIM_EXPORT CUresult cuModuleUnload(CUmodule hmod)
{
	SIM_ENTER("cuModuleUnload");
	struct sim_module *m = sim_handle_get(SIM_KIND_MODULE, hmod, "cuModuleUnload");

	/* A library's module goes with the library (cuLibraryUnload). */
	if (m->library)
		return CUDA_ERROR_NOT_PERMITTED;
	pthread_mutex_lock(&sim_module_lock);
	bool first = !m->unloading;
	if (first)
		sim_module_claim(m);
	pthread_mutex_unlock(&sim_module_lock);
	if (!first)
		sim_abort("cuModuleUnload", "module %p unloaded twice concurrently", (void *)hmod);
	/* Kernels already queued may still use the module's globals; the
	 * driver lets them finish before the memory goes. */
	sim_exec_drain(sim_exec_of(m->ctx));
	sim_module_teardown(m);
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuModuleGetFunction(CUfunction *hfunc, CUmodule hmod, const char *name)
{
	SIM_ENTER("cuModuleGetFunction");
	struct sim_module *m = sim_handle_get(SIM_KIND_MODULE, hmod, "cuModuleGetFunction");

	if (!hfunc || !name)
		return CUDA_ERROR_INVALID_VALUE;
	struct sim_function *f = sim_module_function(m, name);
	if (!f)
		return CUDA_ERROR_NOT_FOUND;
	*hfunc = (CUfunction)f;
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuModuleGetGlobal_v2(CUdeviceptr *dptr, size_t *bytes, CUmodule hmod,
					 const char *name)
{
	SIM_ENTER("cuModuleGetGlobal_v2");
	struct sim_module *m = sim_handle_get(SIM_KIND_MODULE, hmod, "cuModuleGetGlobal_v2");

	if (!name)
		return CUDA_ERROR_INVALID_VALUE;
	return sim_module_global(m, name, dptr, bytes);
}

SIM_EXPORT CUresult cuModuleGetFunctionCount(unsigned int *count, CUmodule mod)
{
	SIM_ENTER("cuModuleGetFunctionCount");
	struct sim_module *m = sim_handle_get(SIM_KIND_MODULE, mod, "cuModuleGetFunctionCount");

	if (!count)
		return CUDA_ERROR_INVALID_VALUE;
	*count = (unsigned)m->info.nkernels;
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuModuleEnumerateFunctions(CUfunction *functions, unsigned int numFunctions,
					       CUmodule mod)
{
	SIM_ENTER("cuModuleEnumerateFunctions");
	struct sim_module *m = sim_handle_get(SIM_KIND_MODULE, mod, "cuModuleEnumerateFunctions");

	if (!functions || !numFunctions)
		return CUDA_ERROR_INVALID_VALUE;
	for (size_t i = 0; i < m->info.nkernels && i < numFunctions; i++)
		functions[i] = (CUfunction)m->functions[i];
	return CUDA_SUCCESS;
}

/* The mode comes from CUDA_MODULE_LOADING as for the driver (lazy unless it
 * says EAGER). Answered before cuInit: cudart asks first of all. */
SIM_EXPORT CUresult cuModuleGetLoadingMode(CUmoduleLoadingMode *mode)
{
	CUresult rc = sim_enter("cuModuleGetLoadingMode", false);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!mode)
		return CUDA_ERROR_INVALID_VALUE;
	const char *env = getenv("CUDA_MODULE_LOADING");
	*mode = env && strcmp(env, "EAGER") == 0 ? CU_MODULE_EAGER_LOADING : CU_MODULE_LAZY_LOADING;
	return CUDA_SUCCESS;
}

/* ---- functions ----------------------------------------------------------------- */

static struct sim_function *function_get(CUfunction f, const char *fn)
{
	return sim_handle_get(SIM_KIND_FUNCTION, f, fn);
}

SIM_EXPORT CUresult cuFuncGetAttribute(int *pi, CUfunction_attribute attrib, CUfunction hfunc)
{
	SIM_ENTER("cuFuncGetAttribute");
	struct sim_function *f = function_get(hfunc, "cuFuncGetAttribute");

	if (!pi)
		return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&f->lock);
	CUresult rc = sim_fattr_get(&f->attrs, &f->res, attrib, pi);
	pthread_mutex_unlock(&f->lock);
	return rc;
}

SIM_EXPORT CUresult cuFuncSetAttribute(CUfunction hfunc, CUfunction_attribute attrib, int value)
{
	SIM_ENTER("cuFuncSetAttribute");
	struct sim_function *f = function_get(hfunc, "cuFuncSetAttribute");
	const struct sim_device *dev = sim_device_get(f->module->ctx->device, "cuFuncSetAttribute");

	pthread_mutex_lock(&f->lock);
	CUresult rc = sim_fattr_set(&f->attrs, &f->res, dev, attrib, value);
	pthread_mutex_unlock(&f->lock);
	return rc;
}

static bool valid_cache_config(CUfunc_cache config)
{
	return config == CU_FUNC_CACHE_PREFER_NONE || config == CU_FUNC_CACHE_PREFER_SHARED ||
	       config == CU_FUNC_CACHE_PREFER_L1 || config == CU_FUNC_CACHE_PREFER_EQUAL;
}

SIM_EXPORT CUresult cuFuncSetCacheConfig(CUfunction hfunc, CUfunc_cache config)
{
	SIM_ENTER("cuFuncSetCacheConfig");
	struct sim_function *f = function_get(hfunc, "cuFuncSetCacheConfig");

	if (!valid_cache_config(config))
		return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&f->lock);
	f->attrs.cache_config = config;
	pthread_mutex_unlock(&f->lock);
	return CUDA_SUCCESS;
}

/* Bank size configuration has no effect on the GPUs CUDA 13 supports; the
 * driver still checks the value. */
SIM_EXPORT CUresult cuFuncSetSharedMemConfig(CUfunction hfunc, CUsharedconfig config)
{
	SIM_ENTER("cuFuncSetSharedMemConfig");
	function_get(hfunc, "cuFuncSetSharedMemConfig");
	if (config != CU_SHARED_MEM_CONFIG_DEFAULT_BANK_SIZE &&
	    config != CU_SHARED_MEM_CONFIG_FOUR_BYTE_BANK_SIZE &&
	    config != CU_SHARED_MEM_CONFIG_EIGHT_BYTE_BANK_SIZE)
		return CUDA_ERROR_INVALID_VALUE;
	return CUDA_SUCCESS;
}

/* State for the pre-4.0 launch API, which CUDA 13 no longer exports; kept so
 * the setters behave, and ignored by cuLaunchKernel as on the driver. */
SIM_EXPORT CUresult cuFuncSetBlockShape(CUfunction hfunc, int x, int y, int z)
{
	SIM_ENTER("cuFuncSetBlockShape");
	struct sim_function *f = function_get(hfunc, "cuFuncSetBlockShape");

	if (x <= 0 || y <= 0 || z <= 0)
		return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&f->lock);
	f->block_shape[0] = x;
	f->block_shape[1] = y;
	f->block_shape[2] = z;
	pthread_mutex_unlock(&f->lock);
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuFuncSetSharedSize(CUfunction hfunc, unsigned int bytes)
{
	SIM_ENTER("cuFuncSetSharedSize");
	struct sim_function *f = function_get(hfunc, "cuFuncSetSharedSize");

	pthread_mutex_lock(&f->lock);
	f->shared_size = bytes;
	pthread_mutex_unlock(&f->lock);
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuFuncGetParamInfo(CUfunction func, size_t paramIndex, size_t *paramOffset,
				       size_t *paramSize)
{
	SIM_ENTER("cuFuncGetParamInfo");
	struct sim_function *f = function_get(func, "cuFuncGetParamInfo");

	if (!paramOffset || paramIndex >= f->info->nparams)
		return CUDA_ERROR_INVALID_VALUE;
	*paramOffset = f->info->params[paramIndex].offset;
	if (paramSize)
		*paramSize = f->info->params[paramIndex].size;
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuFuncGetName(const char **name, CUfunction hfunc)
{
	SIM_ENTER("cuFuncGetName");
	if (!name || !hfunc)
		return CUDA_ERROR_INVALID_VALUE;
	*name = function_get(hfunc, "cuFuncGetName")->info->name;
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuFuncGetModule(CUmodule *hmod, CUfunction hfunc)
{
	SIM_ENTER("cuFuncGetModule");
	struct sim_function *f = function_get(hfunc, "cuFuncGetModule");

	if (!hmod)
		return CUDA_ERROR_INVALID_VALUE;
	*hmod = (CUmodule)f->module;
	return CUDA_SUCCESS;
}

/* Modules are loaded whole, so every function is loaded. */
SIM_EXPORT CUresult cuFuncIsLoaded(CUfunctionLoadingState *state, CUfunction function)
{
	SIM_ENTER("cuFuncIsLoaded");
	function_get(function, "cuFuncIsLoaded");
	if (!state)
		return CUDA_ERROR_INVALID_VALUE;
	*state = CU_FUNCTION_LOADING_STATE_LOADED;
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuFuncLoad(CUfunction function)
{
	SIM_ENTER("cuFuncLoad");
	function_get(function, "cuFuncLoad");
	return CUDA_SUCCESS;
}
