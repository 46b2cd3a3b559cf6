#!/usr/bin/env bash
# Instructions per served request of h2serve, in-flight table off and on
# (--diag turns it on, with /metrics), measured with callgrind as the
# difference between h2load -n N and -n 2N against one h2serve each, so that
# start-up and shut-down cancel out.
# Usage: examples/h2bench/served_cost.sh BUILD_DIR [N]   (default N 20000)
set -euo pipefail
bin="$(cd "${1:-build}" && pwd)/bin"
n=${2:-20000}
work=$(mktemp -d /tmp/served-cost.XXXXXX)
pid=
cleanup() {
  [ -n "$pid" ] && { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; }
  rm -rf "$work"
}
trap cleanup EXIT
printf abcdef >"$work/6"

run() { # requests, extra h2serve args...
  local reqs=$1; shift
  : >"$work/out"
  valgrind --tool=callgrind --callgrind-out-file="$work/cg" \
    "$bin/h2serve" --h2c --port 0 --root "$work" "$@" \
    >"$work/out" 2>"$work/vg" &
  pid=$!
  local port=
  for _ in $(seq 600); do
    port=$(sed -n 's/.*serving.*:\([0-9]*\) (.*/\1/p' "$work/out" | head -1)
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { echo "served_cost: h2serve did not start" >&2; exit 1; }
  h2load -n "$reqs" -c 1 -m 10 -t 1 "http://127.0.0.1:$port/6" >"$work/h2load"
  grep -q "succeeded, 0 failed" "$work/h2load" ||
    grep -q "$reqs succeeded" "$work/h2load" ||
    { echo "served_cost: h2load failed" >&2; cat "$work/h2load" >&2; exit 1; }
  kill -INT "$pid"
  wait "$pid" || true
  pid=
  sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$work/cg"
}

for mode in off on; do
  args=()
  [ $mode = on ] && args=(--diag 127.0.0.1:0)
  a=$(run "$n" "${args[@]}")
  b=$(run $((2 * n)) "${args[@]}")
  echo "table $mode: $(( (b - a) / n )) instructions per served request" \
       "(callgrind, h2load -n $n vs -n $((2 * n)), -c 1 -m 10)"
done
