#!/usr/bin/env bash
# Every symbol libh2trace.a and libh2trace_diag.a define with external
# linkage carries the library's prefix (h2t_ public, h2t__ internal): an
# application linking a static library may define its own profile_init or
# writer_new.  The shared libraries export only the public h2t_ API.
set -euo pipefail
build=$2
fail=0
for lib in h2trace h2trace_diag; do
  a=$build/lib/lib$lib.a
  [ -f "$a" ] || { echo "symbols: $a not built"; exit 1; }
  # (ASan names an indicator after each global: __odr_asan.<name>)
  bad=$(nm -g --defined-only "$a" | awk 'NF==3 && $2 ~ /[TDBRCVGS]/ {print $3}' |
        sed 's/^__odr_asan\.//' | grep -v '^h2t_' | sort -u || true)
  if [ -n "$bad" ]; then
    echo "symbols: lib$lib.a: $(echo "$bad" | wc -l) global symbols without the h2t_ prefix:"
    echo "$bad"
    fail=1
  fi
  # and the shared library exports only the public h2t_ API (hidden visibility)
  so=$(ls "$build"/lib/lib$lib.so.* 2>/dev/null | head -1 || true)
  if [ -n "$so" ]; then
    leak=$(nm -D --defined-only "$so" | awk 'NF==3 && $2 ~ /[TDBRCV]/ {print $3}' |
           grep -v '^h2t_' | grep -v '^_\(init\|fini\|edata\|end\|_bss_start\)$' || true)
    leak+=$(nm -D --defined-only "$so" | awk 'NF==3 && $2 ~ /[TDBRCV]/ {print $3}' | grep '^h2t__' || true)
    if [ -n "$leak" ]; then
      echo "symbols: $(basename "$so") exports internals:"; echo "$leak"; fail=1
    fi
  fi
done
# The diagnostics library exports the endpoint and nothing of the core.
so=$(ls "$build"/lib/libh2trace_diag.so.* 2>/dev/null | head -1 || true)
if [ -n "$so" ]; then
  other=$(nm -D --defined-only "$so" | awk 'NF==3 && $2 ~ /[TDBRCV]/ {print $3}' |
          grep '^h2t_' | grep -v '^h2t_diag_' || true)
  if [ -n "$other" ]; then
    echo "symbols: $(basename "$so") exports more than h2t_diag_*:"; echo "$other"; fail=1
  fi
fi
[ "$fail" = 0 ] || exit 1
echo "symbols: ok"
