#!/bin/bash
# HAR and Chrome-trace export against a real peer (h2serve on loopback):
#  - h2stat --har over h2c and TLS validates against the HAR 1.2 schema
#    (har-validator from npm); the new connection's entry has connect (and
#    over TLS ssl) >= 0, the reused one's -1; a Cookie is redacted;
#  - the endpoint's /debug/recent?format=har validates too;
#  - h2stat --trace-json and ?format=chrome parse, with a process lane per
#    connection, X events of the phases nested in their request's, an
#    instant RST_STREAM for a timed-out request and an instant GOAWAY when
#    the server shuts down under a request.
# Args: SOURCE_DIR BINARY_DIR.  Exit 77 (skipped) without node/npm.
set -u
SRC=$1
BUILD=$2
BIN="$BUILD/bin"
. "$(dirname "$0")/support/lib.sh"
fail() {
  echo "FAIL: $*"
  for f in "$T"/*.err; do [ -s "$f" ] && { echo "--- $f"; cat "$f"; }; done
  exit 1
}

command -v node >/dev/null && command -v npm >/dev/null ||
  { echo "SKIP: node/npm not installed"; exit 77; }
command -v python3 >/dev/null || { echo "SKIP: no python3"; exit 77; }
# har-validator: installed by setup.sh from tests/node's lock file; the
# same here when ctest runs on a tree setup.sh did not build.
NODE_DIR="$BUILD/node"
if [ ! -d "$NODE_DIR/node_modules/har-validator" ]; then
  mkdir -p "$NODE_DIR" && cp "$SRC"/tests/node/package*.json "$NODE_DIR"/ &&
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund >/dev/null 2>&1) ||
    fail "npm ci har-validator (is the registry reachable?)"
fi
validate() { NODE_PATH="$NODE_DIR/node_modules" node "$SRC/tests/node/validate_har.js" "$@"; }

# The validator itself must be able to fail: a HAR without timings.
echo '{"log":{"version":"1.2","creator":{"name":"x","version":"1"},"entries":[{"startedDateTime":"2020-01-01T00:00:00.000Z","time":1,"request":{"method":"GET","url":"http://a/","httpVersion":"HTTP/2","cookies":[],"headers":[],"queryString":[],"headersSize":-1,"bodySize":0},"response":{"status":200,"statusText":"","httpVersion":"HTTP/2","cookies":[],"headers":[],"content":{"size":0,"mimeType":""},"redirectURL":"","headersSize":-1,"bodySize":0},"cache":{}}]}}' >"$T/bad.har"
validate "$T/bad.har" >/dev/null 2>&1 && fail "har-validator accepted a HAR without timings"

mkdir -p "$T/www"
echo hello >"$T/www/index.html"
make_cert || fail "openssl req"

start_serve() { # name, args...: sets PORT (and DPORT with --diag)
  local name=$1; shift
  "$BIN/h2serve" --port 0 --root "$T/www" "$@" >"$T/$name.out" 2>"$T/$name.err" &
  SPID=$!
  PIDS+=("$SPID")
  poll grep -q "serving" "$T/$name.out" || fail "$name did not start"
  PORT=$(sed -n 's/.*serving.*:\([0-9]*\) (.*/\1/p' "$T/$name.out" | head -1)
  DPORT=$(sed -n 's/.*diagnostics on http:\/\/127\.0\.0\.1:\([0-9]*\)\/.*/\1/p' \
    "$T/$name.out" | head -1)
}

# --- h2c: new then reused connection, a redacted cookie -----------------
start_serve h2c --h2c --diag 127.0.0.1:0
H2C=$PORT
D="http://127.0.0.1:$DPORT"
"$BIN/h2stat" -n 2 -H "Cookie: session=s3cret" --har "$T/h2c.har" \
  --trace-json "$T/h2c.json" "http://127.0.0.1:$H2C/index.html" \
  >/dev/null 2>"$T/h2stat.err" || fail "h2stat h2c"
validate "$T/h2c.har" >"$T/h2c.sum" 2>"$T/validate.err" || fail "h2c HAR invalid"
grep -q s3cret "$T/h2c.har" "$T/h2c.json" && fail "the cookie leaked into an export"
grep -q '"name":"cookie","value":"\[redacted\]"' "$T/h2c.har" ||
  fail "no redacted cookie header in the HAR"
# "conn connect ssl url": one connection, new then reused
[ "$(wc -l <"$T/h2c.sum")" -eq 2 ] || fail "want 2 entries: $(cat "$T/h2c.sum")"
read -r c1 k1 s1 _ < <(sed -n 1p "$T/h2c.sum")
read -r c2 k2 s2 _ < <(sed -n 2p "$T/h2c.sum")
[ "$c1" = "$c2" ] || fail "h2c: two connections ($c1, $c2) for -n 2"
[ "$k1" != -1 ] && [ "$s1" = -1 ] || fail "h2c first entry: connect $k1 ssl $s1"
[ "$k2" = -1 ] && [ "$s2" = -1 ] || fail "h2c reused entry: connect $k2 ssl $s2"

# --- TLS: ssl counted, and inside connect -------------------------------
start_serve tls --tls "$T/cert.pem" "$T/key.pem"
"$BIN/h2stat" -k -n 2 --har "$T/tls.har" "https://127.0.0.1:$PORT/index.html" \
  >/dev/null 2>"$T/h2stat.err" || fail "h2stat TLS"
validate "$T/tls.har" >"$T/tls.sum" 2>"$T/validate.err" || fail "TLS HAR invalid"
read -r c1 k1 s1 _ < <(sed -n 1p "$T/tls.sum")
read -r c2 k2 s2 _ < <(sed -n 2p "$T/tls.sum")
[ "$c1" = "$c2" ] || fail "TLS: two connections"
python3 -c "import sys; k,s=float(sys.argv[1]),float(sys.argv[2]); sys.exit(not (s>=0 and k>=s))" \
  "$k1" "$s1" || fail "TLS first entry: connect $k1 must hold ssl $s1"
[ "$k2" = -1 ] && [ "$s2" = -1 ] || fail "TLS reused entry: connect $k2 ssl $s2"

# --- a timed-out request: RST_STREAM(CANCEL) -------------------------------
"$BIN/h2stat" --timeout 300 --trace-json "$T/rst.json" \
  "http://127.0.0.1:$H2C/delay?ms=5000" >/dev/null 2>"$T/h2stat.err" &&
  fail "the timed-out request succeeded"
# two origins at once: two connections, two lanes
"$BIN/h2stat" -p 2 --trace-json "$T/lanes.json" \
  "http://127.0.0.1:$H2C/index.html" "http://localhost:$H2C/index.html" \
  >/dev/null 2>"$T/h2stat.err" || fail "h2stat two origins"

# --- the endpoint: the server's view of the same requests -----------------
curl -sf "$D/debug/recent?format=har" -o "$T/recent.har" || fail "GET ?format=har"
validate "$T/recent.har" >"$T/recent.sum" 2>"$T/validate.err" || fail "endpoint HAR invalid"
[ "$(wc -l <"$T/recent.sum")" -ge 6 ] || fail "endpoint HAR: $(cat "$T/recent.sum")"
curl -sf "$D/debug/recent?format=chrome" -o "$T/recent.json" || fail "GET ?format=chrome"
code=$(curl -s -o /dev/null -w '%{http_code}' "$D/debug/recent?format=xml")
[ "$code" = 400 ] || fail "?format=xml gave $code"

# --- GOAWAY: the server shuts down under a request --------------------------
start_serve goaway --h2c
"$BIN/h2stat" --trace-json "$T/goaway.json" \
  "http://127.0.0.1:$PORT/delay?ms=1500" >/dev/null 2>"$T/h2stat.err" &
CPID=$!
PIDS+=("$CPID")
sleep 0.5
kill -TERM "$SPID"
wait "$CPID" || fail "the request under a graceful shutdown failed"

# --- the Chrome traces -------------------------------------------------------
python3 - "$T" <<'EOF' || fail "Chrome trace checks"
import json, sys
T = sys.argv[1]

def load(name):
    with open(f"{T}/{name}") as f:
        d = json.load(f)
    ev = d["traceEvents"]
    assert isinstance(ev, list) and ev, name
    for e in ev:
        assert e["ph"] in ("X", "i", "M"), e
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int), e
        if e["ph"] != "M":
            assert isinstance(e["ts"], int), e
    return ev

def check_nesting(name, ev):
    reqs = [e for e in ev if e["ph"] == "X" and e["cat"] == "request"]
    phases = [e for e in ev if e["ph"] == "X" and e["cat"] == "phase"]
    assert reqs and phases, name
    by_id = {e["args"]["req_id"]: e for e in reqs}
    for p in phases:
        r = by_id[p["args"]["req_id"]]
        assert (p["pid"], p["tid"]) == (r["pid"], r["tid"]), (name, p, r)
        assert r["ts"] <= p["ts"] and p["ts"] + p["dur"] <= r["ts"] + r["dur"], (name, p, r)
    named = {e["pid"] for e in ev if e["ph"] == "M" and e["name"] == "process_name"}
    assert {e["pid"] for e in reqs} <= named, (name, "a lane without a name")
    return reqs, phases

# h2c: one connection, two requests on two streams of its lane
reqs, phases = check_nesting("h2c", load("h2c.json"))
assert len(reqs) == 2 and len({r["pid"] for r in reqs}) == 1, reqs
assert len({r["tid"] for r in reqs}) == 2, reqs
names = [p["name"] for p in phases if p["args"]["req_id"] == reqs[0]["args"]["req_id"]]
for want in ("connecting", "sending", "wait_response", "receiving"):
    assert want in names, (want, names)
names2 = [p["name"] for p in phases if p["args"]["req_id"] == reqs[1]["args"]["req_id"]]
assert "connecting" not in names2, names2  # reused

# two origins: two connections, two lanes
reqs, _ = check_nesting("lanes", load("lanes.json"))
assert len({r["pid"] for r in reqs}) == 2, reqs

# a timeout resets its stream: an instant on the stream's lane
ev = load("rst.json")
reqs, _ = check_nesting("rst", ev)
rst = [e for e in ev if e["ph"] == "i" and e["name"] == "RST_STREAM"]
assert len(rst) == 1 and rst[0]["s"] == "t", rst
assert rst[0]["args"]["error_code"] == "CANCEL", rst
assert (rst[0]["pid"], rst[0]["tid"]) == (reqs[0]["pid"], reqs[0]["tid"]), rst

# a graceful shutdown: GOAWAY instant, process-wide on the connection's lane
ev = load("goaway.json")
reqs, _ = check_nesting("goaway", ev)
ga = [e for e in ev if e["ph"] == "i" and e["name"] == "GOAWAY"]
assert len(ga) == 1 and ga[0]["s"] == "p" and ga[0]["pid"] == reqs[0]["pid"], ga
assert ga[0]["args"]["by_peer"] is True, ga
assert reqs[0]["ts"] <= ga[0]["ts"] <= reqs[0]["ts"] + reqs[0]["dur"], (ga, reqs)

# the endpoint: served requests, the reset one among them
ev = load("recent.json")
reqs, _ = check_nesting("recent", ev)
assert all(r["args"]["kind"] == "server" for r in reqs), reqs
rst = [e for e in ev if e["ph"] == "i" and e["name"] == "RST_STREAM"]
assert rst and rst[0]["args"]["error_code"] == "CANCEL", rst
EOF
echo "ok: HAR (h2c, TLS, endpoint) valid; Chrome traces have lanes, phases, RST and GOAWAY"
