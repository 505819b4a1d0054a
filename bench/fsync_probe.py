#!/usr/bin/env python3
"""How long this disk takes to fsync a small append, with nothing of Rookery running.

Rookery acks a message once its batch is fsynced, so a disk whose fsync now and then stalls for
100 ms stalls every ack for that long, whatever the node does. Run this beside a latency figure
to tell the disk's tail from the node's.

    python3 bench/fsync_probe.py [--dir DIR] [--seconds 60] [--bytes 4096] [--interval-ms 1]
                                 [--mode append|overwrite]

`--mode append` (the default, what a journal does) appends `--bytes` to a fresh file in `--dir`
(default: the current directory) and fsyncs it. `--mode overwrite` first writes a 64 MiB file
and syncs it, then rewrites it in place, `--bytes` at a time, with fdatasync: no block is
allocated and the file's size never changes, so the filesystem has no metadata to commit, and
what remains is the device's own latency. Either waits `--interval-ms` between writes, for
`--seconds`; prints the latency percentiles, the maximum and how many took over 20 ms. The file
is removed at the end.
"""
import argparse
import os
import tempfile
import time

# The size of the file `--mode overwrite` writes before it measures.
PREWRITTEN = 64 << 20


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=".")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--bytes", type=int, default=4096)
    ap.add_argument("--interval-ms", type=float, default=1.0)
    ap.add_argument("--mode", choices=["append", "overwrite"], default="append")
    a = ap.parse_args()
    fd, path = tempfile.mkstemp(prefix="fsync-probe-", dir=a.dir)
    buf = b"x" * a.bytes
    lat = []
    try:
        sync, span = os.fsync, None
        if a.mode == "overwrite":
            span = (PREWRITTEN // a.bytes) * a.bytes
            for _ in range(0, span, 1 << 20):
                os.write(fd, b"\0" * (1 << 20))
            os.fsync(fd)
            sync = os.fdatasync
        end = time.monotonic() + a.seconds
        at = 0
        while time.monotonic() < end:
            if span:
                os.pwrite(fd, buf, at)
                at = (at + a.bytes) % span
            else:
                os.write(fd, buf)
            t = time.perf_counter()
            sync(fd)
            lat.append((time.perf_counter() - t) * 1000)
            time.sleep(a.interval_ms / 1000)
    finally:
        os.close(fd)
        os.unlink(path)
    lat.sort()
    n = len(lat)
    q = lambda p: lat[min(n - 1, int(n * p))]
    print(f"{a.mode}: syncs {n}  p50 {q(.5):.2f} ms  p99 {q(.99):.2f} ms  p99.9 {q(.999):.2f} ms  "
          f"max {lat[-1]:.1f} ms  over 20 ms: {sum(1 for x in lat if x > 20)}")


if __name__ == "__main__":
    main()
