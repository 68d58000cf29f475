#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The control socket's life: none before cuInit, <runtime dir>/<pid>.sock
# (mode 0600, directory created 0700) once cuInit returned, status answered,
# removed when the process exits; a runtime directory anyone else could use
# is refused (the process runs on without a socket); fork and exec.
. "$(dirname "$0")/e2e-lib.sh"

mode_of() { stat -c %a "$1"; }

# A process under the shim that never calls cuInit gets no socket: the
# control thread starts with the driver, not with the library.
shim_env sleep 1 &
idle=$!
sleep 0.5
[ ! -e "$GPUSWAP_RUNTIME_DIR/$idle.sock" ] || fail "a socket before cuInit"
wait "$idle"

reference 6
start_workload 6 100
sock="$GPUSWAP_RUNTIME_DIR/$wl_pid.sock"
[ "$(mode_of "$GPUSWAP_RUNTIME_DIR")" = 700 ] ||
	fail "runtime directory has mode $(mode_of "$GPUSWAP_RUNTIME_DIR"), not 700"
[ -S "$sock" ] || fail "$sock is not a socket"
[ "$(mode_of "$sock")" = 600 ] || fail "socket has mode $(mode_of "$sock"), not 600"
[ "$(stat -c %u "$sock")" = "$(id -u)" ] || fail "socket not owned by us"
grep -q "control socket $sock" "$shim_log" || fail "the log does not name the socket"

# status, straight and through gpu-ps
status "$wl_pid" >"$tmp/status.json"
[ "$(jget ok <"$tmp/status.json")" = true ] || fail "status failed: $(cat "$tmp/status.json")"
[ "$(jget pid <"$tmp/status.json")" = "$wl_pid" ] || fail "status names another pid"
[ "$(jget state <"$tmp/status.json")" = running ] || fail "state is not running"
jget command <"$tmp/status.json" | grep -q gs-workload || fail "status has no command line"
tool gpu-ps || fail "gpu-ps failed: $(cat "$tmp/last.err")"
[ "$(jget processes.0.pid <"$tmp/last.json")" = "$wl_pid" ] || fail "gpu-ps --json misses it"
"$GS_GPU_PS" >"$tmp/ps.txt" || fail "gpu-ps failed"
grep -q "^$wl_pid  *running .*gs-workload" "$tmp/ps.txt" || fail "gpu-ps: $(cat "$tmp/ps.txt")"

# Still the same output: the control thread changes nothing.
finish_and_compare
say "socket $sock: 0600 in a 0700 directory, answered, removed at exit"

# A directory that is not private is never used.
for bad in wide symlink; do
	rm -rf "$GPUSWAP_RUNTIME_DIR"
	case $bad in
	wide) mkdir -m 755 "$GPUSWAP_RUNTIME_DIR" ;;
	symlink) mkdir -m 700 "$tmp/elsewhere" && ln -s "$tmp/elsewhere" "$GPUSWAP_RUNTIME_DIR" ;;
	esac
	: >"$shim_log"
	shim_env "$GS_WORKLOAD" --module "$fatbin" --steps 6 >"$tmp/bad.out" 2>"$tmp/bad.err" ||
		fail "$bad directory: the workload failed: $(tail -n 3 "$tmp/bad.err")"
	cmp -s "$tmp/bad.out" "$tmp/ref.out" || fail "$bad directory: output differs"
	grep -q "no control socket" "$shim_log" || fail "$bad directory: not refused in the log"
	[ -z "$(ls -A "$GPUSWAP_RUNTIME_DIR/" 2>/dev/null)" ] || fail "$bad directory: a socket in it"
	say "$bad runtime directory refused: $(grep -m1 'no control socket' "$shim_log" | sed 's/.*: error: //')"
done
rm -rf "$GPUSWAP_RUNTIME_DIR"

# fork: the child has no control thread, its own cuInit makes its own
# socket, and its exit leaves the parent's alone.
shim_env "$GS_FORKER" fork || fail "gs-forker fork (see above)"
[ -z "$(ls -A "$GPUSWAP_RUNTIME_DIR")" ] || fail "sockets left after fork test: $(ls "$GPUSWAP_RUNTIME_DIR")"
say "fork: child gets no socket of its own until its cuInit; parent's kept"

# exec: same pid, new image: the stale socket is replaced.
shim_env "$GS_FORKER" exec || fail "gs-forker exec (see above)"
[ -z "$(ls -A "$GPUSWAP_RUNTIME_DIR")" ] || fail "sockets left after exec test"
say "exec: the new image replaced the stale socket"
