/* SPDX-License-Identifier: Apache-2.0 */
/*
 * check and freeze: what stands in the way of a migration, and quiescing
 * the process (DESIGN.md §6, §7).
 */
#define GS_LOG_SUBSYS "replay"
#include "rp_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arena.h"
#include "gate.h"
#include "introspect.h"
#include "log.h"
#include "shim.h"

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- blockers ------------------------------------------------------------------------- */

static void add_blocker(json_t *blockers, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void add_blocker(json_t *blockers, const char *fmt, ...)
{
	char *msg = NULL;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	json_array_append_new(blockers, json_string(msg ? msg : fmt));
	free(msg);
}

/* Runs under the tracker lock: builds JSON only. */
static int problem(const struct gs_rec *rec, const char *why, void *arg)
{
	const struct gs_unsup_rec *u = GS_REC_AS(struct gs_unsup_rec, GS_KIND_UNSUPPORTED, rec);
	json_t *blockers = arg;

	if (u) {
		if (u->size)
			add_blocker(blockers, "%s %#llx (%s, %zu bytes)", why,
				    (unsigned long long)rec->app, u->api ? u->api : "?", u->size);
		else
			add_blocker(blockers, "%s %#llx (%s)", why, (unsigned long long)rec->app,
				    u->api ? u->api : "?");
	} else {
		add_blocker(blockers, "%s %#llx: %s", gs_kind_name(rec->kind),
			    (unsigned long long)rec->app, why);
	}
	return 0;
}

static int link_blocker(const struct gs_rec *rec, void *arg)
{
	add_blocker(arg, "link %#llx: a JIT link (cuLinkCreate) is in progress: finish it "
		    "with cuLinkDestroy first", (unsigned long long)rec->app);
	return 0;
}

static int alloc_blocker(const struct gs_rec *rec, void *arg)
{
	const struct gs_alloc_rec *a = GS_REC_AS(struct gs_alloc_rec, GS_KIND_ALLOC, rec);

	/* The driver placed it; nothing can put it back at its address on
	 * another device (run with GPUSWAP_ALLOC=vmm on a VMM-capable GPU). */
	if (a && (a->d.flags & GS_ALLOC_PASSTHROUGH))
		add_blocker(arg, "alloc %#llx: %zu bytes of device memory allocated without "
			    "virtual memory management (GPUSWAP_ALLOC=passthrough or a GPU "
			    "without VMM) cannot be restored at its address",
			    (unsigned long long)a->d.addr, a->d.size);
	return 0;
}

static int phys_blocker(const struct gs_rec *rec, void *arg)
{
	const struct gs_phys_rec *p = GS_REC_AS(struct gs_phys_rec, GS_KIND_PHYS, rec);

	if (!p || p->owner != GS_OWNER_APP)
		return 0;
	if (p->alias_of)
		add_blocker(arg, "phys %#llx: a second handle of physical allocation %#llx "
			    "(cuMemRetainAllocationHandle) cannot be re-created under its own value",
			    (unsigned long long)rec->app, (unsigned long long)p->alias_of);
	else if (p->prop.type != CU_MEM_ALLOCATION_TYPE_PINNED)
		add_blocker(arg, "phys %#llx: physical allocation of type %d cannot be re-created",
			    (unsigned long long)rec->app, (int)p->prop.type);
	return 0;
}

int rp_blockers(json_t *blockers)
{
	size_t before = json_array_size(blockers);
	struct gs_introspect_unknown *u = NULL;
	size_t nu;

	gs_trk_check(problem, blockers);
	gs_trk_foreach(GS_KIND_LINK, link_blocker, blockers);
	gs_trk_foreach(GS_KIND_ALLOC, alloc_blocker, blockers);
	gs_trk_foreach(GS_KIND_PHYS, phys_blocker, blockers);

	/* Raw driver entry points the application holds: calls through them
	 * bypass the gate and the handle translation. */
	nu = gs_introspect_unknown_entries(NULL, 0);
	if (nu && (u = calloc(nu, sizeof(*u)))) {
		nu = gs_introspect_unknown_entries(u, nu);
		for (size_t i = 0; i < nu; i++)
			add_blocker(blockers, "entry point %s (CUDA %d) was handed out raw by "
				    "cuGetProcAddress (the shim has no wrapper for it): calls "
				    "through it bypass gpuswap", u[i].name, u[i].version);
		free(u);
	} else if (nu) {
		add_blocker(blockers, "%zu raw entry points were handed out by cuGetProcAddress",
			    nu);
	}
	return (int)(json_array_size(blockers) - before);
}

static json_t *object_counts(void)
{
	struct gs_trk_stats st;
	json_t *o = json_object();

	if (!o)
		return NULL;
	gs_trk_get_stats(&st);
	for (int k = 0; k < GS_KIND_COUNT; k++) {
		size_t n = st.count[k] - st.shim_count[k];

		if (k == GS_KIND_UNSUPPORTED)
			continue;
		json_object_set_new(o, gs_kind_name(k), json_integer((json_int_t)n));
	}
	for (int w = 0; w < GS_UNSUP_COUNT; w++)
		if (st.unsup_count[w])
			json_object_set_new(o, gs_unsup_name(w),
					    json_integer((json_int_t)st.unsup_count[w]));
	return o;
}

static int check_report(json_t *report)
{
	json_t *blockers = json_array();
	int n;

	if (!blockers)
		return -ENOMEM;
	n = rp_blockers(blockers);
	json_object_set_new(report, "migratable", json_boolean(n == 0));
	json_object_set_new(report, "blockers", blockers);
	json_object_set_new(report, "objects", object_counts());
	return n;
}

int gs_replay_check(json_t **report, char **err)
{
	json_t *o;
	int rc;

	if (!report)
		return rp_fail(err, -EINVAL, "gs_replay_check: no report pointer");
	o = json_object();
	if (!o)
		return rp_fail(err, -ENOMEM, "out of memory");
	rc = check_report(o);
	if (rc < 0) {
		json_decref(o);
		return rp_fail(err, rc, "out of memory");
	}
	json_object_set_new(o, "state", json_string(gs_proc_state_name(gs_replay_state())));
	*report = o;
	return 0;
}

/* ---- freeze ---------------------------------------------------------------------------- */

struct sync_walk {
	CUresult rc;
	uint64_t ctx;
};

static int sync_ctx(const struct gs_rec *rec, void *arg)
{
	struct sync_walk *w = arg;
	CUcontext real = (CUcontext)(uintptr_t)rec->real;
	CUcontext popped;
	CUresult rc;

	if (gs_real.cuCtxSynchronize_v2) {
		rc = gs_real.cuCtxSynchronize_v2(real);
	} else {
		/* Before CUDA 12.8 only the current context can be waited for. */
		rc = RP_REAL(cuCtxPushCurrent_v2, real);
		if (rc == CUDA_SUCCESS) {
			rc = RP_REAL(cuCtxSynchronize);
			RP_REAL(cuCtxPopCurrent_v2, &popped);
		}
	}
	if (rc != CUDA_SUCCESS) {
		w->rc = rc;
		w->ctx = rec->app;
		return 1;
	}
	return 0;
}

int rp_sync_contexts(char **err)
{
	struct sync_walk w = { .rc = CUDA_SUCCESS };

	gs_inside_begin();
	/* The driver's synchronisation does not call back into the tracker,
	 * so it may run inside the walk. */
	gs_trk_foreach(GS_KIND_CTX, sync_ctx, &w);
	gs_inside_end();
	if (w.rc != CUDA_SUCCESS)
		return rp_fail(err, rp_cu_errno(w.rc),
			       "synchronising context %#llx failed with %s: work queued there "
			       "failed, and its state cannot be saved faithfully",
			       (unsigned long long)w.ctx, rp_cu_name(w.rc));
	return 0;
}

static char *inflight_message(const struct gs_gate_report *gr, unsigned timeout_ms,
			      json_t *list)
{
	char *msg = NULL, *calls = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&calls, &len);
	unsigned shown = gr->in_flight < GS_GATE_REPORT_MAX ? gr->in_flight : GS_GATE_REPORT_MAX;

	for (unsigned i = 0; i < shown; i++) {
		json_t *c = json_object();

		json_object_set_new(c, "tid", json_integer(gr->calls[i].tid));
		json_object_set_new(c, "call", json_string(gr->calls[i].name));
		json_array_append_new(list, c);
		if (f)
			fprintf(f, "%s%s (thread %d)", i ? ", " : "", gr->calls[i].name,
				(int)gr->calls[i].tid);
	}
	if (f)
		fclose(f);
	if (asprintf(&msg, "%u driver call(s) still in flight after %u ms: %s%s; the process "
		     "runs on unfrozen. Retry with a longer timeout (a call may legitimately "
		     "wait on the GPU, e.g. a long cuStreamSynchronize)",
		     gr->in_flight, timeout_ms, calls ? calls : "?",
		     gr->in_flight > shown ? ", ..." : "") < 0)
		msg = NULL;
	free(calls);
	return msg;
}

int rp_freeze(unsigned timeout_ms, json_t *report, char **err)
{
	struct gs_gate_report gr = { 0 };
	int64_t t0 = now_ms(), t1;
	int rc;

	if (gs_init() != CUDA_SUCCESS)
		return rp_fail(err, -ENODEV, "the shim has no driver loaded: nothing to freeze");
	rc = gs_gate_close(timeout_ms, &gr);
	if (rc == -ETIMEDOUT) {
		json_t *list = json_array();
		char *msg = inflight_message(&gr, timeout_ms, list);

		if (report)
			json_object_set_new(report, "in_flight", list);
		else
			json_decref(list);
		rp_fail(err, rc, "%s", msg ? msg : "driver calls still in flight");
		free(msg);
		return rc;
	}
	if (rc == -EALREADY)
		return rp_fail(err, -EBUSY, "the gate is already closed by someone else");
	if (rc)
		return rp_fail(err, rc, "closing the gate failed: %s", strerror(-rc));
	t1 = now_ms();
	rc = rp_sync_contexts(err);
	if (rc) {
		gs_gate_open();
		return rc;
	}
	/* No lookup can be in flight now: free the tables handle maps outgrew. */
	for (int k = 0; k < GS_KIND_COUNT; k++) {
		struct gs_handlemap *m = gs_trk_handlemap(k);
		if (m)
			gs_hmap_reclaim(m);
	}
	rp_set_state(GS_STATE_FROZEN);
	if (report) {
		json_object_set_new(report, "state", json_string("frozen"));
		json_object_set_new(report, "drain_ms", json_integer(t1 - t0));
		json_object_set_new(report, "sync_ms", json_integer(now_ms() - t1));
		if (check_report(report) < 0)
			gs_warn("freeze: out of memory listing blockers");
	}
	gs_info("frozen in %lld ms", (long long)(now_ms() - t0));
	return 0;
}

int rp_unfreeze(char **err)
{
	int rc = gs_gate_open();

	if (rc && rc != -EALREADY)
		return rp_fail(err, rc, "reopening the gate failed: %s", strerror(-rc));
	rp_set_state(GS_STATE_RUNNING);
	return 0;
}

int gs_replay_freeze(unsigned timeout_ms, json_t **report, char **err)
{
	json_t *o = report ? json_object() : NULL;
	int rc = rp_op_begin(err);

	if (rc) {
		json_decref(o);
		return rc;
	}
	switch (gs_replay_state()) {
	case GS_STATE_RUNNING:
		rc = rp_freeze(timeout_ms, o, err);
		break;
	case GS_STATE_FROZEN:
		rc = rp_fail(err, -EALREADY, "the process is already frozen");
		break;
	case GS_STATE_RELEASED:
		rc = rp_fail(err, -EALREADY, "the process is already frozen and released");
		break;
	}
	rp_op_end();
	if (report)
		*report = o;
	return rc;
}
