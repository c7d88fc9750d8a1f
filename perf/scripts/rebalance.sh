#!/bin/bash
# Consumer-group rebalance benchmark (perf/2026-11-23-rebalance.md): per run, a fresh broker
# (one shard on CPU 0, fresh data dir under target/, group.initial.rebalance.delay.ms=0) and
# `odradek-bench rebalance` on CPU 1: 10 members over 60 partitions consume while a producer
# writes 100,000 records/s of 1 KiB; an 11th member joins at 10 s; the producer stops at 20 s.
# Prints each run's summary; JSON records and broker logs go to OUT.
#   Usage: perf/scripts/rebalance.sh [RUNS] [OUT] [extra odradek-bench rebalance options...]
set -u
RUNS=${1:-3}; shift || true
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/perf/scripts/broker.sh"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${1:-$TARGET/rebalance-runs}; shift || true
cd "$ROOT"
cargo build --release -p odradek-bench --bins && cargo build --release --bin odradek || exit 2
mkdir -p "$OUT"
port=19330
for r in $(seq 1 "$RUNS"); do
  data=$TARGET/rebalance-data-$r
  rm -rf "$data"
  start_broker "$TARGET/release/odradek" $port "$data" "$OUT/broker-$r.log" \
    -o group.initial.rebalance.delay.ms=0
  echo "== run $r (broker pid $BROKER_PID, load $(cut -d' ' -f1-3 /proc/loadavg))"
  taskset -c 1 "$TARGET/release/odradek-bench" rebalance --bootstrap 127.0.0.1:$port --cores 1-1 \
    --partitions 60 --consumers 10 --record-size 1024 --rate 100000 --join-after 10 \
    --duration 20 --json "$OUT/rebalance-$r.json" --quiet "$@"
  echo "exit $?"
  stop_broker
  rm -rf "$data"
done
