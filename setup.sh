#!/usr/bin/env bash
# h2trace set-up: install the Debian packages that are missing, build, then
# run what was asked.  Usage:
#   ./setup.sh            install + build
#   ./setup.sh demo       install + build + run the demo (h2serve traced by h2stat)
#   ./setup.sh test       install + build + run the default suite through ctest
#                         (every test but the 1 M request soak)
#   ./setup.sh asan       the same tests built with ASan+UBSan (build-asan/)
#   ./setup.sh fuzz       libFuzzer targets with clang, ASan and UBSan
#                         (build-fuzz/), each fuzzed 60 s (ctest -L '^fuzz$');
#                         then the default suite's short fuzz runs use them
#   ./setup.sh tsan       the threaded tests (label threaded) built with
#                         ThreadSanitizer (build-tsan/)
#   ./setup.sh soak       the 1 M request soak (label soak), minutes
set -euo pipefail
cd "$(dirname "$0")"

# Library build deps, then the real peers the tests talk to (python3-h2:
# the scripted misbehaving servers of tests/peers/; prometheus: promtool
# and the server that tests/test_prometheus.sh starts on loopback itself;
# libclang-rt-14-dev: libFuzzer for ./setup.sh fuzz).
PKGS=(build-essential cmake pkg-config clang libclang-rt-14-dev
      libnghttp2-dev libssl-dev libev-dev libc-ares-dev libmicrohttpd-dev
      libjansson-dev libncurses-dev libcmocka-dev libunwind-dev
      nghttp2-server nghttp2-client curl openssl valgrind python3-h2
      nginx-light h2o nodejs chromium prometheus
      systemtap-sdt-dev bpftrace)  # USDT probes; h2tlog and its test

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# What the tests drive from npm (har-validator for the export test,
# playwright-core for the web page's, which drives Debian's chromium above:
# no browser is downloaded), pinned by tests/node/package-lock.json and
# installed into the build tree only.
node_deps() { # dir
  local dir=$1
  if ! command -v npm >/dev/null; then
    echo "setup: no npm: the export and web page tests will skip"; return 0
  fi
  if [ -d "$dir/node/node_modules/playwright-core" ] &&
     [ -d "$dir/node/node_modules/har-validator" ] &&
     cmp -s tests/node/package-lock.json "$dir/node/package-lock.json"; then
    return 0
  fi
  mkdir -p "$dir/node"
  cp tests/node/package.json tests/node/package-lock.json "$dir/node/"
  (cd "$dir/node" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error) ||
    echo "setup: npm ci failed: the export and web page tests will try again or skip"
}

build() { # dir, extra cmake args...
  local dir=$1; shift
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  cmake --build "$dir" -j"$(nproc)" ${H2T_BUILD_TARGET:+--target "$H2T_BUILD_TARGET"}
  node_deps "$dir"
}

case "${1:-build}" in
  build) build build ;;
  demo)  build build; exec examples/demo.sh build ;;
  test)  build build; cd build && exec ctest --output-on-failure -j2 --timeout 300 -LE soak ;;
  asan)  build build-asan -DH2T_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
         cd build-asan && exec ctest --output-on-failure -j2 --timeout 600 -LE soak ;;
  tsan)  build build-tsan -DH2T_TSAN=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
         cd build-tsan && exec ctest --output-on-failure -j2 --timeout 900 -L threaded ;;
  soak)  build build; cd build && exec ctest --output-on-failure -L soak ;;
  # libFuzzer's runtime is clang's (libclang-rt-14-dev); only the fuzz
  # binaries are built here, one target fuzzed at a time, one worker each.
  fuzz)  H2T_BUILD_TARGET=h2t_fuzz build build-fuzz -DH2T_FUZZ=ON \
           -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo
         cd build-fuzz && exec ctest --output-on-failure -L '^fuzz$' ;;
  *) echo "usage: $0 [build|demo|test|asan|tsan|soak|fuzz]" >&2; exit 2 ;;
esac
