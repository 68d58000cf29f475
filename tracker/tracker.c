/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The tracker's core: state, record lists and indexes, contexts, streams,
 * events, unsupported objects, statistics, iteration and the migration
 * check. Code objects live in trk_code.c, memory in trk_mem.c.
 */
#include "trk_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct trk_state gs_trk = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
};

static pthread_once_t trk_once = PTHREAD_ONCE_INIT;
static int trk_init_rc;

static const char *const kind_names[GS_KIND_COUNT] = {
	[GS_KIND_CTX] = "ctx",
	[GS_KIND_STREAM] = "stream",
	[GS_KIND_EVENT] = "event",
	[GS_KIND_MODULE] = "module",
	[GS_KIND_LIBRARY] = "library",
	[GS_KIND_FUNCTION] = "function",
	[GS_KIND_KERNEL] = "kernel",
	[GS_KIND_GLOBAL] = "global",
	[GS_KIND_LINK] = "link",
	[GS_KIND_ALLOC] = "alloc",
	[GS_KIND_HOST] = "host",
	[GS_KIND_RESERVATION] = "reservation",
	[GS_KIND_PHYS] = "phys",
	[GS_KIND_MAPPING] = "mapping",
	[GS_KIND_UNSUPPORTED] = "unsupported",
};

/* Short names (introspection keys) and what freeze --check says. */
static const char *const unsup_names[GS_UNSUP_COUNT][2] = {
	[GS_UNSUP_MEMPOOL] = { "mempool", "memory pool" },
	[GS_UNSUP_ASYNC_ALLOC] = { "async_alloc", "stream-ordered allocation" },
	[GS_UNSUP_ARRAY] = { "array", "CUDA array" },
	[GS_UNSUP_MIPMAPPED_ARRAY] = { "mipmapped_array", "mipmapped CUDA array" },
	[GS_UNSUP_MANAGED] = { "managed", "managed memory" },
	[GS_UNSUP_IPC_MEM_EXPORT] = { "ipc_mem_export", "memory exported over IPC" },
	[GS_UNSUP_IPC_MEM_IMPORT] = { "ipc_mem_import", "memory imported over IPC" },
	[GS_UNSUP_IPC_EVENT_EXPORT] = { "ipc_event_export", "event exported over IPC" },
	[GS_UNSUP_IPC_EVENT_IMPORT] = { "ipc_event_import", "event imported over IPC" },
	[GS_UNSUP_SHAREABLE_EXPORT] = { "shareable_export", "allocation handle exported" },
	[GS_UNSUP_SHAREABLE_IMPORT] = { "shareable_import", "allocation handle imported" },
	[GS_UNSUP_MULTICAST] = { "multicast", "multicast object" },
	[GS_UNSUP_GRAPH] = { "graph", "CUDA graph" },
	[GS_UNSUP_GRAPH_EXEC] = { "graph_exec", "instantiated CUDA graph" },
	[GS_UNSUP_STREAM_CAPTURE] = { "stream_capture", "stream capture in progress" },
	[GS_UNSUP_GREEN_CTX] = { "green_ctx", "green context" },
};


_Static_assert(CU_FUNC_ATTRIBUTE_MAX <= GS_FUNC_ATTRS, "GS_FUNC_ATTRS too small");
_Static_assert(CU_LIMIT_MAX <= 32, "limits_set holds one bit per CUlimit");

const char *gs_kind_name(enum gs_kind kind)
{
	return (unsigned)kind < GS_KIND_COUNT ? kind_names[kind] : "?";
}

const char *gs_unsup_name(enum gs_unsup_kind what)
{
	return (unsigned)what < GS_UNSUP_COUNT ? unsup_names[what][0] : "?";
}

const char *gs_unsup_describe(enum gs_unsup_kind what)
{
	return (unsigned)what < GS_UNSUP_COUNT ? unsup_names[what][1] : "?";
}

bool trk_has_handles(enum gs_kind kind)
{
	switch (kind) {
	case GS_KIND_CTX:
	case GS_KIND_STREAM:
	case GS_KIND_EVENT:
	case GS_KIND_MODULE:
	case GS_KIND_LIBRARY:
	case GS_KIND_FUNCTION:
	case GS_KIND_KERNEL:
	case GS_KIND_LINK:
	case GS_KIND_PHYS:
		return true;
	default:
		return false;
	}
}

/* ---- state ------------------------------------------------------------------ */

static int state_setup(void)
{
	int rc;

	for (int k = 0; k < GS_KIND_COUNT; k++) {
		rc = gs_u64tab_init(&gs_trk.kinds[k].index, 0);
		if (rc)
			return rc;
		if (trk_has_handles(k)) {
			rc = gs_hmap_init(&gs_trk.maps[k], kind_names[k]);
			if (rc)
				return rc;
		}
	}
	for (int w = 0; w < GS_UNSUP_COUNT; w++) {
		rc = gs_u64tab_init(&gs_trk.unsup_index[w], 0);
		if (rc)
			return rc;
	}
	/* Identity for every ordinal until the shim narrows it to the device
	 * count at start-up. */
	return gs_devmap_init(&gs_trk.devmap, GS_MAX_DEVICES);
}

static void trk_init_once(void)
{
	trk_init_rc = state_setup();
}

int gs_trk_init(void)
{
	pthread_once(&trk_once, trk_init_once);
	return trk_init_rc;
}

void trk_lock(void)
{
	gs_trk_init();
	pthread_mutex_lock(&gs_trk.lock);
}

void trk_unlock(void)
{
	pthread_mutex_unlock(&gs_trk.lock);
}

char *trk_strdup(const char *s)
{
	return s ? strdup(s) : NULL;
}

/* ---- linking records --------------------------------------------------------- */

static struct gs_u64tab *index_of(const struct gs_rec *r)
{
	if (r->kind == GS_KIND_UNSUPPORTED)
		return &gs_trk.unsup_index[((const struct gs_unsup_rec *)r)->what];
	return &gs_trk.kinds[r->kind].index;
}

/* Insert into a tracker-private index (no concurrent readers: the old table
 * can go at once). */
static int index_put(struct gs_u64tab *t, uint64_t key, uint64_t val)
{
	if (!gs_u64tab_has_room(t)) {
		struct gs_u64tab bigger;
		int rc = gs_u64tab_rehash(t, &bigger);

		if (rc)
			return rc;
		gs_u64tab_free(t);
		*t = bigger;
	}
	gs_u64tab_put(t, key, val);
	return 0;
}

struct gs_rec *trk_find(enum gs_kind kind, uint64_t app)
{
	uint64_t v;

	if ((unsigned)kind >= GS_KIND_COUNT || kind == GS_KIND_UNSUPPORTED)
		return NULL;
	return gs_u64tab_get(&gs_trk.kinds[kind].index, app, &v) ? (struct gs_rec *)(uintptr_t)v
								  : NULL;
}

struct gs_rec *trk_find_real(enum gs_kind kind, uint64_t real)
{
	uint64_t app;

	if (!trk_has_handles(kind))
		return trk_find(kind, real);
	if (gs_hmap_to_app(&gs_trk.maps[kind], real, &app))
		return NULL;
	return trk_find(kind, app);
}

static int link_common(struct gs_rec *r, enum gs_kind kind, uint64_t app, uint64_t real,
		       uint64_t bytes, bool shim)
{
	struct trk_kind *k = &gs_trk.kinds[kind];
	int rc;

	r->kind = kind;
	r->app = app;
	r->real = real;
	rc = index_put(index_of(r), app, (uint64_t)(uintptr_t)r);
	if (rc)
		return rc;
	r->serial = ++gs_trk.serial;
	r->prev = k->tail;
	r->next = NULL;
	if (k->tail)
		k->tail->next = r;
	else
		k->head = r;
	k->tail = r;
	k->count++;
	r->acct_bytes = 0;
	r->shim_owned = shim;
	if (shim)
		k->shim_count++;
	trk_account(r, bytes);
	return 0;
}

int trk_link(struct gs_rec *r, enum gs_kind kind, uint64_t real, uint64_t bytes, bool shim)
{
	uint64_t app = real;
	int rc;

	if (real == 0)
		return -EINVAL;
	if (trk_has_handles(kind)) {
		rc = gs_hmap_adopt(&gs_trk.maps[kind], real, &app);
		if (rc == 1)
			return -EEXIST;
		if (rc)
			return rc;
	} else if (kind != GS_KIND_UNSUPPORTED && trk_find(kind, app)) {
		return -EEXIST;
	}
	r->kind = kind;
	rc = link_common(r, kind, app, real, bytes, shim);
	if (rc && trk_has_handles(kind))
		gs_hmap_remove(&gs_trk.maps[kind], app);
	return rc;
}

void trk_account(struct gs_rec *r, uint64_t bytes)
{
	struct trk_kind *k = &gs_trk.kinds[r->kind];

	k->bytes = k->bytes - r->acct_bytes + bytes;
	if (r->shim_owned)
		k->shim_bytes = k->shim_bytes - r->acct_bytes + bytes;
	if (r->kind == GS_KIND_UNSUPPORTED) {
		enum gs_unsup_kind w = ((struct gs_unsup_rec *)r)->what;

		gs_trk.unsup_bytes[w] = gs_trk.unsup_bytes[w] - r->acct_bytes + bytes;
	}
	r->acct_bytes = bytes;
}

int trk_rekey(struct gs_rec *r, uint64_t new_app)
{
	struct gs_u64tab *t = index_of(r);
	int rc;

	if (new_app == r->app)
		return 0;
	rc = index_put(t, new_app, (uint64_t)(uintptr_t)r);
	if (rc)
		return rc;
	gs_u64tab_del(t, r->app, NULL);
	r->app = r->real = new_app;
	return 0;
}

static void unlink_rec(struct gs_rec *r)
{
	struct trk_kind *k = &gs_trk.kinds[r->kind];

	trk_account(r, 0);
	gs_u64tab_del(index_of(r), r->app, NULL);
	if (trk_has_handles(r->kind))
		gs_hmap_remove(&gs_trk.maps[r->kind], r->app);
	if (r->prev)
		r->prev->next = r->next;
	else
		k->head = r->next;
	if (r->next)
		r->next->prev = r->prev;
	else
		k->tail = r->prev;
	k->count--;
	if (r->shim_owned)
		k->shim_count--;
	if (r->kind == GS_KIND_UNSUPPORTED)
		gs_trk.unsup_count[((struct gs_unsup_rec *)r)->what]--;
}

/* Records that other records hang off take those with them. */
static void drop_dependents(struct gs_rec *r)
{
	switch (r->kind) {
	case GS_KIND_STREAM:
		trk_unsup_drop_key(GS_UNSUP_STREAM_CAPTURE, r->app);
		break;
	case GS_KIND_EVENT:
		trk_unsup_drop_key(GS_UNSUP_IPC_EVENT_EXPORT, r->app);
		trk_unsup_drop_key(GS_UNSUP_IPC_EVENT_IMPORT, r->app);
		break;
	case GS_KIND_ALLOC:
		trk_unsup_drop_key(GS_UNSUP_IPC_MEM_EXPORT, r->app);
		break;
	case GS_KIND_MODULE:
	case GS_KIND_KERNEL:
		trk_code_drop_dependents(r);
		break;
	case GS_KIND_LIBRARY:
		trk_code_drop_dependents(r);
		trk_unsup_drop_parent(r->app);
		break;
	case GS_KIND_PHYS:
		trk_unsup_drop_key(GS_UNSUP_SHAREABLE_EXPORT, r->app);
		trk_unsup_drop_key(GS_UNSUP_SHAREABLE_IMPORT, r->app);
		break;
	default:
		break;
	}
}

void trk_drop(struct gs_rec *r)
{
	drop_dependents(r);
	unlink_rec(r);
	switch (r->kind) {
	case GS_KIND_CTX:
		free(((struct gs_ctx_rec *)r)->affinity);
		free(r);
		break;
	case GS_KIND_MODULE:
	case GS_KIND_LIBRARY:
	case GS_KIND_FUNCTION:
	case GS_KIND_KERNEL:
	case GS_KIND_GLOBAL:
	case GS_KIND_LINK:
		trk_free_code_rec(r);
		break;
	case GS_KIND_ALLOC:
	case GS_KIND_HOST:
	case GS_KIND_RESERVATION:
	case GS_KIND_PHYS:
	case GS_KIND_MAPPING:
		trk_free_mem_rec(r);
		break;
	default:
		free(r);
		break;
	}
}

void gs_trk_clear(void)
{
	trk_lock();
	/* Dependents first, so cascades find nothing left to do. */
	static const enum gs_kind order[] = {
		GS_KIND_UNSUPPORTED, GS_KIND_GLOBAL, GS_KIND_FUNCTION, GS_KIND_KERNEL,
		GS_KIND_MODULE, GS_KIND_LIBRARY, GS_KIND_LINK, GS_KIND_STREAM,
		GS_KIND_EVENT, GS_KIND_MAPPING, GS_KIND_PHYS, GS_KIND_RESERVATION,
		GS_KIND_ALLOC, GS_KIND_HOST, GS_KIND_CTX,
	};
	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++)
		while (gs_trk.kinds[order[i]].head)
			trk_drop(gs_trk.kinds[order[i]].head);
	trk_mem_clear();
	memset(gs_trk.dev, 0, sizeof(gs_trk.dev));
	memset(gs_trk.primary, 0, sizeof(gs_trk.primary));
	memset(gs_trk.device_bytes, 0, sizeof(gs_trk.device_bytes));
	gs_devmap_reset(&gs_trk.devmap, GS_MAX_DEVICES);
	for (int k = 0; k < GS_KIND_COUNT; k++)
		if (trk_has_handles(k))
			gs_hmap_reclaim(&gs_trk.maps[k]);
	trk_unlock();
}

/* ---- maps and devices ---------------------------------------------------------- */

struct gs_handlemap *gs_trk_handlemap(enum gs_kind kind)
{
	if ((unsigned)kind >= GS_KIND_COUNT || !trk_has_handles(kind))
		return NULL;
	gs_trk_init();
	return &gs_trk.maps[kind];
}

struct gs_devmap *gs_trk_devmap(void)
{
	gs_trk_init();
	return &gs_trk.devmap;
}

int gs_trk_rebind(enum gs_kind kind, uint64_t app, uint64_t real)
{
	struct gs_rec *r;
	int rc;

	if ((unsigned)kind >= GS_KIND_COUNT ||
	    (!trk_has_handles(kind) && kind != GS_KIND_GLOBAL))
		return -EINVAL;
	trk_lock();
	r = trk_find(kind, app);
	if (!r) {
		rc = -ENOENT;
		goto out;
	}
	/* A module reloaded on another GPU puts its globals at new device
	 * addresses: the record stays keyed by the address the application
	 * knows, and `real` says where the variable lives now. */
	if (kind == GS_KIND_GLOBAL) {
		r->real = real;
		rc = 0;
		goto out;
	}
	rc = gs_hmap_rebind(&gs_trk.maps[kind], app, real);
	if (!rc)
		r->real = real;
out:
	trk_unlock();
	return rc;
}

bool trk_device_ok(int device)
{
	return device >= 0 && device < GS_MAX_DEVICES;
}

int gs_trk_device_set_sm(int device, int sm)
{
	if (!trk_device_ok(device) || sm < 0)
		return -EINVAL;
	trk_lock();
	gs_trk.dev[device].sm = sm;
	trk_unlock();
	return 0;
}

int gs_trk_device_get(int device, struct gs_device_info *out)
{
	if (!trk_device_ok(device))
		return -EINVAL;
	trk_lock();
	*out = gs_trk.dev[device];
	trk_unlock();
	return 0;
}

/* ---- streams and events ------------------------------------------------------------ */

void trk_drop_stale(enum gs_kind kind, uint64_t real)
{
	struct gs_rec *r = trk_find_real(kind, real);

	if (!r)
		return;
	if (kind == GS_KIND_CTX)
		trk_ctx_drop_all((struct gs_ctx_rec *)r);
	else
		trk_drop(r);
}

static int stream_new(uint64_t ctx, uint64_t real, unsigned flags, int priority,
		      bool priority_set, uint64_t green, CUstream *app)
{
	struct gs_stream_rec *s;
	int rc;

	if (!real)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->ctx = ctx;
	s->flags = flags;
	s->priority = priority;
	s->priority_set = priority_set;
	s->green = green;
	trk_lock();
	trk_drop_stale(GS_KIND_STREAM, real);
	rc = trk_link(&s->hdr, GS_KIND_STREAM, real, 0, false);
	if (!rc && app)
		*app = (CUstream)(uintptr_t)s->hdr.app;
	trk_unlock();
	if (rc)
		free(s);
	return rc;
}

int gs_trk_stream_created(CUcontext ctx, CUstream real, unsigned flags, int priority,
			  bool priority_set, CUstream *app)
{
	return stream_new((uintptr_t)ctx, (uintptr_t)real, flags, priority, priority_set, 0,
			  app);
}

int gs_trk_stream_green_created(CUgreenCtx green, CUstream real, unsigned flags,
				int priority, CUstream *app)
{
	if (!green)
		return -EINVAL;
	return stream_new(0, (uintptr_t)real, flags, priority, true, (uintptr_t)green, app);
}

/* Drop r if there is one: 0, or -ENOENT when r is NULL. Lock held. */
static int drop_found(struct gs_rec *r)
{
	if (!r)
		return -ENOENT;
	trk_drop(r);
	return 0;
}

int trk_drop_by_app(enum gs_kind kind, uint64_t app)
{
	int rc;

	trk_lock();
	rc = drop_found(trk_find(kind, app));
	trk_unlock();
	return rc;
}

void trk_drop_where(enum gs_kind kind, size_t field, uint64_t key)
{
	struct gs_rec *r, *next;

	for (r = gs_trk.kinds[kind].head; r; r = next) {
		next = r->next;
		if (*(const uint64_t *)(const void *)((const char *)r + field) == key)
			trk_drop(r);
	}
}

int gs_trk_stream_destroyed(CUstream stream)
{
	return trk_drop_by_app(GS_KIND_STREAM, (uintptr_t)stream);
}

int gs_trk_capture_begin(CUstream stream, CUcontext ctx, CUstreamCaptureMode mode)
{
	struct gs_stream_rec *s;
	int rc;

	/* Default-stream values (NULL, CU_STREAM_PER_THREAD) are keyed as
	 * they are; NULL gets a stand-in key since 0 is never a key. */
	uint64_t key = stream ? (uintptr_t)stream : (uintptr_t)CU_STREAM_LEGACY;

	rc = gs_trk_unsup_add(GS_UNSUP_STREAM_CAPTURE, key, 0, ctx, 0, "cuStreamBeginCapture");
	if (rc && rc != -EEXIST)
		return rc;
	trk_lock();
	s = (struct gs_stream_rec *)trk_find(GS_KIND_STREAM, key);
	if (s) {
		s->capturing = true;
		s->capture_mode = mode;
	}
	trk_unlock();
	return 0;
}

int gs_trk_capture_end(CUstream stream)
{
	struct gs_stream_rec *s;
	uint64_t key = stream ? (uintptr_t)stream : (uintptr_t)CU_STREAM_LEGACY;
	int rc = gs_trk_unsup_remove(GS_UNSUP_STREAM_CAPTURE, key);

	trk_lock();
	s = (struct gs_stream_rec *)trk_find(GS_KIND_STREAM, key);
	if (s)
		s->capturing = false;
	trk_unlock();
	return rc;
}

int gs_trk_event_created(CUcontext ctx, CUevent real, unsigned flags, bool ipc_imported,
			 CUevent *app)
{
	struct gs_event_rec *e;
	int rc;

	if (!real)
		return -EINVAL;
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->ctx = (uintptr_t)ctx;
	e->flags = flags;
	e->ipc_imported = ipc_imported;
	trk_lock();
	trk_drop_stale(GS_KIND_EVENT, (uintptr_t)real);
	rc = trk_link(&e->hdr, GS_KIND_EVENT, (uintptr_t)real, 0, false);
	if (!rc && app)
		*app = (CUevent)(uintptr_t)e->hdr.app;
	trk_unlock();
	if (rc)
		free(e);
	return rc;
}

int gs_trk_event_destroyed(CUevent event)
{
	return trk_drop_by_app(GS_KIND_EVENT, (uintptr_t)event);
}

/* ---- unsupported objects -------------------------------------------------------------- */

static struct gs_rec *unsup_find(enum gs_unsup_kind what, uint64_t key)
{
	uint64_t v;

	return gs_u64tab_get(&gs_trk.unsup_index[what], key, &v) ? (struct gs_rec *)(uintptr_t)v
								: NULL;
}

int gs_trk_unsup_add(enum gs_unsup_kind what, uint64_t key, size_t size, CUcontext ctx,
		     uint64_t parent, const char *api)
{
	struct gs_unsup_rec *u;
	int rc;

	if ((unsigned)what >= GS_UNSUP_COUNT || key == 0)
		return -EINVAL;
	u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	u->what = what;
	u->size = size;
	u->ctx = (uintptr_t)ctx;
	u->parent = parent;
	u->api = api;
	trk_lock();
	if (unsup_find(what, key)) {
		rc = -EEXIST;
	} else {
		rc = trk_link(&u->hdr, GS_KIND_UNSUPPORTED, key, size, false);
		if (!rc)
			gs_trk.unsup_count[what]++;
	}
	trk_unlock();
	if (rc)
		free(u);
	return rc;
}

void trk_unsup_drop_key(enum gs_unsup_kind what, uint64_t key)
{
	struct gs_rec *r = unsup_find(what, key);

	if (r)
		trk_drop(r);
}

void trk_unsup_drop_parent(uint64_t parent)
{
	trk_drop_where(GS_KIND_UNSUPPORTED, TRK_PARENT_FIELD(struct gs_unsup_rec, parent), parent);
}

int gs_trk_unsup_remove(enum gs_unsup_kind what, uint64_t key)
{
	int rc;

	if ((unsigned)what >= GS_UNSUP_COUNT)
		return -EINVAL;
	trk_lock();
	rc = drop_found(unsup_find(what, key));
	trk_unlock();
	return rc;
}

int gs_trk_foreign_free(CUdeviceptr addr)
{
	static const enum gs_unsup_kind freeable[] = {
		GS_UNSUP_MANAGED, GS_UNSUP_ASYNC_ALLOC,
	};
	int rc = -ENOENT;

	trk_lock();
	for (size_t i = 0; i < sizeof(freeable) / sizeof(freeable[0]); i++) {
		struct gs_rec *r = unsup_find(freeable[i], addr);

		if (r) {
			trk_drop(r);
			rc = 0;
		}
	}
	trk_unsup_drop_key(GS_UNSUP_IPC_MEM_EXPORT, addr);
	trk_unlock();
	return rc;
}

/* ---- introspection --------------------------------------------------------------------- */

void gs_trk_get_stats(struct gs_trk_stats *out)
{
	memset(out, 0, sizeof(*out));
	trk_lock();
	for (int k = 0; k < GS_KIND_COUNT; k++) {
		out->count[k] = gs_trk.kinds[k].count;
		out->bytes[k] = gs_trk.kinds[k].bytes;
		out->shim_count[k] = gs_trk.kinds[k].shim_count;
		out->shim_bytes[k] = gs_trk.kinds[k].shim_bytes;
	}
	memcpy(out->unsup_count, gs_trk.unsup_count, sizeof(out->unsup_count));
	memcpy(out->unsup_bytes, gs_trk.unsup_bytes, sizeof(out->unsup_bytes));
	memcpy(out->device_bytes, gs_trk.device_bytes, sizeof(out->device_bytes));
	trk_unlock();
}

size_t gs_trk_count(enum gs_kind kind)
{
	size_t n;

	if ((unsigned)kind >= GS_KIND_COUNT)
		return 0;
	trk_lock();
	n = gs_trk.kinds[kind].count;
	trk_unlock();
	return n;
}

uint64_t gs_trk_bytes(enum gs_kind kind)
{
	uint64_t n;

	if ((unsigned)kind >= GS_KIND_COUNT)
		return 0;
	trk_lock();
	n = gs_trk.kinds[kind].bytes;
	trk_unlock();
	return n;
}

int gs_trk_foreach(enum gs_kind kind, gs_trk_visit_fn *fn, void *arg)
{
	int rc = 0;

	if ((unsigned)kind >= GS_KIND_COUNT || !fn)
		return -EINVAL;
	trk_lock();
	for (const struct gs_rec *r = gs_trk.kinds[kind].head; r && !rc; r = r->next)
		rc = fn(r, arg);
	trk_unlock();
	return rc;
}

int gs_trk_with(enum gs_kind kind, uint64_t app, gs_trk_visit_fn *fn, void *arg)
{
	const struct gs_rec *r = NULL;
	int rc;

	if ((unsigned)kind >= GS_KIND_COUNT || !fn)
		return -EINVAL;
	trk_lock();
	if (kind == GS_KIND_UNSUPPORTED) {
		for (int w = 0; w < GS_UNSUP_COUNT && !r; w++)
			r = unsup_find(w, app);
	} else {
		r = trk_find(kind, app);
	}
	rc = r ? fn(r, arg) : -ENOENT;
	trk_unlock();
	return rc;
}

int trk_report(gs_trk_problem_fn *fn, void *arg, const struct gs_rec *r, const char *why,
	       bool *stop)
{
	if (*stop)
		return 0;
	if (fn(r, why, arg))
		*stop = true;
	return 1;
}

int gs_trk_check(gs_trk_problem_fn *fn, void *arg)
{
	const struct gs_rec *r;
	bool stop = false;
	int n = 0;

	if (!fn)
		return -EINVAL;
	trk_lock();
	for (r = gs_trk.kinds[GS_KIND_UNSUPPORTED].head; r && !stop; r = r->next)
		n += trk_report(fn, arg, r, gs_unsup_describe(((const struct gs_unsup_rec *)r)->what),
			    &stop);
	for (r = gs_trk.kinds[GS_KIND_CTX].head; r && !stop; r = r->next) {
		const struct gs_ctx_rec *c = (const struct gs_ctx_rec *)r;

		if (c->cig)
			n += trk_report(fn, arg, r, "context shares a graphics context (CIG)", &stop);
		if (c->origin == GS_CTX_GREEN)
			n += trk_report(fn, arg, r, "context of a green context", &stop);
		else if (c->origin == GS_CTX_ADOPTED && !c->primary)
			n += trk_report(fn, arg, r, "context of unknown origin", &stop);
	}
	for (r = gs_trk.kinds[GS_KIND_STREAM].head; r && !stop; r = r->next)
		if (((const struct gs_stream_rec *)r)->green)
			n += trk_report(fn, arg, r, "stream of a green context", &stop);
	if (!stop)
		n += trk_code_check(fn, arg, &stop);
	if (!stop)
		n += trk_mem_check(fn, arg, &stop);
	trk_unlock();
	return n;
}
