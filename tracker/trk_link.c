/* SPDX-License-Identifier: Apache-2.0 */
/*
 * JIT link states (cuLinkCreate .. cuLinkDestroy): their options, a copy of
 * every input (a thaw onto another architecture could link again) and of the
 * output, whose size only the driver knows, for the module loaded from it.
 */
#include "trk_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

size_t trk_link_output_size_locked(const void *image)
{
	for (const struct gs_rec *r = gs_trk.kinds[GS_KIND_LINK].head; r; r = r->next) {
		const struct gs_link_rec *k = (const struct gs_link_rec *)r;

		if (k->output && k->output_addr == (uintptr_t)image)
			return k->output_size;
	}
	return 0;
}

size_t gs_trk_link_output_size(const void *image)
{
	size_t n;

	if (!image)
		return 0;
	trk_lock();
	n = trk_link_output_size_locked(image);
	trk_unlock();
	return n;
}

int gs_trk_link_created(CUlinkState real, unsigned nopts, const CUjit_option *opts,
			void *const *optvals, CUlinkState *app)
{
	struct gs_link_rec *k;
	int rc;

	if (!real)
		return -EINVAL;
	k = calloc(1, sizeof(*k));
	if (!k)
		return -ENOMEM;
	k->hdr.kind = GS_KIND_LINK;
	rc = trk_jit_copy(&k->opts, nopts, opts, optvals);
	if (rc)
		goto fail;
	trk_lock();
	trk_drop_stale(GS_KIND_LINK, (uintptr_t)real);
	rc = trk_link(&k->hdr, GS_KIND_LINK, (uintptr_t)real, 0, false);
	if (!rc && app)
		*app = (CUlinkState)(uintptr_t)k->hdr.app;
	trk_unlock();
	if (!rc)
		return 0;
fail:
	trk_free_code_rec(&k->hdr);
	return rc;
}

int gs_trk_link_input(CUlinkState link, CUjitInputType type, const void *data, size_t size,
		      const char *name_or_path, unsigned nopts, const CUjit_option *opts,
		      void *const *optvals)
{
	struct gs_link_input in = { .type = type, .from_file = data == NULL };
	struct gs_link_input *grown;
	struct gs_link_rec *k;
	int rc;

	if (!link || (!data && !name_or_path))
		return -EINVAL;
	in.name = trk_strdup(name_or_path);
	rc = trk_jit_copy(&in.opts, nopts, opts, optvals);
	if (rc)
		goto fail;
	if (data) {
		in.data = malloc(size ? size : 1);
		if (!in.data) {
			rc = -ENOMEM;
			goto fail;
		}
		memcpy(in.data, data, size);
		in.size = size;
	} else {
		in.error = trk_read_file(name_or_path, &in.data, &in.size);
	}
	trk_lock();
	k = (struct gs_link_rec *)trk_find(GS_KIND_LINK, (uintptr_t)link);
	if (!k) {
		rc = -ENOENT;
	} else {
		grown = realloc(k->inputs, (k->ninputs + 1) * sizeof(*grown));
		if (!grown) {
			rc = -ENOMEM;
		} else {
			k->inputs = grown;
			k->inputs[k->ninputs++] = in;
			trk_account(&k->hdr, k->hdr.acct_bytes + in.size);
		}
	}
	trk_unlock();
	if (!rc)
		return 0;
fail:
	free(in.name);
	free(in.data);
	trk_optlist_free(&in.opts);
	return rc;
}

int gs_trk_link_completed(CUlinkState link, const void *cubin, size_t size)
{
	struct gs_link_rec *k;
	void *copy;
	int rc = 0;

	if (!link || !cubin || !size)
		return -EINVAL;
	copy = malloc(size);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, cubin, size);
	trk_lock();
	k = (struct gs_link_rec *)trk_find(GS_KIND_LINK, (uintptr_t)link);
	if (!k) {
		rc = -ENOENT;
	} else {
		uint64_t bytes = k->hdr.acct_bytes - k->output_size + size;

		free(k->output);
		k->output = copy;
		k->output_size = size;
		k->output_addr = (uintptr_t)cubin;
		trk_account(&k->hdr, bytes);
		copy = NULL;
	}
	trk_unlock();
	free(copy);
	return rc;
}

int gs_trk_link_destroyed(CUlinkState link)
{
	return trk_drop_by_app(GS_KIND_LINK, (uintptr_t)link);
}
