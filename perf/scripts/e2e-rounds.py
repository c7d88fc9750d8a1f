#!/usr/bin/env python3
"""Prints what perf/scripts/e2e-rounds.sh recorded in DIR: per second, the broker's group-commit
rounds and fdatasyncs from its /metrics samples, and the bench's e2e p99 per second."""
import json
import re
import sys

ROUND = "odradek_group_commit_round_duration_seconds"
FSYNC = "odradek_fsync_duration_seconds"
WAIT = "odradek_produce_durable_wait_seconds"


def samples(path):
    out = []
    for line in open(path):
        f = line.split()
        if not f:
            continue
        if f[0] == "T":
            out.append({"t": float(f[1]), "cpu": int(f[2])})
        elif out:
            le = re.search(r'le="([^"]+)"', f[0])
            name = re.sub(r"\{.*\}", "", f[0]) + (le.group(1) if le else "")
            out[-1][name] = out[-1].get(name, 0.0) + float(f[1])
    return out


def main(d):
    rows = samples(d + "/metrics.log")
    print("  t | rounds  mean ms  >25 >50 >100 | wait ms | fsyncs mean ms  >25 >50 >100 |  cpu | write MB/s")
    for prev, cur in zip(rows, rows[1:]):
        if ROUND + "_count" not in cur or ROUND + "_count" not in prev:
            continue
        def d_(k):
            return cur.get(k, 0.0) - prev.get(k, 0.0)
        dt = cur["t"] - prev["t"]
        rn, fn = d_(ROUND + "_count"), d_(FSYNC + "_count")
        over = lambda h, n, le: int(n - d_(h + "_bucket" + le))
        print("%3.0f | %6d %8.2f %4d %3d %4d | %7.2f | %6d %7.2f %4d %3d %4d | %4.2f | %10.0f" % (
            cur["t"] - rows[0]["t"], rn, d_(ROUND + "_sum") / rn * 1e3 if rn else 0,
            over(ROUND, rn, "0.025"), over(ROUND, rn, "0.05"), over(ROUND, rn, "0.1"),
            d_(WAIT + "_sum") / max(1.0, d_(WAIT + "_count")) * 1e3,
            fn, d_(FSYNC + "_sum") / fn * 1e3 if fn else 0,
            over(FSYNC, fn, "0.025"), over(FSYNC, fn, "0.05"), over(FSYNC, fn, "0.1"),
            (cur["cpu"] - prev["cpu"]) / dt / 100, d_("odradek_io_file_written_bytes_total") / dt / 1e6))
    run = json.load(open(d + "/e2e.json"))
    p99 = ["%d:%.0f" % (round(i["t_s"]), i["e2e_latency_us_p99"] / 1e3) for i in run["intervals"]]
    print("bench e2e p99 per second (s:ms):", " ".join(p99))


if __name__ == "__main__":
    main(sys.argv[1])
