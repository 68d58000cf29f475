/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Control-protocol client and the tools' shared front end (client.h).
 */
#include "client.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "protocol.h"

static char *msgf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *msgf(const char *fmt, ...)
{
	char *s = NULL;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	return s;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void set_code(const char **code, const char *value)
{
	if (code)
		*code = value;
}

/* ---- connecting ------------------------------------------------------------------ */

/* Whether a process `pid` exists (EPERM: it does, another user's). */
static bool pid_alive(pid_t pid)
{
	return kill(pid, 0) == 0 || errno == EPERM;
}

int gs_client_connect_path(struct gs_client *c, const char *path, pid_t pid, char **err,
			   const char **code)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	int fd, rc, e;

	memset(c, 0, sizeof(*c));
	c->fd = -1;
	c->pid = pid;
	if (strlen(path) >= sizeof(addr.sun_path)) {
		*err = msgf("socket path %s is too long for a UNIX socket (at most %zu bytes): "
			    "set " GS_PROTO_ENV_RUNTIME_DIR " to a shorter directory",
			    path, sizeof(addr.sun_path) - 1);
		set_code(code, GS_CODE_NO_SOCKET);
		return -ENAMETOOLONG;
	}
	memcpy(addr.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		e = errno;
		*err = msgf("socket: %s", strerror(e));
		set_code(code, GS_CODE_FAILED);
		return -e;
	}
	do
		rc = connect(fd, (struct sockaddr *)&addr, sizeof(addr));
	while (rc < 0 && errno == EINTR);
	if (rc < 0 && errno == EISCONN) /* an interrupted connect that went through */
		rc = 0;
	if (rc < 0) {
		e = errno;
		close(fd);
		switch (e) {
		case ENOENT:
		case ENOTDIR:
			return -ENOENT; /* the caller knows what to say */
		case ECONNREFUSED:
			*err = pid_alive(pid)
				? msgf("stale control socket %s: PID %ld is running but nothing "
				       "listens there (it exec'd, or lost its control thread); "
				       "remove the file",
				       path, (long)pid)
				: msgf("stale control socket %s: PID %ld is not running (it did "
				       "not exit cleanly); remove the file",
				       path, (long)pid);
			set_code(code, GS_CODE_STALE);
			return -e;
		case EACCES:
		case EPERM:
			*err = msgf("the control socket of PID %ld (%s) belongs to another user: "
				    "run this tool as that user or as root",
				    (long)pid, path);
			set_code(code, GS_CODE_PERMISSION);
			return -e;
		case EAGAIN:
			*err = msgf("PID %ld accepts no more control connections right now; try "
				    "again", (long)pid);
			set_code(code, GS_CODE_BUSY);
			return -e;
		default:
			*err = msgf("cannot connect to %s: %s", path, strerror(e));
			set_code(code, GS_CODE_NO_SOCKET);
			return -e;
		}
	}
	/* The listener's credentials (recorded when it called listen()): a
	 * socket left by a dead process and taken over by someone else, or
	 * a pid reused, must not receive our requests. */
	if (pid > 0 && getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0 &&
	    cred.pid != 0 && cred.pid != pid) {
		close(fd);
		*err = msgf("%s is served by PID %ld, not by PID %ld: a stale socket whose "
			    "name was reused; remove the file",
			    path, (long)cred.pid, (long)pid);
		set_code(code, GS_CODE_STALE);
		return -ESTALE;
	}
	c->fd = fd;
	snprintf(c->path, sizeof(c->path), "%s", path);
	return 0;
}

/* The owner of `pid`, from /proc; (uid_t)-1 when unknown. */
static uid_t pid_owner(pid_t pid)
{
	char proc[64];
	struct stat st;

	snprintf(proc, sizeof(proc), "/proc/%ld", (long)pid);
	return stat(proc, &st) == 0 ? st.st_uid : (uid_t)-1;
}

/* A default directory of another user is only trusted when that user
 * (or root) owns it and nobody else may write in it: a directory squatted
 * by a third user could otherwise collect our requests. */
static bool dir_trusted(const char *dir, uid_t uid)
{
	struct stat st;

	return lstat(dir, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_uid == uid || st.st_uid == 0) &&
	       !(st.st_mode & 022);
}

int gs_client_connect(struct gs_client *c, pid_t pid, char **err, const char **code)
{
	char dirs[3][PATH_MAX], path[PATH_MAX];
	uid_t owner = pid_owner(pid);
	uid_t uid = owner != (uid_t)-1 ? owner : geteuid();
	int ndirs = 1, rc;

	*err = NULL;
	if (gs_proto_runtime_dir(dirs[0], sizeof(dirs[0])) != 0) {
		*err = msgf("the runtime directory's name is too long: check "
			    GS_PROTO_ENV_RUNTIME_DIR " and XDG_RUNTIME_DIR");
		set_code(code, GS_CODE_NO_SOCKET);
		return -ENAMETOOLONG;
	}
	/* The process may not share our environment: also look where it
	 * puts its socket by default (root reaches every user's). */
	snprintf(dirs[ndirs++], sizeof(dirs[0]), "/run/user/%lu/gpuswap", (unsigned long)uid);
	snprintf(dirs[ndirs++], sizeof(dirs[0]), "/tmp/gpuswap-%lu", (unsigned long)uid);
	for (int i = 0; i < ndirs; i++) {
		bool duplicate = false;

		for (int j = 0; j < i; j++)
			duplicate |= strcmp(dirs[i], dirs[j]) == 0;
		if (duplicate || (i > 0 && !dir_trusted(dirs[i], uid)))
			continue;
		if (gs_proto_socket_path(path, sizeof(path), dirs[i], pid) != 0)
			continue;
		rc = gs_client_connect_path(c, path, pid, err, code);
		if (rc != -ENOENT)
			return rc;
	}
	if (owner == (uid_t)-1 && !pid_alive(pid)) {
		*err = msgf("no gpuswap control socket for PID %ld in %s: is the process running "
			    "under LD_PRELOAD=libgpuswap.so (and has it called cuInit)? "
			    "(no process with PID %ld is running)",
			    (long)pid, dirs[0], (long)pid);
		set_code(code, GS_CODE_NO_SOCKET);
	} else if (owner != (uid_t)-1 && owner != geteuid() && geteuid() != 0) {
		*err = msgf("PID %ld belongs to another user (uid %lu): run this tool as that "
			    "user or as root",
			    (long)pid, (unsigned long)owner);
		set_code(code, GS_CODE_PERMISSION);
	} else {
		*err = msgf("no gpuswap control socket for PID %ld in %s: is the process running "
			    "under LD_PRELOAD=libgpuswap.so (and has it called cuInit)?",
			    (long)pid, dirs[0]);
		set_code(code, GS_CODE_NO_SOCKET);
	}
	return -ENOENT;
}

void gs_client_close(struct gs_client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	free(c->buf);
	memset(c, 0, sizeof(*c));
	c->fd = -1;
}

/* ---- messages --------------------------------------------------------------------- */

int gs_client_send(struct gs_client *c, json_t *req, char **err, const char **code)
{
	char *text = json_dumps(req, JSON_COMPACT);
	size_t len, off = 0;
	int e = 0;

	if (!text) {
		*err = msgf("out of memory");
		set_code(code, GS_CODE_FAILED);
		return -ENOMEM;
	}
	len = strlen(text);
	text[len++] = '\n'; /* over the NUL: the line is sent by length */
	while (off < len) {
		ssize_t n = send(c->fd, text + off, len - off, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			e = n < 0 ? errno : EIO;
			break;
		}
		off += (size_t)n;
	}
	free(text);
	if (e) {
		*err = msgf("PID %ld closed its control connection (%s): did it exit?",
			    (long)c->pid, strerror(e));
		set_code(code, GS_CODE_DISCONNECTED);
		return -e;
	}
	return 0;
}

int gs_client_recv(struct gs_client *c, int timeout_ms, json_t **msg, char **err,
		   const char **code)
{
	double deadline = timeout_ms >= 0 ? now_s() + timeout_ms / 1000.0 : 0;

	*msg = NULL;
	for (;;) {
		char *nl = c->len ? memchr(c->buf, '\n', c->len) : NULL;
		struct pollfd p = { .fd = c->fd, .events = POLLIN };
		json_error_t jerr;
		ssize_t n;
		int wait = -1, rc;

		if (nl) {
			size_t len = (size_t)(nl - c->buf);

			*msg = json_loadb(c->buf, len, 0, &jerr);
			memmove(c->buf, nl + 1, c->len - len - 1);
			c->len -= len + 1;
			if (!*msg || !json_is_object(*msg)) {
				json_decref(*msg);
				*msg = NULL;
				*err = msgf("PID %ld sent a line that is not a JSON object (%s): is "
					    "it running another version of gpuswap?",
					    (long)c->pid, jerr.text);
				set_code(code, GS_CODE_PROTOCOL);
				return -EPROTO;
			}
			return 0;
		}
		if (c->len > GS_PROTO_MAX_REPLY) {
			*err = msgf("PID %ld sent a reply longer than %d bytes", (long)c->pid,
				    GS_PROTO_MAX_REPLY);
			set_code(code, GS_CODE_PROTOCOL);
			return -EMSGSIZE;
		}
		if (c->len == c->cap) {
			size_t cap = c->cap ? c->cap * 2 : 4096;
			char *buf = realloc(c->buf, cap);

			if (!buf) {
				*err = msgf("out of memory");
				set_code(code, GS_CODE_FAILED);
				return -ENOMEM;
			}
			c->buf = buf;
			c->cap = cap;
		}
		if (timeout_ms >= 0) {
			double left = deadline - now_s();

			if (left <= 0)
				return -ETIMEDOUT;
			wait = (int)(left * 1000.0) + 1;
		}
		rc = poll(&p, 1, wait);
		if (rc < 0 && errno == EINTR)
			return -EINTR;
		if (rc < 0) {
			int e = errno;

			*err = msgf("poll: %s", strerror(e));
			set_code(code, GS_CODE_FAILED);
			return -e;
		}
		if (rc == 0)
			continue; /* the deadline check above decides */
		do
			n = read(c->fd, c->buf + c->len, c->cap - c->len);
		while (n < 0 && errno == EINTR);
		if (n <= 0) {
			*err = msgf("PID %ld closed the control connection before replying (%s): "
				    "did it exit?",
				    (long)c->pid, n < 0 ? strerror(errno) : "end of file");
			set_code(code, GS_CODE_DISCONNECTED);
			return n < 0 ? -errno : -ECONNRESET;
		}
		c->len += (size_t)n;
	}
}

/* ---- the tools' front end ------------------------------------------------------ */

void gs_tool_init(struct gs_tool *t, const char *name)
{
	memset(t, 0, sizeof(*t));
	t->name = name;
	t->bar = isatty(STDERR_FILENO) == 1;
}

void gs_tool_error(struct gs_tool *t, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", t->name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int gs_tool_parse_pid(struct gs_tool *t, const char *arg, pid_t *pid)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(arg, &end, 10);
	if (!isdigit((unsigned char)arg[0]) || *end || errno || v < 1 || v > INT_MAX) {
		gs_tool_error(t, "'%s' is not a process id (a positive number, as ps and gpu-ps "
			      "show it)", arg);
		return -EINVAL;
	}
	*pid = (pid_t)v;
	return 0;
}

int gs_tool_pid_operand(struct gs_tool *t, int argc, char **argv, int optind,
			void (*usage)(FILE *), pid_t *pid)
{
	if (optind + 1 != argc) {
		gs_tool_error(t, optind == argc ? "which process? give its PID"
						: "one PID at a time");
		usage(stderr);
		return -EINVAL;
	}
	return gs_tool_parse_pid(t, argv[optind], pid);
}

int gs_tool_parse_timeout(struct gs_tool *t, const char *arg, double *seconds)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(arg, &end);
	/* Compared in milliseconds: that is what goes on the wire. */
	if (errno || end == arg || *end || !isfinite(v) || v * 1000.0 < 1.0 ||
	    v * 1000.0 > GS_PROTO_MAX_TIMEOUT_MS) {
		gs_tool_error(t, "bad --timeout '%s': seconds, from 0.001 to %d", arg,
			      GS_PROTO_MAX_TIMEOUT_MS / 1000);
		return -EINVAL;
	}
	*seconds = v;
	return 0;
}

static bool all_digits(const char *s, size_t n)
{
	if (n == 0 || n > 9)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isdigit((unsigned char)s[i]))
			return false;
	return true;
}

/* GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx (nvidia-smi -L), or a prefix of
 * it long enough to be unambiguous in practice: hex digits and dashes. */
static bool is_uuid(const char *s, size_t n)
{
	size_t hex = 0;

	if (n < 4 || strncmp(s, "GPU-", 4) != 0)
		return false;
	for (size_t i = 4; i < n; i++) {
		if (isxdigit((unsigned char)s[i]))
			hex++;
		else if (s[i] != '-')
			return false;
	}
	return hex >= 8 && hex <= 32;
}

int gs_tool_check_device(struct gs_tool *t, const char *spec)
{
	size_t n = strlen(spec);
	bool ok = n > 0 && n <= GS_PROTO_MAX_DEVICE_SPEC;

	if (ok && !strchr(spec, '=')) {
		ok = all_digits(spec, n) || is_uuid(spec, n);
	} else if (ok) {
		/* a=b[,c=d...]: application ordinal = target ordinal or UUID */
		for (const char *p = spec; ok && *p;) {
			size_t len = strcspn(p, ","), left;
			const char *eq = memchr(p, '=', len);

			left = eq ? (size_t)(eq - p) : 0;
			ok = eq && all_digits(p, left) &&
			     (all_digits(eq + 1, len - left - 1) || is_uuid(eq + 1, len - left - 1));
			p += len;
			if (*p == ',' && !*++p)
				ok = false;
		}
	}
	if (!ok)
		gs_tool_error(t, "bad --device '%s': give a device ordinal (1), a UUID as "
			      "nvidia-smi -L prints it (GPU-...), or a map of application "
			      "ordinals to devices (0=1,1=0)", spec);
	return ok ? 0 : -EINVAL;
}

char *gs_tool_abspath(const char *path)
{
	char cwd[PATH_MAX];

	if (path[0] == '/')
		return strdup(path);
	if (!getcwd(cwd, sizeof(cwd)))
		return NULL;
	return msgf("%s/%s", strcmp(cwd, "/") == 0 ? "" : cwd, path);
}

json_t *gs_tool_new_request(struct gs_tool *t, const char *op, const char *device,
			    double timeout_s)
{
	json_t *req = json_pack("{s:i, s:s}", GS_KEY_VERSION, GS_PROTO_VERSION, GS_KEY_OP, op);

	/* Without its device a request would mean another operation (a thaw
	 * where it was): better not sent at all. */
	if (req && device && json_object_set_new(req, GS_KEY_DEVICE, json_string(device))) {
		json_decref(req);
		req = NULL;
	}
	if (req && timeout_s >= 0)
		json_object_set_new(req, GS_KEY_TIMEOUT_MS,
				    json_integer((json_int_t)(timeout_s * 1000.0 + 0.5)));
	if (!req)
		gs_tool_error(t, "out of memory");
	return req;
}

int gs_tool_set_image(struct gs_tool *t, json_t *req, const char *image, char **abs_image)
{
	*abs_image = gs_tool_abspath(image);
	if (!*abs_image) {
		gs_tool_error(t, "cannot make %s absolute: %s", image, strerror(errno));
		return -ENOMEM;
	}
	json_object_set_new(req, GS_KEY_IMAGE, json_string(*abs_image));
	return 0;
}

void gs_format_bytes(uint64_t bytes, char *buf, size_t len)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
	double v = (double)bytes;
	unsigned u = 0;

	while (v >= 1024.0 && u + 1 < sizeof(units) / sizeof(units[0])) {
		v /= 1024.0;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%llu B", (unsigned long long)bytes);
	else
		snprintf(buf, len, "%.1f %s", v, units[u]);
}

const char *gs_json_str(json_t *obj, const char *key, const char *fallback)
{
	const char *s = json_string_value(json_object_get(obj, key));

	return s ? s : fallback;
}

json_t *gs_tool_error_reply(const char *code, const char *msg)
{
	json_t *r = json_object();

	json_object_set_new(r, GS_KEY_VERSION, json_integer(GS_PROTO_VERSION));
	json_object_set_new(r, GS_KEY_OK, json_false());
	json_object_set_new(r, GS_KEY_ERROR, json_string(msg ? msg : "unknown error"));
	json_object_set_new(r, GS_KEY_CODE, json_string(code ? code : GS_CODE_FAILED));
	return r;
}

int gs_tool_exit_status(json_t *reply)
{
	const char *code = json_string_value(json_object_get(reply, GS_KEY_CODE));
	static const char *const unreachable[] = {
		GS_CODE_PERMISSION, GS_CODE_NO_SOCKET, GS_CODE_STALE,
		GS_CODE_DISCONNECTED, GS_CODE_PROTOCOL, GS_CODE_NO_ANSWER,
	};

	if (json_is_true(json_object_get(reply, GS_KEY_OK)))
		return GS_EXIT_OK;
	if (code && strcmp(code, GS_CODE_INTERRUPTED) == 0)
		return GS_EXIT_INTERRUPTED;
	for (size_t i = 0; code && i < sizeof(unreachable) / sizeof(unreachable[0]); i++)
		if (strcmp(code, unreachable[i]) == 0)
			return GS_EXIT_UNREACHABLE;
	return GS_EXIT_FAILED;
}

/* ---- progress --------------------------------------------------------------------- */

static void bar_draw(struct gs_tool *t, json_t *progress)
{
	const char *phase = json_string_value(json_object_get(progress, GS_KEY_PHASE));
	json_int_t done = json_integer_value(json_object_get(progress, GS_KEY_DONE));
	json_int_t total = json_integer_value(json_object_get(progress, GS_KEY_TOTAL));
	double now = now_s(), elapsed;
	char sdone[32], stotal[32], srate[32], bar[25];
	bool final = total > 0 && done >= total;

	if (!phase)
		phase = "";
	if (strcmp(phase, t->phase) != 0) {
		/* Each phase keeps its last line on screen. */
		if (t->bar_drawn)
			fputc('\n', stderr);
		snprintf(t->phase, sizeof(t->phase), "%s", phase);
		t->phase_start = now;
	} else if (!final && now - t->last_draw < 0.1) {
		return;
	}
	t->last_draw = now;
	elapsed = now - t->phase_start;
	gs_format_bytes((uint64_t)(done < 0 ? 0 : done), sdone, sizeof(sdone));
	gs_format_bytes((uint64_t)(total < 0 ? 0 : total), stotal, sizeof(stotal));
	if (elapsed > 0.05)
		gs_format_bytes((uint64_t)((double)done / elapsed), srate, sizeof(srate));
	else
		snprintf(srate, sizeof(srate), "-");
	if (total > 0) {
		int pct = (int)(100.0 * (double)done / (double)total);
		int fill = (int)(24.0 * (double)done / (double)total);

		if (pct > 100)
			pct = 100;
		for (int i = 0; i < 24; i++)
			bar[i] = i < fill ? '#' : '.';
		bar[24] = '\0';
		fprintf(stderr, "\r%s: %-8s [%s] %3d%%  %s / %s  %s/s\033[K", t->name, phase, bar,
			pct, sdone, stotal, srate);
	} else {
		fprintf(stderr, "\r%s: %-8s %s  %s/s\033[K", t->name, phase, sdone, srate);
	}
	fflush(stderr);
	t->bar_drawn = true;
}

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	interrupted = sig;
}

static void print_json_line(json_t *j)
{
	char *text = json_dumps(j, JSON_COMPACT);

	if (text) {
		printf("%s\n", text);
		fflush(stdout);
		free(text);
	}
}

int gs_tool_request(struct gs_tool *t, pid_t pid, json_t *req, json_t **reply)
{
	struct sigaction sa = { .sa_handler = on_signal }, old[3];
	static const int sigs[3] = { SIGINT, SIGTERM, SIGHUP };
	struct gs_client c;
	const char *code = NULL;
	char *err = NULL;
	json_t *msg = NULL;
	int rc;

	*reply = NULL;
	rc = gs_client_connect(&c, pid, &err, &code);
	if (rc == 0)
		rc = gs_client_send(&c, req, &err, &code);
	if (rc) {
		*reply = gs_tool_error_reply(code, err);
		free(err);
		gs_client_close(&c);
		return gs_tool_exit_status(*reply);
	}
	/* No SA_RESTART: an interrupt must end the wait below, and only the
	 * wait: the operation runs in the process and finishes there. */
	sigemptyset(&sa.sa_mask);
	for (int i = 0; i < 3; i++)
		sigaction(sigs[i], &sa, &old[i]);
	for (;;) {
		json_t *progress;

		rc = gs_client_recv(&c, -1, &msg, &err, &code);
		if (rc == -EINTR && !interrupted)
			continue;
		if (rc == -EINTR) {
			err = msgf("interrupted: the operation goes on inside PID %ld; gpu-ps "
				   "shows when it is done",
				   (long)pid);
			code = GS_CODE_INTERRUPTED;
		}
		if (rc) {
			msg = gs_tool_error_reply(code, err);
			free(err);
			break;
		}
		progress = json_object_get(msg, GS_KEY_PROGRESS);
		if (!json_is_object(progress))
			break;
		if (t->json)
			print_json_line(msg);
		if (t->bar)
			bar_draw(t, progress);
		json_decref(msg);
		msg = NULL;
	}
	for (int i = 0; i < 3; i++)
		sigaction(sigs[i], &old[i], NULL);
	if (t->bar_drawn) {
		fputc('\n', stderr);
		t->bar_drawn = false;
	}
	gs_client_close(&c);
	*reply = msg;
	return gs_tool_exit_status(msg);
}

int gs_tool_report(struct gs_tool *t, pid_t pid, json_t *reply, const char *done)
{
	int status = gs_tool_exit_status(reply);
	const char *state = json_string_value(json_object_get(reply, GS_KEY_STATE));
	const char *op = json_string_value(json_object_get(reply, GS_KEY_OP));
	const char *code = json_string_value(json_object_get(reply, GS_KEY_CODE));

	if (t->json)
		print_json_line(reply);
	if (status == GS_EXIT_OK) {
		if (done && !t->json)
			printf("%s\n", done);
		return status;
	}
	/* The process's own errors are about that process; the tool's own
	 * (no socket, another user's) say which PID already. */
	if (op)
		gs_tool_error(t, "PID %ld: %s", (long)pid,
			      gs_json_str(reply, GS_KEY_ERROR, "failed without a message"));
	else
		gs_tool_error(t, "%s", gs_json_str(reply, GS_KEY_ERROR, "failed without a message"));
	/* Where the failure left the process, and the way on. */
	if (!state || !op || strcmp(op, GS_OP_STATUS) == 0 || strcmp(op, GS_OP_CHECK) == 0 ||
	    (code && strcmp(code, GS_CODE_BUSY) == 0))
		return status;
	if (strcmp(state, "frozen") == 0)
		gs_tool_error(t, "PID %ld is frozen: gpu-thaw %ld resumes it", (long)pid, (long)pid);
	else if (strcmp(state, "released") == 0)
		gs_tool_error(t, "PID %ld is released with its saved state intact: gpu-thaw "
			      "[--device SPEC] %ld continues it (on any device that fits)",
			      (long)pid, (long)pid);
	else if (strcmp(state, "running") == 0)
		gs_tool_error(t, "PID %ld is running as before", (long)pid);
	return status;
}
