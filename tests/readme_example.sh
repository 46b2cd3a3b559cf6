#!/usr/bin/env bash
# The README's C example compiles against the built library and does what it
# says against h2serve on loopback: a new connection, then the same one reused.
# Args: SOURCE_DIR BINARY_DIR.  Stops only the server it started, by PID.
set -euo pipefail
src=$1 bin=$2
work=$(mktemp -d /tmp/h2t-readme.XXXXXX)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

awk '/^```c$/{on=1;next} /^```$/{if(on){exit}} on' "$src/README.md" > "$work/example.c"
[ -s "$work/example.c" ] || { echo "FAIL: no C block in README.md"; exit 1; }
# Built like the library: a sanitized library needs a sanitized program.
san=""
grep -q '^H2T_SANITIZE:BOOL=ON' "$bin/CMakeCache.txt" && san="-fsanitize=address,undefined"
cc -std=gnu11 -Wall -Werror $san -I"$src/include" -I"$bin/include" "$work/example.c" \
   -L"$bin/lib" -lh2trace -Wl,-rpath,"$bin/lib" -o "$work/example"

printf 'hi\n' > "$work/index.html"
"$bin/bin/h2serve" --h2c --port 0 --root "$work" > "$work/log" 2>&1 &
pid=$!
url=""
for _ in $(seq 100); do
  url=$(grep -soE 'http://127\.0\.0\.1:[0-9]+' "$work/log" | head -1) && [ -n "$url" ] && break
  sleep 0.05
done
[ -n "$url" ] || { echo "FAIL: h2serve did not start"; cat "$work/log"; exit 1; }
out=$("$work/example" "$url/")
echo "$out"
echo "$out" | grep -q '^conn #[0-9]* new: no_conn$' || { echo "FAIL: no new-connection line"; exit 1; }
echo "$out" | grep -q '^conn #[0-9]* reused (idle [0-9]* us)$' || { echo "FAIL: no reuse line"; exit 1; }
[ "$(echo "$out" | grep -c '^status 200, 3 bytes$')" = 2 ] || { echo "FAIL: responses"; exit 1; }
echo "1 passed, 0 failed"
