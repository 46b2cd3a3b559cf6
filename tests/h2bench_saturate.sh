#!/bin/bash
# h2bench saturate, short: two in-process replicas, one 8x slower; the
# saturate policy must clearly beat random choice (the bench's own goal is
# >= 1.8x and >= 90 % of the ideal; a loaded CI machine gets a margin) and
# every task must succeed.  Args: SOURCE_DIR BINARY_DIR.
set -u
out=$("$2/bin/h2bench" saturate --rounds 1 -n 300 -d 4 2>&1)
rc=$?
echo "$out"
[ $rc -eq 0 ] || { echo "FAIL: h2bench saturate exited $rc"; exit 1; }
ratio=$(echo "$out" | sed -n 's/^saturate\/random: \([0-9.]*\)x$/\1/p')
ideal=$(echo "$out" | sed -n 's/^saturate\/ideal: \([0-9.]*\)%$/\1/p')
[ -n "$ratio" ] && [ -n "$ideal" ] || { echo "FAIL: no ratio lines"; exit 1; }
awk -v r="$ratio" -v i="$ideal" 'BEGIN { exit !(r >= 1.5 && i >= 60) }' ||
  { echo "FAIL: saturate/random $ratio, of ideal $ideal%"; exit 1; }
echo "ok: saturate/random ${ratio}x, ${ideal}% of ideal"
