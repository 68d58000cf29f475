/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The operation thread: one per check, freeze, release, thaw or swap,
 * started here for a request the control thread accepted. It runs the
 * replay functions (replay/replay.h) with the connection lent to it for
 * progress lines and the final reply, then hands the connection back to
 * the control thread (control.c) through the wake pipe. Also here: the
 * weak fallbacks that stand in for replay where it is not linked in, and
 * the control plane's fault points.
 *
 * Apart from control.c because it runs on another thread, past the gate
 * replay may have closed, and shares with the control thread only what
 * struct op and gs_ctl.lock say.
 */
#define GS_LOG_SUBSYS "control"
#include "control_internal.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "protocol.h"
#include "replay.h"
#include "shim.h"

/* How long a half-written progress line may wait to be completed. */
#define PROGRESS_DEADLINE_MS 1000
/* Progress lines per phase are sent at most this often (the first, the
 * last and every phase change always go). */
#define PROGRESS_INTERVAL_MS 100

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
					 unsigned flags, const struct gs_progress *progress,
					 json_t **report, char **err)
{
	(void)device_spec;
	(void)timeout_ms;
	(void)flags;
	(void)progress;
	return replay_missing(report, err);
}

__attribute__((weak)) int gs_replay_status(json_t **report)
{
	return replay_missing(report, NULL);
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
	pthread_mutex_lock(&gs_ctl.lock);
	snprintf(op->phase, sizeof(op->phase), "%s", phase);
	op->done = done;
	op->total = total;
	pthread_mutex_unlock(&gs_ctl.lock);

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
	json_object_set_new(p, GS_KEY_PHASE, ctl_json_text(phase));
	json_object_set_new(p, GS_KEY_DONE, json_integer((json_int_t)done));
	json_object_set_new(p, GS_KEY_TOTAL, json_integer((json_int_t)total));
	json_object_set_new(msg, GS_KEY_VERSION, json_integer(GS_PROTO_VERSION));
	json_object_set_new(msg, GS_KEY_PROGRESS, p);
	line = ctl_json_line(msg, &len);
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
		if (ctl_send_all(c->fd, line + n, len - (size_t)n, now + PROGRESS_DEADLINE_MS))
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

static unsigned swap_flags(json_t *req)
{
	return (json_is_true(json_object_get(req, GS_KEY_VIA_HOST)) ? GS_SWAP_VIA_HOST : 0) |
	       (json_is_true(json_object_get(req, GS_KEY_FORCE)) ? GS_SWAP_FORCE : 0);
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
		rc = gs_replay_swap(device, opt_timeout(op->request), swap_flags(op->request),
				    &prog, &rep, &err);

	if (rc == 0) {
		json_object_set_new(reports, step, rep ? rep : json_null());
		free(err);
		return 0;
	}
	if (rc > 0) /* a contract breach; keep it an error */
		rc = -EPROTO;
	*fail = ctl_error_new(op->name, errno_code(-rc), -rc, "%s: %s", step,
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
		reply = ctl_reply_new(op->name, true);
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
		reply = ctl_error_new(op->name, GS_CODE_FAILED, ENOMEM, "out of memory");
	ctl_conn_send(op->conn, reply, REPLY_DEADLINE_MS);
	do
		n = write(gs_ctl.wake[1], "x", 1);
	while (n < 0 && errno == EINTR);
	if (n != 1)
		gs_perror("cannot wake the control thread");
	return NULL;
}

/* ---- starting an operation ------------------------------------------------------ */

void ctl_op_start(struct conn *c, const struct op_def *def, json_t *req)
{
	int rc;

	/* Who is running now: replay is called only from the operation
	 * thread while an operation runs. */
	snprintf(gs_ctl.last_state, sizeof(gs_ctl.last_state), "%s",
		 gs_proc_state_name(gs_replay_state()));
	pthread_mutex_lock(&gs_ctl.lock);
	memset(&gs_ctl.op, 0, sizeof(gs_ctl.op));
	gs_ctl.op.name = def->name;
	gs_ctl.op.request = json_incref(req);
	gs_ctl.op.conn = c;
	gs_ctl.op.start_ms = now_ms();
	c->lent = true;
	pthread_mutex_unlock(&gs_ctl.lock);

	/* Inherits the control thread's mask: no asynchronous signal. */
	rc = pthread_create(&gs_ctl.op_thread, NULL, op_main, &gs_ctl.op);
	if (rc) {
		pthread_mutex_lock(&gs_ctl.lock);
		c->lent = false;
		pthread_mutex_unlock(&gs_ctl.lock);
		json_decref(gs_ctl.op.request);
		gs_ctl.op.request = NULL;
		ctl_conn_send(c,
			      ctl_error_new(def->name, GS_CODE_FAILED, rc,
					    "cannot start the operation thread: %s", strerror(rc)),
			      REPLY_DEADLINE_MS);
		return;
	}
	pthread_setname_np(gs_ctl.op_thread, "gpuswap-op");
	gs_ctl.op_running = true;
	gs_info("%s requested by pid %ld", def->name, (long)c->peer_pid);
}
