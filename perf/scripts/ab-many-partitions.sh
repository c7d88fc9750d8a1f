#!/bin/bash
# A/B helper: one fresh broker (CPU 0) + one odradek-bench produce run (CPU 1), 10 s.
# usage: perf/scripts/ab-many-partitions.sh BROKER_BIN RATE|max PARTITIONS PRODUCERS_PER_CORE
# Data directory under ${DATA_PARENT:-target/} (a real disk: O_DIRECT). Prints the bench summary and the broker's peak RSS (VmHWM). Run from the repository root.
set -u
BIN=$1; RATE=$2; PARTS=$3; PRODS=$4
D=$(mktemp -d "${DATA_PARENT:-$PWD/target}/odradek-ab.XXXX")
taskset -c 0 $BIN serve --listen 127.0.0.1:19321 --data-dir $D --cores 0-0 --override log.preallocate.bytes=1048576 > $D.log 2>&1 &
BP=$!
sleep 1
ARGS="--bootstrap 127.0.0.1:19321 --cores 1-1 --partitions $PARTS --producers-per-core $PRODS --duration-s 10 --warmup-s 2 --quiet"
[ "$RATE" != max ] && ARGS="$ARGS --rate $RATE --keys 100000"
timeout 100 taskset -c 1 target/release/odradek-bench produce $ARGS 2>&1 | grep -E "^produce:|latency" | tr '\n' ' '
echo " RSS=$(grep VmHWM /proc/$BP/status | awk '{print $2}')kB"
kill $BP; wait $BP 2>/dev/null; rm -rf $D $D.log
