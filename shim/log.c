/* SPDX-License-Identifier: Apache-2.0 */
#define GS_LOG_SUBSYS "shim"
#include "log.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

_Atomic int gs_log_threshold = -1;

/* Written once inside pthread_once, read afterwards: no lock needed. */
static int log_fd = STDERR_FILENO;
static pthread_once_t log_once = PTHREAD_ONCE_INIT;

static const char *const level_names[] = {
	[GS_LOG_ERROR] = "error",
	[GS_LOG_WARN] = "warn",
	[GS_LOG_INFO] = "info",
	[GS_LOG_DEBUG] = "debug",
	[GS_LOG_TRACE] = "trace",
};

int gs_log_parse_level(const char *name)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
		if (strcasecmp(name, level_names[i]) == 0)
			return (int)i;
	/* "warning" is what people type. */
	if (strcasecmp(name, "warning") == 0)
		return GS_LOG_WARN;
	return -1;
}

static void log_emit(int level, const char *subsys, int errnum, const char *fmt, va_list ap)
	__attribute__((format(printf, 4, 0)));

static void log_emit_f(int level, const char *subsys, int errnum, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void log_emit_f(int level, const char *subsys, int errnum, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit(level, subsys, errnum, fmt, ap);
	va_end(ap);
}

static void log_setup_once(void)
{
	const char *level = getenv("GPUSWAP_LOG");
	const char *file = getenv("GPUSWAP_LOG_FILE");
	int threshold = GS_LOG_WARN;
	int bad_level = 0;
	int open_errno = 0;

	if (level && *level) {
		int parsed = gs_log_parse_level(level);

		if (parsed < 0)
			bad_level = 1;
		else
			threshold = parsed;
	}
	if (file && *file) {
		/* O_APPEND: several processes (a job's workers) may share one
		 * file, and each line is a single write. */
		int fd = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);

		if (fd >= 0)
			log_fd = fd;
		else
			open_errno = errno;
	}
	atomic_store_explicit(&gs_log_threshold, threshold, memory_order_relaxed);

	/* log_emit, not gs_log_write: we are inside the pthread_once that
	 * gs_log_write would wait for. */
	if (bad_level)
		log_emit_f(GS_LOG_WARN, "shim", 0,
			     "GPUSWAP_LOG=%s is not one of error, warn, info, debug, trace; using warn",
			     level);
	if (open_errno)
		log_emit_f(GS_LOG_WARN, "shim", open_errno,
			     "cannot open GPUSWAP_LOG_FILE=%s, logging to stderr", file);
}

void gs_log_setup(void)
{
	pthread_once(&log_once, log_setup_once);
}

static void write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		buf += n;
		len -= (size_t)n;
	}
}

void gs_log_write(int level, const char *subsys, int errnum, const char *fmt, ...)
{
	va_list ap;

	gs_log_setup();
	va_start(ap, fmt);
	log_emit(level, subsys, errnum, fmt, ap);
	va_end(ap);
}

static void log_emit(int level, const char *subsys, int errnum, const char *fmt, va_list ap)
{
	char line[2048];
	size_t cap = sizeof(line) - 1; /* room for the final newline */
	size_t len;
	int saved_errno = errno;
	int n;

	if (level < GS_LOG_ERROR || level > GS_LOG_TRACE)
		level = GS_LOG_ERROR;

	n = snprintf(line, cap, "gpuswap[%d]: %s: %s: ", (int)getpid(), subsys,
		     level_names[level]);
	len = n < 0 ? 0 : ((size_t)n < cap ? (size_t)n : cap - 1);

	n = vsnprintf(line + len, cap - len, fmt, ap);
	if (n > 0)
		len += (size_t)n < cap - len ? (size_t)n : cap - len - 1;

	if (errnum && len < cap - 1) {
		char ebuf[128];
		/* The GNU strerror_r returns the message, possibly not in ebuf. */
		const char *msg = strerror_r(errnum, ebuf, sizeof(ebuf));

		n = snprintf(line + len, cap - len, ": %s", msg);
		if (n > 0)
			len += (size_t)n < cap - len ? (size_t)n : cap - len - 1;
	}
	if (len == cap - 1)
		memcpy(line + len - 3, "...", 3); /* truncated */
	line[len++] = '\n';
	write_all(log_fd, line, len);
	errno = saved_errno;
}
