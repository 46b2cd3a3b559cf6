#!/bin/bash
# examples/scenarios/a-stuck-workers.sh --short: the SIGUSR1 dump of the
# client must put all of its 8 workers on the slow node and none on the fast
# one.  Args: SOURCE_DIR BINARY_DIR.
set -u
out=$(timeout -k 5 60 bash "$1/examples/scenarios/a-stuck-workers.sh" --short "$2" 2>&1)
rc=$?
echo "$out"
[ $rc -eq 0 ] || { echo "FAIL: scenario exited $rc"; exit 1; }
answer=$(echo "$out" | grep '^answer: ')
re='^answer: ([0-9]+) of ([0-9]+) stuck requests wait on 127\.0\.0\.1:([0-9]+) \(the slow node; fast node 127\.0\.0\.1:([0-9]+): ([0-9]+)\)$'
[[ $answer =~ $re ]] || { echo "FAIL: answer line: $answer"; exit 1; }
stuck=${BASH_REMATCH[1]} total=${BASH_REMATCH[2]} fast=${BASH_REMATCH[5]}
[ "$stuck" -eq 8 ] && [ "$total" -eq 8 ] && [ "$fast" -eq 0 ] ||
  { echo "FAIL: $stuck of $total on the slow node, $fast on the fast one (want 8, 8, 0)"; exit 1; }
[ "${BASH_REMATCH[3]}" != "${BASH_REMATCH[4]}" ] || { echo "FAIL: one port for both nodes"; exit 1; }
# the evidence printed is the dump itself, grouped under the slow authority
echo "$out" | grep -q "^  | 127\.0\.0\.1:${BASH_REMATCH[3]}  8 in flight, oldest" ||
  { echo "FAIL: no dump group header for the slow node"; exit 1; }
echo "ok: $answer"
