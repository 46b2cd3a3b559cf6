#!/usr/bin/env bash
# What a user gets from `cmake --install`: into a temporary prefix, then
#  - only the tools (h2stat, h2serve, h2bench, h2top if built) and their man
#    pages; no embedding examples;
#  - libh2trace.so needs none of libmicrohttpd, jansson, libunwind;
#    libh2trace_diag.so does;
#  - a program (the README's example, plus one that starts the diagnostics
#    endpoint) builds with pkg-config and with find_package(h2trace), and
#    runs against the installed h2serve; the installed h2stat runs;
#  - after moving the prefix elsewhere, the .pc files, the CMake package and
#    the tools still work (relocatable).
# Args: SOURCE_DIR BINARY_DIR.  Stops only the server it started, by PID.
set -euo pipefail
src=$1 bin=$2
work=$(mktemp -d /tmp/h2t-install.XXXXXX)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
unset LD_LIBRARY_PATH PKG_CONFIG_PATH CMAKE_PREFIX_PATH
fail() { echo "FAIL: $*"; exit 1; }
n=0
ok() { n=$((n + 1)); echo "ok: $*"; }

# A sanitized build installs sanitized libraries: programs need the same.
san=""
grep -q '^H2T_SANITIZE:BOOL=ON' "$bin/CMakeCache.txt" && san="-fsanitize=address,undefined"

pfx=$work/prefix
cmake --install "$bin" --prefix "$pfx" >"$work/install.log" || { cat "$work/install.log"; fail "cmake --install"; }
pcdir=$(dirname "$(find "$pfx" -name h2trace.pc | head -1)")
[ -f "$pcdir/h2trace.pc" ] && [ -f "$pcdir/h2trace-diag.pc" ] || fail "no .pc files"
libdir=$(dirname "$pcdir")
librel=${libdir#"$pfx"/}

# --- what is installed --------------------------------------------------
want="h2bench h2serve h2stat"
[ -x "$bin/bin/h2tlog" ] && want+=" h2tlog"
[ -x "$bin/bin/h2top" ] && want+=" h2top"
have=$(ls "$pfx/bin" | sort | tr '\n' ' ' | sed 's/ $//')
[ "$have" = "$want" ] || fail "bin/ holds '$have', expected '$want'"
for t in $want; do
  [ -f "$pfx/share/man/man1/$t.1" ] || fail "no man page for $t"
done
ok "installed tools: $have, each with its man page"
if [ -x "$pfx/bin/h2tlog" ]; then  # finds its bpftrace program from any prefix
  "$pfx/bin/h2tlog" --list | grep -q "^request_headers (server)" || fail "h2tlog --list"
fi

needed() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }
core=$(needed "$libdir/libh2trace.so")
diag=$(needed "$libdir/libh2trace_diag.so")
for l in microhttpd jansson unwind; do
  echo "$core" | grep -q "lib$l" && fail "libh2trace.so depends on lib$l"
  echo "$diag" | grep -q "lib$l" || fail "libh2trace_diag.so does not depend on lib$l"
done
echo "$diag" | grep -q 'libh2trace\.so' || fail "libh2trace_diag.so does not depend on libh2trace"
nm -D --defined-only "$libdir/libh2trace.so" | grep -q ' h2t_diag_start$' &&
  fail "libh2trace.so defines h2t_diag_start"
ok "libh2trace.so needs: $(echo $core)"
ok "libh2trace_diag.so needs: $(echo $diag)"

# --- the programs -----------------------------------------------------
awk '/^```c$/{on=1;next} /^```$/{if(on){exit}} on' "$src/README.md" > "$work/example.c"
[ -s "$work/example.c" ] || fail "no C block in README.md"
cat > "$work/diagprobe.c" <<'C'
#include <stdio.h>
#include <h2trace/h2trace.h>
int main(void) {
  h2t_diag *d;
  int rv = h2t_diag_start(&d, NULL);
  if (rv != 0) {
    fprintf(stderr, "diagprobe: %s\n", h2t_strerror(rv));
    return 1;
  }
  printf("diag on port %u\n", (unsigned)h2t_diag_port(d));
  h2t_diag_stop(d);
  return 0;
}
C
cat > "$work/CMakeLists.txt" <<'C'
cmake_minimum_required(VERSION 3.18)
project(consumer C)
find_package(h2trace 0.1 REQUIRED)
add_executable(example example.c)
target_link_libraries(example PRIVATE h2trace::h2trace)
add_executable(diagprobe diagprobe.c)
target_link_libraries(diagprobe PRIVATE h2trace::diag)
C

build_pc() { # pcdir outdir
  mkdir -p "$2"
  local PKG_CONFIG_PATH=$1
  export PKG_CONFIG_PATH
  local ld
  ld=$(pkg-config --variable=libdir h2trace)
  # shellcheck disable=SC2046
  cc -std=gnu11 -Wall -Werror $san "$work/example.c" $(pkg-config --cflags --libs h2trace) \
     -Wl,-rpath,"$ld" -o "$2/example" || fail "pkg-config build of the README example"
  # shellcheck disable=SC2046
  cc -std=gnu11 -Wall -Werror $san "$work/diagprobe.c" $(pkg-config --cflags --libs h2trace-diag) \
     -Wl,-rpath,"$ld" -o "$2/diagprobe" || fail "pkg-config build against h2trace-diag"
}
build_cmake() { # prefix outdir
  cmake -S "$work" -B "$2" -DCMAKE_PREFIX_PATH="$1" -DCMAKE_BUILD_TYPE=Debug \
        -DCMAKE_C_FLAGS="$san" -DCMAKE_EXE_LINKER_FLAGS="$san" >"$work/cmake.log" 2>&1 ||
    { cat "$work/cmake.log"; fail "find_package(h2trace) with CMAKE_PREFIX_PATH=$1"; }
  cmake --build "$2" >>"$work/cmake.log" 2>&1 || { cat "$work/cmake.log"; fail "CMake consumer build"; }
}
check_example() { # program url what
  local out
  out=$("$1" "$2/") || fail "$3: exit $?"
  echo "$out" | grep -q '^conn #[0-9]* new: no_conn$' || fail "$3: no new-connection line: $out"
  echo "$out" | grep -q '^conn #[0-9]* reused (idle [0-9]* us)$' || fail "$3: no reuse line: $out"
  [ "$(echo "$out" | grep -c '^status 200, 3 bytes$')" = 2 ] || fail "$3: responses: $out"
}
check_diagprobe() { # program what
  "$1" | grep -q '^diag on port [1-9][0-9]*$' || fail "$2: diagnostics endpoint did not start"
}
start_h2serve() { # prefix; sets pid, url, diag
  "$1/bin/h2serve" --h2c --port 0 --root "$work/www" --diag 127.0.0.1:0 > "$work/h2serve.log" 2>&1 &
  pid=$!
  url="" diag=""
  for _ in $(seq 100); do
    url=$(sed -nE 's|.*serving .* on (http://127\.0\.0\.1:[0-9]+).*|\1|p' "$work/h2serve.log" | head -1)
    [ -n "$url" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  [ -n "$url" ] || { cat "$work/h2serve.log"; fail "installed h2serve ($1) did not start"; }
  diag=$(grep -oE 'diagnostics on http://[0-9.:]+' "$work/h2serve.log" | head -1 | sed 's/diagnostics on //')
}
stop_h2serve() { kill "$pid"; wait "$pid" || true; pid=""; }
check_tools() { # prefix what
  "$1/bin/h2stat" -n 2 "$url/" > "$work/h2stat.out" 2>&1 || { cat "$work/h2stat.out"; fail "$2: h2stat"; }
  grep -q 'reused' "$work/h2stat.out" || { cat "$work/h2stat.out"; fail "$2: h2stat did not report reuse"; }
  "$1/bin/h2bench" --version >/dev/null || fail "$2: h2bench does not start"
  if [ -n "$diag" ] && command -v curl >/dev/null; then
    curl -sf "$diag/debug/requests" | grep -q '"requests"\|\[' || fail "$2: h2serve's diagnostics endpoint"
  fi
}

mkdir -p "$work/www"
printf 'hi\n' > "$work/www/index.html"

# The .pc files name no absolute prefix: they follow the directory they are in.
grep -q "$pfx\|$bin\|/usr/local" "$pcdir/h2trace.pc" "$pcdir/h2trace-diag.pc" &&
  fail ".pc files hold an absolute path: $(grep -h "^prefix=" "$pcdir"/*.pc)"
PKG_CONFIG_PATH=$pcdir pkg-config --cflags h2trace | grep -q -- "-I$pfx/include\|-I$pcdir/.*include" ||
  fail "pkg-config --cflags h2trace does not point into the prefix"

build_pc "$pcdir" "$work/pc"
build_cmake "$pfx" "$work/cm"
start_h2serve "$pfx"
check_example "$work/pc/example" "$url" "pkg-config build"
check_example "$work/cm/example" "$url" "find_package build"
check_diagprobe "$work/pc/diagprobe" "pkg-config h2trace-diag build"
check_diagprobe "$work/cm/diagprobe" "h2trace::diag build"
check_tools "$pfx" "installed tools"
stop_h2serve
ok "pkg-config and find_package consumers, installed h2serve, h2stat and h2bench work"

# --- moved --------------------------------------------------------------
moved=$work/elsewhere/deeper
mkdir -p "$(dirname "$moved")"
mv "$pfx" "$moved"
if [ -x "$moved/bin/h2tlog" ]; then
  "$moved/bin/h2tlog" --list | grep -q "^got_conn (client)" || fail "moved: h2tlog lost its program"
fi
mpc=$moved/${pcdir#"$pfx"/}
[ "$(PKG_CONFIG_PATH=$mpc pkg-config --variable=libdir h2trace | xargs realpath)" = "$(realpath "$moved/$librel")" ] ||
  fail "moved: h2trace.pc's libdir does not follow the prefix"
build_pc "$mpc" "$work/pc2"
build_cmake "$moved" "$work/cm2"
start_h2serve "$moved"
check_example "$work/pc2/example" "$url" "moved: pkg-config build"
check_example "$work/cm2/example" "$url" "moved: find_package build"
check_diagprobe "$work/pc2/diagprobe" "moved: pkg-config h2trace-diag build"
check_tools "$moved" "moved tools"
stop_h2serve
ok "after moving the prefix: .pc files, CMake package and tools still work"
echo "$n passed, 0 failed"
