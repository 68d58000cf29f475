/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Libraries and kernels (CUDA 12's context-independent loading). A CUlibrary
 * keeps a copy of its image; a context gets its own module of it the first
 * time a kernel, global or module of the library is asked for there. A
 * CUkernel names a kernel of the library in every context, and may be passed
 * wherever the driver takes a CUfunction for a launch.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim_exec.h"

static struct sim_library *library_get(CUlibrary l, const char *fn)
{
	return sim_handle_get(SIM_KIND_LIBRARY, l, fn);
}

static struct sim_kernel *kernel_get(CUkernel k, const char *fn)
{
	return sim_handle_get(SIM_KIND_KERNEL, k, fn);
}

static const char *kernel_name(const struct sim_kernel *k)
{
	return k->library->names->kernels[k->index].name;
}

/* The library's module in ctx, loaded on first use. Caller holds
 * sim_module_lock. */
static CUresult library_module(struct sim_library *lib, struct sim_ctx *ctx, const char *fn,
			       struct sim_module **out)
{
	if (lib->unloading)
		sim_abort(fn, "library %p used while it is unloaded", (void *)lib);
	sim_list_for_each(pos, &lib->modules) {
		struct sim_module *m = sim_container_of(pos, struct sim_module, library_link);
		if (m->ctx == ctx) {
			*out = m;
			return CUDA_SUCCESS;
		}
	}
	return sim_module_create(ctx, lib, lib->image, lib->size, fn, out);
}

void sim_library_bind_module(struct sim_library *lib, struct sim_module *m)
{
	int dev = m->ctx->device;

	for (size_t i = 0; i < m->info.nkernels; i++) {
		struct sim_function *f = m->functions[i];
		for (size_t k = 0; k < lib->names->nkernels; k++) {
			if (strcmp(lib->names->kernels[k].name, f->info->name) != 0)
				continue;
			struct sim_kernel *kernel = lib->kernels[k];
			f->kernel = kernel;
			pthread_mutex_lock(&f->lock);
			sim_fattrs_copy(&f->attrs, &kernel->attrs[dev], kernel->set_mask[dev]);
			pthread_mutex_unlock(&f->lock);
			break;
		}
	}
}

CUresult sim_kernel_function(struct sim_kernel *k, struct sim_ctx *ctx, const char *fn,
			     struct sim_function **out)
{
	struct sim_module *m;

	pthread_mutex_lock(&sim_module_lock);
	CUresult rc = library_module(k->library, ctx, fn, &m);
	if (rc == CUDA_SUCCESS) {
		*out = sim_module_function(m, kernel_name(k));
		if (!*out)
			rc = CUDA_ERROR_NOT_FOUND;
	}
	pthread_mutex_unlock(&sim_module_lock);
	return rc;
}

/* ---- loading -------------------------------------------------------------------- */

static void library_free_code(struct sim_library *lib)
{
	for (int d = 0; d < lib->ndevices; d++) {
		gs_code_info_free(&lib->devices[d].info);
		gs_code_free(&lib->devices[d].code);
	}
	free(lib->devices);
	lib->devices = NULL;
	free(lib->image);
	lib->image = NULL;
}

/* Selects and parses the code of every device up front: a library with code
 * for none of them is refused at load, as the driver does. */
static CUresult library_select(struct sim_library *lib, enum gs_image_kind kind)
{
	int last_err = -ENOENT;

	lib->ndevices = sim_device_count();
	lib->devices = calloc((size_t)(lib->ndevices ? lib->ndevices : 1), sizeof(*lib->devices));
	if (!lib->devices)
		return CUDA_ERROR_OUT_OF_MEMORY;
	for (int d = 0; d < lib->ndevices; d++) {
		struct sim_library_dev *ld = &lib->devices[d];
		const struct sim_device *dev = sim_device(d);
		unsigned sm = (unsigned)(dev->sm_major * 10 + dev->sm_minor);
		ld->err = gs_image_select(lib->image, lib->size, sm, &ld->code);
		if (!ld->err) {
			ld->err = gs_code_parse(&ld->code, &ld->info);
			if (ld->err)
				gs_code_free(&ld->code);
		}
		if (ld->err) {
			last_err = ld->err;
			if (last_err == -ENOMEM)
				return CUDA_ERROR_OUT_OF_MEMORY;
			continue;
		}
		for (size_t g = 0; g < ld->info.nglobals; g++)
			if (ld->info.globals[g].flags & GS_GLOBAL_MANAGED)
				return CUDA_ERROR_NOT_SUPPORTED;
		if (!lib->names)
			lib->names = &ld->info;
	}
	if (!lib->names)
		return sim_image_error(last_err, kind);
	return CUDA_SUCCESS;
}

/* Caller has claimed the library (set `unloading` under sim_module_lock). */
static void library_unload(struct sim_library *lib)
{
	struct sim_link todo;

	sim_list_init(&todo);
	pthread_mutex_lock(&sim_module_lock);
	sim_handle_destroy(lib);
	for (size_t i = 0; i < lib->names->nkernels; i++)
		sim_handle_destroy(lib->kernels[i]);
	while (!sim_list_empty(&lib->modules)) {
		struct sim_module *m = sim_container_of(lib->modules.next, struct sim_module,
							library_link);
		sim_module_claim(m);
		sim_list_add_tail(&todo, &m->todo_link);
	}
	pthread_mutex_unlock(&sim_module_lock);

	/* Queued launches of its kernels finish before the code and globals
	 * go, in every context the library was loaded into. */
	while (!sim_list_empty(&todo)) {
		struct sim_module *m = sim_container_of(todo.next, struct sim_module, todo_link);
		sim_list_del(&m->todo_link);
		sim_exec_drain(sim_exec_of(m->ctx));
		sim_module_teardown(m);
	}
	for (size_t i = 0; i < lib->names->nkernels; i++) {
		free(lib->kernels[i]->set_mask);
		free(lib->kernels[i]->attrs);
		lib->kernels[i]->set_mask = NULL;
		lib->kernels[i]->attrs = NULL;
	}
	free(lib->kernels);
	lib->kernels = NULL;
	library_free_code(lib);
}

static CUresult library_load(const char *fn, CUlibrary *library, const void *code, size_t max_len,
			     CUjit_option *jitOptions, void **jitOptionsValues,
			     unsigned int numJitOptions, CUlibraryOption *libraryOptions,
			     void **libraryOptionValues, unsigned int numLibraryOptions)
{
	if (!library || !code)
		return CUDA_ERROR_INVALID_VALUE;
	if (numLibraryOptions && (!libraryOptions || !libraryOptionValues))
		return CUDA_ERROR_INVALID_VALUE;
	for (unsigned i = 0; i < numLibraryOptions; i++)
		if ((unsigned)libraryOptions[i] >= CU_LIBRARY_NUM_OPTIONS)
			return CUDA_ERROR_INVALID_VALUE;
	CUresult rc = sim_jit_options(numJitOptions, jitOptions, jitOptionsValues);
	if (rc != CUDA_SUCCESS)
		return rc;

	enum gs_image_kind kind;
	size_t size;
	const void *inner;
	if (gs_image_probe(code, max_len, &kind, &size, &inner) != 0)
		return CUDA_ERROR_INVALID_IMAGE;
	if (kind == GS_IMAGE_FATBIN_WRAPPER)
		code = inner;

	struct sim_library *lib = sim_handle_new(SIM_KIND_LIBRARY, sizeof(*lib));
	sim_list_init(&lib->modules);
	/* CU_LIBRARY_BINARY_IS_PRESERVED would let the driver keep pointing
	 * at the caller's bytes; a copy is always correct. */
	lib->image = malloc(size);
	lib->size = size;
	rc = lib->image ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
	if (rc == CUDA_SUCCESS) {
		memcpy(lib->image, code, size);
		rc = library_select(lib, kind);
	}
	size_t nkernels = rc == CUDA_SUCCESS ? lib->names->nkernels : 0;
	int ndev = lib->ndevices ? lib->ndevices : 1;
	if (rc == CUDA_SUCCESS) {
		lib->kernels = calloc(nkernels ? nkernels : 1, sizeof(*lib->kernels));
		if (!lib->kernels)
			rc = CUDA_ERROR_OUT_OF_MEMORY;
	}
	for (size_t i = 0; rc == CUDA_SUCCESS && i < nkernels; i++) {
		struct sim_kernel *k = sim_handle_new(SIM_KIND_KERNEL, sizeof(*k));
		k->library = lib;
		k->index = i;
		k->set_mask = calloc((size_t)ndev, sizeof(*k->set_mask));
		k->attrs = calloc((size_t)ndev, sizeof(*k->attrs));
		lib->kernels[i] = k;
		if (!k->set_mask || !k->attrs)
			rc = CUDA_ERROR_OUT_OF_MEMORY;
	}
	if (rc != CUDA_SUCCESS) {
		for (size_t i = 0; lib->kernels && i < nkernels; i++) {
			if (!lib->kernels[i])
				continue;
			free(lib->kernels[i]->set_mask);
			free(lib->kernels[i]->attrs);
			sim_handle_destroy(lib->kernels[i]);
		}
		free(lib->kernels);
		library_free_code(lib);
		sim_handle_destroy(lib);
		return rc;
	}

	/* With eager loading the driver loads the library into the current
	 * context right away, so a failure shows here rather than at first
	 * use. */
	CUmoduleLoadingMode mode = CU_MODULE_LAZY_LOADING;
	const char *env = getenv("CUDA_MODULE_LOADING");
	if (env && strcmp(env, "EAGER") == 0)
		mode = CU_MODULE_EAGER_LOADING;
	struct sim_ctx *ctx = sim_ctx_current();
	if (mode == CU_MODULE_EAGER_LOADING && ctx) {
		struct sim_module *m;
		pthread_mutex_lock(&sim_module_lock);
		rc = library_module(lib, ctx, fn, &m);
		if (rc != CUDA_SUCCESS)
			lib->unloading = true;
		pthread_mutex_unlock(&sim_module_lock);
		if (rc != CUDA_SUCCESS) {
			library_unload(lib);
			return rc;
		}
	}
	*library = (CUlibrary)lib;
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuLibraryLoadData(CUlibrary *library, const void *code,
				      CUjit_option *jitOptions, void **jitOptionsValues,
				      unsigned int numJitOptions, CUlibraryOption *libraryOptions,
				      void **libraryOptionValues, unsigned int numLibraryOptions)
{
	SIM_ENTER("cuLibraryLoadData");
	return library_load("cuLibraryLoadData", library, code, SIZE_MAX, jitOptions,
			    jitOptionsValues, numJitOptions, libraryOptions, libraryOptionValues,
			    numLibraryOptions);
}

SIM_EXPORT CUresult cuLibraryLoadFromFile(CUlibrary *library, const char *fileName,
					  CUjit_option *jitOptions, void **jitOptionsValues,
					  unsigned int numJitOptions, CUlibraryOption *libraryOptions,
					  void **libraryOptionValues, unsigned int numLibraryOptions)
{
	SIM_ENTER("cuLibraryLoadFromFile");
	if (!library || !fileName)
		return CUDA_ERROR_INVALID_VALUE;
	void *data;
	size_t size;
	CUresult rc = sim_read_file(fileName, &data, &size);
	if (rc != CUDA_SUCCESS)
		return rc;
	rc = library_load("cuLibraryLoadFromFile", library, data, size, jitOptions, jitOptionsValues,
			  numJitOptions, libraryOptions, libraryOptionValues, numLibraryOptions);
	free(data);
	return rc;
}

SIM_EXPORT CUresult cuLibraryUnload(CUlibrary library)
{
	SIM_ENTER("cuLibraryUnload");
	struct sim_library *lib = library_get(library, "cuLibraryUnload");

	pthread_mutex_lock(&sim_module_lock);
	bool first = !lib->unloading;
	lib->unloading = true;
	pthread_mutex_unlock(&sim_module_lock);
	if (!first)
		sim_abort("cuLibraryUnload", "library %p unloaded twice concurrently", (void *)library);
	library_unload(lib);
	return CUDA_SUCCESS;
}

/* ---- library queries ---------------------------------------------------------------- */

SIM_EXPORT CUresult cuLibraryGetKernel(CUkernel *pKernel, CUlibrary library, const char *name)
{
	SIM_ENTER("cuLibraryGetKernel");
	struct sim_library *lib = library_get(library, "cuLibraryGetKernel");

	if (!pKernel || !name)
		return CUDA_ERROR_INVALID_VALUE;
	for (size_t i = 0; i < lib->names->nkernels; i++) {
		if (strcmp(lib->names->kernels[i].name, name) == 0) {
			*pKernel = (CUkernel)lib->kernels[i];
			return CUDA_SUCCESS;
		}
	}
	return CUDA_ERROR_NOT_FOUND;
}

SIM_EXPORT CUresult cuLibraryGetKernelCount(unsigned int *count, CUlibrary lib)
{
	SIM_ENTER("cuLibraryGetKernelCount");
	struct sim_library *l = library_get(lib, "cuLibraryGetKernelCount");

	if (!count)
		return CUDA_ERROR_INVALID_VALUE;
	*count = (unsigned)l->names->nkernels;
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuLibraryEnumerateKernels(CUkernel *kernels, unsigned int numKernels, CUlibrary lib)
{
	SIM_ENTER("cuLibraryEnumerateKernels");
	struct sim_library *l = library_get(lib, "cuLibraryEnumerateKernels");

	if (!kernels || !numKernels)
		return CUDA_ERROR_INVALID_VALUE;
	for (size_t i = 0; i < l->names->nkernels && i < numKernels; i++)
		kernels[i] = (CUkernel)l->kernels[i];
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuLibraryGetModule(CUmodule *pMod, CUlibrary library)
{
	SIM_ENTER("cuLibraryGetModule");
	struct sim_library *lib = library_get(library, "cuLibraryGetModule");
	struct sim_ctx *ctx;
	CUresult rc = sim_ctx_require("cuLibraryGetModule", &ctx);

	if (rc != CUDA_SUCCESS)
		return rc;
	if (!pMod)
		return CUDA_ERROR_INVALID_VALUE;
	struct sim_module *m;
	pthread_mutex_lock(&sim_module_lock);
	rc = library_module(lib, ctx, "cuLibraryGetModule", &m);
	pthread_mutex_unlock(&sim_module_lock);
	if (rc == CUDA_SUCCESS)
		*pMod = (CUmodule)m;
	return rc;
}

SIM_EXPORT CUresult cuLibraryGetGlobal(CUdeviceptr *dptr, size_t *bytes, CUlibrary library,
				       const char *name)
{
	SIM_ENTER("cuLibraryGetGlobal");
	struct sim_library *lib = library_get(library, "cuLibraryGetGlobal");
	struct sim_ctx *ctx;
	CUresult rc = sim_ctx_require("cuLibraryGetGlobal", &ctx);

	if (rc != CUDA_SUCCESS)
		return rc;
	if (!name)
		return CUDA_ERROR_INVALID_VALUE;
	struct sim_module *m;
	pthread_mutex_lock(&sim_module_lock);
	rc = library_module(lib, ctx, "cuLibraryGetGlobal", &m);
	if (rc == CUDA_SUCCESS)
		rc = sim_module_global(m, name, dptr, bytes);
	pthread_mutex_unlock(&sim_module_lock);
	return rc;
}

/* A library with __managed__ variables is refused at load (the simulator has
 * no managed memory), so no name is ever a managed variable. */
SIM_EXPORT CUresult cuLibraryGetManaged(CUdeviceptr *dptr, size_t *bytes, CUlibrary library,
					const char *name)
{
	SIM_ENTER("cuLibraryGetManaged");
	library_get(library, "cuLibraryGetManaged");
	if (!name)
		return CUDA_ERROR_INVALID_VALUE;
	(void)dptr, (void)bytes;
	return CUDA_ERROR_NOT_FOUND;
}

/* Unified functions come from host code compiled with -rdc into the
 * library; the simulator's images never declare any. */
SIM_EXPORT CUresult cuLibraryGetUnifiedFunction(void **fptr, CUlibrary library, const char *symbol)
{
	SIM_ENTER("cuLibraryGetUnifiedFunction");
	library_get(library, "cuLibraryGetUnifiedFunction");
	if (!fptr || !symbol)
		return CUDA_ERROR_INVALID_VALUE;
	return CUDA_ERROR_NOT_FOUND;
}

/* ---- kernels ------------------------------------------------------------------------ */

SIM_EXPORT CUresult cuKernelGetFunction(CUfunction *pFunc, CUkernel kernel)
{
	SIM_ENTER("cuKernelGetFunction");
	struct sim_kernel *k = kernel_get(kernel, "cuKernelGetFunction");
	struct sim_ctx *ctx;
	CUresult rc = sim_ctx_require("cuKernelGetFunction", &ctx);

	if (rc != CUDA_SUCCESS)
		return rc;
	if (!pFunc)
		return CUDA_ERROR_INVALID_VALUE;
	struct sim_function *f;
	rc = sim_kernel_function(k, ctx, "cuKernelGetFunction", &f);
	if (rc == CUDA_SUCCESS)
		*pFunc = (CUfunction)f;
	return rc;
}

SIM_EXPORT CUresult cuKernelGetLibrary(CUlibrary *pLib, CUkernel kernel)
{
	SIM_ENTER("cuKernelGetLibrary");
	struct sim_kernel *k = kernel_get(kernel, "cuKernelGetLibrary");

	if (!pLib)
		return CUDA_ERROR_INVALID_VALUE;
	*pLib = (CUlibrary)k->library;
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuKernelGetName(const char **name, CUkernel hfunc)
{
	SIM_ENTER("cuKernelGetName");
	if (!name || !hfunc)
		return CUDA_ERROR_INVALID_VALUE;
	*name = kernel_name(kernel_get(hfunc, "cuKernelGetName"));
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuKernelGetParamInfo(CUkernel kernel, size_t paramIndex, size_t *paramOffset,
					 size_t *paramSize)
{
	SIM_ENTER("cuKernelGetParamInfo");
	struct sim_kernel *k = kernel_get(kernel, "cuKernelGetParamInfo");
	const struct gs_kernel_info *info = &k->library->names->kernels[k->index];

	if (!paramOffset || paramIndex >= info->nparams)
		return CUDA_ERROR_INVALID_VALUE;
	*paramOffset = info->params[paramIndex].offset;
	if (paramSize)
		*paramSize = info->params[paramIndex].size;
	return CUDA_SUCCESS;
}

/* The kernel's resource use on a device, from the code selected for it.
 * Caller holds sim_module_lock. */
static CUresult kernel_on_device(struct sim_kernel *k, const struct sim_device *dev,
				 struct sim_kres *res, struct sim_fattrs *attrs)
{
	struct sim_library *lib = k->library;
	const struct sim_library_dev *ld = &lib->devices[dev->ordinal];

	if (ld->err)
		return sim_image_error(ld->err, ld->code.kind);
	for (size_t i = 0; i < ld->info.nkernels; i++) {
		if (strcmp(ld->info.kernels[i].name, kernel_name(k)) != 0)
			continue;
		sim_kernel_resources(&ld->code, &ld->info, i, dev, res);
		sim_fattrs_default(attrs, res);
		sim_fattrs_copy(attrs, &k->attrs[dev->ordinal], k->set_mask[dev->ordinal]);
		return CUDA_SUCCESS;
	}
	return CUDA_ERROR_NOT_FOUND;
}

SIM_EXPORT CUresult cuKernelGetAttribute(int *pi, CUfunction_attribute attrib, CUkernel kernel,
					 CUdevice dev)
{
	SIM_ENTER("cuKernelGetAttribute");
	struct sim_kernel *k = kernel_get(kernel, "cuKernelGetAttribute");
	const struct sim_device *d = sim_device_get(dev, "cuKernelGetAttribute");
	struct sim_kres res;
	struct sim_fattrs attrs;

	if (!pi)
		return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&sim_module_lock);
	CUresult rc = kernel_on_device(k, d, &res, &attrs);
	pthread_mutex_unlock(&sim_module_lock);
	if (rc != CUDA_SUCCESS)
		return rc;
	return sim_fattr_get(&attrs, &res, attrib, pi);
}

/* Applies a change to the kernel on device d: recorded for modules loaded
 * later, and made to the functions contexts on d already have. */
static void kernel_propagate(struct sim_kernel *k, int d, unsigned bit)
{
	sim_list_for_each(pos, &k->library->modules) {
		struct sim_module *m = sim_container_of(pos, struct sim_module, library_link);
		if (m->ctx->device != d)
			continue;
		struct sim_function *f = sim_module_function(m, kernel_name(k));
		if (!f)
			continue;
		pthread_mutex_lock(&f->lock);
		sim_fattrs_copy(&f->attrs, &k->attrs[d], bit);
		pthread_mutex_unlock(&f->lock);
	}
}

SIM_EXPORT CUresult cuKernelSetAttribute(CUfunction_attribute attrib, int val, CUkernel kernel,
					 CUdevice dev)
{
	SIM_ENTER("cuKernelSetAttribute");
	struct sim_kernel *k = kernel_get(kernel, "cuKernelSetAttribute");
	const struct sim_device *d = sim_device_get(dev, "cuKernelSetAttribute");
	struct sim_kres res;
	struct sim_fattrs attrs;

	pthread_mutex_lock(&sim_module_lock);
	CUresult rc = kernel_on_device(k, d, &res, &attrs);
	if (rc == CUDA_SUCCESS)
		rc = sim_fattr_set(&attrs, &res, d, attrib, val);
	if (rc == CUDA_SUCCESS) {
		unsigned bit = SIM_FATTR_BIT(attrib);
		k->attrs[dev] = attrs;
		k->set_mask[dev] |= bit;
		kernel_propagate(k, dev, bit);
	}
	pthread_mutex_unlock(&sim_module_lock);
	return rc;
}

SIM_EXPORT CUresult cuKernelSetCacheConfig(CUkernel kernel, CUfunc_cache config, CUdevice dev)
{
	SIM_ENTER("cuKernelSetCacheConfig");
	struct sim_kernel *k = kernel_get(kernel, "cuKernelSetCacheConfig");
	sim_device_get(dev, "cuKernelSetCacheConfig");
	struct sim_kres res;
	struct sim_fattrs attrs;

	if (config != CU_FUNC_CACHE_PREFER_NONE && config != CU_FUNC_CACHE_PREFER_SHARED &&
	    config != CU_FUNC_CACHE_PREFER_L1 && config != CU_FUNC_CACHE_PREFER_EQUAL)
		return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&sim_module_lock);
	CUresult rc = kernel_on_device(k, sim_device(dev), &res, &attrs);
	if (rc == CUDA_SUCCESS) {
		attrs.cache_config = config;
		k->attrs[dev] = attrs;
		k->set_mask[dev] |= SIM_FATTR_CACHE_BIT;
		kernel_propagate(k, dev, SIM_FATTR_CACHE_BIT);
	}
	pthread_mutex_unlock(&sim_module_lock);
	return rc;
}
