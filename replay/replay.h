/* SPDX-License-Identifier: Apache-2.0 */
/*
 * replay: the operations that move a process's GPU state (DESIGN.md §7).
 * Called by the shim's control thread (shim/control.c) on behalf of the
 * gpu-* tools; every operation runs inside the process, so a tool that dies
 * half-way cannot leave it wedged: an operation completes or rolls back.
 *
 * States: RUNNING -> FROZEN (gate closed, GPU held) -> RELEASED (state saved,
 * every context destroyed, GPU free) -> FROZEN (state rebuilt on the target)
 * -> RUNNING. Operations are serialised by the caller (one at a time).
 *
 * All functions return 0 or -errno; on failure *err (when non-NULL) receives
 * a malloc'd message that names the cause and what to do, and the process
 * stays in the state it was in before the call (a failed thaw leaves it
 * RELEASED with its saved state intact, ready for another try).
 */
#ifndef GS_REPLAY_H
#define GS_REPLAY_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

enum gs_proc_state {
	GS_STATE_RUNNING = 0,
	GS_STATE_FROZEN,
	GS_STATE_RELEASED,
};
const char *gs_proc_state_name(enum gs_proc_state s);
enum gs_proc_state gs_replay_state(void);

/* Progress of a long operation: phase ("drain", "dump", "restore", ...),
 * bytes done and total (0 when unknown). Called from the operating thread. */
struct gs_progress {
	void (*emit)(void *arg, const char *phase, uint64_t done, uint64_t total);
	void *arg;
};

/* What would block a migration, without freezing: unsupported live objects,
 * unknown entry points used. *report: {"migratable": bool, "blockers": [...],
 * "objects": {...counts...}}. */
int gs_replay_check(json_t **report, char **err);

/* Close the gate, drain in-flight calls (timeout -> reopen, report which
 * calls were in flight in *err), synchronise every context. */
int gs_replay_freeze(unsigned timeout_ms, json_t **report, char **err);

/* From FROZEN: save all device memory and module state (to host memory, or
 * to the image directory `image_dir` when non-NULL), then destroy every
 * driver object so the GPU holds nothing of the process. */
int gs_replay_release(const char *image_dir, const struct gs_progress *progress,
		      json_t **report, char **err);

/* From RELEASED (or FROZEN: then release first to host memory): check the
 * target can take the state without touching anything, rebuild everything
 * on it, switch translation on, reopen the gate. `device_spec`: an ordinal,
 * "GPU-<uuid>", or a map "0=1,1=0"; NULL keeps the current mapping. When
 * `image_dir` is non-NULL the state is read from that image. */
int gs_replay_thaw(const char *device_spec, const char *image_dir,
		   const struct gs_progress *progress, json_t **report, char **err);

/* freeze + release + thaw in one operation, device to device where peer
 * access allows (GS_SWAP_VIA_HOST: through host memory only, for a platform
 * whose peer path is not to be trusted). GS_SWAP_FORCE: also when the
 * process already runs on the target GPUs (every object is rebuilt there,
 * its memory copied within the GPU). */
#define GS_SWAP_VIA_HOST 1u
#define GS_SWAP_FORCE 2u
int gs_replay_swap(const char *device_spec, unsigned timeout_ms, unsigned flags,
		   const struct gs_progress *progress, json_t **report, char **err);

/* Summary for gpu-ps: state, devices, bytes tracked, counts. */
int gs_replay_status(json_t **report);

#endif
