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
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct gs_tool tool;
	const char *device = NULL;
	double timeout_s = -1;
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

	req = json_pack("{s:i, s:s, s:s}", GS_KEY_VERSION, GS_PROTO_VERSION, GS_KEY_OP,
			GS_OP_SWAP, GS_KEY_DEVICE, device);
	if (!req) {
		gs_tool_error(&tool, "out of memory");
		return GS_EXIT_FAILED;
	}
	if (timeout_s >= 0)
		json_object_set_new(req, GS_KEY_TIMEOUT_MS,
				    json_integer((json_int_t)(timeout_s * 1000.0 + 0.5)));
	gs_tool_request(&tool, pid, req, &reply);
	json_t *rel = json_object_get(
		json_object_get(json_object_get(reply, "report"), "swap"), "release");
	json_int_t all = json_integer_value(json_object_get(rel, "bytes"));
	json_int_t peer = json_integer_value(json_object_get(rel, "bytes_peer"));
	char peer_s[32], host_s[32];

	gs_format_bytes((uint64_t)peer, peer_s, sizeof(peer_s));
	gs_format_bytes((uint64_t)(all > peer ? all - peer : 0), host_s, sizeof(host_s));
	snprintf(done, sizeof(done), "PID %ld is %s on device %s (%s device to device, %s "
		 "through host memory)", (long)pid, gs_json_str(reply, GS_KEY_STATE, "running"),
		 device, peer_s, host_s);
	status = gs_tool_report(&tool, pid, reply, done);
	json_decref(reply);
	json_decref(req);
	return status;
}
