#!/bin/bash
# Idempotent vs transactional produce on one broker binary, alternating I T I T ... in one
# session: fresh data dir per run, broker pinned to CPU 0 (one shard), bench to CPU 1. Both modes
# run the same load (ARGS); the transactional one adds --transactional-records PER_TXN.
# Prints each run's summary lines and, at the end, one table row per run (rec/s, MB/s, p50/p99
# produce latency, transactions/s, EndTxn and AddPartitionsToTxn p50/p99) and the ratio T/I of
# each round; every run's JSON stays in OUT.
#   Usage: perf/scripts/txn-vs-idempotent.sh BROKER ROUNDS PER_TXN OUT [BENCH PRODUCE ARGS...]
#   e.g.   perf/scripts/txn-vs-idempotent.sh target/release/odradek 3 100 /tmp/txn \
#            --partitions 16 --record-size 1024 --acks all --linger-ms 1 --duration-s 25 \
#            --warmup-s 5 --producers-per-core 4
set -u
BROKER=$1; ROUNDS=$2; PER_TXN=$3; OUT=$4; shift 4
ARGS=("$@")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/perf/scripts/broker.sh"
BENCH=${BENCH:-${CARGO_TARGET_DIR:-$ROOT/target}/release/odradek-bench}
mkdir -p "$OUT"
DATA=$(mktemp -d -t odradek-txn-XXXXXX)
port=19600
for r in $(seq 1 "$ROUNDS"); do
  for mode in idempotent transactional; do
    port=$((port + 1))
    rm -rf "$DATA/data"
    start_broker "$BROKER" $port "$DATA/data" "$DATA/broker.log"
    extra=(--idempotent)
    [ $mode = transactional ] && extra=(--transactional-records "$PER_TXN")
    echo "== $mode round $r (load $(cut -d' ' -f1-3 /proc/loadavg))"
    taskset -c 1 "$BENCH" produce --bootstrap 127.0.0.1:$port --cores 1-1 --quiet \
      --json "$OUT/$mode-$r.json" "${extra[@]}" "${ARGS[@]}" 2>&1 \
      | grep -E "^(produce|  [A-Za-z (),-]+latency|  transactions|errors|error)"
    stop_broker
  done
done
rm -rf "$DATA"

echo
echo "| round | mode | rec/s | MB/s | p50 ms | p99 ms | txn/s | EndTxn p50/p99 ms | AddPartitionsToTxn p50/p99 ms | load avg |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for r in $(seq 1 "$ROUNDS"); do
  for mode in idempotent transactional; do
    jq -r --arg r "$r" --arg m "$mode" '
      def ms: (. / 100 | round) / 10;
      .produce as $p | $p.transactions as $t |
      "| \($r) | \($m) | \($p.records_per_s) | \($p.mb_per_s) | \($p.latency_us.p50 | ms) | \($p.latency_us.p99 | ms) | " +
      (if $t then "\($t.committed_per_s) | \($t.commit_latency_us.p50 | ms) / \($t.commit_latency_us.p99 | ms) | \($t.add_partitions_latency_us.p50 | ms) / \($t.add_partitions_latency_us.p99 | ms)" else "– | – | –" end) +
      " | \(.machine.load_average) |"' "$OUT/$mode-$r.json"
  done
done
echo
for r in $(seq 1 "$ROUNDS"); do
  i=$(jq .produce.records_per_s "$OUT/idempotent-$r.json")
  t=$(jq .produce.records_per_s "$OUT/transactional-$r.json")
  echo "round $r: transactional/idempotent = $(jq -n --argjson t "$t" --argjson i "$i" '($t / $i * 1000 | round) / 1000')"
done
