/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A strict stand-in for the driver's VMM calls, behind gs_arena_ops, so the
 * arena core is tested without a driver. It keeps every reservation, physical
 * handle and mapping, enforces the rules the real driver enforces (maps inside
 * a reservation, no overlap, whole-mapping unmap, no release of a mapped
 * handle, no free of a reservation with mappings) and aborts naming the rule
 * on a violation. With `host_memory`, reservations and mappings are real
 * host memory (PROT_NONE until access is granted), so tests can write through
 * the pointers the arena hands out.
 */
#ifndef FAKE_VMM_H
#define FAKE_VMM_H

#include "arena.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define FAKE_MAX_DEVICES 8

enum fake_op {
	FAKE_RESERVE,
	FAKE_UNRESERVE,
	FAKE_CREATE,
	FAKE_RELEASE,
	FAKE_MAP,
	FAKE_UNMAP,
	FAKE_SET_ACCESS,
	FAKE_ADOPT,
	FAKE_NOPS,
};

struct fake_vmm {
	pthread_mutex_t lock;
	bool host_memory;
	uint64_t capacity[FAKE_MAX_DEVICES]; /* bytes per device; 0 = unlimited */
	uint64_t used[FAKE_MAX_DEVICES];
	/* Reserve ignores the hint and places the range this far above it. */
	uint64_t misplace;
	/* Fail the fail_nth-th call (1-based, counted from when set) of op
	 * fail_op with fail_rc. */
	enum fake_op fail_op;
	unsigned fail_nth;
	CUresult fail_rc;
	unsigned calls[FAKE_NOPS];
	unsigned reports;
	uint64_t next_handle;

	struct fake_reservation {
		uint64_t va, size;
	} *res;
	unsigned nres, res_cap;
	struct fake_handle {
		uint64_t id, size;
		int device;
		unsigned mapped;
	} *handles;
	unsigned nhandles, handles_cap;
	struct fake_mapping {
		uint64_t va, size, handle;
		unsigned access; /* bit per device with read-write access */
	} *maps;
	unsigned nmaps, maps_cap;
};

extern const struct gs_arena_ops fake_vmm_ops;

void fake_vmm_init(struct fake_vmm *f, bool host_memory);
void fake_vmm_fini(struct fake_vmm *f);
void fake_vmm_fail(struct fake_vmm *f, enum fake_op op, unsigned nth, CUresult rc);

/* Counts of live objects. */
unsigned fake_vmm_reservations(struct fake_vmm *f);
unsigned fake_vmm_handles(struct fake_vmm *f);
unsigned fake_vmm_mappings(struct fake_vmm *f);
uint64_t fake_vmm_bytes_mapped(struct fake_vmm *f);
/* Whether [va, va+size) is mapped throughout with read-write access for device. */
bool fake_vmm_accessible(struct fake_vmm *f, uint64_t va, uint64_t size, int device);
/* The device whose physical memory backs va, or -1. */
int fake_vmm_device_at(struct fake_vmm *f, uint64_t va);

/* A config for a fake arena. */
struct gs_arena_config fake_vmm_config(struct fake_vmm *f, uint64_t base, uint64_t size,
				       uint64_t granularity, int device, unsigned max_spare);

#endif
