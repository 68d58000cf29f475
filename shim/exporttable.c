/* SPDX-License-Identifier: Apache-2.0 */
#define GS_LOG_SUBSYS "shim"
#include "exporttable.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include "introspect_internal.h"
#include "log.h"
#include "shim.h"
#include "translate.h"

/* Enough for the handful of tables cudart uses plus any number of
 * unexpected ones a program might request; beyond it, requests still pass
 * through but are not recorded. */
#define REGISTRY_MAX 64

struct table_entry {
	unsigned char uuid[16];
	const char *name;
	gs_export_table_wrap_fn *wrap;
	bool hooked; /* a wrapper was handed out */
	uint64_t count;
};

/*
 * UUID bytes in memory order, written as the DESIGN.md notes print them.
 * The first two carry CUcontext values: once migrated, requests for them
 * get translating copies (translate.c); before, the driver's own tables.
 */
static struct table_entry registry[REGISTRY_MAX] = {
	{ { 0xC6, 0x93, 0x33, 0x6E, 0x11, 0x21, 0xDF, 0x11, 0xA8, 0xC3, 0x68, 0xF3, 0x55, 0xD8,
	    0x95, 0x93 },
	  "context-local storage", gs_xlat_wrap_export_table, false, 0 },
	{ { 0x6B, 0xD5, 0xFB, 0x6C, 0x5B, 0xF4, 0xE7, 0x4A, 0x89, 0x87, 0xD9, 0x39, 0x12, 0xFD,
	    0x9D, 0xF9 },
	  "cudart interface", gs_xlat_wrap_export_table, false, 0 },
	{ { 0xA0, 0x94, 0x79, 0x8C, 0x2E, 0x74, 0x2E, 0x74, 0x93, 0xF2, 0x08, 0x00, 0x20, 0x0C,
	    0x0A, 0x66 },
	  "tools callback hooks", NULL, false, 0 },
	{ { 0xF8, 0xCF, 0xF9, 0x51, 0x21, 0x46, 0x8B, 0x4E, 0xB9, 0xE2, 0xFB, 0x46, 0x9E, 0x7C,
	    0x0D, 0xD9 },
	  "cudart start-up (undocumented)", NULL, false, 0 },
};
static size_t registry_len = 4;
/* Entries present but never requested are not reported. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;

/* Called with registry_lock held. NULL when full. */
static struct table_entry *entry_get(const unsigned char *uuid)
{
	for (size_t i = 0; i < registry_len; i++)
		if (memcmp(registry[i].uuid, uuid, 16) == 0)
			return &registry[i];
	if (registry_len == REGISTRY_MAX)
		return NULL;
	memcpy(registry[registry_len].uuid, uuid, 16);
	return &registry[registry_len++];
}

int gs_export_table_set_hook(const CUuuid *id, const char *name, gs_export_table_wrap_fn *wrap)
{
	struct table_entry *e;

	pthread_mutex_lock(&registry_lock);
	e = entry_get((const unsigned char *)id->bytes);
	if (e) {
		e->wrap = wrap;
		if (name)
			e->name = name;
	}
	pthread_mutex_unlock(&registry_lock);
	return e ? 0 : -ENOSPC;
}

size_t gs_export_table_stats(struct gs_introspect_export_table *out, size_t cap)
{
	size_t n = 0;

	pthread_mutex_lock(&registry_lock);
	for (size_t i = 0; i < registry_len; i++) {
		if (registry[i].count == 0)
			continue;
		if (out && n < cap) {
			memcpy(out[n].uuid, registry[i].uuid, 16);
			out[n].name = registry[i].name;
			out[n].hooked = registry[i].hooked;
			out[n].count = registry[i].count;
		}
		n++;
	}
	pthread_mutex_unlock(&registry_lock);
	return n;
}

/* Note a request; the builder to apply, if any. */
static gs_export_table_wrap_fn *record_request(const CUuuid *id)
{
	gs_export_table_wrap_fn *wrap = NULL;
	struct table_entry *e;
	bool first = false;

	pthread_mutex_lock(&registry_lock);
	e = entry_get((const unsigned char *)id->bytes);
	if (e) {
		first = e->count++ == 0;
		wrap = e->wrap;
	}
	pthread_mutex_unlock(&registry_lock);
	if (first) {
		const unsigned char *u = (const unsigned char *)id->bytes;

		gs_debug("cuGetExportTable %02X%02X%02X%02X-%02X%02X-%02X%02X-%02X%02X-"
			 "%02X%02X%02X%02X%02X%02X%s", u[0], u[1], u[2], u[3], u[4], u[5], u[6],
			 u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15],
			 e && e->name ? "" : " (unknown table)");
	}
	return wrap;
}

static void mark_hooked(const CUuuid *id)
{
	struct table_entry *e;

	pthread_mutex_lock(&registry_lock);
	e = entry_get((const unsigned char *)id->bytes);
	if (e)
		e->hooked = true;
	pthread_mutex_unlock(&registry_lock);
}

/*
 * Not gated: a look-up touches no GPU state, and cudart makes it from any
 * thread, before cuInit, possibly while a freeze holds the gate.
 */
CUresult gs_custom_cuGetExportTable(bool ptds, const void **ppExportTable,
				    const CUuuid *pExportTableId)
{
	gs_export_table_wrap_fn *wrap = NULL;
	const void *app_table;
	CUresult rc;
	int err;

	(void)ptds;
	if (gs_inside())
		return gs_real.cuGetExportTable
			       ? gs_real.cuGetExportTable(ppExportTable, pExportTableId)
			       : gs_missing(GS_SYM_cuGetExportTable);
	rc = gs_init();
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!gs_real.cuGetExportTable)
		return gs_missing(GS_SYM_cuGetExportTable);
	if (pExportTableId)
		wrap = record_request(pExportTableId);

	gs_inside_begin();
	rc = gs_real.cuGetExportTable(ppExportTable, pExportTableId);
	gs_inside_end();
	if (rc != CUDA_SUCCESS || !wrap || !ppExportTable || !*ppExportTable)
		return rc;

	err = wrap(pExportTableId, *ppExportTable, &app_table);
	if (err) {
		errno = -err;
		gs_pwarn("export-table wrapper failed; handing out the driver's table");
		return rc;
	}
	/* A builder may decline by handing back the driver's table. */
	if (app_table != *ppExportTable) {
		*ppExportTable = app_table;
		mark_hooked(pExportTableId);
	}
	return rc;
}
