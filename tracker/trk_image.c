/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private copies of code images (a thaw reloads them on another GPU, long
 * after the application freed its buffers), the JIT and library options
 * worth replaying, and the kernel parameter layouts of the code the driver
 * selects for an architecture.
 */
#include "trk_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Code images nvcc writes stay far below this; the cap keeps a special file
 * or a runaway size from exhausting memory. */
#define IMAGE_FILE_MAX ((size_t)1 << 31)

/* ---- options ---------------------------------------------------------------- */

/* CU_JIT_THREADS_PER_BLOCK is in/out: the hook runs after the call, so the
 * recorded value is the count the compiler targeted, a faithful input for a
 * reload. */
static enum gs_opt_class jit_option_class(int opt)
{
	switch (opt) {
	case CU_JIT_MAX_REGISTERS:
	case CU_JIT_THREADS_PER_BLOCK:
	case CU_JIT_OPTIMIZATION_LEVEL:
	case CU_JIT_TARGET_FROM_CUCONTEXT:
	case CU_JIT_TARGET:
	case CU_JIT_FALLBACK_STRATEGY:
	case CU_JIT_GENERATE_DEBUG_INFO:
	case CU_JIT_LOG_VERBOSE:
	case CU_JIT_GENERATE_LINE_INFO:
	case CU_JIT_CACHE_MODE:
	case CU_JIT_NEW_SM3X_OPT:
	case CU_JIT_FAST_COMPILE:
	case CU_JIT_GLOBAL_SYMBOL_COUNT:
	case CU_JIT_LTO:
	case CU_JIT_FTZ:
	case CU_JIT_PREC_DIV:
	case CU_JIT_PREC_SQRT:
	case CU_JIT_FMA:
	case CU_JIT_REFERENCED_KERNEL_COUNT:
	case CU_JIT_REFERENCED_VARIABLE_COUNT:
	case CU_JIT_OPTIMIZE_UNUSED_DEVICE_VARIABLES:
	case CU_JIT_POSITION_INDEPENDENT_CODE:
	case CU_JIT_MIN_CTA_PER_SM:
	case CU_JIT_MAX_THREADS_PER_BLOCK:
	case CU_JIT_OVERRIDE_DIRECTIVE_VALUES:
	case CU_JIT_SPLIT_COMPILE:
		return GS_OPT_COPIED;
	case CU_JIT_WALL_TIME:
	case CU_JIT_INFO_LOG_BUFFER:
	case CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES:
	case CU_JIT_ERROR_LOG_BUFFER:
	case CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES:
		return GS_OPT_OUTPUT;
	case CU_JIT_GLOBAL_SYMBOL_NAMES:
	case CU_JIT_GLOBAL_SYMBOL_ADDRESSES:
	case CU_JIT_REFERENCED_KERNEL_NAMES:
	case CU_JIT_REFERENCED_VARIABLE_NAMES:
		return GS_OPT_POINTER;
	default:
		return GS_OPT_UNKNOWN;
	}
}

static enum gs_opt_class library_option_class(int opt)
{
	switch (opt) {
	case CU_LIBRARY_BINARY_IS_PRESERVED:
		return GS_OPT_COPIED;
	case CU_LIBRARY_HOST_UNIVERSAL_FUNCTION_AND_DATA_TABLE:
		return GS_OPT_POINTER;
	default:
		return GS_OPT_UNKNOWN;
	}
}

/* opts is an array of CUjit_option or CUlibraryOption (both int-sized
 * enums, read through `int`); vals may be NULL only when no option needs a
 * value. */
static int optlist_copy(struct gs_optlist *l, unsigned n, const int *opts, void *const *vals,
			enum gs_opt_class (*classify)(int))
{
	memset(l, 0, sizeof(*l));
	if (n == 0 || !opts)
		return 0;
	l->opts = calloc(n, sizeof(*l->opts));
	if (!l->opts)
		return -ENOMEM;
	l->n = n;
	for (unsigned i = 0; i < n; i++) {
		struct gs_opt *o = &l->opts[i];

		o->option = opts[i];
		o->cls = classify(opts[i]);
		if (o->cls == GS_OPT_COPIED)
			o->value = vals ? (uint64_t)(uintptr_t)vals[i] : 0;
		else if (o->cls == GS_OPT_POINTER || o->cls == GS_OPT_UNKNOWN)
			l->lost++;
	}
	return 0;
}

_Static_assert(sizeof(CUjit_option) == sizeof(int), "CUjit_option read as int");
_Static_assert(sizeof(CUlibraryOption) == sizeof(int), "CUlibraryOption read as int");

int trk_jit_copy(struct gs_optlist *l, unsigned n, const CUjit_option *opts,
		 void *const *vals)
{
	return optlist_copy(l, n, (const int *)opts, vals, jit_option_class);
}

/* ---- image copies ------------------------------------------------------------ */

int trk_read_file(const char *path, void **data, size_t *size)
{
	struct stat st;
	unsigned char *buf;
	size_t got = 0;
	int fd, rc = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode) || (size_t)st.st_size > IMAGE_FILE_MAX) {
		rc = S_ISREG(st.st_mode) ? -EFBIG : -EINVAL;
		goto out;
	}
	/* One spare byte keeps PTX text NUL-terminated for the parsers. */
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		rc = -ENOMEM;
		goto out;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : -EIO;
			free(buf);
			goto out;
		}
		got += (size_t)n;
	}
	buf[got] = 0;
	*data = buf;
	*size = got;
out:
	close(fd);
	return rc;
}

/* A file's image: classified by its headers. trk_read_file leaves a NUL
 * after the bytes, so PTX text (which files do not NUL-terminate) is kept
 * as the driver takes it from memory, NUL included. */
static void image_classify(struct gs_image_copy *img)
{
	enum gs_image_kind kind;
	const void *inner;
	size_t size;

	if (gs_image_probe(img->data, img->size + 1, &kind, &size, &inner)) {
		img->kind = GS_IMAGE_UNKNOWN;
		return;
	}
	img->kind = kind;
	if (kind == GS_IMAGE_PTX && size == img->size + 1)
		img->size = size;
}

/*
 * Copy an image the driver just accepted from memory. `known` is its size
 * when the caller knows it (a link output); otherwise the image's own
 * headers tell (cuModuleLoadData has no size argument). A fatbin wrapper
 * (what cudart registers) is resolved to the fatbin it points to: that is
 * what a reload needs.
 */
void trk_image_copy_mem(struct gs_image_copy *img, const void *image, size_t known)
{
	enum gs_image_kind kind = GS_IMAGE_UNKNOWN;
	const void *inner = NULL;
	size_t size = 0;
	int rc;

	memset(img, 0, sizeof(*img));
	if (!image) {
		img->error = -EINVAL;
		return;
	}
	rc = gs_image_probe(image, known ? known : SIZE_MAX, &kind, &size, &inner);
	if (!rc && kind == GS_IMAGE_FATBIN_WRAPPER) {
		image = inner;
		kind = GS_IMAGE_FATBIN;
		known = 0;
	}
	if (known) {
		/* The driver's word beats a probe. */
		size = known;
		if (rc)
			kind = GS_IMAGE_UNKNOWN;
	} else if (rc) {
		img->error = rc;
		return;
	}
	img->data = malloc(size + 1);
	if (!img->data) {
		img->error = -ENOMEM;
		return;
	}
	memcpy(img->data, image, size);
	((unsigned char *)img->data)[size] = 0;
	img->size = size;
	img->kind = kind;
}

void trk_image_copy_file(struct gs_image_copy *img, const char *path)
{
	memset(img, 0, sizeof(*img));
	if (!path) {
		img->error = -EINVAL;
		return;
	}
	img->error = trk_read_file(path, &img->data, &img->size);
	if (!img->error)
		image_classify(img);
}

void trk_layouts_free(struct gs_layouts *l)
{
	while (l) {
		struct gs_layouts *next = l->next;

		if (!l->error) {
			gs_code_info_free(&l->info);
			gs_code_free(&l->code);
		}
		free(l);
		l = next;
	}
}

void trk_image_free(struct gs_image_copy *img)
{
	trk_layouts_free(img->layouts);
	free(img->data);
	memset(img, 0, sizeof(*img));
}

/* Select the code for sm and parse it. Never NULL unless out of memory; a
 * failure is recorded in ->error. The image must not change meanwhile. */
struct gs_layouts *trk_layouts_parse(const struct gs_image_copy *img, unsigned sm)
{
	struct gs_layouts *l = calloc(1, sizeof(*l));
	int rc;

	if (!l)
		return NULL;
	l->sm = sm;
	if (!img->data) {
		l->error = img->error ? img->error : -ENODATA;
		return l;
	}
	rc = gs_image_select(img->data, img->size, sm, &l->code);
	if (!rc) {
		rc = gs_code_parse(&l->code, &l->info);
		if (rc)
			gs_code_free(&l->code);
	}
	l->error = rc;
	return l;
}

const struct gs_layouts *trk_layouts_find(const struct gs_image_copy *img, unsigned sm)
{
	for (const struct gs_layouts *l = img->layouts; l; l = l->next)
		if (l->sm == sm)
			return l;
	return NULL;
}

const struct gs_kernel_info *trk_layout_kernel(const struct gs_layouts *l, const char *name)
{
	if (!l || l->error || !name)
		return NULL;
	for (size_t i = 0; i < l->info.nkernels; i++)
		if (l->info.kernels[i].name && !strcmp(l->info.kernels[i].name, name))
			return &l->info.kernels[i];
	return NULL;
}

void trk_optlist_free(struct gs_optlist *l)
{
	free(l->opts);
	memset(l, 0, sizeof(*l));
}

int trk_libopts_copy(struct gs_optlist *l, unsigned n, const CUlibraryOption *opts,
		     void *const *vals)
{
	return optlist_copy(l, n, (const int *)opts, vals, library_option_class);
}
