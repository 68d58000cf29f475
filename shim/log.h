/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Logging for every part of the shim (DESIGN.md §10).
 *
 *   GPUSWAP_LOG       error | warn | info | debug | trace   (default warn)
 *   GPUSWAP_LOG_FILE  append to this file instead of stderr
 *
 * Each line is "gpuswap[PID]: SUBSYS: LEVEL: message". The subsystem comes
 * from GS_LOG_SUBSYS, which a source file defines before including this
 * header ("shim", "tracker", "replay"). Lines are written with one write(2)
 * and no stdio, so concurrent lines never interleave and logging is safe
 * in a fork child or while another thread holds a stdio lock.
 */
#ifndef GS_LOG_H
#define GS_LOG_H

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>

#ifndef GS_LOG_SUBSYS
#define GS_LOG_SUBSYS "shim"
#endif

enum gs_log_level {
	GS_LOG_ERROR,
	GS_LOG_WARN,
	GS_LOG_INFO,
	GS_LOG_DEBUG,
	GS_LOG_TRACE,
};

/* Most verbose level enabled; -1 until the environment has been read. */
extern _Atomic int gs_log_threshold;

/* Read GPUSWAP_LOG / GPUSWAP_LOG_FILE once (pthread_once; the log file is
 * opened there, O_APPEND). Called by the shim's initialisation, and by the
 * first log line of a program that logs before it. */
void gs_log_setup(void);

static inline bool gs_log_enabled(int level)
{
	int threshold = atomic_load_explicit(&gs_log_threshold, memory_order_relaxed);

	if (__builtin_expect(threshold < 0, 0)) {
		gs_log_setup();
		threshold = atomic_load_explicit(&gs_log_threshold, memory_order_relaxed);
	}
	return level <= threshold;
}

/* errnum != 0 appends ": strerror(errnum)". */
void gs_log_write(int level, const char *subsys, int errnum, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Parse a GPUSWAP_LOG value; -1 if it names no level. */
int gs_log_parse_level(const char *name);

#define gs_log_at(level, errnum, ...)                                          \
	do {                                                                   \
		if (gs_log_enabled(level))                                     \
			gs_log_write((level), GS_LOG_SUBSYS, (errnum), __VA_ARGS__); \
	} while (0)

#define gs_error(...) gs_log_at(GS_LOG_ERROR, 0, __VA_ARGS__)
#define gs_warn(...)  gs_log_at(GS_LOG_WARN, 0, __VA_ARGS__)
#define gs_info(...)  gs_log_at(GS_LOG_INFO, 0, __VA_ARGS__)
#define gs_debug(...) gs_log_at(GS_LOG_DEBUG, 0, __VA_ARGS__)
#define gs_trace(...) gs_log_at(GS_LOG_TRACE, 0, __VA_ARGS__)

/* perror-style: the message, then ": " and strerror(errno). errno is read
 * before anything else can change it and is preserved. */
#define gs_perror(...)                                                         \
	do {                                                                   \
		int gs_saved_errno_ = errno;                                   \
		gs_log_at(GS_LOG_ERROR, gs_saved_errno_, __VA_ARGS__);         \
		errno = gs_saved_errno_;                                       \
	} while (0)
#define gs_pwarn(...)                                                          \
	do {                                                                   \
		int gs_saved_errno_ = errno;                                   \
		gs_log_at(GS_LOG_WARN, gs_saved_errno_, __VA_ARGS__);          \
		errno = gs_saved_errno_;                                       \
	} while (0)

#endif
