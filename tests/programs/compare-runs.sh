#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# compare-runs.sh ENV_A ENV_B PROGRAM [ARGS...]
#
# Runs PROGRAM twice, first with the VAR=VALUE words of ENV_A added to the
# environment, then with those of ENV_B ("-" for none), and fails unless both
# runs succeed, print "done" last, and print exactly the same thing. Used to
# show that a workload's output is a function of its state only: not of the
# run, the device it ran on, or the architecture it was compiled for.
set -u

if [ $# -lt 3 ]; then
	echo "usage: $0 ENV_A ENV_B PROGRAM [ARGS...]" >&2
	exit 2
fi
env_a=$1
env_b=$2
shift 2
[ "$env_a" = - ] && env_a=
[ "$env_b" = - ] && env_b=

dir=$(mktemp -d) || exit 1
trap 'rm -rf "$dir"' EXIT

status=0
for label in a b; do
	if [ "$label" = a ]; then words=$env_a; else words=$env_b; fi
	# shellcheck disable=SC2086
	env $words "$@" >"$dir/$label.out" 2>"$dir/$label.err"
	rc=$?
	if [ $rc -ne 0 ]; then
		echo "run $label ($words) exited with $rc:" >&2
		cat "$dir/$label.err" >&2
		status=1
	elif [ "$(tail -n 1 "$dir/$label.out")" != done ]; then
		echo "run $label ($words) did not finish:" >&2
		tail -n 5 "$dir/$label.out" "$dir/$label.err" >&2
		status=1
	fi
done
[ $status -eq 0 ] || exit 1

if ! cmp -s "$dir/a.out" "$dir/b.out"; then
	echo "outputs differ between ($env_a) and ($env_b):" >&2
	diff "$dir/a.out" "$dir/b.out" >&2
	exit 1
fi
echo "identical: $(wc -l <"$dir/a.out") lines; $(tail -n 2 "$dir/a.out" | head -n 1)"
