#!/usr/bin/env python3
"""Where a broker's disk I/O spends its time, from `perf script` text of the tracepoints that
`uring-trace.sh` records (io_uring, block, sched):

- per io_uring opcode the shard threads submitted: submit -> CQE posted (p50/p90/p99/mean),
  and how many went to io_uring's kernel workers (io-wq) instead of completing inline;
- per block request kind (rwbs: WS = sync write, WSM = sync metadata write, FF = flush, ...):
  issue to the device -> completion;
- wake-up -> running delay of the io-wq workers and of the shard threads (the CPU they
  share is busy when this grows).

  perf/scripts/uring-trace.py PERF_SCRIPT_TEXT [SHARD_THREAD_PREFIX]   (default: shard-)
"""
import collections
import re
import sys

LINE = re.compile(r"\s*(\S+)\s+(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s+(.*)")


def percentiles(values):
    if not values:
        return "n=0"
    v = sorted(values)
    n = len(v)
    at = lambda q: v[min(n - 1, int(n * q))]
    return "n=%d p50 %.0f us, p90 %.0f, p99 %.0f, mean %.0f" % (
        n, at(0.5), at(0.9), at(0.99), sum(v) / n)


def main():
    path = sys.argv[1]
    prefix = sys.argv[2] if len(sys.argv) > 2 else "shard-"
    submitted = {}  # req -> (time, opcode), shard submissions not yet completed
    punted = set()
    ops = collections.defaultdict(list)  # opcode -> [(us, punted)]
    issued = {}  # (device, sector) -> (time, rwbs)
    block = collections.defaultdict(list)
    woken = {}  # pid -> (time, kind)
    wake_delay = collections.defaultdict(list)
    first = last = None
    for line in open(path, errors="replace"):
        m = LINE.match(line)
        if not m:
            continue
        comm, _tid, _cpu, ts, event, rest = m.groups()
        ts = float(ts)
        first = ts if first is None else first
        last = ts
        if event == "io_uring:io_uring_submit_req" and comm.startswith(prefix):
            r = re.search(r"req (\S+),.*opcode (\S+),", rest)
            if r:
                submitted[r.group(1)] = (ts, r.group(2))
        elif event == "io_uring:io_uring_queue_async_work":
            r = re.search(r"request (\S+),", rest)
            if r and r.group(1) in submitted:
                punted.add(r.group(1))
        elif event == "io_uring:io_uring_complete":
            r = re.search(r"req (\S+),", rest)
            if r and r.group(1) in submitted:
                t0, op = submitted.pop(r.group(1))
                ops[op].append(((ts - t0) * 1e6, r.group(1) in punted))
                punted.discard(r.group(1))
        elif event == "block:block_rq_issue":
            r = re.match(r"(\S+) (\S+) \S+ \(\) (\d+) \+ \d+", rest)
            if r:
                issued[(r.group(1), r.group(3))] = (ts, r.group(2))
        elif event == "block:block_rq_complete":
            r = re.match(r"(\S+) (\S+) \(\) (\d+) \+ \d+", rest)
            if r and (r.group(1), r.group(3)) in issued:
                t0, rwbs = issued.pop((r.group(1), r.group(3)))
                block[rwbs].append((ts - t0) * 1e6)
        elif event == "sched:sched_wakeup":
            r = re.search(r"comm=(\S+) pid=(\d+)", rest)
            if r and (r.group(1).startswith("iou-wrk") or r.group(1).startswith(prefix)):
                kind = "io-wq workers" if r.group(1).startswith("iou-wrk") else "shard threads"
                woken[r.group(2)] = (ts, kind)
        elif event == "sched:sched_switch":
            r = re.search(r"next_comm=\S+ next_pid=(\d+)", rest)
            if r and r.group(1) in woken:
                t0, kind = woken.pop(r.group(1))
                wake_delay[kind].append((ts - t0) * 1e6)
    seconds = (last - first) if first is not None else 0.0
    print("traced %.2f s" % seconds)
    print("io_uring requests of the shard threads, submit -> complete:")
    for op in sorted(ops, key=lambda o: -len(ops[o])):
        values = [us for us, _ in ops[op]]
        n_punted = sum(1 for _, p in ops[op] if p)
        print("  %-14s %s; to io-wq: %d of %d" % (op, percentiles(values), n_punted, len(values)))
    print("block requests, issue -> complete (by rwbs):")
    for rwbs in sorted(block, key=lambda k: -len(block[k])):
        print("  %-6s %s" % (rwbs, percentiles(block[rwbs])))
    print("wake-up -> running:")
    for kind in sorted(wake_delay):
        rate = len(wake_delay[kind]) / seconds if seconds else 0
        print("  %-14s %s (%.0f wake-ups/s)" % (kind, percentiles(wake_delay[kind]), rate))


if __name__ == "__main__":
    main()
