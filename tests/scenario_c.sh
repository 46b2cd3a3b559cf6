#!/bin/bash
# examples/scenarios/c-extra-connections.sh --short: 10 concurrent requests
# take 1 connection on a default server, and 4 on a server allowing 2
# streams (the client's max_conns_per_origin): the first opened for
# no_conn, 3 for max_streams, and the 2 requests past 4 x 2 wait for a
# stream.  Args: SOURCE_DIR BINARY_DIR.
set -u
out=$(timeout -k 5 60 bash "$1/examples/scenarios/c-extra-connections.sh" --short "$2" 2>&1)
rc=$?
echo "$out"
[ $rc -eq 0 ] || { echo "FAIL: scenario exited $rc"; exit 1; }
answer=$(echo "$out" | grep '^answer: ')
want='answer: 10 requests on 4 connections (1 with the default limit): 1 no_conn, 3 max_streams; server max_streams 2, 2 requests waited for a free stream'
[ "$answer" = "$want" ] || { echo "FAIL: answer line: $answer"; echo "want: $want"; exit 1; }
echo "ok: $answer"
