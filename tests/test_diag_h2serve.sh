#!/bin/bash
# h2serve --diag against real clients (curl): a slow request shows in
# /debug/requests with its state, SIGUSR1 prints the in-flight report on
# stderr, cancel needs the token and resets the stream, the outcome lands in
# /debug/recent and /metrics.  Args: SOURCE_DIR BINARY_DIR.
set -u
BIN="$2/bin/h2serve"
. "$(dirname "$0")/support/lib.sh"
fail() {
  echo "FAIL: $*"
  echo "--- h2serve stdout"; cat "$T/out" 2>/dev/null
  echo "--- h2serve stderr"; cat "$T/err" 2>/dev/null
  exit 1
}

mkdir -p "$T/www"
echo hello >"$T/www/index.html"

# without a token on a non-loopback address: refused before serving
"$BIN" --h2c --port 0 --root "$T/www" --diag 0.0.0.0:0 >"$T/out" 2>"$T/err"
[ $? -ne 0 ] || fail "--diag 0.0.0.0 must be refused"
grep -q "diag" "$T/err" || fail "no message for a refused --diag"

"$BIN" --h2c --port 0 --root "$T/www" --diag 127.0.0.1:0 \
  --diag-token s3cret >"$T/out" 2>"$T/err" &
PID=$!
PIDS+=("$PID")
poll grep -q "diagnostics on" "$T/out" || fail "no diagnostics line"
PORT=$(sed -n 's/.*serving.*:\([0-9]*\) (.*/\1/p' "$T/out" | head -1)
DPORT=$(sed -n 's/.*diagnostics on http:\/\/127\.0\.0\.1:\([0-9]*\)\/.*/\1/p' \
  "$T/out" | head -1)
[ -n "$PORT" ] && [ -n "$DPORT" ] || fail "ports not found"
D="http://127.0.0.1:$DPORT"

curl -s --http2-prior-knowledge -o /dev/null -w '%{http_code}' \
  "http://127.0.0.1:$PORT/delay?ms=60000" >"$T/code" 2>/dev/null &
CPID=$!
PIDS+=("$CPID")

listed() {
  curl -s "$D/debug/requests" >"$T/list" &&
    grep -q '"path":"/delay?redacted"' "$T/list" &&
    grep -q '"state":"handler"' "$T/list"
}
poll listed || fail "slow request not listed: $(cat "$T/list")"
grep -q '"status":"sleeping"' "$T/list" || fail "status text missing"
grep -q '"kind":"server"' "$T/list" || fail "kind missing"
ID=$(grep -o '"id":[0-9]*' "$T/list" | head -1 | cut -d: -f2)
[ -n "$ID" ] || fail "no id"

curl -s "$D/debug/connections" >"$T/conns"
grep -q '"kind":"server"' "$T/conns" && grep -q '"streams_active":1' "$T/conns" ||
  fail "server connection not in /debug/connections: $(cat "$T/conns")"

# SIGUSR1: the report, from the dump thread
kill -USR1 "$PID"
reported() {
  grep -q "In-flight HTTP/2 requests (1):" "$T/err" &&
    grep -q "1 in flight, oldest" "$T/err" &&
    grep -q "  GET /delay?ms=60000 for .*\[in handler: sleeping, conn #[0-9]* stream 1\]" "$T/err"
}
poll reported || fail "no SIGUSR1 report"
kill -0 "$PID" || fail "h2serve died of SIGUSR1"

# cancel: token required
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$D/debug/requests/$ID/cancel")
[ "$code" = 401 ] || fail "cancel without token: $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST \
  -H "Authorization: Bearer nope" "$D/debug/requests/$ID/cancel")
[ "$code" = 403 ] || fail "cancel with a wrong token: $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST \
  -H "Authorization: Bearer s3cret" "$D/debug/requests/$ID/cancel?reason=test")
[ "$code" = 200 ] || fail "cancel: $code"

# curl sees its stream reset, well before the 20 s delay
for _ in $(seq 300); do
  kill -0 "$CPID" 2>/dev/null || break
  sleep 0.05
done
kill -0 "$CPID" 2>/dev/null && fail "client still waiting after cancel"
[ "$(cat "$T/code")" != 200 ] || fail "client got a response after cancel"

finished() {
  curl -s "$D/debug/recent" >"$T/recent" &&
    grep -q "\"id\":$ID," "$T/recent" &&
    grep -q '"error_name":"H2T_ERR_CANCELED"' "$T/recent"
}
poll finished || fail "not in /debug/recent as canceled: $(cat "$T/recent")"
grep -q '"cancel_reason":"test"' "$T/recent" || fail "cancel reason lost"
curl -s "$D/metrics" | grep -q \
  'h2t_requests_total{kind="server",outcome="canceled"} 1' ||
  fail "metrics miss the canceled request"
echo "ok"
