#!/bin/bash
# The broker's two memory targets (issue 3), each against a fresh broker and data directory,
# the broker pinned to CPU 0 (one shard) and the bench to CPU 1:
#   1. W1's peak resident set: the W1 suite against a broker with its default configuration
#      (cache.bytes 128 MiB), then the broker's VmHWM. Target: < 256 MiB + the cache.
#   2. Memory per idle partition: the broker's VmRSS before and after a topic of 10,000
#      partitions is created and given one record, with cache.pretouch=false (with pretouch on,
#      the partitions' memory comes out of the pretouched pages and the resident set does not
#      move). Target: < 64 KiB per partition.
#   Usage: perf/scripts/memory.sh [ROUNDS]       (default 1; prints one line per measurement)
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/perf/scripts/broker.sh"
release_binaries
ROUNDS=${1:-1}
PARTITIONS=10000
DATA=$(mktemp -d -t odradek-memory-XXXXXX)
trap 'rm -rf "$DATA"' EXIT
RESULTS="$DATA/results"
mkdir -p "$RESULTS"

status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

port=19660
for round in $(seq 1 "$ROUNDS"); do
  port=$((port + 1))
  rm -rf "$DATA/data"
  start_broker "$BROKER" $port "$DATA/data" "$DATA/broker-w1.log"
  (cd "$ROOT" && taskset -c 1 "$BENCH" suite w1 --bootstrap 127.0.0.1:$port --cores 1-1 \
    --server-cpu 0 --data-dir "$DATA/data" --results-dir "$RESULTS" --quiet) \
    | grep -E "^produce:" | head -1
  echo "round $round: W1 broker peak RSS $(($(status_kb "$BROKER_PID" VmHWM) / 1024)) MiB" \
    "(load $(cut -d' ' -f1 /proc/loadavg))"
  stop_broker 2>/dev/null

  port=$((port + 1))
  rm -rf "$DATA/data"
  start_broker "$BROKER" $port "$DATA/data" "$DATA/broker-idle.log" -o cache.pretouch=false
  sleep 1
  before=$(status_kb "$BROKER_PID" VmRSS)
  taskset -c 1 "$BENCH" produce --bootstrap 127.0.0.1:$port --cores 1-1 --topic idle \
    --partitions $PARTITIONS --records 1 --quiet >"$DATA/idle.out" 2>&1 \
    || { echo "round $round: idle produce failed:"; cat "$DATA/idle.out"; }
  sleep 2
  after=$(status_kb "$BROKER_PID" VmRSS)
  echo "round $round: $PARTITIONS idle partitions: RSS $before -> $after kB," \
    "$(awk -v a="$after" -v b="$before" -v n=$PARTITIONS 'BEGIN {printf "%.2f", (a - b) / n}') KiB each"
  stop_broker 2>/dev/null
done
