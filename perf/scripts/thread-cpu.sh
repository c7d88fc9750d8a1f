#!/bin/bash
# Where a process's threads spent SECONDS, by kind of thread (the name without its numeric
# suffix: the broker's `shard`, io_uring's `iou-wrk` workers, ...), from each thread's
# /proc/PID/task/TID/schedstat: CPU time, time spent runnable but waiting for the CPU, and how
# many times it was run. Answers "does the shard's core have room, and who waits for it?".
#   Usage: perf/scripts/thread-cpu.sh PID SECONDS
set -eu
PID=$1
SECONDS_=$2
snapshot() {
  local t name
  for t in /proc/"$PID"/task/*; do
    name=$(cat "$t/comm" 2>/dev/null) || continue
    echo "$(basename "$t") ${name%%-[0-9]*} $(cat "$t/schedstat" 2>/dev/null)"
  done
}
BEFORE=$(snapshot)
sleep "$SECONDS_"
AFTER=$(snapshot)
python3 - "$SECONDS_" <<PY
import sys
seconds = float(sys.argv[1])
def parse(text):
    out = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) == 5:
            out[f[0]] = (f[1], int(f[2]), int(f[3]), int(f[4]))
    return out
before, after = parse("""$BEFORE"""), parse("""$AFTER""")
kinds = {}
for tid, (kind, run, wait, n) in after.items():
    _, run0, wait0, n0 = before.get(tid, (kind, 0, 0, 0))
    k = kinds.setdefault(kind, [0, 0, 0, 0])
    k[0] += 1
    k[1] += run - run0
    k[2] += wait - wait0
    k[3] += n - n0
print(f"over {seconds:g} s: kind, threads, CPU (share of one core), runnable but waiting, times run, mean wait per run")
for kind, (threads, run, wait, n) in sorted(kinds.items(), key=lambda kv: -kv[1][1]):
    print(f"{kind:16s} {threads:4d} {run / 1e6:9.1f} ms ({run / 1e9 / seconds:5.3f}) "
          f"{wait / 1e6:9.1f} ms {n:8d} {wait / max(n, 1) / 1e3:8.1f} us")
PY
