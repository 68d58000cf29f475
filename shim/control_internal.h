/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Internals shared by the control plane's files; not part of the API
 * (callers include control.h only):
 *
 *   control.c        the control thread: set-up of the socket, peer
 *                    credentials, connections, the poll loop, fork and exit
 *   control_proto.c  the protocol: JSON replies, writing lines to a peer,
 *                    parsing and checking requests, status
 *   control_op.c     the operation thread: running replay, progress lines,
 *                    fault injection, and the fallbacks used when replay is
 *                    not linked in
 *
 * Everything here is touched by the control thread, and by the operation
 * thread only where struct op and struct ctl_state say so.
 */
#ifndef GS_CONTROL_INTERNAL_H
#define GS_CONTROL_INTERNAL_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>

#include "control.h"

#define MAX_CONNS 16
/* How long a reply may wait for a client that does not read. */
#define REPLY_DEADLINE_MS 5000
#define PHASE_MAX 48

struct conn {
	int fd;          /* -1: free slot */
	pid_t peer_pid;
	char *in;        /* GS_PROTO_MAX_REQUEST + 1 bytes, allocated on first read */
	size_t in_len;
	bool lent;       /* owned by the operation thread until it hands it back */
	bool dead;       /* a write failed: close when back */
	bool eof;        /* peer shut its side: close once nothing is pending */
	uint64_t last_ms;
};

struct op {
	const char *name;    /* GS_OP_* */
	json_t *request;
	struct conn *conn;
	uint64_t start_ms;
	/* progress: written by the operation thread, read for status under
	 * gs_ctl.lock */
	char phase[PHASE_MAX];
	uint64_t done, total;
	/* what was last sent, operation thread only */
	char sent_phase[PHASE_MAX];
	uint64_t sent_ms;
};

struct ctl_state {
	/* Guards starting, the connection table and op progress. Never held
	 * across a replay call or a blocking write. */
	pthread_mutex_t lock;
	_Atomic pid_t owner_pid;  /* process that made the socket; 0: none */
	pid_t failed_pid;         /* set-up failed in this process: don't retry */
	int listen_fd;
	int wake[2];              /* operation thread -> control thread */
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct conn conns[MAX_CONNS];
	/* control thread only */
	bool op_running;
	pthread_t op_thread;
	struct op op;
	json_t *last_status;      /* status report of the last quiet moment */
	char last_state[16];
};

/* The one control plane of this process (control.c). */
extern struct ctl_state gs_ctl;

static inline uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* One operation of the protocol, and the arguments it accepts. */
struct op_def {
	const char *name;
	const char *const *keys;  /* allowed arguments */
	bool needs_device;
};

/* ---- control_proto.c: replies and writing to a peer ----------------------- */

/* A JSON string of s, with every byte outside printable ASCII replaced
 * when s is not valid UTF-8. */
json_t *ctl_json_text(const char *s);
/* {"v", "ok", "op"}: the start of every reply. */
json_t *ctl_reply_new(const char *op, bool ok);
/* An error reply: code (GS_CODE_*), errno when > 0, and the message. */
json_t *ctl_error_new(const char *op, const char *code, int errnum, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* All of buf to a non-blocking socket by deadline (monotonic ms); 0 or
 * -errno. */
int ctl_send_all(int fd, const char *buf, size_t len, uint64_t deadline);
/* j as one compact line with its newline (malloc'd); *len without the NUL. */
char *ctl_json_line(json_t *j, size_t *len);
/* Send a reply and drop the reference; a failed write marks c dead. */
void ctl_conn_send(struct conn *c, json_t *msg, uint64_t deadline_ms);

/* ---- control_proto.c: requests -------------------------------------------- */

/* One request line (without its newline), on the control thread. */
void ctl_handle_line(struct conn *c, const char *line, size_t len);

/* ---- control_op.c: the operation thread ----------------------------------- */

/* Lend c to a new operation thread running def with req; on failure the
 * error reply goes to c at once. Control thread only, no operation running. */
void ctl_op_start(struct conn *c, const struct op_def *def, json_t *req);

#endif
