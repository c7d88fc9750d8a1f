#!/usr/bin/env python3
"""Sums a broker profile's symbols into the groups W5's notes compare, as shares of the samples
that were not clearing fresh pages (that share swings with how much memory the run faulted in
during the window, not with the code; it is printed on its own).

    perf/scripts/profile-groups.py PERF_DATA...
"""
import collections
import re
import subprocess
import sys

GROUPS = [
    ("clear_page", r"clear_page"),
    ("copies (memmove)", r"memmove|memcpy"),
    ("socket receive", r"_copy_to_iter"),
    ("crc32c", r"crc32c|crc_u64"),
    ("allocator", r"mi_|CountingMiMalloc|__rust_dealloc|__rust_alloc|__rustc::__rust"),
    ("bytes refcounts", r"^bytes::"),
    ("produce handler", r"handlers::produce|handlers::dispatch|validate_topic|Shard::partition"
                        r"|Shard::serving|topic_config|shard_of"),
    ("batch cache", r"storage::cache"),
    ("log append", r"append_batch|append_local|SegmentIndexes|btree"),
]

for path in sys.argv[1:]:
    out = subprocess.run(
        ["perf", "report", "-i", path, "--no-children", "--sort", "sym", "--stdio"],
        capture_output=True, text=True, check=True).stdout
    total = collections.Counter()
    for line in out.splitlines():
        m = re.match(r"\s+([\d.]+)%\s+\[.\]\s+(.*)", line)
        if not m:
            continue
        share, sym = float(m.group(1)), m.group(2).strip()
        for group, pattern in GROUPS:
            if re.search(pattern, sym):
                total[group] += share
                break
    cleared = total["clear_page"]
    rest = max(100.0 - cleared, 1e-9)
    shares = ", ".join(f"{g} {total[g] * 100 / rest:.1f}%" for g, _ in GROUPS[1:])
    print(f"  {path}: clear_page {cleared:.1f}% of samples; of the rest: {shares}")
