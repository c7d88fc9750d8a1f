#!/usr/bin/env python3
# What one flush round costs on this disk: N files each get a 4 KiB O_DIRECT write, then either
# every file is fdatasynced (per-file rounds) or one journal file (pre-written, so an overwrite)
# gets N KiB and one fdatasync (journal rounds). Prints median and p90 of each half per mode.
#   Usage: perf/scripts/fsync-files-vs-journal.py N ROUNDS   (files in ./fsync-exp-files)
import os, time, mmap, sys
from concurrent.futures import ThreadPoolExecutor
D = "fsync-exp-files"; os.makedirs(D, exist_ok=True)
N = int(sys.argv[1]); ROUNDS = int(sys.argv[2])
buf = mmap.mmap(-1, 4096); buf.write(b"x"*4096)
JB = 1024*N//4096*4096 or 4096
jbuf = mmap.mmap(-1, JB); jbuf.write(b"j"*JB)
fds = [os.open(f"{D}/f{i}", os.O_RDWR|os.O_CREAT|os.O_TRUNC|os.O_DIRECT) for i in range(N)]
jfd = os.open(f"{D}/journal", os.O_RDWR|os.O_CREAT|os.O_DIRECT)
os.pwrite(jfd, jbuf, 0); os.fsync(jfd)
pool = ThreadPoolExecutor(64)
pos = [0]
def write_all():
    p = pos[0]; pos[0] += 4096
    list(pool.map(lambda fd: os.pwrite(fd, buf, p), fds))
def sync_all(): list(pool.map(os.fdatasync, fds))
def sync_journal(): os.pwrite(jfd, jbuf, 0); os.fdatasync(jfd)
def stat(ts): ts.sort(); return "median %.2f p90 %.2f" % (ts[len(ts)//2]*1e3, ts[int(len(ts)*.9)]*1e3)
for mode in ["per_file", "journal"]*2:
    w=[]; s=[]
    for r in range(ROUNDS):
        t=time.perf_counter(); write_all(); t1=time.perf_counter()
        (sync_all if mode=="per_file" else sync_journal)(); t2=time.perf_counter()
        w.append(t1-t); s.append(t2-t1)
    print(mode, N, "write", stat(w), "| sync", stat(s))
