/* SPDX-License-Identifier: Apache-2.0 */
#include "trk_test.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void trk_test_setup(void)
{
	cr_assert_eq(gs_trk_init(), 0);
	gs_trk_clear();
}

const char *trk_fixture_path(const char *name)
{
	static char path[PATH_MAX];
	const char *dir = getenv("TRK_FIXTURES");

	cr_assert(dir, "TRK_FIXTURES is not set (run the tests through meson)");
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return path;
}

void *trk_fixture(const char *name, size_t *size)
{
	const char *path = trk_fixture_path(name);
	FILE *f = fopen(path, "rb");
	long n;
	void *buf;

	cr_assert(f, "fixture %s: %s", path, strerror(errno));
	cr_assert_eq(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	cr_assert_gt(n, 0);
	rewind(f);
	buf = malloc((size_t)n);
	cr_assert(buf);
	cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*size = (size_t)n;
	return buf;
}

static int visit_found(const struct gs_rec *r, void *arg)
{
	(void)r;
	(void)arg;
	return 1;
}

int trk_exists(enum gs_kind kind, uint64_t app)
{
	return gs_trk_with(kind, app, visit_found, NULL) == 1;
}

struct copy_arg {
	void *buf;
	size_t len;
};

static int visit_copy(const struct gs_rec *r, void *arg)
{
	struct copy_arg *c = arg;

	memcpy(c->buf, r, c->len);
	return 0;
}

int trk_get(enum gs_kind kind, uint64_t app, void *buf, size_t len)
{
	struct copy_arg c = { buf, len };

	return gs_trk_with(kind, app, visit_copy, &c);
}

struct problem_arg {
	const char *what;
	int n;
};

static int visit_problem(const struct gs_rec *r, const char *why, void *arg)
{
	struct problem_arg *p = arg;

	(void)r;
	if (strstr(why, p->what))
		p->n++;
	return 0;
}

int trk_problems(const char *what)
{
	struct problem_arg p = { what, 0 };

	gs_trk_check(visit_problem, &p);
	return p.n;
}
