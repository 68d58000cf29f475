#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# e2e-migrate.sh host|image|swap: the zdtm pattern. gs-workload runs on
# simulated GPU 0 with a pause after each step; at step 4 it is
#   host:  frozen (gpu-freeze), checked to make no progress, released
#          (gpu-freeze --release: state kept in its memory), thawed on GPU 1
#          (gpu-thaw --device 1);
#   image: the same with the state saved to an image directory
#          (gpu-freeze --release --image DIR; gpu-inspect --verify DIR when
#          built; gpu-thaw --device 1 --image DIR);
#   swap:  moved in one step (gpu-swap --device 1), device to device, then
#          rebuilt on GPU 1 through host memory (--force --via-host);
# then it must finish with output bit for bit that of an undisturbed run.
# Needs the replay engine (skips, saying so, while it is not implemented).
. "$(dirname "$0")/e2e-lib.sh"

mode=${1:?usage: e2e-migrate.sh host|image|swap}
steps=${GS_E2E_STEPS:-14}
at=4

reference "$steps"
start_workload "$steps" "${GS_E2E_SLEEP_MS:-100}"
wait_steps "$at"

case $mode in
host | image)
	must gpu-freeze "$wl_pid"
	[ "$(last_state)" = frozen ] || fail "gpu-freeze left the process '$(last_state)'"
	expect_state frozen
	expect_no_progress 500
	say "frozen after step $(steps_done); no progress for 0.5 s"
	if [ "$mode" = image ]; then
		must gpu-freeze --release --image "$tmp/image" "$wl_pid"
		[ -f "$tmp/image/manifest.json" ] || fail "no image in $tmp/image"
		[ ! -e "$tmp/image.tmp" ] || fail "the image's temporary directory is left"
		if [ -n "${GS_GPU_INSPECT:-}" ]; then
			"$GS_GPU_INSPECT" --verify "$tmp/image" >"$tmp/inspect.out" 2>&1 ||
				fail "gpu-inspect --verify: $(tail -n 5 "$tmp/inspect.out")"
			say "gpu-inspect --verify: image checks out"
		fi
		thaw_args=(--image "$tmp/image")
	else
		must gpu-freeze --release "$wl_pid"
		thaw_args=()
	fi
	[ "$(last_state)" = released ] || fail "--release left the process '$(last_state)'"
	expect_state released
	expect_no_progress 300
	say "released: GPU state saved, no progress"
	must gpu-thaw --device 1 "${thaw_args[@]}" "$wl_pid"
	;;
swap)
	must gpu-swap --device 1 "$wl_pid"
	# The simulated GPUs are peers: device memory goes device to device.
	peer=$(jget report.swap.release.bytes_device <"$tmp/last.json")
	[ "${peer:-0}" -gt 0 ] || fail "gpu-swap copied nothing device to device: $(cat "$tmp/last.json")"
	say "swap: $peer bytes device to device"
	# Rebuilt where it is, through host memory only, as asked.
	must gpu-swap --force --via-host --device 1 "$wl_pid"
	peer=$(jget report.swap.release.bytes_device <"$tmp/last.json")
	[ "${peer:-0}" -eq 0 ] || fail "gpu-swap --via-host copied $peer bytes device to device"
	must gpu-swap --device 1 "$wl_pid"
	[ -z "$(jget report.swap.release <"$tmp/last.json")" ] ||
		fail "a swap onto the GPU it runs on released it: $(cat "$tmp/last.json")"
	say "swap: --force --via-host rebuilt it on GPU 1 through host memory; without --force nothing moved"
	;;
*)
	fail "unknown mode $mode"
	;;
esac
[ "$(last_state)" = running ] || fail "the process is '$(last_state)' after $mode"
expect_state running
# On GPU 1 now, as the status says (report.status.devices: device -> gpu).
gpu=$(status "$wl_pid" | jget report.status.devices.0.gpu)
[ -z "$gpu" ] || [ "$gpu" = 1 ] || fail "the process runs on GPU $gpu, not 1"
say "running on GPU ${gpu:-1} after $mode"
finish_and_compare
say "$mode: output identical to the undisturbed run ($(wc -l <"$wl_out") lines)"
