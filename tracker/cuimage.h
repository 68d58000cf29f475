/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cuimage: parsing of the code images the driver accepts (cubin ELF, fatbin,
 * fatbin wrapper, PTX text). Pure functions on memory: no driver calls.
 * Used by the tracker (to copy images whose size the driver API does not
 * pass, and to learn kernel parameter layouts) and by the simulated driver.
 *
 * Every function treats its input as untrusted: all offsets are bounds-checked
 * against the length given, and a malformed image gives -EINVAL, never a crash.
 * Functions return 0 or -errno.
 */
#ifndef GS_CUIMAGE_H
#define GS_CUIMAGE_H

#include <stddef.h>
#include <stdint.h>

enum gs_image_kind {
	GS_IMAGE_UNKNOWN = 0,
	GS_IMAGE_CUBIN,          /* ELF64, e_machine 190 */
	GS_IMAGE_FATBIN,         /* starts with u32 0xBA55ED50 */
	GS_IMAGE_FATBIN_WRAPPER, /* {int 0x466243B1, int version, const u64 *data, void *} */
	GS_IMAGE_PTX,            /* NUL-terminated text */
};

#define GS_FATBIN_MAGIC 0xBA55ED50u
#define GS_FATBIN_WRAPPER_MAGIC 0x466243B1u

/* Classify an image and compute its size from its own headers (the driver's
 * cuModuleLoadData has no size argument). `max_len` bounds every read; pass
 * SIZE_MAX when the caller knows nothing better. For a fatbin wrapper, *size
 * is the size of the fatbin it points to and *inner that fatbin's address. */
int gs_image_probe(const void *image, size_t max_len, enum gs_image_kind *kind,
		   size_t *size, const void **inner);

/* One entry of a fatbin. */
struct gs_fatbin_entry {
	int kind;          /* 1 PTX, 2 ELF (cubin) */
	unsigned arch;     /* SM number, e.g. 80 for sm_80 / compute_80 */
	unsigned flags;    /* raw entry flags; see GS_FATBIN_FLAG_* */
	const void *payload;
	size_t payload_size;      /* bytes stored (compressed size if compressed) */
	size_t uncompressed_size; /* bytes after decompression */
	unsigned code_major;      /* code version: the PTX ISA version of a PTX */
	unsigned code_minor;      /* entry (9.0 from CUDA 13); 1.8 for ELF entries */
};
#define GS_FATBIN_FLAG_COMPRESSED_LZ4  0x2000u
#define GS_FATBIN_FLAG_COMPRESSED_ZSTD 0x8000u
/* More entry flags and kinds, as nvcc 13.0 writes them. */
#define GS_FATBIN_FLAG_64BIT           0x1u
#define GS_FATBIN_FLAG_DEBUG           0x2u      /* nvcc -G */
#define GS_FATBIN_FLAG_HOST_LINUX      0x10u
#define GS_FATBIN_FLAG_ARCH_SPECIFIC   0x100000u /* sm_90a: only exactly that arch */
#define GS_FATBIN_FLAG_FAMILY          0x200000u /* sm_100f: its family (same major) */
#define GS_FATBIN_KIND_PTX   1
#define GS_FATBIN_KIND_ELF   2
#define GS_FATBIN_KIND_LTOIR 8 /* code=lto_NN; never loaded by cuModuleLoadData */

/* Iterate a fatbin's entries. Returns 0 at end, 1 when *e was filled, -EINVAL
 * on a malformed image. *cursor starts at 0. */
int gs_fatbin_next(const void *fatbin, size_t size, size_t *cursor,
		   struct gs_fatbin_entry *e);

/* The code the driver would load for a device of compute capability sm
 * (major*10+minor): a cubin whose arch has the same major and a minor not
 * above the device's (the best such), else PTX whose arch is not above the
 * device's (the highest), else -ENOENT (CUDA_ERROR_NO_BINARY_FOR_GPU).
 * Works on any image kind; a bare cubin or PTX is checked the same way.
 * Compressed entries are decompressed. On success *code is malloc'd and
 * owned by the caller. */
struct gs_code {
	enum gs_image_kind kind; /* GS_IMAGE_CUBIN or GS_IMAGE_PTX */
	unsigned arch;
	void *data;
	size_t size;
	unsigned flags; /* GS_FATBIN_FLAG_ARCH_SPECIFIC / _FAMILY of the code */
};
int gs_image_select(const void *image, size_t size, unsigned sm, struct gs_code *code);
void gs_code_free(struct gs_code *code);

/* Kernels, parameters and __device__ globals of selected code (cubin via
 * libelf and .nv.info; PTX via its .entry/.param/.global declarations). */
struct gs_kparam {
	uint16_t offset; /* byte offset in the parameter buffer */
	uint16_t size;   /* bytes */
};
struct gs_kernel_info {
	char *name;
	unsigned nparams;
	struct gs_kparam *params; /* ordered by ordinal */
	size_t param_bytes;       /* total size of the parameter buffer */
};
struct gs_global_info {
	char *name;
	size_t size;
	const void *init; /* initial contents inside the code, NULL = zeros */
	size_t init_size;
	unsigned flags;   /* GS_GLOBAL_* */
};
#define GS_GLOBAL_CONSTANT     0x1u /* __constant__ (.nv.constant3, PTX .const) */
#define GS_GLOBAL_MANAGED      0x2u /* __managed__ */
#define GS_GLOBAL_INIT_PARTIAL 0x4u /* PTX initialiser held symbol addresses
				     * (generic(x), x+4): those bytes are zero */
struct gs_code_info {
	struct gs_kernel_info *kernels;
	size_t nkernels;
	struct gs_global_info *globals;
	size_t nglobals;
	void *storage; /* owns PTX initial values (globals' init); internal */
};
int gs_code_parse(const struct gs_code *code, struct gs_code_info *info);
void gs_code_info_free(struct gs_code_info *info);

/* Architectures present in an image (for compatibility checks before a
 * thaw): fills up to max entries, returns the count or -EINVAL. */
int gs_image_archs(const void *image, size_t size, struct gs_fatbin_entry *out, size_t max);

/* --- Added helpers --------------------------------------------------------
 * gs_image_probe sets *inner to the image itself for every kind but the
 * wrapper, so (*inner, *size) always names the bytes to copy; any of its
 * output pointers may be NULL. With max_len SIZE_MAX only the image's own
 * headers bound the reads (a fatbin wrapper's fatbin is always probed so).
 * gs_image_archs returns the number of entries filled (at most max); with
 * out == NULL and max == 0 it returns how many there are. A bare cubin or
 * PTX counts as one entry. Entries of other kinds (LTO IR) are listed but
 * never selected. */

/* Whether the code of one entry (kind, arch, flags as in gs_fatbin_entry)
 * can run on a device of compute capability sm, by the rules of
 * gs_image_select. */
int gs_code_runs_on(int kind, unsigned arch, unsigned flags, unsigned sm);

/* What gs_image_select would answer, without decompressing anything:
 * 0 when some code fits sm, -ENOENT when none does, -EINVAL if malformed. */
int gs_image_supports(const void *image, size_t size, unsigned sm);

/* The SM a bare cubin was built for (from its ELF header). */
int gs_cubin_arch(const void *cubin, size_t size, unsigned *arch);

/* The SM of PTX text from its .target directive (sm_90a sets
 * GS_FATBIN_FLAG_ARCH_SPECIFIC in *flags, sm_100f GS_FATBIN_FLAG_FAMILY).
 * `size` bounds the text; it need not be NUL-terminated within it. */
int gs_ptx_target(const char *ptx, size_t size, unsigned *arch, unsigned *flags);

/* gs_code_parse for a bare cubin or PTX text. On failure *info is empty. */
int gs_cubin_parse(const void *cubin, size_t size, struct gs_code_info *info);
int gs_ptx_parse(const char *ptx, size_t size, struct gs_code_info *info);

#endif
