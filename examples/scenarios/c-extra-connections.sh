#!/usr/bin/env bash
# (c) More connections than expected, explained per connection by h2stat.
#
#   examples/scenarios/c-extra-connections.sh [--short] [BUILD_DIR]
#
# HTTP/2 should carry P concurrent requests on one connection.  h2stat -p P
# against an h2serve that allows 100 streams per connection shows exactly
# that; against one started with --max-streams 2 the same command opens
# several connections, and h2stat's `conn #N new: <reason>` line says why
# each one was opened.
. "$(dirname "$0")/lib.sh"

P=10 # more than 4 connections x 2 streams: some requests must queue

say "(c) more connections than expected"
say "A client sends $P requests at once to one origin and the server sees several"
say "connections.  Why was each opened?"

# conns FILE: "conn_id reason" for each connection h2stat saw opened.
conns() { sed -n 's/^conn #\([0-9]*\) new: \([a-z_]*\).*/\1 \2/p' "$1" | sort -un; }

section "a server with the default limit (100 streams per connection)"
serve wide; WIDE=$URL
run 30 "$BIN/h2stat" -p "$P" "$WIDE/delay?ms=200" >"$WORK/wide" || die "h2stat failed"
say "requests per connection line (the 'shared' count dropped):"
grep -E '^conn #' "$WORK/wide" | sed 's/ (shared.*//' | sort | uniq -c | sed 's/^ */  /'
wide_n=$(conns "$WORK/wide" | wc -l)
say "$P requests on $wide_n connection(s): as expected."

section "the same client against a server started with --max-streams 2"
serve narrow --max-streams 2; NARROW=$URL
run 30 "$BIN/h2stat" -p "$P" "$NARROW/delay?ms=200" >"$WORK/narrow" || die "h2stat failed"
say "h2stat's per-request lines (which connection, and why):"
grep -E '^(\[req|conn #)' "$WORK/narrow" | paste - - |
  sed 's/^\[req \([0-9/]*\)\] GET [^ ]*\t/  req \1: /' | sort -t/ -k1.7n
say ""
say "per connection, the reason it was opened:"
conns "$WORK/narrow" | sed 's/^\([0-9]*\) \(.*\)/  conn #\1 new: \2/'
say ""
say "Look at: 'new: max_streams' — every open connection was at the server's"
say "MAX_CONCURRENT_STREAMS (the reused lines say 'of max 2'), so the client"
say "opened another, up to max_conns_per_origin (4); past that, requests queue"
say "and get a stream when one frees ('reused').  The fix is on the server:"
say "raise its stream limit (see doc/guide.md, 'Debugging connection reuse')."

n=$(conns "$WORK/narrow" | wc -l)
reasons=$(conns "$WORK/narrow" | awk '!c[$2]++ { o[++k] = $2 } END { for (i = 1; i <= k; i++) printf "%s%d %s", (i > 1 ? ", " : ""), c[o[i]], o[i] }')
queued=$(grep -c '^conn #[0-9]* reused' "$WORK/narrow")
maxs=$(sed -n 's/.*of max \([0-9]*\) streams.*/\1/p' "$WORK/narrow" | head -1)
say ""
say "answer: $P requests on $n connections ($wide_n with the default limit): $reasons; server max_streams ${maxs:-?}, $queued requests waited for a free stream"
