/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Logging (shim/log.c): GPUSWAP_LOG levels, GPUSWAP_LOG_FILE opened in append
 * mode, the per-subsystem prefix, the perror-style variant, truncation. The
 * configuration is read once per process, so each case runs in a child.
 */
#define GS_LOG_SUBSYS "tracker"
#include "log.h"

#include <fcntl.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shimtest.h"

static char path[] = "/tmp/gs-test-log-XXXXXX";

static void emit_all(void)
{
	char big[4000];

	gs_error("an error %d", 1);
	gs_warn("a warning %s", "w");
	gs_info("some info");
	gs_debug("debugging");
	gs_trace("tracing");
	errno = ENOENT;
	gs_perror("opening %s", "/nonexistent");
	if (errno != ENOENT)
		gs_error("gs_perror changed errno to %d", errno);
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	gs_error("%s", big);
}

/* Run emit_all() in a child with the given environment; the file's text. */
static char *run_case(const char *level, bool to_file, const char *initial)
{
	static char buf[65536];
	pid_t pid;
	int fd, status;
	ssize_t n;

	fd = open(path, O_WRONLY | O_TRUNC);
	REQUIRE(fd >= 0, "open %s", path);
	if (initial)
		REQUIRE(write(fd, initial, strlen(initial)) == (ssize_t)strlen(initial), "write");
	close(fd);

	pid = fork();
	REQUIRE(pid >= 0, "fork");
	if (pid == 0) {
		if (level)
			setenv("GPUSWAP_LOG", level, 1);
		else
			unsetenv("GPUSWAP_LOG");
		if (to_file) {
			setenv("GPUSWAP_LOG_FILE", path, 1);
		} else {
			/* stderr is the file: the default destination. */
			unsetenv("GPUSWAP_LOG_FILE");
			fd = open(path, O_WRONLY | O_APPEND);
			dup2(fd, 2);
		}
		emit_all();
		_exit(0);
	}
	waitpid(pid, &status, 0);
	REQUIRE(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed");
	fd = open(path, O_RDONLY);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n < 0 ? 0 : n] = '\0';
	return buf;
}

static int count(const char *text, const char *needle)
{
	int n = 0;

	for (const char *p = text; (p = strstr(p, needle)); p++)
		n++;
	return n;
}

int main(void)
{
	char *out, prefix[64];
	int fd = mkstemp(path);

	REQUIRE(fd >= 0, "mkstemp");
	close(fd);

	/* debug level, to a file that already has content. */
	out = run_case("debug", true, "previous line\n");
	CHECK(strncmp(out, "previous line\n", 14) == 0, "GPUSWAP_LOG_FILE was not appended to");
	CHECK(count(out, ": tracker: error: an error 1\n") == 1, "error line:\n%s", out);
	CHECK(count(out, ": tracker: warn: a warning w\n") == 1, "warn line");
	CHECK(count(out, ": tracker: info: some info\n") == 1, "info line");
	CHECK(count(out, ": tracker: debug: debugging\n") == 1, "debug line");
	CHECK(count(out, "tracing") == 0, "trace line at debug level");
	CHECK(count(out, ": tracker: error: opening /nonexistent: No such file or directory\n") == 1,
	      "perror line:\n%s", out);
	CHECK(count(out, "changed errno") == 0, "gs_perror does not preserve errno");
	CHECK(count(out, "xxx...\n") == 1, "long line not truncated with ...");
	snprintf(prefix, sizeof(prefix), "gpuswap[");
	CHECK(count(out, prefix) == 6, "%d prefixed lines, want 6", count(out, prefix));

	/* error only. */
	out = run_case("error", true, NULL);
	CHECK(count(out, "\n") == 3, "GPUSWAP_LOG=error: want 3 lines, got:\n%s", out);
	CHECK(count(out, ": warn: ") == 0, "warning at error level");

	/* Default: warn, on stderr. */
	out = run_case(NULL, false, NULL);
	CHECK(count(out, ": error: ") == 3 && count(out, ": warn: ") == 1 &&
	      count(out, ": info: ") == 0, "default level is not warn:\n%s", out);

	/* trace shows everything; names are case-insensitive. */
	out = run_case("TRACE", true, NULL);
	CHECK(count(out, ": trace: tracing\n") == 1, "trace line missing at trace level");

	/* A bad level is reported and falls back to warn. */
	out = run_case("loud", true, NULL);
	CHECK(count(out, "GPUSWAP_LOG=loud is not one of") == 1, "bad level not reported:\n%s", out);
	CHECK(count(out, ": info: ") == 0 && count(out, ": warn: a warning") == 1,
	      "bad level did not fall back to warn");

	unlink(path);
	return shimtest_result("log");
}
