# SPDX-License-Identifier: Apache-2.0
#
# Shared by the end-to-end tests (sourced, bash). The zdtm pattern: a
# workload under the shim sets up known state and prints one line per step;
# the test freezes, moves and thaws it from outside with the real tools,
# then checks that its output is bit for bit that of an undisturbed run.
#
# From meson (tests/e2e/meson.build): GS_PRELOAD (the shim, after any
# sanitizer runtime), GS_SIMCUDA_DIR, GS_WORKLOAD, GS_KERNELS_DIR,
# GS_KERNELS_CUBIN, GS_ARCH_LOW, GS_ARCH_HIGH, GS_GPU_FREEZE, GS_GPU_THAW,
# GS_GPU_SWAP, GS_GPU_PS, GS_CTL_PROBE, GS_FORKER, and GS_GPU_INSPECT when
# that tool is built.
#
# Exit statuses: 0 pass, 1 fail, 77 skip. A test that needs the replay
# engine skips with "skip (77): replay not implemented" exactly when the
# process answers "not_implemented" (-ENOSYS), never otherwise.

set -u

: "${GS_PRELOAD:?run through meson test}"
e2e_name=$(basename "$0" .sh)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/gs-$e2e_name.XXXXXX") || exit 1
export GPUSWAP_RUNTIME_DIR="$tmp/run"
wl_pid=
wl_out="$tmp/workload.out"
wl_err="$tmp/workload.err"
shim_log="$tmp/shim.log"
fatbin="$GS_KERNELS_DIR/gs_kernels.fatbin"

e2e_cleanup() {
	if [ -n "$wl_pid" ] && kill -0 "$wl_pid" 2>/dev/null; then
		kill -9 "$wl_pid" 2>/dev/null
		wait "$wl_pid" 2>/dev/null
	fi
	if [ "${GS_E2E_KEEP:-0}" = 1 ]; then
		echo "kept $tmp"
	else
		rm -rf "$tmp"
	fi
}
trap e2e_cleanup EXIT

say() { printf '%s: %s\n' "$e2e_name" "$*"; }

fail() {
	printf 'FAIL: %s: %s\n' "$e2e_name" "$*" >&2
	for f in "$tmp/last.err" "$wl_err" "$shim_log"; do
		if [ -s "$f" ]; then
			echo "--- last lines of $(basename "$f")" >&2
			tail -n 15 "$f" >&2
		fi
	done
	if [ -s "$wl_out" ]; then
		echo "--- workload output: $(wc -l <"$wl_out") lines, last: $(tail -n 1 "$wl_out")" >&2
	fi
	exit 1
}

skip() {
	echo "skip (77): $*"
	exit 77
}

# The environment of every process under the shim, on the simulator; the
# caller's VAR=VALUE words come after these and win.
shim_vars() {
	shim=(SIMCUDA_DEVICES="${SIMCUDA_DEVICES:-2}"
		LD_LIBRARY_PATH="$GS_SIMCUDA_DIR"
		LD_PRELOAD="$GS_PRELOAD"
		GPUSWAP_REAL_LIBCUDA="$GS_SIMCUDA_DIR/libcuda.so.1"
		GPUSWAP_LOG="${GPUSWAP_LOG:-info}"
		GPUSWAP_LOG_FILE="$shim_log")
}
shim_env() {
	local shim
	shim_vars
	env "${shim[@]}" "$@"
}

# reference STEPS [VAR=VALUE...]: an undisturbed run under the shim, the
# output every migrated run must reproduce, into $tmp/ref.out.
reference() {
	local steps=$1
	shift
	shim_env "$@" "$GS_WORKLOAD" --module "${WL_MODULE:-$fatbin}" --steps "$steps" \
		>"$tmp/ref.out" 2>"$tmp/ref.err" ||
		fail "the undisturbed run failed: $(tail -n 3 "$tmp/ref.err")"
	[ "$(tail -n 1 "$tmp/ref.out")" = done ] || fail "the undisturbed run did not finish"
}

# start_workload STEPS SLEEP_MS [VAR=VALUE...]: in the background; returns
# once its control socket answers. Sets wl_pid.
start_workload() {
	local steps=$1 sleep_ms=$2 i shim
	shift 2
	shim_vars
	# A simple command in the background: env execs the workload, so $!
	# is the workload's pid.
	env "${shim[@]}" "$@" "$GS_WORKLOAD" --module "${WL_MODULE:-$fatbin}" --steps "$steps" \
		--sleep-ms "$sleep_ms" --pid-file "$tmp/workload.pid" >"$wl_out" 2>"$wl_err" &
	wl_pid=$!
	for i in $(seq 1 200); do
		[ -S "$GPUSWAP_RUNTIME_DIR/$wl_pid.sock" ] && grep -qx ready "$wl_out" && return 0
		kill -0 "$wl_pid" 2>/dev/null || fail "the workload died during set-up"
		sleep 0.05
	done
	fail "no control socket $GPUSWAP_RUNTIME_DIR/$wl_pid.sock after 10 s"
}

steps_done() { grep -c '^step ' "$wl_out"; }

# wait_steps N [TIMEOUT_S]: until the workload has printed step N.
wait_steps() {
	local n=$1 limit=$((${2:-30} * 100)) i
	for i in $(seq 1 "$limit"); do
		[ "$(steps_done)" -ge "$n" ] && return 0
		kill -0 "$wl_pid" 2>/dev/null || fail "the workload exited before step $n"
		sleep 0.01
	done
	fail "the workload did not reach step $n"
}

# tool NAME ARGS...: run a gpu-* tool with --json; its last stdout line
# (the final reply) goes to $tmp/last.json, stderr to $tmp/last.err.
# Returns its exit status.
tool() {
	local name=$1 bin
	shift
	case $name in
	gpu-freeze) bin=$GS_GPU_FREEZE ;;
	gpu-thaw) bin=$GS_GPU_THAW ;;
	gpu-swap) bin=$GS_GPU_SWAP ;;
	gpu-ps) bin=$GS_GPU_PS ;;
	*) fail "no tool $name" ;;
	esac
	"$bin" --json "$@" >"$tmp/last.out" 2>"$tmp/last.err"
	local rc=$?
	tail -n 1 "$tmp/last.out" >"$tmp/last.json"
	return $rc
}

# jget PATH < FILE: a value of the JSON object on FILE's last line.
jget() { "$GS_CTL_PROBE" jget "$1"; }
last_code() { jget code <"$tmp/last.json"; }
last_state() { jget state <"$tmp/last.json"; }

# The replay engine answers -ENOSYS (code not_implemented) while it is not
# linked in: then the test cannot run, and says so.
skip_if_not_implemented() {
	if [ "$(last_code)" = not_implemented ]; then
		skip "replay not implemented ($(jget error <"$tmp/last.json"))"
	fi
}

# must TOOL ARGS...: the tool must succeed (or the test skips when replay
# is missing).
must() {
	if ! tool "$@"; then
		skip_if_not_implemented
		fail "$* failed: $(cat "$tmp/last.err")"
	fi
}

# must_fail TOOL ARGS...: the tool must fail with a message (not for want
# of replay).
must_fail() {
	if tool "$@"; then
		fail "$* succeeded; it should have failed"
	fi
	skip_if_not_implemented
	[ -s "$tmp/last.err" ] || fail "$* failed without a message"
}

# status PID: the process's status reply, on stdout.
status() {
	"$GS_CTL_PROBE" request "$GPUSWAP_RUNTIME_DIR/$1.sock" '{"v":1,"op":"status"}' 2>/dev/null
}

# expect_state STATE: the workload's process says it is in STATE.
expect_state() {
	local s
	s=$(status "$wl_pid" | jget state)
	[ "$s" = "$1" ] || fail "the process is '$s', expected '$1'"
}

# expect_no_progress MS: frozen means frozen: no new step line for MS
# milliseconds, and still alive. The first 200 ms let a step that had
# finished its last driver call before the freeze print its line.
expect_no_progress() {
	local before after
	sleep 0.2
	before=$(steps_done)
	sleep "$(awk "BEGIN { print $1 / 1000 }")"
	after=$(steps_done)
	kill -0 "$wl_pid" 2>/dev/null || fail "the frozen process died"
	[ "$before" = "$after" ] || fail "the frozen process made progress: step $before -> $after"
}

# finish_and_compare [TIMEOUT_S]: the workload must exit 0 and its output
# must equal the undisturbed run's, bit for bit.
finish_and_compare() {
	local limit=$((${1:-60} * 20)) i rc
	for i in $(seq 1 "$limit"); do
		kill -0 "$wl_pid" 2>/dev/null || break
		sleep 0.05
	done
	kill -0 "$wl_pid" 2>/dev/null && fail "the workload did not finish (still $(last_state))"
	wait "$wl_pid"
	rc=$?
	[ $rc -eq 0 ] || fail "the workload exited with $rc"
	wl_pid=
	if ! cmp -s "$tmp/ref.out" "$wl_out"; then
		diff "$tmp/ref.out" "$wl_out" | head -n 20 >&2
		fail "the output differs from the undisturbed run"
	fi
	[ ! -e "$GPUSWAP_RUNTIME_DIR/$(cat "$tmp/workload.pid").sock" ] ||
		fail "the control socket outlived the process"
}
