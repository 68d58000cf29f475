/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gpu-freeze: stop a process's GPU work at a clean point (and, with
 * --release, save its GPU state and free the GPU), or with --check only
 * say whether it could be migrated. See docs/gpu-freeze.1.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "protocol.h"

static void usage(FILE *out)
{
	fprintf(out,
		"usage: gpu-freeze [options] PID\n"
		"Freeze a process running under libgpuswap.so: its GPU work stops at a clean\n"
		"point and its CUDA calls wait until gpu-thaw.\n"
		"\n"
		"  -r, --release      also save its GPU state and free the GPU (the process\n"
		"                     keeps its CPU side; the state stays in its memory)\n"
		"  -i, --image DIR    save the state to the image directory DIR instead\n"
		"                     (implies --release; see gpu-inspect)\n"
		"  -c, --check        change nothing: report what would prevent a migration\n"
		"  -t, --timeout S    wait at most S seconds for CUDA calls in flight to\n"
		"                     finish (default %d); on timeout the process runs on\n"
		"      --json         machine-readable: progress lines, then the reply\n"
		"  -h, --help         this text\n"
		"\n"
		"Continue with gpu-thaw [--device SPEC] PID. Exit status: 0 done, 1 failed\n"
		"(the message says what state the process is in), 2 bad usage, 3 the\n"
		"process could not be reached. With --check: 0 migratable, 1 not.\n",
		GS_PROTO_DEFAULT_TIMEOUT_MS / 1000);
}

/* --check: what the report says, readably. */
static void print_check(pid_t pid, json_t *reply)
{
	json_t *check = json_object_get(json_object_get(reply, GS_KEY_REPORT), GS_OP_CHECK);
	json_t *blockers = json_object_get(check, "blockers");
	json_t *objects = json_object_get(check, "objects");
	const char *key;
	json_t *val;
	size_t i;

	printf("PID %ld %s be migrated\n", (long)pid,
	       json_is_true(json_object_get(check, "migratable")) ? "can" : "cannot");
	json_array_foreach(blockers, i, val) {
		const char *text = json_string_value(val);
		char *dump = NULL;

		if (!text)
			text = json_string_value(json_object_get(val, "message"));
		if (!text)
			text = dump = json_dumps(val, JSON_COMPACT);
		printf("  blocker: %s\n", text ? text : "?");
		free(dump);
	}
	if (json_object_size(objects) > 0) {
		bool first = true;

		printf("  objects:");
		json_object_foreach(objects, key, val) {
			if (json_is_integer(val)) {
				printf("%s %s %lld", first ? "" : ",", key,
				       (long long)json_integer_value(val));
				first = false;
			}
		}
		printf("\n");
	}
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "release", no_argument, NULL, 'r' },
		{ "image", required_argument, NULL, 'i' },
		{ "check", no_argument, NULL, 'c' },
		{ "timeout", required_argument, NULL, 't' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct gs_tool tool;
	bool release = false, check = false;
	const char *image = NULL;
	double timeout_s = -1;
	json_t *req, *reply;
	char *abs_image = NULL, done[512];
	pid_t pid;
	int c, status;

	gs_tool_init(&tool, "gpu-freeze");
	while ((c = getopt_long(argc, argv, "ri:ct:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'r': release = true; break;
		case 'i': image = optarg; release = true; break;
		case 'c': check = true; break;
		case 't':
			if (gs_tool_parse_timeout(&tool, optarg, &timeout_s))
				return GS_EXIT_USAGE;
			break;
		case 'j': tool.json = true; break;
		case 'h': usage(stdout); return GS_EXIT_OK;
		default: usage(stderr); return GS_EXIT_USAGE;
		}
	}
	if (gs_tool_pid_operand(&tool, argc, argv, optind, usage, &pid))
		return GS_EXIT_USAGE;
	if (check && (release || timeout_s >= 0)) {
		gs_tool_error(&tool, "--check changes nothing: it takes no --release, --image "
			      "or --timeout");
		return GS_EXIT_USAGE;
	}
	if (image && !*image) {
		gs_tool_error(&tool, "--image needs a directory");
		return GS_EXIT_USAGE;
	}

	req = gs_tool_new_request(&tool, check ? GS_OP_CHECK : GS_OP_FREEZE, NULL, timeout_s);
	if (!req)
		return GS_EXIT_FAILED;
	if (release)
		json_object_set_new(req, GS_KEY_RELEASE, json_true());
	if (image) {
		if (gs_tool_set_image(&tool, req, image, &abs_image)) {
			json_decref(req);
			return GS_EXIT_FAILED;
		}
	}

	gs_tool_request(&tool, pid, req, &reply);
	if (check) {
		status = gs_tool_report(&tool, pid, reply, NULL);
		if (status == GS_EXIT_OK) {
			json_t *rep = json_object_get(json_object_get(reply, GS_KEY_REPORT),
						      GS_OP_CHECK);

			if (!tool.json)
				print_check(pid, reply);
			if (!json_is_true(json_object_get(rep, "migratable")))
				status = GS_EXIT_FAILED;
		}
	} else {
		const char *state = json_string_value(json_object_get(reply, GS_KEY_STATE));
		bool already = json_is_true(json_object_get(reply, GS_KEY_ALREADY));

		if (state && strcmp(state, "released") == 0)
			snprintf(done, sizeof(done),
				 "PID %ld is released%s: its GPU is free, its state saved %s%s",
				 (long)pid, already ? " (it already was)" : "",
				 abs_image ? "to " : "in its memory", abs_image ? abs_image : "");
		else
			snprintf(done, sizeof(done), "PID %ld is %s%s", (long)pid,
				 state ? state : "frozen", already ? " (it already was)" : "");
		status = gs_tool_report(&tool, pid, reply, done);
	}
	json_decref(reply);
	json_decref(req);
	free(abs_image);
	return status;
}
