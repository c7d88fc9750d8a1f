#!/bin/bash
# Produce latency with and without compaction, interleaved in ONE run on ONE broker, so that
# the machine's own drift (this VM's p99 moves 100x between runs minutes apart) hits both sides
# alike and each on/off pair is compared minutes, not hours, apart.
#
#   1. One one-shard broker (CPU 0; the bench on CPU 1), data directory under $TMPDIR (loopback
#      only). A compacted topic (1 partition, 64 MiB segments) is filled with FILL_MIB MiB of
#      1 KiB records over KEYS keys while min.compaction.lag.ms holds compaction back.
#   2. Compaction is released (min.compaction.lag.ms=0): one pass over all of it starts and,
#      at the default 50 MiB/s, lasts longer than the measurement.
#   3. PAIRS pairs of windows, order ABBA... (off,on / on,off / ...). Before each window the cap
#      log.cleaner.io.max.bytes.per.second is set on the cluster default (BROKER "", the dynamic
#      config): "off" = 1 byte/s (compaction paused in effect: one 256 KiB read per 10 s at
#      most), "on" = 52428800 (the default). SETTLE s later an open-loop odradek-bench produce
#      (1 KiB, acks=all, RATE rec/s, 4-partition topic on the same shard) runs WINDOW s after a
#      2 s warm-up: each window has its own p50/p99/p99.9.
#   4. Around every window the broker's /metrics (compaction bytes read, pacer rate, slowdowns,
#      fdatasync count and time), /proc/diskstats of the data directory's disk and /proc/stat
#      are read: the table shows that compaction moves in "on" windows and not in "off" ones,
#      and what the disk queue and the pacer did.
# Prints one line per window, the per-pair on/off p99 ratios and their median, and the broker's
# compaction log lines. Stops by itself; kills what it started and removes its data directory.
#   Usage: perf/scripts/compaction-interleaved.sh BROKER [PAIRS] [WINDOW] [FILL_MIB] [KEYS]
# Env: BENCH (odradek-bench), RATE (20000), SETTLE (3), PAUSE_AFTER_FILL (30), OFF_RATE (1),
#      ON_RATE (52428800), OUT (also write the window table here, TSV).
set -u
BROKER=$1; PAIRS=${2:-8}; WINDOW=${3:-15}; FILL_MIB=${4:-6144}; KEYS=${5:-1000}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BENCH=${BENCH:-$ROOT/target/release/odradek-bench}
RATE=${RATE:-20000}
SETTLE=${SETTLE:-3}
PAUSE_AFTER_FILL=${PAUSE_AFTER_FILL:-30}
OFF_RATE=${OFF_RATE:-1}
ON_RATE=${ON_RATE:-52428800}
WARMUP=2
RECORD=1024
FILL_RECORDS=$((FILL_MIB * 1024 * 1024 / RECORD))
for b in "$BROKER" "$BENCH"; do
  [ -x "$b" ] || { echo "not an executable: $b" >&2; exit 2; }
done

DATA=$(mktemp -d -t odradek-interleaved-XXXXXX)
DATADIR=$DATA/data
# Keep well under the free space: the fill, its compacted copy and the measured topic.
avail_mib=$(df -Pm "$DATA" | awk 'NR==2 {print $4}')
if [ "$avail_mib" -lt $((FILL_MIB * 2 + 8192)) ]; then
  echo "only $avail_mib MiB free under $DATA; need $((FILL_MIB * 2 + 8192)) for FILL_MIB=$FILL_MIB" >&2
  rm -rf "$DATA"
  exit 2
fi
dev=$(basename "$(df -P "$DATA" | awk 'NR==2 {print $1}')")

pid=""; bpid=""
cleanup() {
  [ -n "$bpid" ] && kill "$bpid" 2>/dev/null && wait "$bpid" 2>/dev/null
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; fi
  rm -rf "$DATA"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port); mport=$(free_port)
BOOT=127.0.0.1:$port
cli() { "$BROKER" --bootstrap-server "$BOOT" "$@"; }
set_cap() { cli config alter --broker-defaults --add-config "log.cleaner.io.max.bytes.per.second=$1" >/dev/null; }
metric() { # metric NAME: sum of the samples of NAME in the last scrape
  awk -v n="$1" '$1 == n || index($1, n "{") == 1 {s += $2} END {printf "%.6f\n", s}' "$DATA/scrape"
}
scrape() { curl -s --max-time 10 "http://127.0.0.1:$mport/metrics" >"$DATA/scrape"; }
snapshot() { # snapshot: "bytes slowdowns fsync_count fsync_sum rd_sectors wr_sectors weighted_ms io_ms steal total"
  scrape
  local d s
  d=$(awk -v d="$dev" '$3 == d {print $6, $10, $14, $13}' /proc/diskstats)
  s=$(awk '$1 == "cpu" {t = 0; for (i = 2; i <= NF; i++) t += $i; print $9, t}' /proc/stat)
  echo "$(metric odradek_compaction_read_bytes_total) $(metric odradek_compaction_slowdowns_total)" \
    "$(metric odradek_fsync_duration_seconds_count) $(metric odradek_fsync_duration_seconds_sum) $d $s"
}

taskset -c 0 "$BROKER" serve --listen "$BOOT" --data-dir "$DATADIR" --cores 0-0 \
  --override log.cleaner.backoff.ms=500 --override "metrics.listen=127.0.0.1:$mport" \
  >"$DATA/broker.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
echo "# $(date -u +%FT%TZ) $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); disk $dev; $avail_mib MiB free"
echo "# broker $BROKER ($("$BROKER" --version 2>/dev/null)), bench $BENCH"
echo "# pairs $PAIRS, window ${WINDOW} s (+${WARMUP} s warm-up, ${SETTLE} s settle), $RATE rec/s; fill $FILL_MIB MiB / $KEYS keys; off ${OFF_RATE} B/s, on ${ON_RATE} B/s"

cli topic create compacted --partitions 1 --config cleanup.policy=compact \
  --config segment.bytes=67108864 --config min.compaction.lag.ms=86400000 \
  --config min.cleanable.dirty.ratio=0.01 >/dev/null || exit 1
t0=$(date +%s)
taskset -c 1 "$BENCH" produce --bootstrap "$BOOT" --cores 1-1 --topic compacted \
  --partitions 1 --keys "$KEYS" --record-size $RECORD --records "$FILL_RECORDS" --quiet 2>&1 \
  | grep -E "^produce" | sed 's/^/# fill: /'
echo "# fill took $(($(date +%s) - t0)) s; pausing ${PAUSE_AFTER_FILL} s for the disk to absorb it"
sleep "$PAUSE_AFTER_FILL"

# Release compaction with the cap of the first window in force, and wait for the pass.
set_cap "$OFF_RATE"
cli topic alter compacted --config min.compaction.lag.ms=0 >/dev/null || exit 1
for _ in $(seq 1 100); do grep -q "compacted-0: compacting" "$DATA/broker.log" && break; sleep 0.1; done
grep -q "compacted-0: compacting" "$DATA/broker.log" || { echo "compaction did not start" >&2; exit 1; }

state_of() { # window index (0-based) -> off|on, ABBA...: pair p = windows 2p, 2p+1
  local p=$(($1 / 2)) second=$(($1 % 2))
  if [ $(((p + second) % 2)) -eq 0 ]; then echo off; else echo on; fi
}
TSV=${OUT:-$DATA/windows.tsv}
printf "win\tpair\tstate\tstart\tp50_ms\tp99_ms\tp99_9_ms\tmax_ms\tacked_rec_s\terrors\tcompaction_read_mib\tpacer_rate_mib_s\tslowdowns\tfsyncs\tfsync_mean_ms\tdisk_read_mib\tdisk_write_mib\tdisk_queue\tsteal_pct\tload1\n" >"$TSV"
for w in $(seq 0 $((PAIRS * 2 - 1))); do
  st=$(state_of "$w")
  if [ "$st" = on ]; then set_cap "$ON_RATE"; else set_cap "$OFF_RATE"; fi
  sleep "$SETTLE"
  start=$(date -u +%T)
  read -r b0 sl0 fc0 fs0 rd0 wr0 wq0 io0 st0 tt0 <<<"$(snapshot)"
  t_start=$(date +%s.%N)
  taskset -c 1 "$BENCH" produce --bootstrap "$BOOT" --cores 1-1 --topic measured \
    --partitions 4 --record-size $RECORD --rate "$RATE" --duration-s $((WINDOW + WARMUP)) \
    --warmup-s $WARMUP --quiet >"$DATA/bench.out" 2>&1 &
  bpid=$!
  wait "$bpid"; bpid=""
  t_end=$(date +%s.%N)
  read -r b1 sl1 fc1 fs1 rd1 wr1 wq1 io1 st1 tt1 <<<"$(snapshot)"
  pacer=$(metric odradek_compaction_rate_bytes_per_second)
  lat=$(grep -m1 "produce latency:" "$DATA/bench.out")
  prod=$(grep -m1 "^produce:" "$DATA/bench.out")
  num() { sed -nE "s/.*$1 ([0-9.]+).*/\\1/p" <<<"$lat"; }
  acked=$(sed -nE 's/.*errored [0-9,]+; ([0-9,]+) rec\/s.*/\1/p' <<<"$prod" | tr -d ,)
  errs=$(sed -nE 's/.*errored ([0-9,]+);.*/\1/p' <<<"$prod" | tr -d ,)
  awk -v w="$w" -v p=$((w / 2 + 1)) -v s="$st" -v start="$start" \
    -v p50="$(num p50)" -v p99="$(num 'p99')" -v p999="$(num 'p99\.9')" -v mx="$(num max)" \
    -v acked="${acked:-0}" -v errs="${errs:-?}" -v b0="$b0" -v b1="$b1" -v pacer="$pacer" \
    -v sl0="$sl0" -v sl1="$sl1" -v fc0="$fc0" -v fc1="$fc1" -v fs0="$fs0" -v fs1="$fs1" \
    -v rd0="$rd0" -v rd1="$rd1" -v wr0="$wr0" -v wr1="$wr1" -v wq0="$wq0" -v wq1="$wq1" \
    -v st0="$st0" -v st1="$st1" -v tt0="$tt0" -v tt1="$tt1" -v t0="$t_start" -v t1="$t_end" \
    -v load="$(cut -d' ' -f1 /proc/loadavg)" 'BEGIN {
      fc = fc1 - fc0; ms = (t1 - t0) * 1000
      printf "%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.1f\t%.2f\t%d\t%d\t%.2f\t%.1f\t%.1f\t%.2f\t%.1f\t%s\n",
        w + 1, p, s, start, p50, p99, p999, mx, acked, errs, (b1 - b0) / 1048576,
        pacer / 1048576, sl1 - sl0, fc, (fc > 0 ? (fs1 - fs0) / fc * 1000 : 0),
        (rd1 - rd0) * 512 / 1048576, (wr1 - wr0) * 512 / 1048576,
        (ms > 0 ? (wq1 - wq0) / ms : 0), (tt1 > tt0 ? (st1 - st0) * 100 / (tt1 - tt0) : 0), load
    }' >>"$TSV"
  tail -1 "$TSV"
done
set_cap "$OFF_RATE"

echo
echo "# per pair: on p99 / off p99"
awk -F'\t' 'NR > 1 {p99[$2, $3] = $6; pairs[$2] = 1}
  END {for (p in pairs) printf "%d\t%.2f\n", p, p99[p, "on"] / p99[p, "off"]}' "$TSV" \
  | sort -n | tee "$DATA/ratios" | awk '{printf "pair %d: %.2f\n", $1, $2}'
sort -k2 -g "$DATA/ratios" | awk '{r[NR] = $2} END {
  m = NR % 2 ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2
  n = 0; for (i = 1; i <= NR; i++) if (r[i] <= 2) n++
  printf "median on/off p99 ratio %.2f over %d pairs (min %.2f, max %.2f); %d of %d within 2x\n", m, NR, r[1], r[NR], n, NR}'
for st in off on; do # the median window of each side, for a view less sensitive to one stall
  awk -F'\t' -v s="$st" 'NR > 1 && $3 == s {print $6, $7}' "$TSV" | sort -g | awk -v s="$st" \
    '{a[NR] = $1} END {printf "median p99 of the %s windows: %.2f ms (%d windows)\n", s, NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2, NR}'
done
awk -F'\t' 'NR > 1 {s[$3] += $11; n[$3]++} END {
  printf "compaction read: %.1f MiB in on windows (%.1f per window), %.1f MiB in off windows (%.2f per window)\n",
    s["on"], s["on"] / n["on"], s["off"], s["off"] / n["off"]}' "$TSV"
echo "# broker compaction log:"
grep -E "compacted-0: compact|compaction I/O at most" "$DATA/broker.log" | sed 's/^/  /'
grep -qE "compacted-0: compacted" "$DATA/broker.log" \
  && echo "# NOTE: the pass finished before the last window (see its line above)" \
  || echo "# the pass was still running at the end of the last window"
echo "# $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)"
