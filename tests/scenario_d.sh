#!/bin/bash
# examples/scenarios/d-slow-replica.sh --short: against two h2serve
# replicas, one 8x slower, saturate must clearly beat random (the in-process
# check, h2bench_saturate.sh, wants 1.5x too) and reach a fair share of the
# true ideal.  Args: SOURCE_DIR BINARY_DIR.
set -u
out=$(timeout -k 5 90 bash "$1/examples/scenarios/d-slow-replica.sh" --short "$2" 2>&1)
rc=$?
echo "$out"
[ $rc -eq 0 ] || { echo "FAIL: scenario exited $rc"; exit 1; }
answer=$(echo "$out" | grep '^answer: ')
re='^answer: saturate/random ([0-9.]+)x with one replica 8x slower \(saturate ([0-9.]+) tasks/s, random ([0-9.]+); saturate at ([0-9]+)% of the ideal 1125\)$'
[[ $answer =~ $re ]] || { echo "FAIL: answer line: $answer"; exit 1; }
ratio=${BASH_REMATCH[1]} of=${BASH_REMATCH[4]}
awk -v r="$ratio" -v o="$of" 'BEGIN { exit !(r >= 1.5 && o >= 50 && o <= 110) }' ||
  { echo "FAIL: saturate/random ${ratio}x, ${of}% of ideal"; exit 1; }
# the slow replica is named by its profile: a mean well above the fast one's
m1=$(echo "$out" | sed -n 's/^replica 1: [0-9]* requests, mean \([0-9.]*\) ms$/\1/p')
m2=$(echo "$out" | sed -n 's/^replica 2: [0-9]* requests, mean \([0-9.]*\) ms$/\1/p')
awk -v a="$m1" -v b="$m2" 'BEGIN { exit !(a > 0 && b > 4 * a) }' ||
  { echo "FAIL: profile means $m1 ms (fast) and $m2 ms (slow)"; exit 1; }
echo "ok: $answer"
