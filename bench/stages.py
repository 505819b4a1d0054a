#!/usr/bin/env python3
"""Where a message's time and CPU go inside the node: its ack's stages, and the CPU of each of
the node's thread kinds and of the load generator, per message, at one offered load.

The load generator's ack p99 says how slow the slow acks were, not where they waited. The node
times each stage of an ack in its own histograms: the session handing the `send` to its
conversation actor (`send_wait`), the store's write as the actor sees it (`store_write`: queued
behind other batches, then its own), the actor applying the store's answer (`commit_wait`), and
the store's batches themselves (`store_batch`: commit and fsync). This scrapes them at the start
and the end of a window in the middle of a run and prints each stage's quantiles over that
window (as the bucket bounds they fall in), beside CPU read from `/proc` over the same window:
the node's tokio workers, its store writer, the store engine's background threads, the rest of
the node, and the load generator. Nothing is traced, so the CPU figures are the real ones.

    python3 bench/stages.py --scenario direct --rate 24
    python3 bench/stages.py --targets rookery=/tmp/old,rookery --repeat 3 --scenario group --rate 8

Each run starts a fresh node (as `bench/run.py` does); with several targets and `--repeat`, the
runs alternate between them, so that a drift of the shared machine touches every build alike.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

from node_metrics import count, histograms, over, quantile
from run import ADMIN_TOKEN, loadgen_cmd, parse_target, read_report, serving
from syscalls import cpu_ticks

ACKS = "rookery_message_ack_seconds"
STAGES = [
    ("ack", ACKS),
    ("send_wait", "rookery_conversation_send_wait_seconds"),
    ("store_write", "rookery_store_write_seconds"),
    ("commit_wait", "rookery_conversation_commit_wait_seconds"),
    ("store_batch", "rookery_store_batch_seconds"),
]
# Thread kinds by the start of their name (`Name` in `/proc/<pid>/task/<tid>/status`, at most 15 bytes).
THREADS = [("workers", "tokio-rt-worker"), ("writer", "rookery-store-w"), ("engine", "fjall")]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def node_threads(pid):
    """CPU ticks and context switches (voluntary: the thread went to sleep; involuntary: it was
    preempted) of the node's threads, by kind (those not in THREADS under "other")."""
    kinds = [kind for kind, _ in THREADS] + ["other"]
    cpu, sleeps, preempted = dict.fromkeys(kinds, 0), dict.fromkeys(kinds, 0), dict.fromkeys(kinds, 0)
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            ticks = sum(cpu_ticks(pid, tid))
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue  # the thread ended meanwhile
        name = status["Name"].strip()
        kind = next((k for k, prefix in THREADS if name.startswith(prefix)), "other")
        cpu[kind] += ticks
        sleeps[kind] += int(status["voluntary_ctxt_switches"])
        preempted[kind] += int(status["nonvoluntary_ctxt_switches"])
    return cpu, sleeps, preempted


def one_run(target, a):
    extra = ["--ramp", "2"]
    if a.scenario == "group":
        extra += ["--group-size", str(a.group_size)]
    with serving(target) as server:
        out = tempfile.mktemp(suffix=".json")
        cmd = loadgen_cmd(server, a.scenario, a.users, a.rate, a.duration, extra, out)
        gen = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        url = f"http://127.0.0.1:{server.admin_port}"
        names = [name for _, name in STAGES]
        time.sleep(a.settle)
        h0, n0, g0, t0 = histograms(url, ADMIN_TOKEN, names), node_threads(server.proc.pid), sum(cpu_ticks(gen.pid)), time.monotonic()
        time.sleep(a.window)
        h1, n1, g1, t1 = histograms(url, ADMIN_TOKEN, names), node_threads(server.proc.pid), sum(cpu_ticks(gen.pid)), time.monotonic()
        _, err = gen.communicate()
        rep = read_report(out, err)
    secs = t1 - t0
    messages = count(h1[ACKS], h0[ACKS])
    label = parse_target(target)[2]
    print(f"{label} {a.scenario} {a.rate}/conn: load generator ack p50 {rep['ack']['p50_ms']:.1f} ms, "
          f"p99 {rep['ack']['p99_ms']:.1f} ms, e2e p99 {rep['e2e']['p99_ms']:.1f} ms, "
          f"delivered {100 * rep['delivery_ratio']:.2f} %")
    node = {kind: (n1[0][kind] - n0[0][kind]) / CLK_TCK for kind in n1[0]}
    cpu = node | {"node": sum(node.values()), "load generator": (g1 - g0) / CLK_TCK}
    per = "  ".join(f"{kind} {v / secs:.2f} ({v * 1e6 / max(messages, 1):.1f} us)" for kind, v in cpu.items())
    print(f"  cores (CPU per acked message): {per}")
    switches = "  ".join(f"{kind} {(n1[1][kind] - n0[1][kind]) / max(messages, 1):.2f} / "
                         f"{(n1[2][kind] - n0[2][kind]) / max(messages, 1):.2f}" for kind in n1[1])
    print(f"  context switches per acked message (slept / preempted): {switches}")
    for label, name in STAGES:
        now, before = h1[name], h0[name]
        bounds = "  ".join(f"{tag} <= {quantile(now, q, before) * 1000:g}" for tag, q in
                           (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)))
        print(f"  {label:12} {count(now, before):8d}  {bounds} ms  over 10 ms {over(now, 0.01, before)}")
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default="rookery", help="rookery or rookery=PATH, comma-separated")
    ap.add_argument("--scenario", choices=["direct", "group"], default="direct")
    ap.add_argument("--rate", type=float, default=16, help="messages per second per connection")
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--group-size", type=int, default=10)
    ap.add_argument("--duration", type=float, default=30, help="seconds of sending")
    ap.add_argument("--settle", type=float, default=8, help="seconds before the window opens")
    ap.add_argument("--window", type=float, default=20, help="seconds the window lasts")
    ap.add_argument("--repeat", type=int, default=1, help="runs per target, alternating")
    a = ap.parse_args()
    if a.settle + a.window > a.duration:
        ap.error("the window must end before the sending does (--settle + --window <= --duration)")
    targets = a.targets.split(",")
    if any(parse_target(t)[0] != "rookery" for t in targets):
        ap.error("only Rookery nodes have these histograms")
    for _ in range(a.repeat):
        for target in targets:
            one_run(target, a)


if __name__ == "__main__":
    main()
