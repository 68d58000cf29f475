/* SPDX-License-Identifier: Apache-2.0 */
/* gpu-inspect as a user runs it: summary, --verify, --json, exit codes. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "img_test.h"

struct run {
	int status;
	char *out;
	char *err;
};

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t n = 0;

	cr_assert(f);
	getdelim(&buf, &n, '\0', f);
	fclose(f);
	return buf ? buf : strdup("");
}

/* Run gpu-inspect with `args`, capturing stdout and stderr. */
static struct run inspect(const char *args)
{
	const char *tool = getenv("GPU_INSPECT");
	char out[] = "/tmp/inspect-out-XXXXXX", err[] = "/tmp/inspect-err-XXXXXX";
	struct run r;
	char *cmd;
	int st;

	if (!tool)
		cr_skip_test("GPU_INSPECT not set (gpu-inspect not built)");
	close(mkstemp(out));
	close(mkstemp(err));
	cr_assert(asprintf(&cmd, "'%s' %s >%s 2>%s", tool, args, out, err) > 0);
	st = system(cmd);
	cr_assert(WIFEXITED(st), "%s", cmd);
	r.status = WEXITSTATUS(st);
	r.out = slurp(out);
	r.err = slurp(err);
	unlink(out);
	unlink(err);
	free(cmd);
	return r;
}

static void run_free(struct run *r)
{
	free(r->out);
	free(r->err);
}

static char *args(const char *opts, const char *dir)
{
	char *a;

	cr_assert(asprintf(&a, "%s '%s'", opts, dir) > 0);
	return a;
}

Test(inspect, good_image)
{
	struct gs_image_write_opts o = {.chunk_size = IMG_STD_CHUNK, .zstd_level = 3};
	char *dir = img_scratch("disk"), *a;
	struct run r;
	json_t *j;

	img_write(dir, &o, img_std, img_std_n);
	a = args("", dir);
	r = inspect(a);
	cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
	cr_assert(img_contains(r.out, "host testhost, pid 4242, driver 13.0"), "%s", r.out);
	cr_assert(img_contains(r.out, "Simulated H100, sm_90, 80.0 GiB, "
				      "GPU-01020304-0506-0708-090a-0b0c0d0e0f10"), "%s", r.out);
	cr_assert(img_contains(r.out, "5 extents, 14 chunks of 64.0 KiB"), "%s", r.out);
	cr_assert(img_contains(r.out, "192.0 KiB zero (holes)"), "%s", r.out);
	cr_assert(img_contains(r.out, "modules      2, "), "%s", r.out);
	run_free(&r);
	free(a);

	a = args("--verify --extents", dir);
	r = inspect(a);
	cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
	cr_assert(img_contains(r.out, "verify       OK"), "%s", r.out);
	cr_assert(img_contains(r.out, "0x00000040000000"), "%s", r.out);
	run_free(&r);
	free(a);

	a = args("--json --verify", dir);
	r = inspect(a);
	cr_assert_eq(r.status, 0);
	j = json_loads(r.out, 0, NULL);
	cr_assert(j, "--json output is not JSON: %s", r.out);
	cr_assert(json_is_true(json_object_get(j, "ok")));
	cr_assert_eq(json_integer_value(json_object_get(json_object_get(j, "memory"), "zero")),
		     192 << 10);
	cr_assert_eq(json_array_size(json_object_get(j, "errors")), 0);
	json_decref(j);
	run_free(&r);
	free(a);
	img_scratch_free(dir);
}

Test(inspect, damaged_image)
{
	struct gs_image_write_opts o = {.chunk_size = IMG_STD_CHUNK};
	char *dir = img_scratch("disk"), *a;
	struct gs_image_reader *rd;
	struct gs_image_extent e;
	struct run r;
	char *err;
	json_t *j;

	img_write(dir, &o, img_std, img_std_n);
	cr_assert_eq(gs_image_reader_open(dir, NULL, &rd, &err), 0);
	gs_image_extent_get(rd, 1, &e);
	gs_image_reader_close(rd);
	img_flip_bit(dir, "memory.img", e.file_offset + 3 * IMG_STD_CHUNK + 5, 0);

	a = args("", dir);
	r = inspect(a);
	cr_assert_eq(r.status, 0, "without --verify the data is not read");
	run_free(&r);
	free(a);

	a = args("--verify", dir);
	r = inspect(a);
	cr_assert_eq(r.status, 1);
	cr_assert(img_contains(r.err, "extent 1 (va 0x20000000) chunk 3"), "%s", r.err);
	cr_assert(img_contains(r.out, "FAILED: 1 damaged chunk"), "%s", r.out);
	run_free(&r);
	free(a);

	a = args("--verify --json", dir);
	r = inspect(a);
	cr_assert_eq(r.status, 1);
	j = json_loads(r.out, 0, NULL);
	cr_assert(j, "%s", r.out);
	cr_assert(json_is_false(json_object_get(j, "ok")));
	cr_assert_eq(json_integer_value(json_object_get(json_object_get(j, "verified"), "bad")), 1);
	cr_assert_eq(json_array_size(json_object_get(j, "errors")), 1);
	json_decref(j);
	run_free(&r);
	free(a);
	img_scratch_free(dir);
}

Test(inspect, not_an_image)
{
	char *dir = img_scratch("disk"), *a = args("", dir);
	struct run r = inspect(a);

	cr_assert_eq(r.status, 1);
	cr_assert(img_contains(r.err, "does not exist"), "%s", r.err);
	run_free(&r);
	free(a);
	a = args("--json", dir);
	r = inspect(a);
	cr_assert_eq(r.status, 1);
	cr_assert(img_contains(r.out, "\"ok\": false"), "%s", r.out);
	run_free(&r);
	free(a);
	img_scratch_free(dir);
}

Test(inspect, usage)
{
	struct run r = inspect("--help");
	int lines = 0;

	cr_assert_eq(r.status, 0);
	for (const char *p = r.out; *p; p++)
		lines += *p == '\n';
	cr_assert_leq(lines, 24, "--help must fit a screen (%d lines)", lines);
	run_free(&r);
	r = inspect("");
	cr_assert_eq(r.status, 2);
	cr_assert(img_contains(r.err, "which image?"));
	run_free(&r);
	r = inspect("--bogus x");
	cr_assert_eq(r.status, 2);
	run_free(&r);
}
