/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The control plane inside the shim (DESIGN.md §9): one thread per process
 * listening on <runtime dir>/<pid>.sock for the gpu-* tools, speaking the
 * protocol of protocol.h (docs/protocol.md), and running the replay
 * operations (replay/replay.h) on their behalf.
 *
 * Life cycle:
 *  - started by the first successful cuInit (gs_track_cuInit), never by a
 *    constructor; the socket exists when that cuInit returns;
 *  - a fork child inherits no control thread: its first successful cuInit
 *    starts one of its own, on its own pid's socket (the parent's socket
 *    stays the parent's; the child closes its copy);
 *  - the socket is removed at exit (atexit), by the process that made it
 *    only; a process killed by a signal leaves a stale socket, which the
 *    next process with that pid replaces and gpu-ps reports.
 *
 * Threads: the control thread accepts connections, checks each peer with
 * SO_PEERCRED, answers status at once and "busy" while an operation runs;
 * each operation runs on a thread of its own, so a tool that disconnects
 * (or is killed) never stops it half-way. Both threads block asynchronous
 * signals, never enter the gate, and make their driver calls inside the
 * shim.
 */
#ifndef GS_CONTROL_H
#define GS_CONTROL_H

#include <stdbool.h>
#include <stddef.h>

/* Start the control thread of this process if it has none (idempotent,
 * thread-safe). 0, or -errno when no socket could be set up: the process
 * runs on, without a control socket, and the reason is logged once. */
int gs_control_start(void);

/* Whether this process has a control thread listening now. */
bool gs_control_running(void);

/* The socket path of this process into buf (empty when not running).
 * 0, or -ENOENT when not running. */
int gs_control_socket_path(char *buf, size_t len);

#endif
