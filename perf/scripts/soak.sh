#!/bin/bash
# Soak run (perf/2026-12-03-soak.md): a fresh broker (one shard on CPU 0, data directory under
# target/, retention checked and the cleaner run every second, no initial group delay) and
# `odradek-bench soak` on CPU 1 for DURATION_S seconds at PLAIN_RATE records/s to a topic whose
# retention deletes segments all through the run, plus COMPACT_RATE records/s to a compacted topic,
# read by a consumer group whose last member leaves and rejoins every 2 minutes. The broker's
# RSS, heap (allocated/free, from its /metrics), batch cache, FDs, CPU and data directory size are
# sampled every 10 s; the bench prints 5-minute windows and the drift verdict and exits 1 on
# drift, loss or errors.
#   Usage: perf/scripts/soak.sh [DURATION_S] [PLAIN_RATE] [COMPACT_RATE] [OUT_BASE] [soak options...]
# Writes OUT_BASE.json, OUT_BASE.svg, OUT_BASE.txt (the bench's output) and OUT_BASE-broker.log.
# NO_BUILD=1 skips the release build; FORCE=1 runs even if another odradek-bench is running.
set -u
DURATION=${1:-1800}; PLAIN=${2:-20000}; COMPACT=${3:-2000}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/perf/scripts/broker.sh"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${4:-$TARGET/soak-$(date -u +%Y%m%dT%H%M%SZ)}
shift $(( $# < 4 ? $# : 4 ))
cd "$ROOT"
if [ "${NO_BUILD:-0}" != 1 ]; then
  cargo build --release -p odradek-bench --bins && cargo build --release --bin odradek || exit 2
fi
# A soak on top of someone else's benchmark would measure both: refuse (compiles are fine).
running='/odradek-bench[^ /]* (produce|consume|e2e|suite|rebalance|soak|ceiling)'
if pgrep -f "$running" >/dev/null && [ "${FORCE:-0}" != 1 ]; then
  echo "another odradek-bench is running (FORCE=1 to run anyway):"
  pgrep -af "$running"
  exit 2
fi
mkdir -p "$(dirname "$OUT")"
port=19440
data=$TARGET/soak-data
rm -rf "$data"
start_broker "$TARGET/release/odradek" $port "$data" "$OUT-broker.log" \
  --override log.retention.check.interval.ms=1000 \
  --override log.cleaner.backoff.ms=1000 --override group.initial.rebalance.delay.ms=0 \
  --override metrics.listen=127.0.0.1:$((port + 1))
pid=$BROKER_PID
echo "== soak: broker pid $pid on CPU 0, bench on CPU 1, $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$OUT.txt"
taskset -c 1 "$TARGET/release/odradek-bench" soak --bootstrap 127.0.0.1:$port --cores 1-1 \
  --duration-s "$DURATION" --plain-rate "$PLAIN" --compact-rate "$COMPACT" \
  --broker-pid "$pid" --broker-data-dir "$data" --broker-metrics 127.0.0.1:$((port + 1)) \
  --json "$OUT.json" --svg "$OUT.svg" "$@" \
  2>&1 | tee -a "$OUT.txt"
rc=${PIPESTATUS[0]}
echo "== exit $rc, $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT.txt"
kill -CONT "$pid" 2>/dev/null # in case the bench died in a --broker-pause-every-s pause
stop_broker
echo "broker log: $(grep -c . "$OUT-broker.log") lines, $(grep -cE 'level=(warn|error)' "$OUT-broker.log") warn/error" | tee -a "$OUT.txt"
rm -rf "$data"
exit "$rc"
