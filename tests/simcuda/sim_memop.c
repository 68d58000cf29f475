/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Stream memory operations: a stream waits until a word of memory meets a
 * condition, or writes one, in stream order (cuStreamWaitValue32,
 * cuStreamWriteValue32, cuStreamBatchMemOp). Other streams, kernels, other
 * processes' mappings or the host may write the word, so nothing can notify
 * the waiter: the worker polls, as the GPU's front end does, backing off to
 * a millisecond between looks.
 *
 * What the devices report decides what is accepted: 32-bit operations are
 * always there since CUDA 12; CU_DEVICE_ATTRIBUTE_CAN_USE_64_BIT_STREAM_MEM_OPS,
 * _CAN_USE_STREAM_WAIT_VALUE_NOR and _CAN_FLUSH_REMOTE_WRITES are 0 (see
 * sim_device.c), so those operations fail with CUDA_ERROR_NOT_SUPPORTED as
 * the driver's do on such a device.
 */
#include <stdlib.h>
#include <time.h>

#include <cudaTypedefs.h>

#include "sim_exec.h"

struct memop {
	bool wait;
	unsigned condition; /* CU_STREAM_WAIT_VALUE_* without flags */
	uint32_t *word;
	uint32_t value;
};

struct memop_batch {
	unsigned count;
	struct memop ops[];
};

static bool condition_met(const struct memop *op)
{
	uint32_t now = __atomic_load_n(op->word, __ATOMIC_ACQUIRE);

	switch (op->condition) {
	case CU_STREAM_WAIT_VALUE_GEQ:
		/* Wrapping comparison, so counters may roll over. */
		return (int32_t)(now - op->value) >= 0;
	case CU_STREAM_WAIT_VALUE_EQ:
		return now == op->value;
	default: /* CU_STREAM_WAIT_VALUE_AND */
		return (now & op->value) != 0;
	}
}

static void run_memop(const struct memop *op)
{
	if (!op->wait) {
		/* Both write flavours publish every earlier write of the stream
		 * too: the simulator never reorders. */
		__atomic_store_n(op->word, op->value, __ATOMIC_RELEASE);
		return;
	}
	long ns = 1000;
	while (!condition_met(op)) {
		struct timespec ts = { 0, ns };
		nanosleep(&ts, NULL);
		if (ns < 1000000)
			ns *= 2;
	}
}

static CUresult run_batch(void *arg)
{
	struct memop_batch *b = arg;

	for (unsigned i = 0; i < b->count; i++)
		run_memop(&b->ops[i]);
	return CUDA_SUCCESS;
}

/* Checks one operation and resolves its address for the worker. */
static CUresult memop_prepare(const char *fn, struct sim_stream *s, bool wait, bool wide,
			      CUdeviceptr addr, cuuint64_t value, unsigned flags, struct memop *op)
{
	if (wide)
		return CUDA_ERROR_NOT_SUPPORTED;
	if (addr % sizeof(uint32_t))
		return CUDA_ERROR_INVALID_VALUE;
	if (wait) {
		if (flags & CU_STREAM_WAIT_VALUE_FLUSH)
			return CUDA_ERROR_NOT_SUPPORTED;
		unsigned condition = flags;
		if (condition == CU_STREAM_WAIT_VALUE_NOR)
			return CUDA_ERROR_NOT_SUPPORTED;
		if (condition > CU_STREAM_WAIT_VALUE_AND)
			return CUDA_ERROR_INVALID_VALUE;
		op->condition = condition;
	} else if (flags & ~(unsigned)CU_STREAM_WRITE_VALUE_NO_MEMORY_BARRIER) {
		return CUDA_ERROR_INVALID_VALUE;
	}
	void *host;
	CUresult rc = sim_mem_access(addr, sizeof(uint32_t), s->ctx->device, !wait, fn, &host);
	if (rc != CUDA_SUCCESS)
		return rc;
	op->wait = wait;
	op->word = host;
	op->value = (uint32_t)value;
	return CUDA_SUCCESS;
}

static CUresult memop_submit(const char *fn, CUstream stream, bool ptds, bool wait, bool wide,
			     CUdeviceptr addr, cuuint64_t value, unsigned flags)
{
	struct sim_stream *s;
	CUresult rc = sim_stream_lookup(stream, ptds, fn, &s);

	if (rc != CUDA_SUCCESS)
		return rc;
	struct memop_batch *b = malloc(sizeof(*b) + sizeof(b->ops[0]));
	if (!b)
		return CUDA_ERROR_OUT_OF_MEMORY;
	b->count = 1;
	rc = memop_prepare(fn, s, wait, wide, addr, value, flags, &b->ops[0]);
	if (rc == CUDA_SUCCESS)
		rc = sim_stream_enqueue(s, run_batch, b, free, 0, NULL, NULL);
	if (rc != CUDA_SUCCESS)
		free(b);
	return rc;
}

static CUresult batch_submit(const char *fn, CUstream stream, bool ptds, unsigned count,
			     const CUstreamBatchMemOpParams *params, unsigned flags)
{
	struct sim_stream *s;
	CUresult rc = sim_stream_lookup(stream, ptds, fn, &s);

	if (rc != CUDA_SUCCESS)
		return rc;
	/* The driver takes at most 256 operations per batch. */
	if (!count || count > 256 || !params || flags)
		return CUDA_ERROR_INVALID_VALUE;
	struct memop_batch *b = malloc(sizeof(*b) + count * sizeof(b->ops[0]));
	if (!b)
		return CUDA_ERROR_OUT_OF_MEMORY;
	b->count = 0;
	for (unsigned i = 0; i < count && rc == CUDA_SUCCESS; i++) {
		const CUstreamBatchMemOpParams *p = &params[i];
		switch (p->operation) {
		case CU_STREAM_MEM_OP_WAIT_VALUE_32:
		case CU_STREAM_MEM_OP_WAIT_VALUE_64:
			rc = memop_prepare(fn, s, true, p->operation == CU_STREAM_MEM_OP_WAIT_VALUE_64,
					   p->waitValue.address, p->waitValue.value64,
					   p->waitValue.flags, &b->ops[b->count]);
			b->count++;
			break;
		case CU_STREAM_MEM_OP_WRITE_VALUE_32:
		case CU_STREAM_MEM_OP_WRITE_VALUE_64:
			rc = memop_prepare(fn, s, false, p->operation == CU_STREAM_MEM_OP_WRITE_VALUE_64,
					   p->writeValue.address, p->writeValue.value64,
					   p->writeValue.flags, &b->ops[b->count]);
			b->count++;
			break;
		case CU_STREAM_MEM_OP_BARRIER:
			/* Stream order already makes every earlier write
			 * visible to later work. */
			if (p->memoryBarrier.flags != CU_STREAM_MEMORY_BARRIER_TYPE_SYS &&
			    p->memoryBarrier.flags != CU_STREAM_MEMORY_BARRIER_TYPE_GPU)
				rc = CUDA_ERROR_INVALID_VALUE;
			break;
		case CU_STREAM_MEM_OP_FLUSH_REMOTE_WRITES:
			rc = CUDA_ERROR_NOT_SUPPORTED;
			break;
		default:
			rc = CUDA_ERROR_INVALID_VALUE;
			break;
		}
	}
	if (rc == CUDA_SUCCESS)
		rc = sim_stream_enqueue(s, run_batch, b, free, 0, NULL, NULL);
	if (rc != CUDA_SUCCESS)
		free(b);
	return rc;
}

/* ---- entry points ------------------------------------------------------------ */

SIM_EXPORT CUresult cuStreamWaitValue32_v2_ptsz(CUstream stream, CUdeviceptr addr, cuuint32_t value,
						unsigned int flags);
SIM_EXPORT CUresult cuStreamWaitValue64_v2_ptsz(CUstream stream, CUdeviceptr addr, cuuint64_t value,
						unsigned int flags);
SIM_EXPORT CUresult cuStreamWriteValue32_v2_ptsz(CUstream stream, CUdeviceptr addr,
						 cuuint32_t value, unsigned int flags);
SIM_EXPORT CUresult cuStreamWriteValue64_v2_ptsz(CUstream stream, CUdeviceptr addr,
						 cuuint64_t value, unsigned int flags);
SIM_EXPORT CUresult cuStreamBatchMemOp_v2_ptsz(CUstream stream, unsigned int count,
					       CUstreamBatchMemOpParams *paramArray,
					       unsigned int flags);
SIM_CHECK_ABI(cuStreamWaitValue32_v2_ptsz, PFN_cuStreamWaitValue32_v11070_ptsz);
SIM_CHECK_ABI(cuStreamWaitValue64_v2_ptsz, PFN_cuStreamWaitValue64_v11070_ptsz);
SIM_CHECK_ABI(cuStreamWriteValue32_v2_ptsz, PFN_cuStreamWriteValue32_v11070_ptsz);
SIM_CHECK_ABI(cuStreamWriteValue64_v2_ptsz, PFN_cuStreamWriteValue64_v11070_ptsz);
SIM_CHECK_ABI(cuStreamBatchMemOp_v2_ptsz, PFN_cuStreamBatchMemOp_v11070_ptsz);

SIM_EXPORT CUresult cuStreamWaitValue32_v2(CUstream stream, CUdeviceptr addr, cuuint32_t value,
					   unsigned int flags)
{
	SIM_ENTER("cuStreamWaitValue32_v2");
	return memop_submit("cuStreamWaitValue32_v2", stream, false, true, false, addr, value, flags);
}

SIM_EXPORT CUresult cuStreamWaitValue32_v2_ptsz(CUstream stream, CUdeviceptr addr, cuuint32_t value,
						unsigned int flags)
{
	SIM_ENTER("cuStreamWaitValue32_v2_ptsz");
	return memop_submit("cuStreamWaitValue32_v2_ptsz", stream, true, true, false, addr, value,
			    flags);
}

SIM_EXPORT CUresult cuStreamWaitValue64_v2(CUstream stream, CUdeviceptr addr, cuuint64_t value,
					   unsigned int flags)
{
	SIM_ENTER("cuStreamWaitValue64_v2");
	return memop_submit("cuStreamWaitValue64_v2", stream, false, true, true, addr, value, flags);
}

SIM_EXPORT CUresult cuStreamWaitValue64_v2_ptsz(CUstream stream, CUdeviceptr addr, cuuint64_t value,
						unsigned int flags)
{
	SIM_ENTER("cuStreamWaitValue64_v2_ptsz");
	return memop_submit("cuStreamWaitValue64_v2_ptsz", stream, true, true, true, addr, value,
			    flags);
}

SIM_EXPORT CUresult cuStreamWriteValue32_v2(CUstream stream, CUdeviceptr addr, cuuint32_t value,
					    unsigned int flags)
{
	SIM_ENTER("cuStreamWriteValue32_v2");
	return memop_submit("cuStreamWriteValue32_v2", stream, false, false, false, addr, value,
			    flags);
}

SIM_EXPORT CUresult cuStreamWriteValue32_v2_ptsz(CUstream stream, CUdeviceptr addr,
						 cuuint32_t value, unsigned int flags)
{
	SIM_ENTER("cuStreamWriteValue32_v2_ptsz");
	return memop_submit("cuStreamWriteValue32_v2_ptsz", stream, true, false, false, addr, value,
			    flags);
}

SIM_EXPORT CUresult cuStreamWriteValue64_v2(CUstream stream, CUdeviceptr addr, cuuint64_t value,
					    unsigned int flags)
{
	SIM_ENTER("cuStreamWriteValue64_v2");
	return memop_submit("cuStreamWriteValue64_v2", stream, false, false, true, addr, value,
			    flags);
}

SIM_EXPORT CUresult cuStreamWriteValue64_v2_ptsz(CUstream stream, CUdeviceptr addr,
						 cuuint64_t value, unsigned int flags)
{
	SIM_ENTER("cuStreamWriteValue64_v2_ptsz");
	return memop_submit("cuStreamWriteValue64_v2_ptsz", stream, true, false, true, addr, value,
			    flags);
}

SIM_EXPORT CUresult cuStreamBatchMemOp_v2(CUstream stream, unsigned int count,
					  CUstreamBatchMemOpParams *paramArray, unsigned int flags)
{
	SIM_ENTER("cuStreamBatchMemOp_v2");
	return batch_submit("cuStreamBatchMemOp_v2", stream, false, count, paramArray, flags);
}

SIM_EXPORT CUresult cuStreamBatchMemOp_v2_ptsz(CUstream stream, unsigned int count,
					       CUstreamBatchMemOpParams *paramArray,
					       unsigned int flags)
{
	SIM_ENTER("cuStreamBatchMemOp_v2_ptsz");
	return batch_submit("cuStreamBatchMemOp_v2_ptsz", stream, true, count, paramArray, flags);
}
