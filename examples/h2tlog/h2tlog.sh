#!/usr/bin/env bash
# h2tlog: print the trace events of a running process that uses libh2trace,
# one JSON line each, as h2stat --json prints them (doc/probes.md).
#   h2tlog -p PID [--events LIST] [--list]
# A launcher for share/h2trace/h2tlog.bt, found relative to this script.
set -euo pipefail
prog=h2tlog
here=$(dirname "$(readlink -f "$0")")
BT=${H2TLOG_BT:-$here/../share/h2trace/h2tlog.bt}

usage() {
  cat <<USAGE
usage: h2tlog -p PID [--events LIST]
  -p PID          the process to trace (it must use libh2trace built with
                  H2T_PROBES, the default)
  --events LIST   comma-separated event names (default: all), e.g.
                  request_headers,stream_closed or got_conn,done;
                  inflight_state: in-flight state changes
  --list          the event names, then exit
Prints one JSON line per event until interrupted.  Needs root (or
CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN), bpftrace and tracefs.
USAGE
}
die() { echo "$prog: $*" >&2; exit 1; }

pid="" events=""
while [ $# -gt 0 ]; do
  case $1 in
    -p) [ $# -ge 2 ] || { usage >&2; exit 2; }; pid=$2; shift 2 ;;
    --events) [ $# -ge 2 ] || { usage >&2; exit 2; }; events=$2; shift 2 ;;
    --list) [ -r "$BT" ] || die "cannot read $BT"
            awk '$1 == "//" && $2 == "event" { print $4, "(" $5 ")" }' "$BT" | sort -u
            exit 0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "$prog: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
[ -n "$pid" ] || { echo "$prog: -p PID is required" >&2; usage >&2; exit 2; }
case $pid in *[!0-9]*|"") die "not a process id: $pid" ;; esac
[ -r "$BT" ] || die "cannot read $BT (is h2tlog installed with its share/h2trace?)"

# What is missing, and how to get it.
[ "$(id -u)" -eq 0 ] || die "must run as root (bpftrace loads BPF programs and uprobes)"
command -v bpftrace >/dev/null ||
  die "bpftrace not found: install it (Debian: apt-get install bpftrace)"
if [ ! -e /sys/kernel/tracing/uprobe_events ] &&
   [ ! -e /sys/kernel/debug/tracing/uprobe_events ]; then
  die "tracefs is not mounted, or the kernel has no uprobes (CONFIG_UPROBE_EVENTS): try
  mount -t tracefs nodev /sys/kernel/tracing"
fi
[ -d "/proc/$pid" ] || die "no process $pid"

# The library as the process mapped it (through /proc/PID/root, so that a
# process in a container is found too); a static build: the program itself.
lib=$(awk '$6 ~ /\/libh2trace\.so/ { print $6; exit }' "/proc/$pid/maps" 2>/dev/null || true)
if [ -n "$lib" ]; then
  [ -e "/proc/$pid/root$lib" ] && [ ! "$lib" -ef "/proc/$pid/root$lib" ] &&
    lib="/proc/$pid/root$lib"
else
  exe=$(readlink -f "/proc/$pid/exe") || die "cannot read /proc/$pid/exe"
  if command -v readelf >/dev/null &&
     readelf -n "$exe" 2>/dev/null | grep -q "Provider: h2trace"; then
    lib=$exe
  else
    die "process $pid does not use libh2trace (no libh2trace.so in /proc/$pid/maps)"
  fi
fi

# --events: names to the ids the program knows (a name may be a client and
# a server event).
state_id=$(awk '$2 == "event" && $4 == "inflight_state" { print $3 }' "$BT")
want="" want_json=0 want_state=0
if [ -z "$events" ]; then
  ids=$(awk '$1 == "//" && $2 == "event" { print $3 }' "$BT")
else
  ids=""
  for e in ${events//,/ }; do
    got=$(awk -v n="$e" '$1 == "//" && $2 == "event" && $4 == n { print $3 }' "$BT")
    [ -n "$got" ] || die "unknown event: $e (h2tlog --list shows them)"
    ids+=" $got"
  done
fi
for i in $ids; do
  if [ "$i" = "$state_id" ]; then want_state=1; else want_json=1; want+="  @want[$i] = 1;"$'\n'; fi
done

program=$(awk -v lib="$lib" -v want="$want" -v json="$want_json" -v state="$want_state" '
  $1 == "//@WANT@" { printf "%s", want; next }
  /h2trace:json / && !json { next }
  /h2trace:inflight__state / && !state { next }
  { gsub(/@LIB@/, lib); print }' "$BT")

# bpftrace prints a line in pieces ("tid seq last piece"): join each
# thread's pieces; anything else bpftrace says goes to stderr.  (mawk,
# Debian's awk, reads a pipe in blocks unless told not to: without
# -W interactive nothing shows until 4 KiB of events came.  Its version is
# read whole: `| grep -q` under pipefail failed when grep left first and awk
# took a SIGPIPE, on a loaded machine.)
awk=(awk)
case $(awk -W version 2>&1 || true) in *mawk*) awk=(awk -W interactive) ;; esac
BPFTRACE_STRLEN=128 bpftrace -B line -p "$pid" -e "$program" | "${awk[@]}" '
  match($0, /^[0-9]+ [0-9]+ [0-9]+ /) {
    split(substr($0, 1, RLENGTH - 1), h, " ")
    tid = h[1]; seq = h[2] + 0; last = h[3] + 0
    if ((tid, seq) in part) n[tid] = 0  # a line lost halfway: start again
    part[tid, seq] = substr($0, RLENGTH + 1)
    if (++n[tid] == last + 1) {
      line = ""
      for (i = 0; i <= last; i++) { line = line part[tid, i]; delete part[tid, i] }
      print line; fflush(); n[tid] = 0
    }
    next
  }
  { print > "/dev/stderr" }'
