#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Malformed, oversized, split, pipelined and flooding requests (ctl-probe):
# each gets its error reply, nothing crashes, and the workload, whose
# control socket took all that, still finishes with the undisturbed output.
. "$(dirname "$0")/e2e-lib.sh"

reference 10
start_workload 10 150
"$GS_CTL_PROBE" protocol "$GPUSWAP_RUNTIME_DIR/$wl_pid.sock" "$wl_pid" || fail "ctl-probe protocol"
finish_and_compare
say "every malformed request answered with an error; output unchanged"
