/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tracking hooks for code: modules, libraries, functions, kernels, globals,
 * their attributes, and the JIT linker. The tracker copies every image the
 * driver accepts (a thaw reloads it on another GPU) and parses the kernel
 * parameter layouts of the code selected for the context's device.
 */
#define GS_LOG_SUBSYS "tracker"

#include <errno.h>

#include "log.h"
#include "track.h"

/* ---- modules ----------------------------------------------------------------- */

static void module_loaded(const char *call, CUmodule *pmod, enum gs_module_source source,
			  const char *path, const void *image, unsigned nopts,
			  const CUjit_option *opts, void *const *optvals)
{
	struct gs_module_desc d = {
		.source = source,
		.path = path,
		.image = image,
		.nopts = nopts,
		.opts = opts,
		.optvals = optvals,
	};
	CUmodule app;
	int rc;

	d.ctx = gs_hook_current_ctx(&d.device);
	d.sm = d.device >= 0 ? gs_hook_device_sm(d.device) : 0;
	rc = gs_trk_module_loaded(&d, *pmod, &app);
	if (rc) {
		gs_hook_failed(call, rc);
		return;
	}
	*pmod = app;
}

/* The driver read the file; the tracker reads it again for its copy. */
void gs_track_cuModuleLoad(bool ptds, CUmodule *module, const char *fname)
{
	(void)ptds;
	module_loaded("cuModuleLoad", module, GS_MODSRC_FILE, fname, NULL, 0, NULL, NULL);
}

void gs_track_cuModuleLoadData(bool ptds, CUmodule *module, const void *image)
{
	(void)ptds;
	module_loaded("cuModuleLoadData", module, GS_MODSRC_DATA, NULL, image, 0, NULL, NULL);
}

/* Option values are read after the call: in/out options then hold what
 * the driver wrote back (see trk_image.c). */
void gs_track_cuModuleLoadDataEx(bool ptds, CUmodule *module, const void *image,
				 unsigned int numOptions, CUjit_option *options,
				 void **optionValues)
{
	(void)ptds;
	module_loaded("cuModuleLoadDataEx", module, GS_MODSRC_DATA_EX, NULL, image, numOptions,
		      options, optionValues);
}

void gs_track_cuModuleLoadFatBinary(bool ptds, CUmodule *module, const void *fatCubin)
{
	(void)ptds;
	module_loaded("cuModuleLoadFatBinary", module, GS_MODSRC_FATBINARY, NULL, fatCubin, 0,
		      NULL, NULL);
}

void gs_track_cuModuleUnload(bool ptds, CUmodule hmod)
{
	int rc;

	(void)ptds;
	rc = gs_trk_module_unloaded(hmod);
	if (rc)
		gs_hook_failed("cuModuleUnload", rc);
}

void gs_track_cuModuleGetFunction(bool ptds, CUfunction *hfunc, CUmodule hmod,
				  const char *name)
{
	CUfunction app;
	int rc;

	(void)ptds;
	rc = gs_trk_function_found(hmod, name, *hfunc, &app);
	if (rc < 0) {
		gs_hook_failed("cuModuleGetFunction", rc);
		return;
	}
	*hfunc = app;
}

/* The driver hands out functions without names here: ask it for each. */
void gs_track_cuModuleEnumerateFunctions(bool ptds, CUfunction *functions,
					 unsigned int numFunctions, CUmodule mod)
{
	(void)ptds;
	for (unsigned i = 0; i < numFunctions; i++) {
		const char *name = NULL;
		CUfunction app;
		int rc;

		if (!functions[i])
			continue;
		if (gs_real.cuFuncGetName &&
		    gs_real.cuFuncGetName(&name, functions[i]) != CUDA_SUCCESS)
			name = NULL;
		rc = gs_trk_function_found(mod, name, functions[i], &app);
		if (rc < 0) {
			gs_hook_failed("cuModuleEnumerateFunctions", rc);
			continue;
		}
		functions[i] = app;
	}
}

/* A global's size, when the caller did not ask for it. */
static size_t global_size(CUresult (*get)(CUdeviceptr *, size_t *, uint64_t, const char *),
			  uint64_t owner_real, const char *name)
{
	CUdeviceptr p;
	size_t n = 0;

	return get && get(&p, &n, owner_real, name) == CUDA_SUCCESS ? n : 0;
}

static CUresult module_global(CUdeviceptr *p, size_t *n, uint64_t mod, const char *name)
{
	return gs_real.cuModuleGetGlobal_v2
		       ? gs_real.cuModuleGetGlobal_v2(p, n, (CUmodule)(uintptr_t)mod, name)
		       : CUDA_ERROR_NOT_SUPPORTED;
}

static CUresult library_global(CUdeviceptr *p, size_t *n, uint64_t lib, const char *name)
{
	return gs_real.cuLibraryGetGlobal
		       ? gs_real.cuLibraryGetGlobal(p, n, (CUlibrary)(uintptr_t)lib, name)
		       : CUDA_ERROR_NOT_SUPPORTED;
}

/* A global of module or library `owner` (application handle) found; with
 * per_ctx, one of the current context. Either out parameter may be NULL;
 * without the address there is nothing the application holds, so nothing
 * to record. */
static void global_found(const char *call, enum gs_kind kind, uint64_t owner, bool per_ctx,
			 CUresult (*get)(CUdeviceptr *, size_t *, uint64_t, const char *),
			 CUdeviceptr *dptr, size_t *bytes, const char *name)
{
	size_t size;
	int rc;

	if (!dptr)
		return;
	size = bytes ? *bytes : global_size(get, gs_hook_to_real(kind, owner), name);
	rc = gs_trk_global_found(kind, owner, per_ctx ? gs_hook_current_ctx(NULL) : NULL, name,
				 *dptr, size);
	if (rc < 0)
		gs_hook_failed(call, rc);
}

void gs_track_cuModuleGetGlobal_v2(bool ptds, CUdeviceptr *dptr, size_t *bytes, CUmodule hmod,
				   const char *name)
{
	(void)ptds;
	global_found("cuModuleGetGlobal", GS_KIND_MODULE, (uintptr_t)hmod, false, module_global,
		     dptr, bytes, name);
}

/* ---- libraries ----------------------------------------------------------------- */

static void library_loaded(const char *call, CUlibrary *plib, enum gs_library_source source,
			   const char *path, const void *code, CUjit_option *jitOptions,
			   void **jitOptionsValues, unsigned numJitOptions,
			   CUlibraryOption *libraryOptions, void **libraryOptionValues,
			   unsigned numLibraryOptions)
{
	struct gs_library_desc d = {
		.source = source,
		.path = path,
		.image = code,
		.njit = numJitOptions,
		.jit = jitOptions,
		.jitvals = jitOptionsValues,
		.nlib = numLibraryOptions,
		.lib = libraryOptions,
		.libvals = libraryOptionValues,
	};
	CUlibrary app;
	int dev, rc;

	/* A library is context-independent; parse now for the device in use,
	 * other architectures when a kernel is first used on them. */
	if (gs_hook_current_ctx(&dev) && dev >= 0)
		d.sm = gs_hook_device_sm(dev);
	rc = gs_trk_library_loaded(&d, *plib, &app);
	if (rc) {
		gs_hook_failed(call, rc);
		return;
	}
	*plib = app;
}

void gs_track_cuLibraryLoadData(bool ptds, CUlibrary *library, const void *code,
				CUjit_option *jitOptions, void **jitOptionsValues,
				unsigned int numJitOptions, CUlibraryOption *libraryOptions,
				void **libraryOptionValues, unsigned int numLibraryOptions)
{
	(void)ptds;
	library_loaded("cuLibraryLoadData", library, GS_LIBSRC_DATA, NULL, code, jitOptions,
		       jitOptionsValues, numJitOptions, libraryOptions, libraryOptionValues,
		       numLibraryOptions);
}

void gs_track_cuLibraryLoadFromFile(bool ptds, CUlibrary *library, const char *fileName,
				    CUjit_option *jitOptions, void **jitOptionsValues,
				    unsigned int numJitOptions, CUlibraryOption *libraryOptions,
				    void **libraryOptionValues, unsigned int numLibraryOptions)
{
	(void)ptds;
	library_loaded("cuLibraryLoadFromFile", library, GS_LIBSRC_FILE, fileName, NULL,
		       jitOptions, jitOptionsValues, numJitOptions, libraryOptions,
		       libraryOptionValues, numLibraryOptions);
}

void gs_track_cuLibraryUnload(bool ptds, CUlibrary library)
{
	int rc;

	(void)ptds;
	rc = gs_trk_library_unloaded(library);
	if (rc)
		gs_hook_failed("cuLibraryUnload", rc);
}

void gs_track_cuLibraryGetKernel(bool ptds, CUkernel *pKernel, CUlibrary library,
				 const char *name)
{
	CUkernel app;
	int rc;

	(void)ptds;
	rc = gs_trk_kernel_found(library, name, *pKernel, &app);
	if (rc < 0) {
		gs_hook_failed("cuLibraryGetKernel", rc);
		return;
	}
	*pKernel = app;
}

void gs_track_cuLibraryEnumerateKernels(bool ptds, CUkernel *kernels, unsigned int numKernels,
					CUlibrary lib)
{
	(void)ptds;
	for (unsigned i = 0; i < numKernels; i++) {
		const char *name = NULL;
		CUkernel app;
		int rc;

		if (!kernels[i])
			continue;
		if (!gs_real.cuKernelGetName ||
		    gs_real.cuKernelGetName(&name, kernels[i]) != CUDA_SUCCESS || !name) {
			gs_hook_failed("cuLibraryEnumerateKernels", -ENOENT);
			continue;
		}
		rc = gs_trk_kernel_found(lib, name, kernels[i], &app);
		if (rc < 0) {
			gs_hook_failed("cuLibraryEnumerateKernels", rc);
			continue;
		}
		kernels[i] = app;
	}
}

void gs_track_cuKernelGetFunction(bool ptds, CUfunction *pFunc, CUkernel kernel)
{
	CUfunction app;
	int dev, rc;
	CUcontext ctx = gs_hook_current_ctx(&dev);

	(void)ptds;
	rc = gs_trk_kernel_function(kernel, ctx, dev >= 0 ? gs_hook_device_sm(dev) : 0, *pFunc,
				    &app);
	if (rc < 0) {
		gs_hook_failed("cuKernelGetFunction", rc);
		return;
	}
	*pFunc = app;
}

void gs_track_cuLibraryGetModule(bool ptds, CUmodule *pMod, CUlibrary library)
{
	CUmodule app;
	int dev, rc;
	CUcontext ctx = gs_hook_current_ctx(&dev);

	(void)ptds;
	rc = gs_trk_library_module(library, ctx, dev, dev >= 0 ? gs_hook_device_sm(dev) : 0, *pMod,
				   &app);
	if (rc < 0) {
		gs_hook_failed("cuLibraryGetModule", rc);
		return;
	}
	*pMod = app;
}

/* Library globals are per context: the current one. */
void gs_track_cuLibraryGetGlobal(bool ptds, CUdeviceptr *dptr, size_t *bytes, CUlibrary library,
				 const char *name)
{
	(void)ptds;
	global_found("cuLibraryGetGlobal", GS_KIND_LIBRARY, (uintptr_t)library, true,
		     library_global, dptr, bytes, name);
}

/* __managed__ variables are managed memory: not migratable yet. */
void gs_track_cuLibraryGetManaged(bool ptds, CUdeviceptr *dptr, size_t *bytes,
				  CUlibrary library, const char *name)
{
	int rc;

	(void)ptds;
	(void)name;
	if (!dptr)
		return;
	rc = gs_trk_unsup_add(GS_UNSUP_MANAGED, *dptr, bytes ? *bytes : 0, NULL,
			      (uintptr_t)library, "cuLibraryGetManaged");
	if (rc && rc != -EEXIST)
		gs_hook_failed("cuLibraryGetManaged", rc);
}

/* ---- attributes ------------------------------------------------------------------ */

void gs_track_cuFuncSetAttribute(bool ptds, CUfunction hfunc, CUfunction_attribute attrib,
				 int value)
{
	int rc;

	(void)ptds;
	rc = gs_trk_func_set_attr(hfunc, attrib, value);
	if (rc)
		gs_hook_failed("cuFuncSetAttribute", rc);
}

void gs_track_cuFuncSetCacheConfig(bool ptds, CUfunction hfunc, CUfunc_cache config)
{
	int rc;

	(void)ptds;
	rc = gs_trk_func_set_cache_config(hfunc, config);
	if (rc)
		gs_hook_failed("cuFuncSetCacheConfig", rc);
}

void gs_track_cuFuncSetSharedMemConfig(bool ptds, CUfunction hfunc, CUsharedconfig config)
{
	int rc;

	(void)ptds;
	rc = gs_trk_func_set_shmem_config(hfunc, config);
	if (rc)
		gs_hook_failed("cuFuncSetSharedMemConfig", rc);
}

void gs_track_cuFuncSetBlockShape(bool ptds, CUfunction hfunc, int x, int y, int z)
{
	int rc;

	(void)ptds;
	rc = gs_trk_func_set_block_shape(hfunc, x, y, z);
	if (rc)
		gs_hook_failed("cuFuncSetBlockShape", rc);
}

void gs_track_cuFuncSetSharedSize(bool ptds, CUfunction hfunc, unsigned int bytes)
{
	int rc;

	(void)ptds;
	rc = gs_trk_func_set_shared_size(hfunc, bytes);
	if (rc)
		gs_hook_failed("cuFuncSetSharedSize", rc);
}

void gs_track_cuKernelSetAttribute(bool ptds, CUfunction_attribute attrib, int val,
				   CUkernel kernel, CUdevice dev)
{
	int rc;

	(void)ptds;
	rc = gs_trk_kernel_set_attr(kernel, attrib, val, dev);
	if (rc)
		gs_hook_failed("cuKernelSetAttribute", rc);
}

void gs_track_cuKernelSetCacheConfig(bool ptds, CUkernel kernel, CUfunc_cache config,
				     CUdevice dev)
{
	int rc;

	(void)ptds;
	rc = gs_trk_kernel_set_cache_config(kernel, config, dev);
	if (rc)
		gs_hook_failed("cuKernelSetCacheConfig", rc);
}

/* ---- the JIT linker ----------------------------------------------------------------- */

void gs_track_cuLinkCreate_v2(bool ptds, unsigned int numOptions, CUjit_option *options,
			      void **optionValues, CUlinkState *stateOut)
{
	CUlinkState app;
	int rc;

	(void)ptds;
	rc = gs_trk_link_created(*stateOut, numOptions, options, optionValues, &app);
	if (rc) {
		gs_hook_failed("cuLinkCreate", rc);
		return;
	}
	*stateOut = app;
}

void gs_track_cuLinkAddData_v2(bool ptds, CUlinkState state, CUjitInputType type, void *data,
			       size_t size, const char *name, unsigned int numOptions,
			       CUjit_option *options, void **optionValues)
{
	int rc;

	(void)ptds;
	rc = gs_trk_link_input(state, type, data, size, name, numOptions, options, optionValues);
	if (rc)
		gs_hook_failed("cuLinkAddData", rc);
}

void gs_track_cuLinkAddFile_v2(bool ptds, CUlinkState state, CUjitInputType type,
			       const char *path, unsigned int numOptions, CUjit_option *options,
			       void **optionValues)
{
	int rc;

	(void)ptds;
	rc = gs_trk_link_input(state, type, NULL, 0, path, numOptions, options, optionValues);
	if (rc)
		gs_hook_failed("cuLinkAddFile", rc);
}

/* The output lives in the link state until cuLinkDestroy; a module loaded
 * from it is copied with the size the driver gave here. */
void gs_track_cuLinkComplete(bool ptds, CUlinkState state, void **cubinOut, size_t *sizeOut)
{
	int rc;

	(void)ptds;
	rc = gs_trk_link_completed(state, *cubinOut, *sizeOut);
	if (rc)
		gs_hook_failed("cuLinkComplete", rc);
}

void gs_track_cuLinkDestroy(bool ptds, CUlinkState state)
{
	int rc;

	(void)ptds;
	rc = gs_trk_link_destroyed(state);
	if (rc)
		gs_hook_failed("cuLinkDestroy", rc);
}
