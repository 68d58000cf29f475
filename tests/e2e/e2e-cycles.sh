#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# e2e-cycles.sh [N]: N (default $GS_E2E_CYCLES, else 50) randomised moves of
# one running gs-workload between simulated GPUs 0 and 1: each picks a way
# (freeze/release/thaw through host memory, the same through an image, or
# gpu-swap), a target device, and a moment (a random delay, so moves land at
# different points of a step), and waits for at least one step in between.
# The output must still be the undisturbed run's, bit for bit.
# GS_E2E_SEED replays a sequence. Needs the replay engine.
. "$(dirname "$0")/e2e-lib.sh"

cycles=${1:-${GS_E2E_CYCLES:-50}}
seed=${GS_E2E_SEED:-$(( $(date +%s) % 32768 ))}
RANDOM=$seed
# Each cycle waits for a new step and then a little: one to three steps
# per cycle; four per cycle always suffice (what is left runs at the end).
steps=$((4 * cycles + 10))
say "$cycles cycles, seed $seed (GS_E2E_SEED=$seed reproduces them)"

reference "$steps"
start_workload "$steps" 50
device=0
moves=(0 0 0)
for c in $(seq 1 "$cycles"); do
	wait_steps $(($(steps_done) + 1))
	target=$((RANDOM % 2))
	way=$((RANDOM % 3))
	# A move to the device it is on is a move too (release and rebuild),
	# except for swap, which is only ever asked to change devices.
	[ $way = 2 ] && target=$((1 - device))
	sleep "0.0$((RANDOM % 40 + 10))"
	case $way in
	0)
		must gpu-freeze --release "$wl_pid"
		must gpu-thaw --device "$target" "$wl_pid"
		;;
	1)
		rm -rf "$tmp/image"
		must gpu-freeze --release --image "$tmp/image" "$wl_pid"
		must gpu-thaw --device "$target" --image "$tmp/image" "$wl_pid"
		;;
	2)
		must gpu-swap --device "$target" "$wl_pid"
		;;
	esac
	[ "$(last_state)" = running ] || fail "cycle $c: '$(last_state)' after the move"
	moves[$way]=$((moves[way] + 1))
	device=$target
done
finish_and_compare 120
say "$cycles moves (host ${moves[0]}, image ${moves[1]}, swap ${moves[2]}), ended on GPU $device: output identical"
