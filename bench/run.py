#!/usr/bin/env python3
"""Rookery's benchmark suite: one command, one run, every server side by side.

    python3 bench/run.py            # full run (about 15-25 minutes on 2 cores)
    python3 bench/run.py --quick    # shorter steps, fewer connections (a few minutes)
    python3 bench/run.py --targets socketio,rookery=/path/to/old/rookery,rookery --scenarios direct
                                    # two Rookery builds side by side (before/after a change)
    python3 bench/run.py --targets rookery --scenarios direct --data-root /dev/shm
                                    # Rookery's data on tmpfs: its figures without the disk
    python3 bench/run.py --loadgen-nice -5 --scenarios group
                                    # the load generator ahead of the servers for the cores
                                    # (the default is equal priority; docs/benchmarks.md,
                                    # 2026-12-05 (late morning), shows how far it moves each figure)

Builds Rookery, the load generator and the raw peer (release), installs the Socket.IO peer
(npm ci), then for each server: starts it, runs the same scenarios with rookery-loadgen, stops
it. Prints a table with ratios and writes every figure as JSON (--out). For Rookery, each
step-up (group, direct) is followed by HALF_LOAD_RUNS runs at half the maximum it found, each
on a fresh node: the latency figures the targets are stated at (the run with the median ack p99),
each with the node's own count of acks and store batches over 10 ms (a disk stall shows as slow
batches and hundreds of slow acks; the load generator's share of the tail as neither).

A target `rookery=PATH` runs the node binary at PATH (labelled `rookery@<file name>` in the
results), so a change is measured against the build before it in the same run.

Servers: socketio (Node.js + Socket.IO 4, in memory), raw (fastwebsockets forwarder: the
transport ceiling), rookery (durable storage, fsync per group-committed batch).
"""
import argparse
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from node_metrics import histograms, over

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(ROOT, "target", "release")
# ROOKERY_LOADGEN: another load generator binary (to compare two builds of it on the same servers).
LOADGEN = os.environ.get("ROOKERY_LOADGEN") or os.path.join(REL, "rookery-loadgen")
ADMIN_TOKEN = "bench-admin-token-0123456789"
PASS_P99_MS = 200.0
PASS_DELIVERY = 0.99
SCENARIOS = ("group", "direct", "connect-storm", "idle", "history", "store")
# Connect storms per server; the table gives their median.
STORMS = 3
# Runs at half of Rookery's maximum per scenario; the table gives the one with the median ack
# p99. On these shared 2-core machines one run's p99 at the same load moves by a factor of
# five between runs (docs/benchmarks.md, 2026-12-03).
HALF_LOAD_RUNS = 3
# Idle runs per server; the table gives their median.
IDLE_RUNS = 3
# Seconds the idle connections are held after the ramp before the server's memory is read: longer
# than Rookery's default --session-hibernate-ms (15 s), so every session has hibernated, as the
# sessions of a real node's quiet clients have.
IDLE_HOLD = 20
# Where Rookery's data directories are made (--data-root); None: the system's temporary directory.
DATA_ROOT = None
# The load generator's nice value (--loadgen-nice); 0: the same priority as the server.
LOADGEN_NICE = 0


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def build():
    log("building (release)...")
    subprocess.run(["cargo", "build", "--release", "-p", "rookery-node", "-p", "rookery-loadgen",
                    "-p", "rookery-raw-peer"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--release", "-p", "rookery-store", "--examples"], cwd=ROOT, check=True)
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=os.path.join(ROOT, "bench", "socketio"), check=True)


def missing_builds(targets, scenarios):
    """What a run of these targets and scenarios needs from an earlier build and cannot find:
    checked before the first server starts, so that a run does not stop at its last step."""
    need = [os.path.join(REL, "rookery-loadgen")]
    for target in targets:
        kind, path, _ = parse_target(target)
        if kind == "rookery":
            need.append(path or os.path.join(REL, "rookery"))
            if "store" in scenarios:
                need.append(os.path.join(REL, "examples", "append_throughput"))
        elif kind == "raw":
            need.append(os.path.join(REL, "rookery-raw-peer"))
        elif kind == "socketio":
            need.append(os.path.join(ROOT, "bench", "socketio", "node_modules"))
    return [p for p in dict.fromkeys(need) if not os.path.exists(p)]


class Server:
    """A server process started for one target."""

    def __init__(self, target, port, admin_port):
        kind, binary, self.label = parse_target(target)
        self.kind, self.port, self.admin_port = kind, port, admin_port
        self.data = tempfile.mkdtemp(prefix="rookery-bench-", dir=DATA_ROOT)
        if kind == "rookery":
            cmd = [binary or os.path.join(REL, "rookery"), "serve", "--listen", f"127.0.0.1:{port}",
                   "--admin-listen", f"127.0.0.1:{admin_port}", "--data-dir", self.data,
                   "--admin-token", ADMIN_TOKEN, "--access-ttl", "7200", "--send-rate-limit", "0", "--api-write-rate-limit", "0"]
            ready = "rookery is running"
        elif kind == "socketio":
            cmd = ["node", os.path.join(ROOT, "bench", "socketio", "server.js"), "--port", str(port)]
            ready = "listening"
        else:
            cmd = [os.path.join(REL, "rookery-raw-peer"), "--listen", f"127.0.0.1:{port}"]
            ready = "listening"
        env = dict(os.environ, ROOKERY_LOG="warn")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        started = threading.Event()

        def drain(out):
            # Reads the server's output for its whole life: a pipe nobody reads would block the
            # server once full (at a chattier log level).
            for line in out:
                if ready in line:
                    started.set()

        threading.Thread(target=drain, args=(self.proc.stdout,), daemon=True).start()
        if not started.wait(30):
            self.proc.kill()
            shutil.rmtree(self.data, ignore_errors=True)
            raise RuntimeError(f"{kind} did not start")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.data, ignore_errors=True)


def parse_target(target):
    """`kind` or `kind=PATH` -> (kind, binary path or "", label for the results)."""
    kind, _, binary = target.partition("=")
    return kind, binary, f"{kind}@{os.path.basename(binary)}" if binary else kind


PORTS = itertools.count(18100, 2)


@contextlib.contextmanager
def serving(target):
    """A fresh server for one scenario (its own data directory and ports), stopped afterwards."""
    port = next(PORTS)
    s = Server(target, port, port + 1)
    try:
        yield s
    finally:
        s.stop()


def loadgen_cmd(server, scenario, users, rate, duration, extra, out):
    """The load generator's command line for one run against `server`, its report to `out`."""
    cmd = [LOADGEN, "run", "--url", server.url, "--target", server.kind, "--scenario", scenario,
           "--users", str(users), "--rate", str(rate), "--duration", str(duration), "--quiet",
           "--json", out, "--admin-url", f"http://127.0.0.1:{server.admin_port}", "--admin-token", ADMIN_TOKEN]
    nice = ["nice", "-n", str(LOADGEN_NICE)] if LOADGEN_NICE else []
    return nice + cmd + list(extra)


def loadgen(server, scenario, users, rate=1.0, duration=10.0, extra=()):
    out = tempfile.mktemp(suffix=".json")
    cmd = loadgen_cmd(server, scenario, users, rate, duration, extra, out)
    r = subprocess.run(cmd, capture_output=True, text=True)
    return read_report(out, r.stderr)


def read_report(out, stderr):
    """The load generator's JSON report at `out` (removed once read); its stderr explains a
    run that wrote none."""
    if not os.path.exists(out):
        raise RuntimeError(f"loadgen failed: {stderr.strip()[-500:]}")
    with open(out) as f:
        rep = json.load(f)
    os.unlink(out)
    return rep


def node_tail(server):
    """From a Rookery node's metrics: how many acks took over 10 ms inside the node (session actor
    to ack) and how many store batches took over 10 ms. Beside the load generator's ack p99 they
    tell the node's tail (few slow acks) from the disk's (a slow batch delays every ack waiting
    on it: `bench/ack_timeline.py` shows when)."""
    acks, batches = "rookery_message_ack_seconds", "rookery_store_batch_seconds"
    h = histograms(f"http://127.0.0.1:{server.admin_port}", ADMIN_TOKEN, [acks, batches])
    return {"acks_over_10ms": over(h[acks], 0.01), "batches_over_10ms": over(h[batches], 0.01)}


def verified(rep):
    """At least PASS_DELIVERY of the deliveries arrived, none twice or out of order."""
    v = rep.get("verify") or {}
    return rep["delivery_ratio"] >= PASS_DELIVERY and v.get("duplicated", 0) == 0 and v.get("reordered", 0) == 0


def passes(rep):
    return verified(rep) and rep["e2e"]["p99_ms"] < PASS_P99_MS


def step_up(server, scenario, users, group, rates, duration, refine=2):
    """Raises the per-connection rate until the server fails, then bisects between the last pass
    and the first failure `refine` times; returns the best passing report."""
    def run(rate):
        rep = loadgen(server, scenario, users, rate, duration,
                      ["--group-size", str(group), "--verify", "--drain", "3", "--ramp", "2"])
        ok = passes(rep)
        log(f"  {server.label:8} {scenario:6} rate {rate:>6.1f}/conn  offered {rep['offered_msgs_per_s']:>8.0f}/s  "
            f"delivered {rep['deliveries_per_s']:>9.0f}/s  ratio {rep['delivery_ratio']:.4f}  "
            f"e2e p99 {rep['e2e']['p99_ms']:>8.2f} ms  {'pass' if ok else 'FAIL'}")
        return rep, ok
    best, failed_at = None, None
    for rate in rates:
        rep, ok = run(rate)
        if not ok:
            failed_at = rate
            break
        best = dict(rep, rate_per_conn=rate)
    low = best["rate_per_conn"] if best else 0
    for _ in range(refine if failed_at else 0):
        mid = round((low + failed_at) / 2, 1)
        if mid <= low or mid >= failed_at:
            break
        rep, ok = run(mid)
        if ok:
            best, low = dict(rep, rate_per_conn=mid), mid
        else:
            failed_at = mid
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "bench-results.json"))
    ap.add_argument("--targets", default="socketio,raw,rookery",
                    help="comma-separated: socketio, raw, rookery, or rookery=PATH (another node binary)")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, of: {','.join(SCENARIOS)}")
    ap.add_argument("--data-root", default=None,
                    help="directory for Rookery's data directories (default: the system's temporary directory); "
                         "/dev/shm takes the disk out of the measurement, to tell the disk's share of the latency from the CPU's")
    ap.add_argument("--loadgen-nice", type=int, default=0,
                    help="run the load generator at this nice value (negative: ahead of the server; needs root), "
                         "so that its own wait for a core on a shared machine is not counted as the server's latency")
    args = ap.parse_args()
    global DATA_ROOT, LOADGEN_NICE
    DATA_ROOT = args.data_root
    LOADGEN_NICE = args.loadgen_nice
    if LOADGEN_NICE < 0 and os.geteuid() != 0:
        # `nice` would warn and run it at the usual priority, under a heading that says otherwise.
        ap.error("--loadgen-nice below 0 needs root")
    scenarios = set(args.scenarios.split(","))
    unknown = scenarios - set(SCENARIOS)
    if unknown:
        ap.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if args.skip_build:
        missing = missing_builds(args.targets.split(","), scenarios)
        if missing:
            sys.exit("--skip-build, but these are not built: " + ", ".join(missing) +
                     " (run once without --skip-build, or build them with cargo build --release)")
    else:
        build()
    users = 200 if args.quick else 1000
    duration = 4.0 if args.quick else 10.0
    rates = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384]
    idle_conns = 2000 if args.quick else 15000
    storm_conns = 2000 if args.quick else 10000
    results = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "users": users,
               "loadgen_nice": LOADGEN_NICE, "targets": {}}
    for target in args.targets.split(","):
        kind, _, label = parse_target(target)
        r = results["targets"][label] = {}
        for scenario, group in (("group", 10), ("direct", 2)):
            if scenario not in scenarios:
                continue
            with serving(target) as s:
                r[scenario] = step_up(s, scenario, users, group, rates, duration)
        # The latency targets are stated at half of the maximum just found, for each scenario.
        for scenario, group in (("group", 10), ("direct", 2)):
            best = (r.get(scenario) or {}).get("rate_per_conn")
            if kind != "rookery" or not best:
                continue
            half = max(best / 2, 0.5)
            runs = []
            for _ in range(HALF_LOAD_RUNS):
                with serving(target) as s:
                    rep = loadgen(s, scenario, users, half, duration, ["--group-size", str(group), "--verify"])
                    rep["node_tail"] = node_tail(s)
                log(f"  {label} {scenario} at half load ({half}/conn): ack p99 {rep['ack']['p99_ms']} ms, "
                    f"e2e p99 {rep['e2e']['p99_ms']} ms; in the node, acks over 10 ms "
                    f"{rep['node_tail']['acks_over_10ms']}, store batches over 10 ms {rep['node_tail']['batches_over_10ms']}")
                runs.append(rep)
            runs.sort(key=lambda rep: rep["ack"]["p99_ms"])
            rep = runs[len(runs) // 2]
            r.setdefault("half_load", {})[scenario] = {
                "rate_per_conn": half, "ack": rep["ack"], "e2e": rep["e2e"], "deliveries_per_s": rep["deliveries_per_s"],
                "runs_ack_p99_ms": [x["ack"]["p99_ms"] for x in runs], "runs_e2e_p99_ms": [x["e2e"]["p99_ms"] for x in runs],
                "runs_node_tail": [x["node_tail"] for x in runs]}
        if "connect-storm" in scenarios:
            # A storm lasts well under a second, so one stall of the shared machine moves its
            # figure by a quarter: the median of STORMS storms, each on a fresh server.
            storms = []
            for _ in range(STORMS):
                with serving(target) as s:
                    storms.append(loadgen(s, "connect-storm", storm_conns, extra=["--concurrency", "256"])["connect"])
            storms.sort(key=lambda c: c["per_s"])
            r["connect_storm"] = dict(storms[len(storms) // 2], runs_per_s=[round(c["per_s"]) for c in storms])
            log(f"  {label:8} connect-storm {r['connect_storm']['per_s']:.0f} conn/s "
                f"(median of {r['connect_storm']['runs_per_s']})")
        if "idle" in scenarios:
            # The figure is RSS growth over the ramp per connection, and whatever else grows then
            # counts too: one run read 5,051 bytes and the next 3,469 for the same build
            # (docs/benchmarks.md, 2026-12-03 evening). The median of IDLE_RUNS, each on a fresh server.
            idles = []
            for _ in range(IDLE_RUNS):
                with serving(target) as s:
                    idles.append(loadgen(s, "idle", idle_conns, duration=IDLE_HOLD,
                                         extra=["--server-pid", str(s.proc.pid), "--ramp", "10", "--drain", "0"])["idle"])
            idles.sort(key=lambda i: i.get("bytes_per_connection") or 0)
            r["idle"] = dict(idles[len(idles) // 2], runs_bytes_per_connection=[
                round(i["bytes_per_connection"]) if i.get("bytes_per_connection") else None for i in idles])
            log(f"  {label:8} idle {r['idle']['established']} conns, {r['idle'].get('bytes_per_connection')} bytes/conn "
                f"(median of {r['idle']['runs_bytes_per_connection']})")
        if kind == "rookery" and "history" in scenarios:
            with serving(target) as s:
                rep = loadgen(s, "history", 16, duration=duration, extra=["--history-messages", "5000"])
            r["history"] = rep["history"]
            log(f"  {label} history {rep['history']['pages_per_s']:.0f} pages/s")
            # The same history replayed over WebSocket `sync`: a reconnecting client's catch-up.
            with serving(target) as s:
                rep = loadgen(s, "history", 16, duration=duration,
                              extra=["--history-messages", "5000", "--history-via", "ws"])
            r["sync"] = rep["history"]
            log(f"  {label} sync replays {rep['history']['messages_per_s']:.0f} messages/s")
        if kind == "rookery" and "store" in scenarios and "store" not in results:
            out = subprocess.run([os.path.join(REL, "examples", "append_throughput"), "256", "3" if args.quick else "5", "100"],
                                 capture_output=True, text=True, check=True).stdout
            results["store"] = out.strip()
            log(out.strip())
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print_table(results)


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores ({cpu}), {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB"


def print_table(res):
    t = res["targets"]
    labels = list(t)
    rookeries = [k for k in labels if k.split("@")[0] == "rookery"]
    def get(kind, *path):
        v = t.get(kind)
        for p in path:
            v = (v or {}).get(p)
        return v
    w = {k: max(12, len(k)) + 2 for k in labels}
    def fmt(v, k):
        return f"{v:>{w[k]}.0f}" if isinstance(v, (int, float)) else f"{'-':>{w[k]}}"
    def ratio(a, b):
        return f"{a / b:.2f}x" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "-"
    ratios = [(r, peer) for r in rookeries for peer in ("socketio", "raw") if peer in t]
    nice = f", load generator at nice {res['loadgen_nice']}" if res.get("loadgen_nice") else ""
    print(f"\nRookery benchmark, {res['date']}, {res['machine']}, {res['users']} connections{nice}")
    rw = {(r, p): len(r) + len(p) + 3 for r, p in ratios}
    print(f"{'figure':34}" + "".join(f"{k:>{w[k]}}" for k in labels)
          + "".join(f"{r + '/' + p:>{rw[r, p]}}" for r, p in ratios))
    rows = [
        ("group of 10: max deliveries/s", ("group", "deliveries_per_s")),
        ("direct: max deliveries/s", ("direct", "deliveries_per_s")),
        ("connect storm: connections/s", ("connect_storm", "per_s")),
        ("idle: bytes per connection", ("idle", "bytes_per_connection")),
    ]
    for name, path in rows:
        vals = {k: get(k, *path) for k in labels}
        if all(v is None for v in vals.values()):
            continue
        print(f"{name:34}" + "".join(fmt(vals[k], k) for k in labels)
              + "".join(f"{ratio(vals[r], vals[p]):>{rw[r, p]}}" for r, p in ratios))
    for r in rookeries:
        for scenario, h in (get(r, "half_load") or {}).items():
            tails = h.get("runs_node_tail") or [None] * len(h["runs_ack_p99_ms"])
            runs = ", ".join(f"{a:.1f}/{e:.1f}" + (f" [{t['acks_over_10ms']}, {t['batches_over_10ms']}]" if t else "")
                             for a, e, t in zip(h["runs_ack_p99_ms"], h["runs_e2e_p99_ms"], tails))
            print(f"{r} {scenario} at half its max ({h['rate_per_conn']}/conn), median of {len(h['runs_ack_p99_ms'])} runs: "
                  f"ack p99 {h['ack']['p99_ms']:.2f} ms, e2e p99 {h['e2e']['p99_ms']:.2f} ms (runs, ack/e2e p99 "
                  f"[node acks over 10 ms, store batches over 10 ms]: {runs})")
        hist = get(r, "history")
        if hist:
            print(f"{r} history reads: {hist['pages_per_s']:.0f} pages/s (50 messages each), p99 {hist['latency']['p99_ms']:.2f} ms")
        sync = get(r, "sync")
        if sync:
            print(f"{r} sync replays: {sync['messages_per_s']:.0f} messages/s ({sync['pages_per_s']:.0f} replays/s of up to "
                  f"500), p99 {sync['latency']['p99_ms']:.2f} ms")
    if "store" in res:
        print(res["store"])


if __name__ == "__main__":
    main()
