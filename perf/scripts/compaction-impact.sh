#!/bin/bash
# Produce latency with and without compaction running on another partition of the same shard.
# Per round, on a fresh one-shard broker (CPU 0; bench on CPU 1):
#   1. fill a compacted topic (1 partition, KEYS keys) with FILL_RECORDS records while its
#      min.compaction.lag.ms holds compaction back;
#   2. A: open-loop produce to another topic at RATE for DURATION s (no compaction running);
#   3. B: the same produce run; once its 3 s warm-up is over, compaction is released
#      (min.compaction.lag.ms=0) and the shard compacts the filled topic while B is measured.
# Prints each run's latency line and the broker's compaction log lines (with their times, to
# show they overlap run B).
#   Usage: perf/scripts/compaction-impact.sh BROKER ROUNDS [RATE] [DURATION] [FILL_RECORDS] [KEYS]
# BROKER_OVERRIDES adds broker flags (e.g. "--override log.cleaner.io.max.bytes.per.second=N");
# SETTLE is the pause in seconds between the fill and run A (default 30). RAMDISK=1 puts the data
# directory on an ext4 filesystem in RAM (a loop device over a file in /dev/shm; needs root):
# what is left is the broker's own scheduling, without a shared disk's noise.
# Needs python3 with confluent-kafka (scripts/test installs one under target/test-venv).
set -u
BROKER=$1; ROUNDS=$2; RATE=${3:-20000}; DURATION=${4:-20}; FILL=${5:-1000000}; KEYS=${6:-1000}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/perf/scripts/broker.sh"
BENCH=${BENCH:-$ROOT/target/release/odradek-bench}
SETTLE=${SETTLE:-30}
PY=${PY:-$ROOT/target/test-venv/bin/python}
DATA=$(mktemp -d -t odradek-compaction-XXXXXX)
DATADIR=$DATA/data
if [ "${RAMDISK:-0}" = 1 ]; then
  IMG=$(mktemp -p /dev/shm odradek-compaction-XXXXXX.img)
  truncate -s 4G "$IMG" && mkfs.ext4 -q -F "$IMG" && mkdir "$DATA/mnt" \
    && mount -o loop "$IMG" "$DATA/mnt" || exit 1
  trap 'umount "$DATA/mnt"; rm -f "$IMG"; rm -rf "$DATA"' EXIT
  DATADIR=$DATA/mnt/data
fi
port=19700
admin() { # admin PORT TOPIC KEY=VALUE... : create (first call) or alter topic configs
  "$PY" - "$@" <<'PYEOF'
import sys
from confluent_kafka.admin import AdminClient, NewTopic, ConfigResource, ConfigEntry, AlterConfigOpType
port, topic, *kv = sys.argv[1:]
a = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})
cfg = dict(x.split("=", 1) for x in kv)
md = a.list_topics(timeout=10)
if topic not in md.topics:
    for f in a.create_topics([NewTopic(topic, 1, 1, config=cfg)]).values(): f.result(15)
else:
    r = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in cfg.items()])
    for f in a.incremental_alter_configs([r]).values(): f.result(15)
PYEOF
}
run_produce() { # run_produce PORT LABEL
  taskset -c 1 "$BENCH" produce --bootstrap 127.0.0.1:$1 --cores 1-1 --topic measured \
    --partitions 4 --record-size 1024 --rate "$RATE" --duration-s "$DURATION" --warmup-s 3 \
    --quiet 2>&1 | grep -E "^(produce|  produce latency|errors)" | sed "s/^/$2 /"
}
for r in $(seq 1 "$ROUNDS"); do
  port=$((port + 1))
  rm -rf "$DATADIR"
  # shellcheck disable=SC2086 # BROKER_OVERRIDES holds several flags
  start_broker "$BROKER" $port "$DATADIR" "$DATA/broker.log" \
    --override log.cleaner.backoff.ms=500 ${BROKER_OVERRIDES:-}
  echo "== round $r (load $(cut -d' ' -f1-3 /proc/loadavg))"
  admin $port compacted cleanup.policy=compact segment.bytes=67108864 \
    min.compaction.lag.ms=86400000 min.cleanable.dirty.ratio=0.01
  taskset -c 1 "$BENCH" produce --bootstrap 127.0.0.1:$port --cores 1-1 --topic compacted \
    --partitions 1 --keys "$KEYS" --record-size 1024 --records "$FILL" --quiet 2>&1 \
    | grep -E "^produce" | sed 's/^/fill /'
  # Let the disk absorb the fill before measuring anything (on a VM the host writes the fill
  # back for a while: A right after it measures that, not the broker).
  sleep "$SETTLE"
  run_produce $port "A(no compaction)"
  # B: compaction released once B's warm-up is over, so it runs inside the measured window.
  date -u +"B starts %H:%M:%S.%3N (warm-up 3 s)"
  run_produce $port "B(compacting)   " &
  bpid=$!
  sleep 4
  admin $port compacted min.compaction.lag.ms=0
  date -u +"compaction released %H:%M:%S.%3N"
  wait $bpid
  date -u +"B ends   %H:%M:%S.%3N"
  grep -E "compacted-0: compact|compacted-0: compacting" "$DATA/broker.log" | sed 's/^/  broker: /'
  stop_broker
done
[ "${RAMDISK:-0}" = 1 ] || rm -rf "$DATA"
