#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Bad images: gs-workload is released to an image, then thawed from damaged
# copies of it: memory.img truncated after its header, a flipped bit in a
# stored chunk, a format version from the future, memory.img missing, a
# module file missing, the manifest missing, a directory that does not
# exist. Each thaw must fail with a message, leave the process released
# with its state intact, and the final thaw from the intact image must give
# the undisturbed output. Needs the replay engine.
. "$(dirname "$0")/e2e-lib.sh"

steps=12
reference "$steps"
start_workload "$steps" 100
wait_steps 3
must gpu-freeze --release --image "$tmp/image" "$wl_pid"
[ -f "$tmp/image/memory.img" ] && [ -f "$tmp/image/manifest.json" ] ||
	fail "the image lacks memory.img or manifest.json: $(ls -R "$tmp/image")"

# The first stored (non-zero) byte of memory.img after its 4 KiB header.
first_data_byte() {
	cmp -i 4096 "$1" /dev/zero 2>/dev/null | sed -n 's/.* differ: byte \([0-9]*\),.*/\1/p'
}

corrupt() { # case dir
	local img=$2/memory.img off val
	case $1 in
	truncated)
		truncate -s 4096 "$img"
		;;
	flipped-bit)
		off=$(first_data_byte "$img")
		[ -n "$off" ] || fail "memory.img holds no stored data to flip"
		off=$((4096 + off - 1))
		val=$(od -An -tu1 -j "$off" -N1 "$img" | tr -d ' ')
		printf "\\$(printf %03o $((val ^ 1)))" |
			dd of="$img" bs=1 seek="$off" count=1 conv=notrunc status=none
		;;
	future-version)
		# u32 format version at offset 8 of memory.img's header
		printf '\143\000\000\000' | dd of="$img" bs=1 seek=8 count=4 conv=notrunc status=none
		;;
	no-memory)
		rm "$img"
		;;
	no-module)
		local m
		m=$(ls "$2/modules" | head -n 1)
		[ -n "$m" ] || fail "the image has no module files"
		rm "$2/modules/$m"
		;;
	no-manifest)
		rm "$2/manifest.json"
		;;
	no-directory)
		rm -rf "$2"
		;;
	esac
}

for c in truncated flipped-bit future-version no-memory no-module no-manifest no-directory; do
	rm -rf "$tmp/bad"
	cp -a "$tmp/image" "$tmp/bad"
	corrupt "$c" "$tmp/bad"
	must_fail gpu-thaw --device 1 --image "$tmp/bad" "$wl_pid"
	[ "$(last_state)" = released ] || fail "$c: the failed thaw left the process '$(last_state)'"
	expect_state released
	kill -0 "$wl_pid" || fail "$c: the process died"
	say "$c: refused: $(head -n 1 "$tmp/last.err")"
done
expect_no_progress 200

# The intact image still thaws, on the device that was refused all along.
must gpu-thaw --device 1 --image "$tmp/image" "$wl_pid"
finish_and_compare
say "every damaged image refused; the intact one thawed: output identical"
