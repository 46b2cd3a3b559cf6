#!/bin/bash
# /metrics as a fleet's Prometheus sees it: two h2serve --diag processes
# under h2bench load, scraped every second by Debian's prometheus on
# loopback; p99 by authority read back through its HTTP API for both
# processes' authorities, and every query of doc/prometheus.md accepted.
# Skips (77) only when prometheus is not installed (setup.sh installs it).
# Args: SOURCE_DIR BINARY_DIR.
set -u
SRC="$1"
BIN="$2/bin"
command -v prometheus >/dev/null && command -v python3 >/dev/null || {
  echo "SKIP: no prometheus (Debian package prometheus) or python3"
  exit 77
}
. "$(dirname "$0")/support/lib.sh"
fail() {
  echo "FAIL: $*"
  for f in "$T"/*.out "$T"/*.err "$T/prom.log"; do
    [ -s "$f" ] && { echo "--- $f"; tail -20 "$f"; }
  done
  exit 1
}
# poll SECONDS CMD...: until CMD succeeds, at most SECONDS
poll() {
  local end=$((SECONDS + $1))
  shift
  while [ $SECONDS -lt $end ]; do
    "$@" && return 0
    sleep 0.2
  done
  return 1
}
mkdir -p "$T/www" "$T/data"
head -c 2000 /dev/zero >"$T/www/index.html"

PORTS=() DPORTS=()
for i in 1 2; do
  "$BIN/h2serve" --h2c --port 0 --root "$T/www" --diag 127.0.0.1:0 \
    >"$T/s$i.out" 2>"$T/s$i.err" &
  PIDS+=($!)
  poll 15 grep -q "serving" "$T/s$i.out" || fail "h2serve $i did not start"
  PORTS+=("$(sed -n 's/.*serving.*:\([0-9]*\) (.*/\1/p' "$T/s$i.out" | head -1)")
  DPORTS+=("$(sed -n 's/.*diagnostics on http:\/\/127\.0\.0\.1:\([0-9]*\)\/.*/\1/p' \
    "$T/s$i.out" | head -1)")
done

# load on both for as long as the test runs (bounded: 90 rounds)
(
  for _ in $(seq 90); do
    for p in "${PORTS[@]}"; do
      "$BIN/h2bench" client -n 300 -c 2 -m 4 "http://127.0.0.1:$p/index.html" \
        >/dev/null 2>&1
    done
    sleep 0.3
  done
) &
PIDS+=($!)

PP=$(free_port)
cat >"$T/prom.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: h2trace
    metrics_path: /metrics
    static_configs:
      - targets: ['127.0.0.1:${DPORTS[0]}', '127.0.0.1:${DPORTS[1]}']
EOF
prometheus --config.file="$T/prom.yml" --storage.tsdb.path="$T/data" \
  --web.listen-address="127.0.0.1:$PP" >"$T/prom.log" 2>&1 &
PIDS+=($!)
API="http://127.0.0.1:$PP/api/v1/query"

# query PROMQL: the JSON answer in $T/answer; fails unless status success
query() {
  curl -s -m 5 -G --data-urlencode "query=$1" "$API" >"$T/answer" &&
    python3 -c 'import json,sys; sys.exit(json.load(open(sys.argv[1]))["status"] != "success")' \
      "$T/answer"
}

both_up() {
  query 'sum(up{job="h2trace"})' &&
    python3 -c 'import json,sys
r = json.load(open(sys.argv[1]))["data"]["result"]
sys.exit(not r or float(r[0]["value"][1]) != 2)' "$T/answer"
}
poll 60 both_up || fail "prometheus did not scrape both: $(cat "$T/answer" 2>/dev/null)"

# p99 by authority: a finite, positive value under 30 s for each process
Q='histogram_quantile(0.99, sum by (le, authority) (rate(h2t_request_duration_seconds_bucket[1m])))'
p99_both() {
  query "$Q" &&
    python3 -c 'import json,math,sys
r = json.load(open(sys.argv[1]))["data"]["result"]
got = {x["metric"].get("authority"): float(x["value"][1]) for x in r}
want = ["127.0.0.1:" + p for p in sys.argv[2:]]
sys.exit(not all(a in got and math.isfinite(got[a]) and 0 < got[a] < 30
                 for a in want))' "$T/answer" "${PORTS[@]}"
}
poll 60 p99_both || fail "no p99 for both authorities: $(cat "$T/answer")"
echo "p99 by authority: $(cat "$T/answer")"

# every query of the doc parses and runs
python3 - "$SRC/doc/prometheus.md" >"$T/queries" <<'EOF' || fail "doc not read"
import re, sys
for q in re.findall(r"```promql\n(.*?)\n```", open(sys.argv[1]).read(), re.S):
    print(" ".join(q.split()))
EOF
[ "$(wc -l <"$T/queries")" -ge 8 ] || fail "too few queries in doc/prometheus.md"
while IFS= read -r q; do
  query "$q" || fail "doc query refused: $q: $(cat "$T/answer")"
done <"$T/queries"
# the state histogram has data
query 'sum(rate(h2t_request_state_seconds_count{kind="server",state="handler"}[1m]))' &&
  python3 -c 'import json,sys
r = json.load(open(sys.argv[1]))["data"]["result"]
sys.exit(not r or float(r[0]["value"][1]) <= 0)' "$T/answer" ||
  fail "no handler-state rate: $(cat "$T/answer")"
echo "ok"
