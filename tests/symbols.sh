#!/usr/bin/env bash
# Every symbol libh2trace.a defines with external linkage carries the
# library's prefix (h2t_ public, h2t__ internal): an application linking the
# static library may define its own profile_init or writer_new.
set -euo pipefail
build=$2
a=$build/lib/libh2trace.a
[ -f "$a" ] || { echo "symbols: $a not built"; exit 1; }
bad=$(nm -g --defined-only "$a" | awk 'NF==3 && $2 ~ /[TDBRCVGS]/ {print $3}' |
      grep -v '^h2t_' | grep -v '^__odr_asan\.' | sort -u || true)
if [ -n "$bad" ]; then
  echo "symbols: $(echo "$bad" | wc -l) global symbols without the h2t_ prefix:"
  echo "$bad"
  exit 1
fi
# and the shared library exports only the public h2t_ API (hidden visibility)
so=$(ls "$build"/lib/libh2trace.so.* 2>/dev/null | head -1)
if [ -n "$so" ]; then
  leak=$(nm -D --defined-only "$so" | awk 'NF==3 && $2 ~ /[TDBRCV]/ {print $3}' | grep '^h2t__' || true)
  if [ -n "$leak" ]; then
    echo "symbols: the shared library exports internals:"; echo "$leak"; exit 1
  fi
fi
echo "symbols: ok"
