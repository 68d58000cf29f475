/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gpu-swap: move a running process to another GPU in one operation
 * (freeze, copy device to device where peers allow, thaw). See
 * docs/gpu-swap.1.
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
		"usage: gpu-swap --device SPEC [options] PID\n"
		"Move a running process under libgpuswap.so to another GPU, in one step.\n"
		"\n"
		"  -d, --device SPEC  the target: a device ordinal (1), a device UUID\n"
		"                     (GPU-..., as nvidia-smi -L prints it), or a map of\n"
		"                     application devices to devices (0=1,1=0)\n"
		"  -t, --timeout S    wait at most S seconds for CUDA calls in flight to\n"
		"                     finish (default %d); on timeout the process runs on\n"
		"                     where it was\n"
		"      --via-host     copy through host memory even where the GPUs are peers\n"
		"      --force        rebuild it even on the GPUs it runs on (memory copied\n"
		"                     within each GPU)\n"
		"      --json         machine-readable: progress lines, then the reply\n"
		"  -h, --help         this text\n"
		"\n"
		"If any step fails the process continues where it was. Exit status: 0 moved,\n"
		"1 failed, 2 bad usage, 3 the process could not be reached.\n",
		GS_PROTO_DEFAULT_TIMEOUT_MS / 1000);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "device", required_argument, NULL, 'd' },
		{ "timeout", required_argument, NULL, 't' },
		{ "json", no_argument, NULL, 'j' },
		{ "via-host", no_argument, NULL, 'V' },
		{ "force", no_argument, NULL, 'F' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct gs_tool tool;
	const char *device = NULL;
	double timeout_s = -1;
	bool via_host = false, force = false;
	json_t *req, *reply;
	char done[512];
	pid_t pid;
	int c, status;

	gs_tool_init(&tool, "gpu-swap");
	while ((c = getopt_long(argc, argv, "d:t:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'd': device = optarg; break;
		case 't':
			if (gs_tool_parse_timeout(&tool, optarg, &timeout_s))
				return GS_EXIT_USAGE;
			break;
		case 'j': tool.json = true; break;
		case 'V': via_host = true; break;
		case 'F': force = true; break;
		case 'h': usage(stdout); return GS_EXIT_OK;
		default: usage(stderr); return GS_EXIT_USAGE;
		}
	}
	if (gs_tool_pid_operand(&tool, argc, argv, optind, usage, &pid))
		return GS_EXIT_USAGE;
	if (!device) {
		gs_tool_error(&tool, "where to? give --device SPEC (gpu-swap --help)");
		return GS_EXIT_USAGE;
	}
	if (gs_tool_check_device(&tool, device))
		return GS_EXIT_USAGE;

	req = gs_tool_new_request(&tool, GS_OP_SWAP, device, timeout_s);
	if (!req)
		return GS_EXIT_FAILED;
	if (via_host)
		json_object_set_new(req, GS_KEY_VIA_HOST, json_true());
	if (force)
		json_object_set_new(req, GS_KEY_FORCE, json_true());
	gs_tool_request(&tool, pid, req, &reply);
	json_t *rel = json_object_get(
		json_object_get(json_object_get(reply, "report"), "swap"), "release");
	json_int_t all = json_integer_value(json_object_get(rel, "bytes"));
	json_int_t direct = json_integer_value(json_object_get(rel, "bytes_device"));
	char direct_s[32], host_s[32];

	gs_format_bytes((uint64_t)direct, direct_s, sizeof(direct_s));
	gs_format_bytes((uint64_t)(all > direct ? all - direct : 0), host_s, sizeof(host_s));
	if (rel)
		snprintf(done, sizeof(done), "PID %ld is %s on device %s (%s device to device, %s "
			 "through host memory)", (long)pid,
			 gs_json_str(reply, GS_KEY_STATE, "running"), device, direct_s, host_s);
	else
		snprintf(done, sizeof(done), "PID %ld is %s on device %s", (long)pid,
			 gs_json_str(reply, GS_KEY_STATE, "running"), device);
	status = gs_tool_report(&tool, pid, reply, done);
	json_decref(reply);
	json_decref(req);
	return status;
}
