#!/usr/bin/env bash
# h2bench client vs h2load against the same nghttpd, h2c and TLS, on loopback.
# Usage: examples/h2bench/compare.sh BUILD_DIR [N] [RUNS]
#   - req/s: RUNS alternating runs of each (default 3), median reported;
#   - instructions per request (callgrind, if installed): the measured part of
#     h2bench with --trace none / all, and h2load's event loop, N/5 requests.
# Starts its own nghttpd on free ports and stops exactly those.
set -euo pipefail
bin="$(cd "${1:-build}" && pwd)/bin"
n=${2:-100000}
runs=${3:-3}
work=$(mktemp -d /tmp/h2bench-compare.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

mkdir "$work/www"
printf abcdef > "$work/www/6"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$work/key.pem" -out "$work/cert.pem" -days 1 -subj /CN=localhost \
  -addext subjectAltName=IP:127.0.0.1 2>/dev/null

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
start() { # tls port
  if [ "$1" = 1 ]; then
    nghttpd --address=127.0.0.1 --htdocs="$work/www" "$2" "$work/key.pem" "$work/cert.pem" >/dev/null 2>&1 &
  else
    nghttpd --no-tls --address=127.0.0.1 --htdocs="$work/www" "$2" >/dev/null 2>&1 &
  fi
  pids+=($!)
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "compare: nghttpd did not start on $2" >&2
  exit 1
}
median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
rps() { sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p'; }

h2c_port=$(free_port); start 0 "$h2c_port"
tls_port=$(free_port); start 1 "$tls_port"

for mode in h2c tls; do
  if [ $mode = h2c ]; then url="http://127.0.0.1:$h2c_port/6"; extra=();
  else url="https://127.0.0.1:$tls_port/6"; extra=(--cacert "$work/cert.pem"); fi
  : > "$work/a"; : > "$work/b"
  for _ in $(seq "$runs"); do
    "$bin/h2bench" client -n "$n" -c 1 -m 10 "${extra[@]}" "$url" | rps >> "$work/a"
    h2load -n "$n" -c 1 -m 10 -t 1 "$url" | rps >> "$work/b"
  done
  echo "$mode: h2bench $(median < "$work/a") req/s, h2load $(median < "$work/b") req/s" \
       "(median of $runs, -n $n -c 1 -m 10)"
  if command -v valgrind >/dev/null; then
    cn=$((n / 5))
    for t in none all; do
      valgrind --tool=callgrind --toggle-collect='measured_run*' \
        --callgrind-out-file="$work/cg" "$bin/h2bench" client -n "$cn" -c 1 -m 10 \
        --trace $t "${extra[@]}" "$url" >/dev/null 2>"$work/vg"
      ir=$(sed -n 's/.*Collected : //p' "$work/vg")
      echo "$mode: h2bench --trace $t: $((ir / cn)) instructions/request"
    done
    valgrind --tool=callgrind --toggle-collect=ev_run --callgrind-out-file="$work/cg" \
      h2load -n "$cn" -c 1 -m 10 -t 1 "$url" >/dev/null 2>"$work/vg"
    ir=$(sed -n 's/.*Collected : //p' "$work/vg")
    echo "$mode: h2load (its event loop): $((ir / cn)) instructions/request"
  fi
done
