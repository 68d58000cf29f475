/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The client side of the control protocol (docs/protocol.md), and what the
 * gpu-freeze, gpu-thaw, gpu-swap and gpu-ps tools share: finding a
 * process's socket, one request with its streamed progress, the progress
 * bar, error messages that say what to do, exit statuses.
 *
 * Functions return 0 or -errno; where a message is due it goes to *err
 * (malloc'd, the caller frees it) together with a protocol error code
 * (GS_CODE_*) in *code when that is non-NULL.
 */
#ifndef GS_CLIENT_H
#define GS_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

/* Exit statuses of every gpu-* tool. */
enum {
	GS_EXIT_OK = 0,          /* the operation succeeded */
	GS_EXIT_FAILED = 1,      /* it failed; the process is in the state reported */
	GS_EXIT_USAGE = 2,       /* bad command line */
	GS_EXIT_UNREACHABLE = 3, /* no socket, stale socket, another user's, lost connection */
	GS_EXIT_INTERRUPTED = 130,
};

struct gs_client {
	int fd;
	pid_t pid;
	char path[108];   /* sizeof(sun_path) */
	char *buf;        /* bytes received and not yet returned */
	size_t len, cap;
};

/* Connect to the control socket of `pid`: in the caller's runtime
 * directory, and for root also in the default directories of the
 * process's owner. */
int gs_client_connect(struct gs_client *c, pid_t pid, char **err, const char **code);

/* Connect to the socket at `path` (gpu-ps, tests). */
int gs_client_connect_path(struct gs_client *c, const char *path, pid_t pid, char **err,
			   const char **code);

/* Send one request (one line). */
int gs_client_send(struct gs_client *c, json_t *req, char **err, const char **code);

/* The next message; timeout_ms < 0 waits for ever. -ETIMEDOUT, -EINTR (a
 * signal arrived: the caller decides), or another -errno with *err. */
int gs_client_recv(struct gs_client *c, int timeout_ms, json_t **msg, char **err,
		   const char **code);

void gs_client_close(struct gs_client *c);

/* ---- what the tools share ---------------------------------------------------- */

struct gs_tool {
	const char *name;     /* "gpu-freeze" */
	bool json;            /* --json: progress and the final reply on stdout */
	bool bar;             /* a progress bar on stderr (a terminal) */
	/* progress bar state */
	bool bar_drawn;
	char phase[48];
	double phase_start;
	double last_draw;
};

void gs_tool_init(struct gs_tool *t, const char *name);

/* Parse a PID argument (a positive decimal); message on failure. */
int gs_tool_parse_pid(struct gs_tool *t, const char *arg, pid_t *pid);

/* The one PID operand left after the options at argv[optind]; a missing
 * or extra operand also prints usage(stderr), as the tools' other
 * command-line mistakes do. */
int gs_tool_pid_operand(struct gs_tool *t, int argc, char **argv, int optind,
			void (*usage)(FILE *), pid_t *pid);

/* Parse a --timeout in seconds, within what the protocol accepts in
 * milliseconds; message on failure. */
int gs_tool_parse_timeout(struct gs_tool *t, const char *arg, double *seconds);

/* Check a --device SPEC's spelling: N, GPU-<uuid>, or a=b[,c=d...]. */
int gs_tool_check_device(struct gs_tool *t, const char *spec);

/* An absolute path for `path` (the process resolves it, not the tool, and
 * its working directory is not ours). NULL when out of memory. */
char *gs_tool_abspath(const char *path);

/* A request for operation `op`, with its target device SPEC when device is
 * not NULL and its --timeout when timeout_s >= 0. NULL (with a message)
 * when out of memory. */
json_t *gs_tool_new_request(struct gs_tool *t, const char *op, const char *device,
			    double timeout_s);

/* Put `image` into req as an absolute path; *abs_image gets that path
 * (the caller frees it) for the messages. Message on failure. */
int gs_tool_set_image(struct gs_tool *t, json_t *req, const char *image, char **abs_image);

/* "name: message" on stderr. */
void gs_tool_error(struct gs_tool *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Send `req` (reference kept by the caller) to `pid` and wait for the
 * final reply, drawing progress on the way (or echoing it with --json).
 * Returns the exit status; *reply gets the final reply (on
 * GS_EXIT_UNREACHABLE a reply-shaped error object built here), which the
 * caller passes to gs_tool_report.
 */
int gs_tool_request(struct gs_tool *t, pid_t pid, json_t *req, json_t **reply);

/*
 * Print the outcome: with --json the reply as the last line of stdout;
 * on failure the error (and what state the process is in) on stderr.
 * Returns the exit status for it. `done` is printed on success without
 * --json (NULL: nothing).
 */
int gs_tool_report(struct gs_tool *t, pid_t pid, json_t *reply, const char *done);

/* The exit status a reply calls for. */
int gs_tool_exit_status(json_t *reply);

/* A reply-shaped error object made by the tool itself. */
json_t *gs_tool_error_reply(const char *code, const char *msg);

/* obj[key] if it is a string, else `fallback`. */
const char *gs_json_str(json_t *obj, const char *key, const char *fallback);

/* "1.5 GiB" */
void gs_format_bytes(uint64_t bytes, char *buf, size_t len);

#endif
