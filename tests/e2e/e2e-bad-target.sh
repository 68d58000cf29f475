#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# e2e-bad-target.sh nocode|small-device|oom-fault: a thaw onto a device that
# cannot take the state must fail with a message and leave the process
# released with its state intact; a second thaw then succeeds and the output
# is the undisturbed run's.
#   nocode        the module is a bare sm_90 cubin; GPU 1 is sm_80: no code
#                 for it. The retry goes to GPU 0 (sm_90).
#   small-device  GPU 1 has 4 MiB, less than the process holds (two 2 MiB
#                 VMM chunks plus the arena's): the check before touching
#                 anything refuses. The retry goes to GPU 0.
#   oom-fault     SIMCUDA_FAIL fails the 3rd cuMemAddressReserve with
#                 CUDA_ERROR_OUT_OF_MEMORY. The workload makes two before it
#                 is frozen (its own VMM range and the shim's arena window),
#                 so the first one made after the freeze fails, mid-way:
#                 in the release (which then leaves the process frozen) or
#                 in the thaw (which leaves it released), whichever makes
#                 it; what was built is undone. Retrying the failed step
#                 succeeds, and the thaw goes to GPU 1.
# Needs the replay engine.
. "$(dirname "$0")/e2e-lib.sh"

case=${1:?usage: e2e-bad-target.sh nocode|small-device|oom-fault}
steps=12
wl_env=()
retry=0
case $case in
nocode)
	WL_MODULE="$GS_KERNELS_DIR/$GS_KERNELS_CUBIN"
	wl_env=(SIMCUDA_ARCH="$GS_ARCH_HIGH,$GS_ARCH_LOW")
	;;
small-device)
	wl_env=(SIMCUDA_MEM_MB=1024,4)
	;;
oom-fault)
	wl_env=(SIMCUDA_FAIL=cuMemAddressReserve:3:CUDA_ERROR_OUT_OF_MEMORY)
	retry=1
	;;
*)
	fail "unknown case $case"
	;;
esac

# The reference runs without the fault (it would hit the workload there).
if [ "$case" = oom-fault ]; then reference "$steps"; else reference "$steps" "${wl_env[@]}"; fi
start_workload "$steps" 100 "${wl_env[@]}"
wait_steps 3
if [ "$case" = oom-fault ]; then
	must gpu-freeze "$wl_pid"
	if ! tool gpu-freeze --release "$wl_pid"; then
		skip_if_not_implemented
		# The fault hit the release: it must leave the process frozen.
		[ "$(last_state)" = frozen ] || fail "the failed release left the process '$(last_state)'"
		expect_state frozen
		expect_no_progress 200
		say "oom-fault: the release refused: $(head -n 1 "$tmp/last.err")"
		must gpu-freeze --release "$wl_pid"
		must gpu-thaw --device 1 "$wl_pid"
		finish_and_compare
		say "oom-fault: released and thawed on GPU 1 afterwards: output identical"
		exit 0
	fi
else
	must gpu-freeze --release "$wl_pid"
fi
must_fail gpu-thaw --device 1 "$wl_pid"
[ "$(last_state)" = released ] || fail "the failed thaw left the process '$(last_state)'"
expect_state released
expect_no_progress 200
say "$case: GPU 1 refused: $(head -n 1 "$tmp/last.err")"
must gpu-thaw --device "$retry" "$wl_pid"
finish_and_compare
say "$case: thawed on GPU $retry afterwards: output identical"
