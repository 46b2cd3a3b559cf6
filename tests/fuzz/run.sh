#!/usr/bin/env bash
# Fuzz one target for a while: run.sh BINARY SECONDS SEEDS WORKDIR [libFuzzer
# options...].  New inputs go to WORKDIR/corpus (the seeds stay as they
# are), crashes to WORKDIR/artifacts/.  Exit 77 (skipped) without a binary.
set -euo pipefail
bin=$1 secs=$2 seeds=$3 work=$4
shift 4
if [ ! -x "$bin" ]; then
  echo "no $bin: build the libFuzzer binaries with ./setup.sh fuzz"
  exit 77
fi
mkdir -p "$work/corpus" "$work/artifacts"
# one process, one worker: the machine is shared
exec "$bin" -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 \
  -print_final_stats=1 -artifact_prefix="$work/artifacts/" "$@" \
  "$work/corpus" "$seeds"
