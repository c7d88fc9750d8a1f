#!/bin/bash
# A/B of two broker binaries under one odradek-bench command, alternating A B A B ... in one
# session: fresh data dir per run, broker pinned to CPU 0 (one shard), bench to CPU 1. Prints
# each run's summary lines (ceiling, throughput, latency percentiles, accounting, errors).
#   Usage: perf/scripts/ab-bench.sh BROKER_A BROKER_B ROUNDS BENCH_SUBCOMMAND [BENCH ARGS...]
#   e.g.   perf/scripts/ab-bench.sh /tmp/a /tmp/b 3 produce --duration-s 15 --warmup-s 3
#          perf/scripts/ab-bench.sh /tmp/a /tmp/b 3 suite w3 --scale 0.5
# A `suite` run also measures the ceiling of the broker's data dir; its JSON/SVG go to a temp dir.
set -u
A=$1; B=$2; ROUNDS=$3; shift 3
CMD=("$@")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/perf/scripts/broker.sh"
BENCH=${BENCH:-${CARGO_TARGET_DIR:-$ROOT/target}/release/odradek-bench}
DATA=$(mktemp -d -t odradek-ab-XXXXXX)
port=19500
for r in $(seq 1 "$ROUNDS"); do
  for which in A B; do
    bin=$A; [ $which = B ] && bin=$B
    port=$((port + 1))
    rm -rf "$DATA/data"
    start_broker "$bin" $port "$DATA/data" "$DATA/broker.log"
    echo "== $which run $r ($bin, load $(cut -d' ' -f1-3 /proc/loadavg))"
    common=(--bootstrap 127.0.0.1:$port --cores 1-1)
    if [ "${CMD[0]}" = suite ]; then
      common+=(--server-cpu 0 --data-dir "$DATA/data" --results-dir "$DATA")
    else
      common+=(--quiet)
    fi
    taskset -c 1 "$BENCH" "${CMD[@]:0:1}" "${common[@]}" "${CMD[@]:1}" 2>&1 \
      | grep -E "^(ceiling|produce|consume|e2e|  [a-z-]+ latency|acknowledged|fraction|errors?:)"
    stop_broker
  done
done
rm -rf "$DATA"
