/* SPDX-License-Identifier: Apache-2.0 */
/* DIR.tmp + fsync + rename: a crash never leaves something at DIR, an
 * existing DIR is refused or replaced atomically, misuse of the API gives
 * clear errors. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "img_test.h"

static const struct gs_image_write_opts std_opts = {.chunk_size = IMG_STD_CHUNK};

static bool exists(const char *dir, const char *suffix)
{
	char *p;
	struct stat st;
	bool ret;

	cr_assert(asprintf(&p, "%s%s", dir, suffix) > 0);
	ret = lstat(p, &st) == 0;
	free(p);
	return ret;
}

/* Write part of an image, no commit. */
static struct gs_image_writer *half_written(const char *dir)
{
	struct gs_image_writer *w;
	void *buf;
	uint32_t id;
	char *err;

	cr_assert_eq(gs_image_writer_open(dir, &std_opts, &w, &err), 0, "%s", err);
	cr_assert_eq(posix_memalign(&buf, 4096, IMG_STD_CHUNK), 0);
	cr_assert_eq(gs_image_add_extent(w, 0x10000, 3 * IMG_STD_CHUNK, &id), 0);
	img_fill(&img_std[0], 0, buf, IMG_STD_CHUNK);
	cr_assert_eq(gs_image_write_chunk(w, id, 0, buf, IMG_STD_CHUNK, NULL, NULL), 0);
	cr_assert_eq(gs_image_write_flush(w), 0);
	free(buf);
	return w;
}

Test(protocol, crash_before_commit)
{
	char *dir = img_scratch("disk"), *msg;
	pid_t pid = fork();
	int status;

	cr_assert_geq(pid, 0);
	if (pid == 0) {
		half_written(dir);
		_exit(0);  /* the "crash": no commit, no close */
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	cr_assert_not(exists(dir, ""), "a crashed dump left something at DIR");
	cr_assert(exists(dir, ".tmp"));
	cr_assert_eq(img_open_err(dir, &msg), -ENOENT);
	cr_assert(img_contains(msg, ".tmp is what an interrupted dump left"), "%s", msg);
	free(msg);
	/* The next dump clears the leftover and succeeds. */
	img_write(dir, &std_opts, img_std, img_std_n);
	img_check(dir, NULL, img_std, img_std_n);
	cr_assert_not(exists(dir, ".tmp"));
	img_scratch_free(dir);
}

/* The worst moment: everything written and synced, rename not done. */
Test(protocol, crash_at_rename)
{
	char *dir = img_scratch("disk"), *msg;
	struct gs_image_writer *w;

	setenv("GPUSWAP_FAULT", "image-commit", 1);
	w = half_written(dir);
	/* Complete it, so only the fault stops the commit. */
	{
		void *buf;

		cr_assert_eq(posix_memalign(&buf, 4096, IMG_STD_CHUNK), 0);
		memset(buf, 1, IMG_STD_CHUNK);
		cr_assert_eq(gs_image_write_chunk(w, 0, IMG_STD_CHUNK, buf, IMG_STD_CHUNK, NULL,
						  NULL), 0);
		cr_assert_eq(gs_image_write_chunk(w, 0, 2 * IMG_STD_CHUNK, buf, IMG_STD_CHUNK,
						  NULL, NULL), 0);
		cr_assert_eq(gs_image_write_flush(w), 0);
		free(buf);
	}
	cr_assert_eq(gs_image_commit(w, NULL), -ECANCELED);
	cr_assert(img_contains(gs_image_writer_errmsg(w), "fault injected"));
	cr_assert_not(exists(dir, ""));
	cr_assert_eq(img_open_err(dir, &msg), -ENOENT);
	free(msg);
	gs_image_writer_close(w);
	cr_assert_not(exists(dir, ".tmp"), "an aborted writer removes DIR.tmp");
	img_scratch_free(dir);
}

Test(protocol, abort_leaves_nothing)
{
	char *dir = img_scratch("disk");

	gs_image_writer_close(half_written(dir));
	cr_assert_not(exists(dir, ""));
	cr_assert_not(exists(dir, ".tmp"));
	img_scratch_free(dir);
}

Test(protocol, refuse_existing)
{
	char *dir = img_scratch("disk"), *err = NULL;
	struct gs_image_writer *w = NULL;

	img_write(dir, &std_opts, img_std, 2);
	cr_assert_eq(gs_image_writer_open(dir, &std_opts, &w, &err), -EEXIST);
	cr_assert(img_contains(err, "already exists"), "%s", err);
	cr_assert_null(w);
	free(err);
	cr_assert_not(exists(dir, ".tmp"));
	img_check(dir, NULL, img_std, 2);
	img_scratch_free(dir);
}

Test(protocol, replace)
{
	struct gs_image_write_opts o = std_opts;
	char *dir = img_scratch("disk");

	img_write(dir, &std_opts, img_std, 2);
	o.replace = true;
	img_write(dir, &o, img_std, img_std_n);
	img_check(dir, NULL, img_std, img_std_n);
	cr_assert_not(exists(dir, ".tmp"), "the old image is removed");
	cr_assert_not(exists(dir, ".old"));
	/* Replacing where nothing is: a plain write. */
	img_rm_rf(dir);
	img_write(dir, &o, img_std, 1);
	img_check(dir, NULL, img_std, 1);
	img_scratch_free(dir);
}

/* Filesystems without renameat2 flags: the old image goes aside as
 * DIR.old for the moment between two renames, then is deleted. */
Test(protocol, replace_without_exchange)
{
	struct gs_image_write_opts o = std_opts;
	char *dir = img_scratch("disk"), *err = NULL;
	struct gs_image_writer *w = NULL;

	setenv("GPUSWAP_FAULT", "image-no-renameat2", 1);
	img_write(dir, &std_opts, img_std, 1);
	img_check(dir, NULL, img_std, 1);
	cr_assert_eq(gs_image_writer_open(dir, &std_opts, &w, &err), -EEXIST);
	free(err);
	o.replace = true;
	img_write(dir, &o, img_std, img_std_n);
	img_check(dir, NULL, img_std, img_std_n);
	cr_assert_not(exists(dir, ".tmp"));
	cr_assert_not(exists(dir, ".old"));
	img_scratch_free(dir);
}

/* Replacing deletes: never something that is not an image. */
Test(protocol, refuse_replacing_non_image)
{
	struct gs_image_write_opts o = std_opts;
	char *dir = img_scratch("disk"), *err = NULL;
	struct gs_image_writer *w = NULL;

	o.replace = true;
	cr_assert_eq(mkdir(dir, 0700), 0);
	img_write_file(dir, "thesis.tex", "precious", 8);
	cr_assert_eq(gs_image_writer_open(dir, &o, &w, &err), -EEXIST);
	cr_assert(img_contains(err, "not a gpuswap image"), "%s", err);
	free(err);
	cr_assert(exists(dir, "/thesis.tex"));
	img_scratch_free(dir);
}

Test(protocol, concurrent_writer_refused)
{
	char *dir = img_scratch("disk"), *err = NULL;
	struct gs_image_writer *a = half_written(dir), *b = NULL;

	cr_assert_eq(gs_image_writer_open(dir, &std_opts, &b, &err), -EBUSY);
	cr_assert(img_contains(err, "another process is writing"), "%s", err);
	free(err);
	gs_image_writer_close(a);
	img_scratch_free(dir);
}

Test(protocol, stale_tmp_with_foreign_file)
{
	char *dir = img_scratch("disk"), *tmp, *err = NULL;
	struct gs_image_writer *w = NULL;

	cr_assert(asprintf(&tmp, "%s.tmp", dir) > 0);
	cr_assert_eq(mkdir(tmp, 0700), 0);
	img_write_file(tmp, "notes.txt", "x", 1);
	cr_assert_eq(gs_image_writer_open(dir, &std_opts, &w, &err), -ENOTEMPTY);
	cr_assert(img_contains(err, "notes.txt"), "%s", err);
	cr_assert(exists(tmp, "/notes.txt"), "foreign files are left alone");
	free(err);
	img_rm_rf(tmp);
	free(tmp);
	img_scratch_free(dir);
}

static void count_status(void *arg, const struct gs_image_io *io)
{
	int *worst = arg;

	if (io->status < *worst)
		*worst = io->status;
}

/* A full filesystem: the callback hears it, the writer refuses everything
 * after, the commit fails, nothing is left behind. */
Test(protocol, write_error)
{
	char *dir = img_scratch("disk"), *err;
	struct gs_image_writer *w;
	int worst = 0;
	void *buf;
	uint32_t id;

	setenv("GPUSWAP_FAULT", "image-write-enospc", 1);
	cr_assert_eq(gs_image_writer_open(dir, &std_opts, &w, &err), 0, "%s", err);
	cr_assert_eq(posix_memalign(&buf, 4096, IMG_STD_CHUNK), 0);
	memset(buf, 3, IMG_STD_CHUNK);
	cr_assert_eq(gs_image_add_extent(w, 0x10000, 2 * IMG_STD_CHUNK, &id), 0);
	cr_assert_eq(gs_image_write_chunk(w, id, 0, buf, IMG_STD_CHUNK, count_status, &worst), 0);
	cr_assert_eq(gs_image_write_flush(w), -ENOSPC);
	cr_assert_eq(worst, -ENOSPC);
	cr_assert(img_contains(gs_image_writer_errmsg(w), "extent 0 chunk 0"),
		  "%s", gs_image_writer_errmsg(w));
	cr_assert(img_contains(gs_image_writer_errmsg(w), "free space"));
	cr_assert_eq(gs_image_write_chunk(w, id, IMG_STD_CHUNK, buf, IMG_STD_CHUNK, NULL, NULL),
		     -ENOSPC);
	cr_assert_eq(gs_image_commit(w, NULL), -ENOSPC);
	gs_image_writer_close(w);
	free(buf);
	cr_assert_not(exists(dir, ""));
	cr_assert_not(exists(dir, ".tmp"));
	img_scratch_free(dir);
}

Test(protocol, missing_chunk_refused)
{
	char *dir = img_scratch("disk");
	struct gs_image_writer *w = half_written(dir);

	cr_assert_eq(gs_image_commit(w, NULL), -EINVAL);
	cr_assert(img_contains(gs_image_writer_errmsg(w), "extent 0 (va 0x10000"),
		  "%s", gs_image_writer_errmsg(w));
	cr_assert(img_contains(gs_image_writer_errmsg(w), "chunk 1 of 3 was never written"),
		  "%s", gs_image_writer_errmsg(w));
	gs_image_writer_close(w);
	cr_assert_not(exists(dir, ""));
	img_scratch_free(dir);
}

Test(protocol, api_misuse)
{
	char *dir = img_scratch("disk"), *err = NULL;
	struct gs_image_write_opts bad_chunk = {.chunk_size = 3 << 20};
	struct gs_image_writer *w = NULL;
	unsigned char *buf = NULL;
	uint32_t id, id2;

	cr_assert_eq(gs_image_writer_open(dir, &bad_chunk, &w, &err), -EINVAL);
	cr_assert(img_contains(err, "not a power of two"), "%s", err);
	free(err);
	cr_assert_not(exists(dir, ".tmp"));
	cr_assert_eq(gs_image_writer_open("", &std_opts, &w, &err), -EINVAL);
	free(err);

	cr_assert_eq(gs_image_writer_open(dir, &std_opts, &w, &err), 0, "%s", err);
	cr_assert_eq(posix_memalign((void **)&buf, 4096, 2 * IMG_STD_CHUNK), 0);
	memset(buf, 7, 2 * IMG_STD_CHUNK);
	cr_assert_eq(gs_image_add_extent(w, 0x100000, 100000, &id), 0);
	cr_assert_eq(gs_image_add_extent(w, 0x100000 + 99999, 10, &id2), -EINVAL);
	cr_assert(img_contains(gs_image_writer_errmsg(w), "overlaps extent 0"));
	cr_assert_eq(gs_image_add_extent(w, 0xfff00, 0x101, &id2), -EINVAL);
	cr_assert_eq(gs_image_add_extent(w, 0x900000, 0, &id2), -EINVAL);
	cr_assert_eq(gs_image_add_extent(w, 0xfff00, 0x100, &id2), 0, "adjacent is fine");
	cr_assert_eq(gs_image_write_chunk(w, 5, 0, buf, IMG_STD_CHUNK, NULL, NULL), -EINVAL);
	cr_assert_eq(gs_image_write_chunk(w, id, 4096, buf, IMG_STD_CHUNK, NULL, NULL), -EINVAL);
	cr_assert(img_contains(gs_image_writer_errmsg(w), "not a chunk start"));
	cr_assert_eq(gs_image_write_chunk(w, id, 0, buf + 512, IMG_STD_CHUNK, NULL, NULL),
		     -EINVAL);
	cr_assert(img_contains(gs_image_writer_errmsg(w), "not 4 KiB-aligned"));
	cr_assert_eq(gs_image_write_chunk(w, id, IMG_STD_CHUNK, buf, IMG_STD_CHUNK, NULL, NULL),
		     -EINVAL, "the last chunk is 100000 - 65536 bytes");
	cr_assert(img_contains(gs_image_writer_errmsg(w), "expected 34464"),
		  "%s", gs_image_writer_errmsg(w));
	cr_assert_eq(gs_image_write_chunk(w, id, 0, buf, IMG_STD_CHUNK, NULL, NULL), 0);
	cr_assert_eq(gs_image_write_chunk(w, id, 0, buf, IMG_STD_CHUNK, NULL, NULL), -EEXIST);
	cr_assert(img_contains(gs_image_writer_errmsg(w), "written twice"));
	gs_image_writer_close(w);
	free(buf);
	cr_assert_not(exists(dir, ".tmp"));
	img_scratch_free(dir);
}
