/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Device specifications (gpu-thaw --device, gpu-swap --device): an ordinal,
 * "GPU-<uuid>" (nvidia-smi's spelling; a unique prefix will do, as with
 * CUDA_VISIBLE_DEVICES), or a map "0=1,1=0" from the application's device
 * ordinals to the GPUs they should land on. The result is always a complete
 * ordinal map: the device-ordinal map must stay one-to-one.
 */
#define GS_LOG_SUBSYS "replay"
#include "rp_internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "log.h"
#include "thread.h"

int rp_real_device_count(void)
{
	int n = 0;
	CUresult rc;

	gs_inside_begin();
	rc = RP_REAL(cuDeviceGetCount, &n);
	gs_inside_end();
	return rc == CUDA_SUCCESS ? n : rp_cu_errno(rc);
}

unsigned rp_real_sm(int real)
{
	int major = 0, minor = 0;
	CUresult rc;

	gs_inside_begin();
	rc = RP_REAL(cuDeviceGetAttribute, &major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
		     real);
	if (rc == CUDA_SUCCESS)
		rc = RP_REAL(cuDeviceGetAttribute, &minor,
			     CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, real);
	gs_inside_end();
	return rc == CUDA_SUCCESS ? (unsigned)(major * 10 + minor) : 0;
}

/* ---- which devices hold state ----------------------------------------------------------- */

static int used_ctx(const struct gs_rec *rec, void *arg)
{
	const struct gs_ctx_rec *c = GS_REC_AS(struct gs_ctx_rec, GS_KIND_CTX, rec);

	if (c && c->device >= 0 && c->device < GS_MAX_DEVICES)
		*(uint64_t *)arg |= UINT64_C(1) << c->device;
	return 0;
}

static int used_phys(const struct gs_rec *rec, void *arg)
{
	const struct gs_phys_rec *p = GS_REC_AS(struct gs_phys_rec, GS_KIND_PHYS, rec);

	if (p && p->owner == GS_OWNER_APP && p->prop.location.type == CU_MEM_LOCATION_TYPE_DEVICE &&
	    p->prop.location.id >= 0 && p->prop.location.id < GS_MAX_DEVICES)
		*(uint64_t *)arg |= UINT64_C(1) << p->prop.location.id;
	return 0;
}

uint64_t rp_used_devices(void)
{
	uint64_t used = 0;

	gs_trk_foreach(GS_KIND_CTX, used_ctx, &used);
	gs_trk_foreach(GS_KIND_PHYS, used_phys, &used);
	for (int d = 0; d < GS_MAX_DEVICES; d++) {
		struct gs_arena *a = gs_devmem_arena(d);
		struct gs_arena_stats st;

		if (!a)
			continue;
		gs_arena_stats(a, &st);
		if (st.allocations)
			used |= UINT64_C(1) << d;
	}
	return used;
}

/* ---- parsing ------------------------------------------------------------------------------ */

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* "GPU-" then hex digits, dashes ignored: the real device whose UUID starts
 * with them. */
static int uuid_device(const char *s, size_t len, int *out, char **err)
{
	unsigned char want[16];
	size_t nibbles = 0;
	int ndev = rp_real_device_count(), found = -1;

	for (size_t i = 4; i < len; i++) {
		int v = hexval((unsigned char)s[i]);

		if (s[i] == '-')
			continue;
		if (v < 0 || nibbles == 32)
			return rp_fail(err, -EINVAL, "'%.*s' is not a GPU UUID (GPU-xxxxxxxx-xxxx-...)",
				       (int)len, s);
		if (nibbles % 2 == 0)
			want[nibbles / 2] = (unsigned char)(v << 4);
		else
			want[nibbles / 2] |= (unsigned char)v;
		nibbles++;
	}
	if (nibbles == 0)
		return rp_fail(err, -EINVAL, "'%.*s' is not a GPU UUID (GPU-xxxxxxxx-xxxx-...)",
			       (int)len, s);
	if (ndev < 0)
		return rp_fail(err, ndev, "cannot count the GPUs: %s", strerror(-ndev));
	for (int d = 0; d < ndev; d++) {
		CUuuid u;
		bool match = true;
		CUresult rc;

		gs_inside_begin();
		rc = RP_REAL(cuDeviceGetUuid_v2, &u, d);
		gs_inside_end();
		if (rc != CUDA_SUCCESS)
			continue;
		for (size_t i = 0; i < nibbles && match; i++) {
			unsigned char b = (unsigned char)u.bytes[i / 2];
			unsigned char have = i % 2 ? (b & 0xf) : (b >> 4);
			unsigned char w = i % 2 ? (want[i / 2] & 0xf) : (want[i / 2] >> 4);
			match = have == w;
		}
		if (!match)
			continue;
		if (found >= 0)
			return rp_fail(err, -EINVAL, "'%.*s' matches GPUs %d and %d: give more of "
				       "the UUID", (int)len, s, found, d);
		found = d;
	}
	if (found < 0)
		return rp_fail(err, -ENODEV, "no GPU has the UUID %.*s (nvidia-smi -L lists them)",
			       (int)len, s);
	*out = found;
	return 0;
}

/* A real device: an ordinal or GPU-<uuid>. */
static int parse_real(const char *s, size_t len, int *out, char **err)
{
	int ndev;
	long v;
	char *end;
	char buf[32];

	while (len && isspace((unsigned char)*s)) {
		s++;
		len--;
	}
	while (len && isspace((unsigned char)s[len - 1]))
		len--;
	if (len >= 4 && strncasecmp(s, "GPU-", 4) == 0)
		return uuid_device(s, len, out, err);
	if (len == 0 || len >= sizeof(buf))
		return rp_fail(err, -EINVAL, "'%.*s' is not a device ordinal or GPU-<uuid>",
			       (int)len, s);
	memcpy(buf, s, len);
	buf[len] = '\0';
	errno = 0;
	v = strtol(buf, &end, 10);
	if (errno || *end || v < 0 || end == buf)
		return rp_fail(err, -EINVAL, "'%s' is not a device ordinal or GPU-<uuid>", buf);
	ndev = rp_real_device_count();
	if (ndev < 0)
		return rp_fail(err, ndev, "cannot count the GPUs: %s", strerror(-ndev));
	if (v >= ndev)
		return rp_fail(err, -ENODEV, "there is no GPU %ld: this machine has %d", v, ndev);
	*out = (int)v;
	return 0;
}

static void devices_text(uint64_t mask, char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = '\0';
	for (int d = 0; d < GS_MAX_DEVICES && off < len; d++)
		if (mask & (UINT64_C(1) << d))
			off += (size_t)snprintf(buf + off, len - off, "%s%d", off ? ", " : "", d);
}

int rp_devspec_parse(const char *spec, uint64_t used, const int *cur, int ndev, int *out,
		     char **err)
{
	int want[GS_MAX_DEVICES];
	bool taken[GS_MAX_DEVICES] = { false };
	int rc;

	if (ndev <= 0 || ndev > GS_MAX_DEVICES)
		return rp_fail(err, -EINVAL, "bad device map size %d", ndev);
	for (int i = 0; i < ndev; i++)
		want[i] = -1;
	if (!spec || !*spec) {
		memcpy(out, cur, (size_t)ndev * sizeof(*out));
		return 0;
	}

	if (!strchr(spec, '=')) {
		int target, app = 0;

		if (__builtin_popcountll(used) > 1) {
			char list[256];

			devices_text(used, list, sizeof(list));
			return rp_fail(err, -EINVAL, "the process uses devices %s: say where each "
				       "goes with a map such as 0=1,1=0", list);
		}
		if (used)
			app = __builtin_ctzll(used);
		rc = parse_real(spec, strlen(spec), &target, err);
		if (rc)
			return rc;
		if (app >= ndev)
			return rp_fail(err, -EINVAL, "device %d is outside the device map", app);
		want[app] = target;
	} else {
		const char *p = spec;

		while (*p) {
			const char *item_end = strchr(p, ',');
			const char *eq;
			size_t len = item_end ? (size_t)(item_end - p) : strlen(p);
			char *end;
			long app;
			int target;

			eq = memchr(p, '=', len);
			if (!eq)
				return rp_fail(err, -EINVAL, "'%.*s' in the device map is not APP=GPU",
					       (int)len, p);
			errno = 0;
			app = strtol(p, &end, 10);
			while (end < eq && isspace((unsigned char)*end))
				end++;
			if (errno || end != eq || end == p || app < 0 || app >= ndev)
				return rp_fail(err, -EINVAL, "'%.*s' in the device map: the left side "
					       "must be one of the process's device ordinals (0..%d)",
					       (int)len, p, ndev - 1);
			if (want[app] >= 0)
				return rp_fail(err, -EINVAL, "device %ld is mapped twice", app);
			rc = parse_real(eq + 1, len - (size_t)(eq + 1 - p), &target, err);
			if (rc)
				return rc;
			want[app] = target;
			p += len;
			if (*p == ',')
				p++;
		}
	}

	/* Every device holding state needs a target. */
	for (int i = 0; i < ndev; i++) {
		if (!(used & (UINT64_C(1) << i)) || want[i] >= 0)
			continue;
		return rp_fail(err, -EINVAL, "device %d holds state of the process but the map "
			       "does not say where it goes", i);
	}
	for (int i = 0; i < ndev; i++) {
		if (want[i] < 0)
			continue;
		if (taken[want[i]]) {
			int other = 0;
			while (other < i && want[other] != want[i])
				other++;
			return rp_fail(err, -EINVAL, "devices %d and %d cannot both go to GPU %d",
				       other, i, want[i]);
		}
		taken[want[i]] = true;
		out[i] = want[i];
	}
	/* The rest keep their GPU where it is free, else the lowest free. */
	for (int i = 0; i < ndev; i++) {
		if (want[i] >= 0)
			continue;
		if (cur[i] >= 0 && cur[i] < GS_MAX_DEVICES && !taken[cur[i]]) {
			out[i] = cur[i];
			taken[cur[i]] = true;
			want[i] = cur[i];
		}
	}
	for (int i = 0, next = 0; i < ndev; i++) {
		if (want[i] >= 0)
			continue;
		while (next < GS_MAX_DEVICES && taken[next])
			next++;
		if (next == GS_MAX_DEVICES)
			return rp_fail(err, -EINVAL, "no free device ordinal left for device %d", i);
		out[i] = next;
		taken[next] = true;
	}
	return 0;
}
