#!/bin/bash
# h2tlog attached to a running h2serve sees its requests: the server events
# of each, as h2stat --json lines, with the ids and paths the requests had.
# Skips (77) only where bpftrace, tracefs or uprobes are missing, or the
# library was built without probes.  Args: SOURCE_DIR BINARY_DIR.  Stops
# only what it started, by PID; unmounts tracefs only if it mounted it.
set -u
B=$2
skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; echo "--- h2tlog out"; cat "$T/out"; echo "--- h2tlog err"; cat "$T/err"; exit 1; }

[ -x "$B/bin/h2tlog" ] || skip "built without probes (-DH2T_PROBES=OFF, or no <sys/sdt.h>: apt-get install systemtap-sdt-dev)"
[ "$(id -u)" -eq 0 ] || skip "needs root to load BPF programs (run ctest as root)"
command -v bpftrace >/dev/null || skip "no bpftrace (apt-get install bpftrace, or ./setup.sh)"
MOUNTED=""
if [ ! -e /sys/kernel/tracing/uprobe_events ] && [ ! -e /sys/kernel/debug/tracing/uprobe_events ]; then
  if ! mountpoint -q /sys/kernel/tracing 2>/dev/null &&
     mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null; then
    MOUNTED=/sys/kernel/tracing
  fi
  [ -e /sys/kernel/tracing/uprobe_events ] ||
    skip "no tracefs with uprobes (mount -t tracefs nodev /sys/kernel/tracing; kernel CONFIG_UPROBE_EVENTS)"
fi

T=$(mktemp -d /tmp/h2tlog-test-XXXXXX)
PIDS=()
LOG=""
cleanup() {
  # h2tlog's group: bpftrace outlives its launcher otherwise
  [ -n "$LOG" ] && kill -TERM -- "-$LOG" 2>/dev/null
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  [ -n "$MOUNTED" ] && umount "$MOUNTED" 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT

mkdir -p "$T/www"
printf 'hello\n' >"$T/www/a.txt"
"$B/bin/h2serve" --h2c --port 0 --root "$T/www" >"$T/srv" 2>&1 &
SRV=$!; PIDS+=("$SRV")
for _ in $(seq 100); do grep -qs serving "$T/srv" && break; sleep 0.05; done
PORT=$(grep -o '127.0.0.1:[0-9]*' "$T/srv" | head -1 | cut -d: -f2)
[ -n "$PORT" ] || { cat "$T/srv"; echo "FAIL: h2serve did not start"; exit 1; }

# h2tlog runs with an awk whose version text fills a pipe, as a long one
# may: it must still find mawk and read bpftrace line by line (it once
# piped the version to `grep -q`, which under pipefail failed when awk took
# a SIGPIPE, and then printed nothing until 4 KiB of events came).
mkdir -p "$T/shim"
REAL_AWK=$(command -v awk)
cat >"$T/shim/awk" <<SHIM
#!/bin/bash
if [ "\$*" = "-W version" ]; then
  "$REAL_AWK" -W version; head -c 200000 /dev/zero | tr '\\0' v; exit
fi
exec "$REAL_AWK" "\$@"
SHIM
chmod +x "$T/shim/awk"
# setsid: its own process group, so that stopping it stops bpftrace too
PATH="$T/shim:$PATH" setsid "$B/bin/h2tlog" -p "$SRV" >"$T/out" 2>"$T/err" &
LOG=$!; PIDS+=("$LOG")
for _ in $(seq 600); do grep -qs "^Attaching" "$T/err" && break; sleep 0.1; done
grep -qs "^Attaching" "$T/err" || fail "h2tlog did not attach in 60 s"
# "Attaching" comes before the uprobes are live (slowly, on a loaded
# machine): requests to /ready until one shows in the log, at most 60 s.
ready=0
for _ in $(seq 120); do
  curl -s --http2-prior-knowledge "http://127.0.0.1:$PORT/ready" -o /dev/null
  grep -qs '"path":"/ready"' "$T/out" && { ready=1; break; }
  sleep 0.5
done
[ $ready = 1 ] || fail "h2tlog logged nothing in 60 s"

# Two requests on one connection, and one with a path longer than a piece.
LONG=/$(head -c 300 /dev/zero | tr '\0' b)
"$B/bin/h2stat" --json "http://127.0.0.1:$PORT/a.txt" "http://127.0.0.1:$PORT/a.txt" >"$T/client" 2>&1 ||
  { cat "$T/client"; fail "h2stat"; }
curl -s --http2-prior-knowledge "http://127.0.0.1:$PORT$LONG" -o /dev/null || fail "curl"
# (the /ready requests' stream_closed events count too)
want=$(($(grep -c '"path":"/ready"' "$T/out") + 3))
for _ in $(seq 50); do [ "$(grep -c '"event":"stream_closed"' "$T/out")" -ge $want ] && break; sleep 0.1; done
kill -TERM -- "-$LOG" 2>/dev/null; wait "$LOG" 2>/dev/null

python3 - "$T/out" "$LONG" <<'PY' || fail "h2tlog output"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
long_path = sys.argv[2]
for ev in lines:  # the common fields, in h2stat --json's order
    assert list(ev)[:5] == ["event", "t_us", "req_id", "conn", "stream"], ev
ready = {e["req_id"] for e in lines
         if e["event"] == "request_headers" and e["path"] == "/ready"}
lines = [e for e in lines if e["req_id"] not in ready]
heads = [e for e in lines if e["event"] == "request_headers"]
paths = sorted(e["path"] for e in heads)
assert paths == sorted(["/a.txt", "/a.txt", long_path]), paths
for h in heads:
    mine = [e["event"] for e in lines if e["req_id"] == h["req_id"]]
    for want in ("request_headers", "handler_started", "wrote_headers",
                 "wrote_response", "stream_closed"):
        assert want in mine, (h["path"], want, mine)
    for e in lines:
        if e["req_id"] == h["req_id"]:
            assert (e["conn"], e["stream"]) == (h["conn"], h["stream"]), e
    st = [e for e in lines if e["req_id"] == h["req_id"] and e["event"] == "wrote_headers"]
    assert st[0]["status"] == (200 if h["path"] == "/a.txt" else 404), st
# h2stat's two requests shared a connection, on streams 1 and 3
a = sorted((e["conn"], e["stream"]) for e in heads if e["path"] == "/a.txt")
assert a[0][0] == a[1][0] and [s for _, s in a] == [1, 3], a
acc = [e for e in lines if e["event"] == "conn_accepted"]
assert {e["conn"] for e in acc} >= {h["conn"] for h in heads}, acc
print("h2tlog: %d events, %d requests" % (len(lines), len(heads)))
PY
echo "PASS"
