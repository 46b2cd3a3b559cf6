#!/bin/bash
# doc/diag.md cannot drift from the endpoint: start h2serve --diag with a
# /delay request in flight, fetch the routes doc/diag.md marks "checked",
# and compare each live answer's keys (nested, arrays merged) with the
# example under its "<!-- example: ROUTE -->" marker; every key of a live
# /debug/requests object must also be named in the schema tables.
# Args: SOURCE_DIR BINARY_DIR.
set -u
DOC="$1/doc/diag.md"
BIN="$2/bin/h2serve"
# stops the client, then h2serve (no request left to drain)
. "$(dirname "$0")/support/lib.sh"
fail() {
  echo "FAIL: $*"
  exit 1
}

mkdir -p "$T/www"
echo hello >"$T/www/index.html"
"$BIN" --h2c --port 0 --root "$T/www" --diag 127.0.0.1:0 \
  --diag-token tok >"$T/out" 2>"$T/err" &
PIDS+=("$!")
poll grep -q "serving" "$T/out" || fail "h2serve did not start: $(cat "$T/err")"
PORT=$(sed -n 's/.*serving.*:\([0-9]*\) (.*/\1/p' "$T/out" | head -1)
DPORT=$(sed -n 's/.*diagnostics on http:\/\/127\.0\.0\.1:\([0-9]*\)\/.*/\1/p' \
  "$T/out" | head -1)
[ -n "$PORT" ] && [ -n "$DPORT" ] || fail "ports not found"
D="http://127.0.0.1:$DPORT"

curl -s --http2-prior-knowledge -o /dev/null \
  "http://127.0.0.1:$PORT/delay?ms=60000" 2>/dev/null &
PIDS+=("$!")
listed() {
  curl -s "$D/debug/requests" >"$T/requests" &&
    grep -q '"state":"handler"' "$T/requests"
}
poll listed || fail "the /delay request never showed: $(cat "$T/requests")"
ID=$(grep -o '"id":[0-9]*' "$T/requests" | head -1 | cut -d: -f2)
curl -s "$D/debug/requests/$ID" >"$T/one" || fail "GET /debug/requests/$ID"
curl -s "$D/debug/connections" >"$T/connections" || fail "GET /debug/connections"

python3 - "$DOC" "$T" <<'PY' || exit 1
import json, re, sys
doc = open(sys.argv[1]).read()
tmp = sys.argv[2]

def example(route):
    m = re.search(r"<!-- example: " + re.escape(route) + r" -->\s*```json\n(.*?)```",
                  doc, re.S)
    if not m:
        sys.exit("FAIL: doc/diag.md has no example for " + route)
    return json.loads(m.group(1))

def keys(v, path=""):
    out = set()
    if isinstance(v, dict):
        for k, x in v.items():
            out.add(path + "." + k)
            out |= keys(x, path + "." + k)
    elif isinstance(v, list):
        for x in v:
            out |= keys(x, path + "[]")
    return out

bad = False
for route, f in [("/debug/requests", "requests"), ("/debug/requests/{id}", "one"),
                 ("/debug/connections", "connections")]:
    live = json.load(open(tmp + "/" + f))
    d, l = keys(example(route)), keys(live)
    if d != l:
        bad = True
        print("FAIL: %s: keys in doc/diag.md only: %s; live only: %s"
              % (route, sorted(d - l), sorted(l - d)))

# the schema of /debug/requests names every live key
sec = doc[doc.index("### GET /debug/requests\n"):doc.index("### GET /debug/requests/{id}")]
named = set(re.findall(r"^\| `([a-z_]+)`(?:, `([a-z_]+)`)?", sec, re.M))
named = {n for pair in named for n in pair if n}
live = json.load(open(tmp + "/requests"))
for k in sorted({p.rsplit(".", 1)[1] for p in keys(live)} - named):
    bad = True
    print("FAIL: /debug/requests key %s is not in the schema of doc/diag.md" % k)
sys.exit(1 if bad else 0)
PY
echo "doc/diag.md examples match the live endpoint"
