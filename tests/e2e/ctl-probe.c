/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ctl-probe: speaks the control protocol at the byte level, to test what
 * the tools never send. Exits 0 (pass), 1 (fail) or 77 (skip).
 *
 *   ctl-probe protocol SOCKET PID    malformed, huge, split, pipelined and
 *                                    flooding requests; the process must
 *                                    answer each with the right error and
 *                                    keep answering afterwards
 *   ctl-probe peercred SOCKET PID UID
 *                                    connect as another uid (root only): the
 *                                    directory keeps it out, and with
 *                                    CAP_DAC_OVERRIDE kept, SO_PEERCRED does
 *   ctl-probe request SOCKET JSON    send one line, print every line back
 *   ctl-probe jget PATH < FILE       the value at PATH (a.b.0.c) of the JSON
 *                                    object on the last line of FILE
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <jansson.h>
#include <linux/capability.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "protocol.h"

/* The control thread's connection limit (shim/control_internal.h). */
#define MAX_CONNS 16

static const char *sock_path;
static long target_pid;
static int failures;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "FAIL: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	failures++;
}

static int dial(void)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", sock_path);
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
		int e = errno;

		if (fd >= 0)
			close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* One line (without '\n') into a malloc'd string; NULL on EOF or after
 * 5 s. Reads a byte at a time: lines after it stay in the socket. */
static char *read_line(int fd)
{
	size_t len = 0, cap = 256;
	char *buf = malloc(cap);

	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		char ch;
		ssize_t n;

		if (poll(&p, 1, 5000) <= 0) {
			free(buf);
			return NULL;
		}
		n = read(fd, &ch, 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			free(buf);
			return NULL;
		}
		if (ch == '\n') {
			buf[len] = '\0';
			return buf;
		}
		if (len + 1 == cap)
			buf = realloc(buf, cap *= 2);
		buf[len++] = ch;
	}
}

static const char *code_of(json_t *reply)
{
	const char *code = json_string_value(json_object_get(reply, GS_KEY_CODE));

	return code ? code : "";
}

static json_t *read_reply(int fd)
{
	char *line = read_line(fd);
	json_t *j;

	if (!line)
		return NULL;
	j = json_loads(line, 0, NULL);
	if (!j)
		fail("reply is not JSON: %s", line);
	free(line);
	return j;
}

/* Send `raw` (bytes, not necessarily a line) on fd and check that the
 * reply's code is `code` (NULL: ok:true). */
static void expect(int fd, const void *raw, size_t len, const char *code, const char *what)
{
	json_t *r;
	const char *got;

	if (write_all(fd, raw, len) != 0) {
		fail("%s: write: %s", what, strerror(errno));
		return;
	}
	r = read_reply(fd);
	if (!r) {
		fail("%s: no reply", what);
		return;
	}
	got = json_string_value(json_object_get(r, GS_KEY_CODE));
	if (json_integer_value(json_object_get(r, GS_KEY_VERSION)) != GS_PROTO_VERSION)
		fail("%s: reply without \"v\":%d", what, GS_PROTO_VERSION);
	if (!code && !json_is_true(json_object_get(r, GS_KEY_OK)))
		fail("%s: expected success, got %s", what, got ? got : "?");
	else if (code && (json_is_true(json_object_get(r, GS_KEY_OK)) || !got ||
			  strcmp(got, code) != 0))
		fail("%s: expected code %s, got %s", what, code, got ? got : "success");
	else if (code && !json_string_value(json_object_get(r, GS_KEY_ERROR)))
		fail("%s: error reply without a message", what);
	json_decref(r);
}

/* A string literal's bytes, without its NUL. */
#define LIT(s) (s), (sizeof(s) - 1)

static void expect_line(int fd, const char *line, const char *code, const char *what)
{
	char buf[8192];
	int n = snprintf(buf, sizeof(buf), "%s\n", line);

	expect(fd, buf, (size_t)n, code, what);
}

/* The process still answers status on a new connection, with its pid. */
static void expect_alive(const char *when)
{
	int fd = dial();
	json_t *r;

	if (fd < 0) {
		fail("%s: cannot connect any more: %s", when, strerror(errno));
		return;
	}
	write_all(fd, LIT("{\"v\":1,\"op\":\"status\"}\n"));
	r = read_reply(fd);
	if (!r || !json_is_true(json_object_get(r, GS_KEY_OK)) ||
	    json_integer_value(json_object_get(r, GS_KEY_PID)) != target_pid)
		fail("%s: status does not answer with pid %ld", when, target_pid);
	json_decref(r);
	close(fd);
}

/* After an error that ends the connection: EOF must follow. */
static void expect_closed(int fd, const char *what)
{
	char *line = read_line(fd);

	if (line) {
		fail("%s: connection still open (got %s)", what, line);
		free(line);
	}
}

static int test_protocol(void)
{
	static const struct {
		const char *line, *code, *what;
	} cases[] = {
		{ "{\"v\":1,\"op\":\"status\"}", NULL, "status" },
		{ "{\"v\":1,", GS_CODE_BAD_REQUEST, "truncated JSON" },
		{ "garbage", GS_CODE_BAD_REQUEST, "not JSON" },
		{ "[1,2]", GS_CODE_BAD_REQUEST, "array" },
		{ "\"status\"", GS_CODE_BAD_REQUEST, "string" },
		{ "42", GS_CODE_BAD_REQUEST, "number" },
		{ "null", GS_CODE_BAD_REQUEST, "null" },
		{ "{\"op\":\"status\"}", GS_CODE_BAD_VERSION, "no version" },
		{ "{\"v\":2,\"op\":\"status\"}", GS_CODE_BAD_VERSION, "version 2" },
		{ "{\"v\":\"1\",\"op\":\"status\"}", GS_CODE_BAD_VERSION, "version as a string" },
		{ "{\"v\":1}", GS_CODE_UNKNOWN_OP, "no op" },
		{ "{\"v\":1,\"op\":42}", GS_CODE_UNKNOWN_OP, "op not a string" },
		{ "{\"v\":1,\"op\":\"explode\"}", GS_CODE_UNKNOWN_OP, "unknown op" },
		{ "{\"v\":1,\"op\":\"status\",\"op\":\"freeze\"}", GS_CODE_BAD_REQUEST,
		  "duplicate key" },
		{ "{\"v\":1,\"op\":\"status\",\"x\":1}", GS_CODE_BAD_REQUEST, "unknown argument" },
		{ "{\"v\":1,\"op\":\"freeze\",\"timeout_ms\":\"5\"}", GS_CODE_BAD_REQUEST,
		  "timeout as a string" },
		{ "{\"v\":1,\"op\":\"freeze\",\"timeout_ms\":0}", GS_CODE_BAD_REQUEST, "timeout 0" },
		{ "{\"v\":1,\"op\":\"freeze\",\"timeout_ms\":-5}", GS_CODE_BAD_REQUEST,
		  "negative timeout" },
		{ "{\"v\":1,\"op\":\"freeze\",\"timeout_ms\":99999999999}", GS_CODE_BAD_REQUEST,
		  "huge timeout" },
		{ "{\"v\":1,\"op\":\"freeze\",\"timeout_ms\":1.5}", GS_CODE_BAD_REQUEST,
		  "fractional timeout" },
		{ "{\"v\":1,\"op\":\"freeze\",\"release\":\"yes\"}", GS_CODE_BAD_REQUEST,
		  "release not a boolean" },
		{ "{\"v\":1,\"op\":\"freeze\",\"image\":\"relative/dir\"}", GS_CODE_BAD_REQUEST,
		  "relative image" },
		{ "{\"v\":1,\"op\":\"thaw\",\"image\":7}", GS_CODE_BAD_REQUEST, "image not a string" },
		{ "{\"v\":1,\"op\":\"thaw\",\"device\":\"\"}", GS_CODE_BAD_REQUEST, "empty device" },
		{ "{\"v\":1,\"op\":\"thaw\",\"device\":{}}", GS_CODE_BAD_REQUEST, "device object" },
		{ "{\"v\":1,\"op\":\"thaw\",\"device\":-1}", GS_CODE_BAD_REQUEST, "negative device" },
		{ "{\"v\":1,\"op\":\"swap\"}", GS_CODE_BAD_REQUEST, "swap without device" },
		{ "{\"v\":1,\"op\":\"status\",\"s\":\"\\u0000\"}", GS_CODE_BAD_REQUEST,
		  "NUL escape" },
		{ "{\"v\":1,\"op\":\"status\"}", NULL, "status after errors" },
	};
	char *big;
	json_t *r;
	int fd, fds[MAX_CONNS + 1];

	/* Every case on one connection: an error never ends it. */
	fd = dial();
	if (fd < 0) {
		fprintf(stderr, "cannot connect to %s: %s\n", sock_path, strerror(errno));
		return 1;
	}
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		expect_line(fd, cases[i].line, cases[i].code, cases[i].what);

	/* Bytes no JSON text may hold. */
	expect(fd, LIT("{\"v\":1,\"op\":\"st\xff\xfe\"}\n"), GS_CODE_BAD_REQUEST, "invalid UTF-8");
	expect(fd, LIT("{\"v\":1,\0\"op\":\"status\"}\n"), GS_CODE_BAD_REQUEST, "raw NUL byte");
	/* Blank lines are skipped; CRLF is accepted. */
	expect(fd, LIT("\n\r\n\n{\"v\":1,\"op\":\"status\"}\r\n"), NULL, "blank lines, CRLF");

	/* Three requests in one write: three replies, in order. */
	if (write_all(fd, LIT("{\"v\":1,\"op\":\"status\"}\nnope\n{\"v\":9}\n")) == 0) {
		static const char *const want[] = { NULL, GS_CODE_BAD_REQUEST, GS_CODE_BAD_VERSION };

		for (int i = 0; i < 3; i++) {
			bool ok;

			r = read_reply(fd);
			ok = want[i] ? strcmp(code_of(r), want[i]) == 0
				     : json_is_true(json_object_get(r, GS_KEY_OK));
			if (!r || !ok)
				fail("pipelined reply %d: expected %s", i, want[i] ? want[i] : "ok");
			json_decref(r);
		}
	}

	/* One request a byte at a time: partial reads. */
	{
		const char *req = "{\"v\":1,\"op\":\"status\"}\n";

		for (size_t i = 0; req[i]; i++) {
			const struct timespec ms = { .tv_nsec = 1000000 };

			write_all(fd, req + i, 1);
			nanosleep(&ms, NULL);
		}
		r = read_reply(fd);
		if (!r || !json_is_true(json_object_get(r, GS_KEY_OK)))
			fail("request split into single bytes: no status");
		json_decref(r);
	}

	/* Deep nesting within the size limit: an error, not a stack overflow. */
	big = malloc(GS_PROTO_MAX_REQUEST + 2);
	memset(big, '[', 30000);
	memset(big + 30000, ']', 30000);
	big[60000] = '\n';
	expect(fd, big, 60001, GS_CODE_BAD_REQUEST, "nesting 30000 deep");

	/* Exactly the limit: a status padded with spaces to GS_PROTO_MAX_REQUEST
	 * bytes, then the newline. Accepted. */
	memset(big, ' ', GS_PROTO_MAX_REQUEST);
	memcpy(big, LIT("{\"v\":1,\"op\":\"status\"}"));
	big[GS_PROTO_MAX_REQUEST] = '\n';
	expect(fd, big, GS_PROTO_MAX_REQUEST + 1, NULL, "request of exactly the maximum size");
	close(fd);

	/* One byte over, never terminated: "too_long", then the connection
	 * ends (what follows cannot be trusted to start a request). */
	fd = dial();
	memset(big, 'x', GS_PROTO_MAX_REQUEST + 1);
	expect(fd, big, GS_PROTO_MAX_REQUEST + 1, GS_CODE_TOO_LONG, "request over the maximum");
	expect_closed(fd, "after a request over the maximum");
	close(fd);
	/* Far over: 16 MiB streamed at it; the writer must see an error or
	 * the close, not block for ever. */
	fd = dial();
	{
		const struct timeval tv = { .tv_sec = 5 };
		size_t sent = 0;

		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		while (sent < (16u << 20) && send(fd, big, GS_PROTO_MAX_REQUEST, MSG_NOSIGNAL) > 0)
			sent += GS_PROTO_MAX_REQUEST;
		if (sent >= (16u << 20))
			fail("16 MiB without a newline were all accepted");
	}
	close(fd);
	free(big);
	expect_alive("after huge requests");

	/* A request ended by shutting down the write side. */
	fd = dial();
	write_all(fd, LIT("{\"v\":1,\"op\":\"status\"}"));
	shutdown(fd, SHUT_WR);
	r = read_reply(fd);
	if (!r || !json_is_true(json_object_get(r, GS_KEY_OK)))
		fail("request ended by EOF: no status");
	json_decref(r);
	close(fd);

	/* Half a request, then gone. */
	fd = dial();
	write_all(fd, LIT("{\"v\":1,\"op\":"));
	close(fd);

	/* Connection flood: the slots fill, one more is told "busy". */
	for (int i = 0; i < MAX_CONNS; i++) {
		fds[i] = dial();
		if (fds[i] < 0)
			fail("connection %d refused: %s", i, strerror(errno));
	}
	{
		/* Give the control thread time to accept them all. */
		const struct timespec t = { .tv_nsec = 200 * 1000000L };

		nanosleep(&t, NULL);
	}
	fds[MAX_CONNS] = dial();
	if (fds[MAX_CONNS] >= 0) {
		r = read_reply(fds[MAX_CONNS]);
		if (!r || strcmp(code_of(r), GS_CODE_BUSY) != 0)
			fail("connection %d beyond the limit: no \"busy\" reply", MAX_CONNS + 1);
		json_decref(r);
		close(fds[MAX_CONNS]);
	}
	for (int i = 0; i < MAX_CONNS; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	{
		const struct timespec t = { .tv_nsec = 200 * 1000000L };

		nanosleep(&t, NULL);
	}
	expect_alive("after the flood");
	if (kill((pid_t)target_pid, 0) != 0)
		fail("process %ld is gone", target_pid);
	if (!failures)
		printf("protocol: every malformed request answered; process %ld answers on\n",
		       target_pid);
	return failures ? 1 : 0;
}

/* ---- another user -------------------------------------------------------------- */

static int keep_dac_override(void)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[2];
	unsigned caps = (1u << CAP_DAC_OVERRIDE) | (1u << CAP_DAC_READ_SEARCH);

	memset(data, 0, sizeof(data));
	data[0].effective = caps;
	data[0].permitted = caps;
	return (int)syscall(SYS_capset, &hdr, data);
}

/* In a child: become `uid` (group too), optionally keeping the right to
 * pass directory permissions; connect; report what happened on stdout
 * of the child as one word: "eacces", "refused" (a permission reply then
 * EOF), "answered" (it was served!), or "error". */
static int child_connect(uid_t uid, bool keepcaps)
{
	json_t *r;
	int fd;

	if (setgroups(0, NULL) != 0 || setresgid(uid, uid, uid) != 0 ||
	    (keepcaps && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) ||
	    setresuid(uid, uid, uid) != 0) {
		perror("dropping to the other uid");
		return 10;
	}
	if (keepcaps && keep_dac_override() != 0) {
		perror("capset CAP_DAC_OVERRIDE");
		return 77;
	}
	fd = dial();
	if (fd < 0) {
		if (errno == EACCES || errno == EPERM)
			return 20;
		perror("connect");
		return 10;
	}
	write_all(fd, LIT("{\"v\":1,\"op\":\"status\"}\n"));
	r = read_reply(fd);
	if (r && !json_is_true(json_object_get(r, GS_KEY_OK)) &&
	    strcmp(code_of(r), GS_CODE_PERMISSION) == 0 && !read_line(fd)) {
		printf("refused with: %s\n", json_string_value(json_object_get(r, GS_KEY_ERROR)));
		return 30;
	}
	if (r && json_is_true(json_object_get(r, GS_KEY_OK)))
		return 40;
	return 10;
}

static int run_child(uid_t uid, bool keepcaps)
{
	pid_t pid;
	int st;

	fflush(stdout);
	pid = fork();
	if (pid == 0)
		_exit(child_connect(uid, keepcaps));
	if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

static int test_peercred(uid_t uid)
{
	int rc;

	if (geteuid() != 0) {
		printf("skip (77): connecting as another uid needs root\n");
		return 77;
	}
	/* The only descriptors open are stdio: the child opens everything
	 * after it has become the other user. */
	rc = run_child(uid, false);
	if (rc == 20)
		printf("uid %lu: the runtime directory keeps it out (EACCES)\n", (unsigned long)uid);
	else if (rc == 30)
		printf("uid %lu: refused by SO_PEERCRED\n", (unsigned long)uid);
	else
		fail("uid %lu without privileges: got outcome %d, not a refusal", (unsigned long)uid,
		     rc);

	/* Past the directory with CAP_DAC_OVERRIDE, but still uid `uid`: the
	 * SO_PEERCRED check is all that stands in the way. */
	rc = run_child(uid, true);
	if (rc == 77) {
		printf("skip (77) of the SO_PEERCRED half: cannot keep CAP_DAC_OVERRIDE here\n");
		return failures ? 1 : 77;
	}
	if (rc == 30)
		printf("uid %lu with CAP_DAC_OVERRIDE: refused by SO_PEERCRED\n",
		       (unsigned long)uid);
	else
		fail("uid %lu past the directory: got outcome %d (40: it was served!)",
		     (unsigned long)uid, rc);
	expect_alive("after the other user's attempts");
	return failures ? 1 : 0;
}

static int request(const char *line)
{
	int fd = dial();
	char *reply;

	if (fd < 0) {
		fprintf(stderr, "cannot connect to %s: %s\n", sock_path, strerror(errno));
		return 1;
	}
	write_all(fd, line, strlen(line));
	write_all(fd, "\n", 1);
	while ((reply = read_line(fd))) {
		json_t *j = json_loads(reply, 0, NULL);
		bool progress = json_object_get(j, GS_KEY_PROGRESS) != NULL;

		printf("%s\n", reply);
		free(reply);
		json_decref(j);
		if (!progress)
			break;
	}
	close(fd);
	return 0;
}

/* For shell tests: one value out of a reply, by a dotted path (array
 * elements by index); strings bare, the rest as JSON; nothing if absent. */
static int jget(const char *path)
{
	char line[1 << 16], last[1 << 16] = "";
	json_t *root, *v;
	char *copy = strdup(path), *save = NULL;

	while (fgets(line, sizeof(line), stdin))
		if (line[0] != '\n')
			memcpy(last, line, sizeof(last));
	root = json_loads(last, 0, NULL);
	v = root;
	for (char *k = strtok_r(copy, ".", &save); v && k; k = strtok_r(NULL, ".", &save))
		v = json_is_array(v) ? json_array_get(v, (size_t)atol(k)) : json_object_get(v, k);
	if (json_is_string(v)) {
		printf("%s\n", json_string_value(v));
	} else if (v) {
		char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

		printf("%s\n", text ? text : "");
		free(text);
	}
	json_decref(root);
	free(copy);
	return 0;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc == 4 && strcmp(argv[1], "protocol") == 0) {
		sock_path = argv[2];
		target_pid = atol(argv[3]);
		return test_protocol();
	}
	if (argc == 5 && strcmp(argv[1], "peercred") == 0) {
		sock_path = argv[2];
		target_pid = atol(argv[3]);
		return test_peercred((uid_t)atol(argv[4]));
	}
	if (argc == 3 && strcmp(argv[1], "jget") == 0)
		return jget(argv[2]);
	if (argc == 4 && strcmp(argv[1], "request") == 0) {
		sock_path = argv[2];
		return request(argv[3]);
	}
	fprintf(stderr, "usage: ctl-probe protocol SOCKET PID | peercred SOCKET PID UID | "
			"request SOCKET JSON | jget PATH\n");
	return 2;
}
