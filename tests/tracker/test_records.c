/* SPDX-License-Identifier: Apache-2.0 */
/* Contexts, streams, events, unsupported objects, statistics, iteration,
 * the migration check, and handle rebinding. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "trk_test.h"

TestSuite(records, .init = trk_test_setup);

static CUcontext new_ctx(uint64_t h, int dev)
{
	CUcontext app = NULL;

	cr_assert_eq(gs_trk_ctx_created(H(CUcontext, h), dev, 0, NULL, &app), 0);
	cr_assert_eq(U(app), h, "identity until a migration");
	return app;
}

static CUstream new_stream(CUcontext ctx, uint64_t h)
{
	CUstream app = NULL;

	cr_assert_eq(gs_trk_stream_created(ctx, H(CUstream, h), CU_STREAM_NON_BLOCKING, 0, false,
					   &app), 0);
	cr_assert_eq(U(app), h);
	return app;
}

static CUevent new_event(CUcontext ctx, uint64_t h)
{
	CUevent app = NULL;

	cr_assert_eq(gs_trk_event_created(ctx, H(CUevent, h), 0, false, &app), 0);
	return app;
}

Test(records, created_context_with_params)
{
	CUexecAffinityParam aff = { .type = CU_EXEC_AFFINITY_TYPE_SM_COUNT };
	CUctxCreateParams params = { .execAffinityParams = &aff, .numExecAffinityParams = 1 };
	struct gs_ctx_rec c;
	CUcontext app;

	aff.param.smCount.val = 12;
	cr_assert_eq(gs_trk_ctx_created(H(CUcontext, 0x1000), 1, CU_CTX_SCHED_BLOCKING_SYNC,
					&params, &app), 0);
	cr_assert_eq(trk_get(GS_KIND_CTX, 0x1000, &c, sizeof(c)), 0);
	cr_assert_eq(c.origin, GS_CTX_CREATED);
	cr_assert_not(c.primary);
	cr_assert_eq(c.device, 1);
	cr_assert_eq(c.flags, CU_CTX_SCHED_BLOCKING_SYNC);
	cr_assert_eq(c.naffinity, 1);
	cr_assert_eq(c.affinity[0].param.smCount.val, 12, "a private copy");
	cr_assert_not(c.cig);
	cr_assert_eq(gs_trk_ctx_device(app), 1);
	cr_assert_eq(gs_trk_ctx_device(H(CUcontext, 0x2000)), -ENOENT);
	cr_assert_eq(gs_trk_count(GS_KIND_CTX), 1);
}

Test(records, cig_context_is_a_problem)
{
	CUctxCigParam cig = { 0 };
	CUctxCreateParams params = { .cigParams = &cig };

	cr_assert_eq(gs_trk_ctx_created(H(CUcontext, 0x1000), 0, 0, &params, NULL), 0);
	cr_assert_eq(trk_problems("CIG"), 1);
}

Test(records, context_settings)
{
	CUcontext ctx = new_ctx(0x1000, 0);
	struct gs_ctx_rec c;

	cr_assert_eq(gs_trk_ctx_set_limit(ctx, CU_LIMIT_STACK_SIZE, 4096), 0);
	cr_assert_eq(gs_trk_ctx_set_limit(ctx, CU_LIMIT_MALLOC_HEAP_SIZE, 1 << 24), 0);
	cr_assert_eq(gs_trk_ctx_set_limit(ctx, CU_LIMIT_STACK_SIZE, 8192), 0);
	cr_assert_eq(gs_trk_ctx_set_limit(ctx, CU_LIMIT_MAX, 1), -EINVAL);
	cr_assert_eq(gs_trk_ctx_set_cache_config(ctx, CU_FUNC_CACHE_PREFER_L1), 0);
	cr_assert_eq(gs_trk_ctx_set_shmem_config(ctx, CU_SHARED_MEM_CONFIG_EIGHT_BYTE_BANK_SIZE), 0);
	cr_assert_eq(gs_trk_ctx_set_flags(ctx, CU_CTX_SCHED_SPIN), 0);
	cr_assert_eq(gs_trk_ctx_peer_access(ctx, 3, true), 0);
	cr_assert_eq(gs_trk_ctx_peer_access(ctx, 5, true), 0);
	cr_assert_eq(gs_trk_ctx_peer_access(ctx, 3, false), 0);
	cr_assert_eq(gs_trk_ctx_set_limit(H(CUcontext, 0x9999), CU_LIMIT_STACK_SIZE, 1), -ENOENT);

	cr_assert_eq(trk_get(GS_KIND_CTX, 0x1000, &c, sizeof(c)), 0);
	cr_assert_eq(c.limits_set, (1u << CU_LIMIT_STACK_SIZE) | (1u << CU_LIMIT_MALLOC_HEAP_SIZE));
	cr_assert_eq(c.limits[CU_LIMIT_STACK_SIZE], 8192, "the latest value");
	cr_assert_eq(c.limits[CU_LIMIT_MALLOC_HEAP_SIZE], 1 << 24);
	cr_assert(c.cache_config_set);
	cr_assert_eq(c.cache_config, CU_FUNC_CACHE_PREFER_L1);
	cr_assert(c.shmem_config_set);
	cr_assert_eq(c.flags, CU_CTX_SCHED_SPIN);
	cr_assert_eq(c.peers_enabled, 1ull << 5);
}

Test(records, destroying_a_context_takes_its_objects)
{
	CUcontext a = new_ctx(0x1000, 0), b = new_ctx(0x2000, 1);
	struct gs_alloc_desc d = { .addr = 0x600000000000, .size = 4096, .ctx = a, .device = 0 };
	struct gs_alloc_desc e = { .addr = 0x610000000000, .size = 4096, .ctx = b, .device = 1 };
	struct gs_host_desc hd = { .ptr = (void *)0x7f0000001000, .size = 4096, .ctx = a };

	new_stream(a, 0x1100);
	new_stream(a, 0x1110);
	new_stream(b, 0x2100);
	new_event(a, 0x1200);
	new_event(b, 0x2200);
	cr_assert_eq(gs_trk_alloc_add(&d), 0);
	cr_assert_eq(gs_trk_alloc_add(&e), 0);
	cr_assert_eq(gs_trk_host_add(&hd), 0);
	cr_assert_eq(gs_trk_unsup_add(GS_UNSUP_ARRAY, 0x1300, 0, a, 0, "cuArrayCreate"), 0);
	cr_assert_eq(gs_trk_unsup_add(GS_UNSUP_MEMPOOL, 0x1400, 0, a, 0, "cuMemPoolCreate"), 0);

	cr_assert_eq(gs_trk_ctx_destroyed(a), 0);
	cr_assert_not(trk_exists(GS_KIND_CTX, 0x1000));
	cr_assert_not(trk_exists(GS_KIND_STREAM, 0x1100));
	cr_assert_not(trk_exists(GS_KIND_STREAM, 0x1110));
	cr_assert_not(trk_exists(GS_KIND_EVENT, 0x1200));
	cr_assert_not(trk_exists(GS_KIND_ALLOC, 0x600000000000));
	cr_assert_not(trk_exists(GS_KIND_HOST, 0x7f0000001000));
	cr_assert_not(trk_exists(GS_KIND_UNSUPPORTED, 0x1300), "arrays die with the context");
	cr_assert(trk_exists(GS_KIND_UNSUPPORTED, 0x1400), "pools belong to the device");
	/* The other context is untouched. */
	cr_assert(trk_exists(GS_KIND_CTX, 0x2000));
	cr_assert(trk_exists(GS_KIND_STREAM, 0x2100));
	cr_assert(trk_exists(GS_KIND_EVENT, 0x2200));
	cr_assert(trk_exists(GS_KIND_ALLOC, 0x610000000000));
	cr_assert_eq(gs_trk_count(GS_KIND_STREAM), 1);
	cr_assert_eq(gs_trk_ctx_destroyed(a), -ENOENT);
}

static int teardown_calls;
static CUcontext teardown_ctx;

static void on_teardown(CUcontext ctx, void *arg)
{
	teardown_calls++;
	teardown_ctx = ctx;
	/* Memory layers call back into the tracker from here. */
	gs_trk_alloc_remove(0x600000000000, NULL);
	cr_assert_eq(arg, &teardown_calls);
}

Test(records, teardown_callbacks_run_first)
{
	CUcontext a = new_ctx(0x1000, 0);
	struct gs_alloc_desc d = { .addr = 0x600000000000, .size = 4096, .ctx = a };

	cr_assert_eq(gs_trk_on_ctx_teardown(on_teardown, &teardown_calls), 0);
	cr_assert_eq(gs_trk_alloc_add(&d), 0);
	cr_assert_eq(gs_trk_ctx_destroyed(a), 0);
	cr_assert_eq(teardown_calls, 1);
	cr_assert_eq(teardown_ctx, a);
	cr_assert_eq(gs_trk_count(GS_KIND_ALLOC), 0);
	for (int i = 1; i < 8; i++)
		cr_assert_eq(gs_trk_on_ctx_teardown(on_teardown, &teardown_calls), 0);
	cr_assert_eq(gs_trk_on_ctx_teardown(on_teardown, &teardown_calls), -ENOSPC);
	cr_assert_eq(gs_trk_on_ctx_teardown(NULL, NULL), -EINVAL);
}

Test(records, primary_context_lifecycle)
{
	CUcontext p = NULL, again = NULL;
	struct gs_ctx_rec c;

	cr_assert_eq(gs_trk_primary_set_flags(0, CU_CTX_SCHED_YIELD), 0);
	cr_assert_eq(gs_trk_primary_retained(0, H(CUcontext, 0x5000), &p), 0);
	cr_assert_eq(U(p), 0x5000);
	cr_assert_eq(gs_trk_primary_retained(0, H(CUcontext, 0x5000), &again), 0);
	cr_assert_eq(again, p);
	cr_assert_eq(gs_trk_primary_ctx(0), p);
	cr_assert_null(gs_trk_primary_ctx(1));
	cr_assert_eq(trk_get(GS_KIND_CTX, 0x5000, &c, sizeof(c)), 0);
	cr_assert(c.primary);
	cr_assert_eq(c.origin, GS_CTX_PRIMARY);
	cr_assert_eq(c.retains, 2);
	cr_assert_eq(c.flags, CU_CTX_SCHED_YIELD, "flags set before the retain");
	new_stream(p, 0x5100);
	cr_assert_eq(gs_trk_ctx_set_limit(p, CU_LIMIT_STACK_SIZE, 1024), 0);

	/* Reset while retained: empty, same handle. */
	cr_assert_eq(gs_trk_primary_reset(0, true), 0);
	cr_assert_not(trk_exists(GS_KIND_STREAM, 0x5100));
	cr_assert_eq(trk_get(GS_KIND_CTX, 0x5000, &c, sizeof(c)), 0);
	cr_assert_eq(c.limits_set, 0, "a reset context has default limits");
	cr_assert_eq(c.retains, 2);

	/* First release: still active. */
	new_stream(p, 0x5110);
	cr_assert_eq(gs_trk_primary_released(0, true), 0);
	cr_assert_eq(trk_get(GS_KIND_CTX, 0x5000, &c, sizeof(c)), 0);
	cr_assert_eq(c.retains, 1);
	cr_assert(trk_exists(GS_KIND_STREAM, 0x5110));
	/* Last release: the driver resets it. */
	cr_assert_eq(gs_trk_primary_released(0, false), 0);
	cr_assert_not(trk_exists(GS_KIND_CTX, 0x5000));
	cr_assert_not(trk_exists(GS_KIND_STREAM, 0x5110));
	cr_assert_null(gs_trk_primary_ctx(0));
	cr_assert_eq(gs_trk_primary_released(0, false), -ENOENT);

	/* The flags outlive the context (the driver keeps them too). */
	cr_assert_eq(gs_trk_primary_retained(0, H(CUcontext, 0x5000), &p), 0);
	cr_assert_eq(trk_get(GS_KIND_CTX, 0x5000, &c, sizeof(c)), 0);
	cr_assert_eq(c.flags, CU_CTX_SCHED_YIELD);
	cr_assert_eq(gs_trk_primary_reset(0, false), 0, "reset of an unretained context");
	cr_assert_not(trk_exists(GS_KIND_CTX, 0x5000));
}

/* cudart's primary context arrives through an export table: first seen
 * current, adopted, then retained through the API. */
Test(records, adopted_context)
{
	CUcontext app = NULL;
	struct gs_ctx_rec c;

	cr_assert_eq(gs_trk_ctx_adopt(H(CUcontext, 0x7000), 1, true, &app), 0);
	cr_assert_eq(U(app), 0x7000);
	cr_assert_eq(gs_trk_ctx_adopt(H(CUcontext, 0x7000), 1, true, &app), 1, "known");
	cr_assert_eq(gs_trk_primary_ctx(1), app);
	cr_assert_eq(gs_trk_primary_retained(1, H(CUcontext, 0x7000), &app), 0);
	cr_assert_eq(trk_get(GS_KIND_CTX, 0x7000, &c, sizeof(c)), 0);
	cr_assert_eq(c.origin, GS_CTX_ADOPTED);
	cr_assert(c.primary);
	cr_assert_eq(c.retains, 1);
	cr_assert_eq(gs_trk_count(GS_KIND_CTX), 1);
	cr_assert_eq(trk_problems("origin"), 0);

	/* A non-primary context of unknown origin is a problem for freeze. */
	cr_assert_eq(gs_trk_ctx_adopt(H(CUcontext, 0x8000), 0, false, NULL), 0);
	cr_assert_eq(trk_problems("unknown origin"), 1);
}

Test(records, green_contexts)
{
	CUcontext app;
	CUstream s;

	cr_assert_eq(gs_trk_unsup_add(GS_UNSUP_GREEN_CTX, 0x9000, 0, NULL, 0, "cuGreenCtxCreate"),
		     0);
	cr_assert_eq(gs_trk_ctx_from_green(H(CUcontext, 0x9100), H(CUgreenCtx, 0x9000), 0, &app),
		     0);
	cr_assert_eq(gs_trk_stream_green_created(H(CUgreenCtx, 0x9000), H(CUstream, 0x9200), 0, 0,
						 &s), 0);
	cr_assert_eq(trk_problems("green"), 3);
}

Test(records, streams_and_events)
{
	CUcontext ctx = new_ctx(0x1000, 0);
	struct gs_stream_rec s;
	struct gs_event_rec e;
	CUstream sp;

	cr_assert_eq(gs_trk_stream_created(ctx, H(CUstream, 0x1100), CU_STREAM_NON_BLOCKING, -2,
					   true, &sp), 0);
	cr_assert_eq(trk_get(GS_KIND_STREAM, 0x1100, &s, sizeof(s)), 0);
	cr_assert_eq(s.ctx, 0x1000);
	cr_assert_eq(s.flags, CU_STREAM_NON_BLOCKING);
	cr_assert_eq(s.priority, -2);
	cr_assert(s.priority_set);
	cr_assert_eq(gs_trk_event_created(ctx, H(CUevent, 0x1200), CU_EVENT_BLOCKING_SYNC, false,
					  NULL), 0);
	cr_assert_eq(trk_get(GS_KIND_EVENT, 0x1200, &e, sizeof(e)), 0);
	cr_assert_eq(e.flags, CU_EVENT_BLOCKING_SYNC);
	cr_assert_eq(e.ctx, 0x1000);
	cr_assert_eq(gs_trk_stream_destroyed(sp), 0);
	cr_assert_eq(gs_trk_stream_destroyed(sp), -ENOENT);
	cr_assert_eq(gs_trk_event_destroyed(H(CUevent, 0x1200)), 0);
	cr_assert_eq(gs_trk_event_destroyed(H(CUevent, 0x1200)), -ENOENT);
	cr_assert_eq(gs_trk_stream_created(ctx, NULL, 0, 0, false, NULL), -EINVAL);
	cr_assert_eq(gs_trk_count(GS_KIND_STREAM), 0);
	cr_assert_eq(gs_trk_count(GS_KIND_EVENT), 0);
}

/* The driver reuses a handle value only once the old object is gone: a
 * record still holding it is stale (destroyed by a path the hooks missed)
 * and gives way. */
Test(records, reused_handle_replaces_stale_record)
{
	CUcontext ctx = new_ctx(0x1000, 0);
	struct gs_stream_rec s;

	new_stream(ctx, 0x1100);
	cr_assert_eq(gs_trk_stream_created(ctx, H(CUstream, 0x1100), 0, 3, true, NULL), 0);
	cr_assert_eq(gs_trk_count(GS_KIND_STREAM), 1);
	cr_assert_eq(trk_get(GS_KIND_STREAM, 0x1100, &s, sizeof(s)), 0);
	cr_assert_eq(s.priority, 3, "the new stream's record");

	/* A reused context handle takes the stale context's objects along. */
	cr_assert_eq(gs_trk_ctx_created(H(CUcontext, 0x1000), 1, 0, NULL, NULL), 0);
	cr_assert_not(trk_exists(GS_KIND_STREAM, 0x1100));
	cr_assert_eq(gs_trk_ctx_device(ctx), 1);
}

Test(records, capture_and_graphs)
{
	CUcontext ctx = new_ctx(0x1000, 0);
	CUstream s = new_stream(ctx, 0x1100);
	struct gs_stream_rec rec;
	struct gs_trk_stats st;

	cr_assert_eq(gs_trk_capture_begin(s, ctx, CU_STREAM_CAPTURE_MODE_GLOBAL), 0);
	cr_assert_eq(trk_get(GS_KIND_STREAM, 0x1100, &rec, sizeof(rec)), 0);
	cr_assert(rec.capturing);
	cr_assert_eq(trk_problems("capture"), 1);
	cr_assert_eq(gs_trk_capture_end(s), 0);
	cr_assert_eq(trk_get(GS_KIND_STREAM, 0x1100, &rec, sizeof(rec)), 0);
	cr_assert_not(rec.capturing);
	cr_assert_eq(trk_problems("capture"), 0);
	cr_assert_eq(gs_trk_capture_end(s), -ENOENT);

	/* The per-thread default stream can capture too. */
	cr_assert_eq(gs_trk_capture_begin(CU_STREAM_PER_THREAD, ctx, 0), 0);
	cr_assert_eq(gs_trk_capture_end(CU_STREAM_PER_THREAD), 0);

	/* A capturing stream that is destroyed ends its capture. */
	cr_assert_eq(gs_trk_capture_begin(s, ctx, 0), 0);
	cr_assert_eq(gs_trk_stream_destroyed(s), 0);
	gs_trk_get_stats(&st);
	cr_assert_eq(st.unsup_count[GS_UNSUP_STREAM_CAPTURE], 0);

	cr_assert_eq(gs_trk_unsup_add(GS_UNSUP_GRAPH, 0x3000, 0, NULL, 0, "cuGraphCreate"), 0);
	cr_assert_eq(gs_trk_unsup_add(GS_UNSUP_GRAPH, 0x3000, 0, NULL, 0, "cuGraphCreate"),
		     -EEXIST);
	cr_assert_eq(gs_trk_unsup_add(GS_UNSUP_GRAPH_EXEC, 0x3100, 0, ctx, 0, "cuGraphInstantiate"),
		     0);
	gs_trk_get_stats(&st);
	cr_assert_eq(st.unsup_count[GS_UNSUP_GRAPH], 1);
	cr_assert_eq(st.unsup_count[GS_UNSUP_GRAPH_EXEC], 1);
	cr_assert_eq(st.count[GS_KIND_UNSUPPORTED], 2);
	cr_assert_eq(gs_trk_unsup_remove(GS_UNSUP_GRAPH, 0x3000), 0);
	cr_assert_eq(gs_trk_unsup_remove(GS_UNSUP_GRAPH, 0x3000), -ENOENT);
	cr_assert_eq(gs_trk_unsup_remove(GS_UNSUP_COUNT, 0x3000), -EINVAL);
	cr_assert_eq(gs_trk_unsup_add(GS_UNSUP_GRAPH, 0, 0, NULL, 0, "x"), -EINVAL);
}

Test(records, ipc_events)
{
	CUcontext ctx = new_ctx(0x1000, 0);
	CUevent e = new_event(ctx, 0x1200);
	struct gs_trk_stats st;

	cr_assert_eq(gs_trk_unsup_add(GS_UNSUP_IPC_EVENT_EXPORT, U(e), 0, ctx, 0,
				      "cuIpcGetEventHandle"), 0);
	cr_assert_eq(gs_trk_event_created(ctx, H(CUevent, 0x1300), CU_EVENT_INTERPROCESS, true,
					  NULL), 0);
	cr_assert_eq(gs_trk_unsup_add(GS_UNSUP_IPC_EVENT_IMPORT, 0x1300, 0, ctx, 0,
				      "cuIpcOpenEventHandle"), 0);
	cr_assert_eq(trk_problems("IPC"), 2);
	/* Destroying the events ends both. */
	cr_assert_eq(gs_trk_event_destroyed(e), 0);
	cr_assert_eq(gs_trk_event_destroyed(H(CUevent, 0x1300)), 0);
	gs_trk_get_stats(&st);
	cr_assert_eq(st.count[GS_KIND_UNSUPPORTED], 0);
}

Test(records, names)
{
	cr_assert_str_eq(gs_kind_name(GS_KIND_STREAM), "stream");
	cr_assert_str_eq(gs_kind_name(GS_KIND_RESERVATION), "reservation");
	cr_assert_str_eq(gs_kind_name(GS_KIND_COUNT), "?");
	for (int k = 0; k < GS_KIND_COUNT; k++)
		cr_assert_str_neq(gs_kind_name(k), "?");
	for (int w = 0; w < GS_UNSUP_COUNT; w++) {
		cr_assert_str_neq(gs_unsup_name(w), "?");
		cr_assert_str_neq(gs_unsup_describe(w), "?");
		cr_assert_null(strchr(gs_unsup_name(w), ' '), "short names are keys");
	}
}

struct walk {
	uint64_t apps[16];
	uint64_t serials[16];
	int n;
	int stop_at;
};

static int walk_fn(const struct gs_rec *r, void *arg)
{
	struct walk *w = arg;

	w->apps[w->n] = r->app;
	w->serials[w->n] = r->serial;
	w->n++;
	cr_assert_eq(r->app, r->real);
	cr_assert_not_null(GS_REC_AS(struct gs_stream_rec, GS_KIND_STREAM, r));
	cr_assert_null(GS_REC_AS(struct gs_event_rec, GS_KIND_EVENT, r));
	return w->n == w->stop_at ? 7 : 0;
}

Test(records, iteration_in_creation_order)
{
	CUcontext ctx = new_ctx(0x1000, 0);
	struct walk w = { .stop_at = -1 };

	new_stream(ctx, 0x5000);
	new_stream(ctx, 0x2000);
	new_stream(ctx, 0x9000);
	cr_assert_eq(gs_trk_stream_destroyed(H(CUstream, 0x2000)), 0);
	new_stream(ctx, 0x1500);
	cr_assert_eq(gs_trk_foreach(GS_KIND_STREAM, walk_fn, &w), 0);
	cr_assert_eq(w.n, 3);
	cr_assert_eq(w.apps[0], 0x5000);
	cr_assert_eq(w.apps[1], 0x9000);
	cr_assert_eq(w.apps[2], 0x1500);
	cr_assert_lt(w.serials[0], w.serials[1]);
	cr_assert_lt(w.serials[1], w.serials[2]);

	struct walk w2 = { .stop_at = 2 };

	cr_assert_eq(gs_trk_foreach(GS_KIND_STREAM, walk_fn, &w2), 7);
	cr_assert_eq(w2.n, 2);
	cr_assert_eq(gs_trk_foreach(GS_KIND_COUNT, walk_fn, &w2), -EINVAL);
	cr_assert_eq(gs_trk_with(GS_KIND_STREAM, 0x4242, walk_fn, &w2), -ENOENT);
}

/* Thaw re-created an object: the app handle stays, the real one changes;
 * the handle map translates both ways. */
Test(records, rebind_after_thaw)
{
	CUcontext ctx = new_ctx(0x1000, 0);
	struct gs_handlemap *m = gs_trk_handlemap(GS_KIND_STREAM);
	struct gs_stream_rec s;
	uint64_t v;
	CUstream app;

	new_stream(ctx, 0x1100);
	cr_assert_not_null(m);
	cr_assert_null(gs_trk_handlemap(GS_KIND_ALLOC), "addresses never change");
	cr_assert_eq(gs_trk_rebind(GS_KIND_STREAM, 0x1100, 0x8100), 0);
	cr_assert_eq(trk_get(GS_KIND_STREAM, 0x1100, &s, sizeof(s)), 0);
	cr_assert_eq(s.hdr.real, 0x8100);
	cr_assert_eq(gs_hmap_to_real(m, 0x1100, &v), 0);
	cr_assert_eq(v, 0x8100);
	cr_assert_eq(gs_trk_rebind(GS_KIND_STREAM, 0x4444, 0x8200), -ENOENT);
	cr_assert_eq(gs_trk_rebind(GS_KIND_ALLOC, 0x1100, 0x8200), -EINVAL);

	/* The new driver hands out 0x1100 for a new stream: it collides with
	 * the live app handle, so the application sees a synthetic value. */
	cr_assert_eq(gs_trk_stream_created(ctx, H(CUstream, 0x1100), 0, 0, false, &app), 0);
	cr_assert(gs_hmap_is_synthetic(U(app)));
	cr_assert_eq(trk_get(GS_KIND_STREAM, U(app), &s, sizeof(s)), 0);
	cr_assert_eq(s.hdr.real, 0x1100);
	cr_assert(trk_exists(GS_KIND_STREAM, 0x1100), "the old stream is still there");
	cr_assert_eq(gs_trk_count(GS_KIND_STREAM), 2);
	cr_assert_eq(gs_trk_stream_destroyed(app), 0);
	cr_assert_eq(gs_hmap_to_app(m, 0x1100, &v), -ENOENT);
}

Test(records, device_table)
{
	struct gs_device_info info;

	cr_assert_eq(gs_trk_device_set_sm(2, 90), 0);
	cr_assert_eq(gs_trk_device_get(2, &info), 0);
	cr_assert_eq(info.sm, 90);
	cr_assert_eq(gs_trk_device_set_sm(GS_MAX_DEVICES, 90), -EINVAL);
	cr_assert_eq(gs_trk_device_get(-1, &info), -EINVAL);
	cr_assert_eq(gs_devmap_to_real(gs_trk_devmap(), 5), 5, "identity at start");
}

Test(records, clear_resets_everything)
{
	CUcontext ctx = new_ctx(0x1000, 0);
	struct gs_trk_stats st;

	new_stream(ctx, 0x1100);
	cr_assert_eq(gs_trk_unsup_add(GS_UNSUP_MANAGED, 0x5000, 64, ctx, 0, "x"), 0);
	gs_trk_clear();
	gs_trk_get_stats(&st);
	for (int k = 0; k < GS_KIND_COUNT; k++) {
		cr_assert_eq(st.count[k], 0, "%s", gs_kind_name(k));
		cr_assert_eq(st.bytes[k], 0, "%s", gs_kind_name(k));
	}
	cr_assert_eq(st.unsup_bytes[GS_UNSUP_MANAGED], 0);
	cr_assert_eq(gs_hmap_count(gs_trk_handlemap(GS_KIND_STREAM)), 0);
}
