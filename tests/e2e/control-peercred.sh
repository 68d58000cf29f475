#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Another user cannot control the process: connecting as uid 65534 (root
# forks, drops to it having opened nothing, then connects) is kept out by
# the 0700 directory, and, with CAP_DAC_OVERRIDE kept to get past it, by
# the SO_PEERCRED check, which is logged. The tools say "belongs to another
# user". The process is unaffected. Needs root: skips (77) otherwise.
. "$(dirname "$0")/e2e-lib.sh"

[ "$(id -u)" = 0 ] || skip "connecting as another uid needs root"
nobody=65534

reference 10
start_workload 10 150
sock="$GPUSWAP_RUNTIME_DIR/$wl_pid.sock"
"$GS_CTL_PROBE" peercred "$sock" "$wl_pid" "$nobody"
rc=$?
case $rc in
0)
	grep -q "refused a control connection from pid [0-9]* (uid $nobody)" "$shim_log" ||
		fail "the refusal is not in the log"
	;;
77) say "SO_PEERCRED half skipped: capabilities cannot be kept here" ;;
*) fail "ctl-probe peercred" ;;
esac

# The tools, run as that user, explain.
if command -v setpriv >/dev/null; then
	for t in "$GS_GPU_FREEZE" "$GS_GPU_THAW"; do
		setpriv --reuid=$nobody --regid=$nobody --clear-groups \
			env GPUSWAP_RUNTIME_DIR="$GPUSWAP_RUNTIME_DIR" "$t" "$wl_pid" \
			>"$tmp/other.out" 2>"$tmp/other.err"
		trc=$?
		[ $trc -eq 3 ] || fail "$(basename "$t") as uid $nobody exited $trc, not 3"
		grep -q "belongs to another user" "$tmp/other.err" ||
			fail "$(basename "$t") as uid $nobody: $(cat "$tmp/other.err")"
	done
	say "as uid $nobody: $(cat "$tmp/other.err")"
else
	say "setpriv not found: the tools' message for another user is not checked"
fi

finish_and_compare
[ $rc -eq 77 ] && skip "only the directory half could be tested"
say "another user refused; the process ran on undisturbed"
