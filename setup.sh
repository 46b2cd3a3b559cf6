#!/usr/bin/env bash
# h2trace set-up: install the Debian packages that are missing, build, then
# run what was asked.  Usage:
#   ./setup.sh            install + build
#   ./setup.sh demo       install + build + run the demo (h2serve traced by h2stat)
#   ./setup.sh test       install + build + run every test through ctest
#   ./setup.sh asan       the same tests built with ASan+UBSan (build-asan/)
set -euo pipefail
cd "$(dirname "$0")"

# Library build deps, then the real peers the tests talk to (python3-h2:
# the scripted misbehaving servers of tests/peers/).
PKGS=(build-essential cmake pkg-config clang
      libnghttp2-dev libssl-dev libev-dev libc-ares-dev libmicrohttpd-dev
      libjansson-dev libncurses-dev libcmocka-dev libunwind-dev
      nghttp2-server nghttp2-client curl openssl valgrind python3-h2
      nginx-light h2o nodejs
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

# The export test validates HAR with har-validator (npm), pinned by
# tests/node/package-lock.json, installed into the build tree only.
node_deps() { # dir
  command -v npm >/dev/null || { echo "setup: no npm: the export test will skip"; return 0; }
  [ -d "$1/node/node_modules/har-validator" ] && return 0
  mkdir -p "$1/node" && cp tests/node/package.json tests/node/package-lock.json "$1/node/"
  (cd "$1/node" && npm ci --no-audit --no-fund >/dev/null) ||
    echo "setup: npm ci failed: the export test will try again"
}

build() { # dir, extra cmake args...
  local dir=$1; shift
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  cmake --build "$dir" -j"$(nproc)"
  node_deps "$dir"
}

case "${1:-build}" in
  build) build build ;;
  demo)  build build; exec examples/demo.sh build ;;
  test)  build build; cd build && exec ctest --output-on-failure -j2 --timeout 300 ;;
  asan)  build build-asan -DH2T_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
         cd build-asan && exec ctest --output-on-failure -j2 --timeout 600 ;;
  *) echo "usage: $0 [build|demo|test|asan]" >&2; exit 2 ;;
esac
