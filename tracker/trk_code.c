/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Code objects: modules, libraries, functions, kernels, globals and link
 * states. Their images, options and kernel layouts are copied and parsed
 * by trk_image.c.
 */
#include "trk_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Libraries are context-independent: their layouts are parsed per
 * architecture on first use, outside the tracker lock (a large fatbin
 * takes a while to decompress and parse). A pin keeps the record, and with
 * it the image, alive while that happens; an unload in the meantime only
 * unlinks it, and the last unpin frees it. */
struct lib_box {
	struct gs_library_rec rec;
	unsigned pins;
	bool unlinked;
};

/* ---- records ------------------------------------------------------------------ */

static struct lib_box *lib_box_of(struct gs_library_rec *l)
{
	return (struct lib_box *)l;
}

static void library_free(struct gs_library_rec *l)
{
	free(l->path);
	trk_image_free(&l->image);
	trk_optlist_free(&l->jit);
	trk_optlist_free(&l->lib);
	free(lib_box_of(l));
}

void trk_free_code_rec(struct gs_rec *r)
{
	switch (r->kind) {
	case GS_KIND_MODULE: {
		struct gs_module_rec *m = (struct gs_module_rec *)r;

		free(m->path);
		trk_image_free(&m->image);
		trk_optlist_free(&m->jit);
		break;
	}
	case GS_KIND_LIBRARY: {
		struct lib_box *b = lib_box_of((struct gs_library_rec *)r);

		if (b->pins) {
			b->unlinked = true;
			return;
		}
		library_free(&b->rec);
		return;
	}
	case GS_KIND_FUNCTION:
		free(((struct gs_function_rec *)r)->name);
		break;
	case GS_KIND_KERNEL:
		free(((struct gs_kernel_rec *)r)->name);
		free(((struct gs_kernel_rec *)r)->settings);
		break;
	case GS_KIND_GLOBAL:
		free(((struct gs_global_rec *)r)->name);
		break;
	case GS_KIND_LINK: {
		struct gs_link_rec *k = (struct gs_link_rec *)r;

		trk_optlist_free(&k->opts);
		for (unsigned i = 0; i < k->ninputs; i++) {
			free(k->inputs[i].name);
			free(k->inputs[i].data);
			trk_optlist_free(&k->inputs[i].opts);
		}
		free(k->inputs);
		free(k->output);
		break;
	}
	default:
		break;
	}
	free(r);
}

static void unpin_library(struct lib_box *b)
{
	if (--b->pins == 0 && b->unlinked)
		library_free(&b->rec);
}

/*
 * The layouts of library `l` for sm into *out, parsing them if needed.
 * Called and returns with the lock held, but drops it while parsing.
 * -ENOENT when the library was unloaded meanwhile: `l` is gone, and so may
 * be any record looked up before the call. -ENOMEM leaves `l` valid.
 */
static int library_layouts(struct gs_library_rec *l, unsigned sm, const struct gs_layouts **out)
{
	struct lib_box *b = lib_box_of(l);
	struct gs_layouts *parsed;

	*out = trk_layouts_find(&l->image, sm);
	if (*out)
		return 0;
	b->pins++;
	trk_unlock();
	parsed = trk_layouts_parse(&l->image, sm);
	trk_lock();
	if (b->unlinked) {
		trk_layouts_free(parsed);
		unpin_library(b);
		return -ENOENT;
	}
	unpin_library(b);
	*out = trk_layouts_find(&l->image, sm);
	if (*out) {
		/* Another thread parsed the same architecture meanwhile. */
		trk_layouts_free(parsed);
		return 0;
	}
	if (!parsed)
		return -ENOMEM;
	parsed->next = l->image.layouts;
	l->image.layouts = parsed;
	*out = parsed;
	return 0;
}

/* Copy the image a load hook was given: from memory (size given, else the
 * size of a live cuLinkComplete output, which sets *from_link, else probed)
 * or from `path`. Copying reads the application's buffer or a file and may
 * take a while: called without the lock. */
static void copy_loaded_image(struct gs_image_copy *img, const void *image, size_t size,
			      const char *path, bool *from_link)
{
	if (!image) {
		trk_image_copy_file(img, path);
		return;
	}
	if (!size) {
		trk_lock();
		size = trk_link_output_size_locked(image);
		trk_unlock();
		*from_link = size != 0;
	}
	trk_image_copy_mem(img, image, size);
}

/* ---- modules ------------------------------------------------------------------ */

int gs_trk_module_loaded(const struct gs_module_desc *d, CUmodule real, CUmodule *app)
{
	struct gs_module_rec *m;
	int rc;

	if (!d || !real || d->source == GS_MODSRC_LIBRARY)
		return -EINVAL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->ctx = (uintptr_t)d->ctx;
	m->device = d->device;
	m->source = d->source;
	m->path = trk_strdup(d->path);
	rc = trk_jit_copy(&m->jit, d->nopts, d->opts, d->optvals);
	if (rc)
		goto fail;

	/* Copy and parse before taking the lock: both read the application's
	 * buffer or a file and may take a while. */
	copy_loaded_image(&m->image, d->image, d->image_size, d->path, &m->from_link);
	if (d->sm) {
		m->image.layouts = trk_layouts_parse(&m->image, d->sm);
		m->layouts = m->image.layouts;
		m->sm = d->sm;
	}

	trk_lock();
	trk_drop_stale(GS_KIND_MODULE, (uintptr_t)real);
	rc = trk_link(&m->hdr, GS_KIND_MODULE, (uintptr_t)real, m->image.size, false);
	if (!rc && app)
		*app = (CUmodule)(uintptr_t)m->hdr.app;
	trk_unlock();
	if (!rc)
		return 0;
fail:
	m->hdr.kind = GS_KIND_MODULE;
	trk_free_code_rec(&m->hdr);
	return rc;
}

/* The record of `real` if it is already library lib's module, or NULL.
 * Lock held. */
static struct gs_rec *library_module_find(CUlibrary lib, CUmodule real)
{
	struct gs_rec *old = trk_find_real(GS_KIND_MODULE, (uintptr_t)real);

	return old && ((struct gs_module_rec *)old)->library == (uintptr_t)lib ? old : NULL;
}

int gs_trk_library_module(CUlibrary lib, CUcontext ctx, int device, unsigned sm,
			  CUmodule real, CUmodule *app)
{
	struct gs_library_rec *l;
	struct gs_module_rec *m;
	struct gs_rec *old;
	int rc;

	if (!lib || !real)
		return -EINVAL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->ctx = (uintptr_t)ctx;
	m->device = device;
	m->source = GS_MODSRC_LIBRARY;
	m->library = (uintptr_t)lib;
	m->image.error = -ENODATA; /* the library holds the image */

	trk_lock();
	old = library_module_find(lib, real);
	if (old)
		goto known;
	l = (struct gs_library_rec *)trk_find(GS_KIND_LIBRARY, (uintptr_t)lib);
	if (!l) {
		trk_unlock();
		free(m);
		return -ENOENT;
	}
	if (sm) {
		rc = library_layouts(l, sm, &m->layouts);
		if (rc == -ENOENT) {
			trk_unlock();
			free(m);
			return rc;
		}
		m->sm = sm;
		/* Another thread may have recorded this module meanwhile. */
		old = library_module_find(lib, real);
		if (old)
			goto known;
	}
	trk_drop_stale(GS_KIND_MODULE, (uintptr_t)real);
	rc = trk_link(&m->hdr, GS_KIND_MODULE, (uintptr_t)real, 0, false);
	if (!rc && app)
		*app = (CUmodule)(uintptr_t)m->hdr.app;
	trk_unlock();
	if (rc)
		free(m);
	return rc;
known:
	/* The library's module in this context, asked for again. */
	if (app)
		*app = (CUmodule)(uintptr_t)old->app;
	trk_unlock();
	free(m);
	return 1;
}

int gs_trk_module_unloaded(CUmodule mod)
{
	return trk_drop_by_app(GS_KIND_MODULE, (uintptr_t)mod);
}

/* ---- libraries ---------------------------------------------------------------- */

int gs_trk_library_loaded(const struct gs_library_desc *d, CUlibrary real, CUlibrary *app)
{
	struct lib_box *b;
	struct gs_library_rec *l;
	int rc;

	if (!d || !real)
		return -EINVAL;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	l = &b->rec;
	l->hdr.kind = GS_KIND_LIBRARY;
	l->source = d->source;
	l->path = trk_strdup(d->path);
	rc = trk_jit_copy(&l->jit, d->njit, d->jit, d->jitvals);
	if (!rc)
		rc = trk_libopts_copy(&l->lib, d->nlib, d->lib, d->libvals);
	if (rc)
		goto fail;
	copy_loaded_image(&l->image, d->image, d->image_size, d->path, &l->from_link);
	if (d->sm)
		l->image.layouts = trk_layouts_parse(&l->image, d->sm);

	trk_lock();
	trk_drop_stale(GS_KIND_LIBRARY, (uintptr_t)real);
	rc = trk_link(&l->hdr, GS_KIND_LIBRARY, (uintptr_t)real, l->image.size, false);
	if (!rc && app)
		*app = (CUlibrary)(uintptr_t)l->hdr.app;
	trk_unlock();
	if (!rc)
		return 0;
fail:
	library_free(l);
	return rc;
}

int gs_trk_library_unloaded(CUlibrary lib)
{
	return trk_drop_by_app(GS_KIND_LIBRARY, (uintptr_t)lib);
}

/* ---- functions and kernels ------------------------------------------------------ */

static int function_new(uint64_t real, uint64_t module, uint64_t kernel, uint64_t ctx,
			const char *name, const struct gs_kernel_info *layout, CUfunction *app)
{
	struct gs_function_rec *f = calloc(1, sizeof(*f));
	int rc;

	if (!f)
		return -ENOMEM;
	f->module = module;
	f->kernel = kernel;
	f->ctx = ctx;
	f->name = trk_strdup(name);
	f->layout = layout;
	if (name && !f->name) {
		free(f);
		return -ENOMEM;
	}
	rc = trk_link(&f->hdr, GS_KIND_FUNCTION, real, 0, false);
	if (rc) {
		free(f->name);
		free(f);
		return rc;
	}
	if (app)
		*app = (CUfunction)(uintptr_t)f->hdr.app;
	return 0;
}

/* Whether the function handle `real` is known already (a repeated
 * look-up); its app handle into *app if so. Lock held. */
static bool function_known(CUfunction real, CUfunction *app)
{
	struct gs_rec *old = trk_find_real(GS_KIND_FUNCTION, (uintptr_t)real);

	if (old && app)
		*app = (CUfunction)(uintptr_t)old->app;
	return old != NULL;
}

int gs_trk_function_found(CUmodule mod, const char *name, CUfunction real, CUfunction *app)
{
	struct gs_module_rec *m;
	int rc;

	if (!mod || !real)
		return -EINVAL;
	trk_lock();
	if (function_known(real, app)) {
		trk_unlock();
		return 1;
	}
	m = (struct gs_module_rec *)trk_find(GS_KIND_MODULE, (uintptr_t)mod);
	if (!m) {
		trk_unlock();
		return -ENOENT;
	}
	rc = function_new((uintptr_t)real, (uintptr_t)mod, 0, m->ctx, name,
			  trk_layout_kernel(m->layouts, name), app);
	trk_unlock();
	return rc;
}

int gs_trk_kernel_found(CUlibrary lib, const char *name, CUkernel real, CUkernel *app)
{
	struct gs_kernel_rec *k;
	struct gs_rec *old;
	int rc;

	if (!lib || !real || !name)
		return -EINVAL;
	k = calloc(1, sizeof(*k));
	if (!k)
		return -ENOMEM;
	k->library = (uintptr_t)lib;
	k->name = strdup(name);
	if (!k->name) {
		free(k);
		return -ENOMEM;
	}
	trk_lock();
	old = trk_find_real(GS_KIND_KERNEL, (uintptr_t)real);
	if (old) {
		rc = 1;
		if (app)
			*app = (CUkernel)(uintptr_t)old->app;
	} else if (!trk_find(GS_KIND_LIBRARY, (uintptr_t)lib)) {
		rc = -ENOENT;
	} else {
		rc = trk_link(&k->hdr, GS_KIND_KERNEL, (uintptr_t)real, 0, false);
		if (!rc && app)
			*app = (CUkernel)(uintptr_t)k->hdr.app;
	}
	trk_unlock();
	if (rc) {
		free(k->name);
		free(k);
	}
	return rc;
}

/* The library record of a kernel and the kernel, lock held; NULL if either
 * is unknown. */
static struct gs_library_rec *kernel_library(uint64_t kernel, struct gs_kernel_rec **kout)
{
	struct gs_kernel_rec *k = (struct gs_kernel_rec *)trk_find(GS_KIND_KERNEL, kernel);

	*kout = k;
	return k ? (struct gs_library_rec *)trk_find(GS_KIND_LIBRARY, k->library) : NULL;
}

int gs_trk_kernel_function(CUkernel kernel, CUcontext ctx, unsigned sm, CUfunction real,
			   CUfunction *app)
{
	const struct gs_layouts *lay = NULL;
	struct gs_library_rec *l;
	struct gs_kernel_rec *k;
	int rc;

	if (!kernel || !real)
		return -EINVAL;
	trk_lock();
	if (function_known(real, app)) {
		trk_unlock();
		return 1;
	}
	l = kernel_library((uintptr_t)kernel, &k);
	if (!l) {
		trk_unlock();
		return -ENOENT;
	}
	if (sm) {
		rc = library_layouts(l, sm, &lay);
		if (rc == -ENOENT) {
			trk_unlock();
			return rc;
		}
		/* The lock was dropped: the function may have been recorded
		 * by another thread, or the kernel gone with its library. */
		if (function_known(real, app)) {
			trk_unlock();
			return 1;
		}
		l = kernel_library((uintptr_t)kernel, &k);
		if (!l) {
			trk_unlock();
			return -ENOENT;
		}
	}
	rc = function_new((uintptr_t)real, 0, (uintptr_t)kernel, (uintptr_t)ctx, k->name,
			  trk_layout_kernel(lay, k->name), app);
	trk_unlock();
	return rc;
}

/* Record or replace a kernel setting, moved to the end (see
 * GS_KERNEL_CACHE_CONFIG). Lock held. */
static int kernel_setting(struct gs_kernel_rec *k, int device, int attr, int value)
{
	struct gs_kernel_setting *s;
	unsigned i;

	for (i = 0; i < k->nsettings; i++)
		if (k->settings[i].device == device && k->settings[i].attr == attr)
			break;
	if (i < k->nsettings) {
		memmove(&k->settings[i], &k->settings[i + 1],
			(k->nsettings - i - 1) * sizeof(*k->settings));
		k->nsettings--;
	} else {
		s = realloc(k->settings, (k->nsettings + 1) * sizeof(*s));
		if (!s)
			return -ENOMEM;
		k->settings = s;
	}
	k->settings[k->nsettings++] = (struct gs_kernel_setting){ device, attr, value };
	return 0;
}

/* A function setting: on the function record, or on the kernel when the
 * handle is a CUkernel cast to CUfunction (every device). */
enum func_setting {
	FS_ATTR,
	FS_CACHE,
	FS_SHMEM,
	FS_BLOCK_SHAPE,
	FS_SHARED_SIZE,
};

static int func_setting(CUfunction fn, enum func_setting what, int attr, const int *v)
{
	struct gs_function_rec *f;
	struct gs_kernel_rec *k;
	int rc = 0;

	trk_lock();
	f = (struct gs_function_rec *)trk_find(GS_KIND_FUNCTION, (uintptr_t)fn);
	if (f) {
		switch (what) {
		case FS_ATTR:
			f->attrs[attr] = v[0];
			f->attrs_set |= 1u << attr;
			break;
		case FS_CACHE:
			f->cache_config = (CUfunc_cache)v[0];
			f->cache_config_set = true;
			break;
		case FS_SHMEM:
			f->shmem_config = (CUsharedconfig)v[0];
			f->shmem_config_set = true;
			break;
		case FS_BLOCK_SHAPE:
			memcpy(f->block_shape, v, sizeof(f->block_shape));
			f->block_shape_set = true;
			break;
		case FS_SHARED_SIZE:
			f->shared_size = (unsigned)v[0];
			f->shared_size_set = true;
			break;
		}
		goto out;
	}
	k = (struct gs_kernel_rec *)trk_find(GS_KIND_KERNEL, (uintptr_t)fn);
	if (!k) {
		rc = -ENOENT;
		goto out;
	}
	switch (what) {
	case FS_ATTR:
		rc = kernel_setting(k, -1, attr, v[0]);
		break;
	case FS_CACHE:
		rc = kernel_setting(k, -1, GS_KERNEL_CACHE_CONFIG, v[0]);
		break;
	case FS_SHMEM:
		rc = kernel_setting(k, -1, GS_KERNEL_SHMEM_CONFIG, v[0]);
		break;
	default:
		/* The legacy launch API takes no kernels. */
		rc = -ENOENT;
		break;
	}
out:
	trk_unlock();
	return rc;
}

int gs_trk_func_set_attr(CUfunction f, CUfunction_attribute attr, int value)
{
	if ((unsigned)attr >= GS_FUNC_ATTRS)
		return -EINVAL;
	return func_setting(f, FS_ATTR, (int)attr, &value);
}

int gs_trk_func_set_cache_config(CUfunction f, CUfunc_cache config)
{
	int v = (int)config;

	return func_setting(f, FS_CACHE, 0, &v);
}

int gs_trk_func_set_shmem_config(CUfunction f, CUsharedconfig config)
{
	int v = (int)config;

	return func_setting(f, FS_SHMEM, 0, &v);
}

int gs_trk_func_set_block_shape(CUfunction f, int x, int y, int z)
{
	int v[3] = { x, y, z };

	return func_setting(f, FS_BLOCK_SHAPE, 0, v);
}

int gs_trk_func_set_shared_size(CUfunction f, unsigned bytes)
{
	int v = (int)bytes;

	return func_setting(f, FS_SHARED_SIZE, 0, &v);
}

static int kernel_set(CUkernel kernel, int attr, int value, int device)
{
	struct gs_kernel_rec *k;
	int rc;

	trk_lock();
	k = (struct gs_kernel_rec *)trk_find(GS_KIND_KERNEL, (uintptr_t)kernel);
	rc = k ? kernel_setting(k, device < 0 ? -1 : device, attr, value) : -ENOENT;
	trk_unlock();
	return rc;
}

int gs_trk_kernel_set_attr(CUkernel k, CUfunction_attribute attr, int value, int device)
{
	if ((unsigned)attr >= GS_FUNC_ATTRS)
		return -EINVAL;
	return kernel_set(k, (int)attr, value, device);
}

int gs_trk_kernel_set_cache_config(CUkernel k, CUfunc_cache config, int device)
{
	return kernel_set(k, GS_KERNEL_CACHE_CONFIG, (int)config, device);
}

/* ---- parameter layouts ------------------------------------------------------------ */

static int copy_params(const struct gs_kernel_info *ki, struct gs_kparam *out, unsigned max,
		       size_t *param_bytes)
{
	unsigned n = ki->nparams < max ? ki->nparams : max;

	if (out && n)
		memcpy(out, ki->params, n * sizeof(*out));
	if (param_bytes)
		*param_bytes = ki->param_bytes;
	return (int)ki->nparams;
}

int gs_trk_function_params(CUfunction fn, struct gs_kparam *out, unsigned max,
			   size_t *param_bytes)
{
	const struct gs_function_rec *f;
	int rc;

	trk_lock();
	f = (const struct gs_function_rec *)trk_find(GS_KIND_FUNCTION, (uintptr_t)fn);
	if (!f) {
		rc = -ENOENT;
	} else if (f->layout) {
		rc = copy_params(f->layout, out, max, param_bytes);
	} else {
		/* Say why there is none: the owner's parse error if any. */
		const struct gs_module_rec *m = (const struct gs_module_rec *)trk_find(
			GS_KIND_MODULE, f->module);

		rc = m && m->layouts && m->layouts->error ? m->layouts->error : -ENOENT;
	}
	trk_unlock();
	return rc;
}

int gs_trk_kernel_params(CUkernel kernel, unsigned sm, struct gs_kparam *out, unsigned max,
			 size_t *param_bytes)
{
	const struct gs_layouts *lay;
	const struct gs_kernel_info *ki;
	struct gs_library_rec *l;
	struct gs_kernel_rec *k;
	int rc;

	if (!sm)
		return -EINVAL;
	trk_lock();
	l = kernel_library((uintptr_t)kernel, &k);
	if (!l) {
		rc = -ENOENT;
		goto out;
	}
	rc = library_layouts(l, sm, &lay);
	if (rc)
		goto out;
	l = kernel_library((uintptr_t)kernel, &k);
	if (!l) {
		rc = -ENOENT;
		goto out;
	}
	ki = trk_layout_kernel(lay, k->name);
	rc = ki ? copy_params(ki, out, max, param_bytes) : lay->error ? lay->error : -ENOENT;
out:
	trk_unlock();
	return rc;
}

/* ---- globals ------------------------------------------------------------------------ */

int gs_trk_global_found(enum gs_kind owner_kind, uint64_t owner, CUcontext ctx,
			const char *name, CUdeviceptr addr, size_t size)
{
	struct gs_global_rec *g, *old;
	int rc;

	if ((owner_kind != GS_KIND_MODULE && owner_kind != GS_KIND_LIBRARY) || !owner ||
	    !name || !addr)
		return -EINVAL;
	g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	g->owner_kind = owner_kind;
	g->owner = owner;
	g->ctx = (uintptr_t)ctx;
	g->size = size;
	g->name = strdup(name);
	if (!g->name) {
		free(g);
		return -ENOMEM;
	}
	trk_lock();
	if (!ctx && owner_kind == GS_KIND_MODULE) {
		const struct gs_module_rec *m =
			(const struct gs_module_rec *)trk_find(GS_KIND_MODULE, owner);

		g->ctx = m ? m->ctx : 0;
	}
	old = (struct gs_global_rec *)trk_find(GS_KIND_GLOBAL, addr);
	if (old && old->owner == owner && !strcmp(old->name, name)) {
		rc = 1;
		goto out;
	}
	if (old)
		trk_drop(&old->hdr); /* its owner went by a path the hooks missed */
	rc = trk_link(&g->hdr, GS_KIND_GLOBAL, addr, size, false);
out:
	trk_unlock();
	if (rc) {
		free(g->name);
		free(g);
	}
	return rc;
}

/* ---- cascades and checks -------------------------------------------------------------- */

/* A global's owner is a module or a library, whose handles may coincide:
 * the owner's kind has to match too. Lock held. */
static void drop_globals_of(enum gs_kind owner_kind, uint64_t owner)
{
	struct gs_rec *r, *next;

	for (r = gs_trk.kinds[GS_KIND_GLOBAL].head; r; r = next) {
		const struct gs_global_rec *g = (const struct gs_global_rec *)r;

		next = r->next;
		if (g->owner_kind == owner_kind && g->owner == owner)
			trk_drop(r);
	}
}

void trk_code_drop_dependents(struct gs_rec *r)
{
	switch (r->kind) {
	case GS_KIND_MODULE:
		trk_drop_where(GS_KIND_FUNCTION, TRK_PARENT_FIELD(struct gs_function_rec, module),
			       r->app);
		drop_globals_of(GS_KIND_MODULE, r->app);
		break;
	case GS_KIND_KERNEL:
		trk_drop_where(GS_KIND_FUNCTION, TRK_PARENT_FIELD(struct gs_function_rec, kernel),
			       r->app);
		break;
	case GS_KIND_LIBRARY:
		trk_drop_where(GS_KIND_KERNEL, TRK_PARENT_FIELD(struct gs_kernel_rec, library),
			       r->app);
		trk_drop_where(GS_KIND_MODULE, TRK_PARENT_FIELD(struct gs_module_rec, library),
			       r->app);
		drop_globals_of(GS_KIND_LIBRARY, r->app);
		break;
	default:
		break;
	}
}

void trk_code_drop_ctx(uint64_t ctx)
{
	trk_drop_where(GS_KIND_MODULE, TRK_PARENT_FIELD(struct gs_module_rec, ctx), ctx);
	trk_drop_where(GS_KIND_FUNCTION, TRK_PARENT_FIELD(struct gs_function_rec, ctx), ctx);
	trk_drop_where(GS_KIND_GLOBAL, TRK_PARENT_FIELD(struct gs_global_rec, ctx), ctx);
}

int trk_code_check(gs_trk_problem_fn *fn, void *arg, bool *stop)
{
	const struct gs_rec *r;
	int n = 0;

	for (r = gs_trk.kinds[GS_KIND_MODULE].head; r && !*stop; r = r->next) {
		const struct gs_module_rec *m = (const struct gs_module_rec *)r;

		if (m->source != GS_MODSRC_LIBRARY && !m->image.data)
			n += trk_report(fn, arg, r, "module image could not be copied", stop);
		if (m->jit.lost)
			n += trk_report(fn, arg, r, "module JIT options with pointer values", stop);
	}
	for (r = gs_trk.kinds[GS_KIND_LIBRARY].head; r && !*stop; r = r->next) {
		const struct gs_library_rec *l = (const struct gs_library_rec *)r;

		if (!l->image.data)
			n += trk_report(fn, arg, r, "library image could not be copied", stop);
		if (l->jit.lost || l->lib.lost)
			n += trk_report(fn, arg, r, "library options with pointer values", stop);
	}
	return n;
}
