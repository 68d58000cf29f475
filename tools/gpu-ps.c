/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gpu-ps: the processes running under libgpuswap.so, found by their
 * control sockets, each asked for its status. See docs/gpu-ps.1.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <glob.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client.h"
#include "protocol.h"

/* A process that does not answer status in this time is listed as such:
 * its control thread answers at once even during an operation, so only a
 * stopped (SIGSTOP) or wedged process takes longer. */
#define STATUS_TIMEOUT_MS 2000

struct entry {
	pid_t pid;
	char path[PATH_MAX];
	json_t *reply; /* status reply, or a reply-shaped error */
};

struct listing {
	struct entry *v;
	size_t n, cap;
	json_t *stale;  /* [{pid, path, error}] */
	int status;
};

static void usage(FILE *out)
{
	fprintf(out,
		"usage: gpu-ps [options]\n"
		"List the processes running under libgpuswap.so: PID, state (running,\n"
		"frozen, released; an operation in progress), GPUs, device memory tracked,\n"
		"command. Found by their control sockets in $" GS_PROTO_ENV_RUNTIME_DIR ", or\n"
		"when it is not set in $XDG_RUNTIME_DIR/gpuswap and /tmp/gpuswap-UID;\n"
		"stale sockets are reported on stderr and skipped.\n"
		"\n"
		"  -a, --all       also every user's default directory (as root)\n"
		"  -D, --dir DIR   look in DIR instead of the runtime directory\n"
		"      --json      one JSON object: {\"processes\":[status replies],\"stale\":[...]}\n"
		"  -h, --help      this text\n");
}

/* "1234.sock" -> 1234; 0 for anything else. */
static pid_t socket_pid(const char *name)
{
	char *end;
	long v;

	if (name[0] < '0' || name[0] > '9')
		return 0;
	v = strtol(name, &end, 10);
	if (strcmp(end, GS_PROTO_SOCKET_SUFFIX) != 0 || v < 1 || v > INT_MAX)
		return 0;
	return (pid_t)v;
}

static void query(struct gs_tool *t, struct listing *l, const char *path, pid_t pid)
{
	json_t *req = json_pack("{s:i, s:s}", GS_KEY_VERSION, GS_PROTO_VERSION, GS_KEY_OP,
				GS_OP_STATUS);
	const char *code = NULL;
	struct gs_client c;
	json_t *reply = NULL;
	char *err = NULL;
	int rc;

	rc = gs_client_connect_path(&c, path, pid, &err, &code);
	if (rc == -ENOENT) { /* exited since the directory was read */
		json_decref(req);
		return;
	}
	if (rc == 0)
		rc = gs_client_send(&c, req, &err, &code);
	if (rc == 0) {
		rc = gs_client_recv(&c, STATUS_TIMEOUT_MS, &reply, &err, &code);
		if (rc == -ETIMEDOUT || rc == -EINTR) {
			err = NULL;
			if (asprintf(&err, "no answer in %d ms (stopped or wedged?)",
				     STATUS_TIMEOUT_MS) < 0)
				err = NULL;
			code = GS_CODE_NO_ANSWER;
		}
	}
	gs_client_close(&c);
	json_decref(req);
	if (rc && code && strcmp(code, GS_CODE_STALE) == 0) {
		gs_tool_error(t, "%s (skipped)", err ? err : path);
		json_array_append_new(l->stale, json_pack("{s:i, s:s, s:s}", "pid", (int)pid,
							  "path", path, "error",
							  err ? err : "stale"));
		free(err);
		return;
	}
	if (rc) {
		reply = gs_tool_error_reply(code, err);
		gs_tool_error(t, "PID %ld: %s", (long)pid, err ? err : "no answer");
		free(err);
	}
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 16;
		struct entry *v = realloc(l->v, cap * sizeof(*v));

		if (!v) {
			json_decref(reply);
			l->status = GS_EXIT_FAILED;
			return;
		}
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n].pid = pid;
	snprintf(l->v[l->n].path, sizeof(l->v[l->n].path), "%s", path);
	l->v[l->n++].reply = reply;
}

static void scan_dir(struct gs_tool *t, struct listing *l, const char *dir, bool quiet)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	if (!d) {
		/* No directory: no process has made a socket yet. */
		if (errno != ENOENT && !quiet) {
			gs_tool_error(t, "cannot read %s: %s", dir, strerror(errno));
			l->status = GS_EXIT_FAILED;
		}
		return;
	}
	while ((de = readdir(d))) {
		char path[PATH_MAX];
		pid_t pid = socket_pid(de->d_name);
		struct stat st;
		bool seen = false;

		if (!pid || snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >= PATH_MAX)
			continue;
		if (lstat(path, &st) != 0 || !S_ISSOCK(st.st_mode))
			continue;
		for (size_t i = 0; i < l->n; i++)
			seen |= l->v[i].pid == pid;
		if (!seen)
			query(t, l, path, pid);
	}
	closedir(d);
}

/* Ours and nobody else's: a directory another user made in /tmp to
 * look like ours is not read. */
static bool dir_private(const char *dir)
{
	struct stat st;

	return lstat(dir, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == geteuid() &&
	       !(st.st_mode & 077);
}

static int by_pid(const void *a, const void *b)
{
	const struct entry *x = a, *y = b;

	return (x->pid > y->pid) - (x->pid < y->pid);
}

/* The report.status fields this table shows (docs/protocol.md). */
static void gpus_text(json_t *status, char *buf, size_t len)
{
	json_t *devices = json_object_get(status, "devices"), *d;
	size_t i, used = 0;

	buf[0] = '\0';
	json_array_foreach(devices, i, d) {
		char one[64] = "?";

		json_t *app = json_object_get(d, "device"), *gpu = json_object_get(d, "gpu");

		if (json_is_integer(d))
			snprintf(one, sizeof(one), "%lld", (long long)json_integer_value(d));
		else if (json_is_integer(app) && (json_is_integer(gpu) || json_is_null(gpu))) {
			/* The GPU it is on; "app->gpu" once moved, "-" while
			 * released (no GPU holds anything of it). */
			if (json_is_null(gpu))
				snprintf(one, sizeof(one), "-");
			else if (json_integer_value(app) == json_integer_value(gpu))
				snprintf(one, sizeof(one), "%lld", (long long)json_integer_value(gpu));
			else
				snprintf(one, sizeof(one), "%lld->%lld",
					 (long long)json_integer_value(app),
					 (long long)json_integer_value(gpu));
		} else if (json_is_integer(json_object_get(d, "ordinal")))
			snprintf(one, sizeof(one), "%lld",
				 (long long)json_integer_value(json_object_get(d, "ordinal")));
		else if (json_string_value(json_object_get(d, "uuid")))
			snprintf(one, sizeof(one), "%.40s",
				 json_string_value(json_object_get(d, "uuid")));
		used += (size_t)snprintf(buf + used, used < len ? len - used : 0, "%s%s",
					 i ? "," : "", one);
		if (used >= len)
			break;
	}
	if (!buf[0])
		snprintf(buf, len, "-");
}

static void bytes_text(json_t *status, char *buf, size_t len)
{
	static const char *const keys[] = { "bytes_tracked", "bytes", "memory_bytes" };

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		json_t *v = json_object_get(status, keys[i]);

		if (json_is_integer(v) && json_integer_value(v) >= 0) {
			gs_format_bytes((uint64_t)json_integer_value(v), buf, len);
			return;
		}
	}
	snprintf(buf, len, "-");
}

static void print_table(const struct listing *l)
{
	printf("%-8s %-18s %-8s %-10s %s\n", "PID", "STATE", "GPUS", "TRACKED", "COMMAND");
	for (size_t i = 0; i < l->n; i++) {
		json_t *r = l->v[i].reply;
		json_t *status = json_object_get(json_object_get(r, GS_KEY_REPORT), GS_OP_STATUS);
		json_t *busy = json_object_get(r, GS_KEY_BUSY);
		const char *state = json_string_value(json_object_get(r, GS_KEY_STATE));
		char st[64], gpus[64], bytes[32];

		if (!json_is_true(json_object_get(r, GS_KEY_OK)))
			snprintf(st, sizeof(st), "?%s",
				 gs_json_str(r, GS_KEY_CODE, ""));
		else if (json_is_object(busy)) {
			json_int_t done = json_integer_value(json_object_get(busy, GS_KEY_DONE));
			json_int_t total = json_integer_value(json_object_get(busy, GS_KEY_TOTAL));

			if (total > 0)
				snprintf(st, sizeof(st), "%s:%s %d%%", state ? state : "?",
					 gs_json_str(busy, GS_KEY_OP, "?"),
					 (int)(100 * done / total));
			else
				snprintf(st, sizeof(st), "%s:%s", state ? state : "?",
					 gs_json_str(busy, GS_KEY_OP, "?"));
		} else
			snprintf(st, sizeof(st), "%s", state ? state : "?");
		gpus_text(status, gpus, sizeof(gpus));
		bytes_text(status, bytes, sizeof(bytes));
		printf("%-8ld %-18s %-8s %-10s %s\n", (long)l->v[i].pid, st, gpus, bytes,
		       gs_json_str(r, GS_KEY_COMMAND, "?"));
	}
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "all", no_argument, NULL, 'a' },
		{ "dir", required_argument, NULL, 'D' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct listing l = { .stale = json_array() };
	struct gs_tool tool;
	const char *dir = NULL;
	char own[PATH_MAX];
	bool all = false;
	int c;

	gs_tool_init(&tool, "gpu-ps");
	tool.bar = false;
	while ((c = getopt_long(argc, argv, "aD:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'a': all = true; break;
		case 'D': dir = optarg; break;
		case 'j': tool.json = true; break;
		case 'h': usage(stdout); return GS_EXIT_OK;
		default: usage(stderr); return GS_EXIT_USAGE;
		}
	}
	if (optind != argc) {
		gs_tool_error(&tool, "takes no arguments (gpu-ps --help)");
		return GS_EXIT_USAGE;
	}
	if (!dir) {
		const char *env = getenv(GS_PROTO_ENV_RUNTIME_DIR);

		if (gs_proto_runtime_dir(own, sizeof(own)) != 0) {
			gs_tool_error(&tool, "the runtime directory's name is too long: check "
				      GS_PROTO_ENV_RUNTIME_DIR " and XDG_RUNTIME_DIR");
			return GS_EXIT_FAILED;
		}
		dir = own;
		/* Without an explicit directory, a process started from another
		 * session (with or without XDG_RUNTIME_DIR) is in the other
		 * default place: look in both. */
		if (!env || !*env) {
			char other[2][PATH_MAX];

			snprintf(other[0], sizeof(other[0]), "/run/user/%lu/gpuswap",
				 (unsigned long)geteuid());
			snprintf(other[1], sizeof(other[1]), "/tmp/gpuswap-%lu",
				 (unsigned long)geteuid());
			for (int i = 0; i < 2; i++)
				if (strcmp(other[i], own) != 0 && dir_private(other[i]))
					scan_dir(&tool, &l, other[i], true);
		}
	}
	scan_dir(&tool, &l, dir, false);
	if (all) {
		static const char *const patterns[] = { "/tmp/gpuswap-*", "/run/user/*/gpuswap" };

		for (size_t p = 0; p < sizeof(patterns) / sizeof(patterns[0]); p++) {
			glob_t g;

			if (glob(patterns[p], GLOB_ONLYDIR, NULL, &g) != 0)
				continue;
			for (size_t i = 0; i < g.gl_pathc; i++)
				if (strcmp(g.gl_pathv[i], dir) != 0)
					scan_dir(&tool, &l, g.gl_pathv[i], true);
			globfree(&g);
		}
	}
	if (l.n)
		qsort(l.v, l.n, sizeof(*l.v), by_pid);

	if (tool.json) {
		json_t *procs = json_array(), *out;
		char *text;

		for (size_t i = 0; i < l.n; i++)
			json_array_append(procs, l.v[i].reply);
		out = json_pack("{s:i, s:b, s:o, s:O}", GS_KEY_VERSION, GS_PROTO_VERSION,
				GS_KEY_OK, l.status == GS_EXIT_OK, "processes", procs, "stale",
				l.stale);
		text = out ? json_dumps(out, JSON_COMPACT) : NULL;
		if (text)
			printf("%s\n", text);
		free(text);
		json_decref(out);
	} else {
		print_table(&l);
	}
	for (size_t i = 0; i < l.n; i++)
		json_decref(l.v[i].reply);
	free(l.v);
	json_decref(l.stale);
	return l.status;
}
