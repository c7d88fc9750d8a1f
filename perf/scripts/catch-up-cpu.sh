#!/bin/bash
# W3's catch-up read by hand, alternating broker binaries, with what the broker spends on it:
# per run, a fresh broker (CPU 0, one shard) and data dir, 4 GiB of 1 KiB records produced to 16
# partitions, then one consumer (CPU 1) reads them from the earliest offsets. Prints the
# broker's CPU time over the consume (all its threads, /proc/PID/stat), the data disk's reads
# over it (/proc/diskstats: requests, average size and latency, time busy) and the bench's summary.
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
# The data directory's block device as /proc/diskstats names it (a partition has its own line
# there; a device-mapper volume's name differs from its dm-N line and prints no disk figures).
DEV=$(basename "$(df --output=source "$DATA" | tail -1)")
disk_line() { awk -v d="$DEV" '$3 == d' /proc/diskstats; echo "$(date +%s%N)"; }
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
    disk_before=$(disk_line)
    before=$(cpu_ticks "$BROKER_PID")
    taskset -c 1 "$BENCH" consume "${common[@]}" --records 4194304 \
      | grep -E "^(consume|acknowledged|load generator|errors?)"
    after=$(cpu_ticks "$BROKER_PID")
    disk_after=$(disk_line)
    awk -v t=$((after - before)) -v hz="$TICK" 'BEGIN { printf "broker CPU over the consume: %.2f s\n", t / hz }'
    # diskstats fields: 4 reads completed, 6 sectors read, 7 ms reading, 13 ms busy (io_ticks)
    printf '%s\n%s\n' "$disk_before" "$disk_after" | awk -v dev="$DEV" '
      NR == 1 { r = $4; s = $6; t = $7; b = $13; next }
      NR == 2 { t0 = $1; next }
      NR == 3 { dr = $4 - r; ds = $6 - s; dt = $7 - t; db = $13 - b; next }
      NR == 4 && dr > 0 { printf "disk %s over the consume: %d reads, %.0f KiB each, %.2f ms each, busy %d ms of %.0f\n",
                          dev, dr, ds / 2 / dr, dt / dr, db, ($1 - t0) / 1e6 }'
    [ -n "$perf_pid" ] && wait "$perf_pid"
    stop_broker
  done
done
