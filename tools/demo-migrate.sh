#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# demo-migrate.sh BUILD TMP: the live-migration part of tools/demo.sh. The
# reference workload starts on simulated GPU 0 under the shim with a pause
# after each step; after a few steps it is frozen and released (to an image
# when gpu-inspect is built, which then shows it), thawed on simulated GPU 1,
# a few steps later swapped back to GPU 0 in one step (device to device), and
# its output compared bit for bit with the undisturbed run on GPU 0 that
# demo.sh left in TMP/gpu0.out.
set -euo pipefail

build=$1
tmp=$2
sim="$build/tests/simcuda"
workload="$build/tests/programs/gs-workload"
fatbin="$build/tests/kernels/gs_kernels.fatbin"
shim="$build/shim/libgpuswap.so"
freeze="$build/tools/gpu-freeze"
thaw="$build/tools/gpu-thaw"
inspect="$build/tools/gpu-inspect"
swap="$build/tools/gpu-swap"
steps=$(grep -c '^step ' "$tmp/gpu0.out")
at=4
# The sockets of this demo live with its files, not in the user's directory.
export GPUSWAP_RUNTIME_DIR="$tmp/run"

say() { printf '\n== %s\n' "$*"; }
indent() { sed 's/^/   /'; }

for f in "$shim" "$freeze" "$thaw"; do
	[ -e "$f" ] || { echo "demo: $f is missing: build with tools/devenv build" >&2; exit 1; }
done

say "live migration: the workload moves from simulated GPU 0 to GPU 1 while it runs"
env SIMCUDA_DEVICES=2 SIMCUDA_ARCH=sm_80,sm_90 LD_LIBRARY_PATH="$sim" GS_WORKLOAD_DEVICE=0 \
	LD_PRELOAD="$shim" GPUSWAP_REAL_LIBCUDA="$sim/libcuda.so.1" \
	"$workload" --module "$fatbin" --steps "$steps" --sleep-ms 150 >"$tmp/migrated.out" \
	2>"$tmp/migrated.err" &
pid=$!
stop() {
	if kill -0 "$pid" 2>/dev/null; then
		kill -9 "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
}
trap stop EXIT
echo "   gs-workload is pid $pid, on GPU 0 (sm_80), 150 ms between steps"

until [ "$(grep -c '^step ' "$tmp/migrated.out")" -ge "$at" ]; do
	kill -0 "$pid" 2>/dev/null || { echo "demo: the workload died:" >&2; cat "$tmp/migrated.err" >&2; exit 1; }
	sleep 0.05
done
echo "   it printed step $at"

image_args=()
if [ -x "$inspect" ]; then
	image_args=(--image "$tmp/image")
	echo "   \$ gpu-freeze --release --image IMAGE $pid"
else
	echo "   \$ gpu-freeze --release $pid"
fi
if ! "$freeze" --release "${image_args[@]}" --json "$pid" >"$tmp/freeze.json" 2>"$tmp/freeze.err"; then
	if grep -q '"code":"not_implemented"' "$tmp/freeze.json"; then
		echo "   this build's replay engine cannot do that yet ($(sed -n \
			's/.*"error":"\([^"]*\)".*/\1/p' "$tmp/freeze.json")): the workload runs on"
		wait "$pid"
		cmp -s "$tmp/gpu0.out" "$tmp/migrated.out" &&
			echo "   (its output is still identical to the undisturbed run)"
		exit 0
	fi
	indent <"$tmp/freeze.err" >&2
	exit 1
fi
done_at=$(grep -c '^step ' "$tmp/migrated.out")
sleep 0.5
[ "$(grep -c '^step ' "$tmp/migrated.out")" = "$done_at" ] || {
	echo "demo: the frozen workload kept running" >&2
	exit 1
}
echo "   frozen after step $done_at and released: GPU 0 holds nothing of it, it prints nothing"

if [ -x "$inspect" ]; then
	echo "   \$ gpu-inspect --verify IMAGE"
	"$inspect" --verify "$tmp/image" | head -n 12 | indent
fi

echo "   \$ gpu-thaw --device 1 ${image_args[*]:+--image IMAGE }$pid"
"$thaw" --device 1 "${image_args[@]}" "$pid" | indent

# And back in one step: the simulated GPUs are peers, so the device memory
# goes device to device.
back=$((done_at + 3))
while [ "$(grep -c '^step ' "$tmp/migrated.out")" -lt "$back" ] && kill -0 "$pid" 2>/dev/null; do
	sleep 0.05
done
if kill -0 "$pid" 2>/dev/null && [ -x "$swap" ]; then
	echo "   \$ gpu-swap --device 0 $pid        (after step $(grep -c '^step ' "$tmp/migrated.out"))"
	"$swap" --device 0 "$pid" | indent
	wait "$pid"
	trap - EXIT
	echo "   it ran to the end back on GPU 0"
else
	wait "$pid"
	trap - EXIT
	echo "   it ran to the end on GPU 1 (sm_90: another cubin, another address window)"
fi
if cmp -s "$tmp/gpu0.out" "$tmp/migrated.out"; then
	echo "   migrated run and undisturbed gpu0 run: identical ($(wc -l <"$tmp/migrated.out") lines)"
else
	echo "   migrated run and undisturbed gpu0 run DIFFER:"
	diff "$tmp/gpu0.out" "$tmp/migrated.out" | head -20 | indent
	exit 1
fi
