#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The demo behind `tools/devenv demo`: the reference workload (tests/programs/
# gs-workload: SGD on two streams, a device linked list, a __device__ global,
# application VMM memory, pinned buffers, a concurrent allocator thread) run
# on simulated GPU 0 (sm_80), on simulated GPU 1 (sm_90), and through the
# shim, with every run's output compared bit for bit. With the gpu-freeze /
# gpu-thaw tools built, the workload is also moved from GPU 0 to GPU 1 while it
# runs. On a machine with an NVIDIA GPU the workload also runs on it.
set -euo pipefail

build=$(cd "${1:-build}" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

sim="$build/tests/simcuda"
workload="$build/tests/programs/gs-workload"
fatbin="$build/tests/kernels/gs_kernels.fatbin"
shim="$build/shim/libgpuswap.so"
steps=12

for f in "$sim/libcuda.so.1" "$workload" "$fatbin"; do
	[ -e "$f" ] || { echo "demo: $f is missing: build with tools/devenv build" >&2; exit 1; }
done

say() { printf '\n== %s\n' "$*"; }

run_sim() { # name, then env assignments
	local name=$1; shift
	env SIMCUDA_DEVICES=2 SIMCUDA_ARCH=sm_80,sm_90 LD_LIBRARY_PATH="$sim" "$@" \
		"$workload" --module "$fatbin" --steps "$steps" >"$tmp/$name.out"
}

same() { # a b
	if cmp -s "$tmp/$1.out" "$tmp/$2.out"; then
		echo "   $1 and $2: identical ($(wc -l <"$tmp/$1.out") lines)"
	else
		echo "   $1 and $2 DIFFER:"; diff "$tmp/$1.out" "$tmp/$2.out" | head -20
		exit 1
	fi
}

say "workload on simulated GPU 0 (sm_80)"
run_sim gpu0 GS_WORKLOAD_DEVICE=0
sed -n '1,3p;$p' "$tmp/gpu0.out" | sed 's/^/   /'

say "the same workload on simulated GPU 1 (sm_90: another cubin, another address window)"
run_sim gpu1 GS_WORKLOAD_DEVICE=1
same gpu0 gpu1

if [ -e "$shim" ]; then
	say "through the shim (LD_PRELOAD=libgpuswap.so), never migrated"
	run_sim shim GS_WORKLOAD_DEVICE=0 LD_PRELOAD="$shim" \
		GPUSWAP_REAL_LIBCUDA="$sim/libcuda.so.1"
	same gpu0 shim
fi

if [ -x "$build/tools/gpu-freeze" ] && [ -x "$build/tools/gpu-thaw" ]; then
	"$(dirname "$0")/demo-migrate.sh" "$build" "$tmp"
else
	say "live migration: gpu-freeze / gpu-thaw are not built yet in this version"
fi

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
	say "real GPU: $(nvidia-smi -L | head -1)"
	"$workload" --module "$fatbin" --steps "$steps" >"$tmp/real.out"
	# The GPU's float arithmetic need not match the simulator's host
	# emulation bit for bit, so only runs on the GPU are compared.
	echo "   finished: $(tail -2 "$tmp/real.out" | head -1)"
	if [ -e "$shim" ]; then
		LD_PRELOAD="$shim" "$workload" --module "$fatbin" --steps "$steps" >"$tmp/realshim.out"
		same real realshim
	fi
else
	say "no NVIDIA GPU on this machine: real-GPU part skipped"
fi
say "demo finished"
