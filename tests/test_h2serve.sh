#!/bin/bash
# h2serve CLI: argument errors, static files (and ../ traversal), /echo,
# /delay, /bytes, h2c and TLS, each writer mode, load shedding, SIGTERM.
# Args: SOURCE_DIR BINARY_DIR.  Stops only the processes it started, by PID.
set -u
BIN="$2/bin/h2serve"
T=$(mktemp -d /tmp/h2serve-test-XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; [ -f "$T/log" ] && tail -30 "$T/log"; exit 1; }

# --- CLI errors: one line + usage, exit 2 --------------------------------
"$BIN" --help | grep -q "^usage: h2serve" || fail "--help"
"$BIN" --version | grep -q "^h2serve [0-9]" || fail "--version"
expect2() {
  "$BIN" "$@" >"$T/out" 2>&1
  rc=$?
  [ $rc -eq 2 ] || fail "exit $rc for: $*"
  head -1 "$T/out" | grep -q "^h2serve: " || fail "no error line for: $*"
  grep -q "^usage:" "$T/out" || fail "no usage for: $*"
}
expect2
expect2 --h2c
expect2 --port 0
expect2 --h2c --port abc
expect2 --h2c --port 70000
expect2 --h2c --port 0 --writer fast
expect2 --h2c --tls a b --port 0
expect2 --h2c --port 0 --bogus
expect2 --h2c --port 0 --max-streams -3
expect2 --h2c --port 0 --root /nonexistent-dir
expect2 --tls onlycert

mkdir -p "$T/www/sub"
printf 'hello\n' >"$T/www/index.html"
printf 'abcdef' >"$T/www/6"
printf 'inner' >"$T/www/sub/f.txt"
head -c 3000000 /dev/urandom >"$T/www/big"
printf 'secret' >"$T/secret"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$T/key.pem" -out "$T/cert.pem" -days 2 -subj /CN=localhost \
  >/dev/null 2>&1 || fail "openssl"

# start ARGS... : sets PID and PORT
start() {
  # A fresh file: the child truncates its redirect only after fork, so a
  # reused log could still show the previous server's "serving" line.
  rm -f "$T/log"
  "$BIN" "$@" --port 0 --root "$T/www" >"$T/log" 2>&1 &
  PID=$!
  PIDS+=("$PID")
  for _ in $(seq 100); do
    grep -qs "serving" "$T/log" && break
    sleep 0.05
  done
  PORT=$(sed -n 's/.*:\([0-9]*\) (.*/\1/p' "$T/log" | head -1)
  [ -n "$PORT" ] && [ "$PORT" -gt 0 ] || fail "no port in: $(cat "$T/log")"
}
stop() {
  kill -TERM "$PID"
  for _ in $(seq 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$PID" 2>/dev/null && fail "did not stop on SIGTERM"
  wait "$PID"
  rc=$?
  [ $rc -eq 0 ] || fail "exit $rc after SIGTERM"
}

for mode in reused spawn inline; do
  for tls in 0 1; do
    if [ $tls = 1 ]; then
      start --tls "$T/cert.pem" "$T/key.pem" --writer $mode
      U="https://127.0.0.1:$PORT"; C="curl -sS -k --http2 --max-time 20"
      grep -q "https://127.0.0.1:$PORT (tls, writer $mode)" "$T/log" || fail "banner: $(cat "$T/log")"
      # ALPN offered without h2: refused in the handshake (no_application_protocol)
      curl -sS -k --http1.1 --max-time 5 "$U/6" >/dev/null 2>"$T/alpn" \
        && fail "$mode: an http/1.1-only client was served"
      grep -qi "no application protocol\|alert" "$T/alpn" || fail "$mode: ALPN refusal: $(cat "$T/alpn")"
    else
      start --h2c --writer $mode
      U="http://127.0.0.1:$PORT"; C="curl -sS --http2-prior-knowledge --max-time 20"
      grep -q "h2serve: serving $T/www on http://127.0.0.1:$PORT (h2c, writer $mode)" "$T/log" \
        || fail "banner: $(cat "$T/log")"
    fi
    [ "$($C "$U/")" = "hello" ] || fail "$mode/$tls index"
    [ "$($C -w '%{http_version}' -o /dev/null "$U/6")" = "2" ] || fail "$mode/$tls not h2"
    [ "$($C "$U/sub/f.txt")" = "inner" ] || fail "$mode/$tls subdir"
    $C "$U/big" | cmp -s - "$T/www/big" || fail "$mode/$tls big file"
    [ "$($C -o /dev/null -w '%{http_code}' "$U/missing")" = 404 ] || fail "404"
    [ "$($C --path-as-is -o /dev/null -w '%{http_code}' "$U/../secret")" = 400 ] || fail "../"
    [ "$($C -o /dev/null -w '%{http_code}' "$U/%2e%2e/secret")" = 400 ] || fail "%2e%2e"
    [ "$($C -o /dev/null -w '%{http_code}' "$U/sub/..%2f..%2fsecret")" = 400 ] || fail "..%2f"
    $C --data-binary @"$T/www/big" "$U/echo" | cmp -s - "$T/www/big" || fail "$mode/$tls echo"
    [ "$($C "$U/bytes?n=5000000" | wc -c)" = 5000000 ] || fail "$mode/$tls bytes"
    t0=$(date +%s%N)
    out=$(h2load -n 10 -c 1 -m 10 "$U/delay?ms=300" 2>&1)
    t1=$(date +%s%N)
    echo "$out" | grep -q "10 succeeded, 0 failed" || fail "$mode/$tls delay: $out"
    [ $(( (t1 - t0) / 1000000 )) -lt 2500 ] || fail "delays were serialized"
    out=$(h2load -n 2000 -c 4 -m 10 "$U/6" 2>&1)
    echo "$out" | grep -q "2000 succeeded, 0 failed, 0 errored" || fail "$mode/$tls h2load: $out"
    nghttp -n -s "$U/6" >/dev/null 2>&1 || fail "$mode/$tls nghttp"
    stop
  done
done

# --- IPv6, when the machine has it -----------------------------------------
if ip -6 addr show lo 2>/dev/null | grep -q "::1"; then
  start --h2c --address ::1
  grep -q "http://\[::1\]:$PORT" "$T/log" || fail "v6 banner: $(cat "$T/log")"
  [ "$(curl -sS -g --http2-prior-knowledge "http://[::1]:$PORT/6")" = abcdef ] || fail "IPv6"
  stop
fi

# --- load shedding ---------------------------------------------------------
start --h2c --shed-inflight 2
out=$(nghttp -v -m 6 "http://127.0.0.1:$PORT/delay?ms=300" 2>&1)
echo "$out" | grep -q "REFUSED_STREAM" || fail "no REFUSED_STREAM: $out"
stop
start --h2c --shed-inflight 2 --shed-503
out=$(h2load -n 6 -c 1 -m 6 "http://127.0.0.1:$PORT/delay?ms=300" 2>&1)
echo "$out" | grep -q "status codes: 2 2xx, 0 3xx, 0 4xx, 4 5xx" || fail "503: $out"
stop
# every option with a value takes it, not the next word as an option
start --h2c --body-server-budget 1000000
stop
start --h2c --max-conns 1
# a slot held by a connection without a request is given to the newcomer
exec 3<>/dev/tcp/127.0.0.1/$PORT
sleep 0.2
[ "$(curl -sS --http2-prior-knowledge --max-time 5 "http://127.0.0.1:$PORT/6")" = abcdef ] \
  || fail "an empty connection kept the only slot"
exec 3>&-
# one with a request in progress keeps it
curl -sS --http2-prior-knowledge --max-time 6 "http://127.0.0.1:$PORT/delay?ms=3000" \
  >/dev/null 2>&1 &
HOLD=$!
sleep 1 # under load curl takes a while to start; the request must be in
curl -sS --http2-prior-knowledge --max-time 5 "http://127.0.0.1:$PORT/6" >/dev/null 2>&1 \
  && fail "second connection was served"
wait "$HOLD"
sleep 0.2
[ "$(curl -sS --http2-prior-knowledge "http://127.0.0.1:$PORT/6")" = abcdef ] || fail "after limit"
stop
grep -q "shed" "$T/log" || fail "no summary"

# --- out of file descriptors: accepting pauses instead of spinning, and
# recovers once connections go away
( ulimit -n 20; exec "$BIN" --h2c --port 0 --root "$T/www" ) >"$T/log" 2>&1 &
PID=$!
PIDS+=("$PID")
for _ in $(seq 100); do grep -q "serving" "$T/log" && break; sleep 0.05; done
PORT=$(sed -n 's/.*:\([0-9]*\) (.*/\1/p' "$T/log" | head -1)
FDS=()
for _ in $(seq 30); do exec {fd}<>/dev/tcp/127.0.0.1/$PORT; FDS+=("$fd"); done
sleep 0.3
c0=$(awk '{print $14+$15}' /proc/$PID/stat)
sleep 1
c1=$(awk '{print $14+$15}' /proc/$PID/stat)
[ $((c1 - c0)) -lt 30 ] || fail "spins when out of fds: $((c1 - c0)) ticks in 1 s"
for fd in "${FDS[@]}"; do exec {fd}>&-; done
ok=0
for _ in $(seq 20); do
  [ "$(curl -sS --max-time 2 --http2-prior-knowledge "http://127.0.0.1:$PORT/6" 2>/dev/null)" = abcdef ] && { ok=1; break; }
  sleep 0.2
done
[ $ok = 1 ] || fail "no recovery after running out of fds"
stop

# --- SIGTERM with a stream in flight: it completes ------------------------
start --h2c
curl -sS --http2-prior-knowledge "http://127.0.0.1:$PORT/delay?ms=500" >"$T/late" &
CURL=$!
PIDS+=("$CURL")
sleep 0.2
stop
wait "$CURL"
[ "$(cat "$T/late")" = "delayed 500 ms" ] || fail "in-flight stream lost on shutdown"
# --- h2bench writer: a tiny run of every mode, and its ratios ---------------
HB="$2/bin/h2bench"
if [ -x "$HB" ]; then
  out=$("$HB" writer -n 300 --rounds 1 --conns 1 --body 6 --h2c 2>&1) || fail "h2bench writer: $out"
  for w in "reused/spawn" "reused/inline" "  reused " "  spawn " "  inline " "p50" "p99"; do
    echo "$out" | grep -q -- "$w" || fail "h2bench writer output lacks '$w': $out"
  done
  "$HB" writer --modes fast >/dev/null 2>&1; [ $? -eq 2 ] || fail "h2bench writer bad args"
fi
echo "OK"
