#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# Runs the benchmarks and prints one table (see README.md). Meant to be run
# by `meson compile -C BUILD bench` (or `bench-callgrind`), which builds
# everything first and passes the paths:
#
#   run.sh --gate BENCH_GATE [--calls BENCH_CALLS --shim LIBGPUSWAP
#          --standin STANDIN_LIBCUDA --sim SIMCUDA_LIBCUDA --fatbin FATBIN]
#          [--freeze BENCH_FREEZE] [--swap BENCH_SWAP]
#          [--image IMAGE_THROUGHPUT --image-dir DIR]
#          [--callgrind VALGRIND]
#
# GS_BENCH_ROUNDS=N changes the number of rounds of every row (default 31).
# GS_BENCH_FREEZES=N the number of freezes per arm of bench-freeze (default
# 200); GS_BENCH_SWAP_MIB=N and GS_BENCH_SWAP_ROUNDS=N the state and rounds of
# bench-swap (default 256, 10); GS_BENCH_IMAGE_GIB=G the size image-throughput
# writes (default 0.5).
set -eu

gate= calls= shim= standin= sim= fatbin= valgrind= freeze= swap= image= image_dir=
while [ $# -gt 0 ]; do
	[ $# -ge 2 ] || { echo "run.sh: $1 needs a value" >&2; exit 2; }
	case $1 in
	--gate) gate=$2 ;;
	--calls) calls=$2 ;;
	--shim) shim=$2 ;;
	--standin) standin=$2 ;;
	--sim) sim=$2 ;;
	--fatbin) fatbin=$2 ;;
	--callgrind) valgrind=$2 ;;
	--freeze) freeze=$2 ;;
	--swap) swap=$2 ;;
	--image) image=$2 ;;
	--image-dir) image_dir=$2 ;;
	*) echo "run.sh: unknown argument '$1' (see the comment at the top)" >&2; exit 2 ;;
	esac
	shift 2
done
[ -n "$gate" ] || { echo "run.sh: --gate is required" >&2; exit 2; }

# Absolute paths: LD_PRELOAD and GPUSWAP_REAL_LIBCUDA must name the same
# files whatever directory the programs run in.
abs() { case $1 in /*) printf '%s\n' "$1" ;; *) printf '%s/%s\n' "$(pwd)" "$1" ;; esac; }
gate=$(abs "$gate")
if [ -n "$calls" ]; then
	calls=$(abs "$calls") shim=$(abs "$shim") standin=$(abs "$standin")
	sim=$(abs "$sim") fatbin=$(abs "$fatbin")
fi
[ -z "$freeze" ] || freeze=$(abs "$freeze")
[ -z "$swap" ] || swap=$(abs "$swap")
[ -z "$image" ] || image=$(abs "$image") image_dir=$(abs "${image_dir:-.}")

rounds=${GS_BENCH_ROUNDS:-31}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

cpu_model() {
	sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n 1
}

# The shim, in front of the given driver, as an application meets it.
with_shim() {
	driver=$1
	shift
	env LD_PRELOAD="$shim" GPUSWAP_REAL_LIBCUDA="$driver" "$@"
}

# The driver alone: this program's libcuda.so.1 found on the library path.
without_shim() {
	driver=$1
	shift
	env -u LD_PRELOAD LD_LIBRARY_PATH="$(dirname "$driver")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$@"
}

# ---- instruction counts (callgrind) ------------------------------------------

# Inclusive instructions of FUNCTION in a callgrind output file.
inclusive_ir() {
	callgrind_annotate --inclusive=yes "$1" 2>/dev/null |
		awk -v fn="$2" '$0 ~ (":" fn " ") || $0 ~ (":" fn "$") { gsub(",", "", $1); print $1; exit }'
}

run_callgrind() {
	n=200000
	[ -n "$calls" ] || { echo "run.sh: --callgrind needs the call benchmarks" >&2; exit 2; }
	echo "Instructions per call, counted by callgrind (deterministic; the stand-in driver,"
	echo "whose functions are a single return). Each count is the whole loop iteration:"
	echo "the call, the callee and the loop around it; the shim arm adds the wrapper."
	echo
	for arm in baseline shim; do
		with_shim "$standin" "$valgrind" --tool=callgrind \
			--callgrind-out-file="$tmp/cg.$arm" \
			"$calls" --driver "$standin" --only "$arm" --rounds 1 --warmup 0 \
			--calls "$n" >"$tmp/vg.$arm.log" 2>&1 ||
			{ cat "$tmp/vg.$arm.log" >&2; exit 1; }
	done
	printf '%-22s %14s %14s %14s\n' "call" "direct instr" "shim instr" "added instr"
	for pair in "cuLaunchKernel launch_batch" "cuMemcpyHtoDAsync copy_batch"; do
		set -- $pair
		b=$(inclusive_ir "$tmp/cg.baseline" "$2")
		s=$(inclusive_ir "$tmp/cg.shim" "$2")
		if [ -z "$b" ] || [ -z "$s" ]; then
			echo "run.sh: no count for $2 in callgrind's output" >&2
			exit 1
		fi
		awk -v name="$1" -v b="$b" -v s="$s" -v n="$n" 'BEGIN {
			printf "%-22s %14.1f %14.1f %14.1f\n", name, b / n, s / n, (s - b) / n }'
	done
	echo
	echo "Where they go, per call (self instructions, shim arm). FILE:FUNCTION is the"
	echo "code of FILE compiled into FUNCTION: gate.h, thread.h and shim.h are inline."
	callgrind_annotate --auto=no --show-percs=no "$tmp/cg.shim" 2>/dev/null |
		awk -v n="$n" '$2 ~ /:(cuLaunchKernel|cuMemcpyHtoDAsync_v2|launch_batch|copy_batch)$/ {
			ir = $1; gsub(",", "", ir)
			where = $2; sub(/^(\.\.\/)+/, "", where)
			obj = $3; gsub(/[][]/, "", obj); sub(/.*\//, "", obj)
			printf "  %8.1f  %s%s\n", ir / n, where, obj != "" ? "  (" obj ")" : "" }'
}

if [ -n "$valgrind" ]; then
	run_callgrind
	exit 0
fi

# ---- the table -----------------------------------------------------------------

echo "gpuswap benchmarks. No GPU is involved: the 'stand-in driver' is a libcuda.so.1"
echo "whose functions return at once (bench/standin), the 'simulated driver' is"
echo "tests/simcuda (streams are host worker threads). Figures are not GPU figures."
echo "machine: $(nproc) CPUs, $(cpu_model); $(uname -sr)"
echo "baseline: the driver's function called directly; shim: the same call through"
echo "libgpuswap.so; rows marked 'no shim' are controls, in which both arms call the"
echo "driver: their 'added' is what the method cannot resolve. Gate rows: an empty"
echo "loop against gs_gate_enter+gs_gate_exit (the fence fallback: no membarrier)."
echo "added, ratio: medians over $rounds rounds of shim - baseline and shim / baseline,"
echo "the two arms of a round timed back to back."
echo

out="$tmp/table"
if [ -n "$calls" ]; then
	with_shim "$standin" "$calls" --driver "$standin" --rounds "$rounds" \
		--label "stand-in driver" | tee "$out"
	without_shim "$standin" "$calls" --driver "$standin" --rounds "$rounds" \
		--label "stand-in driver" --rows-only | tee -a "$out"
	with_shim "$sim" "$calls" --driver "$sim" --module "$fatbin" --rounds "$rounds" \
		--label "simulated driver" --rows-only | tee -a "$out"
	without_shim "$sim" "$calls" --driver "$sim" --module "$fatbin" --rounds "$rounds" \
		--label "simulated driver" --rows-only | tee -a "$out"
	"$gate" --rounds "$rounds" --rows-only | tee -a "$out"
else
	echo "(built with -Dtests=false: no simulated driver or libcuda stub, gate rows only)"
	"$gate" --rounds "$rounds" | tee "$out"
fi

# The targets (DESIGN.md section 6 and the benchmark's issue), read off the
# rows above: printed, never enforced.
echo
awk '
	function what() { w = substr($0, 1, 46); sub(/ +$/, "", w); return w }
	function verdict(added, target, strict) {
		if (strict ? added < target : added <= target)
			return "met"
		return sprintf("missed by %.1f ns", added - target)
	}
	/^(cuLaunchKernel|cuMemcpyHtoDAsync), stand-in driver +[-0-9]/ {
		printf "target <= 15 ns added per call, %s: %.1f ns, %s\n", what(), $(NF - 2),
		       verdict($(NF - 2), 15, 0) }
	/^gate enter\+exit, (1 thread|[0-9]+ threads)( \(fence mode\)| on [0-9]+ CPUs)? +[0-9]/ {
		printf "target < 10 ns, %s: %.1f ns, %s\n", what(), $(NF - 2),
		       verdict($(NF - 2), 10, 1) }
' "$out"

# ---- freeze latency ------------------------------------------------------------

# bench-freeze is linked with the shim's internals rather than preloaded, so
# the driver is given only as the one the shim forwards to.
if [ -n "$freeze" ]; then
	echo
	echo "Freeze latency: gs_gate_close() (close the gate, wait for the calls in flight"
	echo "to leave), the simulated driver under the shim; GPU work not included."
	env -u LD_PRELOAD GPUSWAP_REAL_LIBCUDA="$sim" "$freeze" \
		--freezes "${GS_BENCH_FREEZES:-200}"
fi

# ---- swap downtime ---------------------------------------------------------------

if [ -n "$swap" ]; then
	echo
	echo "Swap downtime: device to device against through host memory, the simulated"
	echo "driver under the shim (a device copy is a memmove, a host copy a memcpy)."
	env -u LD_PRELOAD GPUSWAP_REAL_LIBCUDA="$sim" "$swap" \
		--mib "${GS_BENCH_SWAP_MIB:-256}" --rounds "${GS_BENCH_SWAP_ROUNDS:-10}"
fi

# ---- image throughput ----------------------------------------------------------

# Printed as it comes: its last column holds the ratios (image against the
# best plain O_DIRECT loop; 90%-zero against dense).
if [ -n "$image" ]; then
	echo
	echo "Image dump/restore throughput against plain O_DIRECT on the same filesystem"
	echo "(tests/image/image-throughput, in the build directory)."
	"$image" --dir "$image_dir" --gib "${GS_BENCH_IMAGE_GIB:-0.5}"
fi
