#!/usr/bin/env bash
# (d) A slow replica: saturate against random, with the ratio.
#
#   examples/scenarios/d-slow-replica.sh [--short] [BUILD_DIR]
#
# Two h2serve replicas serve the same /delay route; one runs --delay-scale 8
# (a sick host: every task takes 8x as long).  h2bench saturate sends the
# same tasks to them with each dispatch policy in turn.  Random choice gives
# the slow replica half the work, so the whole job waits on it; saturate
# (send to a replica with a free worker slot) gives it only what it can do.
# Each replica's /debug/profile says which one is slow.
. "$(dirname "$0")/lib.sh"

K=8; WORKERS=4; MS=5; TASKS=1000; ROUNDS=3
[ "$SHORT" = 1 ] && { MS=4; TASKS=300; ROUNDS=1; }
command -v curl >/dev/null && command -v python3 >/dev/null || die "needs curl and python3"

say "(d) a slow replica"
say "One of two replicas became ${K}x slower.  How much does the dispatch policy"
say "matter, and which replica is it?"

section "two replicas of the same service; the second ${K}x slower"
serve r1 --diag 127.0.0.1:0; R1=$URL; D1=$DIAG
serve r2 --diag 127.0.0.1:0 --delay-scale "$K"; R2=$URL; D2=$DIAG
say "replica 1 $R1 (diagnostics $D1)"
say "replica 2 $R2 (diagnostics $D2), h2serve --delay-scale $K"

section "$TASKS tasks of $MS ms per policy, $WORKERS workers per replica, $ROUNDS round(s)"
run 120 "$BIN/h2bench" saturate --workers "$WORKERS" -n "$TASKS" -d "$MS" --rounds "$ROUNDS" \
  --replica "$R1" --replica "$R2" >"$WORK/sat" 2>&1
rc=$?
indent <"$WORK/sat"
[ $rc -eq 0 ] || die "h2bench saturate exited $rc"

section "which replica is slow: GET /debug/profile on each (server side, all policies)"
profile() {
  curl -s --max-time 5 "$1/debug/profile" | python3 -c '
import json, sys
for r in json.load(sys.stdin)["overall"]:
    if r["kind"] == "server":
        print("%d requests, mean %.1f ms" % (r["requests"], r["mean_us"] / 1000))
'
}
say "replica 1: $(profile "$D1")"
say "replica 2: $(profile "$D2")"
say ""
say "Look at: the random row against the saturate row.  Random sends half the"
say "tasks to the slow replica and its p99 is the slow replica's queue; saturate"
say "sends a task only where a worker is free, so the fast replica takes most."
say "(h2bench's 'of ideal' column assumes replicas it did not start are all fast.)"

ratio=$(sed -n 's/^saturate\/random: \([0-9.]*\)x$/\1/p' "$WORK/sat")
sat=$(awk '$1 == "saturate" { print $2 }' "$WORK/sat")
rnd=$(awk '$1 == "random" { print $2 }' "$WORK/sat")
[ -n "$ratio" ] && [ -n "$sat" ] && [ -n "$rnd" ] || die "no saturate/random line"
# the true ideal: every worker of both replicas always busy
ideal=$(awk -v w="$WORKERS" -v ms="$MS" -v k="$K" 'BEGIN { printf "%.0f", w * 1000 / ms + w * 1000 / (ms * k) }')
of=$(awk -v s="$sat" -v i="$ideal" 'BEGIN { printf "%.0f", 100 * s / i }')
say ""
say "answer: saturate/random ${ratio}x with one replica ${K}x slower (saturate $sat tasks/s, random $rnd; saturate at $of% of the ideal $ideal)"
