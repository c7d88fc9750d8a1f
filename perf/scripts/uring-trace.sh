#!/bin/bash
# Records what a running broker's disk I/O goes through for SECONDS (default 1): io_uring's
# tracepoints (submission, hand-off to its kernel workers, completion), the block layer's
# requests, and the scheduler's wake-ups and switches, on every CPU (a block request may
# complete on another CPU than it was issued on). Then prints the summary of uring-trace.py:
# latency per io_uring opcode and per block request kind, how many requests went to io-wq,
# and how long woken workers and shard threads waited for a CPU. Needs root (perf and
# tracefs). The recording and its text stay in OUT_DIR (default: a temporary directory,
# removed afterwards).
#   Usage: perf/scripts/uring-trace.sh [SECONDS] [OUT_DIR]
set -eu
SECONDS_TO_TRACE=${1:-1}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [ -n "${2:-}" ]; then
  OUT=$2
  mkdir -p "$OUT"
else
  OUT=$(mktemp -d -t uring-trace-XXXXXX)
  trap 'rm -rf "$OUT"' EXIT
fi
perf record -q -a -o "$OUT/trace.data" \
  -e io_uring:io_uring_submit_req -e io_uring:io_uring_queue_async_work \
  -e io_uring:io_uring_complete -e block:block_rq_issue -e block:block_rq_complete \
  -e sched:sched_wakeup -e sched:sched_switch -- sleep "$SECONDS_TO_TRACE" >/dev/null 2>&1
perf script -i "$OUT/trace.data" >"$OUT/trace.txt" 2>/dev/null
python3 "$ROOT/perf/scripts/uring-trace.py" "$OUT/trace.txt"
