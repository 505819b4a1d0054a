#!/usr/bin/env python3
"""When, during a run, the node's acks were slow: its ack histogram scraped every fraction of a
second while a command (a load generator run) goes on.

A run's ack p99 says how many acks were slow, not whether they were spread over the run or all
fell in one stall. This prints, for each scrape interval, the acks the node made and how many
took over 10 ms and over 25 ms (from the session to the ack, the node's own
`rookery_message_ack_seconds`), beside the store's group-commit batches and how many took over
10 ms (`rookery_store_batch_seconds`). Quiet intervals are left out unless `--all`.

    python3 bench/ack_timeline.py --admin-url http://127.0.0.1:18301 --admin-token TOKEN \\
        [--interval 0.2] [--all] -- target/release/rookery-loadgen run ...

Exits with the command's exit code.
"""
import argparse
import subprocess
import sys
import time

from node_metrics import count, histograms, over

ACKS, BATCHES = "rookery_message_ack_seconds", "rookery_store_batch_seconds"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--admin-url", required=True)
    ap.add_argument("--admin-token", required=True)
    ap.add_argument("--interval", type=float, default=0.2)
    ap.add_argument("--all", action="store_true", help="print quiet intervals too")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not cmd:
        ap.error("give the command to run after --")
    proc = subprocess.Popen(cmd)
    t0, prev = time.monotonic(), None
    print(f"{'t (s)':>7} {'acks':>6} {'>10ms':>6} {'>25ms':>6} {'batches':>8} {'>10ms':>6}")
    while True:
        done = proc.poll() is not None
        try:
            cur = histograms(a.admin_url, a.admin_token, [ACKS, BATCHES], timeout=2)
        except OSError:
            cur = None
        if cur and prev:
            acks = count(cur[ACKS], prev[ACKS])
            over10, over25 = over(cur[ACKS], 0.01, prev[ACKS]), over(cur[ACKS], 0.025, prev[ACKS])
            batches = count(cur[BATCHES], prev[BATCHES])
            slow = over(cur[BATCHES], 0.01, prev[BATCHES])
            if acks and (a.all or over10 or slow):
                print(f"{time.monotonic() - t0:7.2f} {acks:6.0f} {over10:6.0f} {over25:6.0f} {batches:8.0f} {slow:6.0f}")
        prev = cur or prev
        if done:
            return proc.returncode
        time.sleep(a.interval)


if __name__ == "__main__":
    sys.exit(main())
