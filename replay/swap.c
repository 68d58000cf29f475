/* SPDX-License-Identifier: Apache-2.0 */
/*
 * swap (DESIGN.md §7): freeze, release to host memory, thaw on the target,
 * in one operation. When the thaw on the target fails the process goes
 * back where it came from (a second thaw, onto the source GPUs), so a swap
 * either moves the process or leaves it running as it was; only when both
 * fail does it stay released, its state saved, for gpu-thaw to retry.
 *
 * Device memory goes device to device where the source GPU can reach the
 * target over a peer link (stage.c): the release copies it into new memory
 * on the target and the thaw maps that memory at the original addresses.
 * The rest (module variables, devices without a peer path) goes through
 * host memory. When the thaw on the target fails, the staged memory is
 * copied to host memory before the process moves back.
 */
#define GS_LOG_SUBSYS "replay"
#include "rp_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static json_t *sub(json_t *report, const char *key)
{
	json_t *o;

	if (!report)
		return NULL;
	o = json_object();
	json_object_set_new(report, key, o);
	return o;
}

int gs_replay_swap(const char *device_spec, unsigned timeout_ms, unsigned flags,
		   const struct gs_progress *progress, json_t **report, char **err)
{
	struct gs_devmap *dm = gs_trk_devmap();
	json_t *o = report ? json_object() : NULL;
	int cur[GS_MAX_DEVICES], map[GS_MAX_DEVICES];
	int ndev = gs_devmap_count(dm);
	char *back_err = NULL;
	int rc = rp_op_begin(err);

	if (rc) {
		json_decref(o);
		return rc;
	}
	if (gs_replay_state() != GS_STATE_RUNNING) {
		rc = rp_fail(err, -EINVAL, "the process is %s: gpu-swap moves a running process "
			     "(use gpu-thaw --device for a frozen one)",
			     gs_proc_state_name(gs_replay_state()));
		goto out;
	}
	if (!device_spec || !*device_spec) {
		rc = rp_fail(err, -EINVAL, "gpu-swap needs a target (--device)");
		goto out;
	}
	for (int d = 0; d < ndev; d++)
		cur[d] = gs_devmap_to_real(dm, d);
	rc = rp_devspec_parse(device_spec, rp_used_devices(), cur, ndev, map, err);
	if (rc)
		goto out;
	if (!memcmp(map, cur, (size_t)ndev * sizeof(*map)) && !(flags & GS_SWAP_FORCE)) {
		gs_info("swap: the process already runs on those GPUs");
		if (o)
			json_object_set_new(o, "state", json_string("running"));
		goto out;
	}

	rc = rp_freeze(timeout_ms, sub(o, "freeze"), err);
	if (rc)
		goto out;
	rc = rp_release(NULL, flags & GS_SWAP_VIA_HOST ? NULL : map, progress, sub(o, "release"),
			err);
	if (rc) {
		rp_unfreeze(NULL);
		goto out;
	}
	rc = rp_thaw(map, NULL, progress, sub(o, "thaw"), err);
	if (!rc) {
		if (o)
			json_object_set_new(o, "state", json_string("running"));
		goto out;
	}

	/* Back onto the GPUs it came from: everything is still saved. */
	gs_warn("swap: the thaw on the target failed; moving the process back");
	if (rp_thaw(cur, NULL, progress, sub(o, "back"), &back_err) == 0) {
		if (o)
			json_object_set_new(o, "state", json_string("running"));
		if (err && *err) {
			char *msg = NULL;

			if (asprintf(&msg, "%s; the process runs on where it was", *err) >= 0) {
				free(*err);
				*err = msg;
			}
		}
	} else {
		if (o)
			json_object_set_new(o, "state", json_string("released"));
		if (err && *err && back_err) {
			char *msg = NULL;

			if (asprintf(&msg, "%s; moving it back failed too (%s): it stays released "
				     "with its state saved, retry with gpu-thaw --device", *err,
				     back_err) >= 0) {
				free(*err);
				*err = msg;
			}
		}
	}
	free(back_err);
out:
	rp_op_end();
	if (report)
		*report = o;
	return rc;
}
