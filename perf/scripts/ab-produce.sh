#!/bin/bash
# A/B produce throughput: alternate two broker binaries, fresh data dir each, broker on CPU 0,
# librdkafka producer (examples/produce_perf, build with `cargo build --release --examples`) on
# CPU 1. Prints, per run, the broker's CPU seconds during the measured run and the producer's
# JSON line.   Usage: perf/scripts/ab-produce.sh BROKER_A BROKER_B [ROUNDS] [RECORDS] [SIZE]
set -u
A=$1; B=$2; ROUNDS=${3:-3}; N=${4:-1000000}; SIZE=${5:-1024}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/perf/scripts/broker.sh"
PERF=${PRODUCE_PERF:-${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/produce_perf}
DATA=$(mktemp -d -t odradek-ab-XXXXXX)
for r in $(seq 1 $ROUNDS); do
  for which in A B; do
    bin=$A; [ $which = B ] && bin=$B
    rm -rf "$DATA"; port=$((19300 + r))
    start_broker "$bin" $port "$DATA" "$DATA.log" --override num.partitions=16
    taskset -c 1 $PERF 127.0.0.1:$port warm 200000 $SIZE all >/dev/null
    t0=$(cpu_ticks "$BROKER_PID")
    out=$(taskset -c 1 $PERF 127.0.0.1:$port run $N $SIZE all)
    t1=$(cpu_ticks "$BROKER_PID")
    echo "$which broker_cpu_s=$(awk -v a="$t0" -v b="$t1" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.2f", (b-a)/hz}') $out"
    stop_broker
  done
done
rm -rf "$DATA" "$DATA.log"
