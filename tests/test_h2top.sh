#!/bin/bash
# h2top against two real h2serve --diag endpoints: --once and --json show
# the slow requests of both with their fields and mark an endpoint nobody
# listens on; endpoints that answer badly (silence, not HTTP, not JSON, too
# big) each get their error instead of a hang; then the ncurses screen under
# tmux: rows appear, sort and filter work, k + a reason cancels a request
# (its client sees the reset, /debug/recent has the reason), q quits.
# Args: SOURCE_DIR BINARY_DIR.
set -u
SRC="$1"
BIN="$2/bin"
. "$(dirname "$0")/support/lib.sh"
SESSION="h2top-test-$$" # its own tmux server (-L), killed at the end
cleanup_more() { tmux -L "$SESSION" kill-server 2>/dev/null; }
fail() {
  echo "FAIL: $*"
  for f in "$T"/*.out "$T"/*.err "$T"/screen; do
    [ -s "$f" ] && { echo "--- $f"; cat "$f"; }
  done
  exit 1
}
[ -x "$BIN/h2top" ] || { echo "SKIP: no h2top (ncurses missing)"; exit 0; }

mkdir -p "$T/www"
start_serve() { # name
  "$BIN/h2serve" --h2c --port 0 --root "$T/www" --diag 127.0.0.1:0 \
    --diag-token s3cret >"$T/$1.out" 2>"$T/$1.err" &
  PIDS+=("$!")
}
start_serve s1
start_serve s2
for s in s1 s2; do
  poll grep -q "serving" "$T/$s.out" || fail "$s did not start"
done
port() { sed -n 's/.*serving.*:\([0-9]*\) (.*/\1/p' "$T/$1.out" | head -1; }
dport() {
  sed -n 's/.*diagnostics on http:\/\/127\.0\.0\.1:\([0-9]*\)\/.*/\1/p' \
    "$T/$1.out" | head -1
}
P1=$(port s1) P2=$(port s2) D1=$(dport s1) D2=$(dport s2)
[ -n "$P1" ] && [ -n "$P2" ] && [ -n "$D1" ] && [ -n "$D2" ] ||
  fail "ports not found"
# a port nobody listens on: bind one, then let it go
DEAD=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
EPS="127.0.0.1:$D1,127.0.0.1:$D2"

# slow requests in flight: two on s1 (one connection), one on s2
"$BIN/h2stat" -p 2 "http://127.0.0.1:$P1/delay?ms=60000" >"$T/c1.out" 2>&1 &
C1=$!
PIDS+=("$C1")
"$BIN/h2stat" "http://127.0.0.1:$P2/delay?ms=60000" >"$T/c2.out" 2>&1 &
C2=$!
PIDS+=("$C2")

# --- --once ----------------------------------------------------------------
three() {
  timeout 20 "$BIN/h2top" --endpoints "$EPS,127.0.0.1:$DEAD" --once \
    >"$T/once" 2>"$T/once.err"
  echo $? >"$T/once.rc"
  [ "$(grep -c 'handler' "$T/once")" -eq 3 ]
}
poll three || fail "--once does not show 3 requests: $(cat "$T/once" "$T/once.err")"
[ "$(cat "$T/once.rc")" = 1 ] || fail "--once with a dead endpoint must exit 1"
head -1 "$T/once" | grep -q "^ENDPOINT *ID *KIND *AGE *STATE *IN-STATE *METHOD *CONN/STRM *AUTHORITY+PATH *STATUS$" ||
  fail "--once header: $(head -1 "$T/once")"
[ "$(grep -c "^127.0.0.1:$D1 .* server .* handler .* GET .* 1/[13] .*127.0.0.1:$P1/delay?redacted  sleeping  trace=[0-9a-f]\{32\}$" "$T/once")" = 2 ] ||
  fail "--once rows of s1: $(cat "$T/once")"
grep -q "^127.0.0.1:$D2 .* server .* handler .* GET .* 1/1 .*127.0.0.1:$P2/delay?redacted  sleeping  trace=[0-9a-f]\{32\}$" "$T/once" ||
  fail "--once row of s2: $(cat "$T/once")"
# a trace id links one request's rows: filtering on it shows that one only
tid=$(grep "^127.0.0.1:$D2 " "$T/once" | grep -o 'trace=[0-9a-f]*' | head -1 | cut -d= -f2)
[ -n "$tid" ] || fail "--once shows no trace id: $(cat "$T/once")"
timeout 20 "$BIN/h2top" --endpoints "$EPS" --once --filter "$tid" >"$T/once_tid" 2>&1
[ "$(grep -c "trace=$tid" "$T/once_tid")" = 1 ] && [ "$(grep -c handler "$T/once_tid")" = 1 ] ||
  fail "--filter TRACE_ID: $(cat "$T/once_tid")"
grep -q "^# 127.0.0.1:$DEAD UNREACHABLE: connect: Connection refused$" "$T/once" ||
  fail "--once does not mark the dead endpoint: $(cat "$T/once")"
# oldest first by default, and --filter
timeout 20 "$BIN/h2top" -e "$EPS" --once --filter ":$P2/" >"$T/f" ||
  fail "--once --filter failed"
[ "$(grep -c handler "$T/f")" = 1 ] && grep -q ":$D2 " "$T/f" ||
  fail "--filter: $(cat "$T/f")"

# --- --json ----------------------------------------------------------------
timeout 20 "$BIN/h2top" -e "$EPS,127.0.0.1:$DEAD" --json >"$T/json" 2>"$T/json.err"
[ $? = 1 ] || fail "--json with a dead endpoint must exit 1"
python3 - "$T/json" "$D1" "$D2" "$DEAD" "$P1" <<'EOF' || fail "--json: $(cat "$T/json")"
import json, sys
d = json.load(open(sys.argv[1]))
d1, d2, dead, p1 = ("127.0.0.1:" + p for p in sys.argv[2:6])
eps = {e["endpoint"]: e for e in d["endpoints"]}
assert eps[d1]["ok"] and eps[d1]["count"] == 2, eps
assert eps[d2]["ok"] and eps[d2]["count"] == 1, eps
assert not eps[dead]["ok"] and eps[dead]["unreachable"], eps
assert "Connection refused" in eps[dead]["error"], eps
reqs = d["requests"]
assert len(reqs) == 3 == d["count"], reqs
for r in reqs:
    assert r["endpoint"] in (d1, d2)
    assert r["kind"] == "server" and r["state"] == "handler", r
    assert r["method"] == "GET" and r["path"] == "/delay?redacted", r
    assert r["status"] == "sleeping" and r["conn"] >= 1, r
    assert r["stream"] in (1, 3) and r["age_us"] >= r["state_age_us"] > 0, r
s1 = [r for r in reqs if r["endpoint"] == d1]
assert all(r["authority"] == p1 for r in s1), s1
ages = [r["age_us"] for r in reqs]
assert ages == sorted(ages, reverse=True), ages
EOF

# --- endpoints that answer badly: an error each, within the timeout -------
for m in slow garbage badjson huge bigclen; do
  python3 "$SRC/tests/support/fake_diag.py" "$m" >"$T/fake-$m.out" 2>&1 &
  PIDS+=("$!")
done
BAD=""
for m in slow garbage badjson huge bigclen; do
  poll grep -q '^port ' "$T/fake-$m.out" || fail "fake $m did not start"
  BAD="$BAD,127.0.0.1:$(cut -d' ' -f2 "$T/fake-$m.out")"
done
start=$(date +%s)
timeout 30 "$BIN/h2top" -e "127.0.0.1:$D1$BAD" --once --timeout 2s >"$T/bad"
rc=$?
[ $rc = 1 ] || fail "bad endpoints: exit $rc"
[ $(($(date +%s) - start)) -le 10 ] || fail "bad endpoints took too long"
for want in "ERROR: timed out after 2000ms waiting for a response" \
  "ERROR: not an HTTP/1.x response" "ERROR: bad JSON: " \
  "ERROR: response over 64 MB"; do
  grep -qF "$want" "$T/bad" || fail "no '$want': $(cat "$T/bad")"
done
[ "$(grep -c 'response over 64 MB' "$T/bad")" = 2 ] || fail "huge: $(cat "$T/bad")"
[ "$(grep -c handler "$T/bad")" = 2 ] || fail "the good endpoint's rows: $(cat "$T/bad")"

# bad usage
"$BIN/h2top" --once >/dev/null 2>&1
[ $? = 2 ] || fail "no --endpoints must be a usage error"
"$BIN/h2top" -e "nocolon" --once >/dev/null 2>&1
[ $? = 2 ] || fail "a bad endpoint must be a usage error"

# --- the screen, under tmux -----------------------------------------------
command -v tmux >/dev/null || { echo "ok (tmux missing: screen not tested)"; exit 0; }
tmux -L "$SESSION" -f /dev/null new-session -d -s "$SESSION" -x 180 -y 30 \
  "TERM=xterm-256color '$BIN/h2top' -e '$EPS,127.0.0.1:$DEAD' --refresh 200ms --token s3cret; echo \"h2top exited \$?\"; sleep 60"
screen() { tmux -L "$SESSION" capture-pane -p -t "$SESSION" >"$T/screen" 2>/dev/null; }
shows() { screen && grep -q -- "$1" "$T/screen"; }
lacks() { screen && ! grep -q -- "$1" "$T/screen"; }
poll shows "^h2top - 3 in flight, 3 shown, 2/3 endpoints up, sort: age" ||
  fail "screen: title"
shows "^ENDPOINT *ID *KIND *AGE *STATE *IN-STATE *METHOD *AUTHORITY+PATH *CONN/STRM *STATUS" ||
  fail "screen: header"
[ "$(grep -c "handler .* GET *127.0.0.1:$P1/delay?redacted *1/[13] *sleeping" "$T/screen")" = 2 ] ||
  fail "screen: s1 rows"
grep -q "^127.0.0.1:$D2 .*handler .*127.0.0.1:$P2/delay" "$T/screen" || fail "screen: s2 row"
grep -q "^127.0.0.1:$DEAD UNREACHABLE: connect: Connection refused" "$T/screen" ||
  fail "screen: dead endpoint not marked"

tmux -L "$SESSION" send-keys -t "$SESSION" s
poll shows "sort: state" || fail "s: sort by time in state"
tmux -L "$SESSION" send-keys -t "$SESSION" s
poll shows "sort: host" || fail "s: sort by host"
tmux -L "$SESSION" send-keys -t "$SESSION" s
poll shows "sort: age" || fail "s: back to age"

# filter down to s2's one request; it is then the selected one
tmux -L "$SESSION" send-keys -t "$SESSION" /
poll shows "^filter:" || fail "/: no prompt"
tmux -L "$SESSION" send-keys -t "$SESSION" -l ":$P2/"
tmux -L "$SESSION" send-keys -t "$SESSION" Enter
poll shows "3 in flight, 1 shown, .*filter: :$P2/" || fail "/: not filtered"
lacks "127.0.0.1:$P1/delay" || fail "/: s1 rows still shown"

# history of the selected request
tmux -L "$SESSION" send-keys -t "$SESSION" h
poll shows "^Request [0-9]* on 127.0.0.1:$D2" || fail "h: no history"
shows "handler *in handler" || fail "h: no steps"
tmux -L "$SESSION" send-keys -t "$SESSION" Escape
poll shows "^h2top - " || fail "Esc: history not closed"

# pause
tmux -L "$SESSION" send-keys -t "$SESSION" p
poll shows "PAUSED" || fail "p: not paused"
tmux -L "$SESSION" send-keys -t "$SESSION" p
poll lacks "PAUSED" || fail "p: not resumed"

# cancel it with a reason
tmux -L "$SESSION" send-keys -t "$SESSION" k
poll shows "^cancel: reason" || fail "k: no reason asked"
tmux -L "$SESSION" send-keys -t "$SESSION" -l "stuck in tmux"
tmux -L "$SESSION" send-keys -t "$SESSION" Enter
poll shows "canceled request [0-9]* on 127.0.0.1:$D2" || fail "k: no confirmation"
for _ in $(seq 300); do
  kill -0 "$C2" 2>/dev/null || break
  sleep 0.05
done
kill -0 "$C2" 2>/dev/null && fail "the canceled request's client still waits"
wait "$C2"
[ $? = 1 ] || fail "h2stat of the canceled request did not fail"
grep -q "stream reset" "$T/c2.out" || fail "h2stat: $(cat "$T/c2.out")"
canceled() {
  curl -s "http://127.0.0.1:$D2/debug/recent" >"$T/recent" &&
    grep -q '"cancel_reason":"stuck in tmux"' "$T/recent" &&
    grep -q '"error_name":"H2T_ERR_CANCELED"' "$T/recent"
}
poll canceled || fail "not in /debug/recent as canceled: $(cat "$T/recent")"
poll shows "2 in flight, 0 shown" || fail "the canceled request still shown"
kill -0 "$C1" 2>/dev/null || fail "s1's requests ended too"

tmux -L "$SESSION" send-keys -t "$SESSION" q
poll shows "^h2top exited 0" || fail "q: h2top did not quit"

# --- the benchmark mode: 4 endpoints of 2500 requests --------------------
for i in 1 2 3 4; do
  python3 "$SRC/tests/support/fake_diag.py" rows:2500 >"$T/rows$i.out" 2>&1 &
  PIDS+=("$!")
done
R=""
for i in 1 2 3 4; do
  poll grep -q '^port ' "$T/rows$i.out" || fail "fake rows did not start"
  R="$R${R:+,}127.0.0.1:$(cut -d' ' -f2 "$T/rows$i.out")"
done
timeout 60 "$BIN/h2top" -e "$R" --bench 5 </dev/null >"$T/bench" 2>&1 ||
  fail "--bench failed"
grep -q "^h2top bench: 4 endpoints, 10000 requests, 5 refreshes" "$T/bench" ||
  fail "--bench: $(cat "$T/bench")"
cat "$T/bench"
echo "ok"
