#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The tools' command lines and their errors, without the replay engine:
# --help fits on a screen; bad usage exits 2; an unknown PID, a process not
# under the shim, and a stale socket exit 3 with a message that says what
# to do; --json always ends with a reply-shaped object.
. "$(dirname "$0")/e2e-lib.sh"

tools=("$GS_GPU_FREEZE" "$GS_GPU_THAW" "$GS_GPU_SWAP" "$GS_GPU_PS")

for t in "${tools[@]}"; do
	n=$(basename "$t")
	"$t" --help >"$tmp/help" 2>&1 || fail "$n --help failed"
	lines=$(wc -l <"$tmp/help")
	width=$(awk '{ if (length > w) w = length } END { print w }' "$tmp/help")
	[ "$lines" -le 24 ] && [ "$width" -le 80 ] ||
		fail "$n --help is $lines lines by $width columns: more than a screen"
	"$t" --no-such-option >/dev/null 2>&1
	[ $? -eq 2 ] || fail "$n: an unknown option does not exit 2"
done

# usage errors: exit 2 with a message
usage_cases=(
	"$GS_GPU_FREEZE"
	"$GS_GPU_FREEZE abc"
	"$GS_GPU_FREEZE -5"
	"$GS_GPU_FREEZE 1 2"
	"$GS_GPU_FREEZE --timeout 0 1"
	"$GS_GPU_FREEZE --timeout x 1"
	"$GS_GPU_FREEZE --check --release 1"
	"$GS_GPU_THAW --device x 1"
	"$GS_GPU_THAW --device 0=1, 1"
	"$GS_GPU_THAW --device =1 1"
	"$GS_GPU_THAW --device GPU-zz 1"
	"$GS_GPU_SWAP 1"
	"$GS_GPU_SWAP --device 1,2 1"
	"$GS_GPU_PS extra"
)
for c in "${usage_cases[@]}"; do
	$c >/dev/null 2>"$tmp/usage.err"
	rc=$?
	[ $rc -eq 2 ] || fail "'$(basename "${c%% *}") ${c#* }' exited $rc, not 2"
	[ -s "$tmp/usage.err" ] || fail "'$c' gave no message"
done
# good device specs pass the syntax check (and then find no process)
for spec in 1 0=1,1=0 GPU-5a5a5a5a-0102-4050-8000-5a5a5a5a5a5a 0=GPU-5a5a5a5a; do
	"$GS_GPU_THAW" --device "$spec" 2147483646 >/dev/null 2>&1
	[ $? -eq 3 ] || fail "--device $spec was not accepted"
done

# an unknown PID
mkdir -m 700 "$GPUSWAP_RUNTIME_DIR"
for t in "$GS_GPU_FREEZE" "$GS_GPU_THAW" "$GS_GPU_SWAP --device 1"; do
	$t --json 2147483646 >"$tmp/out" 2>"$tmp/err"
	rc=$?
	[ $rc -eq 3 ] || fail "$t on an unknown PID exited $rc, not 3"
	grep -q "no gpuswap control socket for PID 2147483646 in $GPUSWAP_RUNTIME_DIR: is the process running under LD_PRELOAD=libgpuswap.so (and has it called cuInit)?" "$tmp/err" ||
		fail "unknown PID message: $(cat "$tmp/err")"
	[ "$(jget code <"$tmp/out")" = no_socket ] || fail "--json: $(cat "$tmp/out")"
done
say "unknown PID: $(cat "$tmp/err")"

# a live process that is not under the shim
sleep 5 &
plain=$!
"$GS_GPU_FREEZE" "$plain" 2>"$tmp/err"
[ $? -eq 3 ] || fail "a process without the shim: not exit 3"
grep -q "is the process running under LD_PRELOAD=libgpuswap.so" "$tmp/err" || fail "$(cat "$tmp/err")"
grep -q "no process with PID" "$tmp/err" && fail "a live process called not running"
kill "$plain"
wait "$plain" 2>/dev/null

# a stale socket: the process was killed and could not remove it
start_workload 100 100
victim=$wl_pid
kill -9 "$victim"
wait "$victim" 2>/dev/null
wl_pid=
[ -S "$GPUSWAP_RUNTIME_DIR/$victim.sock" ] || fail "SIGKILL removed the socket?"
"$GS_GPU_FREEZE" "$victim" 2>"$tmp/err"
[ $? -eq 3 ] || fail "a stale socket: not exit 3"
# With the suite's many short-lived threads the kernel may hand the dead pid
# to a new task within seconds (pid_max can be as low as 32768), and the tool
# rightly tells that case apart: either message is a correct answer.
grep -Eq "stale control socket .*$victim.sock: PID $victim (is not running|is running but nothing listens)" "$tmp/err" ||
	fail "stale socket message: $(cat "$tmp/err")"
say "stale socket: $(cat "$tmp/err")"
tool gpu-ps || fail "gpu-ps with a stale socket failed"
[ "$(jget stale.0.pid <"$tmp/last.json")" = "$victim" ] || fail "gpu-ps --json: $(cat "$tmp/last.json")"
[ "$(jget processes <"$tmp/last.json")" = "[]" ] || fail "gpu-ps lists the dead process"
grep -q "stale control socket" "$tmp/last.err" || fail "gpu-ps does not report the stale socket"

# gpu-ps with nothing there, and with no directory at all
rm -f "$GPUSWAP_RUNTIME_DIR/$victim.sock"
"$GS_GPU_PS" >"$tmp/ps" 2>"$tmp/err" || fail "gpu-ps on an empty directory failed"
[ "$(wc -l <"$tmp/ps")" = 1 ] || fail "gpu-ps on an empty directory: $(cat "$tmp/ps")"
rmdir "$GPUSWAP_RUNTIME_DIR"
"$GS_GPU_PS" >/dev/null 2>&1 || fail "gpu-ps without a runtime directory failed"
say "usage errors exit 2; unknown and stale exit 3 with what to do"
