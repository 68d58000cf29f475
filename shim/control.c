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
 *
 * This file holds the control thread's own work: setting up the socket
 * (runtime directory, stale sockets), accepting connections and checking
 * each peer (SO_PEERCRED), reading request lines, the poll loop, and what
 * fork and exit need. What is said on a connection is in control_proto.c,
 * the operation thread in control_op.c (control_internal.h).
 */
#define GS_LOG_SUBSYS "control"
#include "control_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "protocol.h"
#include "replay.h"
#include "shim.h"

/* A connection that sends nothing for this long is closed, so forgotten
 * clients cannot use up the slots. */
#define IDLE_TIMEOUT_MS 60000

struct ctl_state gs_ctl = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.listen_fd = -1,
	.wake = { -1, -1 },
};

static pthread_once_t register_once = PTHREAD_ONCE_INIT;

/* ---- connections -------------------------------------------------------------- */

static void conn_close(struct conn *c)
{
	pthread_mutex_lock(&gs_ctl.lock);
	close(c->fd);
	free(c->in);
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	pthread_mutex_unlock(&gs_ctl.lock);
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
				ctl_conn_send(c, ctl_error_new(NULL, GS_CODE_TOO_LONG, 0,
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
			ctl_handle_line(c, c->in, len);
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

	fd = accept4(gs_ctl.listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
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
		ctl_conn_send(&tmp,
			      ctl_error_new(NULL, GS_CODE_PERMISSION, EPERM,
					    "process %ld belongs to another user (uid %lu): run "
					    "the tool as that user or as root",
					    (long)getpid(), (unsigned long)geteuid()),
			      100);
		close(fd);
		return;
	}
	pthread_mutex_lock(&gs_ctl.lock);
	for (int i = 0; i < MAX_CONNS && !slot; i++)
		if (gs_ctl.conns[i].fd < 0)
			slot = &gs_ctl.conns[i];
	if (slot) {
		slot->fd = fd;
		slot->peer_pid = cred.pid;
		slot->last_ms = now_ms();
	}
	pthread_mutex_unlock(&gs_ctl.lock);
	if (!slot) {
		struct conn tmp = { .fd = fd, .peer_pid = cred.pid };

		ctl_conn_send(&tmp,
			      ctl_error_new(NULL, GS_CODE_BUSY, EBUSY,
					    "too many control connections (%d) to this process; "
					    "try again later", MAX_CONNS),
			      100);
		close(fd);
	}
}

/* The operation thread is done with its connection. */
static void op_finish(void)
{
	struct conn *c = gs_ctl.op.conn;
	char buf[16];

	while (read(gs_ctl.wake[0], buf, sizeof(buf)) > 0)
		;
	if (!gs_ctl.op_running)
		   return;
	pthread_join(gs_ctl.op_thread, NULL);
	gs_ctl.op_running = false;
	json_decref(gs_ctl.op.request);
	gs_ctl.op.request = NULL;
	snprintf(gs_ctl.last_state, sizeof(gs_ctl.last_state), "%s",
		 gs_proc_state_name(gs_replay_state()));
	gs_info("%s finished in %llu ms; process %s", gs_ctl.op.name,
		(unsigned long long)(now_ms() - gs_ctl.op.start_ms), gs_ctl.last_state);
	pthread_mutex_lock(&gs_ctl.lock);
	c->lent = false;
	pthread_mutex_unlock(&gs_ctl.lock);
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

		fds[n] = (struct pollfd){ .fd = gs_ctl.wake[0], .events = POLLIN };
		polled[n++] = NULL;
		fds[n] = (struct pollfd){ .fd = gs_ctl.listen_fd, .events = POLLIN };
		polled[n++] = NULL;
		for (int i = 0; i < MAX_CONNS; i++) {
			struct conn *c = &gs_ctl.conns[i];

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
	/* Not reached unless poll() itself breaks (ENOMEM): stop advertising,
	 * close what nobody else holds (a connection lent to an operation is
	 * the operation's), and let a later cuInit try again. */
	for (int i = 0; i < MAX_CONNS; i++)
		if (gs_ctl.conns[i].fd >= 0 && !gs_ctl.conns[i].lent)
			conn_close(&gs_ctl.conns[i]);
	pthread_mutex_lock(&gs_ctl.lock);
	if (atomic_load(&gs_ctl.owner_pid) == getpid()) {
		unlink(gs_ctl.path);
		atomic_store(&gs_ctl.owner_pid, 0);
	}
	if (gs_ctl.listen_fd >= 0)
		close(gs_ctl.listen_fd);
	gs_ctl.listen_fd = -1;
	pthread_mutex_unlock(&gs_ctl.lock);
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
	/* Only a refused connection means nobody listens: any other failure
	 * (EACCES, ...) says nothing, and the socket is left alone. */
	alive = connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) == 0 ||
		errno != ECONNREFUSED;
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
	gs_ctl.listen_fd = fd;
	/* Fits: checked against sun_path, the size of gs_ctl.path, above. */
	memcpy(gs_ctl.path, addr.sun_path, sizeof(gs_ctl.path));
	return 0;
}

static void control_atexit(void)
{
	/* No lock: a thread may hold it while the process exits. Only the
	 * process that made the socket removes it (a fork child inherits
	 * this handler, not the socket). */
	if (atomic_load(&gs_ctl.owner_pid) == getpid())
		unlink(gs_ctl.path);
}

static void atfork_prepare(void)
{
	pthread_mutex_lock(&gs_ctl.lock);
}

static void atfork_parent(void)
{
	pthread_mutex_unlock(&gs_ctl.lock);
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
	if (gs_ctl.listen_fd >= 0)
		close(gs_ctl.listen_fd);
	for (int i = 0; i < 2; i++)
		if (gs_ctl.wake[i] >= 0)
			close(gs_ctl.wake[i]);
	for (int i = 0; i < MAX_CONNS; i++) {
		if (gs_ctl.conns[i].fd >= 0)
			close(gs_ctl.conns[i].fd);
		free(gs_ctl.conns[i].in);
		gs_ctl.conns[i] = (struct conn){ .fd = -1 };
	}
	gs_ctl.listen_fd = -1;
	gs_ctl.wake[0] = gs_ctl.wake[1] = -1;
	gs_ctl.path[0] = '\0';
	/* The operation (if one ran) belongs to a thread the child lacks; its
	 * request is leaked on purpose rather than freed under it. */
	gs_ctl.op_running = false;
	memset(&gs_ctl.op, 0, sizeof(gs_ctl.op));
	gs_ctl.last_status = NULL;
	atomic_store(&gs_ctl.owner_pid, 0);
	gs_ctl.failed_pid = 0;
	pthread_mutex_init(&gs_ctl.lock, NULL);
}

static void register_handlers(void)
{
	for (int i = 0; i < MAX_CONNS; i++)
		gs_ctl.conns[i].fd = -1;
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

	if (atomic_load_explicit(&gs_ctl.owner_pid, memory_order_acquire) == pid)
		return 0;
	pthread_once(&register_once, register_handlers);
	pthread_mutex_lock(&gs_ctl.lock);
	if (atomic_load(&gs_ctl.owner_pid) == pid || gs_ctl.failed_pid == pid) {
		rc = gs_ctl.failed_pid == pid ? -EIO : 0;
		goto out;
	}
	rc = control_listen();
	if (rc)
		goto failed;
	if (pipe2(gs_ctl.wake, O_CLOEXEC | O_NONBLOCK) != 0) {
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
		close(gs_ctl.wake[0]);
		close(gs_ctl.wake[1]);
		gs_ctl.wake[0] = gs_ctl.wake[1] = -1;
		goto failed_socket;
	}
	pthread_setname_np(thread, "gpuswap-ctl");
	pthread_detach(thread);
	snprintf(gs_ctl.last_state, sizeof(gs_ctl.last_state), "running");
	atomic_store_explicit(&gs_ctl.owner_pid, pid, memory_order_release);
	gs_info("control socket %s", gs_ctl.path);
	goto out;

failed_socket:
	unlink(gs_ctl.path);
	close(gs_ctl.listen_fd);
	gs_ctl.listen_fd = -1;
	gs_ctl.path[0] = '\0';
failed:
	gs_ctl.failed_pid = pid;
out:
	pthread_mutex_unlock(&gs_ctl.lock);
	return rc;
}

bool gs_control_running(void)
{
	return atomic_load_explicit(&gs_ctl.owner_pid, memory_order_acquire) == getpid();
}

int gs_control_socket_path(char *buf, size_t len)
{
	if (!gs_control_running()) {
		if (len)
			buf[0] = '\0';
		return -ENOENT;
	}
	snprintf(buf, len, "%s", gs_ctl.path);
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
