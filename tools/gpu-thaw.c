/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gpu-thaw: continue a frozen or released process, on its GPU or another
 * one, from the state it holds or from an image. See docs/gpu-thaw.1.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "client.h"
#include "protocol.h"

static void usage(FILE *out)
{
	fprintf(out,
		"usage: gpu-thaw [options] PID\n"
		"Continue a process frozen by gpu-freeze, on the same GPU or another one.\n"
		"\n"
		"  -d, --device SPEC  where to continue (default: where it was):\n"
		"                       1                a device ordinal\n"
		"                       GPU-8a3f...      a device UUID (nvidia-smi -L)\n"
		"                       0=1,1=0          application device -> device\n"
		"  -i, --image DIR    restore the state from DIR (gpu-freeze --image)\n"
		"      --json         machine-readable: progress lines, then the reply\n"
		"  -h, --help         this text\n"
		"\n"
		"The target is checked (memory, code for its architecture) before anything\n"
		"is touched; if the thaw fails the process stays released with its state\n"
		"intact, ready for another try. Exit status: 0 running again, 1 failed,\n"
		"2 bad usage, 3 the process could not be reached.\n");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "device", required_argument, NULL, 'd' },
		{ "image", required_argument, NULL, 'i' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct gs_tool tool;
	const char *device = NULL, *image = NULL;
	char *abs_image = NULL, done[512];
	json_t *req, *reply;
	pid_t pid;
	int c, status;

	gs_tool_init(&tool, "gpu-thaw");
	while ((c = getopt_long(argc, argv, "d:i:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'd': device = optarg; break;
		case 'i': image = optarg; break;
		case 'j': tool.json = true; break;
		case 'h': usage(stdout); return GS_EXIT_OK;
		default: usage(stderr); return GS_EXIT_USAGE;
		}
	}
	if (gs_tool_pid_operand(&tool, argc, argv, optind, usage, &pid))
		return GS_EXIT_USAGE;
	if (device && gs_tool_check_device(&tool, device))
		return GS_EXIT_USAGE;
	if (image && !*image) {
		gs_tool_error(&tool, "--image needs a directory");
		return GS_EXIT_USAGE;
	}

	req = gs_tool_new_request(&tool, GS_OP_THAW, device, -1);
	if (!req)
		return GS_EXIT_FAILED;
	if (image) {
		if (gs_tool_set_image(&tool, req, image, &abs_image)) {
			json_decref(req);
			return GS_EXIT_FAILED;
		}
	}

	gs_tool_request(&tool, pid, req, &reply);
	snprintf(done, sizeof(done), "PID %ld is %s%s%s%s%s", (long)pid,
		 gs_json_str(reply, GS_KEY_STATE, "running"),
		 device ? " on device " : "", device ? device : "",
		 abs_image ? ", restored from " : "", abs_image ? abs_image : "");
	status = gs_tool_report(&tool, pid, reply, done);
	json_decref(reply);
	json_decref(req);
	free(abs_image);
	return status;
}
