#!/bin/bash
# One W3C trace followed through a chain: h2stat -> h2serve A /proxy?to=B ->
# h2serve B /delay, both with --diag.  While in flight, /debug/requests?
# trace_id=X on A and B shows the request, B's parent_span_id being A's
# client span; afterwards /debug/recent, the HAR export and h2stat's event
# lines carry the same ids, and the SIGUSR1 dump shows them.
# Args: SOURCE_DIR BINARY_DIR.  Stops only the processes it started, by PID.
set -u
BIN="$2/bin"
T=$(mktemp -d /tmp/h2t-tpchain-XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$T"/*.log; do echo "== $f"; tail -20 "$f"; done; exit 1; }
command -v python3 >/dev/null || { echo "SKIP: no python3"; exit 77; }

start() { # name: sets PORT_<name>, DIAG_<name>, PID_<name>
  "$BIN/h2serve" --h2c --port 0 --root "$T" --diag 127.0.0.1:0 >"$T/$1.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 200); do grep -qs "serving" "$T/$1.log" && break; sleep 0.05; done
  eval "PID_$1=$pid"
  eval "PORT_$1=$(sed -n 's/.*serving.*:\([0-9]*\) (.*/\1/p' "$T/$1.log")"
  eval "DIAG_$1=$(sed -n 's/.*diagnostics on http:\/\/127.0.0.1:\([0-9]*\)\/.*/\1/p' "$T/$1.log")"
}
start A
start B
[ -n "$PORT_A" ] && [ -n "$PORT_B" ] && [ -n "$DIAG_A" ] && [ -n "$DIAG_B" ] || fail "servers did not start"

"$BIN/h2stat" --json "http://127.0.0.1:$PORT_A/proxy?to=http://127.0.0.1:$PORT_B/delay?ms=2000" \
  >"$T/h2stat.out" 2>"$T/h2stat.log" &
H2STAT=$!
PIDS+=("$H2STAT")

get() { curl -s --max-time 5 "$1"; }

# A's served request, once it is in flight: its trace id is X
X=""
for _ in $(seq 100); do
  X=$(get "http://127.0.0.1:$DIAG_A/debug/requests" | python3 -c '
import json, sys
d = json.load(sys.stdin)
for r in d["requests"]:
    if r["kind"] == "server" and r["path"].startswith("/proxy"):
        print(r["trace_id"]); break' 2>/dev/null)
  [ -n "$X" ] && break
  sleep 0.05
done
[ -n "$X" ] || fail "no /proxy request in flight on A"
sleep 0.2 # B has its request by now

get "http://127.0.0.1:$DIAG_A/debug/requests?trace_id=$X" >"$T/a.json"
get "http://127.0.0.1:$DIAG_B/debug/requests?trace_id=$X" >"$T/b.json"
get "http://127.0.0.1:$DIAG_B/debug/requests?trace_id=00000000000000000000000000000001" >"$T/none.json"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$DIAG_A/debug/requests?trace_id=XYZ")
[ "$code" = 400 ] || fail "bad trace_id gave $code"
kill -USR1 "$PID_A"

python3 - "$T" "$X" <<'PY' || fail "in-flight ids"
import json, sys
t, x = sys.argv[1], sys.argv[2]
a = json.load(open(t + "/a.json"))["requests"]
b = json.load(open(t + "/b.json"))["requests"]
none = json.load(open(t + "/none.json"))
assert none["count"] == 0 and none["requests"] == [], none
srv_a = [r for r in a if r["kind"] == "server"]
cli_a = [r for r in a if r["kind"] == "client"]
assert len(srv_a) == 1 and len(cli_a) == 1, a
assert len(b) == 1 and b[0]["kind"] == "server", b
srv_a, cli_a, srv_b = srv_a[0], cli_a[0], b[0]
for r in (srv_a, cli_a, srv_b):
    assert r["trace_id"] == x, r
assert srv_b["path"].startswith("/delay"), srv_b
# A's client request is a child of A's served request; B's served request
# is a child of A's client request
assert cli_a["parent_span_id"] == srv_a["span_id"], (cli_a, srv_a)
assert srv_b["parent_span_id"] == cli_a["span_id"], (srv_b, cli_a)
assert len({srv_a["span_id"], cli_a["span_id"], srv_b["span_id"]}) == 3
open(t + "/ids", "w").write(" ".join([srv_a["parent_span_id"], srv_a["span_id"],
                                      cli_a["span_id"], srv_b["span_id"]]))
print("in flight: trace", x, "on A and B; B's parent", srv_b["parent_span_id"],
      "= A's client span")
PY

wait "$H2STAT" || fail "h2stat failed"
read -r H2STAT_SPAN SRV_A CLI_A SRV_B <"$T/ids"

# h2stat's event lines carry X and the span A saw as its parent
python3 - "$T" "$X" "$H2STAT_SPAN" <<'PY' || fail "h2stat events"
import json, sys
t, x, span = sys.argv[1:4]
lines = [json.loads(l) for l in open(t + "/h2stat.out") if l.startswith("{")]
assert lines, "no event lines"
for e in lines:
    if e.get("req_id"):
        assert e["trace_id"] == x and e["span_id"] == span, e
        assert "parent_span_id" not in e, e
done = [e for e in lines if e["event"] == "done"]
assert done and done[0]["status"] == 200, done
PY

# After: /debug/recent (filtered) and the HAR export of both
python3 - "$T" "$X" "$SRV_A" "$CLI_A" "$SRV_B" "$H2STAT_SPAN" \
  "$(get "http://127.0.0.1:$DIAG_A/debug/recent?trace_id=$X")" \
  "$(get "http://127.0.0.1:$DIAG_B/debug/recent?trace_id=$X")" \
  "$(get "http://127.0.0.1:$DIAG_A/debug/recent?format=har")" \
  "$(get "http://127.0.0.1:$DIAG_B/debug/recent?format=chrome")" <<'PY' || fail "recent/exports"
import json, sys
t, x, srv_a, cli_a, srv_b, h2stat = sys.argv[1:7]
ra, rb = json.loads(sys.argv[7])["recent"], json.loads(sys.argv[8])["recent"]
har, chrome = json.loads(sys.argv[9]), json.loads(sys.argv[10])
spans_a = {r["span_id"]: r for r in ra}
assert set(spans_a) == {srv_a, cli_a}, ra
assert spans_a[srv_a]["parent_span_id"] == h2stat and spans_a[srv_a]["http_status"] == 200
assert len(rb) == 1 and rb[0]["span_id"] == srv_b and rb[0]["parent_span_id"] == cli_a, rb
ents = {e["_span_id"]: e for e in har["log"]["entries"] if e.get("_trace_id") == x}
assert set(ents) == {srv_a, cli_a}, har["log"]["entries"]
assert ents[cli_a]["_parent_span_id"] == srv_a and ents[srv_a]["_parent_span_id"] == h2stat
reqs = [e for e in chrome["traceEvents"] if e.get("cat") == "request"]
assert any(e["args"].get("trace_id") == x and e["args"]["span_id"] == srv_b and
           e["args"]["parent_span_id"] == cli_a for e in reqs), reqs
print("after: recent, HAR and Chrome exports carry", x)
PY

# The SIGUSR1 dump (A's stderr) showed both of A's requests with the ids
grep -q "/proxy.* trace $X span $SRV_A parent $H2STAT_SPAN$" "$T/A.log" || fail "dump: served"
grep -q "/delay.* trace $X span $CLI_A parent $SRV_A$" "$T/A.log" || fail "dump: client"
echo "1 passed, 0 failed"
