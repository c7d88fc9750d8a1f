#!/bin/bash
# Runs W4's shape by hand (e2e, 16 partitions, 4 producers, 2 consumers) against a fresh broker
# on CPU 0 with the bench on CPU 1, reads the broker's /metrics once a second meanwhile, and
# prints per second: group-commit rounds (count, mean, how many took over 25 / 50 / 100 ms),
# the mean durable wait of an acks=all produce, fdatasyncs (count, mean, over 25 / 50 /
# 100 ms), the broker's CPU and its write rate, then the bench's e2e p99 per second. Answers
# "is this second's tail a long round or a queue?". Leaves the bench's JSON and output and the
# samples in OUT_DIR (default: a new temporary directory, named at the end) and deletes the
# broker's data.
#   Usage: [BROKER=path] perf/scripts/e2e-rounds.sh RATE [SECONDS] [OUT_DIR]   (BROKER: the
#          broker binary or a wrapper script; default target/release/odradek)
set -eu
RATE=$1
RUN_SECONDS=${2:-25}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${3:-$(mktemp -d -t e2e-rounds-XXXXXX)}
mkdir -p "$OUT"
PORT=19711
# shellcheck source=perf/scripts/broker.sh
source "$ROOT/perf/scripts/broker.sh"
start_broker "${BROKER:-$ROOT/target/release/odradek}" "$PORT" "$OUT/data" "$OUT/broker.log"
taskset -c 1 "$ROOT/target/release/odradek-bench" e2e --bootstrap "127.0.0.1:$PORT" \
  --cores 1-1 --quiet --partitions 16 --producers-per-core 4 --consumers-per-core 2 \
  --rate "$RATE" --duration-s "$RUN_SECONDS" --warmup-s 3 --json "$OUT/e2e.json" \
  >"$OUT/bench.out" 2>&1 &
BENCH_PID=$!
WANTED='^odradek_(group_commit_round_duration_seconds|fsync_duration_seconds)_(sum|count)|^odradek_produce_durable_wait_seconds_(sum|count)|^odradek_io_file_written_bytes_total|^odradek_(group_commit_round|fsync)_duration_seconds_bucket.*le="0\.(025|05|1)"'
while kill -0 "$BENCH_PID" 2>/dev/null; do
  echo "T $(date +%s.%N) $(cpu_ticks "$BROKER_PID")"
  curl -s "http://127.0.0.1:9644/metrics" | grep -E "$WANTED" || true
  sleep 1
done >"$OUT/metrics.log"
wait "$BENCH_PID" || echo "the bench exited with an error: $OUT/bench.out" >&2
stop_broker
rm -rf "$OUT/data"
python3 "$ROOT/perf/scripts/e2e-rounds.py" "$OUT"
tail -3 "$OUT/bench.out"
echo "recorded in $OUT"
