#!/usr/bin/env bash
# (e) A writer bottleneck: spawn against reused, in h2bench writer and in a
# causal profile.
#
#   examples/scenarios/e-writer-bottleneck.sh [--short] [BUILD_DIR]
#
# The server's frame writer can start a thread per write (--writer spawn,
# like Go's writeFrameAsync) or keep one writer thread (reused, the
# default).  h2bench writer runs an in-process server in each mode under
# h2load and prints the reused/spawn ratio.  Without --short, when coz is
# installed and a coz build exists (cmake -S . -B build-coz -DH2TRACE_COZ=ON;
# its h2serve has a progress point per finished request), the spawn-mode
# h2serve also runs under `coz run` while h2load drives it, and the lines
# whose speed-up would speed up requests the most are listed.  --short skips
# the coz run and answers from the writer ratio.
. "$(dirname "$0")/lib.sh"

COZ_BUILD=$ROOT/build-coz
COZ_S=20

say "(e) a writer bottleneck"
say "A server's throughput is far below what its handlers can do, and its CPU"
say "is not in the handlers.  Is it the way frames are written?"

section "h2bench writer: the same load on each writer mode (h2load -m 10)"
if [ "$SHORT" = 1 ]; then
  run 60 "$BIN/h2bench" writer --quick --h2c --body 16k --modes reused,spawn >"$WORK/writer" 2>&1
else
  run 120 "$BIN/h2bench" writer --duration 1 --rounds 3 --h2c --body 16k --conns 1,100 \
    --modes reused,spawn >"$WORK/writer" 2>&1
fi
rc=$?
indent <"$WORK/writer"
[ $rc -eq 0 ] || die "h2bench writer exited $rc (is h2load installed?)"
say "Look at: the spawn rows.  A thread per frame costs a clone, a schedule and"
say "a join per 16 KiB: its p99 shows the queue behind one connection's writes."

coz_note="coz run skipped"
section "causal profile of h2serve --writer spawn (coz)"
if [ "$SHORT" = 1 ]; then
  say "skipped in --short mode."
  coz_note="coz run skipped (--short)"
elif ! command -v coz >/dev/null || ! command -v h2load >/dev/null; then
  say "skipped: coz or h2load is not installed."
elif [ ! -x "$COZ_BUILD/bin/h2serve" ]; then
  say "skipped: no coz build; make one with"
  say "  cmake -S . -B build-coz -DH2TRACE_COZ=ON && cmake --build build-coz --target h2serve"
else
  head -c 16384 /dev/zero | tr '\0' x >"$WORK/www/16k.txt"
  say "\$ coz run -b MAIN -b '%libh2trace%' -o profile.coz --- build-coz/bin/h2serve --h2c --port 0 --writer spawn &"
  start coz coz run -b MAIN -b '%libh2trace%' -o "$WORK/profile.coz" --- \
    "$COZ_BUILD/bin/h2serve" --h2c --address 127.0.0.1 --port 0 --root "$WORK/www" --writer spawn
  COZ=$LAST_PID
  poll 20 grep -q serving "$WORK/coz.out" || die "h2serve under coz did not start: $(tail -5 "$WORK/coz.err")"
  CURL=$(sed -n 's|.*serving .* on \(http://127\.0\.0\.1:[0-9]*\) .*|\1|p' "$WORK/coz.out" | head -1)
  run $((COZ_S + 20)) h2load -D "$COZ_S" -c 8 -m 10 "$CURL/16k.txt" >"$WORK/h2load" 2>&1
  grep -E '^(finished|requests:)' "$WORK/h2load" | indent
  kill -INT "$COZ" 2>/dev/null # h2serve's graceful stop: coz writes the profile at exit
  wait_exit "$COZ" 20 || say "(coz did not exit in 20 s)"
  if [ -s "$WORK/profile.coz" ]; then
    # Per line: the request rate at the largest virtual speed-up tried,
    # against the rate with no speed-up (what `coz plot` draws).
    python3 - "$WORK/profile.coz" >"$WORK/coz.top" <<'PY'
import collections, sys
exp = None
acc = collections.defaultdict(lambda: [0, 0])  # (line, speedup) -> delta, ns
for raw in open(sys.argv[1]):
    f = raw.rstrip("\n").split("\t")
    kv = dict(x.split("=", 1) for x in f[1:] if "=" in x)
    if f[0] == "experiment":
        exp = (kv["selected"], round(float(kv["speedup"]), 2), int(kv["duration"]))
    elif f[0] == "throughput-point" and exp and kv.get("name") == "server_request_done":
        a = acc[exp[:2]]
        a[0] += int(kv["delta"]); a[1] += exp[2]
base = [d / n for (l, s), (d, n) in acc.items() if s == 0 and n]
base = sum(base) / len(base) if base else 0
rows = []
for line in {l for l, s in acc}:
    sp = [(s, d / n) for (l, s), (d, n) in acc.items() if l == line and s > 0 and n]
    if sp and base:
        s, r = max(sp)
        rows.append((r / base - 1, s, line, sum(1 for x in sp)))
rows.sort(reverse=True)
print("experiments on %d lines, baseline %.1f requests/s" % (len({l for l, s in acc}), base * 1e9))
for eff, s, line, n in rows[:5]:
    print("%+6.1f%% requests/s if %s were %.0f%% faster (%d speed-up%s tried)" %
          (100 * eff, "/".join(line.split("/")[-2:]), 100 * s, n, "s" if n > 1 else ""))
PY
    indent <"$WORK/coz.top"
    top=$(sed -n '2s/^ *//p' "$WORK/coz.top")
    nw=$(sed -n '2,$p' "$WORK/coz.top" | grep -c 'server/writer\.c:')
    coz_note="coz top line: ${top:-none (no experiment reached a progress point)}; server/writer.c lines in the top 5: $nw"
    cp "$WORK/profile.coz" "$COZ_BUILD/profile.coz"
    say "Look at: lines in server/writer.c (spawn_next: a thread per frame) are"
    say "the writer's path, not the handler's.  A line tried at one speed-up only"
    say "is a hint; a longer run tries more.  The whole profile:"
    say "  coz plot -f build-coz/profile.coz"
  else
    say "coz wrote no profile (see its stderr):"; tail -5 "$WORK/coz.err" | indent
    coz_note="coz wrote no profile"
  fi
fi

ratio=$(sed -n 's/^ *reused\/spawn *\([0-9.]*\)x.*/\1/p' "$WORK/writer" | head -1)
rps_r=$(awk '$1 == "reused" { print $2; exit }' "$WORK/writer")
rps_s=$(awk '$1 == "spawn" { print $2; exit }' "$WORK/writer")
[ -n "$ratio" ] || die "no reused/spawn line from h2bench writer"
say ""
say "answer: reused/spawn ${ratio}x req/s (reused $rps_r req/s, spawn $rps_s req/s, h2c 16 KiB -c1); $coz_note"
