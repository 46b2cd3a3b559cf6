# What every scenario shares; sourced by examples/scenarios/<letter>-*.sh.
#
#   SCRIPT [--short] [BUILD_DIR]      (default BUILD_DIR: build, in the repo)
#
# Each process a scenario starts goes through `start`, which records its PID;
# the EXIT trap stops those PIDs (TERM, then KILL after 3 s) and nothing
# else.  Every wait is a bounded poll; foreground tools run under `timeout`.
set -u

SHORT=0
BUILD=""
for arg in "$@"; do
  case "$arg" in
    --short) SHORT=1 ;;
    -h|--help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    -*) echo "$(basename "$0"): unknown option $arg" >&2; exit 2 ;;
    *) BUILD=$arg ;;
  esac
done
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
[ -n "$BUILD" ] || BUILD="$ROOT/build"
BIN=$(cd "$BUILD" 2>/dev/null && pwd)/bin
for tool in h2serve h2stat h2bench; do
  [ -x "$BIN/$tool" ] || { echo "$(basename "$0"): no $BIN/$tool (build first: ./setup.sh build)" >&2; exit 2; }
done

WORK=$(mktemp -d /tmp/h2t-scenario.XXXXXX)
mkdir -p "$WORK/www"
echo "hello from h2serve" >"$WORK/www/index.html"
PIDS=()

stop_all() {
  local p i
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do
    for i in $(seq 60); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  PIDS=()
  rm -rf "$WORK"
}
trap stop_all EXIT
trap 'exit 130' INT TERM

say() { printf '%s\n' "$*"; }
section() { printf '\n== %s\n' "$*"; }
indent() { sed 's/^/  | /'; }
die() { echo "FAILED: $*" >&2; exit 1; }

# start NAME CMD...: CMD in the background, stdout in $WORK/NAME.out and
# stderr in $WORK/NAME.err; its PID in LAST_PID (and in PIDS, for the trap).
start() {
  local name=$1; shift
  "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

# poll SECONDS CMD...: run CMD every 50 ms until it succeeds; 1 if it never did.
poll() {
  local n=$(( $1 * 20 )); shift
  for _ in $(seq "$n"); do "$@" && return 0; sleep 0.05; done
  return 1
}

# wait_exit PID SECONDS: wait for a process we started to end; 1 if it did not.
wait_exit() {
  poll "$2" eval "! kill -0 $1 2>/dev/null" || return 1
  wait "$1" 2>/dev/null
  return 0
}

# serve NAME [h2serve options...]: an h2c h2serve on a free loopback port.
# Sets URL (http://127.0.0.1:PORT), PORT, DIAG (http://127.0.0.1:DPORT, with
# --diag) and SERVE_PID.
serve() {
  local name=$1; shift
  start "$name" "$BIN/h2serve" --h2c --address 127.0.0.1 --port 0 --root "$WORK/www" "$@"
  SERVE_PID=$LAST_PID
  poll 10 grep -q "serving" "$WORK/$name.out" ||
    die "h2serve $name did not start: $(cat "$WORK/$name.err")"
  PORT=$(sed -n 's|.*serving .* on http://127\.0\.0\.1:\([0-9]*\) .*|\1|p' "$WORK/$name.out" | head -1)
  URL="http://127.0.0.1:$PORT"
  DIAG=$(sed -n 's|.*diagnostics on \(http://[0-9.]*:[0-9]*\)/.*|\1|p' "$WORK/$name.out" | head -1)
}

# run SECONDS CMD...: show the command, run it in the foreground, bounded.
run() {
  local t=$1; shift
  say "\$ $(printf '%s ' "$@" | sed "s|$BIN/||g")"
  timeout -k 2 "$t" "$@"
}
