/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The control thread (control.h, protocol.h, docs/protocol.md).
 *
 * Two threads, both started here, both with asynchronous signals blocked
 * (the application's handlers must never run on them, and a SIGINT meant
 * for the application must never interrupt an operation half-way):
 *
 *  - the control thread owns the listening socket and every connection:
 *    it accepts, checks the peer (SO_PEERCRED), reads request lines, answers
 *    status itself and "busy" while an operation runs;
 *  - the operation thread, one per operation, runs the replay function
 *    with the connection lent to it for progress lines and the final
 *    reply, then hands the connection back through a pipe.
 *
 * The operation never depends on its client: writes use MSG_NOSIGNAL and
 * never block for long, and a peer that went away only means nobody reads
 * the reply. Whatever the tool does, the operation completes or (inside
 * replay) rolls back.
 */
#define GS_LOG_SUBSYS "control"
#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "protocol.h"
#include "replay.h"
#include "shim.h"

#define MAX_CONNS 16
/* A connection that sends nothing for this long is closed, so forgotten
 * clients cannot use up the slots. */
#define IDLE_TIMEOUT_MS 60000
/* How long a reply may wait for a client that does not read. */
#define REPLY_DEADLINE_MS 5000
/* How long a half-written progress line may wait to be completed. */
#define PROGRESS_DEADLINE_MS 1000
/* Progress lines per phase are sent at most this often (the first, the
 * last and every phase change always go). */
#define PROGRESS_INTERVAL_MS 100
#define PHASE_MAX 48
#define COMMAND_MAX 4096

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
	 * ctl.lock */
	char phase[PHASE_MAX];
	uint64_t done, total;
	/* what was last sent, operation thread only */
	char sent_phase[PHASE_MAX];
	uint64_t sent_ms;
};

static struct {
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
} ctl = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.listen_fd = -1,
	.wake = { -1, -1 },
};

static pthread_once_t register_once = PTHREAD_ONCE_INIT;

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- FALLBACK: replay not linked in ---------------------------------------
 *
 * FALLBACK ONLY, NOT THE IMPLEMENTATION. These weak definitions let the
 * control plane build, run and be tested while replay/ has no
 * implementation of an operation yet: each answers -ENOSYS with "operation
 * not implemented in this build", which the protocol reports as code
 * "not_implemented" (and the end-to-end tests turn into a skip). The real
 * definitions in replay/ are strong symbols and replace these wherever
 * they are linked in.
 */
#define NOT_IMPLEMENTED_MSG "operation not implemented in this build"

static int replay_missing(json_t **report, char **err)
{
	if (report)
		*report = NULL;
	if (err)
		*err = strdup(NOT_IMPLEMENTED_MSG);
	return -ENOSYS;
}

__attribute__((weak)) const char *gs_proc_state_name(enum gs_proc_state s)
{
	switch (s) {
	case GS_STATE_RUNNING: return "running";
	case GS_STATE_FROZEN: return "frozen";
	case GS_STATE_RELEASED: return "released";
	}
	return "unknown";
}

/* Without replay nothing can freeze the process: it is running. */
__attribute__((weak)) enum gs_proc_state gs_replay_state(void)
{
	return GS_STATE_RUNNING;
}

__attribute__((weak)) int gs_replay_check(json_t **report, char **err)
{
	return replay_missing(report, err);
}

__attribute__((weak)) int gs_replay_freeze(unsigned timeout_ms, json_t **report, char **err)
{
	(void)timeout_ms;
	return replay_missing(report, err);
}

__attribute__((weak)) int gs_replay_release(const char *image_dir,
					    const struct gs_progress *progress, json_t **report,
					    char **err)
{
	(void)image_dir;
	(void)progress;
	return replay_missing(report, err);
}

__attribute__((weak)) int gs_replay_thaw(const char *device_spec, const char *image_dir,
					 const struct gs_progress *progress, json_t **report,
					 char **err)
{
	(void)device_spec;
	(void)image_dir;
	(void)progress;
	return replay_missing(report, err);
}

__attribute__((weak)) int gs_replay_swap(const char *device_spec, unsigned timeout_ms,
					 const struct gs_progress *progress, json_t **report,
					 char **err)
{
	(void)device_spec;
	(void)timeout_ms;
	(void)progress;
	return replay_missing(report, err);
}

__attribute__((weak)) int gs_replay_status(json_t **report)
{
	return replay_missing(report, NULL);
}

/* ---- JSON helpers ----------------------------------------------------------- */

/* json_string() refuses invalid UTF-8 (a path, a command line); replace
 * every byte outside printable ASCII so the text always gets through. */
static json_t *json_text(const char *s)
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

static json_t *reply_new(const char *op, bool ok)
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

static json_t *error_new(const char *op, const char *code, int errnum, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static json_t *error_new(const char *op, const char *code, int errnum, const char *fmt, ...)
{
	json_t *r = reply_new(op, false);
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (!r)
		return NULL;
	json_object_set_new(r, GS_KEY_ERROR, json_text(msg));
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
static int send_all(int fd, const char *buf, size_t len, uint64_t deadline)
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

static char *json_line(json_t *j, size_t *len)
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
static void conn_send(struct conn *c, json_t *msg, uint64_t deadline_ms)
{
	size_t len;
	char *line;
	int rc;

	if (!msg)
		return;
	line = json_line(msg, &len);
	json_decref(msg);
	if (!line) {
		gs_error("cannot format a reply: out of memory");
		c->dead = true;
		return;
	}
	if (!c->dead) {
		rc = send_all(c->fd, line, len, now_ms() + deadline_ms);
		if (rc) {
			gs_debug("reply to pid %ld not delivered: %s", (long)c->peer_pid,
				 strerror(-rc));
			c->dead = true;
		}
	}
	free(line);
}

/* ---- progress ------------------------------------------------------------------ */

/* struct gs_progress.emit, on the operation thread. Lossy on purpose:
 * a line the socket has no room for is dropped rather than waited for. */
static void progress_emit(void *arg, const char *phase, uint64_t done, uint64_t total)
{
	struct op *op = arg;
	struct conn *c = op->conn;
	uint64_t now = now_ms();
	bool changed, last;
	json_t *msg, *p;
	char *line;
	size_t len;
	ssize_t n;

	if (!phase)
		phase = "";
	pthread_mutex_lock(&ctl.lock);
	snprintf(op->phase, sizeof(op->phase), "%s", phase);
	op->done = done;
	op->total = total;
	pthread_mutex_unlock(&ctl.lock);

	changed = strncmp(op->sent_phase, phase, sizeof(op->sent_phase) - 1) != 0;
	last = total != 0 && done >= total;
	if (c->dead || (!changed && !last && now - op->sent_ms < PROGRESS_INTERVAL_MS))
		return;

	msg = json_object();
	p = json_object();
	if (!msg || !p) {
		json_decref(msg);
		json_decref(p);
		return;
	}
	json_object_set_new(p, GS_KEY_PHASE, json_text(phase));
	json_object_set_new(p, GS_KEY_DONE, json_integer((json_int_t)done));
	json_object_set_new(p, GS_KEY_TOTAL, json_integer((json_int_t)total));
	json_object_set_new(msg, GS_KEY_VERSION, json_integer(GS_PROTO_VERSION));
	json_object_set_new(msg, GS_KEY_PROGRESS, p);
	line = json_line(msg, &len);
	json_decref(msg);
	if (!line)
		return;
	do
		n = send(c->fd, line, len, MSG_NOSIGNAL | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
		c->dead = true;
	} else if (n > 0 && (size_t)n < len) {
		/* Half a line is on its way: finish it, or the stream is lost. */
		if (send_all(c->fd, line + n, len - (size_t)n, now + PROGRESS_DEADLINE_MS))
			c->dead = true;
	}
	if (n > 0) {
		snprintf(op->sent_phase, sizeof(op->sent_phase), "%s", phase);
		op->sent_ms = now;
	}
	free(line);
}

/* ---- fault injection ------------------------------------------------------------ */

/* GPUSWAP_FAULT=name[,name...] (CRIU's habit): error paths and timing that
 * a healthy machine never shows, for tests. Points here:
 *   control-delay   an operation spends ~1.5 s in a "delay" phase (with
 *                   progress) before it starts, so a test can disconnect a
 *                   tool, or ask again, while it runs. */
static bool control_fault(const char *name)
{
	const char *list = getenv("GPUSWAP_FAULT");
	size_t n = strlen(name);

	for (const char *p = list; p && *p;) {
		size_t len = strcspn(p, ",");

		if (len == n && strncmp(p, name, n) == 0)
			return true;
		p += len;
		p += *p == ',';
	}
	return false;
}

static void fault_delay(struct op *op)
{
	const struct timespec step = { .tv_nsec = 75 * 1000000L };

	for (unsigned i = 0; i <= 20; i++) {
		struct timespec left = step;

		progress_emit(op, "delay", i * 50u, 1000u);
		if (i < 20)
			while (nanosleep(&left, &left) != 0 && errno == EINTR)
				;
	}
}

/* ---- operations ----------------------------------------------------------------- */

static const char *errno_code(int errnum)
{
	switch (errnum) {
	case ENOSYS: return GS_CODE_NOT_IMPLEMENTED;
	case EBUSY: return GS_CODE_BUSY;
	case ETIMEDOUT: return GS_CODE_TIMEOUT;
	case EALREADY: case EISCONN: case ENOTCONN: return GS_CODE_STATE;
	case EINVAL: case ERANGE: case ENAMETOOLONG: return GS_CODE_INVALID;
	case ENOMEM: return GS_CODE_NO_MEMORY;
	case ENODEV: case ENXIO: return GS_CODE_NO_DEVICE;
	case ENOTSUP: case ENOEXEC: return GS_CODE_UNSUPPORTED;
	case EBADMSG: case EPROTO: case EILSEQ: case EOVERFLOW: return GS_CODE_CORRUPT;
	case EIO: case ENOSPC: case ENOENT: case EEXIST: case EROFS: case ENOTDIR:
	case EDQUOT: return GS_CODE_IO;
	case EPERM: case EACCES: return GS_CODE_PERMISSION;
	default: return GS_CODE_FAILED;
	}
}

static const char *opt_string(json_t *req, const char *key)
{
	return json_string_value(json_object_get(req, key));
}

static unsigned opt_timeout(json_t *req)
{
	json_t *t = json_object_get(req, GS_KEY_TIMEOUT_MS);

	return t ? (unsigned)json_integer_value(t) : GS_PROTO_DEFAULT_TIMEOUT_MS;
}

/*
 * Run one step; on success add its report under `step`, on failure build
 * the error reply in *fail. The replay contract leaves the process in the
 * state it was in when a step fails.
 */
static int run_step(struct op *op, const char *step, json_t *reports, json_t **fail)
{
	const struct gs_progress prog = { .emit = progress_emit, .arg = op };
	const char *image = opt_string(op->request, GS_KEY_IMAGE);
	const char *device = opt_string(op->request, GS_KEY_DEVICE);
	json_t *rep = NULL;
	char *err = NULL;
	int rc;

	if (strcmp(step, GS_OP_CHECK) == 0)
		rc = gs_replay_check(&rep, &err);
	else if (strcmp(step, GS_OP_FREEZE) == 0)
		rc = gs_replay_freeze(opt_timeout(op->request), &rep, &err);
	else if (strcmp(step, GS_OP_RELEASE) == 0)
		rc = gs_replay_release(image, &prog, &rep, &err);
	else if (strcmp(step, GS_OP_THAW) == 0)
		rc = gs_replay_thaw(device, image, &prog, &rep, &err);
	else
		rc = gs_replay_swap(device, opt_timeout(op->request), &prog, &rep, &err);

	if (rc == 0) {
		json_object_set_new(reports, step, rep ? rep : json_null());
		free(err);
		return 0;
	}
	if (rc > 0) /* a contract breach; keep it an error */
		rc = -EPROTO;
	*fail = error_new(op->name, errno_code(-rc), -rc, "%s: %s", step,
			  err && *err ? err : strerror(-rc));
	if (*fail) {
		json_object_set_new(*fail, GS_KEY_STEP, json_string(step));
		if (rep) /* whatever replay said about the failure */
			json_object_set_new(reports, step, rep);
		rep = NULL;
	}
	json_decref(rep);
	gs_warn("%s failed at %s: %s", op->name, step, err && *err ? err : strerror(-rc));
	free(err);
	return rc;
}

/* The operation, on its own thread: its reply (never NULL unless out of
 * memory). */
static json_t *op_run(struct op *op)
{
	json_t *reports = json_object(), *reply = NULL;
	enum gs_proc_state before = gs_replay_state();
	bool already = false;
	int rc = 0;

	if (!reports)
		return NULL;
	if (control_fault("control-delay"))
		fault_delay(op);

	if (strcmp(op->name, GS_OP_FREEZE) == 0) {
		/* gpu-freeze [--release] is idempotent: each step runs only if
		 * the process is not past it already. */
		bool release = json_is_true(json_object_get(op->request, GS_KEY_RELEASE));
		bool image = opt_string(op->request, GS_KEY_IMAGE) != NULL;

		if (before == GS_STATE_RUNNING)
			rc = run_step(op, GS_OP_FREEZE, reports, &reply);
		if (rc == 0 && release && (before != GS_STATE_RELEASED || image))
			rc = run_step(op, GS_OP_RELEASE, reports, &reply);
		already = before == GS_STATE_RELEASED ? !image
						       : before == GS_STATE_FROZEN && !release;
	} else {
		rc = run_step(op, op->name, reports, &reply);
	}

	if (rc == 0) {
		reply = reply_new(op->name, true);
		if (reply && already)
			json_object_set_new(reply, GS_KEY_ALREADY, json_true());
	}
	if (reply) {
		json_object_set_new(reply, GS_KEY_STATE,
				    json_string(gs_proc_state_name(gs_replay_state())));
		json_object_set_new(reply, GS_KEY_REPORT, reports);
		json_object_set_new(reply, GS_KEY_ELAPSED_MS,
				    json_integer((json_int_t)(now_ms() - op->start_ms)));
	} else {
		json_decref(reports);
	}
	return reply;
}

static void *op_main(void *arg)
{
	struct op *op = arg;
	json_t *reply;
	ssize_t n;

	/* Replay's driver calls are the shim's own: straight to the driver,
	 * past the gate it may itself have closed. */
	gs_inside_begin();
	reply = op_run(op);
	if (!reply)
		reply = error_new(op->name, GS_CODE_FAILED, ENOMEM, "out of memory");
	conn_send(op->conn, reply, REPLY_DEADLINE_MS);
	do
		n = write(ctl.wake[1], "x", 1);
	while (n < 0 && errno == EINTR);
	if (n != 1)
		gs_perror("cannot wake the control thread");
	return NULL;
}

/* ---- requests ------------------------------------------------------------------- */

struct op_def {
	const char *name;
	const char *const *keys;  /* allowed arguments */
	bool needs_device;
};

static const char *const keys_none[] = { NULL };
static const char *const keys_freeze[] = { GS_KEY_TIMEOUT_MS, GS_KEY_RELEASE, GS_KEY_IMAGE, NULL };
static const char *const keys_release[] = { GS_KEY_IMAGE, NULL };
static const char *const keys_thaw[] = { GS_KEY_DEVICE, GS_KEY_IMAGE, NULL };
static const char *const keys_swap[] = { GS_KEY_DEVICE, GS_KEY_TIMEOUT_MS, NULL };

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
			return error_new(def->name, GS_CODE_BAD_REQUEST, 0,
					 "unknown argument \"%.64s\" for %s", key, def->name);
	}
	val = json_object_get(req, GS_KEY_TIMEOUT_MS);
	if (val && (!json_is_integer(val) || json_integer_value(val) < 1 ||
		    json_integer_value(val) > GS_PROTO_MAX_TIMEOUT_MS))
		return error_new(def->name, GS_CODE_BAD_REQUEST, 0,
				 "\"timeout_ms\" must be an integer from 1 to %d",
				 GS_PROTO_MAX_TIMEOUT_MS);
	val = json_object_get(req, GS_KEY_RELEASE);
	if (val && !json_is_boolean(val))
		return error_new(def->name, GS_CODE_BAD_REQUEST, 0,
				 "\"release\" must be true or false");
	val = json_object_get(req, GS_KEY_IMAGE);
	if (val) {
		const char *s = json_string_value(val);

		/* Relative paths would resolve against this process's working
		 * directory, not the tool's: the tools send absolute ones. */
		if (!s || s[0] != '/' || strlen(s) >= 4096)
			return error_new(def->name, GS_CODE_BAD_REQUEST, 0,
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
			return error_new(def->name, GS_CODE_BAD_REQUEST, 0,
					 "\"device\" must be an ordinal, \"GPU-<uuid>\" or a "
					 "map \"a=b,c=d\" (at most %d characters)",
					 GS_PROTO_MAX_DEVICE_SPEC);
	} else if (def->needs_device) {
		return error_new(def->name, GS_CODE_BAD_REQUEST, 0,
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
	json_t *reply = reply_new(GS_OP_STATUS, true), *reports = json_object(), *rep = NULL;
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
	json_object_set_new(reply, GS_KEY_COMMAND, json_text(command));

	if (ctl.op_running) {
		/* Replay is busy on the other thread: answer from what the
		 * control plane knows instead of calling into it. */
		json_t *busy = json_object();

		pthread_mutex_lock(&ctl.lock);
		json_object_set_new(busy, GS_KEY_OP, json_string(ctl.op.name));
		json_object_set_new(busy, GS_KEY_PHASE, json_text(ctl.op.phase));
		json_object_set_new(busy, GS_KEY_DONE, json_integer((json_int_t)ctl.op.done));
		json_object_set_new(busy, GS_KEY_TOTAL, json_integer((json_int_t)ctl.op.total));
		pthread_mutex_unlock(&ctl.lock);
		json_object_set_new(busy, GS_KEY_ELAPSED_MS,
				    json_integer((json_int_t)(now_ms() - ctl.op.start_ms)));
		json_object_set_new(reply, GS_KEY_BUSY, busy);
		json_object_set_new(reply, GS_KEY_STATE, json_string(ctl.last_state));
		json_object_set_new(reports, GS_OP_STATUS,
				    ctl.last_status ? json_deep_copy(ctl.last_status) : json_null());
		json_object_set_new(reply, GS_KEY_REPORT, reports);
		return reply;
	}

	snprintf(ctl.last_state, sizeof(ctl.last_state), "%s",
		 gs_proc_state_name(gs_replay_state()));
	json_object_set_new(reply, GS_KEY_STATE, json_string(ctl.last_state));
	rc = gs_replay_status(&rep);
	json_object_set_new(reply, GS_KEY_IMPLEMENTED, json_boolean(rc != -ENOSYS));
	if (rc == 0 && rep) {
		json_decref(ctl.last_status);
		ctl.last_status = json_deep_copy(rep);
	} else if (rc != 0 && rc != -ENOSYS) {
		/* The control plane answered; only the summary is missing. */
		json_object_set_new(reply, GS_KEY_STATUS_ERROR,
				    json_text(strerror(rc < 0 ? -rc : EPROTO)));
	}
	json_object_set_new(reports, GS_OP_STATUS, rep ? rep : json_null());
	json_object_set_new(reply, GS_KEY_REPORT, reports);
	return reply;
}

static void op_start(struct conn *c, const struct op_def *def, json_t *req)
{
	int rc;

	/* Who is running now: replay is called only from the operation
	 * thread while an operation runs. */
	snprintf(ctl.last_state, sizeof(ctl.last_state), "%s",
		 gs_proc_state_name(gs_replay_state()));
	pthread_mutex_lock(&ctl.lock);
	memset(&ctl.op, 0, sizeof(ctl.op));
	ctl.op.name = def->name;
	ctl.op.request = json_incref(req);
	ctl.op.conn = c;
	ctl.op.start_ms = now_ms();
	c->lent = true;
	pthread_mutex_unlock(&ctl.lock);

	/* Inherits the control thread's mask: no asynchronous signal. */
	rc = pthread_create(&ctl.op_thread, NULL, op_main, &ctl.op);
	if (rc) {
		pthread_mutex_lock(&ctl.lock);
		c->lent = false;
		pthread_mutex_unlock(&ctl.lock);
		json_decref(ctl.op.request);
		ctl.op.request = NULL;
		conn_send(c, error_new(def->name, GS_CODE_FAILED, rc,
				       "cannot start the operation thread: %s", strerror(rc)),
			  REPLY_DEADLINE_MS);
		return;
	}
	pthread_setname_np(ctl.op_thread, "gpuswap-op");
	ctl.op_running = true;
	gs_info("%s requested by pid %ld", def->name, (long)c->peer_pid);
}

/* One request line (without its newline), on the control thread. */
static void handle_line(struct conn *c, const char *line, size_t len)
{
	const struct op_def *def = NULL;
	json_error_t jerr;
	json_t *req, *v, *err;
	const char *op;

	req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!req) {
		conn_send(c, error_new(NULL, GS_CODE_BAD_REQUEST, 0,
				       "request is not valid JSON (column %d: %s)", jerr.column,
				       jerr.text),
			  REPLY_DEADLINE_MS);
		return;
	}
	if (!json_is_object(req)) {
		conn_send(c, error_new(NULL, GS_CODE_BAD_REQUEST, 0,
				       "a request is a JSON object: {\"v\":%d,\"op\":...}",
				       GS_PROTO_VERSION),
			  REPLY_DEADLINE_MS);
		goto out;
	}
	v = json_object_get(req, GS_KEY_VERSION);
	if (!json_is_integer(v) || json_integer_value(v) != GS_PROTO_VERSION) {
		conn_send(c, error_new(NULL, GS_CODE_BAD_VERSION, 0,
				       "this process speaks control protocol version %d; the "
				       "request %s: use gpu-* tools from the same gpuswap release",
				       GS_PROTO_VERSION,
				       v ? "asks for another version" : "has no version (\"v\")"),
			  REPLY_DEADLINE_MS);
		goto out;
	}
	op = json_string_value(json_object_get(req, GS_KEY_OP));
	for (size_t i = 0; op && i < sizeof(op_defs) / sizeof(op_defs[0]); i++)
		if (strcmp(op, op_defs[i].name) == 0)
			def = &op_defs[i];
	if (!def) {
		conn_send(c, error_new(NULL, GS_CODE_UNKNOWN_OP, 0,
				       "%s%.64s%s: known operations are status, check, freeze, "
				       "release, thaw, swap",
				       op ? "unknown operation \"" : "the request has no \"op\"",
				       op ? op : "", op ? "\"" : ""),
			  REPLY_DEADLINE_MS);
		goto out;
	}
	err = request_check(def, req);
	if (err) {
		conn_send(c, err, REPLY_DEADLINE_MS);
		goto out;
	}
	if (def == &op_defs[0]) {
		json_t *reply = status_reply();

		conn_send(c, reply ? reply : error_new(def->name, GS_CODE_FAILED, ENOMEM,
							"out of memory"),
			  REPLY_DEADLINE_MS);
	} else if (ctl.op_running) {
		conn_send(c, error_new(def->name, GS_CODE_BUSY, EBUSY,
				       "another operation (%s, started %.1f s ago) is running in "
				       "this process; try again when it has finished",
				       ctl.op.name, (double)(now_ms() - ctl.op.start_ms) / 1000.0),
			  REPLY_DEADLINE_MS);
	} else {
		op_start(c, def, req);
	}
out:
	json_decref(req);
}

/* ---- connections -------------------------------------------------------------- */

static void conn_close(struct conn *c)
{
	pthread_mutex_lock(&ctl.lock);
	close(c->fd);
	free(c->in);
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	pthread_mutex_unlock(&ctl.lock);
}

/* Handle every complete line buffered; a line over the limit ends the
 * connection. Stops while the connection is lent out. */
static void conn_process(struct conn *c)
{
	while (!c->lent && !c->dead && c->in_len > 0) {
		char *nl = memchr(c->in, '\n', c->in_len);
		size_t len, used;

		if (!nl) {
			if (c->in_len > GS_PROTO_MAX_REQUEST) {
				conn_send(c, error_new(NULL, GS_CODE_TOO_LONG, 0,
						       "request longer than %d bytes",
						       GS_PROTO_MAX_REQUEST),
					  REPLY_DEADLINE_MS);
				c->dead = true;
				return;
			}
			if (!c->eof)
				return;
			/* The peer shut its side after an unterminated line:
			 * take it as the last request. */
			nl = c->in + c->in_len;
		}
		len = (size_t)(nl - c->in);
		used = len < c->in_len ? len + 1 : len;
		if (len > 0 && c->in[len - 1] == '\r')
			len--;
		if (len > 0)
			handle_line(c, c->in, len);
		memmove(c->in, c->in + used, c->in_len - used);
		c->in_len -= used;
	}
}

static void conn_read(struct conn *c)
{
	size_t cap = GS_PROTO_MAX_REQUEST + 1;
	ssize_t n;

	if (!c->in && !(c->in = malloc(cap))) {
		gs_error("out of memory for a control connection");
		c->dead = true;
		return;
	}
	do
		n = read(c->fd, c->in + c->in_len, cap - c->in_len);
	while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return;
	if (n <= 0)
		c->eof = true;
	else
		c->in_len += (size_t)n;
	c->last_ms = now_ms();
	conn_process(c);
}

static void accept_one(void)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	struct conn *slot = NULL;
	int fd;

	fd = accept4(ctl.listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
		    errno != ECONNABORTED)
			gs_pwarn("accepting a control connection");
		return;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
		gs_pwarn("SO_PEERCRED on a control connection");
		close(fd);
		return;
	}
	/* The directory is 0700 already; this is the check that does not
	 * depend on file modes (a peer with CAP_DAC_OVERRIDE, a socket
	 * passed along). Only our own user, or root, controls us. */
	if (cred.uid != geteuid() && cred.uid != 0) {
		struct conn tmp = { .fd = fd, .peer_pid = cred.pid };

		gs_warn("refused a control connection from pid %ld (uid %lu): only uid %lu "
			"and root may control this process",
			(long)cred.pid, (unsigned long)cred.uid, (unsigned long)geteuid());
		conn_send(&tmp, error_new(NULL, GS_CODE_PERMISSION, EPERM,
					  "process %ld belongs to another user (uid %lu): run "
					  "the tool as that user or as root",
					  (long)getpid(), (unsigned long)geteuid()),
			  100);
		close(fd);
		return;
	}
	pthread_mutex_lock(&ctl.lock);
	for (int i = 0; i < MAX_CONNS && !slot; i++)
		if (ctl.conns[i].fd < 0)
			slot = &ctl.conns[i];
	if (slot) {
		slot->fd = fd;
		slot->peer_pid = cred.pid;
		slot->last_ms = now_ms();
	}
	pthread_mutex_unlock(&ctl.lock);
	if (!slot) {
		struct conn tmp = { .fd = fd, .peer_pid = cred.pid };

		conn_send(&tmp, error_new(NULL, GS_CODE_BUSY, EBUSY,
					  "too many control connections (%d) to this process; "
					  "try again later", MAX_CONNS),
			  100);
		close(fd);
	}
}

/* The operation thread is done with its connection. */
static void op_finish(void)
{
	struct conn *c = ctl.op.conn;
	char buf[16];

	while (read(ctl.wake[0], buf, sizeof(buf)) > 0)
		;
	if (!ctl.op_running)
		return;
	pthread_join(ctl.op_thread, NULL);
	ctl.op_running = false;
	json_decref(ctl.op.request);
	ctl.op.request = NULL;
	snprintf(ctl.last_state, sizeof(ctl.last_state), "%s",
		 gs_proc_state_name(gs_replay_state()));
	gs_info("%s finished in %llu ms; process %s", ctl.op.name,
		(unsigned long long)(now_ms() - ctl.op.start_ms), ctl.last_state);
	pthread_mutex_lock(&ctl.lock);
	c->lent = false;
	pthread_mutex_unlock(&ctl.lock);
	c->last_ms = now_ms();
	/* Lines that came in meanwhile are already buffered: poll() will not
	 * report them again. */
	conn_process(c);
	if (c->dead || (c->eof && !c->lent))
		conn_close(c);
}

static void *control_main(void *arg)
{
	struct pollfd fds[MAX_CONNS + 2];
	struct conn *polled[MAX_CONNS + 2];

	(void)arg;
	gs_inside_begin();
	for (;;) {
		uint64_t now = now_ms();
		int timeout = -1; /* nothing to time out: sleep until something happens */
		nfds_t n = 0;

		fds[n] = (struct pollfd){ .fd = ctl.wake[0], .events = POLLIN };
		polled[n++] = NULL;
		fds[n] = (struct pollfd){ .fd = ctl.listen_fd, .events = POLLIN };
		polled[n++] = NULL;
		for (int i = 0; i < MAX_CONNS; i++) {
			struct conn *c = &ctl.conns[i];

			if (c->fd < 0 || c->lent)
				continue;
			if (c->dead || c->eof || now - c->last_ms >= IDLE_TIMEOUT_MS) {
				conn_close(c);
				continue;
			}
			if (timeout < 0 || (int)(c->last_ms + IDLE_TIMEOUT_MS - now) < timeout)
				timeout = (int)(c->last_ms + IDLE_TIMEOUT_MS - now);
			fds[n] = (struct pollfd){ .fd = c->fd, .events = POLLIN };
			polled[n++] = c;
		}
		if (poll(fds, n, timeout) < 0) {
			if (errno == EINTR)
				continue;
			gs_perror("control thread: poll");
			break;
		}
		if (fds[0].revents)
			op_finish();
		if (fds[1].revents & POLLIN)
			accept_one();
		for (nfds_t i = 2; i < n; i++) {
			if (!fds[i].revents)
				continue;
			if (fds[i].revents & (POLLIN | POLLHUP | POLLERR))
				conn_read(polled[i]);
		}
	}
	/* Not reached unless poll() itself breaks: stop advertising, and let
	 * a later cuInit try again. */
	pthread_mutex_lock(&ctl.lock);
	if (atomic_load(&ctl.owner_pid) == getpid()) {
		unlink(ctl.path);
		atomic_store(&ctl.owner_pid, 0);
	}
	pthread_mutex_unlock(&ctl.lock);
	return NULL;
}

/* ---- set-up, fork, exit ------------------------------------------------------- */

/* mkdir + check: ours, a real directory (no symlink), nobody else's
 * access. A directory failing the check is never used: another user could
 * otherwise watch or replace the sockets in it. */
static int runtime_dir_prepare(const char *dir)
{
	struct stat st;
	int fd;

	if (mkdir(dir, GS_PROTO_DIR_MODE) != 0 && errno != EEXIST) {
		gs_perror("no control socket: cannot create the runtime directory %s", dir);
		return -errno;
	}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;

		if (e == ELOOP || e == ENOTDIR)
			gs_error("no control socket: %s is a symbolic link or not a directory; "
				 "remove it, or set " GS_PROTO_ENV_RUNTIME_DIR " to another place",
				 dir);
		else
			gs_perror("no control socket: cannot open %s", dir);
		return -e;
	}
	if (fstat(fd, &st) != 0) {
		int e = errno;

		gs_perror("no control socket: cannot stat %s", dir);
		close(fd);
		return -e;
	}
	close(fd);
	if (st.st_uid != geteuid()) {
		gs_error("no control socket: %s belongs to uid %lu, not to this process's uid "
			 "%lu; set " GS_PROTO_ENV_RUNTIME_DIR " to a directory of your own",
			 dir, (unsigned long)st.st_uid, (unsigned long)geteuid());
		return -EPERM;
	}
	if (st.st_mode & 077) {
		gs_error("no control socket: %s has mode %04o: others could reach the "
			 "sockets in it; run chmod 700 %s",
			 dir, (unsigned)(st.st_mode & 07777), dir);
		return -EPERM;
	}
	return 0;
}

/* Is somebody listening at path? (A socket file whose process died, or
 * exec'd, refuses connections: it is stale.) */
static bool socket_alive(const struct sockaddr_un *addr)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	bool alive;

	if (fd < 0)
		return true; /* cannot tell: leave it alone */
	alive = connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) == 0 ||
		errno == EAGAIN;
	close(fd);
	return alive;
}

static int control_listen(void)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	char dir[4096], path[4096];
	int fd, rc;

	if (gs_proto_runtime_dir(dir, sizeof(dir)) != 0) {
		gs_error("no control socket: the runtime directory's name is too long; set "
			 GS_PROTO_ENV_RUNTIME_DIR " to a shorter one");
		return -ENAMETOOLONG;
	}
	if (gs_proto_socket_path(path, sizeof(path), dir, getpid()) != 0 ||
	    strlen(path) >= sizeof(addr.sun_path)) {
		gs_error("no control socket: a socket path in %s would be longer than %zu "
			 "bytes; set " GS_PROTO_ENV_RUNTIME_DIR " to a shorter directory",
			 dir, sizeof(addr.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	rc = runtime_dir_prepare(dir);
	if (rc)
		return rc;
	memcpy(addr.sun_path, path, strlen(path) + 1);

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		gs_perror("no control socket: socket()");
		return -errno;
	}
	rc = bind(fd, (struct sockaddr *)&addr, sizeof(addr));
	if (rc != 0 && errno == EADDRINUSE && !socket_alive(&addr)) {
		/* Left by an earlier process with our pid (killed, or this
		 * process before an exec). */
		gs_info("replacing the stale control socket %s", path);
		unlink(path);
		rc = bind(fd, (struct sockaddr *)&addr, sizeof(addr));
	}
	if (rc != 0) {
		int e = errno;

		if (e == EADDRINUSE)
			gs_error("no control socket: %s is in use by another live process "
				 "(another pid namespace sharing %s?)", path, dir);
		else
			gs_perror("no control socket: cannot bind %s", path);
		close(fd);
		return -e;
	}
	/* The directory keeps others out already; the socket says so too. */
	if (chmod(path, GS_PROTO_SOCKET_MODE) != 0)
		gs_pwarn("chmod %s", path);
	if (listen(fd, MAX_CONNS) != 0) {
		int e = errno;

		gs_perror("no control socket: listen on %s", path);
		unlink(path);
		close(fd);
		return -e;
	}
	ctl.listen_fd = fd;
	snprintf(ctl.path, sizeof(ctl.path), "%s", path);
	return 0;
}

static void control_atexit(void)
{
	/* No lock: a thread may hold it while the process exits. Only the
	 * process that made the socket removes it (a fork child inherits
	 * this handler, not the socket). */
	if (atomic_load(&ctl.owner_pid) == getpid())
		unlink(ctl.path);
}

static void atfork_prepare(void)
{
	pthread_mutex_lock(&ctl.lock);
}

static void atfork_parent(void)
{
	pthread_mutex_unlock(&ctl.lock);
}

/*
 * The child has no control thread; the socket is its parent's. Close the
 * child's copies of the descriptors: a listening socket kept open by a
 * child would accept (and never answer) connections meant for the parent,
 * even after the parent exited. The child's own first cuInit starts a
 * control thread for the child's pid.
 */
static void atfork_child(void)
{
	if (ctl.listen_fd >= 0)
		close(ctl.listen_fd);
	for (int i = 0; i < 2; i++)
		if (ctl.wake[i] >= 0)
			close(ctl.wake[i]);
	for (int i = 0; i < MAX_CONNS; i++) {
		if (ctl.conns[i].fd >= 0)
			close(ctl.conns[i].fd);
		free(ctl.conns[i].in);
		ctl.conns[i] = (struct conn){ .fd = -1 };
	}
	ctl.listen_fd = -1;
	ctl.wake[0] = ctl.wake[1] = -1;
	ctl.path[0] = '\0';
	/* The operation (if one ran) belongs to a thread the child lacks; its
	 * request is leaked on purpose rather than freed under it. */
	ctl.op_running = false;
	memset(&ctl.op, 0, sizeof(ctl.op));
	ctl.last_status = NULL;
	atomic_store(&ctl.owner_pid, 0);
	ctl.failed_pid = 0;
	pthread_mutex_init(&ctl.lock, NULL);
}

static void register_handlers(void)
{
	for (int i = 0; i < MAX_CONNS; i++)
		ctl.conns[i].fd = -1;
	if (atexit(control_atexit) != 0)
		gs_warn("atexit failed: the control socket will outlive the process");
	if (pthread_atfork(atfork_prepare, atfork_parent, atfork_child) != 0)
		gs_warn("pthread_atfork failed: a fork child keeps the control socket open");
}

int gs_control_start(void)
{
	pid_t pid = getpid();
	pthread_t thread;
	sigset_t block, old;
	int rc;

	if (atomic_load_explicit(&ctl.owner_pid, memory_order_acquire) == pid)
		return 0;
	pthread_once(&register_once, register_handlers);
	pthread_mutex_lock(&ctl.lock);
	if (atomic_load(&ctl.owner_pid) == pid || ctl.failed_pid == pid) {
		rc = ctl.failed_pid == pid ? -EIO : 0;
		goto out;
	}
	rc = control_listen();
	if (rc)
		goto failed;
	if (pipe2(ctl.wake, O_CLOEXEC | O_NONBLOCK) != 0) {
		rc = -errno;
		gs_perror("no control socket: pipe");
		goto failed_socket;
	}
	/* Blocked in the new thread from its first instruction: the mask is
	 * inherited. Synchronous signals stay deliverable (blocking them
	 * would not stop them, only turn a crash report into a silent kill). */
	sigfillset(&block);
	sigdelset(&block, SIGSEGV);
	sigdelset(&block, SIGBUS);
	sigdelset(&block, SIGFPE);
	sigdelset(&block, SIGILL);
	sigdelset(&block, SIGTRAP);
	sigdelset(&block, SIGSYS);
	pthread_sigmask(SIG_SETMASK, &block, &old);
	rc = pthread_create(&thread, NULL, control_main, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc) {
		gs_error("no control socket: cannot start the control thread: %s", strerror(rc));
		rc = -rc;
		close(ctl.wake[0]);
		close(ctl.wake[1]);
		ctl.wake[0] = ctl.wake[1] = -1;
		goto failed_socket;
	}
	pthread_setname_np(thread, "gpuswap-ctl");
	pthread_detach(thread);
	snprintf(ctl.last_state, sizeof(ctl.last_state), "running");
	atomic_store_explicit(&ctl.owner_pid, pid, memory_order_release);
	gs_info("control socket %s", ctl.path);
	goto out;

failed_socket:
	unlink(ctl.path);
	close(ctl.listen_fd);
	ctl.listen_fd = -1;
	ctl.path[0] = '\0';
failed:
	ctl.failed_pid = pid;
out:
	pthread_mutex_unlock(&ctl.lock);
	return rc;
}

bool gs_control_running(void)
{
	return atomic_load_explicit(&ctl.owner_pid, memory_order_acquire) == getpid();
}

int gs_control_socket_path(char *buf, size_t len)
{
	if (!gs_control_running()) {
		if (len)
			buf[0] = '\0';
		return -ENOENT;
	}
	snprintf(buf, len, "%s", ctl.path);
	return 0;
}

/* The hook the generator calls after every successful cuInit (the
 * annotation "cuInit track"): the control thread starts with the driver,
 * not with the library. */
void gs_track_cuInit(bool ptds, unsigned int Flags)
{
	(void)ptds;
	(void)Flags;
	gs_control_start();
}
