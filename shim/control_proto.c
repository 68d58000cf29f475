/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The control protocol as the shim speaks it (protocol.h,
 * docs/protocol.md): building replies, writing lines to a peer without
 * ever waiting on it for long, and reading requests: parsing them,
 * checking their arguments, answering status and "busy" on the control
 * thread, and handing the other operations to the operation thread
 * (control_op.c).
 *
 * Apart from control.c so that what goes over the wire is in one place,
 * without the socket's set-up and the poll loop around it.
 */
#define GS_LOG_SUBSYS "control"
#include "control_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "protocol.h"
#include "replay.h"

#define COMMAND_MAX 4096

/* ---- JSON helpers ----------------------------------------------------------- */

/* json_string() refuses invalid UTF-8 (a path, a command line); replace
 * every byte outside printable ASCII so the text always gets through. */
json_t *ctl_json_text(const char *s)
{
	json_t *j = json_string(s ? s : "");
	char *copy;

	if (j)
		return j;
	copy = strdup(s);
	if (!copy)
		return NULL;
	for (unsigned char *p = (unsigned char *)copy; *p; p++)
		if (*p < 0x20 || *p > 0x7e)
			*p = '?';
	j = json_string(copy);
	free(copy);
	return j;
}

json_t *ctl_reply_new(const char *op, bool ok)
{
	json_t *r = json_object();

	if (!r)
		return NULL;
	json_object_set_new(r, GS_KEY_VERSION, json_integer(GS_PROTO_VERSION));
	json_object_set_new(r, GS_KEY_OK, json_boolean(ok));
	if (op)
		json_object_set_new(r, GS_KEY_OP, json_string(op));
	return r;
}

json_t *ctl_error_new(const char *op, const char *code, int errnum, const char *fmt, ...)
{
	json_t *r = ctl_reply_new(op, false);
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (!r)
		return NULL;
	json_object_set_new(r, GS_KEY_ERROR, ctl_json_text(msg));
	json_object_set_new(r, GS_KEY_CODE, json_string(code));
	if (errnum > 0)
		json_object_set_new(r, GS_KEY_ERRNO, json_integer(errnum));
	return r;
}

/* ---- writing to a peer -------------------------------------------------------- */

/*
 * Write all of buf to a non-blocking socket, waiting for room until
 * deadline (monotonic ms). MSG_NOSIGNAL: a peer that went away gives EPIPE
 * here, never a SIGPIPE to the process. 0 or -errno.
 */
int ctl_send_all(int fd, const char *buf, size_t len, uint64_t deadline)
{
	while (len > 0) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n > 0) {
			buf += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			uint64_t now = now_ms();
			struct pollfd p = { .fd = fd, .events = POLLOUT };

			if (now >= deadline)
				return -ETIMEDOUT;
			if (poll(&p, 1, (int)(deadline - now)) < 0 && errno != EINTR)
				return -errno;
			continue;
		}
		return n < 0 ? -errno : -EIO;
	}
	return 0;
}

char *ctl_json_line(json_t *j, size_t *len)
{
	char *text = json_dumps(j, JSON_COMPACT);
	char *line;
	size_t n;

	if (!text)
		return NULL;
	n = strlen(text);
	line = realloc(text, n + 2);
	if (!line) {
		free(text);
		return NULL;
	}
	line[n] = '\n';
	line[n + 1] = '\0';
	*len = n + 1;
	return line;
}

/* Send a reply (and drop the reference). A failed write marks the
 * connection dead; nothing else happens. */
void ctl_conn_send(struct conn *c, json_t *msg, uint64_t deadline_ms)
{
	size_t len;
	char *line;
	int rc;

	if (!msg)
		return;
	line = ctl_json_line(msg, &len);
	json_decref(msg);
	if (!line) {
		gs_error("cannot format a reply: out of memory");
		c->dead = true;
		return;
	}
	if (!c->dead) {
		rc = ctl_send_all(c->fd, line, len, now_ms() + deadline_ms);
		if (rc) {
			gs_debug("reply to pid %ld not delivered: %s", (long)c->peer_pid,
				 strerror(-rc));
			c->dead = true;
		}
	}
	free(line);
}

/* ---- requests ------------------------------------------------------------------- */

static const char *const keys_none[] = { NULL };
static const char *const keys_freeze[] = { GS_KEY_TIMEOUT_MS, GS_KEY_RELEASE, GS_KEY_IMAGE, NULL };
static const char *const keys_release[] = { GS_KEY_IMAGE, NULL };
static const char *const keys_thaw[] = { GS_KEY_DEVICE, GS_KEY_IMAGE, NULL };
static const char *const keys_swap[] = { GS_KEY_DEVICE, GS_KEY_TIMEOUT_MS, GS_KEY_VIA_HOST,
					  GS_KEY_FORCE, NULL };

static const struct op_def op_defs[] = {
	{ GS_OP_STATUS, keys_none, false },
	{ GS_OP_CHECK, keys_none, false },
	{ GS_OP_FREEZE, keys_freeze, false },
	{ GS_OP_RELEASE, keys_release, false },
	{ GS_OP_THAW, keys_thaw, false },
	{ GS_OP_SWAP, keys_swap, true },
};

/* Check the arguments of a request; NULL, or the error reply. Normalises
 * an integer device into its string spelling. */
static json_t *request_check(const struct op_def *def, json_t *req)
{
	const char *key;
	json_t *val;

	json_object_foreach(req, key, val) {
		bool known = strcmp(key, GS_KEY_VERSION) == 0 || strcmp(key, GS_KEY_OP) == 0;

		for (const char *const *k = def->keys; !known && *k; k++)
			known = strcmp(key, *k) == 0;
		if (!known)
			return ctl_error_new(def->name, GS_CODE_BAD_REQUEST, 0,
					 "unknown argument \"%.64s\" for %s", key, def->name);
	}
	val = json_object_get(req, GS_KEY_TIMEOUT_MS);
	if (val && (!json_is_integer(val) || json_integer_value(val) < 1 ||
		    json_integer_value(val) > GS_PROTO_MAX_TIMEOUT_MS))
		return ctl_error_new(def->name, GS_CODE_BAD_REQUEST, 0,
				 "\"timeout_ms\" must be an integer from 1 to %d",
				 GS_PROTO_MAX_TIMEOUT_MS);
	static const char *const booleans[] = { GS_KEY_RELEASE, GS_KEY_VIA_HOST, GS_KEY_FORCE };
	for (size_t i = 0; i < sizeof(booleans) / sizeof(booleans[0]); i++) {
		val = json_object_get(req, booleans[i]);
		if (val && !json_is_boolean(val))
			return ctl_error_new(def->name, GS_CODE_BAD_REQUEST, 0,
					 "\"%s\" must be true or false", booleans[i]);
	}
	val = json_object_get(req, GS_KEY_IMAGE);
	if (val) {
		const char *s = json_string_value(val);

		/* Relative paths would resolve against this process's working
		 * directory, not the tool's: the tools send absolute ones. */
		if (!s || s[0] != '/' || strlen(s) >= 4096)
			return ctl_error_new(def->name, GS_CODE_BAD_REQUEST, 0,
					 "\"image\" must be an absolute directory path "
					 "(shorter than 4096 bytes)");
	}
	val = json_object_get(req, GS_KEY_DEVICE);
	if (val && json_is_integer(val) && json_integer_value(val) >= 0 &&
	    json_integer_value(val) <= INT32_MAX) {
		char buf[16];

		snprintf(buf, sizeof(buf), "%d", (int)json_integer_value(val));
		json_object_set_new(req, GS_KEY_DEVICE, json_string(buf));
		val = json_object_get(req, GS_KEY_DEVICE);
	}
	if (val) {
		const char *s = json_string_value(val);

		if (!s || !*s || strlen(s) > GS_PROTO_MAX_DEVICE_SPEC)
			return ctl_error_new(def->name, GS_CODE_BAD_REQUEST, 0,
					 "\"device\" must be an ordinal, \"GPU-<uuid>\" or a "
					 "map \"a=b,c=d\" (at most %d characters)",
					 GS_PROTO_MAX_DEVICE_SPEC);
	} else if (def->needs_device) {
		return ctl_error_new(def->name, GS_CODE_BAD_REQUEST, 0,
				     "%s needs a \"device\" (an ordinal, \"GPU-<uuid>\" or a map "
				     "\"a=b,c=d\")", def->name);
	}
	return NULL;
}

/* pid's command line, arguments separated by spaces. */
static void read_command(char *buf, size_t len)
{
	int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
	size_t got = 0;

	buf[0] = '\0';
	if (fd < 0)
		return;
	while (got + 1 < len) {
		ssize_t n = read(fd, buf + got, len - 1 - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	while (got > 0 && buf[got - 1] == '\0')
		got--;
	for (size_t i = 0; i < got; i++)
		if (buf[i] == '\0')
			buf[i] = ' ';
	buf[got] = '\0';
}

static json_t *status_reply(void)
{
	json_t *reply = ctl_reply_new(GS_OP_STATUS, true), *reports = json_object(), *rep = NULL;
	char command[COMMAND_MAX];
	int rc;

	if (!reply || !reports) {
		json_decref(reply);
		json_decref(reports);
		return NULL;
	}
	read_command(command, sizeof(command));
	json_object_set_new(reply, GS_KEY_PID, json_integer(getpid()));
	json_object_set_new(reply, GS_KEY_UID, json_integer(geteuid()));
	json_object_set_new(reply, GS_KEY_COMMAND, ctl_json_text(command));

	if (gs_ctl.op_running) {
		/* Replay is busy on the other thread: answer from what the
		 * control plane knows instead of calling into it. */
		json_t *busy = json_object();

		pthread_mutex_lock(&gs_ctl.lock);
		json_object_set_new(busy, GS_KEY_OP, json_string(gs_ctl.op.name));
		json_object_set_new(busy, GS_KEY_PHASE, ctl_json_text(gs_ctl.op.phase));
		json_object_set_new(busy, GS_KEY_DONE, json_integer((json_int_t)gs_ctl.op.done));
		json_object_set_new(busy, GS_KEY_TOTAL, json_integer((json_int_t)gs_ctl.op.total));
		pthread_mutex_unlock(&gs_ctl.lock);
		json_object_set_new(busy, GS_KEY_ELAPSED_MS,
				    json_integer((json_int_t)(now_ms() - gs_ctl.op.start_ms)));
		json_object_set_new(reply, GS_KEY_BUSY, busy);
		json_object_set_new(reply, GS_KEY_STATE, json_string(gs_ctl.last_state));
		json_object_set_new(reports, GS_OP_STATUS,
				    gs_ctl.last_status ? json_deep_copy(gs_ctl.last_status)
						       : json_null());
		json_object_set_new(reply, GS_KEY_REPORT, reports);
		return reply;
	}

	snprintf(gs_ctl.last_state, sizeof(gs_ctl.last_state), "%s",
		 gs_proc_state_name(gs_replay_state()));
	json_object_set_new(reply, GS_KEY_STATE, json_string(gs_ctl.last_state));
	rc = gs_replay_status(&rep);
	json_object_set_new(reply, GS_KEY_IMPLEMENTED, json_boolean(rc != -ENOSYS));
	if (rc == 0 && rep) {
		json_decref(gs_ctl.last_status);
		gs_ctl.last_status = json_deep_copy(rep);
	} else if (rc != 0 && rc != -ENOSYS) {
		/* The control plane answered; only the summary is missing. */
		json_object_set_new(reply, GS_KEY_STATUS_ERROR,
				    ctl_json_text(strerror(rc < 0 ? -rc : EPROTO)));
	}
	json_object_set_new(reports, GS_OP_STATUS, rep ? rep : json_null());
	json_object_set_new(reply, GS_KEY_REPORT, reports);
	return reply;
}

/* One request line (without its newline), on the control thread. */
void ctl_handle_line(struct conn *c, const char *line, size_t len)
{
	const struct op_def *def = NULL;
	json_error_t jerr;
	json_t *req, *v, *err;
	const char *op;

	req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!req) {
		ctl_conn_send(c,
			      ctl_error_new(NULL, GS_CODE_BAD_REQUEST, 0,
					    "request is not valid JSON (column %d: %s)",
					    jerr.column, jerr.text),
			      REPLY_DEADLINE_MS);
		return;
	}
	if (!json_is_object(req)) {
		ctl_conn_send(c,
			      ctl_error_new(NULL, GS_CODE_BAD_REQUEST, 0,
					    "a request is a JSON object: {\"v\":%d,\"op\":...}",
					    GS_PROTO_VERSION),
			      REPLY_DEADLINE_MS);
		goto out;
	}
	v = json_object_get(req, GS_KEY_VERSION);
	if (!json_is_integer(v) || json_integer_value(v) != GS_PROTO_VERSION) {
		ctl_conn_send(c,
			      ctl_error_new(NULL, GS_CODE_BAD_VERSION, 0,
					    "this process speaks control protocol version %d; the "
					    "request %s: use gpu-* tools from the same gpuswap "
					    "release",
					    GS_PROTO_VERSION,
					    v ? "asks for another version"
					      : "has no version (\"v\")"),
			      REPLY_DEADLINE_MS);
		goto out;
	}
	op = json_string_value(json_object_get(req, GS_KEY_OP));
	for (size_t i = 0; op && i < sizeof(op_defs) / sizeof(op_defs[0]); i++)
		if (strcmp(op, op_defs[i].name) == 0)
			def = &op_defs[i];
	if (!def) {
		ctl_conn_send(c,
			      ctl_error_new(NULL, GS_CODE_UNKNOWN_OP, 0,
					    "%s%.64s%s: known operations are status, check, "
					    "freeze, release, thaw, swap",
					    op ? "unknown operation \""
					       : "the request has no \"op\"",
					    op ? op : "", op ? "\"" : ""),
			      REPLY_DEADLINE_MS);
		goto out;
	}
	err = request_check(def, req);
	if (err) {
		ctl_conn_send(c, err, REPLY_DEADLINE_MS);
		goto out;
	}
	if (def == &op_defs[0]) {
		json_t *reply = status_reply();

		ctl_conn_send(c,
			      reply ? reply : ctl_error_new(def->name, GS_CODE_FAILED, ENOMEM,
							    "out of memory"),
			      REPLY_DEADLINE_MS);
	} else if (gs_ctl.op_running) {
		ctl_conn_send(c,
			      ctl_error_new(def->name, GS_CODE_BUSY, EBUSY,
					    "another operation (%s, started %.1f s ago) is "
					    "running in this process; try again when it has "
					    "finished",
					    gs_ctl.op.name,
					    (double)(now_ms() - gs_ctl.op.start_ms) / 1000.0),
			      REPLY_DEADLINE_MS);
	} else {
		ctl_op_start(c, def, req);
	}
out:
	json_decref(req);
}
