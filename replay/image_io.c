/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The I/O engine under the image writer and reader: one file, transfers of
 * whole chunks with several in flight, through io_uring when the kernel
 * lets us, else pread/pwrite. O_DIRECT keeps a multi-GiB dump from pushing
 * the machine's page cache out and from being copied once more by the CPU;
 * filesystems that refuse it (tmpfs, some FUSE/overlay set-ups) get
 * buffered I/O instead, at open or at the first transfer they reject.
 */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "image_internal.h"

struct image_io {
	int fd;                      /* O_DIRECT when direct */
	int fd_buffered;             /* opened on the first rejected direct transfer */
	bool direct;
	bool uring;
	struct io_uring ring;
	unsigned depth;
	unsigned inflight;
	int dirfd;
	char name[64];
	int oflags;
	/* pread/pwrite engine: transfers done at submit, handed back at reap */
	struct image_io_req *done_head, *done_tail;
};

static int open_direct(int dirfd, const char *name, int oflags, mode_t mode)
{
	if (image_fault("image-no-direct")) {
		errno = EINVAL;
		return -1;
	}
	return openat(dirfd, name, oflags | O_DIRECT, mode);
}

int image_io_open(int dirfd, const char *name, int oflags, mode_t mode, bool try_direct,
		  unsigned depth, struct image_io **out, char *why, size_t why_len)
{
	struct image_io *io = calloc(1, sizeof(*io));
	int ret;

	if (!io) {
		snprintf(why, why_len, "out of memory");
		return -ENOMEM;
	}
	io->fd = -1;
	io->fd_buffered = -1;
	io->depth = depth;
	io->dirfd = dirfd;
	io->oflags = oflags | O_CLOEXEC | O_NOFOLLOW;
	snprintf(io->name, sizeof(io->name), "%s", name);
	if (try_direct) {
		io->fd = open_direct(dirfd, name, io->oflags, mode);
		/* EINVAL: the filesystem has no O_DIRECT; anything else is a
		 * real error and buffered I/O would hit it too. */
		if (io->fd >= 0)
			io->direct = true;
		else if (errno != EINVAL)
			goto fail_errno;
	}
	if (io->fd < 0) {
		io->fd = openat(dirfd, name, io->oflags, mode);
		if (io->fd < 0)
			goto fail_errno;
	}
	if (!image_fault("image-no-uring")) {
		ret = io_uring_queue_init(depth, &io->ring, 0);
		io->uring = ret == 0;
	}
	*out = io;
	return 0;

fail_errno:
	ret = -errno;
	snprintf(why, why_len, "%s", strerror(errno));
	free(io);
	return ret;
}

/* The transfer's remaining part goes to `fd`. */
static int queue_rest(struct image_io *io, struct image_io_req *req, int fd)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&io->ring);
	int ret;

	if (!sqe) {
		/* Cannot happen with at most `depth` in flight on a `depth`
		 * ring, but an SQ slot can be transiently taken: submit first. */
		io_uring_submit(&io->ring);
		sqe = io_uring_get_sqe(&io->ring);
		if (!sqe)
			return -EBUSY;
	}
	if (req->write)
		io_uring_prep_write(sqe, fd, (char *)req->buf + req->done, req->len - req->done,
				    req->off + req->done);
	else
		io_uring_prep_read(sqe, fd, (char *)req->buf + req->done, req->len - req->done,
				   req->off + req->done);
	io_uring_sqe_set_data(sqe, req);
	ret = io_uring_submit(&io->ring);
	return ret < 0 ? ret : 0;
}

static int buffered_fd(struct image_io *io)
{
	if (io->fd_buffered < 0) {
		io->fd_buffered = openat(io->dirfd, io->name,
					 io->oflags & ~(O_CREAT | O_EXCL | O_TRUNC));
		if (io->fd_buffered < 0)
			return -errno;
	}
	return io->fd_buffered;
}

static int current_fd(struct image_io *io)
{
	return io->direct ? io->fd : buffered_fd(io);
}

/* Synchronous transfer of what is left of req; returns 0 or -errno, with
 * req->done advanced (short only at end of file on a read). */
static int transfer_sync(struct image_io *io, struct image_io_req *req)
{
	while (req->done < req->len) {
		int fd = current_fd(io);
		ssize_t n;

		if (fd < 0)
			return fd;
		if (req->write)
			n = pwrite(fd, (char *)req->buf + req->done, req->len - req->done,
				   (off_t)(req->off + req->done));
		else
			n = pread(fd, (char *)req->buf + req->done, req->len - req->done,
				  (off_t)(req->off + req->done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EINVAL && io->direct) {
				io->direct = false;
				continue;
			}
			return -errno;
		}
		if (n == 0) {
			if (req->write)
				return -ENOSPC;
			break;
		}
		req->done += (uint32_t)n;
	}
	return 0;
}

int image_io_submit(struct image_io *io, struct image_io_req *req)
{
	int ret, fd;

	if (io->inflight >= io->depth)
		return -EBUSY;
	req->done = 0;
	req->res = 0;
	req->next = NULL;
	if (!io->uring) {
		ret = transfer_sync(io, req);
		req->res = ret < 0 ? ret : (int)req->done;
		if (io->done_tail)
			io->done_tail->next = req;
		else
			io->done_head = req;
		io->done_tail = req;
		io->inflight++;
		return 0;
	}
	fd = current_fd(io);
	if (fd < 0)
		return fd;
	ret = queue_rest(io, req, fd);
	if (ret < 0)
		return ret;
	io->inflight++;
	return 0;
}

/* A completion: 1 when the request is finished, 0 when it was resubmitted. */
static int handle_cqe(struct image_io *io, struct image_io_req *req, int res)
{
	int ret, fd;

	if (res == -EINTR || res == -EAGAIN)
		goto again;
	/* Direct I/O refused for this transfer (an alignment the device does
	 * not take, a filesystem that accepts the flag but not the I/O): the
	 * rest of the file goes buffered. */
	if (res == -EINVAL && io->direct) {
		io->direct = false;
		goto again;
	}
	if (res < 0) {
		req->res = res;
		return 1;
	}
	if (res == 0) {
		req->res = req->write ? -ENOSPC : (int)req->done;
		return 1;
	}
	req->done += (uint32_t)res;
	if (req->done >= req->len) {
		req->res = (int)req->done;
		return 1;
	}
again:
	fd = current_fd(io);
	ret = fd < 0 ? fd : queue_rest(io, req, fd);
	if (ret < 0) {
		req->res = ret;
		return 1;
	}
	return 0;
}

int image_io_reap(struct image_io *io, bool wait,
		  void (*cb)(void *arg, struct image_io_req *req), void *arg)
{
	int handled = 0;

	if (!io->uring) {
		while (io->done_head) {
			struct image_io_req *req = io->done_head;

			io->done_head = req->next;
			if (!io->done_head)
				io->done_tail = NULL;
			io->inflight--;
			handled++;
			cb(arg, req);
		}
		return handled;
	}
	while (io->inflight > 0) {
		struct io_uring_cqe *cqe;
		struct image_io_req *req;
		int ret, res;

		if (wait && handled == 0)
			ret = io_uring_wait_cqe(&io->ring, &cqe);
		else
			ret = io_uring_peek_cqe(&io->ring, &cqe);
		if (ret == -EAGAIN)
			break;
		if (ret == -EINTR)
			continue;
		if (ret < 0)
			return ret;
		req = io_uring_cqe_get_data(cqe);
		res = cqe->res;
		io_uring_cqe_seen(&io->ring, cqe);
		if (!handle_cqe(io, req, res))
			continue;
		io->inflight--;
		handled++;
		cb(arg, req);
	}
	return handled;
}

unsigned image_io_inflight(const struct image_io *io)
{
	return io->inflight;
}

int image_io_fd(const struct image_io *io)
{
	return io->fd;
}

bool image_io_direct(const struct image_io *io)
{
	return io->direct;
}

bool image_io_uring(const struct image_io *io)
{
	return io->uring;
}

int image_io_pwrite_all(struct image_io *io, const void *buf, size_t len, uint64_t off)
{
	struct image_io_req req = {.buf = (void *)buf, .len = (uint32_t)len, .off = off,
				   .write = true};

	return transfer_sync(io, &req);
}

int image_io_pread_all(struct image_io *io, void *buf, size_t len, uint64_t off)
{
	struct image_io_req req = {.buf = buf, .len = (uint32_t)len, .off = off};
	int ret = transfer_sync(io, &req);

	if (ret < 0)
		return ret;
	return req.done == len ? 0 : -ENODATA;
}

static void drop(void *arg, struct image_io_req *req)
{
}

void image_io_close(struct image_io *io)
{
	if (!io)
		return;
	/* The kernel may still be writing into buffers the caller is about
	 * to free: wait for everything first. */
	while (io->inflight > 0)
		if (image_io_reap(io, true, drop, NULL) < 0)
			break;
	if (io->uring)
		io_uring_queue_exit(&io->ring);
	if (io->fd_buffered >= 0)
		close(io->fd_buffered);
	close(io->fd);
	free(io);
}
