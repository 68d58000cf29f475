#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Wrong requests to a released process: an unknown PID, another user (as
# root: uid 65534 through setpriv), a device that does not exist (ordinal 7,
# an unknown UUID), a second freeze. Each fails with a clear message and
# leaves the process released with its state intact; the thaw that follows
# gives the undisturbed output. Needs the replay engine.
. "$(dirname "$0")/e2e-lib.sh"

steps=12
reference "$steps"
start_workload "$steps" 100
wait_steps 3
must gpu-freeze --release "$wl_pid"

must_fail gpu-thaw --device 1 2147483646
[ "$(last_code)" = no_socket ] || fail "unknown PID: code $(last_code)"
grep -q "no gpuswap control socket for PID 2147483646" "$tmp/last.err" || fail "$(cat "$tmp/last.err")"
say "unknown PID: $(cat "$tmp/last.err")"

if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
	setpriv --reuid=65534 --regid=65534 --clear-groups \
		env GPUSWAP_RUNTIME_DIR="$GPUSWAP_RUNTIME_DIR" "$GS_GPU_THAW" --device 1 "$wl_pid" \
		2>"$tmp/other.err"
	[ $? -eq 3 ] || fail "another user's thaw did not exit 3"
	grep -q "belongs to another user" "$tmp/other.err" || fail "$(cat "$tmp/other.err")"
	say "another user: $(cat "$tmp/other.err")"
else
	say "not root (or no setpriv): the other-user case is left to e2e-control-peercred"
fi

for spec in 7 GPU-00000000-0000-4000-8000-000000000000 0=9; do
	must_fail gpu-thaw --device "$spec" "$wl_pid"
	[ "$(last_state)" = released ] || fail "--device $spec left the process '$(last_state)'"
	say "--device $spec: $(head -n 1 "$tmp/last.err")"
done

# Freezing a released process changes nothing.
must gpu-freeze --release "$wl_pid"
[ "$(jget already <"$tmp/last.json")" = true ] || fail "a second --release was not 'already'"
expect_state released
expect_no_progress 200

must gpu-thaw --device 1 "$wl_pid"
finish_and_compare
say "every wrong request refused; the process thawed: output identical"
