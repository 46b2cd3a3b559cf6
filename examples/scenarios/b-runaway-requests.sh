#!/usr/bin/env bash
# (b) Runaway requests across two services, found and cancelled through the
# diagnostics endpoint.
#
#   examples/scenarios/b-runaway-requests.sh [--short] [BUILD_DIR]
#
# Two h2serve "services" run with --diag and a --diag-token.  Each carries
# normal traffic (h2bench client, 50 ms requests) and a few runaway ones
# (h2stat -p N .../delay?ms=600000: ten minutes).  /debug/requests on each
# endpoint, oldest first, shows them; POST .../cancel with the token ends
# them; /debug/recent shows how they ended.  Needs curl and python3 (JSON).
. "$(dirname "$0")/lib.sh"

TOKEN=scenario-b
AGE_S=1        # older than this: a runaway (normal requests take 50 ms)
LOAD_S=8
[ "$SHORT" = 1 ] && LOAD_S=4
command -v curl >/dev/null && command -v python3 >/dev/null || die "needs curl and python3"

say "(b) runaway requests across two services"
say "Two services are slow to drain: something holds requests open.  Which"
say "requests, where, and can we end them without a restart?"

section "two services with the diagnostics endpoint (cancel needs the token)"
serve orders --diag 127.0.0.1:0 --diag-token "$TOKEN"; A=$URL; DA=$DIAG; A_AUTH=127.0.0.1:$PORT
serve payments --diag 127.0.0.1:0 --diag-token "$TOKEN"; B=$URL; DB=$DIAG; B_AUTH=127.0.0.1:$PORT
say "orders   $A   diagnostics $DA"
say "payments $B   diagnostics $DB"

section "normal traffic on both, and runaway requests: 3 on orders, 2 on payments"
for s in "orders $A" "payments $B"; do
  set -- $s
  say "\$ h2bench client -D $LOAD_S -c 1 -m 4 $2/delay?ms=50 &"
  start "load-$1" "$BIN/h2bench" client -D "$LOAD_S" -c 1 -m 4 "$2/delay?ms=50"
done
say "\$ h2stat -p 3 $A/delay?ms=600000 &"
start runaway-orders "$BIN/h2stat" -p 3 "$A/delay?ms=600000"
RA=$LAST_PID
say "\$ h2stat -p 2 $B/delay?ms=600000 &"
start runaway-payments "$BIN/h2stat" -p 2 "$B/delay?ms=600000"
RB=$LAST_PID

# rows DIAG: /debug/requests as "id age_s state path" lines, oldest first;
# with a second argument, only those older than AGE_S.
rows() {
  curl -s --max-time 5 "$1/debug/requests" | python3 -c '
import json, sys
old = len(sys.argv) > 1
for r in json.load(sys.stdin)["requests"]:
    if old and r["age_us"] < '"$AGE_S"' * 1e6:
        continue
    print("%6d %8.2fs  %-14s %s" % (r["id"], r["age_us"] / 1e6, r["state"], r["path"]))
' ${2:+old}
}
enough() { [ "$(rows "$DA" old | wc -l)" -ge 3 ] && [ "$(rows "$DB" old | wc -l)" -ge 2 ]; }
poll 10 enough || die "the runaway requests did not show up in /debug/requests"

section "what is in flight: GET /debug/requests on each endpoint (oldest first)"
for s in "orders $DA" "payments $DB"; do
  set -- $s
  say "\$ curl $2/debug/requests      ($1; id, age, state, path)"
  rows "$2" | indent
done
say "Look at: the age column.  Normal requests are a few ms old; the ones at"
say "the top are older than anything healthy here (> ${AGE_S}s): the runaways."

if [ -x "$BIN/h2top" ]; then
  section "the same with h2top --once"
  run 10 "$BIN/h2top" --endpoints "$DA,$DB" --once | indent
else
  section "h2top"
  say "h2top is not built in this tree yet (it is being written); when it is,"
  say "\`h2top --once $DA $DB\` shows both services on one screen."
fi

section "cancel every request older than ${AGE_S}s, with the token"
found=0; canceled=0; found_a=0; found_b=0
for s in "orders $DA" "payments $DB"; do
  set -- $s
  for id in $(rows "$2" old | awk '{print $1}'); do
    found=$((found + 1))
    [ "$1" = orders ] && found_a=$((found_a + 1)) || found_b=$((found_b + 1))
    say "\$ curl -X POST -H 'Authorization: Bearer $TOKEN' '$2/debug/requests/$id/cancel?reason=runaway'"
    out=$(curl -s --max-time 5 -X POST -H "Authorization: Bearer $TOKEN" \
      "$2/debug/requests/$id/cancel?reason=runaway")
    say "  $out"
    case "$out" in *'"canceled":true'*) canceled=$((canceled + 1)) ;; esac
  done
done

section "the clients of the runaway requests see their streams reset and exit"
for p in "$RA" "$RB"; do
  wait_exit "$p" 10 || die "a runaway client (pid $p) still waits after the cancel"
done
grep -h "h2stat:" "$WORK"/runaway-*.err | sort | uniq -c | sed 's/^ */  /'

section "how they ended: GET /debug/recent, requests with an error"
# ended DIAG: how many of the recent requests ended canceled for "runaway".
ended() {
  curl -s --max-time 5 "$1/debug/recent" | python3 -c '
import json, sys
n = 0
for r in json.load(sys.stdin)["recent"]:
    if r.get("error"):
        print("%6d %8.2fs  %-18s reason=%s  %s" % (r["id"], r["age_us"] / 1e6,
              r.get("error_name"), r.get("cancel_reason"), r["path"]), file=sys.stderr)
    if r.get("error_name") == "H2T_ERR_CANCELED" and r.get("cancel_reason") == "runaway":
        n += 1
print(n)
'
}
ended_a=$(ended "$DA" 2>"$WORK/recent-a"); ended_b=$(ended "$DB" 2>"$WORK/recent-b")
say "\$ curl $DA/debug/recent      (orders)"; indent <"$WORK/recent-a"
say "\$ curl $DB/debug/recent      (payments)"; indent <"$WORK/recent-b"
say "Look at: error_name H2T_ERR_CANCELED with the reason given; the normal"
say "requests finished ok and are not among them."

say ""
say "answer: $found runaway requests (older than ${AGE_S}s) on 2 services ($found_a on orders $A_AUTH, $found_b on payments $B_AUTH); $canceled canceled through the endpoint, $((ended_a + ended_b)) ended H2T_ERR_CANCELED"
