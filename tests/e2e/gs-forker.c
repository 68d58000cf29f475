/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gs-forker: the control socket across fork() and exec(), for a process
 * run under the shim with GPUSWAP_RUNTIME_DIR set. An application: cuda.h
 * and the driver stub only. Exits 0 (pass) or 1 (fail).
 *
 *   gs-forker fork   cuInit; fork: the child has no control thread and no
 *                    descriptor of the parent's listening socket; its own
 *                    cuInit gives it its own socket, which its exit removes
 *                    while the parent's stays and answers
 *   gs-forker exec   cuInit, then exec itself: the new image (same pid)
 *                    replaces the stale socket the old one left
 */
#include <cuda.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *dir;
static int failures;

#define CHECK(cond, ...)                                                   \
	do {                                                               \
		if (!(cond)) {                                             \
			fprintf(stderr, "gs-forker[%ld]: FAIL: ", (long)getpid()); \
			fprintf(stderr, __VA_ARGS__);                      \
			fputc('\n', stderr);                               \
			failures++;                                        \
		}                                                          \
	} while (0)

static void socket_path(pid_t pid, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%ld.sock", dir, (long)pid);
}

/* 0: a socket with mode 0600; -1: none; 1: something else. */
static int socket_state(pid_t pid)
{
	char path[PATH_MAX];
	struct stat st;

	socket_path(pid, path, sizeof(path));
	if (lstat(path, &st) != 0)
		return -1;
	return S_ISSOCK(st.st_mode) && (st.st_mode & 0777) == 0600 ? 0 : 1;
}

/* Whether pid's socket answers status with that pid. */
static bool answers(pid_t pid)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	char buf[8192], want[64];
	size_t got = 0;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	static const char req[] = "{\"v\":1,\"op\":\"status\"}\n";

	socket_path(pid, addr.sun_path, sizeof(addr.sun_path));
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 ||
	    write(fd, req, sizeof(req) - 1) != (ssize_t)(sizeof(req) - 1)) {
		if (fd >= 0)
			close(fd);
		return false;
	}
	while (got + 1 < sizeof(buf)) {
		ssize_t n = read(fd, buf + got, sizeof(buf) - 1 - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
		if (memchr(buf, '\n', got))
			break;
	}
	close(fd);
	buf[got] = '\0';
	snprintf(want, sizeof(want), "\"pid\":%ld,", (long)pid);
	return strstr(buf, "\"ok\":true") && strstr(buf, want);
}

/* Listening sockets among our descriptors (SO_ACCEPTCONN). */
static int listening_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	if (!d)
		return -1;
	while ((de = readdir(d))) {
		int fd = atoi(de->d_name), on = 0;
		socklen_t len = sizeof(on);

		if (de->d_name[0] == '.' || fd == dirfd(d))
			continue;
		if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) == 0 && on)
			n++;
	}
	closedir(d);
	return n;
}

static int test_fork(void)
{
	pid_t parent = getpid(), child;
	int st;

	CHECK(cuInit(0) == CUDA_SUCCESS, "cuInit");
	CHECK(socket_state(parent) == 0, "no 0600 socket for the parent after cuInit");
	CHECK(answers(parent), "the parent's socket does not answer");

	fflush(NULL);
	child = fork();
	if (child == 0) {
		pid_t self = getpid();

		CHECK(socket_state(self) == -1, "the child has a socket before using the driver");
		CHECK(listening_fds() == 0, "the child holds a listening socket");
		CHECK(socket_state(parent) == 0, "the parent's socket vanished in the child");
		/* A driver that refuses a fork child is within its rights; the
		 * simulated one accepts, and then the child is controllable. */
		if (cuInit(0) == CUDA_SUCCESS) {
			CHECK(socket_state(self) == 0, "no socket after the child's cuInit");
			CHECK(answers(self), "the child's socket does not answer");
		}
		exit(failures ? 1 : 0); /* exit(), not _exit(): atexit handlers run */
	}
	CHECK(child > 0, "fork: %s", strerror(errno));
	CHECK(waitpid(child, &st, 0) == child && WIFEXITED(st) && WEXITSTATUS(st) == 0,
	      "the child failed");
	CHECK(socket_state(child) == -1, "the child's exit left its socket");
	CHECK(socket_state(parent) == 0, "the child's exit removed the parent's socket");
	CHECK(answers(parent), "the parent's socket stopped answering after the fork");
	return failures ? 1 : 0;
}

static int test_exec(const char *self)
{
	CHECK(cuInit(0) == CUDA_SUCCESS, "cuInit");
	CHECK(socket_state(getpid()) == 0, "no socket after cuInit");
	fflush(NULL);
	/* exec runs no atexit handler: the socket file stays, its listening
	 * descriptor (close-on-exec) does not. */
	execl(self, self, "exec-after", (char *)NULL);
	fprintf(stderr, "exec %s: %s\n", self, strerror(errno));
	return 1;
}

static int test_exec_after(void)
{
	CHECK(socket_state(getpid()) == 0, "the socket file did not survive the exec");
	CHECK(!answers(getpid()), "the pre-exec socket still answers");
	CHECK(cuInit(0) == CUDA_SUCCESS, "cuInit after exec");
	CHECK(socket_state(getpid()) == 0, "no socket after cuInit in the new image");
	CHECK(answers(getpid()), "the stale socket was not replaced");
	return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
	dir = getenv("GPUSWAP_RUNTIME_DIR");
	if (!dir || argc != 2) {
		fprintf(stderr, "usage: GPUSWAP_RUNTIME_DIR=DIR gs-forker fork|exec\n");
		return 2;
	}
	if (strcmp(argv[1], "fork") == 0)
		return test_fork();
	if (strcmp(argv[1], "exec") == 0)
		return test_exec(argv[0]);
	if (strcmp(argv[1], "exec-after") == 0)
		return test_exec_after();
	return 2;
}
