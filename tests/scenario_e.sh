#!/bin/bash
# examples/scenarios/e-writer-bottleneck.sh --short: the writer ratio must
# show spawn clearly slower than reused, and the coz run must say it was
# skipped.  Needs h2load.  Args: SOURCE_DIR BINARY_DIR.
set -u
command -v h2load >/dev/null || { echo "h2load not installed: skipped"; exit 0; }
out=$(timeout -k 5 90 bash "$1/examples/scenarios/e-writer-bottleneck.sh" --short "$2" 2>&1)
rc=$?
echo "$out"
[ $rc -eq 0 ] || { echo "FAIL: scenario exited $rc"; exit 1; }
answer=$(echo "$out" | grep '^answer: ')
re='^answer: reused/spawn ([0-9.]+)x req/s \(reused ([0-9]+) req/s, spawn ([0-9]+) req/s, h2c 16 KiB -c1\); coz run skipped \(--short\)$'
[[ $answer =~ $re ]] || { echo "FAIL: answer line: $answer"; exit 1; }
ratio=${BASH_REMATCH[1]} r=${BASH_REMATCH[2]} s=${BASH_REMATCH[3]}
awk -v x="$ratio" -v r="$r" -v s="$s" 'BEGIN { exit !(x >= 1.3 && s > 0 && r / s >= 1.2) }' ||
  { echo "FAIL: reused/spawn ${ratio}x ($r vs $s req/s)"; exit 1; }
echo "ok: $answer"
