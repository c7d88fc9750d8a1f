#!/bin/bash
# A/B produce throughput: alternate two broker binaries, fresh data dir each, broker on CPU 0,
# librdkafka producer (examples/produce_perf) on CPU 1. Prints one JSON line per run.
A=$1; B=$2; ROUNDS=${3:-3}; N=${4:-1000000}; SIZE=${5:-1024}
PERF=/work/main/target/release/examples/produce_perf
for r in $(seq 1 $ROUNDS); do
  for which in A B; do
    bin=$A; [ $which = B ] && bin=$B
    rm -rf /tmp/abdata; port=$((19300 + r))
    taskset -c 0 $bin serve --listen 127.0.0.1:$port --data-dir /tmp/abdata --cores 0-0 --override num.partitions=16 >/tmp/ab-broker.log 2>&1 &
    pid=$!
    for i in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
    taskset -c 1 $PERF 127.0.0.1:$port warm 200000 $SIZE all >/dev/null
    t0=$(awk '{print $14+$15}' /proc/$pid/stat)
    out=$(taskset -c 1 $PERF 127.0.0.1:$port run $N $SIZE all)
    t1=$(awk '{print $14+$15}' /proc/$pid/stat)
    echo "$which broker_cpu_s=$(echo "scale=2; ($t1-$t0)/$(getconf CLK_TCK)" | bc) $out"
    kill $pid; wait $pid
  done
done
