#!/bin/bash
# h2serve under valgrind's memcheck, with its block cache in use (under
# ASan the cache only passes blocks through, so this is what checks it):
# h2c and TLS, small, 16 KiB and echoed bodies, a 404, a reset stream.  Any
# invalid read/write, use of uninitialised memory or definite leak fails.
# Args: SOURCE_DIR BINARY_DIR.  Skips (77) without valgrind, or on a
# sanitizer build (ASan and valgrind do not mix).
set -u
. "$1/tests/support/lib.sh"
command -v valgrind >/dev/null || { echo "SKIP: no valgrind"; exit 77; }
if grep -qE '^H2T_(SANITIZE|TSAN):BOOL=ON' "$2/CMakeCache.txt" 2>/dev/null; then
  echo "SKIP: sanitizer build"
  exit 77
fi
fail() { echo "FAIL: $*"; tail -40 "$T/vg.log"; exit 1; }

mkdir -p "$T/www"
printf 'hello\n' >"$T/www/a6"
head -c 16384 /dev/urandom >"$T/www/b16k"
make_cert || fail "openssl req"
for tls in 0 1; do
  P=$(free_port)
  if [ $tls = 1 ]; then
    args=(--tls "$T/cert.pem" "$T/key.pem"); scheme=https; cv=(-k --http2)
  else
    args=(--h2c); scheme=http; cv=(--http2-prior-knowledge)
  fi
  valgrind --error-exitcode=9 --leak-check=full \
    --errors-for-leak-kinds=definite "$2/bin/h2serve" "${args[@]}" \
    --port "$P" --root "$T/www" --quiet >"$T/vg.log" 2>&1 &
  VP=$!
  track $VP
  wait_port "$P" || fail "h2serve did not start under valgrind"
  U=$scheme://127.0.0.1:$P
  for path in /a6 /b16k; do
    timeout 120 h2load -c 2 -m 10 -n 600 "$U$path" >"$T/h2load.out" 2>&1
    grep -q "600 succeeded, 0 failed" "$T/h2load.out" ||
      fail "h2load $path: $(grep requests: "$T/h2load.out")"
  done
  out=$(curl -s "${cv[@]}" --max-time 60 \
    --data-binary "echo-this" -H "x-some: header" "$U/echo")
  [ "$out" = "echo-this" ] || fail "/echo gave: $out"
  code=$(curl -s "${cv[@]}" --max-time 60 \
    -o /dev/null -w '%{http_code}' "$U/missing")
  [ "$code" = 404 ] || fail "/missing gave $code"
  # a client that goes away mid-response: its stream is reset
  timeout 5 curl -s "${cv[@]}" --max-time 1 \
    -o /dev/null "$U/delay?ms=3000"
  kill -INT $VP
  wait $VP
  rc=$?
  grep -q "ERROR SUMMARY: 0 errors" "$T/vg.log" || fail "memcheck errors"
  [ $rc = 0 ] || fail "h2serve exit $rc under valgrind"
done
echo "ok"
