#!/usr/bin/env bash
# (a) Workers all stuck on one slow node, found with the SIGUSR1 dump.
#
#   examples/scenarios/a-stuck-workers.sh [--short] [BUILD_DIR]
#
# Two h2serve nodes answer the same /delay?ms=20; one runs --delay-scale
# 1000 (20 s instead of 20 ms).  worker_pool, a service of 12 workers that
# each call a node at random and wait, is the client.  After a moment its
# throughput is gone; `kill -USR1` makes it print its in-flight table,
# grouped by authority: every worker waits on the slow node.
. "$(dirname "$0")/lib.sh"

WORKERS=12
[ "$SHORT" = 1 ] && WORKERS=8

say "(a) workers all stuck on one slow node"
say "A service with $WORKERS workers calls two backends; requests stop finishing."
say "Which backend are the workers waiting on?  Ask the client process itself."

section "two nodes: one fast, one 1000x slower on the same route"
serve fast; FAST=$URL; FAST_AUTH=127.0.0.1:$PORT
serve slow --delay-scale 1000; SLOW=$URL; SLOW_AUTH=127.0.0.1:$PORT
say "fast node $FAST_AUTH: /delay?ms=20 answers in 20 ms"
say "slow node $SLOW_AUTH: the same request takes 20 s (h2serve --delay-scale 1000)"

section "the service: worker_pool, $WORKERS workers, each calls a random node and waits"
say "\$ worker_pool -w $WORKERS -t 60 $FAST/delay?ms=20 $SLOW/delay?ms=20 &"
start pool "$BIN/worker_pool" -w "$WORKERS" -t 60 "$FAST/delay?ms=20" "$SLOW/delay?ms=20"
POOL=$LAST_PID
T0=$(date +%s%N)
poll 10 grep -q "pid" "$WORK/pool.out" || die "worker_pool did not start: $(cat "$WORK/pool.err")"
sed 's/^/  /' "$WORK/pool.out"

# dump N: kill -USR1 the client and wait for its Nth report on stderr.
dumps=0
dump() {
  dumps=$((dumps + 1))
  kill -USR1 "$POOL"
  poll 5 eval "[ \$(grep -c '^In-flight HTTP/2 requests' '$WORK/pool.err') -ge $dumps ]" ||
    die "no in-flight report from worker_pool"
  sleep 0.1 # the report is one write; let it land
  awk -v n="$dumps" '/^In-flight HTTP\/2 requests/ { k++ } k == n' "$WORK/pool.err" >"$WORK/dump"
}
# count AUTHORITY: "N in flight" of that group in the last report (0: none).
count() {
  local c
  c=$(sed -n "s/^$1  \([0-9]*\) in flight.*/\1/p" "$WORK/dump")
  echo "${c:-0}"
}

section "kill -USR1 $POOL, until every worker is accounted for (at most 10 s)"
stuck=0; total=0
for _ in $(seq 20); do
  dump
  stuck=$(count "$SLOW_AUTH")
  total=$(sed -n 's/^In-flight HTTP\/2 requests (\([0-9]*\)):.*/\1/p' "$WORK/dump")
  ms=$(( ($(date +%s%N) - T0) / 1000000 ))
  say "  after $((ms / 1000)).$(printf %03d $((ms % 1000)))s: $stuck of $total in flight wait on the slow node"
  [ "$stuck" -eq "$WORKERS" ] && break
  sleep 0.5
done

section "the last report (stderr of worker_pool), grouped by authority, oldest first"
indent <"$WORK/dump"
say ""
say "Look at: the group headers.  One authority holds every request, and its"
say "oldest is as old as the trouble; the fast node's group is gone because its"
say "requests finish and their workers then pick the slow node, and stay."

kill "$POOL"
wait_exit "$POOL" 10 || die "worker_pool did not stop"
say ""
indent <"$WORK/pool.out"

[ "$total" -gt 0 ] || die "the report listed no request"
say ""
say "answer: $stuck of $total stuck requests wait on $SLOW_AUTH (the slow node; fast node $FAST_AUTH: $(count "$FAST_AUTH"))"
