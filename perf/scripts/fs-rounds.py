#!/usr/bin/env python3
"""Group-commit rounds on a filesystem, without a broker: each round writes CHUNK_KIB with
O_DIRECT to each of FILES files (all writes in flight together, one thread per file), then
fdatasyncs every file (SYNCERS at a time). With --overlap, round k+1's writes run while round
k's fdatasyncs do (as the broker's rounds over few partitions). Prints MB/s, the round time and
the fdatasync median.

  perf/scripts/fs-rounds.py DIR FILES CHUNK_KIB SECONDS [--written] [--overlap] [--syncers N]
                            [--syncfs | --dsync]

--written: the files' blocks are written (zeros) before the run, so the rounds overwrite them;
otherwise the files start empty and grow, as segments do. Everything under DIR/fs-rounds is
removed at the end. --syncfs: one syncfs(2) of DIR's filesystem per round instead of an
fdatasync per file (it writes back everything dirty on that filesystem, not only these files).
--dsync: the files are opened with O_DSYNC and a round is its writes alone (each write returns
once durable, as write + fdatasync would), no fdatasync step.
Also prints the process's CPU time per round (user + system, its threads included).
"""
import argparse
import ctypes
import mmap
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor, wait

FILE_BYTES = 512 << 20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("files", type=int)
    ap.add_argument("chunk_kib", type=int)
    ap.add_argument("seconds", type=float)
    ap.add_argument("--written", action="store_true")
    ap.add_argument("--overlap", action="store_true")
    ap.add_argument("--syncers", type=int, default=0)
    ap.add_argument("--syncfs", action="store_true")
    ap.add_argument("--dsync", action="store_true")
    a = ap.parse_args()
    chunk = a.chunk_kib << 10
    work = os.path.join(a.dir, "fs-rounds")
    os.makedirs(work, exist_ok=True)
    try:
        run(a, chunk, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(a, chunk, work):
    paths = [os.path.join(work, f"f{i}") for i in range(a.files)]
    if a.written:
        zeros = b"\0" * (1 << 20)
        for p in paths:
            with open(p, "wb") as f:
                for _ in range(FILE_BYTES >> 20):
                    f.write(zeros)
                f.flush()
                os.fsync(f.fileno())
    flags = os.O_WRONLY | os.O_DIRECT | os.O_CREAT | (0 if a.written else os.O_TRUNC)
    if a.dsync:
        flags |= os.O_DSYNC
    fds = [os.open(p, flags, 0o600) for p in paths]
    buf = mmap.mmap(-1, chunk)  # page-aligned, as O_DIRECT needs
    buf.write(os.urandom(chunk))
    writers = ThreadPoolExecutor(a.files)
    syncers = ThreadPoolExecutor(a.syncers or a.files)
    pos = [0] * a.files
    sync_ms = []

    def write(i):
        os.pwrite(fds[i], buf, pos[i])
        pos[i] = (pos[i] + chunk) % FILE_BYTES

    libc = ctypes.CDLL(None, use_errno=True)

    def sync(i):
        t = time.perf_counter()
        if a.syncfs:
            if libc.syncfs(fds[i]) != 0:
                raise OSError(ctypes.get_errno(), "syncfs")
        else:
            os.fdatasync(fds[i])
        sync_ms.append((time.perf_counter() - t) * 1000)

    to_sync = [] if a.dsync else [0] if a.syncfs else range(a.files)

    started = time.perf_counter()
    cpu_started = os.times()
    rounds = 0
    syncing = []
    while time.perf_counter() - started < a.seconds:
        writes = [writers.submit(write, i) for i in range(a.files)]
        if a.overlap:
            wait(writes + syncing)
            syncing = [syncers.submit(sync, i) for i in to_sync]
        else:
            wait(writes)
            wait([syncers.submit(sync, i) for i in to_sync])
        rounds += 1
    wait(syncing)
    secs = time.perf_counter() - started
    cpu = os.times()
    cpu_s = (cpu.user + cpu.system) - (cpu_started.user + cpu_started.system)
    for fd in fds:
        os.close(fd)
    sync_ms.sort()
    sync_ms = sync_ms or [0.0]
    print(
        f"files {a.files}, {a.chunk_kib} KiB each, {'written' if a.written else 'growing'}, "
        f"{'overlapped' if a.overlap else 'serial'}, "
        f"{'O_DSYNC writes' if a.dsync else 'syncfs' if a.syncfs else f'syncers {a.syncers or a.files}'}: "
        f"{rounds * a.files * chunk / secs / 1e6:.0f} MB/s, {secs / rounds * 1000:.2f} ms/round, "
        f"{'syncfs' if a.syncfs else 'fdatasync'} p50 {sync_ms[len(sync_ms) // 2]:.2f} ms, "
        f"CPU {cpu_s / rounds * 1000:.2f} ms/round"
    )


if __name__ == "__main__":
    main()
