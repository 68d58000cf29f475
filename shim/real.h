/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Finding and loading the real driver (DESIGN.md §3).
 *
 * $GPUSWAP_REAL_LIBCUDA names it explicitly (and then nothing else is
 * tried). Otherwise the first libcuda.so.1 found in the entries of
 * $LD_LIBRARY_PATH, then in the usual driver directories, that is not this
 * shim: not the same file (device and inode), and not another copy of
 * gpuswap. LD_LIBRARY_PATH comes first because that is the dynamic loader's
 * order, and it is how CUDA's forward-compatibility driver is selected.
 *
 * It is opened RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND so that the driver's
 * references to its own symbols bind inside it, never to the shim's
 * exports of the same names.
 */
#ifndef GS_REAL_H
#define GS_REAL_H

#include <stddef.h>

/* Load the driver and fill gs_real. 0, or -errno after logging one error
 * line that says what was tried and what to do. Called once, from init. */
int gs_real_load(void);

/* dlsym in the real driver (for the entry points cuda.h does not declare);
 * NULL without a driver. */
void *gs_real_dlsym(const char *name);

const char *gs_real_path(void);

/* The directories searched after $LD_LIBRARY_PATH, NULL-terminated. */
extern const char *const gs_real_search_dirs[];

#endif
