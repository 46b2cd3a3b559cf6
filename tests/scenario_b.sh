#!/bin/bash
# examples/scenarios/b-runaway-requests.sh --short: exactly the 5 runaway
# requests (3 + 2) are found by age on the two endpoints, canceled with the
# token and seen ending H2T_ERR_CANCELED; no normal request is taken for
# one.  Args: SOURCE_DIR BINARY_DIR.
set -u
out=$(timeout -k 5 60 bash "$1/examples/scenarios/b-runaway-requests.sh" --short "$2" 2>&1)
rc=$?
echo "$out"
[ $rc -eq 0 ] || { echo "FAIL: scenario exited $rc"; exit 1; }
answer=$(echo "$out" | grep '^answer: ')
re='^answer: ([0-9]+) runaway requests \(older than 1s\) on 2 services \(([0-9]+) on orders 127\.0\.0\.1:[0-9]+, ([0-9]+) on payments 127\.0\.0\.1:[0-9]+\); ([0-9]+) canceled through the endpoint, ([0-9]+) ended H2T_ERR_CANCELED$'
[[ $answer =~ $re ]] || { echo "FAIL: answer line: $answer"; exit 1; }
got="${BASH_REMATCH[1]} ${BASH_REMATCH[2]} ${BASH_REMATCH[3]} ${BASH_REMATCH[4]} ${BASH_REMATCH[5]}"
[ "$got" = "5 3 2 5 5" ] || { echo "FAIL: found/orders/payments/canceled/ended = $got, want 5 3 2 5 5"; exit 1; }
echo "ok: $answer"
