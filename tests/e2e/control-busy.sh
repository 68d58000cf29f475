#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# One operation at a time, run by the process itself: with the fault point
# control-delay an operation ("check", which changes nothing) spends 1.5 s
# in a "delay" phase. Meanwhile its progress streams to the tool, status
# still answers (showing the operation), a second operation is told "busy",
# and a tool killed half-way changes nothing: the operation finishes inside
# the process, which keeps running and ends with the undisturbed output.
. "$(dirname "$0")/e2e-lib.sh"

# Long enough to outlive the three delayed operations (~5 s).
reference 80
start_workload 80 100 GPUSWAP_FAULT=control-delay
wait_steps 2

# Progress lines stream before the final reply.
tool gpu-freeze --check "$wl_pid"
grep -q '"progress":{"phase":"delay"' "$tmp/last.out" || fail "no progress lines: $(cat "$tmp/last.out")"
[ "$(grep -c '"progress"' "$tmp/last.out")" -ge 5 ] || fail "fewer than 5 progress lines"
[ "$(jget op <"$tmp/last.json")" = check ] || fail "last line is not the reply: $(cat "$tmp/last.json")"
say "progress streamed: $(grep -c '"progress"' "$tmp/last.out") lines, then $(jget code <"$tmp/last.json" || true)"

# A second operation while one runs: busy. Status: answered, with the op.
"$GS_GPU_FREEZE" --check "$wl_pid" >/dev/null 2>&1 &
first=$!
sleep 0.4
tool gpu-thaw "$wl_pid"
[ "$(last_code)" = busy ] || fail "a second operation was not told busy: $(cat "$tmp/last.json")"
grep -q "another operation (check, started" "$tmp/last.err" || fail "busy message: $(cat "$tmp/last.err")"
status "$wl_pid" >"$tmp/status.json"
[ "$(jget busy.op <"$tmp/status.json")" = check ] || fail "status during the operation: $(cat "$tmp/status.json")"
[ "$(jget busy.phase <"$tmp/status.json")" = delay ] || fail "status shows no phase"
"$GS_GPU_PS" >"$tmp/ps.txt"
grep -q "^$wl_pid  *running:check [0-9]*%" "$tmp/ps.txt" || fail "gpu-ps during the operation: $(cat "$tmp/ps.txt")"
wait "$first"
say "busy while an operation runs; status shows it: $(jget busy <"$tmp/status.json")"

# The tool killed half-way (SIGKILL: no goodbye): the operation finishes
# in the process, which is never wedged.
"$GS_GPU_FREEZE" --check --json "$wl_pid" >"$tmp/killed.out" 2>&1 &
victim=$!
sleep 0.5
kill -9 "$victim"
wait "$victim" 2>/dev/null
grep -q '"progress"' "$tmp/killed.out" || fail "the killed tool had not started"
grep -q '"ok"' "$tmp/killed.out" && fail "the tool got its reply before it was killed: too fast"
busy=1
for i in $(seq 1 60); do
	status "$wl_pid" >"$tmp/status.json"
	if [ -z "$(jget busy <"$tmp/status.json")" ]; then busy=0; break; fi
	sleep 0.1
done
[ $busy = 0 ] || fail "the operation never finished after its tool was killed"
grep -q "check finished in" "$shim_log" || fail "the log does not show the operation finishing"
[ "$(jget state <"$tmp/status.json")" = running ] || fail "state after: $(jget state <"$tmp/status.json")"
before=$(steps_done)
sleep 0.5
[ "$(steps_done)" -gt "$before" ] || [ "$(tail -n 1 "$wl_out")" = done ] ||
	fail "no progress after the killed operation"
finish_and_compare
say "tool killed mid-operation: the operation finished inside; the process ran on"
