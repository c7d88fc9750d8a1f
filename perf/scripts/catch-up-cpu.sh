#!/bin/bash
# W3's catch-up read by hand, alternating broker binaries, with what the broker spends on it:
# per run, a fresh broker (CPU 0, one shard) and data dir, 4 GiB of 1 KiB records produced to 16
# partitions, then one consumer (CPU 1) reads them from the earliest offsets. Prints the
# broker's CPU time over the consume (all its threads, /proc/PID/stat) and the bench's summary.
# With PROFILE=1, `perf record` samples the broker for 2 s of the consume (call graphs with
# DWARF) into perf-catch-up-<A|B>-<round>.data in the current directory.
#   Usage: perf/scripts/catch-up-cpu.sh BROKER_A BROKER_B ROUNDS
set -u
A=$1; B=$2; ROUNDS=$3
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/perf/scripts/broker.sh"
BENCH=${BENCH:-${CARGO_TARGET_DIR:-$ROOT/target}/release/odradek-bench}
DATA=$(mktemp -d -t odradek-catch-up-XXXXXX)
trap 'rm -rf "$DATA"' EXIT
TICK=$(getconf CLK_TCK)
port=19540
for r in $(seq 1 "$ROUNDS"); do
  for which in A B; do
    bin=$A; [ $which = B ] && bin=$B
    port=$((port + 1))
    rm -rf "$DATA/data"
    start_broker "$bin" $port "$DATA/data" "$DATA/broker.log"
    echo "== $which run $r ($bin, load $(cut -d' ' -f1-3 /proc/loadavg))"
    common=(--bootstrap 127.0.0.1:$port --cores 1-1 --quiet --topic catch-up)
    taskset -c 1 "$BENCH" produce "${common[@]}" --partitions 16 --records 4194304 \
      --producers-per-core 4 | grep -E "^(produce|errors?):"
    sleep 2
    perf_pid=
    if [ -n "${PROFILE:-}" ]; then
      (sleep 1; exec perf record -q -F 499 --call-graph dwarf,32768 -p "$BROKER_PID" \
        -o "perf-catch-up-$which-$r.data" -- sleep 2 >/dev/null 2>&1) &
      perf_pid=$!
    fi
    before=$(cpu_ticks "$BROKER_PID")
    taskset -c 1 "$BENCH" consume "${common[@]}" --records 4194304 \
      | grep -E "^(consume|acknowledged|load generator|errors?)"
    after=$(cpu_ticks "$BROKER_PID")
    awk -v t=$((after - before)) -v hz="$TICK" 'BEGIN { printf "broker CPU over the consume: %.2f s\n", t / hz }'
    [ -n "$perf_pid" ] && wait "$perf_pid"
    stop_broker
  done
done
