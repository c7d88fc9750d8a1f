#!/bin/bash
# Every workload's suite in one session, as perf/README.md's snapshot table records it: a fresh
# broker and data directory per workload, the broker pinned to CPU 0 (one shard), the bench to
# CPU 1; each suite measures its own ceiling on the broker's data disk and writes its JSON and
# SVG to perf/results/ (W4 and W5 take their rates from the W1 result just written).
#   Usage: perf/scripts/suite-all.sh [WORKLOAD...]     (default: w1 w2 w3 w4 w5 w6)
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/perf/scripts/broker.sh"
release_binaries
WORKLOADS=("$@")
[ ${#WORKLOADS[@]} -eq 0 ] && WORKLOADS=(w1 w2 w3 w4 w5 w6)
DATA=$(mktemp -d -t odradek-suite-XXXXXX)
trap 'rm -rf "$DATA"' EXIT
port=19620
status=0
for w in "${WORKLOADS[@]}"; do
  port=$((port + 1))
  rm -rf "$DATA/data"
  start_broker "$BROKER" $port "$DATA/data" "$DATA/broker-$w.log"
  echo "== $w (load $(cut -d' ' -f1-3 /proc/loadavg))"
  (cd "$ROOT" && taskset -c 1 "$BENCH" suite "$w" --bootstrap 127.0.0.1:$port --cores 1-1 \
    --server-cpu 0 --data-dir "$DATA/data" --results-dir "$ROOT/perf/results" --quiet) \
    || status=1
  stop_broker 2>/dev/null
done
exit $status
