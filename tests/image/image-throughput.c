/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Throughput of the image writer and reader against a plain O_DIRECT
 * sequential writer and reader of the same bytes, on the same filesystem,
 * in the same run. Not part of the test suite: it writes several GiB.
 *
 *   image-throughput [--dir D] [--gib N] [--chunk-mib C] [--depth Q]
 *                    [--zero-pct P] [--zstd L]
 *
 * The caller's device->host copies are not simulated: on a GPU a DMA engine
 * fills the staging buffers, not the CPU. The buffers cycle through a pool
 * larger than the last-level cache, so checksums and zero checks read from
 * memory as they would after a DMA. Times include the final fsync (and, for
 * the image, the manifest and the rename).
 */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include "image.h"

#define POOL_BYTES (256ull << 20)

struct cfg {
	const char *dir;
	uint64_t bytes;
	uint32_t chunk;
	unsigned depth;
	unsigned zero_pct;
	int zstd;
};

/* Staging buffers: the first half dense, the second all zeros, each half
 * bigger than the last-level cache. A chunk takes the next free buffer of
 * the kind it stands for, as if the DMA had just filled it. */
struct pool {
	unsigned char **buf;
	bool *busy;
	unsigned n, next[2];
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what, int err)
{
	fprintf(stderr, "image-throughput: %s: %s\n", what, strerror(err));
	exit(1);
}

static void pool_init(struct pool *p, const struct cfg *c)
{
	uint64_t x = 88172645463325252ull;

	p->n = 2 * (unsigned)(POOL_BYTES / c->chunk);
	if (p->n < 4 * c->depth)
		p->n = 4 * c->depth;
	p->buf = calloc(p->n, sizeof(*p->buf));
	p->busy = calloc(p->n, sizeof(*p->busy));
	p->next[0] = 0;
	p->next[1] = p->n / 2;
	for (unsigned i = 0; i < p->n; i++) {
		uint64_t *w;

		if (posix_memalign((void **)&p->buf[i], 4096, c->chunk))
			die("memory", ENOMEM);
		w = (uint64_t *)p->buf[i];
		if (i >= p->n / 2) {
			memset(w, 0, c->chunk);
			continue;
		}
		for (size_t k = 0; k < c->chunk / 8; k++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			w[k] = x;
		}
	}
}

/* Chunk i is zero for zero_pct percent of the chunks, spread evenly. */
static bool chunk_is_zero(const struct cfg *c, uint64_t i)
{
	return (i * 37 % 100) < c->zero_pct;
}

static const char *fs_name(const char *dir)
{
	struct statfs sf;

	if (statfs(dir, &sf) < 0)
		return "?";
	switch ((unsigned long)sf.f_type) {
	case 0xEF53: return "ext4";
	case 0x58465342: return "xfs";
	case 0x9123683E: return "btrfs";
	case 0x01021994: return "tmpfs";
	case 0x794c7630: return "overlayfs";
	case 0x6969: return "nfs";
	default: return "other";
	}
}

/* ---- plain O_DIRECT --------------------------------------------------------- */

static double plain_sync(const struct cfg *c, struct pool *p, const char *path, bool write)
{
	int fd = open(path, (write ? O_WRONLY | O_CREAT | O_TRUNC : O_RDONLY) | O_DIRECT, 0600);
	double t0 = now();

	if (fd < 0)
		die(path, errno);
	for (uint64_t off = 0, i = 0; off < c->bytes; off += c->chunk, i++) {
		void *b = p->buf[i % (p->n / 2)];
		ssize_t n = write ? pwrite(fd, b, c->chunk, (off_t)off) :
				    pread(fd, b, c->chunk, (off_t)off);

		if (n != (ssize_t)c->chunk)
			die(write ? "pwrite" : "pread", n < 0 ? errno : EIO);
	}
	if (write && fsync(fd) < 0)
		die("fsync", errno);
	close(fd);
	return now() - t0;
}

static double plain_uring(const struct cfg *c, struct pool *p, const char *path, bool write)
{
	int fd = open(path, (write ? O_WRONLY | O_CREAT | O_TRUNC : O_RDONLY) | O_DIRECT, 0600);
	uint64_t nchunks = c->bytes / c->chunk, queued = 0, done = 0;
	struct io_uring ring;
	double t0 = now();

	if (fd < 0)
		die(path, errno);
	if (io_uring_queue_init(c->depth, &ring, 0) < 0)
		return -1;
	if (write && ftruncate(fd, (off_t)c->bytes) < 0)
		die("ftruncate", errno);
	while (done < nchunks) {
		struct io_uring_cqe *cqe;

		while (queued < nchunks && queued - done < c->depth) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
			void *b = p->buf[queued % (p->n / 2)];

			if (write)
				io_uring_prep_write(sqe, fd, b, c->chunk, queued * c->chunk);
			else
				io_uring_prep_read(sqe, fd, b, c->chunk, queued * c->chunk);
			queued++;
		}
		io_uring_submit(&ring);
		if (io_uring_wait_cqe(&ring, &cqe) < 0)
			die("io_uring_wait_cqe", EIO);
		if (cqe->res != (int)c->chunk)
			die("io_uring transfer", cqe->res < 0 ? -cqe->res : EIO);
		io_uring_cqe_seen(&ring, cqe);
		done++;
	}
	if (write && fsync(fd) < 0)
		die("fsync", errno);
	io_uring_queue_exit(&ring);
	close(fd);
	return now() - t0;
}

/* ---- through the image API ------------------------------------------------- */

static void on_done(void *arg, const struct gs_image_io *io)
{
	struct pool *p = arg;

	for (unsigned i = 0; i < p->n; i++)
		if (p->buf[i] == io->buf) {
			p->busy[i] = false;
			return;
		}
}

static unsigned char *pool_take(struct pool *p, bool zero, int (*reap)(void *h, bool wait),
				void *h)
{
	unsigned half = p->n / 2;

	for (;;) {
		unsigned i = p->next[zero];

		if (!p->busy[i]) {
			p->busy[i] = true;
			p->next[zero] = zero ? half + (i + 1 - half) % half : (i + 1) % half;
			return p->buf[i];
		}
		reap(h, true);
	}
}

static int reap_w(void *h, bool wait)
{
	return gs_image_write_reap(h, wait);
}

static int reap_r(void *h, bool wait)
{
	return gs_image_read_reap(h, wait);
}

static double api_write(const struct cfg *c, struct pool *p, const char *dir, bool *direct)
{
	struct gs_image_write_opts o = {.chunk_size = c->chunk, .queue_depth = c->depth,
					.zstd_level = c->zstd, .replace = true};
	struct gs_image_writer *w;
	struct gs_image_stats st;
	char *err = NULL;
	double t0 = now();
	uint32_t id;
	int ret;

	ret = gs_image_writer_open(dir, &o, &w, &err);
	if (ret < 0) {
		fprintf(stderr, "image-throughput: %s\n", err);
		exit(1);
	}
	/* One extent per GiB, like a few large allocations. */
	for (uint64_t base = 0, i = 0; base < c->bytes; base += 1ull << 30) {
		uint64_t size = c->bytes - base < (1ull << 30) ? c->bytes - base : 1ull << 30;

		if (gs_image_add_extent(w, 0x7f0000000000ull + base, size, &id) < 0)
			goto fail;
		for (uint64_t off = 0; off < size; off += c->chunk, i++) {
			unsigned char *b = pool_take(p, chunk_is_zero(c, i), reap_w, w);

			if (gs_image_write_chunk(w, id, off, b, c->chunk, on_done, p) < 0)
				goto fail;
		}
	}
	if (gs_image_commit(w, NULL) < 0)
		goto fail;
	gs_image_write_stats(w, &st);
	*direct = st.direct_io;
	gs_image_writer_close(w);
	return now() - t0;
fail:
	fprintf(stderr, "image-throughput: %s\n", gs_image_writer_errmsg(w));
	exit(1);
}

static double api_read(const struct cfg *c, struct pool *p, const char *dir)
{
	struct gs_image_read_opts o = {.queue_depth = c->depth};
	struct gs_image_reader *r;
	char *err = NULL;
	double t0 = now();

	if (gs_image_reader_open(dir, &o, &r, &err) < 0) {
		fprintf(stderr, "image-throughput: %s\n", err);
		exit(1);
	}
	for (uint32_t x = 0; x < gs_image_extent_count(r); x++) {
		struct gs_image_extent e;

		gs_image_extent_get(r, x, &e);
		for (uint64_t off = 0; off < e.size; off += c->chunk) {
			unsigned char *b = pool_take(p, false, reap_r, r);

			if (gs_image_read_chunk(r, x, off, b, c->chunk, on_done, p) < 0) {
				fprintf(stderr, "image-throughput: %s\n", gs_image_reader_errmsg(r));
				exit(1);
			}
		}
	}
	gs_image_read_flush(r);
	gs_image_reader_close(r);
	return now() - t0;
}

static void rm_image(const char *dir)
{
	char path[4200];

	snprintf(path, sizeof(path), "%s/manifest.json", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/memory.img", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/modules", dir);
	rmdir(path);
	rmdir(dir);
}

static double gbps(const struct cfg *c, double s)
{
	return (double)c->bytes / s / 1e9;
}

int main(int argc, char **argv)
{
	struct cfg c = {.dir = ".", .bytes = 2ull << 30, .chunk = 2u << 20, .depth = 8,
			.zero_pct = 90};
	char plain[4096], img[4096];
	double ws, wu, wa, wz, rs, ru, ra, rz, best_w, best_r;
	struct pool p = {0};
	bool direct = false;
	unsigned sparse_pct;

	for (int i = 1; i < argc; i++) {
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(argv[i], "--help") == 0 || !v) {
			puts("usage: image-throughput [--dir D] [--gib N] [--chunk-mib C] [--depth Q] "
			     "[--zero-pct P] [--zstd L]");
			return strcmp(argv[i], "--help") == 0 ? 0 : 2;
		}
		if (strcmp(argv[i], "--dir") == 0)
			c.dir = v;
		else if (strcmp(argv[i], "--gib") == 0)
			c.bytes = (uint64_t)(strtod(v, NULL) * (1ull << 30));
		else if (strcmp(argv[i], "--chunk-mib") == 0)
			c.chunk = (uint32_t)strtoul(v, NULL, 10) << 20;
		else if (strcmp(argv[i], "--depth") == 0)
			c.depth = (unsigned)strtoul(v, NULL, 10);
		else if (strcmp(argv[i], "--zero-pct") == 0)
			c.zero_pct = (unsigned)strtoul(v, NULL, 10);
		else if (strcmp(argv[i], "--zstd") == 0)
			c.zstd = atoi(v);
		i++;
	}
	c.bytes -= c.bytes % c.chunk;
	snprintf(plain, sizeof(plain), "%s/throughput-plain.bin", c.dir);
	snprintf(img, sizeof(img), "%s/throughput-image", c.dir);
	pool_init(&p, &c);
	printf("image-throughput: %.2f GiB, chunk %u MiB, depth %u, %s (%s)\n",
	       (double)c.bytes / (1 << 30), c.chunk >> 20, c.depth, fs_name(c.dir), c.dir);

	ws = plain_sync(&c, &p, plain, true);
	rs = plain_sync(&c, &p, plain, false);
	wu = plain_uring(&c, &p, plain, true);
	ru = plain_uring(&c, &p, plain, false);
	unlink(plain);
	rm_image(img);
	sparse_pct = c.zero_pct;
	c.zero_pct = 0;
	wa = api_write(&c, &p, img, &direct);
	ra = api_read(&c, &p, img);
	rm_image(img);
	c.zero_pct = sparse_pct;
	wz = api_write(&c, &p, img, &direct);
	rz = api_read(&c, &p, img);
	rm_image(img);

	best_w = ws < wu || wu < 0 ? ws : wu;
	best_r = rs < ru || ru < 0 ? rs : ru;
	printf("write  plain O_DIRECT pwrite (QD1)    %6.2f GB/s\n", gbps(&c, ws));
	printf("write  plain O_DIRECT io_uring (QD%u)  %6.2f GB/s\n", c.depth, gbps(&c, wu));
	printf("write  image, dense (%s)        %6.2f GB/s   %3.0f%% of best plain\n",
	       direct ? "O_DIRECT" : "buffered", gbps(&c, wa), 100 * best_w / wa);
	printf("write  image, %u%% zero chunks         %6.2f GB/s   %.1f x faster than dense\n",
	       c.zero_pct, gbps(&c, wz), wa / wz);
	printf("read   plain O_DIRECT pread (QD1)     %6.2f GB/s\n", gbps(&c, rs));
	printf("read   plain O_DIRECT io_uring (QD%u)  %6.2f GB/s\n", c.depth, gbps(&c, ru));
	printf("read   image, dense, verified         %6.2f GB/s   %3.0f%% of best plain\n",
	       gbps(&c, ra), 100 * best_r / ra);
	printf("read   image, %u%% zero chunks         %6.2f GB/s   %.1f x faster than dense\n",
	       c.zero_pct, gbps(&c, rz), ra / rz);
	return 0;
}
