#!/bin/bash
# A/B of two broker binaries under one `odradek-bench suite` workload, alternating A B A B ... in
# one session: fresh data dir per run, broker pinned to CPU 0 (one shard), bench to CPU 1.
# Prints each run's ceiling, throughput and fraction lines; JSON/SVG go to a temp dir.
#   Usage: perf/scripts/ab-suite.sh BROKER_A BROKER_B ROUNDS WORKLOAD [SUITE ARGS...]
#   e.g.   perf/scripts/ab-suite.sh /tmp/a /tmp/b 3 w3 --scale 0.5
set -u
A=$1; B=$2; ROUNDS=$3; W=$4; shift 4
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BENCH=${BENCH:-${CARGO_TARGET_DIR:-$ROOT/target}/release/odradek-bench}
DATA=$(mktemp -d -t odradek-ab-XXXXXX)
port=19700
for r in $(seq 1 "$ROUNDS"); do
  for which in A B; do
    bin=$A; [ $which = B ] && bin=$B
    port=$((port + 1))
    rm -rf "$DATA/data"
    taskset -c 0 "$bin" serve --listen 127.0.0.1:$port --data-dir "$DATA/data" --cores 0-0 >"$DATA/broker.log" 2>&1 &
    pid=$!
    for i in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
    echo "== $which run $r ($bin, load $(cut -d' ' -f1-3 /proc/loadavg))"
    taskset -c 1 "$BENCH" suite "$W" --bootstrap 127.0.0.1:$port --cores 1-1 --server-cpu 0 \
      --data-dir "$DATA/data" --results-dir "$DATA" "$@" 2>&1 \
      | grep -E "^(ceiling|produce:|consume:|  [a-z-]+ latency|acknowledged|fraction)"
    kill "$pid"; wait "$pid"
  done
done
rm -rf "$DATA"
