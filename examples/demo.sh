#!/usr/bin/env bash
# The demo: h2serve on loopback (the embedded default), traced by h2stat.
# No outside network.  Usage: examples/demo.sh BUILD_DIR
set -euo pipefail
bin="$(cd "${1:-build}" && pwd)/bin"
work=$(mktemp -d /tmp/h2trace-demo.XXXXXX)
printf 'hello from h2serve\n' > "$work/index.html"

"$bin/h2serve" --h2c --address 127.0.0.1 --port 0 --root "$work" \
  --diag 127.0.0.1:0 > "$work/h2serve.log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

url=""
for _ in $(seq 100); do
  url=$(sed -nE 's|.*serving .* on (http://127\.0\.0\.1:[0-9]+).*|\1|p' "$work/h2serve.log" | head -1)
  [ -n "$url" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/h2serve.log"; exit 1; }
  sleep 0.05
done
[ -n "$url" ] || { echo "demo: h2serve did not start" >&2; cat "$work/h2serve.log"; exit 1; }
sed 's/^/  | /' "$work/h2serve.log"
diag=$(grep -oE 'diagnostics on http://[0-9.:]+' "$work/h2serve.log" | head -1 | sed 's/diagnostics on //' || true)

echo; echo "== h2stat -n 2 $url/  (the second request reuses the connection)"
"$bin/h2stat" -n 2 "$url/"
echo; echo "== h2stat -p 3 $url/delay?ms=300  (three streams multiplexed on one connection)"
"$bin/h2stat" -p 3 "$url/delay?ms=300" | grep -E '^(conn|HTTP)' || true
if [ -n "$diag" ]; then
  echo; echo "== in flight while a slow request runs: curl $diag/debug/requests"
  "$bin/h2stat" "$url/delay?ms=1500" > /dev/null &
  sp=$!
  sleep 0.5
  curl -s "$diag/debug/requests"; echo
  wait "$sp"
  echo "(diagnostics endpoint: $diag/debug/requests, /debug/connections, /metrics)"
fi
