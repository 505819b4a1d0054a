#!/usr/bin/env python3
"""System calls and CPU per message, each server side by side at the same offered load.

Half of the node's CPU at its maximum is in the kernel (docs/benchmarks.md), and on loopback a
socket write also pays for the receiving side: what each server asks of the kernel per message
is then a large part of what it costs. This counts it.

    python3 bench/syscalls.py [--targets raw,rookery] [--scenario direct] [--users 1000]
                              [--rate 12] [--group-size 10] [--repeat 2]

For each target (the same `kind` or `kind=PATH` as bench/run.py), `--repeat` times, alternating:
starts a fresh server, runs the load generator (open loop, `--verify`), and over a window of
`--window` seconds in the middle of the run counts the server process's system calls with
`perf stat` (tracepoints `syscalls:sys_enter_*`; needs perf and root), its user and system CPU
time and the load generator's CPU time (user and system together: the two share the cores) from /proc,
and the run's ack p50 and p99 (end-to-end for the raw peer, which sends no acks). Divides by the messages offered in the window (users x rate x window: the
load is open loop, so that is what was sent), prints one row per run, and exits 1 when a run
delivered under 99 % or `--verify` found a message duplicated or reordered (bench/run.py's
gate; a run under it is not at the offered load). A run whose load generator ended inside the
window stops the script with an error: raise `--duration` or lower `--settle`.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

from run import PASS_DELIVERY, loadgen_cmd, log, read_report, serving, verified

CALLS = ("sendto", "recvfrom", "writev", "epoll_wait", "futex", "write", "read", "fsync")
HZ = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid, tid=None):
    """User and system time of `pid` (of its thread `tid` alone, when given) so far, in clock
    ticks."""
    with open(f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def count_calls(pid, window):
    """System calls of `pid` (all its threads) over `window` seconds, by name."""
    events = ",".join(f"syscalls:sys_enter_{c}" for c in CALLS)
    r = subprocess.run(["perf", "stat", "-x", ",", "-e", events, "-p", str(pid), "--", "sleep", str(window)],
                       capture_output=True, text=True)
    counts = {}
    for line in r.stderr.splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[2].startswith("syscalls:sys_enter_"):
            counts[parts[2].removeprefix("syscalls:sys_enter_")] = int(parts[0]) if parts[0].isdigit() else 0
    if not counts:
        raise RuntimeError(f"perf stat counted nothing (perf installed? root?): {r.stderr.strip()[-300:]}")
    return counts


def measure(target, a):
    with serving(target) as server:
        out = tempfile.mktemp(suffix=".json")
        extra = ["--group-size", str(a.group_size), "--verify", "--ramp", "2", "--drain", "3"]
        cmd = loadgen_cmd(server, a.scenario, a.users, a.rate, a.duration, extra, out)
        lg = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # Set-up (users, connections) and the 2 s ramp, then into the middle of the steady part.
        time.sleep(a.settle)
        u0, s0 = cpu_ticks(server.proc.pid)
        l0 = sum(cpu_ticks(lg.pid))
        calls = count_calls(server.proc.pid, a.window)
        u1, s1 = cpu_ticks(server.proc.pid)
        l1 = sum(cpu_ticks(lg.pid))
        # The figures divide by the load offered over the whole window: a load that ended
        # inside it would make them too low.
        ended_early = lg.poll() is not None
        _, err = lg.communicate()
        if ended_early:
            raise RuntimeError(f"the load generator ended before the {a.window} s window did: "
                               "raise --duration or lower --settle")
        rep = read_report(out, err)
    msgs = a.users * a.rate * a.window
    v = rep.get("verify") or {}
    row = {c: calls.get(c, 0) / msgs for c in CALLS}
    row["user_us"] = (u1 - u0) / HZ / msgs * 1e6
    row["sys_us"] = (s1 - s0) / HZ / msgs * 1e6
    row["loadgen_us"] = (l1 - l0) / HZ / msgs * 1e6
    # Raw has no acks: its end-to-end latency stands in (a delivery, like an ack, is one trip).
    lat = rep["ack"] if rep["ack"]["count"] else rep["e2e"]
    row["p50_ms"], row["p99_ms"] = lat["p50_ms"], lat["p99_ms"]
    row["delivered"] = rep["delivery_ratio"]
    row["dup_reord"] = sum(v.get(k) or 0 for k in ("duplicated", "reordered"))
    row["verified"] = verified(rep)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default="raw,rookery")
    ap.add_argument("--scenario", default="direct", choices=["direct", "group"])
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=12.0, help="messages per second per connection")
    ap.add_argument("--group-size", type=int, default=10)
    ap.add_argument("--duration", type=float, default=14.0)
    ap.add_argument("--window", type=float, default=5.0, help="seconds counted, in the middle of the run")
    ap.add_argument("--settle", type=float, default=7.0, help="seconds from the load generator's start to the window")
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    targets = a.targets.split(",")
    head = (f"{'target':24} " + " ".join(f"{c:>10}" for c in CALLS)
            + f" {'user µs':>8} {'sys µs':>8} {'loadgen µs':>10} {'ack p50':>8} {'ack p99':>8} {'delivered':>9} {'dup+reord':>9}")
    print(f"{a.scenario}, {a.users} connections, {a.rate}/conn; per message offered in a {a.window} s window:")
    print(head)
    bad = False
    for _ in range(a.repeat):
        for target in targets:
            r = measure(target, a)
            bad |= not r["verified"]
            print(f"{target:24} " + " ".join(f"{r[c]:>10.2f}" for c in CALLS)
                  + f" {r['user_us']:>8.1f} {r['sys_us']:>8.1f} {r['loadgen_us']:>10.1f}"
                  + f" {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['delivered']:>9.4f} {r['dup_reord']:>9}",
                  flush=True)
    if bad:
        log(f"a run delivered under {PASS_DELIVERY:.0%}, or duplicated or reordered messages: not at the offered load")
        sys.exit(1)


if __name__ == "__main__":
    main()
