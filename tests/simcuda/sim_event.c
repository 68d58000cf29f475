/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Events. An event holds the stream position of its most recent record; it is
 * complete once that stream's worker has passed the position. The timestamp
 * is taken by the worker when it reaches the record, as the GPU does.
 */
#include <stdlib.h>
#include <time.h>

#include <cudaTypedefs.h>

#include "sim_exec.h"

struct sim_event {
	struct sim_obj hdr;
	struct sim_ctx *ctx;
	unsigned flags;
	struct sim_link exec_link; /* under exec->lock */
	bool destroyed;            /* under exec->lock */

	pthread_mutex_t lock;
	struct sim_stream *stream; /* of the last record; NULL: never recorded */
	uint64_t seq;
	uint64_t generation;       /* counts records */
	bool timed;                /* `time` belongs to the last record */
	struct timespec time;
};

struct event_record {
	struct sim_event *event;
	uint64_t generation;
};

static CUresult run_record(void *arg)
{
	struct event_record *r = arg;
	struct sim_event *e = r->event;
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	pthread_mutex_lock(&e->lock);
	/* A later record replaces this one's state, even if it completes first. */
	if (r->generation == e->generation) {
		e->time = now;
		e->timed = true;
	}
	pthread_mutex_unlock(&e->lock);
	return CUDA_SUCCESS;
}

static struct sim_event *event_get(CUevent ev, const char *fn)
{
	return sim_handle_get(SIM_KIND_EVENT, ev, fn);
}

static CUresult event_record(struct sim_event *e, struct sim_stream *s, const char *fn)
{
	if (s->ctx != e->ctx)
		sim_abort(fn, "event %p belongs to context %p but the stream to context %p",
			  (void *)e, (void *)e->ctx, (void *)s->ctx);
	struct event_record *r = malloc(sizeof(*r));
	if (!r)
		return CUDA_ERROR_OUT_OF_MEMORY;
	r->event = e;

	/* Held across the enqueue so that the record and the new position
	 * become visible to other threads together. */
	pthread_mutex_lock(&e->lock);
	r->generation = e->generation + 1;
	uint64_t seq;
	CUresult rc = sim_stream_enqueue(s, run_record, r, free, SIM_WORK_ALWAYS, NULL, &seq);
	if (rc == CUDA_SUCCESS) {
		e->generation = r->generation;
		e->timed = false;
		e->stream = s;
		e->seq = seq;
	}
	pthread_mutex_unlock(&e->lock);
	if (rc != CUDA_SUCCESS)
		free(r);
	return rc;
}

CUresult sim_event_record_internal(CUevent ev, struct sim_stream *s, const char *fn)
{
	return event_record(event_get(ev, fn), s, fn);
}

void sim_event_position(CUevent ev, const char *fn, struct sim_dep *dep)
{
	struct sim_event *e = event_get(ev, fn);

	pthread_mutex_lock(&e->lock);
	dep->stream = e->stream;
	dep->seq = e->stream ? e->seq : 0;
	pthread_mutex_unlock(&e->lock);
}

bool sim_event_timing_disabled(CUevent ev, const char *fn)
{
	return (event_get(ev, fn)->flags & CU_EVENT_DISABLE_TIMING) != 0;
}

static void event_unlink(struct sim_event *e, const char *fn)
{
	struct sim_exec *exec = sim_exec_of(e->ctx);

	pthread_mutex_lock(&exec->lock);
	bool first = !e->destroyed;
	e->destroyed = true;
	sim_list_del(&e->exec_link);
	pthread_mutex_unlock(&exec->lock);
	if (!first)
		sim_abort(fn, "event %p destroyed twice concurrently", (void *)e);
	/* A record still queued keeps using the object: handle objects are
	 * never freed, so it completes harmlessly, as the driver promises. */
	sim_handle_destroy(e);
}

void sim_event_destroy_all(struct sim_link *events)
{
	while (!sim_list_empty(events))
		event_unlink(sim_container_of(events->next, struct sim_event, exec_link),
			     "cuCtxDestroy");
}

/* ---- entry points ----------------------------------------------------------- */

SIM_EXPORT CUresult cuEventRecord_ptsz(CUevent hEvent, CUstream hStream);
SIM_EXPORT CUresult cuEventRecordWithFlags_ptsz(CUevent hEvent, CUstream hStream, unsigned int flags);
SIM_CHECK_ABI(cuEventRecord_ptsz, PFN_cuEventRecord_v7000_ptsz);
SIM_CHECK_ABI(cuEventRecordWithFlags_ptsz, PFN_cuEventRecordWithFlags_v11010_ptsz);

SIM_EXPORT CUresult cuEventCreate(CUevent *phEvent, unsigned int Flags)
{
	SIM_ENTER("cuEventCreate");
	struct sim_ctx *ctx;
	CUresult rc = sim_ctx_require("cuEventCreate", &ctx);
	if (rc != CUDA_SUCCESS)
		return rc;
	const unsigned known = CU_EVENT_BLOCKING_SYNC | CU_EVENT_DISABLE_TIMING | CU_EVENT_INTERPROCESS;
	if (!phEvent || (Flags & ~known))
		return CUDA_ERROR_INVALID_VALUE;
	if ((Flags & CU_EVENT_INTERPROCESS) && !(Flags & CU_EVENT_DISABLE_TIMING))
		return CUDA_ERROR_INVALID_VALUE;

	struct sim_event *e = sim_handle_new(SIM_KIND_EVENT, sizeof(*e));
	e->ctx = ctx;
	e->flags = Flags;
	pthread_mutex_init(&e->lock, NULL);
	struct sim_exec *exec = sim_exec_of(ctx);
	pthread_mutex_lock(&exec->lock);
	sim_list_add_tail(&exec->events, &e->exec_link);
	pthread_mutex_unlock(&exec->lock);
	*phEvent = (CUevent)e;
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuEventDestroy_v2(CUevent hEvent)
{
	SIM_ENTER("cuEventDestroy_v2");
	event_unlink(event_get(hEvent, "cuEventDestroy_v2"), "cuEventDestroy_v2");
	return CUDA_SUCCESS;
}

static CUresult record_entry(CUevent hEvent, CUstream hStream, unsigned flags, bool ptds,
			     const char *fn)
{
	struct sim_event *e = event_get(hEvent, fn);
	struct sim_stream *s;
	CUresult rc = sim_stream_lookup(hStream, ptds, fn, &s);

	if (rc != CUDA_SUCCESS)
		return rc;
	/* CU_EVENT_RECORD_EXTERNAL is only valid during stream capture. */
	if (flags)
		return CUDA_ERROR_INVALID_VALUE;
	return event_record(e, s, fn);
}

SIM_EXPORT CUresult cuEventRecord(CUevent hEvent, CUstream hStream)
{
	SIM_ENTER("cuEventRecord");
	return record_entry(hEvent, hStream, 0, false, "cuEventRecord");
}

SIM_EXPORT CUresult cuEventRecord_ptsz(CUevent hEvent, CUstream hStream)
{
	SIM_ENTER("cuEventRecord_ptsz");
	return record_entry(hEvent, hStream, 0, true, "cuEventRecord_ptsz");
}

SIM_EXPORT CUresult cuEventRecordWithFlags(CUevent hEvent, CUstream hStream, unsigned int flags)
{
	SIM_ENTER("cuEventRecordWithFlags");
	return record_entry(hEvent, hStream, flags, false, "cuEventRecordWithFlags");
}

SIM_EXPORT CUresult cuEventRecordWithFlags_ptsz(CUevent hEvent, CUstream hStream, unsigned int flags)
{
	SIM_ENTER("cuEventRecordWithFlags_ptsz");
	return record_entry(hEvent, hStream, flags, true, "cuEventRecordWithFlags_ptsz");
}

SIM_EXPORT CUresult cuEventQuery(CUevent hEvent)
{
	SIM_ENTER("cuEventQuery");
	struct sim_event *e = event_get(hEvent, "cuEventQuery");
	struct sim_dep dep;

	sim_event_position(hEvent, "cuEventQuery", &dep);
	CUresult rc = sim_ctx_sticky(e->ctx);
	if (rc != CUDA_SUCCESS)
		return rc;
	/* An event never recorded stands for no work: it is complete. */
	if (!dep.seq || sim_dep_reached(&dep))
		return CUDA_SUCCESS;
	return CUDA_ERROR_NOT_READY;
}

SIM_EXPORT CUresult cuEventSynchronize(CUevent hEvent)
{
	SIM_ENTER("cuEventSynchronize");
	struct sim_event *e = event_get(hEvent, "cuEventSynchronize");
	struct sim_dep dep;

	/* CU_EVENT_BLOCKING_SYNC changes how a GPU waiter waits (sleep rather
	 * than spin); here every waiter sleeps. */
	sim_event_position(hEvent, "cuEventSynchronize", &dep);
	if (dep.seq)
		sim_dep_wait(&dep);
	return sim_ctx_sticky(e->ctx);
}

/* The state elapsed-time needs of one event: its record must be complete. */
static CUresult event_time(struct sim_event *e, struct timespec *t)
{
	if (e->flags & CU_EVENT_DISABLE_TIMING)
		return CUDA_ERROR_INVALID_HANDLE;
	pthread_mutex_lock(&e->lock);
	struct sim_dep dep = { e->stream, e->seq };
	pthread_mutex_unlock(&e->lock);
	if (!dep.stream)
		return CUDA_ERROR_INVALID_HANDLE;
	if (!sim_dep_reached(&dep))
		return CUDA_ERROR_NOT_READY;
	pthread_mutex_lock(&e->lock);
	/* Re-recorded since the check: the new record is not complete yet. */
	CUresult rc = e->timed ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
	*t = e->time;
	pthread_mutex_unlock(&e->lock);
	return rc;
}

static CUresult event_elapsed(const char *fn, float *pMilliseconds, CUevent hStart, CUevent hEnd)
{
	SIM_ENTER(fn);
	struct sim_event *start = event_get(hStart, fn);
	struct sim_event *end = event_get(hEnd, fn);
	struct timespec t0, t1;

	if (!pMilliseconds)
		return CUDA_ERROR_INVALID_VALUE;
	/* Timing disabled or never recorded: both are "invalid handle" for the
	 * driver, and they win over "not ready". */
	CUresult rc0 = event_time(start, &t0);
	CUresult rc1 = event_time(end, &t1);
	if (rc0 == CUDA_ERROR_INVALID_HANDLE || rc1 == CUDA_ERROR_INVALID_HANDLE)
		return CUDA_ERROR_INVALID_HANDLE;
	if (rc0 != CUDA_SUCCESS)
		return rc0;
	if (rc1 != CUDA_SUCCESS)
		return rc1;
	double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	*pMilliseconds = (float)ms;
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuEventElapsedTime_v2(float *pMilliseconds, CUevent hStart, CUevent hEnd)
{
	return event_elapsed("cuEventElapsedTime_v2", pMilliseconds, hStart, hEnd);
}

/* The ABI before CUDA 12.8, which cuda.h no longer declares but the driver
 * still exports and older cudart still asks cuGetProcAddress for. cuda.h
 * #defines the name to the _v2 one, hence the #undef. */
#undef cuEventElapsedTime
SIM_EXPORT CUresult cuEventElapsedTime(float *pMilliseconds, CUevent hStart, CUevent hEnd);
SIM_EXPORT CUresult cuEventElapsedTime(float *pMilliseconds, CUevent hStart, CUevent hEnd)
{
	return event_elapsed("cuEventElapsedTime", pMilliseconds, hStart, hEnd);
}
