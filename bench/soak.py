#!/usr/bin/env python3
"""A soak: mixed load against one node for a long time, watching memory, fds and latency.

    python3 bench/soak.py --duration 3600 --svg docs/soak-2026-12-01.svg --out target/soak.json --check  # the hour run
    python3 bench/soak_report.py target/soak.json                           # its tables, for docs/benchmarks.md
    python3 bench/soak.py --profile debug --preset short --check           # the one-minute check

Starts the node (embedded store, every message fsynced before its ack) and three
`rookery-loadgen` processes at once for the whole duration: a group scenario, a direct scenario
(both with `--verify`) and HTTP history readers. Every `--sample` seconds it records the node's
resident memory, open file descriptors and threads, and from `/metrics` the messages acked and
the ack-latency p99 of that interval (from the histogram's bucket deltas). Writes every sample as
JSON (`--out`) and, with `--svg`, a plot of the four series.

`--check` exits non-zero unless the run was flat and lossless: verify found nothing missing,
duplicated, reordered, lost from the stored history or stored twice; resident memory at the end no more than 15 % + the embedded store's
memory budget (up to 152 MiB of memtables and a 32 MiB block cache, which fill up during a run) above
its level after the warm-up; fds at the end within 32 of their level after the warm-up; no
interval p99 above `--max-interval-p99-ms`.
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from node_metrics import count, histograms, quantile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADMIN_TOKEN = "soak-admin-token-0123456789abcdef"
# store/src/embedded/mod.rs: 19 keyspaces * MEMTABLE_BYTES + CACHE_BYTES.
STORE_BUDGET = (19 * 8 + 32) * 2**20

# name: (group users, group rate, direct users, direct rate, history readers, pages/s per reader)
PRESETS = {
    # Half of what this mix sustains on the reference machine (2 shared cores, docs/benchmarks.md):
    # at twice these rates (`--scale 2`) the whole run's end-to-end p99 is ~140 ms with every
    # message delivered, at three times it is 1.7-9.7 s. 3,600 messages/s, 22,800 deliveries/s
    # over 1000 connections, plus one history reader at 100 pages/s.
    "half": (600, 4.0, 400, 3.0, 1, 100.0),
    # Small enough for an unoptimised build on a busy machine.
    "short": (100, 2.0, 40, 2.0, 1, 100.0),
}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bins(profile):
    d = os.path.join(ROOT, "target", profile)
    return os.path.join(d, "rookery"), os.path.join(d, "rookery-loadgen")


def start_node(rookery, duration):
    port, admin_port = free_port(), free_port()
    data = tempfile.mkdtemp(prefix="rookery-soak-")
    cmd = [rookery, "serve", "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin_port}",
           "--data-dir", data, "--admin-token", ADMIN_TOKEN, "--send-rate-limit", "0", "--api-write-rate-limit", "0",
           "--access-ttl", str(int(duration) + 900)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, ROOKERY_LOG="warn"))
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return proc, port, admin_port, data
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the node did not start")


def loadgen(binary, port, admin_port, scenario, users, rate, duration, out, extra=()):
    cmd = [binary, "run", "--url", f"http://127.0.0.1:{port}", "--admin-url", f"http://127.0.0.1:{admin_port}",
           "--admin-token", ADMIN_TOKEN, "--scenario", scenario, "--users", str(users), "--rate", str(rate),
           "--duration", str(duration), "--ramp", "5", "--quiet", "--json", out, *extra]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def proc_stats(pid):
    rss = threads = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd")), threads


def ack_histogram(admin_port):
    """(count, {le: cumulative count}) of rookery_message_ack_seconds."""
    name = "rookery_message_ack_seconds"
    buckets = histograms(f"http://127.0.0.1:{admin_port}", ADMIN_TOKEN, [name])[name]
    return count(buckets), buckets


def interval_p99_ms(before, after):
    """The p99 of the observations between two histogram readings (upper bucket bound)."""
    if after[0] - before[0] <= 0:
        return 0.0
    return quantile(after[1], 0.99, before[1]) * 1000


def svg_plot(samples, path, title):
    """Four stacked line charts (memory, fds, acked/s, ack p99) as a standalone SVG."""
    series = [("resident memory (MiB)", [s["rss"] / 2**20 for s in samples]),
              ("open file descriptors", [s["fds"] for s in samples]),
              ("messages acked per second", [s["acked_per_s"] for s in samples]),
              ("ack p99 of the interval (ms)", [min(s["ack_p99_ms"], 10_000) for s in samples])]
    t = [s["t"] for s in samples]
    w, h, left, top, gap = 900, 170, 70, 40, 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{top + len(series) * (h + gap)}" '
           'font-family="sans-serif" font-size="12">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="{left}" y="22" font-size="15">{title}</text>']
    tmax = max(t[-1], 1)
    for i, (name, ys) in enumerate(series):
        y0 = top + i * (h + gap) + 18
        ymax = max(max(ys) * 1.1, 1e-9)
        out.append(f'<text x="{left}" y="{y0 - 5}">{name}</text>')
        out.append(f'<rect x="{left}" y="{y0}" width="{w - left - 20}" height="{h - 30}" fill="none" stroke="#999"/>')
        for frac in (0, 0.5, 1):
            yy = y0 + (h - 30) * (1 - frac)
            out.append(f'<text x="{left - 6}" y="{yy + 4}" text-anchor="end">{ymax * frac:.0f}</text>')
        pts = " ".join(f"{left + (w - left - 20) * tx / tmax:.1f},{y0 + (h - 30) * (1 - y / ymax):.1f}"
                       for tx, y in zip(t, ys))
        out.append(f'<polyline points="{pts}" fill="none" stroke="#1f6feb" stroke-width="1.5"/>')
        for frac in (0, 0.5, 1):
            xx = left + (w - left - 20) * frac
            out.append(f'<text x="{xx}" y="{y0 + h - 14}" text-anchor="middle">{tmax * frac / 60:.0f} min</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="half")
    ap.add_argument("--profile", choices=["release", "debug"], default="release")
    ap.add_argument("--sample", type=float, default=5)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every rate of the preset")
    ap.add_argument("--warmup", type=float, default=15, help="seconds before the baseline sample")
    ap.add_argument("--max-interval-p99-ms", type=float, default=1000)
    ap.add_argument("--out", help="write samples and reports as JSON here")
    ap.add_argument("--svg", help="write a plot here")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()

    rookery, lg = bins(args.profile)
    gu, gr, du, dr, readers, hr = PRESETS[args.preset]
    gr, dr, hr = gr * args.scale, dr * args.scale, hr * args.scale
    proc, port, admin_port, data = start_node(rookery, args.duration)
    log(f"soak: node pid {proc.pid}, {args.duration:.0f} s, preset {args.preset}: group {gu}x{gr}/s, "
        f"direct {du}x{dr}/s, {readers} history readers x{hr} pages/s")
    tmp = tempfile.mkdtemp(prefix="rookery-soak-reports-")
    runs = {
        "group": loadgen(lg, port, admin_port, "group", gu, gr, args.duration, f"{tmp}/group.json",
                         ["--group-size", "10", "--verify"]),
        "direct": loadgen(lg, port, admin_port, "direct", du, dr, args.duration, f"{tmp}/direct.json", ["--verify"]),
        "history": loadgen(lg, port, admin_port, "history", readers, 1, args.duration, f"{tmp}/history.json",
                           ["--history-messages", "2000", "--group-size", "2", "--history-rate", str(hr)]),
    }
    samples, start = [], time.time()
    prev_hist = ack_histogram(admin_port)
    prev_t = start
    try:
        while any(p.poll() is None for p in runs.values()):
            time.sleep(args.sample)
            now = time.time()
            rss, fds, threads = proc_stats(proc.pid)
            hist = ack_histogram(admin_port)
            samples.append({"t": round(now - start, 1), "rss": rss, "fds": fds, "threads": threads,
                            "acked_per_s": round((hist[0] - prev_hist[0]) / (now - prev_t), 1),
                            "ack_p99_ms": interval_p99_ms(prev_hist, hist)})
            prev_hist, prev_t = hist, now
            s = samples[-1]
            log(f"  t={s['t']:>7.0f}s rss={rss / 2**20:7.1f} MiB fds={fds:5d} threads={threads:3d} "
                f"acked/s={s['acked_per_s']:9.1f} ack p99={s['ack_p99_ms']:.1f} ms")
            if proc.poll() is not None:
                raise RuntimeError("the node exited during the soak")
    finally:
        for p in runs.values():
            if p.poll() is None:
                p.wait(timeout=args.duration + 120)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        subprocess.run(["rm", "-rf", data])

    reports = {}
    for name, p in runs.items():
        path = f"{tmp}/{name}.json"
        if not os.path.exists(path):
            raise RuntimeError(f"loadgen {name} wrote no report: {p.stderr.read()[-500:]}")
        with open(path) as f:
            reports[name] = json.load(f)
    subprocess.run(["rm", "-rf", tmp])

    failures = evaluate(samples, reports, args)
    summary = {"duration_s": args.duration, "warmup_s": args.warmup, "preset": args.preset, "scale": args.scale,
               "samples": samples, "reports": reports,
               "failures": failures}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=1)
    if args.svg:
        svg_plot(samples, args.svg, f"Rookery soak: {args.duration / 60:.0f} min, preset {args.preset}")
    for name, r in reports.items():
        v = r.get("verify") or {}
        extra = f"{r['history']['pages']} pages" if r.get("history") else \
            f"acked {r['acked']}/{r['sent']}, delivered {r['delivered']}, e2e p99 {r['e2e']['p99_ms']:.1f} ms, " \
            f"verify missing {v.get('missing')} duplicated {v.get('duplicated')} reordered {v.get('reordered')}"
        print(f"soak {name}: {extra}")
    base = baseline(samples, args)
    print(f"soak memory: {base['rss'] / 2**20:.1f} MiB after warm-up, {samples[-1]['rss'] / 2**20:.1f} MiB at the end; "
          f"fds {base['fds']} -> {samples[-1]['fds']}; worst interval ack p99 "
          f"{max(s['ack_p99_ms'] for s in samples if s['t'] >= args.warmup):.1f} ms")
    if failures:
        for f in failures:
            print(f"soak FAILED: {f}")
    else:
        print("soak: ok")
    return 1 if (args.check and failures) else 0


def baseline(samples, args):
    after = [s for s in samples if s["t"] >= args.warmup]
    return after[0] if after else samples[0]


def evaluate(samples, reports, args):
    failures = []
    if len(samples) < 2:
        return ["too few samples"]
    for name in ("group", "direct"):
        v = reports[name].get("verify") or {}
        for k in ("missing", "duplicated", "reordered", "lost", "stored_twice"):
            if v.get(k, 1) != 0:
                failures.append(f"{name}: verify {k} = {v.get(k)}")
        if reports[name]["acked"] == 0:
            failures.append(f"{name}: nothing acked")
    if not reports["history"].get("history", {}).get("pages"):
        failures.append("history: no page read")
    base, end = baseline(samples, args), samples[-1]
    if end["rss"] > base["rss"] * 1.15 + STORE_BUDGET:
        failures.append(f"memory grew from {base['rss']} to {end['rss']} bytes")
    if end["fds"] > base["fds"] + 32:
        failures.append(f"fds grew from {base['fds']} to {end['fds']}")
    worst = max(s["ack_p99_ms"] for s in samples if s["t"] >= args.warmup)
    if worst > args.max_interval_p99_ms:
        failures.append(f"an interval's ack p99 was {worst} ms (limit {args.max_interval_p99_ms} ms)")
    return failures


if __name__ == "__main__":
    sys.exit(main())
