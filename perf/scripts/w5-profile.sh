#!/bin/bash
# W5 by hand, alternating two broker builds, with a profile of CPU 0 inside W5's measured
# window: each run starts a fresh broker (CPU 0, one shard) and data directory, runs W5's load
# at W1's rate from CPU 1, records `perf record -F 199 -C 0 -g` for 10 s from 38 s after the
# load began (the bench's clock starts after its pretouch, which may take tens of seconds on a
# VM), and prints records/s, the broker's resident set at the end and the profile's groups
# (perf/scripts/profile-groups.py).
#   Usage: perf/scripts/w5-profile.sh BROKER_A BROKER_B PAIRS OUT_DIR [RATE]
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/perf/scripts/broker.sh"
A=$1 B=$2 PAIRS=$3 OUT=$4 RATE=${5:-1163870}
BENCH=${BENCH:-${CARGO_TARGET_DIR:-$ROOT/target}/release/odradek-bench}
METRICS=http://127.0.0.1:9644/metrics
mkdir -p "$OUT"
DATA=$(mktemp -d -t odradek-w5-XXXXXX)
trap 'rm -rf "$DATA"' EXIT

produced_bytes() {
  curl -s "$METRICS" | awk '/^odradek_produce_bytes_total/ {s += $2} END {print s + 0}'
}

one_run() {
  local name=$1 bin=$2 dir=$OUT/$1
  mkdir -p "$dir"
  rm -rf "$DATA/data"
  start_broker "$bin" 19711 "$DATA/data" "$dir/broker.log"
  taskset -c 1 "$BENCH" produce --bootstrap 127.0.0.1:19711 --cores 1-1 --quiet \
    --partitions 1000 --keys 100000 --producers-per-core 1000 --rate "$RATE" \
    --duration-s 56 --warmup-s 36 --pretouch-mb 3000 >"$dir/bench.out" 2>&1 &
  local bench=$! waited=0
  while [ "$(produced_bytes)" = 0 ] && [ $waited -lt 1200 ]; do
    sleep 0.1
    waited=$((waited + 1))
  done
  sleep 38
  perf record -F 199 -C 0 -g -o "$dir/perf.data" -- sleep 10 >/dev/null 2>&1
  wait $bench
  echo "$name: $(grep -E '^produce:' "$dir/bench.out" | sed 's/.*errored/errored/'), broker RSS $(($(ps -o rss= -p "$BROKER_PID") / 1024)) MiB"
  stop_broker 2>/dev/null
  python3 "$ROOT/perf/scripts/profile-groups.py" "$dir/perf.data"
}

for i in $(seq 1 "$PAIRS"); do
  one_run "a-$i" "$A"
  one_run "b-$i" "$B"
done
