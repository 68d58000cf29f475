/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cuGetExportTable (DESIGN.md §3): the undocumented tables cudart gets from
 * the driver. The shim passes each request through to the real driver and
 * records its UUID. Per UUID it keeps a hook point: a wrapper builder that,
 * once registered, is handed the driver's table and may return one of its
 * own (needed after a migration for the tables that carry CUcontext).
 */
#ifndef GS_EXPORTTABLE_H
#define GS_EXPORTTABLE_H

#include <cuda.h>

/*
 * Build the table to give the application in place of `real_table`, the
 * driver's table for `id`. Return 0 with *app_table set, or -errno to hand
 * out the driver's table unchanged (logged).
 */
typedef int gs_export_table_wrap_fn(const CUuuid *id, const void *real_table,
				    const void **app_table);

/*
 * Set the wrapper builder of table `id` (NULL: pass through again). `name`
 * (may be NULL to keep the known one) is what introspection shows. Applies
 * to later requests. 0, or -ENOSPC when the registry is full.
 */
int gs_export_table_set_hook(const CUuuid *id, const char *name,
			     gs_export_table_wrap_fn *wrap);

#endif
