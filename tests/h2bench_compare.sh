#!/bin/bash
# h2bench compare, short: h2serve, nghttpd and h2o (when installed) under
# the same h2load load; the summary lines and the ratio lines are printed
# for every body size and every server got traffic.  (Figures are for
# benchmarks, not asserted here.)  Args: SOURCE_DIR BINARY_DIR.
set -u
command -v h2load >/dev/null || { echo "SKIP: no h2load"; exit 77; }
out=$("$2/bin/h2bench" compare --rounds 1 --duration 1 --transport h2c \
      --bodies 6,16384 2>&1)
rc=$?
echo "$out"
[ $rc -eq 0 ] || { echo "FAIL: exit $rc"; exit 1; }
for b in 6 16384; do
  echo "$out" | grep -qE "^h2c +$b B: +h2serve +[1-9][0-9]* req/s +nghttpd +[1-9][0-9]* req/s" ||
    { echo "FAIL: no summary line for $b B"; exit 1; }
  echo "$out" | grep -qE "^h2c +$b B: h2serve/nghttpd [0-9.]+x$" ||
    { echo "FAIL: no h2serve/nghttpd line for $b B"; exit 1; }
  if command -v h2o >/dev/null; then
    echo "$out" | grep -qE "^h2c +$b B: h2serve/h2o [0-9.]+x$" ||
      { echo "FAIL: no h2serve/h2o line for $b B"; exit 1; }
  fi
done
echo "ok"
