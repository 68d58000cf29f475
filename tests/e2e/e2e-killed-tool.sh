#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The tool killed mid-operation: gpu-freeze --release is SIGKILLed while the
# operation runs (the fault point control-delay holds it in a "delay" phase
# first, so the kill lands mid-way every time). The operation completes
# inside the process anyway: it ends released, not wedged; gpu-thaw
# --device 1 continues it and the output is the undisturbed run's.
# Needs the replay engine (skips, saying so, while it is not implemented).
. "$(dirname "$0")/e2e-lib.sh"

steps=40
reference "$steps"
start_workload "$steps" 100 GPUSWAP_FAULT=control-delay
wait_steps 3

"$GS_GPU_FREEZE" --release --json "$wl_pid" >"$tmp/killed.out" 2>&1 &
victim=$!
sleep 0.5
kill -9 "$victim"
wait "$victim" 2>/dev/null
grep -q '"progress"' "$tmp/killed.out" || fail "the tool had not started: $(cat "$tmp/killed.out")"
grep -q '"ok"' "$tmp/killed.out" && fail "the operation ended before the kill"

for i in $(seq 1 100); do
	status "$wl_pid" >"$tmp/status.json"
	[ -z "$(jget busy <"$tmp/status.json")" ] && break
	sleep 0.1
done
[ -z "$(jget busy <"$tmp/status.json")" ] || fail "the operation never finished"
# Explicitly: a build whose replay answers -ENOSYS cannot run this test.
if grep -q "operation not implemented in this build" "$shim_log"; then
	skip "replay not implemented ($(grep -m1 'not implemented in this build' "$shim_log" | sed 's/.*warn: //'))"
fi
state=$(jget state <"$tmp/status.json")
[ "$state" = released ] || fail "after the killed tool the process is '$state', not released"
expect_no_progress 300
say "tool killed mid-operation; the operation completed: released"

must gpu-thaw --device 1 "$wl_pid"
finish_and_compare
say "thawed on GPU 1: output identical to the undisturbed run"
