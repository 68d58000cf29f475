/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The control protocol between the shim's control thread (shim/control.c)
 * and the gpu-* tools (tools/client.c): the one header both sides share,
 * so names cannot drift apart. docs/protocol.md describes the protocol for
 * people; this file is its table of names.
 *
 * Transport: a UNIX stream socket per process, <runtime dir>/<pid>.sock.
 * Framing: one JSON object per line ('\n'), UTF-8, no line longer than
 * GS_PROTO_MAX_REQUEST (requests) or GS_PROTO_MAX_REPLY (replies).
 *
 * Self-contained (libc only): the tools include nothing else of the shim.
 */
#ifndef GS_PROTOCOL_H
#define GS_PROTOCOL_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

/* Bumped on any change an old peer would misread. */
#define GS_PROTO_VERSION 1

/* A request line longer than this is refused (and the connection closed:
 * the rest of the line cannot be trusted to be a new request). */
#define GS_PROTO_MAX_REQUEST (64 * 1024)
/* Replies carry reports that grow with the process's state; a client
 * refuses a line longer than this rather than buffer without bound. */
#define GS_PROTO_MAX_REPLY (16 * 1024 * 1024)

/* Environment and runtime directory (DESIGN.md §9, §10). */
#define GS_PROTO_ENV_RUNTIME_DIR "GPUSWAP_RUNTIME_DIR"
#define GS_PROTO_SOCKET_SUFFIX ".sock"
/* What the directory must look like: ours, a real directory, no access for
 * group or others. */
#define GS_PROTO_DIR_MODE 0700
#define GS_PROTO_SOCKET_MODE 0600

/* ---- requests ------------------------------------------------------------ */

#define GS_KEY_VERSION "v"
#define GS_KEY_OP "op"

#define GS_OP_STATUS "status"   /* -> pid, command, state, report.status */
#define GS_OP_CHECK "check"     /* -> report.check: migratable, blockers */
#define GS_OP_FREEZE "freeze"   /* [timeout_ms] [release] [image] */
#define GS_OP_RELEASE "release" /* [image] */
#define GS_OP_THAW "thaw"       /* [device] [image] */
#define GS_OP_SWAP "swap"       /* device [timeout_ms] */

/* Arguments. */
#define GS_KEY_TIMEOUT_MS "timeout_ms" /* integer, drain timeout of a freeze */
#define GS_KEY_RELEASE "release"       /* boolean: freeze, then release */
#define GS_KEY_IMAGE "image"           /* string: absolute image directory */
#define GS_KEY_DEVICE "device"         /* string: ordinal, GPU-<uuid>, a=b,c=d */
#define GS_KEY_VIA_HOST "via_host"     /* boolean: swap through host memory only */
#define GS_KEY_FORCE "force"           /* boolean: swap even onto the GPUs it is on */

/* Default and largest drain timeout of a freeze, in milliseconds. */
#define GS_PROTO_DEFAULT_TIMEOUT_MS 10000
#define GS_PROTO_MAX_TIMEOUT_MS (3600 * 1000)
/* Longest device spec accepted. */
#define GS_PROTO_MAX_DEVICE_SPEC 256

/* ---- replies -------------------------------------------------------------- */

#define GS_KEY_OK "ok"
#define GS_KEY_ERROR "error"   /* message: what happened, what to do */
#define GS_KEY_CODE "code"     /* one of GS_CODE_* */
#define GS_KEY_ERRNO "errno"   /* positive errno behind the error, if any */
#define GS_KEY_STEP "step"     /* the step of a compound operation that failed */
#define GS_KEY_STATE "state"   /* running | frozen | released, after the op */
#define GS_KEY_REPORT "report" /* object: one replay report per step */
#define GS_KEY_ELAPSED_MS "elapsed_ms"
#define GS_KEY_ALREADY "already" /* true: nothing to do, it was in that state */
#define GS_KEY_PID "pid"
#define GS_KEY_UID "uid"
#define GS_KEY_COMMAND "command"
#define GS_KEY_BUSY "busy"     /* status during an operation: op, phase, done, total */
#define GS_KEY_IMPLEMENTED "implemented" /* status: false while replay is missing */
#define GS_KEY_STATUS_ERROR "status_error" /* status: the summary failed, why */

/* Streamed before the final reply of a long operation:
 *   {"v":1,"progress":{"phase":"dump","done":N,"total":M}} */
#define GS_KEY_PROGRESS "progress"
#define GS_KEY_PHASE "phase"
#define GS_KEY_DONE "done"
#define GS_KEY_TOTAL "total"

/* Error codes: stable words a script can test. */
#define GS_CODE_BAD_REQUEST "bad_request"  /* not JSON, not an object, bad argument */
#define GS_CODE_BAD_VERSION "bad_version"  /* "v" missing or not GS_PROTO_VERSION */
#define GS_CODE_UNKNOWN_OP "unknown_op"
#define GS_CODE_TOO_LONG "too_long"        /* request over GS_PROTO_MAX_REQUEST */
#define GS_CODE_BUSY "busy"                /* another operation is running */
#define GS_CODE_PERMISSION "permission"    /* peer is another user (SO_PEERCRED) */
#define GS_CODE_NOT_IMPLEMENTED "not_implemented" /* replay missing (-ENOSYS) */
#define GS_CODE_TIMEOUT "timeout"          /* drain timed out; process running again */
#define GS_CODE_STATE "state"              /* not possible in the current state */
#define GS_CODE_INVALID "invalid"          /* the argument is wrong (device, image) */
#define GS_CODE_NO_MEMORY "no_memory"      /* the target cannot hold the state */
#define GS_CODE_NO_DEVICE "no_device"
#define GS_CODE_UNSUPPORTED "unsupported"  /* live objects a migration cannot carry */
#define GS_CODE_IO "io"                    /* reading or writing the image */
#define GS_CODE_CORRUPT "corrupt"          /* image fails its checks */
#define GS_CODE_FAILED "failed"            /* anything else */

/* Codes the tools produce themselves when no reply could be had (their
 * --json output still ends with a reply-shaped object). */
#define GS_CODE_NO_SOCKET "no_socket"      /* no control socket for that pid */
#define GS_CODE_STALE "stale"              /* a socket nobody listens on */
#define GS_CODE_DISCONNECTED "disconnected" /* connection lost before the reply */
#define GS_CODE_PROTOCOL "protocol"        /* a reply the tool cannot read */
#define GS_CODE_NO_ANSWER "no_answer"      /* no reply in time (gpu-ps) */
#define GS_CODE_INTERRUPTED "interrupted"  /* the tool was interrupted; the
						   * operation goes on in the process */

/* ---- where the sockets live ------------------------------------------------- */

/*
 * The runtime directory of the calling user: $GPUSWAP_RUNTIME_DIR, else
 * $XDG_RUNTIME_DIR/gpuswap, else /tmp/gpuswap-<uid>. Shared by the shim and
 * the tools so both always agree. 0, or -ENAMETOOLONG.
 */
static inline int gs_proto_runtime_dir(char *buf, size_t len)
{
	const char *dir = getenv(GS_PROTO_ENV_RUNTIME_DIR);
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	int n;

	if (dir && *dir)
		n = snprintf(buf, len, "%s", dir);
	else if (xdg && *xdg == '/')
		n = snprintf(buf, len, "%s/gpuswap", xdg);
	else
		n = snprintf(buf, len, "/tmp/gpuswap-%lu", (unsigned long)geteuid());
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	/* "dir/" and "dir" name the same place; keep socket paths canonical. */
	while (n > 1 && buf[n - 1] == '/')
		buf[--n] = '\0';
	return 0;
}

/* "<dir>/<pid>.sock" into buf. 0, or -ENAMETOOLONG. */
static inline int gs_proto_socket_path(char *buf, size_t len, const char *dir, pid_t pid)
{
	int n = snprintf(buf, len, "%s/%ld" GS_PROTO_SOCKET_SUFFIX, dir, (long)pid);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

#endif
